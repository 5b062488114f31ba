"""Every input file is untrusted (issue #12): net.lava, run inputs and calibration data.

For each reader x each hostile file (missing, a directory, a FIFO, /dev/zero, a
symlink to it, endless stdin, empty, truncated, a huge declared size, the wrong
type, an object array, NaN or 1e308) the library raises one SsmcError of one line
naming the file, quickly, and the CLI exits 1 with one `ssmc: error:` line and no
traceback, within a timeout (a reader that blocks or reads forever fails here).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import ssmc
from ssmc.backend_loihi.bundle import encode
from ssmc.errors import SsmcError
from tests.backend_loihi.sample import make_bundle
from tests.backend_loihi.test_bundle import TENSOR, rehashed, rezip, set_declared_size, unzip
from tests.builders.onnx_models import build_step_model, random_spec
from tests.security.cli_runner import print_tally, run_in_child

ROOT = Path(__file__).resolve().parents[2]
READERS = ("net.lava", "input", "calibration")
CASES = (
    "missing",
    "directory",
    "FIFO",
    "/dev/zero",
    "symlink to /dev/zero",
    "endless stdin",
    "empty",
    "truncated",
    "huge declared size",
    "wrong type",
    "object array",
    "NaN/1e308",
)
LIBRARY_SECONDS = 10  # each refusal; the good files load in well under a second
CLI_TIMEOUT = 120  # generous for a loaded machine; a reader that blocks hits it
COUNTS = {"library cases": 0, "refused cleanly": 0, "CLI cases": 0, "CLI refused cleanly": 0}


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    print_tally(request, "untrusted input files: " + ", ".join(f"{k} {v}" for k, v in COUNTS.items()))


def npy_bytes(arr, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def huge_npy(shape=(1 << 20, 1 << 20, 3)) -> bytes:
    """A .npy whose header declares `shape` float64 (terabytes) over 16 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(16)


