"""freeze-norms: LayerNorm with frozen statistics, an approximation measured, not hidden.

A LayerNorm divides each token by its own standard deviation over the
channels; neurons that only add, multiply by constants and look up tables
cannot divide by a per-token value. This pass keeps the exact part -- the
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
        ranges = measure_ranges(graph, x)
        for op in norms:
            gain = ranges.norm_gain[op.name]
            W, b = frozen_norm_weights(op, gain)
            # same name, same input, same shape: the op changes kind in place and keeps every use
            op.kind, op.attrs = "linear", {}
            op.params = {"weight": W.astype(np.float32), "bias": b.astype(np.float32)}
            err = ranges.norm_error[op.name]
            log.info(f"%{op.name} (layernorm): frozen statistics, 1/std -> {gain:.4g} for every token; "
                     f"rms error {100 * err:.1f}% of the exact norm's output on the calibration tokens")
            if err > self.warn_error:
                log.warning(f"%{op.name} (layernorm): the per-token std varies widely ({100 * err:.0f}% rms "
                            "error when frozen): it may cost accuracy; measure it with `ssmc run --compare-float`, "
                            "or retrain without LayerNorm (or with a norm-free block) for the chip")
            if self.fold:
                fold_into_consumers(graph, graph.op(op.name))
        return graph, True

