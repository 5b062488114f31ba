"""The microcode engine: runs a net's neuron programs, decoded from their binaries.

What runs is net.lava's `microcode/<group>.bin` (docs/microcode.md), not the
IR's neuron kinds; the IR gives only the wiring (synapse groups), the host's
side (input scale, when to read outputs, how to decode them) and a fingerprint
check that each program was generated for its group.

One step t:
1. synapse stage (the contract's, not microcode): every synapse group computes
   shr(W @ m_pre[t - delay], -weight_exp) -- or, when its pre group sends
   sigma-delta, of W @ m summed over time -- and puts it on its target's port;
   an `in` reading it saturates it to 32 bits and counts what it clipped;
2. every group runs its program once for each of its neurons (SIMD over the
   neurons and the batch);
3. the emitted messages go into the ring buffers the synapses read.

Within a chunk of steps it runs that in the numpy engine's order
(numpy_engine docstring): group by group in execution order, each synapse
group over the whole chunk, messages in rings of whole chunks. A part of the
batch (one per thread) runs its sequences a sub-part after the other, each
through all its steps (_sub_part_shape): long chunks of few sequences, so
that a synapse group reads messages of the same chunk; a loaded net keeps
those buffers for its next run (_take_buffers). The interpreter and
the synapse stage of sparse synapse groups are compiled kernels
(microcode_kernels.py, numba): the interpreter executes the decoded program's
instructions over tiles of neurons, each tile through all the chunk's steps,
every class of a unit (below) in one call;
the synapse kernel sums by the pattern of W (a dot product over a row's span
of columns, a broadcast of one column to a run of rows, or gathers); a dense
synapse group runs the numpy engine's kernel (BLAS).

A sparse synapse group delivers only the rows where W has a non-zero: the
other rows of its port are 0 at every step (and never clip). So the neurons of
a unit fall into classes by which of their `in` reads can be non-zero, and
each class runs the decoded program with the reads known to be 0 folded away
(`_specialize`: an `in` of a zero row becomes `li 0`, an add of 0 a move, and
what nothing reads any more is dropped) -- a partial evaluation that computes
exactly the integers and counts of the whole program. An S4D layer whose B was
split by row exponent into 13 synapse groups feeds 13 ports, of which each
neuron reads one non-zero: its class runs 1 `in`, not 13 and 12 adds.
Then the class's code gets superinstructions (`_fuse`): `mul, mul, add|sub,
rshr` becomes one fma pass, `add|sub ... sat` one addsat, two emits of
neighbouring lanes one emit2, where the registers they skip writing are dead
-- the same integers and counts in fewer passes over the tile.

The source group's port holds the host's token, rounded to an integer
(floor(x 2^frac + 1/2), clipped to 34 bits); its program saturates it.
"""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass, field, replace

import numpy as np

from ssmc import limits
from ssmc.data import check_sequences
from ssmc.errors import MicrocodeError
from ssmc.ir.graph import Graph
from ssmc.ir.ops import with_defaults
from ssmc.backend_loihi.microcode.emit import fingerprint, ports_of, read_index
from ssmc.backend_loihi.microcode.isa import (
    N_STATE,
    N_TEMP,
    STATE0,
    ZERO,
    Instr,
    Program,
    decode_program,
    operand_kinds,
)
from ssmc.runtime import numpy_engine
from ssmc.runtime.microcode_kernels import CODE_COLUMNS, COUNTS, NONZERO, OP, run_unit_chunk, sparse_synapse_chunk
from ssmc.runtime.parallel import batch_parts, merged_counts, one_blas_thread, run_parts
from ssmc.runtime.numpy_engine import (
    SAT_QUANTITIES,
    EngineResult,
    buffer_rows,
    cached_per_graph,
    engine_result,
    output_groups,
    prepare_kernels,
    quantize_source,
    refuse_oversized_run,
)

HOST_BITS = 34  # the host's rounded token is clipped to this; any value it clips is outside msg_bits too
_PORT_CLIP = 1 << 40  # a dense synapse output is clipped to this before it becomes int64: it sats the same
_COUNTED = {1: "accumulator", 2: "state", 3: "message"}  # the kernels' counter numbers (the ISA's)

_operands = functools.cache(lambda op: frozenset(operand_kinds(op)))  # an instruction's operand kinds, looked up
# once per opcode: the program planning asks for every instruction of every class

_LOADED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # graph -> its groups' programs, see run_net


@dataclass
class _Class:
    """Neurons of a unit whose `in` reads are zero in the same places, and the code they run."""

    neurons: np.ndarray  # int64 [members]: neuron numbers within the unit
    comps: np.ndarray  # int64 [members]: the first compartment of each in the group
    code: np.ndarray  # int64 [instructions, CODE_COLUMNS], microcode_kernels' numbering; `in` reads slot `aux`
    cols: np.ndarray  # int64 [slots, members]: the port buffer column of each slot, per member
    bases: np.ndarray  # int64 [slots]: the first column where a slot's columns are consecutive, else -1
    params: np.ndarray  # int64 [params, members]: the members' parameter memory
    states: np.ndarray  # int64: the state registers (0..7) the code or a probe uses
    temps: np.ndarray  # int64: the temporaries the code reads (zeroed before each update)


@dataclass
class _Unit:
    """One program over compartments [lo, hi) of its group: a core's block of it, or all of it."""

    prog: Program
    lo: int
    hi: int
    classes: list[_Class] = field(default_factory=list)
    probe_regs: np.ndarray = field(default_factory=lambda: np.zeros((3, 0), np.int64))  # register, lane, kind
    packed: tuple = ()  # the classes as run_unit_chunk takes them, one after the other (_pack_classes)
    members: int = 0
    state: np.ndarray | None = None  # run state: the members' s0..s7 [8, batch, members], classes in order


@dataclass
class _Group:
    name: str
    units: list[_Unit]
    depth: int
    frac: int
    decode: str
    size: int
    n_ports: int
    raw: bool = False  # the ports hold values an `in` reads as they are (the host's token): no sat, no count
    emits_all: bool = False  # every path through every unit's code emits every lane: no message to zero first
    colmaps: list[np.ndarray] = field(default_factory=list)  # per port: int64 [size], column in `ports`, -1: 0
    width: int = 0  # columns of `ports`
    ports: np.ndarray | None = None  # run: the chunk's port values [n * batch, width] (int64, before the sat)
    buf: np.ndarray | None = None  # messages [rows, batch, size], a ring of whole chunks (numpy_engine._group_chunk)
    pos: int = 0  # where the chunk being run starts in buf
    ran: int = 0  # steps of that chunk
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SAT_QUANTITIES, 0))
    counters: np.ndarray | None = None  # run: the kernels' saturation counters and non-zero messages (NONZERO)
    zeros: int = 0
    total: int = 0

    @property
    def prog(self) -> Program:  # every unit runs the same code with the same lanes and probes
        return self.units[0].prog

    @property
    def probe_kinds(self) -> list[str]:
        return sorted({k for k, _, _ in self.prog.probes})


