"""Comparing runs: accuracy from the last token, errors against a reference, engines' integers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from ssmc.runtime.compare import (
    Accuracy,
    IntegerComparison,
    OutputComparison,
    accuracy,
    compare_integers,
    compare_outputs,
    format_accuracy,
    format_float_comparison,
    format_integer_comparison,
    format_onnx_comparison,
    predictions,
)
from ssmc.runtime.numpy_engine import EngineResult

# Three sequences of two tokens, three classes. The first token would predict 0, 0, 0; the last predicts 2, 1, 0.
OUTPUTS = np.array(
    [[[9.0, 0.0, 0.0], [0.0, 1.0, 5.0]], [[9.0, 0.0, 0.0], [0.0, 3.0, 2.0]], [[9.0, 0.0, 0.0], [4.0, 0.0, 1.0]]]
)


def test_predictions_are_the_argmax_of_the_last_token():
    assert predictions(OUTPUTS).tolist() == [2, 1, 0]


def test_accuracy_counts_sequences_whose_last_token_predicts_the_label():
    acc = accuracy(OUTPUTS, np.array([2, 0, 0]))
    assert acc == Accuracy(correct=2, total=3)
    assert acc.fraction == pytest.approx(2 / 3)
    assert format_accuracy(acc) == "66.67% (2/3)"


def test_accuracy_of_no_sequences_is_zero_not_a_division_error():
    assert accuracy(np.zeros((0, 1, 3)), np.zeros(0, dtype=int)).fraction == 0.0


def test_output_comparison_against_a_hand_computed_reference():
    ref = OUTPUTS.copy()
    ref[0, 1, 2] = 4.0  # error 1 on sequence 0; its prediction stays 2
    ref[1, 1, 2] = 3.5  # error 1.5 on sequence 1; its prediction becomes 2 (y says 1)
    cmp = compare_outputs(OUTPUTS, ref)
    # reference scale: its largest magnitude, 9; mean over 18 values of (1 + 1.5) = 2.5 / 18
    assert cmp == OutputComparison(
        max_abs=1.5,
        scale=9.0,
        relative=1.5 / 9.0,
        mean_abs=pytest.approx(2.5 / 18),
        argmax_agreement=pytest.approx(2 / 3),
    )


def test_an_all_zero_reference_has_scale_one():
    cmp = compare_outputs(np.full((1, 1, 2), 0.25), np.zeros((1, 1, 2)))
    assert (cmp.scale, cmp.relative) == (1.0, 0.25)


def test_comparison_lines_are_the_ones_ssmc_run_prints():
    cmp = OutputComparison(max_abs=0.0123, scale=4.5, relative=0.0123 / 4.5, mean_abs=0.001, argmax_agreement=0.975)
    assert format_float_comparison(cmp) == (
        "vs float reference: max abs error 1.230e-02 (2.733e-03 of the output scale 4.5), mean 1.000e-03"
    )
    assert format_float_comparison(cmp, Accuracy(39, 40)).splitlines()[1] == (
        "accuracy (float): 97.50% (39/40); predictions agree on 97.50% of sequences"
    )
    assert format_onnx_comparison(cmp, "m.onnx") == (
        "vs onnxruntime on m.onnx: max abs error 1.230e-02 (2.733e-03 of the output scale 4.5)"
    )


def result(raw: dict, saturation=None, sparsity=None) -> EngineResult:
    return EngineResult(
        outputs={},
        raw=raw,
        saturation=saturation or {"g": {"state": 0}},
        sparsity=sparsity or {"g": 0.5},
        trace=None,
        steps=2,
    )


def test_identical_results_are_identical():
    a = result({"y": np.arange(6).reshape(1, 2, 3), "z": np.ones((1, 2, 1), np.int64)})
    b = result({"y": np.arange(6).reshape(1, 2, 3), "z": np.ones((1, 2, 1), np.int64)})
    cmp = compare_integers(a, b)
    assert cmp == IntegerComparison(differing_values=0, total_values=8, saturation_same=True, sparsity_same=True)
    assert cmp.identical
    assert format_integer_comparison(cmp) == (
        "vs numpy engine: identical integers (8 output values), identical saturation counts and sparsity"
    )


def test_two_differing_integers_are_counted_and_the_results_are_not_identical():
    ref = result({"y": np.arange(6).reshape(1, 2, 3)})
    changed = np.arange(6).reshape(1, 2, 3)
    changed[0, 0, 1] += 1
    changed[0, 1, 2] = -7
    cmp = compare_integers(result({"y": changed}), ref)
    assert (cmp.differing_values, cmp.total_values, cmp.identical) == (2, 6, False)
    assert format_integer_comparison(cmp) == (
        "vs numpy engine: MISMATCH: 2 of 6 output values differ; saturation same, sparsity same"
    )


def test_same_integers_with_other_saturation_counts_or_sparsity_are_not_identical():
    raw = {"y": np.zeros((1, 1, 2), np.int64)}
    ref = result(raw)
    saturated = compare_integers(result(raw, saturation={"g": {"state": 1}}), ref)
    sparser = compare_integers(result(raw, sparsity={"g": 0.75}), ref)
    assert (saturated.differing_values, saturated.saturation_same, saturated.identical) == (0, False, False)
    assert (sparser.sparsity_same, sparser.identical) == (False, False)
    assert format_integer_comparison(saturated).endswith(
        "0 of 2 output values differ; saturation differs, sparsity same"
    )
