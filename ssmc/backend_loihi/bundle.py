"""net.lava, format v1: a versioned, self-describing, deterministic zip.

Entries (all listed with their sha256 in the manifest):

    manifest.json     format name and version, ssmc version, source model hash,
                      pipeline, options, entry checksums
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
permissions, and no wall-clock data. Reading checks every entry's checksum
and refuses a newer format, a truncated or damaged archive, and unexpected
entries, each with a one-line reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from ssmc import __version__
from ssmc.errors import BundleError, SsmcError
from ssmc.ir.graph import Graph
from ssmc.ir.text import parse_graph, print_graph
from ssmc.ir.verify import verify
from ssmc.outputs import write_file

FORMAT_NAME = "ssmc.net"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Refuse archives that would inflate beyond this (a zip bomb or a wrong file).
MAX_UNPACKED_BYTES = 2 * 1024 ** 3
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class Bundle:
    """Everything net.lava holds, in memory."""

    graph: Graph
    model_graph: Graph | None = None  # the float model-level IR as imported, for --compare float
    source: dict = field(default_factory=dict)  # file name, sha256, size of the ONNX model
    pipeline: str = ""
    options: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    extras: dict[str, bytes] = field(default_factory=dict)  # extra/<path> entries, see the module doc
    ssmc_version: str = __version__
    format_version: int = FORMAT_VERSION


def check_extra_name(path: str) -> str:
    """`path` if it is a safe relative extra name (no '..', no absolute or empty parts)."""
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise SsmcError(f"bad extra entry name {path!r}: use a relative path such as 'microcode/core0.s'")
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


def encode(bundle: Bundle) -> bytes:
    """The bytes of the net.lava file for `bundle`."""
    verify(bundle.graph)
    tensors: dict[str, np.ndarray] = {}
    entries: dict[str, bytes] = {"ir.txt": print_graph(bundle.graph, tensors=tensors).encode()}
    for key in sorted(tensors):
        entries[f"tensors/{key}.npy"] = _npy_bytes(tensors[key])
    if bundle.model_graph is not None:
        verify(bundle.model_graph)
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
        "options": bundle.options,
        "entries": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(entries.items())},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in [(MANIFEST, _json_bytes(manifest))] + sorted(entries.items()):
            info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, data, compresslevel=6)
    return buf.getvalue()


def save(bundle: Bundle, path: str | os.PathLike) -> None:
    """Write `bundle` to `path` atomically: a reader sees the old file or the whole new one (ssmc.outputs)."""
    write_file(path, encode(bundle), what="net.lava", example="net.lava")


def load(path: str | os.PathLike) -> Bundle:
    """Read and validate a net.lava file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, expected a net.lava file") from None
    except OSError as e:
        raise BundleError(f"{path}: cannot read ({e.strerror})") from None
    return decode(data, name=os.path.basename(path))


def decode(data: bytes, name: str = "net.lava") -> Bundle:
    """Parse and validate net.lava bytes."""
    if not data:
        raise BundleError(f"{name}: the file is empty")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise BundleError(f"{name}: not a net.lava file, or truncated ({e})") from None
    if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
        raise BundleError(f"{name}: unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB; refusing it")

    def read(entry: str) -> bytes:
        try:
            return zf.read(entry)
        except KeyError:
            raise BundleError(f"{name}: damaged: entry {entry} is missing") from None
        except (zipfile.BadZipFile, zlib.error, RuntimeError, OSError, ValueError, EOFError,
                NotImplementedError) as e:  # RuntimeError: zipfile's "encrypted entry"
            raise BundleError(f"{name}: damaged: cannot read entry {entry} ({e})") from None

    try:
        manifest = json.loads(read(MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BundleError(f"{name}: damaged: manifest.json is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{name}: damaged: manifest.json is not an object")
    if manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{name}: not a net.lava file (manifest format is {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"{name}: damaged: manifest has no integer format_version")
    if version > FORMAT_VERSION:
        raise BundleError(f"{name}: written in net.lava format {version} by ssmc "
                          f"{manifest.get('ssmc_version', '?')}; this ssmc {__version__} reads format "
                          f"{FORMAT_VERSION} and older: upgrade ssmc")
    entries = manifest.get("entries")
    if not isinstance(entries, dict):
        raise BundleError(f"{name}: damaged: manifest lists no entries")
    present = {i.filename for i in infos} - {MANIFEST}
    extra = present - set(entries)
    if extra:
        raise BundleError(f"{name}: damaged: unexpected entry {sorted(extra)[0]} not listed in the manifest")
    contents = {}
    for entry, digest in sorted(entries.items()):
        blob = read(entry)
        if hashlib.sha256(blob).hexdigest() != digest:
            raise BundleError(f"{name}: damaged: checksum mismatch in {entry}")
        contents[entry] = blob

    def tensors_under(prefix: str) -> dict[str, np.ndarray]:
        found = {}
        for entry, blob in contents.items():
            if entry.startswith(prefix) and entry.endswith(".npy") and "/" not in entry[len(prefix):]:
                try:
                    found[entry[len(prefix):-4]] = np.load(io.BytesIO(blob), allow_pickle=False)
                except (ValueError, OSError, EOFError) as e:
                    raise BundleError(f"{name}: damaged: {entry} is not a valid .npy ({e})") from None
        return found

    try:
        graph = parse_graph(contents["ir.txt"].decode(), tensors=tensors_under("tensors/"))
        verify(graph)
        model_graph = None
        if "model/ir.txt" in contents:
            model_graph = parse_graph(contents["model/ir.txt"].decode(), tensors=tensors_under("model/tensors/"))
            verify(model_graph)
        report = json.loads(contents.get("report.json", b"{}"))
        extras = {e[len("extra/"):]: blob for e, blob in contents.items() if e.startswith("extra/")}
        for key in extras:
            check_extra_name(key)
    except KeyError:
        raise BundleError(f"{name}: damaged: ir.txt is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{name}: damaged: {e}") from None
    except SsmcError as e:
        one_line = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise BundleError(f"{name}: the IR inside does not load: {one_line}") from None
    return Bundle(graph=graph, model_graph=model_graph, source=manifest.get("source", {}), pipeline=manifest.get("pipeline", ""),
                  options=manifest.get("options", {}), report=report, extras=extras,
                  ssmc_version=manifest.get("ssmc_version", "?"), format_version=version)
