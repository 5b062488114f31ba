"""Renderers of the report dict: text (terminal), JSON (scripts), HTML with pictures.

HTML images are PNGs made with matplotlib (Agg backend) and written into a
folder beside the page (``<page>_files/``), which the page references by
relative (URL-quoted) path. PNG metadata carries no date or version, so the
same report gives the same bytes. Every string the page interpolates is
HTML-escaped (names in a net.lava come from the ONNX model: untrusted). The
page and its images are written atomically (ssmc.outputs).
"""

from __future__ import annotations

import html
import io
import json
import os
import urllib.parse

from ssmc.errors import OutputFileError, printable
from ssmc.outputs import check_output, write_files
from ssmc.targets import CAPACITIES

#: The busiest links the text report lists (the JSON report has them all).
LINKS_SHOWN = 5
SHORT = {
    "neurons": "neurons",
    "memory_bytes": "memory",
    "synapse_bytes": "synapses",
    "fan_in_axons": "fan-in",
    "fan_out_routes": "fan-out",
    "groups": "groups",
}


def to_json(rep: dict) -> str:
    return json.dumps(rep, indent=1, sort_keys=True) + "\n"


def to_text(rep: dict) -> str:
    out = [f"net: {rep['source'].get('file', '?')}  pipeline: {rep['pipeline']}"]
    if rep.get("placement") is None:
        out.append(rep.get("note", "not placed"))
    else:
        out += _fit_text(rep) + _traffic_text(rep) + _cost_text(rep["cost"])
    out += _bitwidths_and_sections_text(rep)
    # names and strings come from net.lava, which may be hostile: no control character reaches the terminal
    return "\n".join(printable(line) for line in "\n".join(out).split("\n")) + "\n"


def _fit_text(rep: dict) -> list[str]:
    """Target and fit, each capacity with its sureness and source, and the utilisation of every used core."""
    p, t = rep["placement"], rep["target"]["values"]
    out = [
        f"target: {t['name']} ({t['board']}, {t['chips']} chip(s) x {t['cores_per_chip']} cores); "
        f"{p['cores_used']} cores on {p['chips_used']} chip(s) used; binding capacity: "
        f"{p['binding_capacity']} (peak {p['peak_utilisation'][p['binding_capacity']]:.0%})"
    ]
    out.append("")
    out.append("capacities (sureness: source)")
    prov = rep["target"]["provenance"]
    for k in CAPACITIES:
        pr = prov.get(k, {})
        out.append(f"  {k:15s} {t[k]:>8}  {pr.get('sureness', '?')}: {pr.get('source', '')[:90]}")
    out.append("")
    out.append(
        "per-core utilisation " + "  ".join(f"{SHORT[k]:>9s}" for k in CAPACITIES) + "  neuron groups on the core"
    )
    for c in p["cores"]:
        out.append(
            f"  chip {c['chip']} core {c['core']:3d}     "
            + "  ".join(f"{c['utilisation'][k]:9.0%}" for k in CAPACITIES)
            + "  "
            + ",".join(c["groups"])
        )
    return out


def _traffic_text(rep: dict) -> list[str]:
    """Messages per step (between cores, hop-weighted, between chips), where the rates come from, and the
    busiest links."""
    tr = rep["traffic"]
    out = [""]
    out.append(
        f"traffic per step: {tr['messages_per_step']} messages, {tr['inter_core']} between cores, "
        f"{tr['hop_weighted']} hop-weighted, {tr['inter_chip']} between chips"
    )
    out.append(f"message rates: {rep['rates']['source']}")
    links = rep["links"]
    if links["on_chip"] or links["between_chips"]:
        out.append(f"busiest links ({links['model']}):")
        for k in links["on_chip"][:LINKS_SHOWN]:
            out.append(f"  chip {k['chip']} router {tuple(k['from'])} -> {tuple(k['to'])}: {k['load']} msgs/step")
        for k in links["between_chips"][:LINKS_SHOWN]:
            out.append(f"  chip at {tuple(k['from'])} -> chip at {tuple(k['to'])}: {k['load']} msgs/step")
    return out


