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
        text = extras[row["text"]].decode()
        assert text.startswith(f"; %{row['group']}: ")
        body = text.split("\n", 1)[1]
        assert disassemble(extras[row["binary"]]) == body
        assert parse(text) == decode_program(extras[row["binary"]])
        assert row["binary_words"] * 8 == len(extras[row["binary"]])
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
    net = Net(graph=g, source={}, pipeline="", options={}, report={}, extras=emit_microcode(g))
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
        proc = subprocess.run([sys.executable, "-m", "ssmc.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    ssmc("compile", tmp_path / "m.onnx", "-o", tmp_path / "n.lava", "--calibrate", tmp_path / "in.npz",
         "--sigma-delta", "0.01")
    runs = {e: ssmc("run", tmp_path / "n.lava", "--input", tmp_path / "in.npz", "--engine", e,
                    "--output", tmp_path / f"{e}.npy") for e in ("numpy", "microcode")}
    np.testing.assert_array_equal(np.load(tmp_path / "numpy.npy"), np.load(tmp_path / "microcode.npy"))
    pick = ("predictions", "saturation:", "message sparsity")
    lines = {e: [ln.replace(e, "ENGINE") for ln in out.splitlines() if ln.startswith(pick) or "accuracy" in ln]
             for e, out in runs.items()}
    assert lines["numpy"] == lines["microcode"] and len(lines["numpy"]) == 4
    assert "cycles are assumed" in runs["microcode"]
