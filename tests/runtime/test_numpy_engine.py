"""The numpy engine computes what docs/fixed_point.md says, step by step.

Expectations come from hand-worked tiny cases or from the reference
implementation (ssmc/runtime/reference.py, a slow per-neuron, per-step
Python-int transcription of the contract that shares no code with the engine
but the helpers sat, shr and rshr, which tests/ir/test_fixed_point.py checks
against their definitions in exact rational arithmetic).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssmc.errors import InputDataError, IRError
from ssmc.ir import Graph, Op
from ssmc.runtime.numpy_engine import EngineResult, run_numpy
from ssmc.runtime.reference import run_reference


# -- building neuro-level graphs by hand ------------------------------------------------
class Net:
    """A tiny builder: Net(features) has an input %x and a source group %src."""

    def __init__(self, features: int = 1, frac: int = 0, msg_bits: int = 24, name: str = "t"):
        self.g = Graph(name)
        self.g.add(Op("x", "input", attrs={"size": features}, shape=(features,)))
        self.g.add(
            Op(
                "src",
                "neurons",
                ("x",),
                attrs={"kind": "source", "size": features, "frac": frac, "msg_bits": msg_bits},
                shape=(features,),
            )
        )

    def syn(self, name: str, pre: str, weight, exp: int = 0, delay: int = 1, bits: int = 8) -> str:
        w = np.asarray(weight, dtype=np.int32).reshape(len(weight), -1)
        self.g.add(
            Op(
                name,
                "synapses",
                (pre,),
                attrs={"weight_bits": bits, "weight_exp": exp, "delay": delay},
                params={"weight": w},
                shape=(w.shape[0],),
            )
        )
        return name

    def neurons(self, name: str, kind: str, inputs, size: int, depth: int, bias=None, c=None, **attrs) -> str:
        params = {}
        if bias is not None:
            params["bias"] = np.asarray(bias, dtype=np.int64)
        if c is not None:
            params["c_re"] = np.asarray(c[0], dtype=np.int64)
            params["c_im"] = np.asarray(c[1], dtype=np.int64)
        attrs = {"kind": kind, "size": size, "frac": 0, "depth": depth, **attrs}
        self.g.add(Op(name, "neurons", tuple(inputs), attrs=attrs, params=params, shape=(size,)))
        return name

    def output(self, group: str, name: str = "y") -> Graph:
        self.g.add(Op(name, "output", (group,), shape=self.g.op(group).shape))
        return self.g


def seq(*tokens) -> np.ndarray:
    """One sequence of scalar tokens: [1, tokens, 1]."""
    return np.asarray(tokens, dtype=np.float64).reshape(1, -1, 1)


# -- source quantization ------------------------------------------------------------------
def test_source_rounds_to_nearest_with_ties_up():
    g = Net(frac=2).output("src")
    x = seq(0.125, -0.125, 0.3, -0.375, -0.3, 1.0, 0.0)  # *4: 0.5, -0.5, 1.2, -1.5, -1.2, 4, 0
    res = run_numpy(g, x)
    assert res.raw["y"][0, :, 0].tolist() == [1, 0, 1, -1, -1, 4, 0]
    np.testing.assert_array_equal(res.outputs["y"][0, :, 0], np.array([1, 0, 1, -1, -1, 4, 0]) / 4)
    assert res.saturation["src"] == {"accumulator": 0, "state": 0, "message": 0}


def test_source_rounding_is_exact_just_below_a_half():
    # 0.49999999999999994 + 0.5 rounds to 1.0 in float64; the contract's floor(x + 1/2) is 0.
    g = Net(frac=0).output("src")
    below_half = np.nextafter(0.5, 0.0)
    assert run_numpy(g, seq(below_half, -below_half, 2.5 - 2**-51)).raw["y"][0, :, 0].tolist() == [0, 0, 2]


def test_source_saturates_huge_values_and_counts_them():
    g = Net(frac=4, msg_bits=8).output("src")
    # * 16 + 1/2, floored: 1600, -1600, 128, 127, -128, -128 (from -128.5 + 1/2), -129, +-1.6e11
    # (1e10 is the largest |input| ssmc takes: ssmc.limits.MAX_ABS_INPUT)
    x = seq(100.0, -100.0, 127.5 / 16, 127.0 / 16, -8.0, -8.03125, -8.0625, 1e10, -1e10)
    res = run_numpy(g, x)
    assert res.raw["y"][0, :, 0].tolist() == [127, -128, 127, 127, -128, -128, -128, 127, -128]
    assert res.saturation["src"]["message"] == 6


def test_source_emits_zero_after_the_last_token():
    net = Net(frac=0)
    net.neurons("late", "relay", [net.syn("s", "src", [[1]], delay=3)], 1, depth=3)
    res = run_numpy(net.output("late"), seq(5, 6), trace=True)
    assert res.steps == 5
    assert res.trace["src"][0, :, 0].tolist() == [5, 6, 0, 0, 0]
    assert res.trace["late"][0, :, 0].tolist() == [0, 0, 0, 5, 6]


# -- synapses ------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [1, 2, 3, 5])
def test_a_synapse_delivers_exactly_delay_steps_later(delay):
    net = Net()
    net.neurons("r", "relay", [net.syn("s", "src", [[1]], delay=delay)], 1, depth=delay)
    res = run_numpy(net.output("r"), seq(0, 0, 7, 0, 0, 0), trace=True)
    got = res.trace["r"][0, :, 0]
    assert got.tolist() == [7 if t == 2 + delay else 0 for t in range(res.steps)]
    assert res.raw["y"][0, :, 0].tolist() == [0, 0, 7, 0, 0, 0]


@pytest.mark.parametrize(
    "message, weight, exp, expected",
    [
        (5, 3, 2, 60),  # (5 * 3) << 2
        (-5, 3, 1, -30),
        (-3, 1, -1, -2),  # floor(-1.5): numpy >>, not truncation
        (3, 1, -1, 1),
        (-1, 1, -4, -1),
        (1, 1, -4, 0),
        (-7, 9, -3, -8),  # floor(-63 / 8) = floor(-7.875)
    ],
)
def test_weight_exp_shifts_left_or_floors_right(message, weight, exp, expected):
    net = Net()
    net.neurons("r", "relay", [net.syn("s", "src", [[weight]], exp=exp)], 1, depth=1)
    assert run_numpy(net.output("r"), seq(message)).raw["y"][0, 0, 0] == expected


def test_synapse_outputs_saturate_at_32_bits_and_are_counted():
    net = Net(msg_bits=32)
    net.neurons("r", "relay", [net.syn("s", "src", [[127], [-128], [1]])], 3, depth=1, msg_bits=32)
    res = run_numpy(net.output("r"), seq(2**30))
    assert res.raw["y"][0, 0].tolist() == [2**31 - 1, -(2**31), 2**30]
    assert res.saturation["r"] == {"accumulator": 2, "state": 0, "message": 0}


def test_the_dendritic_sum_saturates_at_32_bits_and_is_counted():
    # Each synapse output fits in 32 bits; their sum (plus bias) does not.
    net = Net(msg_bits=32)
    a, b = net.syn("a", "src", [[96], [-96]]), net.syn("b", "src", [[96], [-96]])
    net.neurons("r", "relay", [a, b], 2, depth=1, msg_bits=32, bias=[10, -10])
    res = run_numpy(net.output("r"), seq(2**24))
    assert res.raw["y"][0, 0].tolist() == [2**31 - 1, -(2**31)]
    assert res.saturation["r"]["accumulator"] == 2


def test_a_huge_left_shift_saturates_instead_of_overflowing():
    net = Net(msg_bits=32)
    net.neurons("r", "relay", [net.syn("s", "src", [[127], [-128], [0]], exp=40)], 3, depth=1, msg_bits=32)
    res = run_numpy(net.output("r"), seq(2**31 - 1, -1, 0))
    assert res.raw["y"][0, 0].tolist() == [2**31 - 1, -(2**31), 0]
    assert res.raw["y"][0, 1].tolist() == [-(2**31), 2**31 - 1, 0]
    assert res.saturation["r"]["accumulator"] == 4


def test_dot_products_beyond_float64_precision_stay_exact():
    # Partial sums near 2**55 (float64 would drop their low bits) cancel to a small exact result.
    half = 2**17
    rng = np.random.default_rng(0)
    big = rng.integers(2**29, 2**30, half) * 2 + 1  # odd, below 2**31
    x = np.concatenate([big, big - rng.integers(0, 3, half)])
    w = np.concatenate([np.full(half, 127), np.full(half, -127)])
    net = Net(features=2 * half, msg_bits=32)
    net.neurons("r", "relay", [net.syn("s", "src", w[None, :])], 1, depth=1, msg_bits=32)
    expected = sum(int(a) * int(b) for a, b in zip(w, x))
    assert 0 < expected < 2**31
    assert run_numpy(net.output("r"), x.reshape(1, 1, -1).astype(np.float64)).raw["y"][0, 0, 0] == expected


# -- relay, relu, bias, idle groups -----------------------------------------------------------
def test_relu_zeroes_negatives_and_bias_is_added_every_step():
    net = Net()
    net.neurons("r", "relu", [net.syn("s", "src", [[1], [-1]])], 2, depth=1, bias=[5, -2])
    res = run_numpy(net.output("r"), seq(-10, 3, 0, 7), trace=True)
    # step t reads token t - 1: inputs (-10, 10), (3, -3), (0, 0), (7, -7), plus bias (5, -2)
    assert res.trace["r"][0].tolist() == [[0, 0], [0, 8], [8, 0], [5, 0], [12, 0]]
    assert res.saturation["r"] == {"accumulator": 0, "state": 0, "message": 0}


def test_a_group_is_idle_before_its_depth():
    net = Net()
    net.neurons("acc", "integrator", [net.syn("s", "src", [[1]], delay=3)], 1, depth=3, bias=[2])
    res = run_numpy(net.output("acc"), seq(0, 0), trace=True)
    assert res.trace["acc"][0, :, 0].tolist() == [0, 0, 0, 2, 4]  # no bias integrated before step 3
    assert res.trace["acc.state"][0, :, 0].tolist() == [0, 0, 0, 2, 4]


def test_relay_messages_saturate_to_msg_bits_and_are_counted():
    net = Net()
    net.neurons("r", "relay", [net.syn("s", "src", [[1]])], 1, depth=1, msg_bits=4)
    res = run_numpy(net.output("r"), seq(7, 8, -8, -9, 100))
    assert res.raw["y"][0, :, 0].tolist() == [7, 7, -8, -8, 7]
    assert res.saturation["r"]["message"] == 3


# -- cpx ---------------------------------------------------------------------------------------
def rotating_mode(theta: float, radius: float = 0.9, coef_bits: int = 16):
    lim = 2 ** (coef_bits - 1)
    return [round(lim * radius * math.cos(theta))], [round(lim * radius * math.sin(theta))]


def test_a_cpx_mode_decays_and_rotates_like_the_contract():
    theta = 0.3
    net = Net()
    s = net.syn("s", "src", [[100], [0]])
    net.neurons("pair", "cpx", [s], 2, depth=1, c=rotating_mode(theta), state_bits=24, msg_bits=24)
    g = net.output("pair")
    x = seq(*([100] + [0] * 49))
    res = run_numpy(g, x, trace=True)
    ref = run_reference(g, x, trace=True)
    np.testing.assert_array_equal(res.trace["pair"], ref.trace["pair"])
    np.testing.assert_array_equal(res.trace["pair.state"], ref.trace["pair.state"])
    # and it is the complex recurrence x' = 0.9 e^{i theta} x, up to rounding
    z = res.raw["y"][0, :, 0] + 1j * res.raw["y"][0, :, 1]
    want = 10000 * (0.9 * np.exp(1j * theta)) ** np.arange(50)
    assert np.max(np.abs(z - want)) < 50
    assert res.saturation["pair"] == ref.saturation["pair"] == {"accumulator": 0, "state": 0, "message": 0}


@pytest.mark.parametrize("impulse, expected_next", [(1, 1), (-1, 0), (3, 2), (-3, -1), (5, 3), (-5, -2)])
def test_cpx_products_round_half_an_lsb_up(impulse, expected_next):
    # coef_bits 4: f = 3 and c_re = 4 stands for 0.5, so c_re * x = 4x is x/2 LSBs after the
    # shift: 0.5 -> 1, -0.5 -> 0, 1.5 -> 2, -1.5 -> -1, 2.5 -> 3, -2.5 -> -2 (ties up).
    net = Net()
    net.neurons("pair", "cpx", [net.syn("s", "src", [[1], [0]])], 2, depth=1, c=([4], [0]), coef_bits=4)
    res = run_numpy(net.output("pair"), seq(impulse, 0), trace=True)
    assert res.trace["pair.state"][0, 1].tolist() == [impulse, 0]
    assert res.trace["pair.state"][0, 2].tolist() == [expected_next, 0]


def test_cpx_messages_round_the_state_by_out_shift_ties_up():
    net = Net()
    net.neurons("pair", "cpx", [net.syn("s", "src", [[1], [-1]])], 2, depth=1, c=([0], [0]), out_shift=2)
    res = run_numpy(net.output("pair"), seq(6, 5, 2))  # states (6,-6) (5,-5) (2,-2): /4 = 1.5, 1.25, 0.5
    assert res.raw["y"][0].tolist() == [[2, -1], [1, -1], [1, 0]]


def test_cpx_state_saturates_at_state_bits_and_is_counted():
    net = Net()
    net.neurons(
        "pair", "cpx", [net.syn("s", "src", [[1], [1]])], 2, depth=1, c=([2**15 - 1], [0]), state_bits=8, msg_bits=8
    )
    res = run_numpy(net.output("pair"), seq(100, 100, 0))
    # step 2: ~1 * 100 + 100 = 200 clips (re and im); step 3: ~1 * 127 + 0 = 127 fits
    assert res.raw["y"][0].tolist() == [[100, 100], [127, 127], [127, 127]]
    assert res.saturation["pair"]["state"] == 2


# -- integrator and decoding --------------------------------------------------------------------
def test_an_integrator_accumulates_and_mean_decodes_by_token_index():
    net = Net(frac=3)
    net.neurons("acc", "integrator", [net.syn("s", "src", [[1]])], 1, depth=1, frac=3, decode="mean")
    res = run_numpy(net.output("acc"), seq(1.0, 2.0, 0.5, -1.0))
    assert res.raw["y"][0, :, 0].tolist() == [8, 24, 28, 20]
    np.testing.assert_allclose(res.outputs["y"][0, :, 0], [1.0, 3.0 / 2, 3.5 / 3, 2.5 / 4])


def test_an_integrator_state_saturates_and_is_counted():
    net = Net()
    net.neurons("acc", "integrator", [net.syn("s", "src", [[1]])], 1, depth=1, state_bits=6, out_shift=1)
    res = run_numpy(net.output("acc"), seq(20, 20, -100), trace=True)
    assert res.trace["acc.state"][0, 1:, 0].tolist() == [20, 31, -32]
    assert res.raw["y"][0, :, 0].tolist() == [10, 16, -16]  # rshr by 1: 15.5 -> 16, -16
    assert res.saturation["acc"]["state"] == 2


def test_outputs_are_read_at_token_plus_depth():
    net = Net(frac=1)
    r1 = net.neurons("r1", "relay", [net.syn("s1", "src", [[2]])], 1, depth=1, frac=1)
    net.neurons("r2", "relay", [net.syn("s2", r1, [[1]])], 1, depth=2, frac=2)
    g = net.output("r2")
    res = run_numpy(g, seq(0.5, 1.0, -1.5, 3.0), trace=True)
    assert res.steps == 6
    np.testing.assert_array_equal(res.raw["y"][0], res.trace["r2"][0, 2:6])
    assert res.raw["y"][0, :, 0].tolist() == [2, 4, -6, 12]
    np.testing.assert_allclose(res.outputs["y"][0, :, 0], [0.5, 1.0, -1.5, 3.0])  # frac 2: m / 4


def test_several_outputs_may_read_groups_at_different_depths():
    net = Net()
    net.neurons("r", "relay", [net.syn("s", "src", [[3]], delay=2)], 1, depth=2)
    net.g.add(Op("y_src", "output", ("src",), shape=(1,)))
    g = net.output("r")
    res = run_numpy(g, seq(1, 2, 3))
    assert res.raw["y_src"][0, :, 0].tolist() == [1, 2, 3]
    assert res.raw["y"][0, :, 0].tolist() == [3, 6, 9]


# -- whole random networks against the scalar reference -----------------------------------------
def random_weights(rng, post: int, pre: int, bits: int) -> np.ndarray:
    """Lava's convention: b-bit mixed-sign weights keep the low 9 - b bits of an 8-bit weight zero."""
    step = 2 ** (9 - bits)
    return rng.integers(-128 // step, 127 // step + 1, size=(post, pre)) * step


def random_network(seed: int) -> Graph:
    """source -> cpx -> relu -> relay -> output, a skip source -> relay, an integrator readout."""
    rng = np.random.default_rng(seed)
    F, M, H, O = (int(v) for v in rng.integers([1, 1, 1, 1], [3, 4, 5, 3]))
    d1, d2, d3, d4 = (int(v) for v in rng.integers(1, 4, size=4))
    msg_bits, state_bits = int(rng.integers(6, 33)), int(rng.integers(8, 33))
    coef_bits = int(rng.integers(6, 17))
    frac = lambda: int(rng.integers(0, 10))  # noqa: E731
    net = Net(F, frac=frac(), msg_bits=int(rng.integers(6, 33)), name=f"r{seed}")

    def syn(name, pre, post_size, pre_size, delay):
        bits = int(rng.integers(2, 9))
        return net.syn(
            name,
            pre,
            random_weights(rng, post_size, pre_size, bits),
            bits=bits,
            exp=int(rng.integers(-8, 9)),
            delay=delay,
        )

    lim = 2 ** (coef_bits - 1)
    r, th = rng.uniform(0.3, 0.999, M), rng.uniform(-np.pi, np.pi, M)
    c = (np.clip(np.round(r * np.cos(th) * lim), -lim, lim - 1), np.clip(np.round(r * np.sin(th) * lim), -lim, lim - 1))
    net.neurons(
        "pairs",
        "cpx",
        [syn("s1", "src", 2 * M, F, d1)],
        2 * M,
        depth=d1,
        c=c,
        coef_bits=coef_bits,
        msg_bits=msg_bits,
        state_bits=state_bits,
        out_shift=int(rng.integers(0, 4)),
        frac=frac(),
        bias=rng.integers(-20, 20, 2 * M) if seed % 2 else None,
    )
    net.neurons(
        "act",
        "relu",
        [syn("s2", "pairs", H, 2 * M, d2)],
        H,
        depth=d1 + d2,
        msg_bits=msg_bits,
        frac=frac(),
        bias=rng.integers(-300, 300, H),
    )
    net.neurons(
        "mix",
        "relay",
        [syn("s3", "act", H, H, d3), syn("skip", "src", H, F, d1 + d2 + d3)],
        H,
        depth=d1 + d2 + d3,
        msg_bits=msg_bits,
        frac=frac(),
    )
    net.neurons(
        "acc",
        "integrator",
        [syn("s4", "mix", O, H, d4)],
        O,
        depth=d1 + d2 + d3 + d4,
        msg_bits=msg_bits,
        state_bits=state_bits,
        out_shift=int(rng.integers(0, 3)),
        frac=frac(),
        decode="mean",
    )
    net.g.add(Op("mixed", "output", ("mix",), shape=(H,)))
    return net.output("acc")


@pytest.mark.parametrize("seed", range(16))
def test_random_networks_equal_the_scalar_contract_at_every_step(seed):
    g = random_network(seed)
    rng = np.random.default_rng(1000 + seed)
    scale = [0.01, 1.0, 30.0, 1e4][seed % 4]  # the large scales saturate everywhere
    x = rng.normal(scale=scale, size=(2, int(rng.integers(1, 7)), g.inputs()[0].shape[0]))
    res = run_numpy(g, x, trace=True)
    ref = run_reference(g, x, trace=True)
    assert res.steps == x.shape[1] + max(op.attrs.get("depth", 0) for op in g.ops_of_kind("neurons"))
    for op in g.ops_of_kind("neurons"):
        np.testing.assert_array_equal(res.trace[op.name], ref.trace[op.name], err_msg=op.name)
        if op.attrs["kind"] in ("cpx", "integrator"):
            np.testing.assert_array_equal(res.trace[f"{op.name}.state"], ref.trace[f"{op.name}.state"], err_msg=op.name)
    assert res.saturation == ref.saturation
    assert res.sparsity == ref.sparsity
    for out in g.outputs():
        grp = g.op(out.inputs[0])
        d, frac = grp.attrs.get("depth", 0), grp.attrs["frac"]
        want = ref.trace[grp.name][:, d : d + x.shape[1]]
        np.testing.assert_array_equal(res.raw[out.name], want)
        value = want / 2.0**frac
        if grp.attrs.get("decode") == "mean":
            value = value / np.arange(1, x.shape[1] + 1)[None, :, None]
        np.testing.assert_allclose(res.outputs[out.name], value, rtol=0, atol=0)


def test_saturation_happens_in_the_random_networks():
    # guards the test above: its large scales must actually exercise the clipping paths
    total = {"accumulator": 0, "state": 0, "message": 0}
    for seed in (3, 7, 11, 15):
        g = random_network(seed)
        x = np.random.default_rng(seed).normal(scale=1e4, size=(2, 5, g.inputs()[0].shape[0]))
        for c in run_numpy(g, x).saturation.values():
            for k, v in c.items():
                total[k] += v
    assert all(v > 0 for v in total.values()), total


def test_batch_rows_are_independent():
    g = random_network(4)
    x = np.random.default_rng(2).normal(scale=3.0, size=(4, 9, g.inputs()[0].shape[0]))
    together = run_numpy(g, x, trace=True)
    for b in range(4):
        alone = run_numpy(g, x[b : b + 1], trace=True)
        for name, arr in alone.trace.items():
            np.testing.assert_array_equal(together.trace[name][b], arr[0], err_msg=name)
        for name in alone.raw:
            np.testing.assert_array_equal(together.raw[name][b], alone.raw[name][0])
            np.testing.assert_array_equal(together.outputs[name][b], alone.outputs[name][0])


def test_results_have_the_documented_shapes_and_types():
    g = random_network(2)
    x = np.zeros((3, 4, g.inputs()[0].shape[0]), dtype=np.float32)
    res = run_numpy(g, x)
    assert isinstance(res, EngineResult) and res.trace is None
    assert set(res.outputs) == set(res.raw) == {"y", "mixed"}
    for name, arr in res.raw.items():
        assert arr.dtype == np.int64 and res.outputs[name].dtype == np.float64
        assert arr.shape == (3, 4, g.op(g.op(name).inputs[0]).attrs["size"])
    groups = {op.name for op in g.ops_of_kind("neurons")}
    assert set(res.saturation) == set(res.sparsity) == groups
    assert all(set(c) == {"accumulator", "state", "message"} for c in res.saturation.values())
    assert all(0.0 <= s <= 1.0 for s in res.sparsity.values())


def test_sparsity_counts_zero_messages_over_the_token_steps():
    net = Net()
    net.neurons("r", "relu", [net.syn("s", "src", [[1], [-1]], delay=2)], 2, depth=2)
    res = run_numpy(net.output("r"), seq(1, -1, 0, 2))
    # token steps 2..5 carry (1,0) (0,1) (0,0) (2,0): 5 zeros of 8; idle steps 0, 1 do not count
    assert res.sparsity["r"] == 5 / 8
    assert res.sparsity["src"] == 1 / 4


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 3)), "shape"),
        (np.zeros((1, 2, 3, 1)), "shape"),
        (np.zeros((1, 3, 2)), "feature"),
        (np.zeros((1, 0, 1)), "at least one"),
        (np.zeros((0, 3, 1)), "at least one"),
        (seq(1.0, np.nan), "NaN"),
        (seq(np.inf), "infinite"),
        (np.ones((1, 2, 1), dtype=np.complex128), "real"),
        (np.array([[["a"]]]), "real"),
        (np.ones((1, 2, 1), dtype=bool), "real"),
    ],
)
def test_bad_input_is_refused(bad, message):
    net = Net()
    net.neurons("r", "relay", [net.syn("s", "src", [[1]])], 1, depth=1)
    with pytest.raises(InputDataError, match=message):
        run_numpy(net.output("r"), bad)


