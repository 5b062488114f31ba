"""Tokens per second of ssmc's engines against onnxruntime, side by side in one run.

Models: the shipped digits example (2 S4D layers, H=32, N=32) and the seed paper's size
(4 S4D layers, H=128, N=64, built with tests/builders, calibrated on 32 random sequences
of 64 tokens); `--large` adds the paper's large size (H=128, N=128; compiling and running
it peaked at 2.1 GB resident, measured with /usr/bin/time -v). For each model, at batch 1
and 64 (64 tokens): onnxruntime on the step-form ONNX fed token by token, the float
reference, the numpy fixed-point engine (bit-exact golden model) and the microcode engine
(the net's neuron programs, interpreted), best of 3 calls on the same net, so the engines'
set-up (paid once per net) is not in the rate. Set-up is measured apart: the first call on a
fresh copy of the net (1 sequence of 1 token) minus the same call again, median of 5 copies.
The Lava engine (Lava's CPU simulation, start-up included) runs the digits example at batch 1.

Prints the table with ratios (to onnxruntime at the same batch, and microcode to numpy),
the load average before and after and the wall time the benchmark took, and writes
benchmarks/results/engine_speed.md (stating the load). The machine is often shared and
noisy: compare ratios within one run, on a quiet machine (load average well below the
core count) for numbers to quote. `--quick` (about a minute) runs the paper-size model
alone, best of 2 calls, set-up over 2 copies, and writes nothing.

    .venv/bin/python benchmarks/engine_speed.py [--quick] [--large]
"""

from __future__ import annotations

import argparse
import copy
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
SETUP_COPIES = 5
REPEATS = 3


def seconds(fn, x: np.ndarray, repeats: int | None = None) -> float:
    best = float("inf")
    for _ in range(repeats or REPEATS):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


def models(tmp: str, large: bool, quick: bool):
    if not quick:
        yield "digits example (2 layers, H=32, N=32)", EX / "digits_s4d_step.onnx", EX / "digits_calib.npz", "mean"
    sizes = [("paper size (4 layers, H=128, N=64)", 128, 32)] + (
        [("large (4 layers, H=128, N=128)", 128, 64)] if large else []
    )
    for label, H, M in sizes:
        path = pathlib.Path(tmp) / f"s4d_{H}_{M}.onnx"
        onnx.save(build_step_model(StepModelSpec(in_features=1, H=H, M=M, n_layers=4, n_out=10)), path)
        calib = np.random.default_rng(0).normal(size=(32, TOKENS, 1)).astype(np.float32)
        yield label, path, calib, "none"


def setup_ms(net, engine: str, x: np.ndarray) -> list[float]:
    """The first call's extra time on each of SETUP_COPIES fresh copies of `net` (the engines keep
    their set-up per graph object, so a copy, tensors and all, pays it again), in ms."""
    extra = []
    for _ in range(SETUP_COPIES):
        fresh = copy.deepcopy(net)
        first = seconds(lambda v: fresh.run(v, engine=engine), x, repeats=1)
        again = seconds(lambda v: fresh.run(v, engine=engine), x, repeats=1)
        extra.append((first - again) * 1e3)
    return extra


