"""One microcode program per neuron group, generated from its `neurons` op.

Each kind's program is a transcription of its row in docs/fixed_point.md into
the ISA of docs/microcode.md. Register use, the same in every program:

    r0, r1   the lane's dendritic input, then its value, then its message
    r2..r4   temporaries
    s0, s1   state per lane (integrator: s0; cpx: s0 = x_re, s1 = x_im)
    s2, s3   sigma-delta `last` per lane
    p0, p1   bias per lane (when the group has one); cpx: then c_re, c_im

The synapse stage (the interpreter's, not microcode) delivers each incoming
synapse group's 32-bit output on a port; the program sums them.
"""

from __future__ import annotations

import numpy as np

from ssmc.errors import MicrocodeError
from ssmc.ir.fixed_point import ACC_BITS
from ssmc.ir.graph import Op
from ssmc.ir.ops import with_defaults
from ssmc.backend_loihi.microcode.isa import (
    COUNTERS,
    IMM_MAX,
    IMM_MIN,
    REGISTER_NUMBERS as R,
    STATE0,
    Instr,
    Program,
    check_program,
    operand_kinds,
)

BIAS_LIMIT = 1 << 48  # a larger bias saturates the 32-bit dendrite the same way (and keeps sums in int64)
LAST0 = STATE0 + 2  # s2: sigma-delta `last` of lane 0


def lanes_of(kind: str) -> int:
    """Compartments per neuron: a cpx neuron holds one complex mode (re, im)."""
    return 2 if kind == "cpx" else 1


class _Code:
    """An instruction list with one forward label (the idle branch target)."""

    def __init__(self, where: str):
        self.where, self.code = where, []

    def __call__(self, op: str, *regs: str, aux: int = 0, imm: int = 0, cnt: str | None = None) -> None:
        """Append `op`; `regs` fill its register operands (d, a, b) in order."""
        if not IMM_MIN <= imm <= IMM_MAX:
            raise MicrocodeError(
                f"{self.where}: the value {imm} of a {op} instruction does not fit the "
                "32-bit immediate; this group's parameters are outside what the ISA encodes"
            )
        fields = dict(zip([k for k in operand_kinds(op) if k in ("d", "a", "b")], (R[r] for r in regs)))
        self.code.append(
            Instr(
                op,
                rd=fields.get("d", 0),
                ra=fields.get("a", 0),
                rb=COUNTERS.index(cnt) if cnt is not None else fields.get("b", 0),
                aux=aux,
                imm=imm,
            )
        )


def generate(op: Op) -> Program:
    """The program of neuron group `op` (a verified `neurons` op)."""
    a = with_defaults(op)
    kind, size = a["kind"], int(a["size"])
    where = f"%{op.name} ({kind})"
    lanes = lanes_of(kind)
    neurons = size // lanes
    ports = 1 if kind == "source" else len(op.inputs)
    mb, sb, k = int(a["msg_bits"]), int(a["state_bits"]), int(a["out_shift"])
    if kind in ("cpx", "integrator", "product") and not 0 <= k <= 63:
        raise MicrocodeError(f"{where}: out_shift = {k}; rshr encodes shifts 0..63")
    c = _Code(where)
    depth = int(a["depth"])
    if depth > 0:  # idle before its depth (docs/fixed_point.md, Time): patched to the idle code below
        c("bslt", imm=depth)
    params: list[np.ndarray] = []
    bias = None
    if "bias" in op.params and kind != "source":
        bias = np.clip(op.params["bias"].astype(np.int64), -BIAS_LIMIT, BIAS_LIMIT)
        params += [bias[lane::lanes] for lane in range(lanes)]
    value = [f"r{lane}" for lane in range(lanes)]
    _input(c, kind, lanes, ports, bias is not None, k)
    _update(c, op, a, params, value, sb, k)
    if kind != "lut" and _msg_may_clip(kind, mb, sb, k):
        for lane in range(lanes):
            c("sat", value[lane], value[lane], aux=mb, cnt="msg")
    delta = int(a["delta"])
    if delta:
        _sigma_delta(c, value, delta, mb)
    _emit(c, lanes, value, depth)
    probes = []
    if kind in ("cpx", "integrator"):
        probes += [("state", lane, STATE0 + lane) for lane in range(lanes)]
    if delta:
        probes += [("last", lane, LAST0 + lane) for lane in range(lanes)]
    p = Program(
        lanes=lanes,
        neurons=neurons,
        ports=ports,
        code=c.code,
        probes=probes,
        table=op.params["table"].astype(np.int64) if kind == "lut" else np.zeros(0, np.int64),
        params=np.array(params, np.int64).reshape(len(params), neurons),
    )
    check_program(p, where)
    return p


