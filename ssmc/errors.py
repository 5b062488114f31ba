"""One exception hierarchy for everything ssmc reports to a user.

Every error a user can cause (bad file, unsupported op, shape that does not fit)
is an `SsmcError`; the CLI prints its message on one line and exits non-zero.
Anything else escaping the library is a bug in ssmc.
"""

from __future__ import annotations


class SsmcError(Exception):
    """Base of all errors ssmc raises on purpose."""


class ModelLoadError(SsmcError):
    """The input file is not a readable, valid ONNX model."""


class UnsupportedModelError(SsmcError):
    """The ONNX graph is valid but uses something the frontend does not map."""


class IRError(SsmcError):
    """A broken IR: failed verification, or text that does not parse."""


class BundleError(SsmcError):
    """A net.lava file that is damaged, truncated or from a newer format."""


class InputDataError(SsmcError):
    """User data (inputs, labels, calibration) of the wrong shape or type."""


class FitError(SsmcError):
    """A network that does not fit the target: says how many cores it needs, what binds and what would fit.

    Besides the one-line message, the numbers as fields for callers (a sweep, a report):
    `need` and `have` (of the `binding` capacity: cores for the whole network, or the capacity's
    units for one indivisible piece against one core), and the `fixes` the message suggests.
    """

    def __init__(self, message: str, *, need: int | None = None, have: int | None = None,
                 binding: str | None = None, fixes: tuple[str, ...] = ()):
        super().__init__(message)
        self.need, self.have, self.binding, self.fixes = need, have, binding, tuple(fixes)


class MicrocodeError(SsmcError):
    """Neuron microcode that does not assemble, decode, or match the network it is for."""


class ResourceLimitError(SsmcError):
    """A model or a run bigger than a configured limit (ssmc.limits), refused before it uses the memory."""


def printable(text: str) -> str:
    """`text` safe to show on a terminal: control and other non-printable characters (ESC, newline, bidi
    overrides) escaped as repr escapes them, e.g. '\\x1b[2J' -> '\\\\x1b[2J'. Names in a model file are untrusted."""
    # protobuf hands back a string field that is not valid UTF-8 as bytes
    text = text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
