"""assign-bitwidths lowers the float network to integer neuron and synapse groups
in the representable ranges, with delays that line up every token."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ssmc.errors import SsmcError
from ssmc.ir import verify
from ssmc.passes import DEFAULT_PIPELINE, FLOAT_PIPELINE, parse_pipeline, run_pipeline
from ssmc.passes.assign_bitwidths import move_mode_scale_to_input, quantize_weights, split_by_row_exponent, weight_step
from ssmc.passes.base import with_data
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.numpy_engine import run_numpy
from tests.builders.onnx_models import StepModelSpec, build_step_model, random_spec, step_model_parameters
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
    assert np.abs(w * 2.0**e - w_eff).max() <= step / 2 * 2.0**e * (1 + 1e-9)
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
    errs = [
        _fixed_vs_float(
            0,
            DEFAULT_PIPELINE.replace("assign-bitwidths", f"assign-bitwidths{{lut-bits={b}}}"),
            activation="tanh",
            glu=True,
            norm=False,
        )[1]
        for b in (2, 10)
    ]
    assert errs[1] < errs[0] / 2


def test_a_norm_is_realised_on_neurons_by_default_and_frozen_only_with_freeze_norms():
    kinds = {op.attrs["kind"] for op in _lower(1, activation="relu", glu=False, norm=True)[0].ops_of_kind("neurons")}
    assert {"lut", "product"} <= kinds  # the 1/sqrt tables and the squares and normalised products
    frozen, _ = _lower(
        1,
        pipeline=DEFAULT_PIPELINE.replace("assign-bitwidths", "freeze-norms,assign-bitwidths"),
        activation="relu",
        glu=False,
        norm=True,
    )
    assert not {"lut", "product"} & {op.attrs["kind"] for op in frozen.ops_of_kind("neurons")}


@pytest.mark.parametrize(
    "option, value",
    [("weight-bits", 9), ("weight-bits", 2), ("state-bits", 40), ("coef-bits", 2), ("message-bits", 33)],
)
def test_widths_the_target_cannot_hold_are_refused(option, value):
    with pytest.raises(SsmcError, match=f"{option} = {value} is outside what the target supports"):
        _lower(
            0,
            pipeline=DEFAULT_PIPELINE.replace("assign-bitwidths", f"assign-bitwidths{{{option}={value}}}"),
            activation="relu",
            glu=False,
            norm=False,
        )


def test_without_calibration_the_report_says_ranges_are_guessed():
    spec = random_spec(0, activation="relu", glu=False, norm=False)
    graph, _, _ = import_onnx_model(build_step_model(spec))
    _, records = run_pipeline(graph, parse_pipeline(DEFAULT_PIPELINE))
    assert any("no calibration data" in n for n in next(r for r in records if r.name == "assign-bitwidths").notes)


def test_layer_bits_override_the_widths_of_one_layer_only():
    g, _ = _lower(
        0,
        pipeline=DEFAULT_PIPELINE.replace(
            "assign-bitwidths", "assign-bitwidths{layer-bits=s4d0:weight=5/coef=12/state=20}"
        ),
        activation="relu",
        glu=False,
        norm=False,
        n_layers=2,
    )
    for syn in g.ops_of_kind("synapses"):
        expected = 5 if syn.attrs["source"].startswith("s4d0.") else 8
        assert syn.attrs["weight_bits"] == expected, syn.attrs["source"]
    pairs = {op.attrs["source"]: op for op in g.ops_of_kind("neurons") if op.attrs["kind"] == "cpx"}
    assert (pairs["s4d0.pairs"].attrs["coef_bits"], pairs["s4d0.pairs"].attrs["state_bits"]) == (12, 20)
    assert (pairs["s4d1.pairs"].attrs["coef_bits"], pairs["s4d1.pairs"].attrs["state_bits"]) == (16, 24)
    assert np.abs(pairs["s4d0.pairs"].params["c_re"]).max() < 2**11


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope:weight=6", "'nope', which is not in the network"),
        ("s4d0:weight", "write KEY=BITS"),
        ("s4d0:bias=3", "write KEY=BITS"),
        ("s4d0:weight=9", "s4d0 weight-bits = 9 is outside"),
    ],
)
def test_bad_layer_bits_are_refused(spec, message):
    with pytest.raises(SsmcError, match=message):
        _lower(
            0,
            pipeline=DEFAULT_PIPELINE.replace("assign-bitwidths", f"assign-bitwidths{{layer-bits={spec}}}"),
            activation="relu",
            glu=False,
            norm=False,
        )


# -- weight exponents: one per synapse group, or per row by splitting the group ------------------------
def _dendrite(parts, m: np.ndarray) -> np.ndarray:
    """What the synapse groups `parts` [(weights, exponent)] deliver together for messages m (docs/fixed_point.md)."""
    out = np.zeros(parts[0][0].shape[0], np.int64)
    for w, e in parts:
        acc = w.astype(np.int64) @ m
        out += acc << e if e >= 0 else acc >> -e
    return out


@settings(max_examples=80, deadline=None)
@given(bits=st.integers(3, 8), seed=st.integers(0, 2**16), spread=st.integers(0, 16))
def test_splitting_by_row_exponent_delivers_exactly_what_per_row_exponents_would(bits, seed, spread):
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(1, 9)), int(rng.integers(1, 7))
    w_eff = rng.normal(size=(rows, cols)) * 2.0 ** rng.integers(-spread, spread + 1, size=(rows, 1))
    w_eff[rng.random(rows) < 0.2] = 0.0  # some rows all zero
    m = rng.integers(-(2**15), 2**15, size=cols)
    parts = split_by_row_exponent(w_eff, bits)
    # reference: every row quantized on its own, shifted by its own exponent
    per_row = [quantize_weights(w_eff[i : i + 1], bits) for i in range(rows)]
    expected = np.array([_dendrite([(w, e)], m)[0] for w, e in per_row])
    np.testing.assert_array_equal(_dendrite(parts, m), expected)
    step = weight_step(bits)
    for w, e in parts:  # each part is a valid synapse group on Lava's weight grid
        assert np.all(w % step == 0) and w.min() >= -128 and w.max() <= 128 - step
    holders = sum((np.abs(w).sum(axis=1) > 0).astype(int) for w, _ in parts)
    assert holders.max() <= 1  # a row lives in one part only: no synapse is stored twice
    assert len({e for _, e in parts}) == len(parts)
    assert len(parts) <= max(1, len({e for w, e in per_row if np.any(w)}))


def test_rows_exact_at_a_coarser_exponent_share_its_group():
    w_eff = np.array([[64.0, -32.0], [1.0, 0.5], [4.0, 2.0]])  # row 2 is row 1 times 4, exact either way
    parts = split_by_row_exponent(w_eff, 8)
    assert len(parts) == 2
    (w_big, e_big), (w_small, e_small) = parts
    assert e_big > e_small and np.any(w_big[2]) and not np.any(w_small[2])


def _scaled_channels_model(shift_bits: int = 10):
    """One S4D layer whose channel h has C scaled by 2**-s_h (s_h from 0 to shift_bits), undone by the decoder
    (diag 2**s_h) after a ReLU, so every logit matters equally while C's rows span 2**shift_bits."""
    H = 6
    spec = StepModelSpec(in_features=1, H=H, M=4, n_layers=1, n_out=H, activation="relu", residual=False)
    p = step_model_parameters(spec)
    s = np.round(np.linspace(0, shift_bits, H))
    p["layers.0.s4d.C"] = (p["layers.0.s4d.C"] * 2.0 ** -s[:, None, None]).astype(np.float32)
    p["layers.0.s4d.D"] = np.zeros(H, np.float32)
    p["layers.0.mix.weight"], p["layers.0.mix.bias"] = np.eye(H, dtype=np.float32), np.zeros(H, np.float32)
    p["decoder.weight"], p["decoder.bias"] = np.diag(2.0**s).astype(np.float32), np.zeros(H, np.float32)
    graph, _, _ = import_onnx_model(build_step_model(spec, p))
    return graph


