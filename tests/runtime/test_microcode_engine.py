"""The microcode engine runs the programs in net.lava and gets the numpy engine's integers.

Two levels: every instruction against a scalar Python-int reference written
here from docs/microcode.md (random programs), and whole networks against
run_numpy(trace=True) at every step -- messages, probed states, sigma-delta
`last`, saturation counts and sparsity -- on random neuro-level networks
(tests/runtime/test_engine_contract.py generators), random ONNX models
compiled end to end, and the shipped digits example.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ssmc
from ssmc.api import Net
from ssmc.backend_loihi.microcode.codegen import generate
from ssmc.backend_loihi.microcode.emit import emit_microcode
from ssmc.backend_loihi.microcode.isa import (
    COUNTER_QUANTITY,
    COUNTERS,
    N_TEMP,
    PARAM0,
    STATE0,
    ZERO,
    Instr,
    Program,
    decode_program,
    encode_program,
)
from ssmc.errors import MicrocodeError
from ssmc.runtime import microcode_engine
from ssmc.runtime.microcode_engine import run_program
from ssmc.runtime.numpy_engine import run_numpy
from tests.backend_loihi.microcode_programs import programs
from tests.builders.onnx_models import build_step_model, random_spec
from tests.conftest import EXAMPLES
from tests.runtime.test_engine_contract import (
    paper_size_network,
    random_extended_network,
    random_network,
    structured_network,
    with_widths,
)


# -- instruction semantics: a scalar reference from docs/microcode.md ---------------------
def wrap(v: int) -> int:
    """64-bit two's complement."""
    return (v + (1 << 63)) % (1 << 64) - (1 << 63)


def scalar_program(p: Program, ports: list[np.ndarray], depth: int = 0):
    """msgs [steps][batch][size], counts, probes -- one neuron at a time, Python ints."""
    steps, batch, size = ports[0].shape if ports else (1, 1, p.neurons * p.lanes)
    counts = {"accumulator": 0, "state": 0, "message": 0}
    state = [[[0] * 8 for _ in range(p.neurons)] for _ in range(batch)]
    msgs = np.zeros((steps, batch, size), np.int64)
    probes = {k: np.zeros((steps, batch, size), np.int64) for k, _, _ in p.probes}
    for t in range(steps):
        for b in range(batch):
            for n in range(p.neurons):
                regs = {}

                def get(r):
                    if r < N_TEMP:
                        return regs.get(r, 0)
                    if r < PARAM0:
                        return state[b][n][r - STATE0]
                    if r < ZERO:
                        return int(p.params[r - PARAM0, n])
                    return 0

                def put(r, v):
                    if r < N_TEMP:
                        regs[r] = v
                    else:
                        state[b][n][r - STATE0] = v

                pc = 0
                while True:
                    i: Instr = p.code[pc]
                    pc += 1
                    a, bb, op = get(i.ra), get(i.rb), i.op
                    if op == "halt":
                        break
                    if op == "bslt":
                        pc = i.aux if t < i.imm else pc
                    elif op == "jmp":
                        pc = i.aux
                    elif op == "emit":
                        msgs[t, b, n * p.lanes + i.imm] = a
                    elif op in ("sat", "lut"):
                        if op == "sat":
                            lo, hi = -(1 << (i.aux - 1)), (1 << (i.aux - 1)) - 1
                            v = min(max(a, lo), hi)
                            clipped = v != a
                        else:
                            top = len(p.table) - 1
                            v = int(p.table[min(max(a, 0), top)])
                            clipped = not 0 <= a <= top
                        if clipped and COUNTERS[i.rb] != "-":
                            counts[COUNTER_QUANTITY[COUNTERS[i.rb]]] += 1
                        put(i.rd, v)
                    else:
                        v = {
                            "li": lambda: i.imm,
                            "mov": lambda: a,
                            "in": lambda: int(ports[i.aux][t, b, n * p.lanes + i.imm]),
                            "add": lambda: wrap(a + bb),
                            "sub": lambda: wrap(a - bb),
                            "mul": lambda: wrap(a * bb),
                            "addi": lambda: wrap(a + i.imm),
                            "shr": lambda: a >> i.imm,
                            "shl": lambda: wrap(a << i.imm),
                            "rshr": lambda: wrap(a + (1 << (i.imm - 1))) >> i.imm if i.imm else a,
                            "max": lambda: max(a, bb),
                            "min": lambda: min(a, bb),
                            "abs": lambda: wrap(abs(a)),
                            "cgei": lambda: int(a >= i.imm),
                            "mask": lambda: a if bb != 0 else 0,
                        }[op]()
                        put(i.rd, v)
                for kind, lane, reg in p.probes:
                    probes[kind][t, b, n * p.lanes + lane] = state[b][n][reg - STATE0]
    return msgs, counts, probes


