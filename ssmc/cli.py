"""The `ssmc` command. Thin: each subcommand parses options and calls the library.

Errors a user can cause print one line, `ssmc: error: ...`, and exit 1
(2 for bad command-line usage). Anything else is an ssmc bug: it prints a
one-line internal error (set SSMC_DEBUG=1 for the traceback) and exits 70.
Ctrl-C and SIGTERM print `ssmc: interrupted` and exit 130 / 143 (ssmc.interrupts).
Every output is checked before the work starts (not a device, FIFO or directory, not one of the inputs)
and written atomically (ssmc.outputs).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np

from ssmc import __version__, interrupts
from ssmc.data import read_small_file
from ssmc.errors import (
    EngineError,
    IncompleteNetError,
    InputDataError,
    MicrocodeError,
    OptionError,
    SsmcError,
    printable,
)
from ssmc.widths import OPTIONS as WIDTHS
from ssmc.outputs import check_output, write_file

EXAMPLE = "examples/digits/digits_s4d_step.onnx"
#: Program text or binary read by `ssmc microcode --assemble/--disassemble` (real ones are a few KiB).
MICROCODE_FILE_BYTES = 1 << 20


def _log(quiet: bool):
    start = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - start:6.2f}s] {printable(msg)}", file=sys.stderr, flush=True)

    return log


# -- compile --------------------------------------------------------------------
def cmd_compile(args) -> int:
    import ssmc
    from ssmc.ir.text import print_graph

    from ssmc.config import CompileConfig, read_config_file

    log = _log(args.quiet)
    check_output(
        args.output,
        [args.model, args.calibrate, args.target, args.config, *(args.plugin or ())],
        "net.lava",
        example="net.lava",
    )
    config = read_config_file(args.config) if args.config else CompileConfig()

    def after_pass(p, graph, changed):
        if args.print_ir_after in ("all", p.name):
            print(f"// ----- IR after {p.name}{'' if changed else ' (unchanged)'} -----")
            print(print_graph(graph, elide=True), end="")

    net = ssmc.compile(
        args.model,
        config,
        calibration=args.calibrate,
        plugins=args.plugin or (),
        verify_each=not args.no_verify,
        after_pass=after_pass,
        log=log,
        passes=args.passes,
        readout=args.readout,
        weight_bits=args.weight_bits,
        coef_bits=args.coef_bits,
        state_bits=args.state_bits,
        message_bits=args.message_bits,
        skip=args.skip,
        stop_after=args.stop_after,
        layer_bits=";".join(args.layer_bits) if args.layer_bits else None,
        weight_exp=args.weight_exp,
        sigma_delta=args.sigma_delta,
        target=args.target,
        board=args.board,
        chips=args.chips,
        max_neurons_per_core=args.max_neurons_per_core,
    )
    interrupts.reinstall()  # a native library (a solver) may have replaced the Ctrl-C handler
    for record in net.report.get("passes", []):
        for note in record.get("notes", []):
            log(f"  {record['name']}: {note}")
    net.save(args.output)
    log(f"wrote {args.output} ({os.path.getsize(args.output)} bytes)")
    return 0


# -- config ---------------------------------------------------------------------
def cmd_config(args) -> int:
    from ssmc.config import to_toml

    if os.fspath(args.source).endswith(".lava"):
        import ssmc

        net = ssmc.load(args.source)
        config, layers = net.config, net.report.get("import", {}).get("layers", [])
    else:
        from ssmc.config import CompileConfig
        from ssmc.frontend import import_onnx

        _load_plugins(args)
        _, report, _ = import_onnx(args.source)
        config, layers = CompileConfig(), report.layers
    # the model's layers; not the pool op --readout adds (so a model and the net built from it list the same)
    names = [layer.get("name") for layer in layers if isinstance(layer, dict) and layer.get("kind") != "pool"]
    sys.stdout.write(to_toml(config, [n for n in names if isinstance(n, str)]))
    return 0


# -- report ---------------------------------------------------------------------
def cmd_report(args) -> int:
    import ssmc
    from ssmc.report import render

    if args.format == "html" and not args.output:
        raise OptionError("--format html needs -o FILE.html (its images go in a folder beside it)")
    if args.output:
        check_output(args.output, [args.net], "report", example=f"report.{args.format}")
    rep = ssmc.load(args.net).report_dict()
    if args.format == "html":
        files = render.write_html(rep, args.output, inputs=[args.net])
        print(f"wrote {args.output} and {len(files) - 1} image(s)", file=sys.stderr)
        return 0
    text = render.to_json(rep) if args.format == "json" else render.to_text(rep)
    if args.output:
        write_file(args.output, text.encode("utf-8"), [args.net], "report")
    else:
        sys.stdout.write(text)
    return 0


# -- inspect --------------------------------------------------------------------
def cmd_inspect(args) -> int:
    from ssmc.frontend import import_onnx
    from ssmc.ir.text import print_graph

    _load_plugins(args)
    graph, report, loaded = import_onnx(args.model, readout=args.readout)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "model": report.model_name,
                    "sha256": loaded.sha256,
                    "states": report.states,
                    "layers": [_jsonable(l) for l in report.layers],
                },
                indent=2,
                sort_keys=True,
            )
        )
        return 0
    print(f"{report.model_name}  ({loaded.size} bytes, sha256 {loaded.sha256[:12]})")
    print(f"token input '{report.inputs[0]}', {len(report.states)} recurrent state(s)")
    total = 0
    for layer in report.layers:
        op = graph.op(layer["name"])
        n_params = sum(int(np.asarray(v).size) * (2 if np.iscomplexobj(v) else 1) for v in op.params.values())
        total += n_params
        print(f"  {_describe_op(op):44s} params {n_params:7d}   from {layer['source']}")
        for note in layer.get("notes", []):
            print(f"  {'':44s} {note}")
    print(f"total parameters: {total} (complex values count twice)")
    if args.ir:
        print()
        print(print_graph(graph, elide=True), end="")
    return 0


def _describe_op(op) -> str:
    shape = "x".join(str(d) for d in op.shape)
    if op.kind == "s4d":
        H, M = op.params["C"].shape
        if op.attrs.get("mixing") == "dense":
            return (
                f"%{op.name} s4d H={H} P={M} ({M} complex modes shared by all channels: dense B and C, "
                f"S5/LRU), {op.attrs['form']}"
            )
        return f"%{op.name} s4d H={H} N={2 * M} ({M} complex modes), {op.attrs['form']}"
    if op.kind == "linear":
        w = op.params["weight"]
        return f"%{op.name} linear {w.shape[1]} -> {w.shape[0]}{'' if 'bias' in op.params else ' (no bias)'}"
    if op.kind == "activation":
        return f"%{op.name} activation {op.attrs['fn']} -> [{shape}]"
    if op.kind == "pool":
        return f"%{op.name} pool running {op.attrs['mode']} -> [{shape}]"
    return f"%{op.name} {op.kind} [{shape}]"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# -- run ------------------------------------------------------------------------
def _load_inputs(
    path: str, labels_path: str | None, limit: int | None = None, tokens: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sequences [batch, tokens, features] (and labels) from `path`, cut to the first `limit` sequences and
    `tokens` tokens when given (--limit, --tokens: whole numbers of at least 1, see _positive_int)."""
    x, labels = _read_inputs(path, labels_path)
    if limit:
        x = x[:limit]
        labels = labels[:limit] if labels is not None else None
    if tokens:
        x = x[..., :tokens, :]
    return x, labels


