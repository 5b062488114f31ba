"""The IR's text form: prints and parses back to an equal graph.

    ssmc.graph @digits {source = "model.onnx"}
    %x = input() {size = 1} : [1]
    %enc = linear(%x) : [4]
      bias = f32[4] @enc.bias
      weight = f32[4,1] [0.5, -1.25, 2, 0]
    %y = output(%enc) : [4]

One op per line: result name, kind, operands, attributes in braces (sorted),
and the per-token result shape. Tensors follow on indented lines, written
inline (shortest decimal that reads back to the same float32; complex values
as (re, im) pairs) or as `@key`, a reference into a tensor store (how net.lava
keeps them as .npy files). `elide=True` prints a summary instead of values, for
reading only: such text does not parse.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from ssmc.errors import IRError
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import DTYPES

_DTYPE_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


# -- printing ------------------------------------------------------------------
def _fmt_real(v, dtype: np.dtype) -> str:
    if dtype.kind in "iu":
        return str(int(v))
    if dtype == np.float32:
        v = np.float32(v)
    if not np.isfinite(v):
        return str(float(v))  # nan, inf, -inf
    if v == 0:
        return "-0" if np.signbit(v) else "0"
    if 1e-4 <= abs(v) < 1e7:
        return np.format_float_positional(v, unique=True, trim="-")
    return np.format_float_scientific(v, unique=True, trim="-")


def format_tensor_values(arr: np.ndarray) -> str:
    flat = arr.reshape(-1)
    if arr.dtype.kind == "c":
        part = np.float32 if arr.dtype == np.complex64 else np.float64
        items = (
            f"({_fmt_real(part(z.real), np.dtype(part))}, {_fmt_real(part(z.imag), np.dtype(part))})" for z in flat
        )
    else:
        items = (_fmt_real(v, arr.dtype) for v in flat)
    return "[" + ", ".join(items) + "]"


def _type_str(arr: np.ndarray) -> str:
    try:
        name = _DTYPE_NAMES[arr.dtype]
    except KeyError:
        raise IRError(f"tensors of dtype {arr.dtype} have no IR type; use one of {sorted(DTYPES)}") from None
    return f"{name}[{','.join(str(d) for d in arr.shape)}]"


def format_attr(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # 'nan', 'inf', '-inf' read back as floats
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    raise IRError(f"attribute value {v!r} of type {type(v).__name__} has no text form")


def _format_attrs(attrs: dict[str, Any]) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k} = {format_attr(attrs[k])}" for k in sorted(attrs)) + "}"


def _summary(arr: np.ndarray) -> str:
    if arr.size == 0:
        return "<empty>"
    mag = np.abs(arr)
    return f"<{arr.size} values, max |v| {float(mag.max()):.4g}, mean |v| {float(mag.mean()):.4g}>"


def print_graph(g: Graph, tensors: dict[str, np.ndarray] | None = None, elide: bool = False) -> str:
    """The text form of `g`.

    With a `tensors` dict, every tensor is written as `@<op>.<param>` and
    stored in the dict (for net.lava); otherwise values are written inline,
    or summarised when `elide` is set.
    """
    lines = [f"ssmc.graph @{g.name}{_format_attrs(g.attrs)}"]
    for op in g.ops():
        args = ", ".join(f"%{s}" for s in op.inputs)
        shape = ",".join(str(d) for d in op.shape)
        lines.append(f"%{op.name} = {op.kind}({args}){_format_attrs(op.attrs)} : [{shape}]")
        for pname in sorted(op.params):
            arr = np.asarray(op.params[pname])
            if tensors is not None:
                key = f"{op.name}.{pname}"
                tensors[key] = arr
                data = f"@{key}"
            elif elide:
                data = _summary(arr)
            else:
                data = format_tensor_values(arr)
            lines.append(f"  {pname} = {_type_str(arr)} {data}")
    return "\n".join(lines) + "\n"


# -- parsing -------------------------------------------------------------------
_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|(?:inf|nan)(?![A-Za-z0-9_])))
                    |(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[\[\]{},=]))""",
    re.X,
)


