"""`ssmc report`: what a compiled net uses and costs, as a plain dict first (renderers in render.py).

Sections: source and pipeline; target (values with source and sureness);
per-core utilisation of every capacity; core-to-core traffic and the load it puts
on each mesh link (links.py, XY routing); bit-widths of
every tensor; message rates; an estimated cost per token (costmodel.py,
labelled as an estimate). Everything is computed from net.lava alone (the
placed IR and its recorded target). Other stages add their own sections to
``report["sections"]`` (e.g. microcode program sizes, the Lava process table):
a renderer shows every section it finds there as a table of key/value rows.
"""

from __future__ import annotations

import json

import numpy as np

from ssmc.backend_loihi.microcode.emit import microcode_summary
from ssmc.ir.placement import core_assignment
from ssmc.mapping.capacity import target_of
from ssmc.mapping.netlist import build_netlist
from ssmc.mapping.usage import core_usage, routes, traffic
from ssmc.report.costmodel import estimate
from ssmc.report.links import link_loads
from ssmc.runtime.rates import SOURCE_ATTR
from ssmc.targets import CAPACITIES


def _microcode_section(net):
    """Per neuron program: size in words and ASSUMED cycles (docs/microcode.md), from net.lava's index."""
    if "microcode/index.json" not in net.extras:
        return {"note": "this net has no microcode programs"}
    return microcode_summary(net)


def _lava_section(net):
    """Every Lava process, its class and the cores it runs on (net.lava's lava/processes.json)."""
    blob = net.extras.get("lava/processes.json")
    if blob is None:
        return {"note": "this net has no Lava process table (compiled by an older ssmc, or not to neurons)"}
    try:
        rows = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"note": "lava/processes.json is damaged; recompile"}
    return [
        {
            "process": r.get("name"),
            "class": r.get("class"),
            "group": r.get("group"),
            "size": r.get("size"),
            "cores": " ".join(
                f"chip{c['chip']}.core{c['core']}[{c['neurons'][0]}:{c['neurons'][1]}]" for c in r.get("cores", [])
            )
            or "unplaced",
        }
        for r in rows
        if isinstance(r, dict)
    ]


#: Producers of extra report sections: name -> f(net) -> dict or list of row dicts. Other stages register here
#: (e.g. a Lava process table); each is shown as a table by every renderer.
SECTION_PROVIDERS: dict = {
    "microcode programs (sizes in words; cycles assumed)": _microcode_section,
    "Lava processes (which runs on which core)": _lava_section,
}


def bitwidths(graph) -> list[dict]:
    rows = []
    for op in graph.ops():
        if op.kind == "neurons":
            a = op.attrs
            rows.append(
                {
                    "tensor": op.name,
                    "op": f"neurons/{a['kind']}",
                    "size": int(a["size"]),
                    "msg_bits": a.get("msg_bits", 24),
                    "state_bits": a.get("state_bits", 24),
                    "coef_bits": a.get("coef_bits", 16) if a["kind"] == "cpx" else None,
                    "weight_bits": None,
                    "frac": a.get("frac"),
                    "delta": a.get("delta", 0),
                }
            )
        elif op.kind == "synapses":
            w = op.params["weight"]
            rows.append(
                {
                    "tensor": op.name,
                    "op": "synapses",
                    "size": int(np.count_nonzero(w)),
                    "msg_bits": None,
                    "state_bits": None,
                    "coef_bits": None,
                    "weight_bits": op.attrs.get("weight_bits", 8),
                    "frac": op.attrs.get("weight_exp", 0),
                    "delta": None,
                }
            )
    return rows


