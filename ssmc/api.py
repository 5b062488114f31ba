"""The library front door: compile, load, run. The CLI only calls these."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ssmc.backend_loihi import bundle as _bundle
from ssmc.errors import SsmcError
from ssmc.frontend import import_onnx
from ssmc.ir.graph import Graph
from ssmc.passes import DEFAULT_PIPELINE, parse_pipeline, pipeline_spec, run_pipeline

ENGINES = ("float",)


@dataclass
class Net:
    """A compiled network: the IR plus where it came from and what was done to it."""

    graph: Graph
    source: dict
    pipeline: str
    options: dict
    report: dict

    def save(self, path: str | os.PathLike) -> None:
        _bundle.save(_bundle.Bundle(graph=self.graph, source=self.source, pipeline=self.pipeline,
                                    options=self.options, report=self.report), path)

    def run(self, x: np.ndarray, engine: str = "float") -> np.ndarray:
        """Per-token outputs [batch, time, outputs] of the (first) model output."""
        if engine not in ENGINES:
            raise SsmcError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
        from ssmc.runtime.float_ref import run_float
        outs = run_float(self.graph, x)
        return outs[self.graph.outputs()[0].name]


def compile(model_path: str | os.PathLike, passes: str = DEFAULT_PIPELINE, readout: str = "none",
            verify_each: bool = True, after_pass: Callable | None = None, log: Callable[[str], None] = lambda s: None
            ) -> Net:
    """ONNX step-form model -> Net, running `passes` (a pipeline string)."""
    pipeline = parse_pipeline(passes)  # reject a bad pipeline before the slow import
    log(f"importing {os.fspath(model_path)}")
    graph, report, loaded = import_onnx(model_path, readout=readout)
    log(f"recognised {len(graph)} ops; running passes: {pipeline_spec(pipeline) or '(none)'}")
    graph, records = run_pipeline(graph, pipeline, verify_each=verify_each, after_pass=after_pass)
    return Net(
        graph=graph,
        source={"file": os.path.basename(os.fspath(model_path)), "sha256": loaded.sha256, "bytes": loaded.size},
        pipeline=pipeline_spec(pipeline),
        options={"readout": readout},
        report={"import": dataclasses.asdict(report),
                "passes": [{"name": r.name, "spec": r.spec, "changed": r.changed} for r in records]},
    )


def load(path: str | os.PathLike) -> Net:
    """Read a net.lava file written by `Net.save`."""
    b = _bundle.load(path)
    return Net(graph=b.graph, source=b.source, pipeline=b.pipeline, options=b.options, report=b.report)
