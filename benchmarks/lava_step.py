"""The Lava engine's time step at the seed paper's size: every synapse group held dense (the backend
before it chose sparse processes) against sparse processes for the mostly-zero ones (now), side by side.

Models: 4 S4D layers, H=128, N=64, built with tests/builders and calibrated on 32 random sequences
of 64 tokens, as benchmarks/engine_speed.py builds its paper-size model, compiled twice: with dense
messages and with sigma-delta messages (`--sigma-delta 0.001`: the synapse groups behind sigma-delta
senders are ssmc's own saturating processes, not Lava's). Each variant runs one sequence of
`--tokens` tokens (batch 1) in Lava's CPU simulation (Loihi2SimCfg, fixed point) and is timed in
three parts: planning and instantiating the Lava processes (set-up), the first time step (Lava
compiles the network and starts one OS process per Lava process), and the remaining time steps (per
step: the rate that matters for long sequences). The variants alternate, `--repeats` times, best of
each part; every run's integers (outputs, saturation counts, sparsity) are checked against the
numpy engine.

"Dense everywhere" is the plan with `lava_net.SPARSE_DENSITY` set to 0 for the run: every exact
delay-1 group is then Lava's Dense and every other one ssmc's Synapses, both holding the whole
matrix (an S4D layer's B is [H*M, H] with one non-zero per row); "now" is Lava's Sparse and ssmc's
SparseSynapses (CSR) under 10% non-zero. Prints the table and the ratios, the load average before
and after, and writes benchmarks/results/lava_step.md. The machine is often shared and noisy:
compare the variants within one run. Lava's own simulator speed is not a target here; the number is
reported so that a change to the backend's processes can be judged. Compiling both models takes a
few minutes: `--cache DIR` keeps them (delete it after changing the compiler).

    .venv/bin/python benchmarks/lava_step.py [--tokens 4] [--repeats 2] [--cache build/lava_step]
"""

from __future__ import annotations

import argparse
import collections
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
import scipy.sparse  # noqa: E402

import ssmc  # noqa: E402
from ssmc.backend_loihi import lava_net  # noqa: E402
from ssmc.backend_loihi.lava_net import build_lava, plan_lava  # noqa: E402
from ssmc.runtime.lava_engine import LavaNetwork  # noqa: E402
from ssmc.runtime.numpy_engine import run_numpy  # noqa: E402
from tests.builders.onnx_models import StepModelSpec, build_step_model  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
VARIANTS = (("dense everywhere (before)", 0.0), ("sparse under 10% non-zero (now)", lava_net.SPARSE_DENSITY))


MODELS = (  # label, file name in --cache, compile options
    ("paper size, dense messages", "paper.lava", {}),
    ("paper size, sigma-delta messages (--sigma-delta 0.001)", "paper_sigma.lava", {"sigma_delta": 0.001}),
)


def paper_size_net(options: dict, cache: str | None, name: str):
    """The paper-size model compiled with `options` (loaded from / saved to the cache folder if given)."""
    if cache and (pathlib.Path(cache) / name).exists():
        return ssmc.load(pathlib.Path(cache) / name)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "s4d_128_32.onnx"
        onnx.save(build_step_model(StepModelSpec(in_features=1, H=128, M=32, n_layers=4, n_out=10)), path)
        calib = np.random.default_rng(0).normal(size=(32, 64, 1)).astype(np.float32)
        net = ssmc.compile(path, readout="none", calibration=calib, **options)
    if cache:
        pathlib.Path(cache).mkdir(parents=True, exist_ok=True)
        net.save(pathlib.Path(cache) / name)
    return net


def held_weights(spec) -> int:
    """Weight entries a synapse process holds: Sparse its non-zeros, Dense and DelayDense every entry."""
    w = spec.kwargs["weights"]
    return w.nnz if scipy.sparse.issparse(w) else w.size


