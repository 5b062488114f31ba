"""`ssmc export-lava`: a compiled net as a readable, standalone Python script that builds
(and runs) the same Lava network as `Net.to_lava()`.

The script holds every scalar parameter as a literal and reads the arrays
(weights, biases, coefficients, tables) from an .npz written beside it, so a
user can change a parameter, a process or a connection and rerun. It needs
lava-nc and ssmc's process package (ssmc.backend_loihi.lava_procs), nothing
else of ssmc: no net.lava, no compiler.
"""

from __future__ import annotations

import io
import json
import os
import pprint
import textwrap

import numpy as np
import scipy.sparse

from ssmc import __version__
from ssmc.backend_loihi.lava_net import LAVA_DENSE_MODULE, SYNAPSE_CLASSES, plan_lava
from ssmc.errors import OutputFileError, printable
from ssmc.ir.ops import with_defaults
from ssmc.outputs import check_output, write_files

# per-batch values the script computes from its input instead of writing them as literals
_TIMING = ("steps", "period", "tokens", "batch")

_HEADER = '''"""Lava network of {source}, written by `ssmc export-lava` (ssmc {version}).

Builds the Lava processes of the compiled net -- one per neuron group, one per
synapse group -- and runs input sequences through them in Lava's fixed-point
CPU simulation (Loihi2SimCfg), exactly as `ssmc run --engine lava` does.
Arrays (weights, biases, coefficients, tables) are in {tensors}, beside this file.

    python {script} --input x.npy [--output y.npz]   # x: [batch, tokens, {features}] float

The outputs are the integer messages of each output group at token k (read at
step k + depth); value = message / 2**frac (divided by k + 1 for a mean readout).
"""

import argparse
import os

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
{imports}

HERE = os.path.dirname(os.path.abspath(__file__))
TENSORS = np.load(os.path.join(HERE, {tensors!r}))
MAX_DEPTH = {max_depth}  # the deepest group's first awake step
MAX_DELAY = {max_delay}  # idle steps after each sequence, so every synapse buffer empties
OUTPUTS = {outputs}  # output name -> (group, depth, frac, decode)


def quantize(x, frac, msg_bits):
    """The source's message for token x: sat(floor(x * 2^frac + 1/2), msg_bits)."""
    v = np.ldexp(np.asarray(x, np.float64), frac)
    m = np.floor(v) + (v - np.floor(v) >= 0.5)
    return np.clip(m, -(1 << (msg_bits - 1)), (1 << (msg_bits - 1)) - 1).astype(np.int64)


def build(x):
    """The connected processes for x [batch, tokens, features]; sequence b runs in the time
    steps [b * period, (b + 1) * period)."""
    batch, tokens = x.shape[0], x.shape[1]
    steps = tokens + MAX_DEPTH
    timing = dict(steps=steps, period=steps + MAX_DELAY, tokens=tokens, batch=batch)
    p = {{}}
'''

_FOOTER = """    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help=".npy of float sequences [batch, tokens, features]")
    ap.add_argument("--output", help="save the integer output messages to this .npz")
    args = ap.parse_args()
    x = np.load(args.input)
    x = x[None] if x.ndim == 2 else x
    batch, tokens = x.shape[0], x.shape[1]
    steps = tokens + MAX_DEPTH
    p = build(x)
    first = next(iter(p.values()))
    try:  # Lava's runtime must be stopped whatever happens
        first.run(condition=RunSteps(num_steps=batch * (steps + MAX_DELAY)),
                  run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        raw = {}
        for name, (group, depth, frac, decode) in OUTPUTS.items():
            size = p[group].s_out.shape[0]
            msgs = np.rint(p[group].messages.get()).astype(np.int64).reshape(batch, steps, size)
            raw[name] = msgs[:, depth:depth + tokens]
    finally:
        first.stop()
    for name, (group, depth, frac, decode) in OUTPUTS.items():
        value = np.ldexp(raw[name].astype(np.float64), -frac)
        if decode == "mean":
            value = value / np.arange(1, tokens + 1)[None, :, None]
        print(f"{name}: {list(value.shape)} (batch, tokens, size); last token argmax "
              f"{value[:, -1].argmax(-1)[:10].tolist()}")
    if args.output:
        np.savez(args.output, **raw)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
"""


def _docstring_text(text) -> str:
    """`text` (from a net.lava or a file name: untrusted) safe inside the script's docstring: quotes,
    backslashes and control characters escaped, so no name can end the docstring and become code."""
    return json.dumps(printable(str(text)))[1:-1]


