"""Ctrl-C and SIGTERM for the `ssmc` command: an exception, not a sudden death.

The handlers turn SIGINT and SIGTERM into `Interrupted` (a KeyboardInterrupt), so every `finally` runs
and removes its temporary files (ssmc.outputs) and the old output stays intact; the CLI then prints one
line and exits 128 + the signal number (130, 143). A second signal while the first one unwinds is
ignored, so the clean-up itself is not cut short; a third ends the process at once.

`received()` survives libraries that catch the KeyboardInterrupt and raise something else (an import
interrupted half-way surfaces as an ImportError): the CLI asks it before calling an error a bug. Where a
library swallows the exception, `check()` raises it again at the next checkpoint (the CLI's, and
ssmc.outputs' before it renames anything into place). A signal that lands in code C runs from a string
or in a `__del__` (Cython's import-time patching is one: it prints "Exception ignored" and drops it) is
sent again 10 ms later instead.

A signal that lands in a Python callback C code calls (a ctypes callback: numba's cache notifications, in
llvmlite) is dropped by that C code through `sys.unraisablehook`; while the handlers are installed, that
hook swallows our own `Interrupted` silently (it is recorded: the pass driver's and the CLI's checkpoints
raise it again) and passes everything else to the previous hook.

Native libraries may replace the process's handlers (OR-Tools' CP-SAT resets SIGINT to the default action
after a solve unless `catch_sigint_signal` is off): `reinstall()` puts ours back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []
_active = False


def _dropped_here(frame) -> bool:
    """Would an exception raised in `frame` be printed and dropped by the C code that runs it? A snippet C
    runs from a string in the middle of other code (not a `python -c` script: that has no caller), or a
    finalizer, or importlib's own frames."""
    if frame is None:
        return False
    if frame.f_code.co_filename.startswith("<frozen importlib"):
        # importlib's module-lock bookkeeping (a weakref callback among it) may print the exception as a
        # traceback and drop it: seen once under load with SIGTERM 0.3 s into `ssmc compile`
        return True
    return (frame.f_code.co_filename == "<string>" and frame.f_back is not None) or frame.f_code.co_name == "__del__"


def _handler(signum, frame) -> None:
    if not _received and _dropped_here(frame):
        threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
        return
    _received.append(signum)
    if len(_received) == 1:
        raise Interrupted(signum)
    if len(_received) >= 3:  # the user insists: stop now, clean-up or not
        os._exit(128 + _received[0])
    # the second: ignored while the first unwinds and removes temporary files


def received() -> int:
    """The first signal received since `install` (0 if none)."""
    return _received[0] if _received else 0


def check() -> None:
    """Raise `Interrupted` if a signal arrived and its exception was swallowed on the way (a checkpoint)."""
    if _received and _active:
        raise Interrupted(_received[0])


def exit_code() -> int:
    return 128 + received() if received() else 130


def _unraisable(unraisable) -> None:
    """sys.unraisablehook while installed: our Interrupted, dropped by C code, stays quiet (it is recorded
    and `check()` raises it again); anything else is printed as before."""
    if isinstance(unraisable.exc_value, Interrupted):
        return
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def install() -> dict:
    """Install the handlers (main thread only); return the previous ones for `restore`."""
    global _active, _previous_unraisablehook
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        if previous[s] != signal.SIG_IGN:  # ignored on purpose (nohup, a background job of a script): keep it so
            signal.signal(s, _handler)
    if sys.unraisablehook is not _unraisable:
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _unraisable
    _active = True
    return previous


def reinstall() -> None:
    """Put the handlers back if a native library replaced them (a no-op when they are not installed), and
    `check()`."""
    if _active:
        for s in SIGNALS:
            if signal.getsignal(s) != signal.SIG_IGN:
                signal.signal(s, _handler)  # sets the OS-level handler again even if Python thinks it is ours
    check()


def restore(previous: dict) -> None:
    global _active
    for s, h in previous.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)
    _active = any(h is _handler for h in previous.values())
    if not _active:  # the outermost user is done: the next one starts afresh
        _received.clear()
        if sys.unraisablehook is _unraisable:
            sys.unraisablehook = _previous_unraisablehook


@contextlib.contextmanager
def handled():
    """Handlers installed for the block (when in the main thread), the previous ones restored after."""
    try:
        previous = install()
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        restore(previous)
