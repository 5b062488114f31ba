"""sigma-delta: neuron groups send changes instead of values (docs/fixed_point.md).

Sets `delta` on the chosen neuron groups of the neuro-level IR: each sends
only changes of at least `delta` since its last send, and the synapse groups
reading it sum what arrives (sigma). With `threshold = 0` the threshold is
one LSB and no value anywhere changes (unless a change overflows the message
width, which is counted): only unchanged messages become zeros on the wire.
With `threshold > 0` each receiver holds its sender's message with hysteresis
`delta = round(threshold * 2**(msg_bits-1))` (a fraction of the group's full
scale), off by less than `delta` and never drifting: fewer messages, a
bounded approximation whose accuracy cost `benchmarks/sigma_delta.py`
measures. Changes: the `delta` attribute of groups of the chosen kinds, never
of groups an output reads (the host reads values, not changes). Guarantees:
the graph still verifies and every engine runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ssmc.ir.graph import Graph
from ssmc.ir.ops import NEURON_KINDS
from ssmc.passes.base import Pass, PassError, log


@dataclass(frozen=True)
class SigmaDelta(Pass):
    name: ClassVar[str] = "sigma-delta"
    threshold: float = 0.0
    """Send a change only when it is at least this fraction of the group's full message scale (0: any change)."""
    kinds: str = "cpx,relu,relay,lut,product"
    """Neuron kinds that send sigma-delta messages ('+'- or ','-separated; 'source' and 'integrator' are allowed)."""

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        if not 0.0 <= self.threshold < 1.0:
            raise PassError(
                f"sigma-delta: threshold = {self.threshold} must be in [0, 1): a fraction of each "
                "group's full message scale"
            )
        kinds = {k.strip() for k in self.kinds.replace("+", ",").split(",") if k.strip()}
        unknown = kinds - set(NEURON_KINDS)
        if unknown:
            raise PassError(
                f"sigma-delta: unknown neuron kind(s) {', '.join(sorted(unknown))}; kinds are {', '.join(NEURON_KINDS)}"
            )
        groups = graph.ops_of_kind("neurons")
        if not groups:
            raise PassError("sigma-delta works on neuron groups: run it after assign-bitwidths")
        read_by_host = {out.inputs[0] for out in graph.outputs()}
        changed = []
        for op in groups:
            if op.attrs["kind"] not in kinds or op.name in read_by_host:
                continue
            full_scale = 1 << (int(op.attrs.get("msg_bits", 24)) - 1)
            delta = max(1, round(self.threshold * full_scale))
            if op.attrs.get("delta", 0) != delta:
                op.attrs["delta"] = delta
                changed.append(f"%{op.name} {delta}")
        if changed:
            log.info(f"sigma-delta thresholds (message LSBs): {', '.join(changed)}")
        return graph, bool(changed)
