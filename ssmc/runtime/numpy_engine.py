"""The numpy fixed-point engine: the golden model of docs/fixed_point.md.

Runs a neuro-level graph (`input`, `neurons`, `synapses`, `output`) step by
step in int64, vectorised over a batch of sequences and over the neurons of a
group. Every other engine (Lava process models, the microcode interpreter)
must reproduce its integers at every step.

One step `t`:

1. every synapse group computes `out = sat(shr(W @ m_pre[t - delay], -weight_exp), 32)`
   from the messages its pre group emitted `delay >= 1` steps ago (kept in a
   ring buffer per group, zero before step 0 and while the pre group was idle);
2. every neuron group at or past its depth sums its synapse outputs and bias
   into its dendritic input and updates (source, relay, relu, cpx, integrator,
   lut; a product group multiplies its two synapse outputs instead);
   a group before its depth emits 0, adds no bias, keeps its state at 0;
   a sigma-delta group (delta >= 1) sends only changes of at least delta,
   and a synapse group reading it sums W @ m over time before its shift;
3. the new messages go into the ring buffers.

Token `k` is emitted by the source at step `k`; the engine runs
`tokens + max depth` steps and reads an output's token `k` at step
`k + depth`. Sparsity counts the zero messages of a group over the steps
that carry tokens. Every clip that changes a value is counted per group under
"accumulator" (synapse outputs and the dendritic sum), "state" or "message".

Speed: wherever it is provably exact, a group carries its messages and state
(and a synapse its accumulator) as float64 holding exact integers -- every
intermediate of its update stays below 2^53 in magnitude, see `_float_group`
and `_prepare_synapses` -- so BLAS does the dot products and no step converts
between int64 and float64. Everything else runs the int64 path. Both paths
produce the same integers; traces and raw outputs are int64. A float cpx group
updates its interleaved state as a complex128 view (one complex multiply), in
blocks of sequences that stay in cache, and in place in its ring slot when its
message is its state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ssmc.data import check_sequences
from ssmc.errors import IRError
from ssmc.ir.fixed_point import (ACC_BITS, NEURO_LEVEL_KINDS, SAT_QUANTITIES, check_neuro_graph,  # noqa: F401
                                 decode_output, quantize_source, refuse_oversized_run, rshr, sat, shr)
from ssmc.ir.fixed_point import sat_count as _sat_count
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import with_defaults

STATEFUL_KINDS = ("cpx", "integrator")
_EXACT_FLOAT = 1 << 53  # float64 represents every integer of smaller magnitude


@dataclass
class EngineResult:
    outputs: dict[str, np.ndarray]
    """output op name -> decoded float64 [batch, tokens, size], token k read at step k + depth."""
    raw: dict[str, np.ndarray]
    """output op name -> the integer messages [batch, tokens, size] (int64) behind `outputs`."""
    saturation: dict[str, dict[str, int]]
    """neuron group -> {"accumulator", "state", "message"} -> number of values a sat clipped."""
    sparsity: dict[str, float]
    """neuron group -> fraction of zero messages over the steps that carry tokens
    (depth <= t < depth + tokens), all sequences and all its neurons."""
    trace: dict[str, np.ndarray] | None
    """With trace=True: group -> messages [batch, steps, size] at every step, and
    "<group>.state" -> cpx / integrator state [batch, steps, size] after each step."""
    steps: int
    """Steps run: tokens + the largest group depth."""


# -- the contract's helpers (work on numpy arrays and on Python ints) ---------------
# -- the network, prepared once --------------------------------------------------------
@dataclass
class _Synapses:
    name: str
    pre: str
    w: np.ndarray  # W^T [pre, post], int64 (the int64 path)
    shift: int  # right shift of the accumulator (= -weight_exp), clamped to what int64 needs
    pre_clip: int  # > 0: clip acc to +-pre_clip before a left shift (keeps int64 from overflowing)
    delay: int
    post_size: int
    # float64 W^T * 2^-shift when the dot product is exact in float64 (then `w` is unused):
    # acc * 2^-shift comes straight out of BLAS and shr is a floor (or nothing for shift <= 0).
    w_scaled: np.ndarray | None = None
    may_clip: bool = True  # False: |shr(acc, shift)| < 2^31 for every input, the sat is a no-op
    out: np.ndarray | None = None  # float path: output buffer [batch, post], reused every step
    sigma: np.ndarray | None = None  # pre group sends sigma-delta: the running sum of W @ m (scaled on the float path)


@dataclass
class _Group:
    name: str
    op: Op
    kind: str
    size: int
    depth: int
    frac: int
    msg_bits: int
    state_bits: int
    out_shift: int
    coef_frac: int  # f = coef_bits - 1
    decode: str
    synapses: list[str]
    bias: np.ndarray | None = None  # int64 [size], clipped so a sum with synapse outputs cannot overflow
    c_re: np.ndarray | None = None
    c_im: np.ndarray | None = None
    delta: int = 0  # sigma-delta threshold; 0 = dense messages
    last: np.ndarray | None = None  # sigma-delta: what the receivers have summed so far [batch, size]
    table: np.ndarray | None = None  # lut
    lut_shift: int = 0
    lut_lo: int = 0
    source_msgs: np.ndarray | None = None  # source: the messages of every token [batch, tokens, size]
    source_clipped: np.ndarray | None = None  # source: clipped values per token [tokens]
    state: np.ndarray | None = None
    ring: list[np.ndarray] | None = None  # ring_len x [batch, size]: message of step s at slot s % ring_len
    exact_float: bool = False  # carry messages / state as float64 (see _float_group)
    c: np.ndarray | None = None  # cpx, float path: (c_re + i c_im) * 2^-f as complex128 [modes]
    spare: np.ndarray | None = None  # cpx, float path: the other state buffer (double buffering)
    msg_may_clip: bool = True  # False: the message sat provably changes nothing
    msg_zeros: int | None = None  # zero messages of this step, when the step counted them itself
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SAT_QUANTITIES, 0))
    zeros: int = 0
    total: int = 0

    @property
    def stateful(self) -> bool:
        return self.kind in STATEFUL_KINDS


def _check_input(graph: Graph, x) -> np.ndarray:
    return check_sequences(x, graph.inputs()[0].shape[0])


def _prepare_synapses(op: Op, pre: _Group) -> _Synapses:
    a = with_defaults(op)
    w = op.params["weight"].astype(np.int64)  # [post, pre]
    exp = int(a["weight_exp"])
    # |acc| <= sum_pre |w| * 2^(msg_bits-1): every partial sum is an integer below 2^53, so
    # float64 (and BLAS, in any summation order) computes the dot product exactly.
    bound = int(np.abs(w).sum(axis=1).max(initial=0)) * (1 << (pre.msg_bits - 1))
    if exp >= 0:
        # sat(acc << e, 32): for e >= 1 every |acc| > 2^30 saturates, so clipping acc to
        # +-(2^30 + 1) first and shifting by at most 32 gives the same value and the same
        # count without int64 overflow.
        pre_clip = (1 << 30) + 1 if exp > 0 and bound << min(exp, 63) >= 1 << 62 else 0  # min: same test, no
        # giant Python int for a damaged exponent
        shift = -min(exp, 32)
    else:
        pre_clip, shift = 0, min(-exp, 63)  # >> 63 already gives floor (0 or -1)
    s = _Synapses(op.name, op.inputs[0], np.ascontiguousarray(w.T), shift, pre_clip,
                  int(a["delay"]), int(op.params["weight"].shape[0]))
    lo, hi = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
    s.may_clip = shr(-bound, shift) < lo or shr(bound, shift) > hi  # shr is monotone
    if bound < _EXACT_FLOAT:
        # Scaling W by 2^-shift (a power of two, no underflow for shift <= 63) scales every
        # partial sum of the exact integer dot product by 2^-shift, so BLAS returns
        # acc * 2^-shift exactly; floor of it is shr(acc, shift). For shift <= 0 the product
        # is acc << -shift exactly (at most 2^85, still a scaled integer), and sat compares it exactly.
        s.w_scaled = np.ldexp(s.w.astype(np.float64), -shift)
    return s


def _prepare_group(op: Op) -> _Group:
    a = with_defaults(op)
    g = _Group(name=op.name, op=op, kind=a["kind"], size=int(a["size"]), depth=int(a["depth"]),
               frac=int(a["frac"]), msg_bits=int(a["msg_bits"]), state_bits=int(a["state_bits"]),
               out_shift=int(a["out_shift"]), coef_frac=int(a["coef_bits"]) - 1, decode=a["decode"],
               synapses=list(op.inputs) if a["kind"] != "source" else [], delta=int(a["delta"]))
    if "bias" in op.params and g.kind != "source":
        # Synapse outputs are 32-bit: with |bias| clipped to 2^48, a sum that would saturate
        # still saturates the same way, and no int64 sum can overflow.
        g.bias = np.clip(op.params["bias"].astype(np.int64), -(1 << 48), 1 << 48)
    if g.kind == "cpx":
        g.c_re = op.params["c_re"].astype(np.int64)
        g.c_im = op.params["c_im"].astype(np.int64)
    if g.kind == "lut":
        g.table = op.params["table"].astype(np.int64)
        g.lut_shift, g.lut_lo = int(a["lut_shift"]), int(a["lut_lo"])
    g.msg_may_clip = _msg_may_clip(g)
    g.exact_float = _float_group(g)
    if g.exact_float:
        if g.bias is not None:
            g.bias = g.bias.astype(np.float64)  # exact: |bias| <= 2^48
        if g.kind == "cpx":
            # exact: |c| < 2^(coef_bits-1) <= 2^53, and 2^-f is a power of two
            g.c = np.ldexp(g.c_re.astype(np.float64), -g.coef_frac) \
                + 1j * np.ldexp(g.c_im.astype(np.float64), -g.coef_frac)
    return g


def _msg_may_clip(g: _Group) -> bool:
    """Whether sat(value, msg_bits) can change a value, from the range `value` can take."""
    acc_lo, acc_hi = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
    st_lo, st_hi = -(1 << (g.state_bits - 1)), (1 << (g.state_bits - 1)) - 1
    value_range = {"relay": (acc_lo, acc_hi), "relu": (0, acc_hi),
                   # rshr is monotone and the state is already sat'd to state_bits
                   "integrator": (rshr(st_lo, g.out_shift), rshr(st_hi, g.out_shift)),
                   "cpx": (rshr(st_lo, g.out_shift), rshr(st_hi, g.out_shift))}.get(g.kind)
    if g.kind == "lut":  # the verifier keeps table values inside msg_bits
        return False
    if value_range is None:  # source (quantizes and counts its own clips), product
        return True
    lo, hi = -(1 << (g.msg_bits - 1)), (1 << (g.msg_bits - 1)) - 1
    return value_range[0] < lo or value_range[1] > hi


def _float_group(g: _Group) -> bool:
    """Whether every value of this group's step provably stays an integer below 2^53 in
    magnitude (so float64 holds it exactly and every +, -, * on it is exact)."""
    if g.msg_bits > 53 or g.kind in ("lut", "product"):  # messages |m| <= 2^(msg_bits-1); lut, product: int64
        return False
    # dendritic sum: each synapse output is sat'd to 32 bits, |bias| <= 2^48
    acc = len(g.synapses) * (1 << (ACC_BITS - 1)) + (1 << 48)
    if g.kind in ("source", "relay", "relu"):
        return acc < _EXACT_FLOAT
    if g.kind not in ("cpx", "integrator") or g.state_bits > 53:
        return False
    state = 1 << (g.state_bits - 1)
    # message rshr(s, out_shift) as floor(s * 2^-k + 1/2): exact when 2|s| + 2^k <= 2^53,
    # since then s * 2^-k + 1/2 = (2s + 2^k) * 2^-(k+1) is a representable number
    if g.out_shift > 0 and 2 * state + (1 << g.out_shift) > _EXACT_FLOAT:
        return False
    if g.kind == "integrator":
        return state + acc < _EXACT_FLOAT  # s + a before the sat
    if g.size % 2:
        return False
    # |c_re x_re - c_im x_im|, |c_re x_im + c_im x_re| <= max(|c_re| + |c_im|) * 2^(state_bits-1),
    # every product and partial sum below it; rshr(v, f) as floor(v * 2^-f + 1/2) needs
    # 2|v| + 2^f <= 2^53 (as above); the result plus a stays below 2^53.
    prod = int((np.abs(g.c_re) + np.abs(g.c_im)).max(initial=0)) * state
    return 2 * prod + (1 << g.coef_frac) <= _EXACT_FLOAT and (prod >> g.coef_frac) + 1 + acc < _EXACT_FLOAT


# -- the run ---------------------------------------------------------------------------
def run_numpy(graph: Graph, x: np.ndarray, trace: bool = False) -> EngineResult:
    """Run x [batch, tokens, features] through the integer network; see EngineResult."""
    check_neuro_graph(graph)
    x = _check_input(graph, x)
    batch, tokens, _ = x.shape
    order = graph.ops()
    groups = {op.name: _prepare_group(op) for op in order if op.kind == "neurons"}
    synapses = {op.name: _prepare_synapses(op, groups[op.inputs[0]]) for op in order if op.kind == "synapses"}
    max_depth = max((g.depth for g in groups.values()), default=0)
    steps = tokens + max_depth

    # A synapse group runs at step t only when a group it feeds is awake then.
    # A sigma synapse sums every message its pre group sends, whether or not its target is awake.
    wake = {name: 0 if groups[s.pre].delta else
            min((groups[c.name].depth for c in graph.consumers(name)), default=steps)
            for name, s in synapses.items()}
    ring_len: dict[str, int] = {}
    for s in synapses.values():
        ring_len[s.pre] = max(ring_len.get(s.pre, 0), s.delay)
    _check_run_size(groups, synapses, ring_len, graph, x.shape, steps, trace)
    for g in groups.values():
        dtype = np.float64 if g.exact_float else np.int64
        if g.name in ring_len:
            g.ring = [np.zeros((batch, g.size), dtype) for _ in range(ring_len[g.name])]
        if g.stateful:
            g.state = np.zeros((batch, g.size), dtype)
            if g.exact_float and g.kind == "cpx":
                g.spare = np.zeros((batch, g.size), dtype)
        if g.delta:
            g.last = np.zeros((batch, g.size), dtype)
        if g.kind == "source":
            g.source_msgs, clipped = quantize_source(x, g.frac, g.msg_bits)
            g.source_msgs = g.source_msgs.astype(dtype)  # exact: |m| <= 2^(msg_bits-1) <= 2^52
            g.source_clipped = clipped.sum(axis=(0, 2))
    for s in synapses.values():
        if s.w_scaled is not None:
            s.out = np.empty((batch, s.post_size), np.float64)
        if groups[s.pre].delta:
            s.sigma = np.zeros((batch, s.post_size), np.float64 if s.w_scaled is not None else np.int64)

    read = {}  # group read by an output -> its messages for tokens 0..tokens-1
    for out in graph.outputs():
        g = groups[out.inputs[0]]
        read.setdefault(g.name, np.zeros((batch, tokens, g.size), np.int64))
    traces: dict[str, np.ndarray] = {}
    if trace:
        for g in groups.values():
            traces[g.name] = np.zeros((batch, steps, g.size), np.int64)
            if g.stateful:
                traces[f"{g.name}.state"] = np.zeros((batch, steps, g.size), np.int64)
            if g.delta:
                traces[f"{g.name}.last"] = np.zeros((batch, steps, g.size), np.int64)

    for t in range(steps):
        syn_out: dict[str, tuple[np.ndarray | None, int]] = {}
        for s in synapses.values():
            if t >= wake[s.name]:
                syn_out[s.name] = _synapse_step(s, groups[s.pre], t)
        new: dict[str, np.ndarray | None] = {}
        for g in groups.values():
            if t < g.depth:
                new[g.name] = None  # idle, emits 0
            elif g.exact_float:
                new[g.name] = _float_group_step(g, t, x, syn_out)
            else:
                new[g.name] = _group_step(g, t, x, syn_out)
            if g.delta and new[g.name] is not None:
                new[g.name] = _sigma_delta(g, new[g.name])
        for g in groups.values():
            m = new[g.name]
            slot = g.ring[t % len(g.ring)] if g.ring is not None else None
            if m is None:
                if slot is not None:
                    slot.fill(0)
                continue
            if slot is not None and m is not slot:  # a cpx group may have written it in place
                slot[...] = m
            if t - g.depth < tokens:  # a step that carries a token
                g.total += m.size
                zeros, g.msg_zeros = g.msg_zeros, None
                g.zeros += int(np.count_nonzero(m == 0)) if zeros is None else zeros  # bools count fast
                if g.name in read:
                    read[g.name][:, t - g.depth] = m  # float64 messages hold exact integers
            if trace:
                traces[g.name][:, t] = m
                if g.stateful:
                    traces[f"{g.name}.state"][:, t] = g.state
                if g.delta:
                    traces[f"{g.name}.last"][:, t] = g.last

    return engine_result(graph, groups, read, traces if trace else None, steps)


def engine_result(graph: Graph, groups: dict, read: dict, traces: dict | None, steps: int) -> EngineResult:
    """The result of a run from its groups (each with frac, decode, counts, zeros, total) and the messages
    `read` of the groups the outputs read: shared by the numpy and microcode engines."""
    return EngineResult(
        outputs={out.name: decode_output(read[out.inputs[0]], groups[out.inputs[0]].frac,
                                         groups[out.inputs[0]].decode) for out in graph.outputs()},
        raw={out.name: read[out.inputs[0]].copy() for out in graph.outputs()},
        saturation={name: dict(g.counts) for name, g in groups.items()},
        sparsity={name: g.zeros / g.total if g.total else 0.0 for name, g in groups.items()},
        trace=traces,
        steps=steps,
    )


def _check_run_size(groups, synapses, ring_len, graph: Graph, x_shape, steps: int, trace: bool) -> None:
    """Refuse a run whose buffers (8 bytes a value) over the whole batch would exceed the work limit."""
    batch, tokens, features = x_shape
    per_group = sum(g.size * (ring_len.get(g.name, 0) + 3 + (3 * steps if trace else 0)) for g in groups.values())
    per_synapse = sum(2 * s.post_size for s in synapses.values())
    outs = sum(groups[o.inputs[0]].size for o in graph.outputs())
    refuse_oversized_run("numpy engine", batch, tokens, 8 * (per_group + per_synapse + tokens * (2 * features + 3 * outs)),
                         trace)


def run_net(net, x: np.ndarray, trace: bool = False) -> EngineResult:
    """The engine entry point `ssmc.api` uses: run a compiled Net's graph."""
    return run_numpy(net.graph, x, trace=trace)


