"""CompileConfig: everything that shapes a compile, as one typed record.

`ssmc.compile`'s keywords, the CLI's compile flags, a config file (docs/config.md)
and net.lava's manifest (docs/net_lava.md, key `config`) all are this one record:
the pipeline string, the passes to skip or stop after, the readout, the bit-widths
(net-wide and per layer), sigma-delta, the target and the files that went in
(calibration data, target description, plugins), each by base name and sha256,
never by path, so the same compile gives the same bytes from any folder.

`ssmc.passes.build_pipeline(config)` turns it into the passes that run; nothing
else decides the pipeline. A config round-trips JSON exactly (`to_json` /
`from_json`), and every field is checked on the way in: a bad key or value
raises ConfigError naming the key and what it allows.

`None` means "not given": the pass's own default applies (the pass documents it).

A config file is TOML (docs/config.md): `to_toml` writes every field, commented with
what it allows and its default (a key not set is written commented out), and a
table per layer; `read_config_file` reads one (tomli on Python 3.10) as the
untrusted input it is: a regular file of at most CONFIG_FILE_BYTES, every key checked.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from ssmc.data import read_small_file
from ssmc.errors import ConfigError
from ssmc.widths import OPTIONS as WIDTH_OPTIONS

#: The float part of the pipeline: S4D layers become complex neuron pairs between linears.
FLOAT_PIPELINE = "canonicalize,discretize,rescale-states,fuse-complex-pairs,fold-linear"
#: What `ssmc compile` runs when no --passes is given: the float part, quantization (LayerNorm on
#: neurons), then mapping onto cores.
DEFAULT_PIPELINE = FLOAT_PIPELINE + ",assign-bitwidths,partition,place"
#: The default with LayerNorm approximated by frozen statistics (freeze-norms): no norm neurons or
#: latency, but one calibrated gain for every token (docs/fixed_point.md).
FROZEN_NORMS_PIPELINE = FLOAT_PIPELINE + ",freeze-norms,assign-bitwidths,partition,place"

READOUTS = ("none", "sum", "mean", "last")
WEIGHT_EXP_MODES = ("group", "row", "auto")
#: Net-wide and per-layer widths: field -> (lowest, highest, the assign-bitwidths default), from ssmc.widths.
WIDTHS = {
    k: (o.lo, o.hi, o.default)
    for k, o in WIDTH_OPTIONS.items()
    if k in ("weight_bits", "coef_bits", "state_bits", "message_bits")
}
#: The short keys of --layer-bits ("s4d0:weight=6/coef=12") -> width field.
LAYER_WIDTH_KEYS = {"weight": "weight_bits", "coef": "coef_bits", "state": "state_bits", "message": "message_bits"}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LAYER_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class FileRecord:
    """A file that went into a compile: its base name (or a built-in name) and the sha256 of its bytes.

    As an input (keyword, flag, config file) `file` may be a path; compile records the base name.
    An empty sha256 checks nothing (a hand-written config); compile records the real one."""

    file: str
    sha256: str = ""

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256}


@dataclass(frozen=True)
class LayerWidths:
    """Widths for one layer, named as `ssmc inspect` names it; None: the net-wide width."""

    name: str
    weight_bits: int | None = None
    coef_bits: int | None = None
    state_bits: int | None = None
    message_bits: int | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CompileConfig:
    """Everything that shapes a compile (see the module doc; docs/config.md lists every field)."""

    passes: str = DEFAULT_PIPELINE
    """The pass pipeline (`ssmc passes`); the output steps are added after it."""
    skip: tuple[str, ...] = ()
    """Passes of the pipeline to leave out."""
    stop_after: str | None = None
    """End the pipeline after this pass."""
    readout: str = "none"
    """How outputs over tokens become one: none (per token), sum, mean (a running pool op), last."""
    calibration: FileRecord | None = None
    """The calibration data: file name and sha256 (the data itself is passed with --calibrate)."""
    weight_bits: int | None = None
    """Synapse weight bits."""
    coef_bits: int | None = None
    """Complex-pair coefficient bits."""
    state_bits: int | None = None
    """Neuron state bits."""
    message_bits: int | None = None
    """Graded message bits."""
    layers: tuple[LayerWidths, ...] = ()
    """Per-layer widths (--layer-bits), in the order given."""
    weight_exp: str | None = None
    """Weight exponents: group (one per linear), row (one per output row), auto (row where it helps)."""
    sigma_delta: float | None = None
    """Send changes of at least this fraction of full scale (sigma-delta pass after assign-bitwidths)."""
    target: FileRecord | None = None
    """Target description: a built-in name or a JSON file, with its sha256 (not set: the shipped loihi2)."""
    board: str | None = None
    """Board of the target (oheo-gulch, kapoho-point, ...)."""
    chips: int | None = None
    """Number of chips (overrides the board's)."""
    max_neurons_per_core: int | None = None
    """At most this many neurons per core (spread for speed)."""
    plugins: tuple[FileRecord, ...] = ()
    """Plugin files imported first (they register op handlers or passes), each by name and sha256."""

    def __post_init__(self):
        validate(self)
        # a layer table with no width set overrides nothing: dropped, so it cannot change the pipeline text
        object.__setattr__(
            self, "layers", tuple(lw for lw in self.layers if any(getattr(lw, k) is not None for k in WIDTHS))
        )

    # -- JSON -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every field, JSON-ready (None as null), in field order."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (FileRecord, LayerWidths)):
                v = v.to_json()
            elif isinstance(v, tuple):
                v = [x.to_json() if isinstance(x, (FileRecord, LayerWidths)) else x for x in v]
            out[f.name] = v
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, data: str | dict, where: str = "config") -> "CompileConfig":
        """The config a to_json()/to_dict() output (or a config file's table) describes; every key and value
        checked (ConfigError naming `where` and the key)."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except (ValueError, RecursionError) as e:
                raise ConfigError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: must be an object of config keys ({', '.join(FIELD_NAMES)})")
        unknown = sorted(set(data) - set(FIELD_NAMES))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; keys: {', '.join(FIELD_NAMES)}")
        return cls(**{k: _convert(k, v, where) for k, v in data.items()})

    # -- keyword options (ssmc.compile, the CLI) --------------------------------
    def with_options(self, **options) -> "CompileConfig":
        """This config with the given compile keywords set (None: not given, the config's value stays).
        Keywords are the field names, plus layer_bits ("s4d0:weight=6/coef=12;linear1:weight=4") for
        `layers`, and target as a path or built-in name."""
        unknown = sorted(set(options) - set(KEYWORDS))
        if unknown:
            raise ConfigError(f"unknown compile option {unknown[0]!r}; options: {', '.join(KEYWORDS)}")
        given = {k: v for k, v in options.items() if v is not None}
        if "layer_bits" in given:
            given["layers"] = parse_layer_bits(given.pop("layer_bits"))
        if "target" in given and not isinstance(given["target"], FileRecord):
            if not isinstance(given["target"], (str, os.PathLike)):
                raise ConfigError(f"config target = {given['target']!r}: a target JSON file or a built-in name")
            given["target"] = FileRecord(os.fspath(given["target"]))
        return self.from_json({**self.to_dict(), **{k: _to_plain(v) for k, v in given.items()}})

    @property
    def layer_bits(self) -> str:
        """`layers` as assign-bitwidths' layer-bits option text."""
        return ";".join(
            f"{lw.name}:"
            + "/".join(
                f"{short}={getattr(lw, key)}" for short, key in LAYER_WIDTH_KEYS.items() if getattr(lw, key) is not None
            )
            for lw in self.layers
        )

    def widths(self) -> dict:
        """The width options given (assign-bitwidths' option names), for the pass."""
        out = {k: getattr(self, k) for k in (*WIDTHS, "weight_exp") if getattr(self, k) is not None}
        if self.layers:
            out["layer_bits"] = self.layer_bits
        return out

    def mapping(self) -> dict:
        """The target options given (partition's option names; the target by its recorded name)."""
        out = {k: getattr(self, k) for k in ("board", "chips", "max_neurons_per_core") if getattr(self, k) is not None}
        if self.target is not None:
            out["target"] = self.target.file
        return out


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(CompileConfig))
KEYWORDS = tuple(n for n in FIELD_NAMES if n != "layers") + ("layer_bits",)


