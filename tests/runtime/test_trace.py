"""Trace: per group and per token, fixed point against float; a fault in one layer is found in that layer."""

from __future__ import annotations

import numpy as np
import pytest

import ssmc
from ssmc.api import Net
from ssmc.cli import main
from ssmc.errors import SsmcError
from ssmc.passes import DEFAULT_PIPELINE, FROZEN_NORMS_PIPELINE
from tests.conftest import EXAMPLES

TOKENS = 48


@pytest.fixture(scope="module")
def net():
    # the shipped example up to the fixed-point lowering (placement does not change any integer)
    return ssmc.compile(
        EXAMPLES / "digits_s4d_step.onnx",
        readout="mean",
        calibration=EXAMPLES / "digits_calib.npz",
        stop_after="assign-bitwidths",
    )


@pytest.fixture(scope="module")
def x():
    return np.load(EXAMPLES / "digits_test.npz")["x"][:12, :TOKENS]


@pytest.fixture(scope="module")
def clean(net, x):
    return net.trace(x)


def perturbed(net: Net, synapses: str, scale: float) -> Net:
    """A copy of `net` whose synapse group's integer weights are scaled (a deliberate fault)."""
    graph = net.graph.copy()
    op = graph.op(synapses)
    w = op.params["weight"].astype(np.float64)
    op.params["weight"] = np.clip(np.round(w * scale / 2) * 2, -128, 126).astype(op.params["weight"].dtype)
    return Net(
        graph=graph,
        source=net.source,
        pipeline=net.pipeline,
        config=net.config,
        report=net.report,
        model_graph=net.model_graph,
    )


def first_class_divergence(net: Net, x: np.ndarray) -> np.ndarray:
    """Per sequence, the first token whose argmax differs between the numpy engine and the float reference."""
    differ = net.run(x).argmax(-1) != net.run(x, engine="float").argmax(-1)
    return np.where(differ.any(axis=1), differ.argmax(axis=1), -1)


def test_every_group_of_the_example_is_compared_with_per_token_arrays(clean, net):
    groups = {op.name for op in net.graph.ops_of_kind("neurons")}
    assert {lt.group for lt in clean.layers} == groups and not clean.skipped
    for lt in clean.layers:
        assert lt.error.shape == lt.local_error.shape == lt.at_limit.shape == (TOKENS,)


def test_an_unperturbed_net_adds_little_error_anywhere_and_never_hits_its_ranges(clean):
    # 8-bit weights: a few percent of each group's scale; the complex states far less
    for lt in clean.layers:
        assert lt.worst < 0.15, (lt.group, lt.worst)
        assert lt.at_limit.sum() == 0 and sum(lt.saturation.values()) == 0
    # the complex states: well under the others even where weight-exp auto moved a layer's mode scales into
    # its input (small modes then keep smaller states, compared after undoing the recorded state_scale)
    cpx = [lt for lt in clean.layers if lt.kind == "cpx"]
    assert len(cpx) == 2 and all(lt.worst < 0.03 for lt in cpx)


def test_layers_are_sorted_worst_first(clean):
    worst = [lt.worst for lt in clean.layers]
    assert worst == sorted(worst, reverse=True)


def test_the_readout_error_is_the_difference_of_the_two_engines_outputs(clean, net, x):
    fixed, ref = net.run(x), net.run(x, engine="float")
    readout = next(lt for lt in clean.layers if lt.op == "readout")
    # the trace's float network is the imported one after the float passes (float32 weights): equal to ~1e-6
    assert readout.scale == pytest.approx(np.abs(ref).max(), rel=1e-5)
    np.testing.assert_allclose(readout.error, np.abs(fixed - ref).max(axis=(0, 2)) / np.abs(ref).max(), atol=1e-5)


def test_complex_states_report_real_and_imaginary_error_and_drift(clean):
    for lt in (lt for lt in clean.layers if lt.kind == "cpx"):
        assert lt.re_error.shape == lt.im_error.shape == (TOKENS,)
        assert np.all(lt.re_error <= lt.error + 1e-15) and np.all(lt.im_error <= lt.error + 1e-15)
        assert lt.im_error.max() > 0 and np.isfinite(lt.drift)
    assert all(lt.re_error is None for lt in clean.layers if lt.kind != "cpx")


def test_divergence_is_the_first_token_where_the_predicted_classes_differ(clean, net, x):
    np.testing.assert_array_equal(clean.divergence, first_class_divergence(net, x))


