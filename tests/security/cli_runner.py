"""The CLI under a watchdog, for the adversarial suites: ssmc.cli.main in this process with captured output
(run_in_process), or many cases in one child process whose stdin is a pipe nobody writes to (run_in_child),
and the tally line each suite prints at its end."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASE_SECONDS = 30  # the watchdog per case: a hang is a failure, not a stuck suite; refusals take milliseconds


@dataclasses.dataclass
class Outcome:
    code: int | None  # None: it hung
    out: str
    err: str
    seconds: float = 0.0


class Hang(BaseException):
    """The watchdog fired (a BaseException: the CLI's `except Exception` must not turn it into exit 70)."""


def run_in_process(argv: list[str], timeout: float = CASE_SECONDS) -> Outcome:
    """ssmc.cli.main(argv) with stdout and stderr captured; a call still running after `timeout` s is stopped
    by SIGALRM and reported as hung (code None)."""
    import ssmc.cli

    out, err = io.StringIO(), io.StringIO()

    def fire(signum, frame):
        raise Hang()

    started = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = ssmc.cli.main(argv)
                code = 0 if code is None else code  # as sys.exit(main()) would
            except SystemExit as e:  # argparse
                code = e.code if isinstance(e.code, int) else 1
    except Hang:
        code = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome(code, out.getvalue(), err.getvalue(), time.perf_counter() - started)


def run_in_child(jobs: dict[str, list[str]], folder: Path, timeout: float = CASE_SECONDS) -> dict[str, Outcome]:
    """Every job (name -> argv) through run_in_process in ONE child process (Python and ssmc start once),
    each under the watchdog; the child's stdin is a pipe nobody writes to or closes, so a reader of
    /dev/stdin would wait forever there. SSMC_DEBUG is dropped: the cases judge what users see."""
    cases, results = folder / "cases.json", folder / "results.json"
    cases.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "SSMC_DEBUG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.security.cli_runner", str(cases), str(results), str(timeout)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        _, err = proc.communicate(timeout=timeout * len(jobs) + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the CLI driver did not finish") from None
    assert proc.returncode == 0, err
    return {name: Outcome(*fields) for name, fields in json.loads(results.read_text()).items()}


def print_tally(request, line: str) -> None:
    """`line` on the terminal at the end of the module, even under pytest's output capture."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + line)


if __name__ == "__main__":  # the child of run_in_child: cases.json results.json timeout
    todo = json.loads(Path(sys.argv[1]).read_text())
    done = {name: dataclasses.astuple(run_in_process(argv, float(sys.argv[3]))) for name, argv in todo.items()}
    Path(sys.argv[2]).write_text(json.dumps(done))