def _synapse_step(s: _Synapses, pre: _Group, t: int) -> tuple[np.ndarray | None, int]:
    """(out [batch, post] or None for all zeros, number of clipped values). A float64 `out`
    (holding exact integers) is a buffer the next step overwrites: read it, never keep it."""
    src = t - s.delay
    if src < pre.depth:  # before step 0, or the pre group was idle: zero messages
        return None, 0
    m = pre.ring[src % len(pre.ring)]
    if s.w_scaled is not None:  # exact: see _prepare_synapses
        acc = np.matmul(m if m.dtype == np.float64 else m.astype(np.float64), s.w_scaled, out=s.out)
        if s.sigma is not None:  # |sigma| = |W @ last| stays within the same bound: still exact
            s.sigma += acc
            acc[...] = s.sigma
        if s.shift > 0:
            np.floor(acc, out=acc)
        return _sat_count(acc, ACC_BITS) if s.may_clip else (acc, 0)
    acc = (m if m.dtype == np.int64 else m.astype(np.int64)) @ s.w  # float m: exact integers
    if s.sigma is not None:
        s.sigma += acc
        acc = s.sigma.copy()
    if s.pre_clip:
        acc = np.clip(acc, -s.pre_clip, s.pre_clip)
    return _sat_count(shr(acc, s.shift), ACC_BITS)


