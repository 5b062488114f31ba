"""Mapping quality: CP-SAT against greedy packing, METIS and a naive index-order mapping, in one run.

For each model it partitions with every method under the same target and
capacities (ssmc/targets/loihi2.json), places the cores, and prints side by
side: cores used, inter-core messages per step, hop-weighted traffic after
placement (and for greedy also "placed in core-index order", what a user gets
by filling cores one after another), the CP-SAT status, proven bound and gap,
and wall time. Traffic is counted at neuron level by ssmc.mapping.usage (one
message per sender and destination core, times the sender's message rate).

Models: the shipped digits example (rates measured on its calibration set),
synthetic paper-size S4D stacks (4 layers, H=128, N=64, and the paper's large
size N=128) with residuals and layers of different message rates (dense,
sigma-delta at 0.3 and 0.5 messages per step), and the core-count
comparison against the seed paper (31 and 111 cores). `--scale` adds a
multi-chip model of about one million neurons (hierarchical formulation).

    .venv/bin/python benchmarks/partition_quality.py [--time-limit 20] [--scale]

Writes benchmarks/results/partition_quality.md and .json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ssmc  # noqa: E402
from ssmc.mapping.layout import layout  # noqa: E402
from ssmc.mapping.mapper import map_network  # noqa: E402
from ssmc.mapping.netlist import build_netlist  # noqa: E402
from ssmc.mapping.usage import traffic  # noqa: E402
from ssmc.targets import load_target  # noqa: E402
from tests.builders.neuro_models import parameters, s4d_stack  # noqa: E402

OUT = ROOT / "benchmarks" / "results"
EX = ROOT / "examples" / "digits"
METHODS = ("cpsat", "greedy", "metis", "index")
RATES = (1.0, 0.3, 1.0, 0.5)  # per layer: dense, sigma-delta, dense, sigma-delta
# The seed paper's own density: both of its models put ~530-590 compartments (~270-300 complex neurons) on a core
# (small: 4 x 2*64*32 = 16,384 compartments on 31 cores; large: 4 x 2*128*64 = 65,536 on 111). One cap for both.
PAPER_DENSITY = 576


def placed(net, core_of, target, time_limit):
    used, logical = np.unique(core_of, return_inverse=True)
    t = traffic(net, logical, len(used), target, hop_matrix=np.zeros((len(used), len(used))))
    slot = layout(t.matrix, target, time_limit)
    return slot[logical]


def evaluate(name, graph, target, time_limit, methods=METHODS):
    net = build_netlist(graph)
    rows = []
    for m in methods:
        start = time.perf_counter()
        r = map_network(net, target, m, time_limit=time_limit, seed=0)
        part_s = time.perf_counter() - start
        t0 = traffic(net, r.core_of, int(r.core_of.max()) + 1, target)
        start = time.perf_counter()
        core_p = placed(net, r.core_of, target, 10.0)
        place_s = time.perf_counter() - start
        tp = traffic(net, core_p, int(core_p.max()) + 1, target)
        rows.append(
            {
                "model": name,
                "method": m,
                "cores": r.info["cores"],
                "inter_core": round(t0.inter_core, 1),
                "hops_index_order": round(t0.hop_weighted, 1),
                "hops_placed": round(tp.hop_weighted, 1),
                "inter_chip": round(tp.inter_chip, 1),
                "status": r.info.get("status", "-"),
                "bound": r.info.get("bound", r.info.get("within_chip_bound", "-")),
                "gap": r.info.get("gap", "-"),
                "partition_s": round(part_s, 2),
                "place_s": round(place_s, 2),
                "binding": r.info["binding_capacity"],
                "formulation": r.info.get("formulation", "-"),
            }
        )
        print(
            f"  {name:28s} {m:7s} cores {rows[-1]['cores']:4d}  inter-core {rows[-1]['inter_core']:9.1f}  "
            f"hops(index order) {rows[-1]['hops_index_order']:9.1f}  hops(placed) {rows[-1]['hops_placed']:9.1f}  "
            f"gap {rows[-1]['gap']}  {part_s + place_s:6.1f} s",
            flush=True,
        )
    return rows


def end_to_end(graph, board, time_limit):
    """What `ssmc compile` does for a big net after assign-bitwidths: the partition and place passes with the
    verifier after each, then `ssmc report` as text and HTML. Wall seconds of each step."""
    from ssmc.api import Net
    from ssmc.passes.base import run_pipeline
    from ssmc.passes.partition import Partition
    from ssmc.passes.place import Place
    from ssmc.report import build_report
    from ssmc.report.render import to_text, write_html

    times = {}
    start = time.perf_counter()
    placed_graph, _ = run_pipeline(
        graph, [Partition(time_limit=time_limit, board=board, rate_sequences=0), Place()], verify_each=True
    )
    times["partition + place passes, verified"] = time.perf_counter() - start
    start = time.perf_counter()
    rep = build_report(Net(graph=placed_graph, source={}, pipeline="", report={}))
    text = to_text(rep)
    times["report (text)"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        files = write_html(rep, os.path.join(tmp, "report.html"))
        times["report (HTML, 3 images)"] = time.perf_counter() - start
    print(
        "scale end to end: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
        + f" (report {len(text.splitlines())} lines, {len(files)} files)"
    )
    return {k: round(v, 1) for k, v in times.items()}


def verdicts(rows):
    out = []
    by = {(r["model"], r["method"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        cp = by.get((model, "cpsat"))
        if cp is None:
            continue
        for m in METHODS[1:]:
            b = by.get((model, m))
            if b is None:
                continue
            for key in ("inter_core", "hops_placed"):
                if cp[key] > b[key] + 1e-9:
                    out.append(f"{model}: CP-SAT's {key} {cp[key]} is worse than {m}'s {b[key]}")
        g = by.get((model, "greedy"))
        if g and g["hops_index_order"] > 0:
            ratio = cp["hops_placed"] / g["hops_index_order"]
            out.append(
                f"{model}: CP-SAT placed / greedy in core-index order, hop-weighted = {ratio:.2f} "
                f"(target <= 0.70: {'met' if ratio <= 0.7 else 'NOT met'})"
            )
    return out


def core_counts(target):
    """Cores our capacities need for the seed paper's model sizes (greedy and CP-SAT agree on counts)."""
    rows = []
    for label, H, M, paper in (
        ("small (67k params)", 64, 32, 31),
        ("paper-size (H=128, N=64)", 128, 32, None),
        ("large (265k params)", 128, 64, 111),
    ):
        g = s4d_stack(H, M, 4, rates=RATES, seed=1)
        net = build_netlist(g)
        r = map_network(net, target, "greedy")
        spread = map_network(net, load_target(chips=2), "greedy", max_neurons_per_core=PAPER_DENSITY)
        rows.append(
            {
                "model": label,
                "H": H,
                "N": 2 * M,
                "params": parameters(H, M, 4),
                "cores": r.info["cores"],
                "lower_bound": r.info["lower_bound_cores"],
                "binding": r.info["binding_capacity"],
                "paper_cores": paper,
                "ratio": round(r.info["cores"] / paper, 2) if paper else None,
                "cores_at_paper_density": spread.info["cores"],
                "ratio_at_paper_density": round(spread.info["cores"] / paper, 2) if paper else None,
            }
        )
        print(
            f"  {label:26s} params {rows[-1]['params']:7d}  cores {rows[-1]['cores']:4d} (bound "
            f"{rows[-1]['lower_bound']}, binding {rows[-1]['binding']})  paper {paper}  ratio {rows[-1]['ratio']}; "
            f"with --max-neurons-per-core {PAPER_DENSITY}: {spread.info['cores']} cores, ratio "
            f"{rows[-1]['ratio_at_paper_density']}"
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time-limit", type=float, default=20.0, help="CP-SAT budget per model (deterministic units)")
    ap.add_argument("--scale", action="store_true", help="also the ~1M-neuron multi-chip model")
    ap.add_argument("--scale-time-limit", type=float, default=10.0, help="CP-SAT budget for the scale model")
    args = ap.parse_args()
    logging.disable(logging.INFO)
    target = load_target()
    print("core counts against the seed paper (4 S4D layers):")
    counts = core_counts(target)
    rows = []
    print("mapping quality:")
    ex = ssmc.compile(
        EX / "digits_s4d_step.onnx",
        readout="mean",
        calibration=EX / "digits_calib.npz",
        passes="canonicalize,discretize,rescale-states,fuse-complex-pairs,fold-linear,freeze-norms,"
        "assign-bitwidths,partition{method=greedy}",
    )
    rows += evaluate("digits example", ex.graph, target, args.time_limit)
    rows += evaluate("paper-size H=128 N=64", s4d_stack(128, 32, 4, rates=RATES, seed=1), target, args.time_limit)
    rows += evaluate("large H=128 N=128", s4d_stack(128, 64, 4, rates=RATES, seed=2), target, args.time_limit)
    scale, scale_steps = [], {}
    if args.scale:
        big = load_target(board="kapoho-point")
        g = s4d_stack(128, 128, 32, rates=RATES * 8, seed=3)
        n = sum(int(op.attrs["size"]) for op in g.ops_of_kind("neurons"))
        print(f"scale: {n} neurons on {big.board} ({big.chips} chips)")
        start = time.perf_counter()
        scale = evaluate(f"scale {n // 1000}k neurons", g, big, args.scale_time_limit, methods=("cpsat", "greedy"))
        print(f"scale: both methods with netlists, partition and place in {time.perf_counter() - start:.0f} s")
        scale_steps = end_to_end(g, "kapoho-point", args.scale_time_limit)
    notes = verdicts(rows + scale)
    for line in notes:
        print(line)
    OUT.mkdir(exist_ok=True)
    (OUT / "partition_quality.json").write_text(
        json.dumps(
            {"core_counts": counts, "rows": rows, "scale": scale, "scale_end_to_end_s": scale_steps, "verdicts": notes},
            indent=1,
        )
        + "\n"
    )
    write_md(counts, rows, scale, notes, args, scale_steps)


NOTES = """## Notes

- **What reaches 0.7x on the paper-size model.** Three changes to CP-SAT's side only (capacities, metric and
  baselines unchanged): (1) its objective counts hops per destination core, as the hop-weighted traffic does
  (it counted them once per destination router); (2) it assumes a compact router geometry (routers in 2-row
  bands, so four routers form a 2 x 2 square, not a row of four); (3) its hint (the better of greedy and METIS)
  is first improved by single-block moves on that objective. Each alone, measured at `--time-limit 30`:
  (2) 624 -> 574 placed hops (0.71x); (1)+(2) from the greedy hint 646; all three 480 (0.60x). The exact
  placement (a CP-SAT quadratic assignment of the 13 cores onto routers) gives the same cost as place's
  annealing for the greedy and METIS partitions (659, 631): the gain is in the partition, not the placement.
- **Where CP-SAT does not reach 0.7x.** The large model (21 cores) improves from 0.80x to 0.76x. Its gap stays
  ~0.93 (the bound is the LP relaxation's, far below any packing), so nobody knows whether 0.7x exists there;
  the gain there is the move search's: CP-SAT ended above its hint within the budget and kept it. At 1M neurons
  (hierarchical windows, hinted with greedy; no move search there) see the scale row.
- **Why the residue is hard.** Memory binds, so each S4D layer (8k-16k compartments at 24 B) spans 2-5 cores.
  Every layer's residual relay must reach all of the next layer's cores and the dense mixing layer gathers from
  all of them: that traffic crosses cores under any partition.
- **Time.** `time-limit` 30 is 10 deterministic units; wall time depends on the machine's load (the partition
  s column). The 1M-neuron run (hierarchical: chips by greedy runs, then CP-SAT per 16-core window with one
  worker on a deterministic budget, then place) partitions and places in well under 2 minutes (the end-to-end
  line above: the passes themselves, with the verifier, and the report), the same cores under any load.
- **Index order** ignores the channel structure (a channel's modes and its summing neuron land on different
  cores): 10-30x the inter-core traffic of the structured methods.
"""


def write_md(counts, rows, scale, notes, args, scale_steps):
    lines = [
        "# Partition quality",
        "",
        "Written by `benchmarks/partition_quality.py"
        + (" --scale" if args.scale else "")
        + f"` (CP-SAT `time-limit` {args.time_limit}, i.e. "
        f"{args.time_limit / 3:.1f} deterministic units; scale model {args.scale_time_limit}).",
        "Traffic in messages per step (sender x destination core, times the sender's message rate); "
        "hop-weighted = messages x router hops, a chip-to-chip link counting "
        "`chip_link_cost` hops (assumed 8). Times are wall seconds on the 2-core dev machine, shared "
        f"(load average {os.getloadavg()[0]:.1f} when this was written).",
        "",
        "## Cores against the seed paper (31 / 111 cores, third-party reading)",
        "",
        "| model | H | N | params | cores (ours) | capacity bound | binding capacity | paper | ours / paper | "
        f"cores at --max-neurons-per-core {PAPER_DENSITY} | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in counts:
        lines.append(
            f"| {c['model']} | {c['H']} | {c['N']} | {c['params']} | {c['cores']} | {c['lower_bound']} | "
            f"{c['binding']} | {c['paper_cores'] or '-'} | {c['ratio'] or '-'} | "
            f"{c['cores_at_paper_density']} | {c['ratio_at_paper_density'] or '-'} |"
        )
    lines += [
        "",
        "## Mapping quality",
        "",
        "| model | method | cores | inter-core | hop-weighted, core-index order | hop-weighted, placed | "
        "inter-chip | CP-SAT status | bound | gap | partition s | place s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows + scale:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['cores']} | {r['inter_core']} | {r['hops_index_order']} | "
            f"{r['hops_placed']} | {r['inter_chip']} | {r['status']} | {r['bound']} | {r['gap']} | "
            f"{r['partition_s']} | {r['place_s']} |"
        )
    if scale_steps:
        lines += [
            "",
            "Scale model end to end, as `ssmc compile` and `ssmc report` run it (wall seconds): "
            + ", ".join(f"{k} {v} s" for k, v in scale_steps.items())
            + ".",
        ]
    lines += ["", "## Verdicts", ""] + [f"- {n}" for n in notes] + ["", NOTES]
    (OUT / "partition_quality.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
