"""Reading user files (net.lava, inputs, labels, calibration) as untrusted data.

Every reader here refuses, with one line naming the file and the cause, a
file that is missing, not a regular file (a directory, FIFO, device such as
/dev/zero, or a symlink to one: they are never read, so they cannot block or
stream forever), empty, truncated, over a size limit (ssmc.limits, checked
from the sizes the file *declares* before anything is allocated or
decompressed), an object (pickled) array, or not numbers. Reads are bounded:
a file that grows while it is read, or a zip member whose stored sizes lie,
is cut off at the declared size and refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from ssmc import limits
from ssmc.errors import InputDataError, SsmcError
from ssmc.outputs import kind_of

CHUNK = 1 << 20
#: Beyond ZIP_RATIO_FLOOR unpacked, a zip (net.lava or .npz) may unpack to at most MAX_ZIP_RATIO times
#: its own size. ssmc's files stay far below (the digits net: 9x overall, 89x for its sparsest synapse
#: matrix); a zip bomb (deflate reaches ~1000x) does not. Below the floor, only the limits apply.
MAX_ZIP_RATIO = 200
ZIP_RATIO_FLOOR = 256 * limits.MiB
#: JSON is parsed only below this depth (json.loads recurses once per level).
MAX_JSON_DEPTH = 64
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def open_regular(path: str | os.PathLike, what: str, error: type[SsmcError] = InputDataError) -> io.BufferedReader:
    """`path` opened for binary reading if it is a regular file (symlinks followed), else `error`.

    Opened non-blocking and checked with fstat on the open descriptor, so a FIFO
    neither blocks the open nor gets read, and the file checked is the file read.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} file ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: is {kind_of(mode)}, not a regular file; give the {what} file itself")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_size(f, path: str, what: str, error: type[SsmcError], field: str) -> int:
    """The size of open file `f`, refused if empty or over the limit `field` (ssmc.limits)."""
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise error(f"{path}: the {what} file is empty")
    limits.check(field, size, f"{path}: the {what} file ({size} bytes)")
    return size


def read_regular(path: str | os.PathLike, what: str, error: type[SsmcError], field: str) -> bytes:
    """All bytes of the regular file `path`, at most the limit `field` of them (see `open_regular`)."""
    path = os.fspath(path)
    with open_regular(path, what, error) as f:
        size = file_size(f, path, what, error, field)
        try:
            data = f.read(size + 1)  # a file that grows meanwhile is caught, not followed
        except OSError as e:
            raise error(f"{path}: cannot read the {what} file ({e.strerror or e})") from None
    if len(data) != size:
        raise error(f"{path}: the {what} file changed size while it was read")
    return data