def _input(c: _Code, kind: str, lanes: int, ports: int, has_bias: bool, k: int) -> None:
    """The group's input into r0.. (one register per lane): the host's token for a source, the two operands'
    product for a product group, else each lane's dendritic sum."""
    if kind == "source":
        c("in", "r0", aux=0, imm=0)  # the host's token, rounded (docs/microcode.md, Host)
    elif kind == "product":
        c("in", "r0", aux=0, imm=0)
        if has_bias:
            c("add", "r0", "r0", "p0")
            c("sat", "r0", "r0", aux=ACC_BITS, cnt="acc")
        c("in", "r1", aux=1, imm=0)
        c("mul", "r0", "r0", "r1")
        c("rshr", "r0", "r0", imm=k)
    else:
        for lane in range(lanes):
            _dendrite(c, f"r{lane}", lane, ports, has_bias)


def _update(c: _Code, op: Op, a: dict, params: list[np.ndarray], value: list[str], sb: int, k: int) -> None:
    """The kind's own step from its input to its output value (docs/fixed_point.md, Neuron groups); a cpx
    group's coefficients are appended to `params`."""
    kind = a["kind"]
    if kind == "relu":
        c("max", "r0", "r0", "z")
    elif kind == "integrator":
        c("add", "s0", "s0", "r0")
        c("sat", "s0", "s0", aux=sb, cnt="state")
        c("rshr", "r0", "s0", imm=k)
    elif kind == "lut":
        c("shr", "r2", "r0", imm=min(int(a["lut_shift"]), 63))  # |a| < 2^31: any shift >= 31 gives the same
        c("addi", "r2", "r2", imm=-int(a["lut_lo"]))
        c("lut", "r0", "r2", cnt="msg")
    elif kind == "cpx":
        f = int(a["coef_bits"]) - 1
        cr, ci = f"p{len(params)}", f"p{len(params) + 1}"
        params += [op.params["c_re"].astype(np.int64), op.params["c_im"].astype(np.int64)]
        for lane, (first, second, combine) in enumerate((("s0", "s1", "sub"), ("s1", "s0", "add"))):
            # re: c_re x_re - c_im x_im;  im: c_re x_im + c_im x_re  (64-bit, rounded once)
            t = f"r{2 + lane}"
            c("mul", t, cr, first)
            c("mul", "r4", ci, second)
            c(combine, t, t, "r4")
            c("rshr", t, t, imm=f)
            c("add", t, t, value[lane])
        for lane in range(len(value)):  # both components from the old state, then both stored
            c("sat", f"s{lane}", f"r{2 + lane}", aux=sb, cnt="state")
            c("rshr", value[lane], f"s{lane}", imm=k)


def _sigma_delta(c: _Code, value: list[str], delta: int, mb: int) -> None:
    """Send changes only (docs/fixed_point.md, Sigma-delta messages), per lane."""
    if delta > IMM_MAX:
        raise MicrocodeError(f"{c.where}: delta = {delta} does not fit the 32-bit immediate")
    for lane in range(len(value)):  # d = sat(y - last); m = d if |d| >= delta else 0; last += m
        last = f"s{2 + lane}"
        c("sub", "r2", value[lane], last)
        c("sat", "r2", "r2", aux=mb, cnt="msg")
        c("abs", "r3", "r2")
        c("cgei", "r3", "r3", imm=delta)
        c("mask", value[lane], "r2", "r3")
        c("add", last, last, value[lane])


def _emit(c: _Code, lanes: int, value: list[str], depth: int) -> None:
    """Send each lane's value and halt; a group with a depth first idles (sends zeros) until its step."""
    for lane in range(lanes):
        c("emit", value[lane], imm=lane)
    c("halt")
    if depth > 0:
        c.code[0] = Instr("bslt", aux=len(c.code), imm=depth)
        for lane in range(lanes):
            c("emit", "z", imm=lane)
        c("halt")


def _dendrite(c: _Code, dst: str, lane: int, ports: int, has_bias: bool) -> None:
    """dst = sat(sum of the ports' lane + bias, 32); the sat only when more than one term."""
    if ports == 0:
        c("mov", dst, "z")
    for port in range(ports):
        c("in", dst if port == 0 else "r4", aux=port, imm=lane)
        if port:
            c("add", dst, dst, "r4")
    if has_bias:
        c("add", dst, dst, f"p{lane}")
    if ports + has_bias > 1:
        c("sat", dst, dst, aux=ACC_BITS, cnt="acc")


def _msg_may_clip(kind: str, mb: int, sb: int, k: int) -> bool:
    """Whether the message sat can change a value (else codegen leaves it out)."""
    if kind in ("relay", "relu"):
        return mb < ACC_BITS
    if kind in ("cpx", "integrator"):  # the state is within sb bits; rshr is monotone
        lo, hi = -(1 << (sb - 1)), (1 << (sb - 1)) - 1
        r = (lambda v: (v + (1 << (k - 1))) >> k) if k > 0 else (lambda v: v)
        return r(lo) < -(1 << (mb - 1)) or r(hi) > (1 << (mb - 1)) - 1
    return True  # source, product
