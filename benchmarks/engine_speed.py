"""Tokens per second of ssmc's engines against onnxruntime, side by side in one run.

Models: the shipped digits example (2 S4D layers, H=32, N=32) and the seed paper's size
(4 S4D layers, H=128, N=64, built with tests/builders, calibrated on 32 random sequences
of 64 tokens); `--large` adds the paper's large size (H=128, N=128; compiling it needs
~6 GB). For each model, at batch 1 and 64 (64 tokens): onnxruntime on the step-form ONNX
fed token by token, the float reference, the numpy fixed-point engine (bit-exact golden
model) and the microcode engine (the net's neuron programs, interpreted), best of 3 calls
on the same net, so the engines' set-up (paid once per net) is not in the rate; the
first call's extra time is printed as set-up. The Lava engine (Lava's CPU simulation,
start-up included) runs the digits example at batch 1.

Prints the table with ratios (to onnxruntime at the same batch, and microcode to numpy)
and writes benchmarks/results/engine_speed.md. The machine is often shared and noisy:
compare ratios within one run.

    .venv/bin/python benchmarks/engine_speed.py [--large]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402

import ssmc  # noqa: E402
from ssmc.frontend.load import load_model  # noqa: E402
from ssmc.runtime.onnx_ref import run_step_onnx  # noqa: E402
from tests.builders.onnx_models import StepModelSpec, build_step_model  # noqa: E402

EX = ROOT / "examples" / "digits"
OUT = ROOT / "benchmarks" / "results"
TOKENS = 64
BATCHES = (1, 64)
ENGINES = ("onnxruntime", "float", "numpy", "microcode")


def seconds(fn, x: np.ndarray, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


def models(tmp: str, large: bool):
    yield "digits example (2 layers, H=32, N=32)", EX / "digits_s4d_step.onnx", EX / "digits_calib.npz", "mean"
    sizes = [("paper size (4 layers, H=128, N=64)", 128, 32)] + ([("large (4 layers, H=128, N=128)", 128, 64)]
                                                               if large else [])
    for label, H, M in sizes:
        path = pathlib.Path(tmp) / f"s4d_{H}_{M}.onnx"
        onnx.save(build_step_model(StepModelSpec(in_features=1, H=H, M=M, n_layers=4, n_out=10)), path)
        calib = np.random.default_rng(0).normal(size=(32, TOKENS, 1)).astype(np.float32)
        yield label, path, calib, "none"


def measure(label: str, model_path, calib, readout: str, lava: bool) -> list[tuple]:
    net = ssmc.compile(model_path, readout=readout, calibration=calib)
    onnx_model = load_model(model_path).model
    rows = []
    x_all = np.random.default_rng(1).normal(size=(max(BATCHES), TOKENS, 1)).astype(np.float32)
    if readout == "mean":  # the example's own test digits
        x_all = np.resize(np.load(EX / "digits_test.npz")["x"], (max(BATCHES), TOKENS, 1)).astype(np.float32)
    run = {"onnxruntime": lambda v: run_step_onnx(onnx_model, v),
           **{e: (lambda v, e=e: net.run(v, engine=e)) for e in ENGINES[1:]}}
    for engine in ENGINES[1:]:  # the first call on a net pays the engine's set-up
        first = seconds(run[engine], x_all[:1], repeats=1)
        again = seconds(run[engine], x_all[:1], repeats=1)
        print(f"{label}: {engine} set-up ~{max(first - again, 0) * 1e3:.0f} ms (first call {first * 1e3:.0f} ms, "
              f"then {again * 1e3:.0f} ms)", flush=True)
    for batch in BATCHES:
        x = x_all[:batch]
        rate = {e: batch * TOKENS / seconds(run[e], x) for e in ENGINES}
        for e in ENGINES:
            rows.append((label, batch, e, rate[e], rate[e] / rate["onnxruntime"],
                         rate[e] / rate["numpy"] if e == "microcode" else None))
            print(fmt(rows[-1]), flush=True)
    if lava:
        tps = TOKENS / seconds(lambda v: net.run(v, engine="lava"), x_all[:1], repeats=2)
        rows.append((label, 1, "lava (Lava CPU simulation, incl. start-up)", tps, tps / rows[0][3], None))
        print(fmt(rows[-1]), flush=True)
    return rows


def fmt(row: tuple) -> str:
    label, batch, engine, tps, vs_ort, vs_numpy = row
    return (f"| {label} | {batch} | {engine} | {tps:,.0f} | {vs_ort:.2f}x | "
            + (f"{vs_numpy:.2f}x |" if vs_numpy is not None else "- |"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="add the paper's large size (H=128, N=128; ~6 GB)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, path, calib, readout) in enumerate(models(tmp, args.large)):
            rows += measure(label, path, calib, readout, lava=i == 0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = ["# Engine speed, tokens per second", "",
             f"Command: `.venv/bin/python benchmarks/engine_speed.py` ({TOKENS} tokens a sequence, best of 3 calls "
             f"on the same net, one process; {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} "
             "when written). The machine is shared and noisy: compare ratios within one run. onnxruntime runs the "
             "step-form ONNX token by token; float is ssmc's float reference; numpy the bit-exact fixed-point "
             "engine; microcode the neuron programs interpreted (same integers as numpy).", "",
             "| model | batch | engine | tokens/s | vs onnxruntime at this batch | microcode vs numpy |",
             "|---|---|---|---|---|---|"]
    lines += [fmt(r) for r in rows]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engine_speed.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'engine_speed.md'}")


if __name__ == "__main__":
    main()
