"""The microcode engine: runs a net's neuron programs, decoded from their binaries.

What runs is net.lava's `microcode/<group>.bin` (docs/microcode.md), not the
IR's neuron kinds; the IR gives only the wiring (synapse groups), the host's
side (input scale, when to read outputs, how to decode them) and a fingerprint
check that each program was generated for its group.

One step t:
1. synapse stage (the contract's, not microcode): every synapse group computes
   sat(shr(W @ m_pre[t - delay], -weight_exp), 32) -- or, when its pre group sends
   sigma-delta, sums W @ m over time before the shift -- and puts it on its
   target's port, with which values it clipped;
2. every group runs its program once, SIMD over its neurons and the batch:
   each instruction is one numpy operation on [batch, neurons] int64 arrays;
3. the emitted messages go into the ring buffers the synapses read.

It runs that in the numpy engine's order (numpy_engine docstring): a chunk of
steps at a time, group by group in execution order, each synapse group as one
numpy-engine kernel call over the chunk, messages in rings of whole chunks. A
program that carries no state from step to step (`carries_state`, decided from
the decoded code: no state register read before written) runs every span of
the chunk's steps that takes the same branches as one update, SIMD over
[steps x batch, neurons]; any other program runs step by step.

The source group's port holds the host's token, rounded to an integer
(floor(x 2^frac + 1/2), clipped to 34 bits); its program saturates it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ssmc import limits
from ssmc.data import check_sequences
from ssmc.errors import MicrocodeError
from ssmc.ir.fixed_point import ACC_BITS
from ssmc.ir.graph import Graph
from ssmc.ir.ops import with_defaults
from ssmc.backend_loihi.microcode.emit import fingerprint, ports_of, read_index
from ssmc.backend_loihi.microcode.isa import (
    COUNTER_QUANTITY,
    COUNTERS,
    N_STATE,
    N_TEMP,
    PARAM0,
    STATE0,
    ZERO,
    Program,
    decode_program,
    operand_kinds,
)
from ssmc.runtime import numpy_engine
from ssmc.runtime.numpy_engine import (
    SAT_QUANTITIES,
    EngineResult,
    _buffer_rows,
    cached_per_graph,
    engine_result,
    output_groups,
    one_blas_thread,
    prepare,
    quantize_source,
    refuse_oversized_run,
)

HOST_BITS = 34  # the host's rounded token is clipped to this; any value it clips is outside msg_bits too


_LOADED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # graph -> its groups' programs, see run_net


@dataclass
class _Port:
    value: np.ndarray | int = 0  # [batch, size] int64, or 0
    clipped: np.ndarray | None = None  # [batch, size] bool: where the synapse stage clipped (None: nowhere)


@dataclass
class _Unit:
    """One program over compartments [lo, hi) of its group: a core's block of it, or all of it."""

    prog: Program
    lo: int
    hi: int
    run: list[Callable] = field(default_factory=list)
    regs: list = field(default_factory=list)
    shape: tuple[int, int] = (0, 0)  # a register's shape: [rows being run (steps x batch), neurons of this unit]
    carries_state: bool = True  # see carries_state


@dataclass
class _Group:
    name: str
    units: list[_Unit]
    depth: int
    frac: int
    decode: str
    size: int
    ports: list[_Port]
    out: np.ndarray | None = None  # the messages of the rows being run [rows, size]
    rows: slice = slice(None)  # the rows of the ports being run (steps x batch)
    buf: np.ndarray | None = None  # messages [rows, batch, size], a ring of whole chunks (numpy_engine._group_chunk)
    pos: int = 0  # where the chunk being run starts in buf
    ran: int = 0  # steps of that chunk
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SAT_QUANTITIES, 0))
    zeros: int = 0
    total: int = 0

    @property
    def prog(self) -> Program:  # every unit runs the same code with the same lanes and probes
        return self.units[0].prog


@dataclass
class _Synapses:
    pre: str
    post: str
    port: int
    kernel: object  # this run's copy of the numpy engine's prepared synapse group (W's kernel, shift, sigma sum)
    exp: int
    delay: int
    sigma_pre: bool  # the pre group sends sigma-delta: sum W @ m over time before the shift


