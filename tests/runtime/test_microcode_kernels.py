"""The microcode engine's sparse synapse stage forms, for every row of W with a non-zero, what the
contract says (docs/fixed_point.md): shr(W @ m[t - delay], -weight_exp), of the running sum of W @ m
for a sigma-delta pre group, as the reading `in` sees it after its 32-bit sat.

The reference here is the plain CSR arithmetic in Python ints, one term at a time. The kernel takes
shortcuts decided from the pattern (microcode_engine._fill_spans): a dot product over consecutive
columns (holes filled with weight 0), a broadcast by runs of one-term rows reading one column, a
one-term gather, a general gather; each pattern below says which it reaches.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from ssmc.runtime.microcode_engine import _fill_spans, _Synapses
from ssmc.runtime.microcode_kernels import sparse_synapse_chunk

ACC = 1 << 31


def sat32(v: int) -> int:
    return min(max(v, -ACC), ACC - 1)


def reference(rows, shifts, ring, start, n, b_lo, b_hi, sigma0):
    """[n][batch][rows] of Python ints (None outside [b_lo, b_hi)): each row's sum of weight x message,
    summed over the steps so far where sigma0 is given, shifted right (floor) or left."""
    batch = ring.shape[1]
    sums = [list(s) for s in sigma0] if sigma0 is not None else None
    out = [[[None] * len(rows) for _ in range(batch)] for _ in range(n)]
    for j in range(n):
        m = ring[(start + j) % len(ring)]
        for b in range(b_lo, b_hi):
            for q, terms in enumerate(rows):
                acc = sum(int(w) * int(m[b, c]) for c, w in terms)
                if sums is not None:
                    sums[b][q] += acc
                    acc = sums[b][q]
                shift = int(shifts[q])
                out[j][b][q] = acc >> shift if shift >= 0 else acc << -shift
    return out


def pattern(kind: str, rng, pre: int) -> list[list[tuple[int, int]]]:
    """Rows as (column, weight) lists, columns ascending (as numpy_engine._nonzeros gives them)."""
    weight = lambda: int(rng.choice([-1, 1]) * rng.integers(1, 128))  # noqa: E731
    if kind == "consecutive":  # each row one span of columns (an S4D's C), some with holes
        width = pre // 6
        rows = []
        for q in range(6):
            cols = [c for c in range(q * width, (q + 1) * width) if q % 2 == 0 or c % 3 != 1]
            rows.append([(c, weight()) for c in cols])
        return rows
    if kind == "scattered":  # rows spread over the pre group: gathers
        return [
            [(int(c), weight()) for c in np.sort(rng.choice(pre, size=rng.integers(1, 6), replace=False))]
            for _ in range(7)
        ]
    if kind == "mixed":
        return pattern("consecutive", rng, pre)[:3] + pattern("scattered", rng, pre)[:3]
    if kind == "broadcast":  # one term a row, runs of rows reading one column (an S4D's B)
        return [[(q // 8, weight())] for q in range(40)]
    if kind == "one-term gather":  # one term a row, no runs
        return [[(int(c), weight())] for c in rng.permutation(pre)[:20]]
    raise AssertionError(kind)


def run_kernel(rows, shifts, ring, start, n, b_lo, b_hi, sigma0, col0=3):
    terms = [t for r in rows for t in r]
    s = _Synapses("pre", "post", col0, 1, sigma0 is not None)
    s.indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    s.cols = np.array([c for c, _ in terms], np.int64)
    s.vals = np.array([w for _, w in terms], np.int64)
    s.shifts = np.asarray(shifts, np.int64)
    _fill_spans(s)
    batch = ring.shape[1]
    sigma = np.array(sigma0, np.int64) if sigma0 is not None else np.zeros((0, 0), np.int64)
    ports = np.full((n * batch, col0 + len(rows) + 2), 7, np.int64)  # a neighbour's columns stay 7
    sparse_synapse_chunk(
        ring, start, n, batch, b_lo, b_hi, s.indptr, s.cols, s.vals, s.firsts, s.runs, s.shifts, sigma, ports, col0
    )
    assert (ports[:, :col0] == 7).all() and (ports[:, col0 + len(rows) :] == 7).all()
    return s, ports[:, col0 : col0 + len(rows)].reshape(n, batch, len(rows))


def assert_as_read(got, want, b_lo, b_hi, what):
    """Equal as the reading `in` sees it: after the 32-bit sat (a left shift may leave a larger value
    that sats the same), and equal outright where nothing sats."""
    for j in range(len(want)):
        for b in range(b_lo, b_hi):
            for q, w in enumerate(want[j][b]):
                g = int(got[j, b, q])
                assert sat32(g) == sat32(w), (what, j, b, q, g, w)
                if -ACC <= w < ACC:
                    assert g == w, (what, j, b, q, g, w)


SHIFTS = {"right": (0, 12), "left": (-3, 0), "both": (-3, 12)}


@pytest.mark.parametrize("kind", ["consecutive", "scattered", "mixed", "broadcast", "one-term gather"])
@pytest.mark.parametrize("shifts", ["right", "left", "both", "one"])
@pytest.mark.parametrize("sigma", [False, True])
def test_sparse_synapse_stage_forms_the_csr_sums(kind, shifts, sigma):
    rng = np.random.default_rng(zlib.crc32(f"{kind} {shifts} {sigma}".encode()))
    pre, batch, n, history = 48, 3, 5, 2
    rows = pattern(kind, rng, pre)
    if shifts == "one":
        shift = np.full(len(rows), int(rng.integers(0, 12)))
    else:
        shift = rng.integers(*SHIFTS[shifts], size=len(rows), endpoint=True)
    scale = 1 << 23 if shifts == "right" else 1 << 14  # messages of up to 24 bits; smaller before << (sats)
    ring = rng.integers(-scale, scale, size=(n + history, batch, pre))
    ring[0, 0, :] = scale - 1  # extremes
    ring[1, 1, :] = -scale
    sigma0 = rng.integers(-1000, 1000, size=(batch, len(rows))).tolist() if sigma else None
    start = n + history - 1  # the chunk's first input is the ring's last row: the reads wrap
    s, got = run_kernel(rows, shift, ring, start, n, 1, batch, sigma0)
    want = reference(rows, shift, ring, start, n, 1, batch, sigma0)
    assert_as_read(got, want, 1, batch, kind)
    # the pattern reaches the path it is named after
    if kind == "consecutive":
        assert (s.firsts >= 0).all() and len(s.cols) > sum(len(r) for r in rows)  # spans with filled holes
    if kind == "scattered":
        assert (s.firsts < 0).any()
    if kind == "broadcast":
        assert len(s.runs) == 6  # 5 runs of 8 rows
    if kind == "one-term gather":
        assert len(s.runs) == 0


@pytest.mark.parametrize("shift", [-1, -2, 0, 1])
def test_sums_next_to_the_32_bit_bound_sat_as_the_contract_says(shift):
    # one-term rows (broadcast and gather) and a span row whose shifted sums land on, just inside and just
    # outside the reading `in`'s 32-bit range, and on the kernel's clip before a left shift (2^30 + 1)
    targets = [ACC - 1, ACC, ACC + 1, -ACC, -ACC - 1, (1 << 30) + 1, (1 << 30) + 2, -(1 << 30) - 2, 1 << 40]
    sums = [t >> -shift if shift < 0 else t << shift for t in targets]  # before the shift
    pre = len(sums) + 4
    ring = np.zeros((2, 1, pre), np.int64)
    ring[0, 0, : len(sums)] = sums  # weight 1: the message is the sum
    ring[0, 0, len(sums) :] = [1 << 29, 1 << 29, 1 << 29, 1 << 29]
    for rows in (
        [[(q, 1)] for q in range(len(sums))],  # one-term gather
        [[(q, 1)] for q in range(len(sums)) for _ in range(4)],  # broadcast
        [[(len(sums) + k, 1) for k in range(4)], [(len(sums), 2), (len(sums) + 2, 2)]],  # spans: 2^31 twice
    ):
        shifts = np.full(len(rows), shift)
        _, got = run_kernel(rows, shifts, ring, 0, 1, 0, 1, None)
        assert_as_read(got, reference(rows, shifts, ring, 0, 1, 0, 1, None), 0, 1, shift)
