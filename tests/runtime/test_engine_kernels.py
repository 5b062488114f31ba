"""The numpy engine's compiled kernels (ssmc/runtime/engine_kernels.py) against the scalar contract.

Each kernel runs a few steps of a few sequences on random integers with the extremes of every width
mixed in; the expected states, clip counts, zero counts and synapse sums come from the reference
implementation (ssmc/runtime/reference.py, Python ints), one sequence and one step at a time.
"""

from __future__ import annotations

import numpy as np
import pytest

from ssmc.ir.fixed_point import ACC_BITS, rshr, sat, shr
from ssmc.runtime import engine_kernels, reference

STEPS, BATCH = 3, 2


def values(rng, bits: int, shape) -> np.ndarray:
    """Random int64 values of the signed `bits` range, about a fifth of them at its two ends."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    v = rng.integers(lo, hi, size=shape, endpoint=True)
    pick = rng.random(shape)
    v[pick < 0.1] = lo
    v[pick > 0.9] = hi
    return v.astype(np.int64)


def scalar_steps(update, state: np.ndarray, inputs: np.ndarray):
    """The reference's states [steps, batch, size] after each step, the clips it counted and the zero states
    of each step, for inputs [steps, batch, size]; update(state, a, counts) is one reference step."""
    counts = reference._Counts()
    states = np.zeros((STEPS, *state.shape), np.int64)
    for b in range(state.shape[0]):
        s = [int(v) for v in state[b]]
        for j in range(STEPS):
            s = update(s, [int(v) for v in inputs[j, b]], counts)
            states[j, b] = s
    return states, counts.n["state"], (states == 0).sum(axis=(1, 2))


@pytest.mark.parametrize("coef_bits, state_bits", [(2, 8), (8, 12), (16, 24), (24, 30), (24, 32)])
def test_the_int64_cpx_kernel_equals_the_scalar_contract(coef_bits, state_bits):
    rng = np.random.default_rng(coef_bits * 100 + state_bits)
    modes = 16
    c_re, c_im = values(rng, coef_bits, modes), values(rng, coef_bits, modes)
    state = values(rng, state_bits, (BATCH, 2 * modes))
    a = values(rng, ACC_BITS, (STEPS, BATCH, 2 * modes))
    c_re[0] = c_im[0] = a[:, :, :2] = 0  # the first mode is zero from the first step on
    want, clipped, zeros = scalar_steps(
        lambda s, v, counts: reference.cpx(s, v, list(c_re), list(c_im), coef_bits, state_bits, counts), state, a
    )
    states, got_zeros = np.empty((STEPS, BATCH, 2 * modes), np.int64), np.empty(STEPS, np.int64)
    lo, hi = -(1 << (state_bits - 1)), (1 << (state_bits - 1)) - 1
    got_clipped = engine_kernels.cpx_int_steps(
        state, c_re, c_im, coef_bits - 1, a.reshape(STEPS * BATCH, -1), states, lo, hi, got_zeros
    )
    np.testing.assert_array_equal(states, want)
    np.testing.assert_array_equal(state, want[-1])  # the state is updated in place to the last step's
    assert (got_clipped, list(got_zeros)) == (clipped, list(zeros))
    assert clipped > 0 and zeros.sum() > 0  # the extremes saturated, and zeros occurred


def test_the_int64_cpx_kernel_wraps_like_numpy_at_the_one_corner_past_int64():
    # With 32-bit coefficients and states, c_re x_im + c_im x_re reaches 2^63 when all four are -2^31:
    # int64 wraps there, in numpy as in the kernel (the contract's Python ints do not; no other sum can).
    # The IR verifier refuses such a group (tests/runtime/test_damaged_nets.py): this pins the kernel alone.
    f, big = 31, -(1 << 31)
    state = np.array([[big, big]], np.int64)
    c = np.array([big], np.int64)
    with np.errstate(over="ignore"):  # numpy int64: the sum wraps to -2^63 before the shift
        want = sat(rshr(np.array([c * state[:, 0] - c * state[:, 1], c * state[:, 1] + c * state[:, 0]]), f), 32)
    states, zeros = np.empty((1, 1, 2), np.int64), np.empty(1, np.int64)
    engine_kernels.cpx_int_steps(state, c, c, f, None, states, -(1 << 31), (1 << 31) - 1, zeros)
    np.testing.assert_array_equal(states[0, 0], want[:, 0])
    assert states[0, 0, 1] == -(1 << 31)  # sat((-2^63 + 2^30) >> 31); without the wrap: 2^31 - 1


@pytest.mark.parametrize("exp_in, exp_out", [(-10, -11), (-3, 0), (0, 2), (1, -7)])
def test_the_float_cpx_kernel_equals_the_scalar_contract_and_forms_its_fused_synapses(exp_in, exp_out):
    # The float kernel's operands are exact integers (the engine proves it, _float_group): coefficients
    # scaled by 2^-f, synapse weights by 2^weight_exp. Its input is a broadcast synapse group's outputs
    # shr(w m, -exp_in) formed in the kernel, and it forms a channel-sum group's shr(sum w x, -exp_out).
    coef_bits, state_bits, pre, k = 16, 24, 3, 8
    rng = np.random.default_rng(exp_in * 100 + exp_out + 2000)
    modes = pre * k // 2
    c_re, c_im = values(rng, coef_bits, modes), values(rng, coef_bits, modes)
    state = values(rng, state_bits, (BATCH, 2 * modes))
    m = values(rng, 16, (STEPS, BATCH, pre))
    w_in, w_out = values(rng, 8, (pre, k)), values(rng, 8, (pre, k))
    a = np.array(
        [
            [
                [shr(int(w_in[p, q]) * int(m[j, b, p]), -exp_in) for p in range(pre) for q in range(k)]
                for b in range(BATCH)
            ]
            for j in range(STEPS)
        ]
    )
    assert np.abs(a).max() < 1 << 31  # what the engine fuses never clips (may_clip is False)
    want, clipped, zeros = scalar_steps(
        lambda s, v, counts: reference.cpx(s, v, list(c_re), list(c_im), coef_bits, state_bits, counts), state, a
    )
    want_sums = np.array(
        [
            [
                [
                    shr(sum(int(w_out[p, q]) * int(want[j, b, p * k + q]) for q in range(k)), -exp_out)
                    for p in range(pre)
                ]
                for b in range(BATCH)
            ]
            for j in range(STEPS)
        ]
    )
    lo, hi = -(1 << (state_bits - 1)), (1 << (state_bits - 1)) - 1
    scale = 2.0 ** -(coef_bits - 1)
    for fused_input in (False, True):
        x = state.astype(np.float64)
        states, sums, got_zeros = (
            np.empty((STEPS, BATCH, 2 * modes)),
            np.empty((STEPS, BATCH, pre)),
            np.empty(STEPS, np.int64),
        )
        got_clipped = engine_kernels.cpx_float_steps(
            x,
            c_re * scale,
            c_im * scale,
            None if fused_input else a.reshape(STEPS * BATCH, -1).astype(np.float64),
            m.reshape(STEPS * BATCH, pre).astype(np.float64) if fused_input else None,
            np.ldexp(w_in.astype(np.float64), exp_in),
            exp_in < 0,
            states,
            sums,
            np.ldexp(w_out.astype(np.float64), exp_out),
            exp_out < 0,
            float(lo),
            float(hi),
            got_zeros,
        )
        np.testing.assert_array_equal(states, want)
        np.testing.assert_array_equal(x, want[-1])
        np.testing.assert_array_equal(sums, want_sums)
        assert (got_clipped, list(got_zeros)) == (clipped, list(zeros))
    assert clipped > 0


def test_the_float_cpx_kernel_without_input_or_outputs_only_keeps_its_state():
    rng = np.random.default_rng(5)
    c_re, c_im, state = values(rng, 12, 4), values(rng, 12, 4), values(rng, 16, (BATCH, 8))
    want, clipped, zeros = scalar_steps(
        lambda s, v, counts: reference.cpx(s, v, list(c_re), list(c_im), 12, 16, counts),
        state,
        np.zeros((STEPS, BATCH, 8), np.int64),
    )
    x, got_zeros = state.astype(np.float64), np.empty(STEPS, np.int64)
    got_clipped = engine_kernels.cpx_float_steps(
        x,
        c_re / 2**11,
        c_im / 2**11,
        None,
        None,
        None,
        False,
        None,
        None,
        None,
        False,
        -(2.0**15),
        2.0**15 - 1,
        got_zeros,
    )
    np.testing.assert_array_equal(x, want[-1])
    assert (got_clipped, list(got_zeros)) == (clipped, list(zeros))


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
@pytest.mark.parametrize("state_bits", [8, 20, 32])
def test_the_integrator_kernel_equals_the_scalar_contract(dtype, state_bits):
    rng = np.random.default_rng(state_bits)
    state = values(rng, state_bits, (BATCH, 5))
    a = values(rng, ACC_BITS, (STEPS, BATCH, 5))
    a[:, :, 0] = 0  # some states stay put, and some zeros happen
    state[:, 0] = 0
    want, clipped, zeros = scalar_steps(lambda s, v, counts: reference.integrator(s, v, state_bits, counts), state, a)
    lo, hi = -(1 << (state_bits - 1)), (1 << (state_bits - 1)) - 1
    x, states, got_zeros = state.astype(dtype), np.empty((STEPS, BATCH, 5), dtype), np.empty(STEPS, np.int64)
    got_clipped = engine_kernels.integrator_steps(
        x, a.reshape(STEPS * BATCH, -1).astype(dtype), states, dtype(lo), dtype(hi), got_zeros
    )
    np.testing.assert_array_equal(states, want)
    assert (got_clipped, list(got_zeros)) == (clipped, list(zeros))
    assert clipped > 0 and zeros.sum() > 0
