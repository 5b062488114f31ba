"""The numpy fixed-point engine: docs/fixed_point.md, fast.

Runs a neuro-level graph (`input`, `neurons`, `synapses`, `output`) step by
step in int64 (in chunks of steps, see below), vectorised over a batch of sequences and over the neurons of a
group. It is tested bit for bit against the readable reference implementation
(ssmc/runtime/reference.py, the golden model), and the other engines (Lava
process models, the microcode interpreter) are tested against it: they must
reproduce its integers at every step.

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

The engine computes exactly that, in another order: the graph is acyclic and
every delay is at least 1, so a group's inputs for steps t .. t + n - 1 are
known once its pre groups have run those steps and the `delay` before. A run
takes a chunk of n steps at a time (`chunk_steps`: as many as keep the
chunk's buffers in cache) and, group by group in execution order, forms each
synapse group's outputs for the whole chunk in one kernel call over
[n * batch, pre] rows and each stateless group's messages in one elementwise
pass; only a stateful group's update and a sigma-delta group's `last` step
one step at a time inside the chunk (a sigma synapse's sum is a cumulative sum
over the chunk). Each group keeps its messages in a ring of whole chunks, with
room for the steps of history its readers' delays need before the chunk.

Token `k` is emitted by the source at step `k`; the engine runs
`tokens + max depth` steps and reads an output's token `k` at step
`k + depth`. Sparsity counts the zero messages of a group over the steps
that carry tokens. Every clip that changes a value is counted per group under
"accumulator" (synapse outputs and the dendritic sum), "state" or "message".

Speed: wherever it is provably exact, a group carries its messages and state
(and a synapse its accumulator) as float64 holding exact integers -- every
intermediate of its update stays below 2^53 in magnitude, see `_float_group`
and `_prepare_synapses` -- so float kernels do the dot products and no step
converts between int64 and float64. Everything else runs the int64 path. Both
paths produce the same integers; traces and raw outputs are int64. A synapse
group's kernel follows from where its weights are non-zero, not from the op
that made them (`_choose_kernel`): an S4D layer's B (each channel to its own
modes) is a per-channel broadcast and its C (each channel's modes summed) a
channel sum, one pass each instead of a dense product H times larger; other
sparse groups run as segment sums or CSR, the rest as BLAS products on one
thread (many small products: waking BLAS threads costs more than they save).
The classes of a linear split by weight exponent (--weight-exp row) run as one kernel
with a shift per row (`_merge_row_split`).
A stateful group (cpx, integrator) runs a chunk's steps in one call of a compiled
kernel (engine_kernels.py, numba; docs/numpy_engine.md), one sequence at a time
so that its state stays in cache over the steps, one pass per step; its state is
its own array, updated in place. A float cpx group's kernel also forms the
synapse groups around it where their pattern allows (`_fuse`): its input when
that is a broadcast (an S4D layer's B, from the pre messages), and a channel sum
reading its states (an S4D layer's C); when that channel sum is all that reads
it, a run without traces writes none of its messages. The checked and prepared
net is kept per graph (`prepare`), so a test set run in many calls pays the
set-up once.

The microcode engine runs its dense synapse groups with this engine's kernels and
keeps its messages in the same rings. What it uses is public: `prepare_kernels`
(the graph checked, each synapse op's kernel -- a `PreparedKernels` -- without
the numpy run's merging and fusion), `synapse_chunk` (a kernel's outputs for a
chunk of steps) and `buffer_rows` (a ring's rows); `chunk_steps` (this engine's
chunk length) is public too, for tests that choose it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse

from ssmc import limits
from ssmc.data import check_sequences
from ssmc.errors import IRError

# NEURO_LEVEL_KINDS, check_neuro_graph and sat are re-exported: callers import them from here.
from ssmc.ir.fixed_point import (
    ACC_BITS,
    NEURO_LEVEL_KINDS,  # noqa: F401
    SAT_QUANTITIES,
    check_neuro_graph,  # noqa: F401
    decode_output,
    quantize_source,
    refuse_oversized_run,
    rshr,
    sat,  # noqa: F401
    shr,
)
from ssmc.ir.fixed_point import sat_count as _sat_count
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import with_defaults
from ssmc.runtime.parallel import batch_parts, merged_counts, one_blas_thread, run_parts

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
    shift: int  # right shift of the accumulator (= -weight_exp), clamped to what int64 needs
    pre_clip: int  # > 0: clip acc to +-pre_clip before a left shift (keeps int64 from overflowing)
    delay: int
    pre_size: int
    post_size: int
    # How acc = W @ m is formed, chosen from W's non-zero pattern (see _choose_kernel); `w` and the
    # index arrays below are what that kernel reads. The values are int64 (the int64 path), or
    # float64 scaled by 2^-shift when every partial sum is exact in float64 (`exact_float`):
    # then acc * 2^-shift comes straight out and shr is a floor (or nothing for shift <= 0).
    kernel: str = "dense"
    w: np.ndarray | None = None
    cols: np.ndarray | None = None  # gather: pre index per post; segment: pre index per term (None: all, in order)
    rows: np.ndarray | None = None  # segment: the posts that have terms (None: every post)
    starts: np.ndarray | None = None  # segment: where each post's terms start
    csr: object = None  # csr: scipy.sparse.csr_matrix W [post, pre]
    exact_float: bool = False
    may_clip: bool = True  # False: |shr(acc, shift)| < 2^31 for every input, the sat is a no-op
    out: np.ndarray | None = None  # output buffer [rows, post], reused every chunk
    chunk_out: tuple | None = None  # this chunk's (outputs, first step), see synapse_chunk
    terms: np.ndarray | None = None  # segment: the products of a block of sequences, reused
    sigma: np.ndarray | None = None  # pre group sends sigma-delta: the running sum of W @ m (scaled on the float path)
    nonzeros: tuple | None = None  # (rows, cols, int64 values) of W (None for a dense kernel: as many as W)
    # Formed inside a cpx group's kernel (see _fuse): "post" -- from the pre messages, by the group it feeds
    # (its chunk_out holds those messages); "pre" -- from the states of the group it reads, into `sums`.
    fused: str = ""
    sums: np.ndarray | None = None  # "pre": the outputs, floored, a ring with its pre group's buffer's rows

    @property
    def work_values(self) -> int:
        """Values per sequence of this kernel's temporaries besides `out` and `sigma` (for the run-size
        check): the messages converted to its dtype, a segment's terms (and their gather), csr's result."""
        if self.kernel == "segment":
            return self.pre_size + len(self.w) * (1 if self.cols is None else 2)
        return self.pre_size + (self.post_size if self.kernel == "csr" else 0)


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
    source_msgs: np.ndarray | None = None  # source: the messages of every token [tokens, batch, size]
    source_clipped: np.ndarray | None = None  # source: clipped values per token [tokens]
    state: np.ndarray | None = None  # [batch, size] after the last step run
    states: np.ndarray | None = None  # [chunk, batch, size]: a chunk's states, unless they are its messages
    buf: np.ndarray | None = None  # messages [rows, batch, size], a ring: the chunk being run at `pos`, before it
    pos: int = 0  # (cyclically) at least the steps of history its readers need, zeros before step 0
    ran: int = 0  # steps of the chunk at `pos`
    exact_float: bool = False  # carry messages / state as float64 (see _float_group)
    c_re_scaled: np.ndarray | None = None  # cpx, float path: c_re * 2^-f as float64 [modes]
    c_im_scaled: np.ndarray | None = None  # cpx, float path: c_im * 2^-f
    msg_may_clip: bool = True  # False: the message sat provably changes nothing
    fused_in: str | None = None  # the synapse group whose outputs this group's kernel forms (see _fuse)
    fused_out: str | None = None  # the synapse group whose outputs this group's kernel forms from its states
    unread: bool = False  # fused_out alone reads its messages: unless traced, they are not written (see _fuse)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SAT_QUANTITIES, 0))
    zeros: int = 0
    total: int = 0

    @property
    def stateful(self) -> bool:
        return self.kind in STATEFUL_KINDS


def _prepare_synapses(op: Op, pre: _Group) -> _Synapses:
    a = with_defaults(op)
    weight = op.params["weight"]  # [post, pre]
    post_size, pre_size = weight.shape
    rows, cols, vals = _nonzeros(weight)
    exp = int(a["weight_exp"])
    # |acc| <= sum_pre |w| * 2^(msg_bits-1): every partial sum is an integer below 2^53, so
    # float64 computes the dot product exactly, in any summation order (BLAS, reduceat, scipy).
    starts = np.flatnonzero(np.diff(rows, prepend=-1)) if len(rows) else np.zeros(0, np.int64)
    row_abs = np.add.reduceat(np.abs(vals), starts) if len(rows) else np.zeros(0, np.int64)
    bound = int(row_abs.max(initial=0)) * (1 << (pre.msg_bits - 1))
    if exp >= 0:
        # sat(acc << e, 32): for e >= 1 every |acc| > 2^30 saturates, so clipping acc to
        # +-(2^30 + 1) first and shifting by at most 32 gives the same value and the same
        # count without int64 overflow.
        pre_clip = (1 << 30) + 1 if exp > 0 and bound << min(exp, 63) >= 1 << 62 else 0  # min: same test, no
        # giant Python int for a damaged exponent
        shift = -min(exp, 32)
    else:
        pre_clip, shift = 0, min(-exp, 63)  # >> 63 already gives floor (0 or -1)
    s = _Synapses(op.name, op.inputs[0], shift, pre_clip, int(a["delay"]), int(pre_size), int(post_size))
    lo, hi = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
    s.may_clip = shr(-bound, shift) < lo or shr(bound, shift) > hi  # shr is monotone
    # Scaling W by 2^-shift (a power of two, no underflow for shift <= 63) scales every
    # partial sum of the exact integer dot product by 2^-shift, so the float64 kernels return
    # acc * 2^-shift exactly; floor of it is shr(acc, shift). For shift <= 0 the product
    # is acc << -shift exactly (at most 2^85, still a scaled integer), and sat compares it exactly.
    s.exact_float = bound < _EXACT_FLOAT
    s.nonzeros = (rows, cols, vals)
    _choose_kernel(s, weight.shape, rows, cols, vals, starts, s.shift)
    return s


def _nonzeros(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, int64 values) of W's non-zeros in row-major order. The two channel patterns of
    an S4D layer (post i reads only pre i // k; pre j feeds only post j // k) are recognised from
    W's band first: counting non-zeros is several times faster than listing them."""
    post, pre = weight.shape
    total = np.count_nonzero(weight)
    if post >= pre > 0 and post % pre == 0:
        k = post // pre
        band = weight.reshape(pre, k, pre)[np.arange(pre), :, np.arange(pre)].ravel()  # w[i k + r, i]
        if np.count_nonzero(band) == total:
            r = np.flatnonzero(band)
            return r, r // k, band[r].astype(np.int64)
    if pre > post > 0 and pre % post == 0:
        k = pre // post
        band = weight.reshape(post, post, k)[np.arange(post), np.arange(post), :].ravel()  # w[i, i k + r]
        if np.count_nonzero(band) == total:
            c = np.flatnonzero(band)
            return c // k, c, band[c].astype(np.int64)
    rows, cols = np.nonzero(weight)
    return rows, cols, weight[rows, cols].astype(np.int64)