def _to_plain(v):
    if isinstance(v, (FileRecord, LayerWidths)):
        return v.to_json()
    if isinstance(v, (tuple, list)):
        return [_to_plain(x) for x in v]
    return v


def parse_layer_bits(text: str) -> tuple[LayerWidths, ...]:
    """--layer-bits text ("s4d0:weight=6/coef=12;linear1:weight=4") as LayerWidths, in order; a layer
    named twice is one entry (later keys win, as in assign-bitwidths)."""
    if not isinstance(text, str):
        raise ConfigError(f"layer_bits must be text like 's4d0:weight=6/coef=12;linear1:weight=4', not {text!r}")
    layers: dict[str, dict] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, _, spec = item.partition(":")
        name = name.strip()
        layers.setdefault(name, {"name": name})
        for pair in filter(None, (p.strip() for p in spec.split("/"))):
            key, _, value = pair.partition("=")
            if key.strip() not in LAYER_WIDTH_KEYS or not value.strip().lstrip("-").isdigit():
                raise ConfigError(
                    f"layer_bits {pair!r} for {name}: write KEY=BITS with KEY one of {', '.join(LAYER_WIDTH_KEYS)}"
                )
            layers[name][LAYER_WIDTH_KEYS[key.strip()]] = int(value)
    return tuple(_convert_layer(d, "layer_bits") for d in layers.values())


