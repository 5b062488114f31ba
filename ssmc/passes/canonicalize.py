"""canonicalize: remove ops whose results nobody uses.

Changes: deletes every op that is not an `input` or `output` and has no
consumers, repeatedly, so chains of dead ops go too.
Guarantees: outputs and their computation are untouched; inputs stay even
when unused (they are the model's interface).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ssmc.ir.graph import Graph
from ssmc.passes.base import Pass


def remove_dead_ops(graph: Graph) -> int:
    """Delete unused non-interface ops; returns how many were removed."""
    removed = 0
    while True:
        dead = [op.name for op in graph.ops() if op.kind not in ("input", "output") and not graph.consumers(op.name)]
        if not dead:
            return removed
        for name in dead:
            graph.remove(name)
        removed += len(dead)


@dataclass(frozen=True)
class Canonicalize(Pass):
    name: ClassVar[str] = "canonicalize"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        return graph, remove_dead_ops(graph) > 0
