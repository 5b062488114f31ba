"""Resource limits: a model or a run too big for memory is refused up front,
with its size, the limit and how to change either."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ssmc
from ssmc import limits
from ssmc.errors import ResourceLimitError, SsmcError
from ssmc.frontend import import_onnx
from ssmc.frontend.load import load_model_bytes
from ssmc.runtime.float_ref import run_float
from tests.builders.onnx_models import build_step_model, random_spec


def _model(nodes, inits, out_dims=("b", 2)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_dims))],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SSMC_MAX_WORK_BYTES", "12345")
    assert limits.current().work_bytes == 12345 and limits.current().tensor_bytes == limits.Limits().tensor_bytes
    monkeypatch.setenv("SSMC_MAX_WORK_BYTES", "lots")
    with pytest.raises(ResourceLimitError, match="SSMC_MAX_WORK_BYTES='lots': a limit must be a positive integer"):
        limits.current()


def test_an_initializer_declaring_a_huge_shape_is_refused_before_it_is_materialised():
    w = onnx.TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[200_000, 200_000])  # 149 GiB, no data
    data = _model([helper.make_node("MatMul", ["x", "W"], ["y"])], [w]).SerializeToString()
    assert len(data) < 200
    with pytest.raises(ResourceLimitError) as e:
        load_model_bytes(data, name="m.onnx")
    msg = str(e.value)
    assert "initializer 'W' [200000, 200000] needs 149 GiB, over the limit of 256 MiB" in msg
    assert "SSMC_MAX_TENSOR_BYTES" in msg


def test_many_initializers_are_refused_by_their_total(monkeypatch):
    monkeypatch.setenv("SSMC_MAX_TOTAL_BYTES", str(100))
    inits = [numpy_helper.from_array(np.ones((2, 2), np.float32), f"W{i}") for i in range(8)]  # 8 x 16 bytes
    nodes = [
        helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"W{i}"], ["y" if i == 7 else f"h{i + 1}"])
        for i in range(8)
    ]
    with pytest.raises(
        ResourceLimitError,
        match=r"all initializers and constants together needs 128 bytes, "
        r"over the limit of 100 bytes",
    ):
        load_model_bytes(_model(nodes, inits).SerializeToString(), name="m.onnx")


def test_a_tensor_that_constant_folding_would_build_is_refused_from_its_inferred_shape():
    shape = numpy_helper.from_array(np.array([1, 100_000_000], np.int64), "shape")  # 381 MiB of float32 zeros
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=1),
        helper.make_node("Add", ["x", "s"], ["y"]),
    ]
    with pytest.raises(ResourceLimitError, match=r"tensor 'big' \[1, 100000000\] needs 381 MiB"):
        load_model_bytes(_model(nodes, [shape]).SerializeToString(), name="m.onnx")


def test_the_model_file_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(random_spec(0)), str(path))
    monkeypatch.setenv("SSMC_MAX_MODEL_BYTES", "1000")
    with pytest.raises(SsmcError, match=r"m.onnx: .* KiB is over the 1000 bytes limit .*SSMC_MAX_MODEL_BYTES"):
        import_onnx(path)


def test_state_size_and_measurement_memory_are_limited(tmp_path, monkeypatch):
    spec = random_spec(0, H=4, M=2)
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    monkeypatch.setenv("SSMC_MAX_STATE_ELEMENTS", "10")
    with pytest.raises(
        ResourceLimitError,
        match=r"state 'state0' -> 'state0_out': a state of \[4, 2, 2\] per "
        r"sequence needs 16 elements, over the limit of 10 elements",
    ):
        import_onnx(path)
    monkeypatch.delenv("SSMC_MAX_STATE_ELEMENTS")
    monkeypatch.setenv("SSMC_MAX_WORK_BYTES", "1000")
    with pytest.raises(ResourceLimitError, match=r"measuring this layer \(16 state elements, 4 channels\) needs"):
        import_onnx(path)


@pytest.mark.parametrize(
    "engine,batch,tokens,limit",
    [("numpy", 300, 20, 200_000), ("float", 300, 20, 200_000), ("microcode", 300, 20, 200_000), ("lava", 50, 6, 6_000)],
)
def test_a_run_too_big_for_the_limit_says_how_many_sequences_fit(engine, batch, tokens, limit, tmp_path, monkeypatch):
    # refused before the engine starts (Lava would run for minutes first); the advice is right both ways
    spec = random_spec(3, norm=False)
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(spec), str(path))
    net = ssmc.compile(path, calibration=np.random.default_rng(0).normal(size=(4, 8, spec.in_features)))
    x = np.random.default_rng(1).normal(size=(batch, tokens, spec.in_features))
    monkeypatch.setenv("SSMC_MAX_WORK_BYTES", str(limit))
    with pytest.raises(ResourceLimitError) as e:
        net.run(x, engine=engine)
    msg = str(e.value)
    assert msg.startswith(f"running {batch} sequences of {tokens} tokens on the ")
    assert f"over the limit of {limits.size(limit)}" in msg
    fit = int(re.search(r"run at most (\d+) sequences at a time", msg).group(1))
    assert 0 < fit < (5 if engine == "lava" else batch)
    assert net.run(x[:fit], engine=engine).shape == (fit, tokens, spec.n_out)
    with pytest.raises(ResourceLimitError):
        net.run(x[: fit + 1], engine=engine)


def test_imported_parameters_count_against_the_total(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    onnx.save(build_step_model(random_spec(0)), str(path))
    graph, _, _ = import_onnx(path)
    total = sum(v.nbytes for op in graph.ops() for v in op.params.values())
    monkeypatch.setenv("SSMC_MAX_TOTAL_BYTES", str(total - 1))
    with pytest.raises(ResourceLimitError, match="the imported model's parameters needs"):
        run_float(import_onnx(path)[0], np.zeros((1, 1, 1)))
