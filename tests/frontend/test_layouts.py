"""A recurrent state may be split over several inputs (re and im apart), packed with other layers' states in
one tensor, and keep its batch on any axis, or have a fixed batch of 1: the frontend finds each layer by
measurement. Where it cannot, the error names the layout it found and the one it accepts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ssmc
from ssmc.errors import UnsupportedModelError
from ssmc.frontend import import_onnx
from ssmc.runtime import microcode_engine
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.numpy_engine import run_numpy
from tests.builders.onnx_models import (
    LAYOUTS,
    StepModelSpec,
    build_layout_model,
    discrete_parameters,
    run_step_model_ort,
    step_model_parameters,
)

SPEC = StepModelSpec(in_features=3, H=4, M=2, n_layers=2, n_out=3, seed=5)


def _tokens(batch: int = 3, steps: int = 7) -> np.ndarray:
    return np.random.default_rng(2).normal(size=(batch, steps, SPEC.in_features)).astype(np.float32)


def _same_modes(got: np.ndarray, want: np.ndarray) -> bool:
    """Per channel the same complex poles, in any order and up to conjugation (the state may store (im, re))."""

    def key(a):
        return np.sort(np.abs(a) + 1j * np.abs(np.angle(a)), axis=1)

    return np.allclose(key(got), key(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("discrete", [False, True], ids=["raw", "discrete"])
@pytest.mark.parametrize("fixed_batch", [False, True], ids=["batch", "batch1"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_is_one_s4d_per_layer_and_matches_onnxruntime(layout, fixed_batch, discrete, save_onnx):
    model = build_layout_model(SPEC, layout, fixed_batch=fixed_batch, discrete=discrete)
    graph, _, _ = import_onnx(save_onnx(model))
    layers = graph.ops_of_kind("s4d")
    assert len(layers) == SPEC.n_layers
    params = step_model_parameters(SPEC)
    for k, op in enumerate(layers):
        d = discrete_parameters(params, k)
        want = d[f"layers.{k}.s4d.A_bar_re"] + 1j * d[f"layers.{k}.s4d.A_bar_im"]
        a_bar = (
            op.params["A_bar"]
            if "A_bar" in op.params
            else np.exp(np.exp(op.params["log_dt"])[:, None] * op.params["A"])
        )
        assert _same_modes(a_bar, want)
        assert op.attrs["form"] == ("discrete" if discrete else "continuous")
    x = _tokens()
    want = run_step_model_ort(model, x)  # a fixed batch of 1 runs one sequence at a time
    got = run_float(graph, x)[graph.outputs()[0].name]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_compiles_and_runs_bit_exactly_on_numpy_and_microcode(layout, save_onnx):
    model = build_layout_model(SPEC, layout, fixed_batch=layout in ("packed", "batch_axis2"))
    net = ssmc.compile(save_onnx(model))
    x = _tokens(batch=2, steps=5)
    want, got = run_numpy(net.graph, x), microcode_engine.run_net(net, x)
    for name in want.raw:
        np.testing.assert_array_equal(got.raw[name], want.raw[name])


def test_a_packed_state_keeps_the_weakly_driven_halves_of_slow_modes_in_their_layer(save_onnx):
    # H=16, M=8: the imaginary half of some near-real modes responds to u below the drive threshold; it is
    # still driven by its own layer's state (the rotation), so it belongs to that layer, not outside it
    spec = StepModelSpec(in_features=2, H=16, M=8, n_layers=2, n_out=3, seed=0)
    model = build_layout_model(spec, "packed")
    graph, _, _ = import_onnx(save_onnx(model))
    assert [op.attrs["modes"] for op in graph.ops_of_kind("s4d")] == [8, 8]
    x = np.random.default_rng(2).normal(size=(2, 6, 2)).astype(np.float32)
    want = run_step_model_ort(model, x)
    assert np.abs(run_float(graph, x)[graph.outputs()[0].name] - want).max() <= 1e-5 * np.abs(want).max()


def test_a_packed_state_keeps_a_mode_half_no_input_and_no_layer_drives_measurably_with_its_partner(save_onnx):
    # trained S4D-Lin leaves A_imag near 0 on the first mode: its imaginary half is driven by the input below the
    # drive threshold, and by its real half (the rotation A_imag * dt ~ 1.3e-6) near it: it belongs to the layer
    # of its re/im partner (found by that coupling), not outside every layer (where the coupling check flagged it)
    spec = StepModelSpec(in_features=2, H=8, M=4, n_layers=2, n_out=3, seed=0)
    model = build_layout_model(spec, "packed")
    inits = {init.name: init for init in model.graph.initializer}
    for name, init in inits.items():
        if name.endswith(".s4d.A_imag"):
            dt = np.exp(numpy_helper.to_array(inits[name.replace("A_imag", "log_dt")]).astype(np.float64))
            a_imag = numpy_helper.to_array(init).copy()
            a_imag[:, 0] = 1.3e-6 / dt
            init.CopyFrom(numpy_helper.from_array(a_imag, name))
    graph, _, _ = import_onnx(save_onnx(model))
    assert [op.attrs["modes"] for op in graph.ops_of_kind("s4d")] == [4, 4]
    x = np.random.default_rng(2).normal(size=(2, 6, 2)).astype(np.float32)
    want = run_step_model_ort(model, x)
    assert np.abs(run_float(graph, x)[graph.outputs()[0].name] - want).max() <= 1e-5 * np.abs(want).max()


# -- refusals: one line naming the state, the layout found and the one accepted -----------------
def _with_dims(model: onnx.ModelProto, dims: dict[str, list]) -> onnx.ModelProto:
    """model with the declared shapes of some inputs/outputs replaced (ints static, strings symbolic)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name in dims:
            shape = value.type.tensor_type.shape
            del shape.dim[:]
            for d in dims[value.name]:
                shape.dim.add().CopyFrom(
                    onnx.TensorShapeProto.Dimension(**({"dim_value": d} if isinstance(d, int) else {"dim_param": d}))
                )
    return model


