"""The library front door: compile, load, run. The CLI only calls these."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ssmc.backend_loihi import bundle as _bundle
from ssmc.backend_loihi.lava_net import process_table_json
from ssmc.backend_loihi.microcode.emit import emit_microcode
from ssmc.data import read_arrays
from ssmc.errors import EngineError, IncompleteNetError, InputDataError, OptionError, PassError, printable
from ssmc.frontend import import_onnx
from ssmc.frontend.handlers import load_plugin_file
from ssmc.frontend.load import load_model
from ssmc.ir.graph import Graph
from ssmc.mapping.capacity import target_of
from ssmc.passes import DEFAULT_PIPELINE, FLOAT_PIPELINE, parse_pipeline, pipeline_spec, run_pipeline
from ssmc.passes.base import forward_info, with_data
from ssmc.report import build_report
from ssmc.runtime.calibrate import check_calibration, check_calibration_size
from ssmc.runtime.compare import IntegerComparison, OutputComparison, compare_integers, compare_outputs
from ssmc.runtime.float_ref import run_float, running_pool
from ssmc.runtime.lava_engine import build_network
from ssmc.runtime.onnx_ref import run_step_onnx
from ssmc.runtime.trace import Trace, trace_net
from ssmc.targets import load_target

ENGINES = ("float", "numpy", "lava", "microcode", "reference")
# Fixed-point engines: name -> "module:function", imported on use (Lava is slow to import).
# Each function is called as f(net, x, trace=False) and returns a numpy_engine.EngineResult
# holding the same integers as run_numpy.
FIXED_POINT_ENGINES = {
    "numpy": "ssmc.runtime.numpy_engine:run_net",
    "lava": "ssmc.runtime.lava_engine:run_net",
    "microcode": "ssmc.runtime.microcode_engine:run_net",
    "reference": "ssmc.runtime.reference:run_net",  # the contract in Python ints: slow, for checking
}
WIDTH_OPTIONS = ("weight_bits", "coef_bits", "state_bits", "message_bits", "layer_bits", "weight_exp")


def is_neuro_level(graph: Graph) -> bool:
    return bool(graph.ops_of_kind("neurons"))


@dataclass
class Net:
    """A compiled network: the IR, the float model it came from, and how it was made."""

    graph: Graph
    source: dict
    pipeline: str
    options: dict
    report: dict
    model_graph: Graph | None = None
    extras: dict = dataclasses.field(default_factory=dict)  # net.lava extra/ entries: path -> bytes

    def report_dict(self) -> dict:
        """What `ssmc report` shows: placement, utilisation, traffic, bit-widths, estimated cost (ssmc.report)."""
        return build_report(self)

    def save(self, path: str | os.PathLike) -> None:
        _bundle.save(_bundle.Bundle(graph=self.graph, model_graph=self.model_graph, source=self.source,
                                    pipeline=self.pipeline, options=self.options, report=self.report,
                                    extras=self.extras), path)

    def run(self, x: np.ndarray, engine: str = "numpy") -> np.ndarray:
        """Per-token outputs [batch, tokens, outputs] of the first model output."""
        return self.run_detailed(x, engine)["outputs"]

    def run_detailed(self, x: np.ndarray, engine: str = "numpy") -> dict:
        """Outputs plus what the engine measured (saturation, sparsity) where it has it."""
        if engine not in ENGINES:
            raise OptionError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
        if engine == "float" or not is_neuro_level(self.graph):
            if engine != "float":  # every fixed-point engine needs neuron groups
                raise IncompleteNetError("this net was compiled without the fixed-point passes (no neuron groups): "
                                "run it with --engine float, or compile with the default pipeline")
            graph = self.model_graph if self.model_graph is not None else self.graph
            outs = run_float(graph, x)
            return {"outputs": outs[graph.outputs()[0].name]}
        res = engine_function(engine)(self, x)
        return {"outputs": res.outputs[self.graph.outputs()[0].name], "saturation": res.saturation,
                "sparsity": res.sparsity, "result": res}

    def float_graph(self, calibration=None) -> tuple[Graph, str | None]:
        """The float network the neuron groups were quantized from: the imported model run through the
        float passes of this net's pipeline (those of FLOAT_PIPELINE, in its order). Returns it and, when
        its complex-pair states are not in the compiled net's basis, why: rescale-states{balance=state}
        measured calibration data that is not passed here (`calibration`: the same sequences)."""
        if self.model_graph is None:
            raise IncompleteNetError("this net.lava has no float model to compare with (model graph missing)")
        float_names = FLOAT_PIPELINE.split(",")
        passes = [p for p in parse_pipeline(self.pipeline) if p.name in float_names]
        basis = None
        rescale = next((p for p in passes if p.name == "rescale-states"), None)
        if (rescale is not None and rescale.balance == "state" and calibration is None
                and self.options.get("calibration", "none") != "none"):
            basis = ("rescale-states{balance=state} scaled the states from calibration data: pass the same "
                     "data (--calibrate) to compare the states")
        cal = load_calibration(calibration)[0] if calibration is not None else None
        graph, _ = run_pipeline(self.model_graph.copy(), with_data(passes, calibration=cal), verify_each=False)
        return graph, basis

    def trace(self, x: np.ndarray, calibration=None) -> Trace:
        """Per layer and per token, fixed point against float: errors (end to end, and what each group
        adds itself), complex states' real / imaginary error and drift, values at the edge of their range,
        and the first token where the predicted class diverges; layers worst first (ssmc.runtime.trace)."""
        if not is_neuro_level(self.graph):
            raise IncompleteNetError("this net was compiled without the fixed-point passes (no neuron groups): there is "
                            "no fixed point to trace; compile it with the default pipeline")
        graph, basis = self.float_graph(calibration)
        return trace_net(self.graph, graph, np.asarray(x), skip_cpx=basis)

    def to_lava(self, x: np.ndarray | None = None, record_all: bool = False):
        """The connected Lava processes of this net, with x [batch, tokens, features] injected
        (default: one all-zero token); `.processes`, `.plan`, `.run()`. See ssmc.runtime.lava_engine.build_network."""
        if x is None:
            x = np.zeros((1, 1, self.graph.inputs()[0].shape[0]))
        return build_network(self.graph, x, record_all=record_all)


def engine_function(engine: str) -> Callable:
    """The run function of a fixed-point engine (imported now: some are slow to import)."""
    import importlib
    if engine not in FIXED_POINT_ENGINES:
        raise OptionError(f"unknown fixed-point engine {engine!r}; available: {', '.join(FIXED_POINT_ENGINES)}")
    module, func = FIXED_POINT_ENGINES[engine].split(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise EngineError(f"the {engine} engine is not available in this installation ({e})") from None


COMPARE_AGAINST = ("float", "numpy", "onnx")


def reference_outputs(net: Net, x: np.ndarray, against: str, onnx_model=None) -> np.ndarray:
    """What `net`'s outputs on x are compared with: the float reference ("float"), or the ONNX model
    (`onnx_model`: a path or an onnx.ModelProto) run by onnxruntime ("onnx"), pooled like the net's readout."""
    if against == "float":
        return net.run(x, engine="float")
    if against != "onnx":
        raise OptionError(f"no reference outputs for {against!r}; available: float, onnx")
    if onnx_model is None:
        raise OptionError("comparing with onnxruntime needs the ONNX model (onnx_model=, --compare-onnx MODEL)")
    if isinstance(onnx_model, (str, os.PathLike)):
        onnx_model = load_model(onnx_model).model
    ref = run_step_onnx(onnx_model, x)
    readout = net.options.get("readout", "none")
    if readout in ("sum", "mean"):  # the ONNX model has no pool: apply the IR's pool op to its outputs
        ref = running_pool(ref, readout)
    return ref


