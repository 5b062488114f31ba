"""Fuzzing: damaged models and damaged net.lava files fail with ssmc's own error, never anything else.

Byte-level mutations (flips, overwrites, truncations, insertions, deletions) of a
small model and of a compiled net. Seeds and case counts are printed, so a
failure can be replayed with FUZZ_SEED=<seed>.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

import ssmc
from ssmc.backend_loihi.bundle import decode
from ssmc.errors import SsmcError
from ssmc.frontend.convert import convert
from ssmc.frontend.load import load_model_bytes
from tests.builders.onnx_models import StepModelSpec, build_step_model

SEED = int(os.environ.get("FUZZ_SEED", "20261123"))


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        i = rng.randrange(len(b)) if b else 0
        if kind == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and b:
            b[i] = rng.randrange(256)
        elif kind == 2:
            del b[rng.randrange(len(b) + 1) :]
        elif kind == 3:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif b:
            del b[i : i + rng.randint(1, 8)]
    return bytes(b)


def run_cases(data: bytes, n: int, target, label: str) -> dict:
    rng = random.Random(SEED)
    outcome = {"ok": 0, "refused": 0}
    for case in range(n):
        blob = mutate(data, rng)
        try:
            target(blob)
            outcome["ok"] += 1
        except SsmcError:
            outcome["refused"] += 1
        except Exception as e:  # anything else is a bug: report the case to replay it
            pytest.fail(f"{label} case {case} (FUZZ_SEED={SEED}): {type(e).__name__}: {e}")
    print(f"\n{label}: seed {SEED}, {n} cases, {outcome['ok']} still valid, {outcome['refused']} refused")
    return outcome


def test_mutated_models_are_imported_or_refused_cleanly():
    spec = StepModelSpec(in_features=1, H=2, M=1, n_layers=1, n_out=2, activation="relu", seed=3)
    data = build_step_model(spec).SerializeToString()

    def import_bytes(blob: bytes) -> None:
        convert(load_model_bytes(blob, name="fuzz.onnx").model, name="fuzz.onnx")

    outcome = run_cases(data, 3000, import_bytes, "onnx")
    assert outcome["refused"] > 0


def test_mutated_nets_are_loaded_or_refused_cleanly(tmp_path):
    spec = StepModelSpec(in_features=1, H=2, M=1, n_layers=1, n_out=2, activation="relu", seed=3)
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    net = ssmc.compile(path, calibration=np.random.default_rng(0).normal(size=(4, 8, 1)))
    net.save(tmp_path / "net.lava")
    data = (tmp_path / "net.lava").read_bytes()
    outcome = run_cases(data, 3000, lambda blob: decode(blob, name="fuzz.lava"), "net.lava")
    assert outcome["refused"] > 0