def _read_inputs(path: str, labels_path: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    from ssmc.data import check_input_range, load_sequences, read_arrays

    x, labels = load_sequences(path)
    check_input_range(x, f"{path}: input")
    if labels_path:  # a .npy, or an .npz's array 'y'
        labels = read_arrays(labels_path, "labels", ("y",), required=("y",)).arrays["y"]
    if x.ndim == 2:
        x = x[None]  # one sequence
    if x.ndim != 3:
        raise InputDataError(
            f"{path}: input must have shape [batch, tokens, features] or [tokens, features], got shape {list(x.shape)}"
        )
    if labels is not None:
        if labels.ndim != 1 or len(labels) != len(x) or not np.issubdtype(labels.dtype, np.integer):
            raise InputDataError(
                f"{labels_path or path}: labels must be integers, one per sequence ({len(x)}), "
                f"got {labels.dtype}{list(labels.shape)}"
            )
    return x, labels


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (0 or -1 would silently run something else)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1 (leave the option out to use all)")
    return value


def cmd_run(args) -> int:
    import ssmc
    from ssmc.api import is_neuro_level

    log = _log(args.quiet)
    inputs = [args.net, args.input, args.labels, args.compare_onnx]
    if args.output:
        check_output(args.output, inputs, "outputs", example="y.npy")
    net = ssmc.load(args.net)
    x, labels = _load_inputs(args.input, args.labels, args.limit, args.tokens)
    engine = args.engine or ("numpy" if is_neuro_level(net.graph) else "float")
    log(f"running {len(x)} sequence(s) of {x.shape[1] if x.ndim == 3 else '?'} tokens on the {engine} engine")
    result = net.run_detailed(x, engine=engine)
    interrupts.reinstall()
    y = result["outputs"]
    log("done")
    _print_run_summary(net, engine, result, labels)
    mismatch = _print_comparisons(args, net, engine, x, result, labels)
    if args.output:  # exactly this name: np.save(name) would append .npy to a name without it
        buf = io.BytesIO()
        np.save(buf, y, allow_pickle=False)
        write_file(args.output, buf.getvalue(), inputs, "outputs")
        print(f"wrote {args.output} ({list(y.shape)} {y.dtype} .npy)")
    if mismatch is not None and not mismatch.identical:  # engines must agree bit for bit: fail after the report
        raise EngineError(
            f"the {engine} engine disagrees with the numpy engine on {args.input}: "
            f"{mismatch.differing_values} of {mismatch.total_values} output values differ, saturation "
            f"{'same' if mismatch.saturation_same else 'differs'}, sparsity "
            f"{'same' if mismatch.sparsity_same else 'differs'}; this is an ssmc bug unless "
            f"{args.net} was altered: recompile it, and report it if it persists"
        )
    return 0


def _print_run_summary(net, engine: str, result: dict, labels: np.ndarray | None) -> None:
    """What a run produced: output shape, predictions, accuracy against `labels`, saturation and sparsity of a
    fixed-point engine, and the microcode programs' size and cycles when they ran."""
    from ssmc.runtime.compare import accuracy, format_accuracy, predictions

    y = result["outputs"]
    print(f"outputs: {list(y.shape)} (batch, tokens, outputs); engine {engine}")
    if net.config.readout == "none":
        print("note: compiled without --readout; predictions use the last token's output")
    print(f"predictions (first 10): {predictions(y)[:10].tolist()}")
    if labels is not None:
        print(f"accuracy ({engine}): {format_accuracy(accuracy(y, labels))}")
    if "saturation" in result:
        print("saturation: " + _saturation_text(result["saturation"]))
        print(
            "message sparsity (fraction of zero messages): "
            + ", ".join(f"{g} {s:.2f}" for g, s in result["sparsity"].items())
        )
    if engine == "microcode":  # what ran: the programs' size and assumed cycles
        from ssmc.backend_loihi.microcode.emit import core_cycles, format_summary, microcode_summary

        print(format_summary(microcode_summary(net), core_cycles(net)))


def _saturation_text(saturation: dict) -> str:
    """The non-zero saturation counts per group ('group: kind n, ...; ...'), or 'none'."""
    sat = {g: {k: v for k, v in c.items() if v} for g, c in saturation.items()}
    sat = {g: c for g, c in sat.items() if c}
    if not sat:
        return "none"
    return "; ".join(f"{g}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for g, c in sat.items())


def _print_comparisons(args, net, engine: str, x: np.ndarray, result: dict, labels: np.ndarray | None):
    """The --compare-numpy, --compare-float and --compare-onnx lines; returns the integer comparison with the
    numpy engine (None when it was not asked for or the engine is numpy or float)."""
    from ssmc.api import compare, reference_outputs
    from ssmc.runtime.compare import (
        accuracy,
        compare_outputs,
        format_float_comparison,
        format_integer_comparison,
        format_onnx_comparison,
    )

    y = result["outputs"]
    mismatch = None
    if args.compare_numpy and engine not in ("numpy", "float"):
        mismatch = compare(net, x, against="numpy", engine=engine, result=result)
        print(format_integer_comparison(mismatch))
    if args.compare_float and engine != "float":
        ref = reference_outputs(net, x, "float")
        ref_accuracy = accuracy(ref, labels) if labels is not None else None
        print(format_float_comparison(compare_outputs(y, ref), ref_accuracy))
    if args.compare_onnx:
        from ssmc.frontend.load import load_model

        loaded = load_model(args.compare_onnx)
        if net.source.get("sha256") and loaded.sha256 != net.source["sha256"]:
            print(f"warning: {args.compare_onnx} is not the model this net was compiled from", file=sys.stderr)
        print(
            format_onnx_comparison(
                compare(net, x, against="onnx", engine=engine, onnx_model=loaded.model, result=result),
                os.path.basename(args.compare_onnx),
            )
        )
    return mismatch


# -- export-lava ----------------------------------------------------------------
def cmd_export_lava(args) -> int:
    import ssmc
    from ssmc.api import is_neuro_level
    from ssmc.backend_loihi.lava_script import write_script

    net = ssmc.load(args.net)
    if not is_neuro_level(net.graph):
        raise IncompleteNetError(
            f"{args.net} was compiled without the fixed-point passes: it has no neuron groups to "
            "export; compile it with the default pipeline"
        )
    from collections import Counter

    from ssmc.backend_loihi.lava_net import process_table

    script, tensors = write_script(net, args.output, inputs=[args.net])
    classes = Counter(row["class"] for row in process_table(net))
    print(f"{sum(classes.values())} Lava processes: " + ", ".join(f"{n} {c}" for c, n in sorted(classes.items())))
    print(f"wrote {script} and {tensors}; run: python {script} --input x.npy")
    return 0


# -- trace ----------------------------------------------------------------------
def cmd_trace(args) -> int:
    import ssmc
    from ssmc.report.trace_page import write_trace_html
    from ssmc.runtime.trace import format_trace

    log = _log(args.quiet)
    if args.html:
        check_output(args.html, [args.net, args.input, args.calibrate], "trace page", example="trace.html")
    net = ssmc.load(args.net)
    x, _ = _load_inputs(args.input, None, args.limit, args.tokens)
    log(f"tracing {len(x)} sequence(s) of {x.shape[1] if x.ndim == 3 else '?'} tokens, fixed point against float")
    tr = net.trace(x, calibration=args.calibrate)
    print(format_trace(tr, rows=args.rows), end="")
    if args.html:
        write_trace_html(tr, args.html, os.path.basename(args.net), inputs=[args.net, args.input, args.calibrate])
        print(f"wrote {args.html}")
    return 0


# -- profile --------------------------------------------------------------------
def cmd_profile(args) -> int:
    import ssmc
    from ssmc.report.profile import format_profile, profile_data, write_profile_html

    log = _log(args.quiet)
    check_output(args.output, [args.net, args.input], "profile page", example="profile.html")
    net = ssmc.load(args.net)
    x, _ = _load_inputs(args.input, None, args.limit)
    log(f"profiling {len(x)} sequence(s) of {x.shape[1]} tokens on the numpy engine")
    data = profile_data(net.graph, x)
    print(format_profile(data), end="")
    write_profile_html(data, args.output, os.path.basename(args.net), inputs=[args.net, args.input])
    print(f"wrote {args.output}")
    return 0


# -- export-nir -------------------------------------------------------------------
def cmd_export_nir(args) -> int:
    from ssmc.backend_nir import read_nir, run_nir, to_nir, write_nir
    from ssmc.runtime.float_ref import run_float

    check_output(args.output, [args.model, args.check], "NIR graph", example="net.nir")
    if args.model.endswith(".onnx"):
        from ssmc.frontend import import_onnx

        graph = import_onnx(args.model, readout=args.readout)[0]
    else:
        import ssmc

        graph = ssmc.load(args.model).model_graph
        if graph is None:
            raise IncompleteNetError(f"{args.model} holds no float model graph to export")
    g, cuts = to_nir(graph, form=args.form, cut=args.cut)
    for line in cuts:
        print(line)
    write_nir(g, args.output, inputs=[args.model, args.check])
    print(f"wrote {args.output}: {len(g.nodes)} NIR nodes, {len(g.edges)} edges, S4D layers in the {args.form} form")
    if args.check:
        x, _ = _load_inputs(args.check, None, args.limit)
        out_name = graph.outputs()[0].name
        ref = run_float(graph, x)[out_name]
        got = run_nir(read_nir(args.output), x)[out_name]
        err = float(np.abs(got - ref).max())
        scale = float(np.abs(ref).max()) or 1.0
        print(
            f"read back and run (forward Euler, one step per token, cut ops on the host) vs ssmc's float "
            f"reference on {len(x)} sequence(s): max abs error {err:.3e} ({err / scale:.3e} of the output "
            f"scale {scale:.3g})"
        )
    return 0


# -- ops --------------------------------------------------------------------------
def _load_plugins(args) -> None:
    from ssmc.frontend.handlers import load_plugin_file

    for path in getattr(args, "plugin", None) or ():
        load_plugin_file(path)


def cmd_ops(args) -> int:
    from ssmc.frontend.convert import SUPPORTED
    from ssmc.frontend.handlers import DOCS, available_op_handlers

    _load_plugins(args)
    handlers = available_op_handlers()
    print("op handlers (registered; they take precedence over the built-in recognition):")
    for h in handlers:
        print(f"  {h.key:28s} {h.summary}")
        print(f"  {'':28s} from {h.origin}")
    if not handlers:
        print(f"  none (add one: {DOCS})")
    print(f"\nbuilt in: {SUPPORTED}")
    return 0


# -- microcode ------------------------------------------------------------------
def cmd_microcode(args) -> int:
    from ssmc.backend_loihi.microcode import asm

    if args.assemble or args.disassemble:
        src = args.assemble or args.disassemble
        if args.net:
            raise OptionError("give either a net.lava or --assemble/--disassemble, not both")
        if args.output:
            check_output(args.output, [src], "microcode", example="program.bin" if args.assemble else "program.s")
        data = read_small_file(src, MICROCODE_FILE_BYTES, "program binary" if args.disassemble else "program text")
        if args.assemble:
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MicrocodeError(f"{src}: not program text (not UTF-8 at byte {e.start})") from None
        try:
            out = asm.disassemble(data, src) if args.disassemble else asm.assemble(data, src)
        except SsmcError as e:  # name the file in front of the line number, keep the class
            raise type(e)(str(e) if str(e).startswith(src) else f"{src}: {e}") from None
        if args.output:
            data = out if args.assemble else out.encode("utf-8")
            write_file(args.output, data, [src], "microcode", example="program.bin" if args.assemble else "program.s")
            print(f"wrote {args.output} ({len(data)} bytes)")
        elif args.assemble:
            raise OptionError("--assemble writes a binary: give -o FILE.bin")
        else:
            print(out, end="")
        return 0
    if not args.net:
        raise OptionError("give a net.lava (or --assemble FILE.s / --disassemble FILE.bin)")
    import ssmc
    from ssmc.backend_loihi.microcode.emit import core_cycles, format_summary, microcode_summary, read_index

    net = ssmc.load(args.net)
    rows = read_index(net.extras)
    if args.show:
        if args.show not in rows:
            raise OptionError(f"no program for group {args.show!r}; groups: {', '.join(rows)}")
        for unit in rows[args.show]["units"]:
            print(net.extras[unit["text"]].decode(), end="")
        return 0
    print(format_summary(microcode_summary(net), core_cycles(net)))
    print("programs: " + ", ".join(u["text"] for r in rows.values() for u in r["units"]))
    return 0


# -- passes ---------------------------------------------------------------------
def cmd_passes(args) -> int:
    from ssmc.passes import DEFAULT_PIPELINE, available_passes
    from ssmc.passes.base import option_fields

    _load_plugins(args)
    for name, cls in available_passes().items():
        print(f"{name:24s} [{cls.kind}] {_summary_line(cls)}")
        for f in option_fields(cls):
            print(f"{'':26s}{f.name.replace('_', '-')}: {getattr(f.type, '__name__', f.type)} = {f.default}")
    print(f"\ndefault pipeline: {DEFAULT_PIPELINE}")
    return 0


def _summary_line(cls) -> str:
    """A pass's one-line description: its module docstring's first line, minus the name."""
    doc = sys.modules[cls.__module__].__doc__ or ""
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):  # dataclasses invent a docstring
        doc = cls.__doc__
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return first.split(":", 1)[-1].strip() if first.startswith(cls.name) else first


# -- argument parsing -----------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="ssmc",
        formatter_class=fmt,
        description="Compile diagonal state-space models (S4D) from ONNX to Intel Loihi 2.",
        epilog=f"""typical session:
  ssmc inspect {EXAMPLE}                 what the frontend recognises
  ssmc compile {EXAMPLE} -o net.lava --readout mean --calibrate examples/digits/digits_calib.npz
  ssmc run net.lava --input examples/digits/digits_test.npz --compare-float

The ONNX model must be in step form: one token in, the recurrent states in,
the output and the next states out (docs/onnx_step_form.md).""",
    )
    p.add_argument("--version", action="version", version=f"ssmc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser(
        "compile",
        formatter_class=fmt,
        help="compile an ONNX step-form model into net.lava",
        description="Import a step-form ONNX model, run the pass pipeline, write net.lava.",
        epilog=f"""examples:
  ssmc compile {EXAMPLE} -o net.lava
  ssmc compile model.onnx -o net.lava --readout mean          classify by the mean over tokens
  ssmc compile model.onnx -o net.lava --readout last          classify from the last token's output
  ssmc compile model.onnx -o net.lava --calibrate cal.npz --weight-bits 6
  ssmc compile model.onnx -o net.lava --calibrate cal.npz --sigma-delta 0.001   send changes only
  ssmc compile model.onnx -o net.lava --passes canonicalize   keep the float model (no quantization)
  ssmc compile model.onnx -o net.lava --stop-after fold-linear --print-ir-after fold-linear
  ssmc compile model.onnx -o net.lava --passes "canonicalize,count-ops"   a plugin pass (docs/extending.md)
  ssmc compile model.onnx -o net.lava --print-ir-after all    show the IR between passes
  ssmc compile fused.onnx -o net.lava --plugin my_handlers.py  custom ONNX ops (docs/extending.md)""",
    )
    c.add_argument("model", help="the .onnx file (step form)")
    c.add_argument("-o", "--output", required=True, help="where to write the compiled net (e.g. net.lava)")
    c.add_argument(
        "--config",
        metavar="FILE.toml",
        help="a config file (TOML; `ssmc config MODEL > ssmc.toml` writes one, docs/config.md); the "
        "flags given here override it",
    )
    c.add_argument(
        "--readout",
        choices=("none", "sum", "mean", "last"),
        help="'sum'/'mean' append a running pool over tokens to the output (sequence classification "
        "by mean pooling); 'last' classifies from the last token's output (no op is added: the "
        "host reads the last token); default none, per-token outputs",
    )
    c.add_argument(
        "--calibrate",
        metavar="DATA",
        help=".npz (array 'x') or .npy of calibration sequences [n, tokens, features] that size the "
        "fixed-point ranges (default: random N(0,1) tokens, with a warning)",
    )
    c.add_argument("--weight-bits", type=int, metavar="B", help=WIDTHS["weight_bits"].help())
    c.add_argument(
        "--weight-exp",
        choices=("group", "row", "auto"),
        help="weight exponents: 'group' one per linear (one synapse group), 'row' one per output row "
        "(the linear split into one synapse group per exponent class), 'auto' (default) per-row "
        "only for the linears where it lowers the fixed-vs-float error on the calibration data",
    )
    c.add_argument("--coef-bits", type=int, metavar="B", help=WIDTHS["coef_bits"].help())
    c.add_argument("--state-bits", type=int, metavar="B", help=WIDTHS["state_bits"].help())
    c.add_argument("--message-bits", type=int, metavar="B", help=WIDTHS["message_bits"].help())
    c.add_argument(
        "--layer-bits",
        action="append",
        metavar="LAYER:KEY=B[/KEY=B]",
        help="per-layer widths, KEY one of weight, coef, state, message; LAYER as `ssmc inspect` "
        "names it (repeatable), e.g. --layer-bits s4d0:weight=6/coef=12",
    )
    c.add_argument(
        "--sigma-delta",
        type=float,
        metavar="T",
        help="send sigma-delta messages: a neuron sends a change only when it is at least T times its "
        "full scale (0: every change, values unchanged, fewer messages; try 0.001). Measured in "
        "benchmarks/results/sigma_delta.md",
    )
    c.add_argument(
        "--target",
        metavar="FILE",
        help="target description JSON (default: the shipped loihi2, ssmc/targets/loihi2.json)",
    )
    c.add_argument(
        "--board", metavar="NAME", help="board of the target: oheo-gulch (1 chip, default), kapoho-point (8)"
    )
    c.add_argument("--chips", type=int, metavar="N", help="number of chips (overrides the board's)")
    c.add_argument(
        "--max-neurons-per-core",
        type=int,
        metavar="N",
        help="spread: at most N neurons per core (more cores, shorter steps; default: the capacity)",
    )
    c.add_argument(
        "--passes",
        default=None,
        metavar="PIPELINE",
        help="pass pipeline, e.g. 'canonicalize' (see `ssmc passes`; default: the standard pipeline)",
    )
    c.add_argument("--skip", action="append", metavar="PASS", help="leave this pass out (repeatable)")
    c.add_argument(
        "--stop-after",
        metavar="PASS",
        help="end the pipeline after this pass (e.g. fold-linear to keep the float network)",
    )
    c.add_argument("--print-ir-after", metavar="PASS|all", help="print the IR (tensors summarised) after a pass")
    verify = c.add_mutually_exclusive_group()
    verify.add_argument(
        "--verify-each",
        dest="no_verify",
        action="store_false",
        default=False,
        help="run the IR verifier after every pass (the default)",
    )
    verify.add_argument(
        "--no-verify",
        dest="no_verify",
        action="store_true",
        help="skip the IR verifier between passes (faster, unsafe: a broken pass goes unnoticed)",
    )
    c.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    _plugin_option(c)
    c.set_defaults(func=cmd_compile)

    cf = sub.add_parser(
        "config",
        formatter_class=fmt,
        help="write a compile config file (TOML) for a model, or the one a net.lava was built with",
        description="Print the full compile configuration as commented TOML: every key with what it "
        "allows and its default, and a table per layer (as `ssmc inspect` names it). "
        "For a net.lava, exactly the configuration that built it (docs/config.md).",
        epilog=f"""examples:
  ssmc config {EXAMPLE} > ssmc.toml
  ssmc compile {EXAMPLE} -o net.lava --config ssmc.toml     flags override the file
  ssmc config net.lava                                      how this net was built""",
    )
    cf.add_argument("source", help="an .onnx model (the default configuration, its layers) or a net.lava")
    _plugin_option(cf)
    cf.set_defaults(func=cmd_config)

    i = sub.add_parser(
        "inspect",
        formatter_class=fmt,
        help="show what the frontend recognises in an ONNX model",
        description="Import the model and list its layers (H, N, parameters, where each came from) without compiling.",
        epilog=f"""examples:
  ssmc inspect {EXAMPLE}
  ssmc inspect model.onnx --ir            also print the model-level IR
  ssmc inspect model.onnx --format json   for scripts""",
    )
    i.add_argument("model", help="the .onnx file")
    i.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    i.add_argument("--ir", action="store_true", help="also print the IR, tensors summarised")
    i.add_argument("--readout", choices=("none", "sum", "mean", "last"), default="none", help="as for compile")
    _plugin_option(i)
    i.set_defaults(func=cmd_inspect)

    r = sub.add_parser(
        "run",
        formatter_class=fmt,
        help="run a compiled net on input sequences",
        description="Run net.lava on sequences and print predictions (and accuracy, given labels).",
        epilog="""examples:
  ssmc run net.lava --input examples/digits/digits_test.npz
  ssmc run net.lava --input x.npy --labels y.npy --output y_pred.npy
  ssmc run net.lava --input x.npy --compare-onnx model.onnx     agreement with onnxruntime
  ssmc run net.lava --input test.npz --compare-float            what quantization costs
  ssmc run net.lava --input test.npz --engine lava --limit 2 --tokens 16 --compare-numpy

input: .npy of shape [batch, tokens, features] (or [tokens, features] for one
sequence), or .npz with 'x' and optional integer labels 'y'.""",
    )
    r.add_argument("net", help="a net.lava file from `ssmc compile`")
    r.add_argument("--input", required=True, help=".npy or .npz input sequences")
    r.add_argument("--labels", help=".npy of integer labels, one per sequence")
    r.add_argument(
        "--engine",
        choices=("numpy", "float", "lava", "microcode", "reference"),
        default=None,
        help="numpy: the bit-exact fixed-point engine (default for quantized nets); "
        "float: the float64 reference of the imported model; "
        "lava: the net's Lava processes in Lava's CPU simulator (same integers, slow); "
        "reference: docs/fixed_point.md in plain Python ints, one neuron at a time, which "
        "the other engines are tested against (very slow: use --limit and --tokens, "
        "with --compare-numpy)",
    )
    r.add_argument(
        "--compare-float",
        action="store_true",
        help="also run the float reference and report the error and accuracy difference",
    )
    r.add_argument("--compare-onnx", metavar="MODEL", help="also run MODEL with onnxruntime and report the error")
    r.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="use only the first N sequences")
    r.add_argument(
        "--tokens",
        type=_positive_int,
        default=None,
        metavar="N",
        help="use only the first N tokens of each sequence (keeps Lava runs short)",
    )
    r.add_argument(
        "--compare-numpy",
        action="store_true",
        help="with --engine lava (or microcode, reference): also run the numpy engine and say whether "
        "every output integer, saturation count and sparsity agrees; exit 1 if not (--compare-float "
        "and --compare-onnx only measure: quantization error is expected)",
    )
    r.add_argument("--output", help="save the per-token outputs to this .npy")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser(
        "report",
        formatter_class=fmt,
        help="cores, utilisation, traffic, bit-widths and estimated cost of a compiled net",
        description="Report how a compiled net maps onto the target: per-core utilisation of every "
        "capacity, core-to-core traffic and the load it puts on each mesh link (XY "
        "routing, a model), bit-widths, and an ESTIMATED cost per token.",
        epilog="""examples:
  ssmc report net.lava                      text for the terminal
  ssmc report net.lava --format json        for scripts
  ssmc report net.lava --format html -o report.html   page with pictures (report_files/ beside it)""",
    )
    rp.add_argument("net", help="a net.lava file from `ssmc compile`")
    rp.add_argument("--format", choices=("text", "json", "html"), default="text", help="output format (default: text)")
    rp.add_argument("-o", "--output", help="write to this file (required for html)")
    rp.set_defaults(func=cmd_report)

    e = sub.add_parser(
        "export-lava",
        formatter_class=fmt,
        help="write a standalone Python script that builds the net's Lava network",
        description="Write a readable Python script (and an .npz of its arrays beside it) that "
        "builds the same Lava processes as `ssmc run --engine lava` and runs them "
        "in Lava's CPU simulator; edit it freely.",
        epilog="""examples:
  ssmc export-lava net.lava -o build_net.py
  python build_net.py --input x.npy --output y.npz""",
    )
    e.add_argument("net", help="a net.lava file from `ssmc compile`")
    e.add_argument(
        "-o", "--output", required=True, help="the script to write (.py); its arrays go to the .npz of the same name"
    )
    e.set_defaults(func=cmd_export_lava)

    mc = sub.add_parser(
        "microcode",
        formatter_class=fmt,
        help="a net's neuron programs; assemble/disassemble",
        description="Show the neuron microcode programs in a net.lava (sizes, assumed cycles, "
        "text), or assemble / disassemble one program (docs/microcode.md).",
        epilog="""examples:
  ssmc microcode net.lava                     programs, words and assumed cycles per neuron update
  ssmc microcode net.lava --show s4d0.pairs   the program text of one neuron group
  ssmc microcode --assemble relu.s -o relu.bin
  ssmc microcode --disassemble relu.bin""",
    )
    mc.add_argument("net", nargs="?", help="a net.lava file from `ssmc compile`")
    mc.add_argument("--show", metavar="GROUP", help="print this neuron group's program text")
    mc.add_argument("--assemble", metavar="FILE.s", help="assemble this program text (needs -o)")
    mc.add_argument("--disassemble", metavar="FILE.bin", help="print this program binary as text")
    mc.add_argument("-o", "--output", help="where --assemble / --disassemble write")
    mc.set_defaults(func=cmd_microcode)

    ps = sub.add_parser(
        "passes",
        help="list the available passes and their options",
        description="List every registered pass, its kind, one-line description and options.",
    )
    _plugin_option(ps)
    ps.set_defaults(func=cmd_passes)

    o = sub.add_parser(
        "ops",
        formatter_class=fmt,
        help="list the ONNX op handlers (built-in and plugins)",
        description="List registered op handlers (custom ONNX ops mapped onto the IR) and what "
        "the frontend recognises by itself.",
        epilog="""examples:
  ssmc ops
  ssmc ops --plugin examples/custom_op/s4d_handler.py""",
    )
    _plugin_option(o)
    o.set_defaults(func=cmd_ops)

    tr = sub.add_parser(
        "trace",
        formatter_class=fmt,
        help="per layer and per token: fixed point against float",
        description="Run the numpy engine and the float reference side by side and show, per "
        "neuron group and per token, the error end to end and the error the group adds "
        "itself (fed with the fixed-point inputs), for complex states the real and "
        "imaginary error and its drift, values at the edge of their range, clip counts, "
        "and the first token where the predicted class diverges. Worst group first.",
        epilog="""examples:
  ssmc trace net.lava --input examples/digits/digits_test.npz --limit 64
  ssmc trace net.lava --input x.npy --html trace.html     one page with error-over-tokens plots""",
    )
    tr.add_argument("net", help="a net.lava file from `ssmc compile`")
    tr.add_argument("--input", required=True, help=".npy or .npz input sequences (as for run)")
    tr.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="use only the first N sequences")
    tr.add_argument("--tokens", type=_positive_int, default=None, metavar="N", help="use only the first N tokens")
    tr.add_argument("--rows", type=_positive_int, default=None, metavar="N", help="show only the N worst groups")
    tr.add_argument(
        "--calibrate",
        metavar="DATA",
        help="the calibration data of compile, needed to compare complex states only when the net "
        "was compiled with rescale-states{balance=state}",
    )
    tr.add_argument("--html", metavar="FILE.html", help="also write a page with per-group error-over-tokens plots")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    tr.set_defaults(func=cmd_trace)

    pf = sub.add_parser(
        "profile",
        formatter_class=fmt,
        help="per group: histograms of the values against their fixed-point range and resolution",
        description="Run the numpy engine on the given sequences and write one page with, per "
        "neuron group, histograms of its messages (and states) with the representable "
        "range and resolution drawn on them; per synapse group the weights on their "
        "grid; per cpx group |A_bar| per mode against how many coefficient levels "
        "resolve its decay. A summary (values within one LSB of zero, values at the "
        "range edge) goes to stdout.",
        epilog="""examples:
  ssmc profile net.lava --input examples/digits/digits_calib.npz --limit 16 -o profile.html""",
    )
    pf.add_argument("net", help="a net.lava file from `ssmc compile`")
    pf.add_argument("--input", required=True, help=".npy or .npz input sequences (as for run)")
    pf.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="use only the first N sequences")
    pf.add_argument("-o", "--output", required=True, metavar="FILE.html", help="the page to write (images inline)")
    pf.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    pf.set_defaults(func=cmd_profile)

    nx = sub.add_parser(
        "export-nir",
        formatter_class=fmt,
        help="export the float model to NIR (Neuromorphic Intermediate Representation)",
        description="Write the float model of a net.lava (or an ONNX step-form model) as a NIR "
        "graph (nir 1.0.8, HDF5): linears as Affine/Linear, residual adds as Scale with "
        "two incoming edges, each S4D layer as real coupled states (an I node with a "
        "recurrent 2x2-block Linear). NIR has no ReLU/GELU/sigmoid/tanh/GLU/LayerNorm/"
        "running-mean node: these are refused, or with --cut left to the host between "
        "Output and Input ports of the graph. See docs/nir.md.",
        epilog="""examples:
  ssmc export-nir net.lava -o net.nir --cut --check examples/digits/digits_test.npz
  ssmc export-nir model.onnx -o model.nir --form ode      S4D as its own ODE (integrate it exactly)""",
    )
    nx.add_argument("model", help="a net.lava file (its float model is exported) or an ONNX step-form model")
    nx.add_argument("-o", "--output", required=True, help="the .nir file to write")
    nx.add_argument(
        "--form",
        choices=("euler", "ode"),
        default="euler",
        help="S4D layers: euler (default): exact when stepped by forward Euler at one step per "
        "token; ode: the layer's own ODE in token time, exact only when integrated exactly",
    )
    nx.add_argument(
        "--cut", action="store_true", help="leave ops NIR cannot express to the host, between Output and Input ports"
    )
    nx.add_argument(
        "--readout", choices=("none", "sum", "mean"), default="none", help="for an ONNX model: as for compile"
    )
    nx.add_argument(
        "--check",
        metavar="DATA",
        help="read the file back, run it (forward Euler) and compare with ssmc's float reference on these sequences",
    )
    nx.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N", help="with --check: use only the first N sequences"
    )
    nx.set_defaults(func=cmd_export_nir)
    return p


