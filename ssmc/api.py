"""The library front door: compile, load, run. The CLI only calls these."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from typing import Callable

import numpy as np

from ssmc.backend_loihi import bundle as _bundle
from ssmc.config import CompileConfig, ConfigError, FileRecord
from ssmc.data import read_arrays
from ssmc.errors import EngineError, IncompleteNetError, InputDataError, OptionError, printable
from ssmc.frontend import import_onnx
from ssmc.frontend.handlers import load_plugin_file
from ssmc.frontend.load import load_model
from ssmc.ir.graph import Graph
from ssmc.ir.net import CompiledNet
from ssmc.passes import FLOAT_PIPELINE, build_pipeline, parse_pipeline, pipeline_spec, run_pipeline
from ssmc.passes.build import recorded_pipeline
from ssmc.passes.base import forward_info, with_data
from ssmc.report import build_report
from ssmc.runtime.calibrate import check_calibration, check_calibration_size
from ssmc.runtime.compare import IntegerComparison, OutputComparison, compare_integers, compare_outputs
from ssmc.runtime.float_ref import run_float, running_pool
from ssmc.runtime.lava_engine import build_network
from ssmc.runtime.onnx_ref import run_step_onnx
from ssmc.runtime.trace import Trace, trace_net
from ssmc.targets import TargetFile, target_bytes

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


def is_neuro_level(graph: Graph) -> bool:
    return bool(graph.ops_of_kind("neurons"))


class Net(CompiledNet):
    """A compiled network (ssmc.ir.net.CompiledNet: the IR, the float model it came from, how it was made,
    its files) with what the library does with one: run, save, trace, report."""

    def report_dict(self) -> dict:
        """What `ssmc report` shows: placement, utilisation, traffic, bit-widths, estimated cost (ssmc.report)."""
        return build_report(self)

    def save(self, path: str | os.PathLike) -> None:
        _bundle.save(self, _checked_path(path, "Net.save"))

    def run(self, x: np.ndarray, engine: str = "numpy") -> np.ndarray:
        """Per-token outputs [batch, tokens, outputs] of the first model output."""
        return self.run_detailed(x, engine)["outputs"]

    def run_detailed(self, x: np.ndarray, engine: str = "numpy") -> dict:
        """Outputs plus what the engine measured (saturation, sparsity) where it has it."""
        if engine not in ENGINES:
            raise OptionError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
        if engine == "float" or not is_neuro_level(self.graph):
            if engine != "float":  # every fixed-point engine needs neuron groups
                raise IncompleteNetError(
                    "this net was compiled without the fixed-point passes (no neuron groups): "
                    "run it with --engine float, or compile with the default pipeline"
                )
            graph = self.model_graph if self.model_graph is not None else self.graph
            outs = run_float(graph, x)
            return {"outputs": outs[graph.outputs()[0].name]}
        res = engine_function(engine)(self, x)
        return {
            "outputs": res.outputs[self.graph.outputs()[0].name],
            "saturation": res.saturation,
            "sparsity": res.sparsity,
            "result": res,
        }

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
        if (
            rescale is not None
            and rescale.balance == "state"
            and calibration is None
            and self.config.calibration is not None
        ):
            basis = (
                "rescale-states{balance=state} scaled the states from calibration data: pass the same "
                "data (--calibrate) to compare the states"
            )
        cal = load_calibration(calibration)[0] if calibration is not None else None
        graph, _ = run_pipeline(self.model_graph.copy(), with_data(passes, calibration=cal), verify_each=False)
        return graph, basis

    def trace(self, x: np.ndarray, calibration=None) -> Trace:
        """Per layer and per token, fixed point against float: errors (end to end, and what each group
        adds itself), complex states' real / imaginary error and drift, values at the edge of their range,
        and the first token where the predicted class diverges; layers worst first (ssmc.runtime.trace)."""
        if not is_neuro_level(self.graph):
            raise IncompleteNetError(
                "this net was compiled without the fixed-point passes (no neuron groups): there is "
                "no fixed point to trace; compile it with the default pipeline"
            )
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
    readout = net.config.readout
    if readout in ("sum", "mean"):  # the ONNX model has no pool: apply the IR's pool op to its outputs
        ref = running_pool(ref, readout)
    return ref


def compare(
    net: Net, x: np.ndarray, against: str = "float", engine: str = "numpy", onnx_model=None, result: dict | None = None
) -> OutputComparison | IntegerComparison:
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
            raise OptionError(
                f"the {engine} engine computes no integers to compare with the numpy engine's; "
                "use a fixed-point engine (numpy, lava, microcode)"
            )
        return compare_integers(result["result"], net.run_detailed(x, engine="numpy")["result"])
    return compare_outputs(result["outputs"], reference_outputs(net, x, against, onnx_model))


def _checked_path(path, what: str) -> str | os.PathLike:
    """`path` if it names a file (str or os.PathLike); an OptionError naming `what` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise OptionError(f"{what}: expected a file name (str or os.PathLike), got {type(path).__name__}")
    return path


def load_calibration(data) -> tuple[np.ndarray, FileRecord]:
    """Calibration sequences from an array or a .npy/.npz file (array 'x'); returns (x, its record: the
    file's base name, or "array", and the sha256 of the file's or the array's bytes)."""
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        loaded = read_arrays(
            path, "calibration data", ("x",), required=("x",)
        )  # read once: the hash is of what was used
        return loaded.arrays["x"], FileRecord(printable(os.path.basename(path)), loaded.sha256)
    x = np.asarray(data)
    return x, FileRecord("array", hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest())