@dataclass
class _Synapses:
    pre: str
    post: str
    col0: int  # its first column in the post group's port buffer
    delay: int
    sigma_pre: bool  # the pre group sends sigma-delta: sum W @ m over time before the shift
    # sparse (the compiled kernel): its non-zero rows in CSR form, one port column per row
    indptr: np.ndarray | None = None
    cols: np.ndarray | None = None
    vals: np.ndarray | None = None
    shift: int = 0  # > 0: right shift; < 0: left shift (see sparse_synapse_chunk)
    shifts: np.ndarray | None = None  # each row's shift (the row-split classes of one W differ)
    firsts: np.ndarray | None = None  # each row's first column where its terms' columns follow each other, else -1
    runs: np.ndarray | None = None  # a broadcast (see _fill_spans): the first row of each run reading one column
    # dense: the numpy engine's prepared kernel (a run's own copy), one port column per post row
    kernel: object = None
    post_size: int = 0
    sigma: np.ndarray | None = None  # run state (sparse: int64 [batch, rows])

    @property
    def columns(self) -> int:
        return self.post_size if self.kernel is not None else len(self.indptr) - 1


@dataclass
class _Loaded:
    groups: dict[str, _Group]  # templates without run state
    synapses: dict[str, _Synapses]
    # run buffers no run is using now, kept for the next (see _take_buffers): (sequences, chunk, groups, synapses)
    spare: list[tuple] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@one_blas_thread
