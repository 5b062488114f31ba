"""fuse-complex-pairs: each discrete S4D layer -> complex-pair neurons between two linears.

    s4d(u)  ->  add( linear_C( cpx( linear_B(u) ) ), linear_D(u) )

`cpx` holds one neuron pair (re, im compartments, interleaved) per complex
mode, M per channel; conjugate modes are not duplicated: the readout linear
carries the factor 2 of y = 2 Re(C x) (weights 2 Re C on re, -2 Im C on im).
linear_B routes channel h to its modes with weights (Re B_bar, Im B_bar);
linear_D is the diagonal skip, left out when D is zero. A layer with modes shared
by all channels (S5, LRU) is the same with dense linear_B [2P, H] and linear_C
[H, 2P]; an S4D layer is its block-structured case (mode h*M + m).
Changes: replaces every discrete `s4d` op. Guarantees: float outputs are
unchanged; continuous layers are refused (run discretize first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ssmc.errors import PassError
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ssm import is_dense, shared_form
from ssmc.passes.base import Pass, log


def pair_weights(A_bar: np.ndarray, B_bar: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, ...]:
    """(W_B [2P, H], a_re [P], a_im [P], W_C [H, 2P]) for one layer in the shared form (A_bar [P],
    B_bar [P, H], C [H, P]; ssmc.ir.ssm.shared_form), mode p on compartments 2p (re) and 2p + 1 (im)."""
    P, H = B_bar.shape
    W_B = np.zeros((2 * P, H))
    W_C = np.zeros((C.shape[0], 2 * P))
    W_B[0::2], W_B[1::2] = B_bar.real, B_bar.imag
    W_C[:, 0::2], W_C[:, 1::2] = 2 * C.real, -2 * C.imag
    return W_B, A_bar.real, A_bar.imag, W_C


def fuse_op(graph: Graph, op: Op) -> None:
    H = op.shape[0]
    u = op.inputs[0]
    W_B, a_re, a_im, W_C = pair_weights(*shared_form(op))
    P = a_re.size
    lin_b = graph.add(
        Op(graph.fresh_name(f"{op.name}.B"), "linear", (u,), params={"weight": W_B.astype(np.float32)}, shape=(2 * P,))
    )
    pairs = graph.add(
        Op(
            graph.fresh_name(f"{op.name}.pairs"),
            "cpx",
            (lin_b.name,),
            attrs={"modes": P},
            params={"a_re": a_re.astype(np.float32), "a_im": a_im.astype(np.float32)},
            shape=(2 * P,),
        )
    )
    out = graph.add(
        Op(
            graph.fresh_name(f"{op.name}.C"),
            "linear",
            (pairs.name,),
            params={"weight": W_C.astype(np.float32)},
            shape=(H,),
        )
    )
    D = op.params["D"]
    if np.any(D != 0):
        lin_d = graph.add(
            Op(
                graph.fresh_name(f"{op.name}.D"),
                "linear",
                (u,),
                params={"weight": np.diag(D).astype(np.float32)},
                shape=(H,),
            )
        )
        out = graph.add(Op(graph.fresh_name(f"{op.name}.sum"), "add", (out.name, lin_d.name), shape=(H,)))
    graph.replace_uses(op.name, out.name)
    graph.remove(op.name)
    log.info(
        f"%{op.name}: {P} complex neuron pairs ({2 * P} compartments), readout {H}"
        + (f", input and readout dense over the {H} channels" if is_dense(op) else "")
    )


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