def compare(net: Net, x: np.ndarray, against: str = "float", engine: str = "numpy", onnx_model=None,
            result: dict | None = None) -> OutputComparison | IntegerComparison:
    """`net` run on `engine` against a reference (ssmc.runtime.compare): "float" or "onnx" give the
    errors (OutputComparison); "numpy" says whether a fixed-point engine holds the numpy engine's
    integers, saturation counts and sparsity (IntegerComparison). `result`: the engine's
    net.run_detailed(x, engine) if it has already run."""
    if against not in COMPARE_AGAINST:
        raise OptionError(f"cannot compare against {against!r}; available: {', '.join(COMPARE_AGAINST)}")
    if result is None:
        result = net.run_detailed(x, engine=engine)
    if against == "numpy":
        if "result" not in result:
            raise OptionError(f"the {engine} engine computes no integers to compare with the numpy engine's; "
                            "use a fixed-point engine (numpy, lava, microcode)")
        return compare_integers(result["result"], net.run_detailed(x, engine="numpy")["result"])
    return compare_outputs(result["outputs"], reference_outputs(net, x, against, onnx_model))


def load_calibration(data) -> tuple[np.ndarray, str]:
    """Calibration sequences from an array or a .npy/.npz file (array 'x'); returns (x, provenance)."""
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        loaded = read_arrays(path, "calibration data", ("x",), required=("x",))  # read once: the hash is of what was used
        return loaded.arrays["x"], f"{os.path.basename(path)} sha256:{loaded.sha256}"
    x = np.asarray(data)
    return x, f"array sha256:{hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()}"


