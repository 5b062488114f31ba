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
    ssmc.compile(path, calibration=calibration(spec), after_pass=lambda p, g, c: passes.append(p.name),
                 passes="canonicalize,discretize,rescale-states{balance=state},fuse-complex-pairs,fold-linear,"
                        "freeze-norms,assign-bitwidths", **kw)
    return calls, passes


def test_calibration_data_is_checked_once_per_compile(tmp_path, monkeypatch):
    calls, passes = _compile_counting_checks(
        tmp_path, monkeypatch, lambda spec: np.random.default_rng(0).normal(size=(4, 8, spec.in_features)))
    assert "assign-bitwidths" in passes and "freeze-norms" in passes
    assert len(calls) == 1


def test_bad_calibration_data_still_fails_before_any_pass(tmp_path, monkeypatch):
    spec = random_spec(4, norm=True)
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    passes = []
    with pytest.raises(InputDataError, match="calibration data must have shape"):
        ssmc.compile(path, calibration=np.zeros((4, 8, spec.in_features + 1)),
                     after_pass=lambda p, g, c: passes.append(p.name))
    assert passes == []
