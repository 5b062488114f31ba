"""Run inputs beyond |1e10| are refused by every engine, as calibration data is: the float reference would
return inf, and a fixed-point engine would only saturate on what is unscaled or corrupt data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ssmc
from ssmc.errors import InputDataError
from tests.builders.onnx_models import StepModelSpec, build_step_model

SPEC = StepModelSpec(in_features=2, H=4, M=2, n_layers=1, n_out=3, seed=1)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    path = tmp_path_factory.mktemp("range") / "m.onnx"
    onnx.save(build_step_model(SPEC), str(path))
    return ssmc.compile(path)


@pytest.mark.parametrize("engine", ["float", "numpy", "microcode"])
@pytest.mark.parametrize("value", [1e308, -2e10])
def test_an_input_beyond_1e10_is_refused_with_its_peak(net, engine, value):
    x = np.zeros((2, 4, SPEC.in_features))
    x[0, 1, 1] = value
    with pytest.raises(InputDataError) as e:
        net.run(x, engine=engine)
    assert str(e.value).startswith(f"input has values up to {abs(value):.3g}; ssmc takes |values| up to 1e+10")


@pytest.mark.parametrize("value", [np.nan, -np.inf])
def test_a_non_finite_input_is_refused(net, value):
    x = np.zeros((1, 3, SPEC.in_features))
    x[0, 2, 0] = value
    with pytest.raises(InputDataError, match="NaN or infinite"):
        net.run(x, engine="float")


def test_an_input_at_the_bound_runs_to_finite_outputs(net):
    x = np.zeros((1, 3, SPEC.in_features))
    x[0, 1, 0] = 1e10
    assert np.all(np.isfinite(net.run(x, engine="float")))
