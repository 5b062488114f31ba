"""`ssmc profile`: what the chosen fixed-point formats do to the values a net really carries.

The numpy engine runs the given sequences with trace=True; per neuron group the message values
(decoded, m / 2**frac) and, for stateful groups, the integer states are histogrammed with the
representable range and the resolution drawn on them; per synapse group the weights W * 2**weight_exp
with their grid; per cpx group |A_bar| per mode against how many coefficient levels lie between it
and 1 ((1 - |A_bar|) * 2**(coef_bits-1): few levels mean a coarsely resolved decay).

`profile_data` returns plain data (testable without drawing); `profile_html` draws it with matplotlib
(Agg) into one self-contained page (PNGs inlined, like `ssmc trace --html`); `write_profile_html`
writes it as every ssmc output (ssmc.outputs).
"""

from __future__ import annotations


import numpy as np

from ssmc.errors import IncompleteNetError
from ssmc.ir import Graph
from ssmc.ir.ops import with_defaults
from ssmc.outputs import write_file
from ssmc.report.page import inline_page, png_base64
from ssmc.runtime.numpy_engine import run_numpy

#: Modes with at most this many coefficient levels between |A_bar| and 1 are highlighted.
FEW_LEVELS = 8
#: Figure size (inches) and dpi: 800 x 350 pixels, readable in a page without zooming.
FIGSIZE, DPI = (8, 3.5), 100


def _value_stats(values: np.ndarray, lsb: float, lo: float, hi: float) -> dict:
    """Fraction of values within one LSB of zero and at (or beyond) the range edge."""
    n = max(values.size, 1)
    return {
        "count": int(values.size),
        "near_zero": float(np.count_nonzero(np.abs(values) <= lsb) / n),
        "at_edge": float(np.count_nonzero((values <= lo) | (values >= hi)) / n),
    }


def profile_data(graph: Graph, x: np.ndarray) -> list[dict]:
    """One entry per neuron group and per synapse group, in graph order (see the module docstring).
    Neuron entries: kind 'messages' with values, lo/hi (the representable range), lsb; plus 'state'
    (integer values, lo/hi of state_bits) for stateful groups and 'modes' (abs_a, levels) for cpx."""
    if not graph.ops_of_kind("neurons"):
        raise IncompleteNetError(
            "the net has no neuron groups to profile (it was compiled with a pipeline that stops "
            "before lowering to neurons); compile it with the default pipeline"
        )
    traces = run_numpy(graph, x, trace=True).trace
    out = []
    for op in graph.ops():
        a = with_defaults(op)
        if op.kind == "neurons":
            frac, mb = int(a["frac"]), int(a["msg_bits"])
            lsb = 2.0**-frac
            lo, hi = -(2.0 ** (mb - 1)) * lsb, (2.0 ** (mb - 1) - 1) * lsb
            values = traces[op.name].ravel() * lsb
            entry = {
                "group": op.name,
                "what": "neurons",
                "kind": a["kind"],
                "frac": frac,
                "msg_bits": mb,
                "messages": {"values": values, "lo": lo, "hi": hi, "lsb": lsb, **_value_stats(values, lsb, lo, hi)},
            }
            if f"{op.name}.state" in traces:
                sb = int(a["state_bits"])
                s_lo, s_hi = -float(2 ** (sb - 1)), float(2 ** (sb - 1) - 1)
                states = traces[f"{op.name}.state"].ravel().astype(np.float64)
                entry["state"] = {
                    "values": states,
                    "lo": s_lo,
                    "hi": s_hi,
                    "lsb": 1.0,
                    "state_bits": sb,
                    **_value_stats(states, 1.0, s_lo, s_hi),
                }
            if a["kind"] == "cpx":
                scale = 2.0 ** (int(a["coef_bits"]) - 1)
                abs_a = np.hypot(op.params["c_re"].astype(np.float64), op.params["c_im"].astype(np.float64)) / scale
                entry["modes"] = {"abs_a": abs_a, "levels": (1.0 - abs_a) * scale, "coef_bits": int(a["coef_bits"])}
            out.append(entry)
        elif op.kind == "synapses":
            step = 2.0 ** int(a["weight_exp"])
            w = op.params["weight"].astype(np.float64).ravel()
            w = w[w != 0] * step  # a sparse matrix's zeros are absent connections, not weights
            out.append(
                {
                    "group": op.name,
                    "what": "synapses",
                    "weight_exp": int(a["weight_exp"]),
                    "values": w,
                    "step": step,
                    "levels": int(np.unique(w).size),
                }
            )
    return out


