"""The router order CP-SAT's objective assumes: every router once, neighbours within a band one hop apart, and the first few
routers as compact as the mesh allows (the partition is chosen for the geometry place can actually give it)."""

import itertools

import numpy as np
import pytest

from ssmc.mapping.mapper import band_router_order, compact_router_distances
from ssmc.targets import load_target


@pytest.mark.parametrize("rows, cols", [(4, 8), (1, 5), (2, 2), (3, 4), (5, 3)])
def test_visits_every_router_once_stepping_one_hop_at_a_time_within_a_band(rows, cols):
    order = band_router_order(rows, cols)
    assert sorted(order) == [(r, c) for r in range(rows) for c in range(cols)]
    for (ra, ca), (rb, cb) in zip(order, order[1:]):
        if ra // 2 == rb // 2:  # between bands of two rows the step may be two hops (even column counts)
            assert abs(ra - rb) + abs(ca - cb) == 1
        else:
            assert ca == cb and abs(ra - rb) <= 2


@pytest.mark.parametrize("m", [1, 2, 3, 4, 8])
def test_the_first_2m_routers_of_a_loihi2_chip_form_a_2_by_m_block(m):
    first = band_router_order(4, 8)[: 2 * m]
    rows = {r for r, _ in first}
    cols = {c for _, c in first}
    assert len(rows) == 2 and len(cols) == m


def test_four_routers_are_closer_together_than_along_one_row():
    d = compact_router_distances(load_target())[:4, :4]
    in_a_row = sum(abs(a - b) for a, b in itertools.combinations(range(4), 2))  # routers (0,0)..(0,3): 10 hops
    square = 1 + 1 + 1 + 1 + 2 + 2  # a 2 x 2 square: 8 hops
    assert np.triu(d).sum() == square < in_a_row
    assert np.array_equal(d, d.T) and np.all(np.diag(d) == 0)
