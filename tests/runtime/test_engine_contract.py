"""The numpy engine computes exactly what docs/fixed_point.md says.

The reference implementation (ssmc/runtime/reference.py: the contract line by
line, one neuron, one step, Python ints) is compared with the vectorised engine
bit for bit at every step on random networks -- messages, states, saturation
counts and sparsity -- and a deliberately broken engine is caught by it.
"""

from __future__ import annotations

import numpy as np
import pytest

from ssmc import limits
from ssmc.errors import InputDataError, IRError, ResourceLimitError
from ssmc.ir import Graph, Op, verify
from ssmc.passes.assign_bitwidths import set_depths
from ssmc.runtime import numpy_engine, parallel
from ssmc.runtime.numpy_engine import EngineResult, prepare, prepare_kernels, run_numpy
from ssmc.runtime.reference import run_reference
from tests.builders.neuro_models import s4d_stack


def assert_same_result(res: EngineResult, ref: EngineResult) -> None:
    """Every integer, count and trace of an engine's run equals the reference's."""
    assert res.steps == ref.steps
    assert (res.trace is None) == (ref.trace is None)
    assert sorted(res.trace or {}) == sorted(ref.trace or {})
    for name, values in (ref.trace or {}).items():
        np.testing.assert_array_equal(res.trace[name], values, err_msg=name)
    for name, values in ref.raw.items():
        np.testing.assert_array_equal(res.raw[name], values, err_msg=name)
        np.testing.assert_array_equal(res.outputs[name], ref.outputs[name], err_msg=name)
    assert res.saturation == ref.saturation
    assert res.sparsity == ref.sparsity


