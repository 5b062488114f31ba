"""The shipped digits example, in every export form, is recognised and matches
onnxruntime and the torch reference outputs recorded when it was exported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssmc.errors import UnsupportedModelError
from ssmc.frontend import import_onnx
from ssmc.frontend.load import load_model
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.onnx_ref import run_step_onnx
from tests.conftest import EXAMPLES

STEP_FORMS = ["digits_s4d_step", "digits_s4d_step_dynamo", "digits_s4d_full_step", "digits_s4d_full_step_dynamo"]


def sidecar(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def test_set():
    data = np.load(EXAMPLES / "digits_test.npz")
    return data["x"], data["y"]


@pytest.mark.parametrize("name", STEP_FORMS)
def test_step_export_is_recognised_with_its_layers(name):
    meta = sidecar(name)
    graph, report, _ = import_onnx(EXAMPLES / f"{name}.onnx")
    s4d = graph.ops_of_kind("s4d")
    assert len(s4d) == meta["n_layers"]
    for op in s4d:
        assert op.params["C"].shape == (meta["H"], meta["N"] // 2)
    assert graph.inputs()[0].shape == (meta["in_features"],)
    assert graph.outputs()[0].shape == (meta["n_classes"],)
    if meta["variant"] == "full":
        kinds = [op.kind for op in graph.ops()]
        assert kinds.count("norm") == meta["n_layers"]
        fns = [op.attrs["fn"] for op in graph.ops_of_kind("activation")]
        assert fns == ["gelu", "glu"] * meta["n_layers"]


def test_raw_parameter_export_keeps_continuous_parameters():
    graph, _, _ = import_onnx(EXAMPLES / "digits_s4d_step.onnx")
    assert {op.attrs["form"] for op in graph.ops_of_kind("s4d")} == {"continuous"}


@pytest.mark.parametrize("name", STEP_FORMS)
def test_float_reference_matches_onnxruntime(name, test_set):
    x = test_set[0][:16]
    graph, _, loaded = import_onnx(EXAMPLES / f"{name}.onnx")
    want = run_step_onnx(loaded.model, x)
    got = run_float(graph, x)[graph.outputs()[0].name]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("name", STEP_FORMS)
def test_float_reference_matches_the_torch_outputs_recorded_at_export(name):
    ref = np.load(EXAMPLES / f"{name}.ref.npz")
    graph, _, _ = import_onnx(EXAMPLES / f"{name}.onnx")
    got = run_float(graph, ref["x"])[graph.outputs()[0].name]
    assert np.abs(got - ref["logits"]).max() <= 1e-4 * np.abs(ref["logits"]).max()


def test_float_accuracy_is_the_one_torch_measured(test_set):
    x, y = test_set
    graph, _, _ = import_onnx(EXAMPLES / "digits_s4d_step.onnx", readout="mean")
    logits = run_float(graph, x)[graph.outputs()[0].name][:, -1, :]
    accuracy = float((logits.argmax(-1) == y).mean())
    assert accuracy == pytest.approx(sidecar("digits_s4d_step")["float_test_accuracy"], abs=1.5 / len(y))


def test_fft_sequence_export_is_refused_with_how_to_export_the_step_form():
    with pytest.raises(UnsupportedModelError, match="full-sequence export.*Export the step form"):
        import_onnx(EXAMPLES / "digits_s4d_seq_fft.onnx")


def test_fft_sequence_export_is_itself_a_valid_model():
    # The refusal is ssmc's choice, not a broken file.
    assert load_model(EXAMPLES / "digits_s4d_seq_fft.onnx").model.graph.node
