"""A model file is untrusted input: what a hostile ONNX model can and cannot make ssmc do.

It cannot make ssmc read a file outside the model's folder, nor block on a
FIFO or device, nor spin in a loop, nor write control characters to the
terminal, nor end in an internal error (exit 70). External data beside the
model, as torch's dynamo export writes it, is accepted (docs/limits.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ssmc
from ssmc.errors import ModelLoadError, ResourceLimitError, printable
from ssmc.frontend.load import load_model
from tests.builders.onnx_models import IR_VERSION, OPSET, StepModelSpec, build_step_model

SPEC = StepModelSpec(in_features=2, H=4, M=2, n_layers=1, n_out=3)
SSMC = [sys.executable, "-m", "ssmc.cli"]
CONTROL = {chr(c) for c in range(32) if chr(c) not in "\n\t"} | {"\x7f", "\x9b", "\u202e"}


def run_cli(*args, cwd=None, timeout=120):
    env = dict(os.environ, SSMC_DEBUG="")
    return subprocess.run([*SSMC, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def tiny_model(nodes, inits=(), opset=OPSET) -> onnx.ModelProto:
    """y = x + (whatever `nodes` compute into 'k'): a valid model around a constant computation."""
    graph = helper.make_graph(
        list(nodes) + [helper.make_node("Add", ["x", "k"], ["y"], name="add")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        list(inits),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def make_external(tensor: TensorProto, location: str, offset: int | None = None, length: int | None = None):
    """Point `tensor` at external data, as onnx's external_data_helper would."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            tensor.external_data.add(key=key, value=str(value))


def constant_node(values=np.ones(4, np.float32), name="c"):
    return helper.make_node("Constant", [], ["k"], name=name, value=numpy_helper.from_array(values, "kv"))


