"""CP-SAT's objective and its hint search: hops are counted per destination core (as the hop-weighted traffic
counts them), and the move search only ever lowers that objective while keeping every capacity."""

import numpy as np
import pytest

from ssmc.mapping import solvers
from ssmc.mapping.blocks import RESOURCES, Blocks, make_blocks
from ssmc.mapping.mapper import compact_router_distances, limits_of
from ssmc.mapping.netlist import build_netlist
from ssmc.targets import load_target
from tests.builders.neuro_models import s4d_stack


def star(w=2.0):
    """Block 0 sends to blocks 1 and 2 (one hyperedge, `w` messages per step)."""
    use = np.ones((3, len(RESOURCES)))
    return Blocks(
        np.arange(3),
        use,
        [(0,), (1,), (1,)],
        np.zeros(3, np.int64),
        np.array([[0, 1], [0, 2]]),
        np.array([w, w]),
        [(0, np.array([1, 2]), w)],
    )


def test_two_cores_on_one_far_router_cost_two_messages_and_two_hops_each_way():
    # source on core 0 (router 0), destinations on cores 4 and 5 (both router 1, one hop away)
    assert solvers.cut_weight(star(2.0), np.array([0, 4, 5])) == pytest.approx(2.0 * (2 + 2))


def test_destinations_sharing_the_source_core_or_router_cost_no_hops():
    assert solvers.cut_weight(star(2.0), np.array([0, 0, 0])) == 0.0
    assert solvers.cut_weight(star(2.0), np.array([0, 1, 2])) == pytest.approx(2.0 * 2)  # same router: messages
    assert solvers.cut_weight(star(2.0), np.array([0, 1, 1])) == pytest.approx(2.0 * 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moves_never_raise_the_objective_and_keep_every_capacity(seed):
    target = load_target()
    net = build_netlist(s4d_stack(32, 16, 3, rates=(1.0, 0.3, 0.5), seed=seed))
    limits = limits_of(target) / 8  # small cores so the network needs several
    blocks = make_blocks(net, limits, granularity=4)
    start = solvers.greedy(blocks, limits, target.groups)
    n = int(start.max()) + 1
    assert n >= 3
    rd = compact_router_distances(target)
    moved = solvers.improve_by_moves(blocks, start, limits, target.groups, n, target.cores_per_router, rd)
    assert solvers.part_fits(blocks, moved, limits, target.groups)
    assert moved.max() < n
    before = solvers.cut_weight(blocks, start, target.cores_per_router, rd)
    assert solvers.cut_weight(blocks, moved, target.cores_per_router, rd) <= before + 1e-9
