"""Build S4D step-form ONNX models with `onnx.helper`, without torch.

The ssmc frontend must recognise the graphs that `torch.onnx.export(dynamo=False)`
writes at opset 17 for an S4D network kept in raw parameters: the discretisation
(A_bar, B_bar) is recomputed inside the graph from `log_dt`, `log_A_real`,
`A_imag`, and one call of the model advances every layer by one token.  This
module writes graphs in that same pattern (op choice, op order, torch-style
initializer and node names) from a small `StepModelSpec`, so tests can draw
many different valid models, plus a few invalid ones the frontend must reject.

Step-form contract:
  inputs   x [batch, F], state0 .. state{L-1} [batch, H, M, 2]  (last axis re, im)
  outputs  logits [batch, n_out], state0_out .. state{L-1}_out (shapes as inputs)

Everything is a pure function of its arguments; random values come from
`numpy.random.default_rng(spec.seed)`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "sigmoid", "tanh", "none")
LINEAR_STYLES = ("gemm", "matmul_add")
UNSUPPORTED_OPS = ("TopK", "LSTM")

# Inclusive size ranges drawn by `random_spec` and `step_model_specs`: small
# enough that building and running a model takes milliseconds.
SIZE_RANGES = {
    "in_features": (1, 4),
    "H": (2, 16),
    "M": (1, 8),
    "n_layers": (1, 3),
    "n_out": (2, 10),
}


@dataclasses.dataclass(frozen=True)
class StepModelSpec:
    """Shape and structure of one S4D step-form network.

    in_features  F, features of one input token
    H            model width (S4D channels)
    M            complex modes per channel (N/2 in S4D terms)
    n_layers     number of S4D blocks
    n_out        width of the logits
    activation   one of ACTIVATIONS, applied to the S4D output
    glu          mixing Linear H->2H followed by GLU instead of Linear H->H
    norm         pre-norm LayerNormalization before each S4D
    residual     u = u + block(u) instead of u = block(u)
    linear_style "gemm" (Gemm, transB=1) or "matmul_add" (MatMul + Add)
    seed         seed of the parameter values
    """

    in_features: int
    H: int
    M: int
    n_layers: int
    n_out: int
    activation: str = "relu"
    glu: bool = False
    norm: bool = False
    residual: bool = True
    linear_style: str = "gemm"
    seed: int = 0

    def __post_init__(self):
        for name in SIZE_RANGES:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.linear_style not in LINEAR_STYLES:
            raise ValueError(f"linear_style must be one of {LINEAR_STYLES}, got {self.linear_style!r}")


def step_model_parameters(spec: StepModelSpec) -> dict[str, np.ndarray]:
    """Draw the float32 parameters of `spec`'s network, keyed by torch state_dict name.

    Linear weights are in torch layout (out, in).  The values give stable,
    realistic S4D dynamics: Re(A) = -exp(log_A_real) near -0.5, Im(A) near
    pi*m, dt in [0.005, 0.1]; weights are normal scaled by 1/sqrt(fan_in).
    `build_step_model` lays these out as initializers; tests use them directly
    for reference computations.
    """
    rng = np.random.default_rng(spec.seed)
    H, M = spec.H, spec.M
    params: dict[str, np.ndarray] = {}

    def add_linear(module: str, fan_in: int, fan_out: int) -> None:
        scale = 1.0 / np.sqrt(fan_in)
        params[f"{module}.weight"] = rng.standard_normal((fan_out, fan_in)) * scale
        params[f"{module}.bias"] = rng.standard_normal(fan_out) * scale

    add_linear("encoder", spec.in_features, H)
    for layer in range(spec.n_layers):
        prefix = f"layers.{layer}"
        if spec.norm:
            params[f"{prefix}.norm.weight"] = 1.0 + 0.1 * rng.standard_normal(H)
            params[f"{prefix}.norm.bias"] = 0.1 * rng.standard_normal(H)
        params[f"{prefix}.s4d.log_dt"] = rng.uniform(np.log(0.005), np.log(0.1), H)
        params[f"{prefix}.s4d.log_A_real"] = np.log(0.5) + 0.1 * rng.standard_normal((H, M))
        params[f"{prefix}.s4d.A_imag"] = np.pi * np.arange(M) + 0.1 * rng.standard_normal((H, M))
        params[f"{prefix}.s4d.C"] = rng.standard_normal((H, M, 2)) / np.sqrt(M)
        params[f"{prefix}.s4d.D"] = rng.standard_normal(H)
        add_linear(f"{prefix}.mix", H, 2 * H if spec.glu else H)
    add_linear("decoder", H, spec.n_out)
    return {name: value.astype(np.float32) for name, value in params.items()}


class _GraphWriter:
    """Collects nodes and initializers, naming them the way the torch exporter does.

    A node of type T in module scope "/layers.0/s4d" is named "/layers.0/s4d/T",
    "/layers.0/s4d/T_1", ... and its outputs "<node name>_output_<i>".
    """

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._node_counts: Counter = Counter()

    def op(
        self, scope: str, op_type: str, *inputs: str, output_name: str | None = None, n_outputs: int = 1, **attributes
    ) -> str | list[str]:
        """Append one node; return its output name (a list if n_outputs > 1)."""
        count = self._node_counts[(scope, op_type)]
        self._node_counts[(scope, op_type)] += 1
        node_name = f"{scope}/{op_type}" + (f"_{count}" if count else "")
        outputs = [output_name] if output_name else [f"{node_name}_output_{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=node_name, **attributes))
        return outputs[0] if n_outputs == 1 else outputs

    def constant(self, scope: str, value, dtype=np.float32) -> str:
        """A Constant node, as the exporter emits for literals and axes lists."""
        return self.op(scope, "Constant", value=numpy_helper.from_array(np.asarray(value, dtype=dtype)))

    def initializer(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name=name))
        return name

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        """Wrap the collected graph in an opset-17 model and check it strictly."""
        graph = helper.make_graph(self.nodes, "s4d_step", inputs, outputs, initializer=self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests.builders.onnx_models"
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


def _linear(writer: _GraphWriter, params: dict, module: str, x: str, style: str, output_name: str | None = None) -> str:
    """nn.Linear: Gemm(x, W, b, transB=1), or MatMul(x, W^T) + b with W^T stored as
    an anonymous `onnx::MatMul_<k>` initializer, both as torch exports them."""
    scope = f"/{module}"
    weight, bias = params[f"{module}.weight"], params[f"{module}.bias"]
    bias_name = writer.initializer(f"{module}.bias", bias)
    if style == "gemm":
        weight_name = writer.initializer(f"{module}.weight", weight)
        return writer.op(
            scope, "Gemm", x, weight_name, bias_name, output_name=output_name, alpha=1.0, beta=1.0, transB=1
        )
    weight_t_name = writer.initializer(f"onnx::MatMul_{len(writer.initializers)}", np.ascontiguousarray(weight.T))
    product = writer.op(scope, "MatMul", x, weight_t_name)
    return writer.op(scope, "Add", product, bias_name, output_name=output_name)


def _activation(writer: _GraphWriter, scope: str, kind: str, x: str) -> str:
    """The activation ops torch emits at opset 17 (GELU has no single op before opset 20)."""
    if kind == "none":
        return x
    if kind in ("relu", "sigmoid", "tanh"):
        return writer.op(scope, kind.capitalize(), x)
    if kind == "gelu":  # x * (erf(x / sqrt 2) + 1) * 0.5
        erf = writer.op(scope, "Erf", writer.op(scope, "Div", x, writer.constant(scope, np.sqrt(2.0))))
        shifted = writer.op(scope, "Add", erf, writer.constant(scope, 1.0))
        return writer.op(scope, "Mul", writer.op(scope, "Mul", x, shifted), writer.constant(scope, 0.5))
    # gelu_tanh: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
    cube = writer.op(scope, "Pow", x, writer.constant(scope, 3.0))
    inner = writer.op(scope, "Add", x, writer.op(scope, "Mul", writer.constant(scope, 0.044715), cube))
    scaled = writer.op(scope, "Mul", writer.constant(scope, np.sqrt(2.0 / np.pi)), inner)
    shifted = writer.op(scope, "Add", writer.constant(scope, 1.0), writer.op(scope, "Tanh", scaled))
    return writer.op(scope, "Mul", writer.op(scope, "Mul", writer.constant(scope, 0.5), x), shifted)


def _s4d_step(writer: _GraphWriter, params: dict, layer: int, u: str, state: str) -> str:
    """One S4D step on u [batch, H] and state [batch, H, M, 2].

    Recomputes A_bar = exp(A dt) and B_bar = (A_bar - 1) / A from the raw
    parameters in real arithmetic, writes the new state to graph output
    `state{layer}_out`, and returns y = 2 Re(sum_m C s_new) + D u.
    """
    module = f"layers.{layer}.s4d"
    scope = f"/layers.{layer}/s4d"
    op, const = writer.op, writer.constant
    names = {
        key: writer.initializer(f"{module}.{key}", params[f"{module}.{key}"])
        for key in ("log_dt", "log_A_real", "A_imag", "C", "D")
    }

    def unsqueeze_last(x: str) -> str:
        return op(scope, "Unsqueeze", x, const(scope, [-1], np.int64))

    def component(x: str, index: int, rank: int) -> str:  # x[..., index]
        return op(scope, "Gather", x, const(scope, index, np.int64), axis=rank - 1)

    s_re, s_im = component(state, 0, 4), component(state, 1, 4)
    y, new_re, new_im = _s4d_update(
        writer, scope, _discretization(writer, scope, names), names["C"], names["D"], u, unsqueeze_last(u), s_re, s_im
    )
    op(scope, "Concat", unsqueeze_last(new_re), unsqueeze_last(new_im), axis=-1, output_name=f"state{layer}_out")
    return y


def _discretization(writer: _GraphWriter, scope: str, names: dict[str, str]) -> tuple[str, str, str, str]:
    """A_bar = exp(A dt), B_bar = (A_bar - 1) / A from log_dt, log_A_real, A_imag, in real arithmetic;
    returns the names of (A_bar re, A_bar im, B_bar re, B_bar im), [H, M] each."""
    op, const = writer.op, writer.constant
    dt = op(scope, "Unsqueeze", op(scope, "Exp", names["log_dt"]), const(scope, [-1], np.int64))
    a_re = op(scope, "Neg", op(scope, "Exp", names["log_A_real"]))
    a_im = names["A_imag"]
    dta_re, dta_im = op(scope, "Mul", a_re, dt), op(scope, "Mul", a_im, dt)
    magnitude = op(scope, "Exp", dta_re)
    abar_re = op(scope, "Mul", magnitude, op(scope, "Cos", dta_im))
    abar_im = op(scope, "Mul", magnitude, op(scope, "Sin", dta_im))

    num_re, num_im = op(scope, "Sub", abar_re, const(scope, 1.0)), abar_im
    den = op(scope, "Add", op(scope, "Mul", a_re, a_re), op(scope, "Mul", a_im, a_im))
    bbar_re = op(scope, "Div", op(scope, "Add", op(scope, "Mul", num_re, a_re), op(scope, "Mul", num_im, a_im)), den)
    bbar_im = op(scope, "Div", op(scope, "Sub", op(scope, "Mul", num_im, a_re), op(scope, "Mul", num_re, a_im)), den)
    return abar_re, abar_im, bbar_re, bbar_im


def _s4d_update(
    writer: _GraphWriter,
    scope: str,
    discrete: tuple[str, str, str, str],
    c: str,
    d: str,
    u: str,
    u_modes: str,
    s_re: str,
    s_im: str,
) -> tuple[str, str, str]:
    """x' = A_bar x + B_bar u on the re/im parts [.., H, M] and y = 2 Re(sum_m C x') + D u.

    u_modes is u broadcast over the modes ([batch, H, 1]); returns (y, x'_re, x'_im)."""
    op, const = writer.op, writer.constant
    abar_re, abar_im, bbar_re, bbar_im = discrete
    new_re = op(
        scope,
        "Add",
        op(scope, "Sub", op(scope, "Mul", abar_re, s_re), op(scope, "Mul", abar_im, s_im)),
        op(scope, "Mul", bbar_re, u_modes),
    )
    new_im = op(
        scope,
        "Add",
        op(scope, "Add", op(scope, "Mul", abar_re, s_im), op(scope, "Mul", abar_im, s_re)),
        op(scope, "Mul", bbar_im, u_modes),
    )
    c_re = op(scope, "Gather", c, const(scope, 0, np.int64), axis=2)
    c_im = op(scope, "Gather", c, const(scope, 1, np.int64), axis=2)
    real_part = op(scope, "Sub", op(scope, "Mul", c_re, new_re), op(scope, "Mul", c_im, new_im))
    mode_sum = op(scope, "ReduceSum", real_part, const(scope, [-1], np.int64), keepdims=0)
    y = op(scope, "Add", op(scope, "Mul", mode_sum, const(scope, 2.0)), op(scope, "Mul", d, u))
    return y, new_re, new_im


def _block(writer: _GraphWriter, spec: StepModelSpec, params: dict, layer: int, u: str, s4d=None) -> str:
    """One residual block: [LayerNorm] -> S4D -> activation -> mixing Linear [-> GLU] [+ u].

    s4d(z) -> y writes the S4D step (default: `_s4d_step` on state{layer} [batch, H, M, 2])."""
    scope = f"/layers.{layer}"
    z = u
    if spec.norm:
        module = f"layers.{layer}.norm"
        z = writer.op(
            f"{scope}/norm",
            "LayerNormalization",
            z,
            writer.initializer(f"{module}.weight", params[f"{module}.weight"]),
            writer.initializer(f"{module}.bias", params[f"{module}.bias"]),
            axis=-1,
            epsilon=1e-5,
        )
    z = s4d(z) if s4d else _s4d_step(writer, params, layer, z, f"state{layer}")
    z = _activation(writer, f"{scope}/act", spec.activation, z)
    z = _linear(writer, params, f"layers.{layer}.mix", z, spec.linear_style)
    if spec.glu:  # F.glu: first half * sigmoid(second half), Split without sizes = equal halves
        first, second = writer.op(f"{scope}/glu", "Split", z, axis=-1, n_outputs=2)
        z = writer.op(f"{scope}/glu", "Mul", first, writer.op(f"{scope}/glu", "Sigmoid", second))
    if spec.residual:
        z = writer.op(scope, "Add", u, z)
    return z


def _token_input(name: str, spec: StepModelSpec, rank: int = 2) -> onnx.ValueInfoProto:
    """Token input [batch, F], or [batch, 1, ..., F] for rank > 2."""
    shape = ["batch"] + [1] * (rank - 2) + [spec.in_features]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _state_values(spec: StepModelSpec, suffix: str) -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info(f"state{layer}{suffix}", TensorProto.FLOAT, ["batch", spec.H, spec.M, 2])
        for layer in range(spec.n_layers)
    ]


def _logits_output(spec: StepModelSpec) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", spec.n_out])


def build_step_model(spec: StepModelSpec, params: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The step-form ONNX model of `spec`: encoder, n_layers S4D blocks, decoder.

    `params` (default `step_model_parameters(spec)`) lets a test set chosen
    values. The model passes `onnx.checker.check_model(full_check=True)`,
    which includes strict shape inference.
    """
    params = step_model_parameters(spec) if params is None else params
    writer = _GraphWriter()
    u = _linear(writer, params, "encoder", "x", spec.linear_style)
    for layer in range(spec.n_layers):
        u = _block(writer, spec, params, layer, u)
    _linear(writer, params, "decoder", u, spec.linear_style, output_name="logits")
    return writer.model(
        [_token_input("x", spec), *_state_values(spec, "")], [_logits_output(spec), *_state_values(spec, "_out")]
    )


