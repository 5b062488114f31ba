"""The Graph API: building, editing and querying ops, and what it refuses.

Graphs here are tiny and built by hand; expected orders and names are written
out in each test.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmc.errors import IRError
from ssmc.ir.graph import Graph, Op


def inp(name="x", size=2):
    return Op(name, "input", attrs={"size": size}, shape=(size,))


def relu(name, src, size=2):
    return Op(name, "activation", (src,), attrs={"fn": "relu"}, shape=(size,))


def add(name, a, b, size=2):
    return Op(name, "add", (a, b), shape=(size,))


def out(name, src, size=2):
    return Op(name, "output", (src,), shape=(size,))


def names(ops):
    return [op.name for op in ops]


# -- building -------------------------------------------------------------------
def test_add_returns_the_op_and_makes_it_findable_by_name():
    g = Graph()
    op = g.add(inp("x"))
    assert op.name == "x"
    assert "x" in g and "y" not in g
    assert len(g) == 1
    assert g.op("x") is op


def test_op_normalises_inputs_to_a_tuple_and_shape_to_python_ints():
    op = Op("a", "add", ["x", "y"], shape=(np.int64(3),))
    assert op.inputs == ("x", "y")
    assert op.shape == (3,) and type(op.shape[0]) is int


def test_adding_a_duplicate_name_raises_and_keeps_the_first_op():
    g = Graph()
    first = g.add(inp("x", 2))
    with pytest.raises(IRError, match="duplicate op name %x"):
        g.add(inp("x", 5))
    assert g.op("x") is first and len(g) == 1


def test_adding_an_op_that_reads_an_undefined_value_raises_naming_both():
    g = Graph()
    g.add(inp("x"))
    with pytest.raises(IRError) as e:
        g.add(relu("r", "nope"))
    assert "%r" in str(e.value) and "%nope" in str(e.value)
    assert "r" not in g


@pytest.mark.parametrize("bad", ["", "1x", "a b", "%x", "a/b", "x(y)", "é", "a:b"])
def test_invalid_op_names_are_refused(bad):
    g = Graph()
    with pytest.raises(IRError, match="invalid op name"):
        g.add(Op(bad, "input", attrs={"size": 1}, shape=(1,)))
    assert len(g) == 0


def test_a_name_with_a_trailing_newline_is_refused():
    g = Graph()
    with pytest.raises(IRError, match="invalid op name"):
        g.add(Op("x\n", "input", attrs={"size": 1}, shape=(1,)))


@pytest.mark.parametrize("good", ["x", "_x", "X1", "layer.0.mixer", "enc-1", "a_b.c-d"])
def test_names_with_letters_digits_underscore_dot_and_dash_are_accepted(good):
    g = Graph()
    g.add(Op(good, "input", attrs={"size": 1}, shape=(1,)))
    assert good in g


def test_op_of_an_unknown_name_raises_irerror():
    with pytest.raises(IRError, match="no op named %ghost"):
        Graph().op("ghost")


# -- removing -------------------------------------------------------------------
def test_remove_deletes_an_unused_op_and_its_edges():
    g = Graph()
    g.add(inp("x"))
    g.add(relu("r", "x"))
    g.remove("r")
    assert "r" not in g
    assert g.consumers("x") == []


def test_remove_of_a_used_op_raises_naming_the_users_and_changes_nothing():
    g = Graph()
    g.add(inp("x"))
    g.add(relu("r", "x"))
    g.add(relu("s", "x"))
    with pytest.raises(IRError) as e:
        g.remove("x")
    assert "%r" in str(e.value) and "%s" in str(e.value)
    assert names(g.ops()) == ["x", "r", "s"]


@pytest.mark.parametrize("call", ["remove", "consumers"])
def test_remove_and_consumers_of_an_unknown_name_raise_irerror(call):
    g = Graph()
    g.add(inp("x"))
    with pytest.raises(IRError):
        getattr(g, call)("ghost")


# -- consumers, set_inputs, replace_uses ----------------------------------------
def test_consumers_are_listed_once_each_in_execution_order():
    g = Graph()
    g.add(inp("x"))
    g.add(relu("z", "x"))
    g.add(add("sq", "x", "x"))  # reads %x twice
    g.add(relu("a", "x"))
    assert names(g.consumers("x")) == ["z", "sq", "a"]
    assert g.consumers("a") == []


def test_set_inputs_rewires_an_op_and_moves_its_edges():
    g = Graph()
    g.add(inp("x"))
    g.add(inp("w"))
    g.add(add("s", "x", "x"))
    g.set_inputs("s", ["x", "w"])
    assert g.op("s").inputs == ("x", "w")
    assert names(g.consumers("w")) == ["s"]
    g.set_inputs("s", ("w", "w"))
    assert g.consumers("x") == []
    assert names(g.consumers("w")) == ["s"]


def test_set_inputs_to_an_undefined_value_raises_and_leaves_the_op_as_it_was():
    g = Graph()
    g.add(inp("x"))
    g.add(relu("r", "x"))
    with pytest.raises(IRError, match="%nope"):
        g.set_inputs("r", ["nope"])
    assert g.op("r").inputs == ("x",)
    assert names(g.consumers("x")) == ["r"]


def test_set_inputs_that_closes_a_cycle_makes_ops_raise_irerror():
    g = Graph()
    g.add(inp("x"))
    g.add(relu("a", "x"))
    g.add(relu("b", "a"))
    g.set_inputs("a", ["b"])
    assert g.has_cycle()
    with pytest.raises(IRError, match="cycle"):
        g.ops()


def test_replace_uses_redirects_every_reader_keeping_operand_positions():
    g = Graph()
    g.add(inp("x"))
    g.add(inp("y"))
    g.add(add("s", "y", "x"))
    g.add(add("t", "x", "x"))
    g.add(relu("r", "y"))
    changed = g.replace_uses("x", "r")
    assert changed == 2
    assert g.op("s").inputs == ("y", "r")
    assert g.op("t").inputs == ("r", "r")
    assert g.consumers("x") == []
    assert names(g.consumers("r")) == ["s", "t"]
    # %r was added after %s and %t, yet they now read it: execution order follows the data
    assert names(g.ops()) == ["x", "y", "r", "s", "t"]


def test_replace_uses_of_an_unused_value_changes_nothing():
    g = Graph()
    g.add(inp("x"))
    g.add(inp("y"))
    assert g.replace_uses("x", "y") == 0


# -- fresh_name -----------------------------------------------------------------
def test_fresh_name_returns_the_base_when_it_is_free():
    g = Graph()
    g.add(inp("x"))
    assert g.fresh_name("enc") == "enc"


def test_fresh_name_appends_the_first_free_counter():
    g = Graph()
    g.add(inp("x"))
    assert g.fresh_name("x") == "x_1"
    g.add(inp("x_1"))
    assert g.fresh_name("x") == "x_2"
    g.add(inp("x_3"))
    assert g.fresh_name("x") == "x_2"


@pytest.mark.parametrize(
    "base,expected",
    [
        ("a b", "a_b"),
        ("layer/0:out", "layer_0_out"),
        ("0abc", "v0abc"),
        ("", "v"),
        ("-x", "v-x"),
    ],
)
def test_fresh_name_turns_any_text_into_a_valid_name(base, expected):
    assert Graph().fresh_name(base) == expected


@settings(derandomize=True, database=None, max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=6))
def test_fresh_names_can_always_be_added_and_never_collide(bases):
    g = Graph()
    for base in bases:
        name = g.fresh_name(base)
        assert name not in g
        g.add(Op(name, "input", attrs={"size": 1}, shape=(1,)))
    assert len(g) == len(bases)


# -- order ----------------------------------------------------------------------
def test_ops_breaks_ties_by_insertion_order_not_by_name():
    g = Graph()
    g.add(inp("z"))
    g.add(relu("m", "z"))
    g.add(relu("b", "z"))
    g.add(inp("a"))
    g.add(add("c", "b", "m"))
    g.add(out("o", "c"))
    assert names(g.ops()) == ["z", "m", "b", "a", "c", "o"]
    assert names(g) == ["z", "m", "b", "a", "c", "o"]


def test_ops_puts_producers_first_even_when_they_were_inserted_later():
    g = Graph()
    g.add(inp("x"))
    g.add(relu("late_reader", "x"))
    g.add(relu("early_writer", "x"))
    g.set_inputs("late_reader", ["early_writer"])
    assert names(g.ops()) == ["x", "early_writer", "late_reader"]


def test_ops_order_is_the_same_for_two_graphs_built_the_same_way():
    def build():
        g = Graph()
        g.add(inp("x"))
        for i in range(20):
            g.add(relu(f"r{i}", "x"))
        g.add(add("s", "r19", "r0"))
        return g

    expected = ["x"] + [f"r{i}" for i in range(20)] + ["s"]
    assert names(build().ops()) == expected
    assert names(build().ops()) == expected


def test_ops_of_kind_inputs_and_outputs_filter_in_execution_order():
    g = Graph()
    g.add(inp("b"))
    g.add(inp("a"))
    g.add(add("s", "a", "b"))
    g.add(out("y2", "s"))
    g.add(out("y1", "b"))
    assert names(g.inputs()) == ["b", "a"]
    assert names(g.outputs()) == ["y2", "y1"]
    assert names(g.ops_of_kind("add")) == ["s"]
    assert g.ops_of_kind("s4d") == []


# -- copy -----------------------------------------------------------------------
def make_linear_graph():
    g = Graph("net", attrs={"source": "m.onnx"})
    g.add(inp("x", 2))
    g.add(Op("enc", "linear", ("x",), params={"weight": np.array([[1.0, 2.0]], dtype=np.float32)}, shape=(1,)))
    g.add(out("y", "enc", 1))
    return g


def test_copy_is_deep_for_tensors():
    g = make_linear_graph()
    c = g.copy()
    c.op("enc").params["weight"][0, 0] = 99.0
    assert g.op("enc").params["weight"].tolist() == [[1.0, 2.0]]


def test_copy_is_deep_for_structure_attrs_and_graph_attrs():
    g = make_linear_graph()
    c = g.copy()
    c.add(relu("extra", "x"))
    c.op("x").attrs["size"] = 7
    c.attrs["source"] = "other.onnx"
    c.set_inputs("y", ["x"])
    assert "extra" not in g and len(g) == 3
    assert g.op("x").attrs == {"size": 2}
    assert g.attrs == {"source": "m.onnx"}
    assert g.op("y").inputs == ("enc",)
    assert names(g.consumers("enc")) == ["y"]


def test_copy_has_the_same_name_ops_and_order():
    g = make_linear_graph()
    c = g.copy()
    assert c.name == "net"
    assert names(c.ops()) == ["x", "enc", "y"]
    assert c.op("enc") is not g.op("enc")


def test_every_edit_after_ops_was_asked_for_shows_in_the_next_order():
    # ops() keeps its order between edits: each editing method must drop it
    g = Graph()
    g.add(inp("x"))
    g.add(relu("a", "x"))
    assert [op.name for op in g.ops()] == ["x", "a"]
    g.add(relu("b", "x"))
    assert [op.name for op in g.ops()] == ["x", "a", "b"]
    g.set_inputs("a", ("b",))  # a now reads b: b runs first
    assert [op.name for op in g.ops()] == ["x", "b", "a"]
    g.add(relu("c", "x"))
    g.replace_uses("b", "c")  # a reads c; b is unused
    assert [op.name for op in g.ops()] == ["x", "b", "c", "a"]
    g.remove("b")
    assert [op.name for op in g.ops()] == ["x", "c", "a"]
    assert [op.name for op in g.ops_of_kind("activation")] == ["c", "a"]


def test_editing_the_list_ops_returned_does_not_change_the_graph():
    g = Graph()
    g.add(inp("x"))
    g.ops().clear()
    assert [op.name for op in g.ops()] == ["x"]


def test_a_copy_keeps_its_own_order_when_either_graph_is_edited():
    g = Graph()
    g.add(inp("x"))
    g.ops()
    h = g.copy()
    h.add(relu("a", "x"))
    assert [op.name for op in g.ops()] == ["x"]
    assert [op.name for op in h.ops()] == ["x", "a"]
    assert h.ops()[0] is h.op("x")  # the copy's own ops, not the original's
