"""export-nir: what NIR 1.0.8 can express is written exactly; what it cannot is refused or cut, by name."""

from __future__ import annotations

import nir
import numpy as np
import pytest
from scipy.linalg import expm

from ssmc.backend_nir import read_nir, run_nir, s4d_matrices, to_nir, write_nir
from ssmc.cli import main
from ssmc.errors import SsmcError
from ssmc.frontend import import_onnx
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ssm import discrete_params
from ssmc.runtime.float_ref import run_float
from tests.conftest import EXAMPLES

H, M = 3, 2


def stable_modes(rng, shape):
    """Complex A_bar inside the unit circle, some fast rotations among them."""
    return (0.5 + 0.45 * rng.random(shape)) * np.exp(1j * rng.uniform(-3.0, 3.0, shape))


def linear_ssm_graph(seed: int = 0) -> Graph:
    """input -> linear -> s4d (discrete) -> add(linear) -> linear -> sum pool -> output: all of it NIR-expressible."""
    rng = np.random.default_rng(seed)
    g = Graph("net")
    g.add(Op("x", "input", attrs={"size": 2}, shape=(2,)))
    g.add(
        Op("enc", "linear", ("x",), params={"weight": rng.normal(size=(H, 2)), "bias": rng.normal(size=H)}, shape=(H,))
    )
    g.add(
        Op(
            "ssm",
            "s4d",
            ("enc",),
            attrs={"form": "discrete", "modes": M},
            params={
                "A_bar": stable_modes(rng, (H, M)),
                "B_bar": rng.normal(size=(H, M)) + 1j * rng.normal(size=(H, M)),
                "C": rng.normal(size=(H, M)) + 1j * rng.normal(size=(H, M)),
                "D": rng.normal(size=H),
            },
            shape=(H,),
        )
    )
    g.add(Op("res", "add", ("ssm", "enc"), shape=(H,)))
    g.add(Op("dec", "linear", ("res",), params={"weight": rng.normal(size=(4, H))}, shape=(4,)))
    g.add(Op("acc", "pool", ("dec",), attrs={"mode": "sum"}, shape=(4,)))
    g.add(Op("y", "output", ("acc",), shape=(4,)))
    return g


def test_linears_ssm_residual_and_sum_pool_round_trip_through_a_nir_file_exactly(tmp_path):
    g = linear_ssm_graph()
    exported, cuts = to_nir(g)
    assert cuts == []
    write_nir(exported, tmp_path / "net.nir")
    back = nir.read(str(tmp_path / "net.nir"))
    kinds = {name: type(node).__name__ for name, node in back.nodes.items()}
    assert kinds["enc"] == "Affine" and kinds["dec"] == "Linear" and kinds["acc"] == "I"
    assert kinds["ssm.x"] == "I" and kinds["ssm.A"] == "Linear" and ("ssm.A", "ssm.x") in back.edges
    x = np.random.default_rng(1).normal(size=(5, 30, 2))
    np.testing.assert_allclose(run_nir(back, x)["y"], run_float(g, x)["y"], rtol=1e-10, atol=1e-10)


