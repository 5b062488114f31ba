"""The frontend recognises random S4D step models in the raw-parameter pattern of
torch's dynamo=False exporter, and the float reference matches onnxruntime on them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ssmc.frontend import import_onnx
from ssmc.runtime.float_ref import run_float
from tests.builders.onnx_models import (
    ACTIVATIONS,
    StepModelSpec,
    build_step_model,
    random_spec,
    run_step_model_ort,
    step_model_specs,
    well_conditioned,
)

TOL = 1e-5  # max abs error relative to the output scale (the foundation issue's bound)


def _check_matches_onnxruntime(spec: StepModelSpec, save_path, seed: int = 0, T: int = 24):
    spec = well_conditioned(spec)  # LayerNorm over 2-3 channels amplifies onnxruntime's float32 rounding
    model = build_step_model(spec)
    graph, report, _ = import_onnx(save_path(model))
    x = np.random.default_rng(seed).normal(size=(3, T, spec.in_features)).astype(np.float32)
    want = run_step_model_ort(model, x)
    got = run_float(graph, x)[graph.outputs()[0].name]
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= TOL * scale, f"{spec}: error {np.abs(got - want).max() / scale:.2e}"
    return graph, report


def _kinds(graph):
    return [op.kind for op in graph.ops()]


@pytest.mark.parametrize("seed", range(12))
def test_random_model_matches_onnxruntime(seed, save_onnx):
    _check_matches_onnxruntime(random_spec(seed), save_onnx, seed)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_is_recognised_as_itself(activation, save_onnx):
    spec = random_spec(7, activation=activation, glu=False, n_layers=1)
    graph, _ = _check_matches_onnxruntime(spec, save_onnx)
    fns = [op.attrs["fn"] for op in graph.ops_of_kind("activation")]
    assert fns == ([] if activation == "none" else [activation])


def test_every_layer_becomes_one_s4d_op_with_its_sizes(save_onnx):
    spec = StepModelSpec(in_features=2, H=6, M=3, n_layers=3, n_out=4, activation="relu", seed=5)
    graph, report = _check_matches_onnxruntime(spec, save_onnx)
    s4d = graph.ops_of_kind("s4d")
    assert len(s4d) == 3
    for op in s4d:
        assert op.params["C"].shape == (6, 3) and op.shape == (6,)
    assert len(report.states) == 3


def test_raw_parameters_are_kept_as_continuous_form(save_onnx):
    spec = StepModelSpec(in_features=1, H=4, M=2, n_layers=1, n_out=3, seed=11)
    graph, _ = _check_matches_onnxruntime(spec, save_onnx)
    op = graph.ops_of_kind("s4d")[0]
    assert op.attrs["form"] == "continuous"
    from tests.builders.onnx_models import step_model_parameters

    p = step_model_parameters(spec)
    np.testing.assert_allclose(op.params["log_dt"], p["layers.0.s4d.log_dt"], rtol=1e-6)
    A = -np.exp(p["layers.0.s4d.log_A_real"].astype(np.float64)) + 1j * p["layers.0.s4d.A_imag"]
    np.testing.assert_allclose(op.params["A"], A, rtol=1e-5)
    C = p["layers.0.s4d.C"][..., 0] + 1j * p["layers.0.s4d.C"][..., 1]
    # The exporter folds B = 1 into the discretization; with it the layer's C is the initializer's C.
    np.testing.assert_allclose(op.params["B"], np.ones_like(A), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(op.params["C"], C, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(op.params["D"], p["layers.0.s4d.D"], rtol=1e-5, atol=1e-7)


def test_residual_norm_and_glu_become_their_ops(save_onnx):
    spec = StepModelSpec(
        in_features=3,
        H=8,
        M=2,
        n_layers=2,
        n_out=5,
        activation="gelu",
        glu=True,
        norm=True,
        residual=True,
        linear_style="matmul_add",
        seed=3,
    )
    graph, _ = _check_matches_onnxruntime(spec, save_onnx)
    kinds = _kinds(graph)
    assert kinds.count("norm") == 2 and kinds.count("add") == 2 and kinds.count("s4d") == 2
    assert [op.attrs["fn"] for op in graph.ops_of_kind("activation")] == ["gelu", "glu", "gelu", "glu"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=step_model_specs())
def test_any_drawn_model_matches_onnxruntime(spec, save_onnx):
    _check_matches_onnxruntime(spec, save_onnx)