VALUES = st.one_of(st.integers(-300, 300), st.integers(-(1 << 40), 1 << 40), st.integers(-(1 << 62), 1 << 62))


@settings(max_examples=120, deadline=None)
@given(programs(value=VALUES, max_code=16), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_every_instruction_does_what_the_isa_page_says(prog, seed, depth):
    rng = np.random.default_rng(seed)
    size = prog.neurons * prog.lanes
    scale = rng.choice([100, 1 << 20, 1 << 34])
    ports = [rng.integers(-scale, scale, size=(4, 2, size)) for _ in range(prog.ports)]
    for values in ports:  # some compartments 0 at every step: the engine folds what reads them away
        values[:, :, rng.random(size) < 0.4] = 0
    msgs, counts, probes = run_program(prog, ports, depth)
    ref_msgs, ref_counts, ref_probes = scalar_program(prog, ports, depth)
    np.testing.assert_array_equal(msgs, ref_msgs)
    assert counts == ref_counts
    for kind in ref_probes:
        np.testing.assert_array_equal(probes[kind], ref_probes[kind])


@pytest.mark.parametrize("reads", [3, 16, 17, 40])
def test_neurons_are_split_into_classes_by_every_read_that_can_be_nonzero(reads):
    # a neuron summing `reads` ports, each of them 0 at every step for some neurons: the neurons fall into
    # classes that run the code with their zero reads folded away (up to 16 reads counted by number, more
    # sorted); every neuron must still get its own sum
    code = [Instr("in", rd=0, aux=0)]
    for port in range(1, reads):
        code += [Instr("in", rd=1, aux=port), Instr("add", rd=0, ra=0, rb=1)]
    prog = Program(1, 64, reads, code + [Instr("emit", ra=0), Instr("halt")], params=np.zeros((0, 64), np.int64))
    rng = np.random.default_rng(reads)
    ports = [rng.integers(-1000, 1000, size=(2, 3, 64)) * (rng.random(64) < 0.5) for _ in range(reads)]
    msgs, _, _ = run_program(prog, ports)
    np.testing.assert_array_equal(msgs, sum(ports))


# -- whole networks against the numpy engine --------------------------------------------------
# -- superinstructions: the engine fuses instruction sequences (microcode_engine._fuse) ------------
FEW_REGS = [0, 1, 2, STATE0, STATE0 + 1]  # few registers: a sequence's intermediates are often read again
EXTREMES = st.one_of(
    st.sampled_from([-(1 << 63), (1 << 63) - 1, 0, 1, -1, (1 << 31) - 1, -(1 << 31), 1 << 32, -(1 << 62)]),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.integers(-(1 << 20), 1 << 20),
)


@st.composite
def fusible_programs(draw):
    """Programs made of the sequences the engine turns into superinstructions, and near misses: `mul,
    mul, add|sub[, rshr]` (fma), `add|sub ... sat` (addsat), `emit, emit` (emit2), `in|add x; mov y x`
    (the result written to y), over a few registers,
    so an intermediate is often read later, emitted, a state (probed, kept), or an operand of the next
    instruction; a branch may land inside a sequence. Neurons: one tile's remainder or a full tile and
    a remainder."""
    lanes, neurons = draw(st.integers(1, 3)), draw(st.sampled_from([1, 3, 130]))
    # mostly registers not known to be 0 at the start (the engine folds operations on zeros away first)
    readable = FEW_REGS + 2 * [STATE0, STATE0 + 1, PARAM0, PARAM0 + 1] + [ZERO]

    def reg():
        return draw(st.sampled_from(FEW_REGS))

    def src():
        return draw(st.sampled_from(readable))

    def lane():
        return draw(st.integers(0, lanes - 1))

    code = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["fma", "addsat", "emit2", "move", "other"]))
        if kind == "fma":
            x, y = reg(), reg()
            code += [Instr("mul", rd=x, ra=src(), rb=src()), Instr("mul", rd=y, ra=src(), rb=src())]
            first, second = draw(st.sampled_from([(x, y), (y, x), (x, src()), (src(), y)]))
            code.append(Instr(draw(st.sampled_from(["add", "sub"])), rd=reg(), ra=first, rb=second))
            if draw(st.booleans()):
                z = draw(st.sampled_from([code[-1].rd, src()]))
                code.append(Instr("rshr", rd=reg(), ra=z, imm=draw(st.integers(0, 63))))
        elif kind == "addsat":
            x = reg()
            code.append(Instr(draw(st.sampled_from(["add", "sub"])), rd=x, ra=src(), rb=src()))
            for _ in range(draw(st.integers(0, 2))):  # instructions the add may move past, or not
                code.append(
                    draw(
                        st.sampled_from(
                            [
                                Instr("in", rd=reg()),
                                Instr("mov", rd=reg(), ra=src()),
                                Instr("emit", ra=src(), imm=lane()),
                            ]
                        )
                    )
                )
            a = draw(st.sampled_from([x, x, src()]))
            code.append(Instr("sat", rd=reg(), ra=a, aux=draw(st.integers(2, 64)), rb=draw(st.integers(0, 3))))
        elif kind == "move":
            x = reg()
            code.append(draw(st.sampled_from([Instr("in", rd=x), Instr("add", rd=x, ra=src(), rb=src())])))
            code.append(Instr("mov", rd=reg(), ra=draw(st.sampled_from([x, x, src()]))))
            if draw(st.booleans()):  # x read again: the move must stay
                code.append(Instr("emit", ra=x, imm=lane()))
        elif kind == "emit2":
            code += [Instr("emit", ra=src(), imm=lane()), Instr("emit", ra=src(), imm=lane())]
        else:
            code.append(draw(st.sampled_from([Instr("in", rd=reg()), Instr("emit", ra=src(), imm=lane())])))
    code += [Instr("emit", ra=reg(), imm=lane()) for _ in range(draw(st.integers(0, 3)))]  # intermediates read
    if draw(st.booleans()):  # a branch over part of the code, landing anywhere
        code = [Instr("bslt", aux=draw(st.integers(2, len(code) + 1)), imm=draw(st.integers(0, 3)))] + code
    code.append(Instr("halt"))
    probes = draw(
        st.lists(
            st.tuples(st.sampled_from(["v", "u"]), st.integers(0, lanes - 1), st.sampled_from(FEW_REGS[3:])), max_size=2
        )
    )
    params = np.array(draw(st.lists(EXTREMES, min_size=2 * neurons, max_size=2 * neurons)), np.int64).reshape(
        2, neurons
    )
    return Program(
        lanes=lanes, neurons=neurons, ports=1, code=code, probes=probes, table=np.zeros(0, np.int64), params=params
    )


