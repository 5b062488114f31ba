"""The Lava engine computes the same integers as the numpy engine, at every step.

Every comparison runs Lava's CPU simulation (Loihi2SimCfg, fixed point) and
the numpy golden model on the same random networks and inputs, and compares
every group's messages, every state and every sigma-delta `last` at every
step, plus the outputs, saturation counts and sparsity the report shows.
"""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

from ssmc.backend_loihi import lava_net
from ssmc.backend_loihi.lava_net import dense_exact, on_lava_dense_grid, plan_lava
from ssmc.errors import SsmcError
from ssmc.ir import Graph, Op
from ssmc.passes.assign_bitwidths import set_depths
from ssmc.runtime.lava_engine import build_network, run_lava
from ssmc.runtime.numpy_engine import run_numpy
from tests.runtime.test_engine_contract import (
    paper_size_network,
    random_extended_network,
    random_network,
    structured_network,
    with_widths,
)


def assert_same_run(graph: Graph, x: np.ndarray) -> None:
    want, got = run_numpy(graph, x, trace=True), run_lava(graph, x, trace=True)
    assert got.steps == want.steps
    assert sorted(got.trace) == sorted(want.trace)
    for key in want.trace:
        np.testing.assert_array_equal(got.trace[key], want.trace[key], err_msg=f"{graph.name}: {key}")
    for name in want.raw:
        np.testing.assert_array_equal(got.raw[name], want.raw[name])
        np.testing.assert_array_equal(got.outputs[name], want.outputs[name])
    assert got.saturation == want.saturation
    assert got.sparsity == want.sparsity


