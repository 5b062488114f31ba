"""Code generation and the net.lava entries: one program per group, text and binary agree.

What the programs compute is tested in tests/runtime/test_microcode_engine.py
(bit for bit against the numpy engine); here: their shape, the files, the summary.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from ssmc.api import Net
from ssmc.backend_loihi.microcode.asm import disassemble, parse
from ssmc.backend_loihi.microcode.codegen import generate
from ssmc.backend_loihi.microcode.emit import emit_microcode, format_summary, microcode_summary
from ssmc.backend_loihi.microcode.isa import STATE0, cycles_per_update, decode_program
from tests.builders.onnx_models import build_step_model, random_spec
from tests.runtime.test_engine_contract import random_extended_network, random_network


@pytest.mark.parametrize("seed", range(6))
def test_every_group_gets_a_program_whose_text_assembles_to_its_binary(seed):
    g = random_extended_network(seed)
    extras = emit_microcode(g)
    index = json.loads(extras["microcode/index.json"])
    groups = [op.name for op in g.ops_of_kind("neurons")]
    assert [row["group"] for row in index["groups"]] == groups
    for row in index["groups"]:
        (unit,) = row["units"]  # not placed: one program for the whole group
        assert (unit["chip"], unit["start"], unit["stop"]) == (None, 0, g.op(row["group"]).attrs["size"])
        text = extras[unit["text"]].decode()
        assert text.startswith(f"; %{row['group']}: ")
        body = text.split("\n", 1)[1]
        assert disassemble(extras[unit["binary"]]) == body
        assert parse(text) == decode_program(extras[unit["binary"]])
        assert row["binary_words"] * 8 == len(extras[unit["binary"]])
    assert set(extras) == {"microcode/index.json"} | {f"microcode/{n}.{e}" for n in groups for e in ("s", "bin")}


def test_the_entries_are_deterministic():
    assert emit_microcode(random_extended_network(3)) == emit_microcode(random_extended_network(3))


@pytest.mark.parametrize("seed", range(8))
def test_programs_have_the_group_shape_probes_and_an_idle_branch_when_needed(seed):
    g = random_extended_network(seed)
    for op in g.ops_of_kind("neurons"):
        p = generate(op)
        a = op.attrs
        lanes = 2 if a["kind"] == "cpx" else 1
        assert (p.lanes, p.neurons * p.lanes) == (lanes, a["size"])
        assert p.ports == (1 if a["kind"] == "source" else len(op.inputs))
        kinds = {k for k, _, _ in p.probes}
        assert ("state" in kinds) == (a["kind"] in ("cpx", "integrator"))
        assert ("last" in kinds) == (a.get("delta", 0) > 0)
        assert all(STATE0 <= reg < STATE0 + 8 for _, _, reg in p.probes)
        has_idle = p.code[0].op == "bslt"
        assert has_idle == (a.get("depth", 0) > 0)
        if has_idle:
            assert p.code[0].imm == a["depth"]
            assert cycles_per_update(p, awake=False) < cycles_per_update(p)
        assert sum(ins.op == "emit" for ins in p.code) == lanes * (2 if has_idle else 1)
        if a["kind"] == "lut":
            np.testing.assert_array_equal(p.table, op.params["table"])


def test_a_cpx_program_keeps_its_coefficients_and_bias_in_parameter_memory():
    g = random_network(1)
    op = g.op("pairs")
    p = generate(op)
    rows = [list(r) for r in p.params]
    assert list(op.params["c_re"]) in rows and list(op.params["c_im"]) in rows
    assert sum(ins.op == "mul" for ins in p.code) == 4  # two complex products' four real ones


def test_the_summary_lists_size_and_cycles_per_program():
    g = random_network(0)
    net = Net(graph=g, source={}, pipeline="", report={}, extras=emit_microcode(g))
    rows = microcode_summary(net)
    assert [r["group"] for r in rows] == [op.name for op in g.ops_of_kind("neurons")]
    for r in rows:
        p = decode_program(net.extras[f"microcode/{r['group']}.bin"])
        assert r["code_words"] == len(p.code) and r["param_words"] == p.params.size
        assert r["cycles_per_update"] == cycles_per_update(p)
        assert r["cycles_per_step"] == p.neurons * r["cycles_per_update"]
    text = format_summary(rows)
    assert "assumed" in text and all(r["group"] in text for r in rows)


def test_cli_runs_the_microcode_engine_with_the_numpy_engines_results(tmp_path):
    spec = random_spec(2, H=3, M=2, n_layers=1)
    onnx.save(build_step_model(spec), str(tmp_path / "m.onnx"))
    x = np.random.default_rng(0).normal(size=(5, 6, spec.in_features)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, y=np.arange(5) % spec.n_out)

    def ssmc(*args):
        proc = subprocess.run(
            [sys.executable, "-m", "ssmc.cli", *map(str, args)], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    ssmc(
        "compile",
        tmp_path / "m.onnx",
        "-o",
        tmp_path / "n.lava",
        "--calibrate",
        tmp_path / "in.npz",
        "--sigma-delta",
        "0.01",
    )
    runs = {
        e: ssmc(
            "run", tmp_path / "n.lava", "--input", tmp_path / "in.npz", "--engine", e, "--output", tmp_path / f"{e}.npy"
        )
        for e in ("numpy", "microcode")
    }
    np.testing.assert_array_equal(np.load(tmp_path / "numpy.npy"), np.load(tmp_path / "microcode.npy"))
    pick = ("predictions", "saturation:", "message sparsity")
    lines = {
        e: [ln.replace(e, "ENGINE") for ln in out.splitlines() if ln.startswith(pick) or "accuracy" in ln]
        for e, out in runs.items()
    }
    assert lines["numpy"] == lines["microcode"] and len(lines["numpy"]) == 4
    assert "cycles are assumed" in runs["microcode"]


def random_placement(g, seed: int) -> dict:
    """Each group cut into 1..3 blocks at neuron boundaries, on made-up (chip, core)s."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, op in enumerate(g.ops_of_kind("neurons")):
        lanes = 2 if op.attrs["kind"] == "cpx" else 1
        n = op.attrs["size"] // lanes
        cuts = sorted(set(rng.integers(1, n, size=int(rng.integers(0, 3))).tolist())) if n > 1 else []
        edges = [0] + cuts + [n]
        out[op.name] = [
            (int(rng.integers(0, 2)), int(rng.integers(0, 4)), a * lanes, b * lanes) for a, b in zip(edges, edges[1:])
        ]
    return out


