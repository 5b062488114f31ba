"""Hypothesis strategies for random valid microcode programs (shared by the ISA and engine tests)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ssmc.backend_loihi.microcode.isa import (
    COUNTERS,
    N_PARAM,
    N_STATE,
    N_TEMP,
    OPCODES,
    PARAM0,
    PROBE_KINDS,
    STATE0,
    ZERO,
    Instr,
    Program,
    operand_kinds,
)

WRITABLE = list(range(N_TEMP)) + [STATE0 + k for k in range(N_STATE)]
INT64 = st.integers(-(1 << 63), (1 << 63) - 1)


@st.composite
def programs(draw, ops=None, straight=False, max_code=12, value=INT64, max_neurons=4):
    """A random program every check of isa.check_program accepts. `ops`: the opcodes to
    draw from (default all); `straight`: no branches; values in tables/params from `value`."""
    ops = sorted(ops or OPCODES)
    if straight:
        ops = [o for o in ops if o not in ("bslt", "jmp", "halt")]
    lanes, neurons = draw(st.integers(1, 3)), draw(st.integers(1, max_neurons))
    ports = draw(st.integers(0, 3))
    n_params = draw(st.integers(0, N_PARAM))
    table = np.array(draw(st.lists(value, min_size=1 if "lut" in ops else 0, max_size=6)), np.int64)
    readable = WRITABLE + [PARAM0 + k for k in range(n_params)] + [ZERO]
    n = draw(st.integers(0, max_code))
    code = []
    for pc in range(n):
        choices = [
            o
            for o in ops
            if not (o == "in" and ports == 0)
            and not (o == "lut" and table.size == 0)
            and not (o in ("bslt", "jmp") and pc + 1 >= n + 1)
        ]
        op = draw(st.sampled_from(choices))
        f = {"rd": 0, "ra": 0, "rb": 0, "aux": 0, "imm": 0}
        for kind in operand_kinds(op):
            if kind == "d":
                f["rd"] = draw(st.sampled_from(WRITABLE))
            elif kind in ("a", "b"):
                f["r" + kind] = draw(st.sampled_from(readable))
            elif kind == "imm":
                f["imm"] = draw(st.integers(-(1 << 31), (1 << 31) - 1))
            elif kind == "sh":
                f["imm"] = draw(st.integers(0, 63))
            elif kind == "bits":
                f["aux"] = draw(st.integers(2, 64))
            elif kind == "cnt":
                f["rb"] = draw(st.integers(0, len(COUNTERS) - 1))
            elif kind == "port":
                f["aux"] = draw(st.integers(0, ports - 1))
            elif kind == "lane":
                f["imm"] = draw(st.integers(0, lanes - 1))
            elif kind == "label":
                f["aux"] = draw(st.integers(pc + 1, n))  # n: the final halt
        code.append(Instr(op, **f))
    code.append(Instr("halt"))
    probes = draw(
        st.lists(
            st.tuples(
                st.sampled_from(PROBE_KINDS),
                st.integers(0, lanes - 1),
                st.sampled_from([STATE0 + k for k in range(N_STATE)]),
            ),
            max_size=3,
        )
    )
    params = np.array(
        draw(st.lists(st.lists(value, min_size=neurons, max_size=neurons), min_size=n_params, max_size=n_params)),
        np.int64,
    ).reshape(n_params, neurons)
    return Program(lanes=lanes, neurons=neurons, ports=ports, code=code, probes=probes, table=table, params=params)
