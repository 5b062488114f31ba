"""The `ssmc` command and `python -m ssmc`: signal handlers first, then the CLI.

The handlers go in before numpy and the CLI are imported, so a Ctrl-C or SIGTERM in the first half
second is a one-line exit like any other (ssmc.interrupts), not a traceback from inside an import.
"""

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

if __name__ == "__main__":
    sys.exit(main())