@pytest.mark.parametrize("seed", range(4))
def test_a_placed_group_gets_one_program_per_core_block_with_its_slice_of_parameters(seed):
    g = random_extended_network(seed)
    placement = random_placement(g, seed)
    extras = emit_microcode(g, placement)
    whole = emit_microcode(g)
    for row in json.loads(extras["microcode/index.json"])["groups"]:
        full = decode_program(whole[f"microcode/{row['group']}.bin"])
        blocks = placement[row["group"]]
        assert [(u["chip"], u["core"], u["start"], u["stop"]) for u in row["units"]] == blocks
        for u, (chip, core, start, stop) in zip(row["units"], blocks):
            assert u["binary"] == f"microcode/chip{chip}.core{core}/{row['group']}@{start}.bin"
            p = decode_program(extras[u["binary"]])
            assert p.code == full.code and p.neurons * p.lanes == stop - start
            np.testing.assert_array_equal(p.params, full.params[:, start // p.lanes : stop // p.lanes])
            assert f"on chip {chip} core {core}" in extras[u["text"]].decode().splitlines()[0]


def test_a_placement_that_splits_a_complex_mode_keeps_one_program_and_says_so():
    g = random_network(0)
    size = g.op("pairs").attrs["size"]
    extras = emit_microcode(g, {"pairs": [(0, 0, 0, 1), (0, 1, 1, size)]})
    row = next(r for r in json.loads(extras["microcode/index.json"])["groups"] if r["group"] == "pairs")
    assert len(row["units"]) == 1 and "splits a 2-compartment neuron" in row["note"]


def test_core_cycles_add_up_the_programs_on_each_core():
    from ssmc.backend_loihi.microcode.emit import core_cycles

    g = random_network(1)
    placement = {op.name: [(0, 0, 0, op.attrs["size"])] for op in g.ops_of_kind("neurons")}
    placement["act"] = [(0, 1, 0, 1), (0, 2, 1, 2), (0, 1, 2, g.op("act").attrs["size"])]  # two blocks on 0.1
    net = Net(graph=g, source={}, pipeline="", report={}, extras=emit_microcode(g, placement))
    rows = {r["group"]: r for r in microcode_summary(net)}
    cores = core_cycles(net)
    act = rows["act"]["cycles_per_update"]
    assert cores["0.2"] == act and cores["0.1"] == (g.op("act").attrs["size"] - 1) * act
    assert cores["0.0"] == sum(r["cycles_per_step"] for name, r in rows.items() if name != "act")
    assert rows["act"]["cores"] == 3  # blocks, two of them on one core
    assert "busiest of 3 cores" in format_summary(list(rows.values()), cores)


def test_cli_says_in_one_line_when_a_net_has_no_microcode(tmp_path):
    import dataclasses

    import ssmc

    spec = random_spec(1, H=2, M=1, n_layers=1)
    onnx.save(build_step_model(spec), str(tmp_path / "m.onnx"))
    x = np.random.default_rng(0).normal(size=(2, 4, spec.in_features)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    net = ssmc.compile(tmp_path / "m.onnx", calibration=x)
    dataclasses.replace(net, extras={}).save(tmp_path / "old.lava")  # as an older ssmc wrote it
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssmc.cli",
            "run",
            str(tmp_path / "old.lava"),
            "--input",
            str(tmp_path / "x.npy"),
            "--engine",
            "microcode",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("ssmc: error: ") and "recompile" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_shows_programs_and_assembles_and_disassembles(tmp_path):
    import ssmc

    g = random_network(2)
    net = Net(
        graph=g,
        source={"file": "m.onnx", "sha256": "0" * 64, "bytes": 1},
        pipeline="",
        report={},
        extras=emit_microcode(g),
    )
    net.save(tmp_path / "n.lava")

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "ssmc.cli", "microcode", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    proc = cli(tmp_path / "n.lava")
    assert proc.returncode == 0, proc.stderr
    assert "cycles are assumed" in proc.stdout and "microcode/pairs.s" in proc.stdout
    proc = cli(tmp_path / "n.lava", "--show", "pairs")
    assert proc.stdout == ssmc.load(tmp_path / "n.lava").extras["microcode/pairs.s"].decode()
    (tmp_path / "p.s").write_text(proc.stdout)
    assert cli("--assemble", tmp_path / "p.s", "-o", tmp_path / "p.bin").returncode == 0
    assert (tmp_path / "p.bin").read_bytes() == net.extras["microcode/pairs.bin"]
    proc = cli("--disassemble", tmp_path / "p.bin")
    assert proc.stdout == disassemble(net.extras["microcode/pairs.bin"])
    (tmp_path / "bad.s").write_text(proc.stdout.replace("    halt", "    hal", 1))
    proc = cli("--assemble", tmp_path / "bad.s", "-o", tmp_path / "bad.bin")
    assert proc.returncode == 1 and "bad.s: line " in proc.stderr and "unknown instruction 'hal'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad.bin").exists()
    proc = cli(tmp_path / "n.lava", "--show", "nope")
    assert proc.returncode == 1 and "no program for group 'nope'" in proc.stderr
