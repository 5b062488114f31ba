"""Trace: where a compiled net departs from its float model, layer by layer and token by token.

Every neuron group realises one op of the float network it was quantized from
(the graph after the float passes, before assign-bitwidths; the group's
`source` attribute names the op). The numpy engine records every group's
messages at every step; a group's token k is its message at step k + depth,
and its value is that message times 2^-frac (docs/fixed_point.md, "Time").
For each group this module measures, per token:

- `error`: |fixed point - float reference| end to end (both nets run from the
  same input), the error the user sees at that point of the net;
- `local_error`: |fixed point - the float op fed with the fixed-point values
  of the groups before it|, the error this group adds itself. A fault in one
  layer shows up in every layer after it in `error`, but only in its own
  `local_error`, so layers are ranked worst first by `local_error`;
- for complex-pair groups (an S4D layer's states, in the basis rescale-states
  chose, which is also the float graph's basis), the error of the real and of
  the imaginary compartments and its drift: the least-squares slope of the
  complex error magnitude over tokens;
- values at the edge of their range (messages, and states of stateful
  groups), a per-token view of saturation, beside the engine's exact clip counts.

And per sequence the first token at which the predicted class (argmax of the
first output) of the fixed-point net differs from the float reference's.
All errors are divided by the group's float scale (the largest |value| the
float reference reaches there over the traced sequences).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ssmc.data import check_sequences
from ssmc.errors import IncompleteNetError
from ssmc.ir.graph import Graph, Op
from ssmc.runtime.float_ref import FloatEngine
from ssmc.runtime.numpy_engine import run_numpy

CHUNK = 16  # sequences traced at once: the trace holds every group's messages at every step


@dataclass
class LayerTrace:
    """One neuron group against the float op it realises. Arrays are per token."""

    group: str
    op: str  # the float op (the group's `source`)
    kind: str  # neuron kind: source, relay, relu, cpx, integrator, lut, product
    scale: float  # largest |float value| of the op over the traced sequences (1 where it is 0)
    error: np.ndarray  # [tokens] max over sequences and neurons of |fixed - float|, end to end, / scale
    local_error: np.ndarray  # [tokens] the same against the op fed with the fixed-point inputs, / scale
    at_limit: np.ndarray  # [tokens] messages (and states) at the edge of their range, over all sequences
    saturation: dict[str, int]  # the engine's clip counts over the run: accumulator, state, message
    re_error: np.ndarray | None = None  # cpx: [tokens] max |error| of the real compartments / scale
    im_error: np.ndarray | None = None  # cpx: [tokens] the same for the imaginary compartments
    drift: float | None = None  # cpx: slope of the max complex error magnitude per token / scale

    @property
    def worst(self) -> float:
        return float(self.local_error.max()) if self.local_error.size else 0.0

    @property
    def worst_token(self) -> int:
        return int(self.local_error.argmax()) if self.local_error.size else -1


@dataclass
class Trace:
    layers: list[LayerTrace]  # worst first: largest local error
    divergence: np.ndarray  # [batch] first token whose predicted class differs from the float one; -1: none
    final_differs: np.ndarray  # [batch] bool: the classes differ at the last token
    output: str  # the output whose classes are compared
    tokens: int
    skipped: dict[str, str] = field(default_factory=dict)  # group -> why it was not compared

    @property
    def first_divergence(self) -> int:
        """The earliest divergence token over all sequences (-1: the classes agree everywhere)."""
        d = self.divergence[self.divergence >= 0]
        return int(d.min()) if d.size else -1


def _pairing(neuro: Graph, float_graph: Graph, skip_cpx: str | None) -> tuple[dict[str, Op], dict[str, str]]:
    """group name -> the float op it realises, and group -> why it is left out."""
    pairs, skipped = {}, {}
    for g in neuro.ops_of_kind("neurons"):
        src = g.attrs.get("source")
        if src is None or src not in float_graph:
            skipped[g.name] = f"realises no op of the float network ({src})"
        elif (
            g.name != (f"{src}.source" if g.attrs["kind"] == "source" else src)
            or int(np.prod(float_graph.op(src).shape)) != g.attrs["size"]
        ):
            skipped[g.name] = f"realises a part of %{src}, not its value (a GLU's gate)"
        elif skip_cpx and g.attrs["kind"] == "cpx":
            skipped[g.name] = skip_cpx
        else:
            pairs[g.name] = float_graph.op(src)
    return pairs, skipped


def _fixed_values(res, neuro: Graph, group: str, tokens: int) -> np.ndarray:
    """A group's values per token [batch, tokens, size] (sigma-delta: what its receivers have summed)."""
    g = neuro.op(group)
    depth, frac = g.attrs.get("depth", 0), g.attrs["frac"]
    msgs = res.trace.get(f"{group}.last", res.trace[group])[:, depth : depth + tokens]
    value = np.ldexp(msgs.astype(np.float64), -int(frac))
    if g.attrs.get("decode") == "mean":
        value = value / np.arange(1, tokens + 1, dtype=np.float64)[None, :, None]
    if "state_scale" in g.params:  # a state the passes scaled (assign-bitwidths): back to the model's
        value = value / g.params["state_scale"]
    return value


