"""Structural blocks: the pieces the partitioner moves between cores.

A block never splits what belongs together and always fits a core:

- a cpx group read by one synapse group that sums each channel's modes into
  one neuron (the S4D readout C, block-diagonal by channel) is cut only at
  channel boundaries, and each channel's summing neuron (the relu / relay it
  feeds) travels with the channel's modes;
- other groups are cut into runs of consecutive neurons;
- wide layers are split into equal-ish runs so every block stays under a
  fraction (1 / `granularity`) of every core capacity, and under `max_neurons`.

Each block carries upper bounds of what it uses on a core (neurons, state,
synapse and routing bytes, input axons, output routes): sums of block bounds
never undercount a core, so a packing that respects them is feasible for the
exact per-core count in ssmc.mapping.usage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssmc.mapping.netlist import Netlist
from ssmc.targets import costs

#: Additive per-block resources, in this order in `Blocks.use` (groups per core is handled apart).
RESOURCES = ("neurons", "memory_bytes", "synapse_bytes", "fan_in_axons", "fan_out_routes")


@dataclass
class Blocks:
    block_of: np.ndarray  # block id of every neuron (global ids)
    use: np.ndarray  # [blocks, len(RESOURCES)] upper bounds per block
    groups: list[tuple[int, ...]]  # neuron-group indices present in each block
    layer: np.ndarray  # index of the layer (first group) each block came from, for colouring/ordering
    edges: np.ndarray  # [E, 2] (from block, to block), a != b
    weight: np.ndarray  # [E] messages per step from a to b (rate-weighted distinct senders)
    hyper: list = None  # [(src block, dst blocks array, messages per step)]: one message per dst core

    @property
    def n(self) -> int:
        return len(self.groups)


def channel_readouts(net: Netlist) -> dict[int, tuple[int, int]]:
    """cpx group index -> (index of the group summing each channel, compartments per channel).

    The readout may be several synapse groups into the same post group (a linear split by per-row
    weight exponents, see assign-bitwidths): their synapses together must be block-diagonal by channel."""
    index = {g.name: i for i, g in enumerate(net.groups)}
    readers: dict[str, list] = {}
    for s in net.synapses:
        readers.setdefault(s.pre, []).append(s)
    out, claimed = {}, set()
    for i, g in enumerate(net.groups):
        syns = readers.get(g.name, [])
        if g.kind != "cpx" or not syns or len({s.post for s in syns}) != 1:
            continue
        post_i = index[syns[0].post]
        post = net.groups[post_i]
        if post.size == 0 or g.size % post.size or post_i in claimed:
            continue
        width = g.size // post.size
        pre_ids = np.concatenate([s.pre_ids for s in syns])
        post_ids = np.concatenate([s.post_ids for s in syns])
        if np.all((pre_ids - g.offset) // width == post_ids - post.offset):
            out[i] = (post_i, width)
            claimed.add(post_i)
    return out


def neuron_upper_bounds(net: Netlist) -> np.ndarray:
    """[neurons, len(RESOURCES)]: what each neuron adds to its core, at most."""
    n = net.n_neurons
    use = np.zeros((n, len(RESOURCES)))
    use[:, 0] = 1
    state = np.repeat([costs.neuron_bytes(g.kind, g.delta) for g in net.groups], [g.size for g in net.groups])
    syn = np.zeros(n)
    fan_in = np.zeros(n)
    fan_out = np.zeros(n)
    for s in net.synapses:
        per = costs.synapse_bytes(s.weight_bits, 1 << 20) / float(1 << 20)
        syn += np.bincount(s.post_ids, minlength=n) * per
        fan_in += np.bincount(s.post_ids, minlength=n)  # every synapse its own axon: an upper bound
        fan_out += np.bincount(np.unique(s.pre_ids), minlength=n)  # at most one route per synapse group
    use[:, 1] = state + syn + costs.AXON_BYTES * fan_in + costs.ROUTE_BYTES * fan_out
    use[:, 2] = syn
    use[:, 3] = fan_in
    use[:, 4] = fan_out
    return use


def make_blocks(
    net: Netlist, limits: np.ndarray, granularity: int = 4, max_neurons: int = 0, min_blocks: int = 0
) -> Blocks:
    """Cut the network into blocks (see the module doc). `limits`: per-core capacity per RESOURCES."""
    per_neuron = neuron_upper_bounds(net)
    readouts = channel_readouts(net)
    attached = {post for post, _ in readouts.values()}
    cap = np.asarray(limits, np.float64) / max(1, granularity)
    if max_neurons:
        cap[0] = min(cap[0], max_neurons)
    if min_blocks:  # cut finer so there are enough blocks to spread over cores
        cap[0] = min(cap[0], max(1.0, np.ceil(net.n_neurons / min_blocks)))
    block_of = np.full(net.n_neurons, -1, np.int64)
    use, groups, layers = [], [], []

    def close(ids: list[np.ndarray], gset: set, layer: int) -> None:
        idx = np.concatenate(ids)
        block_of[idx] = len(groups)
        use.append(per_neuron[idx].sum(axis=0))
        groups.append(tuple(sorted(gset)))
        layers.append(layer)

    for gi, g in enumerate(net.groups):
        if gi in attached:
            continue
        if gi in readouts:
            post_i, width = readouts[gi]
            post = net.groups[post_i]
            units = [
                np.concatenate([np.arange(g.offset + h * width, g.offset + (h + 1) * width), [post.offset + h]])
                for h in range(post.size)
            ]
            gset = {gi, post_i}
        else:
            step = 2 if g.kind == "cpx" else 1  # keep a mode's (re, im) together
            units = [np.arange(g.offset + a, g.offset + min(a + step, g.size)) for a in range(0, g.size, step)]
            gset = {gi}
        cur, cur_use = [], np.zeros(len(RESOURCES))
        for u in units:
            u_use = per_neuron[u].sum(axis=0)
            if cur and np.any(cur_use + u_use > cap):
                close(cur, gset, gi)
                cur, cur_use = [], np.zeros(len(RESOURCES))
            cur.append(u)
            cur_use += u_use
        if cur:
            close(cur, gset, gi)
    edges, weight = block_edges(net, block_of)
    return Blocks(
        block_of,
        np.array(use).reshape(-1, len(RESOURCES)),
        groups,
        np.array(layers, np.int64),
        edges,
        weight,
        hyperedges(net, block_of),
    )


def block_edges(net: Netlist, block_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rate-weighted distinct (sender, destination block) pairs, summed per (sender block, destination block)."""
    if not net.synapses:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    n_blocks = int(block_of.max()) + 1
    pre = np.concatenate([s.pre_ids for s in net.synapses])
    dst = block_of[np.concatenate([s.post_ids for s in net.synapses])]
    key = np.unique(pre * n_blocks + dst)
    pre, dst = key // n_blocks, key % n_blocks
    src = block_of[pre]
    keep = src != dst
    rate = net.neuron_rates()[pre[keep]]
    pair = src[keep] * n_blocks + dst[keep]
    uniq, inv = np.unique(pair, return_inverse=True)
    w = np.bincount(inv, weights=rate)
    return np.stack([uniq // n_blocks, uniq % n_blocks], axis=1), w


def hyperedges(net: Netlist, block_of: np.ndarray) -> list:
    """Traffic as (source block, destination blocks, messages per step): destination blocks that hear exactly
    the same senders of a source block share one hyperedge, because a sender's message reaches a core once
    however many of its blocks sit there (a dense mixing layer is one hyperedge, not one edge per block)."""
    if not net.synapses:
        return []
    n_blocks = int(block_of.max()) + 1
    pre = np.concatenate([s.pre_ids for s in net.synapses])
    dst = block_of[np.concatenate([s.post_ids for s in net.synapses])]
    key = np.unique(dst * net.n_neurons + pre)  # sorted by destination block, then sender
    dst, pre = key // net.n_neurons, key % net.n_neurons
    src = block_of[pre]
    keep = src != dst
    dst, pre, src = dst[keep], pre[keep], src[keep]
    rate = net.neuron_rates()
    groups: dict[tuple, list] = {}
    bounds = np.flatnonzero(np.diff(dst * n_blocks + src)) + 1
    for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(dst)]])):
        if a == b:
            continue
        senders = pre[a:b]
        sig = (int(src[a]), hash(senders.tobytes()), len(senders))
        if sig not in groups:
            groups[sig] = [int(src[a]), [], float(rate[senders].sum())]
        groups[sig][1].append(int(dst[a]))
    return [(s_, np.array(sorted(d), np.int64), w) for s_, d, w in sorted(groups.values(), key=lambda t: (t[0], t[1]))]
