"""Structural blocks keep each S4D channel's modes with the neuron that sums them."""

from __future__ import annotations

import numpy as np

from ssmc.ir.graph import Graph, Op
from ssmc.mapping.blocks import channel_readouts
from ssmc.mapping.netlist import build_netlist
from tests.builders.neuro_models import s4d_stack


def _readout_split_in_two(g: Graph) -> Graph:
    """g with layer 0's readout C as two synapse groups (even and odd channels), as per-row exponents make it."""
    out = Graph(g.name)
    for op in g.ops():
        if op.name == "s0.C":
            w = op.params["weight"]
            even = w.copy()
            even[1::2] = 0
            out.add(Op("s0.C", "synapses", op.inputs, dict(op.attrs), {"weight": even}, shape=op.shape))
            out.add(Op("s0.C.odd", "synapses", op.inputs, dict(op.attrs), {"weight": w - even}, shape=op.shape))
        elif op.name == "relu0":
            out.add(
                Op(
                    op.name,
                    op.kind,
                    ("s0.C", "s0.C.odd") + op.inputs[1:],
                    dict(op.attrs),
                    dict(op.params),
                    shape=op.shape,
                )
            )
        else:
            out.add(Op(op.name, op.kind, op.inputs, dict(op.attrs), dict(op.params), shape=op.shape))
    return out


def test_a_readout_split_into_several_synapse_groups_still_keeps_channels_together():
    g = s4d_stack(6, 2, 2)
    whole = channel_readouts(build_netlist(g))
    assert len(whole) == 2  # both layers' cpx groups, each with its relu
    assert channel_readouts(build_netlist(_readout_split_in_two(g))) == whole


def test_a_cpx_read_by_two_different_groups_is_not_a_channel_readout():
    g = _readout_split_in_two(s4d_stack(6, 2, 1))
    ops = {op.name: op for op in g.ops()}
    w = ops["s0.C.odd"].params["weight"]
    assert np.any(w)
    moved = Graph(g.name)
    for op in g.ops():  # the odd half now feeds the residual relay instead of the relu
        inputs = op.inputs
        if op.name == "relu0":
            inputs = tuple(i for i in inputs if i != "s0.C.odd")
        elif op.name == "add0":
            inputs = inputs + ("s0.C.odd",)
        moved.add(Op(op.name, op.kind, inputs, dict(op.attrs), dict(op.params), shape=op.shape))
    assert channel_readouts(build_netlist(moved)) == {}