def _at_limit(res, neuro: Graph, group: str, tokens: int) -> np.ndarray:
    g = neuro.op(group)
    depth = g.attrs.get("depth", 0)
    counts = np.zeros(tokens, np.int64)
    for key, bits in ((group, g.attrs["msg_bits"]), (f"{group}.state", g.attrs["state_bits"])):
        if key in res.trace:
            v = res.trace[key][:, depth : depth + tokens]
            counts += ((v >= (1 << (bits - 1)) - 1) | (v <= -(1 << (bits - 1)))).sum(axis=(0, 2))
    return counts


def _chunk(neuro: Graph, float_graph: Graph, pairs: dict[str, Op], x: np.ndarray) -> dict:
    tokens = x.shape[1]
    res = run_numpy(neuro, x, trace=True)
    fixed = {name: _fixed_values(res, neuro, name, tokens) for name in pairs}
    ref, local = FloatEngine(float_graph), FloatEngine(float_graph)
    ref.reset(len(x))
    local.reset(len(x))
    ops = {name: op.name for name, op in pairs.items()}
    f_vals = {name: np.empty_like(v) for name, v in fixed.items()}
    l_vals = {name: np.empty_like(v) for name, v in fixed.items()}
    out_name = float_graph.outputs()[0].name
    f_out = []
    for k in range(tokens):
        given = {ops[name]: fixed[name][:, k] for name in pairs}
        a = ref.step_all(x[:, k])
        b = local.step_all(x[:, k], given=given)
        for name in pairs:
            f_vals[name][:, k] = a[ops[name]]
            l_vals[name][:, k] = b[ops[name]]
        f_out.append(a[out_name])
    q_out = res.outputs[neuro.outputs()[0].name]
    f_out = np.stack(f_out, axis=1)
    diverged = q_out.argmax(-1) != f_out.argmax(-1)  # [batch, tokens]
    divergence = np.where(diverged.any(axis=1), diverged.argmax(axis=1), -1)
    per = {}
    for name in pairs:
        e, le = np.abs(fixed[name] - f_vals[name]), np.abs(fixed[name] - l_vals[name])
        item = {
            "scale": float(np.abs(f_vals[name]).max()) if f_vals[name].size else 0.0,
            "error": e.max(axis=(0, 2)),
            "local": le.max(axis=(0, 2)),
            "at_limit": _at_limit(res, neuro, name, tokens),
            "saturation": res.saturation[name],
        }
        if neuro.op(name).attrs["kind"] == "cpx":
            d = fixed[name] - f_vals[name]
            item["re"] = np.abs(d[..., 0::2]).max(axis=(0, 2))
            item["im"] = np.abs(d[..., 1::2]).max(axis=(0, 2))
            item["mag"] = np.hypot(d[..., 0::2], d[..., 1::2]).max(axis=(0, 2))
        per[name] = item
    return {"per": per, "divergence": divergence, "final": diverged[:, -1]}


def _merge(acc: dict | None, new: dict) -> dict:
    if acc is None:
        return new
    for name, item in new["per"].items():
        a = acc["per"][name]
        for key in ("error", "local", "re", "im", "mag"):
            if key in item:
                a[key] = np.maximum(a[key], item[key])
        a["scale"] = max(a["scale"], item["scale"])
        a["at_limit"] = a["at_limit"] + item["at_limit"]
        a["saturation"] = {k: a["saturation"].get(k, 0) + v for k, v in item["saturation"].items()}
    acc["divergence"] = np.concatenate([acc["divergence"], new["divergence"]])
    acc["final"] = np.concatenate([acc["final"], new["final"]])
    return acc


