"""State-space math shared by the frontend, the passes and the engines.

One `s4d` op covers every diagonal family (docs/ir.md): per-channel modes (S4D, `mixing` "channel",
parameters [H, M]) or P modes shared by all channels (S5, LRU, `mixing` "dense": A [P], B [P, H],
C [H, P]). `shared_form` gives any layer in the dense form, S4D as its block-structured case.
"""

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


def is_dense(op) -> bool:
    """True for a layer whose modes are shared by all channels (S5, LRU: mixing = dense)."""
    return op.attrs.get("mixing", "channel") == "dense"


def discrete_params(op) -> tuple[np.ndarray, np.ndarray]:
    """(A_bar, B_bar) of an `s4d` op in either form, complex128, in the op's own layout."""
    if op.attrs["form"] == "discrete":
        return op.params["A_bar"].astype(np.complex128), op.params["B_bar"].astype(np.complex128)
    if is_dense(op):  # dt per mode: A [P], B [P, H]
        A_bar, scale = zoh_discretize(op.params["log_dt"], op.params["A"][:, None], np.ones((op.params["A"].size, 1)))
        return A_bar[:, 0], scale * op.params["B"].astype(np.complex128)
    return zoh_discretize(op.params["log_dt"], op.params["A"], op.params["B"])


def shared_form(op) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A_bar [P], B_bar [P, H], C [H, P]) complex128 of a discrete or continuous layer; a per-channel (S4D)
    layer becomes its block-structured case, mode p = h * M + m."""
    A_bar, B_bar = discrete_params(op)
    C = op.params["C"].astype(np.complex128)
    if is_dense(op):
        return A_bar, B_bar, C
    H, M = C.shape
    rows = np.arange(H * M)
    B_full = np.zeros((H * M, H), np.complex128)
    B_full[rows, rows // M] = B_bar.reshape(-1)
    C_full = np.zeros((H, H * M), np.complex128)
    C_full[rows // M, rows] = C.reshape(-1)
    return A_bar.reshape(-1), B_full, C_full


def state_size(op) -> int:
    """Complex states of one sequence of an `s4d` op."""
    return int(op.params["C"].size if not is_dense(op) else op.params["C"].shape[1])
