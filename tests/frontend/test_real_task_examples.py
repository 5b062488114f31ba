"""The shipped real-task models (examples/real_tasks/) are recognised as their sidecars
describe, their float reference matches onnxruntime and the torch outputs recorded at
export, and each compiles with the default pipeline. Sequences are cut to a prefix
where they are long (784 MNIST tokens): the step form is the same at every token."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ssmc
from ssmc.frontend import import_onnx
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.onnx_ref import run_step_onnx
from tests.conftest import ROOT

REAL = ROOT / "examples" / "real_tasks"
TASKS = sorted(p.name.removesuffix("_s4d_step.onnx") for p in REAL.glob("*_s4d_step.onnx"))
PREFIX = 64  # tokens


def sidecar(task: str) -> dict:
    return json.loads((REAL / f"{task}_s4d_step.json").read_text())


def test_the_issue_tasks_are_shipped():
    assert {"smnist", "psmnist", "italy", "gunpoint", "vowels"} <= set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_model_is_recognised_with_the_sidecars_layers(task):
    meta = sidecar(task)
    graph, _, _ = import_onnx(REAL / f"{task}_s4d_step.onnx")
    s4d = graph.ops_of_kind("s4d")
    assert len(s4d) == meta["n_layers"]
    assert all(op.params["C"].shape == (meta["H"], meta["N"] // 2) for op in s4d)
    assert {op.attrs["form"] for op in s4d} == {"continuous"}  # the raw-parameter layout
    assert graph.inputs()[0].shape == (meta["in_features"],)
    assert graph.outputs()[0].shape == (meta["n_classes"],)


@pytest.mark.parametrize("task", TASKS)
def test_float_reference_matches_onnxruntime(task):
    x = np.load(REAL / f"{task}_test.npz")["x"][:3, :PREFIX]
    graph, _, loaded = import_onnx(REAL / f"{task}_s4d_step.onnx")
    want = run_step_onnx(loaded.model, x)
    got = run_float(graph, x)[graph.outputs()[0].name]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("task", TASKS)
def test_float_reference_matches_the_torch_outputs_recorded_at_export(task):
    ref = np.load(REAL / f"{task}_s4d_step.ref.npz")
    graph, _, _ = import_onnx(REAL / f"{task}_s4d_step.onnx")
    got = run_float(graph, ref["x"][:, :PREFIX])[graph.outputs()[0].name]
    want = ref["logits"][:, :PREFIX]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("task", TASKS)
def test_shipped_sets_fit_the_model(task):
    meta = sidecar(task)
    test, calib = np.load(REAL / meta["test"]), np.load(REAL / meta["calibration"])
    assert test["x"].shape == (meta["n_test"], meta["seq_len"], meta["in_features"])
    assert test["y"].shape == (meta["n_test"],) and set(np.unique(test["y"])) <= set(range(meta["n_classes"]))
    assert calib["x"].shape[1:] == (meta["seq_len"], meta["in_features"])


@pytest.mark.parametrize("task", TASKS)
def test_compiles_with_the_default_pipeline_and_runs_in_fixed_point(task):
    x = np.load(REAL / f"{task}_test.npz")["x"][:2, :PREFIX]
    calib = np.load(REAL / f"{task}_calib.npz")["x"][:16]
    net = ssmc.compile(REAL / f"{task}_s4d_step.onnx", readout="mean", calibration=calib)
    fixed, ref = net.run(x, engine="numpy"), net.run(x, engine="float")
    assert fixed.shape == ref.shape == (2, x.shape[1], sidecar(task)["n_classes"])
    # a compiled net that computes something else entirely would be far off
    assert np.abs(fixed - ref).max() <= 0.25 * np.abs(ref).max()
