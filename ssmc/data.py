"""Reading user arrays (inputs, labels, calibration) from .npy / .npz files."""

from __future__ import annotations

import os

import numpy as np

from ssmc.errors import InputDataError


def load_sequences(path: str | os.PathLike, what: str = "input") -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y): a .npy array, or an .npz's array 'x' and its optional integer labels 'y'."""
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputDataError(f"{path}: no such {what} file") from None
    except (ValueError, OSError, EOFError) as e:
        raise InputDataError(f"{path}: not a .npy or .npz file ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        if "x" not in data.files:
            raise InputDataError(f"{path}: an .npz {what} needs an array named 'x' (has {data.files})")
        return data["x"], (data["y"] if "y" in data.files else None)
    return data, None


def check_sequences(x, features: int, what: str = "input") -> np.ndarray:
    """x as float64 [batch, tokens, features], or an InputDataError saying what is wrong with it."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise InputDataError(f"{what} must have shape [batch, tokens, {features}] (3 axes), got shape "
                             f"{list(x.shape)}")
    if x.shape[2] != features:
        raise InputDataError(f"{what} must have shape [batch, tokens, {features}]: the model takes {features} "
                             f"feature(s) per token, got shape {list(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputDataError(f"{what} needs at least one sequence and one token, got shape {list(x.shape)}")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputDataError(f"{what} must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise InputDataError(f"{what} contains NaN or infinite values")
    return x
