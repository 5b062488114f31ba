"""What a neuron or a synapse costs in Loihi 2 core memory (the mapper's unit prices).

These are the only per-kind memory prices in ssmc: partition, the verifier
and the report all call these functions. Intel does not publish Loihi 2's
memory layout, so every price says how it was obtained (see LOIHI2_FACTS.md,
cited by row number):

- Simple neurons (source, relay, relu, integrator): 16 bytes, *derived*.
  Intel's compiler budgets 4,096 LIF/sigma-delta neurons per core (#5) and a
  core has 192 KB of which up to 128 KB is synaptic (#7): 64 KB / 4,096 =
  16 bytes (four 32-bit words: state, dendritic accumulator, bias, threshold).
- Complex-pair compartments (cpx): 24 bytes each, *assumed*: state,
  accumulator, coefficient (a_re or a_im), bias, last message and scale -- six
  words for a programmable neuron whose state Intel sizes per program (#14).
- lut and product neurons: 20 bytes, *assumed* (one word more than simple:
  the second operand or the table index); a lut group also stores its table
  (4 bytes an entry) on every core that holds part of it.
- Sigma-delta senders keep their last sent value: one word more, *assumed*.
- Synapses: (weight_bits + 16) / 8 bytes per non-zero weight, *derived*: the
  compiler's 12,000 SynMem units fill 128 KB (10.9 bytes a unit) and hold
  2.8-4.2 dense 8-bit synapses a unit (#8, #9), i.e. 2.6-3.9 bytes per 8-bit
  synapse; 8 + 16 bits = 3 bytes sits inside that range. Zero weights are not
  stored (sparse synapses).
- Routing: 4 bytes per input axon and per output route, *assumed*.
"""

from __future__ import annotations

WORD = 4
NEURON_BYTES = {"source": 16, "relay": 16, "relu": 16, "integrator": 16, "cpx": 24, "lut": 20, "product": 20}
SIGMA_DELTA_EXTRA_BYTES = WORD
LUT_ENTRY_BYTES = WORD
SYNAPSE_OVERHEAD_BITS = 16
ROUTE_BYTES = WORD
AXON_BYTES = WORD

#: Where each price comes from, for the report ("derived" or "assumed", see the module doc).
PRICE_SURENESS = {
    "simple neuron (16 B)": "derived from 4,096 neurons per core and 64 KB non-synaptic memory (facts #5, #7)",
    "cpx compartment (24 B)": "assumed (six 32-bit words per programmable compartment)",
    "lut/product neuron (20 B)": "assumed",
    "sigma-delta last value (+4 B)": "assumed",
    "synapse ((weight_bits + 16) / 8 B)": "derived from 12,000 SynMem units and 2.8-4.2 synapses per unit "
    "(facts #8, #9)",
    "axon / route (4 B)": "assumed",
}


def neuron_bytes(kind: str, delta: int = 0) -> int:
    """Bytes of state memory one neuron (compartment) of this kind takes."""
    return NEURON_BYTES[kind] + (SIGMA_DELTA_EXTRA_BYTES if delta else 0)


def group_fixed_bytes(kind: str, table_entries: int = 0) -> int:
    """Bytes a group needs once on every core that holds any of its neurons (a lut's table)."""
    return LUT_ENTRY_BYTES * table_entries if kind == "lut" else 0


def synapse_bytes(weight_bits: int, nonzeros: int) -> int:
    """Bytes of synapse memory for `nonzeros` stored weights of `weight_bits` bits."""
    return -(-int(nonzeros) * (int(weight_bits) + SYNAPSE_OVERHEAD_BITS) // 8)
