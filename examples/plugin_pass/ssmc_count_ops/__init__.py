"""count-ops: report how many ops of each kind the IR has (an example plugin pass).

Changes nothing (an analysis pass); logs one line such as
"neurons 9, synapses 12, input 1, output 1" into the pass report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from ssmc.ir import Graph
from ssmc.passes import Pass
from ssmc.passes.base import log


@dataclass(frozen=True)
class CountOps(Pass):
    name: ClassVar[str] = "count-ops"
    kind: ClassVar[str] = "analysis"
    min_count: int = 1
    """Only report kinds with at least this many ops."""

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        counts = Counter(op.kind for op in graph.ops())
        shown = [f"{kind} {n}" for kind, n in counts.most_common() if n >= self.min_count]
        log.info(", ".join(shown) or "no ops")
        return graph, False
