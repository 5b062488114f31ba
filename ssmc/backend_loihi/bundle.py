"""net.lava, format v2: a versioned, self-describing, deterministic zip.

Entries (all but the first two listed with their sha256 in the manifest):

    manifest.json     format name and version, ssmc version, source model hash,
                      pipeline, config (ssmc.config.CompileConfig), entry checksums
    manifest.sha256   the manifest's own sha256, as `sha256sum` writes it (new in format 2)
    ir.txt            the compiled IR text form, tensors written as @references
    tensors/<k>.npy   one .npy per tensor (no pickles)
    model/ir.txt      optional: the float model-level IR as imported (and model/tensors/),
                      the reference `ssmc run --compare float` measures against
    report.json       what the frontend recognised and what each pass did
    extra/<path>      optional artifacts of later stages (target description,
                      placement, microcode programs, ...), raw bytes keyed by a
                      relative path; each producer documents its own files

Writing is atomic (temporary file in the same folder, then rename) and
byte-identical for the same content: fixed entry order, timestamps and
permissions, and no wall-clock data. Reading treats the file as untrusted:
it reads only a regular file, checks sizes from the zip directory and .npy
headers before allocating (ssmc.limits), bounds JSON size and nesting,
checks every entry's checksum and the type of every field it uses, and
refuses a newer format, a truncated or damaged archive, and unexpected
entries, each with a one-line reason (docs/net_lava.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable
import numpy as np

from ssmc import __version__, limits
from ssmc.config import CompileConfig, ConfigError, from_options
from ssmc.data import check_zip, parse_json, parse_npy, read_member, read_regular
from ssmc.errors import BundleError, SsmcError
from ssmc.ir.graph import Graph
from ssmc.ir.net import CompiledNet
from ssmc.ir.text import parse_graph, print_graph
from ssmc.ir.verify import verify
from ssmc.outputs import write_file

FORMAT_NAME = "ssmc.net"
# 2: manifest.sha256 holds the manifest's own checksum; 3: `config` (every field of the CompileConfig)
# replaces `options` (only the options given). Files of formats 1 and 2 still load.
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
MANIFEST_SHA256 = "manifest.sha256"
MAX_MANIFEST_BYTES = 16 * limits.MiB
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


#: net.lava's content in memory is ssmc.ir.net.CompiledNet (ssmc.api.Net is it with methods); the old name stays.
Bundle = CompiledNet


def check_extra_name(path: str) -> str:
    """`path` if it is a safe relative extra name (no '..', no absolute or empty parts)."""
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise BundleError(f"bad extra entry name {path!r}: use a relative path such as 'microcode/core0.s'")
    return path


#: Packages whose versions can change what a compile produces; recorded so a net.lava can be reproduced.
RECORDED_PACKAGES = ("numpy", "onnx", "onnx-graphsurgeon", "onnxruntime", "scipy", "networkx", "ortools", "lava-nc")


def environment() -> dict:
    """Python and package versions of this compile (no paths, no time: the file stays deterministic)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in RECORDED_PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"python": platform.python_version(), "packages": packages}


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _manifest_sha256_line(manifest_blob: bytes) -> bytes:
    """manifest.sha256's content, in sha256sum's format (`unzip net.lava && sha256sum -c manifest.sha256`)."""
    return f"{hashlib.sha256(manifest_blob).hexdigest()}  {MANIFEST}\n".encode()


