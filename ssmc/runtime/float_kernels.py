"""Compiled (numba) kernels of the float reference, bit for bit the numpy step they replace.

`s4d_chunk` runs a per-channel `s4d` op over a chunk of tokens for a batch: per (sequence, channel)
its modes stay in cache for the whole chunk, where the numpy step (ssmc.runtime.float_ref) sweeps
the whole batch's states three times a token. It computes the same floating-point operations in
the same order as that step does on numpy 1.26 with its AVX-512 complex loops:

- a complex product p * q is (fma(p.re, q.re, -(p.im * q.im)), fma(p.re, q.im, p.im * q.re)) with
  the first operand's real part in the fused product (numpy's `x *= A_bar` has x first, `C * x` C);
  `llvm.fmuladd` fuses where the CPU has FMA, as numpy's SIMD loops do, and does not where it has none;
- a product with a real u is (re * u, im * u) (numpy's u + 0j times a complex number, the zero terms
  exact);
- the sum over modes is numpy's pairwise sum (`pairwise_sum`): on a CPU whose numpy loops round
  otherwise, results differ from the numpy step in the last bits only.

Imported only by runs large enough to pay for loading it (ssmc.runtime.float_ref._KERNEL_STATE_STEPS:
importing numba and loading the cached kernel take ~0.65 s of CPU); compiled once per machine and cached
beside this module (numba's `cache=True`: __pycache__, or a user cache directory when that is not
writable). No function here is recursive: numba's cache cannot reload recursive functions.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_BLOCK = 64  # complex values numpy's pairwise sum adds in one block (PW_BLOCKSIZE, 128 doubles)


@intrinsic
def _fmuladd(typingctx, a, b, c):
    """a * b + c, rounded once where the CPU has FMA (llvm.fmuladd), else twice."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(args[0].type, [args[0].type] * 3)
        return builder.call(builder.module.declare_intrinsic("llvm.fmuladd", [args[0].type], fnty), args)

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _block_sum(q, lo, n):
    # numpy's pairwise sum of at most _BLOCK complex values (real lane): 4 accumulators with stride 4
    if n < 4:
        r = -0.0
        for i in range(lo, lo + n):
            r += q[i]
        return r
    r0, r1, r2, r3 = q[lo], q[lo + 1], q[lo + 2], q[lo + 3]
    end = lo + n - n % 4
    for i in range(lo + 4, end, 4):
        r0 += q[i]
        r1 += q[i + 1]
        r2 += q[i + 2]
        r3 += q[i + 3]
    r = (r0 + r1) + (r2 + r3)
    for i in range(end, lo + n):
        r += q[i]
    return r


@numba.njit(cache=True, nogil=True)
def pairwise_sum(q, lo, n):
    """numpy's sum of the n values q[lo:lo + n] as the real parts of complex values: blocks of _BLOCK
    summed by _block_sum, larger spans split at (n - n % 8) // 2 and their halves added (a stack of
    spans, not recursion)."""
    if n <= _BLOCK:
        return _block_sum(q, lo, n)
    depth = 2 * 64
    los, ns = np.empty(depth, np.int64), np.empty(depth, np.int64)
    split, sums = np.zeros(depth, np.bool_), np.empty(depth)
    los[0], ns[0], top, done = lo, n, 1, 0
    while top:
        i = top - 1
        if ns[i] <= _BLOCK:
            sums[done] = _block_sum(q, los[i], ns[i])
            done += 1
            top -= 1
        elif not split[i]:
            split[i] = True
            half = (ns[i] - ns[i] % 8) // 2
            los[top], ns[top], split[top] = los[i], half, False
            los[top + 1], ns[top + 1], split[top + 1] = los[i] + half, ns[i] - half, False
            top += 2
        else:  # both halves summed: the last two sums
            sums[done - 2] = sums[done - 2] + sums[done - 1]
            done -= 1
            top -= 1
    return sums[0]


@numba.njit(cache=True, nogil=True)
def s4d_chunk(state, a_bar, b_bar, c, d, u, y):
    """A per-channel `s4d` op over n tokens: state [batch, H, M] complex128 (updated in place), a_bar,
    b_bar and c [H, M] complex128, d [H], u [batch, n, H] float64 -> y [batch, n, H]:
    x = x * a_bar + b_bar * u_t, y_t = 2 Re(sum_m c x) + d u_t, token by token."""
    batch, n, channels = u.shape
    modes = state.shape[2]
    q = np.empty(modes)
    for s in range(batch):
        for h in range(channels):
            x, a, b, cc = state[s, h], a_bar[h], b_bar[h], c[h]
            for t in range(n):
                ut = u[s, t, h]
                for m in range(modes):
                    xr, xi, ar, ai = x[m].real, x[m].imag, a[m].real, a[m].imag
                    re = _fmuladd(xr, ar, -(xi * ai)) + b[m].real * ut
                    im = _fmuladd(xr, ai, xi * ar) + b[m].imag * ut
                    x[m] = complex(re, im)
                    q[m] = _fmuladd(cc[m].real, re, -(cc[m].imag * im))
                y[s, t, h] = 2.0 * pairwise_sum(q, 0, modes) + d[h] * ut