# -- state layouts as users write them -------------------------------------------------
#: Layouts of the recurrent state, each as torch users write it (per-sequence view; "batch" marks the batch axis).
LAYOUTS = {
    "last": "one state per layer [batch, H, M, 2], re/im last",
    "split": "re and im as two states per layer, [batch, H, M] each",
    "packed": "one state for all layers [L, 2, batch, H, M]",
    "re_im_first": "one state per layer [2, batch, H, M]",
    "batch_axis1": "one state per layer [H, batch, M, 2]",
    "batch_axis2": "one state per layer [H, M, batch, 2]",
}


def layout_state_shapes(layout: str, spec: StepModelSpec, batch="batch") -> list[tuple[str, list]]:
    """(name, shape) of each state input of `layout` (outputs are named name + "_out")."""
    L, H, M = spec.n_layers, spec.H, spec.M
    per_layer = {
        "last": [batch, H, M, 2],
        "re_im_first": [2, batch, H, M],
        "batch_axis1": [H, batch, M, 2],
        "batch_axis2": [H, M, batch, 2],
    }
    if layout in per_layer:
        return [(f"state{layer}", per_layer[layout]) for layer in range(L)]
    if layout == "split":
        return [(f"s{layer}_{part}", [batch, H, M]) for layer in range(L) for part in ("re", "im")]
    if layout == "packed":
        return [("state", [L, 2, batch, H, M])]
    raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")


