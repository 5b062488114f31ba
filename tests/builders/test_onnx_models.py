"""Checks of the test-model builder: the models are valid ONNX, run in onnxruntime,
and compute the S4D network their spec describes.

The reference below is written from the S4D semantics in complex numpy and never
looks at the ONNX graph; only the parameter values are shared with the builder.
"""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings

from tests.builders.onnx_models import (
    well_conditioned,
    ACTIVATIONS,
    LAYOUTS,
    LINEAR_STYLES,
    SIZE_RANGES,
    StepModelSpec,
    UNSUPPORTED_OPS,
    build_layout_model,
    build_step_model,
    build_unsupported_op_model,
    build_wrong_rank_model,
    random_spec,
    run_step_model_ort,
    step_model_parameters,
    step_model_specs,
    truncated_bytes,
)

_erf = np.vectorize(math.erf)

REFERENCE_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3))),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "none": lambda x: x,
}


def reference_outputs(spec: StepModelSpec, x: np.ndarray) -> np.ndarray:
    """Logits of every token of x [batch, T, F], in float64/complex128 numpy."""
    p = {name: value.astype(np.float64) for name, value in step_model_parameters(spec).items()}

    def linear(module, v):
        return v @ p[f"{module}.weight"].T + p[f"{module}.bias"]

    def layer_norm(module, v):
        centred = v - v.mean(-1, keepdims=True)
        normalised = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-5)
        return normalised * p[f"{module}.weight"] + p[f"{module}.bias"]

    discretised = []
    for layer in range(spec.n_layers):
        s4d = f"layers.{layer}.s4d"
        a = -np.exp(p[f"{s4d}.log_A_real"]) + 1j * p[f"{s4d}.A_imag"]
        a_bar = np.exp(a * np.exp(p[f"{s4d}.log_dt"])[:, None])
        b_bar = (a_bar - 1.0) / a
        c = p[f"{s4d}.C"][..., 0] + 1j * p[f"{s4d}.C"][..., 1]
        discretised.append((a_bar, b_bar, c, p[f"{s4d}.D"]))

    batch, steps, _ = x.shape
    states = [np.zeros((batch, spec.H, spec.M), dtype=np.complex128) for _ in range(spec.n_layers)]
    logits = []
    for t in range(steps):
        u = linear("encoder", x[:, t].astype(np.float64))
        for layer, (a_bar, b_bar, c, d) in enumerate(discretised):
            z = layer_norm(f"layers.{layer}.norm", u) if spec.norm else u
            states[layer] = a_bar * states[layer] + b_bar * z[..., None]
            z = 2.0 * np.real((c * states[layer]).sum(-1)) + d * z
            z = linear(f"layers.{layer}.mix", REFERENCE_ACTIVATIONS[spec.activation](z))
            if spec.glu:
                first, second = np.split(z, 2, axis=-1)
                z = first / (1.0 + np.exp(-second))
            u = u + z if spec.residual else z
        logits.append(linear("decoder", u))
    return np.stack(logits, axis=1)


def random_tokens(spec: StepModelSpec, batch: int = 2, steps: int = 6) -> np.ndarray:
    return np.random.default_rng(spec.seed + 1).standard_normal((batch, steps, spec.in_features)).astype(np.float32)


def assert_matches_reference(spec: StepModelSpec) -> None:
    """onnxruntime logits of spec's model agree with the numpy reference to 1e-4 relative."""
    spec = well_conditioned(spec)
    model = build_step_model(spec)
    x = random_tokens(spec)
    got = run_step_model_ort(model, x)
    want = reference_outputs(spec, x)
    assert got.shape == (x.shape[0], x.shape[1], spec.n_out)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def assert_contract(model: onnx.ModelProto, spec: StepModelSpec) -> None:
    """Graph inputs/outputs are x, state*, logits, state*_out with the contract shapes."""

    def shape(value):
        return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]

    state_shape = ["batch", spec.H, spec.M, 2]
    inputs = {value.name: shape(value) for value in model.graph.input}
    outputs = {value.name: shape(value) for value in model.graph.output}
    assert inputs == {"x": ["batch", spec.in_features], **{f"state{i}": state_shape for i in range(spec.n_layers)}}
    assert outputs == {"logits": ["batch", spec.n_out], **{f"state{i}_out": state_shape for i in range(spec.n_layers)}}
    assert [value.name for value in model.graph.input][0] == "x"
    assert [value.name for value in model.graph.output][0] == "logits"
    assert all(
        value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        for value in [*model.graph.input, *model.graph.output]
    )


