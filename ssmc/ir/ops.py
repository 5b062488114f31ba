"""Op schemas: what each op kind accepts, and the shape of its result.

A schema declares the op's attributes (type, default, allowed values, doc),
its tensors (dtype and shape in terms of the op), its arity and a shape rule.
The verifier checks every op against its schema and rejects unknown
attributes and tensors rather than ignoring them.

Model-level semantics (per token t, vectorised over a batch):

- ``input``      the token x_t, shape [size].
- ``linear``     y = W x + b.  W f32[out,in], optional b f32[out].
- ``s4d``        diagonal complex SSM on H channels (S4D, S5, LRU), one op for every family:
                 mixing "channel" (S4D, the default): M complex modes per channel,
                   x_t = A_bar * x_{t-1} + B_bar * u_t   (complex, per channel and mode; x_{-1} = 0)
                   y_t = 2 * Re(sum_m C[h,m] x_t[h,m]) + D[h] u_t[h]
                   i.e. the block-structured case of "dense" with P = H*M, mode p = h*M + m;
                 mixing "dense" (S5, LRU): P complex modes shared by all channels,
                   x_t = A_bar * x_{t-1} + B_bar @ u_t   (A_bar [P], B_bar [P, H])
                   y_t = 2 * Re(C @ x_t) + D * u_t       (C [H, P], D [H]);
                 form "discrete" stores A_bar, B_bar; form "continuous" stores
                 log_dt, A, B and is discretized by zero-order hold:
                 A_bar = exp(dt A), B_bar = (A_bar - 1) / A * B, dt = exp(log_dt)
                 (dt per channel for "channel", per mode for "dense").
- ``activation`` elementwise fn; ``glu`` halves the last axis: a * sigmoid(b).
- ``add``        elementwise sum of two values of one shape (residuals).
- ``norm``       layernorm over the channel axis: (x - mean) / sqrt(var + eps) * weight + bias.
- ``pool``       running reduction over time: ``sum`` gives sum_{s<=t} x_s, ``mean`` divides by t+1.
- ``output``     marks a model output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ssmc.errors import IRError
from ssmc.ir.graph import Op
from ssmc.widths import IR_GROUP_BITS, IR_WEIGHT_BITS

REQUIRED = object()
VARIADIC = -1

# dtype names used in the IR, and the numpy dtype each stands for
DTYPES = {
    "f32": "float32",
    "f64": "float64",
    "c64": "complex64",
    "c128": "complex128",
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
}

ATTR_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "ints": tuple}


@dataclass(frozen=True)
class AttrSpec:
    name: str
    type: str  # one of ATTR_TYPES
    default: Any = REQUIRED
    choices: tuple = ()
    doc: str = ""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    dtype: str  # one of DTYPES
    shape: Callable[[Op, list[tuple[int, ...]]], tuple[int, ...]]
    optional: bool = False
    doc: str = ""
    when: Callable[[Op], bool] = lambda op: True  # noqa: E731 - present only under this condition


@dataclass(frozen=True)
class OpSchema:
    kind: str
    doc: str
    n_inputs: int  # VARIADIC: any number >= 1
    infer_shape: Callable[[Op, list[tuple[int, ...]]], tuple[int, ...]]
    attrs: tuple[AttrSpec, ...] = ()
    params: tuple[ParamSpec, ...] = ()
    stateful: bool = False
    extra_check: Callable[[Op, list[tuple[int, ...]]], None] | None = field(default=None)

    def attr(self, name: str) -> AttrSpec | None:
        return next((a for a in self.attrs if a.name == name), None)

    def active_params(self, op: Op) -> tuple[ParamSpec, ...]:
        return tuple(p for p in self.params if p.when(op))


_SCHEMAS: dict[str, OpSchema] = {}


def register_op(schema: OpSchema) -> OpSchema:
    """Make an op kind known to the verifier and the text parser."""
    if schema.kind in _SCHEMAS:
        raise IRError(f"op kind {schema.kind!r} is already registered")
    _SCHEMAS[schema.kind] = schema
    return schema


def schema(kind: str) -> OpSchema:
    try:
        return _SCHEMAS[kind]
    except KeyError:
        raise IRError(f"unknown op kind {kind!r}; known: {', '.join(sorted(_SCHEMAS))}") from None


def known_kinds() -> list[str]:
    return sorted(_SCHEMAS)


def with_defaults(op: Op) -> dict[str, Any]:
    """The op's attributes with schema defaults filled in."""
    full = {a.name: a.default for a in schema(op.kind).attrs if a.default is not REQUIRED}
    full.update(op.attrs)
    return full


