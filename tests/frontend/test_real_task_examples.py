"""The shipped real-task models (examples/real_tasks/: S4D on every task in the raw, split and
packed state layouts, S5 and LRU on two tasks in the raw and split layouts) are recognised as
their sidecars describe (S5 and LRU with the poles their parameters give),
their float reference matches onnxruntime and the torch outputs recorded at export, and each
compiles with the default pipeline. Sequences are cut to a prefix where they are long (784
MNIST tokens): the step form is the same at every token."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import numpy_helper

import ssmc
from ssmc.frontend import import_onnx
from ssmc.frontend.load import load_model
from ssmc.runtime import microcode_engine
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.numpy_engine import run_numpy
from ssmc.runtime.onnx_ref import run_step_onnx
from tests.conftest import ROOT

REAL = ROOT / "examples" / "real_tasks"
STEMS = sorted(p.stem for p in REAL.glob("*_step*.json"))
PREFIX = 64  # tokens


def sidecar(stem: str) -> dict:
    return json.loads((REAL / f"{stem}.json").read_text())


def test_the_issue_tasks_families_and_layouts_are_shipped():
    metas = [sidecar(stem) for stem in STEMS]
    assert {"smnist", "psmnist", "italy", "gunpoint", "vowels"} <= {m["task"] for m in metas if m["family"] == "s4d"}
    for task in {m["task"] for m in metas if m["family"] == "s4d"}:
        assert {m["layout"] for m in metas if m["task"] == task and m["family"] == "s4d"} == {"raw", "split", "packed"}
    assert {"s5", "lru"} <= {m["family"] for m in metas}
    assert {m["export_mode"] for m in metas} == {"dynamo=False", "dynamo=True"}
    assert all((REAL / f"{stem}.onnx").stat().st_size < 100_000 for stem in STEMS)
    assert not list(REAL.glob("*.data"))  # self-contained


@pytest.mark.parametrize("stem", STEMS)
def test_the_export_reproduces_the_torch_outputs_recorded_at_export_in_onnxruntime(stem):
    """The shipped file itself (any family, before ssmc reads it) against torch."""
    ref = np.load(REAL / sidecar(stem)["reference"])
    got = run_step_onnx(load_model(REAL / f"{stem}.onnx").model, ref["x"][:, :PREFIX])
    want = ref["logits"][:, :PREFIX]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def shared_poles(stem: str, layer: int) -> np.ndarray:
    """The P discrete poles of an S5 or LRU layer, from the export's raw parameters by the papers' formulas."""
    weights = {
        init.name: numpy_helper.to_array(init).astype(np.float64)
        for init in load_model(REAL / f"{stem}.onnx").model.graph.initializer
    }
    prefix = f"model.layers.{layer}.{sidecar(stem)['family']}."
    if sidecar(stem)["family"] == "s5":  # ZOH: Lambda_bar = exp(step Lambda)
        step = np.exp(weights[prefix + "log_step"])
        return np.exp(step * (-np.exp(weights[prefix + "log_Lambda_re"]) + 1j * weights[prefix + "Lambda_im"]))
    return np.exp(-np.exp(weights[prefix + "nu_log"]) + 1j * np.exp(weights[prefix + "theta_log"]))  # LRU


def same_poles(got: np.ndarray, want: np.ndarray) -> bool:
    """The same complex poles in any order, up to conjugation (a state may be read as (im, re))."""

    def key(a):
        return np.sort(np.abs(a) + 1j * np.abs(np.angle(a)))

    return np.allclose(key(got), key(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stem", STEMS)
def test_model_is_recognised_with_the_sidecars_layers(stem):
    meta = sidecar(stem)
    graph, _, _ = import_onnx(REAL / f"{stem}.onnx")
    layers = graph.ops_of_kind("s4d")
    assert len(layers) == meta["n_layers"]
    if meta["family"] == "s4d":
        assert all(op.params["C"].shape == (meta["H"], meta["N"] // 2) for op in layers)
        if meta["export_mode"] == "dynamo=False":
            assert {op.attrs["form"] for op in layers} == {"continuous"}  # the raw parameters
    else:  # S5, LRU: P modes shared by the H channels
        for k, op in enumerate(layers):
            assert op.attrs["mixing"] == "dense" and op.attrs["modes"] == meta["P"]
            assert op.params["B_bar"].shape == (meta["P"], meta["H"])
            assert op.params["C"].shape == (meta["H"], meta["P"])
            assert same_poles(op.params["A_bar"], shared_poles(stem, k))
    assert graph.inputs()[0].shape == (meta["in_features"],)
    assert graph.outputs()[0].shape == (meta["n_classes"],)


def impulse_response(op, steps: int = 32) -> np.ndarray:
    """The layer's kernel K[k] = Re(C diag(A_bar^k) B_bar) for k < steps ([H, steps], or [H, H, steps] with dense
    mixing): the same for any order of the modes, either sign of their imaginary parts and any split of a mode's
    scale between B and C. A raw-parameter import is discretized here with ZOH (docs/onnx_step_form.md)."""
    p = {k: np.asarray(v, np.complex128) for k, v in op.params.items()}
    if op.attrs["form"] == "continuous":
        dt = np.exp(p["log_dt"].real)[:, None]
        p["A_bar"] = np.exp(dt * p["A"])
        p["B_bar"] = (p["A_bar"] - 1) / p["A"] * p["B"]
    powers = p["A_bar"][..., None] ** np.arange(steps)
    if op.attrs.get("mixing") == "dense":  # A_bar [P], B_bar [P, H], C [H, P]
        return np.einsum("op,pi,pk->oik", p["C"], p["B_bar"], powers).real
    return np.einsum("hm,hm,hmk->hk", p["C"], p["B_bar"], powers).real


@pytest.mark.parametrize("stem", [s for s in STEMS if sidecar(s)["layout"] != "raw"])
def test_another_layout_of_the_same_weights_gives_the_raw_exports_layers(stem):
    meta = sidecar(stem)
    raw, _, _ = import_onnx(REAL / meta["weights_from"])
    other, _, _ = import_onnx(REAL / f"{stem}.onnx")
    for want, got in zip(raw.ops_of_kind("s4d"), other.ops_of_kind("s4d"), strict=True):
        k_want, k_got = impulse_response(want), impulse_response(got)
        assert np.abs(k_got - k_want).max() <= 1e-4 * np.abs(k_want).max()
        np.testing.assert_allclose(got.params["D"], want.params["D"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stem", STEMS)
def test_float_reference_matches_onnxruntime(stem):
    x = np.load(REAL / sidecar(stem)["test"])["x"][:3, :PREFIX]
    graph, _, loaded = import_onnx(REAL / f"{stem}.onnx")
    want = run_step_onnx(loaded.model, x)
    got = run_float(graph, x)[graph.outputs()[0].name]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("stem", STEMS)
def test_float_reference_matches_the_torch_outputs_recorded_at_export(stem):
    ref = np.load(REAL / sidecar(stem)["reference"])
    graph, _, _ = import_onnx(REAL / f"{stem}.onnx")
    got = run_float(graph, ref["x"][:, :PREFIX])[graph.outputs()[0].name]
    want = ref["logits"][:, :PREFIX]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("stem", STEMS)
def test_shipped_sets_fit_the_model(stem):
    meta = sidecar(stem)
    test, calib = np.load(REAL / meta["test"]), np.load(REAL / meta["calibration"])
    assert test["x"].shape == (meta["n_test"], meta["seq_len"], meta["in_features"])
    assert test["y"].shape == (meta["n_test"],) and set(np.unique(test["y"])) <= set(range(meta["n_classes"]))
    assert calib["x"].shape[1:] == (meta["seq_len"], meta["in_features"])


@pytest.mark.parametrize("stem", STEMS)
def test_compiles_with_the_default_pipeline_and_runs_in_fixed_point(stem):
    meta = sidecar(stem)
    x = np.load(REAL / meta["test"])["x"][:2, :PREFIX]
    calib = np.load(REAL / meta["calibration"])["x"][:16]
    if meta["layout"] != "raw":  # the raw export of the same weights calibrates on whole sequences
        calib = calib[:, :PREFIX]
    net = ssmc.compile(REAL / f"{stem}.onnx", readout="mean", calibration=calib)
    fixed, ref = net.run(x, engine="numpy"), net.run(x, engine="float")
    assert fixed.shape == ref.shape == (2, x.shape[1], meta["n_classes"])
    # a compiled net that computes something else entirely would be far off
    assert np.abs(fixed - ref).max() <= 0.25 * np.abs(ref).max()


# every family and both compiled layouts, on a few tokens
BIT_EXACT = [
    "italy_s5_step",
    "italy_lru_step_split",
    "vowels_s5_step_split",
    "vowels_lru_step",
    "gunpoint_s4d_step_split",
]


@pytest.mark.parametrize("stem", BIT_EXACT)
def test_compiled_model_runs_bit_exactly_on_numpy_and_microcode(stem):
    meta = sidecar(stem)
    x = np.load(REAL / meta["test"])["x"][:2, :12]
    net = ssmc.compile(
        REAL / f"{stem}.onnx", readout="mean", calibration=np.load(REAL / meta["calibration"])["x"][:16, :PREFIX]
    )
    want, got = run_numpy(net.graph, x), microcode_engine.run_net(net, x)
    assert want.raw.keys() == got.raw.keys()
    for name in want.raw:
        np.testing.assert_array_equal(got.raw[name], want.raw[name])


def test_a_compiled_s5_model_runs_on_lava_like_numpy():
    pytest.importorskip("lava")
    from tests.backend_loihi.test_lava_engine import assert_same_run

    meta = sidecar("italy_s5_step")
    net = ssmc.compile(
        REAL / "italy_s5_step.onnx", readout="mean", calibration=np.load(REAL / meta["calibration"])["x"][:16]
    )
    assert_same_run(net.graph, np.load(REAL / meta["test"])["x"][:2, :4])
