"""The contract's helpers (ssmc/ir/fixed_point.py) are the definitions of docs/fixed_point.md.

The numpy engine and the reference implementation both use them, so comparing
the two cannot catch a wrong helper: here each is checked against its
definition in exact rational arithmetic, on Python ints and on int64 arrays.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ssmc.ir.fixed_point import rshr, sat, shr

VALUES = [v for v in range(-70, 71)] + [-(1 << 40) - 3, (1 << 40) + 5, -(1 << 61) + 7, (1 << 61) - 9]


@pytest.mark.parametrize("s", [-3, 0, 1, 2, 5, 13])
def test_shr_floors_v_over_two_to_the_s(s):
    want = [math.floor(Fraction(v) / Fraction(2) ** s) if s >= 0 else v * 2**-s for v in VALUES if abs(v) < 1 << 58]
    have = [v for v in VALUES if abs(v) < 1 << 58]
    assert [shr(v, s) for v in have] == want
    assert shr(np.array(have, np.int64), s).tolist() == want


@pytest.mark.parametrize("s", [0, 1, 2, 5, 13])
def test_rshr_rounds_to_nearest_with_ties_up(s):
    want = [math.floor(Fraction(v) / Fraction(2) ** s + Fraction(1, 2)) for v in VALUES]
    assert [rshr(v, s) for v in VALUES] == want
    assert rshr(np.array(VALUES, np.int64), s).tolist() == want


def test_rshr_refuses_a_left_shift():
    with pytest.raises(ValueError, match="shift >= 0"):
        rshr(5, -1)


@pytest.mark.parametrize("bits", [1, 2, 8, 24, 32])
def test_sat_clips_into_the_signed_range(bits):
    lo, hi = -(Fraction(2) ** (bits - 1)), Fraction(2) ** (bits - 1) - 1
    want = [int(min(max(Fraction(v), lo), hi)) for v in VALUES]
    assert [int(sat(v, bits)) for v in VALUES] == want
    assert sat(np.array(VALUES, np.int64), bits).tolist() == want
