"""What the integer realisations of LayerNorm, GELU and GLU cost, on the full digits variant.

examples/digits/digits_s4d_full_step.onnx has pre-LayerNorm, GELU and GLU in
each block. This prints, in one run, test accuracy of: the float reference
with exact LayerNorm; the float network after freeze-norms (LayerNorm with
one calibrated gain: the approximation alone); and the bit-exact fixed-point
net with table sizes 2**lut_bits for lut_bits {4, 6, 8, 10} at 8- and 6-bit
weights (other widths default; LayerNorm on neurons, the default), and with
frozen LayerNorms (FROZEN_NORMS_PIPELINE) at the default tables; with each
fixed-point net's largest output error relative to the float reference's
largest |output|, and each frozen norm's rms error. Writes
benchmarks/results/activation_ablation.md.

    .venv/bin/python benchmarks/activation_ablation.py
"""

from __future__ import annotations

import logging
import pathlib
import time

import numpy as np

import ssmc
from ssmc.passes import DEFAULT_PIPELINE, FLOAT_PIPELINE, FROZEN_NORMS_PIPELINE
from ssmc.runtime.compare import accuracy
from ssmc.runtime.float_ref import run_float

ROOT = pathlib.Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "digits"
OUT = ROOT / "benchmarks" / "results"
MODEL = EX / "digits_s4d_full_step.onnx"


def main() -> None:
    logging.getLogger("ssmc").setLevel(logging.INFO)  # the pass notes are what the table quotes
    data = np.load(EX / "digits_test.npz")
    x, labels = data["x"], data["y"]
    cal = EX / "digits_calib.npz"
    start = time.perf_counter()
    rows = []

    exact = ssmc.compile(MODEL, passes="canonicalize", readout="mean")
    ref = exact.run(x, engine="float")
    float_acc = accuracy(ref, labels).fraction
    rows.append(("float reference (exact LayerNorm)", "-", "-", float_acc, "-"))

    def rel_error(y: np.ndarray) -> str:
        return f"{float(np.abs(y - ref).max() / np.abs(ref).max()):.3f}"

    frozen = ssmc.compile(MODEL, passes=FLOAT_PIPELINE + ",freeze-norms", readout="mean", calibration=cal)
    notes = [n for r in frozen.report["passes"] if r["name"] == "freeze-norms" for n in r["notes"] if "1/std ->" in n]
    out = run_float(frozen.graph, x)[frozen.graph.outputs()[0].name]
    rows.append(("float, LayerNorm frozen (freeze-norms)", "-", "-", accuracy(out, labels).fraction, "-"))
    for wb in (8, 6):
        for lut_bits in (4, 6, 8, 10):
            pipeline = DEFAULT_PIPELINE.replace("assign-bitwidths", f"assign-bitwidths{{lut-bits={lut_bits}}}")
            net = ssmc.compile(MODEL, passes=pipeline, readout="mean", calibration=cal, weight_bits=wb)
            y = net.run(x)
            rows.append(
                (
                    f"fixed point (numpy engine), lut-bits {lut_bits}",
                    wb,
                    2**lut_bits,
                    accuracy(y, labels).fraction,
                    rel_error(y),
                )
            )
        net = ssmc.compile(MODEL, passes=FROZEN_NORMS_PIPELINE, readout="mean", calibration=cal, weight_bits=wb)
        y = net.run(x)
        rows.append(
            (
                "fixed point (numpy engine), LayerNorm frozen, lut-bits 8",
                wb,
                256,
                accuracy(y, labels).fraction,
                rel_error(y),
            )
        )
    seconds = time.perf_counter() - start

    lines = [
        f"# Integer LayerNorm / GELU / GLU: the full digits variant ({len(labels)} test sequences)",
        "",
        f"Model: `{MODEL.relative_to(ROOT)}` (pre-LayerNorm, GELU, GLU per block). Coefficients 16 bits, "
        "state and messages 24 bits; calibrated on `digits_calib.npz`.",
        f"Command: `.venv/bin/python benchmarks/activation_ablation.py` ({seconds:.0f} s).",
        "",
        "LayerNorm on neurons unless the row says frozen; max error: the largest |fixed - float| over every "
        "token's output, divided by the float reference's largest |output|.",
        "",
        "| network | weight bits | table entries | accuracy | vs float (points) | max error / output scale |",
        "|---|---|---|---|---|---|",
    ]
    for label, wb, entries, acc, err in rows:
        lines.append(f"| {label} | {wb} | {entries} | {100 * acc:.2f}% | {100 * (acc - float_acc):+.2f} | {err} |")
    lines += ["", "freeze-norms on the calibration data:", ""] + [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "activation_ablation.md").write_text(text)
    print(f"wrote {OUT / 'activation_ablation.md'}")


if __name__ == "__main__":
    main()
