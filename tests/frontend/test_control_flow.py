"""An `If` whose condition is a constant is folded away: the model compiles as the branch it takes. An `If`
whose condition depends on the inputs is refused by name: a compiled net has no run-time branches."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ssmc
from ssmc.errors import UnsupportedModelError
from tests.builders.onnx_models import StepModelSpec, build_step_model

SPEC = StepModelSpec(in_features=2, H=4, M=2, n_layers=1, n_out=3, seed=3)


def _constant(name: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.float32)))


def _with_if(condition: str) -> onnx.ModelProto:
    """SPEC's model with the decoder inside the then-branch of an If (the else-branch outputs zeros).

    The then-branch also scales the decoder bias by a constant 1, a node that folding runs in onnxruntime inside
    the branch. `condition` "constant": Greater(2, 1) on initializers; "input": the sign of the decoder input's sum.
    """
    model = build_step_model(SPEC)
    nodes = list(model.graph.node)
    at = next(i for i, n in enumerate(nodes) if "logits" in n.output)
    decoder = nodes[at]
    inner = onnx.NodeProto()
    inner.CopyFrom(decoder)
    inner.output[0], inner.input[2] = "then_y", "then_bias"
    then_branch = helper.make_graph(
        [_constant("one", 1.0), helper.make_node("Mul", [decoder.input[2], "one"], ["then_bias"]), inner],
        "then",
        [],
        [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)],
    )
    else_branch = helper.make_graph(
        [_constant("zero", 0.0), helper.make_node("Mul", [decoder.input[0], "zero"], ["else_y"])],
        "else",
        [],
        [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)],
    )
    if condition == "constant":
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(2.0, np.float32), "two"),
                numpy_helper.from_array(np.array(1.0, np.float32), "one_c"),
            ]
        )
        cond = [helper.make_node("Greater", ["two", "one_c"], ["cond"], name="/cond/Greater")]
    else:
        cond = [
            helper.make_node("ReduceSum", [decoder.input[0]], ["sum"], keepdims=0, name="/cond/ReduceSum"),
            helper.make_node("Cast", ["sum"], ["cond"], to=TensorProto.BOOL, name="/cond/Cast"),
        ]
    branch = helper.make_node(
        "If", ["cond"], ["logits"], then_branch=then_branch, else_branch=else_branch, name="/decoder/If"
    )
    del model.graph.node[:]
    model.graph.node.extend(nodes[:at] + cond + [branch] + nodes[at + 1 :])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_an_if_with_a_constant_condition_compiles_as_the_branch_it_takes(save_onnx):
    x = np.random.default_rng(0).normal(size=(2, 5, SPEC.in_features))
    with_if = ssmc.compile(save_onnx(_with_if("constant"), "with_if.onnx"))
    without = ssmc.compile(save_onnx(build_step_model(SPEC), "without.onnx"))
    np.testing.assert_array_equal(with_if.run(x, engine="float"), without.run(x, engine="float"))
    np.testing.assert_array_equal(with_if.run(x, engine="numpy"), without.run(x, engine="numpy"))


def test_an_if_on_the_inputs_is_refused_naming_the_node(save_onnx):
    with pytest.raises(UnsupportedModelError) as e:
        ssmc.compile(save_onnx(_with_if("input"), "dynamic_if.onnx"))
    message = str(e.value)
    assert "\n" not in message
    assert "'/decoder/If'" in message and "condition is computed from the inputs" in message