def select_passes(pipeline: list, skip: list[str] | None = None, stop_after: str | None = None) -> list:
    """The pipeline without the `skip`ped passes and cut after `stop_after` (names must be in it)."""
    names = [p.name for p in pipeline]
    for name in list(skip or []) + ([stop_after] if stop_after else []):
        if name not in names:
            raise PassError(f"pass {name!r} is not in the pipeline ({','.join(names)})")
    if stop_after:
        pipeline = pipeline[:names.index(stop_after) + 1]
    return [p for p in pipeline if p.name not in set(skip or [])]


def compile(model_path: str | os.PathLike, passes: str = DEFAULT_PIPELINE, readout: str = "none",
            calibration=None, verify_each: bool = True, after_pass: Callable | None = None,
            log: Callable[[str], None] = lambda s: None, skip: list[str] | None = None,
            stop_after: str | None = None, sigma_delta: float | None = None, plugins=(), target: str | None = None,
            board: str | None = None, chips: int | None = None, max_neurons_per_core: int | None = None,
            **widths) -> Net:
    """ONNX step-form model -> Net, running `passes` (a pipeline string).

    `calibration`: sequences [n, tokens, features] (array or .npy/.npz path) that
    size the fixed-point ranges. `widths`: weight_bits, coef_bits, state_bits,
    message_bits, layer_bits ("s4d0:weight=6/coef=12;linear1:weight=4") and
    weight_exp ("group", "row" or "auto": weight exponents per linear or per
    row), overriding the assign-bitwidths pass's options. `skip` and
    `stop_after` name passes of the pipeline to leave out / to end with.
    `sigma_delta`: append the sigma-delta pass with this threshold (a fraction
    of each group's full scale; 0 sends every change, values unchanged).
    `target` (a target JSON file or built-in name), `board`, `chips` and
    `max_neurons_per_core` set the partition pass's target (see docs/mapping.md).
    `plugins`: Python files to import first (they register op handlers or
    passes; docs/extending.md); recorded in net.lava with their sha256.
    """
    plugin_record = [{"file": os.path.basename(os.fspath(p)), "sha256": load_plugin_file(p)} for p in plugins]
    unknown = set(widths) - set(WIDTH_OPTIONS)
    if unknown:
        raise OptionError(f"unknown option(s) {sorted(unknown)}; widths are {', '.join(WIDTH_OPTIONS)}")
    pipeline = select_passes(parse_pipeline(passes), skip, stop_after)  # reject a bad pipeline before slow work
    given = {k: (v if k in ("layer_bits", "weight_exp") else int(v)) for k, v in widths.items() if v is not None}
    if given:
        if not any(p.name == "assign-bitwidths" for p in pipeline):
            raise PassError("bit-width options need assign-bitwidths in the pipeline")
        pipeline = [dataclasses.replace(p, **given) if p.name == "assign-bitwidths" else p for p in pipeline]
    if sigma_delta is not None:
        if not any(p.name == "assign-bitwidths" for p in pipeline):
            raise PassError("sigma-delta messages need assign-bitwidths in the pipeline (they are a neuron setting)")
        # right after assign-bitwidths: later passes (partition) see the message rates it sets
        sd = parse_pipeline(f"sigma-delta{{threshold={float(sigma_delta)!r}}}")
        pipeline = [p for p in pipeline if p.name != "sigma-delta"]
        at = next(i for i, p in enumerate(pipeline) if p.name == "assign-bitwidths") + 1
        pipeline = pipeline[:at] + sd + pipeline[at:]
    for flag, value in (("--chips", chips), ("--max-neurons-per-core", max_neurons_per_core)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise OptionError(f"{flag} {value}: give a whole number of at least 1 (leave it out for the target's own)")
    if target is not None:  # a path-like target file is recorded (and passed to the pass) as text
        target = os.fspath(target)
    mapping = {k: v for k, v in (("target", target), ("board", board), ("chips", chips),
                                  ("max_neurons_per_core", max_neurons_per_core)) if v is not None}
    if mapping:
        if not any(p.name == "partition" for p in pipeline):
            raise PassError("target options (--target, --board, --chips, --max-neurons-per-core) need the partition "
                            "pass in the pipeline")
        pipeline = [dataclasses.replace(p, **mapping) if p.name == "partition" else p for p in pipeline]
    cal, cal_source = (None, "none")
    if calibration is not None:
        cal, cal_source = load_calibration(calibration)
    log(f"importing {os.fspath(model_path)}")
    # each S4D layer as it is measured (seconds per layer on big models)
    with forward_info(logging.getLogger("ssmc.frontend"), lambda line: log("  " + line)):
        graph, report, loaded = import_onnx(model_path, readout=readout)
    model_graph = graph.copy()
    if cal is not None:
        try:
            cal = check_calibration(cal, graph.inputs()[0].shape[0])
            check_calibration_size(graph, cal)
        except InputDataError as e:  # name the file the data came from
            if isinstance(calibration, (str, os.PathLike)):
                raise InputDataError(f"{os.fspath(calibration)}: {e}") from None
            raise
    log(f"recognised {len(graph)} ops; running passes: {pipeline_spec(pipeline) or '(none)'}")

    started = {}

    def starting(p):
        started[p.name] = time.perf_counter()
        log(f"  {p.name} ...")

    def progress(p, g, changed):
        seconds = time.perf_counter() - started.get(p.name, time.perf_counter())
        if not changed or seconds >= 1.0:  # say how a slow pass ended; fast ones are done by the next line
            log(f"  {p.name}: {'no change' if not changed else f'done in {seconds:.1f} s'}")
        if after_pass is not None:
            after_pass(p, g, changed)

    graph, records = run_pipeline(graph, with_data(pipeline, calibration=cal), verify_each=verify_each,
                                  after_pass=progress, before_pass=starting)
    extras = {}
    if any(p.name == "partition" for p in pipeline):
        part = next(p for p in pipeline if p.name == "partition")
        described = load_target(part.target or None, board=part.board or None, chips=part.chips or None).describe()
        assert described["values"] == target_of(graph).values()
        extras["target.json"] = (json.dumps(described, indent=1, sort_keys=True) + "\n").encode()
    if is_neuro_level(graph):  # one neuron program per group (docs/microcode.md)
        extras.update(emit_microcode(graph))
        log(f"microcode: {len(graph.ops_of_kind('neurons'))} programs (docs/microcode.md)")
        # which Lava process runs on which core
        extras["lava/processes.json"] = process_table_json(Net(graph=graph, source={}, pipeline="", options={},
                                                               report={}))
    return Net(
        graph=graph,
        model_graph=model_graph,
        source={"file": printable(os.path.basename(os.fspath(model_path))), "sha256": loaded.sha256, "bytes": loaded.size},
        pipeline=pipeline_spec(pipeline),
        # every option that shapes the result, named as compile()'s keywords, so a net.lava says how to
        # remake it (calibration and plugins by file name and sha256)
        options={"readout": readout, "calibration": cal_source, "passes": passes,
                 **({"skip": list(skip)} if skip else {}), **({"stop_after": stop_after} if stop_after else {}),
                 **({"sigma_delta": float(sigma_delta)} if sigma_delta is not None else {}), **given,
                 **({"plugins": plugin_record} if plugin_record else {}), **mapping},
        report={"import": dataclasses.asdict(report),
                "passes": [{"name": r.name, "spec": r.spec, "changed": r.changed, "notes": r.notes}
                           for r in records]},
        extras=extras,
    )


def load(path: str | os.PathLike) -> Net:
    """Read a net.lava file written by `Net.save`."""
    b = _bundle.load(path)
    return Net(graph=b.graph, model_graph=b.model_graph, source=b.source, pipeline=b.pipeline, options=b.options,
               report=b.report, extras=b.extras)