def _dendrite(g: _Group, syn_out, dtype, batch: int) -> np.ndarray | None:
    """a = sat(sum of synapse outputs + bias, 32) [batch, size] in `dtype`, None when it is all
    zeros. May be a synapse's output buffer or a read-only view: never write into it."""
    a, terms = None, 0
    for name in g.synapses:
        out, n = syn_out.get(name, (None, 0))
        g.counts["accumulator"] += n
        if out is not None:
            out = out if out.dtype == dtype else out.astype(dtype)  # exact: |out| < 2^31
            a = out if a is None else a + out  # a new array: never add into a synapse output in place
            terms += 1
    if g.bias is not None:
        a = np.broadcast_to(g.bias, (batch, g.size)) if a is None else a + g.bias
        terms += 1
    if a is None or (terms == 1 and g.bias is None):  # one sat'd synapse output is in range
        return a
    a, n = _sat_count(a, ACC_BITS)
    g.counts["accumulator"] += n
    return a


def _group_step(g: _Group, t: int, x: np.ndarray, syn_out) -> np.ndarray:
    """One step of an awake int64 group: its message [batch, size]; updates its state and counts."""
    if g.kind == "source":
        if t >= x.shape[1]:  # after the last token
            return np.zeros((x.shape[0], g.size), g.source_msgs.dtype)
        g.counts["message"] += int(g.source_clipped[t])
        return g.source_msgs[:, t]
    if g.kind == "product":
        return _message(g, _product(g, syn_out, x.shape[0]))
    a = _dendrite(g, syn_out, np.int64, x.shape[0])
    if a is None:
        a = np.zeros((x.shape[0], g.size), np.int64)
    if g.kind == "lut":
        i = shr(a, g.lut_shift) - g.lut_lo
        top = len(g.table) - 1
        g.counts["message"] += int(np.count_nonzero((i < 0) | (i > top)))  # a clipped index saturates
        return g.table[np.clip(i, 0, top)]
    if g.kind == "relay":
        value = a
    elif g.kind == "relu":
        value = np.maximum(a, 0)
    elif g.kind == "integrator":
        g.state, n = _sat_count(g.state + a, g.state_bits)
        g.counts["state"] += n
        value = rshr(g.state, g.out_shift)
    elif g.kind == "cpx":
        xr, xi = g.state[:, 0::2], g.state[:, 1::2]
        new = np.empty_like(g.state)
        new[:, 0::2] = rshr(g.c_re * xr - g.c_im * xi, g.coef_frac) + a[:, 0::2]
        new[:, 1::2] = rshr(g.c_re * xi + g.c_im * xr, g.coef_frac) + a[:, 1::2]
        g.state, n = _sat_count(new, g.state_bits)
        g.counts["state"] += n
        value = rshr(g.state, g.out_shift)
    else:
        raise IRError(f"%{g.name}: unknown neuron kind {g.kind!r}")
    return _message(g, value)


