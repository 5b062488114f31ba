"""Every real-task model of benchmarks/real_tasks.py compiled with the default pipeline, its integers on the
microcode engine (8 test sequences) and on Lava's CPU simulator (1 sequence, 12 tokens) against the numpy
engine's: the bit-exactness half of issue #14's acceptance, for the shipped models themselves (the tests
check a sample of them). Prints one line per model and writes results/real_tasks_bitexact.md.

    .venv/bin/python benchmarks/real_tasks_bitexact.py [--no-lava]
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

import ssmc
from ssmc.api import compare

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import real_tasks  # noqa: E402  (the same model list as the accuracy table)

OUT = pathlib.Path(__file__).parent / "results" / "real_tasks_bitexact.md"


def main() -> int:
    lava = "--no-lava" not in sys.argv
    lines, mismatches, start = [], 0, time.perf_counter()
    for task, family, layout, model, test, calib in real_tasks.CASES:
        net = ssmc.compile(model, readout="mean", calibration=calib)
        x = np.load(test)["x"].astype(np.float64)[:8]
        checks = [("microcode, 8 sequences", compare(net, x, against="numpy", engine="microcode"))]
        if lava:
            checks.append(("Lava, 1 sequence x 12 tokens", compare(net, x[:1, :12], against="numpy", engine="lava")))
        mismatches += sum(not c.identical for _, c in checks)
        cells = [f"{'identical' if c.identical else f'MISMATCH ({c.differing_values} values)'}" for _, c in checks]
        lines.append(f"| {task} | {family} | {layout} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    head = [
        "# Real-task models: fixed-point engines against the numpy engine",
        "",
        f"Command: `.venv/bin/python benchmarks/real_tasks_bitexact.py` ({time.perf_counter() - start:.0f} s). "
        'Each model compiled with the default pipeline (`readout="mean"`, its calibration set); identical '
        "means the same output integers, saturation counts and message sparsity as the numpy engine.",
        "",
        f"**{len(lines)} models, {mismatches} mismatches.**",
        "",
        "| task | family | layout | microcode, 8 sequences |" + (" Lava, 1 sequence x 12 tokens |" if lava else ""),
        "|---|---|---|---|" + ("---|" if lava else ""),
    ]
    OUT.write_text("\n".join(head + lines) + "\n")
    print(f"{len(lines)} models, {mismatches} mismatches; wrote {OUT}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