@settings(max_examples=200, deadline=None)
@given(fusible_programs(), st.integers(0, 2**32 - 1))
def test_superinstructions_compute_what_their_instruction_sequences_compute(prog, seed):
    # the scalar reference runs every instruction one by one; the engine runs fma, addsat and emit2 where
    # the registers allow them: products, sums and rshr wrap, sats clip and count, at the int64 extremes
    rng = np.random.default_rng(seed)
    size = prog.neurons * prog.lanes
    scale = rng.choice([100, 1 << 31, 1 << 62])
    ports = [rng.integers(-scale, scale, size=(3, 2, size))]
    msgs, counts, probes = run_program(prog, ports)
    ref_msgs, ref_counts, ref_probes = scalar_program(prog, ports)
    np.testing.assert_array_equal(msgs, ref_msgs)
    assert counts == ref_counts
    for kind in ref_probes:
        np.testing.assert_array_equal(probes[kind], ref_probes[kind])


def test_superinstructions_are_formed_where_the_registers_allow_and_not_where_a_result_is_read():
    r0, r1, r2, s0, s1, p0, p1 = 0, 1, 2, STATE0, STATE0 + 1, PARAM0, PARAM0 + 1
    pair = [Instr("mul", rd=r0, ra=p0, rb=s0), Instr("mul", rd=r1, ra=p1, rb=s1), Instr("sub", rd=r2, ra=r0, rb=r1)]
    tail = [Instr("rshr", rd=r2, ra=r2, imm=15), Instr("sat", rd=s0, ra=r2, aux=24, rb=2), Instr("emit", ra=s0)]
    tail += [Instr("emit", ra=s1, imm=1), Instr("halt")]

    def ops(code, probed=frozenset()):
        rows, _ = microcode_engine._fuse(microcode_engine._code_array(code, [(0, 0)], False).tobytes(), probed)
        names = {v: k for k, v in microcode_engine.OP.items()}
        return [names[row[0]] for row in rows]

    assert ops(pair + tail) == ["fma", "sat", "emit2", "halt"]
    # r1 is read after the sequence: the fused op would not write it
    assert ops(pair + tail[:2] + [Instr("emit", ra=r1), Instr("halt")]) == [
        "mul",
        "mul",
        "sub",
        "rshr",
        "sat",
        "emit",
        "halt",
    ]
    # the add's sum is read by an emit before the sat, and a branch lands between the products
    add = [Instr("add", rd=r0, ra=p0, rb=s0), Instr("emit", ra=r0), Instr("sat", rd=s0, ra=r0, aux=8, rb=2)]
    assert ops(add + [Instr("halt")]) == ["add", "emit", "sat", "halt"]
    skip = [Instr("bslt", aux=3, imm=1)] + pair + tail
    assert ops(skip)[:4] == ["bslt", "mul", "mul", "sub"]
    # the second product reads the first: the fused op would read r0 before the first mul wrote it
    chained = [pair[0], Instr("mul", rd=r1, ra=r0, rb=s1), pair[2]] + tail
    assert ops(chained)[:3] == ["mul", "mul", "sub"]
    # between the add and its sat, an `in` writes the add's operand s0, or a branch lands on the sat
    moved = [Instr("add", rd=r0, ra=p0, rb=s0), Instr("in", rd=s0), Instr("sat", rd=s1, ra=r0, aux=8, rb=2)]
    assert ops(moved + [Instr("halt")]) == ["add", "in", "sat", "halt"]
    landed = [Instr("bslt", aux=3, imm=1), Instr("add", rd=r0, ra=p0, rb=s0), Instr("emit", ra=s1)]
    assert ops(landed + [Instr("sat", rd=s1, ra=r0, aux=8, rb=2), Instr("halt")])[:2] == ["bslt", "add"]
    # an `in` moved on: the move goes unless the `in`'s register is read after it
    read_twice = [Instr("in", rd=r2), Instr("mov", rd=r0, ra=r2), Instr("emit", ra=r0)]
    assert ops(read_twice + [Instr("halt")]) == ["in", "emit", "halt"]
    assert ops(read_twice + [Instr("emit", ra=r2, imm=1), Instr("halt")]) == ["in", "mov", "emit2", "halt"]
    for code in (chained, moved + [Instr("emit", ra=s0), Instr("halt")], landed + tail[1:]):
        prog = Program(lanes=2, neurons=3, ports=1, code=code, probes=[], table=np.zeros(0, np.int64))
        prog = dataclasses.replace(prog, params=np.array([[3, -(1 << 40), 1 << 62], [7, 1 << 33, -1]], np.int64))
        ports = [np.random.default_rng(0).integers(-(1 << 40), 1 << 40, size=(3, 2, 6))]
        np.testing.assert_array_equal(run_program(prog, ports)[0], scalar_program(prog, ports)[0])


