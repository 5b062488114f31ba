"""The reference implementation of docs/fixed_point.md: the contract, one neuron at a time.

A slow, readable transcription of the contract in Python ints: one function per
neuron kind and per synapse rule, each following the section of
docs/fixed_point.md named in its docstring, one sequence and one step at a
time, with no vectorisation and no float shortcuts. It shares nothing with the
fast engines but the contract's helpers (`shr`, `rshr`, `ACC_BITS`, in
ssmc/ir/fixed_point.py) and the result type, so the numpy engine, the
microcode interpreter and the Lava process models are all tested against it:
they must return its integers, saturation counts and sparsity exactly.

It is slow (a microsecond or two per non-zero weight, step and sequence): for
tests and for checking a few sequences (`ssmc run --engine reference`).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ssmc.data import check_sequences
from ssmc.errors import IRError
from ssmc.ir.fixed_point import (
    ACC_BITS,
    SAT_QUANTITIES,
    check_neuro_graph,
    decode_output,
    refuse_oversized_run,
    rshr,
    shr,
)
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import with_defaults
from ssmc.runtime.numpy_engine import EngineResult

_PY_INT_BYTES = 40  # a Python int in a list: the object and its pointer (for the run-size check)


class _Counts:
    """A group's clip counts per quantity ("Integers and helpers": every clip that changes a value counts)."""

    def __init__(self) -> None:
        self.n = dict.fromkeys(SAT_QUANTITIES, 0)

    def sat(self, v: int, bits: int, quantity: str) -> int:
        """sat(v, bits), counted under `quantity` when it changes v. (fixed_point.sat is the same clip on
        numpy values: on one Python int at a time it is 10 times slower, and it overflows past int64.)"""
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        out = lo if v < lo else hi if v > hi else v
        self.n[quantity] += out != v
        return out


# -- synapse groups ("Synapse group", and "Sigma-delta messages" for a sigma synapse) ---------------
def synapse_acc(terms: list[list[tuple[int, int]]], pre: list[int]) -> list[int]:
    """acc[post] = sum_pre w[post, pre] * m_pre (exact: Python ints); `terms` lists each post's non-zero (pre, w)."""
    return [sum(w * pre[j] for j, w in row) for row in terms]


def synapse_out(acc: list[int], weight_exp: int, counts: _Counts) -> list[int]:
    """out = sat(shr(acc, -weight_exp), acc_bits): a left shift for a positive exponent, a flooring right shift
    for a negative one. A sigma synapse passes its running sum as `acc`."""
    return [counts.sat(shr(v, -weight_exp), ACC_BITS, "accumulator") for v in acc]


def dendrite(outs: list[list[int]], bias: list[int], counts: _Counts) -> list[int]:
    """a = sat(sum_syn out_syn + bias, acc_bits) ("Neuron groups")."""
    return [counts.sat(sum(col) + b, ACC_BITS, "accumulator") for col, b in zip(zip(*outs), bias)]


# -- neuron groups, by kind ("Neuron groups": the table, then the lut, product and cpx paragraphs) ---
def source(x: list[float], frac: int, msg_bits: int, counts: _Counts) -> list[int]:
    """m = sat(floor(x * 2^frac + 1/2), msg_bits), exact for every float (Fraction arithmetic)."""
    return [counts.sat(math.floor(Fraction(v) * Fraction(2) ** frac + Fraction(1, 2)), msg_bits, "message") for v in x]


def relay(a: list[int]) -> list[int]:
    return list(a)


def relu(a: list[int]) -> list[int]:
    return [max(v, 0) for v in a]


def integrator(state: list[int], a: list[int], state_bits: int, counts: _Counts) -> list[int]:
    """s' = sat(s + a, state_bits); the group's value is rshr(s', out_shift)."""
    return [counts.sat(s + v, state_bits, "state") for s, v in zip(state, a)]


def cpx(
    state: list[int], a: list[int], c_re: list[int], c_im: list[int], coef_bits: int, state_bits: int, counts: _Counts
) -> list[int]:
    """Interleaved [re_0, im_0, re_1, ...], f = coef_bits - 1:
    x_re' = sat(rshr(c_re x_re - c_im x_im, f) + a_re, state_bits)
    x_im' = sat(rshr(c_re x_im + c_im x_re, f) + a_im, state_bits)"""
    f, new = coef_bits - 1, []
    for k, (cr, ci) in enumerate(zip(c_re, c_im)):
        xr, xi = state[2 * k], state[2 * k + 1]
        new.append(counts.sat(rshr(cr * xr - ci * xi, f) + a[2 * k], state_bits, "state"))
        new.append(counts.sat(rshr(cr * xi + ci * xr, f) + a[2 * k + 1], state_bits, "state"))
    return new