def build_report(net) -> dict:
    graph = net.graph
    rep = {
        "source": dict(net.source),
        "pipeline": net.pipeline,
        "bitwidths": bitwidths(graph),
        "sections": {name: f(net) for name, f in sorted(SECTION_PROVIDERS.items())},
    }
    target = target_of(graph)
    if target is None:
        rep["placement"] = None
        rep["note"] = (
            "not placed: compile with the partition and place passes (the default pipeline) for cores, traffic and cost"
        )
        return rep
    rep["target"] = target.describe()
    described = net.target_description()
    if described is not None:  # the compile-time description keeps each value's source and sureness
        rep["target"]["provenance"] = described.get("provenance", {})
    core_of, problems = core_assignment(graph, target)
    if problems:
        rep["placement"] = None
        rep["note"] = "placement is broken: " + "; ".join(problems[:3])
        return rep
    rep.update(_placed_sections(graph, target, core_of))
    return rep


def _placed_sections(graph, target, core_of: np.ndarray) -> dict:
    """The placement, traffic, links, rates and cost sections of a graph placed on `target`; `core_of` is each
    neuron's global core (chip * cores_per_chip + core)."""
    nl = build_netlist(graph)
    used, logical = np.unique(core_of, return_inverse=True)
    r = routes(nl, logical)
    use = core_usage(nl, logical, len(used), r)
    tr_logical = traffic(nl, logical, len(used), target, r, hop_matrix=np.zeros((len(used), len(used))))
    tr = traffic(nl, core_of, int(core_of.max()) + 1, target)
    cores = _core_rows(nl, target, used, logical, use)
    peak = {k: round(float(use[k].max()) / target.capacity(k), 4) for k in CAPACITIES}
    depth = max((int(op.attrs.get("depth", 0)) for op in graph.ops_of_kind("neurons")), default=0)
    chips = len({c["chip"] for c in cores})
    return {
        "placement": {
            "cores_used": len(used),
            "chips_used": chips,
            "cores": cores,
            "peak_utilisation": peak,
            "binding_capacity": max(peak, key=peak.get),
        },
        "traffic": {
            "messages_per_step": round(tr.messages, 2),
            "inter_core": round(tr.inter_core, 2),
            "hop_weighted": round(tr.hop_weighted, 2),
            "inter_chip": round(tr.inter_chip, 2),
            "matrix": np.round(tr_logical.matrix, 3).tolist(),
            "labels": [f"{c['chip']}:{c['core']}" for c in cores],
        },
        "links": link_loads(cores, tr_logical.matrix, target),
        "rates": {
            "source": graph.attrs.get(SOURCE_ATTR, "assumed (no msg_rate recorded)"),
            "groups": {g.name: g.rate for g in nl.groups},
        },
        "cost": estimate(
            _synaptic_ops(nl, logical, len(used)).tolist(),
            use["neurons"].tolist(),
            tr.messages,
            tr.inter_core,
            tr.hop_weighted,
            depth,
            chips,
        ),
    }


def _core_rows(nl, target, used: np.ndarray, logical: np.ndarray, use: dict) -> list[dict]:
    """One row per used core (`used[i]` its global index, `logical` each neuron's index into `used`): its chip,
    core and router, the groups on it, and its use and utilisation of every capacity."""
    group_of = nl.group_of()
    cores = []
    for i, g_core in enumerate(used):
        chip, core = target.slot(int(g_core))
        members = np.unique(group_of[logical == i])
        cores.append(
            {
                "chip": chip,
                "core": core,
                "router": list(target.router_xy(core)),
                "groups": [nl.groups[m].name for m in members],
                "use": {k: int(use[k][i]) for k in CAPACITIES},
                "utilisation": {k: round(float(use[k][i]) / target.capacity(k), 4) for k in CAPACITIES},
            }
        )
    return cores


def _synaptic_ops(nl, logical: np.ndarray, n_cores: int) -> np.ndarray:
    """Synaptic operations per step on each core: every synapse's presynaptic message rate, summed on the core
    of its postsynaptic neuron."""
    rates = nl.neuron_rates()
    synops = np.zeros(n_cores)
    for s in nl.synapses:
        np.add.at(synops, logical[s.post_ids], rates[s.pre_ids])
    return synops
