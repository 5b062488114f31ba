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

The source group's port holds the host's token, rounded to an integer
(floor(x 2^frac + 1/2), clipped to 34 bits); its program saturates it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ssmc.data import check_sequences
from ssmc.errors import MicrocodeError
from ssmc.ir.fixed_point import ACC_BITS
from ssmc.ir.graph import Graph
from ssmc.ir.ops import with_defaults
from ssmc.backend_loihi.microcode.emit import fingerprint, ports_of, read_index
from ssmc.backend_loihi.microcode.isa import (
    COUNTER_QUANTITY, COUNTERS, N_STATE, N_TEMP, PARAM0, STATE0, ZERO, Program, decode_program)
from ssmc.runtime.numpy_engine import (SAT_QUANTITIES, EngineResult, cached_per_graph, engine_result, output_groups,
                                       one_blas_thread, prepare, quantize_source, refuse_oversized_run, weighted_sum)

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
    shape: tuple[int, int] = (0, 0)  # a register's shape: [batch, neurons of this unit]


@dataclass
class _Group:
    name: str
    units: list[_Unit]
    depth: int
    frac: int
    decode: str
    size: int
    ports: list[_Port]
    out: np.ndarray | None = None  # the message of this step [batch, size]
    ring: list[np.ndarray] | None = None
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
    kernel: object  # this run's copy of the numpy engine's prepared synapse group (W's kernel, shift, bounds)
    exp: int
    delay: int
    sigma_pre: bool  # the pre group sends sigma-delta: sum W @ m over time before the shift
    sigma: np.ndarray | None = None


@one_blas_thread
def run_net(net, x: np.ndarray, trace: bool = False) -> EngineResult:
    """Run x [batch, tokens, features] through the net's microcode; see numpy_engine.EngineResult."""
    graph: Graph = net.graph
    kernels = prepare(graph, "microcode").synapses  # checks the graph too (both once per graph)
    x = check_sequences(x, graph.inputs()[0].shape[0])
    batch, tokens, _ = x.shape
    # the decoded, checked programs are kept per graph and net.lava entries (see numpy_engine.prepare)
    loaded = cached_per_graph(_LOADED, graph, lambda gr: _load_groups(gr, net.extras),
                              *(v for item in sorted(net.extras.items()) for v in item))
    groups = {name: replace(g, units=[_Unit(u.prog, u.lo, u.hi) for u in g.units], ports=[_Port() for _ in g.ports],
                            counts=dict.fromkeys(SAT_QUANTITIES, 0)) for name, g in loaded.items()}
    synapses = []
    for op in graph.ops_of_kind("synapses"):
        post = graph.consumers(op.name)[0]
        a = with_defaults(op)
        synapses.append(_Synapses(op.inputs[0], post.name, list(post.inputs).index(op.name), replace(kernels[op.name]),
                                  int(a["weight_exp"]), int(a["delay"]),
                                  int(with_defaults(graph.op(op.inputs[0]))["delta"]) > 0))
    steps = tokens + max((g.depth for g in groups.values()), default=0)
    ring_len: dict[str, int] = {}
    for s in synapses:
        ring_len[s.pre] = max(ring_len.get(s.pre, 0), s.delay)
    # registers (state and temporaries) and delay rings per neuron, the synapse sums, tokens, outputs, traces
    per_neuron = sum(g.size * (N_STATE + N_TEMP + ring_len.get(g.name, 0)
                               + (steps * (1 + len({k for k, _, _ in g.prog.probes})) if trace else 0))
                     for g in groups.values())
    outs = sum(groups[o.inputs[0]].size for o in graph.outputs())
    refuse_oversized_run("microcode engine", batch, tokens,
                         8 * (per_neuron + sum(3 * s.kernel.post_size + s.kernel.work_values for s in synapses)
                              + tokens * (2 * x.shape[2] + outs)),
                         trace)
    for g in groups.values():
        _prepare_units(g, batch)
        if g.name in ring_len:
            g.ring = [np.zeros((batch, g.size), np.int64) for _ in range(ring_len[g.name])]
    host = {}
    for name, g in groups.items():
        if graph.op(name).attrs["kind"] == "source":
            host[name] = quantize_source(x, g.frac, HOST_BITS)[0]
    read = {out.inputs[0]: np.zeros((batch, tokens, groups[out.inputs[0]].size), np.int64) for out in graph.outputs()}
    traces: dict[str, np.ndarray] = {}
    if trace:
        for g in groups.values():
            traces[g.name] = np.zeros((batch, steps, g.size), np.int64)
            for kind in sorted({k for k, _, _ in g.prog.probes}):
                traces[f"{g.name}.{kind}"] = np.zeros((batch, steps, g.size), np.int64)

    for t in range(steps):
        for g in groups.values():
            for p in g.ports:
                p.value, p.clipped = 0, None
        for s in synapses:
            _synapse_step(s, groups, t, batch)
        for name, tok in host.items():
            groups[name].ports[0].value = tok[:, t] if t < tokens else 0
        for g in groups.values():
            _update(g, t, batch)
        for g in groups.values():
            if g.ring is not None:
                g.ring[t % len(g.ring)][...] = g.out
            if g.depth <= t < g.depth + tokens:
                g.total += g.out.size
                g.zeros += int(np.count_nonzero(g.out == 0))
                if g.name in read:
                    read[g.name][:, t - g.depth] = g.out
            if trace:
                traces[g.name][:, t] = g.out
                for u in g.units:
                    for kind, lane, reg in u.prog.probes:
                        traces[f"{g.name}.{kind}"][:, t, u.lo + lane:u.hi:u.prog.lanes] = u.regs[reg]

    return engine_result(output_groups(graph), groups, read, traces if trace else None, steps)


