"""The SSM passes change the representation, never the float function (until
assign-bitwidths quantizes), and each does the one thing its docstring says."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, given, settings

from ssmc.errors import PassError, SsmcError
from ssmc.frontend import import_onnx
from ssmc.ir import parse_graph, print_graph, verify
from ssmc.passes import FLOAT_PIPELINE, parse_pipeline, run_pipeline
from ssmc.passes.base import with_data
from ssmc.runtime.calibrate import measure_ranges
from ssmc.runtime.float_ref import run_float
from tests.builders.onnx_models import build_step_model, random_spec, step_model_specs

CONTINUOUS = """\
ssmc.graph @one
%x = input() {size = 1} : [1]
%s = s4d(%x) {form = "continuous", modes = 1} : [1]
  A = c64[1,1] [(-0.5, 3)]
  B = c64[1,1] [(1, 0)]
  C = c64[1,1] [(0.25, -0.5)]
  D = f32[1] [0.75]
  log_dt = f32[1] [-2]
%y = output(%s) : [1]
"""


def _run(graph, pipeline, calibration=None):
    return run_pipeline(graph, with_data(parse_pipeline(pipeline), calibration=calibration))[0]


def test_discretize_gives_the_zero_order_hold_of_the_continuous_layer():
    g = _run(parse_graph(CONTINUOUS), "discretize")
    op = g.op("s")
    dt = np.exp(-2.0)
    # ZOH from the matrix exponential of the augmented system [[A, B], [0, 0]] (independent of ssmc's formula).
    aug = np.array([[-0.5 + 3j, 1.0], [0, 0]]) * dt
    e = scipy.linalg.expm(aug)
    assert op.attrs["form"] == "discrete"
    np.testing.assert_allclose(op.params["A_bar"][0, 0], e[0, 0], rtol=1e-6)
    np.testing.assert_allclose(op.params["B_bar"][0, 0], e[0, 1] / dt * dt, rtol=1e-5)
    np.testing.assert_array_equal(op.params["C"], parse_graph(CONTINUOUS).op("s").params["C"])


def test_discretize_leaves_discrete_layers_alone():
    g = _run(parse_graph(CONTINUOUS), "discretize")
    before = print_graph(g)
    g2, records = run_pipeline(g, parse_pipeline("discretize"))
    assert print_graph(g2) == before and not records[0].changed


def test_discretize_refuses_an_unstable_layer_naming_it():
    text = CONTINUOUS.replace("(-0.5, 3)", "(0.1, 3)")
    with pytest.raises(SsmcError, match=r"%s \(s4d\): \|A_bar\| = .* >= 1 at channel 0, mode 0"):
        _run(parse_graph(text), "discretize")


def test_rescale_makes_b_real_and_fills_the_target_with_calibration():
    model = build_step_model(random_spec(3, n_layers=2))
    graph, _, _ = import_onnx_model(model)
    cal = np.random.default_rng(0).normal(size=(16, 32, graph.inputs()[0].shape[0]))
    g = _run(graph, "discretize,rescale-states{balance=state,target=0.5}", calibration=cal)
    ranges = measure_ranges(g, cal)
    for op in g.ops_of_kind("s4d"):
        assert np.all(op.params["B_bar"].imag == 0) and np.all(op.params["B_bar"].real >= 0)
        np.testing.assert_allclose(ranges.state(op.name), 0.5, rtol=1e-4)


def import_onnx_model(model):
    import os
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        onnx.save(model, path)
        return import_onnx(path)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=step_model_specs())
def test_float_pipeline_keeps_outputs(spec):
    graph, _, _ = import_onnx_model(build_step_model(spec))
    x = np.random.default_rng(1).normal(size=(2, 20, spec.in_features))
    want = run_float(graph, x)[graph.outputs()[0].name]
    for calibration in (None, x):
        g = _run(graph.copy(), FLOAT_PIPELINE, calibration=calibration)
        verify(g)
        assert not g.ops_of_kind("s4d") and len(g.ops_of_kind("cpx")) == spec.n_layers
        got = run_float(g, x)[g.outputs()[0].name]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_fuse_puts_one_neuron_pair_per_mode_and_the_factor_two_in_the_readout():
    g = _run(parse_graph(CONTINUOUS), "discretize,fuse-complex-pairs")
    kinds = [op.kind for op in g.ops()]
    assert kinds == ["input", "linear", "cpx", "linear", "linear", "add", "output"]
    readout = g.op("s.C").params["weight"]
    np.testing.assert_allclose(readout, [[0.5, 1.0]])  # 2 Re C, -2 Im C for C = 0.25 - 0.5i


FOLDABLE = """\
ssmc.graph @chain
%x = input() {size = 2} : [2]
%a = linear(%x) : [3]
  bias = f32[3] [1, 0, -1]
  weight = f32[3,2] [1, 0, 0, 1, 1, 1]
%b = linear(%a) : [1]
  weight = f32[1,3] [1, 2, 3]
%y = output(%b) : [1]
"""

FOLDED = """\
ssmc.graph @chain
%x = input() {size = 2} : [2]
%b = linear(%x) : [1]
  bias = f32[1] [-2]
  weight = f32[1,2] [4, 5]
