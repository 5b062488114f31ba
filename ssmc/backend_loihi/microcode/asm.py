"""Assembler and disassembler: microcode text <-> Program <-> binary.

The text form (docs/microcode.md, "Text form"):

    .microcode 1              ; ISA version
    .lanes 2                  ; compartments per neuron
    .neurons 4
    .ports 1                  ; incoming synapse groups
    .probe state 0 s0         ; trace: lane 0's state is register s0
    .table 5 -3 7             ; lookup table (repeat the line to continue it)
    .param p0 10 -20 30 40    ; p0 of every neuron (repeat to continue)
        bslt 3, idle          ; instructions, indented; operands comma-separated
        in r0, 0, 1
    idle:
        halt

`;` starts a comment. `disassemble` prints exactly this form with labels
`L<address>`, so format_program(parse(t)) is t for any text it printed, and
assemble(disassemble(b)) == b for any valid binary.
"""

from __future__ import annotations

import re

import numpy as np

from ssmc.errors import MicrocodeError
from ssmc.backend_loihi.microcode.isa import (
    AUX_MAX,
    COUNTERS,
    IMM_MAX,
    IMM_MIN,
    N_PARAM,
    OPCODES,
    PARAM0,
    REGISTER_NAMES,
    REGISTER_NUMBERS,
    VERSION,
    Instr,
    Program,
    check_program,
    decode_program,
    encode_program,
    operand_kinds,
)

VALUES_PER_LINE = 16
_LABEL = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*):\s*(.*)$")
_INT = re.compile(r"^[+-]?(0x[0-9a-fA-F]+|[0-9]+)$")


def _int(tok: str, line: int, what: str) -> int:
    if not _INT.match(tok):
        raise MicrocodeError(f"line {line}: {what} {tok!r} is not an integer")
    return int(tok, 0) if not tok.lstrip("+-").startswith("0x") else int(tok, 16)


def _reg(tok: str, line: int) -> int:
    if tok not in REGISTER_NUMBERS:
        raise MicrocodeError(f"line {line}: {tok!r} is not a register (r0..r7, s0..s7, p0..p7, z)")
    return REGISTER_NUMBERS[tok]


def parse(text: str, where: str = "microcode") -> Program:
    """Program from its text form; MicrocodeError with the line number on any mistake."""
    header: dict[str, int] = {}
    probes: list[tuple[str, int, int]] = []
    table: list[int] = []
    params: dict[int, list[int]] = {}
    pending: list[tuple[int, str, list[str]]] = []  # (line, op, operand tokens), labels resolved after
    labels: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        m = _LABEL.match(line)
        if m:
            if m.group(1) in labels:
                raise MicrocodeError(f"line {n}: label {m.group(1)!r} defined twice")
            labels[m.group(1)] = len(pending)
            line = m.group(2).strip()
        if not line:
            continue
        if line.startswith("."):
            _directive(line, n, header, probes, table, params)
            continue
        op, _, rest = line.partition(" ")
        if op not in _OPS:
            raise MicrocodeError(f"line {n}: unknown instruction {op!r}")
        toks = [t.strip() for t in rest.split(",")] if rest.strip() else []
        if len(toks) != len(operand_kinds(op)):
            raise MicrocodeError(
                f"line {n}: {op} takes {len(operand_kinds(op))} operand(s) "
                f"({', '.join(operand_kinds(op)) or 'none'}), got {len(toks)}"
            )
        pending.append((n, op, toks))
    for key in ("microcode", "lanes", "neurons", "ports"):
        if key not in header:
            raise MicrocodeError(f"{where}: missing directive .{key}")
    if header["microcode"] != VERSION:
        raise MicrocodeError(f"{where}: .microcode {header['microcode']}, this ssmc assembles version {VERSION}")
    if sorted(params) != list(range(len(params))):
        raise MicrocodeError(
            f"{where}: parameters must be p0, p1, ... without gaps, got "
            f"{', '.join(REGISTER_NAMES[PARAM0 + k] for k in sorted(params))}"
        )
    code = [_instr(n, op, toks, labels) for n, op, toks in pending]
    if params and len({len(v) for v in params.values()}) != 1:
        raise MicrocodeError(f"{where}: parameters have different lengths {[len(params[k]) for k in sorted(params)]}")
    pmem = (
        np.array([params[k] for k in sorted(params)], np.int64)
        if params
        else np.zeros((0, header["neurons"]), np.int64)
    )
    p = Program(
        lanes=header["lanes"],
        neurons=header["neurons"],
        ports=header["ports"],
        code=code,
        probes=probes,
        table=np.array(table, np.int64),
        params=pmem,
    )
    check_program(p, where)
    return p


_OPS = set(OPCODES)


