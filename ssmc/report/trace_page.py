"""`ssmc trace --html`: one self-contained page (plots inlined as PNG data) of a Trace.

Plots are drawn with matplotlib's Agg backend, like the report's; the page is
written to a temporary file beside the target and renamed, so a failed run
leaves nothing half-written.
"""

from __future__ import annotations


import numpy as np

from ssmc.outputs import write_file
from ssmc.report.page import inline_page, png_base64
from ssmc.runtime.trace import Trace, format_trace


def _plots(tr: Trace) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = np.arange(tr.tokens)
    out = []
    fig, ax = plt.subplots(figsize=(10, 4))
    for lt in tr.layers:
        ax.semilogy(tokens, np.maximum(lt.local_error, 1e-12), label=lt.group)
    ax.set_xlabel("token")
    ax.set_ylabel("local error / float scale")
    ax.set_title("error each group adds (fed with the fixed-point inputs), worst first in the legend")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out.append(("local error per token", png_base64(fig, 90)))
    plt.close(fig)
    for lt in tr.layers:
        fig, ax = plt.subplots(figsize=(10, 2.6))
        ax.plot(tokens, lt.error, label="end to end")
        ax.plot(tokens, lt.local_error, label="local")
        if lt.re_error is not None:
            ax.plot(tokens, lt.re_error, ":", label="real compartments")
            ax.plot(tokens, lt.im_error, ":", label="imaginary compartments")
        ax.set_xlabel("token")
        ax.set_ylabel("error / scale")
        ax.set_title(f"{lt.group} ({lt.kind}, op {lt.op}, float scale {lt.scale:.3g})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        out.append((lt.group, png_base64(fig, 90)))
        plt.close(fig)
    return out


def trace_html(tr: Trace, title: str) -> str:
    """One self-contained page: the trace table and one plot per listed group (images inline)."""
    return inline_page(f"ssmc trace: {title}", format_trace(tr), _plots(tr))


def write_trace_html(tr: Trace, path: str, title: str, inputs=()) -> None:
    """The trace page written as every ssmc output (ssmc.outputs): regular file, never an input, atomic."""
    write_file(path, trace_html(tr, title).encode("utf-8"), inputs, "trace page", example="trace.html")