def test_a_program_without_parameter_memory_runs_with_its_default_empty_params():
    # Program's default parameter memory is [0, 0] (check_program accepts it for any neuron count):
    # the engine must not index member columns that are not there (numpy warns, and will raise)
    prog = Program(lanes=2, neurons=3, ports=1, code=[Instr("in", rd=0), Instr("emit", ra=0), Instr("halt")])
    assert prog.params.shape == (0, 0)
    ports = [np.random.default_rng(1).integers(-(1 << 20), 1 << 20, size=(4, 2, 6))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = run_program(prog, ports)[0]
    np.testing.assert_array_equal(got, scalar_program(prog, ports)[0])


def net_of(graph) -> Net:
    return Net(graph=graph, source={}, pipeline="", report={}, extras=emit_microcode(graph))


def assert_same_run(net: Net, x: np.ndarray) -> None:
    """Same integers at every step for every group and probed state, same counts and sparsity."""
    ref = run_numpy(net.graph, x, trace=True)
    got = microcode_engine.run_net(net, x, trace=True)
    assert sorted(got.trace) == sorted(ref.trace)
    for key in ref.trace:
        np.testing.assert_array_equal(got.trace[key], ref.trace[key], err_msg=key)
    for name in ref.raw:
        np.testing.assert_array_equal(got.raw[name], ref.raw[name])
        np.testing.assert_array_equal(got.outputs[name], ref.outputs[name])
    assert got.saturation == ref.saturation
    assert got.sparsity == ref.sparsity
    assert got.steps == ref.steps


@pytest.mark.parametrize("seed", range(0, 21, 3))
def test_every_synapse_kernel_matches_numpy_at_every_step(seed):
    g = structured_network(seed)
    x = np.random.default_rng(seed).normal(scale=4.0, size=(2, 6, g.inputs()[0].shape[0]))
    assert_same_run(net_of(g), x)


def test_paper_size_network_matches_numpy_at_every_step():
    g = paper_size_network()
    assert_same_run(net_of(g), np.random.default_rng(7).normal(scale=0.01, size=(2, 3, 1)))


@pytest.mark.parametrize("seed", range(16))
def test_random_networks_match_numpy_at_every_step(seed):
    g = random_network(seed)  # varied coef/msg/state widths, weight exponents, dense messages
    rng = np.random.default_rng(300 + seed)
    x = rng.normal(scale=rng.choice([0.5, 4.0, 400.0, 1e6]), size=(3, 9, g.inputs()[0].shape[0]))
    assert_same_run(net_of(g), x)


@pytest.mark.parametrize("seed", range(24))
def test_lut_product_and_sigma_delta_networks_match_numpy_at_every_step(seed):
    g = random_extended_network(seed)  # every kind, each group dense or sigma-delta at random
    rng = np.random.default_rng(400 + seed)
    x = rng.normal(scale=rng.choice([0.5, 4.0, 400.0, 1e6]), size=(3, 10, g.inputs()[0].shape[0]))
    assert_same_run(net_of(g), x)


@pytest.mark.parametrize("sequences, chunk", [(3, 1), (1, 2), (2, 3), (2, 7), (3, 7)])
def test_programs_with_and_without_state_match_numpy_in_chunks_of_any_length(monkeypatch, sequences, chunk):
    # The engine runs the batch a sub-part of sequences after the other, each in chunks of steps, each
    # program over all of a chunk's steps. Short chunks split the steps at the groups' depth branches,
    # wrap the message rings and carry state registers (cpx, integrator, sigma-delta's last) and sigma
    # sums from chunk to chunk; each sub-part starts again from zero state and history in the same
    # buffers (2 of 3 sequences: the last sub-part leaves one idle).
    kinds = set()
    for seed in (1, 2, 5):
        g = random_extended_network(seed)
        net = net_of(g)
        x = np.random.default_rng(600 + seed).normal(scale=40.0, size=(3, 8, g.inputs()[0].shape[0]))
        ref = run_numpy(g, x, trace=True)  # in its own chunks
        monkeypatch.setattr(microcode_engine, "_sub_part_shape", lambda *args: (sequences, chunk))
        got = microcode_engine.run_net(net, x, trace=True)
        monkeypatch.undo()
        assert sorted(got.trace) == sorted(ref.trace)
        for key in ref.trace:
            np.testing.assert_array_equal(
                got.trace[key], ref.trace[key], err_msg=f"{key}, {sequences} sequences, chunk {chunk}"
            )
        assert got.saturation == ref.saturation and got.sparsity == ref.sparsity
        for op in g.ops_of_kind("neurons"):
            kinds.add(op.attrs["kind"] in ("cpx", "integrator") or op.attrs.get("delta", 0) > 0)
    assert kinds == {True, False}  # programs with and without state across steps


def test_a_run_in_an_earlier_runs_buffers_starts_from_zero_state_and_counts():
    # A loaded net keeps its run buffers for the next run of the same shape (no fresh zeros, no page
    # faults): each run zeroes its state, sigma sums, ring history and counters in place. A run that
    # saturates and leaves state behind, then another: the second has the numpy engine's integers and
    # counts; two runs at once (threads) take different buffers.
    for seed in (1, 2, 5):
        g = random_extended_network(seed)
        net = net_of(g)
        rng = np.random.default_rng(700 + seed)
        loud, quiet = (rng.normal(scale=s, size=(3, 8, g.inputs()[0].shape[0])) for s in (1e6, 2.0))
        microcode_engine.run_net(net, loud, trace=True)
        spare = [id(v) for v in microcode_engine._LOADED[g][2].spare]
        assert len(spare) == 1
        got = microcode_engine.run_net(net, quiet, trace=True)
        assert [id(v) for v in microcode_engine._LOADED[g][2].spare] == spare  # taken and given back
        ref = run_numpy(g, quiet, trace=True)
        for key in ref.trace:
            np.testing.assert_array_equal(got.trace[key], ref.trace[key], err_msg=f"{key}, seed {seed}")
        assert got.saturation == ref.saturation and got.sparsity == ref.sparsity
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda x: microcode_engine.run_net(net, x), [loud, quiet] * 3))
        for x, run in zip([loud, quiet] * 3, runs):
            ref = run_numpy(g, x)
            for name in ref.raw:
                np.testing.assert_array_equal(run.raw[name], ref.raw[name], err_msg=f"seed {seed}")
            assert run.saturation == ref.saturation


