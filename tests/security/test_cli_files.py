"""Every command x every file argument x a hostile file (issue #12): a clean refusal, nothing lost.

For each case the CLI must exit 1 (or 2 for argparse usage), print exactly one error line and no
traceback, finish within a timeout, leave no temporary file, and leave every input byte-identical. The
same file arguments under hostile names (spaces, unicode, control characters, quotes and angle brackets)
must simply work. Most cases run the CLI in this process (ssmc.cli.main with captured output and a
SIGALRM watchdog); the ones that could read an endless file (/dev/zero) run in a subprocess with a memory
limit. Ctrl-C / SIGTERM are tested on a real `ssmc compile` in a subprocess.

SSMC_SECURITY_FULL=1 runs every hostile name on every argument and the signal test at more moments.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

from tests.builders.onnx_models import build_step_model, random_spec
from tests.security.cli_runner import CASE_SECONDS, Outcome, print_tally, run_in_process

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "digits"
FULL = os.environ.get("SSMC_SECURITY_FULL") == "1"
IS_ROOT = os.geteuid() == 0
TIMEOUT = CASE_SECONDS  # seconds per case: a hang is a failure, not a stuck suite
FIFO_TIMEOUT = 2  # a FIFO nobody writes to: a refusal is instant, a reader waits forever
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
OWNED = {"onnx": "owned by branch sec-onnx", "files": "owned by branch sec-files"}

COUNTS = {
    "cases": 0,
    "clean refusals": 0,
    "clean successes": 0,
    "internal errors": 0,
    "hangs": 0,
    "files destroyed": 0,
    "temp files left": 0,
}


# -- the runner: tests/security/cli_runner.py ------------------------------------------
@contextlib.contextmanager
def memory_limit(extra: int = 1 << 30):
    """At most `extra` more bytes of address space for this process in the block: an endless read (a
    symlink to /dev/zero) ends in MemoryError, not in swapping the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line or "Traceback" in line or "internal error" in line]


