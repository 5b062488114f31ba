"""One exception hierarchy for everything ssmc reports to a user.

Every error a user can cause (bad file, unsupported op, shape that does not fit)
is an `SsmcError` subclass that says what went wrong; the CLI prints its message on
one line (`ssmc: error: ...`) and exits 1. Anything else escaping the library is a
bug in ssmc (exit 70). The table in docs/architecture.md ("Errors") says which class
means what. Every class is defined here, so `except` clauses and the docs have one
list to read; the modules that raised them first re-export them (e.g.
`ssmc.passes.base.PassError`). Raise a subclass, never `SsmcError` itself
(tests/test_errors.py checks both rules).
"""

from __future__ import annotations


class SsmcError(Exception):
    """Base of all errors ssmc raises on purpose. Catch it; raise one of its subclasses."""


# --- what the user gave: options, data files, models -------------------------------------------------------


class OptionError(SsmcError):
    """A command-line option or library argument that is unknown, out of range, or conflicts with another
    (e.g. an unknown engine, `--format html` without `-o`). argparse's own usage errors exit 2; these exit 1."""


class ConfigError(OptionError):
    """A compile configuration (keyword, flag, config file or net.lava record) with a bad key or value."""


class InputDataError(SsmcError):
    """User data (inputs, labels, calibration) or a small input file (target description, microcode source)
    that cannot be read, or has the wrong shape or type."""


class ModelLoadError(SsmcError):
    """The model file (ONNX; or a NIR graph read back) is not readable and valid."""


class UnsupportedModelError(SsmcError):
    """A valid model that uses something ssmc does not map or cannot run in fixed point (an op, a structure,
    an unstable recurrence)."""


class HandlerError(SsmcError):
    """An op handler registered twice, or a handler plugin that cannot be loaded (docs/extending.md)."""


# --- compiling: pipeline, IR, target ----------------------------------------------------------------------


class PassError(SsmcError):
    """A pipeline that names an unknown pass or option, an option out of range, passes in an order that cannot
    work (e.g. fuse-complex-pairs before discretize), or a pass that failed."""


class IRError(SsmcError):
    """A broken IR: failed verification, or text that does not parse."""


class TargetError(SsmcError):
    """A target file that cannot be read, or an override that makes no sense."""


class FitError(SsmcError):
    """A network that does not fit the target: says how many cores it needs, what binds and what would fit.

    Besides the one-line message, the numbers as fields for callers (a sweep, a report):
    `need` and `have` (of the `binding` capacity: cores for the whole network, or the capacity's
    units for one indivisible piece against one core), and the `fixes` the message suggests.
    """

    def __init__(
        self,
        message: str,
        *,
        need: int | None = None,
        have: int | None = None,
        binding: str | None = None,
        fixes: tuple[str, ...] = (),
    ):
        super().__init__(message)
        self.need, self.have, self.binding, self.fixes = need, have, binding, tuple(fixes)


class ResourceLimitError(SsmcError):
    """A model or a run bigger than a configured limit (ssmc.limits), refused before it uses the memory."""


# --- compiled nets and what runs them ---------------------------------------------------------------------


class BundleError(SsmcError):
    """A net.lava file that is damaged, truncated or from a newer format, or an entry name it cannot hold."""


class IncompleteNetError(SsmcError):
    """A valid net that lacks what the command needs: no neuron groups (compiled with a pipeline that stops
    before lowering to neurons), or no float model graph. The fix is to compile with the default pipeline."""


class MicrocodeError(SsmcError):
    """Neuron microcode that does not assemble, decode, or match the network it is for."""


class EngineError(SsmcError):
    """An engine that cannot run here (Lava not installed, a neuron kind it has no process for) or whose run
    failed, or two fixed-point engines that disagree on a net's integers."""


# --- what ssmc writes -------------------------------------------------------------------------------------


class OutputFileError(SsmcError):
    """An output path ssmc refuses or cannot write: empty, a folder or device, one of the inputs, in a folder
    that does not exist, or a failed write (docs/security.md)."""


def printable(text: str) -> str:
    """`text` safe to show on a terminal: control and other non-printable characters (ESC, newline, bidi
    overrides) escaped as repr escapes them, e.g. '\\x1b[2J' -> '\\\\x1b[2J'. Names in a model file are untrusted."""
    # protobuf hands back a string field that is not valid UTF-8 as bytes
    text = text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