def lut(a: list[int], table: list[int], lut_shift: int, lut_lo: int, counts: _Counts) -> list[int]:
    """i = shr(a, lut_shift) - lut_lo; m = table[clip(i, 0, L - 1)], a clipped index counted as message saturation."""
    out = []
    for v in a:
        i = shr(v, lut_shift) - lut_lo
        j = min(max(i, 0), len(table) - 1)
        counts.n["message"] += i != j
        out.append(table[j])
    return out


def product(out_first: list[int], out_second: list[int], bias: list[int], out_shift: int, counts: _Counts) -> list[int]:
    """a0 = sat(out_first + bias, acc_bits), a1 = out_second; the value rshr(a0 * a1, out_shift)."""
    a0 = [counts.sat(v + b, ACC_BITS, "accumulator") if b else v for v, b in zip(out_first, bias)]
    return [rshr(p * q, out_shift) for p, q in zip(a0, out_second)]


def sigma_delta(y: list[int], last: list[int], delta: int, msg_bits: int, counts: _Counts) -> list[int]:
    """ "Sigma-delta messages": d = sat(y - last, msg_bits); m = d if |d| >= delta else 0; last += m (in place)."""
    out = []
    for i, v in enumerate(y):
        d = counts.sat(v - last[i], msg_bits, "message")
        m = d if abs(d) >= delta else 0
        last[i] += m
        out.append(m)
    return out


# -- the run ("Time") ------------------------------------------------------------------------------
class _Group:
    """One neuron group of one sequence: its attributes (defaults filled in) and run state."""

    def __init__(self, op: Op, counts: _Counts) -> None:
        self.op, self.a, self.counts = op, with_defaults(op), counts
        self.size = int(self.a["size"])
        self.bias = [int(b) for b in op.params["bias"]] if "bias" in op.params else [0] * self.size
        self.state = [0] * self.size  # cpx, integrator
        self.last = [0] * self.size  # sigma-delta senders: what the receivers hold


def _step(g: _Group, t: int, x_tokens, syn_out: dict[str, list[int]], tokens: int) -> list[int]:
    """The message of an awake group at step t (updating its state, `last` and counts)."""
    a, c = g.a, g.counts
    kind, msg_bits = a["kind"], int(a["msg_bits"])
    if kind == "source":  # token k at step k, zeros after the last token
        y = source(x_tokens[t], int(a["frac"]), msg_bits, c) if t < tokens else [0] * g.size
    elif kind == "product":
        first, second = (syn_out[s] for s in g.op.inputs)
        y = product(first, second, g.bias, int(a["out_shift"]), c)
    else:
        d = dendrite([syn_out[s] for s in g.op.inputs], g.bias, c)
        if kind == "relay":
            y = relay(d)
        elif kind == "relu":
            y = relu(d)
        elif kind == "lut":
            y = lut(d, [int(v) for v in g.op.params["table"]], int(a["lut_shift"]), int(a["lut_lo"]), c)
        elif kind == "integrator":
            g.state = integrator(g.state, d, int(a["state_bits"]), c)
            y = [rshr(s, int(a["out_shift"])) for s in g.state]
        elif kind == "cpx":
            g.state = cpx(
                g.state,
                d,
                [int(v) for v in g.op.params["c_re"]],
                [int(v) for v in g.op.params["c_im"]],
                int(a["coef_bits"]),
                int(a["state_bits"]),
                c,
            )
            y = [rshr(s, int(a["out_shift"])) for s in g.state]
        else:
            raise IRError(f"%{g.op.name}: unknown neuron kind {kind!r}")
    if kind not in ("source", "lut"):  # a source quantizes into msg_bits, a lut's table is inside them
        y = [c.sat(v, msg_bits, "message") for v in y]
    delta = int(a["delta"])
    return sigma_delta(y, g.last, delta, msg_bits, c) if delta else y


def _trace_arrays(groups: list[Op], delta: dict[str, int], batch: int, steps: int) -> dict[str, np.ndarray]:
    """Zeroed per-step traces: the state of each stateful group, `last` of each sigma-delta one."""
    traces = {}
    for op in groups:
        if with_defaults(op)["kind"] in ("cpx", "integrator"):
            traces[f"{op.name}.state"] = np.zeros((batch, steps, op.shape[0]), np.int64)
        if delta[op.name]:
            traces[f"{op.name}.last"] = np.zeros((batch, steps, op.shape[0]), np.int64)
    return traces


