"""Read an ONNX file into a checked, shape-inferred model, or explain why not.

Every failure here is a `ModelLoadError` whose message names the file and the
cause in one line: missing, empty, not protobuf, truncated, failing the ONNX
checker, or too large to handle.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import onnx
from google.protobuf.message import DecodeError

from ssmc.errors import ModelLoadError

# Models far beyond paper size (~275k parameters) are refused before parsing,
# so a hostile or accidental multi-GB file cannot exhaust memory.
MAX_MODEL_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class LoadedModel:
    model: onnx.ModelProto
    path: str
    sha256: str
    size: int


def load_model(path: str | os.PathLike, max_bytes: int = MAX_MODEL_BYTES) -> LoadedModel:
    """Load, check and shape-infer the ONNX model at `path`."""
    path = os.fspath(path)
    name = os.path.basename(path) or path
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file") from None
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read ({e.strerror})") from None
    if os.path.isdir(path):
        raise ModelLoadError(f"{path}: is a directory, expected an .onnx file")
    if size == 0:
        raise ModelLoadError(f"{name}: the file is empty")
    if size > max_bytes:
        raise ModelLoadError(f"{name}: {size / 2**20:.0f} MiB is over the {max_bytes / 2**20:.0f} MiB limit "
                             "for a model file; ssmc targets models that fit on Loihi 2 chips")
    with open(path, "rb") as f:
        data = f.read()
    return load_model_bytes(data, name=name, path=path)


def load_model_bytes(data: bytes, name: str = "<bytes>", path: str = "") -> LoadedModel:
    """Like `load_model`, from the serialized bytes."""
    if not data:
        raise ModelLoadError(f"{name}: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{name}: not an ONNX model, or truncated (protobuf: {e})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(f"{name}: not an ONNX model, or truncated (no graph nodes found)")
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise ModelLoadError(f"{name}: the model keeps its weights in an external data file; "
                             "re-save it self-contained (onnx.save(model, path, save_as_external_data=False))")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{name}: invalid ONNX model ({first})") from None
    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{name}: shape inference failed ({first})") from None
    return LoadedModel(model=model, path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
