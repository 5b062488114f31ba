"""Bit widths are stated once (ssmc/widths.py): the pass, the CLI help and docs/fixed_point.md follow it."""

import re

import numpy as np
import pytest

from ssmc.cli import build_parser
from ssmc.errors import PassError
from ssmc.widths import IR_GROUP_BITS, IR_WEIGHT_BITS, OPTIONS
from ssmc.passes.assign_bitwidths import AssignBitwidths, quantize_weights
from tests.conftest import ROOT


@pytest.mark.parametrize("key", OPTIONS)
def test_the_pass_takes_its_defaults_and_ranges_from_the_table(key):
    w = OPTIONS[key]
    assert getattr(AssignBitwidths(), key) == w.default
    for ok in (w.lo, w.hi):
        AssignBitwidths(**{key: ok}).check_widths()
    for bad in (w.lo - 1, w.hi + 1):
        with pytest.raises(PassError, match=f"{key.replace('_', '-')} = {bad} is outside .*{w.lo}..{w.hi}"):
            AssignBitwidths(**{key: bad}).check_widths()


def test_the_option_ranges_lie_inside_what_the_ir_holds():
    assert IR_WEIGHT_BITS[0] <= OPTIONS["weight_bits"].lo and OPTIONS["weight_bits"].hi <= IR_WEIGHT_BITS[1]
    for key in ("coef_bits", "state_bits", "message_bits"):
        assert IR_GROUP_BITS[0] <= OPTIONS[key].lo and OPTIONS[key].hi <= IR_GROUP_BITS[1]


def test_the_fewest_weight_bits_still_give_positive_and_negative_weights():
    w, _ = quantize_weights(np.array([1.0, 0.5, -1.0]), OPTIONS["weight_bits"].lo)
    assert w.max() > 0 > w.min()


def test_the_compile_help_states_each_range_and_default():
    compile_cmd = build_parser()._subparsers._group_actions[0].choices["compile"]
    helps = {a.dest: a.help for a in compile_cmd._actions}
    for key in ("weight_bits", "coef_bits", "state_bits", "message_bits"):
        w = OPTIONS[key]
        assert f"{w.lo}..{w.hi} (default {w.default})" in helps[key]


def test_the_fixed_point_doc_table_matches():
    doc = (ROOT / "docs" / "fixed_point.md").read_text()
    rows = dict(
        (k, (int(lo), int(hi), int(d)))
        for k, lo, hi, d in re.findall(r"^\| `(\w+_bits)` \| (\d+)\.\.(\d+) \| (\d+) \|", doc, re.M)
    )
    assert rows == {k: (w.lo, w.hi, w.default) for k, w in OPTIONS.items()}
