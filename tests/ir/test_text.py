"""The IR text form: print -> parse -> print is the identity, tensors come back bit for bit,
and text that does not parse is refused with the line it failed on.
"""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ssmc.errors import IRError
from ssmc.ir.graph import Graph, Op
from ssmc.ir.text import parse_graph, print_graph
from ssmc.ir.verify import verify

HYPOTHESIS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# float32 values that are easy to lose in a decimal round trip
EDGE_F32 = np.array(
    [
        0.0,
        -0.0,
        1.4e-45,
        -1.4e-45,
        1.1754942e-38,
        1.1754944e-38,
        3.4028235e38,
        -3.4028235e38,
        0.1,
        1 / 3,
        16777217.0,
        1e-4,
        9.9999e-5,
        1e7,
        9999999.0,
        2.5e-30,
    ],
    dtype=np.float32,
)


# -- comparing graphs exactly ---------------------------------------------------
def bits(arr: np.ndarray) -> np.ndarray:
    """The raw bits of a tensor, so -0.0 differs from 0.0 and every ulp counts."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind == "c":
        arr = arr.view(np.float32 if arr.dtype == np.complex64 else np.float64)
    if arr.dtype == np.float32:
        return arr.view(np.uint32)
    if arr.dtype == np.float64:
        return arr.view(np.uint64)
    return arr


def assert_same_tensor(a: np.ndarray, b: np.ndarray, where: str) -> None:
    assert isinstance(b, np.ndarray), where
    assert b.dtype == a.dtype, f"{where}: dtype {b.dtype} != {a.dtype}"
    assert b.shape == a.shape, f"{where}: shape {b.shape} != {a.shape}"
    assert np.array_equal(a, b), where
    assert np.array_equal(bits(a), bits(b)), f"{where}: values equal but bits differ"


def assert_same_attrs(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for k in a:
        assert type(b[k]) is type(a[k]), f"{where}.{k}: {type(b[k]).__name__} != {type(a[k]).__name__}"
        if isinstance(a[k], float):
            assert np.float64(a[k]).view(np.uint64) == np.float64(b[k]).view(np.uint64), f"{where}.{k}"
        else:
            assert b[k] == a[k], f"{where}.{k}"


def assert_same_graph(g: Graph, h: Graph) -> None:
    assert h.name == g.name
    assert_same_attrs(g.attrs, h.attrs, "graph attrs")
    assert [op.name for op in h.ops()] == [op.name for op in g.ops()]
    for a in g.ops():
        b = h.op(a.name)
        assert (b.kind, b.inputs, b.shape) == (a.kind, a.inputs, a.shape), a.name
        assert_same_attrs(a.attrs, b.attrs, f"%{a.name}")
        assert sorted(b.params) == sorted(a.params), a.name
        for p in a.params:
            assert_same_tensor(np.asarray(a.params[p]), b.params[p], f"%{a.name}.{p}")


def assert_round_trips(g: Graph) -> str:
    text = print_graph(g)
    h = parse_graph(text)
    assert print_graph(h) == text
    assert_same_graph(g, h)
    return text


# -- hand-built graphs of every model-level op kind -----------------------------
def f32(values, shape=None):
    arr = np.array(values, dtype=np.float32)
    return arr.reshape(shape) if shape else arr


def c64(re_, im, shape):
    arr = np.empty(shape, np.complex64)
    arr.real = np.array(re_, np.float32).reshape(shape)
    arr.imag = np.array(im, np.float32).reshape(shape)
    return arr


def base(size=4) -> Graph:
    g = Graph("hand", attrs={"source": "model.onnx", "opset": 17})
    g.add(Op("x", "input", attrs={"size": size}, shape=(size,)))
    return g


def finish(g: Graph, last: str) -> Graph:
    g.add(Op("y", "output", (last,), shape=g.op(last).shape))
    return verify(g)


def g_input_output():
    return finish(base(), "x")


def g_linear(bias: bool):
    g = base(2)
    params = {"weight": f32(EDGE_F32[:6], (3, 2))}
    if bias:
        params["bias"] = f32([-0.0, 1e-45, 0.1])
    g.add(Op("enc", "linear", ("x",), params=params, shape=(3,)))
    return finish(g, "enc")


def g_s4d_discrete():
    g = base(2)
    g.add(
        Op(
            "ssm",
            "s4d",
            ("x",),
            attrs={"form": "discrete", "modes": 3},
            params={
                "A_bar": c64(EDGE_F32[:6], EDGE_F32[6:12], (2, 3)),
                "B_bar": c64([1, -0.0, 0.5, 2, 3, 4], [-0.0, 0, 1.4e-45, 1, 1, 1], (2, 3)),
                "C": c64(EDGE_F32[10:16], EDGE_F32[:6], (2, 3)),
                "D": f32([0.25, -0.0]),
            },
            shape=(2,),
        )
    )
    return finish(g, "ssm")


def g_s4d_dense():
    g = base(2)
    g.add(
        Op(
            "ssm",
            "s4d",
            ("x",),
            attrs={"form": "discrete", "modes": 3, "mixing": "dense"},
            params={
                "A_bar": c64(EDGE_F32[:3], EDGE_F32[6:9], (3,)),
                "B_bar": c64([1, -0.0, 0.5, 2, 3, 4], [-0.0, 0, 1.4e-45, 1, 1, 1], (3, 2)),
                "C": c64(EDGE_F32[10:16], EDGE_F32[:6], (2, 3)),
                "D": f32([0.25, -0.0]),
            },
            shape=(2,),
        )
    )
    return finish(g, "ssm")


def g_s4d_continuous():
    g = base(3)
    g.add(
        Op(
            "ssm",
            "s4d",
            ("x",),
            attrs={"form": "continuous", "modes": 1},
            params={
                "log_dt": f32([-6.907755, -2.3025851, -0.0]),
                "A": c64([-0.5, -0.5, -1e-30], [0, 3.1415927, -3.1415927], (3, 1)),
                "B": c64([1, 1, 1], [0, 0.1, -0.0], (3, 1)),
                "C": c64([0.1, 1 / 3, -2], [1e-45, 1e30, 0], (3, 1)),
                "D": f32([1, 0, -1]),
            },
            shape=(3,),
        )
    )
    return finish(g, "ssm")


def g_activation(fn: str):
    g = base(4)
    g.add(Op("act", "activation", ("x",), attrs={"fn": fn}, shape=(2,) if fn == "glu" else (4,)))
    return finish(g, "act")


def g_add():
    g = base(4)
    g.add(Op("r", "activation", ("x",), attrs={"fn": "relu"}, shape=(4,)))
    g.add(Op("sum", "add", ("r", "x"), shape=(4,)))
    return finish(g, "sum")


def g_norm(with_attrs: bool):
    g = base(3)
    attrs = {"kind": "layernorm", "eps": 1e-6} if with_attrs else {}
    g.add(
        Op(
            "ln",
            "norm",
            ("x",),
            attrs=attrs,
            params={"weight": f32([1, 0.5, -0.0]), "bias": f32([0, 1e-40, 3.4028235e38])},
            shape=(3,),
        )
    )
    return finish(g, "ln")


def g_pool(mode: str):
    g = base(4)
    g.add(Op("pl", "pool", ("x",), attrs={"mode": mode}, shape=(4,)))
    return finish(g, "pl")


HAND_BUILT = {
    "input-output": g_input_output,
    "linear-with-bias": lambda: g_linear(True),
    "linear-without-bias": lambda: g_linear(False),
    "s4d-discrete": g_s4d_discrete,
    "s4d-continuous": g_s4d_continuous,
    "s4d-dense": g_s4d_dense,
    **{
        f"activation-{fn}": (lambda fn=fn: g_activation(fn))
        for fn in ("relu", "gelu", "gelu_tanh", "sigmoid", "tanh", "glu")
    },
    "add": g_add,
    "norm-defaults": lambda: g_norm(False),
    "norm-explicit": lambda: g_norm(True),
    "pool-sum": lambda: g_pool("sum"),
    "pool-mean": lambda: g_pool("mean"),
}


@pytest.mark.parametrize("build", HAND_BUILT.values(), ids=HAND_BUILT.keys())
def test_every_op_kind_round_trips_exactly(build):
    g = build()
    text = assert_round_trips(g)
    verify(parse_graph(text))


@pytest.mark.parametrize("build", HAND_BUILT.values(), ids=HAND_BUILT.keys())
def test_every_op_kind_round_trips_through_a_tensor_store(build):
    g = build()
    store: dict[str, np.ndarray] = {}
    text = print_graph(g, tensors=store)
    expected_keys = {f"{op.name}.{p}" for op in g.ops() for p in op.params}
    assert set(store) == expected_keys
    assert len(re.findall(r" @\S+\n", text)) == len(expected_keys)
    h = parse_graph(text, tensors=store)
    assert_same_graph(g, h)
    assert print_graph(h, tensors={}) == text


def test_all_ir_dtypes_round_trip_including_their_extremes():
    g = base(1)
    tensors = {
        "f32": EDGE_F32,
        "f64": np.array([0.0, -0.0, 5e-324, -2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3]),
        "c64": c64(EDGE_F32, EDGE_F32[::-1], (4, 4)),
        "c128": np.array([complex(-0.0, 5e-324), complex(1 / 3, -1.7976931348623157e308)]),
        "i8": np.array([-128, 0, 127], np.int8),
        "i16": np.array([-32768, 32767], np.int16),
        "i32": np.array([[-2147483648], [2147483647]], np.int32),
        "i64": np.array([-9223372036854775808, 9223372036854775807], np.int64),
        "scalar": np.array(np.float32(-0.0)),
        "empty": np.zeros((0, 3), np.float32),
    }
    g.add(Op("blob", "input", attrs={"size": 1}, params=tensors, shape=(1,)))
    text = assert_round_trips(g)
    assert "  i8 = i8[3] [-128, 0, 127]\n" in text
    assert "  scalar = f32[] [-0]\n" in text
    assert "  empty = f32[0,3] []\n" in text


def test_float32_values_are_written_as_short_decimals_that_read_back():
    g = base(1)
    g.add(
        Op("w", "input", attrs={"size": 1}, params={"v": f32([0.1, 1 / 3, 2.5, -0.0, 0.0, -7.0, 1.4e-45])}, shape=(1,))
    )
    assert "  v = f32[7] [0.1, 0.33333334, 2.5, -0, 0, -7, 1e-45]\n" in print_graph(g)


def test_complex_values_are_written_as_re_im_pairs():
    g = base(1)
    g.add(Op("w", "input", attrs={"size": 1}, params={"z": c64([0.5, -0.0], [-2, 0.25], (2,))}, shape=(1,)))
    assert "  z = c64[2] [(0.5, -2), (-0, 0.25)]\n" in print_graph(g)


def test_a_tensor_of_a_dtype_without_ir_type_cannot_be_printed():
    g = base(1)
    g.add(Op("w", "input", attrs={"size": 1}, params={"h": np.zeros(2, np.float16)}, shape=(1,)))
    with pytest.raises(IRError, match="float16"):
        print_graph(g)


# -- random graphs and tensors --------------------------------------------------
finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)
# bias the draw towards the values a decimal printer gets wrong
interesting_f32 = st.one_of(
    finite_f32,
    st.sampled_from([float(v) for v in EDGE_F32]),
    st.floats(min_value=float(np.float32(1e-45)), max_value=float(np.float32(1e-36)), width=32),
    st.floats(min_value=float(np.float32(1e30)), max_value=float(np.float32(3.4028235e38)), width=32).map(lambda v: -v),
)


def f32_tensors(shape):
    return hnp.arrays(np.float32, shape, elements=interesting_f32)


@st.composite
def c64_tensors(draw, shape):
    re_ = draw(f32_tensors(shape))
    im = draw(f32_tensors(shape))
    arr = np.empty(shape, np.complex64)
    arr.real, arr.imag = re_, im
    return arr


@st.composite
def random_graphs(draw) -> Graph:
    size = draw(st.integers(1, 4))
    g = Graph(draw(st.sampled_from(["main", "net", "digits-s4d", "m.v2"])))
    g.add(Op("x", "input", attrs={"size": size}, shape=(size,)))
    last, width = "x", size
    for i in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["linear", "s4d_disc", "s4d_cont", "activation", "norm", "add", "pool"]))
        name = f"l{i}"
        if kind == "linear":
            out = draw(st.integers(1, 4))
            params = {"weight": draw(f32_tensors((out, width)))}
            if draw(st.booleans()):
                params["bias"] = draw(f32_tensors((out,)))
            g.add(Op(name, "linear", (last,), params=params, shape=(out,)))
            width = out
        elif kind.startswith("s4d"):
            modes = draw(st.integers(1, 3))
            hm = (width, modes)
            if kind == "s4d_disc":
                params = {"A_bar": draw(c64_tensors(hm)), "B_bar": draw(c64_tensors(hm))}
                form = "discrete"
            else:
                params = {"log_dt": draw(f32_tensors((width,))), "A": draw(c64_tensors(hm)), "B": draw(c64_tensors(hm))}
                form = "continuous"
            params.update(C=draw(c64_tensors(hm)), D=draw(f32_tensors((width,))))
            g.add(Op(name, "s4d", (last,), attrs={"form": form, "modes": modes}, params=params, shape=(width,)))
        elif kind == "activation":
            fns = ["relu", "gelu", "gelu_tanh", "sigmoid", "tanh"] + (["glu"] if width % 2 == 0 else [])
            fn = draw(st.sampled_from(fns))
            width = width // 2 if fn == "glu" else width
            g.add(Op(name, "activation", (last,), attrs={"fn": fn}, shape=(width,)))
        elif kind == "norm":
            attrs = {"eps": draw(st.floats(1e-12, 1e-1))} if draw(st.booleans()) else {}
            g.add(
                Op(
                    name,
                    "norm",
                    (last,),
                    attrs=attrs,
                    params={"weight": draw(f32_tensors((width,))), "bias": draw(f32_tensors((width,)))},
                    shape=(width,),
                )
            )
        elif kind == "add":
            g.add(Op(name, "add", (last, last), shape=(width,)))
        else:
            g.add(Op(name, "pool", (last,), attrs={"mode": draw(st.sampled_from(["sum", "mean"]))}, shape=(width,)))
        last = name
    g.add(Op("y", "output", (last,), shape=(width,)))
    return g


@HYPOTHESIS
@given(random_graphs())
def test_random_graphs_round_trip_exactly(g):
    verify(g)
    assert_round_trips(g)


@HYPOTHESIS
@given(random_graphs())
def test_random_graphs_round_trip_through_a_tensor_store(g):
    store = {}
    text = print_graph(g, tensors=store)
    assert_same_graph(g, parse_graph(text, tensors=store))


@HYPOTHESIS
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), elements=interesting_f32),
    hnp.arrays(
        np.complex64,
        hnp.array_shapes(min_dims=0, max_dims=2, max_side=5),
        elements=st.complex_numbers(allow_nan=False, allow_infinity=False, width=64),
    ),
)
def test_random_tensors_of_any_shape_round_trip_bit_for_bit(real, cplx):
    g = base(1)
    g.add(Op("t", "input", attrs={"size": 1}, params={"real": real, "cplx": cplx}, shape=(1,)))
    assert_round_trips(g)


# Names like "info" and strings holding "//" or quotes are included on purpose: both once broke parsing.
attr_names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True) | st.sampled_from(["info", "nano", "inf_x"])
attr_values = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12) | st.sampled_from(["https://x.org/m.onnx", 'a "//" b', "back\\slash //"]),
    ),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=6,
)


@HYPOTHESIS
@given(st.dictionaries(attr_names, attr_values, max_size=4), st.dictionaries(attr_names, attr_values, max_size=4))
def test_random_attributes_round_trip_with_their_types(graph_attrs, op_attrs):
    g = Graph("attrs", attrs=graph_attrs)
    g.add(Op("x", "input", attrs=op_attrs, shape=(2,)))
    assert_round_trips(g)


def test_a_string_attribute_containing_a_double_slash_round_trips():
    g = Graph("m", attrs={"source": "https://example.org/model.onnx"})
    g.add(Op("x", "input", attrs={"size": 1}, shape=(1,)))
    assert_round_trips(g)


@pytest.mark.parametrize("key", ["info", "nano"])
def test_attribute_names_starting_like_inf_or_nan_round_trip(key):
    g = Graph("m", attrs={key: 1})
    g.add(Op("x", "input", attrs={"size": 1}, shape=(1,)))
    assert_round_trips(g)


# -- the text written by hand ---------------------------------------------------
GOLDEN = """\
ssmc.graph @tiny {opset = 17, source = "tiny.onnx"}
%x = input() {size = 2} : [2]
%enc = linear(%x) : [2]
  bias = f32[2] [0.5, -0.25]
  weight = f32[2,2] [1, 0, -2, 0.125]