%y = output(%b) : [1]
"""


def test_fold_linear_folds_a_chain_when_it_saves_synapses():
    g, records = run_pipeline(parse_graph(FOLDABLE), parse_pipeline("fold-linear"))
    assert print_graph(g) == FOLDED
    assert records[0].changed and "folded into %b" in records[0].notes[0]


@pytest.mark.parametrize("ratio", ["-1", "nan"])
def test_fold_linear_refuses_a_max_ratio_that_is_not_a_number_at_least_0(ratio):
    with pytest.raises(PassError, match=f"max-ratio = {float(ratio)}; give a number >= 0"):
        run_pipeline(parse_graph(FOLDABLE), parse_pipeline(f"fold-linear{{max-ratio={ratio}}}"))


def test_fold_linear_keeps_a_bottleneck():
    # 8 -> 1 -> 8: folding would turn 16 synapses + 1 relay into 64 synapses.
    ones = "[" + ", ".join(["1"] * 8) + "]"
    text = (
        "ssmc.graph @neck\n%x = input() {size = 8} : [8]\n%a = linear(%x) : [1]\n"
        f"  weight = f32[1,8] {ones}\n%b = linear(%a) : [8]\n"
        f"  weight = f32[8,1] {ones}\n%y = output(%b) : [8]\n"
    )
    g, records = run_pipeline(parse_graph(text), parse_pipeline("fold-linear"))
    assert [op.name for op in g.ops()] == ["x", "a", "b", "y"] and not records[0].changed
    assert "kept" in records[0].notes[0]


def test_fold_linear_keeps_a_chain_whose_product_would_overflow_float32():
    text = FOLDABLE.replace("weight = f32[1,3] [1, 2, 3]", "weight = f32[1,3] [1e30, 2e30, 3e30]")
    text = text.replace("weight = f32[3,2] [1, 0, 0, 1, 1, 1]", "weight = f32[3,2] [1e30, 0, 0, 1e30, 1, 1]")
    g, records = run_pipeline(parse_graph(text), parse_pipeline("fold-linear"))
    assert [op.name for op in g.ops()] == ["x", "a", "b", "y"] and not records[0].changed
    assert "overflow float32" in records[0].notes[0]


# -- layers whose modes are shared by all channels (S5, LRU: mixing = dense) ----------------------------
SHARED = """\
ssmc.graph @shared
%x = input() {size = 2} : [2]
%s = s4d(%x) {form = "continuous", mixing = "dense", modes = 2} : [2]
  A = c64[2] [(-0.5, 3), (-1, 0)]
  B = c64[2,2] [(1, 0), (0, 2), (-0.5, 0.5), (0.25, 0)]
  C = c64[2,2] [(0.25, -0.5), (1, 0), (0, 1), (-2, 0.5)]
  D = f32[2] [0.75, 0]
  log_dt = f32[2] [-2, -1]
%y = output(%s) : [2]
"""


def test_shared_modes_discretize_with_a_step_each_and_refuse_an_unstable_mode_by_index():
    g = _run(parse_graph(SHARED), "discretize")
    op = g.op("s")
    dt = np.exp([-2.0, -1.0])
    A = np.array([-0.5 + 3j, -1.0])
    np.testing.assert_allclose(op.params["A_bar"], np.exp(dt * A), rtol=1e-6)
    for p in range(2):  # ZOH from the augmented matrix exponential, per mode and channel
        for h, b in enumerate(parse_graph(SHARED).op("s").params["B"][p]):
            e = scipy.linalg.expm(np.array([[A[p], b], [0, 0]]) * dt[p])
            np.testing.assert_allclose(op.params["B_bar"][p, h], e[0, 1], rtol=1e-5, atol=1e-7)
    with pytest.raises(SsmcError, match=r"%s \(s4d\): \|A_bar\| = .* >= 1 at mode 1; "):
        _run(parse_graph(SHARED.replace("(-1, 0)]", "(0.1, 0)]")), "discretize")


@pytest.mark.parametrize("balance", ["input", "state"])
def test_rescale_makes_each_shared_modes_largest_input_weight_real_and_keeps_the_float_function(balance):
    graph = parse_graph(SHARED)
    x = np.random.default_rng(0).normal(size=(3, 12, 2))
    want = run_float(graph, x)["y"]
    g = _run(graph, f"discretize,rescale-states{{balance={balance}}}")
    B = g.op("s").params["B_bar"]
    largest = B[np.arange(2), np.abs(B).argmax(axis=1)]
    np.testing.assert_allclose(largest.imag, 0, atol=1e-6)
    assert np.all(largest.real > 0)
    if balance == "input":
        np.testing.assert_allclose(largest.real, 1, rtol=1e-6)
    np.testing.assert_allclose(run_float(g, x)["y"], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_fuse_gives_shared_modes_dense_input_and_readout_linears_around_p_pairs():
    graph = parse_graph(SHARED)
    x = np.random.default_rng(1).normal(size=(2, 9, 2))
    want = run_float(graph, x)["y"]
    g = _run(graph, "discretize,fuse-complex-pairs")
    assert [op.kind for op in g.ops()] == ["input", "linear", "cpx", "linear", "linear", "add", "output"]
    assert g.op("s.pairs").attrs["modes"] == 2
    W_B = g.op("s.B").params["weight"]
    assert W_B.shape == (4, 2) and np.all(W_B[0::2] != 0)  # every mode's re compartment hears both channels
    assert g.op("s.C").params["weight"].shape == (2, 4)
    np.testing.assert_allclose(g.op("s.C").params["weight"][:, :2], [[0.5, 1.0], [0.0, -2.0]])  # 2 Re C, -2 Im C
    np.testing.assert_allclose(run_float(g, x)["y"], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