def run_variant(graph, x: np.ndarray, density: float, want) -> dict:
    saved = lava_net.SPARSE_DENSITY
    lava_net.SPARSE_DENSITY = density  # read by the planner at each call
    try:
        began = time.perf_counter()
        plan = plan_lava(graph, x)
        network = LavaNetwork(graph, plan, build_lava(plan))
        setup = time.perf_counter() - began
        timings: dict = {}
        got = network.run(timings=timings)
    finally:
        lava_net.SPARSE_DENSITY = saved
    for name in want.raw:
        np.testing.assert_array_equal(got.raw[name], want.raw[name], err_msg=f"Lava {name} != numpy")
    assert got.saturation == want.saturation and got.sparsity == want.sparsity, "Lava counts != numpy"
    synapses = [p for p in plan.processes if p.group != p.name]
    return {
        "setup": setup,
        "start": timings["start"],
        "step": timings["steps"] / timings["num_steps"],
        "steps": plan.period * plan.batch,
        "classes": collections.Counter(p.cls for p in plan.processes),
        "weights": sum(held_weights(p) for p in synapses if "weights" in p.kwargs),
    }


def row(model: str, label: str, r: dict) -> str:
    classes = ", ".join(f"{n} {c}" for c, n in sorted(r["classes"].items()))
    return (
        f"| {model} | {label} | {sum(r['classes'].values())} ({classes}) | {r['weights']:,} | {r['setup']:.1f} | "
        f"{r['start']:.1f} | {1e3 * r['step']:.0f} |"
    )


def measure(model: str, net, x: np.ndarray, repeats: int) -> tuple[list[str], str]:
    """The table rows of both variants on `net` (best of `repeats` alternating runs) and the ratio line."""
    want = run_numpy(net.graph, x)
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for label, density in VARIANTS:
            r = run_variant(net.graph, x, density, want)
            print(row(model, label, r), flush=True)
            if label in best:
                r = {**r, **{k: min(r[k], best[label][k]) for k in ("setup", "start", "step")}}
            best[label] = r
    (before, b), (now, n) = ((label, best[label]) for label, _ in VARIANTS)
    ratio = (
        f"{model}: per step, now {b['step'] / n['step']:.2f}x as fast as Dense everywhere, holding "
        f"{b['weights'] / n['weights']:.0f}x fewer weight entries ({n['steps']} Lava time steps a run)"
    )
    print(ratio, flush=True)
    return [row(model, before, b), row(model, now, n)], ratio


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4, help="tokens of the one sequence (default 4)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each variant, alternating; best of each")
    ap.add_argument(
        "--cache", help="a folder: load the compiled nets from it if there, else compile and save them there"
    )
    args = ap.parse_args()
    start, load_before = time.perf_counter(), load_average()
    print(f"load average {load_before:.1f} on {os.cpu_count()} cores at the start", flush=True)
    x = np.random.default_rng(1).normal(size=(1, args.tokens, 1)).astype(np.float32)
    rows, ratios = [], []
    for model, name, options in MODELS:
        net = paper_size_net(options, args.cache, name)
        print(f"{model}: net ready after {time.perf_counter() - start:.0f} s", flush=True)
        model_rows, ratio = measure(model, net, x, args.repeats)
        rows += model_rows
        ratios.append(ratio)
    load = load_average()
    took = time.perf_counter() - start
    print(f"load average {load:.1f} at the end; the benchmark took {took:.0f} s", flush=True)
    lines = [
        "# Lava engine time step at the paper's size",
        "",
        f"Command: `.venv/bin/python benchmarks/lava_step.py --tokens {args.tokens} --repeats {args.repeats}` "
        f"(4 S4D layers, H=128, N=64, from tests/builders, compiled with dense and with sigma-delta messages; "
        f"one sequence of {args.tokens} tokens; {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load_before:.1f} at the start and {load:.1f} at the end; {took:.0f} s). Lava's CPU simulation "
        f"(Loihi2SimCfg, fixed point); best of {args.repeats} alternating runs per variant; every run's outputs, "
        "saturation counts and sparsity equal the numpy engine's. Dense everywhere: every synapse group held "
        "dense (Lava's Dense where exact, else ssmc's Synapses), as before the backend chose sparse processes; "
        "now: Lava's Sparse and ssmc's SparseSynapses (CSR) for groups under 10% non-zero. Set-up: planning "
        "and instantiating the processes; start: the first time step (Lava compiles the network and starts one "
        "OS process per Lava process); per step: the other steps. Weights held: the weight entries of the "
        "synapse processes (a sparse one holds its non-zeros, a dense one every entry; DelayDense also holds "
        "as many delays). The machine is shared and noisy: compare the variants within one run.",
        "",
        "| model | synapse processes | Lava processes | weights held | set-up s | start s | per step ms |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *[f"- {r}" for r in ratios],
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lava_step.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'lava_step.md'}")


if __name__ == "__main__":
    main()
