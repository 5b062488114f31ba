"""Partition driver: netlist -> blocks -> cores, with the method asked for, or a fit error.

Cores come out numbered in layer order (global index = chip * cores_per_chip
+ core), i.e. already a valid placement "in core-index order"; `place` then
moves them on the mesh. Large networks are solved hierarchically: chips first
(consecutive runs of the greedy packing, one run per chip), then windows of
WINDOW_CORES consecutive cores within each chip re-partitioned by CP-SAT with
their share of the time budget (the gap reported is then the windows' gap:
traffic between windows is fixed by the greedy split).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ssmc.errors import FitError, OptionError
from ssmc.mapping import solvers
from ssmc.mapping.blocks import RESOURCES, Blocks, make_blocks, neuron_upper_bounds
from ssmc.mapping.netlist import Netlist
from ssmc.mapping.usage import core_usage, over_capacity
from ssmc.targets import CAPACITIES, Target

METHODS = ("cpsat", "greedy", "metis", "index")
#: Above this many (block, core) variables per CP-SAT model, solve chip by chip.
FLAT_LIMIT = 40_000
#: Cores per CP-SAT window in the hierarchical formulation (whole routers of 4).
WINDOW_CORES = 16


@dataclass
class MapResult:
    core_of: np.ndarray  # global core index of every neuron
    blocks: Blocks
    info: dict = field(default_factory=dict)


def limits_of(target: Target, max_neurons_per_core: int = 0) -> np.ndarray:
    lim = np.array([target.capacity(r) for r in RESOURCES], np.float64)
    if max_neurons_per_core:
        lim[0] = min(lim[0], max_neurons_per_core)
    return lim


def _binding(blocks: Blocks, limits: np.ndarray) -> tuple[str, float]:
    frac = blocks.use.sum(axis=0) / limits
    r = int(np.argmax(frac))
    return RESOURCES[r], float(frac[r])


def fit_error(blocks: Blocks, limits: np.ndarray, target: Target, cores_needed: int, why: str = "") -> FitError:
    key, frac = _binding(blocks, limits)
    chips = math.ceil(cores_needed / target.cores_per_chip)
    fixes = [f"--chips {chips}" if chips > target.chips else None]
    if key in ("synapse_bytes", "memory_bytes"):
        fixes.append("narrower weights (--weight-bits 4..6) or fewer modes/channels")
    if key in ("fan_in_axons", "fan_out_routes"):
        fixes.append("narrower layers (smaller H) so each core sees fewer senders")
    if key == "neurons":
        fixes.append("fewer modes (N) or channels (H)")
    fixes.append("a larger board (--target with more chips)")
    fixes = tuple(f for f in fixes if f)
    return FitError(
        f"the network does not fit {target.name} ({target.board}, {target.chips} chip(s) x "
        f"{target.cores_per_chip} cores): it needs {cores_needed} cores "
        f"(at least {math.ceil(frac)} by {CAPACITIES[key]} alone, the binding capacity){why}; "
        f"try {' or '.join(fixes)}",
        need=cores_needed,
        have=target.total_cores,
        binding=key,
        fixes=fixes,
    )


def _refuse_indivisible(net: Netlist, blocks: Blocks, limits: np.ndarray, group_limit: int) -> None:
    """A FitError naming the first indivisible block (a channel's modes with the neuron that sums them) that no
    core can hold: over a capacity first, then over the neuron groups a core may hold."""

    def piece(b: int) -> str:
        names = ", ".join(f"%{net.groups[g].name}" for g in blocks.groups[b])
        return f"one indivisible piece of {names} (a channel with its modes and summing neuron)"

    too_big = [b for b in range(blocks.n) if not solvers.fits(blocks.use[b], limits)]
    if too_big:
        b = too_big[0]
        r = int(np.argmax(blocks.use[b] / limits))
        narrower = RESOURCES[r] in ("synapse_bytes", "memory_bytes")
        fix = "narrower weights (--weight-bits) or " if narrower else ""
        fixes = (("narrower weights (--weight-bits)",) if narrower else ()) + (
            "fewer modes per channel (N)",
            "a target with larger cores",
        )
        raise FitError(
            f"{piece(b)} needs {int(blocks.use[b][r])} {CAPACITIES[RESOURCES[r]]} but a core has "
            f"{int(limits[r])}; try {fix}fewer modes per channel (N), or a target with larger cores",
            need=int(blocks.use[b][r]),
            have=int(limits[r]),
            binding=RESOURCES[r],
            fixes=fixes,
        )
    crowded = [b for b in range(blocks.n) if len(blocks.groups[b]) > group_limit]
    if crowded:
        b = crowded[0]
        fix = f"a target with at least {len(blocks.groups[b])} groups per core"
        raise FitError(
            f"{piece(b)} holds {len(blocks.groups[b])} neuron groups but the target allows "
            f"{group_limit} per core; use {fix}",
            need=len(blocks.groups[b]),
            have=group_limit,
            binding="groups_per_core",
            fixes=(fix,),
        )


def map_network(
    net: Netlist,
    target: Target,
    method: str = "cpsat",
    time_limit: float = 10.0,
    seed: int = 0,
    max_neurons_per_core: int = 0,
    granularity: int = 4,
) -> MapResult:
    if method not in METHODS:
        raise OptionError(f"unknown partition method {method!r}; methods: {', '.join(METHODS)}")
    start = time.perf_counter()
    limits = limits_of(target, max_neurons_per_core)
    blocks = make_blocks(net, limits, granularity=granularity)
    group_limit = target.groups
    _refuse_indivisible(net, blocks, limits, group_limit)
    greedy_core = solvers.greedy(blocks, limits, group_limit)
    need = int(greedy_core.max()) + 1
    lb = solvers.lower_bound_cores(blocks, limits)
    key, frac = _binding(blocks, limits)
    info = {
        "method": method,
        "blocks": blocks.n,
        "lower_bound_cores": lb,
        "greedy_cores": need,
        "binding_capacity": key,
        "binding_fraction": round(frac, 3),
    }
    if need > target.total_cores:
        raise fit_error(blocks, limits, target, need)
    if method == "index":
        per_neuron = neuron_upper_bounds(net)
        core_of = solvers.index_order(per_neuron, net.group_of(), limits, group_limit)
        if core_of.max() + 1 > target.total_cores:
            raise fit_error(blocks, limits, target, int(core_of.max()) + 1, " in index order")
    else:
        if method == "greedy":
            block_core = greedy_core
        elif method == "metis":
            block_core = solvers.metis(blocks, limits, group_limit, max(lb, 2), seed=seed, max_parts=target.total_cores)
            if block_core is None:
                raise fit_error(blocks, limits, target, need, " (METIS found no part sizes that fit)")
        else:
            block_core = _cpsat(blocks, limits, group_limit, target, greedy_core, time_limit, seed, info)
        core_of = block_core[blocks.block_of]
    n_used = int(core_of.max()) + 1
    if n_used > target.total_cores:
        raise fit_error(blocks, limits, target, n_used)
    over = over_capacity(core_usage(net, core_of, n_used), target)
    if over:  # block bounds make this impossible; a failure here is a bug, say so plainly
        k, key, used, limit = over[0]
        raise FitError(f"internal: {method} mapping puts {used} {CAPACITIES[key]} on core {k} (limit {limit})")
    info["cores"] = int(len(np.unique(core_of)))
    info["seconds"] = round(time.perf_counter() - start, 3)
    return MapResult(core_of.astype(np.int64), blocks, info)


def band_router_order(rows: int, cols: int) -> list[tuple[int, int]]:
    """Router (row, col) positions along a snake through bands of two router rows, column by column:
    (0,0) (1,0) (1,1) (0,1) (0,2) (1,2) ... then the next band. Any first 2m routers form a 2 x m block, so
    a few routers are as close together as the mesh allows (a 2 x 2 square for 4), unlike a row-major snake
    that strings them along one row."""
    order = []
    for band in range(0, rows, 2):
        band_rows = list(range(band, min(band + 2, rows)))
        cs = range(cols) if (band // 2) % 2 == 0 else range(cols - 1, -1, -1)
        for c in cs:  # in each column, start from the row next to the previous router (one hop per step)
            last = order[-1][0] if order else band_rows[0]
            for r in sorted(band_rows, key=lambda r: abs(r - last)):
                order.append((r, c))
    return order


def compact_router_distances(target: Target) -> np.ndarray:
    """Hop distances between logical routers 0, 1, ... laid along `band_router_order`: the geometry CP-SAT's
    objective assumes (place then moves the cores freely; the measured hops come from place's result).
    Measured on the paper-size model (benchmarks/partition_quality.py): with this geometry CP-SAT's placed
    hops are 574 against 624 with the routers along one row."""
    xy = np.array(band_router_order(*target.router_mesh), np.float64)
    return target.hop_cost * np.abs(xy[:, None, :] - xy[None, :, :]).sum(-1)


def _cpsat(blocks, limits, group_limit, target, greedy_core, time_limit, seed, info) -> np.ndarray:
    need = int(greedy_core.max()) + 1
    cpc = target.cores_per_chip
    rd = compact_router_distances(target)
    n_cores = min(cpc, need, target.total_cores)  # fewer cores than greedy allowed, not more (keeps it small)
    flat = need <= cpc and blocks.n * n_cores <= FLAT_LIMIT
    hint, hint_name = _hint(blocks, limits, group_limit, target, greedy_core, rd, flat)
    info["hint"] = hint_name
    if flat and int(hint.max()) < n_cores:
        return _cpsat_flat(blocks, limits, group_limit, target, n_cores, hint, hint_name, rd, time_limit, seed, info)
    return _cpsat_windows(blocks, limits, group_limit, target, greedy_core, rd, time_limit, seed, info)


def _hint(blocks, limits, group_limit, target, greedy_core, rd, flat: bool) -> tuple[np.ndarray, str]:
    """CP-SAT's starting point and its name: greedy or METIS, whichever cuts less; for the flat formulation
    then improved by single-block moves on the solver's own objective (the windows use greedy)."""
    need = int(greedy_core.max()) + 1
    hint, hint_name = greedy_core, "greedy"
    met = None
    if blocks.n <= 4000:
        met = solvers.metis(blocks, limits, group_limit, max(2, need), seed=0, max_parts=need + 2)
    if met is not None and solvers.cut_weight(blocks, met, target.cores_per_router, rd) < solvers.cut_weight(
        blocks, hint, target.cores_per_router, rd
    ):
        hint, hint_name = met, "metis"
    if flat:
        hint = solvers.improve_by_moves(
            blocks, hint, limits, group_limit, int(hint.max()) + 1, target.cores_per_router, rd
        )
        hint_name += " + moves"
    return hint, hint_name


def _cpsat_flat(
    blocks, limits, group_limit, target, n_cores, hint, hint_name, rd, time_limit, seed, info
) -> np.ndarray:
    """One CP-SAT model over all blocks and cores; the hint when the solver ends worse or without an answer."""
    core, si = solvers.cpsat(blocks, limits, group_limit, n_cores, hint, time_limit, seed, target.cores_per_router, rd)
    info.update(
        formulation="flat",
        status=si.status,
        objective=round(si.objective, 3),
        bound=round(si.bound, 3),
        gap=round(si.gap, 4),
        solver_seconds=round(si.seconds, 3),
    )
    if core is None:
        info["status"] = si.status + " (kept the hint)"
        return hint
    # the solver may end (time budget) above the hint it was given: return the better, and say so
    if solvers.cut_weight(blocks, hint, target.cores_per_router, rd) < si.objective - 1e-9:
        info["status"] = si.status + f" (worse than its {hint_name} hint within the budget: kept the hint)"
        return hint
    return core


def _cpsat_windows(blocks, limits, group_limit, target, greedy_core, rd, time_limit, seed, info) -> np.ndarray:
    """Hierarchical: chips = consecutive runs of the greedy packing (layer order); within a chip, windows of
    WINDOW_CORES consecutive greedy cores (whole routers), each re-solved by CP-SAT with its share of the
    budget, the traffic with blocks outside the window fixed."""
    cpc = target.cores_per_chip
    info["formulation"] = (
        f"hierarchical: chips by greedy runs in layer order, then windows of {WINDOW_CORES} "
        "cores re-partitioned by CP-SAT"
    )
    out = np.zeros(blocks.n, np.int64)
    objective = bound = 0.0
    statuses = []
    windows = []
    for c in range(int(greedy_core.max()) // cpc + 1):
        cores = np.unique(greedy_core[greedy_core // cpc == c])
        for w0 in range(0, len(cores), WINDOW_CORES):
            windows.append((c, w0, cores[w0 : w0 + WINDOW_CORES]))
    for c, w0, cores in windows:
        members = np.flatnonzero(np.isin(greedy_core, cores))
        sub = _sub_blocks(blocks, members)
        sub_hint = solvers.compact(greedy_core[members])
        k = int(sub_hint.max()) + 1
        r0 = w0 // target.cores_per_router
        budget = time_limit * len(members) / blocks.n
        ext = _external(blocks, members, out_fixed(greedy_core, out, windows, (c, w0)), c, cpc, target.cores_per_router)
        # one worker per window, deterministic budget only: as fast as four interleaved workers under a wall
        # limit (whose fixed costs dwarfed a window's share) and, unlike a wall limit, the same answer under
        # any machine load (1M neurons: ~30 s alone, ~47 s with two more copies running; identical cores)
        core, si = solvers.cpsat(
            sub, limits, group_limit, k, sub_hint, budget, seed, target.cores_per_router, rd, r0, ext, workers=1
        )
        hint_obj = _with_external(sub, sub_hint, ext, rd, r0, target)
        if core is None or hint_obj <= _with_external(sub, core, ext, rd, r0, target):
            core = sub_hint
            statuses.append(si.status + " (kept greedy)")
        else:
            statuses.append(si.status)
        objective += _with_external(sub, core, ext, rd, r0, target)
        bound += si.bound
        out[members] = c * cpc + w0 + core
    total_cut = solvers.cut_weight(blocks, out, target.cores_per_router, None)
    info.update(
        status=",".join(sorted(set(statuses))),
        objective=round(total_cut, 3),
        within_window_objective=round(objective, 3),
        within_window_bound=round(bound, 3),
        gap=round(0.0 if objective <= 0 else max(0.0, (objective - bound) / objective), 4),
        windows=len(windows),
        chips=len({c for c, _, _ in windows}),
    )
    return out


def out_fixed(greedy_core, out, windows, current) -> np.ndarray:
    """Global core of every block as fixed so far: solved windows from `out`, the rest from greedy."""
    fixed = greedy_core.copy()
    for c, w0, cores in windows:
        if (c, w0) == current:
            break
        sel = np.isin(greedy_core, cores)
        fixed[sel] = out[sel]
    return fixed


def _external(blocks: Blocks, members: np.ndarray, fixed: np.ndarray, chip: int, cpc: int, cpr: int):
    """Traffic between the window's blocks and blocks fixed on the same chip (routers in band_router_order numbering)."""
    inside = np.zeros(blocks.n, bool)
    inside[members] = True
    local = -np.ones(blocks.n, np.int64)
    local[members] = np.arange(len(members))
    outgoing, incoming = [], []
    for src, dsts, w in blocks.hyper:
        out_d = [d for d in dsts.tolist() if not inside[d] and fixed[d] // cpc == chip]
        in_d = [int(local[d]) for d in dsts.tolist() if inside[d]]
        if inside[src] and out_d:
            outgoing.append((int(local[src]), sorted({int(fixed[d] % cpc) // cpr for d in out_d}), w))
        if not inside[src] and in_d and fixed[src] // cpc == chip:
            incoming.append((int(fixed[src] % cpc) // cpr, in_d, w))
    return outgoing, incoming


def _with_external(sub: Blocks, core: np.ndarray, ext, rd: np.ndarray, r0: int, target: Target) -> float:
    """The window objective of an assignment (as CP-SAT counts it), for comparing the solver with its hint."""
    cpr = target.cores_per_router
    total = solvers.cut_weight(sub, core, cpr, rd[r0:, r0:])
    outgoing, incoming = ext
    for b, routers, w in outgoing:
        total += w * sum(rd[r0 + int(core[b]) // cpr, q] for q in routers)
    for src_router, dsts, w in incoming:
        cores = {int(core[d]) for d in dsts}
        total += w * (len(cores) + sum(rd[src_router, r0 + r] for r in {c // cpr for c in cores}))
    return total


def _sub_blocks(blocks: Blocks, members: np.ndarray) -> Blocks:
    index = -np.ones(blocks.n, np.int64)
    index[members] = np.arange(len(members))
    keep = (index[blocks.edges[:, 0]] >= 0) & (index[blocks.edges[:, 1]] >= 0) if len(blocks.edges) else []
    edges = index[blocks.edges[keep]] if len(blocks.edges) else blocks.edges
    hyper = []
    for src, dsts, w in blocks.hyper:
        inside = index[dsts][index[dsts] >= 0]
        if index[src] >= 0 and len(inside):
            hyper.append((int(index[src]), inside, w))
    return Blocks(
        np.zeros(0, np.int64),
        blocks.use[members],
        [blocks.groups[b] for b in members],
        blocks.layer[members],
        edges,
        blocks.weight[keep] if len(blocks.edges) else blocks.weight,
        hyper,
    )