def _directive(line: str, n: int, header, probes, table, params) -> None:
    toks = line.split()
    name, args = toks[0][1:], toks[1:]
    if name in ("microcode", "lanes", "neurons", "ports"):
        if len(args) != 1:
            raise MicrocodeError(f"line {n}: .{name} takes one integer")
        if name in header:
            raise MicrocodeError(f"line {n}: .{name} given twice")
        header[name] = _int(args[0], n, f".{name}")
    elif name == "probe":
        if len(args) != 3:
            raise MicrocodeError(f"line {n}: .probe takes a kind, a lane and a register (.probe state 0 s0)")
        probes.append((args[0], _int(args[1], n, "lane"), _reg(args[2], n)))
    elif name == "table":
        table.extend(_value(t, n) for t in args)
    elif name == "param":
        if not args:
            raise MicrocodeError(f"line {n}: .param takes a register p0..p{N_PARAM - 1} and values")
        reg = _reg(args[0], n) - PARAM0
        if not 0 <= reg < N_PARAM:
            raise MicrocodeError(f"line {n}: .param names {args[0]}, not a parameter register p0..p{N_PARAM - 1}")
        params.setdefault(reg, []).extend(_value(t, n) for t in args[1:])
    else:
        raise MicrocodeError(f"line {n}: unknown directive .{name}")


def _value(tok: str, n: int) -> int:
    v = _int(tok, n, "value")
    if not -(1 << 63) <= v < 1 << 63:
        raise MicrocodeError(f"line {n}: value {v} does not fit in 64 bits")
    return v


def _instr(n: int, op: str, toks: list[str], labels: dict[str, int]) -> Instr:
    f = {"rd": 0, "ra": 0, "rb": 0, "aux": 0, "imm": 0}
    for kind, tok in zip(operand_kinds(op), toks):
        if kind in ("d", "a", "b"):
            f[{"d": "rd", "a": "ra", "b": "rb"}[kind]] = _reg(tok, n)
        elif kind == "cnt":
            if tok not in COUNTERS:
                raise MicrocodeError(f"line {n}: counter {tok!r} unknown; use one of {', '.join(COUNTERS)}")
            f["rb"] = COUNTERS.index(tok)
        elif kind == "label":
            if tok not in labels:
                raise MicrocodeError(f"line {n}: undefined label {tok!r}")
            f["aux"] = labels[tok]
        elif kind in ("bits", "port"):
            v = _int(tok, n, kind)
            if not 0 <= v <= AUX_MAX:
                raise MicrocodeError(f"line {n}: {kind} {v} outside 0..{AUX_MAX}")
            f["aux"] = v
        else:  # imm, sh, lane: the 32-bit immediate
            v = _int(tok, n, kind)
            if not IMM_MIN <= v <= IMM_MAX:
                raise MicrocodeError(f"line {n}: {kind} {v} does not fit the signed 32-bit immediate")
            f["imm"] = v
    return Instr(op, **f)


def format_program(p: Program) -> str:
    """The canonical text of a program (what `disassemble` prints)."""
    out = [f".microcode {VERSION}", f".lanes {p.lanes}", f".neurons {p.neurons}", f".ports {p.ports}"]
    out += [f".probe {k} {lane} {REGISTER_NAMES[reg]}" for k, lane, reg in p.probes]
    out += _values_lines(".table", p.table)
    for k in range(p.params.shape[0]):
        out += _values_lines(f".param {REGISTER_NAMES[PARAM0 + k]}", p.params[k])
    targets = {i.aux for i in p.code if "label" in operand_kinds(i.op)}
    for pc, ins in enumerate(p.code):
        if pc in targets:
            out.append(f"L{pc}:")
        out.append(f"    {ins.op} {', '.join(_operand(ins, k) for k in operand_kinds(ins.op))}".rstrip())
    return "\n".join(out) + "\n"


def _values_lines(prefix: str, values: np.ndarray) -> list[str]:
    vals = [str(int(v)) for v in values]
    return [f"{prefix} {' '.join(vals[i : i + VALUES_PER_LINE])}" for i in range(0, len(vals), VALUES_PER_LINE)]


def _operand(ins: Instr, kind: str) -> str:
    if kind in ("d", "a", "b"):
        return REGISTER_NAMES[{"d": ins.rd, "a": ins.ra, "b": ins.rb}[kind]]
    if kind == "cnt":
        return COUNTERS[ins.rb]
    if kind == "label":
        return f"L{ins.aux}"
    if kind in ("bits", "port"):
        return str(ins.aux)
    return str(ins.imm)


def assemble(text: str, where: str = "microcode") -> bytes:
    return encode_program(parse(text, where), where)


def disassemble(blob: bytes, where: str = "microcode") -> str:
    return format_program(decode_program(blob, where))
