"""Value ranges from calibration data, measured with the float reference.

The fixed-point passes size every neuron group, state and weight from these
ranges: the largest magnitude each op's result (and each stateful op's state)
reaches, per element, over a calibration set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ssmc.data import check_sequences
from ssmc.errors import InputDataError
from ssmc.ir.graph import Graph
from ssmc.runtime.float_ref import FloatEngine, check_run_size


@dataclass
class Ranges:
    """max |value| per element of each op's result, and of each stateful op's state."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    states: dict[str, np.ndarray] = field(default_factory=dict)
    sequences: int = 0
    norms: dict[str, "NormRanges"] = field(default_factory=dict)
    """norm op -> the ranges of its per-token statistics (what a LayerNorm on neurons is sized by)."""

    def value(self, name: str) -> np.ndarray | None:
        return self.values.get(name)

    def state(self, name: str) -> np.ndarray | None:
        return self.states.get(name)


@dataclass
class NormRanges:
    """A LayerNorm's per-token statistics over the calibration tokens (largest |value| unless named min)."""

    mean: float = 0.0  # |mean over the channels|
    centred: float = 0.0  # |x - mean|, any channel
    var_min: float = float("inf")  # the smallest per-token variance
    var_max: float = 0.0
    normed: float = 0.0  # |(x - mean) / sqrt(var + eps)|, any channel (before the affine weight and bias)

    def update(self, x: np.ndarray, eps: float) -> None:
        """Widen by the tokens x [batch, channels]."""
        mu = x.mean(axis=-1, keepdims=True)
        c = x - mu
        var = (c**2).mean(axis=-1)
        self.mean = max(self.mean, float(np.abs(mu).max()))
        self.centred = max(self.centred, float(np.abs(c).max()))
        self.var_min = min(self.var_min, float(var.min()))
        self.var_max = max(self.var_max, float(var.max()))
        self.normed = max(self.normed, float(np.abs(c / np.sqrt(var + eps)[:, None]).max()))


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
            raise InputDataError(
                f"calibration data has {x.x.shape[2]} feature(s) per token; the model takes {features}"
            )
        return x
    return Calibration(check_sequences(x, features, what="calibration data"))  # refuses |x| > MAX_ABS_INPUT


def check_calibration_size(graph: Graph, x: Calibration) -> None:
    """The work limit (SSMC_MAX_WORK_BYTES) for measuring ranges over x, as `ssmc run` applies it to a run."""
    check_run_size(
        graph,
        x.x.shape,
        "float reference measuring calibration ranges",
        fix="calibrate with fewer or shorter sequences",
    )


def measure_ranges(graph: Graph, x, observe: Callable[[dict[str, np.ndarray]], None] | None = None) -> Ranges:
    """Run the float reference over x [batch, tokens, features] (array or Calibration); keep per-element maxima.

    `observe`, if given, sees every token's values (op name -> [batch, ...]) as well, for statistics of
    its own (freeze-norms fits its gains so).
    """
    cal = check_calibration(x, graph.inputs()[0].shape[0])
    check_calibration_size(graph, cal)
    x = cal.x
    engine = FloatEngine(graph)
    engine.reset(x.shape[0])
    ranges = Ranges(sequences=x.shape[0])
    norms = {op.name: (op.inputs[0], float(op.attrs.get("eps", 1e-5))) for op in graph.ops_of_kind("norm")}
    ranges.norms = {name: NormRanges() for name in norms}
    for t in range(x.shape[1]):
        values = engine.step_all(x[:, t, :])
        if observe is not None:
            observe(values)
        for name, (src, eps) in norms.items():
            ranges.norms[name].update(values[src], eps)
        for name, v in values.items():
            m = np.abs(v).max(axis=0)
            ranges.values[name] = np.maximum(ranges.values.get(name, m), m)
        for name, s in engine.state.items():
            m = np.abs(s).max(axis=0)
            ranges.states[name] = np.maximum(ranges.states.get(name, m), m)
    return ranges