def run_program(prog: Program, ports: list[np.ndarray], depth: int = 0) -> tuple[np.ndarray, dict, dict]:
    """One program alone: `ports[k]` [steps, batch, size] is what port k holds at each step.
    Returns the messages [steps, batch, size], the saturation counts and the probed
    registers (kind -> [steps, batch, size]). For tests of the ISA and for experiments."""
    steps, batch, size = ports[0].shape if ports else (1, 1, prog.neurons * prog.lanes)
    g = _Group("program", [_Unit(prog, 0, size)], depth, 0, "none", size, [_Port() for _ in range(prog.ports)])
    _prepare_units(g, batch)
    msgs = np.zeros((steps, batch, size), np.int64)
    probes = {kind: np.zeros((steps, batch, size), np.int64) for kind, _, _ in prog.probes}
    for t in range(steps):
        for port, values in zip(g.ports, ports):
            port.value, port.clipped = values[t], None
        _update(g, t, batch)
        msgs[t] = g.out
        for kind, lane, reg in prog.probes:
            probes[kind][t, :, lane::prog.lanes] = g.units[0].regs[reg]
    return msgs, g.counts, probes


# -- loading and checking the programs -------------------------------------------------------
def _load_groups(graph: Graph, extras: dict[str, bytes]) -> dict[str, _Group]:
    rows = read_index(extras)
    names = [op.name for op in graph.ops_of_kind("neurons")]
    stray = sorted(set(rows) - set(names))
    if stray:
        raise MicrocodeError(f"microcode/index.json has a program for %{stray[0]}, which is not a neuron group "
                             "of this net; the microcode belongs to another network: recompile")
    groups = {}
    for op in graph.ops_of_kind("neurons"):
        where = f"microcode for %{op.name}"
        if op.name not in rows:
            raise MicrocodeError(f"{where} is missing from microcode/index.json; recompile the net")
        row = rows[op.name]
        a = with_defaults(op)
        size, ports = int(a["size"]), ports_of(op)
        if row.get("fingerprint") != fingerprint(op, ports):
            raise MicrocodeError(f"{where} was generated from a different version of the group (fingerprint "
                                 "mismatch); recompile the net")
        units, covered = [], 0
        for unit in sorted(row.get("units") or [], key=lambda u: u.get("start", -1)):
            path = unit.get("binary")
            if path not in extras:
                raise MicrocodeError(f"{where}: its binary {path!r} is not in the net; recompile the net")
            prog = decode_program(extras[path], f"{where} ({path})")
            lo, hi = unit.get("start"), unit.get("stop")
            if lo != covered or not isinstance(hi, int) or prog.neurons * prog.lanes != hi - lo \
                    or prog.ports != ports or (units and prog.lanes != units[0].prog.lanes):
                raise MicrocodeError(f"{where}: {path} runs {prog.neurons} neuron(s) x {prog.lanes} lane(s) at "
                                     f"compartment {lo} with {prog.ports} port(s), which does not fit the group "
                                     f"({size} compartments, the next at {covered}, {ports} port(s)); recompile the net")
            units.append(_Unit(prog, lo, hi))
            covered = hi
        if covered != size:
            raise MicrocodeError(f"{where}: the programs cover {covered} of the group's {size} compartments; "
                                 "recompile the net")
        groups[op.name] = _Group(op.name, _merged_units(units), int(a["depth"]), int(a["frac"]), a["decode"], size,
                                 [_Port() for _ in range(ports)])
    return groups


def _merged_units(units: list[_Unit]) -> list[_Unit]:
    """Neighbouring units (a group's blocks on different cores) that run the same code, lookup table and
    probes, as one unit over both blocks with their parameter memories side by side. Every instruction
    acts on each neuron alone (SIMD; a branch tests only the step), so the merged unit computes the same
    integers for every neuron, in one numpy operation per instruction instead of one per core."""
    merged: list[_Unit] = []
    for u in units:
        last = merged[-1].prog if merged else None
        if last is not None and (last.lanes, last.ports, last.code, last.probes, last.params.shape[0]) \
                == (u.prog.lanes, u.prog.ports, u.prog.code, u.prog.probes, u.prog.params.shape[0]) \
                and np.array_equal(last.table, u.prog.table):
            prog = replace(last, neurons=last.neurons + u.prog.neurons,
                           params=np.concatenate([last.params, u.prog.params], axis=1))
            merged[-1] = _Unit(prog, merged[-1].lo, u.hi)
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


