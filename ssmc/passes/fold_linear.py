"""fold-linear: merge a linear into the linears that read it, when that costs less.

On the chip every linear is a synapse group and every value between two
linears needs a group of relay neurons. A linear L1 whose every consumer is a
linear Li can be folded into them (Wi <- Wi W1, bi <- Wi b1 + bi) and removed.
The cost model counts non-zero synapses plus relay neurons:
before = nnz(W1) + sum nnz(Wi) + size(L1), after = sum nnz(Wi W1). It folds
when after <= before and says what it did and why.
Changes: removes folded linears, rewrites their consumers. Guarantees: float
outputs are unchanged up to rounding; linears read by anything else stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ssmc.ir.graph import Graph, Op
from ssmc.passes.base import Pass, PassError, log


def _nnz(w: np.ndarray) -> int:
    return int(np.count_nonzero(w))


def fold_into_consumers(graph: Graph, first: Op, max_ratio: float = 1.0) -> bool:
    users = graph.consumers(first.name)
    if not users or any(u.kind != "linear" for u in users):
        return False
    W1 = first.params["weight"].astype(np.float64)
    b1 = first.params.get("bias")
    folded = [u.params["weight"].astype(np.float64) @ W1 for u in users]
    before = _nnz(W1) + sum(_nnz(u.params["weight"]) for u in users) + W1.shape[0]
    after = sum(_nnz(w) for w in folded)
    if after > max_ratio * before:
        log.info(f"%{first.name}: kept ({after} synapses if folded > {before} synapses + relay neurons now)")
        return False
    biases = []
    for u in users:
        bias = u.params.get("bias")
        new_bias = None
        if b1 is not None:
            new_bias = u.params["weight"].astype(np.float64) @ b1.astype(np.float64)
        if bias is not None:
            new_bias = bias.astype(np.float64) if new_bias is None else new_bias + bias
        biases.append(new_bias)
    f32_max = float(np.finfo(np.float32).max)
    if not all(np.all(np.abs(a) <= f32_max) for a in folded + [b for b in biases if b is not None]):
        log.info(f"%{first.name}: kept (folded weights or biases would overflow float32)")  # also inf/NaN
        return False
    for u, W, new_bias in zip(users, folded, biases):
        u.params = {"weight": W.astype(np.float32)}
        if new_bias is not None:
            u.params["bias"] = new_bias.astype(np.float32)
        graph.set_inputs(u.name, first.inputs)
    graph.remove(first.name)
    log.info(
        f"%{first.name}: folded into {', '.join('%' + u.name for u in users)} "
        f"({before} synapses + relay neurons -> {after} synapses)"
    )
    return True


@dataclass(frozen=True)
class FoldLinear(Pass):
    name: ClassVar[str] = "fold-linear"
    max_ratio: float = 1.0
    """Fold when the folded cost is at most this times the unfolded cost."""

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        if not self.max_ratio >= 0:  # nan compared false everywhere and folded every linear
            raise PassError(
                f"fold-linear: max-ratio = {self.max_ratio}; give a number >= 0 (0: never fold, inf: always)"
            )
        changed = False
        progress = True
        while progress:
            progress = False
            for op in graph.ops_of_kind("linear"):
                if op.name in graph and fold_into_consumers(graph, op, self.max_ratio):
                    changed = progress = True
        return graph, changed
