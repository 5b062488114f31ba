"""State-space math shared by the frontend, the passes and the engines."""

from __future__ import annotations

import numpy as np


def zoh_discretize(log_dt: np.ndarray, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-order-hold discretization of a diagonal SSM, as in the S4D reference.

    log_dt [H], A and B [H, M] complex -> (A_bar, B_bar) [H, M] complex128:
    A_bar = exp(dt A), B_bar = (A_bar - 1) / A * B.
    """
    dt = np.exp(np.asarray(log_dt, dtype=np.float64))[:, None]
    A = np.asarray(A, dtype=np.complex128)
    A_bar = np.exp(dt * A)
    B_bar = (A_bar - 1.0) / A * np.asarray(B, dtype=np.complex128)
    return A_bar, B_bar


def discrete_params(op) -> tuple[np.ndarray, np.ndarray]:
    """(A_bar, B_bar) of an `s4d` op in either form, complex128."""
    if op.attrs["form"] == "discrete":
        return op.params["A_bar"].astype(np.complex128), op.params["B_bar"].astype(np.complex128)
    return zoh_discretize(op.params["log_dt"], op.params["A"], op.params["B"])
