"""rescale-states: choose each mode's free complex scale so B is real and the layer quantizes well.

A diagonal SSM is unchanged by the similarity x~ = s x (s complex, per mode):
x~' = A_bar x~ + (s B_bar) u, y = 2 Re((C / s) x~) + D u. This pass picks
s = conj(B_bar) / |B_bar| * r so that the input coefficient becomes real and
positive (the input then drives only the real compartment), and r by `balance`:

- "input" (default): r = 1 / |B_bar|, so every input weight is exactly 1: the
  input synapses quantize without error and the readout weights C carry all
  per-mode scaling. States keep their natural ranges; assign-bitwidths sizes
  the layer's state format from the largest, without saturating.
- "state": r makes every mode's largest state magnitude `target` (measured on
  calibration data when given, else the bound |B_bar| / (1 - |A_bar|) for
  |u| <= 1), so each state fills its range evenly; input weights then differ.

Measured on the digits example (benchmarks/results/bitwidth_ablation.md): at
8-bit weights "input" loses nothing, "state" 0.2 points, no rescaling 0.4; at
6-bit weights no rescaling does best (-1.1), "input" -2.7, "state" -62: with
few weight bits the readout C, which carries all per-mode scaling, suffers.
Those figures are one weight exponent per linear; assign-bitwidths' default
`weight-exp=auto` (per-row exponents, and per-mode scale moved back from C to
B where the calibration error says so) brings 6-bit "input" to -0.4 points.
A layer whose modes are shared by all channels (S5, LRU: B_bar [P, H]) cannot make
every input weight real with one factor per mode: its modes get the largest input
weight of their row real (1 with "input"), the others stay complex.
Changes: B_bar and C of every discrete `s4d` op. Guarantees: float outputs are
unchanged (up to float rounding); A_bar and D are untouched; modes with
B_bar = 0 (never driven) are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ssmc.ir.graph import Graph, Op
from ssmc.ir.ssm import is_dense
from ssmc.passes.base import Pass, PassError, data_field, log
from ssmc.runtime.calibrate import measure_ranges


def mode_scales(op: Op, state_max: np.ndarray | None, target: float, balance: str = "input") -> np.ndarray:
    """The per-mode complex similarity s [H, M] ([P] for modes shared by all channels)."""
    A_bar = op.params["A_bar"].astype(np.complex128)
    B_bar = op.params["B_bar"].astype(np.complex128)
    if is_dense(op):
        return _shared_mode_scales(A_bar, B_bar, state_max, target, balance)
    mag_b = np.abs(B_bar)
    # |x| <= |B_bar| max|u| / (1 - |A_bar|) for |u| <= 1
    return _scales(B_bar, lambda: mag_b / np.maximum(1.0 - np.abs(A_bar), 1e-12), state_max, target, balance)


def _shared_mode_scales(A_bar, B_bar, state_max, target, balance) -> np.ndarray:
    """s [P] for modes read from every channel (B_bar [P, H]): one complex factor cannot make a whole row
    real, so it makes the row's largest entry real and positive, and 1 (balance=input) or the peak state
    `target` (balance=state; bound |x| <= sum_h |B_bar| / (1 - |A_bar|) for |u| <= 1)."""
    mag = np.abs(B_bar)
    largest = B_bar[np.arange(len(B_bar)), mag.argmax(axis=1)] if B_bar.size else np.zeros(len(B_bar))
    return _scales(
        largest, lambda: mag.sum(axis=1) / np.maximum(1.0 - np.abs(A_bar), 1e-12), state_max, target, balance
    )


def _scales(ref: np.ndarray, peak_bound, state_max, target: float, balance: str) -> np.ndarray:
    """The similarity that makes each reference input weight `ref` real and positive, scaled to 1 (balance=input)
    or so the peak state is `target` (balance=state: the measured `state_max`, else `peak_bound()`)."""
    mag = np.abs(ref)
    driven = mag > 0
    phase = np.where(driven, np.conj(ref) / np.where(driven, mag, 1.0), 1.0)
    if balance == "input":
        return phase * np.where(driven, 1.0 / np.where(driven, mag, 1.0), 1.0)
    peak = np.asarray(state_max, dtype=np.float64) if state_max is not None else peak_bound()
    return phase * np.where(driven & (peak > 0), target / np.where(peak > 0, peak, 1.0), 1.0)


def rescale_op(op: Op, s: np.ndarray) -> None:
    if is_dense(op):  # B_bar [P, H], C [H, P]: the rows of B and columns of C of each mode
        op.params["B_bar"] = (op.params["B_bar"].astype(np.complex128) * s[:, None]).astype(np.complex64)
        op.params["C"] = (op.params["C"].astype(np.complex128) / s[None, :]).astype(np.complex64)
        return
    B_bar = op.params["B_bar"].astype(np.complex128) * s
    op.params["B_bar"] = B_bar.real.astype(np.complex64)  # real by construction: drop the rounding residue
    op.params["C"] = (op.params["C"].astype(np.complex128) / s).astype(np.complex64)


@dataclass(frozen=True)
class RescaleStates(Pass):
    name: ClassVar[str] = "rescale-states"
    balance: str = "input"
    """"input": every input weight 1; "state": every mode's peak state = target."""
    target: float = 1.0
    """Largest state magnitude each mode is scaled to (balance=state)."""
    calibration: object = data_field("calibration sequences [n, tokens, features]")

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        if self.balance not in ("input", "state"):
            raise PassError(f"rescale-states: balance must be 'input' or 'state', got {self.balance!r}")
        layers = graph.ops_of_kind("s4d")
        if any(op.attrs["form"] != "discrete" for op in layers):
            raise PassError("rescale-states needs discrete S4D layers: run discretize first")
        use_data = self.balance == "state" and self.calibration is not None
        ranges = measure_ranges(graph, self.calibration) if use_data else None
        for op in layers:
            state_max = ranges.state(op.name) if ranges else None
            s = mode_scales(op, state_max, self.target, self.balance)
            rescale_op(op, s)
            if self.balance == "input":
                how = "largest input weight 1" if is_dense(op) else "input weights 1"
            else:
                how = f"max |x| = {self.target} from " + ("calibrated state ranges" if ranges else "the analytic bound")
            made = "the largest input weight of each mode made real" if is_dense(op) else "B made real"
            log.info(
                f"%{op.name}: {made}, modes scaled to {how} "
                f"(scale factors {np.abs(s).min():.3g}..{np.abs(s).max():.3g})"
            )
        return graph, bool(layers)
