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