def _product(g: _Group, syn_out, batch: int) -> np.ndarray:
    """rshr(a0 * a1, out_shift): a0 = sat(first synapse output + bias, 32), a1 the second's output."""
    ops = []
    for name in g.synapses:
        out, n = syn_out.get(name, (None, 0))
        g.counts["accumulator"] += n
        ops.append(np.zeros((batch, g.size), np.int64) if out is None else out.astype(np.int64))
    if g.bias is not None:
        ops[0], n = _sat_count(ops[0] + g.bias, ACC_BITS)
        g.counts["accumulator"] += n
    return rshr(ops[0] * ops[1], g.out_shift)  # |a0 a1| <= 2^62: exact in int64


def _sigma_delta(g: _Group, y: np.ndarray) -> np.ndarray:
    """The message a sigma-delta group sends for dense message y: the change since `last`
    when it is at least `delta` in magnitude (sat'd to msg_bits), else 0; `last` follows."""
    d = y - g.last
    d, n = _sat_count(d, g.msg_bits)
    g.counts["message"] += n
    m = np.where(np.abs(d) >= g.delta, d, 0).astype(g.last.dtype)
    g.last += m
    return m


def _float_group_step(g: _Group, t: int, x: np.ndarray, syn_out) -> np.ndarray:
    """_group_step for a group whose values are float64 holding exact integers (see _float_group)."""
    if g.kind == "source":
        return _group_step(g, t, x, syn_out)
    a = _dendrite(g, syn_out, np.float64, x.shape[0])
    if g.kind in ("relay", "relu"):
        if a is None:
            return np.zeros((x.shape[0], g.size), np.float64)
        return _message(g, a if g.kind == "relay" else np.maximum(a, 0.0))
    if g.kind == "integrator":
        if a is not None:
            g.state, n = _sat_count(g.state + a, g.state_bits)
            g.counts["state"] += n
    elif g.kind == "cpx":
        # The interleaved [re_0, im_0, re_1, ...] layout is exactly a complex128 array, so one
        # complex multiply forms c_re x_re - c_im x_im and c_re x_im + c_im x_re, scaled by 2^-f:
        # every product and sum is an exact (scaled) integer, in any evaluation order or with FMA.
        new = _cpx_buffer(g, t)
        zeros = 0
        for rows in _row_blocks(new.shape[0]):  # a block's passes run while it is in cache
            blk = new[rows]
            np.multiply(g.state[rows].view(np.complex128), g.c, out=blk.view(np.complex128))
            blk += 0.5  # exact, see _float_group: floor(v 2^-f + 1/2) = rshr(v, f)
            np.floor(blk, out=blk)
            if a is not None:
                blk += a[rows]
            state, n = _sat_count(blk, g.state_bits)
            g.counts["state"] += n
            if state is not blk:
                blk[...] = state
            zeros += int(np.count_nonzero(blk == 0))
        if _msg_is_state(g):
            g.msg_zeros = zeros
        if new is g.spare:
            g.spare = g.state
        g.state = new
    else:
        raise IRError(f"%{g.name}: unknown neuron kind {g.kind!r}")
    return _message(g, _rshr_float(g.state, g.out_shift))


