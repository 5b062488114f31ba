"""assign-bitwidths realises a LayerNorm on neurons: its error is quantization error, on any token.

Sum and centred values through synapses, squares and the normalised values
through product groups, 1 / sqrt(var + eps) from a chain of tables; every
engine computes the same integers, and unlike frozen statistics (freeze-norms,
still available) the output stays right for tokens whose spread differs from
the calibration data's.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ssmc
from ssmc.ir import parse_graph
from ssmc.passes import DEFAULT_PIPELINE, FROZEN_NORMS_PIPELINE, parse_pipeline, run_pipeline
from ssmc.passes.assign_bitwidths import rsqrt_tables
from ssmc.passes.base import with_data
from ssmc.runtime.calibrate import NormRanges
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.numpy_engine import run_numpy
from ssmc.runtime.reference import run_reference
from tests.builders.onnx_models import build_step_model, random_spec
from tests.runtime.test_engine_contract import assert_same_result
from tests.runtime.test_microcode_engine import assert_same_run as assert_same_microcode_run


def norm_model(H: int, seed: int) -> str:
    """x [H] -> LayerNorm with random weight and bias -> y, as IR text."""
    rng = np.random.default_rng(seed)
    w = ", ".join(f"{v:.3f}" for v in 1 + 0.5 * rng.standard_normal(H))
    b = ", ".join(f"{v:.3f}" for v in 0.2 * rng.standard_normal(H))
    return (
        f"ssmc.graph @n\n%x = input() {{size = {H}}} : [{H}]\n%norm = norm(%x) {{eps = 1e-05}} : [{H}]\n"
        f"  bias = f32[{H}] [{b}]\n  weight = f32[{H}] [{w}]\n%y = output(%norm) : [{H}]\n"
    )


def tokens(seed: int, H: int, n=16, t=8, spread=1.0, offset=0.0) -> np.ndarray:
    """Tokens whose std varies over a factor 4 (times `spread`) around a per-token mean."""
    rng = np.random.default_rng(seed)
    std = spread * rng.uniform(0.5, 2.0, size=(n, t, 1))
    return offset + rng.normal(size=(n, t, 1)) + std * rng.normal(size=(n, t, H))


def lower(text: str, cal: np.ndarray, passes: str = "assign-bitwidths"):
    return run_pipeline(parse_graph(text), with_data(parse_pipeline(passes), calibration=cal))[0]


def rel_error(g, text: str, x) -> float:
    """max |fixed - float| over the float output's largest |value|."""
    ref = run_float(parse_graph(text), x)["y"]
    y = run_numpy(g, x).outputs["y"]
    return float(np.abs(y - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("seed", range(3))
def test_the_tables_give_one_over_sqrt_within_a_permille_over_the_calibrated_variances(seed):
    rng = np.random.default_rng(seed)
    H, eps, v_frac = int(rng.integers(2, 70)), 1e-5, int(rng.integers(10, 20))
    st = NormRanges(var_min=float(rng.uniform(1e-3, 0.1)), var_max=float(rng.uniform(0.5, 50)))
    tables, frac = rsqrt_tables(H, eps, v_frac, st, 10, 24, 1)
    assert len(tables) > 1 and tables[0][1].size == 1025 and all(t.size == 1026 for _, t in tables[1:])
    var = np.geomspace(st.var_min, st.var_max, 2000)
    S = var * H * 2.0**v_frac  # the sum of squares
    # what the synapses (floor(-S / 2**shift)), clamps (relu(1025 + that)), lut groups and the relay
    # summing them compute (docs/fixed_point.md)
    got = tables[0][1][np.clip(1024 + np.floor(-S / 2.0 ** tables[0][0]).astype(np.int64), 0, 1024)]
    for sh, t in tables[1:]:
        got = got + t[np.maximum(1025 + np.floor(-S / 2.0**sh).astype(np.int64), 0)]
    want = 1 / np.sqrt(var + eps)
    assert np.max(np.abs(got * 2.0**-frac / want - 1)) < 1e-3


def test_a_norm_becomes_sum_centre_square_tables_rsqrt_normed_and_an_affine_relay_named_like_it():
    g = lower(norm_model(6, 0), tokens(0, 6))
    groups = {op.name: op.attrs["kind"] for op in g.ops_of_kind("neurons")}
    assert groups["norm"] == "relay" and groups["norm.sum"] == groups["norm.centre"] == "relay"
    assert groups["norm.square"] == groups["norm.normed"] == "product"
    assert groups["norm.rsqrt"] == "relay" and groups["norm.rsqrt0"] == groups["norm.rsqrt1"] == "lut"
    assert groups["norm.clamp1"] == "relu"
    assert g.op("norm").attrs["depth"] == 8


@pytest.mark.parametrize("H", [3, 8, 37])
def test_fixed_point_follows_the_exact_norm_where_frozen_statistics_do_not(H):
    text = norm_model(H, H)
    cal = tokens(1, H)
    neurons, frozen = lower(text, cal), lower(text, cal, "freeze-norms,assign-bitwidths")
    # the same distribution, and a shifted one: every token's std halved, the mean moved
    for x in (tokens(2, H), tokens(3, H, spread=0.5, offset=0.5)):
        assert rel_error(neurons, text, x) < 0.01
    assert rel_error(frozen, text, tokens(3, H, spread=0.5, offset=0.5)) > 0.2


@pytest.fixture(scope="module")
def norm_net(tmp_path_factory):
    spec = random_spec(
        11, H=int(np.random.default_rng(11).integers(3, 9)), M=2, n_layers=2, norm=True, glu=False, activation="relu"
    )
    path = tmp_path_factory.mktemp("norm") / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    x = np.random.default_rng(0).normal(size=(8, 8, spec.in_features))
    return ssmc.compile(path, readout="mean", calibration=x, stop_after="assign-bitwidths"), x


def test_random_layernorm_models_run_bit_exactly_on_numpy_reference_and_microcode(norm_net):
    net, x = norm_net
    assert any(op.name.endswith(".rsqrt0") for op in net.graph.ops_of_kind("neurons"))
    x = 3 * x[:2, :5]  # beyond the calibrated range too: tables and messages clip, counted alike
    res = run_numpy(net.graph, x, trace=True)
    assert any(count for group in res.saturation.values() for count in group.values())
    assert_same_result(res, run_reference(net.graph, x, trace=True))
    assert_same_microcode_run(net, x)


def test_random_layernorm_models_run_bit_exactly_on_lava(norm_net):
    from tests.backend_loihi.test_lava_engine import assert_same_run

    net, x = norm_net
    assert_same_run(net.graph, x[:1, :3])


def test_frozen_statistics_remain_a_pipeline_choice(norm_net, tmp_path):
    spec = random_spec(
        11, H=int(np.random.default_rng(11).integers(3, 9)), M=2, n_layers=2, norm=True, glu=False, activation="relu"
    )
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    x = norm_net[1]
    assert "freeze-norms" not in DEFAULT_PIPELINE
    net = ssmc.compile(path, readout="mean", calibration=x, passes=FROZEN_NORMS_PIPELINE)
    kinds = {op.attrs["kind"] for op in net.graph.ops_of_kind("neurons")}
    assert not kinds & {"lut", "product"}  # a frozen norm is a linear: synapses, at most a relay
    assert any(r["name"] == "freeze-norms" for r in net.report["passes"])