def discrete_parameters(params: dict, layer: int) -> dict[str, np.ndarray]:
    """A_bar = exp(dt A), B_bar = (A_bar - 1) / A of one layer (B = 1), float32 re/im parts [H, M]."""
    module = f"layers.{layer}.s4d"
    A = -np.exp(params[f"{module}.log_A_real"].astype(np.float64)) + 1j * params[f"{module}.A_imag"]
    a_bar = np.exp(np.exp(params[f"{module}.log_dt"].astype(np.float64))[:, None] * A)
    b_bar = (a_bar - 1.0) / A
    return {
        f"{module}.{name}": value.astype(np.float32)
        for name, value in (
            ("A_bar_re", a_bar.real),
            ("A_bar_im", a_bar.imag),
            ("B_bar_re", b_bar.real),
            ("B_bar_im", b_bar.imag),
        )
    }


def build_layout_model(
    spec: StepModelSpec, layout: str = "last", fixed_batch: bool = False, discrete: bool = False
) -> onnx.ModelProto:
    """`build_step_model`'s network with its state in `layout` (one of LAYOUTS).

    fixed_batch: every batch axis is 1 and u is broadcast over the modes by a Reshape to the constant shape
    [1, H, 1], as torch traces it without dynamic axes. discrete: A_bar, B_bar are initializers (what
    exporters that fold the discretization write: no Exp/Cos/Sin)."""
    params = step_model_parameters(spec)
    batch = 1 if fixed_batch else "batch"
    states = layout_state_shapes(layout, spec, batch)
    writer = _GraphWriter()
    op, const = writer.op, writer.constant
    H, L = spec.H, spec.n_layers
    packed_out: list[str] = []

    def read(layer: int) -> tuple[str, str]:  # the layer's state as re, im [batch, H, M]
        scope = f"/layers.{layer}/state"
        if layout == "split":
            return f"s{layer}_re", f"s{layer}_im"
        if layout in ("re_im_first", "packed"):
            whole = (
                f"state{layer}"
                if layout == "re_im_first"
                else op(scope, "Gather", "state", const(scope, layer, np.int64), axis=0)
            )
            return tuple(op(scope, "Gather", whole, const(scope, k, np.int64), axis=0) for k in (0, 1))
        parts = [op(scope, "Gather", f"state{layer}", const(scope, k, np.int64), axis=3) for k in (0, 1)]
        perm = {"last": None, "batch_axis1": [1, 0, 2], "batch_axis2": [2, 0, 1]}[layout]
        return tuple(parts) if perm is None else tuple(op(scope, "Transpose", p, perm=perm) for p in parts)

    def write(layer: int, new_re: str, new_im: str) -> None:
        scope = f"/layers.{layer}/state"
        if layout == "split":
            op(scope, "Identity", new_re, output_name=f"s{layer}_re_out")
            op(scope, "Identity", new_im, output_name=f"s{layer}_im_out")
            return
        if layout in ("re_im_first", "packed"):
            first = [op(scope, "Unsqueeze", p, const(scope, [0], np.int64)) for p in (new_re, new_im)]
            if layout == "packed":
                packed_out.append(
                    op(scope, "Unsqueeze", op(scope, "Concat", *first, axis=0), const(scope, [0], np.int64))
                )
            else:
                op(scope, "Concat", *first, axis=0, output_name=f"state{layer}_out")
            return
        last = [op(scope, "Unsqueeze", p, const(scope, [-1], np.int64)) for p in (new_re, new_im)]
        perm = {"last": None, "batch_axis1": [1, 0, 2, 3], "batch_axis2": [1, 2, 0, 3]}[layout]
        if perm is None:
            op(scope, "Concat", *last, axis=-1, output_name=f"state{layer}_out")
        else:
            op(scope, "Transpose", op(scope, "Concat", *last, axis=-1), perm=perm, output_name=f"state{layer}_out")

    def s4d(layer: int):
        def step(u: str) -> str:
            module, scope = f"layers.{layer}.s4d", f"/layers.{layer}/s4d"
            names = {
                key: writer.initializer(f"{module}.{key}", params[f"{module}.{key}"])
                for key in ("log_dt", "log_A_real", "A_imag", "C", "D")
            }
            if discrete:
                disc = tuple(
                    writer.initializer(name, value) for name, value in discrete_parameters(params, layer).items()
                )
            else:
                disc = _discretization(writer, scope, names)
            u_modes = (
                op(scope, "Reshape", u, const(scope, [1, H, 1], np.int64))
                if fixed_batch
                else op(scope, "Unsqueeze", u, const(scope, [-1], np.int64))
            )
            y, new_re, new_im = _s4d_update(writer, scope, disc, names["C"], names["D"], u, u_modes, *read(layer))
            write(layer, new_re, new_im)
            return y

        return step

    u = _linear(writer, params, "encoder", "x", spec.linear_style)
    for layer in range(L):
        u = _block(writer, spec, params, layer, u, s4d=s4d(layer))
    _linear(writer, params, "decoder", u, spec.linear_style, output_name="logits")
    if layout == "packed":
        op("/state", "Concat", *packed_out, axis=0, output_name="state_out")
    value = helper.make_tensor_value_info
    return writer.model(
        [
            value("x", TensorProto.FLOAT, [batch, spec.in_features]),
            *(value(name, TensorProto.FLOAT, shape) for name, shape in states),
        ],
        [
            value("logits", TensorProto.FLOAT, [batch, spec.n_out]),
            *(value(f"{name}_out", TensorProto.FLOAT, shape) for name, shape in states),
        ],
    )