def run_net(net, x: np.ndarray, trace: bool = False) -> EngineResult:
    """Run x [batch, tokens, features] through the net's microcode; see numpy_engine.EngineResult."""
    graph: Graph = net.graph
    kernels = prepare_kernels(graph, "microcode")  # checks the graph too (both once per graph)
    x = check_sequences(x, graph.inputs()[0].shape[0])
    batch, tokens, _ = x.shape
    # the decoded, checked programs are kept per graph and net.lava entries (see numpy_engine.prepare)
    loaded = cached_per_graph(
        _LOADED,
        graph,
        lambda gr: _load(gr, net.extras, kernels),
        *(v for item in sorted(net.extras.items()) for v in item),
    )
    steps = tokens + max((g.depth for g in loaded.groups.values()), default=0)
    ring_len: dict[str, int] = {}
    for s in loaded.synapses.values():
        ring_len[s.pre] = max(ring_len.get(s.pre, 0), s.delay)
    parts = batch_parts(batch)
    threads = len(parts)
    room = _check_run_size(loaded, ring_len, graph, x.shape, steps, trace)
    # per step of a chunk and sequence: a group's message ring (up to 2 rows) and port buffer, a dense
    # synapse group's outputs and kernel temporaries
    step_values = sum(2 * g.size + g.width for g in loaded.groups.values()) + sum(
        2 * s.post_size + s.kernel.work_values for s in loaded.synapses.values() if s.kernel is not None
    )
    sequences, chunk = _sub_part_shape(step_values, -(-batch // threads), threads, batch, steps, room)
    order = [(op.kind, op.name) for op in graph.ops() if op.kind in ("neurons", "synapses")]
    # step-major [step or token, batch, size] while running: a chunk of steps is one contiguous block
    read = {
        out.inputs[0]: np.zeros((tokens, batch, loaded.groups[out.inputs[0]].size), np.int64) for out in graph.outputs()
    }
    traces = _new_traces(loaded.groups, steps, batch) if trace else {}

    def run_part(rows: slice) -> dict[str, _Group]:
        return _run_part(
            loaded,
            order,
            x[rows],
            steps,
            sequences,
            chunk,
            ring_len,
            {k: v[:, rows] for k, v in read.items()},
            {k: v[:, rows] for k, v in traces.items()} if trace else None,
        )

    groups = merged_counts(run_parts(run_part, parts))
    read = {name: v.transpose(1, 0, 2) for name, v in read.items()}
    traces = {name: v.transpose(1, 0, 2) for name, v in traces.items()}
    return engine_result(output_groups(graph), groups, read, traces if trace else None, steps)


def _sub_part_shape(step_values: int, part: int, threads: int, batch: int, steps: int, room: int) -> tuple[int, int]:
    """(sequences, steps) of a sub-part's chunk: a part runs its sequences a sub-part after the other,
    each through all its steps in chunks, in buffers of _SUB_PART_VALUES at most (and of what the work
    limit's `room` above a run of 1-step chunks of the whole batch allows): long chunks of few sequences,
    so that the Python work per chunk is paid rarely, a group's state stays in its kernel's registers for
    many steps and the messages a synapse group reads one step late were written in the same chunk (a
    1-step chunk of 64 sequences of the paper-size model reads 4 MB per S4D layer from the last chunk)."""
    step_values = max(step_values, 1)
    per_step = 8 * step_values  # bytes of a sequence-step's buffers
    chunk = max(1, min(steps, _SUB_PART_VALUES // step_values, 1 + room // (threads * per_step)))
    sequences = min(
        part, _SUB_PART_VALUES // (chunk * step_values), (room + batch * per_step) // (threads * chunk * per_step)
    )
    return max(1, sequences), chunk


def _run_part(
    loaded: _Loaded,
    order: list[tuple[str, str]],
    x: np.ndarray,
    steps: int,
    sequences: int,
    chunk: int,
    ring_len: dict[str, int],
    read: dict[str, np.ndarray],
    traces: dict[str, np.ndarray] | None,
) -> dict[str, _Group]:
    """Run sequences x [batch, tokens, features] into `read` and `traces` (step-major views of this
    part's sequences; None: no trace), `sequences` of them at a time (a sub-part) in chunks of steps; its
    groups, with their counts. Sequences never meet: each sub-part starts from the state a run starts
    from, in the same buffers."""
    batch, tokens, _ = x.shape
    sub = min(sequences, batch)  # the buffers' sequences
    groups, synapses = _take_buffers(loaded, sub, chunk, ring_len)
    try:
        _run_sub_parts(groups, synapses, order, x, steps, sub, chunk, ring_len, read, traces)
    finally:
        with loaded.lock:  # for the next run (the last taken first: its pages are the likeliest in cache)
            loaded.spare.append((sub, chunk, groups, synapses))
            del loaded.spare[:-_SPARE_RUNS]
    return {name: replace(g, counts=dict(g.counts)) for name, g in groups.items()}  # the run's counts alone


_SPARE_RUNS = 2  # run buffers kept per loaded net (a part's each: a run on 2 cores)


def _take_buffers(
    loaded: _Loaded, sub: int, chunk: int, ring_len: dict[str, int]
) -> tuple[dict[str, _Group], dict[str, _Synapses]]:
    """Run state and buffers for a part's run of `sub` sequences in chunks of `chunk` steps, as a run starts
    from: a spare set of an earlier run of the same shape (taken under the lock: no two runs or threads
    share one), its state zeroed in place, or new ones. Reusing them saves their allocation and the page
    faults of first touching every page of fresh zeros at every call."""
    with loaded.lock:
        spare = next((i for i in reversed(range(len(loaded.spare))) if loaded.spare[i][:2] == (sub, chunk)), None)
        taken = loaded.spare.pop(spare) if spare is not None else None
    if taken is None:
        groups = {name: _start_group(g, sub, chunk, ring_len.get(name, 0)) for name, g in loaded.groups.items()}
        return groups, {name: _start_synapses(s, sub) for name, s in loaded.synapses.items()}
    _, _, groups, synapses = taken
    for g in groups.values():
        g.counts = dict.fromkeys(SAT_QUANTITIES, 0)
        g.counters[...] = 0
        g.zeros = g.total = 0
    _restart(groups, synapses, ring_len)
    return groups, synapses


def _run_sub_parts(
    groups: dict[str, _Group],
    synapses: dict[str, _Synapses],
    order: list[tuple[str, str]],
    x: np.ndarray,
    steps: int,
    sub: int,
    chunk: int,
    ring_len: dict[str, int],
    read: dict[str, np.ndarray],
    traces: dict[str, np.ndarray] | None,
) -> None:
    """_run_part's work in buffers of `sub` sequences, fresh or restarted."""
    batch, tokens, _ = x.shape
    host = {}
    for name, g in groups.items():
        if g.raw:
            host[name] = np.ascontiguousarray(quantize_source(x, g.frac, HOST_BITS)[0].transpose(1, 0, 2))
    for b0 in range(0, batch, sub):
        if b0 > 0:
            _restart(groups, synapses, ring_len)
        live = min(sub, batch - b0)  # the last sub-part may leave sequences of the buffers idle
        sub_read = {k: v[:, b0 : b0 + live] for k, v in read.items()}
        sub_traces = {k: v[:, b0 : b0 + live] for k, v in traces.items()} if traces is not None else None
        for t0 in range(0, steps, chunk):
            n = min(chunk, steps - t0)
            for name, tok in host.items():
                ports = groups[name].ports[: n * sub].reshape(n, sub, -1)
                k = max(0, min(n, tokens - t0))
                ports[:k, :live] = tok[t0 : t0 + k, b0 : b0 + live]
                ports[k:] = 0
            for kind, name in order:
                if kind == "neurons":
                    _neuron_chunk(groups[name], t0, n, sub, live, tokens, sub_read, sub_traces)
                elif name in synapses:  # not one merged into the row-split group before it
                    _synapse_chunk(synapses[name], groups, t0, n, sub, live)
    for g in groups.values():
        _take_counts(g)


def _take_counts(g: _Group) -> None:
    """Add the kernels' saturation counters into g.counts, and take the non-zero messages they counted
    from g.zeros (once a run: not a dict update per chunk)."""
    for k, name in _COUNTED.items():
        g.counts[name] += int(g.counters[k])
    g.zeros -= int(g.counters[NONZERO])
    g.counters[...] = 0


def _restart(groups: dict[str, _Group], synapses: dict[str, _Synapses], ring_len: dict[str, int]) -> None:
    """The run state a run starts from, for the next sub-part or run: zero states and sigma sums, the ring
    at its first row, and zero the history before it (the rows a delayed read of a step before 0 finds).
    Every other value is written before it is read."""
    for name, g in groups.items():
        g.pos = g.ran = 0
        if ring_len.get(name, 0):
            g.buf[len(g.buf) - ring_len[name] :] = 0
        for u in g.units:
            u.state[...] = 0
    for s in synapses.values():
        s.sigma[...] = 0
        if s.kernel is not None and s.sigma_pre:
            s.kernel.sigma[...] = 0


_SUB_PART_VALUES = 1 << 22  # values of a sub-part's chunk buffers (32 MiB: see docs/microcode.md, the engine)


def _start_group(template: _Group, batch: int, chunk: int, ring: int) -> _Group:
    g = replace(template, counts=dict.fromkeys(SAT_QUANTITIES, 0), counters=np.zeros(COUNTS + 1, np.int64))
    g.units = [replace(u, state=np.zeros((N_STATE, batch, u.members), np.int64)) for u in template.units]
    g.ports = np.zeros((chunk * batch, g.width), np.int64)
    g.buf = np.zeros((buffer_rows(chunk, ring), batch, g.size), np.int64)
    return g


def _start_synapses(template: _Synapses, batch: int) -> _Synapses:
    s = replace(template)
    if s.kernel is not None:
        s.kernel = replace(s.kernel)  # its output buffer and sigma sum are this run's
        if s.sigma_pre:
            s.kernel.sigma = np.zeros((batch, s.post_size), np.float64 if s.kernel.exact_float else np.int64)
    s.sigma = np.zeros((batch, s.columns) if s.sigma_pre and s.kernel is None else (0, 0), np.int64)
    return s


def _new_traces(groups: dict[str, _Group], steps: int, batch: int) -> dict[str, np.ndarray]:
    """Zeroed step-major traces: every group's messages and every probed quantity."""
    traces: dict[str, np.ndarray] = {}
    for g in groups.values():
        traces[g.name] = np.zeros((steps, batch, g.size), np.int64)
        for kind in g.probe_kinds:
            traces[f"{g.name}.{kind}"] = np.zeros((steps, batch, g.size), np.int64)
    return traces


_NO_PROBES = np.zeros((0, 1, 1, 1), np.int64)


def _neuron_chunk(
    g: _Group,
    t0: int,
    n: int,
    batch: int,
    live: int,
    tokens: int,
    read: dict[str, np.ndarray],
    traces: dict[str, np.ndarray] | None,
) -> None:
    """Run g's sequences [0, live) of its `batch` for steps t0 .. t0 + n - 1 into its message ring; count
    their messages and keep those that carry a token in `read` (if g is read) and all of them in `traces`
    (None: no trace)."""
    pos = (g.pos + g.ran) % len(g.buf)  # every chunk but the last is full: a chunk never wraps
    g.pos, g.ran = pos, n
    out = g.buf[pos : pos + n]
    if not g.emits_all:
        out[...] = 0  # what no emit sends
    kinds = g.probe_kinds if traces is not None else []
    probes = np.zeros((len(kinds), n, batch, g.size), np.int64) if kinds else _NO_PROBES
    lo, hi = max(t0, g.depth), min(t0 + n, g.depth + tokens)  # the steps that carry a token
    carried = max(0, hi - lo) * live * g.size
    g.total += carried
    g.zeros += carried  # less the non-zero ones the kernel counts (see _take_counts)
    for u in g.units:
        regs = u.probe_regs if kinds else u.probe_regs[:, :0]
        code, code_at, member_at, params, comps, cols, bases, states, state_at, temps, temp_at = u.packed
        run_unit_chunk(
            code, code_at, member_at, params, u.prog.table, comps, cols, bases, t0, n, batch, 0, live,
            g.ports, u.state, states, state_at, temps, temp_at, out, regs, probes, g.counters,
            u.lo, u.hi, lo - t0, max(lo, hi) - t0,
        )  # fmt: skip
    if hi > lo and g.name in read:
        read[g.name][lo - g.depth : hi - g.depth] = out[lo - t0 : hi - t0, :live]
    if traces is not None:
        traces[g.name][t0 : t0 + n] = out[:, :live]
        for i, kind in enumerate(kinds):
            traces[f"{g.name}.{kind}"][t0 : t0 + n] = probes[i][:, :live]


def _synapse_chunk(s: _Synapses, groups: dict[str, _Group], t0: int, n: int, batch: int, live: int) -> None:
    """Put s's outputs for steps t0 .. t0 + n - 1 (before the 32-bit sat) on its columns of its target's
    port buffer, rows [n * batch], for sequences [0, live) of the batch at least; formed from the pre
    group's message ring at every step."""
    pre, ports = groups[s.pre], groups[s.post].ports
    if s.kernel is None:
        start = (pre.pos - s.delay) % len(pre.buf)
        sparse_synapse_chunk(
            pre.buf, start, n, batch, 0, live, s.indptr, s.cols, s.vals, s.firsts, s.runs, s.shifts, s.sigma,
            ports, s.col0,
        )  # fmt: skip
        return
    cols = ports[: n * batch, s.col0 : s.col0 + s.post_size]
    formed = numpy_engine.synapse_chunk(s.kernel, pre, t0, n, 0, batch)
    if formed is None:  # W = 0 or the pre group idle
        cols[...] = 0
    else:  # exact integers (float64 ones too): clipped where the 32-bit sat gives the same
        np.clip(formed[0], -_PORT_CLIP, _PORT_CLIP, out=cols, casting="unsafe")


def _check_run_size(loaded: _Loaded, ring_len: dict[str, int], graph: Graph, x_shape, steps: int, trace: bool) -> int:
    """Refuse a run whose buffers (8 bytes a value) over the whole batch would exceed the work limit when run
    in chunks of 1 step: state registers, port buffers, message rings with the history the delays need,
    dense synapse groups' outputs, sigma sums, tokens, outputs and traces (an upper bound: the parts run
    their sequences in sub-parts, whose buffers hold only a sub-part's sequences). Returns the bytes the
    limit leaves over for longer chunks (see _sub_part_shape)."""
    batch, tokens, features = x_shape
    per_sequence = 0
    for g in loaded.groups.values():
        per_sequence += N_STATE * sum(u.prog.neurons for u in g.units) + g.width
        per_sequence += g.size * (
            buffer_rows(1, ring_len.get(g.name, 0)) + (steps * (1 + len(g.probe_kinds)) if trace else 0)
        )
    for s in loaded.synapses.values():
        per_sequence += (
            (3 * s.post_size + s.kernel.work_values) if s.kernel is not None else (s.columns if s.sigma_pre else 0)
        )
    outs = sum(loaded.groups[o.inputs[0]].size for o in graph.outputs())
    per_sequence = 8 * (per_sequence + tokens * (2 * features + outs))
    refuse_oversized_run("microcode engine", batch, tokens, per_sequence, trace)
    return limits.current().work_bytes - batch * per_sequence


def run_program(prog: Program, ports: list[np.ndarray], depth: int = 0) -> tuple[np.ndarray, dict, dict]:
    """One program alone: `ports[k]` [steps, batch, size] is what port k holds at each step (read as it is:
    no sat; a compartment that is 0 at every step is read as a synapse group's zero row). Returns the messages [steps, batch, size], the saturation counts and the probed
    registers (kind -> [steps, batch, size]). For tests of the ISA and for experiments."""
    steps, batch, size = ports[0].shape if ports else (1, 1, prog.neurons * prog.lanes)
    g = _Group("program", [_Unit(prog, 0, size)], depth, 0, "none", size, prog.ports, raw=True)
    # a compartment whose port is 0 at every step is read as the synapse stage's zero rows are (see _specialize)
    g.colmaps = [
        np.where(np.any(values != 0, axis=(0, 1)), np.arange(k * size, (k + 1) * size), -1).astype(np.int64)
        for k, values in enumerate(ports)
    ]
    g.width = prog.ports * size
    _plan_units(g)
    g = _start_group(g, batch, steps, 0)
    for k, values in enumerate(ports):
        g.ports[:, k * size : (k + 1) * size] = values.reshape(steps * batch, size)
    traces = _new_traces({"program": g}, steps, batch)
    _neuron_chunk(g, 0, steps, batch, batch, steps, {}, traces)
    _take_counts(g)
    return traces["program"], g.counts, {kind: traces[f"program.{kind}"] for kind in g.probe_kinds}


# -- loading and checking the programs -------------------------------------------------------
def _load(graph: Graph, extras: dict[str, bytes], kernels) -> _Loaded:
    groups = _load_groups(graph, extras)
    synapses = _plan_synapses(graph, groups, kernels.synapses, kernels.readers)
    for g in groups.values():
        _plan_units(g)
    return _Loaded(groups, synapses)


def _load_groups(graph: Graph, extras: dict[str, bytes]) -> dict[str, _Group]:
    rows = read_index(extras)
    names = [op.name for op in graph.ops_of_kind("neurons")]
    stray = sorted(set(rows) - set(names))
    if stray:
        raise MicrocodeError(
            f"microcode/index.json has a program for %{stray[0]}, which is not a neuron group "
            "of this net; the microcode belongs to another network: recompile"
        )
    groups = {}
    for op in graph.ops_of_kind("neurons"):
        where = f"microcode for %{op.name}"
        if op.name not in rows:
            raise MicrocodeError(f"{where} is missing from microcode/index.json; recompile the net")
        row = rows[op.name]
        a = with_defaults(op)
        size, ports = int(a["size"]), ports_of(op)
        if row.get("fingerprint") != fingerprint(op, ports):
            raise MicrocodeError(
                f"{where} was generated from a different version of the group (fingerprint mismatch); recompile the net"
            )
        units, covered = [], 0
        for unit in sorted(row.get("units") or [], key=lambda u: u.get("start", -1)):
            path = unit.get("binary")
            if path not in extras:
                raise MicrocodeError(f"{where}: its binary {path!r} is not in the net; recompile the net")
            prog = decode_program(extras[path], f"{where} ({path})")
            lo, hi = unit.get("start"), unit.get("stop")
            if (
                lo != covered
                or not isinstance(hi, int)
                or prog.neurons * prog.lanes != hi - lo
                or prog.ports != ports
                or (units and prog.lanes != units[0].prog.lanes)
            ):
                raise MicrocodeError(
                    f"{where}: {path} runs {prog.neurons} neuron(s) x {prog.lanes} lane(s) at "
                    f"compartment {lo} with {prog.ports} port(s), which does not fit the group "
                    f"({size} compartments, the next at {covered}, {ports} port(s)); recompile the net"
                )
            units.append(_Unit(prog, lo, hi))
            covered = hi
        if covered != size:
            raise MicrocodeError(
                f"{where}: the programs cover {covered} of the group's {size} compartments; recompile the net"
            )
        groups[op.name] = _Group(
            op.name,
            _merged_units(units),
            int(a["depth"]),
            int(a["frac"]),
            a["decode"],
            size,
            ports,
            raw=a["kind"] == "source",
        )
    return groups


def _merged_units(units: list[_Unit]) -> list[_Unit]:
    """Neighbouring units (a group's blocks on different cores) that run the same code, lookup table and
    probes, as one unit over both blocks with their parameter memories side by side. Every instruction
    acts on each neuron alone (SIMD; a branch tests only the step), so the merged unit computes the same
    integers for every neuron, in one kernel call instead of one per core."""
    merged: list[_Unit] = []
    for u in units:
        last = merged[-1].prog if merged else None
        if (
            last is not None
            and (last.lanes, last.ports, last.code, last.probes, last.params.shape[0])
            == (u.prog.lanes, u.prog.ports, u.prog.code, u.prog.probes, u.prog.params.shape[0])
            and np.array_equal(last.table, u.prog.table)
        ):
            prog = replace(
                last, neurons=last.neurons + u.prog.neurons, params=np.concatenate([last.params, u.prog.params], axis=1)
            )
            merged[-1] = _Unit(prog, merged[-1].lo, u.hi)
        else:
            merged.append(u)
    return merged


def _plan_synapses(
    graph: Graph, groups: dict[str, _Group], kernels: dict, readers: dict[str, list[str]]
) -> dict[str, _Synapses]:
    """Each synapse group's columns in its target's port buffer and how it forms them: a dense one (the
    numpy engine chose BLAS for it) with the numpy engine's kernel, one column per post row; any other
    with the compiled CSR kernel, one column per row where W has a non-zero (the others are 0)."""
    synapses = {}
    for g in groups.values():
        g.colmaps = [np.full(g.size, -1, np.int64) for _ in range(g.n_ports)]
        g.width = 0
    for name, g in groups.items():
        if g.raw:  # the host's token
            g.colmaps[0] = np.arange(g.size, dtype=np.int64)
            g.width = g.size
    for op in graph.ops_of_kind("synapses"):
        post = graph.op(readers[op.name][0])
        g = groups[post.name]
        port = list(post.inputs).index(op.name)
        a = with_defaults(op)
        exp = int(a["weight_exp"])
        s = _Synapses(
            op.inputs[0],
            post.name,
            g.width,
            int(a["delay"]),
            int(with_defaults(graph.op(op.inputs[0]))["delta"]) > 0,
            shift=-min(exp, 32) if exp > 0 else min(-exp, 63),
        )
        weight = op.params["weight"]
        if kernels[op.name].kernel == "dense":
            s.kernel, s.post_size = kernels[op.name], weight.shape[0]
            rows = np.flatnonzero(weight.any(axis=1))
            g.colmaps[port][rows] = g.width + rows
            g.width += weight.shape[0]
        else:
            terms, cols, vals = kernels[op.name].nonzeros  # row-major
            starts = np.flatnonzero(np.diff(terms, prepend=-1))
            rows = terms[starts]  # the rows with terms
            s.indptr = np.append(starts, len(terms)).astype(np.int64)
            s.cols, s.vals = cols.astype(np.int64), vals.astype(np.int64)
            s.shifts = np.full(len(rows), s.shift, np.int64)
            g.colmaps[port][rows] = g.width + np.arange(len(rows))
            g.width += len(rows)
        synapses[op.name] = s
    merged = _merge_row_split(synapses)
    for s in merged.values():
        if s.kernel is None:
            _fill_spans(s)
    return merged


def _merge_row_split(synapses: dict[str, _Synapses]) -> dict[str, _Synapses]:
    """One CSR pass for the sparse groups that are row classes of one W (an S4D's C split by weight_exp):
    same pre, post, delay and columns next to each other; each row keeps its shift."""
    merged: dict[str, _Synapses] = {}
    last = None
    for name, s in synapses.items():
        if (
            last is not None
            and s.kernel is None
            and last.kernel is None
            and (s.pre, s.post, s.delay, s.sigma_pre) == (last.pre, last.post, last.delay, last.sigma_pre)
            and s.col0 == last.col0 + last.columns
        ):
            last.indptr = np.concatenate([last.indptr, s.indptr[1:] + last.indptr[-1]])
            last.cols = np.concatenate([last.cols, s.cols])
            last.vals = np.concatenate([last.vals, s.vals])
            last.shifts = np.concatenate([last.shifts, s.shifts])
            continue
        merged[name] = last = replace(s)
    return merged


class _HashedCode(tuple):
    """A unit's code as _class_code's cache key, hashed once for all its classes: an Instr hashes in Python.
    Equal to the tuple of the same instructions (decode_program shares the Instrs of the same code words,
    so a hit compares them by identity)."""

    def __new__(cls, code):
        self = super().__new__(cls, code)
        self._hash = tuple.__hash__(self)
        return self

    def __hash__(self) -> int:
        return self._hash


_BROADCAST_RUN = 8  # shorter runs are slower than a vectorised gather (paper-size S4D B split by exponent: 6)


def _fill_spans(s: _Synapses) -> None:
    """Rows whose columns lie in a span at most twice as long as their terms become that whole span, the
    holes with weight 0 (adding 0 changes no integer): the kernel sums them as a dot product over
    consecutive columns (an S4D's C, each channel's modes next to each other), not by gathers. Sets
    `firsts`: each row's first column, or -1 where it keeps its gather; and, when every row has one term
    and the runs of rows reading the same column are _BROADCAST_RUN rows long on average, `runs`: where
    each starts (an S4D's B, a channel broadcast to its modes), and the number of rows."""
    terms = np.diff(s.indptr)
    s.runs = np.zeros(0, np.int64)
    if len(terms) == 0:
        s.firsts = np.zeros(0, np.int64)
        return
    if (terms == 1).all():
        starts = np.flatnonzero(np.diff(s.cols, prepend=-1))
        if len(terms) >= _BROADCAST_RUN * len(starts):  # runs long enough to pay their loop
            s.runs = np.append(starts, len(terms)).astype(np.int64)
    lo = np.minimum.reduceat(s.cols, s.indptr[:-1])  # every row has a term
    span = np.maximum.reduceat(s.cols, s.indptr[:-1]) - lo + 1
    fill = span <= 2 * terms
    s.firsts = np.where(fill, lo, -1)
    if np.array_equal(span[fill], terms[fill]):  # the spans have no holes
        return
    length = np.where(fill, span, terms)
    indptr = np.zeros(len(length) + 1, np.int64)
    np.cumsum(length, out=indptr[1:])
    row = np.repeat(np.arange(len(terms)), terms)
    at = indptr[row] + np.where(fill[row], s.cols - lo[row], np.arange(len(s.cols)) - s.indptr[row])
    vals = np.zeros(indptr[-1], np.int64)
    vals[at] = s.vals
    cols = np.arange(indptr[-1], dtype=np.int64) - np.repeat(indptr[:-1] - lo, length)  # the span's columns
    cols[at] = s.cols  # (a gather row's own)
    s.indptr, s.cols, s.vals = indptr, cols, vals


def _plan_units(g: _Group) -> None:
    """Each unit's classes of neurons (by which `in` reads can be non-zero) with their specialised code, and
    its probes as the kernel takes them."""
    kinds = g.probe_kinds
    g.emits_all = all(_emits_every_lane(u.prog) for u in g.units)
    for u in g.units:
        lanes = u.prog.lanes
        slots = sorted({(ins.aux, ins.imm) for ins in u.prog.code if ins.op == "in"})
        neurons = np.arange(u.prog.neurons)
        cols = np.array([g.colmaps[port][u.lo + neurons * lanes + lane] for port, lane in slots], np.int64).reshape(
            len(slots), u.prog.neurons
        )
        if 0 < len(slots) < 63:  # a number per neuron: much faster than unique columns
            weights = np.left_shift(1, np.arange(len(slots), dtype=np.int64))
            number = weights @ (cols >= 0)
            if len(slots) <= 16:  # a count of every possible number: faster than sorting them
                seen = np.bincount(number, minlength=1 << len(slots))
                numbers, which = np.flatnonzero(seen), (np.cumsum(seen > 0) - 1)[number]
            else:
                numbers, which = np.unique(number, return_inverse=True)
            signatures = (numbers[None, :] & weights[:, None]) != 0
        elif slots:
            signatures, which = np.unique(cols >= 0, axis=1, return_inverse=True)
        else:  # no port read: one class
            signatures, which = np.ones((0, 1), bool), np.zeros(u.prog.neurons, np.int64)
        which = which.reshape(-1)
        by_class = np.argsort(which, kind="stable")  # each class's members in order, one after the other
        ends = np.cumsum(np.bincount(which, minlength=signatures.shape[1]))
        unit_code = _HashedCode(u.prog.code)
        u.classes = []
        for k in range(signatures.shape[1]):
            members = by_class[ends[k - 1] if k else 0 : ends[k]]
            zero = frozenset(slot for slot, live in zip(slots, signatures[:, k].tolist()) if not live)
            code, used, states, _ = _class_code(unit_code, zero, g.raw, tuple(u.prog.probes))
            code = _code_array(code, used, g.raw)  # not in the cache: tests change it to check the checks
            code, temps = _fuse(code.tobytes(), frozenset(reg for _, _, reg in u.prog.probes))
            class_cols = np.ascontiguousarray(cols[[slots.index(s) for s in used]][:, members]).reshape(
                len(used), len(members)
            )
            consecutive = np.all(class_cols == class_cols[:, :1] + np.arange(len(members)), axis=1)
            u.classes.append(
                _Class(
                    members.astype(np.int64),
                    (u.lo + members * lanes).astype(np.int64),
                    code,
                    class_cols,
                    np.where(consecutive, class_cols[:, 0] if len(members) else 0, -1).astype(np.int64),
                    _member_params(u.prog.params, members),
                    states,
                    temps,
                )
            )
        u.packed, u.members = _pack_classes(u.classes), u.prog.neurons
        u.probe_regs = np.array(
            [[reg for _, _, reg in u.prog.probes], [lane for _, lane, _ in u.prog.probes],
             [kinds.index(kind) for kind, _, _ in u.prog.probes]],
            np.int64,
        ).reshape(3, -1)  # fmt: skip


def _pack_classes(classes: list[_Class]) -> tuple[np.ndarray, ...]:
    """A unit's classes as run_unit_chunk takes them: their codes, member arrays (parameters, compartments,
    port columns; the state follows the same order) and register lists concatenated, each with where
    each class starts; port columns padded to the most slots a class reads (with its own slot k in row
    k), their bases one row per class. One kernel call then runs every class of the unit."""

    def starts(sizes) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    slots = max((len(c.bases) for c in classes), default=0)
    members = sum(len(c.comps) for c in classes)
    cols = np.zeros((slots, members), np.int64)
    bases = np.full((len(classes), slots), -1, np.int64)
    at = 0
    for k, c in enumerate(classes):
        cols[: len(c.bases), at : at + len(c.comps)] = c.cols
        bases[k, : len(c.bases)] = c.bases
        at += len(c.comps)
    params = [c.params for c in classes]
    return (
        np.concatenate([c.code for c in classes]) if classes else np.zeros((0, CODE_COLUMNS), np.int64),
        starts([len(c.code) for c in classes]),
        starts([len(c.comps) for c in classes]),
        np.ascontiguousarray(np.concatenate(params, axis=1) if params else np.zeros((0, 0), np.int64)),
        np.concatenate([c.comps for c in classes]).astype(np.int64) if classes else np.zeros(0, np.int64),
        cols,
        bases,
        np.concatenate([c.states for c in classes] + [np.zeros(0, np.int64)]).astype(np.int64),
        starts([len(c.states) for c in classes]),
        np.concatenate([c.temps for c in classes] + [np.zeros(0, np.int64)]).astype(np.int64),
        starts([len(c.temps) for c in classes]),
    )


def _member_params(params: np.ndarray, members: np.ndarray) -> np.ndarray:
    """The members' columns of a unit's parameter memory; a program without parameters may give it as
    [0, 0] (isa.check_program accepts that), which has no member columns to index."""
    if params.shape[0] == 0:
        return np.zeros((0, len(members)), np.int64)
    return np.ascontiguousarray(params[:, members])


@functools.lru_cache(maxsize=256)
def _class_code(
    code: tuple[Instr, ...], zero: frozenset, raw: bool, probes: tuple
) -> tuple[list[Instr], tuple[tuple[int, int], ...], np.ndarray, np.ndarray]:
    """A class's specialised code, the (port, lane) slots it reads, the state registers it or a probe uses
    and the temporaries it reads. Cached: the cores of a group and the layers of a net run the same code
    with the same zero reads, so each such class is specialised once per process (the results are shared
    by the classes: nothing writes them)."""
    spec = _specialize(list(code), set(zero), raw)
    used = tuple(sorted({(ins.aux, ins.imm) for ins in spec if ins.op == "in"}))
    regs = {reg for _, _, reg in probes}
    for ins in spec:
        operands = _operands(ins.op)
        regs |= {r for kind, r in (("d", ins.rd), ("a", ins.ra), ("b", ins.rb)) if kind in operands}
    reads = {r for ins in spec for kind, r in (("a", ins.ra), ("b", ins.rb)) if kind in _operands(ins.op)}
    states = np.array(sorted(r - STATE0 for r in regs if STATE0 <= r < STATE0 + N_STATE), np.int64)
    return spec, used, states, np.array(sorted(r for r in reads if r < N_TEMP), np.int64)


_PURE = {"li", "mov", "add", "sub", "mul", "addi", "shr", "shl", "rshr", "max", "min", "abs", "cgei", "mask"}


def _specialize(code: list[Instr], zero: set[tuple[int, int]], raw: bool = False) -> list[Instr]:
    """`code` for neurons whose `in` reads of the (port, lane)s in `zero` are 0 at every step: a partial
    evaluation that gives the same messages, state, probes and counts. Forward, with the registers known to
    be 0 on every path (temporaries and z at the start): an `in` of a zero read, and an op of known zeros
    that gives 0 (sum, difference, product, shift, sat: none clips or counts), become `li 0`; adding or
    subtracting 0 becomes a move; then moves are propagated (see _propagate_copies). Backward: instructions without side effects (not `in`, `sat`, `lut`,
    `emit`, branches) whose temporary result nothing reads are dropped; state registers live on. Branch
    targets follow."""
    known: list[set | None] = [None] * (len(code) + 1)
    known[0] = set(range(N_TEMP)) | {ZERO}
    new: list[Instr | None] = list(code)
    for pc, ins in enumerate(code):
        if known[pc] is None:
            continue  # unreachable
        z = set(known[pc])
        op, d, a, b = ins.op, ins.rd, ins.ra, ins.rb
        rep = ins
        if op == "in" and (ins.aux, ins.imm) in zero:
            rep = Instr("li", rd=d)
        elif (op in ("mov", "sat", "shr", "shl", "rshr", "abs") and a in z) or (op == "mul" and (a in z or b in z)):
            rep = Instr("li", rd=d)
        elif op in ("add", "sub") and b in z:
            rep = Instr("li", rd=d) if a in z else Instr("mov", rd=d, ra=a)
        elif op == "add" and a in z:
            rep = Instr("mov", rd=d, ra=b)
        if (rep.op == "mov" and rep.rd == rep.ra) or (rep.op == "li" and rep.imm == 0 and d in z):
            rep = None  # changes nothing
        elif "d" in _operands(rep.op):
            if rep.op == "li" and rep.imm == 0:
                z.add(d)
            else:
                z.discard(d)
        new[pc] = rep
        if ins.op in ("bslt", "jmp"):
            known[ins.aux] = set(z) if known[ins.aux] is None else known[ins.aux] & z
        if ins.op not in ("jmp", "halt"):
            known[pc + 1] = set(z) if known[pc + 1] is None else known[pc + 1] & z
    _propagate_copies(code, new, raw)
    state = set(range(STATE0, STATE0 + N_STATE))
    live_in: list[set] = [set()] * (len(code) + 1)
    for pc in range(len(code) - 1, -1, -1):
        ins = new[pc]
        if code[pc].op == "halt":
            live_in[pc] = set(state)
            continue
        succ = []
        if code[pc].op in ("bslt", "jmp"):
            succ.append(code[pc].aux)
        if code[pc].op != "jmp":
            succ.append(pc + 1)
        live = set().union(*(live_in[s] for s in succ))
        if ins is None:
            live_in[pc] = live
            continue
        kinds = _operands(ins.op)
        if ins.op in _PURE and ins.rd < STATE0 and ins.rd not in live:
            new[pc] = None
            live_in[pc] = live
            continue
        if "d" in kinds:
            live.discard(ins.rd)
        live_in[pc] = live | {r for k, r in (("a", ins.ra), ("b", ins.rb)) if k in kinds}
    at, where = 0, []
    for ins in new:  # where[pc]: the new address of the first kept instruction at or after pc
        where.append(at)
        at += ins is not None
    return [replace(ins, aux=where[ins.aux]) if ins.op in ("bslt", "jmp") else ins for ins in new if ins is not None]


def _propagate_copies(code: list[Instr], new: list[Instr | None], raw: bool) -> None:
    """In place on `new` (`code` with its replacements, None: dropped): a read of a register that holds a
    copy of another (after `mov`, or `rshr` by 0) reads the original, and a `sat` to 32 bits or more of a
    value already within 32 bits (an `in` of a synapse port, a sat to at most 32 bits, their copies)
    becomes a move -- it clips and counts nothing. Facts hold on every path to an instruction."""
    facts: list[tuple[dict, set] | None] = [None] * (len(code) + 1)
    facts[0] = ({}, set())
    for pc, ins in enumerate(new):
        if facts[pc] is None:
            continue  # unreachable
        copies, w32 = dict(facts[pc][0]), set(facts[pc][1])
        if ins is not None:
            kinds = _operands(ins.op)
            a = copies.get(ins.ra, ins.ra) if "a" in kinds else ins.ra
            b = copies.get(ins.rb, ins.rb) if "b" in kinds else ins.rb
            ins = replace(ins, ra=a, rb=b)
            if (ins.op == "sat" and ins.aux >= 32 and a in w32) or (ins.op == "rshr" and ins.imm == 0):
                ins = Instr("mov", rd=ins.rd, ra=a)
            if ins.op == "mov" and ins.rd == ins.ra:
                ins = None
            elif "d" in kinds or ins.op == "mov":
                d = ins.rd
                copies = {k: v for k, v in copies.items() if d not in (k, v)}
                w32.discard(d)
                if ins.op == "mov":
                    copies[d] = ins.ra
                if (
                    (ins.op == "mov" and ins.ra in w32)
                    or (ins.op == "in" and not raw)
                    or (ins.op == "sat" and ins.aux <= 32)
                ):
                    w32.add(d)
            new[pc] = ins
        op = code[pc].op
        for nxt in ([code[pc].aux] if op in ("bslt", "jmp") else []) + ([pc + 1] if op not in ("jmp", "halt") else []):
            if facts[nxt] is None:
                facts[nxt] = (dict(copies), set(w32))
            else:
                old_copies, old_w32 = facts[nxt]
                facts[nxt] = ({k: v for k, v in old_copies.items() if copies.get(k) == v}, old_w32 & w32)


def _code_array(code: list[Instr], slots: list[tuple[int, int]], raw: bool) -> np.ndarray:
    """The kernel's form of `code`: rows (opcode, rd, ra, rb, aux, imm); an `in` reads slot `aux` of
    `slots`, saturating unless the ports are raw (rb = 1: sat and count)."""
    rows = []
    for ins in code:
        if ins.op == "in":
            rows.append((OP["in"], ins.rd, 0, 0 if raw else 1, slots.index((ins.aux, ins.imm)), 0, 0, 0))
        else:
            rows.append((OP[ins.op], ins.rd, ins.ra, ins.rb, ins.aux, ins.imm, 0, 0))
    return np.array(rows, np.int64).reshape(len(rows), CODE_COLUMNS)


# -- superinstructions ------------------------------------------------------------------------------------
# The kernel runs each instruction as one pass over a tile's registers; a superinstruction is one pass for
# a sequence of them. `_fuse` forms one wherever the sequence's registers allow it (below); the fused
# op computes the same wrapping int64 integers and saturation counts, and the registers it no longer
# writes are dead (no path reads them before writing them again, probes read at `halt`).
_K = {name: number for name, number in OP.items()}
_READS_AB = {_K[o] for o in ("add", "sub", "mul", "max", "min", "mask", "addsat", "emit2")}
_READS_A = {_K[o] for o in ("mov", "addi", "shr", "shl", "rshr", "abs", "cgei", "sat", "lut", "emit")}
_NO_DEST = {_K[o] for o in ("halt", "bslt", "jmp", "emit", "emit2")}
_STATE_REGS = frozenset(range(STATE0, STATE0 + N_STATE))


def _row_reads(row) -> set[int]:
    op = row[0]
    if op == _K["fma"]:
        return {row[2], row[3], row[6], row[7]}
    if op in _READS_AB:
        return {row[2], row[3]}
    return {row[2]} if op in _READS_A else set()


def _live_out(rows: list[list[int]], at_halt: frozenset) -> list[set[int]]:
    """The registers some path from after each row reads before writing them (rows in the kernel's form;
    branches go forward)."""
    n = len(rows)
    live_in: list[set[int]] = [set() for _ in range(n + 1)]
    live_out: list[set[int]] = [set() for _ in range(n)]
    for pc in range(n - 1, -1, -1):
        row = rows[pc]
        op = row[0]
        if op == _K["halt"]:
            live_out[pc] = set(at_halt)
        else:
            succ = [row[4]] if op in (_K["bslt"], _K["jmp"]) else []
            if op != _K["jmp"]:
                succ.append(pc + 1)
            live_out[pc] = set().union(*(live_in[s] for s in succ))
        live = set(live_out[pc])
        if op not in _NO_DEST:
            live.discard(row[1])
        live_in[pc] = live | _row_reads(row)
    live_out.append(live_in[0])  # the last entry: what the code reads before writing (see _fuse)
    return live_out


@functools.lru_cache(maxsize=256)
def _fuse(code: bytes, probed: frozenset) -> tuple[np.ndarray, np.ndarray]:
    """The kernel code `code` (int64 rows, see _code_array) with superinstructions, and the temporaries it
    may read before writing them (zeroed before each update). Cached per code: the classes of a net's
    groups share a few codes (the results are shared: nothing writes them).

    - fma d a b c e sign sh: `mul x a b; mul y c e; add z x y` (or `sub`, either order), then optionally
      `rshr d z sh`, where x and y (and z) are dead after it unless they are d, and c and e are not x;
    - addsat d a b bits cnt sign: `add x a b` (or `sub`) and the next instruction that reads x, a `sat d x`
      with x dead after it (or x == d), the `add` moved down to it past instructions that neither read
      nor write x nor write a or b;
    - emit2 a b lane: `emit a lane; emit b lane + 1`;
    - and `op x ...; mov y x` becomes `op y ...` where x is dead after the move (an `in` to a register
      the next `in` reuses, then moved to the sum's).

    A sequence never spans a branch target (all its instructions run on the same paths)."""
    rows = np.frombuffer(code, np.int64).reshape(-1, CODE_COLUMNS).tolist()
    at_halt = _STATE_REGS | probed
    changed = True
    while changed:
        changed = False
        targets = {row[4] for row in rows if row[0] in (_K["bslt"], _K["jmp"])}
        live = _live_out(rows, at_halt)
        for pc in range(len(rows)):
            fused = _fused_at(rows, pc, targets, live)
            if fused is not None:
                first, last, row = fused
                rows[first : last + 1] = [row]
                shift = last - first  # branch targets after the sequence move up
                for r in rows:
                    if r[0] in (_K["bslt"], _K["jmp"]) and r[4] > first:
                        r[4] -= shift
                changed = True
                break
    live_in = _live_out(rows, at_halt)[-1]
    return (
        np.array(rows, np.int64).reshape(len(rows), CODE_COLUMNS),
        np.array(sorted(r for r in live_in if r < N_TEMP), np.int64),
    )


def _fused_at(rows, pc, targets, live) -> tuple[int, int, list[int]] | None:
    """A superinstruction starting at pc (see _fuse): (first row, last row, the fused row), or None. For
    addsat the `add` at pc moves down to the `sat` first: the rows between shift up by one."""
    n = len(rows)
    row = rows[pc]
    op = row[0]
    if op == _K["emit"] and pc + 1 < n and pc + 1 not in targets:
        nxt = rows[pc + 1]
        if nxt[0] == _K["emit"] and nxt[5] == row[5] + 1:
            return pc, pc + 1, [_K["emit2"], 0, row[2], nxt[2], 0, row[5], 0, 0]
    if op not in _NO_DEST and pc + 1 < n and pc + 1 not in targets:
        nxt = rows[pc + 1]
        if nxt[0] == _K["mov"] and nxt[2] == row[1] and (nxt[1] == row[1] or row[1] not in live[pc + 1]):
            return pc, pc + 1, [row[0], nxt[1], *row[2:]]  # the result goes where the move puts it
    if op == _K["mul"] and pc + 2 < n and not {pc + 1, pc + 2} & targets:
        x, a, b = row[1], row[2], row[3]
        second, combine = rows[pc + 1], rows[pc + 2]
        y, c, e = second[1], second[2], second[3]
        if second[0] != _K["mul"] or y == x or x in (c, e) or combine[0] not in (_K["add"], _K["sub"]):
            return None
        if (combine[2], combine[3]) == (x, y):
            negate = combine[0] == _K["sub"]
        elif (combine[2], combine[3]) == (y, x):  # y - x: the products swap
            negate = combine[0] == _K["sub"]
            a, b, c, e = c, e, a, b
        else:
            return None
        last, d, sh = pc + 2, combine[1], 0
        after = rows[pc + 3] if pc + 3 < n else None
        if (
            after is not None
            and pc + 3 not in targets
            and after[0] == _K["rshr"]
            and after[2] == d
            and after[5] > 0
            and (after[1] == d or d not in live[pc + 3])
        ):
            last, d, sh = pc + 3, after[1], after[5]
        if any(r != d and r in live[last] for r in (x, y, combine[1])):
            return None
        return pc, last, [_K["fma"], d, a, b, int(negate), sh, c, e]
    if op in (_K["add"], _K["sub"]):
        x, a, b = row[1], row[2], row[3]
        for j in range(pc + 1, n):
            other = rows[j]
            if j in targets or other[0] in (_K["halt"], _K["bslt"], _K["jmp"]):
                return None
            if x in _row_reads(other):
                break
            if other[0] not in _NO_DEST and other[1] in (x, a, b):
                return None
        else:
            return None
        if other[0] != _K["sat"] or other[4] >= 64 or (other[1] != x and x in live[j]):
            return None
        fused = [_K["addsat"], other[1], a, b, other[4], other[3], int(op == _K["sub"]), 0]
        rows[pc : j + 1] = rows[pc + 1 : j] + [fused, fused]  # the add moves down; the caller drops one
        return j - 1, j, fused
    return None


def _emits_every_lane(p: Program) -> bool:
    """Whether every path from the start to a `halt` emits every lane (branches go forward)."""
    emitted: list[set | None] = [None] * (len(p.code) + 1)  # lanes emitted on every path to pc
    emitted[0] = set()
    for pc, ins in enumerate(p.code):
        have = emitted[pc]
        if have is None:
            continue  # unreachable
        if ins.op == "halt":
            if len(have) < p.lanes:
                return False
            continue
        after = have | {ins.imm} if ins.op == "emit" else have
        for nxt in ([ins.aux] if ins.op in ("bslt", "jmp") else []) + ([pc + 1] if ins.op != "jmp" else []):
            emitted[nxt] = set(after) if emitted[nxt] is None else emitted[nxt] & after
    return True
