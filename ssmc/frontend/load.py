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

from ssmc import limits
from ssmc.errors import ModelLoadError

# Models far beyond paper size (~275k parameters) are refused before parsing,
# so a hostile or accidental multi-GB file cannot exhaust memory (ssmc.limits).
MAX_MODEL_BYTES = limits.Limits().model_file_bytes


@dataclass(frozen=True)
class LoadedModel:
    model: onnx.ModelProto
    path: str
    sha256: str
    size: int


def load_model(path: str | os.PathLike, max_bytes: int | None = None) -> LoadedModel:
    """Load, check and shape-infer the ONNX model at `path` (`max_bytes`: default from ssmc.limits)."""
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
    if max_bytes is None:
        max_bytes = limits.current().model_file_bytes
    if size > max_bytes:
        raise ModelLoadError(f"{name}: {limits.size(size)} is over the {limits.size(max_bytes)} limit "
                             "for a model file; ssmc targets models that fit on Loihi 2 chips "
                             f"(or raise {limits.ENV['model_file_bytes']})")
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
    _check_declared_sizes(model, name)
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
    _check_inferred_sizes(model, name)
    return LoadedModel(model=model, path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def _tensor_bytes(dims, data_type: int) -> int:
    n = 1
    for d in dims:
        n *= max(int(d), 0)
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 8  # unknown or string types: assume the widest numeric type
    return n * itemsize


def _constant_tensors(graph: onnx.GraphProto):
    """(name, TensorProto) of every initializer and Constant value, subgraphs included."""
    for t in graph.initializer:
        yield t.name, t
    for sp in graph.sparse_initializer:
        yield sp.values.name or "sparse initializer", sp.values
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield f"{node.name or node.op_type}.{a.name}", a.t
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _constant_tensors(sub)


def _check_declared_sizes(model: onnx.ModelProto, name: str) -> None:
    """Refuse tensors whose declared dims are too big, before anything turns them into arrays."""
    lim, total = limits.current(), 0
    for tname, t in _constant_tensors(model.graph):
        nbytes = _tensor_bytes(t.dims, t.data_type)
        limits.check("tensor_bytes", nbytes, f"{name}: initializer '{tname}' {list(t.dims)}", limits=lim)
        total += nbytes
    limits.check("total_bytes", total, f"{name}: all initializers and constants together", limits=lim)


def _check_inferred_sizes(model: onnx.ModelProto, name: str) -> None:
    """Refuse intermediate tensors (e.g. from ConstantOfShape or Expand) that constant folding would build.

    Symbolic dims (the batch) count as 1: these are per-sequence sizes.
    """
    lim = limits.current()
    for vi in list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        limits.check("tensor_bytes", _tensor_bytes(dims, tt.elem_type), f"{name}: tensor '{vi.name}' {dims}",
                     fix="check the shapes the model computes", limits=lim)
