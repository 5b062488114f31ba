"""The neuron ISA: registers, instructions and the binary encoding of a program.

A program is what every neuron of one group runs once per time step (SIMD
over the group's neurons, as a Loihi 2 neuron core runs one microcode program
over the neurons of a group). docs/microcode.md is the reference; this module
is its executable form. Everything here is this project's own model of the
published outline, not Intel's encoding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ssmc.errors import MicrocodeError

VERSION = 1
MAGIC = b"SSMCMC"
WORD_BYTES = 8

# -- registers (5-bit numbers) -------------------------------------------------------------
N_TEMP, N_STATE, N_PARAM = 8, 8, 8
TEMP0, STATE0, PARAM0, ZERO = 0, 8, 16, 24
REGISTER_NAMES = (
    [f"r{i}" for i in range(N_TEMP)] + [f"s{i}" for i in range(N_STATE)] + [f"p{i}" for i in range(N_PARAM)] + ["z"]
)
REGISTER_NUMBERS = {name: i for i, name in enumerate(REGISTER_NAMES)}


def writable(reg: int) -> bool:
    """Temporaries and state registers; parameters and z are read-only."""
    return TEMP0 <= reg < PARAM0


# -- saturation counters -----------------------------------------------------------------
COUNTERS = ("-", "acc", "state", "msg")  # "-": clip without counting
COUNTER_QUANTITY = {"acc": "accumulator", "state": "state", "msg": "message"}

# -- probes: which registers hold what a trace shows, per lane ---------------------------
PROBE_KINDS = ("state", "last")


@dataclass(frozen=True)
class OpSpec:
    code: int
    operands: str  # comma-separated operand kinds, see OPERAND_KINDS
    cycles: int  # ASSUMED cost of one execution on one neuron (docs/microcode.md, cycle model)
    doc: str


# Operand kinds and the instruction field each lives in:
#   d: rd (written register)  a: ra  b: rb  (registers)
#   imm: imm (signed 32)  sh: imm (shift 0..63)  bits: aux (2..64)  cnt: rb (counter number)
#   port: aux (0..255)  lane: imm (0..lanes-1)  label: aux (instruction address)
OPCODES: dict[str, OpSpec] = {
    "halt": OpSpec(0, "", 1, "end of this neuron's update"),
    "li": OpSpec(1, "d,imm", 1, "d = imm"),
    "mov": OpSpec(2, "d,a", 1, "d = a"),
    "in": OpSpec(
        3,
        "d,port,lane",
        1,
        "d = the dendritic input of synapse port `port`, lane `lane` "
        "(its 32-bit saturations are counted under acc when read)",
    ),
    "add": OpSpec(4, "d,a,b", 1, "d = a + b (64-bit)"),
    "sub": OpSpec(5, "d,a,b", 1, "d = a - b (64-bit)"),
    "mul": OpSpec(6, "d,a,b", 2, "d = a * b (64-bit product)"),
    "addi": OpSpec(7, "d,a,imm", 1, "d = a + imm"),
    "shr": OpSpec(8, "d,a,sh", 1, "d = floor(a / 2^sh) (arithmetic shift right)"),
    "shl": OpSpec(9, "d,a,sh", 1, "d = a * 2^sh"),
    "rshr": OpSpec(10, "d,a,sh", 1, "d = (a + 2^(sh-1)) >> sh, round to nearest, ties up (d = a for sh = 0)"),
    "sat": OpSpec(11, "d,a,bits,cnt", 1, "d = a clipped to signed `bits`; every changed value counted under cnt"),
    "max": OpSpec(12, "d,a,b", 1, "d = max(a, b)"),
    "min": OpSpec(13, "d,a,b", 1, "d = min(a, b)"),
    "abs": OpSpec(14, "d,a", 1, "d = |a|"),
    "cgei": OpSpec(15, "d,a,imm", 1, "d = 1 if a >= imm else 0"),
    "mask": OpSpec(16, "d,a,b", 1, "d = a if b != 0 else 0"),
    "lut": OpSpec(17, "d,a,cnt", 2, "d = table[clip(a, 0, L-1)]; every clipped index counted under cnt"),
    "bslt": OpSpec(18, "imm,label", 1, "branch forward to label if the time step < imm (uniform over the group)"),
    "jmp": OpSpec(19, "label", 1, "branch forward to label"),
    "emit": OpSpec(20, "a,lane", 1, "send a as this neuron's message on compartment `lane`"),
}
OPCODE_NAMES = {spec.code: name for name, spec in OPCODES.items()}

IMM_MIN, IMM_MAX = -(1 << 31), (1 << 31) - 1
AUX_MAX = (1 << 9) - 1
MAX_CODE = AUX_MAX  # a label lives in the 9-bit aux field


@dataclass(frozen=True)
class Instr:
    """One decoded instruction: the opcode name and its five fields."""

    op: str
    rd: int = 0
    ra: int = 0
    rb: int = 0
    aux: int = 0
    imm: int = 0


def operand_kinds(op: str) -> list[str]:
    s = OPCODES[op].operands
    return s.split(",") if s else []


_FIELD_OF = {
    "d": "rd",
    "a": "ra",
    "b": "rb",
    "imm": "imm",
    "sh": "imm",
    "bits": "aux",
    "cnt": "rb",
    "port": "aux",
    "lane": "imm",
    "label": "aux",
}


def used_fields(op: str) -> set[str]:
    return {_FIELD_OF[k] for k in operand_kinds(op)}


# -- one instruction word -------------------------------------------------------------------
#   63..56 opcode | 55..51 rd | 50..46 ra | 45..41 rb | 40..32 aux | 31..0 imm (two's complement)
def encode_instr(ins: Instr) -> int:
    return (
        OPCODES[ins.op].code << 56 | ins.rd << 51 | ins.ra << 46 | ins.rb << 41 | ins.aux << 32 | (ins.imm & 0xFFFFFFFF)
    )


def decode_instr(word: int, where: str) -> Instr:
    code = word >> 56
    if code not in OPCODE_NAMES:
        raise MicrocodeError(f"{where}: unknown opcode {code} in word 0x{word:016x}")
    imm = word & 0xFFFFFFFF
    return Instr(
        OPCODE_NAMES[code],
        (word >> 51) & 31,
        (word >> 46) & 31,
        (word >> 41) & 31,
        (word >> 32) & AUX_MAX,
        imm - (1 << 32) if imm >> 31 else imm,
    )


# -- a program ------------------------------------------------------------------------------
@dataclass
class Program:
    """One group's microcode: code, lookup table and the per-neuron parameter memory.

    `lanes` compartments per neuron (2 for a complex pair); the group has
    `neurons * lanes` compartments, compartment i = neuron i // lanes, lane i % lanes.
    `ports` incoming synapse groups, in op-input order. `probes` (kind, lane,
    register) say which register holds the traced state / sigma-delta `last`.
    `params[k]` is register p<k> of every neuron.
    """

    lanes: int
    neurons: int
    ports: int
    code: list[Instr]
    probes: list[tuple[str, int, int]] = field(default_factory=list)
    table: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    params: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Program)
            and (self.lanes, self.neurons, self.ports, self.code, self.probes)
            == (other.lanes, other.neurons, other.ports, other.code, other.probes)
            and np.array_equal(self.table, other.table)
            and self.params.shape == other.params.shape
            and np.array_equal(self.params, other.params)
        )


def check_program(p: Program, where: str = "program") -> None:
    """Raise MicrocodeError naming the first thing that makes `p` unrunnable."""
    if not 1 <= p.lanes <= 255 or not 0 <= p.ports <= 255 or not 1 <= p.neurons < 1 << 32:
        raise MicrocodeError(
            f"{where}: lanes {p.lanes}, ports {p.ports}, neurons {p.neurons} out of range "
            "(lanes 1..255, ports 0..255, neurons >= 1)"
        )
    if p.params.ndim != 2 or p.params.shape[0] > N_PARAM or (p.params.shape[0] and p.params.shape[1] != p.neurons):
        raise MicrocodeError(f"{where}: parameter memory of shape {p.params.shape}, want [<= {N_PARAM}, {p.neurons}]")
    if not p.code or len(p.code) > MAX_CODE:
        raise MicrocodeError(f"{where}: {len(p.code)} instructions; a program has 1..{MAX_CODE}")
    if p.code[-1].op != "halt":
        raise MicrocodeError(f"{where}: the last instruction is {p.code[-1].op}, must be halt")
    for kind, lane, reg in p.probes:
        if kind not in PROBE_KINDS or not 0 <= lane < p.lanes or not STATE0 <= reg < STATE0 + N_STATE:
            raise MicrocodeError(
                f"{where}: bad probe ({kind} lane {lane} {REGISTER_NAMES[reg] if reg < 25 else reg}): "
                f"kinds {PROBE_KINDS}, lane < {p.lanes}, a state register s0..s7"
            )
    key = (tuple(p.code), p.lanes, p.ports, p.params.shape[0], p.table.size == 0)
    if key not in _CODE_CHECKED:  # a net's cores and layers mostly run the same code: check it once
        _check_code(p, where)
        _CODE_CHECKED.add(key)


_CODE_CHECKED: set = set()  # (code, lanes, ports, parameters, table empty) whose instructions passed _check_code


def _check_code(p: Program, where: str) -> None:
    """Raise MicrocodeError naming the first instruction of `p` that is not runnable as it stands."""
    n_params = p.params.shape[0]
    for pc, ins in enumerate(p.code):
        at = f"{where}: instruction {pc} ({ins.op})"
        unused = [f for f in ("rd", "ra", "rb", "aux", "imm") if f not in used_fields(ins.op) and getattr(ins, f)]
        if unused:
            raise MicrocodeError(f"{at}: field {unused[0]} is not used by {ins.op} and must be 0")
        for kind in operand_kinds(ins.op):
            if kind in ("d", "a", "b"):
                reg = {"d": ins.rd, "a": ins.ra, "b": ins.rb}[kind]
                if reg >= len(REGISTER_NAMES):
                    raise MicrocodeError(f"{at}: no register number {reg}")
                if kind == "d" and not writable(reg):
                    raise MicrocodeError(f"{at}: writes read-only register {REGISTER_NAMES[reg]}")
                if PARAM0 <= reg < PARAM0 + N_PARAM and reg - PARAM0 >= n_params:
                    raise MicrocodeError(f"{at}: reads {REGISTER_NAMES[reg]}, the program has {n_params} parameter(s)")
            elif kind == "sh" and not 0 <= ins.imm <= 63:
                raise MicrocodeError(f"{at}: shift {ins.imm} outside 0..63")
            elif kind == "bits" and not 2 <= ins.aux <= 64:
                raise MicrocodeError(f"{at}: width {ins.aux} outside 2..64")
            elif kind == "cnt" and ins.rb >= len(COUNTERS):
                raise MicrocodeError(f"{at}: counter {ins.rb} unknown (0..{len(COUNTERS) - 1})")
            elif kind == "port" and ins.aux >= p.ports:
                raise MicrocodeError(f"{at}: port {ins.aux}, the program has {p.ports} port(s)")
            elif kind == "lane" and not 0 <= ins.imm < p.lanes:
                raise MicrocodeError(f"{at}: lane {ins.imm}, the program has {p.lanes} lane(s)")
            elif kind == "label" and not pc < ins.aux < len(p.code):
                raise MicrocodeError(
                    f"{at}: branch target {ins.aux} is not a later instruction "
                    f"(branches go forward, below {len(p.code)})"
                )
        if p.table.size == 0 and ins.op == "lut":
            raise MicrocodeError(f"{at}: lut with an empty table")


# -- the binary form -------------------------------------------------------------------------
# Little-endian 64-bit words:
#   0  magic "SSMCMC" + version (u16)
#   1  lanes u8 | ports u8 | params u8 | probes u8 | neurons u32
#   2  code words u32 | table words u32
#   3  reserved, 0
#   probes x (kind u8 | lane u8 | register u8 | 0 ...), code words, table (int64), params (int64, p0 first)
HEADER_WORDS = 4


def encode_program(p: Program, where: str = "program") -> bytes:
    check_program(p, where)
    words = [
        struct.unpack("<Q", MAGIC + struct.pack("<H", VERSION))[0],
        p.lanes | p.ports << 8 | p.params.shape[0] << 16 | len(p.probes) << 24 | p.neurons << 32,
        len(p.code) | p.table.size << 32,
        0,
    ]
    words += [PROBE_KINDS.index(k) | lane << 8 | reg << 16 for k, lane, reg in p.probes]
    words += [encode_instr(i) for i in p.code]
    head = np.array(words, dtype=np.uint64).astype("<u8").tobytes()
    data = np.concatenate([p.table.astype(np.int64).ravel(), p.params.astype(np.int64).ravel()])
    return head + data.astype("<i8").tobytes()


_DECODED: dict[bytes, tuple[Instr, ...]] = {}  # code words -> their instructions, see decode_program
_DECODED_MAX = 1024


def decode_program(blob: bytes, where: str = "program") -> Program:
    if len(blob) % WORD_BYTES or len(blob) < HEADER_WORDS * WORD_BYTES:
        raise MicrocodeError(
            f"{where}: {len(blob)} bytes is not a whole number of 64-bit words with a header "
            f"({HEADER_WORDS} words); the binary is truncated or not microcode"
        )
    if blob[:6] != MAGIC:
        raise MicrocodeError(f"{where}: no microcode magic {MAGIC!r} at the start; not an ssmc microcode binary")
    version = struct.unpack("<H", blob[6:8])[0]
    if version != VERSION:
        raise MicrocodeError(
            f"{where}: microcode version {version}, this ssmc reads version {VERSION}; recompile the net with this ssmc"
        )
    raw = np.frombuffer(blob, dtype="<u8")
    words = raw[:HEADER_WORDS].tolist()  # Python ints for the header, probes and code only: the table and
    # parameters (a word per neuron and parameter) stay one array
    w1, w2 = words[1], words[2]
    lanes, ports, n_params, n_probes, neurons = w1 & 255, (w1 >> 8) & 255, (w1 >> 16) & 255, (w1 >> 24) & 255, w1 >> 32
    n_code, n_table = w2 & 0xFFFFFFFF, w2 >> 32
    if words[3] != 0:
        raise MicrocodeError(f"{where}: header word 3 is not 0; the binary is damaged")
    want = HEADER_WORDS + n_probes + n_code + n_table + n_params * neurons
    if len(raw) != want:
        raise MicrocodeError(
            f"{where}: the header announces {want} words, the binary has {len(raw)}; it is truncated or damaged"
        )
    at = HEADER_WORDS
    probes = []
    for w in raw[at : at + n_probes].tolist():
        if w & 0xFF >= len(PROBE_KINDS) or w >> 24:
            raise MicrocodeError(f"{where}: bad probe word 0x{w:016x}")
        probes.append((PROBE_KINDS[w & 0xFF], (w >> 8) & 0xFF, (w >> 16) & 0xFF))
    at += n_probes
    words = blob[at * WORD_BYTES : (at + n_code) * WORD_BYTES]
    code = _DECODED.get(words)
    if code is None:  # a net's cores and layers mostly run the same code: decode it once (Instr is frozen)
        code = tuple(decode_instr(w, f"{where}: word {at + i}") for i, w in enumerate(raw[at : at + n_code].tolist()))
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[words] = code
    at += n_code
    data = np.frombuffer(blob, dtype="<i8")[at:].astype(np.int64)
    p = Program(
        lanes=lanes,
        neurons=neurons,
        ports=ports,
        code=list(code),
        probes=probes,
        table=data[:n_table].copy(),
        params=data[n_table:].reshape(n_params, neurons).copy(),
    )
    check_program(p, where)
    return p


def cycles_per_update(p: Program, awake: bool = True) -> int:
    """ASSUMED cycles of one neuron's update (docs/microcode.md): the sum of the costs of
    the instructions it executes. Branches test only the time step, so the path is the same
    for every neuron: `awake` follows it at a step past every `bslt` threshold, else at step 0."""
    step = 1 << 40 if awake else 0
    pc, total = 0, 0
    while True:
        ins = p.code[pc]
        total += OPCODES[ins.op].cycles
        if ins.op == "halt":
            return total
        if ins.op == "jmp" or (ins.op == "bslt" and step < ins.imm):
            pc = ins.aux
        else:
            pc += 1