class World:
    """The good files each reader is given alongside the hostile one."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.net_bytes = encode(make_bundle())  # float-level sample net: 3 features in
        self.net = folder / "good.lava"
        self.net.write_bytes(self.net_bytes)
        self.x = np.linspace(-1, 1, 2 * 5 * 3).reshape(2, 5, 3)
        self.x_path = folder / "good_x.npy"
        np.save(self.x_path, self.x)
        spec = random_spec(4)
        self.model = folder / "model.onnx"
        onnx.save(build_step_model(spec), str(self.model))
        self.cal = np.random.default_rng(0).normal(size=(4, 8, spec.in_features))

    def good(self, reader: str) -> bytes:
        return {"net.lava": self.net_bytes, "input": npy_bytes(self.x), "calibration": npz_bytes(x=self.cal)}[reader]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("good"))


def hostile(world: World, reader: str, case: str, folder: Path) -> Path:
    """The hostile file of `case` for `reader`, made in `folder`."""
    path = folder / {"net.lava": "net.lava", "input": "x.npy", "calibration": "cal.npz"}[reader]
    good = world.good(reader)
    if case == "missing":
        return path
    if case == "directory":
        path.mkdir()
    elif case == "FIFO":
        os.mkfifo(path)
    elif case == "/dev/zero":
        return Path("/dev/zero")
    elif case == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif case == "endless stdin":
        return Path("/dev/stdin")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif case == "huge declared size":
        path.write_bytes(
            {
                "net.lava": lambda: set_declared_size(good, TENSOR, 3 << 30),
                "input": huge_npy,
                "calibration": lambda: rezip({"x.npy": huge_npy()}),
            }[reader]()
        )
    elif case == "wrong type":
        path.write_bytes(
            {
                "net.lava": lambda: npy_bytes(world.x),  # a .npy where a net.lava belongs
                "input": lambda: npy_bytes(np.full((2, 5, 3), "text")),
                "calibration": lambda: npz_bytes(x=world.cal * 1j),
            }[reader]()
        )
    elif case == "object array":
        objects = np.array([{"a": 1}, None], dtype=object)
        path.write_bytes(
            {
                "net.lava": lambda: rezip(rehashed({**unzip(good), TENSOR: npy_bytes(objects, allow_pickle=True)})),
                "input": lambda: npy_bytes(objects, allow_pickle=True),
                "calibration": lambda: npz_bytes(x=objects),
            }[reader]()
        )
    elif case == "NaN/1e308":
        if reader == "net.lava":
            w = np.load(io.BytesIO(unzip(good)[TENSOR]))
            w.flat[0] = np.nan
            path.write_bytes(rezip(rehashed({**unzip(good), TENSOR: npy_bytes(w)})))
        else:
            x = (world.x if reader == "input" else world.cal).copy()
            x.flat[1] = np.nan if reader == "input" else 1e308  # both refused (inputs beyond 1e10 too)
            path.write_bytes(npy_bytes(x) if reader == "input" else npz_bytes(x=x))
    return path


@contextlib.contextmanager
def hang_guard(seconds: int):
    """A read that blocks (a FIFO with no writer) or never ends (/dev/zero) fails the test instead of hanging it."""

    def hung(signum, frame):
        raise AssertionError(f"still reading after {seconds} s: the reader blocks or reads forever")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def library_call(world: World, reader: str, path: Path):
    if reader == "net.lava":
        return ssmc.load(path)
    if reader == "input":
        from ssmc.data import load_sequences

        return load_sequences(path)
    return ssmc.compile(world.model, calibration=path, passes="canonicalize")


def cli_args(world: World, reader: str, path: Path, folder: Path) -> list[str]:
    if reader == "net.lava":
        return ["run", str(path), "--input", str(world.x_path), "-q"]
    if reader == "input":
        return ["run", str(world.net), "--input", str(path), "-q"]
    return ["compile", str(world.model), "-o", str(folder / "out.lava"), "--calibrate", str(path), "-q"]


def names_the_file(msg: str, path: Path) -> bool:
    return str(path) in msg or path.name in msg


LIBRARY_CASES = [(r, c) for r in READERS for c in CASES if c != "endless stdin"]  # stdin is the CLI's


@pytest.mark.parametrize("reader,case", LIBRARY_CASES, ids=[f"{r}-{c}" for r, c in LIBRARY_CASES])
def test_the_library_refuses_a_hostile_file_in_one_line_naming_it(world, tmp_path, reader, case):
    COUNTS["library cases"] += 1
    path = hostile(world, reader, case, tmp_path)
    started = time.perf_counter()
    with pytest.raises(SsmcError) as e, hang_guard(LIBRARY_SECONDS * 3):
        library_call(world, reader, path)
    seconds = time.perf_counter() - started
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert names_the_file(msg, path), msg
    assert seconds < LIBRARY_SECONDS, f"{seconds:.1f} s to refuse"
    COUNTS["refused cleanly"] += 1


def test_the_good_files_are_accepted(world, tmp_path):
    """The hostile cases start from these: each reader takes them as they are."""
    for reader in READERS:
        path = tmp_path / f"good-{reader}"
        path.write_bytes(world.good(reader))
        library_call(world, reader, path)


EXTRA_CLI = {  # (argv after the good files are put in, phrase)
    "--limit -1": (
        lambda w, p: ["run", str(w.net), "--input", str(w.x_path), "--limit", "-1"],
        "argument --limit: -1 must be at least 1",
    ),
    "--tokens 0": (
        lambda w, p: ["run", str(w.net), "--input", str(w.x_path), "--tokens", "0"],
        "argument --tokens: 0 must be at least 1",
    ),
    "--limit two": (
        lambda w, p: ["run", str(w.net), "--input", str(w.x_path), "--limit", "two"],
        "argument --limit: 'two' is not a whole number",
    ),
    # the same counts on every command that cuts its input: trace, profile and export-nir took -1 silently
    "trace --limit -1": (
        lambda w, p: ["trace", str(w.net), "--input", str(w.x_path), "--limit", "-1"],
        "argument --limit: -1 must be at least 1",
    ),
    "trace --tokens 0": (
        lambda w, p: ["trace", str(w.net), "--input", str(w.x_path), "--tokens", "0"],
        "argument --tokens: 0 must be at least 1",
    ),
    "trace --rows 0": (
        lambda w, p: ["trace", str(w.net), "--input", str(w.x_path), "--rows", "0"],
        "argument --rows: 0 must be at least 1",
    ),
    "profile --limit 0": (
        lambda w, p: ["profile", str(w.net), "--input", str(w.x_path), "--limit", "0", "-o", str(p / "profile.html")],
        "argument --limit: 0 must be at least 1",
    ),
    "export-nir --limit -1": (
        lambda w, p: ["export-nir", str(w.net), "-o", str(p / "net.nir"), "--check", str(w.x_path), "--limit", "-1"],
        "argument --limit: -1 must be at least 1",
    ),
}


def _array_file(folder: Path, name: str, blob: bytes) -> str:
    path = folder / name
    path.write_bytes(blob)
    return str(path)


EXTRA_CLI.update(
    {
        "0-D input with --tokens": (
            lambda w, p: [
                "run",
                str(w.net),
                "--input",
                _array_file(p, "x0.npy", npy_bytes(np.float64(1))),
                "--tokens",
                "2",
            ],
            "x0.npy: input must have shape [batch, tokens, features]",
        ),
        "1-D input with --limit": (
            lambda w, p: [
                "run",
                str(w.net),
                "--input",
                _array_file(p, "x1.npy", npy_bytes(np.ones(4))),
                "--limit",
                "1",
            ],
            "x1.npy: input must have shape [batch, tokens, features]",
        ),
        ".npz without 'x'": (
            lambda w, p: ["run", str(w.net), "--input", _array_file(p, "nox.npz", npz_bytes(y=np.ones(3)))],
            "nox.npz: an .npz input needs an array named 'x'",
        ),
        "labels of objects": (
            lambda w, p: [
                "run",
                str(w.net),
                "--input",
                str(w.x_path),
                "--labels",
                _array_file(p, "y.npy", npy_bytes(np.array([None, 1], dtype=object), allow_pickle=True)),
            ],
            "y.npy: holds Python objects",
        ),
        "labels from a FIFO": (
            lambda w, p: ["run", str(w.net), "--input", str(w.x_path), "--labels", str(p / "fifo")],
            "fifo: is a FIFO (named pipe), not a regular file",
        ),
    }
)


def run_cli(argv: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSMC_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "ssmc.cli", *argv],
        stdin=subprocess.PIPE,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=CLI_TIMEOUT,
    )


def test_the_cli_refuses_every_hostile_file_with_exit_1_and_one_line(world, tmp_path):
    """Every reader x hostile file, plus option and label cases, through the CLI's main: exit 1 and
    one `ssmc: error:` line naming the file (exit 2 and argparse's line for bad option values)."""
    jobs, expect = {}, {}
    for reader in READERS:
        for case in CASES:
            folder = tmp_path / f"{reader}-{case}".replace("/", "_").replace(" ", "_")
            folder.mkdir()
            path = hostile(world, reader, case, folder)
            jobs[f"{reader} / {case}"] = cli_args(world, reader, path, folder)
            expect[f"{reader} / {case}"] = (path.name, 1)
    folder = tmp_path / "extra"
    folder.mkdir()
    os.mkfifo(folder / "fifo")
    for name, (argv, phrase) in EXTRA_CLI.items():
        jobs[name] = argv(world, folder)
        expect[name] = (phrase, 2 if phrase.startswith("argument") else 1)
    problems = []
    for name, res in run_in_child(jobs, tmp_path).items():
        COUNTS["CLI cases"] += 1
        phrase, want = expect[name]
        lines = [line for line in res.err.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        clean = (
            res.code == want
            and "Traceback" not in res.err + res.out
            and (len(lines) == 1 or want == 2)
            and ("ssmc: error: " in last or "error: argument" in last)
            and phrase in last
        )
        if clean:
            COUNTS["CLI refused cleanly"] += 1
        else:
            problems.append(f"{name}: exit {res.code} in {res.seconds:.1f} s, stderr {res.err.strip()!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("reader", READERS)
def test_a_separate_ssmc_process_given_endless_stdin_exits_1_at_once(world, tmp_path, reader):
    """The real command, as a user runs it: /dev/stdin on a pipe that never ends is refused, not read."""
    proc = run_cli(cli_args(world, reader, Path("/dev/stdin"), tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ssmc: error: /dev/stdin: is a FIFO"), proc.stderr
