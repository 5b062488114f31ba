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
   into its dendritic input and updates (source, relay, relu, cpx, integrator);
   a group before its depth emits 0, adds no bias, keeps its state at 0;
3. the new messages go into the ring buffers.

Token `k` is emitted by the source at step `k`; the engine runs
`tokens + max depth` steps and reads an output's token `k` at step
`k + depth`. Sparsity counts the zero messages of a group over the steps
that carry tokens. Every clip that changes a value is counted per group under
"accumulator" (synapse outputs and the dendritic sum), "state" or "message".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ssmc.errors import InputDataError, IRError
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import with_defaults
from ssmc.ir.verify import verify

ACC_BITS = 32
NEURO_LEVEL_KINDS = ("input", "neurons", "synapses", "output")
SAT_QUANTITIES = ("accumulator", "state", "message")
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
def sat(v, bits: int):
    """Clip to the signed `bits` range [-2^(bits-1), 2^(bits-1) - 1]."""
    return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def shr(v, s: int):
    """floor(v / 2^s) for s >= 0 (numpy `>>`); v << -s for s < 0."""
    return v >> s if s >= 0 else v << -s


def rshr(v, s: int):
    """v / 2^s rounded to nearest, ties up: (v + 2^(s-1)) >> s for s > 0; v for s = 0."""
    if s < 0:
        raise ValueError(f"rshr needs a shift >= 0, got {s}")
    return (v + (1 << (s - 1))) >> s if s > 0 else v


