"""fuse-complex-pairs: each discrete S4D layer -> complex-pair neurons between two linears.

    s4d(u)  ->  add( linear_C( cpx( linear_B(u) ) ), linear_D(u) )

`cpx` holds one neuron pair (re, im compartments, interleaved) per complex
mode, M per channel; conjugate modes are not duplicated: the readout linear
carries the factor 2 of y = 2 Re(C x) (weights 2 Re C on re, -2 Im C on im).
linear_B routes channel h to its modes with weights (Re B_bar, Im B_bar);
linear_D is the diagonal skip, left out when D is zero.
Changes: replaces every discrete `s4d` op. Guarantees: float outputs are
unchanged; continuous layers are refused (run discretize first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ssmc.errors import PassError
from ssmc.ir.graph import Graph, Op
from ssmc.passes.base import Pass, log


def pair_weights(A_bar: np.ndarray, B_bar: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, ...]:
    """(W_B [2HM, H], a_re [HM], a_im [HM], W_C [H, 2HM]) for one layer."""
    H, M = A_bar.shape
    W_B = np.zeros((2 * H * M, H))
    W_C = np.zeros((H, 2 * H * M))
    for h in range(H):
        rows = 2 * (h * M + np.arange(M))
        W_B[rows, h] = B_bar[h].real
        W_B[rows + 1, h] = B_bar[h].imag
        W_C[h, rows] = 2 * C[h].real
        W_C[h, rows + 1] = -2 * C[h].imag
    return W_B, A_bar.real.reshape(-1), A_bar.imag.reshape(-1), W_C


def fuse_op(graph: Graph, op: Op) -> None:
    H, M = op.params["C"].shape
    u = op.inputs[0]
    W_B, a_re, a_im, W_C = pair_weights(op.params["A_bar"].astype(np.complex128),
                                        op.params["B_bar"].astype(np.complex128),
                                        op.params["C"].astype(np.complex128))
    lin_b = graph.add(Op(graph.fresh_name(f"{op.name}.B"), "linear", (u,),
                         params={"weight": W_B.astype(np.float32)}, shape=(2 * H * M,)))
    pairs = graph.add(Op(graph.fresh_name(f"{op.name}.pairs"), "cpx", (lin_b.name,), attrs={"modes": H * M},
                         params={"a_re": a_re.astype(np.float32), "a_im": a_im.astype(np.float32)},
                         shape=(2 * H * M,)))
    out = graph.add(Op(graph.fresh_name(f"{op.name}.C"), "linear", (pairs.name,),
                       params={"weight": W_C.astype(np.float32)}, shape=(H,)))
    D = op.params["D"]
    if np.any(D != 0):
        lin_d = graph.add(Op(graph.fresh_name(f"{op.name}.D"), "linear", (u,),
                             params={"weight": np.diag(D).astype(np.float32)}, shape=(H,)))
        out = graph.add(Op(graph.fresh_name(f"{op.name}.sum"), "add", (out.name, lin_d.name), shape=(H,)))
    graph.replace_uses(op.name, out.name)
    graph.remove(op.name)
    log.info(f"%{op.name}: {H * M} complex neuron pairs ({2 * H * M} compartments), readout {H}")


@dataclass(frozen=True)
class FuseComplexPairs(Pass):
    name: ClassVar[str] = "fuse-complex-pairs"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        layers = graph.ops_of_kind("s4d")
        for op in layers:
            if op.attrs["form"] != "discrete":
                raise PassError(f"%{op.name} (s4d) is continuous: run discretize before fuse-complex-pairs")
            fuse_op(graph, op)
        return graph, bool(layers)