def test_integer_and_float32_inputs_are_accepted():
    net = Net(frac=1)
    g = net.output("src")
    assert run_numpy(g, np.array([[[1], [-2]]], dtype=np.int32)).raw["y"][0, :, 0].tolist() == [2, -4]
    assert run_numpy(g, seq(0.25).astype(np.float32)).raw["y"][0, 0, 0] == 1  # 0.5 rounds up


def test_model_level_ops_are_refused_by_name():
    g = Graph("m")
    g.add(Op("x", "input", attrs={"size": 1}, shape=(1,)))
    g.add(Op("lin", "linear", ("x",), params={"weight": np.ones((1, 1), np.float32)}, shape=(1,)))
    g.add(Op("y", "output", ("lin",), shape=(1,)))
    with pytest.raises(IRError, match=r"%lin \(linear\).*run the fixed-point passes"):
        run_numpy(g, seq(1.0))


def test_an_output_reading_the_raw_input_is_refused():
    net = Net()
    net.g.add(Op("y", "output", ("x",), shape=(1,)))
    with pytest.raises(IRError, match="must read a neurons group"):
        run_numpy(net.g, seq(1.0))


def test_a_graph_that_does_not_verify_is_refused():
    net = Net()
    net.neurons("r", "relay", [net.syn("s", "src", [[1]], delay=0)], 1, depth=1)
    with pytest.raises(IRError, match="delay"):
        run_numpy(net.output("r"), seq(1.0))


