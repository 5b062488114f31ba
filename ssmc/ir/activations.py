"""The `activation` op's elementwise functions: IR semantics, shared by the frontend (which
recognises activations by their values on a grid), the float reference and the passes
(which tabulate them for lut groups)."""

from __future__ import annotations

from math import sqrt

import numpy as np
from scipy.special import erf as _erf

from ssmc.errors import IRError


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free form of 1 / (1 + exp(-x))


def activation(fn: str, x: np.ndarray) -> np.ndarray:
    """The elementwise functions of the `activation` op, on the last axis."""
    if fn == "relu":
        return np.maximum(x, 0.0)
    if fn == "gelu":
        return gelu(x)
    if fn == "gelu_tanh":
        return gelu_tanh(x)
    if fn == "sigmoid":
        return sigmoid(x)
    if fn == "tanh":
        return np.tanh(x)
    if fn == "glu":
        half = x.shape[-1] // 2
        return x[..., :half] * sigmoid(x[..., half:])
    raise IRError(f"activation {fn!r} has no float implementation")