# -- the interpreter ----------------------------------------------------------------------------
def _update(g: _Group, t: int, batch: int) -> None:
    """Run g's programs once for all its neurons and the batch; leaves the messages in g.out."""
    g.out = np.zeros((batch, g.size), np.int64)
    for u in g.units:
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

    def step(fn):
        def run(R, t):
            R[d] = fn(R)
        return run
    if op == "li":  # an array, like every register that is not 0: numpy wraps arrays silently
        return step(lambda R: np.full(u.shape, imm, np.int64))
    if op == "mov":
        return step(lambda R: R[a])
    if op == "add":
        return step(lambda R: R[a] + R[b])
    if op == "sub":
        return step(lambda R: R[a] - R[b])
    if op == "mul":
        return step(lambda R: np.multiply(R[a], R[b], dtype=np.int64))
    if op == "addi":
        return step(lambda R: R[a] + np.int64(imm))
    if op == "shr":
        return step(lambda R: np.right_shift(R[a], imm, dtype=np.int64))
    if op == "shl":
        return step(lambda R: np.left_shift(R[a], imm, dtype=np.int64))
    if op == "rshr":
        if imm == 0:
            return step(lambda R: R[a])
        half = np.int64(1 << (imm - 1))
        return step(lambda R: np.right_shift(R[a] + half, imm, dtype=np.int64))
    if op == "max":
        return step(lambda R: np.maximum(R[a], R[b]))
    if op == "min":
        return step(lambda R: np.minimum(R[a], R[b]))
    if op == "abs":
        return step(lambda R: np.abs(R[a]))
    if op == "cgei":
        return step(lambda R: (np.asarray(R[a]) >= imm).astype(np.int64))
    if op == "mask":
        return step(lambda R: np.where(np.asarray(R[b]) != 0, R[a], 0))
    if op == "sat":
        lo, hi = -(1 << (aux - 1)), (1 << (aux - 1)) - 1
        counter = COUNTER_QUANTITY.get(COUNTERS[b])

        def sat(R, t):
            v = R[a]
            if np.shape(v) != u.shape:  # a parameter or 0: count as many values as neurons x batch
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

        def read_port(R, t):
            if port.clipped is not None:
                g.counts["accumulator"] += int(np.count_nonzero(port.clipped[:, lanes]))
            v = port.value
            R[d] = v[:, lanes] if isinstance(v, np.ndarray) else 0  # a port is an array or 0
        return read_port
    if op == "emit":
        lanes = slice(u.lo + imm, u.hi, u.prog.lanes)

        def emit(R, t):
            g.out[:, lanes] = R[a]
        return emit
    raise MicrocodeError(f"no interpreter for instruction {op!r}")  # decode_program admits only known ones


# -- the synapse stage (docs/fixed_point.md, Synapse group) --------------------------------------
def _synapse_step(s: _Synapses, groups: dict[str, _Group], t: int, batch: int) -> None:
    pre, post = groups[s.pre], groups[s.post]
    src = t - s.delay
    if src < 0:
        return  # zero input: the port stays 0
    k = s.kernel
    m = pre.ring[src % len(pre.ring)]
    lo, hi = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
    check = k.may_clip or s.sigma_pre  # else |shr(acc, -exp)| < 2^31 for every input: the sat is a no-op
    if k.exact_float:
        # the float64 kernel's weights carry 2^weight_exp: it returns acc * 2^weight_exp exactly
        # (every partial sum a scaled integer below 2^53, see numpy_engine._prepare_synapses)
        acc = weighted_sum(k, m.astype(np.float64))
        if s.sigma_pre:  # |sigma| = |W @ last| stays within the same bound: still exact
            if s.sigma is None:
                s.sigma = np.zeros((batch, post.size), np.float64)
            s.sigma += acc
            acc[...] = s.sigma
        if k.shift > 0:
            np.floor(acc, out=acc)  # floor(acc 2^-s) = acc >> s
        clipped = ((acc < lo) | (acc > hi)) if check else None
        out = acc.astype(np.int64) if clipped is None or not clipped.any() else \
            np.clip(acc, lo, hi).astype(np.int64)  # a new array: no register aliases the kernel's buffer
    else:
        acc = weighted_sum(k, m).copy()
        if s.sigma_pre:
            if s.sigma is None:
                s.sigma = np.zeros((batch, post.size), np.int64)
            s.sigma += acc
            acc = s.sigma.copy()
        if s.exp > 0:  # values beyond +-2^31 saturate anyway; clipping first keeps the shift inside int64
            out = (np.clip(acc, -(1 << 31), 1 << 31) if check else acc) << min(s.exp, 31)
        else:
            out = acc >> min(-s.exp, 63)
        clipped = ((out < lo) | (out > hi)) if check else None
        if clipped is not None and clipped.any():
            out = np.clip(out, lo, hi)
    port = post.ports[s.port]
    if clipped is not None and clipped.any():
        port.clipped = clipped
    port.value = out