# -- lut, product, sigma-delta messages -------------------------------------------------------
def test_a_lut_indexes_its_table_by_the_shifted_input_and_clips_at_the_ends():
    net = Net()
    s = net.syn("s", "src", [[1]])
    net.g.add(
        Op(
            "l",
            "neurons",
            (s,),
            attrs={"kind": "lut", "size": 1, "frac": 0, "depth": 1, "lut_shift": 1, "lut_lo": -2},
            params={"table": np.array([10, 20, 30, 40], np.int64)},
            shape=(1,),
        )
    )
    res = run_numpy(net.output("l"), seq(-5, -4, -1, 0, 3, 4))
    # floor(a / 2) - (-2) = -1, 0, 1, 2, 3, 4 -> clipped to 0..3
    assert res.raw["y"][0, :, 0].tolist() == [10, 10, 20, 30, 40, 40]
    assert res.saturation["l"]["message"] == 2


def test_a_product_multiplies_its_two_synapse_sums_and_rounds_ties_up():
    net = Net(features=2)
    a0 = net.syn("s0", "src", [[1, 0]])
    a1 = net.syn("s1", "src", [[0, 1]])
    net.neurons("p", "product", [a0, a1], 1, depth=1, out_shift=1)
    x = np.array([[[3, -5], [7, 1], [-3, 1], [0, 9]]], np.float64)
    # -15/2 -> -7 (ties up), 7/2 -> 4, -3/2 -> -1, 0
    assert run_numpy(net.output("p"), x).raw["y"][0, :, 0].tolist() == [-7, 4, -1, 0]


