"""Random small ONNX S4D models, compiled by the full pipeline with varied widths and dense or
sigma-delta messages, give the same integers in Lava as in the numpy engine at every step."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ssmc
from tests.backend_loihi.test_lava_engine import assert_same_run
from tests.builders.onnx_models import build_step_model, random_spec


# (seed, weight bits, message bits, state bits, sigma-delta threshold or None, model overrides);
# together: ReLU, tanh, GELU, sigmoid, GLU, LayerNorm, residuals, one and two layers
CASES = [
    (0, 8, 24, 24, None, {}),
    (1, 6, 16, 20, 0.001, {}),
    (2, 8, 12, 16, 0.01, {}),
    (3, 7, 24, 32, None, {}),
    (4, 8, 20, 24, 0.0, {}),
    (5, 8, 24, 24, 0.001, {"activation": "gelu", "residual": True}),
    (6, 8, 16, 24, None, {"activation": "sigmoid", "residual": True, "glu": False}),
]


@pytest.mark.parametrize("seed, weight_bits, message_bits, state_bits, sigma_delta, overrides", CASES)
def test_compiled_random_models_match_numpy_at_every_step(
    tmp_path, seed, weight_bits, message_bits, state_bits, sigma_delta, overrides
):
    spec = random_spec(seed, n_layers=min(2, random_spec(seed).n_layers), **overrides)
    path = tmp_path / "model.onnx"
    onnx.save(build_step_model(spec), str(path))
    rng = np.random.default_rng(seed)
    cal = rng.normal(size=(8, 12, spec.in_features))
    net = ssmc.compile(
        path,
        readout="mean" if seed % 2 else "none",
        calibration=cal,
        weight_bits=weight_bits,
        message_bits=message_bits,
        state_bits=state_bits,
        sigma_delta=sigma_delta,
    )
    if sigma_delta is not None:
        assert any(op.attrs.get("delta") for op in net.graph.ops_of_kind("neurons"))
    x = rng.normal(scale=rng.choice([1.0, 3.0]), size=(2, 6, spec.in_features))
    assert_same_run(net.graph, x)
