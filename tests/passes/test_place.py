"""place: moves whole cores only, never raises hop-weighted traffic, is deterministic, and its swap search
computes gains exactly."""

import time

import numpy as np
import pytest

from ssmc.ir.placement import core_assignment
from ssmc.mapping.capacity import target_of
from ssmc.ir.text import print_graph
from ssmc.ir.verify import verify
from ssmc.mapping.layout import Budget, layout, swap_improve, total_cost
from ssmc.mapping.netlist import build_netlist
from ssmc.mapping.usage import traffic
from ssmc.passes.partition import Partition
from ssmc.passes.place import Place
from ssmc.targets import load_target
from tests.builders.neuro_models import s4d_stack
from tests.passes.test_partition import tight_target


def partitioned(tmp_path, chips=1, cores_per_chip=None, **core):
    g, _ = Partition(
        method="greedy", rate_sequences=0, target=tight_target(tmp_path, cores_per_chip, **core), chips=chips
    ).run(s4d_stack(16, 4, 3, rates=(1.0, 0.3, 0.6)))
    return g


def hop_weighted(g):
    t = target_of(g)
    core_of, _ = core_assignment(g, t)
    return traffic(build_netlist(g), core_of, int(core_of.max()) + 1, t).hop_weighted, core_of


@pytest.mark.parametrize("chips,neurons,cores_per_chip", [(1, 40, None), (1, 24, None), (3, 12, 32)])
def test_place_moves_whole_cores_and_never_adds_hops(tmp_path, chips, neurons, cores_per_chip):
    g = partitioned(tmp_path, chips=chips, neurons=neurons, cores_per_chip=cores_per_chip)
    before, core_before = hop_weighted(g)
    placed, _ = Place(time_limit=5.0).run(g)
    verify(placed)
    after, core_after = hop_weighted(placed)
    assert after <= before + 1e-9
    # a bijection between old and new cores: the same neurons share a core before and after
    pairs = set(zip(core_before.tolist(), core_after.tolist()))
    assert len(pairs) == len(set(core_before.tolist())) == len(set(core_after.tolist()))


def test_multi_chip_placement_uses_the_board(tmp_path):
    g = partitioned(tmp_path, chips=3, neurons=12, cores_per_chip=32)
    placed, _ = Place().run(g)
    t = target_of(placed)
    core_of, _ = core_assignment(placed, t)
    assert len(set((core_of // t.cores_per_chip).tolist())) > 1


def test_place_is_deterministic(tmp_path):
    g = partitioned(tmp_path, neurons=24)
    assert print_graph(Place().run(g)[0]) == print_graph(Place().run(g)[0])


def test_placement_does_not_depend_on_the_wall_clock(monkeypatch):
    """The searches stop on counted work: a machine where every clock read is 5 ms later (a heavy load)
    places exactly as an idle one (a wall-clock stop placed one 64x16x3 network differently under load)."""
    rng = np.random.default_rng(3)
    target = load_target(chips=2)
    k = target.cores_per_chip + target.cores_per_chip // 2  # two chips: every stage of the search runs
    t = rng.random((k, k)) * (rng.random((k, k)) < 0.05)
    idle = layout(t, target, time_limit=0.2)
    clock = [time.perf_counter()]

    def slow_clock():
        clock[0] += 0.005
        return clock[0]

    monkeypatch.setattr("ssmc.mapping.layout.time.perf_counter", slow_clock)
    assert np.array_equal(layout(t, target, time_limit=0.2), idle)


@pytest.mark.parametrize("seed", range(5))
def test_swap_search_only_accepts_improvements(seed):
    rng = np.random.default_rng(seed)
    n = 16
    t = rng.random((n, n)) * (rng.random((n, n)) < 0.4)
    t = t + t.T
    np.fill_diagonal(t, 0)
    pts = np.stack(np.divmod(np.arange(n), 4), axis=1)
    dist = np.abs(pts[:, None] - pts[None]).sum(-1).astype(float)
    start = rng.permutation(n)
    best = swap_improve(t, dist, start, Budget(10.0))
    assert sorted(best.tolist()) == list(range(n))
    assert total_cost(t, dist, best) <= total_cost(t, dist, start)
    # a local optimum: no single swap improves it (checked by brute force)
    for a in range(n):
        for b in range(a + 1, n):
            p = best.copy()
            p[a], p[b] = p[b], p[a]
            assert total_cost(t, dist, p) >= total_cost(t, dist, best) - 1e-9


@pytest.mark.parametrize("spec", ["partition{time-limit=%s}", "partition,place{time-limit=%s}"])
@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf"])
def test_a_time_limit_that_is_not_seconds_above_zero_is_refused(spec, seconds):
    # -1 and nan ran no search at all, inf could search forever: both silently
    from ssmc.errors import PassError
    from ssmc.passes import parse_pipeline
    from ssmc.passes.base import run_pipeline

    with pytest.raises(PassError, match=f"time-limit = {float(seconds)}; give a number of seconds above 0"):
        run_pipeline(s4d_stack(4, 2, 1), parse_pipeline(spec % seconds))


def test_a_negative_neuron_cap_is_refused():
    from ssmc.errors import PassError

    with pytest.raises(PassError, match="max-neurons-per-core = -5; give a whole number of at least 1, or 0"):
        Partition(max_neurons_per_core=-5, rate_sequences=0).run(s4d_stack(4, 2, 1))
