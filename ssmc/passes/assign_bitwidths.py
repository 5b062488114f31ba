"""assign-bitwidths: quantize the float network into integer neuron and synapse groups.

Lowers the model level (after fuse-complex-pairs) to the neuro level of
docs/fixed_point.md: the input becomes a `source` group, every `cpx` a `cpx`
group, every ReLU a `relu` group, every residual `add` read by more than one
op a `relay` group, every `pool` an `integrator`; every `linear` becomes a
synapse group (its bias goes to the target group), and an `add` read by a
single op merges into that op's dendrite. GELU, sigmoid and tanh become `lut`
groups (a table of 2**lut_bits entries over the calibrated input range), GLU a
sigmoid `lut` gate and a `product` group, LayerNorm a chain of groups
(channel sum, centred values, `product` squares, a piecewise chain of
1/sqrt(var + eps) `lut` tables, the normalised `product`, the affine map;
_norm_group, rsqrt_tables, docs/fixed_point.md "LayerNorm on neurons"; a norm
frozen by freeze-norms before this pass is a linear). Scales come from calibration: each
group's message scale `frac` puts its calibrated peak (times 2**headroom_bits)
at the top of its message range; weights get `weight_bits` of precision in
Lava's Dense convention and one exponent per synapse group. `weight-exp`
chooses how many: `group` gives each linear one synapse group with one shared
exponent; `row` gives every output row (post neuron) its own exponent by
splitting the linear into one synapse group per exponent class (each holds
only its rows; rows whose weights are exact at a coarser class's exponent join
it), which is exactly per-row exponents within the one-exponent-per-group
contract; `auto` (default) decides by the fixed-vs-float error of the last
token's output on the calibration set (numpy engine vs float reference):
`row` everywhere if that lowers the error by AUTO_GAIN, then back to one
exponent for each linear whose split is not worth AUTO_GAIN of error; then,
per S4D layer, whether to move each mode's scale from the readout C into the
input B (move_mode_scale_to_input), kept if it lowers the error by AUTO_GAIN.
It logs every candidate's error. Finally
depths and delays are set so every group sees one token's inputs together.
Guarantees: the result verifies and runs on the numpy engine; ops without an
integer realisation are refused by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ssmc.config import LAYER_WIDTH_KEYS, WEIGHT_EXP_MODES
from ssmc.errors import IRError, UnsupportedModelError
from ssmc.ir.activations import activation
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import SHIFT_MAX
from ssmc.widths import OPTIONS as WIDTHS
from ssmc.passes import FLOAT_PIPELINE
from ssmc.passes.base import Pass, PassError, data_field, log
from ssmc.runtime.calibrate import NormRanges, Ranges, check_calibration, measure_ranges
from ssmc.runtime.float_ref import run_float
from ssmc.runtime.numpy_engine import run_numpy

WIDTH_KEYS = LAYER_WIDTH_KEYS
WIDTH_LIMITS = {key: (w.lo, w.hi) for key, w in WIDTHS.items()}  # ssmc/widths.py
RANDOM_CALIBRATION = (64, 64)
LUT_FUNCTIONS = (
    "gelu",
    "gelu_tanh",
    "sigmoid",
    "tanh",
)  # sequences, tokens: used only when no calibration data is given
AUTO_GAIN = 0.05  # auto splits only if that lowers the calibration error by 5%; keeps a split worth more than 5%
AUTO_SEQUENCES = (
    16  # auto compares candidates on at most this many calibration sequences (it runs the engine per linear)
)


def weight_step(weight_bits: int) -> int:
    """Spacing of representable weights (Lava Dense, mixed sign): 2**(9 - bits)."""
    return 1 << (9 - weight_bits)


def quantize_weights(w_eff: np.ndarray, weight_bits: int) -> tuple[np.ndarray, int]:
    """Integer weights (multiples of weight_step, in [-128, 128 - step]) and exponent e with w * 2**e ~ w_eff."""
    step = weight_step(weight_bits)
    peak = float(np.abs(w_eff).max()) if w_eff.size else 0.0
    if peak == 0.0:
        return np.zeros(w_eff.shape, np.int32), 0
    top = 128 - step
    # Weights below 2**-SHIFT_MAX of the dendrite's unit (e.g. a model whose weights are all 1e-30) cannot
    # change an integer dendrite: the finest exponent rounds them to what it can, zero if need be.
    e = max(math.ceil(math.log2(peak / top)), -SHIFT_MAX)
    while True:
        w = np.round(w_eff / 2.0**e / step) * step
        if w.max() <= top and w.min() >= -128:
            return w.astype(np.int32), e
        e += 1


def split_by_row_exponent(w_eff: np.ndarray, weight_bits: int) -> list[tuple[np.ndarray, int]]:
    """Per-row exponents as synapse groups: [(integer weights of w_eff's shape, exponent)], one per exponent class.

    Each row is quantized alone (its own smallest exponent); the rows of one
    class keep their weights and every other row is zero in that class's
    matrix, so summing the classes' outputs gives each post neuron exactly
    sat(shr(row . m, -e_row)). A class whose every weight is exactly
    representable at a coarser class's exponent joins that class (weights
    shifted right, same integers reach the dendrite); all-zero rows belong to
    no class. Classes come out with the coarsest exponent first.
    """
    step, top = weight_step(weight_bits), 128 - weight_step(weight_bits)
    peak = np.abs(w_eff).max(axis=1) if w_eff.size else np.zeros(w_eff.shape[0])
    live = peak > 0  # all-zero rows join no class
    if not np.any(live):
        return [(np.zeros(w_eff.shape, np.int32), 0)]
    # each row as quantize_weights would do it alone: the smallest exponent whose rounding fits
    exp = np.zeros(w_eff.shape[0], np.int64)
    # a row far below the others must not ask for a shift the IR cannot hold: it keeps what the floor gives
    exp[live] = np.maximum(np.ceil(np.log2(peak[live] / top)), -SHIFT_MAX).astype(np.int64)
    while True:
        w = np.round(w_eff / 2.0 ** exp[:, None] / step) * step
        over = live & ((w.max(axis=1) > top) | (w.min(axis=1) < -128))
        if not np.any(over):
            break
        exp[over] += 1
    w = w.astype(np.int32)
    live &= np.any(w != 0, axis=1)
    if not np.any(live):
        return [(np.zeros(w_eff.shape, np.int32), 0)]
    classes = {int(e): list(np.nonzero(live & (exp == e))[0]) for e in np.unique(exp[live])}
    kept: list[int] = []
    for e in sorted(classes, reverse=True):
        rows = classes[e]
        into = next((k for k in kept if np.all((w[rows] // step) % (1 << (k - e)) == 0)), None)
        if into is None:
            kept.append(e)
        else:
            classes[into].extend(classes.pop(e))
    out = []
    for e in kept:
        part = np.zeros(w_eff.shape, np.int32)
        rows = np.array(sorted(classes[e]))
        part[rows] = w[rows] >> (e - exp[rows])[:, None]  # exact: divisible, checked above (0 for its own rows)
        out.append((part, e))
    return out


def scale_frac(peak: float, bits: int, headroom_bits: int) -> int:
    """The frac putting `peak` * 2**headroom_bits just inside a signed `bits` range."""
    if peak <= 0:
        return bits - 2
    return math.floor(math.log2((2 ** (bits - 1) - 1) / (peak * 2**headroom_bits)))


@dataclass
class _Group:
    op: Op
    frac: int  # message scale
    dendrite_frac: int  # scale of its input and state


@dataclass
class _Lowering:
    src: Graph
    ranges: Ranges
    opts: "AssignBitwidths"
    out: Graph = field(init=False)
    groups: dict[str, _Group] = field(default_factory=dict)  # model value -> its neuron group
    overrides: dict[str, dict[str, int]] = field(default_factory=dict)  # layer -> {width key: bits}
    row_linears: frozenset = frozenset()  # linears (synapse sources) split by per-row exponent; the rest: one group
    row_classes: dict[str, int] = field(default_factory=dict)  # linear -> its number of per-row exponent classes

    def __post_init__(self):
        self.out = Graph(self.src.name, dict(self.src.attrs))

    def bits(self, name: str, key: str) -> int:
        """The width `key` (weight, coef, state, message) for model op `name`: its layer's override or the default."""
        for layer, widths in self.overrides.items():
            if key in widths and (name == layer or name.startswith(layer + ".")):
                return widths[key]
        return getattr(self.opts, WIDTH_KEYS[key])

    def state_fracs(self, name: str, state_bits: int, msg_bits: int, default_peak: float) -> tuple[int, int]:
        """(state frac, message frac) of a stateful group; messages are the state shifted right by the difference."""
        state = self.ranges.state(name)
        peak = float(np.max(state)) if state is not None else default_peak
        sfrac = scale_frac(peak, state_bits, self.opts.headroom_bits)
        return sfrac, min(sfrac, scale_frac(peak, msg_bits, self.opts.headroom_bits))

    def peak(self, name: str) -> float:
        v = self.ranges.value(name)
        return float(np.max(v)) if v is not None and np.size(v) else 0.0

    # -- groups -----------------------------------------------------------------
    def group(self, name: str) -> _Group:
        """The neuron group realising model value `name` (made on first use)."""
        if name in self.groups:
            return self.groups[name]
        op = self.src.op(name)
        o = self.opts
        msg_bits, state_bits = self.bits(name, "message"), self.bits(name, "state")
        if op.kind == "input":
            frac = scale_frac(self.peak(name), msg_bits, o.headroom_bits)
            g = self._neurons(name, "source", op.shape[0], frac, frac, [op.name], {})
        elif op.kind == "cpx":
            sfrac, mfrac = self.state_fracs(name, state_bits, msg_bits, default_peak=1.0)
            coef_bits = self.bits(name, "coef")
            params = {"c_re": _coef(op.params["a_re"], coef_bits), "c_im": _coef(op.params["a_im"], coef_bits)}
            g = self._neurons_from_terms(op, "cpx", mfrac, sfrac, params, out_shift=sfrac - mfrac)
        elif op.kind == "activation" and op.attrs["fn"] == "relu":
            frac = scale_frac(self.peak(name), msg_bits, o.headroom_bits)
            g = self._neurons_from_terms(op, "relu", frac, frac, {})
        elif op.kind == "activation" and op.attrs["fn"] in LUT_FUNCTIONS:
            g = self._lut_group(
                op,
                op.attrs["fn"],
                self._input_terms(op),
                slice(0, op.shape[0]),
                op.name,
                self.peak(op.inputs[0]),
                self.peak(name),
            )
        elif op.kind == "activation" and op.attrs["fn"] == "glu":
            g = self._glu_group(op)
        elif op.kind == "norm":
            g = self._norm_group(op)
        elif op.kind == "pool":
            sfrac, mfrac = self.state_fracs(name, state_bits, msg_bits, default_peak=self.peak(name))
            g = self._neurons_from_terms(
                op,
                "integrator",
                mfrac,
                sfrac,
                {},
                out_shift=sfrac - mfrac,
                decode=op.attrs["mode"] if op.attrs["mode"] == "mean" else "value",
            )
        elif op.kind in ("add", "linear"):
            frac = scale_frac(self.peak(name), msg_bits, o.headroom_bits)
            g = self._neurons_from_terms(op, "relay", frac, frac, {}, terms=self._terms(name))
        else:
            what = op.attrs.get("fn", op.kind)
            raise UnsupportedModelError(
                f"%{name} ({what}): no integer realisation; the fixed-point passes support ReLU, "
                "GELU, sigmoid, tanh, GLU, LayerNorm, residual adds, linears, S4D and pools. "
                "To keep the float network, compile with --stop-after fold-linear "
                f"(or --passes {FLOAT_PIPELINE})"
            )
        self.groups[name] = g
        return g

    def _neurons(self, name, kind, size, frac, dendrite_frac, inputs, params, group_name=None, **attrs) -> _Group:
        all_attrs = {
            "kind": kind,
            "size": int(size),
            "frac": int(frac),
            "msg_bits": self.bits(name, "message"),
            "state_bits": self.bits(name, "state"),
            "source": name,
        }
        if kind == "cpx":
            all_attrs["coef_bits"] = self.bits(name, "coef")
        all_attrs.update({k: v for k, v in attrs.items() if v not in (None, 0, "value")})
        base = group_name or (f"{name}.source" if kind == "source" else name)
        op = self.out.add(
            Op(self.out.fresh_name(base), "neurons", tuple(inputs), attrs=all_attrs, params=params, shape=(int(size),))
        )
        return _Group(op, frac, dendrite_frac)

    def _terms(self, name: str) -> list[tuple[Op | None, str]]:
        """What sums into the dendrite of the group for `name`: (linear or None, pre value)."""
        op = self.src.op(name)
        if op.kind == "linear":
            return [(op, op.inputs[0])]
        if op.kind == "add":
            terms = []
            for v in op.inputs:
                vop = self.src.op(v)
                if vop.kind == "linear":
                    terms.append((vop, vop.inputs[0]))
                elif vop.kind == "add" and len(self.src.consumers(v)) == 1:
                    terms.extend(self._terms(v))
                else:
                    terms.append((None, v))
            return terms
        return [(None, name)]

    def _input_terms(self, op: Op) -> list[tuple[Op | None, str]]:
        """The terms of op's input: a linear or a single-use add merges into op's dendrite."""
        v = op.inputs[0]
        vop = self.src.op(v)
        single_use_add = vop.kind == "add" and len(self.src.consumers(v)) == 1
        return self._terms(v) if (vop.kind == "linear" or single_use_add) else [(None, v)]

    def _synapses(
        self, terms, rows: slice, dendrite_frac: int, target: str, splittable: bool = True
    ) -> tuple[list[str], np.ndarray]:
        """Synapse groups for each term (one, or one per row-exponent class for a linear in `row_linears`),
        delivering rows `rows` of the terms' sum at `dendrite_frac`; returns their names and the summed
        float bias of those rows. `splittable` False: one group per term (a product's operands)."""
        synapses, bias = [], np.zeros(rows.stop - rows.start)
        for linear, pre in terms:
            pre_group = self.group(pre)
            if linear is None:
                W, b = np.eye(pre_group.op.shape[0])[rows], None
            else:
                W, b = linear.params["weight"].astype(np.float64)[rows], linear.params.get("bias")
            if b is not None:
                bias += np.asarray(b, np.float64)[rows]
            w_eff = W * 2.0 ** (dendrite_frac - pre_group.frac)
            weight_bits = self.bits(linear.name if linear is not None else target, "weight")
            src_name = linear.name if linear is not None else f"{pre}->{target}"
            parts = [quantize_weights(w_eff, weight_bits)]
            if linear is not None and splittable:
                by_row = split_by_row_exponent(w_eff, weight_bits)
                self.row_classes[src_name] = len(by_row)
                if src_name in self.row_linears:
                    parts = by_row
            for w, e in parts:
                syn = self.out.add(
                    Op(
                        self.out.fresh_name((linear.name if linear else target) + ".syn"),
                        "synapses",
                        (pre_group.op.name,),
                        attrs={"weight_bits": weight_bits, "weight_exp": int(e), "source": src_name},
                        params={"weight": w},
                        shape=(w.shape[0],),
                    )
                )
                synapses.append(syn.name)
        return synapses, bias

    def _neurons_from_terms(
        self, op, kind, frac, dendrite_frac, params, terms=None, rows=None, group_name=None, **attrs
    ) -> _Group:
        terms = self._input_terms(op) if terms is None else terms
        rows = slice(0, op.shape[0]) if rows is None else rows
        synapses, bias = self._synapses(terms, rows, dendrite_frac, group_name or op.name)
        if np.any(bias):
            params = dict(params, bias=np.round(bias * 2.0**dendrite_frac).astype(np.int64))
        return self._neurons(
            op.name, kind, rows.stop - rows.start, frac, dendrite_frac, synapses, params, group_name=group_name, **attrs
        )

    # -- activations and norms without a direct neuron ------------------------------
    def _lut_group(self, op, fn, terms, rows, group_name, in_peak, out_peak, out_frac=None) -> _Group:
        """A lut group computing fn of rows `rows` of the terms' sum, its table over +-in_peak."""
        msg_bits, o = self.bits(op.name, "message"), self.opts
        dendrite_frac = scale_frac(in_peak, msg_bits, o.headroom_bits)
        frac = scale_frac(out_peak, msg_bits, o.headroom_bits) if out_frac is None else out_frac
        lut_bits = min(o.lut_bits, msg_bits)
        shift, lo = msg_bits - lut_bits, -(1 << (lut_bits - 1))
        # bin i holds the dendritic inputs a with (a >> shift) - lo = i; evaluate fn at the bin's middle
        first = (np.arange(1 << lut_bits, dtype=np.float64) + lo) * 2.0**shift
        middle = (first + (2.0**shift - 1) / 2) * 2.0**-dendrite_frac
        lim = 1 << (msg_bits - 1)
        table = np.clip(np.round(activation(fn, middle) * 2.0**frac), -lim, lim - 1).astype(np.int64)
        return self._neurons_from_terms(
            op,
            "lut",
            frac,
            dendrite_frac,
            {"table": table},
            terms=terms,
            rows=rows,
            group_name=group_name,
            lut_shift=shift,
            lut_lo=lo,
        )

    def _glu_group(self, op: Op) -> _Group:
        """GLU x * sigmoid(g): a sigmoid lut gate over the g half, then a product group with the x half."""
        P, o = op.shape[0], self.opts
        msg_bits = self.bits(op.name, "message")
        terms = self._input_terms(op)
        if len(terms) > 1:  # a product's first operand is one synapse group: sum the terms in a relay first
            terms = [(None, op.inputs[0])]
        peaks = self.ranges.value(op.inputs[0])
        x_peak = float(np.max(peaks[:P])) if peaks is not None else 0.0
        g_peak = float(np.max(peaks[P:])) if peaks is not None else 0.0
        gate_frac = scale_frac(1.0, msg_bits, 0)  # sigmoid is in (0, 1)
        gate = self._lut_group(
            op, "sigmoid", terms, slice(P, 2 * P), f"{op.name}.gate", g_peak, 1.0, out_frac=gate_frac
        )
        x_frac = scale_frac(x_peak, msg_bits, o.headroom_bits)
        x_syn, bias = self._synapses(terms, slice(0, P), x_frac, op.name, splittable=False)
        gate_key = f"{op.name}.gate"
        self.groups[gate_key] = gate
        gate_syn, _ = self._synapses([(None, gate_key)], slice(0, P), gate_frac, op.name, splittable=False)
        frac = scale_frac(self.peak(op.name), msg_bits, o.headroom_bits)
        out_shift = x_frac + gate_frac - frac
        if out_shift < 0:  # a coarser output than calibration asks for; rshr shifts right only
            frac, out_shift = x_frac + gate_frac, 0
        params = {"bias": np.round(bias * 2.0**x_frac).astype(np.int64)} if np.any(bias) else {}
        return self._neurons(op.name, "product", P, frac, x_frac, x_syn + gate_syn, params, out_shift=out_shift)

    def _matrix_synapses(
        self, pre: str, W: np.ndarray, dendrite_frac: int, layer: str, target: str, residual: bool = False
    ) -> list[str]:
        """Synapse groups from the group of value `pre` delivering W @ pre at `dendrite_frac` into group
        `target`; `residual`: a second group carries what the first one's weights rounded off (twice the
        weight bits of precision, for weights no single exponent holds well, such as 1/H)."""
        pre_group = self.group(pre)
        w_eff = W * 2.0 ** (dendrite_frac - pre_group.frac)
        weight_bits = self.bits(layer, "weight")
        parts = [quantize_weights(w_eff, weight_bits)]
        rest = w_eff - parts[0][0] * 2.0 ** parts[0][1]
        if residual and np.any(np.abs(rest) > 0):
            parts.append(quantize_weights(rest, weight_bits))
        names = []
        for w, e in parts:
            syn = self.out.add(
                Op(
                    self.out.fresh_name(target + ".syn"),
                    "synapses",
                    (pre_group.op.name,),
                    attrs={"weight_bits": weight_bits, "weight_exp": int(e), "source": f"{pre}->{target}"},
                    params={"weight": w},
                    shape=(w.shape[0],),
                )
            )
            names.append(syn.name)
        return names

    def _part(
        self,
        op: Op,
        part: str,
        kind: str,
        size: int,
        frac: int,
        dendrite_frac: int,
        inputs,
        params=None,
        residual: tuple = (),
        **attrs,
    ) -> _Group:
        """A group `<op>.<part>` realising a piece of op: sums inputs [(value, float W [size, pre size])], each
        delivered at dendrite_frac or at its own (value, W, frac) (a product's second operand)."""
        key = f"{op.name}.{part}"
        syns = []
        for i, (pre, W, *own_frac) in enumerate(inputs):
            syns += self._matrix_synapses(
                pre, W, own_frac[0] if own_frac else dendrite_frac, op.name, key, residual=i in residual
            )
        g = self._neurons(op.name, kind, size, frac, dendrite_frac, syns, params or {}, group_name=key, **attrs)
        self.groups[key] = g
        return g

    def _norm_group(self, op: Op) -> _Group:
        """LayerNorm on neurons (docs/fixed_point.md, "LayerNorm on neurons"): sum, centred values, squares,
        1 / sqrt(var + eps) from a chain of tables, the normalised product, then the affine map (a relay named
        like the norm, so it is compared with the norm's float value)."""
        H, name = op.shape[0], op.name
        mb, hb = self.bits(name, "message"), self.opts.headroom_bits
        st = self.ranges.norms[name]
        x = op.inputs[0]
        # the channel sum (weights 1: exact) and the centred values x - sum / H (1/H in two synapse groups)
        sum_frac = scale_frac(H * st.mean, mb, hb)
        self._part(op, "sum", "relay", 1, sum_frac, sum_frac, [(x, np.ones((1, H)))])
        c_frac = scale_frac(st.centred, mb, hb)
        self._part(
            op,
            "centre",
            "relay",
            H,
            c_frac,
            c_frac,
            [(x, np.eye(H)), (f"{name}.sum", np.full((H, 1), -1.0 / H))],
            residual=(1,),
        )
        # squares: a product of the centred values with themselves
        sq_frac = scale_frac(st.centred**2, mb, 2 * hb)
        shift = max(2 * c_frac - sq_frac, 0)
        sq_frac = 2 * c_frac - shift
        self._part(
            op,
            "square",
            "product",
            H,
            sq_frac,
            c_frac,
            [(f"{name}.centre", np.eye(H)), (f"{name}.centre", np.eye(H))],
            out_shift=shift,
        )
        r_frac = self._norm_rsqrt(op, st, sq_frac, mb, hb)
        # normalised values: centred * rsqrt, one product per channel
        n_frac = scale_frac(st.normed, mb, hb)
        shift = max(c_frac + r_frac - n_frac, 0)
        n_frac = c_frac + r_frac - shift
        self._part(
            op,
            "normed",
            "product",
            H,
            n_frac,
            c_frac,
            [(f"{name}.centre", np.eye(H)), (f"{name}.rsqrt", np.ones((H, 1)), r_frac)],
            out_shift=shift,
        )
        return self._norm_affine(op, mb, hb)

    def _norm_rsqrt(self, op: Op, st: NormRanges, sq_frac: int, mb: int, hb: int) -> int:
        """The group `<norm>.rsqrt`: 1 / sqrt(var + eps) from tables over bins of the sum of the squares (at
        sq_frac), each finer than the one before, summed by a relay; returns its frac. `st`: the norm's
        calibrated ranges, `mb`, `hb`: its message and headroom bits."""
        H, o, name = op.shape[0], self.opts, op.name
        eps = float(op.attrs.get("eps", 1e-5))
        v_frac = min(sq_frac, scale_frac(H * st.var_max, 32, 2 * hb))
        tables, r_frac = rsqrt_tables(H, eps, v_frac, st, min(o.norm_lut_bits, mb - 2), mb, hb)
        keys = []
        for k, (lut_shift, table) in enumerate(tables):
            bins = [(f"{name}.square", np.full((1, H), -(2.0**-lut_shift)))]  # -ceil(sum / 2**shift)
            L = table.size - (1 if k == 0 else 2)
            if k == 0:  # bins above the top clip to entry 0 (counted: beyond the calibrated range)
                self._part(op, "rsqrt0", "lut", 1, r_frac, v_frac, bins, params={"table": table}, lut_lo=-L)
            else:  # relu(L + 1 - bin): 0 for every sum above the table's range, no clip
                clamp = self._part(
                    op,
                    f"clamp{k}",
                    "relu",
                    1,
                    v_frac - lut_shift,
                    v_frac,
                    bins,
                    params={"bias": np.array([L + 1], np.int64)},
                )
                self._part(
                    op,
                    f"rsqrt{k}",
                    "lut",
                    1,
                    r_frac,
                    clamp.frac,
                    [(f"{name}.clamp{k}", np.ones((1, 1)))],
                    params={"table": table},
                )
            keys.append((f"{name}.rsqrt{k}", np.ones((1, 1))))
        self._part(op, "rsqrt", "relay", 1, r_frac, r_frac, keys)
        return r_frac

    def _norm_affine(self, op: Op, mb: int, hb: int) -> _Group:
        """The norm's affine map of `<norm>.normed`: weight on the synapses, bias on the neurons, in a relay
        named like the norm (its value)."""
        H, name = op.shape[0], op.name
        frac = scale_frac(self.peak(name), mb, hb)
        syns = self._matrix_synapses(
            f"{name}.normed", np.diag(op.params["weight"].astype(np.float64)), frac, name, name, residual=True
        )
        bias = op.params["bias"].astype(np.float64)
        params = {"bias": np.round(bias * 2.0**frac).astype(np.int64)} if np.any(bias) else {}
        g = self._neurons(name, "relay", H, frac, frac, syns, params)
        return g

    # -- whole graph ------------------------------------------------------------
    def run(self) -> Graph:
        inp = self.src.inputs()[0]
        self.out.add(Op(inp.name, "input", attrs=dict(inp.attrs), shape=inp.shape))
        for out in self.src.outputs():
            g = self.group(out.inputs[0])
            self.out.add(Op(out.name, "output", (g.op.name,), shape=g.op.shape))
        set_depths(self.out)
        return self.out


def _coef(a: np.ndarray, bits: int) -> np.ndarray:
    lim = 1 << (bits - 1)
    return np.clip(np.round(a.astype(np.float64) * lim), -lim, lim - 1).astype(np.int64)


def mode_scale_factors(graph: Graph, name: str) -> np.ndarray | None:
    """Per compartment of cpx op `name`, the factor move_mode_scale_to_input scales its state by (|readout
    column| / largest, re and im alike), or None when the layer does not allow the move."""
    cpx = graph.op(name)
    b = graph.op(cpx.inputs[0])
    readers = graph.consumers(name)
    if (
        b.kind != "linear"
        or len(graph.consumers(b.name)) != 1
        or not readers
        or any(r.kind != "linear" for r in readers)
    ):
        return None
    sq = sum(r.params["weight"].astype(np.float64) ** 2 for r in readers).sum(axis=0)  # per compartment
    mag = np.sqrt(sq[0::2] + sq[1::2])  # per mode
    if not np.any(mag > 0):
        return None
    return np.where(mag > 0, mag / mag.max(), 1.0).repeat(2)


def move_mode_scale_to_input(graph: Graph, name: str) -> Graph | None:
    """A copy of `graph` in which cpx group `name` carries each mode's readout scale in its input instead.

    A real positive factor r per mode commutes with the complex recurrence: scaling the mode's rows of the
    input linear (and bias) by r and its columns of every reading linear by 1/r changes no output. With r =
    |readout column| / largest |readout column|, every mode's readout weights have the same magnitude (none
    is left a few levels by a shared exponent), the input rows take the spread (per-row exponents make that
    exact) and small modes' states shrink (state bits are plenty). None when the layer is not a linear into
    the cpx group (read by nothing else) with only linears reading it.
    """
    r = mode_scale_factors(graph, name)
    if r is None:
        return None
    b, readers = graph.op(graph.op(name).inputs[0]), graph.consumers(name)
    out = graph.copy()
    b = out.op(b.name)
    b.params["weight"] = (b.params["weight"].astype(np.float64) * r[:, None]).astype(b.params["weight"].dtype)
    if "bias" in b.params:
        b.params["bias"] = (b.params["bias"].astype(np.float64) * r).astype(b.params["bias"].dtype)
    for reader in readers:
        w = out.op(reader.name).params["weight"]
        out.op(reader.name).params["weight"] = (w.astype(np.float64) / r[None, :]).astype(w.dtype)
    return out


def rsqrt_tables(
    H: int, eps: float, v_frac: int, st: NormRanges, lut_bits: int, msg_bits: int, headroom_bits: int
) -> tuple[list[tuple[int, np.ndarray]], int]:
    """The tables of a LayerNorm's 1 / sqrt(var + eps): [(shift, table)], and the frac of their messages.

    Input: the sum of squares S = H * var * 2**v_frac (real; the synapses see its integer terms).
    One table over the calibrated range would be coarse for small variances, where 1/sqrt changes
    fastest, so table k cuts S into bins of 2**shift_k, bin c holding (c - 1, c] * 2**shift_k (c =
    ceil(S / 2**shift_k), which the synapses deliver as floor(-S / 2**shift_k)), with L = 2**lut_bits
    bins up to B_k = L * 2**shift_k; B_{k+1} = B_k / 2**span, span = lut_bits - 8: each table is used on
    (B_{k+1}, B_k], where a bin is at most 1/256 of S (a relative error of 1/sqrt below 0.1%). Entry
    for bin c of table k: R(max(mid, B_{k+1})) - R(B_k), for table 0 without the R(B_k), mid the bin's
    middle (0 for c = 0); R(a) = round(2**frac / sqrt(a / (H 2**v_frac) + eps)). Table 0 has L + 1
    entries, index L - c (lut_lo = -L): S beyond B_0 clips to entry 0 and is counted. Table k >= 1
    reads relu(L + 1 - c), index L + 1 - c, and holds 0 at index 0: every S above its range. The integer
    sum of the tables telescopes exactly to R(max(mid, B_K)) of the finest table's bin holding S. B_0
    is the calibrated largest variance with headroom; tables are added down to a quarter of the smallest
    calibrated variance (or eps / 16), or until bins are a unit (then B_K = 0, no clamp).
    """
    L, span = 1 << lut_bits, max(lut_bits - 8, 1)
    unit = H * 2.0**v_frac  # S per unit of variance
    top = st.var_max * 4.0**headroom_bits * unit
    floor = max(st.var_min / 4, eps / 16) * unit
    shifts = [max(math.ceil(math.log2(top / L)), 0) if top > 0 else 0]
    while shifts[-1] > 0 and L * 2.0 ** (shifts[-1] - span) > floor:
        shifts.append(max(shifts[-1] - span, 0))
    breaks = [L * 2.0**s for s in shifts]
    breaks.append(0.0 if shifts[-1] == 0 else breaks[-1] / 2**span)

    def f(a):
        return 1.0 / np.sqrt(np.asarray(a, np.float64) / unit + eps)

    frac = scale_frac(float(f(breaks[-1])), msg_bits, 0)

    def R(a):
        return np.round(f(a) * 2.0**frac).astype(np.int64)

    tables = []
    for k, sh in enumerate(shifts):
        c = np.arange(L, -1, -1, dtype=np.float64)  # bins L .. 0, in index order
        mid = np.maximum(c - 0.5, 0) * 2.0**sh
        if k == 0:
            table = R(np.maximum(mid, breaks[1]))
        else:
            table = np.append(0, R(np.maximum(mid, breaks[k + 1])) - R(breaks[k]))
        tables.append((sh, table))
    return tables, frac


def set_depths(graph: Graph) -> None:
    """Depth of each group = longest synapse path from the source; delays make all paths equal."""
    depth: dict[str, int] = {}
    for op in graph.ops():
        if op.kind != "neurons":
            continue
        if op.attrs["kind"] == "source":
            depth[op.name] = 0
        else:
            depth[op.name] = max(depth[graph.op(s).inputs[0]] + 1 for s in op.inputs)
        op.attrs["depth"] = depth[op.name]
    for op in graph.ops_of_kind("synapses"):
        post = [c for c in graph.consumers(op.name)]
        if len(post) != 1:
            raise PassError(f"%{op.name}: a synapse group must feed exactly one neuron group")
        op.attrs["delay"] = depth[post[0].name] - depth[op.inputs[0]]


@dataclass(frozen=True)
class AssignBitwidths(Pass):
    name: ClassVar[str] = "assign-bitwidths"
    weight_bits: int = WIDTHS["weight_bits"].default
    """Synapse weight precision (Lava Dense num_weight_bits; the pass quantizes to 3..8, see ssmc/widths.py)."""
    coef_bits: int = WIDTHS["coef_bits"].default
    """Complex-pair coefficient precision."""
    state_bits: int = WIDTHS["state_bits"].default
    """Neuron state precision."""
    message_bits: int = WIDTHS["message_bits"].default
    """Graded message precision."""
    headroom_bits: int = WIDTHS["headroom_bits"].default
    """Bits of margin above the calibrated peak."""
    lut_bits: int = WIDTHS["lut_bits"].default
    """Table entries 2**lut-bits for GELU, sigmoid and tanh (and GLU's gate)."""
    norm_lut_bits: int = WIDTHS["norm_lut_bits"].default
    """Bins 2**norm-lut-bits per table of a LayerNorm's 1/sqrt(var + eps) (9..11; each table covers a factor
    2**(norm-lut-bits - 8) of variances at 1/256 relative resolution, so more bits mean fewer tables)."""
    layer_bits: str = ""
    """Per-layer widths, e.g. "s4d0:weight=6/coef=12;linear1:weight=4" (names as `ssmc inspect` shows them)."""
    weight_exp: str = "auto"
    """Weight exponents: "group" (one per linear), "row" (one per output row: the linear split into one synapse
    group per exponent class) or "auto" (row only for the linears where it lowers the calibration error)."""
    calibration: object = data_field("calibration sequences [n, tokens, features]")

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        self.check_widths()
        if graph.ops_of_kind("s4d"):
            raise PassError("assign-bitwidths needs fused layers: run fuse-complex-pairs first")
        x = self.calibration
        if x is None:
            n, t = RANDOM_CALIBRATION
            x = np.random.default_rng(0).normal(size=(n, t, graph.inputs()[0].shape[0]))
            log.info(
                "no calibration data: ranges estimated from random N(0, 1) tokens; pass --calibrate "
                "for ranges of real inputs"
            )
        if self.weight_exp not in WEIGHT_EXP_MODES:
            raise PassError(
                f"assign-bitwidths: weight-exp must be one of {', '.join(WEIGHT_EXP_MODES)}, got {self.weight_exp!r}"
            )
        overrides = self.parse_layer_bits(graph)
        ranges = measure_ranges(graph, x)

        def lower(g: Graph, r: Ranges, rows) -> _Lowering:
            return _Lowering(g, r, self, overrides=overrides, row_linears=frozenset(rows))

        first = lower(graph, ranges, ())
        out = first.run()
        split = [name for name, k in first.row_classes.items() if k > 1]  # linears a split would change
        if self.weight_exp == "row":
            out = lower(graph, ranges, split).run()
        elif self.weight_exp == "auto":
            out = self.choose_auto(graph, x, ranges, first, split, lower)
        for norm in graph.ops_of_kind("norm"):
            st, tables = (
                ranges.norms[norm.name],
                [
                    g
                    for g in out.ops_of_kind("neurons")
                    if g.name.startswith(f"{norm.name}.rsqrt") and g.attrs["kind"] == "lut"
                ],
            )
            log.info(
                f"%{norm.name} (layernorm) on neurons: sum, centre, square, {len(tables)} table(s) of "
                f"{tables[0].params['table'].size - 1} bins for 1/sqrt(var + eps) (calibrated variances "
                f"{st.var_min:.3g}..{st.var_max:.3g}), clamps, rsqrt, normed, affine (8 steps)"
            )
        n_extra = len(out.ops_of_kind("synapses")) - len(first.out.ops_of_kind("synapses"))
        if self.weight_exp != "group":
            log.info(f"weight-exp {self.weight_exp}: {n_extra} synapse groups added by per-row exponents")
        n_groups = len(out.ops_of_kind("neurons"))
        n_syn = sum(int(np.count_nonzero(op.params["weight"])) for op in out.ops_of_kind("synapses"))
        log.info(
            f"{n_groups} neuron groups, {len(out.ops_of_kind('synapses'))} synapse groups "
            f"({n_syn} non-zero synapses); weights {self.weight_bits} b, coefficients {self.coef_bits} b, "
            f"state {self.state_bits} b, messages {self.message_bits} b, calibrated on {ranges.sequences} "
            "sequences"
        )
        return out, True

    def choose_auto(self, graph: Graph, x, ranges: Ranges, first: _Lowering, split: list[str], lower) -> Graph:
        """weight-exp auto: per-row exponents where they pay (choose_row_linears), then for each cpx layer in
        turn its per-mode scale moved from the readout to the input linear (move_mode_scale_to_input) where
        that lowers the calibration error by AUTO_GAIN. Returns the lowered graph of the choices."""
        xs = check_calibration(x, graph.inputs()[0].shape[0]).x[:AUTO_SEQUENCES]
        out_name = graph.outputs()[0].name
        # the last token's output is what every readout classifies from (ssmc run predicts from it);
        # every candidate computes the same float function
        ref = run_float(graph, xs)[out_name][:, -1]
        scale = float(np.sqrt(np.mean(ref**2))) or 1.0

        def error(g: Graph) -> float:  # rms(fixed - float) / rms(float) of the last token's output
            try:
                y = run_numpy(g, xs).outputs[out_name][:, -1]
            except IRError:  # e.g. an exponent beyond the shifts the IR holds: not a candidate
                return math.inf
            return float(np.sqrt(np.mean((y - ref) ** 2))) / scale

        one = error(first.out)
        if math.isinf(one):  # the pipeline's verifier reports it after the pass, as for group
            return first.out
        rows, current = self.choose_row_linears(error, one, split, lambda r: lower(graph, ranges, r).run())
        best, moved_scale = (graph, ranges, rows), {}
        for cpx in graph.ops_of_kind("cpx"):
            moved = move_mode_scale_to_input(best[0], cpx.name)
            if moved is None:
                continue
            moved_ranges = measure_ranges(moved, x)
            probe = lower(moved, moved_ranges, ())
            probe.run()
            own = {cpx.inputs[0]} | {c.name for c in graph.consumers(cpx.name)}
            moved_rows = [n for n, k in probe.row_classes.items() if n in best[2] or (n in own and k > 1)]
            err = error(lower(moved, moved_ranges, moved_rows).run())
            keep = err <= current * (1 - AUTO_GAIN)
            log.info(
                f"%{cpx.name}: calibration error {current:.3g} with per-mode scale in the readout, {err:.3g} "
                f"with it moved to the input (per-row exponents there) -> {'input' if keep else 'readout'}"
            )
            if keep:
                best, current = (moved, moved_ranges, moved_rows), err
                moved_scale[cpx.name] = mode_scale_factors(graph, cpx.name)
        out = lower(*best).run()
        for group in out.ops_of_kind("neurons"):  # say how each moved state differs from the model's
            if group.attrs.get("kind") == "cpx" and group.attrs.get("source") in moved_scale:
                group.params["state_scale"] = moved_scale[group.attrs["source"]]
        return out

    def choose_row_linears(self, error, one: float, split: list[str], lowered) -> tuple[list[str], float]:
        """The linears (of `split`) that keep per-row exponents, and the calibration error then: none if
        splitting them all does not lower the error by AUTO_GAIN; else all but those whose return to one
        exponent keeps the error within AUTO_GAIN of the all-split error (tried one at a time, in network
        order). `one`: the error with one exponent per linear. Logs every candidate."""
        if not split:
            return [], one
        per_row = error(lowered(split))
        if per_row > one * (1 - AUTO_GAIN):
            log.info(
                f"weight-exp auto: calibration error {one:.3g} with one exponent per linear, {per_row:.3g} "
                f"with per-row exponents everywhere -> one exponent"
            )
            return [], one
        log.info(
            f"weight-exp auto: calibration error {one:.3g} with one exponent per linear, {per_row:.3g} with "
            "per-row exponents everywhere; trying one exponent per linear in turn"
        )
        rows, current = list(split), per_row
        for name in split:
            err = error(lowered([r for r in rows if r != name]))
            keep = err > per_row * (1 + AUTO_GAIN)
            log.info(
                f"%{name}: calibration error {err:.3g} with one exponent -> {'per-row' if keep else 'one exponent'}"
            )
            if not keep:
                rows.remove(name)
                current = err
        return rows, current

    def check_widths(self) -> None:
        for key, (lo, hi) in WIDTH_LIMITS.items():
            _check_width(key, getattr(self, key), lo, hi)

    def parse_layer_bits(self, graph: Graph) -> dict[str, dict[str, int]]:
        """{layer: {key: bits}} from `layer_bits`, each layer a model op (or fused op prefix) of `graph`."""
        names = [op.name for op in graph.ops()]
        out: dict[str, dict[str, int]] = {}
        for item in filter(None, (part.strip() for part in self.layer_bits.split(";"))):
            layer, _, spec = item.partition(":")
            if not any(n == layer or n.startswith(layer + ".") for n in names):
                raise PassError(
                    f"assign-bitwidths: layer-bits names {layer!r}, which is not in the network "
                    f"(layers: {', '.join(n for n in names if '.' not in n)})"
                )
            for pair in filter(None, spec.split("/")):
                key, _, value = pair.partition("=")
                if key not in WIDTH_KEYS or not value.strip().lstrip("-").isdigit():
                    raise PassError(
                        f"assign-bitwidths: layer-bits {pair!r} for {layer}: write KEY=BITS with KEY one "
                        f"of {', '.join(WIDTH_KEYS)}"
                    )
                lo, hi = WIDTH_LIMITS[WIDTH_KEYS[key]]
                _check_width(f"{layer} {key}_bits", int(value), lo, hi)
                out.setdefault(layer, {})[key] = int(value)
        return out


def _check_width(key: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise PassError(f"{key.replace('_', '-')} = {value} is outside what the target supports ({lo}..{hi})")
