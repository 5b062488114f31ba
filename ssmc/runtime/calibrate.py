"""Value ranges from calibration data, measured with the float reference.

The fixed-point passes size every neuron group, state and weight from these
ranges: the largest magnitude each op's result (and each stateful op's state)
reaches, per element, over a calibration set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ssmc.data import check_sequences
from ssmc.errors import InputDataError
from ssmc.ir.graph import Graph
from ssmc.runtime.float_ref import FloatEngine, check_run_size

#: Calibration magnitudes above this are refused (as initializers are): squared in norms and summed
#: over tokens, they overflow float64 and every range becomes inf.
MAX_CALIBRATION_VALUE = 1e10


@dataclass
class Ranges:
    """max |value| per element of each op's result, and of each stateful op's state."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    states: dict[str, np.ndarray] = field(default_factory=dict)
    sequences: int = 0
    norm_gain: dict[str, float] = field(default_factory=dict)
    """norm op -> the one gain c closest (least squares over every calibration token) to its
    per-token 1 / sqrt(var + eps): c = E[var / sqrt(var + eps)] / E[var]; what a frozen-statistics
    LayerNorm multiplies by."""
    norm_error: dict[str, float] = field(default_factory=dict)
    """norm op -> rms error of that frozen norm relative to the exact one over the calibration
    tokens: sqrt(E[var (c - 1/std)^2] / E[var / std^2]); 0 when every token has the same std."""

    def value(self, name: str) -> np.ndarray | None:
        return self.values.get(name)

    def state(self, name: str) -> np.ndarray | None:
        return self.states.get(name)


@dataclass(frozen=True)
class Calibration:
    """Calibration sequences that passed `check_calibration`: float64 [n, tokens, features], finite.

    `ssmc.compile` checks the user's data once, early, and hands this to every
    pass that measures ranges, so they do not check it again.
    """

    x: np.ndarray


def check_calibration(x, features: int) -> Calibration:
    """Check calibration sequences (an array, or an already checked Calibration) for a model of `features` inputs."""
    if isinstance(x, Calibration):
        if x.x.shape[2] != features:
            raise InputDataError(f"calibration data has {x.x.shape[2]} feature(s) per token; the model takes "
                                 f"{features}")
        return x
    x = check_sequences(x, features, what="calibration data")
    peak = float(np.abs(x).max())
    if peak > MAX_CALIBRATION_VALUE:
        raise InputDataError(f"calibration data has values up to {peak:.3g}; ranges beyond {MAX_CALIBRATION_VALUE:g} "
                             "overflow the float reference that measures them: scale the data as the model's "
                             "real inputs are")
    return Calibration(x)


def check_calibration_size(graph: Graph, x: Calibration) -> None:
    """The work limit (SSMC_MAX_WORK_BYTES) for measuring ranges over x, as `ssmc run` applies it to a run."""
    check_run_size(graph, x.x.shape, "float reference measuring calibration ranges",
                   fix="calibrate with fewer or shorter sequences")


def measure_ranges(graph: Graph, x) -> Ranges:
    """Run the float reference over x [batch, tokens, features] (array or Calibration); keep per-element maxima."""
    cal = check_calibration(x, graph.inputs()[0].shape[0])
    check_calibration_size(graph, cal)
    x = cal.x
    engine = FloatEngine(graph)
    engine.reset(x.shape[0])
    ranges = Ranges(sequences=x.shape[0])
    norms = {op.name: (op.inputs[0], float(op.attrs.get("eps", 1e-5))) for op in graph.ops_of_kind("norm")}
    norm_sums = {name: [0.0, 0.0, 0.0] for name in norms}  # sums of var / std, var, var / std^2
    for t in range(x.shape[1]):
        values = engine.step_all(x[:, t, :])
        for name, (src, eps) in norms.items():
            var = values[src].var(axis=-1)
            norm_sums[name][0] += float(np.sum(var / np.sqrt(var + eps)))
            norm_sums[name][1] += float(np.sum(var))
            norm_sums[name][2] += float(np.sum(var / (var + eps)))
        for name, v in values.items():
            m = np.abs(v).max(axis=0)
            ranges.values[name] = np.maximum(ranges.values.get(name, m), m)
        for name, s in engine.state.items():
            m = np.abs(s).max(axis=0)
            ranges.states[name] = np.maximum(ranges.states.get(name, m), m)
    for name, (s1, s2, s3) in norm_sums.items():
        c = s1 / s2 if s2 > 0 else 1.0 / np.sqrt(norms[name][1])
        ranges.norm_gain[name] = c
        residual = max(s3 - 2 * c * s1 + c * c * s2, 0.0)  # sum var (c - 1/std)^2
        ranges.norm_error[name] = float(np.sqrt(residual / s3)) if s3 > 0 else 0.0
    return ranges
