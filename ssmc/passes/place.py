"""place: cores of a partitioned graph -> chip and mesh positions, minimising hop-weighted traffic.

Reads the placement and target that `partition` recorded, measures core-to-
core traffic at neuron level (ssmc.mapping.usage), and moves whole cores
(ssmc.mapping.layout: chips first, then boards positions, then cores on each
chip's router mesh; chip-to-chip links cost `chip_link_cost` hops). Changes:
the chip and core of every placement entry, nothing else; neuron ranges and
per-core loads stay, so capacities still hold. Deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ssmc.ir.graph import Graph
from ssmc.ir.placement import core_assignment, set_placement
from ssmc.mapping.capacity import target_of
from ssmc.mapping.layout import layout
from ssmc.mapping.netlist import build_netlist
from ssmc.mapping.usage import traffic
from ssmc.passes.base import Pass, PassError, check_time_limit, log


@dataclass(frozen=True)
class Place(Pass):
    name: ClassVar[str] = "place"
    time_limit: float = 10.0
    """Budget of the swap search, in seconds of counted work (deterministic; it stops early when no swap
    helps; the wall clock stops it only at max(30 s, 3 x) as a safety net: ssmc.mapping.layout.Budget)."""

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        check_time_limit(self.name, self.time_limit)
        target = target_of(graph)
        if target is None:
            raise PassError("place needs a partitioned graph: run partition first")
        core_of, problems = core_assignment(graph, target)
        if problems:
            raise PassError(f"place: the placement is broken: {problems[0]}")
        used, logical = np.unique(core_of, return_inverse=True)
        net = build_netlist(graph)
        t = traffic(net, logical, len(used), target, hop_matrix=np.zeros((len(used), len(used))))
        slot = layout(t.matrix, target, self.time_limit)
        before = traffic(net, core_of, int(core_of.max()) + 1, target).hop_weighted
        new_core_of = slot[logical]
        after = traffic(net, new_core_of, int(new_core_of.max()) + 1, target).hop_weighted
        if after > before:  # the search starts from its own layout; never make a given placement worse
            new_core_of, after = core_of, before
        graph = graph.copy()
        set_placement(graph, new_core_of, target)
        log.info(f"hop-weighted traffic {before:.1f} -> {after:.1f} msgs x hops per step on {len(used)} cores")
        return graph, bool(not np.array_equal(new_core_of, core_of))
