"""A separately installed package adds a pass through the `ssmc.passes` entry point."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import onnx
import pytest

from tests.builders.onnx_models import build_step_model, random_spec

PLUGIN = pathlib.Path(__file__).resolve().parents[2] / "examples" / "plugin_pass"


def _ssmc(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssmc.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def installed_plugin():
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        pip + ["install", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    yield
    subprocess.run(pip + ["uninstall", "-y", "ssmc-count-ops"], check=True, capture_output=True, timeout=300)


def test_ssmc_passes_lists_the_plugin_pass(installed_plugin):
    proc = _ssmc("passes")
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("count-ops "))
    assert "[analysis]" in line and "min-count: int = 1" in proc.stdout


def test_compile_runs_the_plugin_pass_in_the_pipeline(installed_plugin, tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(build_step_model(random_spec(0, activation="relu", glu=False, norm=False)), str(model))
    proc = _ssmc("compile", model, "-o", tmp_path / "n.lava", "--passes", "canonicalize,count-ops{min-count=1}")
    assert proc.returncode == 0, proc.stderr
    assert "count-ops: " in proc.stderr and "linear" in proc.stderr


def test_stop_after_and_skip_trim_the_pipeline(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(build_step_model(random_spec(0, activation="relu", glu=False, norm=False)), str(model))
    proc = _ssmc(
        "compile", model, "-o", tmp_path / "n.lava", "--stop-after", "fuse-complex-pairs", "--skip", "rescale-states"
    )
    assert proc.returncode == 0, proc.stderr
    pipeline = proc.stderr.split("running passes:")[1].splitlines()[0].strip()
    assert pipeline == "canonicalize,discretize,fuse-complex-pairs,emit-microcode,lava-processes"  # + output steps
    proc = _ssmc("compile", model, "-o", tmp_path / "n.lava", "--stop-after", "no-such-pass")
    assert proc.returncode == 1 and "'no-such-pass' is not in the pipeline" in proc.stderr
