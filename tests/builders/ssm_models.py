"""Build S5 and LRU step-form ONNX models with `onnx.helper`, without torch.

Both families keep ONE diagonal complex state of P modes per layer, shared by all H channels, in real
tensors (torch has no complex ONNX export): the step writes

    x'_re = lam_re * x_re - lam_im * x_im + u @ B_re^T          (B [P, H] re and im as two MatMuls)
    x'_im = lam_re * x_im + lam_im * x_re + u @ B_im^T
    y     = x'_re @ C_re^T - x'_im @ C_im^T  (+ D * u)          (C [H, P])

- S5 (Smith et al. 2023): lam = exp(Lambda dt), B = (lam - 1) / Lambda * B_cont, dt per mode; the graph
  holds the discretized constants (what exporters that fold the discretization write).
- LRU (Orvieto et al. 2023): lam = exp(-exp(nu_log) + i exp(theta_log)), B multiplied by
  gamma = sqrt(1 - |lam|^2); `parametrisation="graph"` computes lam and gamma in the graph from nu_log and
  theta_log (Exp, Cos, Sin, Sqrt), "const" stores lam and gamma * B as initializers.

Network: encoder Linear F -> H, `n_layers` blocks (layer -> activation [+ residual]), decoder H -> n_out.
Layouts of each layer's state: "split" (x_re and x_im as two [batch, P] states), "last" ([batch, P, 2]),
"re_im_first" ([2, batch, P]). The float reference `reference_logits` is written from the equations above
in complex numpy, sharing only the parameter values.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.builders.onnx_models import _activation, _GraphWriter, _linear

FAMILIES = ("s5", "lru")
SSM_LAYOUTS = ("split", "last", "re_im_first")


@dataclasses.dataclass(frozen=True)
class SharedSpec:
    """One S5 or LRU step-form network (see the module doc)."""

    family: str = "s5"
    in_features: int = 2
    H: int = 4
    P: int = 3
    n_layers: int = 1
    n_out: int = 3
    D: bool = True
    activation: str = "relu"
    residual: bool = True
    layout: str = "split"
    parametrisation: str = "const"  # LRU: "graph" or "const"
    fixed_batch: bool = False
    stacked_input: bool = False  # one MatMul u @ [B_re; B_im]^T -> [batch, 2P], split into halves
    seed: int = 0

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.layout not in SSM_LAYOUTS:
            raise ValueError(f"layout must be one of {SSM_LAYOUTS}, got {self.layout!r}")
        if self.parametrisation not in ("graph", "const"):
            raise ValueError(f"parametrisation must be 'graph' or 'const', got {self.parametrisation!r}")


def shared_parameters(spec: SharedSpec) -> dict[str, np.ndarray]:
    """float32 parameters by torch-style name; per layer the raw ones (S5: Lambda re/im, log_step, B; LRU:
    nu_log, theta_log, B) and C, D. `discrete_layer` turns them into lam, B_bar."""
    rng = np.random.default_rng(spec.seed)
    H, P = spec.H, spec.P
    p: dict[str, np.ndarray] = {}

    def linear(module: str, fan_in: int, fan_out: int) -> None:
        p[f"{module}.weight"] = rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)
        p[f"{module}.bias"] = rng.standard_normal(fan_out) / np.sqrt(fan_in)

    linear("encoder", spec.in_features, H)
    for layer in range(spec.n_layers):
        m = f"layers.{layer}.{spec.family}"
        if spec.family == "s5":
            p[f"{m}.Lambda_re"] = -0.5 + 0.1 * rng.standard_normal(P)
            p[f"{m}.Lambda_im"] = np.pi * np.arange(P) + 0.1 * rng.standard_normal(P)
            p[f"{m}.log_step"] = rng.uniform(np.log(0.01), np.log(0.1), P)
        else:  # LRU ring init: |lam| in [0.5, 0.95], phase in [0, pi]
            r = rng.uniform(0.5, 0.95, P)
            p[f"{m}.nu_log"] = np.log(-np.log(r))
            p[f"{m}.theta_log"] = np.log(rng.uniform(0.05, np.pi, P))
        p[f"{m}.B_re"] = rng.standard_normal((P, H)) / np.sqrt(2 * H)
        p[f"{m}.B_im"] = rng.standard_normal((P, H)) / np.sqrt(2 * H)
        p[f"{m}.C_re"] = rng.standard_normal((H, P)) / np.sqrt(P)
        p[f"{m}.C_im"] = rng.standard_normal((H, P)) / np.sqrt(P)
        p[f"{m}.D"] = rng.standard_normal(H)
    linear("decoder", H, spec.n_out)
    return {k: v.astype(np.float32) for k, v in p.items()}


def discrete_layer(spec: SharedSpec, params: dict, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lam [P], B_bar [P, H], C [H, P], D [H]) of one layer, complex128 / float64, from the equations:
    y = Re(C x) + D u (D zero when the spec has none)."""
    m = f"layers.{layer}.{spec.family}"
    B = params[f"{m}.B_re"].astype(np.float64) + 1j * params[f"{m}.B_im"]
    if spec.family == "s5":
        Lam = params[f"{m}.Lambda_re"].astype(np.float64) + 1j * params[f"{m}.Lambda_im"]
        lam = np.exp(Lam * np.exp(params[f"{m}.log_step"].astype(np.float64)))
        B_bar = ((lam - 1.0) / Lam)[:, None] * B
    else:
        lam = np.exp(-np.exp(params[f"{m}.nu_log"].astype(np.float64)) + 1j * np.exp(params[f"{m}.theta_log"]))
        B_bar = np.sqrt(1.0 - np.abs(lam) ** 2)[:, None] * B
    C = params[f"{m}.C_re"].astype(np.float64) + 1j * params[f"{m}.C_im"]
    D = params[f"{m}.D"].astype(np.float64) if spec.D else np.zeros(spec.H)
    return lam, B_bar, C, D