def test_the_networks_above_cover_every_kind_dense_and_sigma_delta():
    seen = set()
    for seed in range(24):
        for op in random_extended_network(seed).ops_of_kind("neurons"):
            seen.add((op.attrs["kind"], op.attrs.get("delta", 0) > 0))
    for seed in range(16):
        seen |= {(op.attrs["kind"], False) for op in random_network(seed).ops_of_kind("neurons")}
    kinds = ("source", "relay", "relu", "cpx", "integrator", "lut", "product")
    assert {(k, False) for k in kinds} <= seen
    assert {(k, True) for k in kinds if k not in ("source", "relay")} <= seen


@pytest.mark.parametrize("seed, sigma_delta", [(0, None), (1, 0.0), (2, 0.01), (3, None), (4, 0.05)])
def test_random_onnx_models_compiled_end_to_end_match_numpy(tmp_path, seed, sigma_delta):
    import onnx

    spec = random_spec(seed, H=int(np.random.default_rng(seed).integers(2, 6)), M=2, n_layers=1 + seed % 2)
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    x = np.random.default_rng(seed).normal(size=(3, 7, spec.in_features)).astype(np.float32)
    widths = {"state_bits": 16 + seed, "message_bits": 12 + 2 * seed}
    net = ssmc.compile(path, readout="mean", calibration=x, sigma_delta=sigma_delta, **widths)
    assert_same_run(net, x)