def snapshot(folder: pathlib.Path) -> dict[str, str]:
    """sha256 of every regular file under `folder` (what a case must not destroy)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink() and stat.S_ISREG(p.lstat().st_mode):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def temp_files(folder: pathlib.Path) -> list[str]:
    return [str(p) for p in folder.rglob("*.tmp")]


# -- the valid files, built once --------------------------------------------------
SPEC = random_spec(0, activation="relu", glu=False, norm=False)

#: the valid input files (made once by the valid_files fixture) that the commands below take
VALID = (
    "model.onnx",
    "calib.npz",
    "target.json",
    "plugin.py",
    "net.lava",
    "x.npy",
    "y.npy",
    "prog.s",
    "prog.bin",
    "config.toml",
)


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    work = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    onnx.save(build_step_model(SPEC), str(work / "model.onnx"))
    np.savez(work / "calib.npz", x=rng.normal(size=(4, 8, SPEC.in_features)))
    shutil.copy(ROOT / "ssmc" / "targets" / "loihi2.json", work / "target.json")
    (work / "plugin.py").write_text("REGISTERS = ('nothing', 'at', 'all')  # a harmless plugin\n")
    (work / "config.toml").write_text('readout = "mean"\n')  # one line: cut in half, it is not TOML
    np.save(work / "x.npy", rng.normal(size=(3, 6, SPEC.in_features)))
    np.save(work / "y.npy", np.array([0, 1, 2]))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        res = run_in_process(["compile", "model.onnx", "-o", "net.lava", "-q", "--calibrate", "calib.npz"])
        assert res.code == 0, res.err
        res = run_in_process(["microcode", "net.lava"])
        assert res.code == 0, res.err
        program = res.out.split("programs: ")[1].split(",")[0].strip()
        res = run_in_process(["microcode", "net.lava", "--show", program.split("/")[2].split("@")[0]])
        (work / "prog.s").write_text(res.out)
        res = run_in_process(["microcode", "--assemble", "prog.s", "-o", "prog.bin"])
        assert res.code == 0, res.err
    finally:
        os.chdir(cwd)
    return {name: (work / name).read_bytes() for name in VALID}


# -- commands and their file arguments ----------------------------------------------
@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    argv: tuple[str, ...]  # valid invocation; file arguments are the VALID names / OUTPUTS below
    outputs: tuple[str, ...] = ()  # the output file names in argv


COMMANDS = [
    Command(
        "compile",
        (
            "compile",
            "model.onnx",
            "-o",
            "out.lava",
            "-q",
            "--calibrate",
            "calib.npz",
            "--target",
            "target.json",
            "--plugin",
            "plugin.py",
            "--config",
            "config.toml",
        ),
        ("out.lava",),
    ),
    Command("config", ("config", "model.onnx", "--plugin", "plugin.py")),
    Command("config-net", ("config", "net.lava")),
    Command("inspect", ("inspect", "model.onnx", "--plugin", "plugin.py")),
    Command(
        "run",
        (
            "run",
            "net.lava",
            "--input",
            "x.npy",
            "--labels",
            "y.npy",
            "--compare-onnx",
            "model.onnx",
            "--output",
            "out.npy",
            "-q",
        ),
        ("out.npy",),
    ),
    Command("report", ("report", "net.lava", "--format", "json", "-o", "out.json"), ("out.json",)),
    Command("report-html", ("report", "net.lava", "--format", "html", "-o", "out.html"), ("out.html",)),
    Command("export-lava", ("export-lava", "net.lava", "-o", "out.py"), ("out.py",)),
    Command("microcode", ("microcode", "net.lava")),
    Command("assemble", ("microcode", "--assemble", "prog.s", "-o", "out.bin"), ("out.bin",)),
    Command("disassemble", ("microcode", "--disassemble", "prog.bin", "-o", "out.s"), ("out.s",)),
    Command(
        "trace",
        ("trace", "net.lava", "--input", "x.npy", "--calibrate", "calib.npz", "--html", "out.html", "-q"),
        ("out.html",),
    ),
    Command("profile", ("profile", "net.lava", "--input", "x.npy", "-o", "out.html", "-q"), ("out.html",)),
    Command("export-nir", ("export-nir", "model.onnx", "-o", "out.nir", "--cut", "--check", "x.npy"), ("out.nir",)),
    Command("export-nir-net", ("export-nir", "net.lava", "-o", "out.nir", "--cut"), ("out.nir",)),
    Command("passes", ("passes", "--plugin", "plugin.py")),
    Command("ops", ("ops", "--plugin", "plugin.py")),
]

INPUT_VARIANTS = ("missing", "directory", "fifo", "chardev", "devzero", "empty", "truncated", "text", "png")
OUTPUT_VARIANTS = ("missing-folder", "directory", "fifo", "chardev", "devzero", "symlink-to-input", "hardlink-to-input")
NAMES = ("with space", "ünïcödé €", "ctl\x1b[31m\x07", "'><img src=x onerror=alert(1)>")

#: (command, argument, variant) -> the owner whose reader still fails it today; these are
#: xfail(strict=True) until that branch is merged (the integrator removes the marks).
KNOWN: dict = {}  # the "files" branch (sec-files) fixed every case once listed here

#: valid content that is accepted as it is (exit 0 is right)
ACCEPTED = {("plugin.py", "empty"), ("config.toml", "empty")}  # an empty config file sets nothing


def _cases():
    for cmd in COMMANDS:
        files = [a for a in cmd.argv if a in VALID]
        for arg in files:
            for variant in INPUT_VARIANTS:
                yield cmd, arg, "input", variant
        for arg in cmd.outputs:
            for variant in OUTPUT_VARIANTS:
                yield cmd, arg, "output", variant


def _params():
    out = []
    for cmd, arg, role, variant in _cases():
        marks = []
        owner = KNOWN.get((cmd.name, arg, variant))
        if owner:
            marks.append(pytest.mark.xfail(strict=True, reason=OWNED[owner]))
        out.append(pytest.param(cmd, arg, role, variant, marks=marks, id=f"{cmd.name}-{arg}-{variant}"))
    return out


def _prepare(work: pathlib.Path, valid: dict[str, bytes]) -> None:
    for name, data in valid.items():
        (work / name).write_bytes(data)


def _hostile(work: pathlib.Path, arg: str, variant: str, valid: dict[str, bytes], first_input: str) -> str:
    """Make the hostile stand-in for `arg`; return the name to pass instead."""
    suffix = pathlib.Path(arg).suffix
    name = f"hostile{suffix}"
    path = work / name
    if variant == "missing":
        pass
    elif variant == "missing-folder":
        name = f"no_such_folder/{name}"
    elif variant == "directory":
        path.mkdir()
    elif variant == "fifo":
        os.mkfifo(path)
    elif variant == "chardev":
        if not IS_ROOT:
            pytest.skip("making a device node needs root")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a null device of our own, not /dev/null
    elif variant == "devzero":
        path.symlink_to("/dev/zero")
    elif variant == "empty":
        path.write_bytes(b"")
    elif variant == "truncated":
        path.write_bytes(valid[arg][: len(valid[arg]) // 2])
    elif variant == "text":
        path.write_bytes(b"this is a text file, not what you think\n" * 20)
    elif variant == "png":
        path.write_bytes(PNG)
    elif variant == "symlink-to-input":
        path.symlink_to(work / first_input)
    elif variant == "hardlink-to-input":
        os.link(work / first_input, path)
    else:
        raise AssertionError(variant)
    return name


def _check(res: Outcome, work: pathlib.Path, before: dict[str, str], expect_ok: bool) -> None:
    COUNTS["cases"] += 1
    leftovers = temp_files(work)
    after = snapshot(work)
    destroyed = [f for f, h in before.items() if after.get(f) != h]
    COUNTS["temp files left"] += bool(leftovers)
    COUNTS["files destroyed"] += bool(destroyed)
    COUNTS["hangs"] += res.code is None
    COUNTS["internal errors"] += res.code == 70 or "Traceback" in res.err
    assert res.code is not None, "hung (no exit before the watchdog)"
    assert "Traceback" not in res.err + res.out, res.err
    assert not leftovers, f"temporary files left: {leftovers}"
    assert not destroyed, f"changed or destroyed: {destroyed}"
    if expect_ok:
        assert res.code == 0, res.err
        COUNTS["clean successes"] += 1
        return
    assert res.code in (1, 2), f"exit {res.code}: {res.err}"
    lines = error_lines(res.err)
    assert len(lines) == 1, res.err
    if res.code == 1:
        assert lines[0].startswith("ssmc: error: "), res.err
    COUNTS["clean refusals"] += 1


@pytest.mark.parametrize("cmd, arg, role, variant", _params())
def test_a_hostile_file_argument_is_refused_in_one_line_and_nothing_is_lost(
    cmd, arg, role, variant, valid_files, tmp_path, monkeypatch
):
    work = tmp_path
    _prepare(work, valid_files)
    first_input = next(a for a in cmd.argv if a in VALID)
    name = _hostile(work, arg, variant, valid_files, first_input)
    argv = [name if a == arg else a for a in cmd.argv]
    before = snapshot(work)
    monkeypatch.chdir(work)
    with memory_limit() if variant == "devzero" else contextlib.nullcontext():
        res = run_in_process(argv, FIFO_TIMEOUT if variant == "fifo" else TIMEOUT)
    _check(res, work, before, expect_ok=(arg, variant) in ACCEPTED)
    if variant in ("chardev", "fifo", "devzero") and role == "output":
        kind = (work / name).lstat().st_mode
        assert stat.S_ISCHR(kind) or stat.S_ISFIFO(kind) or stat.S_ISLNK(kind), "the special file was replaced"


def _name_params():
    out = []
    i = 0
    for cmd in COMMANDS:
        for arg in [a for a in cmd.argv if a in VALID] + list(cmd.outputs):
            names = NAMES if FULL else (NAMES[i % len(NAMES)],)  # every name, and every argument, at least once
            i += 1
            out += [
                pytest.param(cmd, arg, n, id=f"{cmd.name}-{arg}-{n.encode('unicode_escape').decode()}") for n in names
            ]
    return out


@pytest.mark.parametrize("cmd, arg, stem", _name_params())
def test_a_file_argument_with_a_hostile_name_just_works(cmd, arg, stem, valid_files, tmp_path, monkeypatch):
    work = tmp_path
    _prepare(work, valid_files)
    name = stem + pathlib.Path(arg).suffix
    if arg in VALID:
        (work / name).write_bytes(valid_files[arg])
    argv = [name if a == arg else a for a in cmd.argv]
    before = snapshot(work)
    monkeypatch.chdir(work)
    res = run_in_process(argv)
    _check(res, work, before, expect_ok=True)
    if arg in cmd.outputs:
        assert (work / name).is_file() and (work / name).stat().st_size > 0, "not written under its exact name"
        if cmd.name == "report-html":  # the page's own name must not break out of its attributes
            page = (work / name).read_text()
            assert "<img src=x" not in page and "onerror=alert(1)>" not in page


def test_a_leading_dash_name_is_an_option_to_argparse_and_a_file_after_double_dash(valid_files, tmp_path, monkeypatch):
    _prepare(tmp_path, valid_files)
    (tmp_path / "-model.onnx").write_bytes(valid_files["model.onnx"])
    monkeypatch.chdir(tmp_path)
    res = run_in_process(["inspect", "-model.onnx"])
    assert res.code == 2 and len(error_lines(res.err)) == 1
    res = run_in_process(["inspect", "--", "-model.onnx"])
    assert res.code == 0, res.err


# -- outputs: what is refused, and what is written ------------------------------------
def test_output_onto_a_device_node_keeps_the_device(valid_files, tmp_path, monkeypatch):
    if not IS_ROOT:
        pytest.skip("making a device node needs root")
    _prepare(tmp_path, valid_files)
    os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    monkeypatch.chdir(tmp_path)
    res = run_in_process(["compile", "model.onnx", "-o", "null", "-q"])
    assert res.code == 1 and "null: is a character device" in res.err
    assert stat.S_ISCHR((tmp_path / "null").lstat().st_mode)


@pytest.mark.parametrize(
    "argv, victim",
    [
        (["compile", "model.onnx", "-o", "model.onnx", "-q"], "model.onnx"),
        (["compile", "model.onnx", "-o", "calib.npz", "--calibrate", "calib.npz", "-q"], "calib.npz"),
        (["report", "net.lava", "-o", "net.lava"], "net.lava"),
        (["run", "net.lava", "--input", "x.npy", "--output", "x.npy", "-q"], "x.npy"),
        (["run", "net.lava", "--input", "x.npy", "--labels", "y.npy", "--output", "./y.npy", "-q"], "y.npy"),
        (["export-lava", "net.lava", "-o", "plugin.py"], None),  # not an input: overwriting is fine (checked below)
        (["microcode", "--assemble", "prog.s", "-o", "prog.s"], "prog.s"),
    ],
)
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(argv, victim, valid_files, tmp_path, monkeypatch):
    _prepare(tmp_path, valid_files)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = run_in_process(argv)
    if victim is None:
        assert res.code == 0, res.err
        return
    assert res.code == 1 and "would destroy it" in res.err, res.err
    assert snapshot(tmp_path) == before


def test_run_output_is_written_under_exactly_the_given_name(valid_files, tmp_path, monkeypatch):
    _prepare(tmp_path, valid_files)
    monkeypatch.chdir(tmp_path)
    res = run_in_process(["run", "net.lava", "--input", "x.npy", "--output", "y_pred", "-q"])
    assert res.code == 0, res.err
    assert "wrote y_pred " in res.out and not (tmp_path / "y_pred.npy").exists()
    assert np.load(tmp_path / "y_pred").shape == (3, 6, SPEC.n_out)


def test_a_failed_write_leaves_the_old_output_and_no_temporary_file(valid_files, tmp_path, monkeypatch):
    _prepare(tmp_path, valid_files)
    (tmp_path / "out.py").write_text("old script\n")
    monkeypatch.chdir(tmp_path)
    calls = []
    real_replace = os.replace

    def fail_second(src, dst):  # the .npz goes into place, the script's rename fails
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    res = run_in_process(["export-lava", "net.lava", "-o", "out.py"])
    assert res.code == 1 and "No space left on device" in res.err, res.err
    assert (tmp_path / "out.py").read_text() == "old script\n"
    assert not temp_files(tmp_path)


def test_the_html_report_escapes_every_name_it_shows(valid_files, tmp_path, monkeypatch):
    """Names come from the model file, the ONNX graph and -o: none may become markup or leave its attribute."""
    _prepare(tmp_path, valid_files)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m'><i>x.onnx").write_bytes(valid_files["model.onnx"])
    assert run_in_process(["compile", "m'><i>x.onnx", "-o", "n.lava", "-q"]).code == 0
    name = "r'><b onmouseover=alert(1)>.html"
    res = run_in_process(["report", "n.lava", "--format", "html", "-o", name])
    assert res.code == 0, res.err
    page = (tmp_path / name).read_text()
    assert "<i>" not in page and "<b " not in page
    assert "src='r%27%3E%3Cb%20onmouseover%3Dalert%281%29%3E_files/utilisation.png'" in page
    assert (tmp_path / "r'><b onmouseover=alert(1)>_files" / "utilisation.png").is_file()


def test_two_compiles_to_one_output_at_once_leave_one_complete_file(valid_files, tmp_path):
    (tmp_path / "m.onnx").write_bytes(valid_files["model.onnx"])
    out = tmp_path / "net.lava"
    cmd = [sys.executable, "-m", "ssmc", "compile", str(tmp_path / "m.onnx"), "-o", str(out), "-q"]
    procs = [subprocess.Popen(cmd + extra, stderr=subprocess.PIPE, text=True) for extra in ([], ["--readout", "mean"])]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert not temp_files(tmp_path)
    import ssmc as api

    net = api.load(out)  # validates every checksum: one whole file, not a mix
    assert net.config.readout in ("none", "mean")


# -- signals ------------------------------------------------------------------------
MOMENTS = (0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 2.5, 3.5) if FULL else (0.3, 1.0, 2.0)  # from 0.3 s: ssmc is loaded


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_compile_exits_in_one_line_and_keeps_the_old_output(signum, code, tmp_path):
    old = tmp_path / "net.lava"
    old.write_bytes(b"the previous net.lava, which must survive an interrupted compile")
    cmd = [
        sys.executable,
        "-m",
        "ssmc",
        "compile",
        str(EXAMPLES / "digits_s4d_step.onnx"),
        "-o",
        str(old),
        "-q",
        "--calibrate",
        str(EXAMPLES / "digits_calib.npz"),
    ]
    seen = []
    for moment in MOMENTS:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(moment)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
        seen.append(proc.returncode)
        assert proc.returncode in (code, 0), (moment, proc.returncode, err)
        assert not temp_files(tmp_path), moment
        if proc.returncode == code:
            assert err.strip().splitlines() == ["ssmc: interrupted"], (moment, err)
            assert old.read_bytes().startswith(b"the previous net.lava"), moment
        else:
            old.write_bytes(b"the previous net.lava, which must survive an interrupted compile")
    assert code in seen  # at least one moment was before the end


def test_ctrl_c_after_the_partition_solver_is_still_a_clean_interrupt(tmp_path):
    """CP-SAT used to leave SIGINT at the default action after solving: a later Ctrl-C killed ssmc silently."""
    script = (
        "import os, signal, sys, time\n"
        "import ssmc\n"
        f"net = ssmc.compile({str(EXAMPLES / 'digits_s4d_step.onnx')!r})\n"
        "assert 'cpsat' in str(net.report), 'the partition must have run CP-SAT'\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(7)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 7, (proc.returncode, proc.stderr[-2000:])


def test_ctrl_c_during_the_partition_solver_stops_it_at_once():
    """The solve runs in a worker thread: the interrupt does not wait for the solver's time limit."""
    script = (
        "import os, signal, sys, threading, time\n"
        "from ortools.sat.python import cp_model\n"
        "from ssmc import interrupts\n"
        "from ssmc.mapping.solvers import _solve\n"
        "interrupts.install()\n"
        "m = cp_model.CpModel()\n"
        "xs = [m.NewIntVar(0, 100, f'x{i}') for i in range(60)]\n"
        "m.AddAllDifferent(xs[:50])\n"
        "m.Maximize(sum((i % 7) * x for i, x in enumerate(xs)))\n"
        "solver = cp_model.CpSolver()\n"
        "solver.parameters.max_time_in_seconds = 60\n"
        "solver.parameters.catch_sigint_signal = False\n"
        "threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    _solve(solver, m)\n"
        "except KeyboardInterrupt:\n"
        "    print(time.monotonic() - start)\n"
        "    sys.exit(7)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 7, proc.stderr[-2000:]
    assert float(proc.stdout) < 10, "the solver ran on after the interrupt"


# -- the tally ----------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def tally(request):
    yield
    print_tally(
        request,
        "security tally (tests/security/test_cli_files.py): " + ", ".join(f"{k} {v}" for k, v in COUNTS.items()),
    )
