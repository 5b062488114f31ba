"""Comparing a run with a reference: accuracy, float error, and integer identity between engines.

Plain functions over arrays and engine results, so that `ssmc run --compare-*`, `ssmc.api.compare`
and the benchmarks measure the same thing the same way. Predictions are the argmax of the last
token's outputs (with --readout the pool op is in the net, so the last token holds the readout).
The `format_*` functions are the lines `ssmc run` prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssmc.runtime.numpy_engine import EngineResult


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int

    @property
    def fraction(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass(frozen=True)
class OutputComparison:
    """Outputs y against a reference: errors over every value, predictions over sequences."""

    max_abs: float
    scale: float  # the reference's largest magnitude (1.0 when it is all zero)
    relative: float  # max_abs / scale
    mean_abs: float
    argmax_agreement: float  # fraction of sequences whose prediction is the reference's


@dataclass(frozen=True)
class IntegerComparison:
    """A fixed-point engine's result against another's (the numpy engine's): they must be identical."""

    differing_values: int
    total_values: int
    saturation_same: bool
    sparsity_same: bool

    @property
    def identical(self) -> bool:
        return self.differing_values == 0 and self.saturation_same and self.sparsity_same


def predictions(outputs: np.ndarray) -> np.ndarray:
    """The predicted class of each sequence of outputs [batch, tokens, classes]: argmax of the last token."""
    return np.asarray(outputs)[:, -1, :].argmax(axis=-1)


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> Accuracy:
    """How many sequences' predictions (the last token's argmax) equal their integer labels."""
    labels = np.asarray(labels)
    return Accuracy(correct=int((predictions(outputs) == labels).sum()), total=int(len(labels)))


def compare_outputs(y: np.ndarray, ref: np.ndarray) -> OutputComparison:
    """y against ref (same shape [batch, tokens, outputs]): absolute errors, and prediction agreement."""
    y, ref = np.asarray(y, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    err = np.abs(y - ref)
    scale = float(np.abs(ref).max()) or 1.0
    max_abs = float(err.max())
    return OutputComparison(
        max_abs=max_abs,
        scale=scale,
        relative=max_abs / scale,
        mean_abs=float(err.mean()),
        argmax_agreement=float((predictions(y) == predictions(ref)).mean()),
    )


def compare_integers(result: EngineResult, ref_result: EngineResult) -> IntegerComparison:
    """Every output integer, saturation count and sparsity of `result` against `ref_result`."""
    differing = sum(int(np.count_nonzero(ref_result.raw[name] != result.raw[name])) for name in ref_result.raw)
    return IntegerComparison(
        differing_values=differing,
        total_values=sum(int(v.size) for v in ref_result.raw.values()),
        saturation_same=result.saturation == ref_result.saturation,
        sparsity_same=result.sparsity == ref_result.sparsity,
    )


def format_accuracy(acc: Accuracy) -> str:
    return f"{100 * acc.fraction:.2f}% ({acc.correct}/{acc.total})"


def format_float_comparison(cmp: OutputComparison, ref_accuracy: Accuracy | None = None) -> str:
    """`ssmc run --compare-float`'s line(s); the second only with labels (the reference's accuracy)."""
    line = (
        f"vs float reference: max abs error {cmp.max_abs:.3e} ({cmp.relative:.3e} of the output scale "
        f"{cmp.scale:.3g}), mean {cmp.mean_abs:.3e}"
    )
    if ref_accuracy is None:
        return line
    return (
        f"{line}\naccuracy (float): {format_accuracy(ref_accuracy)}; predictions agree on "
        f"{100 * cmp.argmax_agreement:.2f}% of sequences"
    )


def format_onnx_comparison(cmp: OutputComparison, model_name: str) -> str:
    return (
        f"vs onnxruntime on {model_name}: max abs error {cmp.max_abs:.3e} ({cmp.relative:.3e} of the output "
        f"scale {cmp.scale:.3g})"
    )


def format_integer_comparison(cmp: IntegerComparison, reference: str = "numpy") -> str:
    if cmp.identical:
        return (
            f"vs {reference} engine: identical integers ({cmp.total_values} output values), identical "
            f"saturation counts and sparsity"
        )
    return (
        f"vs {reference} engine: MISMATCH: {cmp.differing_values} of {cmp.total_values} output values "
        f"differ; saturation {'same' if cmp.saturation_same else 'differs'}, sparsity "
        f"{'same' if cmp.sparsity_same else 'differs'}"
    )