def test_a_state_without_a_batch_axis_next_to_a_batched_token_is_refused_with_the_torch_fix(save_onnx):
    model = _with_dims(build_layout_model(SPEC, "split"), {"s0_re": [1, 4, 2], "s0_re_out": [1, 4, 2]})
    with pytest.raises(
        UnsupportedModelError,
        match=r"state 's0_re' -> 's0_re_out': the state \[1, 4, 2\] has "
        r"no batch axis but the token input has a symbolic batch.*"
        r"dynamic_axes=\{'s0_re': \{0: 'batch'\}",
    ):
        import_onnx(save_onnx(model))


def test_a_state_with_two_symbolic_axes_is_refused(save_onnx):
    model = _with_dims(build_layout_model(SPEC, "split"), {"s0_re": ["batch", 4, "m"]})
    with pytest.raises(
        UnsupportedModelError,
        match=r"state 's0_re' -> 's0_re_out': .* has 2 symbolic axes; "
        "only the batch may be symbolic",
    ):
        import_onnx(save_onnx(model))


def test_a_fixed_batch_other_than_1_is_refused_with_the_torch_fix(save_onnx):
    model = _with_dims(build_layout_model(SPEC, "last"), {"x": [4, 3]})
    with pytest.raises(
        UnsupportedModelError,
        match="token input 'x' has a fixed batch of 4; ssmc accepts a "
        "symbolic batch or a fixed batch of 1. In torch: export with "
        "example inputs of batch 1",
    ):
        import_onnx(save_onnx(model))