def _errors_by_mode(graph, modes):
    x = np.random.default_rng(0).normal(size=(16, 24, 1))
    ref = run_float(graph, x)[graph.outputs()[0].name]
    out = {}
    for mode in modes:
        pipeline = DEFAULT_PIPELINE.replace("assign-bitwidths", f"assign-bitwidths{{weight-exp={mode}}}")
        g, records = run_pipeline(graph.copy(), with_data(parse_pipeline(pipeline), calibration=x))
        y = run_numpy(g, x).outputs[g.outputs()[0].name]
        worst = float(np.max(np.sqrt(np.mean((y - ref) ** 2, axis=(0, 1)) / np.mean(ref**2, axis=(0, 1)))))
        out[mode] = (worst, g, next(r for r in records if r.name == "assign-bitwidths").notes)
    return out


def test_per_row_exponents_keep_small_channels_a_shared_exponent_loses():
    res = _errors_by_mode(_scaled_channels_model(), ("group", "row", "auto"))
    assert res["group"][0] > 0.5  # the shared exponent leaves the small (or, in the decoder, the large) rows no levels
    assert res["row"][0] < 0.1 and res["auto"][0] < 0.1
    n_syn = {mode: len(r[1].ops_of_kind("synapses")) for mode, r in res.items()}
    assert n_syn["group"] < n_syn["auto"] < n_syn["row"]  # auto splits only what pays: C and the decoder
    notes = res["auto"][2]
    assert any(n.startswith("weight-exp auto: calibration error") for n in notes)
    assert any(n.startswith("%s4d0.C: calibration error") and n.endswith("-> per-row") for n in notes)
    assert any(n.startswith("%s4d0.B: calibration error") and n.endswith("-> one exponent") for n in notes)