def test_the_shipped_example_with_relu_and_mean_cut_to_the_host_equals_the_float_reference(tmp_path):
    graph = import_onnx(EXAMPLES / "digits_s4d_step.onnx", readout="mean")[0]
    exported, cuts = to_nir(graph, cut=True)
    assert [c.split(" ")[0] for c in cuts] == ["%relu0", "%relu1", "%readout"]
    write_nir(exported, tmp_path / "d.nir")
    back = read_nir(tmp_path / "d.nir")
    assert sorted(n for n, v in back.nodes.items() if isinstance(v, nir.Output)) == [
        "readout.in0",
        "relu0.in0",
        "relu1.in0",
        "y",
    ]
    x = np.load(EXAMPLES / "digits_test.npz")["x"][:6]
    ref = run_float(graph, x)["y"]
    np.testing.assert_allclose(run_nir(back, x)["y"], ref, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("model", ["digits_s4d_step.onnx", "digits_s4d_step_dynamo.onnx"])
def test_the_ode_form_integrated_exactly_over_one_token_is_the_discrete_layer(model):
    # zero-order hold, exactly (Van Loan): expm([[A, B], [0, 0]]) holds e^A and the integral of e^(As) B
    graph = import_onnx(EXAMPLES / model)[0]
    for op in graph.ops_of_kind("s4d"):
        m = s4d_matrices(op, "ode")
        n, h = m["A"].shape[0], m["B"].shape[1]
        aug = np.zeros((n + h, n + h))
        aug[:n, :n], aug[:n, n:] = m["A"], m["B"]
        e = expm(aug)
        euler = s4d_matrices(op, "euler")
        np.testing.assert_allclose(e[:n, :n], euler["A"] + np.eye(n), atol=1e-9)
        np.testing.assert_allclose(e[:n, n:], euler["B"], atol=1e-9)
        A_bar, _ = discrete_params(op)  # and the Euler form's diagonal is A_bar's real part minus 1
        np.testing.assert_allclose(np.diag(euler["A"])[0::2], A_bar.reshape(-1).real - 1.0, atol=1e-12)


def test_ops_nir_cannot_express_are_refused_each_by_name():
    graph = import_onnx(EXAMPLES / "digits_s4d_step.onnx", readout="mean")[0]
    with pytest.raises(SsmcError) as e:
        to_nir(graph)
    msg = str(e.value)
    assert "\n" not in msg
    for phrase in ("%relu0 (relu): NIR 1.0.8 has no relu node", "%relu1", "%readout (running mean)", "--cut"):
        assert phrase in msg


def test_a_layer_norm_is_refused_even_with_cut():
    graph = import_onnx(EXAMPLES / "digits_s4d_full_step.onnx")[0]
    norm = graph.ops_of_kind("norm")[0].name
    with pytest.raises(SsmcError, match=f"%{norm} \\(layer norm\\)"):
        to_nir(graph, cut=True)


def test_cli_exports_the_example_and_checks_it_against_the_float_reference(tmp_path, capsys):
    out = tmp_path / "net.nir"
    assert (
        main(
            [
                "export-nir",
                str(EXAMPLES / "digits_s4d_step.onnx"),
                "--readout",
                "mean",
                "-o",
                str(out),
                "--cut",
                "--check",
                str(EXAMPLES / "digits_test.npz"),
                "--limit",
                "3",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "cut, the host computes it" in text and f"wrote {out}" in text
    err = float(text.split("max abs error ")[1].split()[0])
    assert err < 1e-10
    assert [p.name for p in tmp_path.iterdir()] == ["net.nir"]


def test_cli_refusal_is_one_line_and_writes_nothing(tmp_path, capsys):
    assert main(["export-nir", str(EXAMPLES / "digits_s4d_step.onnx"), "-o", str(tmp_path / "n.nir")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ssmc: error: NIR cannot express %relu0")
    assert list(tmp_path.iterdir()) == []


def test_cli_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        main(["export-nir", "--help"])
    assert "ssmc export-nir net.lava" in capsys.readouterr().out


def shared_ssm_graph(seed: int = 0, P: int = 4) -> Graph:
    """linear_ssm_graph with its layer's modes shared by all channels (S5/LRU: B_bar [P, H], C [H, P])."""
    rng = np.random.default_rng(seed)
    g = linear_ssm_graph(seed)
    op = g.op("ssm")
    op.attrs.update(mixing="dense", modes=P)
    op.params.update(
        A_bar=stable_modes(rng, P),
        B_bar=rng.normal(size=(P, H)) + 1j * rng.normal(size=(P, H)),
        C=rng.normal(size=(H, P)) + 1j * rng.normal(size=(H, P)),
    )
    return g


def test_a_layer_with_shared_modes_round_trips_through_a_nir_file_exactly(tmp_path):
    g = shared_ssm_graph()
    write_nir(to_nir(g)[0], tmp_path / "net.nir")
    back = nir.read(str(tmp_path / "net.nir"))
    assert back.nodes["ssm.B"].weight.shape == (8, H) and back.nodes["ssm.C"].weight.shape == (H, 8)
    x = np.random.default_rng(1).normal(size=(5, 30, 2))
    np.testing.assert_allclose(run_nir(back, x)["y"], run_float(g, x)["y"], rtol=1e-10, atol=1e-10)


def test_the_ode_form_of_shared_modes_integrated_exactly_over_one_token_is_the_discrete_layer():
    op = shared_ssm_graph(seed=3).op("ssm")
    m, euler = s4d_matrices(op, "ode"), s4d_matrices(op, "euler")
    n, h = m["A"].shape[0], m["B"].shape[1]
    aug = np.zeros((n + h, n + h))
    aug[:n, :n], aug[:n, n:] = m["A"], m["B"]
    e = expm(aug)
    np.testing.assert_allclose(e[:n, :n], euler["A"] + np.eye(n), atol=1e-9)
    np.testing.assert_allclose(e[:n, n:], euler["B"], atol=1e-9)