def _slope(y: np.ndarray) -> float:
    if y.size < 2:
        return 0.0
    t = np.arange(y.size, dtype=np.float64)
    return float(np.polyfit(t, y, 1)[0])


def trace_net(
    neuro: Graph, float_graph: Graph, x: np.ndarray, skip_cpx: str | None = None, chunk: int = CHUNK
) -> Trace:
    """Trace the neuro-level graph `neuro` against `float_graph` (the float network its groups were
    quantized from) on x [batch, tokens, features]. `skip_cpx`: a reason to leave complex-pair groups
    out (their float graph is in another state basis)."""
    if not neuro.ops_of_kind("neurons"):
        raise IncompleteNetError(
            "this net has no neuron groups (compiled without the fixed-point passes): "
            "there is no fixed point to trace; compile it with the default pipeline"
        )
    x = check_sequences(x, neuro.inputs()[0].shape[0])
    pairs, skipped = _pairing(neuro, float_graph, skip_cpx)
    acc = None
    for start in range(0, len(x), chunk):
        acc = _merge(acc, _chunk(neuro, float_graph, pairs, x[start : start + chunk]))
    tokens = x.shape[1]
    layers = []
    for name, item in acc["per"].items():
        scale = item["scale"] or 1.0
        g = neuro.op(name)
        cpx = "re" in item
        layers.append(
            LayerTrace(
                group=name,
                op=pairs[name].name,
                kind=g.attrs["kind"],
                scale=scale,
                error=item["error"] / scale,
                local_error=item["local"] / scale,
                at_limit=item["at_limit"],
                saturation=dict(item["saturation"]),
                re_error=item["re"] / scale if cpx else None,
                im_error=item["im"] / scale if cpx else None,
                drift=_slope(item["mag"] / scale) if cpx else None,
            )
        )
    layers.sort(key=lambda lt: (-lt.worst, -float(lt.error.max()) if lt.error.size else 0.0, lt.group))
    return Trace(
        layers=layers,
        divergence=acc["divergence"],
        final_differs=acc["final"],
        output=neuro.outputs()[0].name,
        tokens=tokens,
        skipped=skipped,
    )


def format_trace(tr: Trace, rows: int | None = None) -> str:
    """The text table of `ssmc trace`: worst layer first."""
    lines = [
        f"{'group':<16} {'op':<12} {'kind':<10} {'local err':>10} {'at token':>8} {'e2e err':>10} "
        f"{'re err':>9} {'im err':>9} {'drift/tok':>10} {'at limit':>8} {'clipped':>8}"
    ]
    for lt in tr.layers[:rows]:
        clipped = sum(lt.saturation.values())
        cpx = lt.re_error is not None
        lines.append(
            f"{lt.group:<16} {lt.op:<12} {lt.kind:<10} {lt.worst:>10.3e} {lt.worst_token:>8d} "
            f"{float(lt.error.max()):>10.3e} "
            + (
                f"{float(lt.re_error.max()):>9.2e} {float(lt.im_error.max()):>9.2e} {lt.drift:>10.2e} "
                if cpx
                else f"{'':>9} {'':>9} {'':>10} "
            )
            + f"{int(lt.at_limit.sum()):>8d} {clipped:>8d}"
        )
    n = len(tr.divergence)
    diverged = int((tr.divergence >= 0).sum())
    lines.append(
        "errors are max |fixed point - float| over sequences and neurons, divided by the op's float "
        "scale; local: against the float op fed with the fixed-point inputs (what this group adds)"
    )
    lines.append(
        f"predicted class ({tr.output}, argmax per token) differs from the float reference in "
        f"{diverged}/{n} sequences"
        + (f"; first at token {tr.first_divergence}" if diverged else "")
        + f"; at the last token in {int(tr.final_differs.sum())}/{n}"
    )
    for name, why in tr.skipped.items():
        lines.append(f"not compared: {name}: {why}")
    return "\n".join(lines) + "\n"