def encode(bundle: CompiledNet) -> bytes:
    """The bytes of the net.lava file for `bundle`."""
    verify(bundle.graph)
    unreadable = "the model's values span more than a net holds; check the export"  # never write what load refuses
    _check_magnitudes(bundle.graph, "the compiled net: ir.txt", unreadable)
    tensors: dict[str, np.ndarray] = {}
    entries: dict[str, bytes] = {"ir.txt": print_graph(bundle.graph, tensors=tensors).encode()}
    for key in sorted(tensors):
        entries[f"tensors/{key}.npy"] = _npy_bytes(tensors[key])
    if bundle.model_graph is not None:
        verify(bundle.model_graph)
        _check_magnitudes(bundle.model_graph, "the compiled net: model/ir.txt", unreadable)
        model_tensors: dict[str, np.ndarray] = {}
        entries["model/ir.txt"] = print_graph(bundle.model_graph, tensors=model_tensors).encode()
        for key in sorted(model_tensors):
            entries[f"model/tensors/{key}.npy"] = _npy_bytes(model_tensors[key])
    entries["report.json"] = _json_bytes(bundle.report)
    for key in sorted(bundle.extras):
        entries[f"extra/{check_extra_name(key)}"] = bytes(bundle.extras[key])
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "ssmc_version": bundle.ssmc_version,
        "environment": environment(),
        "source": bundle.source,
        "pipeline": bundle.pipeline,
        "config": bundle.config.to_dict(),
        "entries": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(entries.items())},
    }
    manifest_blob = _json_bytes(manifest)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in [(MANIFEST, manifest_blob), (MANIFEST_SHA256, _manifest_sha256_line(manifest_blob))] + sorted(
            entries.items()
        ):
            info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, data, compresslevel=6)
    return buf.getvalue()


def save(bundle: CompiledNet, path: str | os.PathLike) -> None:
    """Write `bundle` to `path` atomically: a reader sees the old file or the whole new one (ssmc.outputs)."""
    write_file(path, encode(bundle), what="net.lava", example="net.lava")


def load(path: str | os.PathLike, cls: type[CompiledNet] = CompiledNet) -> CompiledNet:
    """Read and validate a net.lava file (a regular file, at most SSMC_MAX_NET_BYTES) into a `cls`."""
    path = os.fspath(path)
    data = read_regular(path, "net.lava", BundleError, "net_bytes")
    return decode(data, name=os.path.basename(path), cls=cls)


def _require(ok: bool, name: str, member: str, what: str) -> None:
    if not ok:
        raise BundleError(f"{name}: damaged: {member}: {what}; recompile the net")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_manifest(manifest, name: str) -> int:
    """The manifest's format_version, after checking the type of every field the reader uses."""
    _require(isinstance(manifest, dict), name, MANIFEST, "is not a JSON object")
    if manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{name}: not a net.lava file (manifest format is {manifest.get('format')!r})")
    version = manifest.get("format_version")
    _require(
        _is_int(version) and version >= 1,
        name,
        MANIFEST,
        f"format_version must be a whole number of at least 1, not {version!r}",
    )
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{name}: written in net.lava format {version} by ssmc "
            f"{manifest.get('ssmc_version', '?')}; this ssmc {__version__} reads format "
            f"{FORMAT_VERSION} and older: upgrade ssmc"
        )
    for key, kind in (("ssmc_version", str), ("source", dict), ("pipeline", str), ("options", dict), ("config", dict)):
        _require(isinstance(manifest.get(key, kind()), kind), name, MANIFEST, f"{key} must be a {kind.__name__}")
    entries = manifest.get("entries")
    _require(isinstance(entries, dict), name, MANIFEST, "lists no entries")
    for entry, digest in entries.items():
        _require(
            isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest),
            name,
            MANIFEST,
            f"the checksum of {entry} is not a sha256 hex digest",
        )
    return version


def _config(manifest: dict, name: str) -> CompileConfig:
    """The manifest's config; format 2 and older recorded the options given, read into one."""
    try:
        if "config" in manifest:
            return CompileConfig.from_json(manifest["config"], "config")
        return from_options(manifest.get("options", {}))
    except ConfigError as e:
        raise BundleError(f"{name}: damaged: {MANIFEST}: {e}") from None


def _check_report(report, name: str) -> None:
    _require(isinstance(report, dict), name, "report.json", "is not a JSON object")
    _require(isinstance(report.get("import", {}), dict), name, "report.json", "import must be an object")
    passes = report.get("passes", [])
    _require(
        isinstance(passes, list)
        and all(
            isinstance(p, dict)
            and isinstance(p.get("name"), str)
            and isinstance(p.get("notes", []), list)
            and all(isinstance(n, str) for n in p.get("notes", []))
            for p in passes
        ),
        name,
        "report.json",
        "passes must be a list of {name, notes}",
    )