def random_input(graph: Graph, seed: int, batch: int = 2, tokens: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # scales from quiet to far beyond the range, so the sats clip (and are counted) too
    return rng.normal(scale=rng.choice([0.5, 4.0, 400.0]), size=(batch, tokens, graph.inputs()[0].shape[0]))


@pytest.mark.parametrize("seed", range(6))
def test_relay_relu_cpx_integrator_networks_match_numpy(seed):
    g = random_network(seed)
    assert_same_run(g, random_input(g, 300 + seed))


@pytest.mark.parametrize("seed", range(8))
def test_lut_product_and_sigma_delta_networks_match_numpy(seed):
    g = random_extended_network(seed)
    assert_same_run(g, random_input(g, 400 + seed, tokens=7))


@pytest.mark.parametrize("seed, msg_bits, state_bits", [(0, 32, 32), (1, 32, 16), (2, 4, 6), (3, 6, 32)])
def test_extreme_widths_match_numpy(seed, msg_bits, state_bits):
    # 32-bit messages push every sum past what Lava's Dense can hold (own saturating synapses);
    # 4- to 6-bit messages and states saturate nearly everywhere.
    g = with_widths(random_extended_network(seed), msg_bits, state_bits)
    assert_same_run(g, random_input(g, 500 + seed, tokens=5))


@pytest.mark.parametrize("seed", [1, 5])
def test_structured_synapse_groups_match_numpy(seed):
    g = structured_network(seed)
    assert_same_run(g, random_input(g, seed, tokens=4))


def test_paper_size_layers_match_numpy_for_two_tokens():
    # Two layers of the paper's size (H=128, N=64), the second sending sigma-delta messages: ~10-20 s
    # (Lava starts 30 OS processes); all four take about a minute, benchmarks/lava_step.py runs them.
    g = paper_size_network(layers=2)
    plan = plan_lava(g, np.zeros((1, 1, 1)))
    b, c = plan.spec("s0.B"), plan.spec("s1.C")
    assert (b.cls, c.cls) == ("Sparse", "SparseSynapses") and c.kwargs["sigma"]
    # [H*M, H] and [H, H*M] matrices are held as their H*M non-zeros, in the plan and in the processes
    assert b.kwargs["weights"].shape == (8192, 128) and c.kwargs["weights"].shape == (128, 8192)
    assert all(scipy.sparse.issparse(p.kwargs["weights"]) and p.kwargs["weights"].nnz == 8192 for p in (b, c))
    assert_same_run(g, np.random.default_rng(7).normal(scale=0.01, size=(1, 2, 1)))


@pytest.mark.parametrize("seed, wide", [(0, False), (16, False), (2, True)])
def test_sparse_synapse_processes_match_numpy(seed, wide, monkeypatch):
    # these nets are a few neurons wide: let half-empty groups count as sparse, so Lava's Sparse and
    # ssmc's SparseSynapses run next to Dense and Synapses, behind sigma-delta senders and (wide:
    # 32-bit messages, sums Lava's Sparse cannot hold) behind dense ones
    monkeypatch.setattr(lava_net, "SPARSE_DENSITY", 0.75)
    g = structured_network(seed)
    if wide:
        g = with_widths(g, 32, 32)
    else:
        delta = int(np.random.default_rng(seed).choice([0, 0, 1, 40]))
        for op in g.ops_of_kind("neurons"):
            op.attrs["delta"] = 0 if op.attrs["kind"] == "source" else delta
    plan = plan_lava(g, np.zeros((1, 1, g.inputs()[0].shape[0])))
    sparse = [p for p in plan.processes if p.cls in ("Sparse", "SparseSynapses")]
    assert {p.cls for p in sparse} == {"Sparse", "SparseSynapses"}
    assert all(scipy.sparse.issparse(p.kwargs["weights"]) for p in sparse)
    assert_same_run(g, random_input(g, 600 + seed, tokens=5))


def test_the_random_networks_cover_every_kind_and_every_synapse_process():
    # The two tests above are only as good as what they exercise: every neuron kind, Lava's
    # Dense and DelayDense, and the saturating Synapses process for dense and sigma-delta senders.
    classes, sigma = set(), False
    for make, seeds in ((random_network, range(6)), (random_extended_network, range(8))):
        for seed in seeds:
            g = make(seed)
            plan = plan_lava(g, np.zeros((1, 1, g.inputs()[0].shape[0])))
            classes |= {p.cls for p in plan.processes}
            sigma |= any(p.cls == "Synapses" and p.kwargs["sigma"] for p in plan.processes)
            sigma_free = [p for p in plan.processes if p.cls == "Synapses" and not p.kwargs["sigma"]]
            classes |= {"Synapses(dense)"} if sigma_free else set()
    assert classes >= {
        "Source",
        "Relay",
        "Relu",
        "Cpx",
        "Integrator",
        "Lut",
        "Product",
        "Dense",
        "DelayDense",
        "Synapses",
        "Synapses(dense)",
    }
    assert sigma


def one_synapse_network(weights: np.ndarray, weight_exp: int, msg_bits: int = 24, delay: int = 1) -> Graph:
    g = Graph("one")
    g.add(Op("x", "input", attrs={"size": weights.shape[1]}, shape=(weights.shape[1],)))
    g.add(
        Op(
            "src",
            "neurons",
            ("x",),
            attrs={"kind": "source", "size": weights.shape[1], "frac": 0, "msg_bits": msg_bits},
            shape=(weights.shape[1],),
        )
    )
    g.add(
        Op(
            "syn",
            "synapses",
            ("src",),
            attrs={"weight_bits": 8, "weight_exp": weight_exp, "delay": delay},
            params={"weight": weights.astype(np.int32)},
            shape=(weights.shape[0],),
        )
    )
    g.add(
        Op(
            "out",
            "neurons",
            ("syn",),
            attrs={"kind": "relay", "size": weights.shape[0], "frac": 0, "msg_bits": 32},
            shape=(weights.shape[0],),
        )
    )
    g.add(Op("y", "output", ("out",), shape=(weights.shape[0],)))
    set_depths(g)
    g.op("syn").attrs["delay"] = delay  # set_depths chose 1
    g.op("out").attrs["depth"] = delay
    return g


@pytest.mark.parametrize("delay", [1, 3])
def test_lava_dense_is_exact_where_the_sum_passes_2_to_31_before_the_shift(delay):
    # 16 inputs of 2^23 times weight 126: the sum reaches 2^34, past int32, and the shift by -10
    # brings it back inside 32 bits. The plan uses Lava's own Dense / DelayDense for it.
    w = np.full((3, 16), 126)
    w[1] = -128
    g = one_synapse_network(w, -10, delay=delay)
    plan = plan_lava(g, np.zeros((1, 1, 16)))
    assert plan.spec("syn").cls == ("Dense" if delay == 1 else "DelayDense")
    x = np.stack([np.full((4, 16), 2.0**23), np.full((4, 16), -(2.0**23)), np.arange(64.0).reshape(4, 16)])
    assert_same_run(g, x)
    assert np.abs(run_numpy(g, x).raw["y"]).max() > 1 << 23  # the large sums really happened


@pytest.mark.parametrize("weight_exp, expect", [(-10, ""), (-2, "32 bits"), (3, "32 bits")])
def test_dense_exact_refuses_sums_that_can_leave_32_bits(weight_exp, expect):
    assert expect in dense_exact(np.full((3, 16), 126), weight_exp, 24, 1, 0)
    assert dense_exact(np.full((3, 16), 126), weight_exp, 24, 1, 0) or not expect


def test_dense_exact_refuses_weights_off_lavas_grid_and_sigma_delta_senders():
    assert "grid" in dense_exact(np.array([[3, -5]]), 0, 8, 1, 0)  # mixed signs: Lava drops the low bit
    assert "sigma-delta" in dense_exact(np.array([[2, -4]]), 0, 8, 1, 5)
    assert "delay" in dense_exact(np.array([[2, -4]]), 0, 8, 65, 0)
    assert dense_exact(np.array([[3, 5]]), 0, 8, 1, 0) == ""  # one sign: all 8 bits survive


@settings(max_examples=300, deadline=None)
@given(
    w=hnp.arrays(
        np.int64,
        hnp.array_shapes(max_dims=2, max_side=6),
        elements=st.one_of(st.integers(-300, 300), st.integers(-(2**31), 2**31 - 1)),
    )
)
def test_the_grid_check_agrees_with_lavas_own_weight_clipping(w):
    # the check is written out so that compiling needs no Lava; it must say what Lava 0.10 does
    mode = determine_sign_mode(w) if w.size else None
    kept = w.size == 0 or np.array_equal(truncate_weights(clip_weights(w, mode, num_bits=8), mode, 8), w)
    assert on_lava_dense_grid(w) == kept


def test_saturating_synapses_clip_and_count_where_dense_would_wrap():
    w = np.full((2, 16), 126)
    g = one_synapse_network(w, 3)
    assert plan_lava(g, np.zeros((1, 1, 16))).spec("syn").cls == "Synapses"
    x = np.full((1, 3, 16), 2.0**23)
    assert_same_run(g, x)
    assert run_numpy(g, x).saturation["out"]["accumulator"] > 0


def test_a_batch_runs_as_independent_sequences():
    g = random_extended_network(3)
    x = random_input(g, 7, batch=3)
    together = run_lava(g, x).raw["y"]
    np.testing.assert_array_equal(run_lava(g, x[1:2]).raw["y"][0], together[1])


def test_a_timed_run_times_the_start_apart_and_computes_the_same_integers():
    g = random_extended_network(2)
    x = random_input(g, 9, batch=2, tokens=3)
    network, timings = build_network(g, x), {}
    got = network.run(timings=timings)
    assert timings["num_steps"] == network.num_steps - 1 and timings["start"] > 0 and timings["steps"] > 0
    want = run_numpy(g, x)
    np.testing.assert_array_equal(got.raw["y"], want.raw["y"])
    assert got.saturation == want.saturation


def test_lavas_runtime_is_stopped_after_a_run_and_after_a_failure(monkeypatch):
    g = random_network(1)
    run_lava(g, random_input(g, 1, batch=1, tokens=2))
    assert not multiprocessing.active_children()
    import ssmc.runtime.lava_engine as lava_engine

    def broken_collect(*args):
        raise SsmcError("reading failed")

    monkeypatch.setattr(lava_engine, "_collect", broken_collect)
    with pytest.raises(SsmcError, match="reading failed"):
        run_lava(g, random_input(g, 1, batch=1, tokens=2))
    assert not multiprocessing.active_children()


def test_a_kind_or_tensor_the_backend_cannot_run_is_an_ssmc_error_before_lava_starts(monkeypatch):
    g = random_network(0)
    g.op("act").attrs["kind"] = "lif"
    with pytest.raises(SsmcError, match="lif"):
        run_lava(g, np.zeros((1, 2, g.inputs()[0].shape[0])))
    g = random_network(0)
    del g.op("pairs").params["c_re"]
    with pytest.raises(SsmcError, match="c_re"):
        run_lava(g, np.zeros((1, 2, g.inputs()[0].shape[0])))
    # a kind the IR knows but this backend does not (say, a newer one): one line naming both
    import ssmc.backend_loihi.lava_net as lava_net

    monkeypatch.setattr(lava_net, "KIND_CLASS", {k: v for k, v in lava_net.KIND_CLASS.items() if k != "relu"})
    g = random_network(0)
    with pytest.raises(SsmcError) as err:
        run_lava(g, np.zeros((1, 2, g.inputs()[0].shape[0])))
    assert "%act" in str(err.value) and "'relu'" in str(err.value) and "\n" not in str(err.value)
    assert not multiprocessing.active_children()


def test_an_exception_inside_a_process_model_is_reported_not_a_hang(monkeypatch):
    # Lava 0.10 waits forever when a model raises; the models catch it, note the time step,
    # keep the run going, and the host reports which process failed.
    from ssmc.backend_loihi.lava_procs import models

    def broken(self, a):
        raise ValueError("a bug")

    monkeypatch.setattr(models.PyReluModel, "value", broken)  # Lava forks: the models see the patch
    g = random_network(0)
    with pytest.raises(SsmcError, match=r"process act \(Relu\) failed at time step \d+"):
        run_lava(g, random_input(g, 0, batch=1, tokens=3))
    assert not multiprocessing.active_children()


def test_a_group_lava_would_not_run_is_refused():
    # Lava runs the processes connected to the one it starts: a second, separate source
    # component would silently not run, so the plan refuses it.
    g = random_network(0)
    f = g.inputs()[0].shape[0]
    g.add(Op("src2", "neurons", ("x",), attrs={"kind": "source", "size": f, "frac": 4}, shape=(f,)))
    g.add(
        Op(
            "s9",
            "synapses",
            ("src2",),
            attrs={"weight_bits": 8, "delay": 1},
            params={"weight": np.full((2, f), 2, np.int32)},
            shape=(2,),
        )
    )
    g.add(Op("island", "neurons", ("s9",), attrs={"kind": "relay", "size": 2, "frac": 4, "depth": 1}, shape=(2,)))
    g.add(Op("y2", "output", ("island",), shape=(2,)))
    with pytest.raises(SsmcError, match="not connected to the source group"):
        plan_lava(g, np.zeros((1, 2, f)))
