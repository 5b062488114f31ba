"""assign-bitwidths lowers the float network to integer neuron and synapse groups
in the representable ranges, with delays that line up every token."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ssmc.errors import SsmcError
from ssmc.ir import verify
from ssmc.passes import DEFAULT_PIPELINE, parse_pipeline, run_pipeline
from ssmc.passes.assign_bitwidths import quantize_weights, weight_step
from ssmc.passes.base import with_data
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.numpy_engine import run_numpy
from tests.builders.onnx_models import build_step_model, random_spec
from tests.passes.test_ssm_passes import import_onnx_model


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(3, 8), scale=st.floats(1e-6, 1e6), seed=st.integers(0, 2**16))
def test_quantized_weights_follow_lava_dense_and_approximate_the_real_ones(bits, scale, seed):
    w_eff = np.random.default_rng(seed).normal(size=(5, 7)) * scale
    w, e = quantize_weights(w_eff, bits)
    step = weight_step(bits)
    assert w.dtype == np.int32 and np.all(w % step == 0)
    assert w.min() >= -128 and w.max() <= 128 - step
    # Error at most half a step of the chosen exponent, and the exponent is as small as fits.
    assert np.abs(w * 2.0 ** e - w_eff).max() <= step / 2 * 2.0 ** e * (1 + 1e-9)
    top = 128 - step
    assert np.abs(w).max() >= top / 2 - step / 2  # the exponent is the smallest that fits: top half is used


def _lower(spec_seed=0, pipeline=DEFAULT_PIPELINE, **overrides):
    spec = random_spec(spec_seed, **overrides)
    graph, _, _ = import_onnx_model(build_step_model(spec))
    cal = np.random.default_rng(0).normal(size=(8, 16, spec.in_features))
    return run_pipeline(graph, with_data(parse_pipeline(pipeline), calibration=cal))


@pytest.mark.parametrize("seed", range(4))
def test_lowered_graph_is_neuro_level_with_consistent_delays(seed):
    g, _ = _lower(seed, activation="relu", glu=False, norm=False)
    verify(g)
    assert {op.kind for op in g.ops()} == {"input", "neurons", "synapses", "output"}
    for syn in g.ops_of_kind("synapses"):
        (post,) = g.consumers(syn.name)
        pre = g.op(syn.inputs[0])
        assert syn.attrs["delay"] == post.attrs["depth"] - pre.attrs["depth"] >= 1
    cpx = [op for op in g.ops_of_kind("neurons") if op.attrs["kind"] == "cpx"]
    assert len(cpx) == random_spec(seed).n_layers


def _fixed_vs_float(spec_seed, pipeline=DEFAULT_PIPELINE, **overrides):
    """(lowered graph, max |numpy engine - float reference| / max |float reference|) on the calibration data."""
    spec = random_spec(spec_seed, **overrides)
    graph, _, _ = import_onnx_model(build_step_model(spec))
    x = np.random.default_rng(spec_seed).normal(size=(16, 24, spec.in_features))
    ref = run_float(graph, x)[graph.outputs()[0].name]
    g, _ = run_pipeline(graph.copy(), with_data(parse_pipeline(pipeline), calibration=x))
    y = run_numpy(g, x).outputs[g.outputs()[0].name]
    return g, float(np.abs(y - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("fn", ["gelu", "gelu_tanh", "sigmoid", "tanh"])
@pytest.mark.parametrize("glu", [False, True])
def test_smooth_activations_become_tables_and_glu_a_gated_product_close_to_float(fn, glu):
    g, err = _fixed_vs_float(2, activation=fn, glu=glu, norm=False)
    kinds = [op.attrs["kind"] for op in g.ops_of_kind("neurons")]
    n_layers = random_spec(2).n_layers
    assert kinds.count("lut") == n_layers * (2 if glu else 1)  # the activation, and GLU's sigmoid gate
    assert kinds.count("product") == (n_layers if glu else 0)
    assert err < 0.25  # ReLU models of this builder land at 0.03-0.05, tables at 0.02-0.12 (8-bit tables)


def test_more_table_entries_approximate_the_function_better():
    errs = [_fixed_vs_float(0, DEFAULT_PIPELINE.replace("assign-bitwidths", f"assign-bitwidths{{lut-bits={b}}}"),
                            activation="tanh", glu=True, norm=False)[1] for b in (2, 10)]
    assert errs[1] < errs[0] / 2


def test_a_norm_is_refused_without_freeze_norms_naming_it_and_the_fix():
    with pytest.raises(SsmcError, match=r"%norm\d \(norm\): no integer realisation.*run freeze-norms"):
        _lower(1, pipeline=DEFAULT_PIPELINE.replace("freeze-norms,", ""), activation="relu", norm=True)


@pytest.mark.parametrize("option, value", [("weight-bits", 9), ("weight-bits", 2), ("state-bits", 40),
                                           ("coef-bits", 2), ("message-bits", 33)])
def test_widths_the_target_cannot_hold_are_refused(option, value):
    with pytest.raises(SsmcError, match=f"{option} = {value} is outside what the target supports"):
        _lower(0, pipeline=DEFAULT_PIPELINE.replace("assign-bitwidths", f"assign-bitwidths{{{option}={value}}}"),
               activation="relu", glu=False, norm=False)


def test_without_calibration_the_report_says_ranges_are_guessed():
    spec = random_spec(0, activation="relu", glu=False, norm=False)
    graph, _, _ = import_onnx_model(build_step_model(spec))
    _, records = run_pipeline(graph, parse_pipeline(DEFAULT_PIPELINE))
    assert any("no calibration data" in n for n in next(r for r in records if r.name == "assign-bitwidths").notes)


def test_layer_bits_override_the_widths_of_one_layer_only():
    g, _ = _lower(0, pipeline=DEFAULT_PIPELINE.replace(
        "assign-bitwidths", "assign-bitwidths{layer-bits=s4d0:weight=5/coef=12/state=20}"),
        activation="relu", glu=False, norm=False, n_layers=2)
    for syn in g.ops_of_kind("synapses"):
        expected = 5 if syn.attrs["source"].startswith("s4d0.") else 8
        assert syn.attrs["weight_bits"] == expected, syn.attrs["source"]
    pairs = {op.attrs["source"]: op for op in g.ops_of_kind("neurons") if op.attrs["kind"] == "cpx"}
    assert (pairs["s4d0.pairs"].attrs["coef_bits"], pairs["s4d0.pairs"].attrs["state_bits"]) == (12, 20)
    assert (pairs["s4d1.pairs"].attrs["coef_bits"], pairs["s4d1.pairs"].attrs["state_bits"]) == (16, 24)
    assert np.abs(pairs["s4d0.pairs"].params["c_re"]).max() < 2 ** 11


@pytest.mark.parametrize("spec, message", [
    ("nope:weight=6", "'nope', which is not in the network"),
    ("s4d0:weight", "write KEY=BITS"),
    ("s4d0:bias=3", "write KEY=BITS"),
    ("s4d0:weight=9", "s4d0 weight-bits = 9 is outside"),
])
def test_bad_layer_bits_are_refused(spec, message):
    with pytest.raises(SsmcError, match=message):
        _lower(0, pipeline=DEFAULT_PIPELINE.replace("assign-bitwidths", f"assign-bitwidths{{layer-bits={spec}}}"),
               activation="relu", glu=False, norm=False)