%ssm = s4d(%enc) {form = "discrete", modes = 1} : [2]
  A_bar = c64[2,1] [(0.5, 0.25), (0.875, -0.125)]
  B_bar = c64[2,1] [(1, 0), (0.5, 0.5)]
  C = c64[2,1] [(0.25, -1), (2, -0)]
  D = f32[2] [0, 1]
%act = activation(%ssm) {fn = "relu"} : [2]
%y = output(%act) : [2]
"""


def test_a_hand_written_graph_parses_verifies_and_prints_back_identically():
    g = verify(parse_graph(GOLDEN))
    assert g.name == "tiny"
    assert g.attrs == {"opset": 17, "source": "tiny.onnx"}
    assert [(op.name, op.kind, op.inputs, op.shape) for op in g.ops()] == [
        ("x", "input", (), (2,)),
        ("enc", "linear", ("x",), (2,)),
        ("ssm", "s4d", ("enc",), (2,)),
        ("act", "activation", ("ssm",), (2,)),
        ("y", "output", ("act",), (2,)),
    ]
    enc = g.op("enc").params
    assert enc["weight"].dtype == np.float32 and enc["weight"].tolist() == [[1, 0], [-2, 0.125]]
    assert enc["bias"].tolist() == [0.5, -0.25]
    ssm = g.op("ssm")
    assert ssm.attrs == {"form": "discrete", "modes": 1}
    assert ssm.params["A_bar"].dtype == np.complex64
    assert ssm.params["A_bar"].tolist() == [[0.5 + 0.25j], [0.875 - 0.125j]]
    assert np.signbit(ssm.params["C"][1, 0].imag)
    assert print_graph(g) == GOLDEN


def test_comments_blank_lines_and_spacing_do_not_change_the_graph():
    noisy = "// a comment before the header\n\n" + GOLDEN.replace(
        "%x = input() {size = 2} : [2]", "%x   =   input()   {size=2}   :   [ 2 ]   // the token"
    ).replace("%act = activation(%ssm)", "\n%act = activation( %ssm )")
    assert print_graph(parse_graph(noisy)) == GOLDEN


def test_tensor_store_text_names_each_tensor_by_op_and_parameter():
    store = {}
    text = print_graph(parse_graph(GOLDEN), tensors=store)
    assert "  weight = f32[2,2] @enc.weight\n" in text
    assert "  A_bar = c64[2,1] @ssm.A_bar\n" in text
    assert store["enc.bias"].tolist() == [0.5, -0.25]


# -- text that must be refused --------------------------------------------------
HEAD = "ssmc.graph @m\n%x = input() {size = 2} : [2]\n"


BAD_TEXT = {
    "missing header": ("%x = input() {size = 2} : [2]\n", 1, "expected 'ssmc.graph @name'"),
    "missing header after comments": (
        "\n// header missing\n%x = input() {size = 2} : [2]\n",
        3,
        "expected 'ssmc.graph @name'",
    ),
    "garbage line": (HEAD + "this is not IR\n", 3, "cannot parse"),
    "op without shape": (HEAD + "%y = output(%x)\n", 3, "cannot parse"),
    "too few tensor values": (
        HEAD + "%l = linear(%x) : [2]\n  weight = f32[2,2] [1, 2, 3]\n",
        4,
        "needs 4 numbers, found 3",
    ),
    "too many tensor values": (
        HEAD + "%l = linear(%x) : [2]\n  weight = f32[2] [1, 2, 3]\n",
        4,
        "needs 2 numbers, found 3",
    ),
    "complex value without its pair": (
        HEAD + "%l = linear(%x) : [2]\n  weight = c64[2] [(1, 2)]\n",
        4,
        "needs 4 numbers, found 2",
    ),
    "unknown dtype": (HEAD + "%l = linear(%x) : [2]\n  weight = f16[2] [1, 2]\n", 4, "unknown tensor type 'f16'"),
    "values without brackets": (
        HEAD + "%l = linear(%x) : [2]\n  weight = f32[2] 1, 2\n",
        4,
        "must be [values] or @ref",
    ),
    "reference without a store": (
        HEAD + "%l = linear(%x) : [2]\n  weight = f32[2] @l.weight\n",
        4,
        "@l.weight is not in the tensor store",
    ),
    "duplicate tensor": (
        HEAD + "%l = linear(%x) : [2]\n  weight = f32[1] [1]\n  weight = f32[1] [2]\n",
        5,
        "given twice",
    ),
    "undefined operand": (HEAD + "%y = output(%nope) : [2]\n", 3, "%nope"),
    "operand without percent": (HEAD + "%y = output(x) : [2]\n", 3, "must be written %name"),
    "duplicate op": (HEAD + "%x = input() {size = 3} : [3]\n", 3, "duplicate op name %x"),
    "duplicate attribute": ("ssmc.graph @m\n%x = input() {size = 1, size = 2} : [1]\n", 2, "'size' given twice"),
    "unterminated attributes": ("ssmc.graph @m\n%x = input() {size = 1 : [1]\n", 2, "attributes"),
    "bare word as attribute value": ("ssmc.graph @m\n%x = input() {size = relu} : [1]\n", 2, "unexpected 'relu'"),
    "attribute without '='": ("ssmc.graph @m\n%x = input() {size 1} : [1]\n", 2, "expected 'name = value'"),
    "attribute with ':'": ("ssmc.graph @m\n%x = input() {size: 1} : [1]\n", 2, "cannot read"),
    "tensor before any op": ("ssmc.graph @m\n  weight = f32[1] [1]\n", 2, "tensor line before any op"),
}


@pytest.mark.parametrize("text,line,phrase", BAD_TEXT.values(), ids=BAD_TEXT.keys())
def test_bad_text_is_refused_with_its_line_number(text, line, phrase):
    with pytest.raises(IRError) as e:
        parse_graph(text)
    msg = str(e.value)
    assert msg.startswith(f"line {line}:"), msg
    assert phrase in msg, msg


@pytest.mark.parametrize("text", ["", "\n\n", "// only a comment\n"])
def test_text_without_a_graph_is_refused(text):
    with pytest.raises(IRError, match="empty IR text"):
        parse_graph(text)


def test_a_reference_missing_from_a_given_store_is_refused():
    store = {}
    text = print_graph(g_linear(True), tensors=store)
    del store["enc.bias"]
    with pytest.raises(IRError, match=r"line \d+: tensor @enc.bias is not in the tensor store"):
        parse_graph(text, tensors=store)


def test_a_store_tensor_that_disagrees_with_the_text_is_refused():
    store = {}
    text = print_graph(g_linear(True), tensors=store)
    store["enc.bias"] = store["enc.bias"].astype(np.float64)
    with pytest.raises(IRError, match="the text says f32"):
        parse_graph(text, tensors=store)
    store["enc.bias"] = np.zeros(4, np.float32)
    with pytest.raises(IRError, match="the text says f32"):
        parse_graph(text, tensors=store)


def test_elided_text_is_for_reading_and_refuses_to_parse():
    text = print_graph(g_linear(True), elide=True)
    assert "<3 values, max |v|" in text
    first_tensor_line = next(i for i, line in enumerate(text.splitlines(), start=1) if line.startswith("  "))
    with pytest.raises(IRError) as e:
        parse_graph(text)
    assert str(e.value).startswith(f"line {first_tensor_line}: elided tensor")