# -- conversion and checks ---------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _record(v, key: str, where: str) -> FileRecord:
    if isinstance(v, FileRecord):
        return v
    if not isinstance(v, dict) or set(v) - {"file", "sha256"} or "file" not in v:
        raise ConfigError(f'{where}: {key} must be a table {{file = "name", sha256 = "<64 hex digits>"}}, not {v!r}')
    return FileRecord(v["file"], v.get("sha256", ""))


def _convert_layer(v, where: str) -> LayerWidths:
    if isinstance(v, LayerWidths):
        return v
    allowed = ("name", *WIDTHS)
    if not isinstance(v, dict) or "name" not in v:
        raise ConfigError(f"{where}: layers must hold tables with a name and widths ({', '.join(allowed)})")
    unknown = sorted(set(v) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: layer {v.get('name')!r}: unknown key {unknown[0]!r}; keys: {', '.join(allowed)}")
    return LayerWidths(**v)


def _convert(key: str, v: Any, where: str):
    """JSON values -> field types (records, tuples, floats); the checks are validate()'s."""
    if v is None:
        return None
    if key in ("calibration", "target"):
        return _record(v, key, where)
    if key == "plugins":
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{where}: plugins must be a list of {{file, sha256}} tables, not {v!r}")
        return tuple(_record(x, key, where) for x in v)
    if key == "layers":
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{where}: layers must be a list of tables, not {v!r}")
        return tuple(_convert_layer(x, where) for x in v)
    if key == "skip":
        if isinstance(v, str) or not isinstance(v, (list, tuple)):
            raise ConfigError(f"{where}: skip must be a list of pass names, not {v!r}")
        return tuple(v)
    if key == "sigma_delta" and _is_int(v):
        return float(v)
    return v


def _fail(key: str, value, allowed: str) -> None:
    raise ConfigError(f"config {key} = {value!r}: {allowed}")


def _check_width(key: str, value, where: str = "") -> None:
    lo, hi, default = WIDTHS[key]
    if value is not None and not (_is_int(value) and lo <= value <= hi):
        raise ConfigError(
            f"config {where}{key} = {value!r} is outside what the target supports: a whole number "
            f"{lo}..{hi} (default {default})"
        )


def _check_record(key: str, r) -> None:
    if not isinstance(r, FileRecord):
        _fail(key, r, "a {file, sha256} record")
    if not isinstance(r.file, str) or not r.file or "\0" in r.file:
        _fail(f"{key}.file", r.file, "a file or built-in name (non-empty text)")
    if not isinstance(r.sha256, str) or (r.sha256 and not _HEX64.fullmatch(r.sha256)):
        _fail(f"{key}.sha256", r.sha256, "64 lowercase hex digits (or empty: not checked)")


def validate(c: CompileConfig) -> None:
    """Raise ConfigError naming the first field with a value it does not allow."""
    if not isinstance(c.passes, str):
        _fail("passes", c.passes, "a pipeline string such as 'canonicalize,discretize' (see `ssmc passes`)")
    if not isinstance(c.skip, tuple) or not all(isinstance(s, str) and s for s in c.skip):
        _fail("skip", c.skip, "a list of pass names of the pipeline")
    if c.stop_after is not None and (not isinstance(c.stop_after, str) or not c.stop_after):
        _fail("stop_after", c.stop_after, "a pass name of the pipeline")
    if c.readout not in READOUTS:
        _fail("readout", c.readout, f"one of {', '.join(READOUTS)}")
    for key in WIDTHS:
        _check_width(key, getattr(c, key))
    if not isinstance(c.layers, tuple):
        _fail("layers", c.layers, "a list of per-layer tables")
    for lw in c.layers:
        if not isinstance(lw, LayerWidths) or not isinstance(lw.name, str) or not _LAYER_NAME.fullmatch(lw.name):
            _fail("layers.name", getattr(lw, "name", lw), "a layer name as `ssmc inspect` shows it (e.g. s4d0)")
        for key in WIDTHS:
            _check_width(key, getattr(lw, key), f"layers.{lw.name}.")
    names = [lw.name for lw in c.layers]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        _fail("layers", twice[0], "each layer once (one table per layer name)")
    if c.weight_exp is not None and c.weight_exp not in WEIGHT_EXP_MODES:
        _fail("weight_exp", c.weight_exp, f"one of {', '.join(WEIGHT_EXP_MODES)}")
    sd = c.sigma_delta
    if sd is not None and (not isinstance(sd, float) or not math.isfinite(sd) or not 0.0 <= sd < 1.0):
        _fail("sigma_delta", sd, "a number in [0, 1): a fraction of each group's full scale (0: every change)")
    for key in ("calibration", "target"):
        if getattr(c, key) is not None:
            _check_record(key, getattr(c, key))
    if not isinstance(c.plugins, tuple):
        _fail("plugins", c.plugins, "a list of {file, sha256} records")
    for p in c.plugins:
        _check_record("plugins", p)
    if c.board is not None and (not isinstance(c.board, str) or not c.board):
        _fail("board", c.board, "a board name of the target (oheo-gulch, kapoho-point, ...)")
    for key in ("chips", "max_neurons_per_core"):
        v = getattr(c, key)
        if v is not None and not (_is_int(v) and v >= 1):
            _fail(key, v, "a whole number of at least 1 (leave it out for the target's own)")


def from_options(options: dict, where: str = "options") -> CompileConfig:
    """The config an older net.lava's `options` object (format 2 and before) describes."""
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: must be an object")
    opts = dict(options)
    cal = opts.pop("calibration", "none")
    if isinstance(cal, str) and cal != "none":
        name, _, digest = cal.rpartition(" sha256:")
        opts["calibration"] = {"file": name or cal, "sha256": digest if name else ""}
    if isinstance(opts.get("target"), str):  # recorded as given (a path) before the config: keep its name
        opts["target"] = {"file": opts["target"].replace("\\", "/").rsplit("/", 1)[-1], "sha256": ""}
    layer_bits = opts.pop("layer_bits", None)
    if layer_bits is not None:
        opts["layers"] = [lw.to_json() for lw in parse_layer_bits(layer_bits)]
    return CompileConfig.from_json(opts, where)


# -- config files (TOML) -----------------------------------------------------------
CONFIG_FILE_BYTES = 1 << 20  # a config file is a few KiB; anything bigger is not one
#: What each top-level key allows and defaults to, for the file's comments (the field docstrings say what it is).
ALLOWED = {
    "passes": "a pipeline string; `ssmc passes` lists the passes and their options",
    "skip": "a list of pass names of the pipeline",
    "stop_after": "a pass name of the pipeline; default: run them all",
    "readout": f"one of {', '.join(READOUTS)}",
    "calibration": "{ file = NAME, sha256 = HEX }: what --calibrate gave; a file cannot supply the data, so a "
    "config naming it needs --calibrate",
    "weight_exp": f"one of {', '.join(WEIGHT_EXP_MODES)}; default: auto",
    "sigma_delta": "a number in [0, 1); default: off (every value sent)",
    "target": '{ file = NAME_OR_PATH, sha256 = HEX or "" }: a built-in name (loihi2) or a target JSON file; '
    "default: the shipped loihi2",
    "board": "a board of the target (oheo-gulch, kapoho-point, ...); default: the target's",
    "chips": "a whole number >= 1; default: the board's",
    "max_neurons_per_core": "a whole number >= 1; default: the core's capacity",
    "plugins": "[{ file = NAME, sha256 = HEX }, ...]: what --plugin gave; a config never runs code, so one naming "
    "plugins needs --plugin",
    **{k: f"{lo}..{hi}; default: {default}" for k, (lo, hi, default) in WIDTHS.items()},
}
EXAMPLES = {
    "stop_after": "fold-linear",
    "calibration": FileRecord("calibration.npz", ""),
    "weight_exp": "auto",
    "sigma_delta": 0.001,
    "target": FileRecord("loihi2", ""),
    "board": "oheo-gulch",
    "chips": 1,
    "max_neurons_per_core": 512,
    **{k: default for k, (_, _, default) in WIDTHS.items()},
}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, FileRecord):
        return f"{{ file = {_toml_value(v.file)}, sha256 = {_toml_value(v.sha256)} }}"
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_\-]+", name) else json.dumps(name)