def read_small_file(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """All bytes of the regular file `path` if it holds at most `limit` bytes (small inputs the CLI reads
    itself: target descriptions, microcode sources), else a one-line SsmcError; see `open_regular`."""
    path = os.fspath(path)
    with open_regular(path, what, SsmcError) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise InputDataError(f"{path}: cannot read the {what} file ({e.strerror or e})") from None
    if len(data) > limit:
        raise InputDataError(f"{path}: the {what} is larger than {limit} bytes; this is not a {what} file")
    return data


def sha256_of(f, size: int) -> str:
    """sha256 of the first `size` bytes of the open file `f`, read in chunks."""
    f.seek(0)
    h, left = hashlib.sha256(), size
    while left > 0:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


# -- zip archives ---------------------------------------------------------------------
def check_zip(zf: zipfile.ZipFile, stored_bytes: int, where: str, error: type[SsmcError], field: str) -> None:
    """Refuse a zip by what its directory declares, before anything is decompressed: duplicate
    names, compression other than stored/deflate (their decompressors are unbounded), more than
    the limit `field` unpacked, or more than MAX_ZIP_RATIO times its `stored_bytes`."""
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        dup = sorted(n for n in set(names) if names.count(n) > 1)[0]
        raise error(f"{where}: damaged: the entry {dup} is in the archive twice")
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise error(
                f"{where}: entry {info.filename} uses zip compression method {info.compress_type}; "
                "ssmc reads only stored or deflated entries"
            )
    unpacked = sum(i.file_size for i in infos)
    limits.check(field, unpacked, f"{where}: unpacking its {len(infos)} entries")
    if unpacked > max(ZIP_RATIO_FLOOR, MAX_ZIP_RATIO * stored_bytes):
        raise error(
            f"{where}: declares {limits.size(unpacked)} unpacked from {limits.size(stored_bytes)} "
            f"(over {MAX_ZIP_RATIO}x); refusing it as a zip bomb, not a file ssmc or numpy wrote"
        )


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, error: type[SsmcError]) -> bytes:
    """The bytes of one zip entry, decompressed in bounded chunks and never beyond its declared size
    (zipfile's own read() may inflate a whole compressed block at once). CRC checked by zipfile."""
    parts, total = [], 0
    try:
        with zf.open(info) as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > info.file_size:
                    raise error(f"{where}: damaged: entry {info.filename} is longer than its declared size")
                parts.append(chunk)
    except (
        zipfile.BadZipFile,
        zlib.error,
        RuntimeError,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
    ) as e:  # RuntimeError: zipfile's "encrypted entry"
        raise error(f"{where}: damaged: cannot read entry {info.filename} ({e})") from None
    if total != info.file_size:
        raise error(f"{where}: damaged: entry {info.filename} is shorter than its declared size")
    return b"".join(parts)


# -- .npy arrays ----------------------------------------------------------------------
@dataclass(frozen=True)
class NpyHeader:
    shape: tuple
    fortran_order: bool
    dtype: np.dtype
    offset: int  # where the data starts

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n


