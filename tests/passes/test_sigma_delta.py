"""sigma-delta turns chosen neuron groups into senders of changes; at threshold 0
no value changes, above it the cost is bounded and the wire gets quieter."""

from __future__ import annotations

import numpy as np
import pytest

from ssmc.errors import SsmcError
from ssmc.ir import parse_graph, print_graph
from ssmc.passes import DEFAULT_PIPELINE, parse_pipeline, run_pipeline
from ssmc.passes.base import with_data
from ssmc.runtime.numpy_engine import run_numpy
from tests.builders.onnx_models import build_step_model, random_spec
from tests.passes.test_ssm_passes import import_onnx_model

TINY = """\
ssmc.graph @t
%x = input() {size = 1} : [1]
%src = neurons(%x) {frac = 4, kind = "source", msg_bits = 10, size = 1} : [1]
%s1 = synapses(%src) {delay = 1, weight_bits = 8, weight_exp = 0} : [2]
  weight = i32[2,1] [64, -64]
%act = neurons(%s1) {depth = 1, frac = 4, kind = "relu", msg_bits = 10, size = 2} : [2]
%s2 = synapses(%act) {delay = 1, weight_bits = 8, weight_exp = 0} : [1]
  weight = i32[1,2] [2, 2]
%sum = neurons(%s2) {depth = 2, frac = 4, kind = "integrator", msg_bits = 10, size = 1} : [1]
%y = output(%sum) : [1]
"""


def _run(text_or_graph, pipeline):
    g = parse_graph(text_or_graph) if isinstance(text_or_graph, str) else text_or_graph
    return run_pipeline(g, parse_pipeline(pipeline))


def test_threshold_is_a_fraction_of_full_scale_and_output_groups_stay_dense():
    g, records = _run(TINY, "sigma-delta{threshold=0.01}")
    # 0.01 * 2**9 = 5.12 -> 5 LSBs on the relu group; the integrator is read by the host, the source not chosen
    assert print_graph(g) == TINY.replace("{depth = 1, frac = 4, kind", "{delta = 5, depth = 1, frac = 4, kind")
    assert records[0].changed and "%act 5" in records[0].notes[0]


def test_kinds_choose_the_groups_and_unknown_kinds_are_refused():
    g, _ = _run(TINY, "sigma-delta{kinds=source+relu}")
    assert g.op("src").attrs["delta"] == 1 and g.op("act").attrs["delta"] == 1
    with pytest.raises(SsmcError, match="unknown neuron kind.*lif"):
        _run(TINY, "sigma-delta{kinds=lif}")


@pytest.mark.parametrize("threshold", [-0.1, 1.0])
def test_thresholds_outside_a_fraction_are_refused(threshold):
    with pytest.raises(SsmcError, match=r"threshold = .* must be in \[0, 1\)"):
        _run(TINY, f"sigma-delta{{threshold={threshold}}}")


def test_it_needs_neuron_groups():
    with pytest.raises(SsmcError, match="after assign-bitwidths"):
        _run("ssmc.graph @e\n%x = input() {size = 1} : [1]\n%y = output(%x) : [1]\n", "sigma-delta")


@pytest.mark.parametrize("seed", range(3))
def test_threshold_zero_changes_no_output(seed):
    spec = random_spec(seed, activation="relu", glu=False, norm=False)
    graph, _, _ = import_onnx_model(build_step_model(spec))
    x = np.random.default_rng(seed).normal(size=(6, 20, spec.in_features))
    dense, _ = run_pipeline(graph.copy(), with_data(parse_pipeline(DEFAULT_PIPELINE), calibration=x))
    sparse, _ = run_pipeline(graph.copy(), with_data(parse_pipeline(DEFAULT_PIPELINE + ",sigma-delta"), calibration=x))
    a, b = run_numpy(dense, x), run_numpy(sparse, x)
    np.testing.assert_array_equal(a.raw["y"], b.raw["y"])
    # (not every group gets sparser: a ReLU falling to 0 sends a change where dense sends a zero)


def test_a_larger_threshold_trades_accuracy_for_silence_boundedly():
    spec = random_spec(1, activation="relu", glu=False, norm=False)
    graph, _, _ = import_onnx_model(build_step_model(spec))
    x = np.random.default_rng(1).normal(size=(6, 20, spec.in_features))
    runs = {}
    for t in (0.0, 0.001, 0.01):
        g, _ = run_pipeline(
            graph.copy(), with_data(parse_pipeline(DEFAULT_PIPELINE + f",sigma-delta{{threshold={t}}}"), calibration=x)
        )
        runs[t] = run_numpy(g, x)
    quiet = [np.mean(list(r.sparsity.values())) for r in runs.values()]
    assert quiet[0] < quiet[1] < quiet[2]
    scale = np.abs(runs[0.0].outputs["y"]).max()
    assert np.abs(runs[0.01].outputs["y"] - runs[0.0].outputs["y"]).max() < 0.5 * scale