def _resolve_files(
    config: CompileConfig, calibration, plugins
) -> tuple[CompileConfig, np.ndarray | None, TargetFile | None]:
    """The files a compile reads, and `config` recording them by base name and sha256 (so the record is the
    same from any folder): plugins imported first (they may register passes the pipeline names), the target
    read once (hashed, and its bytes kept for the passes), calibration data loaded. Returns (config,
    calibration array, the target file's bytes or None).
    The config may name calibration data and plugins but cannot supply them (data and code come from the
    caller); a target file it names is read, and a sha256 it gives must match."""
    if not plugins and config.plugins:
        raise ConfigError(
            f"the config names plugin(s) {', '.join(p.file for p in config.plugins)}: pass them with "
            "--plugin (plugins=): a config file never runs code by itself"
        )
    # recorded names escaped like the model's (source.file): a file name is untrusted text
    records = tuple(FileRecord(printable(os.path.basename(os.fspath(p))), load_plugin_file(p)) for p in plugins)
    config = dataclasses.replace(config, plugins=records or config.plugins)
    target_file = None
    if config.target is not None:
        path = config.target.file
        data, name = target_bytes(path)
        digest = hashlib.sha256(data).hexdigest()
        if config.target.sha256 and config.target.sha256 != digest:
            raise ConfigError(
                f"target {path}: sha256 {digest[:12]}... is not the config's "
                f"{config.target.sha256[:12]}...: give the target file the net was built for"
            )
        config = dataclasses.replace(config, target=FileRecord(printable(name), digest))
        target_file = TargetFile(data, os.fspath(path))  # the passes build from the bytes hashed
    if calibration is None:
        if config.calibration is not None:
            raise ConfigError(
                f"the config was calibrated with {config.calibration.file}: pass that data with "
                "--calibrate (calibration=)"
            )
        return config, None, target_file
    cal, record = load_calibration(calibration)
    return dataclasses.replace(config, calibration=record), cal, target_file


def _progress(log: Callable[[str], None], after_pass: Callable | None) -> tuple[Callable, Callable]:
    """before_pass and after_pass callbacks that log each pass (and how a slow one ended)."""
    started = {}

    def starting(p):
        started[p.name] = time.perf_counter()
        log(f"  {p.name} ...")

    def progress(p, g, changed):
        seconds = time.perf_counter() - started.get(p.name, time.perf_counter())
        if p.kind != "output" and (not changed or seconds >= 1.0):  # fast ones are done by the next line
            log(f"  {p.name}: {'no change' if not changed else f'done in {seconds:.1f} s'}")
        if after_pass is not None:
            after_pass(p, g, changed)

    return starting, progress


def _checked_calibration(cal, graph: Graph, calibration):
    """Calibration sequences checked against the imported model (errors name the file they came from)."""
    if cal is None:
        return None
    try:
        cal = check_calibration(cal, graph.inputs()[0].shape[0])
        check_calibration_size(graph, cal)
        return cal
    except InputDataError as e:
        if isinstance(calibration, (str, os.PathLike)):
            raise InputDataError(f"{os.fspath(calibration)}: {e}") from None
        raise


def compile(
    model_path: str | os.PathLike,
    config: CompileConfig | None = None,
    *,
    calibration=None,
    plugins=(),
    verify_each: bool = True,
    after_pass: Callable | None = None,
    log: Callable[[str], None] = lambda s: None,
    **options,
) -> Net:
    """ONNX step-form model -> Net, built as `config` says (ssmc.config.CompileConfig; default: the
    default pipeline), with `options` (CompileConfig's fields as keywords, e.g. passes=, readout=,
    weight_bits=, layer_bits="s4d0:weight=6/coef=12", sigma_delta=, target=, chips=) set on top.

    `calibration`: sequences [n, tokens, features] (array or .npy/.npz path) that size the fixed-point
    ranges. `plugins`: Python files to import first (they register op handlers or passes;
    docs/extending.md). Both are recorded in the net's config by name and sha256.
    `verify_each`, `after_pass(pass, graph, changed)` and `log(line)` watch the build and shape nothing.
    """
    _checked_path(model_path, "ssmc.compile's model")
    config = (config if config is not None else CompileConfig()).with_options(**options)
    config, cal, target_file = _resolve_files(config, calibration, plugins)
    pipeline = build_pipeline(config)  # a bad pipeline is refused before the slow import
    log(f"importing {os.fspath(model_path)}")
    # each S4D layer as it is measured (seconds per layer on big models)
    with forward_info(logging.getLogger("ssmc.frontend"), lambda line: log("  " + line)):
        graph, report, loaded = import_onnx(model_path, readout=config.readout)
    model_graph = graph.copy()
    cal = _checked_calibration(cal, graph, calibration)
    log(f"recognised {len(graph)} ops; running passes: {pipeline_spec(pipeline) or '(none)'}")
    before, after = _progress(log, after_pass)
    graph, records = run_pipeline(
        graph,
        with_data(pipeline, calibration=cal, target_file=target_file),
        verify_each=verify_each,
        after_pass=after,
        before_pass=before,
    )
    return Net(
        graph=graph,
        model_graph=model_graph,
        source={
            "file": printable(os.path.basename(os.fspath(model_path))),
            "sha256": loaded.sha256,
            "bytes": loaded.size,
        },
        pipeline=recorded_pipeline(pipeline),
        config=config,
        report={
            "import": dataclasses.asdict(report),
            "passes": [{"name": r.name, "spec": r.spec, "changed": r.changed, "notes": r.notes} for r in records],
        },
        extras={path: data for r in records for path, data in sorted(r.outputs.items())},
    )


def load(path: str | os.PathLike) -> Net:
    """Read a net.lava file written by `Net.save`."""
    return _bundle.load(_checked_path(path, "ssmc.load"), cls=Net)