_CSR_DENSITY = 0.1  # below this fraction of non-zeros a general sparse W runs as CSR (scipy), above it dense BLAS


def _choose_kernel(
    s: _Synapses,
    shape: tuple[int, int],
    rows: np.ndarray,
    cols: np.ndarray,
    vals: np.ndarray,
    starts: np.ndarray,
    shift,
) -> None:
    """Pick how W @ m is formed from where W's non-zeros are, whatever op produced W:
    zero (no non-zeros), broadcast (post i reads pre i // k alone: an S4D B, a diagonal D),
    gather (every post reads at most one pre), channel_sum (post i sums pres i k .. i k + k - 1:
    an S4D C sums each channel's modes), segment (every pre feeds at most one post), csr
    (sparse otherwise), dense (BLAS). Each forms the same integer sums: float64 ones are exact
    (see _prepare_synapses), int64 ones wrap like matmul. einsum (no BLAS, optimize off) runs
    broadcast and channel_sum in one pass each, several times faster than multiply + reduce.
    The float64 values are scaled by 2^-shift: `shift` is an int, or an int array per post for a
    merged group (see _merge_row_split)."""
    post, pre = shape
    if s.exact_float:
        values = np.ldexp(vals.astype(np.float64), -(shift if np.ndim(shift) == 0 else shift[rows]))
    else:
        values = vals
    if not len(vals):
        s.kernel = "zero"
    elif len(starts) == len(vals):  # at most one term per post
        w = np.zeros(post, values.dtype)
        w[rows] = values
        reps = post // pre
        if reps * pre == post and np.array_equal(cols, rows // reps):
            s.kernel, s.w = "broadcast", w.reshape(pre, reps)
        else:
            s.kernel, s.w = "gather", w
            s.cols = np.zeros(post, np.intp)
            s.cols[rows] = cols
    elif pre % post == 0 and np.array_equal(rows, cols // (pre // post)):  # post i sums pre i k .. i k + k - 1
        w = np.zeros(pre, values.dtype)
        w[cols] = values
        s.kernel, s.w = "channel_sum", w.reshape(post, pre // post)
    elif np.bincount(cols, minlength=pre).max() <= 1:  # at most one post per pre
        s.kernel, s.w, s.starts = "segment", values, starts
        s.cols = None if np.array_equal(cols, np.arange(pre)) else cols.astype(np.intp)
        s.rows = None if len(starts) == post else rows[starts]
    elif len(vals) < _CSR_DENSITY * post * pre:
        s.kernel = "csr"
        s.csr = scipy.sparse.csr_matrix(
            (values, cols, np.append(np.searchsorted(rows, np.arange(post)), len(rows))), shape=(post, pre)
        )
    else:
        s.kernel = "dense"
        s.w = np.zeros((pre, post), values.dtype)
        s.w[cols, rows] = values


def _prepare_group(op: Op) -> _Group:
    a = with_defaults(op)
    g = _Group(
        name=op.name,
        op=op,
        kind=a["kind"],
        size=int(a["size"]),
        depth=int(a["depth"]),
        frac=int(a["frac"]),
        msg_bits=int(a["msg_bits"]),
        state_bits=int(a["state_bits"]),
        out_shift=int(a["out_shift"]),
        coef_frac=int(a["coef_bits"]) - 1,
        decode=a["decode"],
        synapses=list(op.inputs) if a["kind"] != "source" else [],
        delta=int(a["delta"]),
    )
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
            g.c_re_scaled = np.ldexp(g.c_re.astype(np.float64), -g.coef_frac)
            g.c_im_scaled = np.ldexp(g.c_im.astype(np.float64), -g.coef_frac)
    return g


def _msg_may_clip(g: _Group) -> bool:
    """Whether sat(value, msg_bits) can change a value, from the range `value` can take."""
    acc_lo, acc_hi = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
    st_lo, st_hi = -(1 << (g.state_bits - 1)), (1 << (g.state_bits - 1)) - 1
    value_range = {
        "relay": (acc_lo, acc_hi),
        "relu": (0, acc_hi),
        # rshr is monotone and the state is already sat'd to state_bits
        "integrator": (rshr(st_lo, g.out_shift), rshr(st_hi, g.out_shift)),
        "cpx": (rshr(st_lo, g.out_shift), rshr(st_hi, g.out_shift)),
    }.get(g.kind)
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
@dataclass
class PreparedKernels:
    """A graph checked, its groups and its synapse groups' kernels: what both the numpy and the microcode
    engine need of it (see prepare_kernels). A synapse op's kernel says how W @ m is formed (`kernel`:
    "dense" is a BLAS product, the others follow W's non-zero pattern, see _choose_kernel) and, unless
    dense, lists W's non-zeros (`nonzeros`: rows, columns, int64 values, row-major); `synapse_chunk` runs
    a copy of it (its `out` and `sigma` are a run's own: set `sigma` to zeros [batch, post] when its pre
    group sends sigma-delta), `post_size` and `work_values` size a run's buffers."""

    groups: dict[str, _Group]  # templates without run state, as the graph has them (no merge, no fusion)
    synapses: dict[str, _Synapses]  # per synapse op; a kernel other than dense keeps its W's `nonzeros`
    readers: dict[str, list[str]]  # op -> the ops that read it, in execution order, each once
    order: list[Op]  # the graph's ops in execution order


@dataclass
class _PreparedNet:
    """What a run needs of a graph besides the input: checked once and kept (see prepare)."""

    groups: dict[str, _Group]  # templates without run state: a run works on copies; `synapses` name run_synapses
    synapses: dict[str, _Synapses]  # per synapse op (the microcode engine steps these)
    run_synapses: dict[str, _Synapses]  # what a numpy run steps: `synapses` with row-split classes merged
    order: list[tuple[str, str]]  # (kind, name) of the neuron groups and run_synapses in execution order
    outputs: list[tuple[str, str]]  # (output op, the group it reads)
    features: int  # of the input
    wake: dict[str, int]  # synapse group -> first step it runs
    ring_len: dict[str, int]  # neuron group -> steps of history its readers need (their largest delay)
    max_depth: int


_NEVER = 1 << 62  # the wake step of a synapse group that feeds nothing
# graph -> (signature, (), prepared net / kernels); weak, so a prepared net lives exactly as long as its graph
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KERNELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepare(graph: Graph, engine: str = "numpy") -> _PreparedNet:
    """The checked, prepared form of `graph` (kernels chosen, weights converted), built on the
    first run and reused while the graph's ops, attributes and parameter arrays stay the same
    ones: a run over a whole test set in many calls pays the set-up once. Replacing an op,
    an attribute or a parameter array re-prepares; editing a parameter array in place does not."""
    # `engine`: named by the check
    return cached_per_graph(_PREPARED, graph, lambda g: _prepare_net(prepare_kernels(g, engine)))


def prepare_kernels(graph: Graph, engine: str = "numpy") -> PreparedKernels:
    """The first half of `prepare`, kept per graph the same way: the graph checked (errors name `engine`),
    its groups and each synapse op's kernel, without the numpy run's merging and fusion (see _prepare_net).
    The microcode engine needs no more; a net run by both engines prepares this once."""
    return cached_per_graph(_KERNELS, graph, lambda g: _prepare_kernels(g, engine))


def cached_per_graph(cache: weakref.WeakKeyDictionary, graph: Graph, build, *extra):
    """build(graph), made once and kept in `cache` while the graph's ops, attributes and parameter
    arrays are the same ones, and `extra` holds the same objects (strings: equal ones)."""
    signature = _signature(graph)
    hit = cache.get(graph)
    if (
        hit is not None
        and _same_signature(hit[0], signature)
        and len(hit[1]) == len(extra)
        and all(a == b if isinstance(a, str) else a is b for a, b in zip(hit[1], extra))
    ):
        return hit[2]
    value = build(graph)
    cache[graph] = (signature, extra, value)
    return value


def _prepare_kernels(graph: Graph, engine: str) -> PreparedKernels:
    check_neuro_graph(graph, engine)
    order = graph.ops()
    readers: dict[str, list[str]] = {op.name: [] for op in order}
    for op in order:  # one walk instead of a graph.consumers per synapse group and question
        for src in dict.fromkeys(op.inputs):
            readers[src].append(op.name)
    groups = {op.name: _prepare_group(op) for op in order if op.kind == "neurons"}
    synapses = {op.name: _prepare_synapses(op, groups[op.inputs[0]]) for op in order if op.kind == "synapses"}
    for s in synapses.values():
        if s.kernel == "dense":
            s.nonzeros = None  # as many as W's values: formed again where a merge needs them
    return PreparedKernels(groups, synapses, readers, order)


def _prepare_net(kernels: PreparedKernels) -> _PreparedNet:
    order, readers = kernels.order, kernels.readers
    # the merge and the fusion below rewire and mark groups: copies, the kernels' templates stay as they are
    groups = {name: replace(g, synapses=list(g.synapses)) for name, g in kernels.groups.items()}
    synapses = kernels.synapses
    # A synapse group runs at step t only when a group it feeds is awake then.
    # A sigma synapse sums every message its pre group sends, whether or not its target is awake.
    wake = {
        name: 0 if groups[s.pre].delta else min((groups[c].depth for c in readers[name]), default=_NEVER)
        for name, s in synapses.items()
    }
    ring_len: dict[str, int] = {}
    for s in synapses.values():
        ring_len[s.pre] = max(ring_len.get(s.pre, 0), s.delay)
    run_synapses = _merge_row_split(order, readers, groups, synapses)
    _fuse(order, readers, groups, run_synapses)
    run_order = [(op.kind, op.name) for op in order if op.kind == "neurons" or op.name in run_synapses]
    return _PreparedNet(
        groups,
        synapses,
        run_synapses,
        run_order,
        [(o.name, o.inputs[0]) for o in order if o.kind == "output"],
        int(next(op for op in order if op.kind == "input").shape[0]),
        wake,
        ring_len,
        max((g.depth for g in groups.values()), default=0),
    )


def _merge_row_split(
    order: list[Op], readers: dict[str, list[str]], groups: dict[str, _Group], synapses: dict[str, _Synapses]
) -> dict[str, _Synapses]:
    """The synapse groups a run steps. assign-bitwidths splits a linear into one synapse group per
    weight-exponent class, each holding only its rows (docs/fixed_point.md, --weight-exp): an S4D B
    of a paper-size model became 13 [8192, 128] groups, each a full pass over the pre messages.
    Groups with the same pre, delay and readers, on the float path, whose non-zero rows are disjoint
    run as one, each post row's weights scaled by its own group's 2^-shift: a post row's output is
    its own group's sat(shr(acc, shift), 32) -- floor is a no-op on the integers of rows with
    shift <= 0 -- and the other groups would add 0 to its dendritic sum and clip nothing, so every sum
    and count is the same. Readers are rewired in `groups` (a product's two operands are never merged)."""
    classes: dict[tuple, list[_Synapses]] = {}
    for name, s in synapses.items():
        these = tuple(readers[name])
        if s.exact_float and not s.pre_clip and these and all(groups[r].kind != "product" for r in these):
            classes.setdefault((s.pre, s.delay, these), []).append(s)
    run = dict(synapses)
    ops = {op.name: op for op in order}
    for members in classes.values():
        if len(members) < 2:
            continue
        nonzeros = {  # a dense kernel keeps none (see _prepare_kernels)
            s.name: s.nonzeros if s.nonzeros is not None else _nonzeros(ops[s.name].params["weight"]) for s in members
        }
        owned = np.zeros(members[0].post_size, bool)
        row_shift = np.zeros(members[0].post_size, np.int64)
        merged = []
        for s in members:  # the first group owning a row keeps it; a group overlapping one merged already stays apart
            own = nonzeros[s.name][0]  # rows, each once per non-zero
            if not owned[own].any():
                owned[own] = True
                row_shift[own] = s.shift
                merged.append(s)
        if len(merged) < 2:
            continue
        first = merged[0]
        rows, cols, vals = (np.concatenate([nonzeros[s.name][i] for s in merged]) for i in range(3))
        # each row is one group's, its terms in column order: a stable sort by row keeps them so
        by_row = np.argsort(rows, kind="stable")
        rows, cols, vals = rows[by_row], cols[by_row], vals[by_row]
        starts = np.flatnonzero(np.diff(rows, prepend=-1))
        one = _Synapses(
            first.name,
            first.pre,
            max(s.shift for s in merged),
            0,
            first.delay,
            first.pre_size,
            first.post_size,
            exact_float=True,
            may_clip=any(s.may_clip for s in merged),
        )
        _choose_kernel(one, (first.post_size, first.pre_size), rows, cols, vals, starts, row_shift)
        for s in merged:
            del run[s.name]
        run[one.name] = one
        names = {s.name for s in merged}
        for r in {r for s in merged for r in readers[s.name]}:
            g = groups[r]
            g.synapses = [n for n in g.synapses if n not in names or n == first.name]
    return run


def _fuse(order: list[Op], readers: dict[str, list[str]], groups: dict[str, _Group], run: dict[str, _Synapses]) -> None:
    """Let a float cpx group's kernel form the synapse groups around it (engine_kernels.cpx_float_steps), so
    their outputs never go through memory: its input, when it is the only one (no bias), a broadcast (pre p
    feeds posts p k .. p k + k - 1 alone: an S4D layer's B) that feeds no other group and clips nothing;
    and a channel sum reading its states (its messages; post p sums pres p k .. p k + k - 1: an S4D layer's
    C). The kernel forms the same sums (exact in float64 in any order) and floors them the same way. When
    that channel sum is all that reads the group (`unread`), a run without traces keeps only its state:
    the kernel runs each sequence's steps with its state in cache and writes no messages. The fused
    synapse groups are copies: `synapses` (what the microcode engine steps) keeps its own."""
    outputs_read = {op.inputs[0] for op in order if op.kind == "output"}
    for g in groups.values():
        if g.kind != "cpx" or not g.exact_float:
            continue
        name = g.synapses[0] if len(g.synapses) == 1 else None
        s = run.get(name)
        if (
            s is not None
            and g.bias is None
            and s.kernel == "broadcast"
            and s.exact_float
            and not s.may_clip
            and not groups[s.pre].delta
            and readers[name] == [g.name]
        ):
            run[name] = replace(s, fused="post")
            g.fused_in = name
        if _states_in_buffer(g):
            group_readers = [n for n, s in run.items() if s.pre == g.name]
            out = next((n for n in group_readers if run[n].kernel == "channel_sum"), None)
            if out is not None and run[out].exact_float:
                run[out] = replace(run[out], fused="pre")
                g.fused_out = out
                g.unread = group_readers == [out] and g.name not in outputs_read


def _signature(graph: Graph) -> list[tuple]:
    # the parameter arrays themselves are kept, so a replaced array cannot reuse an old id
    return [(op.name, op.kind, op.inputs, repr(op.attrs), tuple(op.params.items())) for op in graph.ops()]


def _same_signature(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        x[:4] == y[:4] and len(x[4]) == len(y[4]) and all(k == j and v is w for (k, v), (j, w) in zip(x[4], y[4]))
        for x, y in zip(a, b)
    )


_CHUNK_VALUES = (
    1 << 20
)  # values of a part's step-proportional buffers (8 MiB, an upper bound: they mostly stay in cache)


@one_blas_thread
def run_numpy(graph: Graph, x: np.ndarray, trace: bool = False) -> EngineResult:
    """Run x [batch, tokens, features] through the integer network; see EngineResult. A large batch
    is split over the cores (sequences are independent; numpy releases the GIL in its kernels), each
    part run by one thread into its rows of the same result arrays."""
    net = prepare(graph)
    x = check_sequences(x, net.features)
    batch, tokens, _ = x.shape
    steps = tokens + net.max_depth
    parts = batch_parts(batch)
    threads = len(parts)
    room = _check_run_size(net.groups, net.run_synapses, net, x.shape, steps, trace)
    chunk = chunk_steps(_step_values(net.groups, net.run_synapses, trace), -(-batch // threads), batch, steps, room)

    # step-major [step or token, batch, size] while running: a chunk of steps is one contiguous block
    read = {group: np.zeros((tokens, batch, net.groups[group].size), np.int64) for _, group in net.outputs}
    traces: dict[str, np.ndarray] = {}
    if trace:
        for g in net.groups.values():
            traces[g.name] = np.zeros((steps, batch, g.size), np.int64)
            if g.stateful:
                traces[f"{g.name}.state"] = np.zeros((steps, batch, g.size), np.int64)
            if g.delta:
                traces[f"{g.name}.last"] = np.zeros((steps, batch, g.size), np.int64)

    def run_part(rows: slice) -> dict[str, _Group]:
        return _run_part(
            net,
            x[rows],
            steps,
            chunk,
            {k: v[:, rows] for k, v in read.items()},
            {k: v[:, rows] for k, v in traces.items()},
        )

    groups = merged_counts(run_parts(run_part, parts))
    # [batch, step or token, size] views: no copy beyond what the run-size check counted
    read = {name: v.transpose(1, 0, 2) for name, v in read.items()}
    traces = {name: v.transpose(1, 0, 2) for name, v in traces.items()}
    return engine_result(net.outputs, groups, read, traces if trace else None, steps)


def _run_part(
    net: _PreparedNet, x: np.ndarray, steps: int, chunk: int, read: dict[str, np.ndarray], traces: dict[str, np.ndarray]
) -> dict[str, _Group]:
    """Run sequences x [batch, tokens, features] in chunks of steps, writing what the outputs read into
    `read` and the traces into `traces` (step-major views); its groups, with their counts."""
    batch, tokens, _ = x.shape
    groups = {name: replace(g, counts=dict.fromkeys(SAT_QUANTITIES, 0)) for name, g in net.groups.items()}
    synapses = {name: replace(s) for name, s in net.run_synapses.items()}
    for g in groups.values():
        _start_group(g, x, batch, chunk, net.ring_len.get(g.name, 0), bool(traces))
    for s in synapses.values():
        if groups[s.pre].delta:
            s.sigma = np.zeros((batch, s.post_size), np.float64 if s.exact_float else np.int64)
        if s.fused == "pre":
            s.sums = np.zeros((len(groups[s.pre].buf), batch, s.post_size))
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        for kind, name in net.order:
            if kind == "synapses":
                s = synapses[name]
                s.chunk_out = synapse_chunk(s, groups[s.pre], t0, n, net.wake[name], batch)
            else:
                _group_chunk(groups[name], t0, n, batch, tokens, synapses, read.get(name), traces)
    return groups


def engine_result(
    outputs: list[tuple[str, str]], groups: dict, read: dict, traces: dict | None, steps: int
) -> EngineResult:
    """The result of a run from its outputs (output name, the group it reads), its groups (each with frac,
    decode, counts, zeros, total) and the messages `read` [batch, tokens, size] of the groups the outputs
    read: shared by the numpy and microcode engines."""
    return EngineResult(
        outputs={out: decode_output(read[group], groups[group].frac, groups[group].decode) for out, group in outputs},
        raw={out: read[group].copy() for out, group in outputs},
        saturation={name: dict(g.counts) for name, g in groups.items()},
        sparsity={name: g.zeros / g.total if g.total else 0.0 for name, g in groups.items()},
        trace=traces,
        steps=steps,
    )


def output_groups(graph: Graph) -> list[tuple[str, str]]:
    """(output op, the neuron group it reads) for every output of the graph, in order."""
    return [(out.name, out.inputs[0]) for out in graph.outputs()]


def _step_values(groups: dict[str, _Group], synapses: dict[str, _Synapses], trace: bool = False) -> int:
    """Values per sequence that one more step of chunk adds at most: a group's message ring (whole
    chunks and the history before them) grows by up to 2 rows (none for an unread group not traced),
    its chunk of states (unless they are its messages) by 1, a synapse group's chunk of outputs and
    kernel temporaries by 1 (a fused one: none, or its ring of sums by 2 rows; see _fuse)."""
    return sum(
        g.size * ((0 if g.unread and not trace else 2) + (1 if g.stateful and not _states_in_buffer(g) else 0))
        for g in groups.values()
    ) + sum({"post": 0, "pre": 2 * s.post_size}.get(s.fused, s.post_size + s.work_values) for s in synapses.values())


def chunk_steps(step_values: int, part: int, batch: int, steps: int, room: int) -> int:
    """Steps a chunk runs: as many as keep a part of `part` sequences' step-proportional buffers within
    _CHUNK_VALUES (in cache) and the whole batch's within the `room` (bytes) the work limit leaves above
    a run of 1-step chunks; at least 1. A chunk runs every synapse group as one product over all its
    steps and every stateless group as one elementwise pass: at batch 1 the per-step calls were most
    of the time."""
    return max(1, min(steps, _CHUNK_VALUES // max(part * step_values, 1), 1 + room // max(8 * batch * step_values, 1)))


def buffer_rows(chunk: int, ring: int) -> int:
    """Rows of a group's message ring: whole chunks of `chunk` steps, with room for `ring` steps of history
    (its readers' largest delay) before the chunk being run."""
    return chunk * -(-(ring + chunk) // chunk)


def _check_run_size(groups, synapses, net: _PreparedNet, x_shape, steps: int, trace: bool) -> int:
    """Refuse a run whose buffers (8 bytes a value) over the whole batch would exceed the work limit when
    run in chunks of 1 step: per group its message ring (history and the step), state, `last` and
    states, per synapse group its outputs, kernel temporaries and sigma sum, the input, its quantized
    copy, what the outputs read (twice: raw and decoded) and the traces. Returns the bytes the limit
    leaves over: longer chunks take at most that (see _step_values, chunk_steps)."""
    batch, tokens, features = x_shape
    values = sum(
        g.size
        * (
            buffer_rows(1, net.ring_len.get(g.name, 0))
            + 2
            + (1 if g.stateful and not _states_in_buffer(g) else 0)
            + (3 * steps if trace else 0)
        )
        for g in groups.values()
    )
    values += sum(
        # a fused channel sum's outputs are a ring with its pre group's rows (see _fuse)
        buffer_rows(1, net.ring_len.get(s.pre, 0)) * s.post_size
        if s.fused == "pre"
        else 2 * s.post_size + s.work_values
        for s in synapses.values()
    )
    outs = sum(groups[group].size for _, group in net.outputs)
    per_sequence = 8 * (values + tokens * (2 * features + 3 * outs))
    refuse_oversized_run("numpy engine", batch, tokens, per_sequence, trace)
    return limits.current().work_bytes - batch * per_sequence


def run_net(net, x: np.ndarray, trace: bool = False) -> EngineResult:
    """The engine entry point `ssmc.api` uses: run a compiled Net's graph."""
    return run_numpy(net.graph, x, trace=trace)


def _start_group(g: _Group, x: np.ndarray, batch: int, chunk: int, ring: int, trace: bool) -> None:
    """A group's run state: its message buffer [rows, batch, size] -- `ring` steps of history (zeros
    before step 0), then the chunk being run from row `pos` -- its state and its source messages."""
    dtype = np.float64 if g.exact_float else np.int64
    # an unread group (see _fuse) keeps no messages unless traced: a buffer of 0 columns keeps the ring's rows
    g.buf = np.zeros((buffer_rows(chunk, ring), batch, 0 if g.unread and not trace else g.size), dtype)
    g.pos, g.ran = 0, 0
    if g.stateful:
        g.state = np.zeros((batch, g.size), dtype)
        if not _states_in_buffer(g):
            g.states = np.empty((chunk, batch, g.size), dtype)
    if g.delta:
        g.last = np.zeros((batch, g.size), dtype)
    if g.kind == "source":
        msgs, clipped = quantize_source(x, g.frac, g.msg_bits)
        g.source_msgs = np.ascontiguousarray(msgs.transpose(1, 0, 2), dtype)  # exact: |m| <= 2^(msg_bits-1) <= 2^52
        g.source_clipped = clipped.sum(axis=(0, 2))


def synapse_chunk(s: _Synapses, pre: _Group, t0: int, n: int, wake: int, batch: int):
    """(acc, first): the group's outputs before the 32-bit sat, shr(W @ m_pre[t - delay], -weight_exp) (of the
    sigma sum for a sigma synapse), for steps t0 + first .. t0 + n - 1 as rows [(n - first) * batch, post]
    (the readers sat and count the rows of their awake steps); None when they are all zero. Steps before
    `wake` are not formed (no reader is awake); a sigma synapse sums every step. `acc` may be a buffer the
    next chunk overwrites. `s` is a run's copy of a prepared kernel (see PreparedKernels); `pre` any group
    with the numpy engine's message ring (`buf`, `pos`: where the chunk being run starts, `depth`)."""
    first = 0 if s.sigma is not None else max(0, wake - t0)
    if s.kernel == "zero" or first >= n or t0 + n - s.delay <= pre.depth:  # W = 0, no reader awake, or the
        return None  # pre group idle (then a sigma sum is still 0 too: nothing was sent yet)
    ring = pre.buf if s.sums is None else s.sums  # sums: the pre group's kernel formed the outputs (fused)
    start, count = (pre.pos - s.delay + first) % len(ring), n - first
    if start + count <= len(ring):
        m = ring[start : start + count].reshape(count * batch, -1)
    else:  # from the end of the ring on into its start
        m = np.concatenate((ring[start:], ring[: start + count - len(ring)])).reshape(count * batch, -1)
    dtype = np.float64 if s.exact_float else np.int64
    if s.sums is not None or s.fused == "post":  # outputs, or the messages the post group forms them from
        return (m if m.dtype == dtype else m.astype(dtype)), first
    acc = weighted_sum(s, m if m.dtype == dtype else m.astype(dtype))  # float m: exact integers
    if s.sigma is not None:  # sigma[t] = sigma[t - 1] + W @ m[t - delay]: every partial sum is one of them
        steps = acc.reshape(n, batch, s.post_size)  # (|sigma| = |W @ last| stays within the bound: exact)
        steps[0] += s.sigma
        np.cumsum(steps, axis=0, out=steps)
        s.sigma[...] = steps[-1]
    if s.exact_float:  # exact: see _prepare_synapses
        if s.shift > 0:
            np.floor(acc, out=acc)
    else:
        if s.pre_clip:
            acc = np.clip(acc, -s.pre_clip, s.pre_clip)
        acc = shr(acc, s.shift)
    return acc, first


def _group_chunk(
    g: _Group,
    t0: int,
    n: int,
    batch: int,
    tokens: int,
    synapses: dict[str, _Synapses],
    read: np.ndarray | None,
    traces: dict[str, np.ndarray],
) -> None:
    """Run group g for steps t0 .. t0 + n - 1 into its buffer; count, read and trace what it sent."""
    pos = (g.pos + g.ran) % len(g.buf)  # every chunk but the last is full: a chunk never wraps
    g.pos, g.ran = pos, n
    out = g.buf[pos : pos + n]
    idle = min(max(g.depth - t0, 0), n)  # steps before its depth: emits 0, keeps its state 0
    out[:idle] = 0
    if g.fused_out is not None:
        synapses[g.fused_out].sums[pos : pos + idle] = 0
    awake = n - idle
    step_zeros = None
    if awake:
        msgs = out[idle:]
        if g.kind == "source":
            k = min(max(tokens - t0 - idle, 0), awake)  # steps that read a token
            msgs[:k] = g.source_msgs[t0 + idle : t0 + idle + k]
            msgs[k:] = 0
            g.counts["message"] += int(g.source_clipped[t0 + idle : t0 + idle + k].sum())
            if g.delta:
                _sigma_delta_steps(g, msgs.copy(), awake, batch, msgs, traces.get(f"{g.name}.last"), t0 + idle)
        else:
            syn_out = {}
            fused = (None, None, None, None)
            if g.fused_in is not None and synapses[g.fused_in].chunk_out is not None:
                m, first = synapses[g.fused_in].chunk_out
                fused = (synapses[g.fused_in], m[(idle - first) * batch :], None, None)
            if g.fused_out is not None:
                out_syn = synapses[g.fused_out]
                fused = (*fused[:2], out_syn, out_syn.sums[pos + idle : pos + n])
            for name in g.synapses:
                s = synapses[name]
                if s.chunk_out is None or name == g.fused_in:
                    continue
                acc, first = s.chunk_out
                acc = acc[(idle - first) * batch :]  # first <= idle: a synapse wakes with its first reader
                if s.may_clip:
                    acc, clipped = _sat_count(acc, ACC_BITS)
                    g.counts["accumulator"] += clipped
                syn_out[name] = (acc, 0)
            value, step_zeros = _awake_values(g, syn_out, awake, batch, msgs, traces, t0 + idle, fused)
            if g.delta:
                _sigma_delta_steps(g, value, awake, batch, msgs, traces.get(f"{g.name}.last"), t0 + idle)
            elif value is not msgs:
                msgs.reshape(awake * batch, g.size)[...] = value
    lo, hi = max(t0, g.depth), min(t0 + n, g.depth + tokens)  # the steps that carry a token
    if hi > lo:
        carried = out[lo - t0 : hi - t0]
        g.total += (hi - lo) * batch * g.size  # (an unread group's buffer holds no messages)
        if g.kind != "source" and step_zeros is not None:  # counted while in cache
            g.zeros += int(step_zeros[lo - t0 - idle : hi - t0 - idle].sum())
        else:
            g.zeros += int(np.count_nonzero(carried == 0))  # on bools: many times faster than on floats
        if read is not None:
            read[lo - g.depth : hi - g.depth] = carried  # float64 messages hold exact integers
    if g.name in traces:
        traces[g.name][t0 : t0 + n] = out


def _awake_values(
    g: _Group, syn_out, steps: int, batch: int, msgs: np.ndarray, traces, t: int, fused: tuple = (None,) * 4
) -> tuple[np.ndarray, np.ndarray | None]:
    """The dense messages [steps * batch, size] of an awake group for `steps` steps from step t (elementwise
    kinds in one pass; a stateful group step by step, its states traced) -- or `msgs` itself when a
    group whose message is its state wrote its states there, then with the zeros of each step."""
    rows = steps * batch
    dtype = np.float64 if g.exact_float else np.int64
    if g.kind == "product":
        return _message(g, _product(g, syn_out, rows)), None
    a = _dendrite(g, syn_out, dtype, rows)
    if g.kind in ("relay", "relu", "lut"):
        if a is None:
            a = np.zeros((rows, g.size), dtype)
        if g.kind == "lut":
            i = shr(a, g.lut_shift) - g.lut_lo
            top = len(g.table) - 1
            g.counts["message"] += int(np.count_nonzero((i < 0) | (i > top)))  # a clipped index saturates
            return g.table[np.clip(i, 0, top)], None
        return _message(g, a if g.kind == "relay" else np.maximum(a, 0)), None
    if g.kind not in STATEFUL_KINDS:
        raise IRError(f"%{g.name}: unknown neuron kind {g.kind!r}")
    if _states_in_buffer(g):
        step_zeros = _state_steps(g, a, steps, batch, msgs, count_zeros=True, fused=fused)
    else:
        _state_steps(g, a, steps, batch, g.states[:steps], count_zeros=False, fused=fused)
    states = msgs if _states_in_buffer(g) else g.states[:steps]
    if f"{g.name}.state" in traces:
        traces[f"{g.name}.state"][t : t + steps] = states
    if _states_in_buffer(g):
        return msgs, step_zeros
    flat = states.reshape(rows, g.size)
    return _message(g, _rshr_float(flat, g.out_shift) if g.exact_float else rshr(flat, g.out_shift)), None


def _states_in_buffer(g: _Group) -> bool:
    """A stateful group whose message is its state writes its states straight into its message buffer."""
    return g.stateful and _msg_is_state(g)


def _state_steps(
    g: _Group,
    a: np.ndarray | None,
    steps: int,
    batch: int,
    states: np.ndarray,
    count_zeros: bool,
    fused: tuple = (None, None, None, None),
) -> np.ndarray | None:
    """Update a stateful group's state (g.state, in place) for `steps` steps in one compiled kernel call
    (engine_kernels), writing the state after each step into states [steps, batch, size]. With count_zeros,
    also the zero states of each step. `fused`: (the synapse group whose outputs are this group's input and
    the pre messages [steps * batch, pre] they are formed from, the synapse group whose outputs the kernel
    forms from the states, its sums [steps, batch, post]) -- see _fuse; None where there is none."""
    # imported on first use: numba's import and start (~0.6 s of CPU, once per process) is paid by the runs
    # that step a stateful group, not by every command that imports the engine (ssmc report, ...)
    from ssmc.runtime import engine_kernels

    zeros = np.empty(steps, np.int64)
    if a is not None and not (a.flags.c_contiguous and a.flags.writeable):
        a = np.ascontiguousarray(a)  # a bias alone is a read-only broadcast: one kernel type for every input
    lo, hi = -(1 << (g.state_bits - 1)), (1 << (g.state_bits - 1)) - 1
    if g.kind == "cpx" and g.exact_float:
        into, m, out, sums = fused
        clipped = engine_kernels.cpx_float_steps(
            g.state,
            g.c_re_scaled,
            g.c_im_scaled,
            a,
            m,
            *((into.w, into.shift > 0) if m is not None else (None, False)),
            states if states.shape[2] else None,  # an unread group's buffer holds no messages
            sums,
            *((out.w, out.shift > 0) if sums is not None else (None, False)),
            float(lo),
            float(hi),
            zeros,
        )
    elif g.kind == "cpx":
        clipped = engine_kernels.cpx_int_steps(g.state, g.c_re, g.c_im, g.coef_frac, a, states, lo, hi, zeros)
    else:
        if g.exact_float:
            lo, hi = float(lo), float(hi)
        clipped = engine_kernels.integrator_steps(g.state, a, states, lo, hi, zeros)
    g.counts["state"] += int(clipped)
    return zeros if count_zeros else None


def _sigma_delta_steps(
    g: _Group, y: np.ndarray, steps: int, batch: int, msgs: np.ndarray, last_trace: np.ndarray | None, t: int
) -> None:
    """The sigma-delta messages of `steps` steps of dense messages y [steps * batch, size], step by step."""
    y = y.reshape(steps, batch, g.size)
    for j in range(steps):
        msgs[j] = _sigma_delta(g, y[j])
        if last_trace is not None:
            last_trace[t + j] = g.last


def weighted_sum(s: _Synapses, m: np.ndarray) -> np.ndarray:
    """acc = W @ m for messages m [rows, pre] in the kernel's dtype, into the first rows of s.out
    [rows, post] (allocated on first use, then reused). Every kernel forms the same integer sums; see
    _choose_kernel."""
    if s.out is None or s.out.shape[0] < m.shape[0] or s.out.dtype != m.dtype:
        s.out = np.empty((m.shape[0], s.post_size), m.dtype)
    out = s.out[: m.shape[0]]
    if s.kernel == "dense":
        np.matmul(m, s.w, out=out)
    elif s.kernel == "broadcast":
        if s.w.shape[1] == 1:  # one post per pre: elementwise
            np.multiply(m, s.w[:, 0], out=out)
        else:
            np.einsum("bp,pk->bpk", m, s.w, out=out.reshape(m.shape[0], s.pre_size, s.w.shape[1]), optimize=False)
    elif s.kernel == "channel_sum":
        np.einsum("bpk,pk->bp", m.reshape(m.shape[0], s.post_size, s.w.shape[1]), s.w, out=out, optimize=False)
    elif s.kernel == "gather":
        np.take(m, s.cols, axis=1, out=out)
        out *= s.w
    elif s.kernel == "segment":  # in blocks of sequences whose terms stay in cache
        blocks = _row_blocks(m.shape[0], len(s.w))
        if s.terms is None or s.terms.dtype != m.dtype or len(s.terms) < min(blocks[0].stop, m.shape[0]):
            s.terms = np.empty((min(blocks[0].stop, m.shape[0]), len(s.w)), m.dtype)
        if s.rows is not None:
            out.fill(0)
        for rows in blocks:
            terms = s.terms[: len(out[rows])]
            if s.cols is None:
                np.multiply(m[rows], s.w, out=terms)
            else:
                np.take(m[rows], s.cols, axis=1, out=terms)
                terms *= s.w
            if s.rows is None:
                np.add.reduceat(terms, s.starts, axis=1, out=out[rows])
            else:
                out[rows, s.rows] = np.add.reduceat(terms, s.starts, axis=1)
    elif s.kernel == "csr":
        out[...] = (s.csr @ m.T).T
    else:  # "zero"
        out.fill(0)
    return out


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


_BLOCK_VALUES = 1 << 17  # values per block of sequences: 1 MiB of float64 stays in a 2 MiB L2


def _row_blocks(batch: int, size: int) -> list[slice]:
    rows = max(1, _BLOCK_VALUES // max(size, 1))
    return [slice(i, i + rows) for i in range(0, batch, rows)]


def _msg_is_state(g: _Group) -> bool:
    # sat(rshr(state, 0), msg_bits) = state; a sigma-delta group sends something else
    return g.out_shift == 0 and not g.msg_may_clip and not g.delta


def _rshr_float(v: np.ndarray, s: int) -> np.ndarray:
    """rshr on float64 integers as floor(v * 2^-s + 1/2); exact when 2|v| + 2^s <= 2^53."""
    return np.floor(v * 2.0**-s + 0.5) if s > 0 else v


def _message(g: _Group, value: np.ndarray) -> np.ndarray:
    if not g.msg_may_clip:
        return value
    m, n = _sat_count(value, g.msg_bits)
    g.counts["message"] += n
    return m