def format_profile(data: list[dict]) -> str:
    """The stdout summary: per group the share of values within one LSB of zero and at the range edge."""
    lines = [f"{'group':24s} {'values':>8s} {'count':>10s} {'~zero':>7s} {'at edge':>8s}  range / resolution"]
    for e in data:
        if e["what"] == "synapses":
            lines.append(
                f"{e['group']:24s} {'weights':>8s} {e['values'].size:10d} {'':>7s} {'':>8s}  "
                f"grid 2^{e['weight_exp']}, {e['levels']} distinct non-zero levels"
            )
            continue
        for key in ("messages", "state"):
            if key in e:
                s = e[key]
                lines.append(
                    f"{e['group']:24s} {key:>8s} {s['count']:10d} {s['near_zero']:7.1%} {s['at_edge']:8.1%}"
                    f"  [{s['lo']:.4g}, {s['hi']:.4g}] step {s['lsb']:.3g}"
                )
        if "modes" in e:
            few = int(np.count_nonzero(e["modes"]["levels"] <= FEW_LEVELS))
            lines.append(
                f"{e['group']:24s} {'modes':>8s} {e['modes']['abs_a'].size:10d}  "
                f"{few} with <= {FEW_LEVELS} coefficient levels below 1"
            )
    return "\n".join(lines) + "\n"


def _histogram(plt, title: str, xlabel: str, values: np.ndarray, marks: list[tuple[float, str, str]]) -> str:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.hist(values, bins=100, color="tab:blue", log=True)
    for x, style, label in marks:
        ax.axvline(x, linestyle=style, color="tab:red" if style == "-" else "tab:green", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count (log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    png = png_base64(fig, DPI)
    plt.close(fig)
    return png


def _figures(data: list[dict]) -> list[tuple[str, str]]:
    """(title, base64 PNG) of every figure: per synapse group its weights; per neuron group its messages, its
    states (stateful groups) and its modes (cpx groups)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for e in data:
        if e["what"] == "synapses":
            out.append(_weights_figure(plt, e))
            continue
        out.append(_messages_figure(plt, e))
        if "state" in e:
            out.append(_state_figure(plt, e))
        if "modes" in e:
            out.append(_modes_figure(plt, e))
    return out


def _weights_figure(plt, e: dict) -> tuple[str, str]:
    """A synapse group's non-zero weights, with one step of the weight grid marked."""
    g, w, step = e["group"], e["values"], e["step"]
    marks = [
        (float(w.min(initial=0.0)) + k * step, ":", "weight grid (2^weight_exp)" if k == 0 else "_") for k in range(2)
    ]
    return (
        f"{g}: weights",
        _histogram(
            plt, f"{g}: W * 2^{e['weight_exp']}, {e['levels']} distinct levels (non-zero weights)", "weight", w, marks
        ),
    )


def _messages_figure(plt, e: dict) -> tuple[str, str]:
    """A neuron group's decoded messages, with the representable range and +-1 LSB marked."""
    g, m = e["group"], e["messages"]
    return (
        f"{g}: messages",
        _histogram(
            plt,
            f"{g} ({e['kind']}): messages m / 2^{e['frac']}, {e['msg_bits']} bits",
            "value",
            m["values"],
            [
                (m["lo"], "-", f"range [{m['lo']:.4g}, {m['hi']:.4g}]"),
                (m["hi"], "-", "_"),
                (-m["lsb"], ":", f"resolution {m['lsb']:.3g} (+-1 LSB)"),
                (m["lsb"], ":", "_"),
            ],
        ),
    )


def _state_figure(plt, e: dict) -> tuple[str, str]:
    """A stateful neuron group's integer states, with the range of its state bits marked."""
    g, s = e["group"], e["state"]
    return (
        f"{g}: state",
        _histogram(
            plt,
            f"{g} ({e['kind']}): state, {s['state_bits']} bits",
            "state (integer)",
            s["values"],
            [(s["lo"], "-", f"range +-2^{s['state_bits'] - 1}"), (s["hi"], "-", "_")],
        ),
    )


def _modes_figure(plt, e: dict) -> tuple[str, str]:
    """A cpx group's |A_bar| per mode against the coefficient levels between it and 1, few levels in red."""
    g, md = e["group"], e["modes"]
    few = md["levels"] <= FEW_LEVELS
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.scatter(md["abs_a"][~few], md["levels"][~few], s=12, label=f"> {FEW_LEVELS} levels")
    ax.scatter(md["abs_a"][few], md["levels"][few], s=24, color="tab:red", label=f"<= {FEW_LEVELS} levels")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("|A_bar| per mode")
    ax.set_ylabel(f"levels in 1 - |A_bar|\n({md['coef_bits']}-bit coefficients)")
    ax.set_title(f"{g}: how finely each mode's decay is resolved", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = png_base64(fig, DPI)
    plt.close(fig)
    return f"{g}: modes", png


def profile_html(data: list[dict], title: str) -> str:
    """One self-contained page: the summary table and every figure inline."""
    return inline_page(f"ssmc profile: {title}", format_profile(data), _figures(data))


def write_profile_html(data: list[dict], path: str, title: str, inputs=()) -> None:
    """The profile page written as every ssmc output (ssmc.outputs): regular file, never an input, atomic."""
    write_file(path, profile_html(data, title).encode("utf-8"), inputs, "profile page", example="profile.html")
