"""Every tensor an ONNX model carries, its declared size, and its data, checked before use.

A model file is untrusted input. Its tensors sit in many places: initializers,
sparse initializers, `Constant` values and any other tensor attribute, lists of
tensors, and all of these again inside `If`/`Loop`/`Scan` bodies and model
functions, at any depth. `iter_tensors` finds them all, so the checks here
apply to every one:

- the data must have exactly the length the dims and data type declare
  (`raw_data` or the typed field such as `float_data`);
- external data (`data_location=EXTERNAL`, as torch's `dynamo=True` export
  writes to `model.onnx.data`) is read by ssmc itself, never by onnx or
  onnxruntime, and only from a regular file inside the model's own folder, at
  an offset and length inside that file that match the declared size, which
  has passed the limits before a byte is read (docs/limits.md).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import onnx
from onnx import AttributeProto, TensorProto

from ssmc.errors import ModelLoadError, printable

# Data types packed several to a byte (raw_data and int32_data both hold the packed bytes).
_BITS = {
    getattr(TensorProto, t): b
    for t, b in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2))
    if hasattr(TensorProto, t)
}
# The typed field that holds each data type when raw_data is not used (onnx.proto3, TensorProto).
_FIELD = {
    TensorProto.FLOAT: "float_data",
    TensorProto.COMPLEX64: "float_data",
    TensorProto.DOUBLE: "double_data",
    TensorProto.COMPLEX128: "double_data",
    TensorProto.INT64: "int64_data",
    TensorProto.UINT32: "uint64_data",
    TensorProto.UINT64: "uint64_data",
    TensorProto.STRING: "string_data",
}
_READ_CHUNK = 1 << 20


def iter_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """(where, tensor) of every TensorProto in the model, subgraphs and functions included.

    `where` names the tensor for a message: its own name, or the node and
    attribute holding it, after the nodes whose subgraphs contain it."""
    yield from _graph_tensors(model.graph, "")
    for f in model.functions:
        for node in f.node:
            yield from _node_tensors(node, f"function '{printable(f.name)}' > ")
    for info in model.training_info:
        yield from _graph_tensors(info.initialization, "training initialization > ")
        yield from _graph_tensors(info.algorithm, "training algorithm > ")


def _graph_tensors(graph: onnx.GraphProto, prefix: str) -> Iterator[tuple[str, TensorProto]]:
    for t in graph.initializer:
        yield f"{prefix}initializer '{printable(t.name)}'", t
    for sp in graph.sparse_initializer:
        label = f"{prefix}sparse initializer '{printable(sp.values.name)}'"
        yield label + " values", sp.values
        yield label + " indices", sp.indices
    for node in graph.node:
        yield from _node_tensors(node, prefix)


def _node_tensors(node: onnx.NodeProto, prefix: str) -> Iterator[tuple[str, TensorProto]]:
    label = (
        f"{prefix}{printable(node.op_type)} node '{printable(node.name or (node.output[0] if node.output else ''))}'"
    )
    for a in node.attribute:
        where = f"{label} attribute '{printable(a.name)}'"
        if a.HasField("t"):
            yield where, a.t
        for i, t in enumerate(a.tensors):
            yield f"{where}[{i}]", t
        sparse = ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors)
        for sp in sparse:
            yield where + " values", sp.values
            yield where + " indices", sp.indices
        subgraphs = ([a.g] if a.HasField("g") or a.type == AttributeProto.GRAPH else []) + list(a.graphs)
        for sub in subgraphs:
            yield from _graph_tensors(sub, f"{where} > ")


def sparse_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.SparseTensorProto]]:
    """(where, sparse tensor) of every sparse initializer and attribute: their dense dims are what folding builds."""

    def graph_sparse(graph, prefix):
        for sp in graph.sparse_initializer:
            yield f"{prefix}sparse initializer '{printable(sp.values.name)}'", sp
        for node in graph.node:
            label = f"{prefix}{printable(node.op_type)} node '{printable(node.name)}'"
            for a in node.attribute:
                where = f"{label} attribute '{printable(a.name)}'"
                if a.HasField("sparse_tensor"):
                    yield where, a.sparse_tensor
                for sp in a.sparse_tensors:
                    yield where, sp
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    yield from graph_sparse(sub, f"{where} > ")

    yield from graph_sparse(model.graph, "")


def element_count(dims) -> int:
    n = 1
    for d in dims:
        n *= max(int(d), 0)
    return n


def data_bytes(dims, data_type: int) -> int | None:
    """Exact bytes of the tensor's raw data, or None for strings and unknown data types."""
    n = element_count(dims)
    if data_type in _BITS:
        return (n * _BITS[data_type] + 7) // 8
    if data_type == TensorProto.STRING:
        return None
    try:
        return n * onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None


