"""The numpy fixed-point engine: the golden model of docs/fixed_point.md.

Runs a neuro-level graph (input, neurons, synapses, output) step by step,
vectorised over neurons and over a batch of sequences, in int64. Every other
engine (Lava processes, the microcode interpreter) must reproduce its integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ssmc.errors import InputDataError, IRError
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import with_defaults

ACC_BITS = 32


def sat(v: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """Clip to the signed `bits` range; also return how many values were clipped."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    clipped = int(np.count_nonzero((v < lo) | (v > hi)))
    return (np.clip(v, lo, hi) if clipped else v), clipped


def shr(v: np.ndarray, s: int) -> np.ndarray:
    """Flooring arithmetic shift right by s (left shift for negative s)."""
    return v >> s if s >= 0 else v << -s


def rshr(v: np.ndarray, s: int) -> np.ndarray:
    """Shift right by s >= 0 rounding to nearest, ties up."""
    return (v + (1 << (s - 1))) >> s if s > 0 else v


@dataclass
class EngineResult:
    outputs: dict[str, np.ndarray]  # output name -> decoded float64 [batch, tokens, size]
    raw: dict[str, np.ndarray]  # output name -> integer messages [batch, tokens, size]
    saturation: dict[str, dict[str, int]]  # group -> quantity -> clipped values
    sparsity: dict[str, float]  # group -> fraction of zero messages over the steps that carry tokens
    steps: int
    trace: dict[str, np.ndarray] | None = None  # group -> messages [batch, steps, size]; "<group>.state" too


@dataclass
class _Group:
    op: Op
    attrs: dict
    synapses: list[Op]
    state: np.ndarray | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"accumulator": 0, "state": 0, "message": 0})
    zeros: int = 0
    total: int = 0


