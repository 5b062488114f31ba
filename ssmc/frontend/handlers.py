"""Op handlers: user code that maps an ONNX node onto IR ops.

The frontend recognises standard step-form graphs by itself (convert.py).
A model that uses an op it does not know -- typically a fused node of a
custom domain, say ``com.example.S4D`` from your own exporter -- needs a
handler: a function registered for (domain, op) that reads the node and adds
the IR ops computing its outputs.

    @register_op_handler("S4D", domain="com.example")
    def s4d(node, ctx):
        ...
        return ctx.add("s4d", [ctx.value(node.inputs[0].name)], attrs=..., params=...)

Handlers come from three places: the decorator in imported code, a module
loaded from a file (`load_plugin_file`, the CLI's ``--plugin path.py``) and
installed packages declaring modules in the ``ssmc.op_handlers`` entry-point
group (imported on the first lookup). A handler for a standard ONNX op
(domain "") takes precedence over the built-in matching of nodes of that op,
except for nodes inside a recognised S4D recurrence.

A handler's failures are the model's failures: anything it raises, or IR it
returns that does not verify, becomes an `UnsupportedModelError` naming the
node, its op and where the handler was defined. See docs/extending.md.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ssmc.entry_points import installed
from ssmc.errors import HandlerError, SsmcError, UnsupportedModelError
from ssmc.ir.graph import Op
from ssmc.ir.ops import known_kinds, schema
from ssmc.ir.verify import op_problems

ENTRY_POINT_GROUP = "ssmc.op_handlers"
DOCS = "docs/extending.md#custom-onnx-ops"
STANDARD_DOMAINS = ("", "ai.onnx")
# Handlers build model-level IR; the graph's ends and the neuro-level kinds are the compiler's.
NOT_FOR_HANDLERS = ("input", "output", "cpx", "neurons", "synapses")


@dataclass(frozen=True)
class OpHandler:
    """One registered handler: which nodes it maps, the function, and where it came from."""

    op: str
    domain: str
    func: Callable
    origin: str  # "module.function (file)" or "package X (entry point)", for error messages

    @property
    def key(self) -> str:
        return f"{self.domain}.{self.op}" if self.domain else self.op

    @property
    def label(self) -> str:
        """The origin without directories: what net.lava's report records, so it does not depend on
        where the plugin file or package lives (same model and options, same bytes)."""
        name, sep, where = self.origin.partition(" (")
        return f"{name} ({os.path.basename(where.rstrip(')'))})" if sep and where.endswith(")") else self.origin

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.func) or ""
        return doc.splitlines()[0] if doc else ""


_REGISTRY: dict[tuple[str, str], OpHandler] = {}
PLUGIN_MODULE_PREFIX = "ssmc_plugin_"
_plugins_loaded = False
_loaded_files: dict[str, str] = {}  # absolute path -> sha256, so a file is imported once


def _domain(domain: str) -> str:
    return "" if domain in STANDARD_DOMAINS else domain


def _origin(func: Callable) -> str:
    try:
        where = inspect.getsourcefile(func)
    except (TypeError, OSError):  # builtins, callables objects, exec'd code
        where = None
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or repr(func)
    if not module.startswith(PLUGIN_MODULE_PREFIX):  # a --plugin file's module name says nothing: the path does
        name = f"{module}.{name}"
    return name + (f" ({_short_path(where)})" if where and not where.startswith("<") else "")


def _short_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def register_op_handler(op: str, domain: str = "", origin: str | None = None) -> Callable[[Callable], Callable]:
    """Decorator: `func(node, ctx)` maps ONNX nodes of type `op` in `domain` onto IR ops.

    `node` is the onnx-graphsurgeon node (name, op, domain, attrs, inputs,
    outputs); `ctx` a `HandlerContext`. The function returns the IR value of
    the node's output: a name (for the first output), a list aligned with
    `node.outputs` (None where an output is unused or a recurrent state), or a
    dict {ONNX output name: IR value name}. The function is returned unchanged.
    """
    if not isinstance(op, str) or not op or not isinstance(domain, str):
        raise HandlerError(f"register_op_handler needs an op name and a domain string, got {op!r}, {domain!r}")

    def decorate(func: Callable) -> Callable:
        if not callable(func):
            raise HandlerError(f"the handler for {op!r} must be a function taking (node, ctx)")
        handler = OpHandler(op=op, domain=_domain(domain), func=func, origin=origin or _origin(func))
        key = (handler.domain, op)
        old = _REGISTRY.get(key)
        if old is not None and _same_code(old.func, func):
            return func  # the same file imported twice (installed package and --plugin): keep the first
        if old is not None and old.func is not func:
            raise HandlerError(
                f"op {handler.key!r} has two handlers: {old.origin} and {handler.origin}; "
                "remove one (or unregister_op_handler the first)"
            )
        _REGISTRY[key] = handler
        return func

    return decorate


def _same_code(a: Callable, b: Callable) -> bool:
    """Whether two functions are the same definition: same name, file and line."""
    try:
        fa, fb = inspect.getsourcefile(a), inspect.getsourcefile(b)
    except (TypeError, OSError):
        return False

    def where(f):
        code = getattr(f, "__code__", None)
        return getattr(f, "__qualname__", None), code.co_firstlineno if code else None

    return a is b or (fa is not None and fa == fb and where(a) == where(b))


def _load_entry_points() -> None:
    """Import the modules installed packages list in the `ssmc.op_handlers` group (they register on import)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True

    for ep, package in installed(ENTRY_POINT_GROUP):
        origin = f"package {package} (entry point {ep.name} = {ep.value})"
        try:
            ep.load()
        except SsmcError as e:
            raise HandlerError(f"op handlers from {origin}: {e}") from None
        except Exception as e:  # a broken plugin must not look like an ssmc bug
            raise HandlerError(f"op handlers from {origin} failed to import: {type(e).__name__}: {e}") from None


