"""Real torch 2.13 exports (dynamo=False and dynamo=True) of S4D step modules in the state layouts users
write (examples/layouts/export_layouts.py) compile with the default pipeline, match the torch outputs
recorded at export, and run bit-exactly on numpy, microcode and (one of them) Lava."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import ssmc
from ssmc.frontend import import_onnx
from ssmc.runtime import microcode_engine
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.numpy_engine import run_numpy
from tests.conftest import ROOT

LAYOUT_EXPORTS = ROOT / "examples" / "layouts"
STEMS = sorted(p.stem for p in LAYOUT_EXPORTS.glob("*.onnx"))


def sidecar(stem: str) -> dict:
    return json.loads((LAYOUT_EXPORTS / f"{stem}.json").read_text())


def reference(stem: str) -> tuple[np.ndarray, np.ndarray]:
    ref = sidecar(stem)["reference"]
    return np.asarray(ref["x"], np.float32), np.asarray(ref["y"], np.float32)


def test_every_layout_is_exported_with_both_exporters():
    meta = [sidecar(stem) for stem in STEMS]
    layouts = {m["layout"] for m in meta}
    assert {"split", "packed", "re_im_first", "state_first", "fixed_batch", "discrete"} <= layouts
    assert sorted((m["layout"], m["export_mode"]) for m in meta) == sorted(
        (layout, mode) for layout in layouts for mode in ("dynamo=False", "dynamo=True")
    )
    assert all(m["torch_version"].startswith("2.13") for m in meta)
    assert all((LAYOUT_EXPORTS / f"{stem}.onnx").stat().st_size < 100_000 for stem in STEMS)
    assert not list(LAYOUT_EXPORTS.glob("*.data"))  # self-contained


@pytest.mark.parametrize("stem", STEMS)
def test_the_export_is_one_s4d_per_layer_matching_torch(stem):
    meta = sidecar(stem)
    graph, _, _ = import_onnx(LAYOUT_EXPORTS / f"{stem}.onnx")
    layers = graph.ops_of_kind("s4d")
    assert len(layers) == meta["n_layers"]
    assert all(op.params["C"].shape == (meta["H"], meta["M"]) for op in layers)
    x, want = reference(stem)
    got = run_float(graph, x)[graph.outputs()[0].name]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("stem", STEMS)
def test_the_export_compiles_and_runs_bit_exactly_on_numpy_and_microcode(stem):
    net = ssmc.compile(LAYOUT_EXPORTS / f"{stem}.onnx")
    x, _ = reference(stem)
    want, got = run_numpy(net.graph, x), microcode_engine.run_net(net, x)
    for name in want.raw:
        np.testing.assert_array_equal(got.raw[name], want.raw[name])


def test_a_packed_state_runs_on_lava_like_numpy():
    pytest.importorskip("lava")
    from tests.backend_loihi.test_lava_engine import assert_same_run

    net = ssmc.compile(LAYOUT_EXPORTS / "packed_legacy.onnx")
    x, _ = reference("packed_legacy")
    assert_same_run(net.graph, x[:2, :4])


def test_compare_onnx_runs_a_fixed_batch_of_1_one_sequence_at_a_time(tmp_path):
    model = LAYOUT_EXPORTS / "fixed_batch_legacy.onnx"
    x, _ = reference("fixed_batch_legacy")  # two sequences through a model exported with a batch of 1
    np.save(tmp_path / "x.npy", x)
    ssmc.compile(model).save(tmp_path / "n.lava")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssmc.cli",
            "run",
            tmp_path / "n.lava",
            "--input",
            tmp_path / "x.npy",
            "--compare-onnx",
            model,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("vs onnxruntime on fixed_batch_legacy.onnx"))
    assert float(line.split("(")[1].split()[0]) < 0.05  # relative error of the fixed-point run
