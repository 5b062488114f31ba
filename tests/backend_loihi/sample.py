"""A small valid net for the bundle tests, importable from a separate process.

input [3] -> linear [4] -> s4d (discrete, 2 modes) -> relu -> output
"""

import numpy as np

from ssmc.backend_loihi.bundle import Bundle
from ssmc.config import CompileConfig
from ssmc.ir.graph import Graph, Op


def make_graph() -> Graph:
    rng = np.random.default_rng(1234)
    H, M = 4, 2

    def c64(shape, scale):
        arr = np.empty(shape, np.complex64)
        arr.real = rng.uniform(-scale, scale, shape)
        arr.imag = rng.uniform(-scale, scale, shape)
        return arr

    g = Graph("sample", attrs={"source_sha256": "0" * 64})
    g.add(Op("x", "input", attrs={"size": 3}, shape=(3,)))
    g.add(
        Op(
            "enc",
            "linear",
            ("x",),
            params={
                "weight": rng.standard_normal((H, 3)).astype(np.float32),
                "bias": np.array([0.5, -0.0, 1e-40, -2.0], np.float32),
            },
            shape=(H,),
        )
    )
    g.add(
        Op(
            "ssm",
            "s4d",
            ("enc",),
            attrs={"form": "discrete", "modes": M},
            params={
                "A_bar": c64((H, M), 0.7),
                "B_bar": c64((H, M), 1.0),
                "C": c64((H, M), 1.0),
                "D": rng.standard_normal(H).astype(np.float32),
            },
            shape=(H,),
        )
    )
    g.add(Op("act", "activation", ("ssm",), attrs={"fn": "relu"}, shape=(H,)))
    g.add(Op("y", "output", ("act",), shape=(H,)))
    return g


def make_bundle() -> Bundle:
    return Bundle(
        graph=make_graph(),
        source={"file": "sample.onnx", "sha256": "ab" * 32, "bytes": 4096},
        pipeline="canonicalize",
        config=CompileConfig(passes="canonicalize", readout="none", weight_bits=6),
        report={
            "import": {"model_name": "sample", "layers": [{"name": "enc", "notes": ["µ-law", "ok"]}]},
            "passes": [{"name": "canonicalize", "spec": "canonicalize", "changed": False}],
        },
    )
