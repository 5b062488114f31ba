"""The same model and options give byte-identical net.lava files in separate
processes, and net.lava records every option needed to make it again."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import onnx
import pytest

import ssmc
from ssmc.config import CompileConfig, FileRecord, LayerWidths
from tests.builders.onnx_models import build_step_model, random_spec
from tests.conftest import ROOT

OPTION_SETS = {
    "defaults": [],
    "calibrated, sigma-delta, widths": [
        "--calibrate",
        "{cal}",
        "--sigma-delta",
        "0.001",
        "--weight-bits",
        "6",
        "--layer-bits",
        "s4d0:coef=12/state=20",
        "--readout",
        "mean",
    ],
    "trimmed pipeline": [
        "--calibrate",
        "{cal}",
        "--skip",
        "rescale-states",
        "--message-bits",
        "16",
        "--readout",
        "sum",
    ],
    "float network": ["--stop-after", "fold-linear", "--readout", "mean"],
}


def _setup(tmp_path):
    spec = random_spec(6, norm=True, n_layers=2)
    onnx.save(build_step_model(spec), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).normal(size=(6, 10, spec.in_features)))
    return tmp_path / "m.onnx", tmp_path / "cal.npz"


@pytest.mark.parametrize("label", OPTION_SETS)
def test_compile_is_byte_identical_across_processes_and_replays_from_its_options(label, tmp_path):
    model, cal = _setup(tmp_path)
    args = [a.format(cal=cal) for a in OPTION_SETS[label]]
    for name in ("a.lava", "b.lava"):
        proc = subprocess.run(
            [sys.executable, "-m", "ssmc.cli", "compile", str(model), "-o", str(tmp_path / name), "-q", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
    first = (tmp_path / "a.lava").read_bytes()
    assert first == (tmp_path / "b.lava").read_bytes()

    # what net.lava records is enough to make it again, byte for byte
    config = ssmc.load(tmp_path / "a.lava").config
    assert config.calibration is None if "--calibrate" not in args else config.calibration.file == "cal.npz"
    again = ssmc.compile(model, config, calibration=cal if "--calibrate" in args else None)
    again.save(tmp_path / "c.lava")
    assert (tmp_path / "c.lava").read_bytes() == first


def test_every_given_option_is_recorded(tmp_path):
    model, cal = _setup(tmp_path)
    net = ssmc.compile(
        model,
        calibration=cal,
        readout="mean",
        sigma_delta=0.002,
        weight_bits=6,
        coef_bits=14,
        state_bits=22,
        message_bits=20,
        layer_bits="s4d1:weight=5",
        skip=["rescale-states"],
    )
    assert net.config == CompileConfig(
        readout="mean",
        calibration=FileRecord("cal.npz", hashlib.sha256(cal.read_bytes()).hexdigest()),
        passes=ssmc.passes.DEFAULT_PIPELINE,
        skip=("rescale-states",),
        sigma_delta=0.002,
        weight_bits=6,
        coef_bits=14,
        state_bits=22,
        message_bits=20,
        layers=(LayerWidths("s4d1", weight_bits=5),),
    )


def test_a_target_file_is_recorded_by_name_and_sha256_so_any_folder_gives_the_same_bytes(tmp_path):
    model, _ = _setup(tmp_path)
    shipped = (ROOT / "ssmc" / "targets" / "loihi2.json").read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.json").write_bytes(shipped)
    outs = []
    for name, cwd, target in (
        ("a.lava", tmp_path, "sub/t.json"),
        ("b.lava", tmp_path / "sub", "t.json"),
        ("c.lava", ROOT, tmp_path / "sub" / "t.json"),
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ssmc.cli",
                "compile",
                str(model),
                "-o",
                str(tmp_path / name),
                "-q",
                "--target",
                str(target),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=cwd,
        )
        assert proc.returncode == 0, proc.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1] == outs[2]
    net = ssmc.load(tmp_path / "a.lava")
    assert net.config.target == FileRecord("t.json", hashlib.sha256(shipped).hexdigest())
    assert str(tmp_path) not in net.pipeline and "target=t.json" in net.pipeline


def test_a_plugin_compile_is_reproducible_and_records_the_plugin(tmp_path):
    sys.path.insert(0, str(ROOT / "examples" / "custom_op"))
    try:
        import export_fused_s4d
    finally:
        sys.path.pop(0)
    onnx.save(export_fused_s4d.build_fused_model(export_fused_s4d.random_parameters()), str(tmp_path / "f.onnx"))
    outs = []
    # from two folders, the plugin named by a relative and by an absolute path
    for name, cwd, plugin in (
        ("a.lava", ROOT, "examples/custom_op/s4d_handler.py"),
        ("b.lava", tmp_path, ROOT / "examples" / "custom_op" / "s4d_handler.py"),
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ssmc.cli",
                "compile",
                str(tmp_path / "f.onnx"),
                "-o",
                str(tmp_path / name),
                "-q",
                "--plugin",
                str(plugin),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=cwd,
        )
        assert proc.returncode == 0, proc.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    assert ssmc.load(tmp_path / "a.lava").config.plugins[0].file == "s4d_handler.py"
