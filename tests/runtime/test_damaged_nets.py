"""A hand-edited (damaged) neuro-level net is refused with an SsmcError, quickly:
no giant Python integers, no loops over absurd step counts, no huge buffers.
(Found by tests/test_fuzz_graphs.py::test_edited_nets_run_or_are_refused_with_an_ssmc_error.)"""

from __future__ import annotations

import numpy as np
import pytest

from ssmc.errors import IRError, ResourceLimitError
from ssmc.runtime.numpy_engine import run_numpy
from tests.test_fuzz_graphs import _compiled_net


def _edit(kind: str, key: str, value):
    graph = _compiled_net(1).graph.copy()
    op = next(op for op in graph.ops_of_kind(kind) if kind != "neurons" or op.attrs["kind"] != "source")
    op.attrs[key] = value
    return graph, op.name


@pytest.mark.parametrize("kind, key, value, error, phrase", [
    ("neurons", "depth", 2**40, IRError, "is more than all synapse delays together"),
    ("neurons", "out_shift", 2**40, IRError, "out_shift = 1099511627776 is outside 0..63"),
    ("neurons", "lut_shift", 64, IRError, "lut_shift = 64 is outside 0..63"),
    ("neurons", "frac", 5000, IRError, "frac = 5000 is outside -960..960"),
    ("synapses", "weight_exp", 2**40, IRError, "weight_exp = 1099511627776 is outside -63..63"),
    ("synapses", "delay", 2**40, ResourceLimitError, "on the numpy engine"),
])
def test_a_damaged_attribute_is_refused(kind, key, value, error, phrase):
    graph, name = _edit(kind, key, value)
    with pytest.raises(error, match=phrase):
        run_numpy(graph, np.zeros((2, 4, 2)))
