"""Passes: the base class, the registry and pipelines.

A pass is a frozen dataclass with a kebab-case `name`, typed option fields and
`run(graph) -> (graph, changed)`. A pass may assume its input verifies and must
leave a graph that verifies; the pass manager checks that after every pass
(unless told not to). Logic lives in plain functions the pass calls, so it can
be tested on its own.

Pipelines are strings: ``"canonicalize,discretize{method=zoh}"``. Unknown
passes or options are rejected before anything runs, and a pipeline prints
back to the same string (it is recorded in net.lava for replay). A string option
holding `,{}="` is written as a JSON string: ``sigma-delta{kinds="cpx,relu"}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, ClassVar

from ssmc import interrupts
from ssmc.entry_points import installed
from ssmc.errors import PassError, SsmcError
from ssmc.ir.graph import Graph
from ssmc.ir.verify import verify
from ssmc.mapping import capacity as _capacity  # noqa: F401 (registers the verifier's check of placed graphs)


@dataclass(frozen=True)
class Pass:
    """Base of all passes. Subclasses set `name` and implement `run`."""

    name: ClassVar[str] = ""
    #: "transform" changes the graph; "analysis" only reports and must not change it; "output" writes
    #: files of the compiled net (net.lava extras) from the graph, through `emit`, and changes nothing.
    kind: ClassVar[str] = "transform"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        raise NotImplementedError

    def emit(self, graph: Graph) -> dict[str, bytes]:
        """An output step's files (net.lava extra/ path -> bytes); called instead of `run`."""
        raise NotImplementedError

    def spec(self) -> str:
        """This pass with its non-default options, as pipeline text."""
        opts = []
        for f in option_fields(type(self)):
            value = getattr(self, f.name)
            if value != f.default:
                opts.append(f"{f.name.replace('_', '-')}={_format_option(value)}")
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


def check_time_limit(pass_name: str, seconds: float) -> None:
    """Refuse a time budget that is not a number of seconds above 0 (nan, inf and negatives ran as nothing or
    forever)."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise PassError(
            f"{pass_name}: time-limit = {seconds}; give a number of seconds above 0, e.g. {pass_name}{{time-limit=10}}"
        )


def option_fields(cls) -> list[dataclasses.Field]:
    """The options a pipeline string may set (data fields such as calibration are not options)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("option", True)]


def data_field(doc: str):
    """A pass field filled by the driver (e.g. calibration data), not from pipeline text."""
    return dataclasses.field(default=None, compare=False, repr=False, metadata={"option": False, "doc": doc})


def with_data(passes: list["Pass"], **data) -> list["Pass"]:
    """Give every pass that declares a data field of these names its value."""
    out = []
    for p in passes:
        names = {f.name for f in dataclasses.fields(p) if not f.metadata.get("option", True)}
        out.append(dataclasses.replace(p, **{k: v for k, v in data.items() if k in names}))
    return out