def _tokens(text: str, lineno: int) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise IRError(f"line {lineno}: cannot read {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _parse_value(toks: list[tuple[str, str]], i: int, lineno: int) -> tuple[Any, int]:
    kind, tok = toks[i]
    if kind == "str":
        return json.loads(tok), i + 1
    if kind == "num":
        if re.search(r"[.eEna]", tok):
            return float(tok), i + 1
        return int(tok), i + 1
    if kind == "word" and tok in ("true", "false"):
        return tok == "true", i + 1
    if tok == "[":
        items, i = [], i + 1
        while toks[i][1] != "]":
            v, i = _parse_value(toks, i, lineno)
            items.append(v)
            if toks[i][1] == ",":
                i += 1
        return tuple(items), i + 1
    raise IRError(f"line {lineno}: unexpected {tok!r} in attribute value")


def _parse_attrs(text: str, lineno: int) -> dict[str, Any]:
    toks = _tokens(text, lineno)
    if not toks:
        return {}
    try:
        if toks[0][1] != "{" or toks[-1][1] != "}":
            raise IRError(f"line {lineno}: attributes must be written {{name = value, ...}}")
        attrs, i = {}, 1
        while i < len(toks) - 1:
            kind, key = toks[i]
            if kind != "word" or toks[i + 1][1] != "=":
                raise IRError(f"line {lineno}: expected 'name = value' in attributes, got {key!r}")
            value, i = _parse_value(toks, i + 2, lineno)
            if key in attrs:
                raise IRError(f"line {lineno}: attribute {key!r} given twice")
            attrs[key] = value
            if toks[i][1] == ",":
                i += 1
            elif i != len(toks) - 1:
                raise IRError(f"line {lineno}: expected ',' or '}}' in attributes")
        return attrs
    except IndexError:
        raise IRError(f"line {lineno}: unterminated attributes") from None


_OP_LINE = re.compile(
    r"^%(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(?P<kind>[A-Za-z_][A-Za-z0-9_.]*)"
    r"\((?P<args>[^)]*)\)(?P<attrs>.*?):\s*\[(?P<shape>[-\d,\s]*)\]\s*$"
)
_PARAM_LINE = re.compile(
    r"^\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<dtype>[a-z0-9]+)"
    r"\[(?P<shape>[\d,\s]*)\]\s+(?P<data>.*)$"
)
_HEADER = re.compile(r"^ssmc\.graph\s+@(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<attrs>.*)$")
_NUMBER = re.compile(r"[-+]?(?:inf|nan|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)")


def _parse_shape(text: str, lineno: int) -> tuple[int, ...]:
    text = text.strip()
    if not text:
        return ()
    try:
        return tuple(int(d) for d in text.split(","))
    except ValueError:
        raise IRError(f"line {lineno}: bad shape [{text}]") from None


def _parse_tensor(m: re.Match, lineno: int, tensors: dict[str, np.ndarray] | None) -> np.ndarray:
    dtype_name, data = m["dtype"], m["data"].strip()
    if dtype_name not in DTYPES:
        raise IRError(f"line {lineno}: unknown tensor type {dtype_name!r}; known: {sorted(DTYPES)}")
    dtype = np.dtype(DTYPES[dtype_name])
    shape = _parse_shape(m["shape"], lineno)
    if data.startswith("@"):
        key = data[1:]
        if tensors is None or key not in tensors:
            raise IRError(f"line {lineno}: tensor @{key} is not in the tensor store")
        arr = np.asarray(tensors[key])
        if arr.dtype != dtype or arr.shape != shape:
            raise IRError(
                f"line {lineno}: tensor @{key} is {arr.dtype}{list(arr.shape)}, the text says {dtype_name}{list(shape)}"
            )
        return arr
    if data.startswith("<"):
        raise IRError(f"line {lineno}: elided tensor {data}: print the IR without elide to round-trip it")
    if not (data.startswith("[") and data.endswith("]")):
        raise IRError(f"line {lineno}: tensor data must be [values] or @ref")
    numbers = _NUMBER.findall(data)
    count = int(np.prod(shape, dtype=np.int64)) * (2 if dtype.kind == "c" else 1)
    if len(numbers) != count:
        raise IRError(f"line {lineno}: {dtype_name}{list(shape)} needs {count} numbers, found {len(numbers)}")
    if dtype.kind in "iu":
        return np.array([int(x) for x in numbers], dtype=dtype).reshape(shape)
    part = np.float32 if dtype in (np.float32, np.complex64) else np.float64
    vals = np.array([float(x) for x in numbers]).astype(part)
    if dtype.kind != "c":
        return vals.reshape(shape)
    arr = np.empty(len(vals) // 2, dtype=dtype)
    arr.real, arr.imag = vals[0::2], vals[1::2]
    return arr.reshape(shape)


def _strip_comment(line: str) -> str:
    """Drop a `// comment`, but not a `//` inside a quoted string (e.g. a URL)."""
    in_string = escaped = False
    for i, ch in enumerate(line):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif line.startswith("//", i):
            return line[:i]
    return line


def parse_graph(text: str, tensors: dict[str, np.ndarray] | None = None) -> Graph:
    """Read the text form back into a Graph (not verified: call `verify`)."""
    g: Graph | None = None
    current: Op | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).rstrip()
        if not line.strip():
            continue
        if g is None:
            m = _HEADER.match(line)
            if not m:
                raise IRError(f"line {lineno}: expected 'ssmc.graph @name', got {line.strip()[:40]!r}")
            g = Graph(m["name"], _parse_attrs(m["attrs"], lineno))
            continue
        m = _PARAM_LINE.match(line)
        if m:
            if current is None:
                raise IRError(f"line {lineno}: tensor line before any op")
            if m["name"] in current.params:
                raise IRError(f"line {lineno}: tensor {m['name']!r} of %{current.name} given twice")
            current.params[m["name"]] = _parse_tensor(m, lineno, tensors)
            continue
        m = _OP_LINE.match(line)
        if not m:
            raise IRError(f"line {lineno}: cannot parse {line.strip()[:60]!r}")
        args = [a.strip() for a in m["args"].split(",") if a.strip()]
        for a in args:
            if not a.startswith("%"):
                raise IRError(f"line {lineno}: operand {a!r} must be written %name")
        current = Op(
            name=m["name"],
            kind=m["kind"],
            inputs=tuple(a[1:] for a in args),
            attrs=_parse_attrs(m["attrs"], lineno),
            shape=_parse_shape(m["shape"], lineno),
        )
        try:
            g.add(current)
        except IRError as e:
            raise IRError(f"line {lineno}: {e}") from None
    if g is None:
        raise IRError("empty IR text: expected 'ssmc.graph @name'")
    return g