def random_network(seed: int) -> Graph:
    """source -> syn -> cpx -> syn -> relu -> syn(+skip from source) -> relay -> syn -> integrator -> output."""
    rng = np.random.default_rng(seed)
    F, M, H, O = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(2, 5)), int(rng.integers(1, 3))
    coef_bits, msg_bits, state_bits = int(rng.integers(8, 17)), int(rng.integers(10, 25)), int(rng.integers(12, 25))
    g = Graph(f"rand{seed}")

    def syn(name, pre, post_size, pre_size):
        bits = int(rng.integers(3, 9))
        step = 1 << (9 - bits)
        w = (rng.integers(-128 // step, (128 - step) // step + 1, size=(post_size, pre_size)) * step).astype(np.int32)
        return g.add(
            Op(
                name,
                "synapses",
                (pre,),
                attrs={"weight_bits": bits, "weight_exp": int(rng.integers(-6, 3))},
                params={"weight": w},
                shape=(post_size,),
            )
        )

    def neurons(name, kind, size, inputs, **extra):
        attrs = {
            "kind": kind,
            "size": size,
            "frac": int(rng.integers(4, 12)),
            "msg_bits": msg_bits,
            "state_bits": state_bits,
        }
        attrs.update(extra.pop("attrs", {}))
        return g.add(Op(name, "neurons", tuple(inputs), attrs=attrs, params=extra, shape=(size,)))

    g.add(Op("x", "input", attrs={"size": F}, shape=(F,)))
    neurons("src", "source", F, ["x"])
    syn("s1", "src", 2 * M, F)
    lim = 1 << (coef_bits - 1)
    r, th = rng.uniform(0.5, 0.99, M), rng.uniform(-np.pi, np.pi, M)
    neurons(
        "pairs",
        "cpx",
        2 * M,
        ["s1"],
        attrs={"coef_bits": coef_bits, "out_shift": int(rng.integers(0, 4))},
        c_re=np.clip(np.round(r * np.cos(th) * lim), -lim, lim - 1).astype(np.int64),
        c_im=np.clip(np.round(r * np.sin(th) * lim), -lim, lim - 1).astype(np.int64),
    )
    syn("s2", "pairs", H, 2 * M)
    neurons("act", "relu", H, ["s2"], bias=rng.integers(-500, 500, H).astype(np.int64))
    syn("s3", "act", H, H)
    syn("skip", "src", H, F)
    neurons("mix", "relay", H, ["s3", "skip"])
    syn("s4", "mix", O, H)
    neurons("acc", "integrator", O, ["s4"], attrs={"out_shift": 2, "decode": "mean"})
    g.add(Op("y", "output", ("acc",), shape=(O,)))
    set_depths(g)
    verify(g)
    return g


@pytest.mark.parametrize("seed", range(12))
def test_engine_equals_the_scalar_contract_at_every_step(seed):
    g = random_network(seed)
    rng = np.random.default_rng(100 + seed)
    x = rng.normal(scale=rng.choice([0.5, 4.0, 400.0]), size=(2, 6, g.inputs()[0].shape[0]))
    res = run_numpy(g, x, trace=True)
    assert_same_result(res, run_reference(g, x, trace=True))


def test_large_inputs_saturate_and_are_counted():
    g = random_network(3)
    x = np.full((1, 4, g.inputs()[0].shape[0]), 1e9)
    res = run_numpy(g, x)
    assert res.saturation["src"]["message"] > 0


def test_outputs_are_read_at_token_plus_depth_and_mean_decoded():
    g = random_network(1)
    x = np.random.default_rng(0).normal(size=(1, 5, g.inputs()[0].shape[0]))
    res = run_numpy(g, x, trace=True)
    acc = g.op("acc")
    d, frac = acc.attrs["depth"], acc.attrs["frac"]
    msgs = res.trace["acc"][0, d : d + 5]
    np.testing.assert_array_equal(res.raw["y"][0], msgs)
    np.testing.assert_allclose(res.outputs["y"][0], msgs / 2.0**frac / np.arange(1, 6)[:, None])


def test_batch_rows_are_independent():
    g = random_network(5)
    x = np.random.default_rng(1).normal(size=(3, 7, g.inputs()[0].shape[0]))
    together = run_numpy(g, x).raw["y"]
    for b in range(3):
        np.testing.assert_array_equal(run_numpy(g, x[b : b + 1]).raw["y"][0], together[b])


@pytest.mark.parametrize(
    "bad, message", [(np.zeros((2, 3)), "shape"), (np.zeros((1, 3, 9)), "shape"), (np.full((1, 2, 1), np.nan), "NaN")]
)
def test_bad_input_is_refused(bad, message):
    g = random_network(0)
    if g.inputs()[0].shape[0] != 1 and bad.ndim == 3 and bad.shape[2] == 1:
        bad = np.full((1, 2, g.inputs()[0].shape[0]), np.nan)
    with pytest.raises(InputDataError, match=message):
        run_numpy(g, bad)


def test_model_level_graphs_are_refused():
    g = Graph("m")
    g.add(Op("x", "input", attrs={"size": 1}, shape=(1,)))
    g.add(Op("y", "output", ("x",), shape=(1,)))
    g.add(Op("r", "activation", ("x",), attrs={"fn": "relu"}, shape=(1,)))
    with pytest.raises(IRError, match="run the fixed-point passes"):
        run_numpy(g, np.zeros((1, 2, 1)))


@pytest.mark.parametrize("seed", range(6))
def test_no_value_ever_leaves_its_declared_width(seed):
    # Huge inputs force saturation everywhere: it must clip (and count), never wrap or overflow.
    g = random_network(seed)
    x = np.random.default_rng(seed).normal(scale=1e6, size=(2, 8, g.inputs()[0].shape[0]))
    res = run_numpy(g, x, trace=True)
    for op in g.ops_of_kind("neurons"):
        mb, sb = op.attrs["msg_bits"], op.attrs["state_bits"]
        assert np.abs(res.trace[op.name]).max() <= 2 ** (mb - 1)
        if f"{op.name}.state" in res.trace:
            assert np.abs(res.trace[f"{op.name}.state"]).max() <= 2 ** (sb - 1)
    assert sum(sum(c.values()) for c in res.saturation.values()) > 0


def with_widths(g: Graph, msg_bits: int, state_bits: int, coef_bits: int | None = None) -> Graph:
    """`g` with every neuron group set to these widths, lut tables clipped into the message range and,
    given coef_bits, cpx coefficients rescaled to it (|c| < 1 kept) -- for extreme-width engine tests."""
    for op in g.ops_of_kind("neurons"):
        op.attrs.update(msg_bits=msg_bits, state_bits=state_bits)
        if op.attrs["kind"] == "lut":
            lim = 1 << (msg_bits - 1)
            op.params["table"] = np.clip(op.params["table"], -lim, lim - 1)
        if coef_bits is not None and op.attrs["kind"] == "cpx":
            lim = 1 << (coef_bits - 1)
            op.attrs["coef_bits"] = coef_bits
            for key in ("c_re", "c_im"):  # keep |c| < 1 in the new width
                op.params[key] = np.clip(op.params[key] * lim // 2048, -lim + 1, lim - 1)
    return g


def random_extended_network(seed: int) -> Graph:
    """The newer kinds and sigma-delta messages: source -> cpx -> {lut, product(cpx, lut)} -> relu -> integrator,
    each group dense or sigma-delta at random (thresholds from 1 to a few hundred)."""
    rng = np.random.default_rng(seed)
    F, M, P, O = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
    msg_bits, state_bits = int(rng.integers(10, 25)), int(rng.integers(12, 25))
    g = Graph(f"ext{seed}")

    def delta():
        return int(rng.choice([0, 1, int(rng.integers(2, 300))]))

    def syn(name, pre, post_size, pre_size):
        bits = int(rng.integers(3, 9))
        step = 1 << (9 - bits)
        w = (rng.integers(-128 // step, (128 - step) // step + 1, size=(post_size, pre_size)) * step).astype(np.int32)
        return g.add(
            Op(
                name,
                "synapses",
                (pre,),
                attrs={"weight_bits": bits, "weight_exp": int(rng.integers(-8, 2))},
                params={"weight": w},
                shape=(post_size,),
            )
        )

    def neurons(name, kind, size, inputs, attrs=None, **params):
        full = {
            "kind": kind,
            "size": size,
            "frac": int(rng.integers(4, 12)),
            "msg_bits": msg_bits,
            "state_bits": state_bits,
            "delta": delta(),
        }
        full.update(attrs or {})
        return g.add(Op(name, "neurons", tuple(inputs), attrs=full, params=params, shape=(size,)))

    g.add(Op("x", "input", attrs={"size": F}, shape=(F,)))
    neurons("src", "source", F, ["x"])
    syn("s1", "src", 2 * M, F)
    r, th = rng.uniform(0.5, 0.99, M), rng.uniform(-np.pi, np.pi, M)
    neurons(
        "pairs",
        "cpx",
        2 * M,
        ["s1"],
        attrs={"coef_bits": 12, "out_shift": int(rng.integers(0, 3))},
        c_re=np.round(r * np.cos(th) * 2047).astype(np.int64),
        c_im=np.round(r * np.sin(th) * 2047).astype(np.int64),
    )
    syn("s2", "pairs", P, 2 * M)
    L = int(rng.integers(1, 64))
    table = rng.integers(-(1 << (msg_bits - 1)), 1 << (msg_bits - 1), L).astype(np.int64)
    neurons(
        "gate",
        "lut",
        P,
        ["s2"],
        attrs={"lut_shift": int(rng.integers(0, 12)), "lut_lo": int(rng.integers(-40, 10))},
        table=table,
        bias=rng.integers(-300, 300, P).astype(np.int64),
    )
    syn("s3", "pairs", P, 2 * M)
    syn("s4", "gate", P, P)
    neurons(
        "prod",
        "product",
        P,
        ["s3", "s4"],
        attrs={"out_shift": int(rng.integers(0, 30))},
        **({"bias": rng.integers(-2000, 2000, P).astype(np.int64)} if seed % 2 else {}),
    )
    syn("s5", "prod", O, P)
    neurons("act", "relu", O, ["s5"])
    syn("s6", "act", O, O)
    neurons("acc", "integrator", O, ["s6"], attrs={"out_shift": 1})
    g.add(Op("y", "output", ("acc",), shape=(O,)))
    set_depths(g)
    verify(g)
    return g


@pytest.mark.parametrize("seed", range(16))
def test_lut_product_and_sigma_delta_follow_the_scalar_contract(seed):
    g = random_extended_network(seed)
    rng = np.random.default_rng(200 + seed)
    x = rng.normal(scale=rng.choice([0.5, 4.0, 400.0]), size=(2, 8, g.inputs()[0].shape[0]))
    res = run_numpy(g, x, trace=True)
    assert_same_result(res, run_reference(g, x, trace=True))


def test_sigma_delta_with_threshold_one_changes_no_value_downstream():
    # Threshold 1 sends every change: the receivers sum exactly the dense messages, so every
    # group downstream computes the same integers; only the messages on the wire differ (sparser).
    # (A change too large for msg_bits is clipped and counted: then the two differ, so keep inputs small.)
    for seed in range(8):
        dense = random_network(seed)
        sparse = random_network(seed)
        for op in dense.ops_of_kind("neurons") + sparse.ops_of_kind("neurons"):
            op.attrs["msg_bits"] = 32  # wide enough that no change is clipped
        for op in sparse.ops_of_kind("neurons"):
            if op.name != "acc":
                op.attrs["delta"] = 1
        x = np.random.default_rng(seed).normal(scale=1e-3, size=(2, 6, dense.inputs()[0].shape[0]))
        a, b = run_numpy(dense, x, trace=True), run_numpy(sparse, x, trace=True)
        assert sum(c["message"] for c in b.saturation.values()) == sum(c["message"] for c in a.saturation.values())
        np.testing.assert_array_equal(a.raw["y"], b.raw["y"])
        for op in sparse.ops_of_kind("neurons"):
            if op.attrs.get("delta"):  # what the receivers hold is the dense message
                np.testing.assert_array_equal(b.trace[f"{op.name}.last"], a.trace[op.name])


def test_sigma_delta_error_is_bounded_by_the_threshold_and_does_not_drift():
    # The receivers hold `last`, never further than delta - 1 from the dense message, at every step.
    g = random_network(2)
    for op in g.ops_of_kind("neurons"):
        op.attrs["delta"] = 1 if op.name != "src" else 0
    g.op("pairs").attrs["delta"] = 50
    x = np.random.default_rng(0).normal(size=(3, 40, g.inputs()[0].shape[0]))
    res = run_numpy(g, x, trace=True)
    gap = np.abs(res.trace["pairs.last"] - _dense_messages_of(g, "pairs", x, res.steps))
    assert gap.max() <= 49
    assert res.sparsity["pairs"] > 0


def _dense_messages_of(g: Graph, name: str, x: np.ndarray, steps: int) -> np.ndarray:
    """What group `name` would send densely at each step given the same inputs: its cpx state
    does not depend on its own messages, so rshr(state, out_shift) sat'd is that message."""
    res = run_numpy(g, x, trace=True)
    a = g.op(name).attrs
    st = res.trace[f"{name}.state"]
    s = a.get("out_shift", 0)
    v = (st + (1 << (s - 1))) >> s if s > 0 else st
    return np.clip(v, -(1 << (a["msg_bits"] - 1)), (1 << (a["msg_bits"] - 1)) - 1)


def test_lut_index_clips_count_as_saturation():
    g = random_extended_network(1)
    gate = g.op("gate")
    gate.attrs.update(lut_shift=0, lut_lo=0, delta=0)
    gate.params["bias"] = np.zeros(gate.shape, np.int64)
    x = np.zeros((1, 6, g.inputs()[0].shape[0]))
    assert run_numpy(g, x).saturation["gate"]["message"] == 0  # bias in range: index in the table
    gate.params["bias"] = np.full(gate.shape, 10**6, np.int64)  # far past the table's last bin
    res = run_numpy(g, x, trace=True)
    assert res.saturation["gate"]["message"] == (res.steps - gate.attrs["depth"]) * gate.shape[0]
    np.testing.assert_array_equal(res.trace["gate"][0, gate.attrs["depth"] :], gate.params["table"][-1])


def structured_network(seed: int) -> Graph:
    """random_network with each synapse group's weights in one of the non-zero patterns the engine
    runs by its own kernel: channel broadcast (an S4D B), channel sum (an S4D C), one pre per post
    scattered, one post per pre scattered, sparse, all zero, dense."""
    g = random_network(seed)
    rng = np.random.default_rng(1000 + seed)
    for op in g.ops_of_kind("synapses"):
        w = op.params["weight"]
        post, pre = w.shape
        pattern = ["broadcast", "channel_sum", "gather", "segment", "sparse", "zero", "dense"][
            (seed + len(op.name)) % 7
        ]
        keep = np.zeros(w.shape, bool)
        if pattern == "broadcast" and post % pre == 0:
            keep[np.arange(post), np.arange(post) // (post // pre)] = True
        elif pattern == "channel_sum" and pre % post == 0:
            keep[np.arange(pre) // (pre // post), np.arange(pre)] = True
        elif pattern in ("gather", "broadcast"):
            keep[np.arange(post), rng.integers(0, pre, post)] = True
        elif pattern in ("segment", "channel_sum"):
            keep[rng.integers(0, post, pre), np.arange(pre)] = True
        elif pattern == "sparse":
            keep = rng.random(w.shape) < 0.5
        elif pattern == "dense":
            keep[...] = True
        keep &= rng.random(w.shape) < 0.9  # holes: a few zero weights (or whole rows) inside the pattern
        op.params["weight"] = np.where(keep, w, 0).astype(np.int32)
    return g


@pytest.fixture
def csr_for_small_nets(monkeypatch):
    # these nets are a few neurons wide: let half-empty groups count as sparse, so CSR runs too
    monkeypatch.setattr(numpy_engine, "_CSR_DENSITY", 0.75)


@pytest.mark.parametrize("seed", range(21))
def test_every_synapse_kernel_equals_the_scalar_contract(seed, csr_for_small_nets):
    g = structured_network(seed)
    for op in g.ops_of_kind("neurons"):
        op.attrs["delta"] = (
            int(np.random.default_rng(seed).choice([0, 0, 1, 40])) if op.attrs["kind"] != "source" else 0
        )
    rng = np.random.default_rng(300 + seed)
    x = rng.normal(scale=rng.choice([0.5, 4.0, 400.0]), size=(3, 6, g.inputs()[0].shape[0]))
    res = run_numpy(g, x, trace=True)
    assert_same_result(res, run_reference(g, x, trace=True))


def test_the_structured_networks_reach_every_kernel(csr_for_small_nets):
    kernels = {s.kernel for seed in range(21) for s in prepare(structured_network(seed)).synapses.values()}
    assert kernels == {"broadcast", "channel_sum", "gather", "segment", "csr", "zero", "dense"}


def paper_size_network(layers: int = 4) -> Graph:
    """The seed paper's size (4 S4D layers, H=128, N=64: [8192, 128] B and [128, 8192] C groups), every
    second layer sending sigma-delta messages."""
    g = s4d_stack(H=128, M=32, layers=layers, rates=[1.0, 0.5] * (layers // 2) + [1.0] * (layers % 2))
    set_depths(g)
    verify(g)
    return g


def test_paper_size_network_equals_the_scalar_contract_for_a_few_tokens():
    g = paper_size_network()
    kernels = {name: s.kernel for name, s in prepare(g).synapses.items()}
    assert kernels["s0.B"] == "broadcast" and kernels["s0.C"] == "channel_sum" and kernels["mix0"] == "dense"
    x = np.random.default_rng(7).normal(scale=0.01, size=(1, 2, 1))
    res = run_numpy(g, x, trace=True)
    assert_same_result(res, run_reference(g, x, trace=True))
    assert res.sparsity["s1.pairs"] > 0  # sigma-delta messages did run


def test_a_changed_graph_is_prepared_again():
    g = random_network(4)
    x = np.random.default_rng(0).normal(size=(1, 5, g.inputs()[0].shape[0]))
    before = run_numpy(g, x).raw["y"]
    assert prepare(g) is prepare(g)  # the same graph, unchanged: set up once
    g.op("s4").params["weight"] = np.flip(g.op("s4").params["weight"], axis=1).copy()  # a new array
    np.testing.assert_array_equal(run_numpy(g, x).raw["y"], run_reference(g, x).raw["y"])
    assert not np.array_equal(run_numpy(g, x).raw["y"], before)
    g.op("s4").attrs["weight_exp"] = g.op("s4").attrs["weight_exp"] - 1  # an attribute
    np.testing.assert_array_equal(run_numpy(g, x).raw["y"], run_reference(g, x).raw["y"])


def _engine_differs_from_reference(g: Graph, x: np.ndarray) -> bool:
    try:
        assert_same_result(run_numpy(g, x, trace=True), run_reference(g, x, trace=True))
    except AssertionError:
        return True
    return False


def _rshr_ties_down(v, s):
    return (v + (1 << (s - 1)) - 1) >> s if s > 0 else v


def _shr_toward_zero(v, s):
    return np.where(v < 0, -((-v) >> s), v >> s) if s >= 0 else v << -s


@pytest.mark.parametrize("helper, broken", [("rshr", _rshr_ties_down), ("shr", _shr_toward_zero)])
def test_an_engine_that_rounds_wrongly_is_caught_by_the_reference(monkeypatch, helper, broken):
    # The comparison has teeth: the engine's int64 path (every group forced onto it) equals the
    # reference as it is, and differs on some of the same networks and inputs with one rounding rule
    # broken (a tie rounded down, a negative value floored toward zero: rare, so a few networks).
    monkeypatch.setattr(numpy_engine, "_float_group", lambda g: False)
    cases = []
    for seed in range(4):
        g = random_extended_network(seed) if seed % 2 else random_network(seed)
        x = np.random.default_rng(seed).normal(scale=30.0, size=(2, 12, g.inputs()[0].shape[0]))
        cases.append((g, x))
    assert not any(_engine_differs_from_reference(g, x) for g, x in cases)
    monkeypatch.setattr(numpy_engine, helper, broken)
    assert any(_engine_differs_from_reference(g, x) for g, x in cases)


def split_rows(g: Graph, seed: int) -> Graph:
    """g with its synapse groups split as assign-bitwidths does for --weight-exp row: one group per
    exponent class, each holding only its rows (the others zero) with its own weight_exp, all
    read by the same groups (a product's two operands stay whole)."""
    rng = np.random.default_rng(seed)
    for op in g.ops_of_kind("synapses"):
        if any(c.attrs["kind"] == "product" for c in g.consumers(op.name)):
            continue
        w, exp = op.params["weight"], int(op.attrs.get("weight_exp", 0))
        cls = rng.integers(0, int(rng.integers(1, 4)), w.shape[0])
        names = []
        for c in range(int(cls.max()) + 1):
            part = np.where((cls == c)[:, None], w, 0).astype(w.dtype)
            if c == 0:
                op.params["weight"] = part
                names.append(op.name)
            else:
                names.append(
                    g.add(
                        Op(
                            f"{op.name}.{c}",
                            "synapses",
                            op.inputs,
                            attrs={**op.attrs, "weight_exp": exp - int(rng.integers(1, 4))},
                            params={"weight": part},
                            shape=op.shape,
                        )
                    ).name
                )
        for user in g.consumers(op.name):
            g.set_inputs(user.name, [n for s in user.inputs for n in (names if s == op.name else [s])])
    verify(g)
    return g


@pytest.mark.parametrize("seed", range(12))
def test_row_split_synapse_groups_equal_the_scalar_contract(seed, csr_for_small_nets):
    # The engine runs the classes of a split linear as one kernel with a shift per row: the sums,
    # clips and counts must be those of the separate groups.
    g = split_rows(structured_network(seed) if seed % 2 else random_extended_network(seed), seed)
    for op in g.ops_of_kind("neurons"):
        if op.attrs["kind"] != "source" and seed % 3 == 0:
            op.attrs["delta"] = int(np.random.default_rng(seed).choice([1, 40]))
    rng = np.random.default_rng(400 + seed)
    x = rng.normal(scale=rng.choice([0.5, 4.0, 400.0]), size=(3, 6, g.inputs()[0].shape[0]))
    assert_same_result(run_numpy(g, x, trace=True), run_reference(g, x, trace=True))


def test_row_split_synapse_groups_are_run_as_one():
    merged = [
        len(prepare(g).run_synapses) < len(prepare(g).synapses)
        for g in (split_rows(random_network(seed), seed) for seed in range(6))
    ]
    assert any(merged)


def test_the_numpy_run_and_the_microcode_engine_share_one_prepared_set_of_kernels():
    g = split_rows(random_network(1), 1)
    kernels = prepare_kernels(g, "microcode")
    assert prepare(g).synapses is kernels.synapses and prepare_kernels(g) is kernels  # checked and set up once
    assert len(prepare(g).run_synapses) < len(kernels.synapses)  # the numpy run merged row classes ...
    for name, group in kernels.groups.items():  # ... on its own copies of the groups
        assert group.synapses == ([] if group.kind == "source" else list(g.op(name).inputs))
    g.op("s4").params["weight"] = g.op("s4").params["weight"].copy()  # a new array: both prepared again
    assert prepare_kernels(g) is not kernels and prepare(g).synapses is prepare_kernels(g).synapses


def test_a_row_split_paper_size_network_equals_the_scalar_contract_for_a_few_tokens():
    g = split_rows(paper_size_network(), 1)
    x = np.random.default_rng(8).normal(scale=0.01, size=(1, 2, 1))
    assert_same_result(run_numpy(g, x, trace=True), run_reference(g, x, trace=True))


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_runs_in_chunks_of_any_length_equal_the_scalar_contract(monkeypatch, chunk):
    # A run steps a chunk of steps at a time: synapse groups over the whole chunk, stateful and
    # sigma-delta groups step by step inside it, messages in a ring of chunks with the history the
    # delays need. Short chunks make every ring wrap, read across its end and carry state and sigma
    # sums from chunk to chunk.
    monkeypatch.setattr(numpy_engine, "chunk_steps", lambda *args: chunk)
    for seed in range(6):
        nets = [random_network(seed), random_extended_network(seed), split_rows(structured_network(seed), seed)]
        for op in nets[2].ops_of_kind("neurons"):
            op.attrs["delta"] = [0, 1, 40][(seed + len(op.name)) % 3] if op.attrs["kind"] != "source" else 0
        for g in nets:
            x = np.random.default_rng(500 + seed).normal(scale=4.0, size=(2, 7, g.inputs()[0].shape[0]))
            assert_same_result(run_numpy(g, x, trace=True), run_reference(g, x, trace=True))


def test_a_run_without_traces_chunks_like_one_with_them(monkeypatch):
    g = random_extended_network(3)
    x = np.random.default_rng(9).normal(scale=4.0, size=(4, 9, g.inputs()[0].shape[0]))
    whole = run_numpy(g, x)
    monkeypatch.setattr(numpy_engine, "chunk_steps", lambda *args: 2)
    for res in (run_numpy(g, x), run_numpy(g, x, trace=True)):
        np.testing.assert_array_equal(res.raw["y"], whole.raw["y"])
        assert res.saturation == whole.saturation and res.sparsity == whole.sparsity


def test_a_batch_split_over_threads_equals_the_scalar_contract(monkeypatch):
    # A large batch runs in parts, one thread each, into the rows of one result: counts, sparsity,
    # traces and outputs are those of the whole batch. Force parts of 1 and 2 sequences.
    monkeypatch.setattr(parallel, "THREAD_SEQUENCES", 1)
    monkeypatch.setattr(parallel, "cores", lambda: 3)
    for seed in range(4):
        g = random_extended_network(seed)
        x = np.random.default_rng(600 + seed).normal(scale=4.0, size=(5, 6, g.inputs()[0].shape[0]))
        assert_same_result(run_numpy(g, x, trace=True), run_reference(g, x, trace=True))


def test_chunks_longer_than_one_step_only_use_room_the_work_limit_leaves(monkeypatch):
    # The run-size check states what a run in 1-step chunks needs; longer chunks (faster) take only
    # memory the limit leaves over, so a run the check admits never exceeds the limit.
    g = random_network(5)
    x = np.random.default_rng(3).normal(size=(6, 10, g.inputs()[0].shape[0]))
    net = prepare(g)
    steps = x.shape[1] + net.max_depth
    chosen = []
    real = numpy_engine.chunk_steps
    monkeypatch.setattr(numpy_engine, "chunk_steps", lambda *a: chosen.append(real(*a)) or chosen[-1])
    need = limits.current().work_bytes - numpy_engine._check_run_size(
        net.groups, net.run_synapses, net, x.shape, steps, False
    )
    per_step = 8 * x.shape[0] * numpy_engine._step_values(net.groups, net.run_synapses)
    ref = run_reference(g, x)
    for limit, chunk in [(need, 1), (need + 2 * per_step, 3), (1 << 33, steps)]:
        monkeypatch.setenv("SSMC_MAX_WORK_BYTES", str(limit))
        assert_same_result(run_numpy(g, x), ref)
        assert chosen[-1] == chunk
    monkeypatch.setenv("SSMC_MAX_WORK_BYTES", str(need - 1))
    with pytest.raises(ResourceLimitError):
        run_numpy(g, x)


def fused_s4d_network(seed: int) -> Graph:
    """A small S4D stack (s4d_stack, 2 layers) at random widths and weight exponents, in one of four forms:
    as built -- the engine runs each cpx group with its B and C inside its kernel and keeps no messages of
    it (numpy_engine._fuse) where the widths allow -- or with something that keeps a part out of the
    kernel: a bias on the first cpx group (its B runs apart), an output reading it, or a second synapse
    group reading it (its messages are kept)."""
    rng = np.random.default_rng(seed)
    g = s4d_stack(H=int(rng.integers(2, 5)), M=int(rng.integers(1, 4)), layers=2, seed=seed)
    coef_bits, state_bits = int(rng.integers(8, 17)), int(rng.integers(10, 25))
    for op in g.ops_of_kind("neurons"):
        op.attrs.update(msg_bits=int(rng.integers(state_bits - 2, 26)), state_bits=state_bits)
        if op.attrs["kind"] == "cpx":
            op.attrs["coef_bits"] = coef_bits
            for key in ("c_re", "c_im"):  # |c| < 2^15 in s4d_stack: |c| < 1 kept at the new width
                op.params[key] = op.params[key] >> (16 - coef_bits)
    for op in g.ops_of_kind("synapses"):
        op.attrs["weight_exp"] = int(rng.integers(-8, 2))
    first = g.op("s0.pairs")
    size = first.attrs["size"]
    if seed % 4 == 1:
        first.params["bias"] = rng.integers(-50, 50, size).astype(np.int64)
    elif seed % 4 == 2:
        g.add(Op("y_pairs", "output", ("s0.pairs",), shape=(size,)))
    elif seed % 4 == 3:
        w = rng.integers(-100, 100, size=(2, size)).astype(np.int32)
        g.add(Op("tap.syn", "synapses", ("s0.pairs",), {"weight_bits": 8, "weight_exp": -6}, {"weight": w}, shape=(2,)))
        g.add(Op("tap", "neurons", ("tap.syn",), {"kind": "relay", "size": 2, "frac": 16}, shape=(2,)))
        g.add(Op("y_tap", "output", ("tap",), shape=(2,)))
    set_depths(g)
    verify(g)
    return g


@pytest.mark.parametrize("seed", range(8))
def test_cpx_groups_forming_their_synapse_groups_equal_the_scalar_contract(monkeypatch, seed):
    # The fused kernel runs each sequence's steps with its state in cache, forms B's outputs from the
    # messages and C's from the states, and without traces writes no messages: every output, count and
    # sparsity stays the contract's, in chunks of any length, in threads, traced or not.
    g = fused_s4d_network(seed)
    x = np.random.default_rng(700 + seed).normal(scale=[0.01, 1.0, 100.0][seed % 3], size=(3, 6, 1))
    ref = run_reference(g, x)
    assert_same_result(run_numpy(g, x, trace=True), run_reference(g, x, trace=True))
    assert_same_result(run_numpy(g, x), ref)
    for chunk in (1, 2, 3):
        monkeypatch.setattr(numpy_engine, "chunk_steps", lambda *args, chunk=chunk: chunk)
        assert_same_result(run_numpy(g, x), ref)
    monkeypatch.setattr(parallel, "THREAD_SEQUENCES", 1)
    monkeypatch.setattr(parallel, "cores", lambda: 2)
    assert_same_result(run_numpy(g, x), ref)


def test_the_fused_networks_reach_every_form_of_fusion():
    forms = set()
    for seed in range(8):
        net = prepare(fused_s4d_network(seed))
        forms |= {
            (g.fused_in is not None, g.fused_out is not None, g.unread) for g in net.groups.values() if g.kind == "cpx"
        }
    # B and C in the kernel, messages kept or not; B apart (a bias); C apart (the state is not the message)
    assert {(True, True, True), (True, True, False), (False, True, True), (True, False, False)} <= forms
