"""The microcode text and binary forms: round trips, and one-line errors that say where.

docs/microcode.md is the reference for both forms.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ssmc.backend_loihi.microcode.asm import assemble, disassemble, format_program, parse
from ssmc.backend_loihi.microcode.isa import (
    OPCODES,
    Instr,
    Program,
    cycles_per_update,
    decode_program,
    encode_instr,
    encode_program,
)
from ssmc.errors import MicrocodeError, SsmcError
from tests.backend_loihi.microcode_programs import programs

GOOD = """\
; a relu neuron that wakes at step 2
.microcode 1
.lanes 1
.neurons 3
.ports 2
.probe last 0 s2
.param p0 10 -20 30
    bslt 2, idle
    in r0, 0, 0
    in r4, 1, 0          ; second synapse group
    add r0, r0, r4
    add r0, r0, p0
    sat r0, r0, 32, acc
    max r0, r0, z
    emit r0, 0
    halt
idle: emit z, 0
    halt
"""


@settings(max_examples=150, deadline=None)
@given(programs())
def test_every_program_survives_binary_and_text_round_trips(p):
    blob = encode_program(p)
    assert decode_program(blob) == p
    text = format_program(p)
    assert parse(text) == p
    assert assemble(text) == blob
    assert disassemble(blob) == text


def test_the_binary_is_words_of_the_documented_layout():
    blob = assemble(GOOD)
    words = np.frombuffer(blob, "<u8")
    # header 4 words, 1 probe, 11 instructions, no table, 3 parameter words
    assert len(blob) == 8 * (4 + 1 + 11 + 0 + 3)
    assert blob[:6] == b"SSMCMC" and struct.unpack("<H", blob[6:8])[0] == 1
    assert int(words[1]) == 1 | 2 << 8 | 1 << 16 | 1 << 24 | 3 << 32  # lanes, ports, params, probes, neurons
    assert int(words[2]) == 11  # code words | table words << 32
    # the first instruction: bslt (opcode 18), target 9 in aux, imm 2
    assert int(words[5]) == 18 << 56 | 9 << 32 | 2
    # sat r0, r0, 32, acc: opcode 11, rd 0, ra 0, counter 1 (acc) in rb, 32 in aux
    assert int(words[5 + 5]) == 11 << 56 | 1 << 41 | 32 << 32
    assert list(np.frombuffer(blob, "<i8")[-3:]) == [10, -20, 30]


def test_labels_comments_and_layout_are_free_in_the_input_but_canonical_in_the_output():
    text = disassemble(assemble(GOOD))
    assert ";" not in text and "idle" not in text and "L9:" in text
    assert disassemble(assemble(text)) == text


@pytest.mark.parametrize(
    "edit, line, phrase",
    [
        (("    max r0, r0, z", "    maxx r0, r0, z"), 14, "unknown instruction 'maxx'"),
        (("    max r0, r0, z", "    max r0, r9, z"), 14, "'r9' is not a register"),
        (("    max r0, r0, z", "    max r0, r0"), 14, "max takes 3 operand(s)"),
        (("    add r0, r0, p0", "    add p0, r0, p0"), None, "writes read-only register p0"),
        (("    sat r0, r0, 32, acc", "    sat r0, r0, 32, sum"), 13, "counter 'sum' unknown"),
        (("    sat r0, r0, 32, acc", "    sat r0, r0, 1000, acc"), 13, "bits 1000 outside 0..511"),
        (("    bslt 2, idle", "    bslt 2, later"), 8, "undefined label 'later'"),
        (("    bslt 2, idle", "    bslt 99999999999, idle"), 8, "does not fit the signed 32-bit immediate"),
        (("    in r0, 0, 0", "    in r0, 0, x"), 9, "lane 'x' is not an integer"),
        ((".ports 2", ".ports 2\n.ports 3"), 6, ".ports given twice"),
        ((".ports 2", ".portz 2"), 5, "unknown directive .portz"),
        ((".param p0 10 -20 30", ".param p1 10 -20 30"), None, "without gaps"),
        ((".param p0 10 -20 30", ".param p0 10 -20"), None, "parameter memory of shape"),
        ((".microcode 1", ".microcode 7"), None, "this ssmc assembles version 1"),
        ((".neurons 3\n", ""), None, "missing directive .neurons"),
        (("idle: emit z, 0\n    halt", "idle: emit z, 0"), None, "must be halt"),
        (("    in r4, 1, 0 ", "    in r4, 5, 0 "), None, "port 5, the program has 2 port(s)"),
        (("    emit r0, 0", "    emit r0, 1"), None, "lane 1, the program has 1 lane(s)"),
        (("    max r0, r0, z", "    lut r0, r0, msg"), None, "lut with an empty table"),
        (("    max r0, r0, z", "    max r0, r0, p3"), None, "reads p3, the program has 1 parameter(s)"),
        (("    max r0, r0, z", "    shr r0, r0, 64"), None, "shift 64 outside 0..63"),
        ((".probe last 0 s2", ".probe last 0 r2"), None, "bad probe"),
    ],
)
def test_bad_text_is_a_one_line_error_saying_where(edit, line, phrase):
    old, new = edit
    assert old in GOOD
    with pytest.raises(MicrocodeError) as e:
        assemble(GOOD.replace(old, new, 1))
    msg = str(e.value)
    assert phrase in msg and "\n" not in msg
    if line is not None:
        assert msg.startswith(f"line {line}:")


def test_a_label_defined_twice_is_refused():
    with pytest.raises(MicrocodeError, match="line 19: label 'idle' defined twice"):
        assemble(GOOD + "idle:\n")


def _damage(blob: bytes, word: int, value: int) -> bytes:
    return blob[: 8 * word] + struct.pack("<Q", value) + blob[8 * word + 8 :]


@pytest.mark.parametrize(
    "damage, phrase",
    [
        (lambda b: b[:-3], "not a whole number of 64-bit words"),
        (lambda b: b[:-8], "the header announces 19 words, the binary has 18"),
        (lambda b: b + bytes(8), "the header announces 19 words, the binary has 20"),
        (lambda b: b[:16], "not a whole number"),
        (lambda b: b"XXXXXX" + b[6:], "no microcode magic"),
        (lambda b: b[:6] + struct.pack("<H", 9) + b[8:], "microcode version 9"),
        (lambda b: _damage(b, 3, 1), "header word 3 is not 0"),
        (lambda b: _damage(b, 6, 63 << 56), "unknown opcode 63"),
        (lambda b: _damage(b, 6, encode_instr(Instr("halt", imm=5))), "field imm is not used by halt"),
        (lambda b: _damage(b, 13, encode_instr(Instr("jmp", aux=2))), "branch target 2 is not a later instruction"),
        (lambda b: _damage(b, 6, encode_instr(Instr("mov", rd=16))), "writes read-only register p0"),
        (lambda b: _damage(b, 4, 7), "bad probe word"),
    ],
)
def test_a_damaged_binary_is_a_one_line_error(damage, phrase):
    blob = assemble(GOOD)
    with pytest.raises(SsmcError) as e:
        decode_program(damage(blob), "microcode for %g")
    assert phrase in str(e.value) and str(e.value).startswith("microcode for %g") and "\n" not in str(e.value)


def test_a_damaged_code_word_is_refused_after_the_same_code_decoded_fine():
    # the decoder keeps each distinct code it decoded: a changed word must be decoded (and refused) anew
    blob = assemble(GOOD)
    first = decode_program(blob)
    with pytest.raises(MicrocodeError, match="unknown opcode 63"):
        decode_program(_damage(blob, 6, 63 << 56))
    assert decode_program(_damage(blob, 6, encode_instr(Instr("in", rd=2)))).code[1] == Instr("in", rd=2)
    assert decode_program(blob) == first


def test_cycles_follow_the_awake_and_the_idle_path():
    p = parse(GOOD)
    costs = {name: spec.cycles for name, spec in OPCODES.items()}
    awake = ["bslt", "in", "in", "add", "add", "sat", "max", "emit", "halt"]
    assert cycles_per_update(p) == sum(costs[o] for o in awake)
    assert cycles_per_update(p, awake=False) == costs["bslt"] + costs["emit"] + costs["halt"]
    assert costs["mul"] > costs["add"]  # the assumed model charges multiplies more


def test_every_opcode_has_a_distinct_code_that_fits_its_field():
    codes = [s.code for s in OPCODES.values()]
    assert len(set(codes)) == len(codes) and max(codes) < 256
    Program(lanes=1, neurons=1, ports=0, code=[Instr("halt")])  # the smallest program is valid
    assert decode_program(encode_program(Program(lanes=1, neurons=1, ports=0, code=[Instr("halt")]))).code == [
        Instr("halt")
    ]


@settings(max_examples=150, deadline=None)
@given(programs(max_code=8), st.data())
def test_flipped_bytes_give_a_valid_program_or_a_one_line_error(p, data):
    blob = bytearray(encode_program(p))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] ^= data.draw(st.integers(1, 255))
    try:
        q = decode_program(bytes(blob))
    except MicrocodeError as e:
        assert "\n" not in str(e)
    else:
        assert encode_program(q) == bytes(blob)  # what decodes is exactly what the bytes say
