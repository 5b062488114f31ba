"""Accuracy against message traffic with sigma-delta messages, on both digits models.

For the main (ReLU) and the full (LayerNorm/GELU/GLU) digits examples, compiled
with default widths, this runs the test set on the bit-exact numpy engine with
dense messages and with sigma-delta thresholds T (a fraction of each group's
full scale; `ssmc compile --sigma-delta T`), and prints side by side: accuracy,
non-zero messages per token (counted over all groups and sequences), their
ratio to dense, and synaptic operations per token (each non-zero message times
its sender's fan-out, counted exactly per neuron from the traces). Message and
synaptic-op counts are what energy on Loihi scales with; no energy is
estimated here. Writes benchmarks/results/sigma_delta.md.

    .venv/bin/python benchmarks/sigma_delta.py [--limit N]
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import time

import numpy as np

import ssmc
from ssmc.runtime.compare import accuracy
from ssmc.runtime.numpy_engine import run_numpy

ROOT = pathlib.Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "digits"
OUT = ROOT / "benchmarks" / "results"
MODELS = {"main (ReLU)": EX / "digits_s4d_step.onnx", "full (LayerNorm, GELU, GLU)": EX / "digits_s4d_full_step.onnx"}
THRESHOLDS = (None, 0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def traffic(graph, trace, tokens: int, sequences: int) -> tuple[float, float]:
    """(non-zero messages, synaptic ops) per token: every group's sends at the steps that carry tokens."""
    fanout = {}
    for syn in graph.ops_of_kind("synapses"):
        col = np.count_nonzero(syn.params["weight"], axis=0)
        fanout[syn.inputs[0]] = fanout.get(syn.inputs[0], 0) + col
    msgs = ops = 0.0
    for g in graph.ops_of_kind("neurons"):
        d = int(g.attrs.get("depth", 0))
        nz = trace[g.name][:, d : d + tokens] != 0
        msgs += nz.sum()
        if g.name in fanout:
            ops += float((nz * fanout[g.name]).sum())
    return msgs / (tokens * sequences), ops / (tokens * sequences)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=450, help="test sequences to use (default: all 450)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    data = np.load(EX / "digits_test.npz")
    x, labels = data["x"][: args.limit], data["y"][: args.limit]
    cal = EX / "digits_calib.npz"
    start = time.perf_counter()
    lines = [
        f"# Sigma-delta messages: accuracy against traffic ({len(labels)} test sequences)",
        "",
        "Default widths, calibrated on `digits_calib.npz`, bit-exact numpy engine. Messages and synaptic "
        "operations are counted per token over every neuron group (exactly, from the traces); "
        "synaptic ops = non-zero messages x the sender's fan-out.",
        "",
    ]
    for label, model in MODELS.items():
        lines += [
            f"## {label}: `{model.name}`",
            "",
            "| messages | accuracy | messages / token | vs dense | synaptic ops / token | vs dense |",
            "|---|---|---|---|---|---|",
        ]
        base = None
        for t in THRESHOLDS:
            net = ssmc.compile(model, readout="mean", calibration=cal, sigma_delta=t)
            res = run_numpy(net.graph, x, trace=True)
            y = res.outputs[net.graph.outputs()[0].name]
            acc = accuracy(y, labels).fraction
            msgs, ops = traffic(net.graph, res.trace, x.shape[1], len(x))
            base = base or (msgs, ops)
            name = "dense" if t is None else f"sigma-delta T={t:g}"
            lines.append(
                f"| {name} | {100 * acc:.2f}% | {msgs:,.0f} | {msgs / base[0]:.2f}x | {ops:,.0f} | "
                f"{ops / base[1]:.2f}x |"
            )
            print(lines[-1], flush=True)
        lines.append("")
    seconds = time.perf_counter() - start
    lines.insert(2, f"Command: `.venv/bin/python benchmarks/sigma_delta.py --limit {args.limit}` ({seconds:.0f} s).")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sigma_delta.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'sigma_delta.md'}")


if __name__ == "__main__":
    main()
