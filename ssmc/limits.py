"""Resource limits: sizes ssmc refuses up front, with the numbers, instead of
running out of memory part-way.

Each limit has a default sized far above paper-scale S4D models (~275k
parameters, states of a few thousand elements) and an environment variable
that overrides it (a plain integer, bytes or elements):

    SSMC_MAX_MODEL_BYTES     the .onnx file                                 512 MiB
    SSMC_MAX_TENSOR_BYTES    any one tensor the model declares or infers    256 MiB
    SSMC_MAX_TOTAL_BYTES     all initializers and constants together          1 GiB
    SSMC_MAX_STATE_ELEMENTS  one recurrent state, elements per sequence      2^20
    SSMC_MAX_WORK_BYTES      working memory of one computation: measuring     8 GiB
                             a recurrence, one engine run over a batch, or
                             measuring ranges over calibration data
    SSMC_MAX_NET_BYTES       a net.lava file, and all its entries unpacked    2 GiB
    SSMC_MAX_DATA_BYTES      an input, label or calibration file (.npy/.npz),  2 GiB
                             and each array it declares
    SSMC_MAX_LOOP_ITERATIONS iterations of Loop/Scan bodies, nested loops    2^16
                             multiplied (what folding or probing may run)
    SSMC_MAX_NODES           ONNX nodes in a model, subgraphs included        2^15

The variables are read at every check, so a library caller can set
`os.environ[...]` before a call; `check(..., limits=Limits(...))` takes an
explicit set.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ssmc.errors import ResourceLimitError

MiB = 1 << 20
GiB = 1 << 30

# Bounds on values, not sizes (no environment override). Beyond 1e10, folding a model's layers overflows
# float32 and the float reference overflows (calibration squares values in norms and sums them over tokens);
# no trained model or real data comes near.
MAX_ABS_WEIGHT = 1e10  # an ONNX initializer or constant, and a float tensor in a net.lava
MAX_ABS_INPUT = 1e10  # run inputs and calibration data


@dataclass(frozen=True)
class Limits:
    model_file_bytes: int = 512 * MiB
    tensor_bytes: int = 256 * MiB
    total_bytes: int = 1 * GiB
    state_elements: int = 1 << 20
    work_bytes: int = 8 * GiB
    loop_iterations: int = 1 << 16
    nodes: int = 1 << 15
    net_bytes: int = 2 * GiB
    data_bytes: int = 2 * GiB


ENV = {
    "model_file_bytes": "SSMC_MAX_MODEL_BYTES",
    "tensor_bytes": "SSMC_MAX_TENSOR_BYTES",
    "total_bytes": "SSMC_MAX_TOTAL_BYTES",
    "state_elements": "SSMC_MAX_STATE_ELEMENTS",
    "work_bytes": "SSMC_MAX_WORK_BYTES",
    "loop_iterations": "SSMC_MAX_LOOP_ITERATIONS",
    "nodes": "SSMC_MAX_NODES",
    "net_bytes": "SSMC_MAX_NET_BYTES",
    "data_bytes": "SSMC_MAX_DATA_BYTES",
}


def current() -> Limits:
    """The defaults with any SSMC_MAX_* environment overrides applied (read on every call)."""
    changes = {}
    for field, var in ENV.items():
        text = os.environ.get(var)
        if text is None or not text.strip():
            continue
        try:
            value = int(text.strip().replace("_", ""))
        except ValueError:
            value = -1
        if value <= 0:
            raise ResourceLimitError(f"{var}={text!r}: a limit must be a positive integer (bytes or elements)")
        changes[field] = value
    return dataclasses.replace(Limits(), **changes)


def size(n: float) -> str:
    """A byte count for messages: 3.2 GiB, 512 MiB, 12 KiB."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def check(field: str, needed: float, what: str, fix: str = "", limits: Limits | None = None) -> None:
    """Raise ResourceLimitError if `needed` is over the limit `field`; the message names both and the fix."""
    limit = getattr(limits or current(), field)
    if needed <= limit:
        return
    noun = {"loop_iterations": "iterations", "nodes": "nodes"}.get(field, "elements")
    unit = size if field.endswith("bytes") else (lambda v: f"{int(v):,} {noun}")
    raise ResourceLimitError(
        f"{what} needs {unit(needed)}, over the limit of {unit(limit)}"
        + (f"; {fix}" if fix else "")
        + f" (or raise {ENV[field]})"
    )