def _cost_text(c: dict) -> list[str]:
    """The estimated cost per token, under its label."""
    return [
        "",
        f"cost per token -- {c['label']}:",
        f"  step {c['step_ns']} ns (busiest core {c['busiest_core_ns']} ns), latency {c['latency_ns']} ns, "
        f"{c['throughput_tokens_per_s']:.0f} tokens/s",
        f"  {c['synaptic_ops_per_token']} synaptic ops, {c['neuron_updates_per_token']} neuron updates, "
        f"{c['messages_per_token']} messages; energy ~{c['energy_nj']} nJ "
        f"({c['energy_dynamic_nj']} dynamic + {c['energy_static_nj']} static)",
    ]


def _bitwidths_and_sections_text(rep: dict) -> list[str]:
    """The bit-widths of every tensor, then each extra section: a dict as key: value lines, a list of row dicts
    as a table, anything else one row per line."""
    out = ["", "bit-widths"]
    for b in rep["bitwidths"]:
        widths = ", ".join(
            f"{k.replace('_bits', '')} {b[k]}"
            for k in ("weight_bits", "coef_bits", "state_bits", "msg_bits")
            if b[k] is not None
        )
        out.append(f"  {b['tensor']:24s} {b['op']:20s} {b['size']:>8}  {widths}")
    for name, rows in rep.get("sections", {}).items():
        out.append("")
        out.append(name)
        if isinstance(rows, dict):
            out.extend(f"  {k}: {v}" for k, v in rows.items())
        elif rows and all(isinstance(r, dict) for r in rows):
            keys = list(rows[0])
            out.append("  " + " ".join(f"{k:>12s}" for k in keys))
            out.extend("  " + " ".join(f"{str(r.get(k, '')):>12s}" for k in keys) for r in rows)
        else:
            out.extend(f"  {r}" for r in rows)
    return out


