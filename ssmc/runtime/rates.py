"""Message rates per neuron group: measured on calibration data where there is some.

A group's rate is the fraction of (neuron, step) slots in which it sends a
non-zero message, measured by the numpy engine (its `sparsity`) on the first
`max_sequences` calibration sequences. Sigma-delta groups send only changes,
so they measure lower. Without calibration data nothing is measured and the
mapper assumes 1 for dense groups and ssmc.mapping.netlist's assumed rate for
sigma-delta groups; the graph attribute ``msg_rate_source`` says which.
"""

from __future__ import annotations

import numpy as np

from ssmc.ir.graph import Graph
from ssmc.runtime.numpy_engine import run_numpy

SOURCE_ATTR = "msg_rate_source"


def measure_rates(graph: Graph, calibration: np.ndarray | None, max_sequences: int = 8) -> str:
    """Set `msg_rate` on every neuron group from calibration (if given); return where rates come from."""
    if calibration is None or max_sequences <= 0:
        source = "assumed: 1 per step for dense groups, 0.5 for sigma-delta groups (no calibration data)"
        graph.attrs[SOURCE_ATTR] = source
        return source
    x = np.asarray(getattr(calibration, "x", calibration))[:max_sequences]  # a checked Calibration or an array
    res = run_numpy(graph, x)
    for op in graph.ops_of_kind("neurons"):
        op.attrs["msg_rate"] = round(1.0 - float(res.sparsity.get(op.name, 0.0)), 6)
    source = f"measured by the numpy engine on {len(x)} calibration sequence(s) of {x.shape[1]} tokens"
    graph.attrs[SOURCE_ATTR] = source
    return source
