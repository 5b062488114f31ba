"""ONNX step-form model -> model-level IR.

The step-form contract (docs/onnx_step_form.md): the first graph input is the
token x [batch, features]; every further input is a recurrent state whose next
value is the graph output at the same position after the first output, which is
the model's output y [batch, outputs].

Conversion: clean the graph with onnx-graphsurgeon (fold constants, drop dead
nodes), recognise each recurrence (S4D layers, running pools) by measurement,
then map the remaining nodes one unit at a time (linears, activations, GLU,
residual adds, LayerNorm, reshapes that keep the per-token shape). A node no
unit claims is an error that names it, its op and what is supported.
Nodes with a registered op handler (handlers.py; e.g. a fused custom-domain
S4D node) are mapped by the handler instead, together with any recurrent
state they produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ssmc import limits
from ssmc.errors import IRError, UnsupportedModelError
from ssmc.frontend.elementwise import ANCHORS, match_activation
from ssmc.frontend.gsutil import GraphIndex, describe
from ssmc.frontend.handlers import DOCS as HANDLER_DOCS
from ssmc.frontend.handlers import OpHandler, apply_handler, find_handler
from ssmc.frontend.recurrence import Recurrence, find_recurrences
from ssmc.frontend.subgraph import opset_of, pin_ir_versions
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import schema
from ssmc.ir.verify import graph_problems

SUPPORTED = (
    "step-form recurrences: S4D layers (diagonal complex state [batch, H, M, 2] or any diagonal layout: "
    "re/im apart, layers packed in one state, any batch axis), "
    "running sums; Gemm; MatMul (+Add) with constant weights; Add of two tensors (residual); "
    "Relu, Gelu, Sigmoid, Tanh, Erf/Tanh/Exp-based GELU and sigmoid patterns; GLU (Split + Sigmoid + Mul); "
    "LayerNormalization over the last axis; Identity, Dropout, Cast and shape ops that keep [batch, C]"
)
PASS_THROUGH = {"Identity", "Dropout", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
FULL_SEQUENCE_OPS = {"DFT", "STFT", "Conv", "ConvTranspose", "Scan", "Loop"}


@dataclass
class Unit:
    """A piece of the ONNX graph that becomes one IR op (or an alias)."""

    kind: str  # IR op kind, or "alias"
    inputs: list[str]  # ONNX tensor names
    output: str  # ONNX tensor name
    nodes: set[int]
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    source: str = ""  # what it came from, for the import report
    notes: list[str] = field(default_factory=list)
    handler: OpHandler | None = None  # kind "handler": who maps `node`
    node: gs.Node | None = None


@dataclass
class ImportReport:
    """What the frontend recognised, for `ssmc inspect` and the compile log."""

    model_name: str
    inputs: list[str]
    states: list[tuple[str, str]]
    layers: list[dict]  # one per IR op: name, kind, shape, source, notes


def _check_contract(ix: GraphIndex, name: str) -> tuple[str, list[tuple[str, str]], str]:
    g = ix.graph
    full_seq = sorted({n.op for n in ix.nodes if n.op in FULL_SEQUENCE_OPS})
    if full_seq:
        raise UnsupportedModelError(
            f"{name}: this is a full-sequence export (it uses {', '.join(full_seq)}): the S4D kernel is baked "
            "into convolution/DFT constants and A, B, C are not in the graph. Export the step form instead: "
            "one token in, the state in, the output and the next state out, e.g. "
            "torch.onnx.export(step_module, (x_t, state0, ...), 'model.onnx', dynamo=False) "
            "(see docs/onnx_step_form.md)"
        )
    if not g.inputs:
        raise UnsupportedModelError(f"{name}: the graph has no inputs")
    x = g.inputs[0]
    if x.shape is None or len(x.shape) != 2:
        rank = "unknown" if x.shape is None else len(x.shape)
        raise UnsupportedModelError(
            f"{name}: token input '{x.name}' has rank {rank}, shape {x.shape}; ssmc expects a step-form model "
            "whose first input is one token [batch, features] (see docs/onnx_step_form.md)"
        )
    if not isinstance(x.shape[1], int):
        raise UnsupportedModelError(f"{name}: token input '{x.name}' needs a static feature size, has {x.shape}")
    if x.dtype not in (np.float32, np.float64, np.float16):
        raise UnsupportedModelError(f"{name}: token input '{x.name}' must be float, is {x.dtype}")
    states_in, outs = g.inputs[1:], g.outputs
    if not outs:
        raise UnsupportedModelError(f"{name}: the graph has no outputs")
    if len(outs) - 1 != len(states_in):
        raise UnsupportedModelError(
            f"{name}: {len(states_in)} state input(s) but {len(outs) - 1} state output(s); the step form lists "
            "states in the same order after the first input and after the first output"
        )
    if isinstance(x.shape[0], int) and x.shape[0] != 1:
        raise UnsupportedModelError(
            f"{name}: token input '{x.name}' has a fixed batch of {x.shape[0]}; ssmc accepts a symbolic batch or a "
            "fixed batch of 1. In torch: export with example inputs of batch 1, or with "
            f"dynamic_axes={{'{x.name}': {{0: 'batch'}}, ...}} on every input and output"
        )
    pairs = []
    for s_in, s_out in zip(states_in, outs[1:]):
        if (
            s_in.shape is None
            or s_out.shape is None
            or len(s_in.shape) != len(s_out.shape)
            or any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(s_in.shape, s_out.shape))
        ):
            raise UnsupportedModelError(
                f"{name}: state input '{s_in.name}' {s_in.shape} and output '{s_out.name}' {s_out.shape} "
                "do not match; states must come back in the same order and shape"
            )
        pairs.append((s_in.name, s_out.name))
    y = outs[0]
    if y.shape is None or len(y.shape) != 2:
        raise UnsupportedModelError(f"{name}: output '{y.name}' has shape {y.shape}; expected [batch, outputs]")
    return x.name, pairs, y.name


def _linear_unit(ix: GraphIndex, n: gs.Node) -> Unit | None:
    dyn = ix.dynamic_inputs(n)
    if n.op == "Gemm":
        a, b = n.inputs[0].name, n.inputs[1].name
        if len(dyn) != 1 or dyn[0] != a or ix.const(b) is None or n.attrs.get("transA", 0):
            return None
        W = ix.const(b).astype(np.float64) * n.attrs.get("alpha", 1.0)
        W = W if n.attrs.get("transB", 0) else W.T  # -> [out, in]
        bias = None
        if len(n.inputs) > 2 and n.inputs[2].name:
            c = ix.const(n.inputs[2].name)
            if c is None:
                return None
            bias = np.broadcast_to(c.astype(np.float64).reshape(-1) * n.attrs.get("beta", 1.0), (W.shape[0],))
        return _make_linear(W, bias, a, n.outputs[0].name, {id(n)}, describe(n))
    if n.op == "MatMul":
        a, b = n.inputs[0].name, n.inputs[1].name
        W = ix.const(b)
        if len(dyn) != 1 or dyn[0] != a or W is None or W.ndim != 2:
            return None
        out, nodes, bias = n.outputs[0].name, {id(n)}, None
        users = ix.consumers.get(out, [])
        if len(users) == 1 and users[0].op == "Add" and out not in ix.graph_outputs:
            add = users[0]
            other = [t.name for t in add.inputs if t.name != out]
            c = ix.const(other[0]) if len(other) == 1 else None
            if c is not None and c.size == W.shape[1]:
                bias, out, nodes = c.reshape(-1).astype(np.float64), add.outputs[0].name, nodes | {id(add)}
        return _make_linear(W.T.astype(np.float64), bias, a, out, nodes, describe(n))
    return None


def _make_linear(W, bias, x, y, nodes, source) -> Unit:
    params = {"weight": np.ascontiguousarray(W, dtype=np.float32)}
    if bias is not None:
        params["bias"] = np.ascontiguousarray(bias, dtype=np.float32)
    return Unit("linear", [x], y, nodes, params=params, source=source)


def _scalar_affine_unit(ix: GraphIndex, n: gs.Node, width: int | None) -> Unit | None:
    """Add/Sub/Mul/Div of a tensor by a constant, as a diagonal linear."""
    if n.op not in ("Add", "Sub", "Mul", "Div") or width is None:
        return None
    dyn = ix.dynamic_inputs(n)
    consts = [t.name for t in n.inputs if ix.is_const(t.name)]
    if len(dyn) != 1 or len(consts) != 1:
        return None
    c = ix.const(consts[0]).astype(np.float64).reshape(-1)
    if c.size not in (1, width):
        return None
    c = np.broadcast_to(c, (width,))
    x_first = n.inputs[0].name == dyn[0]
    if n.op == "Add":
        W, b = np.eye(width), c
    elif n.op == "Sub":
        W, b = (np.eye(width), -c) if x_first else (-np.eye(width), c)
    elif n.op == "Mul":
        W, b = np.diag(c), None
    else:
        if not x_first or np.any(c == 0):
            return None
        W, b = np.diag(1.0 / c), None
    return _make_linear(W, b, dyn[0], n.outputs[0].name, {id(n)}, describe(n) + " as a diagonal linear")


def _glu_unit(ix: GraphIndex, n: gs.Node) -> Unit | None:
    """Split(z) -> a, b; Mul(a, Sigmoid(b))  ==  glu(z)."""
    if n.op != "Split" or len(n.outputs) != 2:
        return None
    z = n.inputs[0].name
    shape = ix.shape(z)
    if shape is None or len(shape) != 2 or n.attrs.get("axis", 0) not in (-1, 1):
        return None
    if len(n.inputs) > 1 and n.inputs[1].name:
        sizes = ix.const(n.inputs[1].name)
        if sizes is None or len(set(sizes.tolist())) != 1:
            return None
    a, b = n.outputs[0].name, n.outputs[1].name
    sig = ix.consumers.get(b, [])
    if len(sig) != 1 or sig[0].op != "Sigmoid":
        return None
    mul = ix.consumers.get(sig[0].outputs[0].name, [])
    if len(mul) != 1 or mul[0].op != "Mul" or {t.name for t in mul[0].inputs} != {a, sig[0].outputs[0].name}:
        return None
    if len(ix.consumers.get(a, [])) != 1:
        return None
    return Unit(
        "activation",
        [z],
        mul[0].outputs[0].name,
        {id(n), id(sig[0]), id(mul[0])},
        attrs={"fn": "glu"},
        source=describe(n) + " + Sigmoid + Mul",
    )


def _layernorm_unit(ix: GraphIndex, n: gs.Node) -> Unit | None:
    if n.op != "LayerNormalization":
        return None
    x = n.inputs[0].name
    shape = ix.shape(x)
    if shape is None or len(shape) != 2 or n.attrs.get("axis", -1) not in (-1, 1):
        raise UnsupportedModelError(
            f"{describe(n)}: LayerNormalization is supported over the last axis of "
            f"[batch, C]; here axis={n.attrs.get('axis', -1)} on shape {shape}"
        )
    C = shape[1]
    w = ix.const(n.inputs[1].name) if len(n.inputs) > 1 else None
    b = ix.const(n.inputs[2].name) if len(n.inputs) > 2 and n.inputs[2].name else np.zeros(C)
    if w is None or b is None:
        raise UnsupportedModelError(f"{describe(n)}: LayerNormalization needs constant scale and bias")
    if len(n.outputs) > 1 and any(o.name and ix.consumers.get(o.name) for o in n.outputs[1:]):
        raise UnsupportedModelError(
            f"{describe(n)}: the mean/inv-std outputs of LayerNormalization are used; "
            "only the normalised output is supported"
        )
    return Unit(
        "norm",
        [x],
        n.outputs[0].name,
        {id(n)},
        attrs={"kind": "layernorm", "eps": float(n.attrs.get("epsilon", 1e-5))},
        params={
            "weight": np.broadcast_to(w.reshape(-1), (C,)).astype(np.float32),
            "bias": np.broadcast_to(b.reshape(-1), (C,)).astype(np.float32),
        },
        source=describe(n),
    )


def _alias_unit(ix: GraphIndex, n: gs.Node) -> Unit | None:
    if n.op not in PASS_THROUGH:
        return None
    dyn = ix.dynamic_inputs(n)
    if len(dyn) != 1 or n.inputs[0].name != dyn[0]:
        return None
    si, so = ix.shape(dyn[0]), ix.shape(n.outputs[0].name)
    if si is None or so is None or len(si) != 2 or len(so) != 2 or si[1] != so[1]:
        return None
    if n.op == "Cast" and n.attrs.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        return None
    return Unit("alias", [dyn[0]], n.outputs[0].name, {id(n)}, source=describe(n))


def _width(ix: GraphIndex, name: str) -> int | None:
    s = ix.shape(name)
    return s[1] if s is not None and len(s) == 2 and isinstance(s[1], int) else None


def _handled_nodes(ix: GraphIndex) -> dict[int, OpHandler]:
    found = {}
    for n in ix.nodes:
        h = find_handler(n.op, n.domain or "")
        if h is not None:
            found[id(n)] = h
    return found


def _units(ix: GraphIndex, raw: GraphIndex, pairs, opset: int, fixed_batch: bool) -> list[Unit]:
    """Every node of the graph in a unit: recurrences, handled nodes, then the built-in matchers."""
    handled = _handled_nodes(ix)
    states = {s for pair in pairs for s in pair}
    _check_custom_domains(ix, handled)
    measured = _measured_pairs(ix, pairs, handled)
    claimed: set[int] = set()
    units = _recurrence_units(ix, raw, measured, opset, fixed_batch, claimed)
    # Handlers before the built-in matchers: a user's handler for a standard op overrides them.
    units += _handler_units(ix, handled, states, claimed)
    # GLU before activations: its Sigmoid belongs to it.
    units += _glu_units(ix, claimed)
    units += _activation_units(ix, claimed)
    units += _single_node_units(ix, claimed)
    return units


def _check_custom_domains(ix: GraphIndex, handled: dict[int, OpHandler]) -> None:
    """Refuse a custom-domain node no handler maps."""
    for n in ix.nodes:  # onnxruntime cannot run these, so recurrence measurement would fail obscurely
        if id(n) not in handled and n.domain not in ("", "ai.onnx", None):
            raise UnsupportedModelError(_unsupported_message(ix, n))


def _measured_pairs(ix: GraphIndex, pairs, handled: dict[int, OpHandler]) -> list[tuple[str, str]]:
    """The state pairs to recognise by measurement: all but those whose next state a handled node computes
    (which must then own the state alone)."""
    measured = []
    for s_in, s_out in pairs:
        producer = ix.producer.get(s_out)
        if producer is not None and id(producer) in handled:  # the handler's op keeps this state
            outside = [c for c in ix.consumers.get(s_in, []) if id(c) not in handled]
            if outside:
                raise UnsupportedModelError(
                    f"state '{s_in}' -> '{s_out}': the output comes from {describe(producer)} "
                    f"(mapped by handler {handled[id(producer)].origin}) but the input is "
                    f"also read by {describe(outside[0])}; a handled node must own its state"
                )
            continue
        measured.append((s_in, s_out))
    return measured


def _recurrence_units(
    ix: GraphIndex, raw: GraphIndex, measured, opset: int, fixed_batch: bool, claimed: set[int]
) -> list[Unit]:
    """A unit per recurrence of the `measured` state pairs; adds their nodes to `claimed`."""
    units = []
    recs: list[Recurrence] = find_recurrences(ix, raw, measured, opset, fixed_batch) if measured else []
    for rec in recs:
        if rec.nodes & claimed:
            raise UnsupportedModelError(f"{rec.source}: its layer overlaps another recurrence")
        claimed |= rec.nodes
        units.append(
            Unit(
                rec.kind,
                [rec.u],
                rec.y,
                rec.nodes,
                attrs=rec.attrs,
                params=rec.params,
                source=rec.source,
                notes=rec.notes,
            )
        )
    return units


def _handler_units(ix: GraphIndex, handled: dict[int, OpHandler], states: set[str], claimed: set[int]) -> list[Unit]:
    """A unit per handled node not claimed yet (its state inputs and outputs left out); claims it."""
    units = []
    for n in ix.nodes:
        if id(n) in handled and id(n) not in claimed:
            outs = [t.name for t in n.outputs if t.name and t.name not in states] or [n.outputs[0].name]
            units.append(
                Unit(
                    "handler",
                    [t for t in ix.dynamic_inputs(n) if t not in states],
                    outs[0],
                    {id(n)},
                    source=f"{describe(n)} by handler {handled[id(n)].label}",
                    handler=handled[id(n)],
                    node=n,
                )
            )
            claimed.add(id(n))
    return units


def _glu_units(ix: GraphIndex, claimed: set[int]) -> list[Unit]:
    """A unit per GLU pattern among the unclaimed nodes; claims its nodes."""
    units = []
    for n in ix.nodes:
        if id(n) not in claimed:
            u = _glu_unit(ix, n)
            if u:
                units.append(u)
                claimed |= u.nodes
    return units


def _activation_units(ix: GraphIndex, claimed: set[int]) -> list[Unit]:
    """A unit per activation pattern anchored at an unclaimed node; claims its nodes."""
    units = []
    for n in ix.nodes:
        if id(n) in claimed or n.op not in ANCHORS:
            continue
        m = match_activation(ix, n, claimed)
        if m is not None:
            units.append(
                Unit(
                    "activation",
                    [m.x],
                    m.y,
                    m.nodes,
                    attrs={"fn": m.fn},
                    source=f"{len(m.nodes)} node(s) from {describe(n)}",
                )
            )
            claimed |= m.nodes
    return units


def _single_node_units(ix: GraphIndex, claimed: set[int]) -> list[Unit]:
    """A unit for every node still unclaimed (linear, LayerNorm, alias, scalar affine, residual add), or the
    error naming the first node none of them matches; claims them."""
    units = []
    for n in ix.nodes:
        if id(n) in claimed:
            continue
        u = (
            _linear_unit(ix, n)
            or _layernorm_unit(ix, n)
            or _alias_unit(ix, n)
            or _scalar_affine_unit(ix, n, _width(ix, ix.dynamic_inputs(n)[0]) if ix.dynamic_inputs(n) else None)
        )
        if u is None and n.op == "Add":
            dyn = ix.dynamic_inputs(n)
            if len(dyn) == 2 and len(n.inputs) == 2:
                u = Unit("add", dyn, n.outputs[0].name, {id(n)}, source=describe(n))
        if u is None:
            raise UnsupportedModelError(_unsupported_message(ix, n))
        units.append(u)
        claimed |= u.nodes
    return units


def _unsupported_message(ix: GraphIndex, n: gs.Node) -> str:
    shapes = ", ".join(
        f"{t.name}: {list(t.shape) if t.shape is not None else '?'}"
        for t in n.inputs
        if t.name and not ix.is_const(t.name)
    )
    if n.domain and n.domain not in ("", "ai.onnx"):
        return (
            f"{describe(n)}: custom domain '{n.domain}' has no handler (inputs {shapes or 'none'}); map it onto "
            f"the IR with @register_op_handler({n.op!r}, domain={n.domain!r}) in a file given with --plugin, "
            f"or in a package's 'ssmc.op_handlers' entry point (see {HANDLER_DOCS})"
        )
    return (
        f"{describe(n)}: this op, or this use of it, is not supported (inputs {shapes or 'none'}). "
        f"Supported: {SUPPORTED}. If the op is part of an S4D layer, check the state layout in "
        f"docs/onnx_step_form.md; otherwise handlers can be added: @register_op_handler({n.op!r}) "
        f"(see {HANDLER_DOCS})"
    )


def _import_and_fold(model: onnx.ModelProto, name: str) -> tuple[gs.Graph, gs.Graph]:
    """The model as graphsurgeon reads it, and a second copy with its constants folded."""
    try:  # graphsurgeon reports unreadable graphs and folding failures with assorted types
        raw_graph = pin_ir_versions(gs.import_onnx(model))
        folded = pin_ir_versions(gs.import_onnx(model))
    except Exception as e:
        raise UnsupportedModelError(
            f"{name}: onnx-graphsurgeon cannot read the graph: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    from onnx_graphsurgeon.logger import G_LOGGER

    severity, G_LOGGER.severity = G_LOGGER.severity, G_LOGGER.ERROR  # its "[W] ..." lines would clutter ssmc's output
    try:
        folded.fold_constants(error_ok=False).cleanup(remove_unused_graph_inputs=False)
    except Exception as e:
        raise UnsupportedModelError(f"{name}: constant folding failed: {str(e).splitlines()[0]}") from None
    finally:
        G_LOGGER.severity = severity
    return raw_graph, folded


def _check_no_runtime_if(ix: GraphIndex, name: str) -> None:
    """Folding inlined every If with a constant condition; one left picks its branch per input."""
    for n in ix.nodes:
        if n.op == "If" and n.domain in ("", "ai.onnx", None):
            raise UnsupportedModelError(
                f"{name}: {describe(n)}: its condition is computed from the inputs, and a "
                "compiled net cannot choose between branches at run time; export the "
                "model with the branch it takes, or make the condition a constant"
            )


def convert(model: onnx.ModelProto, name: str = "model", readout: str = "none") -> tuple[Graph, ImportReport]:
    """Convert a loaded step-form model to a verified model-level Graph."""
    opset = opset_of(model)
    raw_graph, folded = _import_and_fold(model, name)
    _check_finite(raw_graph, name)
    raw, ix = GraphIndex(raw_graph), GraphIndex(folded)
    _check_no_runtime_if(ix, name)
    x_name, pairs, y_name = _check_contract(ix, name)
    units = _units(ix, raw, pairs, opset, fixed_batch=isinstance(ix.shape(x_name)[0], int))
    states = {s for pair in pairs for s in pair}
    units.sort(key=lambda u: ix.tensor_index(u.output))

    graph = Graph(_ir_name(name))
    value_of, layers = _add_units(ix, graph, units, x_name, states, name)
    if y_name not in value_of:
        raise UnsupportedModelError(f"{name}: output '{y_name}' is not computed from the token input")
    layers += _add_readout_and_output(graph, value_of[y_name], y_name, readout)
    _check_imported_graph(graph, name)
    return graph, ImportReport(model_name=name, inputs=[x_name], states=pairs, layers=layers)


def _add_units(
    ix: GraphIndex, graph: Graph, units: list[Unit], x_name: str, states: set[str], name: str
) -> tuple[dict[str, str], list[dict]]:
    """Add the token input and the ops of `units` (in order) to `graph`; returns the IR value of each ONNX
    tensor they compute and the import-report rows."""
    value_of: dict[str, str] = {}
    counters: dict[str, int] = {}
    x_op = graph.add(Op("x", "input", attrs={"size": int(ix.shape(x_name)[1])}, shape=(int(ix.shape(x_name)[1]),)))
    value_of[x_name] = x_op.name
    layers = [dict(name="x", kind="input", shape=list(x_op.shape), source=f"graph input '{x_name}'", notes=[])]
    for u in units:
        missing = [t for t in u.inputs if t not in value_of]
        if missing:
            raise UnsupportedModelError(
                f"{name}: '{u.source}' reads '{missing[0]}', which is not computed from "
                f"the token input '{x_name}' by supported ops"
            )
        if u.kind == "alias":
            value_of[u.output] = value_of[u.inputs[0]]
            continue
        if u.kind == "handler":
            layers.extend(_apply_handler(ix, graph, u, value_of, states, counters))
            continue
        op = _ir_op(graph, u, [value_of[t] for t in u.inputs], counters)
        value_of[u.output] = op.name
        layers.append(
            dict(name=op.name, kind=op.kind, shape=list(op.shape), source=u.source, notes=u.notes, attrs=dict(op.attrs))
        )
    return value_of, layers


def _add_readout_and_output(graph: Graph, last: str, y_name: str, readout: str) -> list[dict]:
    """Append the --readout pool (sum, mean) and the output op after IR value `last`; their report rows."""
    layers = []
    if readout in ("sum", "mean"):  # "last" adds nothing: the last token's output is already the output
        pool = graph.add(
            Op(graph.fresh_name("readout"), "pool", (last,), attrs={"mode": readout}, shape=graph.op(last).shape)
        )
        layers.append(
            dict(
                name=pool.name,
                kind="pool",
                shape=list(pool.shape),
                source=f"--readout {readout}",
                notes=[],
                attrs={"mode": readout},
            )
        )
        last = pool.name
    out = graph.add(Op(graph.fresh_name("y"), "output", (last,), shape=graph.op(last).shape))
    layers.append(
        dict(name=out.name, kind="output", shape=list(out.shape), source=f"graph output '{y_name}'", notes=[])
    )
    return layers


def _check_imported_graph(graph: Graph, name: str) -> None:
    """Refuse parameters over the size limit, and recognised layers that do not make valid IR."""
    limits.check(
        "total_bytes",
        sum(v.nbytes for op in graph.ops() for v in op.params.values()),
        f"{name}: the imported model's parameters",
    )
    problems = graph_problems(graph)
    if problems:  # e.g. measured parameters that overflow float32: a property of the model, said on one line
        raise UnsupportedModelError(f"{name}: the recognised layers do not make valid IR: {'; '.join(problems)}")


def _apply_handler(
    ix: GraphIndex, graph: Graph, u: Unit, value_of: dict[str, str], states: set[str], counters: dict[str, int]
) -> list[dict]:
    """Run a handler unit; record what it mapped; return its import-report rows."""
    mapping, added = apply_handler(u.handler, u.node, ix, graph, value_of, states, describe, counters)
    for t in u.node.outputs:
        used = ix.consumers.get(t.name) or t.name in ix.graph_outputs
        if t.name and t.name not in states and used and t.name not in mapping:
            raise UnsupportedModelError(
                f"{describe(u.node)}, handler {u.handler.origin}: output '{t.name}' is used "
                "but the handler returned no IR value for it"
            )
    value_of.update(mapping)
    rows = []
    for name in added:
        op = graph.op(name)
        rows.append(
            dict(name=op.name, kind=op.kind, shape=list(op.shape), source=u.source, notes=[], attrs=dict(op.attrs))
        )
    return rows


def _check_finite(graph: gs.Graph, name: str) -> None:
    """NaN, infinite or absurdly large weights make every later number meaningless: refuse them by name."""
    for node in graph.nodes:
        for t in node.inputs:
            if isinstance(t, gs.Constant):
                values = np.asarray(t.values)
                if not np.issubdtype(values.dtype, np.floating) or values.size == 0:
                    continue
                if not np.all(np.isfinite(values)):
                    raise UnsupportedModelError(
                        f"{name}: initializer '{t.name}' (used by {describe(node)}) has NaN or infinite values"
                    )
                biggest = float(np.abs(values).max())
                if biggest > limits.MAX_ABS_WEIGHT:
                    raise UnsupportedModelError(
                        f"{name}: initializer '{t.name}' (used by {describe(node)}) has values up to {biggest:.3g}; "
                        f"ssmc refuses |values| over {limits.MAX_ABS_WEIGHT:.0e} (folding layers would overflow float32, and "
                        "no fixed-point format spans them): check the export"
                    )


def _ir_name(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    base = base[:-5] if base.endswith(".onnx") else base
    return Graph().fresh_name(base or "model")


def _ir_op(graph: Graph, u: Unit, inputs: list[str], counters: dict[str, int]) -> Op:
    prefix = {
        "linear": "linear",
        "s4d": "s4d",
        "activation": u.attrs.get("fn", "act"),
        "add": "add",
        "norm": "norm",
        "pool": "pool",
    }.get(u.kind, u.kind)
    i = counters.get(prefix, 0)
    counters[prefix] = i + 1
    name = graph.fresh_name(f"{prefix}{i}")
    in_shapes = [graph.op(s).shape for s in inputs]
    op = Op(name, u.kind, tuple(inputs), attrs=dict(u.attrs), params=dict(u.params))
    try:
        op.shape = tuple(schema(u.kind).infer_shape(op, in_shapes))
    except (IRError, KeyError, IndexError) as e:
        raise UnsupportedModelError(f"{u.source}: cannot build a {u.kind} op ({e})") from None
    return graph.add(op)