@pytest.fixture(scope="module")
def digits_net():
    return ssmc.compile(EXAMPLES / "digits_s4d_step.onnx", readout="mean", calibration=EXAMPLES / "digits_calib.npz")


def test_the_shipped_example_matches_numpy_at_every_step(digits_net, tmp_path):
    x = np.load(EXAMPLES / "digits_test.npz")["x"][:8]
    digits_net.save(tmp_path / "n.lava")
    assert_same_run(ssmc.load(tmp_path / "n.lava"), x)  # the programs as stored in net.lava


def test_net_run_with_the_microcode_engine_gives_the_numpy_outputs_and_report(digits_net):
    x = np.load(EXAMPLES / "digits_test.npz")["x"][:4]
    a = digits_net.run_detailed(x, engine="numpy")
    b = digits_net.run_detailed(x, engine="microcode")
    np.testing.assert_array_equal(a["outputs"], b["outputs"])
    assert a["saturation"] == b["saturation"] and a["sparsity"] == b["sparsity"]


# -- the programs are what runs -------------------------------------------------------------
def _with_program(net: Net, group: str, edit) -> Net:
    extras = dict(net.extras)
    path = f"microcode/{group}.bin"
    extras[path] = encode_program(edit(decode_program(extras[path])))
    return dataclasses.replace(net, extras=extras)


