"""Checks of the S5/LRU builder: the models are valid ONNX and onnxruntime computes the network of the
equations in tests/builders/ssm_models.py (a complex numpy reference sharing only the parameter values)."""

import numpy as np
import pytest

from tests.builders.onnx_models import run_step_model_ort
from tests.builders.ssm_models import (
    SSM_LAYOUTS,
    SharedSpec,
    build_shared_model,
    discrete_layer,
    reference_logits,
    shared_parameters,
)


@pytest.mark.parametrize("fixed_batch", [False, True], ids=["batch", "batch1"])
@pytest.mark.parametrize("layout", SSM_LAYOUTS)
@pytest.mark.parametrize("family, parametrisation", [("s5", "const"), ("lru", "const"), ("lru", "graph")])
def test_onnxruntime_computes_the_equations(family, parametrisation, layout, fixed_batch):
    spec = SharedSpec(
        family=family,
        parametrisation=parametrisation,
        layout=layout,
        fixed_batch=fixed_batch,
        n_layers=2,
        D=layout != "last",
        seed=7,
    )
    x = np.random.default_rng(0).normal(size=(2, 6, spec.in_features)).astype(np.float32)
    want = reference_logits(spec, x)
    got = run_step_model_ort(build_shared_model(spec), x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_lru_poles_lie_inside_the_unit_circle_and_gamma_normalises_the_input():
    spec = SharedSpec(family="lru", P=6)
    lam, B_bar, _, _ = discrete_layer(spec, shared_parameters(spec), 0)
    assert np.all((np.abs(lam) >= 0.5) & (np.abs(lam) <= 0.95))
    B = shared_parameters(spec)["layers.0.lru.B_re"] + 1j * shared_parameters(spec)["layers.0.lru.B_im"]
    gamma = np.sqrt(1 - np.abs(lam) ** 2)
    np.testing.assert_allclose(np.abs(B_bar) / np.abs(B), np.broadcast_to(gamma[:, None], B.shape), rtol=1e-6)
