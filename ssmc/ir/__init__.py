"""The SSM-aware IR: graph, op schemas, text form and verifier."""

from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import OpSchema, AttrSpec, ParamSpec, register_op, schema, known_kinds
from ssmc.ir.text import parse_graph, print_graph
from ssmc.ir.verify import graph_problems, verify

__all__ = [
    "Graph",
    "Op",
    "OpSchema",
    "AttrSpec",
    "ParamSpec",
    "register_op",
    "schema",
    "known_kinds",
    "parse_graph",
    "print_graph",
    "graph_problems",
    "verify",
]
