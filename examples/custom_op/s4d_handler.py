"""ssmc op handler for the fused com.example.S4D node written by export_fused_s4d.py.

Load it with `ssmc compile model.onnx -o net.lava --plugin examples/custom_op/s4d_handler.py`,
or import it before calling `ssmc.compile`.
"""

import numpy as np

from ssmc.frontend import register_op_handler

PARAMETERS = ("log_dt", "log_A_real", "A_imag", "C", "D")


@register_op_handler("S4D", domain="com.example")
def fused_s4d(node, ctx):
    """com.example.S4D(u, state, log_dt, log_A_real, A_imag, C, D) -> (y, state_next): one S4D layer."""
    u, state, *names = (t.name for t in node.inputs)
    if not ctx.is_state(state):
        raise ValueError(f"input 2 ('{state}') must be a recurrent state of the step-form model")
    p = {}
    for key, name in zip(PARAMETERS, names):
        value = ctx.const(name)
        if value is None:
            raise ValueError(f"{key} ('{name}') must be an initializer")
        p[key] = value.astype(np.float64)
    H, M = p["A_imag"].shape
    A = -np.exp(p["log_A_real"]) + 1j * p["A_imag"]
    C = p["C"][..., 0] + 1j * p["C"][..., 1]
    # The continuous form keeps (log_dt, A, B): ssmc's discretize pass applies the same ZOH rule.
    return ctx.add(
        "s4d",
        [ctx.value(u)],
        attrs={"form": "continuous", "modes": M},
        params={
            "log_dt": p["log_dt"].astype(np.float32),
            "A": A.astype(np.complex64),
            "B": np.ones((H, M), np.complex64),
            "C": C.astype(np.complex64),
            "D": p["D"].astype(np.float32),
        },
    )
