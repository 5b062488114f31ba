"""A flat, neuron-level view of a neuro-level graph: what the mapper and the verifier count.

Neuron groups are laid end to end in graph order, so neuron i of group g has
the global id ``offset[g] + i``. Each synapse group keeps only the positions
of its non-zero weights (post, pre, as global ids): zero weights are neither
stored on a core nor sent to. Built once per graph; plain numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssmc.ir.graph import Graph


@dataclass
class GroupInfo:
    name: str
    kind: str
    size: int
    offset: int
    delta: int
    table_entries: int
    rate: float  # messages per neuron per step (1.0 = dense, every step)


@dataclass
class SynapseInfo:
    name: str
    pre: str
    post: str
    weight_bits: int
    pre_ids: np.ndarray  # global ids of the sending neuron of each non-zero weight
    post_ids: np.ndarray  # global ids of the receiving neuron


@dataclass
class Netlist:
    groups: list[GroupInfo]
    synapses: list[SynapseInfo]
    n_neurons: int

    def group(self, name: str) -> GroupInfo:
        return next(g for g in self.groups if g.name == name)

    def group_of(self) -> np.ndarray:
        """Group index of every neuron."""
        return np.repeat(np.arange(len(self.groups)), [g.size for g in self.groups])

    def neuron_rates(self) -> np.ndarray:
        return np.repeat([g.rate for g in self.groups], [g.size for g in self.groups]).astype(np.float64)


def group_rate(op, default_sigma_delta_rate: float) -> float:
    """A group's message rate: its recorded `msg_rate`, else 1 (dense) or the sigma-delta default."""
    rate = float(op.attrs.get("msg_rate", -1.0))
    if rate >= 0:
        return rate
    return default_sigma_delta_rate if int(op.attrs.get("delta", 0)) else 1.0


#: Without a measured rate, a sigma-delta group is assumed to send on this fraction of steps.
ASSUMED_SIGMA_DELTA_RATE = 0.5


def build_netlist(graph: Graph) -> Netlist:
    groups, offsets = [], {}
    n = 0
    for op in graph.ops_of_kind("neurons"):
        size = int(op.attrs["size"])
        table = op.params.get("table")
        groups.append(
            GroupInfo(
                op.name,
                op.attrs["kind"],
                size,
                n,
                int(op.attrs.get("delta", 0)),
                int(table.size) if table is not None else 0,
                group_rate(op, ASSUMED_SIGMA_DELTA_RATE),
            )
        )
        offsets[op.name] = n
        n += size
    synapses = []
    for op in graph.ops_of_kind("synapses"):
        pre = op.inputs[0]
        posts = [c for c in graph.consumers(op.name) if c.kind == "neurons"]
        if pre not in offsets or not posts:
            continue
        post = posts[0].name
        rows, cols = np.nonzero(op.params["weight"])
        synapses.append(
            SynapseInfo(
                op.name,
                pre,
                post,
                int(op.attrs.get("weight_bits", 8)),
                (cols + offsets[pre]).astype(np.int64),
                (rows + offsets[post]).astype(np.int64),
            )
        )
    return Netlist(groups, synapses, n)
