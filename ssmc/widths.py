"""Bit widths, stated once: the range and default of each width option of the fixed-point passes, and the
ranges a neuro-level IR group may hold.

The two differ on purpose. `OPTIONS` is what assign-bitwidths accepts and produces (its option checks,
defaults, `ssmc passes`, the `ssmc compile` help and docs/fixed_point.md read it); `IR_*` is what the IR
verifier accepts in a graph (IR text written by hand, a net.lava), which every engine runs exactly.
Example: a synapse group may hold 1..8 weight bits (Lava Dense's `num_weight_bits`), but the pass quantizes to
3..8, since mixed-sign weights of b bits are multiples of 2**(9-b) in [-128, 127]: at 2 bits only 0 and -128
are left, at 1 bit only 0.
"""

from __future__ import annotations

from typing import NamedTuple


class WidthOption(NamedTuple):
    lo: int
    hi: int
    default: int
    doc: str

    def help(self) -> str:
        """'<doc>, lo..hi (default d)', the form the CLI help and `ssmc passes` show."""
        return f"{self.doc}, {self.lo}..{self.hi} (default {self.default})"


#: assign-bitwidths' width options: {option: range accepted, default, what it sets}.
OPTIONS = {
    "weight_bits": WidthOption(
        3, 8, 8, "synapse weight bits (Lava Dense convention: mixed-sign weights keep bits-1 bits of magnitude)"
    ),
    "coef_bits": WidthOption(4, 24, 16, "complex-pair coefficient bits"),
    "state_bits": WidthOption(8, 32, 24, "neuron state bits"),
    "message_bits": WidthOption(2, 32, 24, "graded message bits (the groups' msg_bits)"),
    "headroom_bits": WidthOption(0, 8, 1, "bits of margin above the calibrated peak"),
    "lut_bits": WidthOption(1, 12, 8, "table entries 2**lut-bits for GELU, sigmoid and tanh (and GLU's gate)"),
    "norm_lut_bits": WidthOption(9, 11, 10, "bins 2**norm-lut-bits per table of a LayerNorm's 1/sqrt(var + eps)"),
}

#: A synapse group's weight_bits in the IR (Lava Dense `num_weight_bits`).
IR_WEIGHT_BITS = (1, 8)
#: A neuron group's msg_bits, state_bits and coef_bits in the IR (the engines' int64 arithmetic stays exact).
IR_GROUP_BITS = (2, 32)
