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
    ins = sess.get_inputs()
    features = ins[0].shape[1]
    x = check_sequences(x, features if isinstance(features, int) else np.shape(x)[-1]).astype(np.float32)
    fixed = ins[0].shape[0]
    if isinstance(fixed, int) and fixed != len(x):
        if fixed != 1:
            raise InputDataError(f"the model has a fixed batch of {fixed}; run it with that many sequences")
        # a fixed batch of 1 (torch's export without dynamic axes): one sequence at a time
        return np.concatenate([_run_batch(sess, x[i : i + 1]) for i in range(len(x))])
    return _run_batch(sess, x)


def _run_batch(sess, x: np.ndarray) -> np.ndarray:
    ins = sess.get_inputs()
    batch = x.shape[0]
    # a state's batch axis is its symbolic one, wherever it is; with a fixed batch it has none
    states = {
        i.name: np.zeros([batch if not isinstance(d, int) else d for d in i.shape], dtype=np.float32) for i in ins[1:]
    }
    ys = []
    for t in range(x.shape[1]):
        res = sess.run(None, {ins[0].name: x[:, t, :], **states})
        ys.append(res[0])
        states = {i.name: r for i, r in zip(ins[1:], res[1:])}
    return np.stack(ys, axis=1)
