"""ONNX frontend: load a step-form model and recognise it as model-level IR."""

from __future__ import annotations

import os

from ssmc.errors import OptionError, printable
from ssmc.frontend.convert import ImportReport, convert
from ssmc.frontend.handlers import HandlerContext, load_plugin_file, register_op_handler
from ssmc.frontend.load import LoadedModel, load_model
from ssmc.ir.graph import Graph

READOUTS = ("none", "sum", "mean", "last")  # last: no op; the host reads the last token's output


def import_onnx(path: str | os.PathLike, readout: str = "none") -> tuple[Graph, ImportReport, LoadedModel]:
    """Load `path` and convert it; `readout` "sum"/"mean" appends a running pool over time ("last" and
    "none" append nothing: the host reads the last token's output).

    Returns the verified graph, what was recognised, and the loaded model
    (with its sha256, recorded in net.lava).
    """
    if readout not in READOUTS:
        raise OptionError(f"readout must be one of {list(READOUTS)}, got {readout!r}")
    loaded = load_model(path)
    graph, report = convert(loaded.model, name=printable(os.path.basename(os.fspath(path))), readout=readout)
    graph.attrs["source_sha256"] = loaded.sha256
    return graph, report, loaded


__all__ = [
    "import_onnx",
    "ImportReport",
    "LoadedModel",
    "READOUTS",
    "HandlerContext",
    "load_plugin_file",
    "register_op_handler",
]