def test_a_symbolic_state_next_to_a_fixed_batch_of_1_is_refused(save_onnx):
    model = _with_dims(
        build_layout_model(SPEC, "last", fixed_batch=True),
        {"state1": ["batch", 4, 2, 2], "state1_out": ["batch", 4, 2, 2]},
    )
    with pytest.raises(
        UnsupportedModelError,
        match=r"state 'state1' -> 'state1_out': the state \['batch', 4, 2, 2\] "
        "has symbolic axes but the token input has a fixed batch of 1",
    ):
        import_onnx(save_onnx(model))


def _small_model(nodes, extra_inputs=(), extra_outputs=(), inits=()) -> onnx.ModelProto:
    """x [batch, 2] -> u = Gemm(x) [batch, 3]; the nodes update s [batch, 3, 2] into s_out and give y [batch, 3]."""
    rng = np.random.default_rng(0)
    value = helper.make_tensor_value_info
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 2)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        *inits,
    ]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W"], ["u"], transB=1), *nodes],
        "g",
        [value("x", TensorProto.FLOAT, ["batch", 2]), value("s", TensorProto.FLOAT, ["batch", 3, 2]), *extra_inputs],
        [
            value("y", TensorProto.FLOAT, ["batch", 3]),
            value("s_out", TensorProto.FLOAT, ["batch", 3, 2]),
            *extra_outputs,
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _const(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


# s' = 0.9 s + u B;  y = sum(s' C)
_DRIVE = [helper.make_node("Unsqueeze", ["u", "last"], ["uu"]), helper.make_node("Mul", ["uu", "B"], ["bu"])]
_READ = [
    helper.make_node("Mul", ["s_out", "C"], ["sc"]),
    helper.make_node("ReduceSum", ["sc", "last"], ["y"], keepdims=0),
]
_PARAMS = [_const("A", np.full((3, 2), 0.9)), _const("B", np.ones((3, 2))), _const("C", np.ones((3, 2)))]


def test_a_state_driven_by_two_tensors_is_refused(save_onnx):
    nodes = [
        *_DRIVE,
        helper.make_node("Mul", ["s", "A"], ["as"]),
        helper.make_node("Add", ["as", "bu"], ["s1"]),
        helper.make_node("Relu", ["u"], ["v"]),
        helper.make_node("Unsqueeze", ["v", "last"], ["vv"]),
        helper.make_node("Mul", ["vv", "B"], ["bv"]),
        helper.make_node("Add", ["s1", "bv"], ["s_out"]),
        *_READ,
    ]
    with pytest.raises(
        UnsupportedModelError,
        match=r"state element 's'\[0, 0\] is driven by several tensors "
        r"\('u', 'v'\); an S4D layer reads one input",
    ):
        import_onnx(save_onnx(_small_model(nodes, inits=_PARAMS)))


def test_a_state_no_tensor_drives_is_refused(save_onnx):
    nodes = [helper.make_node("Mul", ["s", "A"], ["s_out"]), *_READ, helper.make_node("Identity", ["u"], ["unused"])]
    with pytest.raises(
        UnsupportedModelError,
        match=r"state 's' -> 's_out': no \[batch, C\] tensor drives any "
        "element of the state",
    ):
        import_onnx(save_onnx(_small_model(nodes, inits=_PARAMS)))


def test_a_tensor_inside_a_layer_used_outside_it_is_refused(save_onnx):
    value = helper.make_tensor_value_info
    # a running sum (state acc) reads the layer's B u term
    nodes = [
        *_DRIVE,
        helper.make_node("Mul", ["s", "A"], ["as"]),
        helper.make_node("Add", ["as", "bu"], ["s_out"]),
        *_READ,
        helper.make_node("ReduceSum", ["bu", "last"], ["r"], keepdims=0),
        helper.make_node("Add", ["acc", "r"], ["acc_out"]),
    ]
    model = _small_model(
        nodes,
        extra_inputs=[value("acc", TensorProto.FLOAT, ["batch", 3])],
        extra_outputs=[value("acc_out", TensorProto.FLOAT, ["batch", 3])],
        inits=_PARAMS,
    )
    with pytest.raises(
        UnsupportedModelError,
        match="state 's' -> 's_out': tensor 'bu' inside the layer is also "
        "used outside it .*only the layer output and the next state",
    ):
        import_onnx(save_onnx(model))


def test_a_layer_whose_state_drives_another_layers_state_is_refused(save_onnx):
    value = helper.make_tensor_value_info
    # layer 2 (state t, driven by y) also reads s directly
    nodes = [
        *_DRIVE,
        helper.make_node("Mul", ["s", "A"], ["as"]),
        helper.make_node("Add", ["as", "bu"], ["s_out"]),
        helper.make_node("Mul", ["s_out", "C"], ["sc"]),
        helper.make_node("ReduceSum", ["sc", "last"], ["y1"], keepdims=0),
        helper.make_node("Unsqueeze", ["y1", "last"], ["yy"]),
        helper.make_node("Mul", ["yy", "B"], ["by"]),
        helper.make_node("Mul", ["t", "A"], ["at"]),
        helper.make_node("Add", ["at", "by"], ["t1"]),
        helper.make_node("Add", ["t1", "s"], ["t_out"]),
        helper.make_node("Mul", ["t_out", "C"], ["tc"]),
        helper.make_node("ReduceSum", ["tc", "last"], ["y"], keepdims=0),
    ]
    model = _small_model(
        nodes,
        extra_inputs=[value("t", TensorProto.FLOAT, ["batch", 3, 2])],
        extra_outputs=[value("t_out", TensorProto.FLOAT, ["batch", 3, 2])],
        inits=_PARAMS,
    )
    with pytest.raises(
        UnsupportedModelError,
        match=r"state 's' -> 's_out': the layer's state drives element "
        r"\[0, 0\] of the next state 't_out' outside the layer",
    ):
        import_onnx(save_onnx(model))


def test_a_state_that_comes_back_with_the_batch_on_another_axis_is_refused(save_onnx):
    value = helper.make_tensor_value_info
    nodes = [
        *_DRIVE,
        helper.make_node("Mul", ["s", "A"], ["as"]),
        helper.make_node("Add", ["as", "bu"], ["s1"]),
        helper.make_node("Mul", ["s1", "C"], ["sc"]),
        helper.make_node("ReduceSum", ["sc", "last"], ["y"], keepdims=0),
        helper.make_node("Transpose", ["s1"], ["s_out"], perm=[1, 0, 2]),
    ]
    model = _small_model(nodes, inits=_PARAMS)
    model.graph.output[1].CopyFrom(value("s_out", TensorProto.FLOAT, ["b", "c", 2]))  # as a careless export declares
    with pytest.raises(
        UnsupportedModelError,
        match=r"'s_out' has shape \[3, \d+, 2\], expected \[\d+, 3, 2\] "
        r"\(declared \['batch', 3, 2\]\); the batch axis is not where",
    ):
        import_onnx(save_onnx(model))


def test_a_running_sum_with_the_batch_second_is_refused(save_onnx):
    value = helper.make_tensor_value_info
    nodes = [
        *_DRIVE,
        helper.make_node("Mul", ["s", "A"], ["as"]),
        helper.make_node("Add", ["as", "bu"], ["s_out"]),
        *_READ,
        helper.make_node("Transpose", ["y"], ["yt"], perm=[1, 0]),
        helper.make_node("Add", ["acc", "yt"], ["acc_out"]),
    ]
    model = _small_model(
        nodes,
        extra_inputs=[value("acc", TensorProto.FLOAT, [3, "batch"])],
        extra_outputs=[value("acc_out", TensorProto.FLOAT, [3, "batch"])],
        inits=_PARAMS,
    )
    with pytest.raises(
        UnsupportedModelError,
        match=r"state 'acc' -> 'acc_out': a 2-D running sum is "
        r"\[batch, C\]; this one is \[3, 'batch'\]",
    ):
        import_onnx(save_onnx(model))
