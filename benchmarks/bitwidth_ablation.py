"""Accuracy of the shipped digits example against bit-widths, with and without rescale-states.

Compiles examples/digits/digits_s4d_step.onnx for every combination of weight
bits {4, 6, 8}, coefficient bits {8, 12, 16} and state bits {16, 24} (messages
24 bits), calibrated on examples/digits/digits_calib.npz, with rescale-states
in its two balances and without it, runs the test set on the numpy
(bit-exact) engine and prints the accuracy next to the float reference's.
A second table narrows widths one layer at a time (`--layer-bits`): 6- and
4-bit weights, and 8-bit coefficients for S4D layers, everything else at the
defaults, to show where precision matters. Writes
benchmarks/results/bitwidth_ablation.md and .json.

    .venv/bin/python benchmarks/bitwidth_ablation.py [--limit N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import time

import numpy as np

import ssmc
from ssmc.passes import DEFAULT_PIPELINE
from ssmc.runtime.compare import accuracy

ROOT = pathlib.Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "digits"
OUT = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N test sequences")
    args = ap.parse_args()
    data = np.load(EX / "digits_test.npz")
    x, labels = data["x"], data["y"]
    if args.limit:
        x, labels = x[: args.limit], labels[: args.limit]
    cal = EX / "digits_calib.npz"
    model = EX / "digits_s4d_step.onnx"
    pipelines = {
        "rescale-states (balance=input, default)": DEFAULT_PIPELINE,
        "rescale-states{balance=state}": DEFAULT_PIPELINE.replace("rescale-states", "rescale-states{balance=state}"),
        "without rescale-states": DEFAULT_PIPELINE.replace("rescale-states,", ""),
    }
    float_net = ssmc.compile(model, passes="canonicalize", readout="mean")
    float_acc = accuracy(float_net.run(x, engine="float"), labels).fraction
    rows = []
    start = time.perf_counter()
    for (label, pipeline), wb, cb, sb in itertools.product(pipelines.items(), (4, 6, 8), (8, 12, 16), (16, 24)):
        net = ssmc.compile(
            model,
            passes=pipeline,
            readout="mean",
            calibration=cal,
            weight_bits=wb,
            coef_bits=cb,
            state_bits=sb,
            message_bits=24,
        )
        res = net.run_detailed(x, engine="numpy")
        sat = sum(sum(c.values()) for c in res["saturation"].values())
        acc = accuracy(res["outputs"], labels).fraction
        rows.append(
            {
                "pipeline": label,
                "weight_bits": wb,
                "coef_bits": cb,
                "state_bits": sb,
                "message_bits": 24,
                "accuracy": acc,
                "delta_vs_float_points": 100 * (acc - float_acc),
                "saturated_values": sat,
            }
        )
        print(
            f"{label:40s} w{wb} c{cb:2d} s{sb}: {100 * acc:6.2f}%  ({100 * (acc - float_acc):+6.2f} points, "
            f"{sat} saturated)",
            flush=True,
        )
    layer_rows = []
    layers = [op.name for op in float_net.graph.ops() if op.kind in ("linear", "s4d")]
    for layer in layers:
        kind = float_net.graph.op(layer).kind
        for spec in ("weight=6", "weight=4") + (("coef=8",) if kind == "s4d" else ()):
            net = ssmc.compile(model, readout="mean", calibration=cal, layer_bits=f"{layer}:{spec}")
            acc = accuracy(net.run(x), labels).fraction
            layer_rows.append(
                {
                    "layer": layer,
                    "kind": kind,
                    "widths": spec,
                    "accuracy": acc,
                    "delta_vs_float_points": 100 * (acc - float_acc),
                }
            )
            print(f"only {layer} at {spec}: {100 * acc:6.2f}% ({100 * (acc - float_acc):+6.2f} points)", flush=True)
    seconds = time.perf_counter() - start
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bitwidth_ablation.json").write_text(
        json.dumps(
            {
                "float_accuracy": float_acc,
                "sequences": len(labels),
                "rows": rows,
                "per_layer": layer_rows,
                "seconds": seconds,
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        f"# Bit-width ablation: digits example ({len(labels)} test sequences)",
        "",
        f"Float reference accuracy: {100 * float_acc:.2f}%. Messages 24 bits. Numpy (bit-exact) engine.",
        f"Command: `.venv/bin/python benchmarks/bitwidth_ablation.py` ({seconds:.0f} s).",
        "",
        "| pipeline | weight bits | coef bits | state bits | accuracy | vs float (points) | saturated |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pipeline']} | {r['weight_bits']} | {r['coef_bits']} | {r['state_bits']} | "
            f"{100 * r['accuracy']:.2f}% | {r['delta_vs_float_points']:+.2f} | {r['saturated_values']} |"
        )
    lines += [
        "",
        "## One layer at a time",
        "",
        "Every other width at the default (weights 8, coefficients 16, state and messages 24 bits), "
        "`ssmc compile ... --layer-bits LAYER:KEY=B`.",
        "",
        "| layer | kind | narrowed | accuracy | vs float (points) |",
        "|---|---|---|---|---|",
    ]
    for r in layer_rows:
        lines.append(
            f"| {r['layer']} | {r['kind']} | {r['widths']} | {100 * r['accuracy']:.2f}% | "
            f"{r['delta_vs_float_points']:+.2f} |"
        )
    (OUT / "bitwidth_ablation.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'bitwidth_ablation.md'}")


if __name__ == "__main__":
    main()