def test_a_sigma_delta_group_sends_changes_of_at_least_delta_and_receivers_sum_them():
    net = Net()
    net.neurons("r", "relay", [net.syn("s", "src", [[1]])], 1, depth=1, delta=3)
    net.neurons("q", "relay", [net.syn("t", "r", [[2]], exp=-1)], 1, depth=2)
    res = run_numpy(net.output("q"), seq(0, 1, 2, 5, 5, 4, -2), trace=True)
    assert res.trace["r"][0, 1:8, 0].tolist() == [0, 0, 0, 5, 0, 0, -7]  # changes since the last send
    assert res.trace["r.last"][0, 1:8, 0].tolist() == [0, 0, 0, 5, 5, 5, -2]
    # q sees shr(2 * last, 1) one step later: the receivers hold `last`
    assert res.raw["y"][0, :, 0].tolist() == [0, 0, 0, 5, 5, 5, -2]
    assert res.sparsity["r"] == 5 / 7


def test_a_sigma_synapse_keeps_delivering_its_sum_when_no_message_arrives():
    net = Net()
    net.neurons("r", "relay", [net.syn("s", "src", [[1]])], 1, depth=1, delta=1)
    net.neurons("q", "relay", [net.syn("t", "r", [[3]], exp=-1)], 1, depth=2)
    res = run_numpy(net.output("q"), seq(5, 5, 5, 0))
    assert res.raw["y"][0, :, 0].tolist() == [7, 7, 7, 0]  # floor(15 / 2), every step, from one message


def test_a_product_bias_adds_to_the_first_operand_only():
    net = Net(features=2)
    a0 = net.syn("s0", "src", [[1, 0]])
    a1 = net.syn("s1", "src", [[0, 1]])
    net.neurons("p", "product", [a0, a1], 1, depth=1, bias=[2])
    x = np.array([[[3, -5], [0, 4]]], np.float64)
    assert run_numpy(net.output("p"), x).raw["y"][0, :, 0].tolist() == [-25, 8]  # (3 + 2) * -5, (0 + 2) * 4
