"""Read an ONNX file into a checked, shape-inferred model, or explain why not.

Every failure here is a `ModelLoadError` (or `ResourceLimitError`) whose
message names the file and the cause in one line: missing, empty, not
protobuf, truncated, failing the ONNX checker, too large to handle, tensor
data that does not match its dims, external data ssmc will not read
(tensor_data.py), or a Loop whose work has no bound.

The file is untrusted: names are made printable before anything shows them,
and nothing that follows (graphsurgeon, onnxruntime) reads a file or runs a
loop that this module has not checked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import onnx
from google.protobuf.message import DecodeError

from ssmc import limits
from ssmc.errors import ModelLoadError, printable
from ssmc.frontend.tensor_data import (
    check_data_lengths,
    element_count,
    iter_tensors,
    load_external_data,
    sparse_tensors,
)

# If/Loop/Scan bodies nested deeper than this are refused: graphsurgeon's folding costs grow exponentially
# with the depth (20 levels of If: 10 s, 30: hours), and no step-form export nests at all.
MAX_SUBGRAPH_DEPTH = 8


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
        raise ModelLoadError(
            f"{name}: {limits.size(size)} is over the {limits.size(max_bytes)} limit "
            "for a model file; ssmc targets models that fit on Loihi 2 chips "
            f"(or raise {limits.ENV['model_file_bytes']})"
        )
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    return load_model_bytes(data, name=name, path=path)


def load_model_bytes(data: bytes, name: str = "<bytes>", path: str = "") -> LoadedModel:
    """Like `load_model`, from the serialized bytes; external data is read from the folder of `path`
    (none without a path)."""
    name = printable(name)
    if not data:
        raise ModelLoadError(f"{name}: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"{name}: not an ONNX model, or truncated (protobuf: {e})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(f"{name}: not an ONNX model, or truncated (no graph nodes found)")
    _check_structure(model, name)
    _make_names_printable(model)
    _check_declared_sizes(model, name)
    external = load_external_data(model, name, os.path.dirname(os.path.abspath(path)) if path else None)
    check_data_lengths(model, name)
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
    _check_loop_work(model, name)
    digest = hashlib.sha256(data)
    for chunk in external:  # the weights are part of the model: another data file is another model
        digest.update(chunk)
    return LoadedModel(model=model, path=path, sha256=digest.hexdigest(), size=len(data))


def _tensor_bytes(dims, data_type: int) -> int:
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 8  # unknown or string types: assume the widest numeric type
    return element_count(dims) * itemsize


def _check_declared_sizes(model: onnx.ModelProto, name: str) -> None:
    """Refuse tensors whose declared dims are too big, before anything reads or builds them.

    Every tensor anywhere (external ones included, before their data is read), and the dense
    size of every sparse tensor (what densifying it would allocate)."""
    lim, total = limits.current(), 0
    for where, t in iter_tensors(model):
        if any(d < 0 for d in t.dims):
            raise ModelLoadError(f"{name}: {where} has negative dims {list(t.dims)}; check the export")
        nbytes = _tensor_bytes(t.dims, t.data_type)
        limits.check("tensor_bytes", nbytes, f"{name}: {where} {list(t.dims)}", limits=lim)
        total += nbytes
    for where, sp in sparse_tensors(model):
        nbytes = _tensor_bytes(sp.dims, sp.values.data_type)
        limits.check("tensor_bytes", nbytes, f"{name}: {where} {list(sp.dims)} (dense)", limits=lim)
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
        limits.check(
            "tensor_bytes",
            _tensor_bytes(dims, tt.elem_type),
            f"{name}: tensor '{vi.name}' {dims}",
            fix="check the shapes the model computes",
            limits=lim,
        )


def _graphs(graph: onnx.GraphProto):
    """The graph and every subgraph in it, at any depth."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _graphs(sub)


def _check_structure(model: onnx.ModelProto, name: str) -> None:
    """Refuse graphs whose node count or subgraph nesting would make loading or folding run for hours."""

    def depth(graph: onnx.GraphProto) -> int:
        return 1 + max(
            (depth(sub) for node in graph.node for a in node.attribute for sub in _graphs_of_attr(a)), default=0
        )

    deepest = max(
        [depth(model.graph)]
        + [depth(g) for f in model.functions for n in f.node for a in n.attribute for g in _graphs_of_attr(a)]
    )
    if deepest - 1 > MAX_SUBGRAPH_DEPTH:
        raise ModelLoadError(
            f"{name}: subgraphs (If/Loop/Scan bodies) nest {deepest - 1} levels deep; ssmc refuses "
            f"more than {MAX_SUBGRAPH_DEPTH} (step-form models have none, see docs/onnx_step_form.md)"
        )
    nodes = sum(len(g.node) for g in _graphs(model.graph)) + sum(len(f.node) for f in model.functions)
    limits.check("nodes", nodes, f"{name}: the graph", fix="ssmc targets models that fit on Loihi 2 chips")


def _graphs_of_attr(a: onnx.AttributeProto):
    return ([a.g] if a.HasField("g") else []) + list(a.graphs)


