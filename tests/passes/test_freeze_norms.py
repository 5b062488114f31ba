"""freeze-norms replaces each LayerNorm by an affine map with one calibrated gain,
exact for tokens of the calibrated std, and says how far off it is on the others."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ssmc.ir import parse_graph, print_graph, verify
from ssmc.passes import parse_pipeline, run_pipeline
from ssmc.passes.base import with_data
from ssmc.runtime.float_ref import run_float

NORM = """\
ssmc.graph @n
%x = input() {size = 4} : [4]
%norm = norm(%x) {eps = 0.0} : [4]
  bias = f32[4] [0.5, -1, 0, 2]
  weight = f32[4] [1, 2, -0.5, 1]
%y = output(%norm) : [4]
"""

FROZEN = """\
ssmc.graph @n
%x = input() {size = 4} : [4]
%norm = linear(%x) : [4]
  bias = f32[4] [0.5, -1, 0, 2]
  weight = f32[4,4] [0.75, -0.25, -0.25, -0.25, -0.5, 1.5, -0.5, -0.5, 0.125, 0.125, -0.375, 0.125, -0.25, -0.25, -0.25, 0.75]
%y = output(%norm) : [4]
"""


def _freeze(text: str, x: np.ndarray, options: str = ""):
    return run_pipeline(parse_graph(text), with_data(parse_pipeline(f"freeze-norms{options}"), calibration=x))


def test_a_norm_calibrated_on_tokens_of_std_one_becomes_weight_times_centring_plus_bias():
    # every calibration token has std exactly 1 (values +-1 around a varying mean), so the gain is 1
    rng = np.random.default_rng(0)
    signs = np.array([1.0, -1.0, 1.0, -1.0])
    x = rng.normal(size=(3, 5, 1)) + signs * rng.choice([-1.0, 1.0], size=(3, 5, 1))
    g, records = _freeze(NORM, x)
    assert print_graph(g) == FROZEN
    assert any("1/std -> 1 " in n and "rms error 0.0%" in n for n in records[0].notes)


def test_the_gain_is_the_least_squares_fit_and_the_error_is_reported():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 8, 4)) * rng.uniform(0.2, 5.0, size=(16, 8, 1))  # stds spread over 25x
    exact = run_float(parse_graph(NORM), x)["y"]
    g, records = _freeze(NORM, x)
    frozen = run_float(g, x)["y"]
    norm = parse_graph(NORM).op("norm")
    # brute force: no other gain does better in the least-squares sense the pass promises, which is
    # over the normalised values (x - mean) / std, before the per-channel weight and bias
    d_exact, d_frozen = [(v - norm.params["bias"]) / norm.params["weight"] for v in (exact, frozen)]
    c = float(records[0].notes[0].split("1/std -> ")[1].split(" ")[0])

    def err(k):
        return np.sum((d_frozen * k / c - d_exact) ** 2)

    assert all(err(c) <= err(k) * (1 + 1e-3) for k in np.linspace(0.2 * c, 3 * c, 200))
    rel = np.sqrt(err(c) / np.sum(d_exact**2))
    reported = float(records[0].notes[0].split("rms error ")[1].split("%")[0]) / 100
    assert reported == pytest.approx(rel, abs=2e-3)


def test_a_widely_varying_std_is_warned_about(caplog):
    x = np.random.default_rng(2).normal(size=(8, 8, 4)) * np.logspace(-2, 2, 8)[None, :, None]
    with caplog.at_level(logging.WARNING, logger="ssmc.passes"):
        _freeze(NORM, x)
    assert any("varies widely" in r.getMessage() and "%norm" in r.getMessage() for r in caplog.records)


def test_a_frozen_norm_folds_into_the_linears_that_read_it_when_that_saves_synapses():
    text = NORM.replace(
        "%y = output(%norm) : [4]",
        """%lin = linear(%norm) : [1]
  weight = f32[1,4] [1, 1, 1, 1]
%y = output(%lin) : [1]""",
    )
    x = np.random.default_rng(3).normal(size=(4, 6, 4))
    g, _ = _freeze(text, x)
    verify(g)
    assert [op.kind for op in g.ops()] == ["input", "linear", "output"]
    before, _ = _freeze(text, x, "{fold=false}")
    np.testing.assert_allclose(run_float(g, x)["y"], run_float(before, x)["y"], rtol=1e-5, atol=1e-5)


def test_graphs_without_norms_are_left_alone():
    text = "ssmc.graph @e\n%x = input() {size = 2} : [2]\n%y = output(%x) : [2]\n"
    g, records = _freeze(text, np.zeros((1, 2, 2)))
    assert print_graph(g) == text and not records[0].changed