def _result(
    graph: Graph,
    read: dict[str, np.ndarray],
    counts: dict[str, _Counts],
    trace: dict[str, np.ndarray] | None,
    steps: int,
) -> EngineResult:
    """The EngineResult of a run, from each group's messages at the steps it is read."""
    outputs, raw = {}, {}
    for out in graph.outputs():
        grp = graph.op(out.inputs[0])
        a = with_defaults(grp)
        raw[out.name] = read[grp.name].copy()
        outputs[out.name] = decode_output(raw[out.name], int(a["frac"]), a["decode"])
    return EngineResult(
        outputs=outputs,
        raw=raw,
        saturation={name: dict(c.n) for name, c in counts.items()},
        sparsity={name: float(np.count_nonzero(r == 0) / r.size) if r.size else 0.0 for name, r in read.items()},
        trace=trace,
        steps=steps,
    )


def run_reference(graph: Graph, x: np.ndarray, trace: bool = False) -> EngineResult:
    """Run x [batch, tokens, features] through the integer network by the contract, one sequence, step
    and neuron at a time; the same EngineResult (integers, counts, sparsity, traces) as run_numpy."""
    check_neuro_graph(graph, "reference")
    x = check_sequences(x, graph.inputs()[0].shape[0])
    batch, tokens, _ = x.shape
    groups = [op for op in graph.ops() if op.kind == "neurons"]
    syns = graph.ops_of_kind("synapses")
    depth = {op.name: int(with_defaults(op)["depth"]) for op in groups}
    steps = tokens + max(depth.values(), default=0)
    sizes = sum(op.shape[0] for op in groups)
    # int64 messages of every step (and states, `last` with a trace), and one sequence's sent messages as
    # Python ints at a time (counted per sequence: a little over, never under)
    refuse_oversized_run(
        "reference engine",
        batch,
        tokens,
        (8 * (3 if trace else 1) + _PY_INT_BYTES) * steps * sizes
        + _PY_INT_BYTES * sum(len(s.params["weight"][0]) + 2 * s.shape[0] for s in syns),
        trace,
    )
    # each post's non-zero (pre, w): zero weights add nothing, and skipping them keeps large nets quick
    terms = {s.name: [[(j, int(w)) for j, w in enumerate(row) if w] for row in s.params["weight"]] for s in syns}
    counts = {op.name: _Counts() for op in groups}
    delta = {op.name: int(with_defaults(op)["delta"]) for op in groups}
    delay = {s.name: int(with_defaults(s)["delay"]) for s in syns}
    weight_exp = {s.name: int(with_defaults(s)["weight_exp"]) for s in syns}
    consumers = {s.name: [c.name for c in graph.consumers(s.name)] for s in syns}
    msgs = {op.name: np.zeros((batch, steps, op.shape[0]), np.int64) for op in groups}
    traces = _trace_arrays(groups, delta, batch, steps) if trace else {}
    for b in range(batch):
        run = {op.name: _Group(op, counts[op.name]) for op in groups}
        sigma = {s.name: [0] * s.shape[0] for s in syns}
        history: dict[str, list[list[int]]] = {op.name: [] for op in groups}  # messages sent so far
        x_tokens = [[float(v) for v in row] for row in x[b]]
        for t in range(steps):
            syn_out = {}
            for s in syns:
                pre, post, d = s.inputs[0], consumers[s.name], delay[s.name]
                # a sigma synapse sums every step; a dense one computes only while a group it feeds is awake
                if not delta[pre] and all(t < depth[p] for p in post):
                    continue
                m = history[pre][t - d] if t - d >= 0 else [0] * s.params["weight"].shape[1]  # nothing sent yet
                acc = synapse_acc(terms[s.name], m)
                if delta[pre]:
                    sigma[s.name] = [u + v for u, v in zip(sigma[s.name], acc)]
                    acc = sigma[s.name]
                clips = _Counts()
                syn_out[s.name] = synapse_out(acc, weight_exp[s.name], clips)
                for p in post:  # its clips count for each group it feeds that is awake (and so sums it)
                    if t >= depth[p]:
                        counts[p].n["accumulator"] += clips.n["accumulator"]
            for op in groups:  # "Time": a group is idle (emits 0, adds no bias, keeps state 0) before its depth
                g = run[op.name]
                m = _step(g, t, x_tokens, syn_out, tokens) if t >= depth[op.name] else [0] * g.size
                history[op.name].append(m)
                msgs[op.name][b, t] = m
                if trace and f"{op.name}.state" in traces:
                    traces[f"{op.name}.state"][b, t] = g.state
                if trace and f"{op.name}.last" in traces:
                    traces[f"{op.name}.last"][b, t] = g.last
    read = {op.name: msgs[op.name][:, depth[op.name] : depth[op.name] + tokens] for op in groups}
    return _result(graph, read, counts, {**msgs, **traces} if trace else None, steps)


def run_net(net, x: np.ndarray, trace: bool = False) -> EngineResult:
    """The engine entry point `ssmc.api` uses (FIXED_POINT_ENGINES["reference"])."""
    return run_reference(net.graph, x, trace=trace)