def _act(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "none":
        return x
    raise ValueError(f"reference_logits knows relu, tanh and none, not {kind!r}")


def reference_logits(spec: SharedSpec, x: np.ndarray, params: dict | None = None) -> np.ndarray:
    """The network in complex float64 numpy over x [batch, T, F] -> logits [batch, T, n_out]."""
    params = shared_parameters(spec) if params is None else params
    layers = [discrete_layer(spec, params, k) for k in range(spec.n_layers)]
    states = [np.zeros((x.shape[0], spec.P), np.complex128) for _ in layers]
    out = []
    for t in range(x.shape[1]):
        u = x[:, t].astype(np.float64) @ params["encoder.weight"].T.astype(np.float64) + params["encoder.bias"]
        for k, (lam, B_bar, C, D) in enumerate(layers):
            states[k] = lam * states[k] + u @ B_bar.T
            z = _act(spec.activation, np.real(states[k] @ C.T) + D * u)
            u = u + z if spec.residual else z
        out.append(u @ params["decoder.weight"].T.astype(np.float64) + params["decoder.bias"])
    return np.stack(out, axis=1)


def state_shapes(spec: SharedSpec) -> list[tuple[str, list]]:
    """(name, shape) of every state input (outputs: name + "_out")."""
    batch = 1 if spec.fixed_batch else "batch"
    if spec.layout == "split":
        return [(f"s{k}_{part}", [batch, spec.P]) for k in range(spec.n_layers) for part in ("re", "im")]
    shape = [batch, spec.P, 2] if spec.layout == "last" else [2, batch, spec.P]
    return [(f"state{k}", shape) for k in range(spec.n_layers)]


def _lambda_and_input(writer: _GraphWriter, spec: SharedSpec, params: dict, layer: int) -> tuple[str, ...]:
    """Names of (lam_re, lam_im [P], B_re^T, B_im^T [H, P]) as the step reads them."""
    op, const, init = writer.op, writer.constant, writer.initializer
    m, scope = f"layers.{layer}.{spec.family}", f"/layers.{layer}/{spec.family}"
    if spec.family == "lru" and spec.parametrisation == "graph":
        nu, theta = init(f"{m}.nu_log", params[f"{m}.nu_log"]), init(f"{m}.theta_log", params[f"{m}.theta_log"])
        modulus = op(scope, "Exp", op(scope, "Neg", op(scope, "Exp", nu)))
        phase = op(scope, "Exp", theta)
        lam_re, lam_im = (
            op(scope, "Mul", modulus, op(scope, "Cos", phase)),
            op(scope, "Mul", modulus, op(scope, "Sin", phase)),
        )
        gamma = op(scope, "Sqrt", op(scope, "Sub", const(scope, 1.0), op(scope, "Mul", modulus, modulus)))
        gamma_col = op(scope, "Unsqueeze", gamma, const(scope, [-1], np.int64))
        b = [
            op(
                scope,
                "Transpose",
                op(scope, "Mul", init(f"{m}.B_{part}", params[f"{m}.B_{part}"]), gamma_col),
                perm=[1, 0],
            )
            for part in ("re", "im")
        ]
        return lam_re, lam_im, *b
    lam, B_bar, _, _ = discrete_layer(spec, params, layer)
    return (
        init(f"{m}.lam_re", lam.real.astype(np.float32)),
        init(f"{m}.lam_im", lam.imag.astype(np.float32)),
        init(f"{m}.B_bar_re_t", np.ascontiguousarray(B_bar.real.T).astype(np.float32)),
        init(f"{m}.B_bar_im_t", np.ascontiguousarray(B_bar.imag.T).astype(np.float32)),
    )


def _shared_step(writer: _GraphWriter, spec: SharedSpec, params: dict, layer: int, u: str) -> str:
    op, const, init = writer.op, writer.constant, writer.initializer
    m, scope = f"layers.{layer}.{spec.family}", f"/layers.{layer}/{spec.family}"
    lam_re, lam_im, b_re, b_im = _lambda_and_input(writer, spec, params, layer)
    if spec.layout == "split":
        s_re, s_im = f"s{layer}_re", f"s{layer}_im"
    else:
        axis = 2 if spec.layout == "last" else 0
        s_re, s_im = (op(scope, "Gather", f"state{layer}", const(scope, k, np.int64), axis=axis) for k in (0, 1))
    if spec.stacked_input:
        bu_re, bu_im = op(
            scope, "Split", op(scope, "MatMul", u, op(scope, "Concat", b_re, b_im, axis=1)), axis=-1, n_outputs=2
        )
    else:
        bu_re, bu_im = op(scope, "MatMul", u, b_re), op(scope, "MatMul", u, b_im)
    new_re = op(scope, "Add", op(scope, "Sub", op(scope, "Mul", lam_re, s_re), op(scope, "Mul", lam_im, s_im)), bu_re)
    new_im = op(scope, "Add", op(scope, "Add", op(scope, "Mul", lam_re, s_im), op(scope, "Mul", lam_im, s_re)), bu_im)
    if spec.layout == "split":
        op(scope, "Identity", new_re, output_name=f"s{layer}_re_out")
        op(scope, "Identity", new_im, output_name=f"s{layer}_im_out")
    else:
        axis = -1 if spec.layout == "last" else 0
        parts = [op(scope, "Unsqueeze", t, const(scope, [axis], np.int64)) for t in (new_re, new_im)]
        op(scope, "Concat", *parts, axis=axis, output_name=f"state{layer}_out")
    c_re = init(f"{m}.C_re_t", np.ascontiguousarray(params[f"{m}.C_re"].T))
    c_im = init(f"{m}.C_im_t", np.ascontiguousarray(params[f"{m}.C_im"].T))
    y = op(scope, "Sub", op(scope, "MatMul", new_re, c_re), op(scope, "MatMul", new_im, c_im))
    if spec.D:
        y = op(scope, "Add", y, op(scope, "Mul", u, init(f"{m}.D", params[f"{m}.D"])))
    return y


def build_shared_model(spec: SharedSpec, params: dict | None = None) -> onnx.ModelProto:
    """The step-form ONNX model of `spec` (checked with onnx.checker, full_check)."""
    params = shared_parameters(spec) if params is None else params
    writer = _GraphWriter()
    u = _linear(writer, params, "encoder", "x", "gemm")
    for layer in range(spec.n_layers):
        z = _activation(writer, f"/layers.{layer}/act", spec.activation, _shared_step(writer, spec, params, layer, u))
        u = writer.op(f"/layers.{layer}", "Add", u, z) if spec.residual else z
    _linear(writer, params, "decoder", u, "gemm", output_name="logits")
    batch = 1 if spec.fixed_batch else "batch"
    value = helper.make_tensor_value_info
    states = state_shapes(spec)
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


def build_dense_a_model(H: int = 3, P: int = 3, seed: int = 0) -> onnx.ModelProto:
    """Not diagonal: x' = A x + B u with a dense real A [P, P] (state [batch, P]), y = C x'. Refused."""
    rng = np.random.default_rng(seed)
    writer = _GraphWriter()
    op, init = writer.op, writer.initializer
    A = rng.standard_normal((P, P)) * 0.3
    new = op(
        "/ssm",
        "Add",
        op("/ssm", "MatMul", "s0", init("A_t", A.T.astype(np.float32))),
        op("/ssm", "MatMul", "x", init("B_t", rng.standard_normal((H, P)).astype(np.float32))),
    )
    op("/ssm", "Identity", new, output_name="s0_out")
    op("/ssm", "MatMul", new, init("C_t", rng.standard_normal((P, H)).astype(np.float32)), output_name="y")
    value = helper.make_tensor_value_info
    return writer.model(
        [value("x", TensorProto.FLOAT, ["batch", H]), value("s0", TensorProto.FLOAT, ["batch", P])],
        [value("y", TensorProto.FLOAT, ["batch", H]), value("s0_out", TensorProto.FLOAT, ["batch", P])],
    )
