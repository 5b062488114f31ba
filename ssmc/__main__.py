"""The `ssmc` command and `python -m ssmc`: signal handlers first, then the CLI.

The handlers go in before numpy and the CLI are imported, so a Ctrl-C or SIGTERM in the first half
second is a one-line exit like any other (ssmc.interrupts), not a traceback from inside an import.
"""

import os
import sys

from ssmc import interrupts

interrupts.install()
try:
    from ssmc.cli import main  # noqa: E402  (after the handlers, on purpose)
except BaseException:
    if not interrupts.received():
        raise
    print("ssmc: interrupted", file=sys.stderr)
    sys.exit(interrupts.exit_code())


def command(argv: list[str] | None = None) -> int:
    """The `ssmc` command: the CLI's main, and after an interrupt an exit that skips interpreter finalization.
    By then every temporary file is removed and the line printed; a native library's worker thread still
    winding down at finalization (CP-SAT, onnxruntime's pools) would otherwise abort the process with
    "terminate called without an active exception" (exit -6, seen once under load with SIGINT 2 s into a
    compile)."""
    code = main(argv)
    if interrupts.received():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(command())