def to_toml(config: CompileConfig, layer_names=()) -> str:
    """`config` as a commented TOML config file: every field with what it allows and its default (a field not
    set is written commented out), then a [layers.NAME] table for each of `layer_names` (the model's layers
    as `ssmc inspect` names them) and each layer the config sets. Deterministic: same config, same text."""
    docs = _field_docs()
    out = [
        "# ssmc compile configuration (docs/config.md): ssmc compile MODEL --config THIS_FILE",
        "# Flags given to ssmc compile override it. A commented-out key is not set: the default applies.",
        "",
    ]
    for f in dataclasses.fields(CompileConfig):
        if f.name == "layers":
            continue
        doc = " ".join(docs.get(f.name, f.name).split())
        value = getattr(config, f.name)
        out.append(f"# {doc}")
        if f.name in ALLOWED:
            out.append(f"# Allowed: {ALLOWED[f.name]}.")
        if value is None:
            out.append(f"# {f.name} = {_toml_value(EXAMPLES[f.name])}")
        else:
            out.append(f"{f.name} = {_toml_value(value)}")
        out.append("")
    by_name = {lw.name: lw for lw in config.layers}
    names = list(dict.fromkeys([*layer_names, *by_name]))
    if names:
        out.append("# Per-layer widths (names as `ssmc inspect` shows them); a key not set takes the net-wide width.")
    for name in names:
        lw = by_name.get(name, LayerWidths(name))
        out.append(f"[layers.{_toml_key(name)}]")
        for key, (lo, hi, _) in WIDTHS.items():
            value = getattr(lw, key)
            out.append(f"{key} = {value}" if value is not None else f"# {key} = {WIDTHS[key][2]}  # {lo}..{hi}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _field_docs() -> dict[str, str]:
    """Each field's docstring (the string under it in the class body; none where the source is not installed)."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(CompileConfig))
    except (OSError, TypeError):
        return {}
    body, docs = tree.body[0].body, {}
    for prev, node in zip(body, body[1:]):
        if isinstance(prev, ast.AnnAssign) and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docs[prev.target.id] = node.value.value
    return docs


def from_toml(text: str, where: str = "config file") -> CompileConfig:
    """The config a TOML text (a config file) describes; a bad key or value raises ConfigError naming `where`,
    the key and what it allows."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the backport of the standard library's reader
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    layers = data.pop("layers", {})
    if not isinstance(layers, dict) or not all(isinstance(v, dict) for v in layers.values()):
        raise ConfigError(f"{where}: layers must be tables [layers.NAME] of widths ({', '.join(WIDTHS)})")
    if layers:
        data["layers"] = [{"name": name, **widths} for name, widths in layers.items()]
    try:
        return CompileConfig.from_json(data, where)
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


def read_config_file(path) -> CompileConfig:
    """A config file (TOML, at most CONFIG_FILE_BYTES, a regular file: untrusted input like any other)."""
    path = os.fspath(path)
    data = read_small_file(path, CONFIG_FILE_BYTES, "config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: a config file is UTF-8 text (TOML); this is not one") from None
    return from_toml(text, path)
