"""freeze-norms: LayerNorm with frozen statistics, an approximation measured, not hidden.

Not in the default pipeline: assign-bitwidths realises a LayerNorm on neurons
(mean and variance through synapses and product neurons, 1 / sqrt(var + eps)
from tables; docs/fixed_point.md, "LayerNorm on neurons"), whose error is
quantization only. This pass is the cheaper option, chosen by putting it
before assign-bitwidths (`ssmc.passes.FROZEN_NORMS_PIPELINE`): it costs no
neurons and no latency, but a fixed gain instead of each token's own
1 / std. It keeps the exact part -- the
mean subtraction and the affine weight/bias are linear -- and replaces the
per-token 1 / sqrt(var + eps) by one gain `c`, the least-squares fit over
every calibration token (`c = E[var / sqrt(var + eps)] / E[var]`, without
calibration data: over random N(0, 1) tokens). Each norm becomes

    y = weight * c * (x - mean(x)) + bias          (a `linear`)

and is then folded into the linears that read it when that costs fewer
synapses (fold-linear's cost model). It logs each gain with the rms error the
frozen norm makes on the calibration tokens, and warns above `warn-error`. Changes: every `norm` becomes a
`linear`. Guarantees: the result is exact for tokens whose std equals 1/c;
for others the output is scaled by std * c -- an approximation whose cost
`benchmarks/bitwidth_ablation.py` measures on the example with LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ssmc.ir.graph import Graph, Op
from ssmc.passes.base import Pass, data_field, log
from ssmc.passes.fold_linear import fold_into_consumers
from ssmc.runtime.calibrate import measure_ranges

RANDOM_CALIBRATION = (64, 64)  # sequences, tokens: used only when no calibration data is given


def norm_gain_and_error(graph: Graph, x) -> dict[str, tuple[float, float]]:
    """norm op -> (c, error) over the calibration tokens x [batch, tokens, features].

    c is the one gain closest (least squares over every token) to the per-token
    1 / sqrt(var + eps): c = E[var / sqrt(var + eps)] / E[var]; error is the rms error of
    the frozen norm relative to the exact one, sqrt(E[var (c - 1/std)^2] / E[var / std^2])
    (0 when every token has the same std).
    """
    norms = {op.name: (op.inputs[0], float(op.attrs.get("eps", 1e-5))) for op in graph.ops_of_kind("norm")}
    sums = {name: [0.0, 0.0, 0.0] for name in norms}  # sums of var / std, var, var / std^2

    def observe(values: dict[str, np.ndarray]) -> None:
        for name, (src, eps) in norms.items():
            var = values[src].var(axis=-1)
            sums[name][0] += float(np.sum(var / np.sqrt(var + eps)))
            sums[name][1] += float(np.sum(var))
            sums[name][2] += float(np.sum(var / (var + eps)))

    measure_ranges(graph, x, observe=observe)
    out = {}
    for name, (s1, s2, s3) in sums.items():
        c = s1 / s2 if s2 > 0 else 1.0 / np.sqrt(norms[name][1])
        residual = max(s3 - 2 * c * s1 + c * c * s2, 0.0)  # sum var (c - 1/std)^2
        out[name] = (float(c), float(np.sqrt(residual / s3)) if s3 > 0 else 0.0)
    return out


def frozen_norm_weights(op: Op, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of weight * gain * (x - mean(x)) + bias."""
    H = op.shape[0]
    centre = np.eye(H) - np.full((H, H), 1.0 / H)
    W = op.params["weight"].astype(np.float64)[:, None] * gain * centre
    return W, op.params["bias"].astype(np.float64)


@dataclass(frozen=True)
class FreezeNorms(Pass):
    name: ClassVar[str] = "freeze-norms"
    fold: bool = True
    """Fold each frozen norm into the linears reading it when that costs fewer synapses."""
    warn_error: float = 0.1
    """Warn when a frozen norm's rms error on the calibration tokens exceeds this fraction."""
    calibration: object = data_field("calibration sequences [n, tokens, features]")

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        norms = graph.ops_of_kind("norm")
        if not norms:
            return graph, False
        x = self.calibration
        if x is None:
            n, t = RANDOM_CALIBRATION
            x = np.random.default_rng(0).normal(size=(n, t, graph.inputs()[0].shape[0]))
            log.info("no calibration data: LayerNorm gains fitted on random N(0, 1) tokens; pass --calibrate")
        fitted = norm_gain_and_error(graph, x)
        for op in norms:
            gain, err = fitted[op.name]
            W, b = frozen_norm_weights(op, gain)
            # same name, same input, same shape: the op changes kind in place and keeps every use
            op.kind, op.attrs = "linear", {}
            op.params = {"weight": W.astype(np.float32), "bias": b.astype(np.float32)}
            log.info(
                f"%{op.name} (layernorm): frozen statistics, 1/std -> {gain:.4g} for every token; "
                f"rms error {100 * err:.1f}% of the exact norm's output on the calibration tokens"
            )
            if err > self.warn_error:
                log.warning(
                    f"%{op.name} (layernorm): the per-token std varies widely ({100 * err:.0f}% rms "
                    "error when frozen): it may cost accuracy; measure it with `ssmc run --compare-float`, "
                    "or leave freeze-norms out: the default pipeline realises LayerNorm on neurons"
                )
            if self.fold:
                fold_into_consumers(graph, graph.op(op.name))
        return graph, True
