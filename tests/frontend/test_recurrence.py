"""Recurrences are recognised by measuring them: diagonal ones become s4d (or
pool) ops whatever their layout; anything else is refused with the reason."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from ssmc.errors import UnsupportedModelError
from ssmc.frontend import import_onnx
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.onnx_ref import run_step_onnx
from tests.builders.onnx_models import build_step_model, random_spec

F, H, OUT = 2, 3, 2


def _const(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _state_model(K: int, Mk: np.ndarray, extra_update=None, bias=None, nonlinear=False) -> onnx.ModelProto:
    """x -> u = Gemm -> state update s' = s @ Mk + u[..., None] * Bk (+bias) -> y = sum(s' * Ck) + D u -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [
        _const("W_in", rng.normal(size=(H, F))),
        _const("Mk", Mk),
        _const("Bk", rng.normal(size=(H, K))),
        _const("Ck", rng.normal(size=(H, K))),
        _const("D", rng.normal(size=H)),
        _const("W_out", rng.normal(size=(OUT, H))),
        helper.make_tensor("ax", TensorProto.INT64, [1], [-1]),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W_in"], ["u"], transB=1),
        helper.make_node("MatMul", ["s", "Mk"], ["sm"]),
        helper.make_node("Unsqueeze", ["u", "ax"], ["uu"]),
        helper.make_node("Mul", ["uu", "Bk"], ["bu"]),
        helper.make_node("Add", ["sm", "bu"], ["s1"]),
    ]
    last = "s1"
    if bias is not None:
        inits.append(_const("bias", np.full((H, K), bias)))
        nodes.append(helper.make_node("Add", [last, "bias"], ["s2"]))
        last = "s2"
    if nonlinear:
        nodes.append(helper.make_node("Tanh", [last], ["s3"]))
        last = "s3"
    nodes += [
        helper.make_node("Identity", [last], ["s_out"]),
        helper.make_node("Mul", ["s_out", "Ck"], ["sc"]),
        helper.make_node("ReduceSum", ["sc", "ax"], ["r"], keepdims=0),
        helper.make_node("Mul", ["u", "D"], ["du"]),
        helper.make_node("Add", ["r", "du"], ["yl"]),
        helper.make_node("Gemm", ["yl", "W_out"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", F]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch", H, K]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT]),
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, ["batch", H, K]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _rotation(r, theta):
    # Row-vector convention (s @ Mk): one complex mode a = r e^{i theta} acting on (re, im).
    return r * np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])


def _assert_matches(model, path, T=16):
    graph, _, _ = import_onnx(path)
    features = graph.inputs()[0].shape[0]
    x = np.random.default_rng(1).normal(size=(2, T, features)).astype(np.float32)
    want = run_step_onnx(model, x)
    got = run_float(graph, x)[graph.outputs()[0].name]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    return graph


def test_a_complex_mode_in_any_layout_is_one_s4d_mode(save_onnx):
    model = _state_model(2, _rotation(0.9, 0.3))
    graph = _assert_matches(model, save_onnx(model))
    (op,) = graph.ops_of_kind("s4d")
    assert op.attrs == {"form": "discrete", "modes": 1}
    # |A_bar| and its angle are the rotation's, up to conjugation.
    np.testing.assert_allclose(np.abs(op.params["A_bar"]), 0.9, rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.angle(op.params["A_bar"])), 0.3, rtol=1e-5)


def test_real_modes_are_complex_modes_with_zero_imaginary_part(save_onnx):
    model = _state_model(2, np.diag([0.5, -0.25]))
    graph = _assert_matches(model, save_onnx(model))
    (op,) = graph.ops_of_kind("s4d")
    assert op.attrs["modes"] == 2
    np.testing.assert_allclose(np.sort(op.params["A_bar"].real[0]), [-0.25, 0.5], rtol=1e-6)
    assert np.all(op.params["A_bar"].imag == 0)


