"""One spelling of the pool readout, and calibration data checked once per compile."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import ssmc
from ssmc.errors import InputDataError
from ssmc.ir.graph import Graph, Op
from ssmc.runtime import calibrate
from ssmc.runtime.float_ref import run_float, running_pool
from tests.builders.onnx_models import build_step_model, random_spec


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_running_pool_is_what_the_pool_op_computes(mode):
    g = Graph("p")
    g.add(Op("x", "input", attrs={"size": 3}, shape=(3,)))
    g.add(Op("pool", "pool", ("x",), attrs={"mode": mode}, shape=(3,)))
    g.add(Op("y", "output", ("pool",), shape=(3,)))
    x = np.random.default_rng(0).normal(size=(4, 9, 3))
    assert np.allclose(run_float(g, x)["y"], running_pool(x, mode), rtol=0, atol=1e-12)
    sums = np.cumsum(x, axis=1)
    want = sums if mode == "sum" else sums / np.arange(1, 10)[None, :, None]
    assert np.allclose(running_pool(x, mode), want, rtol=0, atol=1e-12)


def _compile_counting_checks(tmp_path, monkeypatch, calibration, **kw):
    spec = random_spec(4, norm=True)
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    calls = []
    real = calibrate.check_sequences
    monkeypatch.setattr(calibrate, "check_sequences", lambda *a, **k: calls.append(1) or real(*a, **k))
    passes = []
    ssmc.compile(
        path,
        calibration=calibration(spec),
        after_pass=lambda p, g, c: passes.append(p.name),
        passes="canonicalize,discretize,rescale-states{balance=state},fuse-complex-pairs,fold-linear,"
        "freeze-norms,assign-bitwidths",
        **kw,
    )
    return calls, passes


def test_calibration_data_is_checked_once_per_compile(tmp_path, monkeypatch):
    calls, passes = _compile_counting_checks(
        tmp_path, monkeypatch, lambda spec: np.random.default_rng(0).normal(size=(4, 8, spec.in_features))
    )
    assert "assign-bitwidths" in passes and "freeze-norms" in passes
    assert len(calls) == 1


def test_bad_calibration_data_still_fails_before_any_pass(tmp_path, monkeypatch):
    spec = random_spec(4, norm=True)
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    passes = []
    with pytest.raises(InputDataError, match="calibration data must have shape"):
        ssmc.compile(
            path, calibration=np.zeros((4, 8, spec.in_features + 1)), after_pass=lambda p, g, c: passes.append(p.name)
        )
    assert passes == []


@pytest.mark.parametrize("value", [1e308, -1e11])
def test_calibration_values_too_large_to_measure_are_refused_naming_the_file(tmp_path, value):
    spec = random_spec(4, norm=True)
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    x = np.random.default_rng(0).normal(size=(4, 8, spec.in_features))
    x[1, 2, 0] = value
    np.save(tmp_path / "cal.npy", x)
    with pytest.raises(InputDataError) as e:
        ssmc.compile(path, calibration=tmp_path / "cal.npy")
    assert str(e.value).startswith(f"{tmp_path / 'cal.npy'}: calibration data has values up to {abs(value):.3g}")
    assert "scale the data" in str(e.value)


def test_calibration_is_held_to_the_work_limit_a_run_of_the_same_data_is(tmp_path, monkeypatch):
    from ssmc.errors import ResourceLimitError

    spec = random_spec(4, norm=True)
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    x = np.zeros((1000, 1000, spec.in_features), np.float32)  # ~100 MiB for the float reference to run
    net = ssmc.compile(path, passes="canonicalize")
    monkeypatch.setenv("SSMC_MAX_WORK_BYTES", str(64 << 20))  # above what importing the model measures
    with pytest.raises(ResourceLimitError) as run_refused:
        net.run(x, engine="float")
    passes = []
    with pytest.raises(ResourceLimitError) as e:
        ssmc.compile(path, calibration=x, after_pass=lambda p, g, c: passes.append(p.name))
    assert "calibrat" in str(e.value) and "SSMC_MAX_WORK_BYTES" in str(e.value)
    assert passes == []  # refused up front, before the passes measure anything
    assert str(run_refused.value).split(" needs ")[1].split(",")[0] == str(e.value).split(" needs ")[1].split(",")[0]