def _typed_count(dims, data_type: int) -> int:
    """How many entries the typed field (float_data, int32_data, ...) must have."""
    n = element_count(dims)
    if data_type in _BITS:
        return (n * _BITS[data_type] + 7) // 8
    return 2 * n if data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128) else n


def check_data_lengths(model: onnx.ModelProto, name: str) -> None:
    """Refuse a tensor whose data is longer or shorter than its dims and data type declare."""
    for where, t in iter_tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            continue
        dims = list(t.dims)
        if t.data_type == TensorProto.UNDEFINED or (
            data_bytes(dims, t.data_type) is None and t.data_type != TensorProto.STRING
        ):
            raise ModelLoadError(f"{name}: {where} has an unknown data type ({t.data_type}); check the export")
        if t.HasField("raw_data"):
            expected, got, unit = data_bytes(dims, t.data_type), len(t.raw_data), "bytes of raw_data"
            if t.data_type == TensorProto.STRING:
                raise ModelLoadError(f"{name}: {where} is a string tensor with raw_data, which ONNX does not allow")
        else:
            field = _FIELD.get(t.data_type, "int32_data")
            expected, got, unit = _typed_count(dims, t.data_type), len(getattr(t, field)), f"values in {field}"
        if got != expected:
            raise ModelLoadError(
                f"{name}: {where} declares dims {dims} of "
                f"{TensorProto.DataType.Name(t.data_type)}, which need {expected} {unit}, but has "
                f"{got}: the file is damaged or was written wrongly; re-export the model"
            )


def load_external_data(model: onnx.ModelProto, name: str, folder: str | None) -> list[bytes]:
    """Read every tensor's external data into the model (in place); returns the bytes read, in order.

    `folder` is the model's own folder (None: the model came as bytes, so
    there is no folder and any external data is refused)."""
    chunks = []
    for where, t in iter_tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        fix = (
            "keep the data file in the model's folder, or re-save the model self-contained "
            "(onnx.save(model, path, save_as_external_data=False))"
        )

        def refuse(why: str) -> ModelLoadError:
            return ModelLoadError(
                f"{name}: {where} keeps its data in external file '{printable(location)}', "
                f"which ssmc refuses: {why}; {fix}"
            )

        if folder is None:
            raise refuse("the model was given as bytes, so there is no model folder to read it from")
        if not location:
            raise refuse("no location given")
        if "\0" in location or os.path.isabs(location) or location.startswith("\\"):
            raise refuse("an absolute path; only a file name relative to the model's folder is allowed")
        if ".." in location.replace("\\", "/").split("/"):
            raise refuse("a path with '..'; only files inside the model's folder are allowed")
        nbytes = data_bytes(t.dims, t.data_type)
        if nbytes is None:
            raise refuse(f"external data of type {TensorProto.DataType.Name(t.data_type)} is not supported")
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise refuse(f"offset {info.get('offset')!r} / length {info.get('length')!r} are not integers") from None
        real_folder = os.path.realpath(folder)
        real = os.path.realpath(os.path.join(folder, location))
        if os.path.commonpath([real_folder, real]) != real_folder or real == real_folder:
            raise refuse("it resolves (through a link) to a file outside the model's folder")
        chunks.append(_read_bounded(real, offset, length, nbytes, list(t.dims), refuse))
        t.raw_data = chunks[-1]
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]
    return chunks


def _read_bounded(path: str, offset: int, length: int | None, nbytes: int, dims: list, refuse) -> bytes:
    """Exactly `nbytes` from a regular file at `offset`; never blocks on a FIFO nor reads past the range."""
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: `path` is already resolved
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise refuse("no such file") from None
    except OSError as e:
        raise refuse(f"cannot open it ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse("not a regular file (a directory, FIFO, socket or device)")
        if length is None:
            length = st.st_size - offset
        if length != nbytes:
            raise refuse(f"its length {length} bytes does not match the {nbytes} bytes that dims {dims} declare")
        if offset < 0 or offset + length > st.st_size:
            raise refuse(f"bytes {offset}..{offset + length} lie outside the {st.st_size}-byte file")
        parts, done = [], 0
        while done < length:
            part = os.pread(fd, min(_READ_CHUNK, length - done), offset + done)
            if not part:
                raise refuse(f"the file ended after {offset + done} bytes (it changed while being read)")
            parts.append(part)
            done += len(part)
        return b"".join(parts)
    finally:
        os.close(fd)