_BAD_MODEL_SPEC = StepModelSpec(in_features=2, H=4, M=2, n_layers=2, n_out=3)


def _unsupported_op(writer: _GraphWriter, op_type: str, u: str, width: int) -> str:
    """A shape-preserving op on u [batch, width] that ssmc does not map.

    TopK sorts the features (values output only); LSTM runs one time step with
    hidden size `width` and zero initial state.
    """
    scope = f"/unsupported/{op_type}"
    if op_type == "TopK":
        values, _ = writer.op(
            scope, "TopK", u, writer.constant(scope, [width], np.int64), axis=-1, largest=1, sorted=1, n_outputs=2
        )
        return values
    rng = np.random.default_rng(0)
    scale = 1.0 / np.sqrt(width)
    weights = [
        writer.initializer(f"unsupported.lstm.{name}", (rng.standard_normal(shape) * scale).astype(np.float32))
        for name, shape in (("W", (1, 4 * width, width)), ("R", (1, 4 * width, width)), ("B", (1, 8 * width)))
    ]
    sequence = writer.op(scope, "Unsqueeze", u, writer.constant(scope, [0], np.int64))  # [1, batch, width]
    hidden_sequence = writer.op(scope, "LSTM", sequence, *weights, hidden_size=width)  # [1, 1, batch, width]
    return writer.op(scope, "Squeeze", hidden_sequence, writer.constant(scope, [0, 1], np.int64))


