"""Query helpers over an onnx-graphsurgeon graph (producers, cones, constants).

The frontend reasons about dataflow: which tensors a value depends on, which
nodes lie between two tensors. These helpers keep that logic in one place and
work on tensor names, so sets of names can be compared cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs


@dataclass
class GraphIndex:
    """A read-only index over a gs.Graph: producers, consumers, topo order."""

    graph: gs.Graph

    def __post_init__(self) -> None:
        self.graph.toposort()
        self.nodes: list[gs.Node] = list(self.graph.nodes)
        self.order = {id(n): i for i, n in enumerate(self.nodes)}
        self.tensors: dict[str, gs.Tensor] = self.graph.tensors()
        self.producer: dict[str, gs.Node] = {}
        self.consumers: dict[str, list[gs.Node]] = {}
        for n in self.nodes:
            for t in n.outputs:
                self.producer[t.name] = n
            for t in n.inputs:
                self.consumers.setdefault(t.name, []).append(n)
        self.graph_outputs = {t.name for t in self.graph.outputs}

    def is_const(self, name: str) -> bool:
        return isinstance(self.tensors.get(name), gs.Constant)

    def const(self, name: str) -> np.ndarray | None:
        t = self.tensors.get(name)
        return np.asarray(t.values) if isinstance(t, gs.Constant) else None

    def is_scalar_const(self, name: str) -> bool:
        v = self.const(name)
        return v is not None and v.size == 1

    def shape(self, name: str) -> tuple | None:
        t = self.tensors.get(name)
        return tuple(t.shape) if t is not None and t.shape is not None else None

    def dynamic_inputs(self, node: gs.Node) -> list[str]:
        return [t.name for t in node.inputs if t.name and not isinstance(t, gs.Constant)]

    def node_index(self, node: gs.Node) -> int:
        return self.order[id(node)]

    def tensor_index(self, name: str) -> int:
        """Topological position of the tensor's producer (-1 for graph inputs)."""
        p = self.producer.get(name)
        return -1 if p is None else self.order[id(p)]

    def ancestors(self, name: str, stop: set[str] = frozenset()) -> tuple[set[str], set[int]]:
        """Dynamic tensors and node ids in the backward cone of `name`, not passing `stop`."""
        tensors, nodes, todo = set(), set(), [name]
        while todo:
            t = todo.pop()
            if t in tensors:
                continue
            tensors.add(t)
            if t in stop:
                continue
            p = self.producer.get(t)
            if p is None:
                continue
            nodes.add(id(p))
            todo.extend(self.dynamic_inputs(p))
        return tensors, nodes

    def descendants(self, name: str) -> set[str]:
        """Tensors whose value depends on `name` (itself included)."""
        out, todo = set(), [name]
        while todo:
            t = todo.pop()
            if t in out:
                continue
            out.add(t)
            for n in self.consumers.get(t, []):
                todo.extend(o.name for o in n.outputs)
        return out

    def depends_only_on(self, name: str, sources: set[str]) -> bool:
        """True if `name` is computed from `sources` and constants alone."""
        seen, todo = set(), [name]
        while todo:
            t = todo.pop()
            if t in seen or t in sources or self.is_const(t):
                continue
            seen.add(t)
            p = self.producer.get(t)
            if p is None:
                return False  # a graph input other than the sources
            todo.extend(i.name for i in p.inputs if i.name)
        return True


def describe(node: gs.Node) -> str:
    """How an error names a node: its name and op (and domain if custom)."""
    dom = f"{node.domain}." if node.domain and node.domain not in ("", "ai.onnx") else ""
    name = node.name or (node.outputs[0].name if node.outputs else "?")
    return f"node '{name}' ({dom}{node.op})"