def read_npy_header(f, where: str, error: type[SsmcError]) -> NpyHeader:
    """The header of the .npy at f's position, checked: numeric-looking, no objects, sane shape."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"{where}: not a valid .npy array ({first})") from None
    if dtype.hasobject:
        raise error(
            f"{where}: holds Python objects (dtype {dtype}), which would need unpickling; "
            "ssmc reads only plain numeric arrays: save it with a numeric dtype"
        )
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise error(f"{where}: not a valid .npy array (shape {shape})")
    return NpyHeader(tuple(shape), bool(fortran), dtype, f.tell())


def parse_npy(blob: bytes, where: str, error: type[SsmcError], field: str = "tensor_bytes") -> np.ndarray:
    """The array in .npy bytes, its declared size checked against the bytes and the limit `field` first."""
    return _read_npy(io.BytesIO(blob), len(blob), where, error, field)


def _read_npy(f, size: int, where: str, error: type[SsmcError], field: str) -> np.ndarray:
    """The array in the .npy stream `f` of `size` bytes: its header's declared size checked against the
    limit `field` and against `size` before numpy allocates anything."""
    header = read_npy_header(f, where, error)
    limits.check(field, header.nbytes, f"{where}: an array of shape {list(header.shape)} {header.dtype}")
    if header.nbytes > size - header.offset:
        raise error(
            f"{where}: truncated: its header declares {header.nbytes} bytes of data, it has {size - header.offset}"
        )
    f.seek(0)
    try:
        return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise error(f"{where}: not a valid .npy array ({e})") from None


# -- JSON -----------------------------------------------------------------------------
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(blob: bytes) -> int:
    """How deep [ and { nest in JSON text (strings skipped); an over-estimate for broken text."""
    codes = np.frombuffer(_JSON_STRING.sub(b'""', blob), dtype=np.uint8)
    step = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


def parse_json(blob: bytes, where: str, error: type[SsmcError], max_bytes: int = 64 * limits.MiB):
    """JSON bytes parsed, refused (one line naming `where`) if over max_bytes, nested deeper than
    MAX_JSON_DEPTH, or invalid: json.loads itself would recurse without bound."""
    if len(blob) > max_bytes:
        raise error(f"{where}: {limits.size(len(blob))} of JSON, over the {limits.size(max_bytes)} ssmc reads")
    depth = json_depth(blob)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{where}: JSON nested {depth} levels deep, over the {MAX_JSON_DEPTH} ssmc reads")
    try:
        return json.loads(blob)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{where}: not valid JSON ({e})") from None


# -- user arrays ----------------------------------------------------------------------
@dataclass(frozen=True)
class DataFile:
    arrays: dict[str, np.ndarray]
    sha256: str


def read_arrays(path: str | os.PathLike, what: str, keys: tuple[str, ...], required: tuple[str, ...] = ()) -> DataFile:
    """The arrays `keys` of a .npz (those present; `required` ones must be), or of a .npy (as the
    first key), with the file's sha256. Sizes come from the headers and are checked (limit
    SSMC_MAX_DATA_BYTES) before anything is read or decompressed."""
    path = os.fspath(path)
    with open_regular(path, what) as f:
        size = file_size(f, path, what, InputDataError, "data_bytes")
        magic = f.read(len(NPY_MAGIC))
        f.seek(0)
        if magic == NPY_MAGIC:
            arrays = {keys[0]: _read_npy(f, size, path, InputDataError, "data_bytes")}
        elif magic.startswith(ZIP_MAGIC):
            arrays = _npz_arrays(f, size, path, what, keys, required)
        else:
            raise InputDataError(f"{path}: not a .npy or .npz file (it starts with {magic[:8]!r})")
        for key, arr in arrays.items():
            where = path if magic == NPY_MAGIC else f"{path} (array {key!r})"
            if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
                raise InputDataError(f"{where}: the {what} must be real numbers, got dtype {arr.dtype}")
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                raise InputDataError(f"{where}: the {what} contains NaN or infinite values")
        return DataFile(arrays, sha256_of(f, size))


def _npz_arrays(f, size: int, path: str, what: str, keys, required) -> dict[str, np.ndarray]:
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise InputDataError(f"{path}: not a valid .npz file, or truncated ({e})") from None
    with zf:
        check_zip(zf, size, path, InputDataError, "data_bytes")
        names = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        missing = [k for k in required if k not in names]
        if missing:
            raise InputDataError(f"{path}: an .npz {what} needs an array named {missing[0]!r} (has {sorted(names)})")
        return {
            k: parse_npy(
                read_member(zf, names[k], path, InputDataError), f"{path} (array {k!r})", InputDataError, "data_bytes"
            )
            for k in keys
            if k in names
        }


def load_sequences(path: str | os.PathLike, what: str = "input") -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y): a .npy array, or an .npz's array 'x' and its optional integer labels 'y'."""
    data = read_arrays(path, what, ("x", "y"), required=("x",))
    return data.arrays["x"], data.arrays.get("y")


def check_sequences(x, features: int, what: str = "input") -> np.ndarray:
    """x as float64 [batch, tokens, features], or an InputDataError saying what is wrong with it."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise InputDataError(f"{what} must have shape [batch, tokens, {features}] (3 axes), got shape {list(x.shape)}")
    if x.shape[2] != features:
        raise InputDataError(
            f"{what} must have shape [batch, tokens, {features}]: the model takes {features} "
            f"feature(s) per token, got shape {list(x.shape)}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputDataError(f"{what} needs at least one sequence and one token, got shape {list(x.shape)}")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputDataError(f"{what} must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise InputDataError(f"{what} contains NaN or infinite values")
    check_input_range(x, what)
    return x


def check_input_range(x: np.ndarray, what: str = "input") -> None:
    """Refuse values the float reference cannot take: every engine refuses them alike, a fixed-point engine
    would only saturate on what is still the user's mistake (unscaled or corrupt data)."""
    peak = float(np.abs(np.asarray(x, np.float64)).max()) if np.size(x) else 0.0
    if not peak <= limits.MAX_ABS_INPUT:  # NaN included
        raise InputDataError(
            f"{what} has values up to {peak:.3g}; ssmc takes |values| up to "
            f"{limits.MAX_ABS_INPUT:g}, beyond which the float reference overflows: scale the "
            "data as the model's real inputs are"
        )
