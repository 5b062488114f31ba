"""The reference implementation (ssmc/runtime/reference.py) as an engine users can run.

That every fast engine equals it bit for bit is tested in test_engine_contract.py
(numpy engine; the microcode and Lava engines equal the numpy engine).
"""

from __future__ import annotations

import numpy as np
import pytest

import ssmc
from ssmc.cli import main
from ssmc.errors import InputDataError, IRError, ResourceLimitError
from ssmc.ir import Graph, Op
from ssmc.runtime.numpy_engine import run_numpy
from ssmc.runtime.reference import run_reference
from tests.conftest import EXAMPLES
from tests.runtime.test_engine_contract import assert_same_result, random_extended_network


@pytest.fixture(scope="module")
def digits_net(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "net.lava"
    ssmc.compile(EXAMPLES / "digits_s4d_step.onnx", readout="mean", calibration=EXAMPLES / "digits_calib.npz").save(
        path
    )
    return path


def test_ssmc_run_with_the_reference_engine_agrees_with_numpy(digits_net, capsys):
    assert (
        main(
            [
                "run",
                str(digits_net),
                "--input",
                str(EXAMPLES / "digits_test.npz"),
                "--engine",
                "reference",
                "--limit",
                "2",
                "--tokens",
                "6",
                "--compare-numpy",
                "-q",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "outputs: [2, 6, 10] (batch, tokens, outputs); engine reference" in out
    assert "vs numpy engine: identical integers (120 output values), identical saturation counts" in out


def test_net_run_detailed_with_the_reference_engine_returns_its_result(digits_net):
    net = ssmc.load(digits_net)
    x = np.load(EXAMPLES / "digits_test.npz")["x"][:1, :4]
    got = net.run_detailed(x, engine="reference")
    assert_same_result(run_numpy(net.graph, x, trace=False), got["result"])
    np.testing.assert_array_equal(got["outputs"], got["result"].outputs[net.graph.outputs()[0].name])


def test_a_run_too_large_for_the_work_limit_is_refused_before_it_starts(monkeypatch):
    g = random_extended_network(0)
    x = np.zeros((1000, 50, g.inputs()[0].shape[0]))
    monkeypatch.setenv("SSMC_MAX_WORK_BYTES", str(1 << 20))
    with pytest.raises(ResourceLimitError, match="on the reference engine with traces .* run at most"):
        run_reference(g, x, trace=True)


def test_bad_input_and_model_level_graphs_are_refused_like_the_numpy_engine():
    g = random_extended_network(1)
    with pytest.raises(InputDataError, match="NaN"):
        run_reference(g, np.full((1, 2, g.inputs()[0].shape[0]), np.nan))
    m = Graph("m")
    m.add(Op("x", "input", attrs={"size": 1}, shape=(1,)))
    m.add(Op("r", "activation", ("x",), attrs={"fn": "relu"}, shape=(1,)))
    m.add(Op("y", "output", ("r",), shape=(1,)))
    with pytest.raises(IRError, match="run the fixed-point passes"):
        run_reference(m, np.zeros((1, 2, 1)))