@one_blas_thread
def run_net(net, x: np.ndarray, trace: bool = False) -> EngineResult:
    """Run x [batch, tokens, features] through the net's microcode; see numpy_engine.EngineResult."""
    graph: Graph = net.graph
    kernels = prepare(graph, "microcode").synapses  # checks the graph too (both once per graph)
    x = check_sequences(x, graph.inputs()[0].shape[0])
    batch, tokens, _ = x.shape
    # the decoded, checked programs are kept per graph and net.lava entries (see numpy_engine.prepare)
    loaded = cached_per_graph(
        _LOADED,
        graph,
        lambda gr: _load_groups(gr, net.extras),
        *(v for item in sorted(net.extras.items()) for v in item),
    )
    groups = {
        name: replace(
            g,
            units=[_Unit(u.prog, u.lo, u.hi, carries_state=u.carries_state) for u in g.units],
            ports=[_Port() for _ in g.ports],
            counts=dict.fromkeys(SAT_QUANTITIES, 0),
        )
        for name, g in loaded.items()
    }
    synapses = _run_synapses(graph, kernels)
    steps = tokens + max((g.depth for g in groups.values()), default=0)
    ring_len: dict[str, int] = {}
    for s in synapses.values():
        ring_len[s.pre] = max(ring_len.get(s.pre, 0), s.delay)
    room = _check_run_size(groups, synapses, ring_len, graph, x.shape, steps, trace)
    # per step of a chunk: a group's message ring (up to 2 rows), the registers of a program run over all
    # the steps of a span (one stepped keeps [batch, neurons]), a synapse group's outputs, clip mask and
    # kernel temporaries
    step_values = sum(
        2 * g.size + sum((N_STATE + N_TEMP) * u.prog.neurons for u in g.units if not u.carries_state)
        for g in groups.values()
    ) + sum(3 * s.kernel.post_size + s.kernel.work_values for s in synapses.values())
    chunk = numpy_engine._chunk_steps(step_values, batch, batch, steps, room)
    _allocate(groups, synapses, ring_len, chunk, batch)
    host = {}
    for name, g in groups.items():
        if graph.op(name).attrs["kind"] == "source":
            host[name] = np.ascontiguousarray(quantize_source(x, g.frac, HOST_BITS)[0].transpose(1, 0, 2))
    # step-major [step or token, batch, size] while running: a chunk of steps is one contiguous block
    read = {out.inputs[0]: np.zeros((tokens, batch, groups[out.inputs[0]].size), np.int64) for out in graph.outputs()}
    traces = _new_traces(groups, steps, batch) if trace else {}
    order = [(op.kind, op.name) for op in graph.ops() if op.kind in ("neurons", "synapses")]

    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        for g in groups.values():
            for p in g.ports:
                p.value, p.clipped = 0, None
        for name, tok in host.items():
            value = np.zeros((n, batch, tok.shape[2]), np.int64)
            k = max(0, min(n, tokens - t0))
            value[:k] = tok[t0 : t0 + k]
            groups[name].ports[0].value = value.reshape(n * batch, -1)
        for kind, name in order:
            if kind == "synapses":
                _synapse_chunk_to_port(synapses[name], groups, t0, n, batch)
                continue
            _neuron_chunk(groups[name], t0, n, batch, tokens, read, traces if trace else None)

    read = {name: v.transpose(1, 0, 2) for name, v in read.items()}
    traces = {name: v.transpose(1, 0, 2) for name, v in traces.items()}
    return engine_result(output_groups(graph), groups, read, traces if trace else None, steps)


def _run_synapses(graph: Graph, kernels: dict) -> dict[str, _Synapses]:
    """The graph's synapse groups for one run, each with its own copy of its prepared kernel."""
    synapses = {}
    for op in graph.ops_of_kind("synapses"):
        post = graph.consumers(op.name)[0]
        a = with_defaults(op)
        synapses[op.name] = _Synapses(
            op.inputs[0],
            post.name,
            list(post.inputs).index(op.name),
            replace(kernels[op.name]),
            int(a["weight_exp"]),
            int(a["delay"]),
            int(with_defaults(graph.op(op.inputs[0]))["delta"]) > 0,
        )
    return synapses


def _allocate(
    groups: dict[str, _Group], synapses: dict[str, _Synapses], ring_len: dict[str, int], chunk: int, batch: int
) -> None:
    """The registers, message rings and sigma sums of a run in chunks of `chunk` steps."""
    for g in groups.values():
        _prepare_units(g, batch)
        g.buf = np.zeros((_buffer_rows(chunk, ring_len.get(g.name, 0)), batch, g.size), np.int64)
        g.pos = g.ran = 0
    for s in synapses.values():
        if s.sigma_pre:
            s.kernel.sigma = np.zeros((batch, s.kernel.post_size), np.float64 if s.kernel.exact_float else np.int64)


