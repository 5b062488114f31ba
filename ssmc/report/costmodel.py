"""Estimated cost per token: latency, energy, messages, synaptic ops. ESTIMATES, not measurements.

No per-operation Loihi 2 figures are public (LOIHI2_FACTS.md #44, #56), so
every constant here is cited with its row and labelled: Loihi 2 throughput
figures derived from Hala Point's totals, Loihi 1 energy figures from Davies
2018. Loihi 2 is a newer process and should be cheaper per op than Loihi 1,
so the energy is likely an overestimate. Counting (messages, synaptic ops,
neuron updates) is exact for the given message rates; turning counts into
nanoseconds and joules is the estimate.

Model (after the form of 2601.10035, #32): a step lasts as long as its
busiest core, max over cores of (synaptic ops x T_SYNOP + neuron updates x
T_NEURON), and never less than the chip's minimum step T_STEP_MIN; a
token's latency is (deepest group depth + 1) steps; one token per step in the
recurrent regime. Energy per token = synaptic ops x E_SYNOP + neuron updates x
E_NEURON + message hops x E_HOP + static power x chips x step time.
"""

from __future__ import annotations

CONSTANTS = {
    "T_SYNOP_NS": (0.37, "Loihi 2 synaptic op per core: 380e12 synops/s over 140,544 cores (facts #30, derived)"),
    "T_NEURON_NS": (0.59, "Loihi 2 neuron op per core: 240e12 ops/s over 140,544 cores (facts #30, derived)"),
    "T_STEP_MIN_NS": (200.0, "Loihi 2 minimum chip-wide timestep, 'under 200 ns' (facts #27, third-party quote)"),
    "E_SYNOP_PJ": (23.6, "Loihi 1 energy per synaptic op, pre-silicon minimum (facts #39; Loihi 1)"),
    "E_NEURON_PJ": (81.0, "Loihi 1 active neuron update (facts #40; Loihi 1)"),
    "E_HOP_PJ": (3.5, "Loihi 1 spike energy per hop, 3.0 E-W / 4.0 N-S (facts #41; Loihi 1)"),
    "E_INTER_CORE_PJ": (1.7, "Loihi 1 spike within a tile, for messages between cores of one router (facts #41)"),
    "P_STATIC_W": (0.232, "Loihi 2 static power per chip, Oheo Gulch PilotNet run (facts #47, measured)"),
}
LABEL = "ESTIMATE (cost model ssmc/report/costmodel.py; Loihi 1 energy figures, Loihi 2 throughput derived)"


def estimate(
    synops_per_core, neurons_per_core, messages: float, inter_core: float, hop_weighted: float, depth: int, chips: int
) -> dict:
    """Per-token estimates from per-core counts (sequences of numbers) and traffic per step."""
    c = {k: v for k, (v, _) in CONSTANTS.items()}
    busiest = max(
        (s * c["T_SYNOP_NS"] + n * c["T_NEURON_NS"] for s, n in zip(synops_per_core, neurons_per_core)), default=0.0
    )
    step_ns = max(c["T_STEP_MIN_NS"], busiest)
    synops, neurons = float(sum(synops_per_core)), float(sum(neurons_per_core))
    dyn_pj = (
        synops * c["E_SYNOP_PJ"]
        + neurons * c["E_NEURON_PJ"]
        + hop_weighted * c["E_HOP_PJ"]
        + inter_core * c["E_INTER_CORE_PJ"]
    )
    static_pj = c["P_STATIC_W"] * chips * step_ns * 1e-9 * 1e12
    return {
        "label": LABEL,
        "step_ns": round(step_ns, 1),
        "busiest_core_ns": round(busiest, 1),
        "latency_ns": round(step_ns * (depth + 1), 1),
        "throughput_tokens_per_s": round(1e9 / step_ns, 1),
        "messages_per_token": round(messages, 1),
        "inter_core_messages_per_token": round(inter_core, 1),
        "hop_weighted_messages_per_token": round(hop_weighted, 1),
        "synaptic_ops_per_token": round(synops, 1),
        "neuron_updates_per_token": round(neurons, 1),
        "energy_dynamic_nj": round(dyn_pj / 1000, 3),
        "energy_static_nj": round(static_pj / 1000, 3),
        "energy_nj": round((dyn_pj + static_pj) / 1000, 3),
        "constants": {k: {"value": v, "source": s} for k, (v, s) in CONSTANTS.items()},
    }