def _images(rep: dict) -> dict[str, bytes]:
    """The report's pictures: file name -> PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return {
        "utilisation.png": _utilisation_png(plt, rep),
        "traffic.png": _traffic_png(plt, rep),
        "mesh.png": _mesh_png(plt, rep),
    }


def _utilisation_png(plt, rep: dict) -> bytes:
    """Bars per core, one per capacity, against the line at full capacity."""
    import numpy as np

    cores, labels = rep["placement"]["cores"], rep["traffic"]["labels"]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(cores) + 2), 3.5))
    width = 0.8 / len(CAPACITIES)
    for i, k in enumerate(CAPACITIES):
        ax.bar(np.arange(len(cores)) + i * width, [c["utilisation"][k] for c in cores], width, label=SHORT[k])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(cores)) + 0.4, labels, rotation=90, fontsize=6)
    ax.set_ylabel("fraction of capacity")
    ax.set_title("per-core utilisation")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    return _png_closed(plt, fig)


def _traffic_png(plt, rep: dict) -> bytes:
    """The core-to-core message matrix."""
    import numpy as np

    labels = rep["traffic"]["labels"]
    mat = np.array(rep["traffic"]["matrix"])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(mat, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=5)
    ax.set_yticks(range(len(labels)), labels, fontsize=5)
    ax.set_xlabel("to core (chip:core)")
    ax.set_ylabel("from core")
    ax.set_title("messages per step, core to core")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _png_closed(plt, fig)


def _mesh_png(plt, rep: dict) -> bytes:
    """One panel per chip used (cores by first group, router links by load) and, on a board of several chips,
    one panel of the chips and the load on chip-to-chip links."""
    cores, t = rep["placement"]["cores"], rep["target"]["values"]
    chips = sorted({c["chip"] for c in cores})
    board_panel = len(chips) > 1
    panels = len(chips) + board_panel
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3), squeeze=False)
    groups = sorted({g for c in cores for g in c["groups"]})
    colours = plt.get_cmap("tab20")
    links = rep["links"]
    top = max([k["load"] for k in links["on_chip"]], default=0.0) or 1.0
    for ax, chip in zip(axes[0], chips):
        _draw_chip(
            plt, ax, chip, t, cores, links["on_chip"], top, lambda core: colours(groups.index(core["groups"][0]) % 20)
        )
    if board_panel:
        _draw_board(plt, axes[0][-1], t, chips, links["between_chips"])
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours(i % 20), label=g) for i, g in enumerate(groups)]
    fig.legend(handles=handles[:20], fontsize=6, loc="lower center", ncol=min(6, len(handles)))
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    return _png_closed(plt, fig)


def _draw_chip(plt, ax, chip: int, t: dict, cores: list[dict], on_chip: list[dict], top: float, colour) -> None:
    """Chip `chip`'s router mesh, its links by load, and a dot per used core coloured by its first group."""
    rows, cols = t["router_mesh"]
    cpr = t["cores_per_router"]

    def xy(core):
        r, c = divmod(core // cpr, cols)
        j = core % cpr
        return c + 0.25 * (j % 2) - 0.125, r + 0.25 * (j // 2) - 0.125

    ax.set_xlim(-0.6, cols - 0.4)
    ax.set_ylim(rows - 0.4, -0.6)
    ax.set_title(f"chip {chip}: cores by first group, router links by load (XY routing)", fontsize=8)
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(plt.Rectangle((c - 0.35, r - 0.35), 0.7, 0.7, fill=False, lw=0.5, color="grey"))
    for k in on_chip:
        if k["chip"] != chip:
            continue
        _draw_link(ax, k, top, 0.06)
    for core in cores:
        if core["chip"] != chip:
            continue
        x, y = xy(core["core"])
        ax.scatter([x], [y], s=40, color=colour(core), zorder=3)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_board(plt, ax, t: dict, chips: list[int], between_chips: list[dict]) -> None:
    """The board's chip mesh, the chips used filled in, and the chip-to-chip links by load."""
    crows, ccols = t["chip_mesh"]
    ax.set_xlim(-0.6, ccols - 0.4)
    ax.set_ylim(crows - 0.4, -0.6)
    ax.set_title("board: chips used, chip-to-chip links by load", fontsize=8)
    for chip in range(t["chips"]):
        r, c = divmod(chip, ccols)
        ax.add_patch(
            plt.Rectangle(
                (c - 0.3, r - 0.3),
                0.6,
                0.6,
                lw=0.8,
                color="grey",
                fill=chip in chips,
                alpha=0.3 if chip in chips else 1.0,
            )
        )
        ax.text(c, r, str(chip), ha="center", va="center", fontsize=8)
    chip_top = max([k["load"] for k in between_chips], default=0.0) or 1.0
    for k in between_chips:
        _draw_link(ax, k, chip_top, 0.08)
    ax.set_xticks([])
    ax.set_yticks([])


def _png_closed(plt, fig) -> bytes:
    """The figure as PNG bytes (no Software stamp: the bytes depend on the picture only); the figure closed."""
    data = _png(fig, {"Software": None})
    plt.close(fig)
    return data


def _png(fig, meta: dict) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata=meta)
    return buf.getvalue()


def _draw_link(ax, link: dict, top: float, shift: float) -> None:
    """One directed link from (row, col) to (row, col), width and strength by its share of the busiest load;
    the two directions of a link side by side, shifted `shift` to the right of travel."""
    (r1, c1), (r2, c2) = link["from"], link["to"]
    off_r, off_c = shift * (c2 - c1), -shift * (r2 - r1)
    share = link["load"] / top  # 0.8 * load / top can round above 0.8: matplotlib refuses alpha > 1
    ax.plot(
        [c1 + off_c, c2 + off_c],
        [r1 + off_r, r2 + off_r],
        color="red",
        alpha=min(1.0, 0.2 + 0.8 * share),
        lw=0.5 + 4 * share,
        solid_capstyle="butt",
    )


def _table(headers, rows) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc('' if v is None else v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def write_html(rep: dict, path: str, inputs=()) -> list[str]:
    """Write the page and its images (never onto one of `inputs`); return the files written (page first)."""
    base = os.path.splitext(os.path.basename(path))[0] + "_files"
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), base)
    src = urllib.parse.quote(base)  # a file name in an attribute: URL-quoted, then HTML-escaped below
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ssmc report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}.est{color:#a40}</style></head><body>",
        f"<h1>ssmc report: {_esc(rep['source'].get('file', ''))}</h1>",
        f"<p>pipeline: <code>{_esc(rep['pipeline'])}</code></p>",
    ]
    images: dict[str, bytes] = {}
    if rep.get("placement") is None:
        parts.append(f"<p>{_esc(rep.get('note', 'not placed'))}</p>")
    else:
        images = _images(rep)
        parts += _placement_html(rep, src)
    parts += _bitwidths_and_sections_html(rep)
    parts.append("</body></html>\n")
    check_output(path, inputs, "report", example="report.html")  # before the image folder is made
    files = {os.path.join(folder, name): data for name, data in images.items()}
    if files:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:  # e.g. a file of that name is in the way
            raise OutputFileError(f"{path}: cannot create the image folder {folder} ({e.strerror})") from None
    files = {path: "\n".join(parts).encode("utf-8"), **files}
    write_files(files, inputs, "report", example="report.html")
    return list(files)