def _new_traces(groups: dict[str, _Group], steps: int, batch: int) -> dict[str, np.ndarray]:
    """Zeroed step-major traces: every group's messages and every probed quantity."""
    traces: dict[str, np.ndarray] = {}
    for g in groups.values():
        traces[g.name] = np.zeros((steps, batch, g.size), np.int64)
        for kind in sorted({k for k, _, _ in g.prog.probes}):
            traces[f"{g.name}.{kind}"] = np.zeros((steps, batch, g.size), np.int64)
    return traces


def _neuron_chunk(
    g: _Group,
    t0: int,
    n: int,
    batch: int,
    tokens: int,
    read: dict[str, np.ndarray],
    traces: dict[str, np.ndarray] | None,
) -> None:
    """Run g for steps t0 .. t0 + n - 1 into its message ring; count its messages and keep those that carry
    a token in `read` (if g is read) and all of them in `traces` (None: no trace)."""
    pos = (g.pos + g.ran) % len(g.buf)  # every chunk but the last is full: a chunk never wraps
    g.pos, g.ran = pos, n
    out = g.buf[pos : pos + n]
    probes = (
        {kind: traces[f"{g.name}.{kind}"][t0 : t0 + n] for kind, _, _ in g.prog.probes} if traces is not None else None
    )
    _run_group(g, t0, n, batch, out, probes)
    lo, hi = max(t0, g.depth), min(t0 + n, g.depth + tokens)  # the steps that carry a token
    if hi > lo:
        carried = out[lo - t0 : hi - t0]
        g.total += carried.size
        g.zeros += int(np.count_nonzero(carried == 0))
        if g.name in read:
            read[g.name][lo - g.depth : hi - g.depth] = carried
    if traces is not None:
        traces[g.name][t0 : t0 + n] = out


def _check_run_size(
    groups: dict, synapses: dict, ring_len: dict[str, int], graph: Graph, x_shape, steps: int, trace: bool
) -> int:
    """Refuse a run whose buffers (8 bytes a value) over the whole batch would exceed the work limit when run
    in chunks of 1 step: registers (state and temporaries), message rings with the history the delays need,
    the synapse outputs, tokens, outputs and traces. Returns the bytes the limit leaves over for longer chunks."""
    batch, tokens, features = x_shape
    per_neuron = sum(
        g.size
        * (
            N_STATE
            + N_TEMP
            + _buffer_rows(1, ring_len.get(g.name, 0))
            + (steps * (1 + len({k for k, _, _ in g.prog.probes})) if trace else 0)
        )
        for g in groups.values()
    )
    outs = sum(groups[o.inputs[0]].size for o in graph.outputs())
    per_sequence = 8 * (
        per_neuron
        + sum(3 * s.kernel.post_size + s.kernel.work_values for s in synapses.values())
        + tokens * (2 * features + outs)
    )
    refuse_oversized_run("microcode engine", batch, tokens, per_sequence, trace)
    return limits.current().work_bytes - batch * per_sequence


def run_program(prog: Program, ports: list[np.ndarray], depth: int = 0) -> tuple[np.ndarray, dict, dict]:
    """One program alone: `ports[k]` [steps, batch, size] is what port k holds at each step.
    Returns the messages [steps, batch, size], the saturation counts and the probed
    registers (kind -> [steps, batch, size]). For tests of the ISA and for experiments."""
    steps, batch, size = ports[0].shape if ports else (1, 1, prog.neurons * prog.lanes)
    g = _Group(
        "program",
        [_Unit(prog, 0, size, carries_state=carries_state(prog))],
        depth,
        0,
        "none",
        size,
        [_Port() for _ in range(prog.ports)],
    )
    _prepare_units(g, batch)
    msgs = np.zeros((steps, batch, size), np.int64)
    probes = {kind: np.zeros((steps, batch, size), np.int64) for kind, _, _ in prog.probes}
    for port, values in zip(g.ports, ports):
        port.value, port.clipped = values.reshape(steps * batch, size), None
    _run_group(g, 0, steps, batch, msgs, probes)
    return msgs, g.counts, probes


# -- loading and checking the programs -------------------------------------------------------
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
        for u in units:
            u.carries_state = carries_state(u.prog)
        groups[op.name] = _Group(
            op.name,
            _merged_units(units),
            int(a["depth"]),
            int(a["frac"]),
            a["decode"],
            size,
            [_Port() for _ in range(ports)],
        )
    return groups


def _merged_units(units: list[_Unit]) -> list[_Unit]:
    """Neighbouring units (a group's blocks on different cores) that run the same code, lookup table and
    probes, as one unit over both blocks with their parameter memories side by side. Every instruction
    acts on each neuron alone (SIMD; a branch tests only the step), so the merged unit computes the same
    integers for every neuron, in one numpy operation per instruction instead of one per core."""
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
            merged[-1] = _Unit(prog, merged[-1].lo, u.hi, carries_state=u.carries_state)
        else:
            merged.append(u)
    return merged


