"""Per-core usage of every capacity, and the traffic of a mapping, counted at neuron level.

This is the one place that turns an assignment (a core for every neuron) into
numbers; the verifier, the solvers' final check, the benchmark and the report
all use it, so they agree.

Traffic model: a neuron's message goes once to every core that holds at least
one of its targets (Loihi routes one message per destination core and fans it
out there). Messages per step = sum over (sender, destination core) of the
sender's message rate; inter-core traffic counts destinations other than the
sender's core, hop-weighted traffic multiplies each by the hop distance
(`Target.hops`). Rates are messages per neuron per step (1 = dense).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssmc.mapping.netlist import Netlist
from ssmc.targets import CAPACITIES, Target, costs


@dataclass
class Routes:
    """Unique (sender neuron, destination core) pairs of a mapping."""

    pre: np.ndarray
    dst_core: np.ndarray


def routes(net: Netlist, core_of: np.ndarray) -> Routes:
    if not net.synapses:
        return Routes(np.zeros(0, np.int64), np.zeros(0, np.int64))
    pre = np.concatenate([s.pre_ids for s in net.synapses])
    dst = core_of[np.concatenate([s.post_ids for s in net.synapses])]
    n_cores = int(core_of.max()) + 1 if core_of.size else 1
    key = np.unique(pre * n_cores + dst)
    return Routes(key // n_cores, key % n_cores)


def core_usage(net: Netlist, core_of: np.ndarray, n_cores: int, r: Routes | None = None) -> dict[str, np.ndarray]:
    """Capacity name -> usage per core (length n_cores), for every key of targets.CAPACITIES."""
    r = routes(net, core_of) if r is None else r
    group_of = net.group_of()
    per_neuron = np.repeat(
        [costs.neuron_bytes(g.kind, g.delta) for g in net.groups], [g.size for g in net.groups]
    ).astype(np.int64)
    use = {"neurons": np.bincount(core_of, minlength=n_cores).astype(np.int64)}
    state = np.bincount(core_of, weights=per_neuron, minlength=n_cores)
    pairs = np.unique(group_of.astype(np.int64) * n_cores + core_of)
    pair_group, pair_core = pairs // n_cores, pairs % n_cores
    use["groups"] = np.bincount(pair_core, minlength=n_cores).astype(np.int64)
    fixed = np.array([costs.group_fixed_bytes(g.kind, g.table_entries) for g in net.groups], np.float64)
    state += np.bincount(pair_core, weights=fixed[pair_group], minlength=n_cores)
    syn = np.zeros(n_cores)
    for s in net.synapses:
        per = costs.synapse_bytes(s.weight_bits, 1 << 20) / float(1 << 20)  # bytes per weight
        syn += np.bincount(core_of[s.post_ids], minlength=n_cores) * per
    use["synapse_bytes"] = np.ceil(syn).astype(np.int64)
    use["fan_in_axons"] = np.bincount(r.dst_core, minlength=n_cores).astype(np.int64)
    use["fan_out_routes"] = np.bincount(core_of[r.pre], minlength=n_cores).astype(np.int64)
    routing = costs.AXON_BYTES * use["fan_in_axons"] + costs.ROUTE_BYTES * use["fan_out_routes"]
    use["memory_bytes"] = (np.ceil(state).astype(np.int64) + use["synapse_bytes"] + routing).astype(np.int64)
    assert set(use) == set(CAPACITIES)  # internal invariant: every capacity counted above (not user input)
    return use


def over_capacity(use: dict[str, np.ndarray], target: Target) -> list[tuple[int, str, int, int]]:
    """(core, capacity, used, limit) for every capacity a core exceeds."""
    out = []
    for key in CAPACITIES:
        limit = target.capacity(key)
        for k in np.nonzero(use[key] > limit)[0]:
            out.append((int(k), key, int(use[key][k]), limit))
    return out


@dataclass
class Traffic:
    messages: float  # all messages per step (including those staying on their core)
    inter_core: float  # messages per step that leave their core
    hop_weighted: float  # inter-core messages x hop distance
    inter_chip: float  # messages per step that cross a chip boundary
    matrix: np.ndarray  # [cores, cores] messages per step from core a to core b


def traffic(
    net: Netlist,
    core_of: np.ndarray,
    n_cores: int,
    target: Target,
    r: Routes | None = None,
    hop_matrix: np.ndarray | None = None,
) -> Traffic:
    """Message traffic of the mapping `core_of` (global core indices, chip-major)."""
    r = routes(net, core_of) if r is None else r
    rate = net.neuron_rates()[r.pre]
    src = core_of[r.pre]
    mat = np.zeros((n_cores, n_cores))
    np.add.at(mat, (src, r.dst_core), rate)
    hop = hop_matrix if hop_matrix is not None else hop_distances(target, n_cores)
    off = ~np.eye(n_cores, dtype=bool)
    chip = np.arange(n_cores) // target.cores_per_chip
    cross = chip[:, None] != chip[None, :]
    return Traffic(float(mat.sum()), float(mat[off].sum()), float((mat * hop).sum()), float(mat[cross].sum()), mat)


def hop_distances(target: Target, n_cores: int) -> np.ndarray:
    """[n, n] hop distance between global core indices 0..n-1 (chip-major)."""
    k = np.arange(n_cores)
    chip, core = k // target.cores_per_chip, k % target.cores_per_chip
    rx, ry = np.divmod(core // target.cores_per_router, target.router_mesh[1])
    cx, cy = np.divmod(chip, target.chip_mesh[1])
    on_chip = np.abs(rx[:, None] - rx[None, :]) + np.abs(ry[:, None] - ry[None, :])
    off_chip = np.abs(cx[:, None] - cx[None, :]) + np.abs(cy[:, None] - cy[None, :])
    return target.hop_cost * on_chip + target.chip_link_cost * off_chip
