"""Fuzzing with generated graphs: random valid and invalid ONNX models are
compiled (imported, then run through the default pipeline and the numpy
engine when the import succeeds) or refused with an SsmcError -- never any
other exception.

Hypothesis draws op sequences, shapes, attributes, dtypes and initializers
(including NaN, inf, huge and tiny values), recurrent states, and damage:
dangling names, cycles, wrong dtypes, duplicate outputs, bad attributes.
A third set edits compiled net.lava IR (attributes, tensors, wiring) keeping
the checksums valid, as a hand-edited file would: it must load and run, or
be refused. The seed and case counts are printed; replay with
FUZZ_SEED=<seed>, and set FUZZ_GRAPH_CASES to run more (generated graphs;
mutated models get a fifth of it, edited nets a third).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from ssmc.errors import SsmcError
from ssmc.frontend.convert import convert
from ssmc.frontend.load import load_model_bytes

SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
CASES = int(os.environ.get("FUZZ_GRAPH_CASES", "1500"))

UNARY = (
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Neg",
    "Abs",
    "Erf",
    "Identity",
    "Softmax",
    "Sqrt",
    "Reciprocal",
    "Dropout",
    "Flatten",
    "TopK",
    "Not",
)
FLAVOURS = ("normal",) * 24 + ("nan", "inf", "huge", "tiny", "zeros", "ints")
DTYPES = (TensorProto.FLOAT,) * 30 + (
    TensorProto.DOUBLE,
    TensorProto.FLOAT16,
    TensorProto.INT64,
    TensorProto.INT32,
    TensorProto.BOOL,
)
DAMAGE = ("none",) * 20 + (
    "dangling",
    "cycle",
    "duplicate_output",
    "wrong_dtype",
    "bad_attr",
    "drop_output",
    "state_mismatch",
    "empty_name",
    "unknown_domain",
    "missing_opset",
)


def _values(rng: np.random.Generator, shape: tuple, flavour: str) -> np.ndarray:
    v = rng.standard_normal(shape)
    if v.size:
        if flavour == "nan":
            v.flat[rng.integers(v.size)] = np.nan
        elif flavour == "inf":
            v.flat[rng.integers(v.size)] = rng.choice([np.inf, -np.inf])
        elif flavour == "huge":
            v *= 1e37
        elif flavour == "tiny":
            v *= 1e-38
        elif flavour == "zeros":
            v[...] = 0
    if flavour == "ints":
        return np.round(v * 3).astype(np.int64)
    return v.astype(np.float32)


class _Builder:
    def __init__(self, rng, draw):
        self.rng, self.draw = rng, draw
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def init(self, shape, flavour=None):
        flavour = flavour or self.draw(st.sampled_from(FLAVOURS))
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(_values(self.rng, shape, flavour), name))
        return name

    def node(self, op, inputs, n_out=1, domain=None, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name("n_" + op), domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs


def _layer(b: _Builder, draw, x: str, width: int) -> tuple[str, int]:
    """One random op (or small pattern) reading x [batch, width]; returns its output and width."""
    kind = draw(
        st.sampled_from(
            ("linear",) * 4
            + ("matmul_add", "unary", "scalar", "residual", "gelu") * 2
            + ("glu", "norm", "reshape", "concat", "cast", "conv")
        )
    )
    out_w = draw(st.integers(1, 6))
    if kind == "linear":
        trans = draw(st.booleans())
        w = b.init((out_w, width) if trans else (width, out_w))
        bias = [b.init((out_w,))] if draw(st.booleans()) else []
        return b.node("Gemm", [x, w] + bias, transB=int(trans), alpha=draw(st.sampled_from([1.0, 0.5, 1e30]))), out_w
    if kind == "matmul_add":
        return b.node("Add", [b.node("MatMul", [x, b.init((width, out_w))]), b.init((out_w,))]), out_w
    if kind == "unary":
        op = draw(st.sampled_from(UNARY))
        if op == "TopK":
            return b.node("TopK", [x, b.init((1,), "ints")], n_out=2)[0], width
        return b.node(op, [x]), width
    if kind == "scalar":
        op = draw(st.sampled_from(("Add", "Sub", "Mul", "Div", "Pow")))
        c = b.init(draw(st.sampled_from([(1,), (width,), ()] * 5 + [(2, width)])))
        return b.node(op, [x, c] if draw(st.booleans()) else [c, x]), width
    if kind == "residual":
        y = b.node("Gemm", [x, b.init((width, width))])
        return b.node("Add", [x, y] if draw(st.integers(0, 9)) else [x, b.node("Concat", [y, y], axis=-1)]), width
    if kind == "glu":
        z = b.node("Gemm", [x, b.init((width, 2 * out_w))])
        first, second = b.node("Split", [z], n_out=2, axis=draw(st.sampled_from([-1, 1, 0])))
        return b.node("Mul", [first, b.node("Sigmoid", [second])]), out_w
    if kind == "norm":
        return b.node(
            "LayerNormalization",
            [x, b.init((width,)), b.init((width,))],
            axis=draw(st.sampled_from([-1, 1, 0])),
            epsilon=draw(st.sampled_from([1e-5, 0.0])),
        ), width
    if kind == "reshape":
        shape = b.init((2,), "ints") if draw(st.integers(0, 4)) == 0 else None
        if shape is None:
            shape = b.name("shape")
            b.inits.append(numpy_helper.from_array(np.array([-1, width], np.int64), shape))
        return b.node("Reshape", [x, shape]), width
    if kind == "concat":
        return b.node("Concat", [x, x], axis=-1), 2 * width
    if kind == "cast":
        return b.node("Cast", [x], to=draw(st.sampled_from([TensorProto.FLOAT, TensorProto.INT64]))), width
    if kind == "gelu":  # x * 0.5 * (1 + erf(x / sqrt 2)), sometimes with a wrong constant
        k = b.init((), draw(st.sampled_from(["normal", "nan", "huge"]))) if draw(st.booleans()) else None
        if k is None:
            k = b.name("sqrt2")
            b.inits.append(numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), k))
        one = b.name("one")
        b.inits.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
        erf = b.node("Add", [b.node("Erf", [b.node("Div", [x, k])]), one])
        return b.node("Mul", [x, erf]), width
    return b.node("Conv", [x, b.init((out_w, width, 1))]), out_w  # a full-sequence op: always refused


def _state(b: _Builder, draw, u: str, width: int, i: int):
    """A recurrent state and its update; S4D-like ([batch, H, M, 2]) or a running sum ([batch, W])."""
    if draw(st.booleans()):
        s_in = f"state{i}"
        s_out = b.node(draw(st.sampled_from(["Add", "Sub", "Mul"])), [s_in, u])
        return s_in, s_out, [width], u
    M = draw(st.integers(1, 3))
    s_in = f"state{i}"
    decay = b.init((width, M, 2))
    axes = [b.init((1,), "ints") if draw(st.integers(0, 9)) == 0 else b.name("axes") for _ in range(2)]
    for a in axes:
        if a.startswith("axes"):
            b.inits.append(numpy_helper.from_array(np.array([-1], np.int64), a))
    drive = b.node("Unsqueeze", [b.node("Unsqueeze", [u, axes[0]]), axes[1]])
    s_out = b.node("Add", [b.node("Mul", [s_in, decay]), drive])
    red = b.name("axes")
    b.inits.append(numpy_helper.from_array(np.array([-2, -1], np.int64), red))
    y = b.node("ReduceSum", [s_out, red], keepdims=0)
    return s_in, s_out, [width, M, 2], y


@st.composite
def onnx_models(draw) -> bytes:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = _Builder(rng, draw)
    F = draw(st.integers(1, 4))
    x_rank = draw(st.sampled_from([2] * 6 + [1, 3]))
    x_dtype = draw(st.sampled_from(DTYPES))
    x_shape = ["batch", F] if x_rank == 2 else ([F] if x_rank == 1 else ["batch", 1, F])
    cur, width = "x", F
    states = []
    for i in range(draw(st.integers(0, 6)) or draw(st.integers(1, 6))):
        if draw(st.integers(0, 3)) == 0 and len(states) < 2:
            s_in, s_out, s_shape, cur = _state(b, draw, cur, width, len(states))
            states.append((s_in, s_out, s_shape))
        else:
            cur, width = _layer(b, draw, cur, width)
    damage = draw(st.sampled_from(DAMAGE))
    outputs = [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["batch", width])]
    inputs = [helper.make_tensor_value_info("x", x_dtype, x_shape)]
    for s_in, s_out, s_shape in states:
        out_shape = [d + 1 for d in s_shape] if damage == "state_mismatch" else s_shape
        inputs.append(helper.make_tensor_value_info(s_in, TensorProto.FLOAT, ["batch"] + s_shape))
        outputs.append(helper.make_tensor_value_info(s_out, TensorProto.FLOAT, ["batch"] + out_shape))
    domain_opsets = []
    if b.nodes:
        k = draw(st.integers(0, len(b.nodes) - 1))
        node = b.nodes[k]
        if damage == "dangling":
            node.input[0] = "no_such_tensor"
        elif damage == "cycle" and k + 1 < len(b.nodes):
            node.input[0] = b.nodes[-1].output[0]
        elif damage == "duplicate_output" and len(b.nodes) > 1:
            b.nodes[-1].output[0] = node.output[0]
        elif damage == "wrong_dtype":
            b.inits.append(numpy_helper.from_array(np.ones((width,), np.int32), "bad_int"))
            b.nodes.append(helper.make_node("Add", [cur, "bad_int"], ["bad_sum"], name="bad_add"))
            outputs[0] = helper.make_tensor_value_info("bad_sum", TensorProto.FLOAT, ["batch", width])
        elif damage == "bad_attr":
            node.attribute.append(
                helper.make_attribute(
                    draw(st.sampled_from(["axis", "transA", "to", "zzz"])), draw(st.sampled_from([7, -9, 1.5, "s"]))
                )
            )
        elif damage == "empty_name":
            node.output[0] = ""
        elif damage == "unknown_domain":
            node.domain = "com.fuzz"
            domain_opsets.append(helper.make_opsetid("com.fuzz", 1))
        elif damage == "missing_opset":
            node.domain = "com.fuzz"
    if damage == "drop_output":
        outputs = outputs[1:]
    graph = helper.make_graph(b.nodes, "fuzz", inputs, outputs, initializer=b.inits)
    opset = draw(st.sampled_from([17, 17, 13, 18, 20]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)] + domain_opsets)
    model.ir_version = 8
    return model.SerializeToString()


def compile_bytes(data: bytes, readout: str) -> str:
    """Import, and if that works run the default pipeline and the numpy engine; returns how far it got."""
    from ssmc.passes import DEFAULT_PIPELINE, parse_pipeline
    from ssmc.passes.base import run_pipeline, with_data
    from ssmc.runtime.numpy_engine import run_numpy

    graph, _ = convert(load_model_bytes(data, name="fuzz.onnx").model, name="fuzz.onnx", readout=readout)
    F = graph.inputs()[0].shape[0]
    rng = np.random.default_rng(0)
    graph, _ = run_pipeline(graph, with_data(parse_pipeline(DEFAULT_PIPELINE), calibration=rng.normal(size=(2, 4, F))))
    run_numpy(graph, rng.normal(size=(2, 3, F)))
    return "compiled"


def compile_or_refuse(models, cases: int, label: str) -> None:
    """Every drawn model compiles and runs, or is refused with a one-line SsmcError; both happen."""
    outcome: Counter = Counter()

    @seed(SEED)
    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(models, st.sampled_from(["none", "mean"]))
    def case(data, readout):
        try:
            outcome[compile_bytes(data, readout)] += 1
        except SsmcError as e:
            assert str(e).strip() and "\n" not in str(e).strip(), f"multi-line message: {e}"
            outcome["refused"] += 1

    case()
    print(
        f"\n{label}: seed {SEED}, {sum(outcome.values())} cases, {outcome['compiled']} compiled, "
        f"{outcome['refused']} refused"
    )
    assert outcome["refused"] and outcome["compiled"]


def test_generated_graphs_compile_or_are_refused_with_an_ssmc_error():
    compile_or_refuse(onnx_models(), CASES, "generated graphs")


@pytest.mark.parametrize("case", range(4))
def test_cli_refuses_generated_bad_models_in_one_line_and_writes_nothing(case, tmp_path):
    """A few generated models through the real command: exit 1, no traceback, no output file."""
    found = []

    @seed(SEED + case)
    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(onnx_models())
    def pick(data):
        if found:
            return
        try:
            compile_bytes(data, "none")
        except SsmcError:
            found.append(data)

    pick()
    assert found
    (tmp_path / "bad.onnx").write_bytes(found[0])
    out = tmp_path / "net.lava"
    proc = subprocess.run(
        [sys.executable, "-m", "ssmc.cli", "compile", str(tmp_path / "bad.onnx"), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("ssmc: error: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


MUTATIONS = (
    "scale_huge",
    "scale_tiny",
    "zeros",
    "nan",
    "inf",
    "attr",
    "op_type",
    "drop_node",
    "swap_inputs",
    "state_dim",
    "dtype",
    "none",
)
SWAP_OPS = {
    "Relu": "Sigmoid",
    "Sigmoid": "Tanh",
    "Tanh": "Relu",
    "Add": "Sub",
    "Sub": "Mul",
    "Mul": "Div",
    "Div": "Add",
    "Gemm": "MatMul",
    "MatMul": "Gemm",
    "Exp": "Neg",
    "Cos": "Sin",
    "Sin": "Cos",
    "Erf": "Tanh",
    "ReduceSum": "ReduceMean",
    "Concat": "Sum",
    "Gather": "Squeeze",
    "Unsqueeze": "Squeeze",
}


@st.composite
def mutated_step_models(draw) -> bytes:
    """A valid torch-style S4D step model (tests/builders) with one or two semantic mutations."""
    from tests.builders.onnx_models import build_step_model, step_model_specs

    spec = draw(
        step_model_specs(
            H=st.integers(1, 4),
            M=st.integers(1, 3),
            n_layers=st.integers(1, 2),
            in_features=st.integers(1, 3),
            n_out=st.integers(1, 3),
        )
    )
    model = build_step_model(spec)
    g = model.graph
    for _ in range(draw(st.integers(1, 2))):
        m = draw(st.sampled_from(MUTATIONS))
        if m in ("scale_huge", "scale_tiny", "zeros", "nan", "inf"):
            i = draw(st.integers(0, len(g.initializer) - 1))
            v = numpy_helper.to_array(g.initializer[i]).astype(np.float32).copy()
            if m == "scale_huge":
                v *= 1e30
            elif m == "scale_tiny":
                v *= 1e-30
            elif m == "zeros":
                v[...] = 0
            elif v.size:
                v.flat[draw(st.integers(0, v.size - 1))] = np.nan if m == "nan" else np.inf
            g.initializer[i].CopyFrom(numpy_helper.from_array(v, g.initializer[i].name))
        elif m in ("attr", "op_type", "drop_node", "swap_inputs"):
            k = draw(st.integers(0, len(g.node) - 1))
            node = g.node[k]
            if m == "attr":
                node.attribute.append(
                    helper.make_attribute(
                        draw(st.sampled_from(["axis", "transB", "epsilon", "alpha", "keepdims"])),
                        draw(st.sampled_from([0, 1, -1, 3, 0.0, 1e30])),
                    )
                )
                names = [a.name for a in node.attribute]
                if len(set(names)) != len(names):  # keep the last of a duplicate
                    last = {a.name: a for a in node.attribute}
                    del node.attribute[:]
                    node.attribute.extend(last.values())
            elif m == "op_type":
                node.op_type = SWAP_OPS.get(node.op_type, "Identity")
            elif m == "drop_node":
                del g.node[k]
            elif len(node.input) > 1:
                node.input[0], node.input[1] = node.input[1], node.input[0]
        elif m == "state_dim" and len(g.input) > 1:
            dims = g.input[1].type.tensor_type.shape.dim
            j = draw(st.integers(1, len(dims) - 1))
            dims[j].dim_value = dims[j].dim_value + draw(st.sampled_from([1, -1]))
        elif m == "dtype":
            g.input[0].type.tensor_type.elem_type = draw(
                st.sampled_from([TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64])
            )
    return model.SerializeToString()


def test_mutated_step_models_compile_or_are_refused_with_an_ssmc_error():
    compile_or_refuse(mutated_step_models(), max(CASES // 5, 1), "mutated step models")


INT_EXTREMES = (-(2**40), -70, -1, 0, 1, 2, 31, 32, 63, 64, 200, 2**40)


def _compiled_net(seed_: int):
    from ssmc.backend_loihi.bundle import Bundle
    from ssmc.passes import DEFAULT_PIPELINE, parse_pipeline
    from ssmc.passes.base import run_pipeline, with_data
    from tests.builders.onnx_models import build_step_model, random_spec

    spec = random_spec(seed_, H=3, M=2, n_layers=1, in_features=2, n_out=2)
    loaded = load_model_bytes(build_step_model(spec).SerializeToString())
    graph, _ = convert(loaded.model, readout=["none", "mean"][seed_ % 2])
    cal = np.random.default_rng(0).normal(size=(2, 6, 2))
    passes = parse_pipeline(DEFAULT_PIPELINE + (",sigma-delta{threshold=0.01}" if seed_ % 3 == 0 else ""))
    graph, _ = run_pipeline(graph, with_data(passes, calibration=cal))
    return Bundle(graph=graph, model_graph=None, source={}, pipeline="", report={})


_NETS: dict[int, object] = {}


@st.composite
def edited_nets(draw) -> bytes:
    """A compiled net.lava whose IR was edited (attributes, tensors, wiring), checksums kept valid."""
    from ssmc.backend_loihi.bundle import encode

    key = draw(st.integers(0, 5))
    if key not in _NETS:
        _NETS[key] = _compiled_net(key)
    bundle = _NETS[key]
    graph = bundle.graph.copy()
    ops = graph.ops()
    for _ in range(draw(st.integers(1, 3))):
        op = ops[draw(st.integers(0, len(ops) - 1))]
        what = draw(st.sampled_from(["attr", "param", "param", "inputs"]))
        if what == "attr":
            from ssmc.ir.ops import with_defaults

            present = with_defaults(op)  # attributes at their default are not stored: edit those too
            if not present:
                continue
            key_ = draw(st.sampled_from(sorted(present)))
            old = present[key_]
            if isinstance(old, bool):
                op.attrs[key_] = not old
            elif isinstance(old, int):
                op.attrs[key_] = draw(st.sampled_from(INT_EXTREMES))
            elif isinstance(old, float):
                op.attrs[key_] = draw(st.sampled_from([0.0, -1.0, 1e300, 1e-300, 3.5]))
            elif isinstance(old, str):
                op.attrs[key_] = draw(st.sampled_from(["relu", "cpx", "sum", "mean", "source", "lut", "x"]))
        elif what == "param" and op.params:
            key_ = draw(st.sampled_from(sorted(op.params)))
            v = op.params[key_]
            change = draw(st.sampled_from(["extreme", "shape", "dtype", "zero"]))
            if change == "extreme" and v.size:
                v = v.copy()
                if np.issubdtype(v.dtype, np.integer):
                    info = np.iinfo(v.dtype)
                    v.flat[draw(st.integers(0, v.size - 1))] = draw(st.sampled_from([info.max, info.min, -1, 0]))
                else:
                    v.flat[draw(st.integers(0, v.size - 1))] = draw(st.sampled_from([1e30, -1e30, 0.0]))
            elif change == "shape":
                v = np.resize(v, (v.size + 1,))
            elif change == "dtype":
                v = v.astype(draw(st.sampled_from([np.int64, np.float64, np.int8, np.int32])))
            else:
                v = np.zeros_like(v)
            op.params[key_] = v
        elif what == "inputs" and op.inputs:
            other = ops[draw(st.integers(0, len(ops) - 1))].name
            if other != op.name:
                inputs = list(op.inputs)
                inputs[draw(st.integers(0, len(inputs) - 1))] = other
                old = op.inputs
                try:
                    graph.set_inputs(op.name, inputs)
                    if graph.has_cycle():  # net.lava's text form cannot even write a cycle
                        graph.set_inputs(op.name, old)
                except SsmcError:
                    pass
    import dataclasses
    from unittest import mock

    from ssmc.backend_loihi import bundle as bundle_module

    with mock.patch.object(bundle_module, "verify", lambda g: g):  # as if edited by hand: checksums match
        return encode(dataclasses.replace(bundle, graph=graph))


def test_edited_nets_run_or_are_refused_with_an_ssmc_error():
    from ssmc.backend_loihi.bundle import decode
    from ssmc.runtime.numpy_engine import run_numpy

    outcome: Counter = Counter()

    @seed(SEED)
    @settings(max_examples=max(CASES // 3, 1), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(edited_nets())
    def case(data):
        try:
            net = decode(data, name="fuzz.lava")
            run_numpy(net.graph, np.random.default_rng(0).normal(size=(2, 5, 2)))
            outcome["ran"] += 1
        except SsmcError as e:
            assert str(e).strip(), "empty message"
            outcome["refused"] += 1

    case()
    print(
        f"\nedited net.lava IR: seed {SEED}, {sum(outcome.values())} cases, {outcome['ran']} ran, "
        f"{outcome['refused']} refused"
    )
    assert outcome["refused"] and outcome["ran"]


def test_cli_refuses_an_edited_net_and_a_broken_plugin_in_one_line(tmp_path):
    from ssmc.backend_loihi.bundle import decode
    from ssmc.runtime.numpy_engine import run_numpy

    found = []

    @seed(SEED)
    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(edited_nets())
    def pick(data):
        if found:
            return
        try:
            run_numpy(decode(data).graph, np.zeros((1, 3, 2)))
        except SsmcError:
            found.append(data)

    pick()
    (tmp_path / "edited.lava").write_bytes(found[0])
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 2), np.float32))
    (tmp_path / "broken.py").write_text("raise ImportError('no such thing')\n")
    (tmp_path / "m.onnx").write_bytes(b"")
    for argv in (
        ["run", tmp_path / "edited.lava", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"],
        ["compile", tmp_path / "m.onnx", "-o", tmp_path / "n.lava", "--plugin", tmp_path / "broken.py"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "ssmc.cli", *map(str, argv)], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("ssmc: error: ")
        assert len([line for line in proc.stderr.splitlines() if not line.startswith("[")]) == 1
    assert not (tmp_path / "y.npy").exists() and not (tmp_path / "n.lava").exists()
