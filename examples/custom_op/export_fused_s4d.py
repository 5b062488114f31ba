"""A tiny exporter that writes S4D layers as one fused custom-domain node.

Many teams export their own fused op instead of the step-by-step arithmetic
torch writes. This script builds such a model with `onnx.helper` (no torch):

    x -> Gemm (encoder) -> [ com.example.S4D -> Relu -> Gemm (mix) -> + residual ] x L -> Gemm (decoder)

    com.example.S4D(u, state, log_dt, log_A_real, A_imag, C, D) -> (y, state_next)
        u [batch, H], state and state_next [batch, H, M, 2] (last axis re, im)
        A = -exp(log_A_real) + i A_imag,  dt = exp(log_dt),  B = 1
        state_next = exp(dt A) * state + (exp(dt A) - 1) / A * u
        y = 2 Re(sum_m C[h, m] state_next[h, m]) + D[h] u[h]

onnxruntime cannot run the S4D node (it is not a registered op); ssmc maps it
with the handler in s4d_handler.py:

    python examples/custom_op/export_fused_s4d.py /tmp/fused.onnx
    ssmc compile /tmp/fused.onnx -o /tmp/fused.lava --plugin examples/custom_op/s4d_handler.py
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "com.example"


def random_parameters(
    in_features: int = 2, H: int = 4, M: int = 3, n_layers: int = 2, n_out: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    """Parameters named like a torch state_dict (linear weights [out, in])."""
    rng = np.random.default_rng(seed)
    p = {}

    def linear(module, fan_in, fan_out):
        p[f"{module}.weight"] = rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in)
        p[f"{module}.bias"] = rng.standard_normal(fan_out) / np.sqrt(fan_in)

    linear("encoder", in_features, H)
    for layer in range(n_layers):
        s = f"layers.{layer}.s4d"
        p[f"{s}.log_dt"] = rng.uniform(np.log(0.005), np.log(0.1), H)
        p[f"{s}.log_A_real"] = np.log(0.5) + 0.1 * rng.standard_normal((H, M))
        p[f"{s}.A_imag"] = np.pi * np.arange(M) + 0.1 * rng.standard_normal((H, M))
        p[f"{s}.C"] = rng.standard_normal((H, M, 2)) / np.sqrt(M)
        p[f"{s}.D"] = rng.standard_normal(H)
        linear(f"layers.{layer}.mix", H, H)
    linear("decoder", H, n_out)
    return {k: v.astype(np.float32) for k, v in p.items()}


def build_fused_model(params: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The step-form model of `params` with one com.example.S4D node per layer."""
    n_layers = len({k.split(".")[1] for k in params if k.startswith("layers.")})
    H, M = params["layers.0.s4d.A_imag"].shape
    in_features, n_out = params["encoder.weight"].shape[1], params["decoder.weight"].shape[0]
    nodes, inits = [], [numpy_helper.from_array(v, name=k) for k, v in sorted(params.items())]

    def gemm(module, x, out):
        nodes.append(
            helper.make_node("Gemm", [x, f"{module}.weight", f"{module}.bias"], [out], name=f"/{module}/Gemm", transB=1)
        )
        return out

    u = gemm("encoder", "x", "encoded")
    for layer in range(n_layers):
        s = f"layers.{layer}.s4d"
        nodes.append(
            helper.make_node(
                "S4D",
                [u, f"state{layer}"] + [f"{s}.{k}" for k in ("log_dt", "log_A_real", "A_imag", "C", "D")],
                [f"s4d{layer}_y", f"state{layer}_out"],
                name=f"/layers.{layer}/s4d/S4D",
                domain=DOMAIN,
            )
        )
        nodes.append(helper.make_node("Relu", [f"s4d{layer}_y"], [f"act{layer}"], name=f"/layers.{layer}/Relu"))
        mixed = gemm(f"layers.{layer}.mix", f"act{layer}", f"mix{layer}")
        nodes.append(helper.make_node("Add", [u, mixed], [f"block{layer}"], name=f"/layers.{layer}/Add"))
        u = f"block{layer}"
    gemm("decoder", u, "logits")

    def states(suffix):
        return [
            helper.make_tensor_value_info(f"state{i}{suffix}", TensorProto.FLOAT, ["batch", H, M, 2])
            for i in range(n_layers)
        ]

    graph = helper.make_graph(
        nodes,
        "fused_s4d_step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_features]), *states("")],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out]), *states("_out")],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="examples.custom_op",
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "fused_s4d.onnx"
    onnx.save(build_fused_model(random_parameters()), out)
    print(f"wrote {out}")
