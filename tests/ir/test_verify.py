"""The verifier: a valid graph passes; each broken invariant is reported with the op's name.

Every case starts from the same valid graph (all model-level op kinds), breaks
one thing, and checks the IRError names the op and says what is wrong.
"""

import importlib

import numpy as np
import pytest

from ssmc.errors import IRError
from ssmc.ir.graph import Graph, Op
from ssmc.ir.verify import graph_problems, register_placement_check, verify

ir_verify = importlib.import_module("ssmc.ir.verify")  # the module (ssmc.ir exports a function of its name)

H = 4  # channels after the encoder


def f32(*shape, fill=0.5):
    return np.full(shape, fill, dtype=np.float32)


def c64(*shape, fill=0.5 + 0.25j):
    return np.full(shape, fill, dtype=np.complex64)


def valid_graph() -> Graph:
    g = Graph("net")
    g.add(Op("x", "input", attrs={"size": 3}, shape=(3,)))
    g.add(Op("enc", "linear", ("x",), params={"weight": f32(H, 3), "bias": f32(H)}, shape=(H,)))
    g.add(
        Op(
            "ssm",
            "s4d",
            ("enc",),
            attrs={"form": "discrete", "modes": 2},
            params={"A_bar": c64(H, 2), "B_bar": c64(H, 2), "C": c64(H, 2), "D": f32(H)},
            shape=(H,),
        )
    )
    g.add(
        Op(
            "cont",
            "s4d",
            ("ssm",),
            attrs={"form": "continuous", "modes": 1},
            params={
                "log_dt": f32(H, fill=-3.0),
                "A": c64(H, 1, fill=-0.5 + 3j),
                "B": c64(H, 1),
                "C": c64(H, 1),
                "D": f32(H),
            },
            shape=(H,),
        )
    )
    g.add(Op("act", "activation", ("cont",), attrs={"fn": "glu"}, shape=(H // 2,)))
    g.add(Op("nrm", "norm", ("act",), attrs={"eps": 1e-5}, params={"weight": f32(2), "bias": f32(2)}, shape=(2,)))
    g.add(Op("res", "add", ("nrm", "act"), shape=(2,)))
    g.add(Op("pl", "pool", ("res",), attrs={"mode": "mean"}, shape=(2,)))
    g.add(Op("y", "output", ("pl",), shape=(2,)))
    return g


def test_a_layer_with_modes_shared_by_all_channels_has_poles_p_input_p_by_h_and_readout_h_by_p():
    g = valid_graph()
    g.op("ssm").attrs.update(mixing="dense", modes=5)
    g.op("ssm").params.update(A_bar=c64(5), B_bar=c64(5, H), C=c64(H, 5))
    g.op("cont").attrs.update(mixing="dense", modes=3)
    g.op("cont").params.update(log_dt=f32(3, fill=-3.0), A=c64(3, fill=-0.5 + 3j), B=c64(3, H), C=c64(H, 3))
    assert verify(g) is g
    g.op("ssm").params["B_bar"] = c64(H, 5)  # [H, P] is the readout's shape, not the input map's
    with pytest.raises(IRError, match=r"%ssm.*tensor 'B_bar' has shape \[4, 5\], expected \[5, 4\]"):
        verify(g)


def test_the_valid_graph_verifies_and_verify_returns_it():
    g = valid_graph()
    assert graph_problems(g) == []
    assert verify(g) is g


def test_optional_bias_and_default_attributes_may_be_left_out():
    g = valid_graph()
    del g.op("enc").params["bias"]
    g.op("nrm").attrs.clear()  # kind and eps have defaults
    verify(g)


def test_a_float_attribute_accepts_an_int_value():
    g = valid_graph()
    g.op("nrm").attrs["eps"] = 1
    verify(g)


# -- one broken thing at a time -------------------------------------------------
def _set(name, **changes):
    def mutate(g):
        op = g.op(name)
        for k, v in changes.items():
            setattr(op, k, v)

    return mutate


def _attr(name, key, value):
    def mutate(g):
        g.op(name).attrs[key] = value

    return mutate


def _del_attr(name, key):
    def mutate(g):
        del g.op(name).attrs[key]

    return mutate


def _param(name, key, value):
    def mutate(g):
        g.op(name).params[key] = value

    return mutate


def _del_param(name, key):
    def mutate(g):
        del g.op(name).params[key]

    return mutate


def _odd_glu(g):
    # 3 channels into glu: encoder and both s4d layers made 3 wide, glu still claims [1]
    g.op("enc").params.update(weight=f32(3, 3), bias=f32(3))
    g.op("enc").shape = (3,)
    g.op("ssm").params.update(A_bar=c64(3, 2), B_bar=c64(3, 2), C=c64(3, 2), D=f32(3))
    g.op("ssm").shape = (3,)
    g.op("cont").params.update(log_dt=f32(3), A=c64(3, 1, fill=-1), B=c64(3, 1), C=c64(3, 1), D=f32(3))
    g.op("cont").shape = (3,)


def _add_of_different_shapes(g):
    g.set_inputs("res", ["nrm", "cont"])  # [2] + [4]


def _output_used(g):
    g.add(Op("after", "activation", ("y",), attrs={"fn": "relu"}, shape=(2,)))
    g.add(Op("y2", "output", ("after",), shape=(2,)))


CASES = {
    "unknown attribute": (_attr("enc", "units", 4), "%enc", "unknown attribute 'units'"),
    "missing required attribute": (_del_attr("ssm", "modes"), "%ssm", "missing attribute 'modes'"),
    "missing input size": (_del_attr("x", "size"), "%x", "missing attribute 'size'"),
    "attribute of wrong type": (_attr("x", "size", "3"), "%x", "attribute 'size' must be int"),
    "bool is not an int": (_attr("ssm", "modes", True), "%ssm", "attribute 'modes' must be int"),
    "str is not a float": (_attr("nrm", "eps", "tiny"), "%nrm", "attribute 'eps' must be float"),
    "attribute not in choices": (_attr("act", "fn", "swish"), "%act", "must be one of"),
    "s4d form not in choices": (_attr("ssm", "form", "diagonal"), "%ssm", "must be one of"),
    "missing tensor": (_del_param("enc", "weight"), "%enc", "missing tensor 'weight'"),
    "missing s4d tensor": (_del_param("cont", "log_dt"), "%cont", "missing tensor 'log_dt'"),
    "unexpected tensor of the other form": (_param("ssm", "A", c64(H, 2)), "%ssm", "unexpected tensor 'A'"),
    "unexpected tensor on a tensorless op": (_param("act", "weight", f32(2)), "%act", "unexpected tensor 'weight'"),
    "wrong tensor dtype": (_param("ssm", "D", np.zeros(H, np.float64)), "%ssm", "tensor 'D' must be f32"),
    "real where complex is needed": (_param("ssm", "C", f32(H, 2)), "%ssm", "tensor 'C' must be c64"),
    "tensor that is not an array": (_param("nrm", "weight", [1.0, 1.0]), "%nrm", "not an array"),
    "wrong tensor shape": (_param("ssm", "C", c64(H, 3)), "%ssm", "tensor 'C' has shape [4, 3], expected [4, 2]"),
    "mixing not in choices": (_attr("ssm", "mixing", "full"), "%ssm", "must be one of"),
    "per-channel tensors under dense mixing": (
        _attr("ssm", "mixing", "dense"),
        "%ssm",
        "tensor 'A_bar' has shape [4, 2], expected [2]",
    ),
    "weight columns do not match the input": (_param("enc", "weight", f32(H, 5)), "%enc", "expected [4, 3]"),
    "NaN tensor": (_param("enc", "bias", np.array([0, np.nan, 0, 0], np.float32)), "%enc", "NaN"),
    "infinite complex tensor": (_param("ssm", "B_bar", c64(H, 2, fill=complex(np.inf, 0))), "%ssm", "infinite"),
    "recorded shape differs from inferred": (
        _set("enc", shape=(5,)),
        "%enc",
        "result shape [5] but its inputs give [4]",
    ),
    "output shape differs from its input": (_set("y", shape=(3,)), "%y", "result shape [3]"),
    "glu keeps the recorded full width": (_set("act", shape=(H,)), "%act", "inputs give [2]"),
    "add of different shapes": (_add_of_different_shapes, "%res", "add of different shapes [2] and [4]"),
    "glu with odd channels": (_odd_glu, "%act", "glu needs an even number of channels, got 3"),
    "wrong arity": (_set("res", inputs=("nrm",)), "%res", "takes 2 input(s), has 1"),
    "output used by another op": (_output_used, "%y", "must not be used"),
}


@pytest.mark.parametrize("mutate,op_name,phrase", CASES.values(), ids=CASES.keys())
def test_each_broken_invariant_is_reported_naming_the_op(mutate, op_name, phrase):
    g = valid_graph()
    mutate(g)
    with pytest.raises(IRError) as e:
        verify(g)
    msg = str(e.value)
    assert msg.startswith("IR @net does not verify")
    problem = next((line for line in msg.splitlines() if phrase in line), None)
    assert problem is not None, msg
    assert op_name in problem, msg


def test_an_unknown_op_kind_is_reported_with_the_kind_and_the_known_kinds():
    g = valid_graph()
    g.op("act").kind = "swish"
    with pytest.raises(IRError) as e:
        verify(g)
    assert "unknown op kind 'swish'" in str(e.value)
    assert "activation" in str(e.value)


def test_an_unknown_op_kind_is_reported_naming_the_op():
    g = valid_graph()
    g.op("act").kind = "swish"
    with pytest.raises(IRError, match="%act"):
        verify(g)


def test_a_graph_without_input_is_reported():
    g = Graph("empty")
    g.add(Op("c", "pool", (), attrs={"mode": "sum"}, shape=(1,)))  # arity is wrong too: no matter
    g.add(Op("y", "output", ("c",), shape=(1,)))
    with pytest.raises(IRError, match="no input op"):
        verify(g)


def test_a_graph_without_output_is_reported():
    g = valid_graph()
    g.remove("y")
    with pytest.raises(IRError, match="no output op"):
        verify(g)


def test_an_empty_graph_lacks_both_input_and_output():
    problems = graph_problems(Graph())
    assert any("no input" in p for p in problems)
    assert any("no output" in p for p in problems)


def test_a_cycle_is_reported():
    g = valid_graph()
    g.set_inputs("enc", ["pl"])
    with pytest.raises(IRError, match="cycle"):
        verify(g)


def test_every_problem_is_reported_in_one_error():
    g = valid_graph()
    g.op("enc").attrs["units"] = 4
    g.op("ssm").params["D"] = np.zeros(H, np.float64)
    g.op("pl").attrs["mode"] = "max"
    with pytest.raises(IRError) as e:
        verify(g)
    msg = str(e.value)
    assert "(3 problems)" in msg
    lines = msg.splitlines()[1:]
    assert len(lines) == 3
    assert "%enc" in lines[0] and "'units'" in lines[0]
    assert "%ssm" in lines[1] and "'D'" in lines[1]
    assert "%pl" in lines[2] and "'max'" in lines[2]


def test_one_problem_is_worded_in_the_singular():
    g = valid_graph()
    g.op("enc").attrs["units"] = 4
    with pytest.raises(IRError, match=r"\(1 problem\):"):
        verify(g)


def test_an_omitted_attribute_with_a_default_takes_its_default_in_every_rule():
    from tests.runtime.test_engine_contract import random_network

    g = random_network(0)
    syn = next(op for op in g.ops() if op.kind == "synapses")
    syn.attrs.pop("delay", None)  # default 1
    verify(g)
    syn.attrs["delay"] = 0
    with pytest.raises(IRError, match="delay = 0"):
        verify(g)


def test_a_placed_graph_is_refused_not_skipped_when_no_capacity_check_is_registered(monkeypatch):
    # the IR records a placement but cannot count capacities; ssmc.mapping.capacity registers that check
    monkeypatch.setattr(ir_verify, "_placement_check", None)
    g = valid_graph()
    g.attrs["target"] = "{}"
    with pytest.raises(RuntimeError, match="ssmc.mapping.capacity"):
        verify(g)
    del g.attrs["target"]
    assert verify(g) is g  # an unplaced graph needs no such check


def test_the_registered_placement_check_runs_on_a_placed_graph_and_a_second_one_is_refused(monkeypatch):
    monkeypatch.setattr(ir_verify, "_placement_check", None)
    seen = []
    register_placement_check(lambda graph: seen.append(graph.name) or ["core 0 over capacity"])
    g = valid_graph()
    g.attrs["target"] = "{}"
    with pytest.raises(IRError, match="core 0 over capacity"):
        verify(g)
    assert seen == [g.name]
    with pytest.raises(IRError, match="already registered"):
        register_placement_check(lambda graph: [])


def test_capacities_false_skips_only_the_placement_check(monkeypatch):
    # the engines verify this way: a run does not depend on how the neurons fit on cores
    monkeypatch.setattr(ir_verify, "_placement_check", None)
    register_placement_check(lambda graph: ["core 0 over capacity"])
    g = valid_graph()
    g.attrs["target"] = "{}"
    assert verify(g, capacities=False) is g
    g.op("enc").attrs["units"] = 4
    with pytest.raises(IRError, match="'units'"):
        verify(g, capacities=False)