def build_unsupported_op_model(op_type: str = "TopK", spec: StepModelSpec | None = None) -> onnx.ModelProto:
    """A valid step-form model with an op ssmc does not support after the first S4D block.

    op_type is one of UNSUPPORTED_OPS; the op keeps the shape [batch, H], so the
    model is otherwise a normal step model (default spec: 2 layers, H=4, M=2).
    The frontend must reject it with UnsupportedModelError naming the op.
    """
    if op_type not in UNSUPPORTED_OPS:
        raise ValueError(f"op_type must be one of {UNSUPPORTED_OPS}, got {op_type!r}")
    spec = spec or _BAD_MODEL_SPEC
    params = step_model_parameters(spec)
    writer = _GraphWriter()
    u = _linear(writer, params, "encoder", "x", spec.linear_style)
    for layer in range(spec.n_layers):
        u = _block(writer, spec, params, layer, u)
        if layer == 0:
            u = _unsupported_op(writer, op_type, u, spec.H)
    _linear(writer, params, "decoder", u, spec.linear_style, output_name="logits")
    return writer.model(
        [_token_input("x", spec), *_state_values(spec, "")], [_logits_output(spec), *_state_values(spec, "_out")]
    )


def build_wrong_rank_model(spec: StepModelSpec | None = None) -> onnx.ModelProto:
    """A valid model whose token input `x` is [batch, 1, F] (rank 3) instead of [batch, F].

    The graph squeezes axis 1 first and is otherwise the normal step model, so
    it runs; the frontend must still reject it because it breaks the contract.
    """
    spec = spec or _BAD_MODEL_SPEC
    params = step_model_parameters(spec)
    writer = _GraphWriter()
    token = writer.op("", "Squeeze", "x", writer.constant("", [1], np.int64))
    u = _linear(writer, params, "encoder", token, spec.linear_style)
    for layer in range(spec.n_layers):
        u = _block(writer, spec, params, layer, u)
    _linear(writer, params, "decoder", u, spec.linear_style, output_name="logits")
    return writer.model(
        [_token_input("x", spec, rank=3), *_state_values(spec, "")],
        [_logits_output(spec), *_state_values(spec, "_out")],
    )