# -- shape helpers -----------------------------------------------------------
def _same(op: Op, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    return ins[0]


def _channels(ins: list[tuple[int, ...]]) -> int:
    if len(ins[0]) != 1:
        raise IRError(f"expects a vector per token, got shape {list(ins[0])}")
    return ins[0][0]


def _modes(op: Op) -> int:
    return int(op.attrs.get("modes", 0))


# -- model-level ops ---------------------------------------------------------
register_op(
    OpSchema(
        kind="input",
        doc="The model's token input.",
        n_inputs=0,
        attrs=(AttrSpec("size", "int", doc="features per token"),),
        infer_shape=lambda op, ins: (int(op.attrs["size"]),),
    )
)

register_op(
    OpSchema(
        kind="output",
        doc="A model output.",
        n_inputs=1,
        infer_shape=_same,
    )
)

register_op(
    OpSchema(
        kind="linear",
        doc="y = W x + b",
        n_inputs=1,
        params=(
            ParamSpec(
                "weight", "f32", lambda op, ins: (op.params["weight"].shape[0], _channels(ins)), doc="W [out, in]"
            ),
            ParamSpec("bias", "f32", lambda op, ins: (op.params["weight"].shape[0],), optional=True, doc="b [out]"),
        ),
        infer_shape=lambda op, ins: (op.params["weight"].shape[0],),
    )
)


def _dense(op: Op) -> bool:
    return op.attrs.get("mixing", "channel") == "dense"


def _hm(op: Op, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    return (_channels(ins), _modes(op))


def _h(op: Op, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    return (_channels(ins),)


def _poles(op: Op, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    return (_modes(op),) if _dense(op) else _hm(op, ins)


def _input_map(op: Op, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    return (_modes(op), _channels(ins)) if _dense(op) else _hm(op, ins)


def _step_sizes(op: Op, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    return (_modes(op),) if _dense(op) else _h(op, ins)


def _is_cont(op: Op) -> bool:
    return op.attrs.get("form") == "continuous"


def _is_disc(op: Op) -> bool:
    return op.attrs.get("form") == "discrete"


register_op(
    OpSchema(
        kind="s4d",
        doc="Diagonal complex state-space layer (S4D; S5 and LRU with mixing=dense), run as a recurrence token by "
        "token.",
        n_inputs=1,
        stateful=True,
        infer_shape=_h,
        attrs=(
            AttrSpec(
                "form",
                "str",
                choices=("continuous", "discrete"),
                doc="continuous (log_dt, A, B) or discrete (A_bar, B_bar) parameters",
            ),
            AttrSpec("modes", "int", doc="complex modes per channel (M = N/2), or in all (P) with mixing=dense"),
            AttrSpec(
                "mixing",
                "str",
                default="channel",
                choices=("channel", "dense"),
                doc="channel: each mode reads and drives one channel (S4D); dense: P modes shared by all "
                "channels, B [P, H] and C [H, P] (S5, LRU)",
            ),
        ),
        params=(
            ParamSpec("log_dt", "f32", _step_sizes, when=_is_cont, doc="log step size per channel (dense: per mode)"),
            ParamSpec("A", "c64", _poles, when=_is_cont, doc="continuous poles, Re(A) < 0"),
            ParamSpec("B", "c64", _input_map, when=_is_cont, doc="continuous input coefficients"),
            ParamSpec("A_bar", "c64", _poles, when=_is_disc, doc="discrete poles, |A_bar| < 1"),
            ParamSpec("B_bar", "c64", _input_map, when=_is_disc, doc="discrete input coefficients"),
            ParamSpec(
                "C",
                "c64",
                lambda op, ins: (_channels(ins), _modes(op)),
                doc="output coefficients [H, M] or [H, P] (real part read out, times 2)",
            ),
            ParamSpec("D", "f32", _h, doc="skip connection per channel"),
        ),
    )
)

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "sigmoid", "tanh", "glu")


def _activation_shape(op: Op, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    if op.attrs.get("fn") == "glu":
        c = _channels(ins)
        if c % 2:
            raise IRError(f"glu needs an even number of channels, got {c}")
        return (c // 2,)
    return ins[0]


register_op(
    OpSchema(
        kind="activation",
        doc="Elementwise nonlinearity (glu halves the channels).",
        n_inputs=1,
        attrs=(AttrSpec("fn", "str", choices=ACTIVATIONS, doc="which function"),),
        infer_shape=_activation_shape,
    )
)


def _add_check(op: Op, ins: list[tuple[int, ...]]) -> None:
    if ins[0] != ins[1]:
        raise IRError(f"add of different shapes {list(ins[0])} and {list(ins[1])}")


register_op(
    OpSchema(
        kind="add",
        doc="Elementwise sum (residual connection).",
        n_inputs=2,
        infer_shape=_same,
        extra_check=_add_check,
    )
)

register_op(
    OpSchema(
        kind="norm",
        doc="Normalisation over channels.",
        n_inputs=1,
        infer_shape=_same,
        attrs=(
            AttrSpec("kind", "str", default="layernorm", choices=("layernorm",), doc="which norm"),
            AttrSpec("eps", "float", default=1e-5, doc="added to the variance"),
        ),
        params=(
            ParamSpec("weight", "f32", _h, doc="scale per channel"),
            ParamSpec("bias", "f32", _h, doc="shift per channel"),
        ),
    )
)

register_op(
    OpSchema(
        kind="pool",
        doc="Running reduction over time (readout).",
        n_inputs=1,
        infer_shape=_same,
        stateful=True,
        attrs=(AttrSpec("mode", "str", choices=("sum", "mean"), doc="running sum or running mean"),),
    )
)


# -- float complex-pair neurons (between fuse-complex-pairs and quantization) -----
def _cpx_shape(op: Op, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    n = _channels(ins)
    if n != 2 * _modes(op):
        raise IRError(f"takes 2*modes = {2 * _modes(op)} interleaved (re, im) inputs, got {n}")
    return (n,)


register_op(
    OpSchema(
        kind="cpx",
        doc="Complex-pair neurons in float: x' = a x + in per mode, (re, im) interleaved in and out.",
        n_inputs=1,
        stateful=True,
        infer_shape=_cpx_shape,
        attrs=(AttrSpec("modes", "int", doc="number of complex modes (pairs of compartments)"),),
        params=(
            ParamSpec("a_re", "f32", lambda op, ins: (_modes(op),), doc="Re(A_bar) per mode"),
            ParamSpec("a_im", "f32", lambda op, ins: (_modes(op),), doc="Im(A_bar) per mode"),
        ),
    )
)

# -- neuro level: integer neuron and synapse groups (docs/fixed_point.md) ---------------
NEURON_KINDS = ("source", "relay", "relu", "cpx", "integrator", "lut", "product")
LUT_MAX_ENTRIES = 4096


SHIFT_MAX = 63  # largest meaningful shift of a 64-bit value
FRAC_MAX = 960  # message scales 2^-960..2^960 stay inside float64's range when decoded


def _size(op: Op, ins=None) -> tuple[int, ...]:
    return (int(op.attrs["size"]),)


def _neurons_check(op: Op, ins: list[tuple[int, ...]]) -> None:
    kind, size = op.attrs["kind"], int(op.attrs["size"])
    if kind == "source":
        if len(ins) != 1 or ins[0] != (size,):
            raise IRError(f"a source group reads the model input of size {size}, got inputs {ins}")
    elif any(s != (size,) for s in ins):
        raise IRError(f"every incoming synapse group must deliver {size} values, got {[list(s) for s in ins]}")
    if kind == "cpx" and size % 2:
        raise IRError(f"a cpx group has an even number of compartments, got {size}")
    if kind == "product":
        if len(ins) != 2:
            raise IRError(f"a product group multiplies exactly two incoming synapse groups, got {len(ins)}")
    if int(op.attrs.get("delta", 0)) < 0:
        raise IRError(f"delta = {op.attrs['delta']}: the sigma-delta threshold is >= 1, or 0 for dense messages")
    # Shifts beyond the 64-bit datapath mean nothing (every value becomes 0 or -1) and frac beyond
    # float64's exponent range cannot be decoded; bounding them keeps every engine's arithmetic finite.
    for key, lo, hi in (("out_shift", 0, SHIFT_MAX), ("lut_shift", 0, SHIFT_MAX), ("frac", -FRAC_MAX, FRAC_MAX)):
        v = int(op.attrs.get(key, 0))
        if not lo <= v <= hi:
            raise IRError(f"{key} = {v} is outside {lo}..{hi}")
    for key in ("msg_bits", "state_bits", "coef_bits"):
        b, (lo, hi) = int(op.attrs.get(key, 24)), IR_GROUP_BITS
        if not lo <= b <= hi:
            raise IRError(f"{key} = {b} is outside {lo}..{hi}")
    if kind == "lut":
        table = op.params["table"]
        if not 1 <= table.size <= LUT_MAX_ENTRIES:
            raise IRError(f"a lut table has 1..{LUT_MAX_ENTRIES} entries, got {table.size}")
        mb = int(op.attrs.get("msg_bits", 24))
        if table.min() < -(1 << (mb - 1)) or table.max() >= 1 << (mb - 1):
            raise IRError(f"lut table values outside the {mb}-bit message range")
        if int(op.attrs.get("lut_shift", 0)) < 0:
            raise IRError(f"lut_shift = {op.attrs['lut_shift']} is negative")
    if kind == "cpx":
        # c_re x_im + c_im x_re reaches 2^(coef_bits + state_bits - 1): past int64 (where the engines wrap
        # and the contract's exact integers do not) only when both widths are 32
        cb, sb = int(op.attrs.get("coef_bits", 16)), int(op.attrs.get("state_bits", 24))
        if cb + sb > 63:
            raise IRError(
                f"coef_bits {cb} + state_bits {sb} > 63: a complex pair's products and their sum must fit "
                "64-bit integers; lower either width by one"
            )
        lim = 1 << (cb - 1)
        for key in ("c_re", "c_im"):
            c = op.params[key]
            if c.min() < -lim or c.max() >= lim:
                raise IRError(f"{key} outside the {op.attrs.get('coef_bits', 16)}-bit range")


register_op(
    OpSchema(
        kind="neurons",
        doc="A group of fixed-point neurons; sums its incoming synapse groups (docs/fixed_point.md).",
        n_inputs=VARIADIC,
        stateful=True,
        infer_shape=_size,
        extra_check=_neurons_check,
        attrs=(
            AttrSpec("kind", "str", choices=NEURON_KINDS, doc="neuron model"),
            AttrSpec("size", "int", doc="compartments (2 per complex mode)"),
            AttrSpec("frac", "int", doc="message scale: a message m stands for m / 2**frac"),
            AttrSpec("msg_bits", "int", default=24, doc="graded message width"),
            AttrSpec("state_bits", "int", default=24, doc="state width (cpx, integrator)"),
            AttrSpec("coef_bits", "int", default=16, doc="coefficient width (cpx)"),
            AttrSpec("out_shift", "int", default=0, doc="state -> message right shift (cpx, integrator, product)"),
            AttrSpec("delta", "int", default=0, doc="sigma-delta threshold: send changes of at least this; 0 = dense"),
            AttrSpec("lut_shift", "int", default=0, doc="lut: table index = (input >> lut_shift) - lut_lo"),
            AttrSpec("lut_lo", "int", default=0, doc="lut: input bin of the first table entry"),
            AttrSpec("depth", "int", default=0, doc="steps after the source at which token 0 arrives"),
            AttrSpec("source", "str", default="", doc="the model-level op this group realises"),
            AttrSpec(
                "decode",
                "str",
                default="value",
                choices=("value", "mean"),
                doc="how the host reads an output: the value, or the value / (token + 1)",
            ),
            AttrSpec(
                "msg_rate",
                "float",
                default=-1.0,
                doc="messages per neuron per step measured on calibration data (-1: not measured)",
            ),
            AttrSpec(
                "placement",
                "ints",
                default=(),
                doc="(chip, core, start, stop) quadruples: neurons [start, stop) on that core (ssmc/ir/placement.py)",
            ),
        ),
        params=(
            ParamSpec("bias", "i64", _size, optional=True, doc="added to the dendritic input every step"),
            ParamSpec(
                "c_re",
                "i64",
                lambda op, ins: (int(op.attrs["size"]) // 2,),
                when=lambda op: op.attrs.get("kind") == "cpx",
                doc="Re(A_bar) * 2**(coef_bits-1)",
            ),
            ParamSpec(
                "c_im",
                "i64",
                lambda op, ins: (int(op.attrs["size"]) // 2,),
                when=lambda op: op.attrs.get("kind") == "cpx",
                doc="Im(A_bar) * 2**(coef_bits-1)",
            ),
            ParamSpec(
                "table",
                "i64",
                lambda op, ins: (int(op.params["table"].size),) if "table" in op.params else (1,),
                when=lambda op: op.attrs.get("kind") == "lut",
                doc="lut: message of each input bin",
            ),
            ParamSpec(
                "state_scale",
                "f64",
                _size,
                optional=True,
                when=lambda op: op.attrs.get("kind") == "cpx",
                doc="cpx: per compartment, the factor by which the passes scaled this state relative to the "
                "model's (assign-bitwidths moving a mode's scale into its input); no engine reads it, the "
                "trace divides by it to compare with the float model",
            ),
        ),
    )
)


def _synapse_check(op: Op, ins: list[tuple[int, ...]]) -> None:
    bits, (lo, hi) = int(op.attrs["weight_bits"]), IR_WEIGHT_BITS
    if not lo <= bits <= hi:
        raise IRError(f"weight_bits = {bits} is outside {lo}..{hi}")
    if int(op.attrs["delay"]) < 1:
        raise IRError(f"delay = {op.attrs['delay']}: synapses deliver at least one step later")
    if abs(int(op.attrs.get("weight_exp", 0))) > SHIFT_MAX:
        raise IRError(f"weight_exp = {op.attrs['weight_exp']} is outside -{SHIFT_MAX}..{SHIFT_MAX}")
    w = op.params["weight"]
    if w.size and (w.min() < -128 or w.max() > 127):
        raise IRError("weights outside the 8-bit range")


register_op(
    OpSchema(
        kind="synapses",
        doc="Dense synapses: out = sat((W @ m_pre[t - delay]) << weight_exp) (Lava Dense convention).",
        n_inputs=1,
        extra_check=_synapse_check,
        infer_shape=lambda op, ins: (op.params["weight"].shape[0],),
        attrs=(
            AttrSpec("weight_bits", "int", default=8, doc="weight precision (Lava num_weight_bits)"),
            AttrSpec("weight_exp", "int", default=0, doc="shared exponent: acc << weight_exp"),
            AttrSpec("delay", "int", default=1, doc="steps from pre message to post input"),
            AttrSpec("source", "str", default="", doc="the model-level op this group realises"),
        ),
        params=(
            ParamSpec(
                "weight", "i32", lambda op, ins: (op.params["weight"].shape[0], _channels(ins)), doc="W [post, pre]"
            ),
        ),
    )
)
