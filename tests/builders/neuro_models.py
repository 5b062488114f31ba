"""Neuro-level S4D stacks built directly (no ONNX, no calibration): mapping benchmarks and tests.

`s4d_stack` writes what assign-bitwidths makes of an S4D network with
residuals: source -> encoder relay -> per layer [B synapses (one input per
compartment, from its channel) -> cpx (2*M compartments per channel) -> C
synapses (each channel's modes summed into one relu neuron) + D -> relu ->
mixing synapses (dense H x H) -> residual relay] -> integrator readout.
Weights are random non-zero integers; `rates[layer]` is recorded as the
measured message rate of that layer's cpx and relu groups (sigma-delta
layers send less), with `delta` set where the rate is below 1.
"""

from __future__ import annotations

import numpy as np

from ssmc.ir.graph import Graph, Op


def _w(rng, post, pre, density=1.0):
    w = rng.integers(1, 100, size=(post, pre)).astype(np.int32) * rng.choice([-1, 1], size=(post, pre)).astype(np.int32)
    if density < 1.0:
        w[rng.random((post, pre)) > density] = 0
    return w


def s4d_stack(
    H: int, M: int, layers: int, rates=None, n_in: int = 1, n_out: int = 10, seed: int = 0, dense: bool = False
) -> Graph:
    """dense: the layers' H*M modes are shared by all channels (S5/LRU): B [2HM, H] and C [H, 2HM] dense."""
    rng = np.random.default_rng(seed)
    rates = list(rates) if rates is not None else [1.0] * layers
    g = Graph("s4d_stack")
    g.add(Op("x", "input", attrs={"size": n_in}, shape=(n_in,)))
    g.add(Op("x.source", "neurons", ("x",), {"kind": "source", "size": n_in, "frac": 16}, shape=(n_in,)))
    g.add(
        Op(
            "enc.syn",
            "synapses",
            ("x.source",),
            {"weight_bits": 8, "delay": 1},
            {"weight": _w(rng, H, n_in)},
            shape=(H,),
        )
    )
    g.add(Op("enc", "neurons", ("enc.syn",), {"kind": "relay", "size": H, "frac": 16}, shape=(H,)))
    u = "enc"
    S = 2 * M * H
    chan = np.repeat(np.arange(H), 2 * M)
    for i in range(layers):
        r = float(rates[i])
        sd = {"delta": 1} if r < 1.0 else {}
        b = np.zeros((S, H), np.int32)
        b[np.arange(S), chan] = rng.integers(1, 100, S)
        if dense:
            b = _w(rng, S, H)
        g.add(Op(f"s{i}.B", "synapses", (u,), {"weight_bits": 8, "delay": 1}, {"weight": b}, shape=(S,)))
        g.add(
            Op(
                f"s{i}.pairs",
                "neurons",
                (f"s{i}.B",),
                {"kind": "cpx", "size": S, "frac": 16, "msg_rate": r, **sd},
                {
                    "c_re": rng.integers(0, 30000, S // 2).astype(np.int64),
                    "c_im": rng.integers(-30000, 30000, S // 2).astype(np.int64),
                },
                shape=(S,),
            )
        )
        c = np.zeros((H, S), np.int32)
        c[chan, np.arange(S)] = rng.integers(1, 100, S)
        if dense:
            c = _w(rng, H, S)
        g.add(Op(f"s{i}.C", "synapses", (f"s{i}.pairs",), {"weight_bits": 8, "delay": 1}, {"weight": c}, shape=(H,)))
        g.add(
            Op(
                f"s{i}.D",
                "synapses",
                (u,),
                {"weight_bits": 8, "delay": 2},
                {"weight": np.diag(rng.integers(1, 100, H)).astype(np.int32)},
                shape=(H,),
            )
        )
        g.add(
            Op(
                f"relu{i}",
                "neurons",
                (f"s{i}.C", f"s{i}.D"),
                {"kind": "relu", "size": H, "frac": 16, "msg_rate": r, **sd},
                shape=(H,),
            )
        )
        g.add(
            Op(
                f"mix{i}",
                "synapses",
                (f"relu{i}",),
                {"weight_bits": 8, "delay": 1},
                {"weight": _w(rng, H, H)},
                shape=(H,),
            )
        )
        g.add(
            Op(
                f"res{i}",
                "synapses",
                (u,),
                {"weight_bits": 8, "delay": 3},
                {"weight": np.diag(rng.integers(1, 100, H)).astype(np.int32)},
                shape=(H,),
            )
        )
        g.add(Op(f"add{i}", "neurons", (f"mix{i}", f"res{i}"), {"kind": "relay", "size": H, "frac": 16}, shape=(H,)))
        u = f"add{i}"
    g.add(Op("dec", "synapses", (u,), {"weight_bits": 8, "delay": 1}, {"weight": _w(rng, n_out, H)}, shape=(n_out,)))
    g.add(Op("readout", "neurons", ("dec",), {"kind": "integrator", "size": n_out, "frac": 16}, shape=(n_out,)))
    g.add(Op("y", "output", ("readout",), shape=(n_out,)))
    return g


def parameters(H: int, M: int, layers: int, n_in: int = 1, n_out: int = 10) -> int:
    """Trainable parameters of the float S4D model of this shape (A, B, C complex; log_dt, D; linears)."""
    per_layer = 3 * 2 * H * M + 2 * H + H * H + H
    return n_in * H + H + layers * per_layer + H * n_out + n_out