def truncated_bytes(model_bytes: bytes) -> bytes:
    """The first half of a serialized model: a damaged file that must fail to load."""
    return model_bytes[: len(model_bytes) // 2]


def random_spec(rng_or_seed, **overrides) -> StepModelSpec:
    """A random small StepModelSpec (sizes from SIZE_RANGES) drawn from a numpy RNG.

    rng_or_seed is a numpy Generator or anything `np.random.default_rng` accepts.
    All fields are drawn before `overrides` replace some, so a given seed yields
    the same values for the fields that are not overridden.
    """
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)
    sizes = {name: int(rng.integers(low, high + 1)) for name, (low, high) in SIZE_RANGES.items()}
    spec = StepModelSpec(
        **sizes,
        activation=str(rng.choice(ACTIVATIONS)),
        glu=bool(rng.integers(2)),
        norm=bool(rng.integers(2)),
        residual=bool(rng.integers(2)),
        linear_style=str(rng.choice(LINEAR_STYLES)),
        seed=int(rng.integers(2**31)),
    )
    return dataclasses.replace(spec, **overrides)


def step_model_specs(**overrides):
    """A hypothesis strategy of StepModelSpec values with sizes from SIZE_RANGES.

    Each override is a fixed value or a hypothesis strategy for that field,
    e.g. `step_model_specs(n_layers=1, activation=st.sampled_from(["relu", "none"]))`.
    """
    from hypothesis import strategies as st

    fields = {name: st.integers(low, high) for name, (low, high) in SIZE_RANGES.items()}
    fields.update(
        activation=st.sampled_from(ACTIVATIONS),
        glu=st.booleans(),
        norm=st.booleans(),
        residual=st.booleans(),
        linear_style=st.sampled_from(LINEAR_STYLES),
        seed=st.integers(0, 2**31 - 1),
    )
    for name, value in overrides.items():
        if name not in fields:
            raise TypeError(f"StepModelSpec has no field {name!r}")
        fields[name] = value if isinstance(value, st.SearchStrategy) else st.just(value)
    return st.builds(StepModelSpec, **fields)


