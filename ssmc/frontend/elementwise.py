"""Recognise activation functions by what they compute, not how they are spelled.

Exporters write GELU as one `Gelu` op, as x*0.5*(1+erf(x/sqrt2)), or as the
tanh approximation with Pow or x*x*x; sigmoid may be `Sigmoid` or 1/(1+exp(-x)).
Starting from a nonlinear node, this module takes the surrounding region of
elementwise ops that reads a single tensor x (plus scalar constants), evaluates
it on a grid with numpy and compares it with each known activation. The region
is grown as far as it goes and shrunk until it matches, so scalar arithmetic
around a standard activation is left for the linear mapping instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from scipy.special import erf

from ssmc.frontend.gsutil import GraphIndex
from ssmc.ir.activations import activation

ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Exp",
    "Neg",
    "Sqrt",
    "Reciprocal",
    "Gelu",
    "Abs",
    "Max",
    "Min",
    "Clip",
    "Identity",
}
ANCHORS = {"Erf", "Tanh", "Sigmoid", "Relu", "Gelu", "Exp", "Max", "Clip"}
CANDIDATES = ("relu", "gelu", "gelu_tanh", "sigmoid", "tanh")
GRID = np.linspace(-8.0, 8.0, 641)
TOLERANCE = 1e-5  # tells exact GELU from its tanh approximation (they differ by up to ~5e-4)


@dataclass
class ActivationMatch:
    fn: str
    x: str
    y: str
    nodes: set[int]


def _eval_node(node: gs.Node, vals: list[np.ndarray]) -> np.ndarray:
    op = node.op
    a = vals[0]
    if op == "Add":
        return a + vals[1]
    if op == "Sub":
        return a - vals[1]
    if op == "Mul":
        return a * vals[1]
    if op == "Div":
        return a / vals[1]
    if op == "Pow":
        return np.power(a, vals[1])
    if op == "Erf":
        return erf(a)
    if op == "Tanh":
        return np.tanh(a)
    if op == "Sigmoid":
        return activation("sigmoid", a)
    if op == "Relu":
        return np.maximum(a, 0)
    if op == "Exp":
        return np.exp(np.clip(a, -700, 700))
    if op == "Neg":
        return -a
    if op == "Sqrt":
        return np.sqrt(np.abs(a)) * np.sign(a)
    if op == "Reciprocal":
        return 1.0 / a
    if op == "Abs":
        return np.abs(a)
    if op == "Identity":
        return a
    if op == "Max":
        return np.maximum.reduce(vals)
    if op == "Min":
        return np.minimum.reduce(vals)
    if op == "Clip":
        lo = vals[1] if len(vals) > 1 and vals[1] is not None else -np.inf
        hi = vals[2] if len(vals) > 2 and vals[2] is not None else np.inf
        return np.clip(a, lo, hi)
    if op == "Gelu":
        approx = node.attrs.get("approximate", "none")
        return activation("gelu_tanh" if approx == "tanh" else "gelu", a)
    raise KeyError(op)  # an op in ELEMENTWISE without a formula here: a bug, not user input


def _is_region_node(ix: GraphIndex, n: gs.Node, claimed: set[int]) -> bool:
    if id(n) in claimed or n.op not in ELEMENTWISE or len(n.outputs) != 1:
        return False
    return all(t.name == "" or not ix.is_const(t.name) or ix.is_scalar_const(t.name) for t in n.inputs)


def _back_region(ix: GraphIndex, anchor: gs.Node, x: str, claimed: set[int]) -> list[gs.Node] | None:
    """Nodes from `x` up to `anchor` if they read only x and scalar constants."""
    nodes, todo, seen = {}, [anchor], set()
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if not _is_region_node(ix, n, claimed):
            return None
        nodes[id(n)] = n
        for t in ix.dynamic_inputs(n):
            if t == x:
                continue
            p = ix.producer.get(t)
            if p is None:
                return None
            todo.append(p)
    return sorted(nodes.values(), key=ix.node_index)


def _evaluate(ix: GraphIndex, nodes: list[gs.Node], x: str, out: str) -> np.ndarray | None:
    vals = {x: GRID}
    with np.errstate(all="ignore"):
        for n in nodes:
            args = []
            for t in n.inputs:
                if t.name == "":
                    args.append(None)
                elif ix.is_const(t.name):
                    args.append(ix.const(t.name).astype(np.float64).reshape(()))
                elif t.name in vals:
                    args.append(vals[t.name])
                else:
                    return None
            vals[n.outputs[0].name] = np.broadcast_to(_eval_node(n, args), GRID.shape)
    return vals.get(out)


def _classify(values: np.ndarray) -> str | None:
    if values is None or not np.all(np.isfinite(values)):
        return None
    for fn in CANDIDATES:
        ref = activation(fn, GRID)
        if np.max(np.abs(values - ref) / np.maximum(1.0, np.abs(ref))) <= TOLERANCE:
            return fn
    return None


def match_activation(ix: GraphIndex, anchor: gs.Node, claimed: set[int]) -> ActivationMatch | None:
    """The largest region around `anchor` that computes a known activation."""
    if not _is_region_node(ix, anchor, claimed):
        return None
    # Candidate sources: tensors behind the anchor, farthest first.
    sources, todo = [], list(ix.dynamic_inputs(anchor))
    while todo:
        t = todo.pop(0)
        if t in sources:
            continue
        sources.append(t)
        p = ix.producer.get(t)
        if p is not None and _is_region_node(ix, p, claimed):
            todo.extend(ix.dynamic_inputs(p))
    for x in reversed(sources):
        back = _back_region(ix, anchor, x, claimed)
        if back is None:
            continue
        region = _grow_forward(ix, back, x, claimed)
        # Try each tensor of the region as the output, farthest first, down to the anchor.
        for last in reversed(region):
            out = last.outputs[0].name
            nodes = _back_region(ix, last, x, claimed)
            if nodes is None or not any(n is anchor for n in nodes) or not _single_exit(ix, nodes, out):
                continue
            fn = _classify(_evaluate(ix, nodes, x, out))
            if fn is not None:
                return ActivationMatch(fn=fn, x=x, y=out, nodes={id(n) for n in nodes})
    return None


def _grow_forward(ix: GraphIndex, back: list[gs.Node], x: str, claimed: set[int]) -> list[gs.Node]:
    """Add elementwise nodes that read the region (and x); a node reading x alone
    joins only when it feeds a node that reads the region (like the 0.5*x of GELU)."""
    region = list(back)
    inside = {n.outputs[0].name for n in region}
    grown = True
    while grown:
        grown = False
        for n in ix.nodes:
            if any(n is r for r in region) or not _is_region_node(ix, n, claimed):
                continue
            dyn = ix.dynamic_inputs(n)
            if not dyn or not all(t in inside or t == x for t in dyn):
                continue
            reads_region = any(t in inside for t in dyn)
            feeds_region = any(any(i.name in inside for i in c.inputs) for c in ix.consumers.get(n.outputs[0].name, []))
            if reads_region or feeds_region:
                region.append(n)
                inside.add(n.outputs[0].name)
                grown = True
    return sorted(region, key=ix.node_index)


def _single_exit(ix: GraphIndex, nodes: list[gs.Node], out: str) -> bool:
    """Only `out` may be used outside the region (x is outside by definition)."""
    ids = {id(n) for n in nodes}
    produced = {n.outputs[0].name for n in nodes}
    if out not in produced:
        return False
    for n in nodes:
        t = n.outputs[0].name
        if t == out:
            continue
        if t in ix.graph_outputs or any(id(c) not in ids for c in ix.consumers.get(t, [])):
            return False
    return True