def _check_extras(extras: dict[str, bytes], name: str) -> None:
    """The JSON extras other parts of ssmc read: valid, bounded JSON of the shape their readers use,
    and every file an index names present."""
    for key in sorted(k for k in extras if k.endswith(".json")):
        member = f"extra/{key}"
        doc = parse_json(extras[key], f"{name}: damaged: {member}", BundleError)
        if key == "target.json":
            _require(
                isinstance(doc, dict) and isinstance(doc.get("provenance", {}), dict),
                name,
                member,
                "must be an object whose provenance is an object",
            )
        elif key == "lava/processes.json":
            _require(
                isinstance(doc, list)
                and all(
                    isinstance(r, dict)
                    and isinstance(r.get("cores", []), list)
                    and all(
                        isinstance(c, dict)
                        and _is_int(c.get("chip"))
                        and _is_int(c.get("core"))
                        and isinstance(c.get("neurons"), list)
                        and len(c["neurons"]) == 2
                        for c in r.get("cores", [])
                    )
                    for r in doc
                ),
                name,
                member,
                "must be a list of processes whose cores have chip, core and [first, last] neurons",
            )
        elif key == "microcode/index.json":
            _require(
                isinstance(doc, dict)
                and isinstance(doc.get("groups"), list)
                and all(
                    isinstance(g, dict)
                    and isinstance(g.get("group"), str)
                    and isinstance(g.get("units"), list)
                    and all(isinstance(u, dict) for u in g["units"])
                    for g in doc["groups"]
                ),
                name,
                member,
                "must be an object with a list of groups, each with a name and a list of units",
            )
            for group in doc["groups"]:
                for unit in group["units"]:
                    for field_name in ("text", "binary"):
                        path = unit.get(field_name)
                        _require(
                            isinstance(path, str) and path in extras,
                            name,
                            member,
                            f"the {field_name} of %{group['group']} names {path!r}, which is not in the net",
                        )


def _check_magnitudes(graph: Graph, where: str, fix: str = "recompile the net") -> None:
    """Float tensors (weights, scales) within the bound the ONNX frontend holds weights to: beyond it the float
    engine turns them into inf without a word. The verifier has already refused NaN and inf."""
    for op in graph.ops():
        for key, value in sorted(op.params.items()):
            arr = np.asarray(value)
            if arr.dtype.kind in "fc" and arr.size and float(np.abs(arr).max()) > limits.MAX_ABS_WEIGHT:
                raise BundleError(
                    f"{where}: tensor '{key}' of %{op.name} has values up to "
                    f"{float(np.abs(arr).max()):.3g}; a net holds |values| up to "
                    f"{limits.MAX_ABS_WEIGHT:g}, as ONNX weights are: {fix}"
                )


def _open_zip(data: bytes, name: str) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The zip directory of net.lava bytes, its sizes checked before anything is decompressed."""
    if not data:
        raise BundleError(f"{name}: the file is empty")
    limits.check("net_bytes", len(data), f"{name}: a net.lava of {len(data)} bytes")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = {i.filename: i for i in zf.infolist()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise BundleError(f"{name}: not a net.lava file, or truncated ({e})") from None
    check_zip(zf, len(data), name, BundleError, "net_bytes")
    return zf, infos


def _read_manifest(read: Callable[[str], bytes], infos: dict[str, zipfile.ZipInfo], name: str) -> tuple[dict, int]:
    """The checked manifest and its format version; every entry in the zip must be listed in it."""
    manifest_blob = read(MANIFEST)
    manifest = parse_json(manifest_blob, f"{name}: damaged: {MANIFEST}", BundleError, max_bytes=MAX_MANIFEST_BYTES)
    version = _check_manifest(manifest, name)
    own = set()
    if version >= 2:  # the manifest's own checksum, in an entry beside it
        own = {MANIFEST_SHA256}
        if read(MANIFEST_SHA256) != _manifest_sha256_line(manifest_blob):
            raise BundleError(f"{name}: damaged: checksum mismatch in {MANIFEST}")
    present = set(infos) - {MANIFEST} - own
    extra = present - set(manifest["entries"])
    if extra:
        raise BundleError(f"{name}: damaged: unexpected entry {sorted(extra)[0]} not listed in the manifest")
    return manifest, version


def _read_listed(
    read: Callable[[str], bytes], entries: dict[str, str], name: str
) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """The manifest's entries, checksummed: tensors parsed to arrays, everything else as bytes."""
    contents: dict[str, bytes] = {}
    arrays: dict[str, np.ndarray] = {}
    for entry, digest in sorted(entries.items()):
        blob = read(entry)
        if hashlib.sha256(blob).hexdigest() != digest:
            raise BundleError(f"{name}: damaged: checksum mismatch in {entry}")
        if entry.endswith(".npy") and entry.startswith(("tensors/", "model/tensors/")):
            arrays[entry] = parse_npy(blob, f"{name}: damaged: {entry}", BundleError)
        else:
            contents[entry] = blob
        del blob  # only the parsed array stays: peak memory ~ one entry above the result
    return contents, arrays