# -- external data: accepted beside the model -----------------------------------------------------------------
def test_torch_style_external_data_compiles_to_the_same_net_as_the_self_contained_model(tmp_path):
    model = build_step_model(SPEC)
    (tmp_path / "inline").mkdir()
    (tmp_path / "external").mkdir()
    inline, external = tmp_path / "inline" / "model.onnx", tmp_path / "external" / "model.onnx"
    onnx.save(model, str(inline))
    onnx.save(model, str(external), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    assert (tmp_path / "external" / "model.onnx.data").stat().st_size > 0
    saved = onnx.load(str(external), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in saved.graph.initializer)  # really outside

    nets = [ssmc.compile(str(p)) for p in (inline, external)]
    x = np.random.default_rng(0).normal(size=(2, 5, SPEC.in_features)).astype(np.float32)
    assert np.array_equal(nets[0].run(x), nets[1].run(x))
    for net, name in zip(nets, ("a.lava", "b.lava")):
        net.save(str(tmp_path / name))
    a, b = zipfile.ZipFile(tmp_path / "a.lava"), zipfile.ZipFile(tmp_path / "b.lava")
    assert a.namelist() == b.namelist()
    # Only the record of the source may differ: its sha256 covers the data file too, and its size.
    hashes = [load_model(p).sha256.encode() for p in (inline, external)]
    assert hashes[0] != hashes[1]
    differ = {n for n in a.namelist() if a.read(n).replace(hashes[0], b"") != b.read(n).replace(hashes[1], b"")}
    assert differ <= {"manifest.json", "manifest.sha256", "report.json"}  # the manifest checksum follows it


def test_external_data_changes_the_recorded_model_hash(tmp_path):
    onnx.save(
        build_step_model(SPEC),
        str(tmp_path / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    before = load_model(tmp_path / "model.onnx").sha256
    data = bytearray((tmp_path / "model.onnx.data").read_bytes())
    data[0] ^= 1
    (tmp_path / "model.onnx.data").write_bytes(bytes(data))
    assert load_model(tmp_path / "model.onnx").sha256 != before


def test_external_data_is_read_from_the_models_folder_not_the_working_directory(tmp_path, monkeypatch):
    model = tiny_model([], [numpy_helper.from_array(np.ones(4, np.float32), "k")])
    make_external(model.graph.initializer[0], "w.bin")
    (tmp_path / "models").mkdir()
    onnx.save(model, str(tmp_path / "models" / "m.onnx"))
    (tmp_path / "w.bin").write_bytes(np.full(4, 7, np.float32).tobytes())  # in the CWD only
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="initializer 'k'.*'w.bin'.*no such file"):
        load_model("models/m.onnx")
    (tmp_path / "models" / "w.bin").write_bytes(np.full(4, 3, np.float32).tobytes())
    k = numpy_helper.to_array(load_model("models/m.onnx").model.graph.initializer[0])
    assert k.tolist() == [3, 3, 3, 3]


# -- external data: refused ------------------------------------------------------------------------------------
def _hostile(tmp_path, location, where="initializer", offset=None, length=None):
    """A model in tmp_path/model/ whose tensor `where` points at `location`."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    if where == "initializer":
        model = tiny_model([], [numpy_helper.from_array(np.ones(4, np.float32), "k")])
        tensor = model.graph.initializer[0]
    elif where == "constant":
        model = tiny_model([constant_node()])
        tensor = model.graph.node[0].attribute[0].t
    else:  # a Constant inside a Loop body that runs once
        body = helper.make_graph(
            [
                helper.make_node("Identity", ["cond"], ["cond_out"]),
                constant_node(name="deep"),
                helper.make_node("Add", ["v", "k"], ["v_out"]),
            ],
            "body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v", TensorProto.FLOAT, [4]),
            ],
            [
                helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4]),
            ],
        )
        model = tiny_model(
            [helper.make_node("Loop", ["n", "t", "v0"], ["k"], name="loop", body=body)],
            [
                numpy_helper.from_array(np.array(1, np.int64), "n"),
                numpy_helper.from_array(np.array(True), "t"),
                numpy_helper.from_array(np.zeros(4, np.float32), "v0"),
            ],
        )
        tensor = model.graph.node[0].attribute[0].g.node[1].attribute[0].t
    make_external(tensor, location, offset, length)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.bin"
    path.write_bytes(np.full(4, 42, np.float32).tobytes())
    return path


def test_an_absolute_location_is_refused(tmp_path, secret):
    with pytest.raises(ModelLoadError, match=r"initializer 'k'.*an absolute path"):
        load_model(_hostile(tmp_path, str(secret)))


def test_a_location_with_dotdot_is_refused(tmp_path, secret):
    with pytest.raises(ModelLoadError, match=r"initializer 'k'.*'\.\./secret.bin'.*'\.\.'"):
        load_model(_hostile(tmp_path, "../secret.bin"))


def test_a_symlink_leading_out_of_the_folder_is_refused(tmp_path, secret):
    path = _hostile(tmp_path, "weights.bin")
    os.symlink(secret, tmp_path / "model" / "weights.bin")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(path)


def test_a_symlink_to_dev_zero_is_refused(tmp_path):
    path = _hostile(tmp_path, "zero")
    os.symlink("/dev/zero", tmp_path / "model" / "zero")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_model(path)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    path = _hostile(tmp_path, "pipe")
    os.mkfifo(tmp_path / "model" / "pipe")
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_model(path)
    assert time.monotonic() - start < 5


def test_a_directory_is_refused(tmp_path):
    path = _hostile(tmp_path, "sub")
    (tmp_path / "model" / "sub").mkdir()
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_model(path)


def test_a_file_shorter_than_the_declared_range_is_refused(tmp_path):
    path = _hostile(tmp_path, "w.bin", offset=8, length=16)
    (tmp_path / "model" / "w.bin").write_bytes(bytes(20))
    with pytest.raises(ModelLoadError, match=r"bytes 8\.\.24 lie outside the 20-byte file"):
        load_model(path)


def test_a_length_that_does_not_match_the_dims_is_refused(tmp_path):
    path = _hostile(tmp_path, "w.bin", length=8)
    (tmp_path / "model" / "w.bin").write_bytes(bytes(64))
    with pytest.raises(ModelLoadError, match=r"length 8 bytes does not match the 16 bytes that dims \[4\]"):
        load_model(path)


def test_the_declared_size_is_checked_against_the_limits_before_reading(tmp_path, monkeypatch):
    path = _hostile(tmp_path, "pipe")
    os.mkfifo(tmp_path / "model" / "pipe")  # reading it would block: the limit must come first
    monkeypatch.setenv("SSMC_MAX_TENSOR_BYTES", "8")
    with pytest.raises(ResourceLimitError, match="initializer 'k'"):
        load_model(path)


def test_external_data_of_a_constant_node_is_confined_too(tmp_path, secret):
    with pytest.raises(ModelLoadError, match=r"Constant node 'c' attribute 'value'.*'\.\.'"):
        load_model(_hostile(tmp_path, "../secret.bin", where="constant"))


def test_external_data_inside_a_loop_body_is_confined_too(tmp_path, secret):
    with pytest.raises(ModelLoadError, match=r"Loop node 'loop' attribute 'body' > Constant node 'deep'"):
        load_model(_hostile(tmp_path, "../secret.bin", where="loop"))


def test_a_model_given_as_bytes_has_no_folder_to_read_external_data_from(tmp_path):
    from ssmc.frontend.load import load_model_bytes

    data = _hostile(tmp_path, "w.bin").read_bytes()
    with pytest.raises(ModelLoadError, match="given as bytes"):
        load_model_bytes(data)


def test_inspect_refuses_external_data_outside_the_folder_and_never_shows_its_bytes(tmp_path, secret):
    r = run_cli("inspect", _hostile(tmp_path, "../secret.bin", where="constant"), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("ssmc: error:") and "'..'" in r.stderr


# -- tensor data lengths ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [4, -4])
def test_raw_data_longer_or_shorter_than_the_dims_is_a_one_line_error(save_onnx, extra):
    k = numpy_helper.from_array(np.ones(4, np.float32), "k")
    k.raw_data = k.raw_data + bytes(extra) if extra > 0 else k.raw_data[:extra]
    path = save_onnx(tiny_model([], [k]))
    with pytest.raises(
        ModelLoadError,
        match=rf"initializer 'k' declares dims \[4\] of FLOAT, which need 16 "
        rf"bytes of raw_data, but has {16 + extra}",
    ):
        load_model(path)
    r = run_cli("inspect", path)
    assert r.returncode == 1 and "initializer 'k'" in r.stderr and len(r.stderr.splitlines()) == 1


def test_typed_data_of_the_wrong_length_is_refused(save_onnx):
    k = TensorProto(name="k", data_type=TensorProto.FLOAT, dims=[4], float_data=[1.0, 2.0, 3.0])  # 3 for 4
    with pytest.raises(ModelLoadError, match=r"need 4 values in float_data, but has 3"):
        load_model(save_onnx(tiny_model([], [k])))


def test_wrong_length_inside_a_constant_is_refused(save_onnx):
    node = constant_node()
    node.attribute[0].t.raw_data += b"\0\0\0\0"
    with pytest.raises(ModelLoadError, match="Constant node 'c' attribute 'value'.*but has 20"):
        load_model(save_onnx(tiny_model([node])))


# -- loops -----------------------------------------------------------------------------------------------------
def loop_model(trip_count: int | None) -> onnx.ModelProto:
    """k = sum of i over `trip_count` iterations (the 37 KB model of issue #12, small)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond"], ["cond_out"]),
            helper.make_node("Cast", ["i"], ["fi"], to=1),
            helper.make_node("Add", ["v", "fi"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4]),
        ],
    )
    inits = [numpy_helper.from_array(np.array(True), "t"), numpy_helper.from_array(np.zeros(4, np.float32), "v0")]
    if trip_count is not None:
        inits.append(numpy_helper.from_array(np.array(trip_count, np.int64), "n"))
    loop = helper.make_node("Loop", ["n" if trip_count is not None else "", "t", "v0"], ["k"], name="spin", body=body)
    return tiny_model([loop], inits)


def test_a_loop_with_trip_count_2_to_the_62_is_refused_in_seconds(save_onnx):
    path = save_onnx(loop_model(2**62))
    for command in ("inspect", "compile"):
        start = time.monotonic()
        r = run_cli(command, path, *(["-o", path.with_suffix(".lava")] if command == "compile" else []), timeout=60)
        assert r.returncode == 1, r.stderr
        assert "Loop node 'spin' needs 4,611,686,018,427,387,904 iterations, over the limit of 65,536" in r.stderr
        assert "SSMC_MAX_LOOP_ITERATIONS" in r.stderr
        assert time.monotonic() - start < 30


def test_a_loop_without_a_trip_count_is_refused(save_onnx):
    with pytest.raises(ModelLoadError, match="Loop node 'spin' has no constant trip count"):
        load_model(save_onnx(loop_model(None)))


def test_nested_loops_multiply(save_onnx, monkeypatch):
    inner = loop_model(300)
    outer_body = helper.make_graph(
        [
            helper.make_node("Identity", ["c2"], ["c2_out"]),
            *inner.graph.node[:1],
            helper.make_node("Add", ["w", "k"], ["w_out"]),
        ],
        "outer",
        [
            helper.make_tensor_value_info("j", TensorProto.INT64, []),
            helper.make_tensor_value_info("c2", TensorProto.BOOL, []),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("c2_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [4]),
        ],
        list(inner.graph.initializer),
    )
    model = tiny_model(
        [helper.make_node("Loop", ["m", "t2", "w0"], ["k"], name="outer", body=outer_body)],
        [
            numpy_helper.from_array(np.array(300, np.int64), "m"),
            numpy_helper.from_array(np.array(True), "t2"),
            numpy_helper.from_array(np.zeros(4, np.float32), "w0"),
        ],
    )
    with pytest.raises(
        ResourceLimitError,
        match=r"Loop node 'spin', inside loops that run it 300 times needs "
        r"90,000 iterations",
    ):
        load_model(save_onnx(model))


def test_a_small_constant_loop_still_folds(save_onnx):
    assert load_model(save_onnx(loop_model(3))).model.graph.node


# -- tiny weights ----------------------------------------------------------------------------------------------
def test_weights_of_1e_minus_30_compile_and_give_zero_contributions(tmp_path):
    model = build_step_model(SPEC)
    for i, t in enumerate(model.graph.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f":
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.full_like(a, 1e-30), t.name))
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    net = ssmc.compile(str(tmp_path / "tiny.onnx"))
    x = np.random.default_rng(1).normal(size=(2, 4, SPEC.in_features)).astype(np.float32)
    y = net.run(x)
    assert np.all(np.abs(y) < 1e-6)  # the float model's outputs are ~1e-30: zero in fixed point
    assert np.array_equal(y, net.run(x, engine="microcode"))


# -- names -----------------------------------------------------------------------------------------------------
HOSTILE = "\x1b[2J\x1b]0;owned\x07evil\nname\u202e\x9b"


def hostile_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every node, value and initializer name gets control characters (same renaming everywhere)."""
    renamed = {}
    g = model.graph
    for v in [*g.input, *g.output, *g.value_info, *g.initializer]:
        renamed.setdefault(v.name, v.name + HOSTILE)
    for n in g.node:
        for s in (*n.input, *n.output):
            if s:
                renamed.setdefault(s, s + HOSTILE)
    for v in [*g.input, *g.output, *g.value_info, *g.initializer]:
        v.name = renamed[v.name]
    for n in g.node:
        n.name = HOSTILE + n.name
        n.input[:] = [renamed.get(s, s) for s in n.input]
        n.output[:] = [renamed.get(s, s) for s in n.output]
    return model


def assert_no_control_chars(text: str) -> None:
    bad = sorted({c for c in text if c in CONTROL})
    assert not bad, f"control characters {bad!r} reached the terminal"


def test_printable_escapes_control_characters_as_repr_does():
    assert printable("a\x1b[2Jb\nc\u202e") == "a\\x1b[2Jb\\nc\\u202e"
    assert printable("layers.0.s4d é") == "layers.0.s4d é"


def test_inspect_and_compile_of_a_model_with_hostile_names_print_no_control_characters(tmp_path):
    path = tmp_path / ("m" + "\x1b[31m" + ".onnx")
    onnx.save(hostile_names(build_step_model(SPEC)), str(path))
    shown = ""
    for args in (["inspect", path, "--ir"], ["compile", path, "-o", tmp_path / "net.lava"]):
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        assert_no_control_chars(r.stdout + r.stderr)
        shown += r.stdout
    assert "\\x1b[2J" in shown  # shown escaped, not dropped
    r = run_cli("report", tmp_path / "net.lava")
    assert r.returncode == 0 and "\x1b" not in r.stdout


def test_errors_about_hostile_names_print_no_control_characters(save_onnx):
    model = hostile_names(build_step_model(SPEC))
    model.graph.node[0].op_type = "TopK"  # unsupported: the error names the node
    r = run_cli("inspect", save_onnx(model))
    assert r.returncode == 1 and r.stderr.startswith("ssmc: error:")
    assert_no_control_chars(r.stderr[:-1])


def test_hostile_names_that_clash_once_escaped_stay_distinct(save_onnx):
    clash = numpy_helper.from_array(np.ones(4, np.float32), "k\\x1b")  # the escaped form of the next name
    model = tiny_model(
        [helper.make_node("Add", ["k\x1b", "k\\x1b"], ["k"])],
        [clash, numpy_helper.from_array(np.full(4, 2, np.float32), "k\x1b")],
    )
    names = [t.name for t in load_model(save_onnx(model)).model.graph.initializer]
    assert sorted(names) == ["k\\x1b", "k\\x1b_1"]


# -- fuzzed shapes and structures: user errors, never exit 70, never a hang --------------------------------------
def _value_info_dims(dims):
    model = build_step_model(SPEC)
    model.graph.value_info.append(helper.make_tensor_value_info(model.graph.node[0].output[0], TensorProto.FLOAT, dims))
    return model


def _negative_initializer_dims():
    k = numpy_helper.from_array(np.ones(4, np.float32), "k")
    k.dims[:] = [-4]
    return tiny_model([], [k])


def _sparse_huge_dense():
    values = numpy_helper.from_array(np.ones(1, np.float32), "k")
    indices = numpy_helper.from_array(np.zeros(1, np.int64), "k_idx")
    model = tiny_model([])
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [1 << 40]))
    return model


def _nested_ifs(depth):
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["r"], value_floats=[1.0] * 4)],
        "leaf",
        [],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [4])],
    )
    leaf = branch
    for level in range(depth):
        node = helper.make_node("If", ["t"], [f"r{level}"], then_branch=branch, else_branch=leaf)
        branch = helper.make_graph(
            [node], f"b{level}", [], [helper.make_tensor_value_info(f"r{level}", TensorProto.FLOAT, [4])]
        )
    top = branch.node[0]
    top.output[0] = "k"
    return tiny_model([top], [numpy_helper.from_array(np.array(True), "t")])


def _many_nodes(n):
    nodes = [helper.make_node("Identity", ["x" if i == 0 else f"v{i - 1}"], [f"v{i}"]) for i in range(n)]
    graph = helper.make_graph(
        nodes,
        "long",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(f"v{n - 1}", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def _opset(version, domain=""):
    model = build_step_model(SPEC)
    model.opset_import[0].domain, model.opset_import[0].version = domain, version
    return model


FUZZ = {
    "value_info dims 2^40": lambda: _value_info_dims([1, 1 << 40]),
    "value_info negative dims": lambda: _value_info_dims([1, -5]),
    "initializer negative dims": _negative_initializer_dims,
    "sparse initializer of 2^40 dense elements": _sparse_huge_dense,
    "If nested 5 deep": lambda: _nested_ifs(5),
    "If nested 30 deep": lambda: _nested_ifs(30),
    "2k-node chain": lambda: _many_nodes(2000),
    "opset 1": lambda: _opset(1),
    "opset 10000": lambda: _opset(10000),
    "no default-domain opset": lambda: _opset(17, "com.example"),
    "loop of unknown trip count": lambda: loop_model(None),
}


@pytest.mark.parametrize("case", sorted(FUZZ))
def test_odd_models_end_in_a_user_error_or_a_result_never_an_internal_error(tmp_path, case):
    path = tmp_path / "m.onnx"
    onnx.save(FUZZ[case](), str(path))
    r = run_cli("inspect", path, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    assert r.returncode == 0 or r.stderr.startswith("ssmc: error:")


def test_deeply_nested_subgraphs_are_refused_before_folding_takes_hours(save_onnx):
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="nest 30 levels deep; ssmc refuses more than 8"):
        load_model(save_onnx(_nested_ifs(30)))
    assert time.monotonic() - start < 10


def test_the_node_count_is_limited(save_onnx, monkeypatch):
    monkeypatch.setenv("SSMC_MAX_NODES", "1000")
    with pytest.raises(ResourceLimitError, match="needs 2,000 nodes, over the limit of 1,000 nodes"):
        load_model(save_onnx(_many_nodes(2000)))