def _prepare_units(g: _Group, batch: int) -> None:
    for u in g.units:
        u.regs, u.shape = _registers(u.prog, batch), (batch, u.prog.neurons)
        u.run = [_compile(ins, g, u) for ins in u.prog.code]


def _registers(p: Program, batch: int) -> list:
    regs: list = [0] * (ZERO + 1)
    for k in range(N_STATE):
        regs[STATE0 + k] = np.zeros((batch, p.neurons), np.int64)
    for k in range(p.params.shape[0]):
        regs[PARAM0 + k] = p.params[k]
    return regs


def carries_state(p: Program) -> bool:
    """Whether a step's update can see what an earlier step left in a state register: some path through
    the code (branches go forward) reads one -- as an operand, or as a probe after the update -- before
    writing it. A program that cannot runs all steps of a span at once, as rows of one update."""
    written: list[set | None] = [None] * (len(p.code) + 1)  # registers written on every path to pc
    written[0] = set()
    state = set(range(STATE0, STATE0 + N_STATE))
    probed = {reg for _, _, reg in p.probes}

    def reach(pc: int, regs: set) -> None:
        written[pc] = set(regs) if written[pc] is None else written[pc] & regs

    for pc, ins in enumerate(p.code):
        have = written[pc]
        if have is None:
            continue  # unreachable
        kinds = operand_kinds(ins.op)
        reads = {reg for kind, reg in (("a", ins.ra), ("b", ins.rb)) if kind in kinds}
        if (reads & state) - have:
            return True
        if ins.op == "halt":
            if (probed & state) - have:
                return True
            continue
        after = have | {ins.rd} if "d" in kinds else have
        if ins.op in ("bslt", "jmp"):
            reach(ins.aux, after)
        if ins.op != "jmp":
            reach(pc + 1, after)
    return False


# -- the interpreter ----------------------------------------------------------------------------
def _run_group(g: _Group, t0: int, n: int, batch: int, out: np.ndarray, probes: dict | None) -> None:
    """Run g's programs for steps t0 .. t0 + n - 1, their messages into out [n, batch, size] and the probed
    registers into probes (kind -> [n, batch, size]); the ports hold the n steps' inputs as rows
    [n * batch, size] (or 0). A program that carries no state between steps runs each span of steps
    that takes the same branches as one update over [span * batch, neurons]; one that does, step by step."""
    out[...] = 0  # what no emit sends
    for u in g.units:
        if u.carries_state:
            spans = [(j, j + 1) for j in range(n)]
        else:  # `bslt` tests t < imm: split where that changes
            cuts = sorted({ins.imm - t0 for ins in u.prog.code if ins.op == "bslt" and 0 < ins.imm - t0 < n})
            spans = list(zip([0] + cuts, cuts + [n]))
        for a, b in spans:
            g.rows = slice(a * batch, b * batch)
            g.out = out[a:b].reshape((b - a) * batch, g.size)
            u.shape = ((b - a) * batch, u.prog.neurons)
            _update(u, t0 + a)
            for kind, lane, reg in u.prog.probes if probes is not None else ():
                v = np.broadcast_to(u.regs[reg], u.shape).reshape(b - a, batch, u.prog.neurons)
                probes[kind][a:b, :, u.lo + lane : u.hi : u.prog.lanes] = v


def _update(u: _Unit, t: int) -> None:
    """Run u's program once over the rows of its registers."""
    regs, run = u.regs, u.run
    for k in range(N_TEMP):
        regs[k] = 0  # temporaries start at zero every update
    pc = 0
    while True:
        nxt = run[pc](regs, t)
        if nxt == -1:
            break
        pc = pc + 1 if nxt is None else nxt