def _placement_html(rep: dict, src: str) -> list[str]:
    """Target and fit, per-core utilisation, traffic, mesh and link loads, estimated cost; `src` the image folder
    as the page refers to it."""
    p, t = rep["placement"], rep["target"]
    parts = [
        f"<h2>Target and fit</h2><p>{_esc(p['cores_used'])} cores on {_esc(p['chips_used'])} chip(s); "
        f"binding capacity <b>{_esc(p['binding_capacity'])}</b></p>"
    ]
    parts.append(
        _table(
            ["capacity", "value", "sureness", "source"],
            [
                [
                    k,
                    t["values"][k],
                    t["provenance"].get(k, {}).get("sureness"),
                    t["provenance"].get(k, {}).get("source"),
                ]
                for k in CAPACITIES
            ],
        )
    )
    parts.append(f"<h2>Per-core utilisation</h2><img src='{_esc(src)}/utilisation.png' alt='utilisation'>")
    parts.append(
        _table(
            ["chip", "core"] + [SHORT[k] for k in CAPACITIES] + ["groups"],
            [
                [c["chip"], c["core"]] + [f"{c['utilisation'][k]:.0%}" for k in CAPACITIES] + [", ".join(c["groups"])]
                for c in p["cores"]
            ],
        )
    )
    tr = rep["traffic"]
    parts.append(
        f"<h2>Traffic</h2><p>{_esc(tr['messages_per_step'])} messages per step, {_esc(tr['inter_core'])} "
        f"between cores, {_esc(tr['hop_weighted'])} hop-weighted, {_esc(tr['inter_chip'])} between "
        f"chips. Rates: {_esc(rep['rates']['source'])}</p>"
    )
    parts.append(f"<img src='{_esc(src)}/traffic.png' alt='traffic matrix'>")
    parts.append(f"<h2>Mesh</h2><img src='{_esc(src)}/mesh.png' alt='mesh'>")
    links = rep["links"]
    parts.append(f"<p>Link loads: {_esc(links['model'])} (a model, not a simulation of the routers).</p>")
    parts.append(
        _table(
            ["chip", "router", "to router", "messages per step"],
            [[k["chip"], tuple(k["from"]), tuple(k["to"]), k["load"]] for k in links["on_chip"][: 4 * LINKS_SHOWN]],
        )
    )
    if links["between_chips"]:
        parts.append(
            _table(
                ["chip at", "to chip at", "messages per step"],
                [[tuple(k["from"]), tuple(k["to"]), k["load"]] for k in links["between_chips"]],
            )
        )
    c = rep["cost"]
    parts.append(f"<h2 class='est'>Estimated cost per token</h2><p class='est'>{_esc(c['label'])}</p>")
    parts.append(_table(["quantity", "estimate"], [[k, v] for k, v in c.items() if k not in ("label", "constants")]))
    parts.append(
        _table(["constant", "value", "source"], [[k, v["value"], v["source"]] for k, v in c["constants"].items()])
    )
    return parts


def _bitwidths_and_sections_html(rep: dict) -> list[str]:
    """The bit-width table, then each extra section (a dict, a list of rows, or a list of lines) as a table."""
    parts = ["<h2>Bit-widths</h2>"]
    cols = ["tensor", "op", "size", "weight_bits", "coef_bits", "state_bits", "msg_bits", "delta"]
    parts.append(_table(cols, [[b[k] for k in cols] for b in rep["bitwidths"]]))
    for name, rows in rep.get("sections", {}).items():
        parts.append(f"<h2>{_esc(name)}</h2>")
        if isinstance(rows, dict):
            parts.append(_table(["key", "value"], list(rows.items())))
        elif rows and all(isinstance(r, dict) for r in rows):
            parts.append(_table(list(rows[0]), [[r.get(k) for k in rows[0]] for r in rows]))
        else:
            parts.append(_table(["row"], [[r] for r in rows]))
    return parts