def _plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin",
        action="append",
        metavar="FILE.py",
        help="import this Python file first: it registers op handlers or passes "
        "(repeatable; docs/extending.md). It RUNS AS CODE with your permissions, as do "
        "the ssmc.passes / ssmc.op_handlers entry points of installed packages: use only "
        "plugins you trust (docs/security.md)",
    )


def main(argv: list[str] | None = None) -> int:
    with interrupts.handled():
        try:
            return _main(argv)
        except KeyboardInterrupt:  # the handlers' Interrupted, or a Ctrl-C before they were installed
            print("ssmc: interrupted", file=sys.stderr)
            return interrupts.exit_code()


def _main(argv: list[str] | None) -> int:
    interrupts.check()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except SsmcError as e:
        if interrupts.received():
            raise KeyboardInterrupt from None
        msg = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one line, always
        print(f"ssmc: error: {printable(msg)}", file=sys.stderr)  # file and model names are untrusted
        return 1
    except BrokenPipeError:  # `ssmc inspect model.onnx | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug in ssmc: say so in one line, keep the traceback for SSMC_DEBUG
        if interrupts.received():  # an interrupt a library turned into another exception (ImportError, ...)
            raise KeyboardInterrupt from None
        if os.environ.get("SSMC_DEBUG"):
            raise
        print(
            f"ssmc: internal error: {type(e).__name__}: {printable(str(e).splitlines()[0]) if str(e) else ''} "
            "(this is a bug in ssmc; rerun with SSMC_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