def script_text(net, script_name: str, tensors_name: str) -> tuple[str, dict[str, np.ndarray]]:
    """(the script's source, the arrays it reads) for a compiled net."""
    graph = net.graph
    features = graph.inputs()[0].shape[0]
    plan = plan_lava(graph, np.zeros((1, 1, features)))
    tensors: dict[str, np.ndarray] = {}
    lines = []
    by_module: dict[str, set[str]] = {}
    for spec in plan.processes:
        by_module.setdefault(spec.module, set()).add(spec.cls)
        lines += _process_lines(spec, _process_args(spec, graph, tensors))
    lines.append("    # connections: message ports -> synapse groups -> dendrites")
    for link in plan.links:
        lines.append(f"    p[{link.src!r}].{link.src_port}.connect(p[{link.dst!r}].{link.dst_port})")
    imports = [
        f"from {module} import {', '.join(sorted(names))}"
        for module, names in sorted(by_module.items(), key=lambda kv: kv[0] != LAVA_DENSE_MODULE)
    ] + (["from scipy.sparse import csr_matrix"] if any(key.endswith(".indptr") for key in tensors) else [])
    outputs = {}
    for out in graph.outputs():
        a = with_defaults(graph.op(out.inputs[0]))
        outputs[out.name] = (out.inputs[0], int(a["depth"]), int(a["frac"]), a["decode"])
    max_delay = plan.period - plan.steps
    header = _HEADER.format(
        source=_docstring_text(net.source.get("file", graph.name)),
        version=__version__,
        tensors=_docstring_text(tensors_name),
        script=_docstring_text(script_name),
        features=features,
        imports="\n".join(imports),
        max_depth=plan.steps - plan.tokens,
        max_delay=max_delay,
        outputs=pprint.pformat(outputs, width=100),
    )
    return header + "\n".join(lines) + "\n" + _FOOTER, tensors


def _process_args(spec, graph, tensors: dict[str, np.ndarray]) -> list[str]:
    """The constructor arguments of one process, as source text: scalars as literals, arrays read from the
    .npz (added to `tensors` under '<process>.<key>'), the timing values the script computes per batch."""
    args = [f"name={spec.name!r}"]
    for key, value in spec.kwargs.items():
        if key in _TIMING:
            continue
        if key == "tokens_in":
            a = with_defaults(graph.op(spec.name))
            args.append(f"tokens_in=quantize(x, {int(a['frac'])}, {int(a['msg_bits'])}).reshape(batch * tokens, -1)")
        elif key == "delays":  # DelayDense: one delay for every synapse of the group
            args.append(f"delays=np.full(TENSORS[{spec.name + '.weights'!r}].shape, {int(value.flat[0])})")
        elif isinstance(value, np.ndarray):
            tensors[f"{spec.name}.{key}"] = value
            args.append(f"{key}=TENSORS[{spec.name + '.' + key!r}]")
        elif isinstance(value, scipy.sparse.csr_matrix):  # Sparse: the non-zeros only, as Lava holds them
            parts = [f"{spec.name}.{key}.{part}" for part in ("data", "indices", "indptr")]
            tensors.update(zip(parts, (value.data, value.indices, value.indptr)))
            args.append(f"{key}=csr_matrix(({', '.join(f'TENSORS[{p!r}]' for p in parts)}), shape={value.shape})")
        else:
            args.append(f"{key}={value!r}")
    if spec.cls not in ("Dense", "DelayDense", "Sparse"):
        args.append("**timing" if spec.cls not in SYNAPSE_CLASSES else "steps=timing['steps'], period=timing['period']")
    return args


def _process_lines(spec, args: list[str]) -> list[str]:
    """The script lines that make one process: a comment saying what it is, then `p[name] = Class(args)`
    wrapped at 108 columns."""
    what = "neurons" if spec.group == spec.name else f"outputs into {spec.group}"
    lines = [f"    # {spec.name}: {spec.size} {what}" + (f"; {spec.note}" if spec.note else "")]
    lines.append(f"    p[{spec.name!r}] = {spec.cls}(")
    lines += textwrap.wrap(
        ", ".join(args) + ")",
        width=108,
        initial_indent=" " * 8,
        subsequent_indent=" " * 8,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return lines


def write_script(net, path: str | os.PathLike, inputs=()) -> tuple[str, str]:
    """Write the script to `path` and its arrays to the .npz beside it (same stem), both atomically and
    never onto one of `inputs` (ssmc.outputs); returns both paths. Same net -> byte-identical files."""
    path = os.fspath(path)
    if not path.endswith(".py"):
        raise OutputFileError(f"{path}: the script needs a .py name, such as build_net.py")
    tensors_path = path[:-3] + ".npz"
    for p in (path, tensors_path):  # refuse a bad destination before the work
        check_output(p, inputs, "Lava script", example="build_net.py")
    text, tensors = script_text(net, os.path.basename(path), os.path.basename(tensors_path))
    buf = io.BytesIO()
    np.savez(buf, **dict(sorted(tensors.items())))
    write_files(
        {tensors_path: buf.getvalue(), path: text.encode("utf-8")}, inputs, "Lava script", example="build_net.py"
    )
    return path, tensors_path
