"""The shipped digits example through Lava: the same integers as numpy at every step, from the
library (`Net.to_lava`), the CLI (`ssmc run --engine lava`, `ssmc export-lava`) and the
standalone script; dense and sigma-delta messages."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import ssmc
from ssmc.backend_loihi import bundle
from ssmc.backend_loihi.lava_net import process_table, process_table_json
from ssmc.backend_loihi.lava_script import write_script
from ssmc.runtime.numpy_engine import run_numpy
from tests.backend_loihi.test_bundle import rezip, unzip, with_manifest
from tests.backend_loihi.test_lava_engine import assert_same_run
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def net():
    return ssmc.compile(EXAMPLES / "digits_s4d_step.onnx", readout="mean", calibration=EXAMPLES / "digits_calib.npz")


@pytest.fixture(scope="module")
def test_x():
    return np.load(EXAMPLES / "digits_test.npz")["x"]


def test_the_example_matches_numpy_at_every_step(net, test_x):
    assert_same_run(net.graph, test_x[:2, :10])


def test_the_example_with_sigma_delta_messages_matches_numpy_at_every_step(test_x):
    sparse = ssmc.compile(
        EXAMPLES / "digits_s4d_step.onnx", readout="mean", calibration=EXAMPLES / "digits_calib.npz", sigma_delta=0.001
    )
    assert any(op.attrs.get("delta") for op in sparse.graph.ops_of_kind("neurons"))
    assert_same_run(sparse.graph, test_x[3:5, :8])


def test_to_lava_builds_one_process_per_group_and_runs_like_numpy(net, test_x):
    x = test_x[:2, :8]
    network = net.to_lava(x)
    groups = [op.name for op in net.graph.ops() if op.kind in ("neurons", "synapses")]
    assert sorted(network.processes) == sorted(groups)
    np.testing.assert_array_equal(network.run().raw["y"], run_numpy(net.graph, x).raw["y"])


def test_the_process_table_names_every_process_its_class_group_and_size(net):
    rows = {r["name"]: r for r in process_table(net)}
    assert rows["s4d0.pairs"]["class"] == "Cpx" and rows["s4d0.pairs"]["size"] == 1024
    assert rows["readout"]["class"] == "Integrator"
    assert rows["s4d0.B.syn"]["class"] in ("Sparse", "Synapses") and rows["s4d0.B.syn"]["group"] == "s4d0.pairs"
    assert json.loads(process_table_json(net)) == list(rows.values())  # the JSON form, for a net.lava extra
    assert process_table_json(net) == process_table_json(net)
    for op in net.graph.ops_of_kind("synapses"):  # Lava's own synapses wherever they are exact on this net
        delay, w = op.attrs.get("delay", 1), op.params["weight"]
        want = "DelayDense" if delay > 1 else "Sparse" if np.count_nonzero(w) < 0.1 * w.size else "Dense"
        assert rows[op.name]["class"] == want, rows[op.name]
    # an S4D layer's B and C hold one weight per mode: Lava keeps only those, not [H*M, H] matrices
    assert rows["s4d0.B.syn"]["class"] == rows["s4d0.C.syn"]["class"] == "Sparse"


def test_the_exported_script_runs_standalone_and_matches_numpy(net, test_x, tmp_path):
    script, tensors = write_script(net, tmp_path / "build_net.py")
    first = (open(script, "rb").read(), open(tensors, "rb").read())
    write_script(net, tmp_path / "build_net.py")
    assert (open(script, "rb").read(), open(tensors, "rb").read()) == first  # deterministic
    # a Sparse group travels as its non-zeros (CSR), not as the dense [H*M, H] matrix
    saved, b = np.load(tensors), net.graph.op("s4d0.B.syn").params["weight"]
    assert "s4d0.B.syn.weights" not in saved.files
    assert saved["s4d0.B.syn.weights.data"].size == np.count_nonzero(b) < b.size / 10
    x = test_x[5:7, :10]
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [sys.executable, script, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npz"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["y"], run_numpy(net.graph, x).raw["y"])


@pytest.mark.parametrize("hostile", ['x"""\nimport os; os.system("touch pwned")\n"""', 'a\\"\x1b[2J\u202e.onnx'])
def test_a_hostile_source_name_stays_text_in_the_exported_script(net, tmp_path, hostile):
    # the source file name comes from a net.lava, which may be hostile: it must not end the docstring
    named = dataclasses.replace(net, source={**net.source, "file": hostile})
    script, _ = write_script(named, tmp_path / "build_net.py")
    tree = ast.parse(open(script, encoding="utf-8").read())
    doc = ast.get_docstring(tree)
    assert doc.startswith("Lava network of ") and "pwned" not in "".join(ast.unparse(node) for node in tree.body[1:])
    assert "\x1b" not in doc and "\u202e" not in doc


def ssmc_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssmc.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_runs_the_lava_engine_and_reports_agreement_with_numpy(net, tmp_path):
    net.save(tmp_path / "net.lava")
    proc = ssmc_cli(
        "run",
        tmp_path / "net.lava",
        "--input",
        EXAMPLES / "digits_test.npz",
        "--engine",
        "lava",
        "--limit",
        "2",
        "--tokens",
        "8",
        "--compare-numpy",
    )
    assert proc.returncode == 0, proc.stderr
    assert "outputs: [2, 8, 10]" in proc.stdout and "engine lava" in proc.stdout
    assert "vs numpy engine: identical integers (160 output values)" in proc.stdout
    assert "saturation:" in proc.stdout and "message sparsity" in proc.stdout
    proc = ssmc_cli("export-lava", tmp_path / "net.lava", "-o", tmp_path / "b.py")
    assert proc.returncode == 0 and (tmp_path / "b.py").exists() and (tmp_path / "b.npz").exists()
    groups = len(net.graph.ops_of_kind("neurons")) + len(net.graph.ops_of_kind("synapses"))
    assert f"{groups} Lava processes:" in proc.stdout and " Dense" in proc.stdout


def test_cli_refuses_a_newer_net_lava_in_one_line_before_lava_starts(net, tmp_path):
    net.save(tmp_path / "net.lava")
    newer_version = bundle.FORMAT_VERSION + 1
    newer = rezip(with_manifest(unzip((tmp_path / "net.lava").read_bytes()), format_version=newer_version))
    (tmp_path / "newer.lava").write_bytes(newer)
    for args in (
        ["run", tmp_path / "newer.lava", "--input", EXAMPLES / "digits_test.npz", "--engine", "lava"],
        ["export-lava", tmp_path / "newer.lava", "-o", tmp_path / "b.py"],
    ):
        proc = ssmc_cli(*args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ssmc: error:")]
        assert len(errors) == 1 and f"format {newer_version}" in errors[0] and "upgrade" in errors[0], proc.stderr


def test_a_net_without_neuron_groups_is_refused_by_the_lava_engine(test_x):
    float_net = ssmc.compile(EXAMPLES / "digits_s4d_step.onnx", passes="canonicalize")
    with pytest.raises(ssmc.SsmcError, match="without the fixed-point passes"):
        float_net.run(test_x[:1, :2], engine="lava")