@pytest.mark.parametrize(
    "synapses, group", [("linear1.syn", "add0"), ("s4d1.B.syn", "s4d1.pairs"), ("linear3.syn", "readout")]
)
def test_a_fault_injected_into_one_layers_weights_ranks_that_layer_first(net, x, synapses, group):
    bad = perturbed(net, synapses, 1.3)
    tr = bad.trace(x)
    assert tr.layers[0].group == group, [(lt.group, lt.worst) for lt in tr.layers[:3]]
    np.testing.assert_array_equal(tr.divergence, first_class_divergence(bad, x))
    assert tr.first_divergence >= 0


def test_a_wrong_decay_coefficient_drifts(net, x, clean):
    graph = net.graph.copy()
    op = graph.op("s4d1.pairs")
    op.params["c_re"] = (op.params["c_re"] * 0.97).astype(op.params["c_re"].dtype)
    bad = Net(
        graph=graph,
        source=net.source,
        pipeline=net.pipeline,
        config=net.config,
        report=net.report,
        model_graph=net.model_graph,
    )
    tr = bad.trace(x)
    assert tr.layers[0].group == "s4d1.pairs"
    before = next(lt for lt in clean.layers if lt.group == "s4d1.pairs")
    assert tr.layers[0].drift > 10 * abs(before.drift)


def test_a_net_without_neuron_groups_is_refused(net, x):
    float_net = Net(graph=net.model_graph, source=net.source, pipeline="", report={}, model_graph=net.model_graph)
    with pytest.raises(SsmcError, match="no neuron groups"):
        float_net.trace(x)


def test_cli_prints_the_table_worst_first_and_writes_an_html_page(net, x, tmp_path, capsys):
    net.save(tmp_path / "net.lava")
    np.save(tmp_path / "x.npy", x[:4])
    page = tmp_path / "trace.html"
    assert (
        main(["trace", str(tmp_path / "net.lava"), "--input", str(tmp_path / "x.npy"), "--html", str(page), "-q"]) == 0
    )
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[1:10]]
    assert rows[0] == ssmc.load(tmp_path / "net.lava").trace(x[:4]).layers[0].group
    assert "predicted class" in out and f"wrote {page}" in out
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 1 + len(net.graph.ops_of_kind("neurons"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_html_into_a_missing_folder_is_a_one_line_error(net, tmp_path, capsys):
    net.save(tmp_path / "net.lava")
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 1)))
    assert (
        main(
            [
                "trace",
                str(tmp_path / "net.lava"),
                "--input",
                str(tmp_path / "x.npy"),
                "--html",
                str(tmp_path / "no" / "t.html"),
                "-q",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t.html: folder" in err and "does not exist" in err


@pytest.mark.parametrize("passes", [DEFAULT_PIPELINE, FROZEN_NORMS_PIPELINE])
def test_glu_gates_and_norm_parts_are_not_compared_and_a_norm_adds_quantization_error_unless_frozen(passes):
    net = ssmc.compile(
        EXAMPLES / "digits_s4d_full_step.onnx",
        readout="mean",
        passes=passes,
        calibration=EXAMPLES / "digits_calib.npz",
        stop_after="assign-bitwidths",
    )
    x = np.load(EXAMPLES / "digits_test.npz")["x"][:2, :16]
    tr = net.trace(x)
    parts = {
        op.name
        for op in net.graph.ops_of_kind("neurons")
        if op.attrs["source"] != op.name and op.attrs["kind"] not in ("source", "cpx")
    }
    assert any(p.endswith(".gate") for p in parts) and set(tr.skipped) == parts
    norms = [lt for lt in tr.layers if lt.op.startswith("norm")]
    assert len(norms) == 2 and all(lt.kind == "relay" for lt in norms)
    worst_norm, worst_cpx = max(lt.worst for lt in norms), max(lt.worst for lt in tr.layers if lt.kind == "cpx")
    if passes == DEFAULT_PIPELINE:  # on neurons (sum, squares, 1/sqrt tables, products): a few 1e-4 of its scale
        assert any(p.endswith(".rsqrt0") for p in parts) and worst_norm < 5e-3
    else:  # freeze-norms replaces a LayerNorm by one calibrated gain: the trace shows what that costs per token
        assert worst_norm > 10 * worst_cpx