def test_folded_discretization_is_recognised_in_discrete_form(save_onnx):
    # What torch's do_constant_folding=True (or dynamo=True) leaves: A_bar, B_bar as plain constants.
    model = build_step_model(random_spec(4, n_layers=2))
    g = gs.import_onnx(model)
    g.fold_constants().cleanup()
    folded = gs.export_onnx(g)
    folded.ir_version = 8
    graph = _assert_matches(folded, save_onnx(folded))
    assert {op.attrs["form"] for op in graph.ops_of_kind("s4d")} == {"discrete"}


def test_a_state_whose_elements_mix_is_refused(save_onnx):
    Mk = np.full((4, 4), 0.1) + np.eye(4) * 0.5
    with pytest.raises(
        UnsupportedModelError,
        match=r"state elements \[0, 1, 2, 3\] are coupled together \(measured "
        r"state map block \[\[0.6, 0.1, 0.1, 0.1\], .*\]\); only diagonal",
    ):
        import_onnx(save_onnx(_state_model(4, Mk)))


def test_a_bias_in_the_state_update_is_refused(save_onnx):
    with pytest.raises(UnsupportedModelError, match="adds a constant"):
        import_onnx(save_onnx(_state_model(2, _rotation(0.9, 0.3), bias=0.5)))


def test_a_nonlinear_state_update_is_refused(save_onnx):
    with pytest.raises(UnsupportedModelError, match="not linear"):
        import_onnx(save_onnx(_state_model(2, _rotation(0.9, 0.3), nonlinear=True)))


def test_errors_name_the_state_pair(save_onnx):
    with pytest.raises(UnsupportedModelError, match="state 's' -> 's_out'"):
        import_onnx(save_onnx(_state_model(2, _rotation(0.9, 0.3), nonlinear=True)))


def _pool_model() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["v"], transB=1),
        helper.make_node("Add", ["acc", "v"], ["acc_out"]),
        helper.make_node("Gemm", ["acc_out", "W2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pool",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", F]),
            helper.make_tensor_value_info("acc", TensorProto.FLOAT, ["batch", H]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT]),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["batch", H]),
        ],
        [_const("W", rng.normal(size=(H, F))), _const("W2", rng.normal(size=(OUT, H)))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_running_sum_state_is_a_pool(save_onnx):
    model = _pool_model()
    graph = _assert_matches(model, save_onnx(model))
    assert [op.kind for op in graph.ops()] == ["input", "linear", "pool", "linear", "output"]
    assert graph.ops_of_kind("pool")[0].attrs == {"mode": "sum"}


def test_readout_mean_appends_a_running_mean(save_onnx):
    model = build_step_model(random_spec(1))
    graph, _, _ = import_onnx(save_onnx(model), readout="mean")
    x = np.random.default_rng(0).normal(size=(2, 10, model.graph.input[0].type.tensor_type.shape.dim[1].dim_value))
    per_token = run_step_onnx(model, x.astype(np.float32))
    running_mean = np.cumsum(per_token, axis=1) / np.arange(1, 11)[None, :, None]
    got = run_float(graph, x)[graph.outputs()[0].name]
    assert np.abs(got - running_mean).max() <= 1e-5 * np.abs(running_mean).max()


def test_an_undriven_half_of_a_real_pole_is_dropped(save_onnx):
    # S4D-Lin's first mode has A_imag = 0: its imaginary half is never driven and stays 0.
    model = _state_model(2, 0.8 * np.eye(2))
    Bk = next(i for i in model.graph.initializer if i.name == "Bk")
    b = numpy_helper.to_array(Bk).copy()
    b[:, 1] = 0.0
    Bk.CopyFrom(numpy_helper.from_array(b, "Bk"))
    graph = _assert_matches(model, save_onnx(model))
    (op,) = graph.ops_of_kind("s4d")
    assert op.attrs["modes"] == 1
    np.testing.assert_allclose(op.params["A_bar"], 0.8, rtol=1e-6)


def test_readout_last_adds_no_op_the_host_reads_the_last_token(save_onnx):
    path = save_onnx(build_step_model(random_spec(1)))
    plain, _, _ = import_onnx(path, readout="none")
    last, _, _ = import_onnx(path, readout="last")
    assert [(op.name, op.kind) for op in last.ops()] == [(op.name, op.kind) for op in plain.ops()]
    assert not last.ops_of_kind("pool")