def run_step_model_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run a step-form model over x [batch, T, F] token by token with onnxruntime.

    States start at zero and each `stateL_out` is fed back as `stateL`.
    Returns the logits of every token, [batch, T, n_out], float32.
    """
    import onnxruntime as ort

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"x must be [batch, T, F], got shape {x.shape}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    token_input, *state_inputs = session.get_inputs()
    if isinstance(token_input.shape[0], int):  # a fixed batch of 1: one sequence at a time
        return np.concatenate([_run_batch(session, token_input, state_inputs, x[i : i + 1]) for i in range(len(x))])
    return _run_batch(session, token_input, state_inputs, x)


def _run_batch(session, token_input, state_inputs, x: np.ndarray) -> np.ndarray:
    batch, steps, _ = x.shape
    # the batch axis of a state is its symbolic one (none with a fixed batch)
    states = {
        value.name: np.zeros([d if isinstance(d, int) else batch for d in value.shape], dtype=np.float32)
        for value in state_inputs
    }
    output_names = [o.name for o in session.get_outputs()]
    logits_per_token = []
    for t in range(steps):
        logits, *new_states = session.run(output_names, {token_input.name: x[:, t], **states})
        states = dict(zip(states, new_states))
        logits_per_token.append(logits)
    return np.stack(logits_per_token, axis=1)


def well_conditioned(spec: StepModelSpec) -> StepModelSpec:
    """spec with H >= 4 when it uses LayerNorm.

    LayerNorm over 2 or 3 features amplifies float32 rounding by up to
    1/sqrt(eps) ~ 300 when the features nearly coincide, which is the input's
    conditioning, not a builder error; with H >= 4 float32 onnxruntime stays
    well inside 1e-4 of the float64 reference.
    """
    return dataclasses.replace(spec, H=max(spec.H, 4)) if spec.norm else spec
