"""discretize: continuous S4D parameters -> discrete (zero-order hold).

Changes: every `s4d` op with form "continuous" (log_dt, A, B) gets form
"discrete" with A_bar = exp(dt A), B_bar = (A_bar - 1) / A * B (dt per channel,
or per mode for a layer with modes shared by all channels), computed in
float64 and stored as complex64; C and D are kept.
Guarantees: the layer computes the same recurrence (the float reference uses
the same formula); already-discrete layers are untouched; a layer whose
discrete poles are not strictly inside the unit circle is refused, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ssmc.errors import UnsupportedModelError
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ssm import discrete_params
from ssmc.passes.base import Pass


def check_stable(op: Op, A_bar: np.ndarray) -> None:
    """Refuse poles on or outside the unit circle: a fixed-point state would grow without bound."""
    mag = np.abs(A_bar)
    if not np.all(np.isfinite(A_bar)):
        raise UnsupportedModelError(f"%{op.name} (s4d): A_bar has NaN or infinite values")
    if mag.max() >= 1.0:
        if mag.ndim == 1:  # modes shared by all channels (mixing = dense)
            at = f"mode {int(mag.argmax())}"
        else:
            h, m = np.unravel_index(int(mag.argmax()), mag.shape)
            at = f"channel {h}, mode {m}"
        raise UnsupportedModelError(
            f"%{op.name} (s4d): |A_bar| = {mag.max():.6g} >= 1 at {at}; "
            "the recurrence is not stable and cannot be run in fixed point "
            "(train with Re(A) < 0, or check log_dt)"
        )


def discretize_op(op: Op) -> None:
    A_bar, B_bar = discrete_params(op)
    check_stable(op, A_bar)
    op.params = {
        "A_bar": A_bar.astype(np.complex64),
        "B_bar": B_bar.astype(np.complex64),
        "C": op.params["C"],
        "D": op.params["D"],
    }
    op.attrs["form"] = "discrete"


@dataclass(frozen=True)
class Discretize(Pass):
    name: ClassVar[str] = "discretize"

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        changed = False
        for op in graph.ops_of_kind("s4d"):
            if op.attrs["form"] == "continuous":
                discretize_op(op)
                changed = True
            else:
                check_stable(op, op.params["A_bar"])
        return graph, changed