def _load_graphs(contents: dict[str, bytes], arrays: dict[str, np.ndarray], name: str) -> tuple[Graph, Graph | None]:
    """The net's graph and (when stored) its model graph, parsed, verified and magnitude-checked."""

    def tensors_under(prefix: str) -> dict[str, np.ndarray]:
        return {
            entry[len(prefix) : -4]: arr
            for entry, arr in arrays.items()
            if entry.startswith(prefix) and "/" not in entry[len(prefix) :]
        }

    try:
        graph = parse_graph(contents["ir.txt"].decode(), tensors=tensors_under("tensors/"))
        verify(graph)
        model_graph = None
        if "model/ir.txt" in contents:
            model_graph = parse_graph(contents["model/ir.txt"].decode(), tensors=tensors_under("model/tensors/"))
            verify(model_graph)
    except KeyError:
        raise BundleError(f"{name}: damaged: ir.txt is missing") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"{name}: damaged: the IR text does not load ({type(e).__name__})") from None
    except SsmcError as e:
        one_line = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise BundleError(f"{name}: the IR inside does not load: {one_line}") from None
    _check_magnitudes(graph, f"{name}: ir.txt")
    if model_graph is not None:
        _check_magnitudes(model_graph, f"{name}: model/ir.txt")
    return graph, model_graph


def _load_extras(contents: dict[str, bytes], name: str) -> dict[str, bytes]:
    """The extra/ entries by their name below extra/, names and cross-references checked."""
    extras = {e[len("extra/") :]: blob for e, blob in contents.items() if e.startswith("extra/")}
    for key in extras:
        try:
            check_extra_name(key)
        except SsmcError as e:
            raise BundleError(f"{name}: damaged: {e}") from None
    _check_extras(extras, name)
    return extras


def decode(data: bytes, name: str = "net.lava", cls: type[CompiledNet] = CompiledNet) -> CompiledNet:
    """Parse and validate net.lava bytes. Sizes are checked from the zip directory before anything
    is decompressed, entries are inflated in bounded chunks, and each tensor's .npy header is
    checked (SSMC_MAX_TENSOR_BYTES, no objects) before its array is built."""
    zf, infos = _open_zip(data, name)

    def read(entry: str) -> bytes:
        if entry not in infos:
            raise BundleError(f"{name}: damaged: entry {entry} is missing")
        return read_member(zf, infos[entry], name, BundleError)

    manifest, version = _read_manifest(read, infos, name)
    contents, arrays = _read_listed(read, manifest["entries"], name)
    graph, model_graph = _load_graphs(contents, arrays, name)
    report = parse_json(contents.get("report.json", b"{}"), f"{name}: damaged: report.json", BundleError)
    _check_report(report, name)
    extras = _load_extras(contents, name)
    return cls(
        graph=graph,
        model_graph=model_graph,
        source=manifest.get("source", {}),
        pipeline=manifest.get("pipeline", ""),
        config=_config(manifest, name),
        report=report,
        extras=extras,
        ssmc_version=manifest.get("ssmc_version", "?"),
        format_version=version,
    )
