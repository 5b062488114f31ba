"""The capacity check of a placed graph, registered with the IR verifier.

The IR records a placement (ssmc.ir.placement) but does not know the mapper's
accounting or the target's prices; this module does, and registers
`placement_problems` with `ssmc.ir.verify` when it is imported, so that every
verified placed graph is checked against its target: every neuron placed
exactly once, cores that exist, and every per-core capacity of the target
respected (counted by ssmc.mapping.usage, not by the pass that made the
placement). The verifier refuses a placed graph when no check is registered.
"""

from __future__ import annotations

from ssmc.errors import SsmcError
from ssmc.ir.graph import Graph
from ssmc.ir.placement import TARGET_ATTR, core_assignment, is_placed
from ssmc.ir.verify import register_placement_check
from ssmc.mapping.netlist import build_netlist
from ssmc.mapping.usage import core_usage, over_capacity
from ssmc.targets import CAPACITIES, target_from_json


def target_of(graph: Graph):
    """The Target a placed graph was mapped onto (None when it is not placed)."""
    text = graph.attrs.get(TARGET_ATTR)
    return None if text is None else target_from_json(text)


def placement_problems(graph: Graph) -> list[str]:
    """Every way a placed graph breaks its target (empty for an unplaced or well placed graph)."""
    if not is_placed(graph):
        return []
    try:
        target = target_of(graph)
    except SsmcError as e:
        return [f"graph attribute {TARGET_ATTR!r}: {e}"]
    if target is None:
        return [f"neuron groups carry placements but the graph has no {TARGET_ATTR!r} attribute"]
    core_of, problems = core_assignment(graph, target)
    if problems:
        return problems
    use = core_usage(build_netlist(graph), core_of, target.total_cores)
    return [
        f"chip {k // target.cores_per_chip} core {k % target.cores_per_chip}: {CAPACITIES[key]} = {used} "
        f"exceeds the target's {limit}"
        for k, key, used, limit in over_capacity(use, target)
    ]


register_placement_check(placement_problems)
