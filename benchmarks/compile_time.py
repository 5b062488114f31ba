"""Compile time by stage, for models from the shipped example up to the seed paper's sizes, in one run.

Each model is an S4D step-form ONNX file (the shipped digits example, and
4-layer stacks built with tests/builders at the seed paper's small size,
H=64 N=64, and at H=128 N=64; `--large` adds H=128 N=128, the paper's large
size: a calibrated compile and runs of it peaked at 2.1 GB resident). `ssmc.compile` runs with its
default pipeline and no calibration data; the stage times come from its
progress log, so they are what a user sees. Printed side by side: seconds per
stage and each stage's share of the whole compile.

    .venv/bin/python benchmarks/compile_time.py [--large]

Writes benchmarks/results/compile_time.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402

import ssmc  # noqa: E402
from tests.builders.onnx_models import StepModelSpec, build_step_model  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
STAGES = ("import", "assign-bitwidths", "partition", "place", "other passes", "emit")


def timed_compile(path: str) -> tuple[dict, float, str]:
    """Compile `path`; seconds per stage from the times at which the progress log starts each stage."""
    marks = []
    start = time.perf_counter()
    net = ssmc.compile(path, log=lambda line: marks.append((time.perf_counter() - start, line.strip())))
    total = time.perf_counter() - start
    # a stage runs from its start line to the next start line: "importing", "<pass> ...", "microcode: ..."
    starts = []
    for t, line in marks:
        if line.startswith("importing"):
            starts.append((t, "import"))
        elif line.endswith(" ...") and len(line.split()) == 2:
            name = line.split()[0]
            starts.append((t, name if name in STAGES else "other passes"))
        elif line.startswith("microcode"):
            starts.append((t, "emit"))
    stages = dict.fromkeys(STAGES, 0.0)
    for (t, name), (t_next, _) in zip(starts, starts[1:] + [(total, "")]):
        stages[name] += t_next - t
    info = net.report["passes"]
    cores = next(
        (r["notes"][0].split(" cores")[0].split()[-1] for r in info if r["name"] == "partition" and r["notes"]), "-"
    )
    return stages, total, cores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="add the paper's large size (H=128, N=128; ~2 GB)")
    args = ap.parse_args()
    models = [("digits example", str(ROOT / "examples" / "digits" / "digits_s4d_step.onnx"), None)]
    sizes = [("small (H=64, N=64)", 64, 32), ("paper-size (H=128, N=64)", 128, 32)]
    if args.large:
        sizes.append(("large (H=128, N=128)", 128, 64))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, H, M in sizes:
            path = os.path.join(tmp, f"s4d_{H}_{M}.onnx")
            onnx.save(build_step_model(StepModelSpec(in_features=1, H=H, M=M, n_layers=4, n_out=10)), path)
            models.append((label, path, (H, M)))
        print(f"{'model':28s} " + " ".join(f"{s:>17s}" for s in STAGES) + f" {'total':>8s} {'cores':>6s}")
        for label, path, _ in models:
            stages, total, cores = timed_compile(path)
            rows.append((label, stages, total, cores))
            print(
                f"{label:28s} "
                + " ".join(f"{stages[s]:7.1f} s ({stages[s] / total:4.0%})" for s in STAGES)
                + f" {total:7.1f}s {cores:>6s}",
                flush=True,
            )
    write_md(rows)


def write_md(rows) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Compile time by stage",
        "",
        "Written by `benchmarks/compile_time.py` (default pipeline, no calibration data; wall seconds on "
        f"{platform.machine()} with {os.cpu_count()} cores, load average {load:.1f} when written). "
        "Each cell: seconds (share of the whole compile). Partition time is mostly CP-SAT's budget "
        "(`partition{time_limit}`, 10 deterministic units by default).",
        "",
        "| model | " + " | ".join(STAGES) + " | total | cores |",
        "|---|" + "---|" * (len(STAGES) + 2),
    ]
    for label, stages, total, cores in rows:
        lines.append(
            f"| {label} | "
            + " | ".join(f"{stages[s]:.1f} s ({stages[s] / total:.0%})" for s in STAGES)
            + f" | {total:.1f} s | {cores} |"
        )
    (OUT / "compile_time.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'compile_time.md'}")


if __name__ == "__main__":
    main()