def _differs(net: Net, x: np.ndarray) -> bool:
    try:
        assert_same_run(net, x)
    except AssertionError:
        return True
    return False


def test_a_wrong_rounding_in_one_instruction_is_caught():
    # rshr (round to nearest) -> shr (floor) in the cpx update: the comparison must notice
    g = random_network(4)
    net = net_of(g)
    x = np.random.default_rng(0).normal(scale=4.0, size=(2, 8, g.inputs()[0].shape[0]))
    assert not _differs(net, x)

    def floor_instead(p: Program) -> Program:
        code = list(p.code)
        at = next(i for i, ins in enumerate(code) if ins.op == "rshr" and ins.imm > 0)
        code[at] = dataclasses.replace(code[at], op="shr")
        return dataclasses.replace(p, code=code)

    assert _differs(_with_program(net, "pairs", floor_instead), x)


def test_editing_a_binary_changes_what_runs():
    # the engine runs the binary, not the IR: a relu program turned into a relay shows it
    g = random_network(2)
    net = net_of(g)
    x = np.random.default_rng(1).normal(scale=4.0, size=(2, 8, g.inputs()[0].shape[0]))

    def no_relu(p: Program) -> Program:
        return dataclasses.replace(p, code=[ins for ins in p.code if ins.op != "max"])

    assert _differs(_with_program(net, "act", no_relu), x)


# -- damaged programs in net.lava: one-line errors ----------------------------------------
@pytest.mark.parametrize(
    "damage, phrase",
    [
        (lambda e: e.pop("microcode/index.json"), "has no microcode/index.json"),
        (lambda e: e.pop("microcode/pairs.bin"), "its binary 'microcode/pairs.bin' is not in the net"),
        (lambda e: e.update({"microcode/pairs.bin": e["microcode/pairs.bin"][:-8]}), "truncated or damaged"),
        (lambda e: e.update({"microcode/pairs.bin": b"garbage!"}), "not a whole number of 64-bit words"),
        (lambda e: e.update({"microcode/index.json": b"{not json"}), "index.json is damaged"),
        (
            lambda e: e.update({"microcode/index.json": e["microcode/index.json"].replace(b'"units"', b'"blocks"')}),
            "from an older ssmc (missing or bad 'units')",
        ),
        (
            lambda e: e.update(
                {"microcode/index.json": e["microcode/index.json"].replace(b'"kind": "cpx"', b'"kind": 3')}
            ),
            "missing or bad kind of pairs",
        ),
        (
            lambda e: e.update({"microcode/index.json": e["microcode/index.json"].replace(b'"pairs"', b'"other"')}),
            "program for %other, which is not a neuron group",
        ),
        (lambda e: e.update({"microcode/pairs.bin": e["microcode/act.bin"]}), "which does not fit the group"),
    ],
)
def test_damaged_microcode_is_a_one_line_error(damage, phrase):
    g = random_network(0)
    net = net_of(g)
    damage(net.extras)
    with pytest.raises(MicrocodeError) as e:
        microcode_engine.run_net(net, np.zeros((1, 3, g.inputs()[0].shape[0])))
    assert phrase in str(e.value) and "\n" not in str(e.value)


def test_a_program_for_another_version_of_its_group_is_refused():
    g = random_network(0)
    net = net_of(g)
    g.op("act").params["bias"] = g.op("act").params["bias"] + 1  # the IR changed after codegen
    with pytest.raises(MicrocodeError, match="%act was generated from a different version"):
        microcode_engine.run_net(net, np.zeros((1, 3, g.inputs()[0].shape[0])))


def test_a_group_whose_parameters_do_not_fit_the_immediate_is_refused_at_codegen():
    g = random_extended_network(1)
    g.op("gate").attrs["lut_lo"] = 1 << 40
    with pytest.raises(MicrocodeError, match="%gate .*does not fit the 32-bit immediate"):
        generate(g.op("gate"))


def test_a_net_without_neuron_groups_is_refused_not_run_in_float(tmp_path):
    import onnx

    spec = random_spec(0, H=2, M=1, n_layers=1)
    onnx.save(build_step_model(spec), str(tmp_path / "m.onnx"))
    net = ssmc.compile(tmp_path / "m.onnx", passes="canonicalize")
    assert "microcode/index.json" not in net.extras
    with pytest.raises(ssmc.errors.SsmcError, match="without the fixed-point passes"):
        net.run(np.zeros((1, 2, spec.in_features)), engine="microcode")


