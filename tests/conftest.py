"""Shared fixtures: paths to the shipped example and a temporary ONNX writer."""

from __future__ import annotations

import pathlib

import onnx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "digits"


@pytest.fixture
def save_onnx(tmp_path):
    """save_onnx(model, name) -> path of the model written into tmp_path."""

    def save(model: onnx.ModelProto, name: str = "model.onnx") -> pathlib.Path:
        path = tmp_path / name
        onnx.save(model, str(path))
        return path

    return save