def _compile(ins, g: _Group, u: _Unit) -> Callable:
    """One instruction as a function (regs, t) -> next pc (None: the next one; -1: halt)."""
    d, a, b, aux, imm = ins.rd, ins.ra, ins.rb, ins.aux, ins.imm
    op = ins.op
    if op == "halt":
        return lambda R, t: -1
    if op == "bslt":
        return lambda R, t: aux if t < imm else None
    if op == "jmp":
        return lambda R, t: aux

    value = _value_of(op, a, b, imm, u)
    if value is not None:

        def run(R, t):
            R[d] = value(R)

        return run
    if op == "sat":
        lo, hi = -(1 << (aux - 1)), (1 << (aux - 1)) - 1
        counter = COUNTER_QUANTITY.get(COUNTERS[b])

        def sat(R, t):
            v = R[a]
            if (
                not isinstance(v, np.ndarray) or v.shape != u.shape
            ):  # a parameter or 0: count as many values as neurons x batch
                v = np.broadcast_to(v, u.shape)
            if v.min() < lo or v.max() > hi:
                if counter:
                    g.counts[counter] += int(np.count_nonzero((v < lo) | (v > hi)))
                v = np.clip(v, lo, hi)
            R[d] = v

        return sat
    if op == "lut":
        table = u.prog.table
        top = len(table) - 1
        counter = COUNTER_QUANTITY.get(COUNTERS[b])

        def lut(R, t):
            i = np.broadcast_to(R[a], u.shape)
            if counter:
                g.counts[counter] += int(np.count_nonzero((i < 0) | (i > top)))
            R[d] = table[np.clip(i, 0, top)]

        return lut
    if op == "in":
        port, lanes = g.ports[aux], slice(u.lo + imm, u.hi, u.prog.lanes)  # this unit's neurons, lane imm

        def read_port(R, t):  # the rows of the steps being run
            if port.clipped is not None:
                g.counts["accumulator"] += int(np.count_nonzero(port.clipped[g.rows, lanes]))
            v = port.value
            R[d] = v[g.rows, lanes] if isinstance(v, np.ndarray) else 0  # a port is an array or 0

        return read_port
    if op == "emit":
        lanes = slice(u.lo + imm, u.hi, u.prog.lanes)

        def emit(R, t):
            g.out[:, lanes] = R[a]

        return emit
    raise MicrocodeError(f"no interpreter for instruction {op!r}")  # decode_program admits only known ones


def _value_of(op: str, a: int, b: int, imm: int, u: _Unit) -> Callable | None:
    """An arithmetic instruction's value as a function of the registers; None for any other instruction."""
    if op == "li":  # an array, like every register that is not 0: numpy wraps arrays silently
        return lambda R: np.full(u.shape, imm, np.int64)
    if op == "mov":
        return lambda R: R[a]
    if op == "add":
        return lambda R: R[a] + R[b]
    if op == "sub":
        return lambda R: R[a] - R[b]
    if op == "mul":
        return lambda R: np.multiply(R[a], R[b], dtype=np.int64)
    if op == "addi":
        return lambda R: R[a] + np.int64(imm)
    if op == "shr":
        return lambda R: np.right_shift(R[a], imm, dtype=np.int64)
    if op == "shl":
        return lambda R: np.left_shift(R[a], imm, dtype=np.int64)
    if op == "rshr":
        if imm == 0:
            return lambda R: R[a]
        half = np.int64(1 << (imm - 1))
        return lambda R: np.right_shift(R[a] + half, imm, dtype=np.int64)
    if op == "max":
        return lambda R: np.maximum(R[a], R[b])
    if op == "min":
        return lambda R: np.minimum(R[a], R[b])
    if op == "abs":
        return lambda R: np.abs(R[a])
    if op == "cgei":
        return lambda R: (np.asarray(R[a]) >= imm).astype(np.int64)
    if op == "mask":
        return lambda R: np.where(np.asarray(R[b]) != 0, R[a], 0)
    return None


# -- the synapse stage (docs/fixed_point.md, Synapse group) --------------------------------------
def _synapse_chunk_to_port(s: _Synapses, groups: dict[str, _Group], t0: int, n: int, batch: int) -> None:
    """Put s's outputs for steps t0 .. t0 + n - 1, sat'd to 32 bits, on its target's port as rows
    [n * batch, post], with where they clipped. The numpy engine's kernel forms them from the pre group's
    message ring (every step: wake 0, whether or not the target's program reads the port then)."""
    formed = numpy_engine._synapse_chunk(s.kernel, groups[s.pre], t0, n, 0, batch)
    if formed is None:
        return  # W = 0 or the pre group idle: the port stays 0
    acc = formed[0]  # first = 0: every row
    lo, hi = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
    clipped = None
    if s.kernel.may_clip or s.sigma_pre:  # else |shr(acc, -exp)| < 2^31 for every input: the sat is a no-op
        clipped = (acc < lo) | (acc > hi)
        if not clipped.any():
            clipped = None
    # a new int64 array either way: the kernel's buffer is reused by the next chunk, and registers keep views
    out = acc.astype(np.int64) if clipped is None else np.clip(acc, lo, hi).astype(np.int64)
    port = groups[s.post].ports[s.port]
    port.value, port.clipped = out, clipped