def _sat_count(v: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """sat(v, bits) and how many values it changed."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if v.size == 0 or (v.min() >= lo and v.max() <= hi):  # the common case, checked cheaply
        return v, 0
    return np.clip(v, lo, hi), int(np.count_nonzero((v < lo) | (v > hi)))


# -- the network, prepared once --------------------------------------------------------
@dataclass
class _Synapses:
    name: str
    pre: str
    w: np.ndarray  # W [post, pre]: float64 when every dot product is exact in float64, else int64
    shift: int  # right shift of the accumulator (= -weight_exp), clamped to what int64 needs
    pre_clip: int  # > 0: clip acc to +-pre_clip before a left shift (keeps int64 from overflowing)
    delay: int
    post_size: int


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
    source_msgs: np.ndarray | None = None  # source: the messages of every token [batch, tokens, size]
    source_clipped: np.ndarray | None = None  # source: clipped values per token [tokens]
    state: np.ndarray | None = None
    ring: np.ndarray | None = None  # [ring_len, batch, size]: message of step s at slot s % ring_len
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SAT_QUANTITIES, 0))
    zeros: int = 0
    total: int = 0

    @property
    def stateful(self) -> bool:
        return self.kind in ("cpx", "integrator")


def _check_graph(graph: Graph) -> None:
    for op in graph.ops():
        if op.kind not in NEURO_LEVEL_KINDS:
            raise IRError(f"%{op.name} ({op.kind}): the numpy engine runs the neuro-level IR "
                          f"({', '.join(NEURO_LEVEL_KINDS)} ops); run the fixed-point passes first")
    inputs = graph.inputs()
    if len(inputs) != 1:
        raise IRError(f"the numpy engine runs graphs with exactly one input op, this one has {len(inputs)}")
    verify(graph)
    for op in graph.ops():
        srcs = [graph.op(s) for s in op.inputs]
        if op.kind == "synapses" and srcs[0].kind != "neurons":
            raise IRError(f"%{op.name} (synapses) must read a neurons group, reads %{srcs[0].name} ({srcs[0].kind})")
        if op.kind == "output" and srcs[0].kind != "neurons":
            raise IRError(f"%{op.name} (output) must read a neurons group, reads %{srcs[0].name} ({srcs[0].kind})")
        if op.kind == "neurons":
            want = "input" if op.attrs["kind"] == "source" else "synapses"
            bad = [s for s in srcs if s.kind != want]
            if bad:
                raise IRError(f"%{op.name} (neurons, kind {op.attrs['kind']}) must read {want} ops only, "
                              f"reads %{bad[0].name} ({bad[0].kind})")
            a = with_defaults(op)
            if a["depth"] < 0:
                raise IRError(f"%{op.name}: depth = {a['depth']} is negative")
            if a["kind"] in ("cpx", "integrator") and a["out_shift"] < 0:
                raise IRError(f"%{op.name}: out_shift = {a['out_shift']} is negative; rshr shifts right only")


def _check_input(graph: Graph, x) -> np.ndarray:
    inp = graph.inputs()[0]
    size = inp.shape[0]
    x = np.asarray(x)
    if x.ndim != 3:
        raise InputDataError(f"input must have shape [batch, tokens, {size}] (3 axes), got shape {list(x.shape)}")
    if x.shape[2] != size:
        raise InputDataError(f"input must have shape [batch, tokens, {size}]: %{inp.name} takes {size} "
                             f"feature(s) per token, got shape {list(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputDataError(f"input needs at least one sequence and one token, got shape {list(x.shape)}")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputDataError(f"input must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise InputDataError("input contains NaN or infinite values")
    return x


def _prepare_synapses(op: Op, pre: _Group) -> _Synapses:
    a = with_defaults(op)
    w = op.params["weight"].astype(np.int64)  # [post, pre]
    exp = int(a["weight_exp"])
    # |acc| <= sum_pre |w| * 2^(msg_bits-1): every partial sum is an integer below 2^53, so
    # float64 (and BLAS, in any summation order) computes the dot product exactly.
    bound = int(np.abs(w).sum(axis=1).max(initial=0)) * (1 << (pre.msg_bits - 1))
    wt = w.astype(np.float64) if bound < _EXACT_FLOAT else w
    if exp >= 0:
        # sat(acc << e, 32): for e >= 1 every |acc| > 2^30 saturates, so clipping acc to
        # +-(2^30 + 1) first and shifting by at most 32 gives the same value and the same
        # count without int64 overflow.
        pre_clip = (1 << 30) + 1 if exp > 0 and bound << exp >= 1 << 62 else 0
        shift = -min(exp, 32)
    else:
        pre_clip, shift = 0, min(-exp, 63)  # >> 63 already gives floor (0 or -1)
    return _Synapses(op.name, op.inputs[0], np.ascontiguousarray(wt), shift, pre_clip,
                     int(a["delay"]), int(op.params["weight"].shape[0]))


def _prepare_group(op: Op) -> _Group:
    a = with_defaults(op)
    g = _Group(name=op.name, op=op, kind=a["kind"], size=int(a["size"]), depth=int(a["depth"]),
               frac=int(a["frac"]), msg_bits=int(a["msg_bits"]), state_bits=int(a["state_bits"]),
               out_shift=int(a["out_shift"]), coef_frac=int(a["coef_bits"]) - 1, decode=a["decode"],
               synapses=list(op.inputs) if a["kind"] != "source" else [])
    if "bias" in op.params and g.kind != "source":
        # Synapse outputs are 32-bit: with |bias| clipped to 2^48, a sum that would saturate
        # still saturates the same way, and no int64 sum can overflow.
        g.bias = np.clip(op.params["bias"].astype(np.int64), -(1 << 48), 1 << 48)
    if g.kind == "cpx":
        g.c_re = op.params["c_re"].astype(np.int64)
        g.c_im = op.params["c_im"].astype(np.int64)
    return g


# -- the run ---------------------------------------------------------------------------
def run_numpy(graph: Graph, x: np.ndarray, trace: bool = False) -> EngineResult:
    """Run x [batch, tokens, features] through the integer network; see EngineResult."""
    _check_graph(graph)
    x = _check_input(graph, x)
    batch, tokens, _ = x.shape
    order = graph.ops()
    groups = {op.name: _prepare_group(op) for op in order if op.kind == "neurons"}
    synapses = {op.name: _prepare_synapses(op, groups[op.inputs[0]]) for op in order if op.kind == "synapses"}
    max_depth = max((g.depth for g in groups.values()), default=0)
    steps = tokens + max_depth

    # A synapse group runs at step t only when a group it feeds is awake then.
    wake = {name: min((groups[c.name].depth for c in graph.consumers(name)), default=steps)
            for name in synapses}
    ring_len: dict[str, int] = {}
    for s in synapses.values():
        ring_len[s.pre] = max(ring_len.get(s.pre, 0), s.delay)
    for g in groups.values():
        if g.name in ring_len:
            g.ring = np.zeros((ring_len[g.name], batch, g.size), np.int64)
        if g.stateful:
            g.state = np.zeros((batch, g.size), np.int64)
        if g.kind == "source":
            g.source_msgs, clipped = quantize_source(x, g.frac, g.msg_bits)
            g.source_clipped = clipped.sum(axis=(0, 2))

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

    for t in range(steps):
        syn_out: dict[str, tuple[np.ndarray | None, int]] = {}
        for s in synapses.values():
            if t >= wake[s.name]:
                syn_out[s.name] = _synapse_step(s, groups[s.pre], t)
        new: dict[str, np.ndarray | None] = {}
        for g in groups.values():
            new[g.name] = _group_step(g, t, x, syn_out) if t >= g.depth else None  # None: idle, emits 0
        for g in groups.values():
            m = new[g.name]
            if m is None:
                if g.ring is not None:
                    g.ring[t % len(g.ring)] = 0
                continue
            if g.ring is not None:
                g.ring[t % len(g.ring)] = m
            if t - g.depth < tokens:  # a step that carries a token
                g.total += m.size
                g.zeros += m.size - int(np.count_nonzero(m))
                if g.name in read:
                    read[g.name][:, t - g.depth] = m
            if trace:
                traces[g.name][:, t] = m
                if g.stateful:
                    traces[f"{g.name}.state"][:, t] = g.state

    return EngineResult(
        outputs={out.name: _decode(read[out.inputs[0]], groups[out.inputs[0]]) for out in graph.outputs()},
        raw={out.name: read[out.inputs[0]].copy() for out in graph.outputs()},
        saturation={name: dict(g.counts) for name, g in groups.items()},
        sparsity={name: g.zeros / g.total if g.total else 0.0 for name, g in groups.items()},
        trace=traces if trace else None,
        steps=steps,
    )


def _synapse_step(s: _Synapses, pre: _Group, t: int) -> tuple[np.ndarray | None, int]:
    """(out [batch, post] or None for all zeros, number of clipped values)."""
    src = t - s.delay
    if src < pre.depth:  # before step 0, or the pre group was idle: zero messages
        return None, 0
    m = pre.ring[src % len(pre.ring)]
    if s.w.dtype == np.float64:
        acc = (m.astype(np.float64) @ s.w.T).astype(np.int64)  # exact: see _prepare_synapses
    else:
        acc = m @ s.w.T
    if s.pre_clip:
        acc = np.clip(acc, -s.pre_clip, s.pre_clip)
    return _sat_count(shr(acc, s.shift), ACC_BITS)


def _group_step(g: _Group, t: int, x: np.ndarray, syn_out) -> np.ndarray:
    """One step of an awake group: its message [batch, size]; updates its state and counts."""
    if g.kind == "source":
        if t >= x.shape[1]:  # after the last token
            return np.zeros((x.shape[0], g.size), np.int64)
        g.counts["message"] += int(g.source_clipped[t])
        return g.source_msgs[:, t]
    a = None
    for name in g.synapses:
        out, n = syn_out.get(name, (None, 0))
        g.counts["accumulator"] += n
        if out is not None:
            a = out if a is None else a + out  # a new array: never add into a synapse output in place
    if a is None:
        a = np.zeros((x.shape[0], g.size), np.int64)
    if g.bias is not None:
        a = a + g.bias
    a, n = _sat_count(a, ACC_BITS)
    g.counts["accumulator"] += n
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
    m, n = _sat_count(value, g.msg_bits)
    g.counts["message"] += n
    return m


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


def _decode(msgs: np.ndarray, g: _Group) -> np.ndarray:
    value = np.ldexp(msgs.astype(np.float64), -g.frac)
    if g.decode == "mean":
        value = value / np.arange(1, msgs.shape[1] + 1, dtype=np.float64)[None, :, None]
    return value