def _check(graph: Graph, x: np.ndarray) -> np.ndarray:
    for op in graph.ops():
        if op.kind not in ("input", "neurons", "synapses", "output"):
            raise IRError(f"%{op.name} ({op.kind}): the numpy engine runs the neuro-level IR; "
                          "run the fixed-point passes (assign-bitwidths) first")
    inputs = graph.inputs()
    if len(inputs) != 1:
        raise IRError(f"the numpy engine runs graphs with one input, this one has {len(inputs)}")
    size = inputs[0].shape[0]
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != size:
        raise InputDataError(f"input must have shape [batch, time, {size}], got {list(x.shape)}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputDataError(f"input must be real numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise InputDataError("input contains NaN or infinite values")
    return x.astype(np.float64)


def _weights(syn: Op, pre: _Group) -> np.ndarray:
    """W^T as float64 when every dot product is exact in float64 (BLAS speed), else int64.

    |w| <= 128, |m| <= 2**(msg_bits-1): a sum over n inputs stays below 2**53, where
    float64 represents every integer, while 128 * 2**(msg_bits-1) * n < 2**53.
    """
    w = syn.params["weight"].T
    bound = 128 * 2 ** (pre.attrs["msg_bits"] - 1) * max(w.shape[0], 1)
    return w.astype(np.float64) if bound < 2 ** 53 else w.astype(np.int64)


def _dot(m: np.ndarray, w: np.ndarray) -> np.ndarray:
    if w.dtype == np.float64:
        return (m.astype(np.float64) @ w).astype(np.int64)  # exact: see _weights
    return m @ w


def run_numpy(graph: Graph, x: np.ndarray, trace: bool = False) -> EngineResult:
    """Run x [batch, tokens, features] through the integer network; see EngineResult."""
    x = _check(graph, x)
    batch, tokens, _ = x.shape
    order = graph.ops()
    groups: dict[str, _Group] = {}
    for op in order:
        if op.kind == "neurons":
            attrs = with_defaults(op)
            syn = [graph.op(s) for s in op.inputs] if attrs["kind"] != "source" else []
            groups[op.name] = _Group(op, attrs, syn)
    max_depth = max((g.attrs["depth"] for g in groups.values()), default=0)
    max_delay = max((s.attrs.get("delay", 1) for s in graph.ops_of_kind("synapses")), default=1)
    steps = tokens + max_depth
    # history[g][d - 1] holds g's messages from d steps ago (ring of max_delay entries, newest first).
    history = {name: [np.zeros((batch, g.attrs["size"]), np.int64) for _ in range(max_delay)]
               for name, g in groups.items()}
    weights = {s.name: _weights(s, groups[s.inputs[0]]) for s in graph.ops_of_kind("synapses")}
    for g in groups.values():
        if g.attrs["kind"] in ("cpx", "integrator"):
            g.state = np.zeros((batch, g.attrs["size"]), np.int64)
    traces: dict[str, list[np.ndarray]] = {}
    read = {out.inputs[0] for out in graph.outputs()}
    readouts: dict[str, list[np.ndarray]] = {name: [] for name in read}
    for t in range(steps):
        new: dict[str, np.ndarray] = {}
        for name, g in groups.items():
            new[name] = _update(g, t, x, tokens, history, weights)
            if name in read:
                readouts[name].append(new[name])
            if trace:
                traces.setdefault(name, []).append(new[name])
                if g.state is not None:
                    traces.setdefault(f"{name}.state", []).append(g.state.copy())
        for name, m in new.items():
            history[name].insert(0, m)
            history[name].pop()
            g = groups[name]
            if g.attrs["depth"] <= t < g.attrs["depth"] + tokens:  # the steps that carry tokens
                g.zeros += int(np.count_nonzero(m == 0))
                g.total += m.size
    return _results(graph, groups, readouts, traces if trace else None, steps, tokens)


def _update(g: _Group, t: int, x: np.ndarray, tokens: int, history, weights) -> np.ndarray:
    a = g.attrs
    kind = a["kind"]
    if t < a["depth"]:  # idle until the first token arrives: no bias, no state change, no message
        return np.zeros((x.shape[0], a["size"]), np.int64)
    if kind == "source":
        xt = x[:, t, :] if t < tokens else np.zeros_like(x[:, 0, :])
        m, n = sat(np.floor(xt * 2.0 ** a["frac"] + 0.5).astype(np.int64), a["msg_bits"])
        g.counts["message"] += n
        return m
    acc = np.zeros((x.shape[0], a["size"]), np.int64)
    for syn in g.synapses:
        pre = history[syn.inputs[0]][syn.attrs.get("delay", 1) - 1]
        out, n = sat(shr(_dot(pre, weights[syn.name]), -syn.attrs.get("weight_exp", 0)), ACC_BITS)
        g.counts["accumulator"] += n
        acc += out
    if "bias" in g.op.params:
        acc += g.op.params["bias"]
    acc, n = sat(acc, ACC_BITS)
    g.counts["accumulator"] += n
    if kind == "relay":
        value = acc
    elif kind == "relu":
        value = np.maximum(acc, 0)
    elif kind == "cpx":
        f = a["coef_bits"] - 1
        c_re, c_im = g.op.params["c_re"], g.op.params["c_im"]
        xr, xi = g.state[:, 0::2], g.state[:, 1::2]
        nr, n1 = sat(rshr(c_re * xr - c_im * xi, f) + acc[:, 0::2], a["state_bits"])
        ni, n2 = sat(rshr(c_re * xi + c_im * xr, f) + acc[:, 1::2], a["state_bits"])
        g.counts["state"] += n1 + n2
        # A new array, never an in-place update: messages in the delay buffers may share its memory.
        g.state = np.empty_like(g.state)
        g.state[:, 0::2], g.state[:, 1::2] = nr, ni
        value = rshr(g.state, a["out_shift"])
    elif kind == "integrator":
        g.state, n = sat(g.state + acc, a["state_bits"])
        g.counts["state"] += n
        value = rshr(g.state, a["out_shift"])
    else:
        raise IRError(f"%{g.op.name}: unknown neuron kind {kind!r}")
    m, n = sat(value, a["msg_bits"])
    g.counts["message"] += n
    return m


def _results(graph: Graph, groups, readouts, traces, steps: int, tokens: int) -> EngineResult:
    outputs, raw = {}, {}
    for out in graph.outputs():
        g = groups[out.inputs[0]]
        depth = g.attrs["depth"]
        # Token k of a group at depth D is its message at step k + D.
        msgs = np.stack(readouts[out.inputs[0]][depth:depth + tokens], axis=1)
        value = msgs / 2.0 ** g.attrs["frac"]
        if g.attrs["decode"] == "mean":
            value = value / np.arange(1, tokens + 1)[None, :, None]
        outputs[out.name], raw[out.name] = value, msgs
    return EngineResult(
        outputs=outputs, raw=raw, steps=steps,
        saturation={name: dict(g.counts) for name, g in groups.items()},
        sparsity={name: g.zeros / g.total if g.total else 0.0 for name, g in groups.items()},
        trace={name: np.stack(ms, axis=1) for name, ms in traces.items()} if traces is not None else None)
