"""The fixed-point contract of docs/fixed_point.md, shared by every engine and the passes.

One home for what the engines (the reference implementation, the golden model;
the numpy engine; the microcode engine), the Lava process models and the
passes must agree on bit for bit: the
accumulator width, the saturating clip and the shifts, how a source quantizes
its input tokens and how an output group's messages decode, the quantities a
clip is counted under, and the neuro-level graph an engine runs. It sits in
the IR layer so that the engines (runtime), the Lava backend and the passes
all import it from below.
"""

from __future__ import annotations

import numpy as np

from ssmc import limits
from ssmc.errors import IRError
from ssmc.ir.graph import Graph
from ssmc.ir.ops import with_defaults
from ssmc.ir.verify import verify

ACC_BITS = 32
NEURO_LEVEL_KINDS = ("input", "neurons", "synapses", "output")
SAT_QUANTITIES = ("accumulator", "state", "message")


# -- the contract's helpers (work on numpy arrays and on Python ints) ---------------
def sat(v, bits: int):
    """Clip to the signed `bits` range [-2^(bits-1), 2^(bits-1) - 1]."""
    return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def shr(v, s: int):
    """floor(v / 2^s) for s >= 0 (numpy `>>`); v << -s for s < 0."""
    return v >> s if s >= 0 else v << -s


def rshr(v, s: int):
    """v / 2^s rounded to nearest, ties up: (v + 2^(s-1)) >> s for s > 0; v for s = 0."""
    if s < 0:
        raise ValueError(f"rshr needs a shift >= 0, got {s}")  # shifts come from the passes: a bug, not input
    return (v + (1 << (s - 1))) >> s if s > 0 else v


def sat_count(v: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """sat(v, bits) and how many values it changed."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if v.size == 0 or (v.min() >= lo and v.max() <= hi):  # the common case, checked cheaply
        return v, 0
    return np.clip(v, lo, hi), int(np.count_nonzero((v < lo) | (v > hi)))


# -- what an engine runs, and how much of it --------------------------------------------
def check_neuro_graph(graph: Graph, engine: str = "numpy") -> None:
    """Refuse a graph the fixed-point `engine` (named in the message: numpy, microcode, Lava, reference) cannot run."""
    order = graph.ops()  # one topological sort for all the checks below
    for op in order:
        if op.kind not in NEURO_LEVEL_KINDS:
            raise IRError(
                f"%{op.name} ({op.kind}): the {engine} engine runs the neuro-level IR "
                f"({', '.join(NEURO_LEVEL_KINDS)} ops); run the fixed-point passes first"
            )
    inputs = [op for op in order if op.kind == "input"]
    if len(inputs) != 1:
        raise IRError(f"the {engine} engine runs graphs with exactly one input op, this one has {len(inputs)}")
    verify(graph, capacities=False)  # a run's integers do not depend on the placement's fit
    # A group's depth is the sum of the delays on a path from the source, so no larger than all
    # delays together; a damaged depth beyond that would make the run loop for that many steps.
    total_delay = sum(int(with_defaults(op)["delay"]) for op in order if op.kind == "synapses")
    for op in order:
        srcs = [graph.op(s) for s in op.inputs]
        if op.kind == "synapses" and srcs[0].kind != "neurons":
            raise IRError(f"%{op.name} (synapses) must read a neurons group, reads %{srcs[0].name} ({srcs[0].kind})")
        if op.kind == "output" and srcs[0].kind != "neurons":
            raise IRError(f"%{op.name} (output) must read a neurons group, reads %{srcs[0].name} ({srcs[0].kind})")
        if op.kind == "neurons":
            want = "input" if op.attrs["kind"] == "source" else "synapses"
            bad = [s for s in srcs if s.kind != want]
            if bad:
                raise IRError(
                    f"%{op.name} (neurons, kind {op.attrs['kind']}) must read {want} ops only, "
                    f"reads %{bad[0].name} ({bad[0].kind})"
                )
            a = with_defaults(op)
            if a["depth"] < 0:
                raise IRError(f"%{op.name}: depth = {a['depth']} is negative")
            if a["depth"] > total_delay:
                raise IRError(
                    f"%{op.name}: depth = {a['depth']} is more than all synapse delays together "
                    f"({total_delay}); the net is damaged"
                )
            if a["kind"] in ("cpx", "integrator", "product") and a["out_shift"] < 0:
                raise IRError(f"%{op.name}: out_shift = {a['out_shift']} is negative; rshr shifts right only")


def refuse_oversized_run(engine: str, batch: int, tokens: int, per_sequence_bytes: int, trace: bool) -> None:
    """The work-memory limit (ssmc.limits) for a run of `batch` sequences, each needing `per_sequence_bytes`
    of an engine's buffers: refused with how many sequences would fit."""
    per_seq = max(int(per_sequence_bytes), 1)
    fit = max(limits.current().work_bytes // per_seq, 1)
    limits.check(
        "work_bytes",
        batch * per_seq,
        f"running {batch} sequences of {tokens} tokens on the {engine}"
        f"{' with traces' if trace else ''} ({limits.size(per_seq)} each)",
        fix=f"run at most {fit} sequences at a time (ssmc run --limit N, or split the input)",
    )


# -- the host side: input tokens in, output messages out -----------------------------------
def quantize_source(x: np.ndarray, frac: int, msg_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """sat(floor(x * 2^frac + 1/2), msg_bits) as int64, exact for every finite float64 x,
    and a boolean array marking the values the sat clipped."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.ldexp(np.asarray(x, np.float64), frac)  # exact (power-of-two scaling) unless it overflows
        r = np.floor(v)
        m = r + (v - r >= 0.5)  # v - r is exact; adding 0.5 to v first could round up wrongly
    lo, hi = -(1 << (msg_bits - 1)), (1 << (msg_bits - 1)) - 1
    clipped = (m < lo) | (m > hi)  # +-inf lands here too (v - r is NaN, so m = r = +-inf)
    return np.clip(m, lo, hi).astype(np.int64), clipped


def decode_output(msgs: np.ndarray, frac: int, decode: str) -> np.ndarray:
    """An output group's integer messages [batch, tokens, size] as the float values they stand for
    (x 2^-frac; "mean": divided by the token count so far). Every engine decodes with this."""
    value = np.ldexp(msgs.astype(np.float64), -int(frac))
    if decode == "mean":
        value = value / np.arange(1, msgs.shape[1] + 1, dtype=np.float64)[None, :, None]
    return value