def _make_names_printable(model: onnx.ModelProto) -> None:
    """Rename every node, value, op type, domain and attribute whose name has control or other
    non-printable characters (an ANSI escape sequence would otherwise reach the terminal through
    `ssmc inspect`, errors and reports). Escaped as `printable` does; a clash gets a suffix."""
    graphs = [g for g in _graphs(model.graph)] + [
        g for f in model.functions for n in f.node for a in n.attribute for g in _graphs_of(a)
    ]
    nodes = [n for g in graphs for n in g.node] + [n for f in model.functions for n in f.node]
    values = []
    for g in graphs:
        values += [v for v in list(g.input) + list(g.output) + list(g.value_info)]
        values += list(g.initializer) + [sp.values for sp in g.sparse_initializer]
        values += [sp.indices for sp in g.sparse_initializer]
    names = {n.name for n in nodes} | {v.name for v in values} | {s for n in nodes for s in (*n.input, *n.output)}
    names |= {s for f in model.functions for s in (*f.input, *f.output)}
    bad = sorted((n for n in names if _unprintable(n)), key=repr)
    strings = [n.op_type for n in nodes] + [n.domain for n in nodes] + [a.name for n in nodes for a in n.attribute]
    if not bad and not any(_unprintable(s) for s in strings):
        return
    taken, new = {n for n in names if not _unprintable(n)}, {}
    for old in bad:
        base, k = printable(old), 1
        candidate = base
        while candidate in taken:
            candidate, k = f"{base}_{k}", k + 1
        taken.add(candidate)
        new[old] = candidate
    for obj in nodes + values:
        obj.name = new.get(obj.name, obj.name)
    for n in nodes:
        n.input[:] = [new.get(s, s) for s in n.input]
        n.output[:] = [new.get(s, s) for s in n.output]
        n.op_type, n.domain = printable(n.op_type), printable(n.domain)
        for a in n.attribute:
            a.name = printable(a.name)
    for f in model.functions:
        f.input[:] = [new.get(s, s) for s in f.input]
        f.output[:] = [new.get(s, s) for s in f.output]
        f.name, f.domain = printable(f.name), printable(f.domain)
    for o in model.opset_import:
        o.domain = printable(o.domain)


def _unprintable(name) -> bool:
    return not isinstance(name, str) or not name.isprintable()  # bytes: protobuf's non-UTF-8 strings


def _graphs_of(a: onnx.AttributeProto):
    for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
        yield from _graphs(sub)


def _check_loop_work(model: onnx.ModelProto, name: str) -> None:
    """Refuse a Loop or Scan whose iterations are unknown or, nested loops multiplied, over the limit.

    Constant folding and probing run the model in onnxruntime, which would run such a loop to the
    end: a 37 KB model with a trip count of 2^62 would never finish. Step-form models have no loops;
    this bounds what a foldable one may cost."""
    lim = limits.current()

    def visit(graph: onnx.GraphProto, consts: dict, shapes: dict, outer: int, where: str) -> None:
        consts = dict(consts)
        shapes = dict(shapes)
        for t in graph.initializer:
            consts[t.name] = t
        for v in list(graph.input) + list(graph.value_info) + list(graph.output):
            if v.type.tensor_type.HasField("shape"):
                shapes[v.name] = [
                    d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim
                ]
        for n in graph.node:
            if n.op_type == "Constant" and n.output:
                a = next((a for a in n.attribute if a.name in ("value", "value_int")), None)
                consts[n.output[0]] = None if a is None else a.t if a.name == "value" else a.i
        for n in graph.node:
            label = f"{where}{n.op_type} node '{n.name or (n.output[0] if n.output else '')}'"
            count = 1
            if n.op_type == "Loop" and n.domain in ("", "ai.onnx"):
                count = _trip_count(n, consts)
                if count is None:
                    raise ModelLoadError(
                        f"{name}: {label} has no constant trip count (input M missing or computed), so ssmc "
                        "cannot bound the work of evaluating it; ssmc maps step-form models, which have no loops "
                        "(see docs/onnx_step_form.md)"
                    )
            if n.op_type == "Scan" and n.domain in ("", "ai.onnx"):
                count = _scan_length(n, shapes)
                if count is None:
                    raise ModelLoadError(
                        f"{name}: {label} scans inputs of unknown length, so ssmc cannot bound the work of "
                        "evaluating it; ssmc maps step-form models, which have no loops (see docs/onnx_step_form.md)"
                    )
            if n.op_type in ("Loop", "Scan") and n.domain in ("", "ai.onnx"):
                inside = f", inside loops that run it {outer:,} times" if outer > 1 else ""
                limits.check(
                    "loop_iterations",
                    outer * count,
                    f"{name}: {label}{inside}",
                    fix="step-form models have no loops (see docs/onnx_step_form.md)",
                    limits=lim,
                )
            for a in n.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    visit(sub, consts, shapes, outer * count, f"{label} > ")

    visit(model.graph, {}, {}, 1, "")


def _trip_count(node: onnx.NodeProto, consts: dict) -> int | None:
    """A Loop's constant trip count M, or None if M is missing or not a constant."""
    if not node.input or not node.input[0] or consts.get(node.input[0]) is None:
        return None
    t = consts[node.input[0]]
    if isinstance(t, int):
        return max(t, 0)
    if element_count(t.dims) != 1 or t.data_location == onnx.TensorProto.EXTERNAL:
        return None
    try:
        return max(int(onnx.numpy_helper.to_array(t).reshape(-1)[0]), 0)
    except (ValueError, TypeError, IndexError):
        return None


def _scan_length(node: onnx.NodeProto, shapes: dict) -> int | None:
    """How many iterations a Scan runs: the length of its first scan input along its scan axis."""
    attrs = {a.name: a for a in node.attribute}
    n_scan = attrs["num_scan_inputs"].i if "num_scan_inputs" in attrs else 0
    if n_scan <= 0 or n_scan > len(node.input):
        return None
    first = node.input[len(node.input) - n_scan]
    axes = list(attrs["scan_input_axes"].ints) if "scan_input_axes" in attrs else []
    shape = shapes.get(first)
    if not shape:
        return None
    axis = axes[0] if axes else 0
    if not -len(shape) <= axis < len(shape):
        return None
    return shape[axis]