def _format_option(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    text = str(v)
    # A value the parser would split or strip is written as a JSON string, so every spec parses back.
    if any(c in text for c in ',{}="\\') or text != text.strip() or not text.isprintable():
        return json.dumps(text)
    return text


_REGISTRY: dict[str, Callable[[], type[Pass]]] = {}
_ORIGIN: dict[str, str] = {}  # pass name -> who registered it (for duplicate errors)
ENTRY_POINT_GROUP = "ssmc.passes"
_plugins_loaded = False


def register_pass(name: str, loader: Callable[[], type[Pass]], origin: str = "ssmc") -> None:
    """Register a pass under `name`; `loader` imports and returns its class."""
    if name in _REGISTRY:
        raise PassError(f"a pass named {name!r} is registered twice: by {_ORIGIN.get(name, '?')} and by {origin}")
    _REGISTRY[name] = loader
    _ORIGIN[name] = origin


def register(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a Pass subclass defined in your own code usable by name."""
    if not cls.name:
        raise PassError(f"{cls.__name__} needs a `name` to be registered")
    register_pass(cls.name, lambda: cls, origin=f"{cls.__module__}.{cls.__qualname__}")
    return cls


def _load_plugins() -> None:
    """Register the passes other installed packages declare in the `ssmc.passes` entry-point group.

    The entry point's name is the pass name; its value (module:Class) is imported only when
    the pass is used or listed.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep, package in installed(ENTRY_POINT_GROUP):
        origin = f"package {package} ({ep.value})"
        register_pass(ep.name, _entry_point_loader(ep, origin), origin=origin)


def _entry_point_loader(ep, origin: str) -> Callable[[], type[Pass]]:
    def load() -> type[Pass]:
        try:
            cls = ep.load()
        except Exception as e:  # a broken plugin must not look like an ssmc bug
            raise PassError(f"pass {ep.name!r} from {origin} failed to import: {type(e).__name__}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, Pass)) or cls.name != ep.name:
            raise PassError(
                f"entry point {ep.name!r} from {origin} must name a Pass subclass whose name is {ep.name!r}"
            )
        return cls

    return load


def available_passes() -> dict[str, type[Pass]]:
    """Every registered pass (built-in and plugins), loaded, by name."""
    _load_plugins()
    return {name: load_pass(name) for name in sorted(_REGISTRY)}


def load_pass(name: str) -> type[Pass]:
    _load_plugins()
    try:
        loader = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise PassError(f"unknown pass {name!r}; known passes: {known} (see `ssmc passes`)") from None
    return loader()


_NAME = re.compile(r"\s*([A-Za-z0-9_\-]+)\s*")
_SYNTAX = "write 'a,b{option=value}' (quote a value holding , { } = or \" as a JSON string)"


def _split_outside_quotes(text: str, sep: str, stop: str = "") -> tuple[list[str], int]:
    """Split `text` at `sep` outside double-quoted strings, up to the first `stop` outside quotes.

    Returns the pieces and the index just past the stop character (len(text) + 1 if none was found).
    """
    pieces, start, i, quoted = [], 0, 0, False
    while i < len(text):
        c = text[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c in stop:
            pieces.append(text[start:i])
            return pieces, i + 1
        elif not quoted and c == sep:
            pieces.append(text[start:i])
            start = i + 1
        i += 1
    pieces.append(text[start:])
    return pieces, len(text) + 1


def parse_pipeline(text: str) -> list[Pass]:
    """Parse ``"a,b{opt=1,flag=true}"`` into pass instances, checking every name and option."""
    if not isinstance(text, str):
        raise PassError(f"a pipeline is text such as 'discretize,fuse-complex-pairs', got {type(text).__name__}")
    passes, pos, text = [], 0, text.strip()
    if text.endswith(",") or text.startswith(","):
        raise PassError(f"pipeline {text!r} has an empty item; {_SYNTAX}")
    while pos < len(text):
        m = _NAME.match(text, pos)
        if not m:
            raise PassError(f"cannot parse pipeline at {text[pos : pos + 30]!r}; {_SYNTAX}")
        pos, options = m.end(), ""
        if text.startswith("{", pos):
            (options,), end = _split_outside_quotes(text[pos + 1 :], sep="", stop="}")
            if end > len(text) - pos - 1:
                raise PassError(f"cannot parse pipeline at {text[pos : pos + 30]!r}: no closing '}}'; {_SYNTAX}")
            pos += 1 + end
        tail = re.compile(r"\s*(?:,|$)").match(text, pos)
        if not tail or (tail.end() == pos and pos < len(text)):
            raise PassError(f"cannot parse pipeline at {text[pos : pos + 30]!r}; {_SYNTAX}")
        pos = tail.end()
        passes.append(_make_pass(m.group(1), options))
    return passes


def _make_pass(name: str, options: str) -> Pass:
    cls = load_pass(name)
    fields = {f.name: f for f in option_fields(cls)}
    kwargs = {}
    items, _ = _split_outside_quotes(options, sep=",")
    for item in filter(None, (s.strip() for s in items)):
        if "=" not in item:
            raise PassError(f"pass {cls.name}: option {item!r} must be written name=value")
        key, value = (s.strip() for s in item.split("=", 1))
        field = fields.get(key.replace("-", "_"))
        if field is None:
            known = ", ".join(k.replace("_", "-") for k in fields) or "none"
            raise PassError(f"pass {cls.name}: unknown option {key!r} (options: {known})")
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                raise PassError(f"pass {cls.name}: option {key}={value} is not a valid JSON string") from None
            if not isinstance(value, str):
                raise PassError(f"pass {cls.name}: option {key} must be a quoted string")
        kwargs[field.name] = _convert_option(cls.name, key, value, field.type)
    return cls(**kwargs)


def _convert_option(pass_name: str, key: str, value: str, type_) -> object:
    type_name = type_ if isinstance(type_, str) else getattr(type_, "__name__", str(type_))
    try:
        if type_name == "bool":
            if value.lower() not in ("true", "false"):
                raise ValueError
            return value.lower() == "true"
        if type_name == "int":
            return int(value)
        if type_name == "float":
            return float(value)
        return value
    except ValueError:
        raise PassError(f"pass {pass_name}: option {key}={value!r} is not a valid {type_name}") from None


def pipeline_spec(passes: list[Pass]) -> str:
    return ",".join(p.spec() for p in passes)


@dataclass
class PassRecord:
    name: str
    spec: str
    changed: bool
    seconds: float
    notes: list[str] = dataclasses.field(default_factory=list)
    outputs: dict[str, bytes] = dataclasses.field(default_factory=dict)  # an output step's files


#: Passes say what they decided (e.g. which linears they folded) through this logger;
#: the pass manager keeps those lines in the pass's record (and net.lava's report).
log = logging.getLogger("ssmc.passes")


@contextlib.contextmanager
def forward_info(logger: logging.Logger, sink: Callable[[str], None]):
    """Pass every INFO line `logger` emits to `sink` while the block runs (level restored after)."""

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sink(record.getMessage())

    handler, old_level = Forward(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def run_pipeline(
    graph: Graph,
    passes: list[Pass],
    verify_each: bool = True,
    after_pass: Callable[[Pass, Graph, bool], None] | None = None,
    before_pass: Callable[[Pass], None] | None = None,
) -> tuple[Graph, list[PassRecord]]:
    """Run `passes` in order; call `before_pass` (progress), verify after each (default) and call `after_pass`."""
    records = []
    for p in passes:
        interrupts.check()  # a Ctrl-C a library swallowed (see ssmc.interrupts) stops here, between passes
        if before_pass is not None:
            before_pass(p)
        start = time.perf_counter()
        notes: list[str] = []
        outputs: dict[str, bytes] = {}
        with forward_info(log, notes.append):
            if p.kind == "output":
                outputs, changed = p.emit(graph), False
            else:
                graph, changed = p.run(graph)
        seconds = time.perf_counter() - start
        if p.kind == "analysis" and changed:
            raise PassError(f"analysis pass {p.name} reported a change; analyses must not modify the IR")
        if verify_each and p.kind != "output":  # an output step leaves the graph as it was
            try:
                verify(graph)
            except SsmcError as e:
                raise PassError(f"after pass {p.name}: " + "; ".join(s.strip() for s in str(e).splitlines())) from None
        records.append(PassRecord(p.name, p.spec(), changed, seconds, notes, outputs))
        if after_pass is not None:
            after_pass(p, graph, changed)
    return graph, records
