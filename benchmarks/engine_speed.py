"""Tokens per second of ssmc's engines against onnxruntime, in one run.

The numpy fixed-point engine (batch 1 and 256), the microcode engine (the
net's neuron programs, interpreted; docs/microcode.md; batch 1 and 256), the
Lava engine (batch 1: Lava's CPU simulation of the net's processes, best of 2,
including building the processes and starting Lava's runtime) and the float
reference against onnxruntime running the step-form ONNX token by token
(batch 1 and 256), all on the shipped digits example. Prints the table with ratios to
onnxruntime at the same batch and writes benchmarks/results/engine_speed.md.

    .venv/bin/python benchmarks/engine_speed.py
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

import ssmc
from ssmc.frontend.load import load_model
from ssmc.runtime.onnx_ref import run_step_onnx

ROOT = pathlib.Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "digits"
OUT = ROOT / "benchmarks" / "results"
TOKENS = 64


def tokens_per_second(fn, x: np.ndarray, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return x.shape[0] * x.shape[1] / best


def main() -> None:
    model_path = EX / "digits_s4d_step.onnx"
    net = ssmc.compile(model_path, readout="mean", calibration=EX / "digits_calib.npz")
    onnx_model = load_model(model_path).model
    x_all = np.load(EX / "digits_test.npz")["x"]
    rows, ort_at = [], {}
    for batch in (1, 256):
        x = np.resize(x_all, (batch, TOKENS, 1)).astype(np.float32)
        ort_at[batch] = tokens_per_second(lambda v: run_step_onnx(onnx_model, v), x)
        for engine in ("numpy", "microcode", "float"):
            rows.append((batch, engine, tokens_per_second(lambda v: net.run(v, engine=engine), x)))
        if batch == 1:  # Lava's simulation is slow: one sequence, and the process start-up counted in
            rows.append((batch, "lava (Lava CPU simulation, fixed point; incl. start-up)",
                         tokens_per_second(lambda v: net.run(v, engine="lava"), x, repeats=2)))
        rows.append((batch, "onnxruntime (step form, token by token)", ort_at[batch]))
    lines = ["# Engine speed: digits example (2 S4D layers, H=32, N=32), tokens per second", "",
             "Command: `.venv/bin/python benchmarks/engine_speed.py` (best of 3, one process, same machine;",
             "the machine is noisy: compare ratios within one run).", "",
             "| batch | engine | tokens/s | vs onnxruntime batch 1 | vs onnxruntime at this batch |",
             "|---|---|---|---|---|"]
    for batch, engine, tps in rows:
        line = f"| {batch} | {engine} | {tps:,.0f} | {tps / ort_at[1]:.2f}x | {tps / ort_at[batch]:.2f}x |"
        lines.append(line)
        print(line)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engine_speed.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'engine_speed.md'}")


if __name__ == "__main__":
    main()