def test_an_unknown_weight_exp_is_refused():
    with pytest.raises(SsmcError, match="weight-exp must be one of group, row, auto, got 'column'"):
        _lower(
            0,
            pipeline=DEFAULT_PIPELINE.replace("assign-bitwidths", "assign-bitwidths{weight-exp=column}"),
            activation="relu",
            glu=False,
            norm=False,
        )


def test_a_row_far_below_the_others_keeps_an_exponent_the_ir_can_hold():
    w_eff = np.array([[1.0, -0.5], [2.0**-100, 2.0**-90], [0.0, 0.0]])
    parts = split_by_row_exponent(w_eff, 8)
    assert all(abs(e) <= 63 for _, e in parts)
    m = np.array([3, -7])
    expected = [_dendrite([quantize_weights(w_eff[:1], 8)], m)[0], 0, 0]  # 2**-90 is below the finest step
    np.testing.assert_array_equal(_dendrite(parts, m), expected)


def test_moving_mode_scale_to_the_input_changes_no_float_output_and_evens_the_readout():
    spec = random_spec(3, activation="relu", glu=False, norm=False, n_layers=1)
    graph, _, _ = import_onnx_model(build_step_model(spec))
    g, _ = run_pipeline(graph, parse_pipeline(FLOAT_PIPELINE))
    moved = move_mode_scale_to_input(g, "s4d0.pairs")
    x = np.random.default_rng(1).normal(size=(4, 12, spec.in_features))
    a, b = run_float(g, x)[g.outputs()[0].name], run_float(moved, x)[g.outputs()[0].name]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())
    c = moved.op("s4d0.C").params["weight"].astype(np.float64)
    per_mode = np.sqrt((c[:, 0::2] ** 2 + c[:, 1::2] ** 2).sum(axis=0))
    np.testing.assert_allclose(per_mode[per_mode > 0], per_mode.max(), rtol=1e-5)
    assert g.op("s4d0.C").params["weight"] is not moved.op("s4d0.C").params["weight"]  # a copy: g is untouched
