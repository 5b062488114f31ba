"""The IR verifier: every invariant a pass may assume and must preserve.

Checks, per op: known kind, arity, attributes (required, typed, allowed values,
no unknown ones), tensors (present, dtype, shape, finite, no unknown ones) and
that the recorded result shape is the one the schema infers. Per graph: at
least one input and one output, no cycle, outputs consumed by nobody; on a placed
graph, every neuron placed once within the target's per-core capacities: a check the
mapper registers (`register_placement_check`, done by ssmc.mapping.capacity), because the
IR knows neither the mapper's accounting nor the target's prices (the engines skip it:
a run does not depend on the fit). All problems are collected, so one run reports every broken op.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ssmc.errors import IRError
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import ATTR_TYPES, DTYPES, REQUIRED, VARIADIC, OpSchema, schema, with_defaults
from ssmc.ir.placement import is_placed

#: graph -> problems of its placement against its target; registered by ssmc.mapping.capacity.
PlacementCheck = Callable[[Graph], "list[str]"]
_placement_check: PlacementCheck | None = None


def register_placement_check(check: PlacementCheck) -> PlacementCheck:
    """Make `check` the verifier's check of placed graphs (like register_op for op kinds)."""
    global _placement_check
    if _placement_check is not None and _placement_check is not check:
        raise IRError("a placement check is already registered")
    _placement_check = check
    return check


def _check_attr_type(value, type_name: str) -> bool:
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "ints":
        return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, ATTR_TYPES[type_name])


def _attr_problems(sch: OpSchema, op: Op, where: str) -> list[str]:
    """Every way `op`'s attributes break `sch`: unknown, missing, mistyped or out of their choices."""
    problems: list[str] = []
    for key in op.attrs:
        if sch.attr(key) is None:
            allowed = ", ".join(a.name for a in sch.attrs) or "none"
            problems.append(f"{where}: unknown attribute {key!r} (allowed: {allowed})")
    for spec in sch.attrs:
        if spec.name not in op.attrs:
            if spec.default is REQUIRED:
                problems.append(f"{where}: missing attribute {spec.name!r} ({spec.doc})")
            continue
        value = op.attrs[spec.name]
        if not _check_attr_type(value, spec.type):
            problems.append(f"{where}: attribute {spec.name!r} must be {spec.type}, got {value!r}")
        elif spec.choices and value not in spec.choices:
            problems.append(f"{where}: attribute {spec.name!r} is {value!r}, must be one of {list(spec.choices)}")
    return problems


def _tensor_problems(sch: OpSchema, op: Op, in_shapes: list[tuple[int, ...]], where: str) -> list[str]:
    """Every way `op`'s tensors break `sch` (attributes already valid and defaulted): unexpected,
    missing, of the wrong dtype or shape, or not finite."""
    problems: list[str] = []
    active = sch.active_params(op)
    active_names = {p.name for p in active}
    for key in op.params:
        if key not in active_names:
            allowed = ", ".join(sorted(active_names)) or "none"
            problems.append(f"{where}: unexpected tensor {key!r} (expected: {allowed})")
    for spec in active:
        arr = op.params.get(spec.name)
        if arr is None:
            if not spec.optional:
                problems.append(f"{where}: missing tensor {spec.name!r} ({spec.doc})")
            continue
        if not isinstance(arr, np.ndarray):
            problems.append(f"{where}: tensor {spec.name!r} is not an array")
            continue
        if arr.dtype != np.dtype(DTYPES[spec.dtype]):
            problems.append(f"{where}: tensor {spec.name!r} must be {spec.dtype}, is {arr.dtype}")
            continue
        try:
            want = tuple(spec.shape(op, in_shapes))
        except (IRError, KeyError, IndexError, AttributeError) as e:
            problems.append(f"{where}: cannot check tensor {spec.name!r}: {e}")
            continue
        if arr.shape != want:
            problems.append(f"{where}: tensor {spec.name!r} has shape {list(arr.shape)}, expected {list(want)}")
        elif arr.dtype.kind not in "biu" and not np.all(np.isfinite(arr)):  # integers are always finite
            problems.append(f"{where}: tensor {spec.name!r} has NaN or infinite values")
    return problems


def op_problems(op: Op, in_shapes: list[tuple[int, ...]]) -> list[str]:
    """Every way `op` breaks its schema, as messages (empty when it is fine)."""
    try:
        sch = schema(op.kind)
    except IRError as e:
        return [f"%{op.name}: {e}"]
    where = f"%{op.name} ({op.kind})"
    if sch.n_inputs == VARIADIC:
        if not op.inputs:
            return [f"{where} takes at least one input, has none"]
    elif len(op.inputs) != sch.n_inputs:
        return [f"{where} takes {sch.n_inputs} input(s), has {len(op.inputs)}"]

    problems = _attr_problems(sch, op, where)
    if problems:
        return problems  # tensor and shape rules read the attributes
    op = dataclasses.replace(op, attrs=with_defaults(op))  # the rules see an omitted attribute's default

    problems = _tensor_problems(sch, op, in_shapes, where)
    if problems:
        return problems

    try:
        want_shape = tuple(sch.infer_shape(op, in_shapes))
        if sch.extra_check:
            sch.extra_check(op, in_shapes)
    except (IRError, KeyError, IndexError, AttributeError) as e:
        return [f"{where}: {e}"]
    if op.shape != want_shape:
        problems.append(f"{where}: result shape {list(op.shape)} but its inputs give {list(want_shape)}")
    return problems


def graph_problems(g: Graph, capacities: bool = True) -> list[str]:
    """Every invariant `g` breaks, as messages; with capacities=False, a placed graph's placement
    is not checked against the target's capacities (see verify)."""
    if g.has_cycle():
        return ["the graph has a cycle; recurrences must live inside stateful ops"]
    problems: list[str] = []
    order = g.ops()  # one topological sort, not one per query
    if not any(op.kind == "input" for op in order):
        problems.append("the graph has no input op")
    if not any(op.kind == "output" for op in order):
        problems.append("the graph has no output op")
    for op in order:
        in_shapes = [g.op(src).shape for src in op.inputs]
        problems.extend(op_problems(op, in_shapes))
        if op.kind == "output" and g.consumers(op.name):
            problems.append(f"%{op.name} (output) must not be used by other ops")
    if capacities and not problems and is_placed(g):  # capacities are counted on a graph that is otherwise sound
        if _placement_check is None:  # a placed graph is never passed unchecked
            raise RuntimeError(
                "a placed graph needs the capacity check: import ssmc.mapping.capacity, which "
                "registers it (ssmc.api, the passes and the engines do)"
            )
        problems.extend(_placement_check(g))
    return problems


def verify(g: Graph, capacities: bool = True) -> Graph:
    """Raise IRError listing every problem in `g`; return `g` when it verifies.
    capacities=False skips the placement's capacity check, for the engines: what a run computes
    does not depend on how the neurons fit on cores (compile checks that after partitioning, and
    ssmc.load on every loaded graph), and on a paper-size net the check is most of a first run."""
    problems = graph_problems(g, capacities)
    if problems:
        head = f"IR @{g.name} does not verify ({len(problems)} problem{'s' if len(problems) > 1 else ''}):"
        raise IRError("\n  ".join([head] + problems))
    return g
