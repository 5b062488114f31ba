"""S5 and LRU step forms (one diagonal complex state of P modes shared by all H channels, dense B [P, H] and
C [H, P], states kept as real [batch, P] tensors) import as one `s4d` op per layer with mixing = dense,
whatever the layout and parametrisation, match onnxruntime in float, and compile with the default pipeline
to integers that numpy and microcode compute alike. Non-diagonal recurrences are refused by name."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import ssmc
from ssmc.errors import SsmcError, UnsupportedModelError
from ssmc.frontend import import_onnx
from ssmc.runtime import microcode_engine
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.numpy_engine import run_numpy
from tests.builders.onnx_models import run_step_model_ort
from tests.builders.ssm_models import (
    SSM_LAYOUTS,
    SharedSpec,
    build_dense_a_model,
    build_shared_model,
    discrete_layer,
    shared_parameters,
)

VARIANTS = {
    "s5": {"family": "s5"},
    "lru_graph": {"family": "lru", "parametrisation": "graph"},
    "lru_const": {"family": "lru", "parametrisation": "const"},
}


def _tokens(spec: SharedSpec, batch: int = 3, steps: int = 7, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, steps, spec.in_features)).astype(np.float32)


def _same_poles(got: np.ndarray, want: np.ndarray) -> bool:
    """The same complex poles in any order, up to conjugation (a state may store (im, re))."""

    def key(a):
        return np.sort(np.abs(a) + 1j * np.abs(np.angle(a)))

    return np.allclose(key(got), key(want), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("D", [True, False], ids=["D", "noD"])
@pytest.mark.parametrize("layout", SSM_LAYOUTS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_family_and_layout_is_one_dense_s4d_per_layer_and_matches_onnxruntime(variant, layout, D, save_onnx):
    spec = SharedSpec(
        **VARIANTS[variant], layout=layout, D=D, n_layers=1 + (layout != "split"), H=4, P=3, seed=len(layout)
    )
    model = build_shared_model(spec)
    graph, _, _ = import_onnx(save_onnx(model))
    layers = graph.ops_of_kind("s4d")
    assert len(layers) == spec.n_layers
    params = shared_parameters(spec)
    for k, op in enumerate(layers):
        lam, _, _, D_want = discrete_layer(spec, params, k)
        assert op.attrs == {"form": "discrete", "modes": spec.P, "mixing": "dense"}
        assert op.params["B_bar"].shape == (spec.P, spec.H) and op.params["C"].shape == (spec.H, spec.P)
        assert _same_poles(op.params["A_bar"], lam)
        np.testing.assert_allclose(op.params["D"], D_want, atol=1e-5)
    x = _tokens(spec)
    want = run_step_model_ort(model, x)
    got = run_float(graph, x)[graph.outputs()[0].name]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("P", [3, 2], ids=["2P!=H", "2P==H"])
def test_an_input_map_written_as_one_stacked_matmul_is_part_of_the_layer(P, save_onnx):
    # u @ [B_re; B_im]^T -> [batch, 2P], split into the halves: the layer input is still u (or, when 2P == H,
    # the stacked product is an equally valid input: a linear before a layer with unit B)
    spec = SharedSpec(family="lru", parametrisation="graph", stacked_input=True, n_layers=2, H=4, P=P)
    model = build_shared_model(spec)
    graph, _, _ = import_onnx(save_onnx(model))
    layers = graph.ops_of_kind("s4d")
    assert [op.attrs["mixing"] for op in layers] == ["dense", "dense"]
    for k, op in enumerate(layers):
        assert _same_poles(op.params["A_bar"], discrete_layer(spec, shared_parameters(spec), k)[0])
    x = _tokens(spec)
    want = run_step_model_ort(model, x)
    assert np.abs(run_float(graph, x)[graph.outputs()[0].name] - want).max() <= 1e-5 * np.abs(want).max()


def test_a_fixed_batch_of_1_imports_like_a_symbolic_batch(save_onnx):
    spec = SharedSpec(family="lru", parametrisation="graph", layout="last", fixed_batch=True, n_layers=2)
    model = build_shared_model(spec)
    graph, _, _ = import_onnx(save_onnx(model))
    assert [op.attrs["mixing"] for op in graph.ops_of_kind("s4d")] == ["dense", "dense"]
    x = _tokens(spec, batch=2)
    want = run_step_model_ort(model, x)
    assert np.abs(run_float(graph, x)[graph.outputs()[0].name] - want).max() <= 1e-5 * np.abs(want).max()


def test_the_measured_layer_reproduces_the_equations_input_and_readout(save_onnx):
    # B_bar and C are fixed only up to a complex factor per mode (the state's similarity); their product is not
    spec = SharedSpec(family="s5", H=3, P=4, layout="split")
    graph, _, _ = import_onnx(save_onnx(build_shared_model(spec)))
    (op,) = graph.ops_of_kind("s4d")
    lam, B_bar, C, _ = discrete_layer(spec, shared_parameters(spec), 0)
    order = [int(np.argmin(np.abs(lam - a))) for a in op.params["A_bar"]]
    want = np.einsum("hp,pk->phk", C[:, order], B_bar[order])  # y reads Re(C x): per mode C[:, p] B[p, :]
    got = np.einsum("hp,pk->phk", 2 * op.params["C"].astype(np.complex128), op.params["B_bar"])
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_layer_models_compile_with_the_default_pipeline_and_run_bit_exactly_on_numpy_and_microcode(
    variant, save_onnx
):
    spec = SharedSpec(**VARIANTS[variant], n_layers=2, H=4, P=5, activation="tanh" if variant == "s5" else "relu")
    model = build_shared_model(spec)
    net = ssmc.compile(save_onnx(model))
    assert any(op.attrs.get("mixing") == "dense" for op in net.model_graph.ops_of_kind("s4d"))
    x = _tokens(spec, batch=2, steps=6)
    want, got = run_numpy(net.graph, x), microcode_engine.run_net(net, x)
    for name in want.raw:
        np.testing.assert_array_equal(got.raw[name], want.raw[name])
    ref = run_step_model_ort(model, x)  # 8-bit weights from random calibration: percent-level, not more
    assert np.abs(net.run(x) - ref).max() <= 0.1 * np.abs(ref).max()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    family=st.sampled_from(["s5", "lru"]),
    layout=st.sampled_from(SSM_LAYOUTS),
    H=st.integers(1, 5),
    P=st.integers(1, 6),
    n_layers=st.integers(1, 2),
    D=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_random_shared_models_compile_and_numpy_equals_microcode(family, layout, H, P, n_layers, D, seed, save_onnx):
    spec = SharedSpec(family=family, layout=layout, H=H, P=P, n_layers=n_layers, D=D, seed=seed)
    net = ssmc.compile(save_onnx(build_shared_model(spec)))
    x = _tokens(spec, batch=2, steps=5, seed=seed)
    want, got = run_numpy(net.graph, x), microcode_engine.run_net(net, x)
    for name in want.raw:
        np.testing.assert_array_equal(got.raw[name], want.raw[name])


def test_an_s5_model_runs_on_lava_like_numpy(save_onnx):
    pytest.importorskip("lava")
    from tests.backend_loihi.test_lava_engine import assert_same_run

    spec = SharedSpec(family="lru", parametrisation="graph", n_layers=2, H=3, P=4)
    net = ssmc.compile(save_onnx(build_shared_model(spec)))
    assert_same_run(net.graph, _tokens(spec, batch=2, steps=4))


# -- refusals ------------------------------------------------------------------------------------------
def test_a_dense_state_map_is_refused_naming_the_state_and_the_measured_block(save_onnx):
    with pytest.raises(
        UnsupportedModelError,
        match=r"^state 's0' -> 's0_out': state elements \[0, 1, 2\] are "
        r"coupled together \(measured state map block \[\[.*\]\]\); "
        r"only diagonal SSMs",
    ):
        import_onnx(save_onnx(build_dense_a_model()))


def _set(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return model


def test_a_shared_mode_with_a_zero_pole_is_refused_naming_the_mode(save_onnx):
    spec = SharedSpec(family="lru", parametrisation="const", P=3)
    model = build_shared_model(spec)
    lam_re = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name.endswith("lam_re"))).copy()
    lam_im = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name.endswith("lam_im"))).copy()
    lam_re[1] = lam_im[1] = 0.0
    _set(model, "layers.0.lru.lam_re", lam_re)
    _set(model, "layers.0.lru.lam_im", lam_im)
    with pytest.raises(
        UnsupportedModelError,
        match=r"'s0_re \+ s0_im' -> 's0_re_out \+ s0_im_out': mode \d has "
        r"A_bar = 0",
    ):
        import_onnx(save_onnx(model))


def test_an_unstable_shared_mode_is_refused_at_compile_naming_the_mode(save_onnx):
    spec = SharedSpec(family="lru", parametrisation="const", P=3)
    model = build_shared_model(spec)
    _set(model, "layers.0.lru.lam_re", [0.5, 1.01, 0.2])
    _set(model, "layers.0.lru.lam_im", [0.1, 0.0, 0.3])
    with pytest.raises(
        SsmcError,
        match=r"%s4d0 \(s4d\): \|A_bar\| = 1.01 >= 1 at mode \d; the recurrence is not "
        "stable",
    ):
        ssmc.compile(save_onnx(model))


def test_a_skip_term_that_mixes_channels_is_refused_for_shared_modes_too(save_onnx):
    spec = SharedSpec(family="s5", D=True, H=3)
    model = build_shared_model(spec)
    # D * u -> u @ Dm with a full matrix: the skip mixes channels
    mul = next(n for n in model.graph.node if n.op_type == "Mul" and "layers.0.s5.D" in n.input)
    mul.op_type = "MatMul"
    _set(model, "layers.0.s5.D", np.random.default_rng(0).normal(size=(3, 3)))
    with pytest.raises(UnsupportedModelError, match="the skip term mixes channels"):
        import_onnx(save_onnx(model))


def test_two_state_halves_driven_by_unrelated_inputs_are_refused_as_coupled_layers(save_onnx):
    # x_re' = a x_re - b x_im + W1 x,  x_im' = a x_im + b x_re + W2 v: the halves of one mode fed by two
    # different [batch, C] tensors (x and v = x + relu(x)) with no common input u computed alone: two layers
    # whose states drive each other
    rng = np.random.default_rng(0)
    value = helper.make_tensor_value_info
    init = [
        numpy_helper.from_array(v.astype(np.float32), n)
        for n, v in (
            ("a", np.array([0.9, 0.5])),
            ("b", np.array([0.1, -0.3])),
            ("W1", rng.normal(size=(2, 2))),
            ("W2", rng.normal(size=(2, 2))),
            ("C", rng.normal(size=(2, 2))),
        )
    ]
    N = helper.make_node
    nodes = [
        N("Relu", ["x"], ["v0"]),
        N("Add", ["x", "v0"], ["v"]),  # v is not computed from x alone
        N("Mul", ["a", "re"], ["ar"]),
        N("Mul", ["b", "im"], ["bi"]),
        N("Sub", ["ar", "bi"], ["r0"]),
        N("MatMul", ["x", "W1"], ["bx"]),
        N("Add", ["r0", "bx"], ["re_out"]),
        N("Mul", ["a", "im"], ["ai"]),
        N("Mul", ["b", "re"], ["br"]),
        N("Add", ["ai", "br"], ["i0"]),
        N("MatMul", ["v", "W2"], ["bv"]),
        N("Add", ["i0", "bv"], ["im_out"]),
        N("MatMul", ["re_out", "C"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            value("x", TensorProto.FLOAT, ["batch", 2]),
            value("re", TensorProto.FLOAT, ["batch", 2]),
            value("im", TensorProto.FLOAT, ["batch", 2]),
        ],
        [
            value("y", TensorProto.FLOAT, ["batch", 2]),
            value("re_out", TensorProto.FLOAT, ["batch", 2]),
            value("im_out", TensorProto.FLOAT, ["batch", 2]),
        ],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(UnsupportedModelError, match="layers must not couple their states|drives element"):
        import_onnx(save_onnx(model))