@pytest.mark.parametrize("seed", range(8))
def test_random_specs_build_check_and_run(seed):
    spec = random_spec(seed)
    model = build_step_model(spec)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert_contract(inferred, spec)
    assert model.opset_import[0].version == 17
    out = run_step_model_ort(model, random_tokens(spec))
    assert out.shape == (2, 6, spec.n_out) and np.all(np.isfinite(out))


@pytest.mark.parametrize("linear_style", LINEAR_STYLES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_and_linear_style_matches_reference(activation, linear_style):
    seed = 10 * ACTIVATIONS.index(activation) + LINEAR_STYLES.index(linear_style)
    spec = random_spec(seed, activation=activation, linear_style=linear_style)
    assert_matches_reference(spec)


@pytest.mark.parametrize("glu", [False, True])
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_block_options_match_reference(glu, norm, residual):
    spec = random_spec(100 + 4 * glu + 2 * norm + residual, n_layers=2, glu=glu, norm=norm, residual=residual)
    assert_matches_reference(spec)


@settings(max_examples=10, deadline=None)
@given(step_model_specs())
def test_hypothesis_specs_match_reference(spec):
    for name, (low, high) in SIZE_RANGES.items():
        assert low <= getattr(spec, name) <= high
    assert_matches_reference(spec)


def test_builders_are_deterministic():
    spec = random_spec(7)
    assert random_spec(7) == spec
    assert build_step_model(spec).SerializeToString() == build_step_model(spec).SerializeToString()
    assert random_spec(7, H=3).M == spec.M


def test_overrides_are_validated():
    with pytest.raises(ValueError):
        random_spec(0, activation="swish")
    with pytest.raises(TypeError):
        step_model_specs(width=3)


def test_initializers_use_torch_names():
    spec = StepModelSpec(in_features=2, H=3, M=2, n_layers=1, n_out=2, norm=True)
    names = {init.name for init in build_step_model(spec).graph.initializer}
    assert {
        "encoder.weight",
        "layers.0.norm.weight",
        "layers.0.s4d.log_dt",
        "layers.0.s4d.log_A_real",
        "layers.0.s4d.A_imag",
        "layers.0.s4d.C",
        "layers.0.s4d.D",
        "layers.0.mix.weight",
        "decoder.bias",
    } <= names


@pytest.mark.parametrize("op_type", UNSUPPORTED_OPS)
def test_unsupported_op_model_is_valid_and_runs(op_type):
    model = build_unsupported_op_model(op_type)
    assert op_type in {node.op_type for node in model.graph.node}
    out = run_step_model_ort(model, np.ones((1, 3, 2), dtype=np.float32))
    assert out.shape == (1, 3, 3) and np.all(np.isfinite(out))


def test_wrong_rank_model_is_valid_and_runs():
    model = build_wrong_rank_model()
    assert len(model.graph.input[0].type.tensor_type.shape.dim) == 3
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {
        "x": np.ones((2, 1, 2), dtype=np.float32),
        **{f"state{i}": np.zeros((2, 4, 2, 2), dtype=np.float32) for i in range(2)},
    }
    logits = session.run(["logits"], feeds)[0]
    assert logits.shape == (2, 3)


def test_truncated_bytes_do_not_load():
    model_bytes = build_step_model(random_spec(0)).SerializeToString()
    damaged = truncated_bytes(model_bytes)
    assert len(damaged) == len(model_bytes) // 2
    with pytest.raises(DecodeError):
        onnx.load_from_string(damaged)


@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("fixed_batch", [False, True])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_state_layout_computes_the_reference_network(layout, fixed_batch, discrete):
    spec = StepModelSpec(in_features=2, H=3, M=2, n_layers=2, n_out=2, seed=9)
    x = random_tokens(spec, batch=2, steps=5)
    got = run_step_model_ort(build_layout_model(spec, layout, fixed_batch=fixed_batch, discrete=discrete), x)
    want = reference_outputs(spec, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
