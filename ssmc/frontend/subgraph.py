"""Run a slice of an ONNX graph with onnxruntime.

The frontend measures the linear maps inside a recurrence by feeding probes
to the slice between chosen tensors. This cuts the graph at those tensors
(they become inputs, with their producers dropped) and runs what remains.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ssmc.errors import UnsupportedModelError

# The newest ONNX IR version every onnxruntime in the supported range (>= 1.17) reads. graphsurgeon writes a
# graph without a recorded version (every If/Loop/Scan body) at the installed onnx's newest, which onnxruntime
# refuses ("Unsupported model IR version: 14, max supported IR version: 11").
ORT_IR_VERSION = 9


def pin_ir_versions(graph: gs.Graph) -> gs.Graph:
    """Give `graph` and all its subgraphs an IR version onnxruntime reads, so graphsurgeon's folding can run them."""
    version = min(graph.ir_version or ORT_IR_VERSION, ORT_IR_VERSION)
    graph.ir_version = version
    for sub in graph.subgraphs(recursive=True):
        sub.ir_version = version
    return graph


def slice_runner(
    graph: gs.Graph, feed_shapes: dict[str, tuple], fetch: list[str], opset: int, full_shapes: bool = False
):
    """A function evaluating tensors `fetch` from values of tensors `feeds` (float32, any batch size).

    `feed_shapes` are per-sample shapes, a leading "probes" axis added; with `full_shapes` they are taken as
    given (the caller places the probe axis, or none for a model with a fixed batch).
    The slice is cut and its onnxruntime session built once: a layer is probed in many chunks."""
    import onnxruntime as ort

    sub = pin_ir_versions(graph.copy())
    tmap = sub.tensors()
    new_inputs = []
    for name, shape in feed_shapes.items():
        t = tmap[name]
        t.inputs.clear()  # cut: the tensor is now fed from outside
        t.dtype = np.float32
        t.shape = list(shape) if full_shapes else ["probes", *shape]
        new_inputs.append(t)
    sub.inputs = new_inputs
    outs = []
    for name in fetch:
        t = tmap[name]
        t.dtype = np.float32
        t.shape = None
        outs.append(t)
    sub.outputs = outs

    def failed(e: Exception) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"could not evaluate the graph between {sorted(feed_shapes)} and {fetch}: {str(e).splitlines()[0]}"
        )

    try:  # third-party code on user data: any failure is a property of the model
        sub.cleanup(remove_unused_graph_inputs=False).toposort()
        model = gs.export_onnx(sub)
        model.opset_import[0].version = opset
        model.ir_version = min(model.ir_version, ORT_IR_VERSION)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # graphsurgeon and onnxruntime raise their own untyped errors
        raise failed(e) from None

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Float32 results, as onnxruntime computed them."""
        try:
            feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
            return sess.run(fetch, feed)
        except Exception as e:
            raise failed(e) from None

    return run


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