def find_handler(op: str, domain: str = "") -> OpHandler | None:
    _load_entry_points()
    return _REGISTRY.get((_domain(domain or ""), op))


def available_op_handlers() -> list[OpHandler]:
    """Every registered handler, sorted by domain and op."""
    _load_entry_points()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def load_plugin_file(path: str | os.PathLike) -> str:
    """Import a Python file that registers op handlers (or passes); returns its sha256.

    For scripts without packaging (`ssmc compile --plugin my_handlers.py`).
    Loading the same file again does nothing.
    """
    path = os.path.abspath(os.fspath(path))
    if path in _loaded_files:
        return _loaded_files[path]
    if not os.path.isfile(path):
        raise HandlerError(f"plugin {path}: no such file")
    if not path.endswith(".py"):
        raise HandlerError(f"plugin {path}: expected a Python file (.py)")
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{PLUGIN_MODULE_PREFIX}{stem}_{digest[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SsmcError as e:
        del sys.modules[name]
        raise HandlerError(f"plugin {_short_path(path)}: {e}") from None
    except BaseException as e:  # user code: even SystemExit must not escape as a traceback
        del sys.modules[name]
        first = str(e).splitlines()[0] if str(e) else ""
        raise HandlerError(f"plugin {_short_path(path)} failed to import: {type(e).__name__}: {first}") from None
    _loaded_files[path] = digest
    return digest


class HandlerContext:
    """What a handler may see and do: constants and shapes of the ONNX graph,
    the IR values computed so far, and adding IR ops (shapes are inferred and
    checked against the op's schema)."""

    def __init__(
        self, index, graph, value_of: dict[str, str], node, states: set[str], counters: dict[str, int] | None = None
    ):
        self._counters = counters if counters is not None else {}
        self._ix = index
        self._graph = graph
        self._value_of = value_of
        self._states = states
        self.node = node
        self.added: list[str] = []

    def const(self, name: str) -> np.ndarray | None:
        """The value of ONNX tensor `name` if it is a constant (initializer or folded), else None."""
        return self._ix.const(name)

    def shape(self, name: str) -> tuple | None:
        """The ONNX shape of tensor `name` (batch axis included) if known."""
        return self._ix.shape(name)

    def is_state(self, name: str) -> bool:
        """True for a recurrent state tensor (a graph input after the first, or its output)."""
        return name in self._states

    def value(self, name: str) -> str:
        """The IR value computing ONNX tensor `name` (it must come from the token input)."""
        try:
            return self._value_of[name]
        except KeyError:
            raise UnsupportedModelError(
                f"tensor '{name}' is not computed from the token input by supported ops (or is produced later)"
            ) from None

    def ir_shape(self, value: str) -> tuple[int, ...]:
        """The per-token shape (no batch axis) of IR value `value`."""
        return self._graph.op(value).shape

    def _next_name(self, kind: str, attrs: dict) -> str:
        prefix = str(attrs.get("fn", "act")) if kind == "activation" else kind
        i = self._counters.get(prefix, 0)
        self._counters[prefix] = i + 1
        return f"{prefix}{i}"

    def add(
        self,
        kind: str,
        inputs: list[str],
        attrs: dict | None = None,
        params: dict | None = None,
        name: str | None = None,
    ) -> str:
        """Add an IR op of `kind` (see docs/ir.md) reading IR values `inputs`; returns its name.

        Without `name`, ops are named like the built-in ones (s4d0, linear1, relu0, ...).
        """
        if kind not in known_kinds() or kind in NOT_FOR_HANDLERS:
            raise UnsupportedModelError(f"ctx.add: {kind!r} is not an IR op a handler can add (see docs/ir.md)")
        inputs = list(inputs)
        for v in inputs:
            if not isinstance(v, str) or v not in self._graph:
                raise UnsupportedModelError(f"ctx.add({kind!r}): input {v!r} is not an IR value (use ctx.value)")
        op = Op(
            self._graph.fresh_name(name or self._next_name(kind, attrs or {})),
            kind,
            tuple(inputs),
            attrs=dict(attrs or {}),
            params={k: np.asarray(v) for k, v in (params or {}).items()},
        )
        in_shapes = [self._graph.op(v).shape for v in inputs]
        try:
            op.shape = tuple(schema(kind).infer_shape(op, in_shapes))
        except Exception:  # the schema's shape rule read a missing or malformed attr/param
            pass
        problems = op_problems(op, in_shapes)
        if problems:
            raise UnsupportedModelError(f"ctx.add({kind!r}) builds IR that does not verify: " + "; ".join(problems))
        self._graph.add(op)
        self.added.append(op.name)
        return op.name


def apply_handler(
    handler: OpHandler,
    node,
    index,
    graph,
    value_of: dict[str, str],
    states: set[str],
    describe: Callable,
    counters: dict[str, int] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Run `handler` on `node`; returns {ONNX output: IR value} and the IR ops it added.

    Every failure is an UnsupportedModelError naming the node, the op and the handler.
    """
    where = f"{describe(node)}, handler {handler.origin}"
    ctx = HandlerContext(index, graph, value_of, node, states, counters)
    try:
        result = handler.func(node, ctx)
    except SsmcError as e:
        raise UnsupportedModelError(f"{where}: {e}") from None
    except Exception as e:  # user code: whatever it raises is reported as this node's failure
        first = str(e).splitlines()[0] if str(e) else ""
        raise UnsupportedModelError(f"{where} raised {type(e).__name__}: {first}") from None
    outputs = [t.name for t in node.outputs]
    if isinstance(result, str):
        mapping = {outputs[0]: result}
    elif isinstance(result, (list, tuple)):
        if len(result) > len(outputs):
            raise UnsupportedModelError(f"{where}: returned {len(result)} values for {len(outputs)} outputs")
        mapping = {o: v for o, v in zip(outputs, result) if v is not None}
    elif isinstance(result, dict):
        mapping = dict(result)
    else:
        raise UnsupportedModelError(
            f"{where}: returned {type(result).__name__}; return the IR value name of the "
            "output (a str), a list aligned with node.outputs, or a dict"
        )
    for onnx_name, ir_name in mapping.items():
        if onnx_name not in outputs:
            raise UnsupportedModelError(
                f"{where}: mapped {onnx_name!r}, which is not an output of the node (outputs: {outputs})"
            )
        if onnx_name in states:
            raise UnsupportedModelError(
                f"{where}: mapped the recurrent state {onnx_name!r}; states live inside "
                "stateful IR ops (s4d, pool), leave them unmapped"
            )
        if not isinstance(ir_name, str) or ir_name not in graph:
            raise UnsupportedModelError(
                f"{where}: returned {ir_name!r} for output {onnx_name!r}, which is not an "
                "IR value (return what ctx.add or ctx.value gave you)"
            )
    return mapping, list(ctx.added)
