"""The IR graph: named ops, one result each, over a networkx DiGraph.

Every op produces exactly one value, named like the op (SSA), so an op name is
also the name of its result. Recurrent state never appears as a graph edge: it
lives inside stateful ops (`s4d`, `pool`), so the graph is always a DAG and a
topological order is an execution order for one token.

Passes use this API (`add`, `remove`, `consumers`, `replace_uses`, ...), never
the networkx graph underneath, so the representation can change without
touching them.
"""

from __future__ import annotations

import copy as _copy
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx
import numpy as np

from ssmc.errors import IRError

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")  # used with fullmatch


@dataclass
class Op:
    """One operation and its result.

    `shape` is the per-token shape of the result (no batch or time axis).
    `params` hold tensors (weights, S4D coefficients); `attrs` hold scalars,
    strings and int tuples. What each kind accepts is its schema in `ops.py`.
    """

    name: str
    kind: str
    inputs: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        self.shape = tuple(int(d) for d in self.shape)


class Graph:
    """A typed dataflow graph of `Op`s with its own query and edit API."""

    def __init__(self, name: str = "main", attrs: dict[str, Any] | None = None):
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise IRError(f"invalid graph name {name!r}: use letters, digits, '_', '.', '-'")
        self.name = name
        self.attrs: dict[str, Any] = dict(attrs or {})
        self._g = nx.MultiDiGraph()
        self._seq = 0  # insertion counter: breaks topological ties deterministically
        self._order: list[Op] | None = None  # ops() until the next add / remove / set_inputs

    # -- building ---------------------------------------------------------
    def add(self, op: Op) -> Op:
        """Add `op`; its inputs must already exist (build in topological order)."""
        if not isinstance(op.name, str) or not NAME_RE.fullmatch(op.name):
            raise IRError(f"invalid op name {op.name!r}: use letters, digits, '_', '.', '-'")
        if op.name in self._g:
            raise IRError(f"duplicate op name %{op.name}")
        for src in op.inputs:
            if src not in self._g:
                raise IRError(f"op %{op.name} ({op.kind}) uses undefined value %{src}")
        self._order = None
        self._g.add_node(op.name, op=op, seq=self._seq)
        self._seq += 1
        for i, src in enumerate(op.inputs):
            self._g.add_edge(src, op.name, key=i)
        return op

    def remove(self, name: str) -> None:
        """Remove op `name`; it must have no remaining consumers."""
        self.op(name)  # raises IRError for an unknown name
        users = self.consumers(name)
        if users:
            raise IRError(f"cannot remove %{name}: still used by " + ", ".join(f"%{u.name}" for u in users))
        self._order = None
        self._g.remove_node(name)

    def set_inputs(self, name: str, inputs: tuple[str, ...] | list[str]) -> None:
        """Rewire op `name` to read `inputs` (which must exist)."""
        op = self.op(name)
        for src in inputs:
            if src not in self._g:
                raise IRError(f"op %{name} ({op.kind}) uses undefined value %{src}")
        self._order = None
        for src in set(op.inputs):
            while self._g.has_edge(src, name):
                self._g.remove_edge(src, name)
        op.inputs = tuple(inputs)
        for i, src in enumerate(op.inputs):
            self._g.add_edge(src, name, key=i)

    def replace_uses(self, old: str, new: str) -> int:
        """Make every consumer of %old read %new instead; returns how many ops changed."""
        users = self.consumers(old)
        for user in users:
            self.set_inputs(user.name, tuple(new if s == old else s for s in user.inputs))
        return len(users)

    def fresh_name(self, base: str) -> str:
        """A name not used yet, derived from `base`."""
        base = re.sub(r"[^A-Za-z0-9_.\-]", "_", base) or "v"
        if not re.match(r"[A-Za-z_]", base[0]):
            base = "v" + base
        if base not in self._g:
            return base
        i = 1
        while f"{base}_{i}" in self._g:
            i += 1
        return f"{base}_{i}"

    # -- queries ----------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def op(self, name: str) -> Op:
        try:
            return self._g.nodes[name]["op"]
        except KeyError:
            raise IRError(f"no op named %{name}") from None

    def ops(self) -> list[Op]:
        """All ops in a deterministic topological (execution) order (sorted once per change of the
        graph's edges or ops: the engines ask for it on every call)."""
        if getattr(self, "_order", None) is None:  # getattr: a graph pickled before the cache existed
            seq = nx.get_node_attributes(self._g, "seq")
            try:
                order = nx.lexicographical_topological_sort(self._g, key=lambda n: seq[n])
                self._order = [self._g.nodes[n]["op"] for n in order]
            except nx.NetworkXUnfeasible:
                raise IRError("the graph has a cycle; recurrences must live inside stateful ops") from None
        return list(self._order)  # a copy: a caller may edit its list

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops())

    def ops_of_kind(self, kind: str) -> list[Op]:
        return [op for op in self.ops() if op.kind == kind]

    def consumers(self, name: str) -> list[Op]:
        """Ops that read %name, each once, in the order they were added to the graph (their insertion
        number: the execution order of ops() except where set_inputs rewired an op to read a later one)."""
        self.op(name)  # raises IRError for an unknown name
        seq = nx.get_node_attributes(self._g, "seq")
        users = sorted(set(self._g.successors(name)), key=lambda n: seq[n])
        return [self._g.nodes[n]["op"] for n in users]

    def inputs(self) -> list[Op]:
        return self.ops_of_kind("input")

    def outputs(self) -> list[Op]:
        return self.ops_of_kind("output")

    def has_cycle(self) -> bool:
        return not nx.is_directed_acyclic_graph(self._g)

    def copy(self) -> "Graph":
        """A deep copy (tensors included), safe to mutate independently."""
        return _copy.deepcopy(self)

    def __repr__(self) -> str:
        return f"<Graph @{self.name}: {len(self)} ops>"
