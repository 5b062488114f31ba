"""A hand-edited (damaged) neuro-level net is refused with an SsmcError, quickly:
no giant Python integers, no loops over absurd step counts, no huge buffers.
(Found by tests/test_fuzz_graphs.py::test_edited_nets_run_or_are_refused_with_an_ssmc_error.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssmc.api import Net
from ssmc.backend_loihi.microcode.emit import emit_microcode
from ssmc.errors import IRError, ResourceLimitError
from ssmc.ir.verify import verify
from ssmc.runtime import microcode_engine, reference
from ssmc.runtime.numpy_engine import run_numpy
from tests.test_fuzz_graphs import _compiled_net


def _edit(kind: str, key: str, value):
    graph = _compiled_net(1).graph.copy()
    op = next(op for op in graph.ops_of_kind(kind) if kind != "neurons" or op.attrs["kind"] != "source")
    op.attrs[key] = value
    return graph, op.name


@pytest.mark.parametrize(
    "kind, key, value, error, phrase",
    [
        ("neurons", "depth", 2**40, IRError, "is more than all synapse delays together"),
        ("neurons", "out_shift", 2**40, IRError, "out_shift = 1099511627776 is outside 0..63"),
        ("neurons", "lut_shift", 64, IRError, "lut_shift = 64 is outside 0..63"),
        ("neurons", "frac", 5000, IRError, "frac = 5000 is outside -960..960"),
        ("synapses", "weight_exp", 2**40, IRError, "weight_exp = 1099511627776 is outside -63..63"),
        ("synapses", "delay", 2**40, ResourceLimitError, "on the numpy engine"),
    ],
)
def test_a_damaged_attribute_is_refused(kind, key, value, error, phrase):
    graph, name = _edit(kind, key, value)
    with pytest.raises(error, match=phrase):
        run_numpy(graph, np.zeros((2, 4, 2)))


def _over_capacity(graph):
    """The placed graph with its target shrunk to one neuron a core, so its placement no longer fits."""
    target = json.loads(graph.attrs["target"])
    target["neurons"] = 1
    graph.attrs["target"] = json.dumps(target, sort_keys=True, separators=(",", ":"))
    return graph


def _run_microcode(graph, x):
    net = Net(graph=graph, source={}, pipeline="", report={}, extras=emit_microcode(graph))
    return microcode_engine.run_net(net, x)


@pytest.mark.parametrize("run", [run_numpy, _run_microcode], ids=["numpy", "microcode"])
def test_a_placed_net_over_capacity_still_runs_the_same_integers(run):
    # capacities are a property of the mapping (compile and ssmc.load check them), not of a run's arithmetic
    graph = _compiled_net(1).graph.copy()
    x = np.random.default_rng(0).normal(size=(2, 4, 2))
    expected = run(graph, x).outputs
    squeezed = _over_capacity(graph.copy())
    with pytest.raises(IRError, match="neurons .* exceeds the target's 1"):
        verify(squeezed)
    got = run(squeezed, x).outputs
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_a_placed_net_over_capacity_is_still_refused_when_structurally_broken():
    # only the capacity count is skipped at run time: every other invariant is still checked
    graph = _over_capacity(_compiled_net(1).graph.copy())
    syn = next(iter(graph.ops_of_kind("synapses")))
    syn.params["weight"] = syn.params["weight"] * 1000
    with pytest.raises(IRError, match=f"%{syn.name} .*weights outside the 8-bit range"):
        run_numpy(graph, np.zeros((2, 4, 2)))


def _model_level_graph():
    from ssmc.frontend.convert import convert
    from ssmc.frontend.load import load_model_bytes
    from tests.builders.onnx_models import build_step_model, random_spec

    spec = random_spec(1, H=3, M=2, n_layers=1, in_features=2, n_out=2)
    return convert(load_model_bytes(build_step_model(spec).SerializeToString()).model)[0]


def _run_lava_plan(graph, x):
    from ssmc.backend_loihi.lava_net import plan_lava

    return plan_lava(graph, x)


@pytest.mark.parametrize(
    "engine, run",
    [
        ("numpy", run_numpy),
        ("microcode", lambda g, x: microcode_engine.run_net(Net(graph=g, source={}, pipeline="", report={}), x)),
        ("reference", lambda g, x: reference.run_reference(g, x)),
        ("Lava", _run_lava_plan),
    ],
)
def test_a_graph_an_engine_cannot_run_is_refused_naming_that_engine(engine, run):
    with pytest.raises(IRError, match=f"the {engine} engine runs the neuro-level IR"):
        run(_model_level_graph(), np.zeros((2, 4, 2)))


@pytest.mark.parametrize("coef_bits, state_bits, refused", [(32, 32, True), (31, 32, False), (32, 31, False)])
def test_a_complex_pair_whose_products_could_pass_int64_is_refused(coef_bits, state_bits, refused):
    # at 32 + 32 bits, c_re x_im + c_im x_re reaches 2^63: the engines' int64 would wrap where the
    # contract's exact integers do not, so such a group never runs
    graph = _compiled_net(1).graph.copy()
    cpx = next(op for op in graph.ops_of_kind("neurons") if op.attrs["kind"] == "cpx")
    cpx.attrs.update(coef_bits=coef_bits, state_bits=state_bits)
    if refused:
        with pytest.raises(IRError, match=f"%{cpx.name}.*coef_bits 32 \\+ state_bits 32 > 63.*lower either"):
            verify(graph)
    else:
        verify(graph)