def test_a_wrong_rounding_in_the_interpreter_is_caught(monkeypatch):
    # the same check from the other side: an interpreter whose rshr rounds ties down, as the compiled
    # interpreter would if its rshr added 2^(sh-1) - 1: here an `addi -1` before every rshr it is given
    g = random_network(4)
    net = net_of(g)
    x = np.random.default_rng(0).normal(scale=4.0, size=(2, 8, g.inputs()[0].shape[0]))
    real = microcode_engine._code_array

    def ties_down(code, slots, raw):
        new, where = [], []
        for ins in code:
            where.append(len(new))
            if ins.op == "rshr" and ins.imm > 0:
                new.append(Instr("addi", rd=ins.rd, ra=ins.ra, imm=-1))
                ins = dataclasses.replace(ins, ra=ins.rd)
            new.append(ins)
        new = [dataclasses.replace(i, aux=where[i.aux]) if i.op in ("bslt", "jmp") else i for i in new]
        return real(new, slots, raw)

    monkeypatch.setattr(microcode_engine, "_code_array", ties_down)
    assert _differs(net, x)


@pytest.mark.parametrize(
    "seed, msg_bits, state_bits, coef_bits",
    [(0, 32, 31, 32), (1, 32, 16, 2), (2, 2, 6, 16), (3, 6, 32, 24), (4, 24, 2, 8)],
)
def test_extreme_widths_match_numpy(seed, msg_bits, state_bits, coef_bits):
    # 32-bit values (products near 2^62), and 2- to 6-bit ones that saturate nearly everywhere
    g = with_widths(random_extended_network(seed), msg_bits, state_bits, coef_bits)
    rng = np.random.default_rng(500 + seed)
    x = rng.normal(scale=rng.choice([1.0, 1e4]), size=(2, 6, g.inputs()[0].shape[0]))
    assert_same_run(net_of(g), x)


@pytest.mark.parametrize("seed", range(8))
def test_per_core_programs_run_to_the_same_integers(seed):
    from tests.backend_loihi.test_microcode_codegen import random_placement

    g = random_extended_network(seed)
    placement = random_placement(g, seed)
    first = next(name for name, blocks in placement.items() if len(blocks) > 1)
    placement[first] = [(0, 0, start, stop) for _, _, start, stop in placement[first]]  # blocks sharing a core
    net = dataclasses.replace(net_of(g), extras=emit_microcode(g, placement))
    assert any(k.startswith("microcode/chip") for k in net.extras)
    rng = np.random.default_rng(600 + seed)
    assert_same_run(net, rng.normal(scale=rng.choice([0.5, 400.0]), size=(2, 8, g.inputs()[0].shape[0])))


def test_per_core_programs_that_leave_a_gap_are_refused():
    import json

    g = random_network(0)
    size = g.op("act").attrs["size"]
    net = net_of(g)
    net.extras.update(emit_microcode(g, {"act": [(0, 0, 0, 1), (0, 1, 1, size)]}))
    index = json.loads(net.extras["microcode/index.json"])
    row = next(r for r in index["groups"] if r["group"] == "act")
    row["units"] = row["units"][1:]
    net.extras["microcode/index.json"] = json.dumps(index).encode()
    with pytest.raises(MicrocodeError, match="%act: .*at compartment 1 .*the next at 0"):
        microcode_engine.run_net(net, np.zeros((1, 3, g.inputs()[0].shape[0])))


@pytest.mark.parametrize("seed, sigma_delta", [(5, None), (6, 0.01)])
def test_nets_with_linears_split_by_row_exponent_match_numpy(tmp_path, seed, sigma_delta):
    import onnx

    spec = random_spec(seed, H=4, M=2, n_layers=1, glu=False)
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    x = np.random.default_rng(seed).normal(size=(3, 7, spec.in_features)).astype(np.float32)
    net = ssmc.compile(path, calibration=x, sigma_delta=sigma_delta, weight_exp="row")
    sources = [op.attrs["source"] for op in net.graph.ops_of_kind("synapses")]
    assert len(sources) > len(set(sources))  # some linear became several synapse groups
    assert_same_run(net, x)