_BLOCK_ROWS = 64  # sequences per block: 64 x 1024 float64 values (512 KiB) stay in L2


def _row_blocks(batch: int) -> list[slice]:
    return [slice(i, i + _BLOCK_ROWS) for i in range(0, batch, _BLOCK_ROWS)]


def _cpx_buffer(g: _Group, t: int) -> np.ndarray:
    """Where a float cpx group writes its new state. When its message is its state, that is
    its ring slot of step t, saving the copy into the ring: the slot's old message is dead
    (a synapse of delay ring_len read it before the groups stepped). With a 1-slot ring that
    slot is the current state itself, and the update, elementwise, runs in place."""
    if g.ring is not None and _msg_is_state(g):
        return g.ring[t % len(g.ring)]
    return g.spare


def _msg_is_state(g: _Group) -> bool:
    # sat(rshr(state, 0), msg_bits) = state; a sigma-delta group sends something else
    return g.out_shift == 0 and not g.msg_may_clip and not g.delta


def _rshr_float(v: np.ndarray, s: int) -> np.ndarray:
    """rshr on float64 integers as floor(v * 2^-s + 1/2); exact when 2|v| + 2^s <= 2^53."""
    return np.floor(v * 2.0 ** -s + 0.5) if s > 0 else v


def _message(g: _Group, value: np.ndarray) -> np.ndarray:
    if not g.msg_may_clip:
        return value
    m, n = _sat_count(value, g.msg_bits)
    g.counts["message"] += n
    return m