def measure(label: str, model_path, calib, readout: str, lava: bool) -> tuple[list[tuple], list[tuple]]:
    net = ssmc.compile(model_path, readout=readout, calibration=calib)
    onnx_model = load_model(model_path).model
    rows = []
    x_all = np.random.default_rng(1).normal(size=(max(BATCHES), TOKENS, 1)).astype(np.float32)
    if readout == "mean":  # the example's own test digits
        x_all = np.resize(np.load(EX / "digits_test.npz")["x"], (max(BATCHES), TOKENS, 1)).astype(np.float32)
    run = {
        "onnxruntime": lambda v: run_step_onnx(onnx_model, v),
        **{e: (lambda v, e=e: net.run(v, engine=e)) for e in ENGINES[1:]},
    }
    setups = []
    for engine in ENGINES[1:]:  # the first call on a net pays the engine's set-up
        extra = setup_ms(net, engine, x_all[:1, :1])
        setups.append((label, engine, float(np.median(extra)), min(extra), max(extra)))
        print(fmt_setup(setups[-1]), flush=True)
    for batch in BATCHES:
        x = x_all[:batch]
        rate = {e: batch * TOKENS / seconds(run[e], x) for e in ENGINES}
        for e in ENGINES:
            rows.append(
                (
                    label,
                    batch,
                    e,
                    rate[e],
                    rate[e] / rate["onnxruntime"],
                    rate[e] / rate["numpy"] if e == "microcode" else None,
                )
            )
            print(fmt(rows[-1]), flush=True)
    if lava:
        tps = TOKENS / seconds(lambda v: net.run(v, engine="lava"), x_all[:1], repeats=2)
        rows.append((label, 1, "lava (Lava CPU simulation, incl. start-up)", tps, tps / rows[0][3], None))
        print(fmt(rows[-1]), flush=True)
    return rows, setups


def fmt(row: tuple) -> str:
    label, batch, engine, tps, vs_ort, vs_numpy = row
    return f"| {label} | {batch} | {engine} | {tps:,.0f} | {vs_ort:.2f}x | " + (
        f"{vs_numpy:.2f}x |" if vs_numpy is not None else "- |"
    )


def fmt_setup(row: tuple) -> str:
    label, engine, median, lo, hi = row
    return f"| {label} | {engine} | {median:.0f} | {lo:.0f} .. {hi:.0f} |"


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main() -> None:
    global REPEATS, SETUP_COPIES
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--large", action="store_true", help="add the paper's large size (H=128, N=128; ~2 GB, about 2 min more)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="the paper-size model alone, best of 2 calls, set-up over 2 copies; writes no results file",
    )
    args = ap.parse_args()
    if args.quick:
        REPEATS, SETUP_COPIES = 2, 2
    start, load_before = time.perf_counter(), load_average()
    print(f"load average {load_before:.1f} on {os.cpu_count()} cores at the start", flush=True)
    rows, setups = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, path, calib, readout) in enumerate(models(tmp, args.large, args.quick)):
            model_rows, model_setups = measure(label, path, calib, readout, lava=i == 0 and not args.quick)
            rows += model_rows
            setups += model_setups
    load = load_average()
    print(f"load average {load:.1f} at the end; the benchmark took {time.perf_counter() - start:.0f} s", flush=True)
    if args.quick:
        return
    lines = [
        "# Engine speed, tokens per second",
        "",
        f"Command: `.venv/bin/python benchmarks/engine_speed.py{' --large' if args.large else ''}` "
        f"({TOKENS} tokens a sequence, best of {REPEATS} calls on the same net, one process; "
        f"{platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load_before:.1f} at the start and {load:.1f} at the end). The machine is shared and noisy: compare "
        "ratios within one run. onnxruntime runs the "
        "step-form ONNX token by token; float is ssmc's float reference; numpy the bit-exact fixed-point "
        "engine; microcode the neuron programs interpreted (same integers as numpy).",
        "",
        "| model | batch | engine | tokens/s | vs onnxruntime at this batch | microcode vs numpy |",
        "|---|---|---|---|---|---|",
    ]
    lines += [fmt(r) for r in rows]
    lines += [
        "",
        "## Set-up, paid once per net",
        "",
        f"The first call on a fresh copy of the net (1 sequence of 1 token) minus the same call again, over "
        f"{SETUP_COPIES} copies: the engine's preparation of the net (numpy: checks and synapse kernels; "
        "microcode: those plus decoding and checking the neuron programs). The IR verifier's capacity check "
        "is not part of it: a run does not depend on the placement's fit, which compile and ssmc.load check.",
        "",
        "| model | engine | set-up ms (median) | min .. max |",
        "|---|---|---|---|",
    ]
    lines += [fmt_setup(r) for r in setups]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engine_speed.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'engine_speed.md'}")


if __name__ == "__main__":
    main()
