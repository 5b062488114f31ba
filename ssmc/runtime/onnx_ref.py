"""Run a step-form ONNX model token by token with onnxruntime.

This is the ground truth the float reference is checked against: the user's
own exported graph, executed by onnxruntime, states fed back by hand.
"""

from __future__ import annotations

import numpy as np
import onnx

from ssmc.data import check_sequences
from ssmc.errors import InputDataError


def run_step_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Per-token first output [batch, time, outputs] for x [batch, time, features], zero initial states."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ins, outs = sess.get_inputs(), sess.get_outputs()
    features = ins[0].shape[1]
    x = check_sequences(x, features if isinstance(features, int) else np.shape(x)[-1]).astype(np.float32)
    batch = x.shape[0]
    states = {}
    for i in ins[1:]:
        dims = [batch if not isinstance(d, int) else d for d in i.shape]
        if isinstance(i.shape[0], int) and i.shape[0] != batch:
            raise InputDataError(f"the model has a fixed batch of {i.shape[0]}; run it with that many sequences")
        states[i.name] = np.zeros(dims, dtype=np.float32)
    ys = []
    for t in range(x.shape[1]):
        res = sess.run(None, {ins[0].name: x[:, t, :], **states})
        ys.append(res[0])
        states = {i.name: r for i, r in zip(ins[1:], res[1:])}
    return np.stack(ys, axis=1)
