"""Compiled (numba) kernels of the numpy engine: the per-step state updates, fused.

The numpy engine runs a stateful group (cpx, integrator) one step at a time,
and in numpy each step was seven or so passes over the group's state (multiply,
round, add the input, find the range, clip, count zeros), each a Python call.
Here a whole chunk of steps is one call and one pass per step: read the state
and the input, write the new state, count what the sat clipped and the zero
states. numba compiles them to machine code; `cache=True` writes the compiled
code beside this module (`__pycache__/`, or numba's user cache directory when
that is not writable), so the compile (a second or two per kernel and argument
types) is paid once per machine, not per process; `nogil=True` lets the
engine's threads run them on every core at once.

Each kernel computes exactly the integers of docs/fixed_point.md
(tests/runtime/test_engine_kernels.py checks them against the plain-Python
reference, extremes included):
- the int64 kernels use int64 arithmetic, which wraps like numpy's (the
  products of 32-bit states and coefficients stay within int64 but for the
  one extreme corner, where numpy wraps too), and `>>` is arithmetic;
- the float64 kernels run where the numpy engine's `_float_group` proved every
  intermediate an integer below 2^53: every product and sum is then exact in
  any order (and with FMA), and floor(v 2^-f + 1/2) is rshr(v, f).
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)
_inline = numba.njit(cache=True, nogil=True, inline="always")  # inlined into its caller: no call per value


@_jit
def cpx_float_steps(state, c_re, c_im, a, m, in_w, in_floor, states, sums, out_w, out_floor, lo, hi, zeros):
    """A float cpx group's steps, one sequence at a time (its state stays in cache over the steps).
    state [batch, size], interleaved (re, im): the state before the first step, updated in place to the
    state after the last; c_re / c_im [size // 2]: the coefficients scaled by 2^-f; lo, hi: the state
    range. The dendritic input of step j, sequence b is a[j * batch + b] [size], or -- a synapse group in
    which pre p feeds posts p k .. p k + k - 1 alone (an S4D layer's B), formed here -- in_w[p, q] *
    m[j * batch + b, p] at post p k + q (floored when in_floor), or 0 when both are None. states [steps,
    batch, size] (or None) receives the state after each step; sums [steps, batch, posts] (or None) the
    outputs of a synapse group in which post p sums pres p k .. p k + k - 1 (an S4D layer's C) from that
    state: the sum of out_w[p, q] state[p k + q] over q (floored when out_floor). zeros [steps] receives
    the zero states of each step. Returns how many values the state sat clipped."""
    batch, size = state.shape
    steps = zeros.shape[0]
    clipped = 0
    zeros[:] = 0
    u = np.zeros(size if m is not None else 0)
    for b in range(batch):
        x = state[b]
        for j in range(steps):
            r = j * batch + b
            if m is not None:
                _broadcast_row(m[r], in_w, in_floor, u)
                n, z = _cpx_row(x, c_re, c_im, u, lo, hi)
            elif a is not None:
                n, z = _cpx_row(x, c_re, c_im, a[r], lo, hi)
            else:
                n, z = _cpx_row(x, c_re, c_im, None, lo, hi)
            clipped += n
            zeros[j] += z
            if states is not None:
                states[j, b] = x
            if sums is not None:
                _channel_sum_row(x, out_w, out_floor, sums[j, b])
    return clipped


@_jit
def _cpx_row(x, c_re, c_im, a, lo, hi):
    """One step of one sequence's cpx state x [size] in place: (values clipped, zero states)."""
    clipped = 0
    nz = 0
    for k in range(x.shape[0] // 2):
        xr = x[2 * k]
        xi = x[2 * k + 1]
        vr = np.floor(c_re[k] * xr - c_im[k] * xi + 0.5)
        vi = np.floor(c_re[k] * xi + c_im[k] * xr + 0.5)
        if a is not None:
            vr += a[2 * k]
            vi += a[2 * k + 1]
        clipped += (vr < lo) + (vr > hi) + (vi < lo) + (vi > hi)
        vr = min(max(vr, lo), hi)
        vi = min(max(vi, lo), hi)
        nz += (vr == 0) + (vi == 0)
        x[2 * k] = vr
        x[2 * k + 1] = vi
    return clipped, nz


@_jit
def _broadcast_row(m, w, floor, out):
    """out[p k + q] = w[p, q] m[p], floored when `floor` (the products are exact: see the module)."""
    k = w.shape[1]
    for p in range(w.shape[0]):
        v = m[p]
        for q in range(k):
            out[p * k + q] = np.floor(v * w[p, q]) if floor else v * w[p, q]


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _channel_sum_row(x, w, floor, out):
    """out[p] = sum_q w[p, q] x[p k + q], floored when `floor`. Every partial sum is an exact integer
    (scaled by a power of two; see the module), so summing in any order (reassoc: SIMD lanes) is exact."""
    k = w.shape[1]
    for p in range(w.shape[0]):
        acc = 0.0
        for q in range(k):
            acc += w[p, q] * x[p * k + q]
        out[p] = np.floor(acc) if floor else acc


@_inline
def _sat(v, lo, hi):
    """(v clipped to [lo, hi], 1 if the clip changed it else 0): the state sat and its count."""
    if v < lo:
        return lo, 1
    if v > hi:
        return hi, 1
    return v, 0


@_jit
def cpx_int_steps(state, c_re, c_im, f, a, states, lo, hi, zeros):
    """An int64 cpx group's steps (c_re, c_im unscaled, f = coef_bits - 1): x' = sat(rshr(c x, f) + a), with
    rshr(v, f) = (v + 2^(f-1)) >> f; the arguments as cpx_float_steps (states not None)."""
    batch, size = state.shape
    steps = zeros.shape[0]
    half = (np.int64(1) << (f - 1)) if f > 0 else np.int64(0)
    clipped = 0
    zeros[:] = 0
    for b in range(batch):
        x = state[b]
        for j in range(steps):
            nz = 0
            for i in range(0, size, 2):
                xr = x[i]
                xi = x[i + 1]
                k = i // 2
                vr = (c_re[k] * xr - c_im[k] * xi + half) >> f
                vi = (c_re[k] * xi + c_im[k] * xr + half) >> f
                if a is not None:
                    vr += a[j * batch + b, i]
                    vi += a[j * batch + b, i + 1]
                vr, cr = _sat(vr, lo, hi)
                vi, ci = _sat(vi, lo, hi)
                clipped += cr + ci
                nz += (vr == 0) + (vi == 0)
                x[i] = vr
                x[i + 1] = vi
                states[j, b, i] = vr
                states[j, b, i + 1] = vi
            zeros[j] += nz
    return clipped


@_jit
def integrator_steps(state, a, states, lo, hi, zeros):
    """An integrator group's steps, s' = sat(s + a, state_bits), on int64 or exact float64; the arguments
    as cpx_float_steps (states not None)."""
    batch, size = state.shape
    steps = zeros.shape[0]
    clipped = 0
    zeros[:] = 0
    for b in range(batch):
        x = state[b]
        for j in range(steps):
            nz = 0
            for i in range(size):
                v = x[i]
                if a is not None:
                    v += a[j * batch + b, i]
                v, c = _sat(v, lo, hi)
                clipped += c
                nz += v == 0
                x[i] = v
                states[j, b, i] = v
            zeros[j] += nz
    return clipped
