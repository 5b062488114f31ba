"""Ctrl-C and SIGTERM that C code would drop: the `ssmc` command still stops, in one line.

A signal can land in a Python function that C calls back (numba's cache notifications are ctypes
callbacks in llvmlite). The exception raised there never reaches ssmc: C prints it as "Exception ignored
..." and carries on. The handlers keep such an interrupt quiet and raise it again at the next checkpoint.
"""

import ctypes
import signal
import sys

import pytest

from ssmc import interrupts
from ssmc.passes.base import run_pipeline


def _interrupt_inside_a_ctypes_callback():
    callback = ctypes.CFUNCTYPE(None)(lambda: interrupts._handler(signal.SIGTERM, None))
    callback()  # C calls the lambda; the Interrupted it raises is dropped by ctypes


def test_an_interrupt_dropped_by_a_ctypes_callback_prints_nothing_and_is_raised_at_the_next_check(monkeypatch):
    printed = []  # what would be printed as "Exception ignored on calling ctypes callback function"
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    with interrupts.handled():
        _interrupt_inside_a_ctypes_callback()
        assert printed == []
        with pytest.raises(interrupts.Interrupted) as caught:
            interrupts.check()
        assert caught.value.signum == signal.SIGTERM


def test_the_pass_driver_stops_between_passes_after_a_dropped_interrupt():
    ran = []

    class Recorder:
        name, kind = "recorder", "transform"

        def spec(self):
            return self.name

        def run(self, graph):
            ran.append(self.name)
            _interrupt_inside_a_ctypes_callback()
            return graph, False

    with interrupts.handled(), pytest.raises(interrupts.Interrupted):
        run_pipeline(object(), [Recorder(), Recorder()], verify_each=False)
    assert ran == ["recorder"]


def test_other_dropped_exceptions_still_reach_the_previous_hook_which_comes_back_after(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    with interrupts.handled():
        ctypes.CFUNCTYPE(None)(lambda: 1 / 0)()
    assert [type(u.exc_value) for u in seen] == [ZeroDivisionError]
    assert sys.unraisablehook == seen.append
