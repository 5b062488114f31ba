"""Pipelines: parsing pass names and typed options, printing them back, and running passes safely."""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ssmc.passes  # noqa: F401 - registers the built-in passes
from ssmc.ir.graph import Graph
from ssmc.ir.text import parse_graph, print_graph
from ssmc.passes import base
from ssmc.passes.base import (
    Pass,
    PassError,
    PassRecord,
    available_passes,
    load_pass,
    parse_pipeline,
    pipeline_spec,
    register_pass,
    run_pipeline,
)
from ssmc.passes.canonicalize import Canonicalize


# -- test-local passes ----------------------------------------------------------
@dataclass(frozen=True)
class Tune(Pass):
    """A pass with one option of each type; it does nothing to the graph."""

    name: ClassVar[str] = "test-tune"
    max_iters: int = 3
    scale: float = 1.0
    enabled: bool = True
    label: str = "x"

    def run(self, graph):
        return graph, False


@dataclass(frozen=True)
class TuneStringAnnotations(Pass):
    """Like Tune, with annotations as strings (what `from __future__ import annotations` gives)."""

    name: ClassVar[str] = "test-tune-str"
    max_iters: "int" = 3
    scale: "float" = 1.0
    enabled: "bool" = True
    label: "str" = "x"

    def run(self, graph):
        return graph, False


@dataclass(frozen=True)
class DropOutputs(Pass):
    """Breaks the IR: removes every output op."""

    name: ClassVar[str] = "test-drop-outputs"

    def run(self, graph):
        for op in graph.outputs():
            graph.remove(op.name)
        return graph, True


@dataclass(frozen=True)
class MeddlingAnalysis(Pass):
    """An analysis that claims to have changed the graph."""

    name: ClassVar[str] = "test-meddling-analysis"
    kind: ClassVar[str] = "analysis"

    def run(self, graph):
        return graph, True


@dataclass(frozen=True)
class HonestAnalysis(Pass):
    name: ClassVar[str] = "test-honest-analysis"
    kind: ClassVar[str] = "analysis"

    def run(self, graph):
        return graph, False


TEST_PASSES = [Tune, TuneStringAnnotations, DropOutputs, MeddlingAnalysis, HonestAnalysis]


@pytest.fixture(autouse=True)
def test_passes():
    for cls in TEST_PASSES:
        register_pass(cls.name, lambda cls=cls: cls)
    yield
    for cls in TEST_PASSES:
        del base._REGISTRY[cls.name]


GRAPH = """\
ssmc.graph @m
%x = input() {size = 2} : [2]
%dead = activation(%x) {fn = "tanh"} : [2]
%y = output(%x) : [2]
"""


# -- parsing --------------------------------------------------------------------
def test_canonicalize_parses_to_the_canonicalize_pass():
    (p,) = parse_pipeline("canonicalize")
    assert isinstance(p, Canonicalize)
    assert p.spec() == "canonicalize"


def test_an_empty_pipeline_is_no_passes():
    assert parse_pipeline("") == []
    assert parse_pipeline("   ") == []


def test_passes_are_parsed_in_order_with_spaces_allowed():
    passes = parse_pipeline(" canonicalize , test-tune{max-iters=5} ,canonicalize")
    assert [type(p) for p in passes] == [Canonicalize, Tune, Canonicalize]


def test_an_unknown_pass_is_refused_naming_the_known_passes():
    with pytest.raises(PassError) as e:
        parse_pipeline("canonicalize,fuse-everything")
    msg = str(e.value)
    assert "unknown pass 'fuse-everything'" in msg
    assert "canonicalize" in msg and "test-tune" in msg


def test_an_unknown_option_is_refused_naming_the_option_and_the_known_ones():
    with pytest.raises(PassError) as e:
        parse_pipeline("test-tune{max-iters=2,speed=9}")
    msg = str(e.value)
    assert "unknown option 'speed'" in msg
    assert "max-iters" in msg and "label" in msg


def test_canonicalize_takes_no_options():
    with pytest.raises(PassError, match="unknown option 'level'.*options: none"):
        parse_pipeline("canonicalize{level=2}")


@pytest.mark.parametrize(
    "text",
    [
        "canonicalize{",
        "canonicalize{max-iters=1",
        "canonicalize canonicalize",
        ",canonicalize",
        "canonicalize,,canonicalize",
        "canonicalize;canonicalize",
        "{x=1}",
        "canon/icalize",
    ],
)
def test_bad_pipeline_syntax_is_refused(text):
    with pytest.raises(PassError):
        parse_pipeline(text)


@pytest.mark.parametrize("value", [None, 3, ["canonicalize"]])
def test_a_pipeline_that_is_not_text_is_refused(value):
    with pytest.raises(PassError, match="a pipeline is text"):
        parse_pipeline(value)


def test_an_option_without_a_value_is_refused():
    with pytest.raises(PassError, match="must be written name=value"):
        parse_pipeline("test-tune{enabled}")


@pytest.mark.parametrize("cls", [Tune, TuneStringAnnotations], ids=["class annotations", "string annotations"])
def test_options_are_converted_to_their_declared_types_with_dashes_for_underscores(cls):
    (p,) = parse_pipeline(f"{cls.name}{{max-iters=7, scale=2.5e-1, enabled=FALSE, label=hello world}}")
    assert p == cls(max_iters=7, scale=0.25, enabled=False, label="hello world")
    assert type(p.max_iters) is int and type(p.scale) is float and type(p.enabled) is bool


def test_options_left_out_keep_their_defaults():
    (p,) = parse_pipeline("test-tune{scale=3}")
    assert p == Tune(max_iters=3, scale=3.0, enabled=True, label="x")


@pytest.mark.parametrize(
    "option,value",
    [
        ("max-iters", "abc"),
        ("max-iters", "1.5"),
        ("max-iters", "true"),
        ("scale", "fast"),
        ("enabled", "yes"),
        ("enabled", "1"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(option, value):
    with pytest.raises(PassError) as e:
        parse_pipeline(f"test-tune{{{option}={value}}}")
    assert f"{option}={value!r}" in str(e.value)
    assert "is not a valid" in str(e.value)


# -- printing back --------------------------------------------------------------
def test_spec_prints_only_options_that_differ_from_their_defaults():
    assert Tune().spec() == "test-tune"
    assert Tune(max_iters=3, label="x").spec() == "test-tune"
    assert Tune(max_iters=10, enabled=False).spec() == "test-tune{max-iters=10,enabled=false}"
    assert Tune(scale=0.5, label="y").spec() == "test-tune{scale=0.5,label=y}"


def test_an_option_given_at_its_default_value_is_not_printed():
    assert pipeline_spec(parse_pipeline("test-tune{max-iters=3,enabled=true}")) == "test-tune"


@pytest.mark.parametrize(
    "spec",
    [
        "canonicalize",
        "canonicalize,canonicalize",
        "test-tune{max-iters=-4}",
        "canonicalize,test-tune{max-iters=5,scale=0.125,enabled=false,label=abc},canonicalize",
        "test-tune-str{scale=1e-06,label=x-y}",
    ],
)
def test_a_pipeline_prints_back_to_the_same_string(spec):
    passes = parse_pipeline(spec)
    assert pipeline_spec(passes) == spec
    assert parse_pipeline(pipeline_spec(passes)) == passes


def test_a_string_option_holding_commas_or_braces_prints_quoted_and_parses_back():
    p = Tune(label="cpx,relu")
    assert p.spec() == 'test-tune{label="cpx,relu"}'
    assert parse_pipeline(p.spec()) == [p]
    (q,) = parse_pipeline('test-tune{label="a}b{c=d", max-iters=2}')
    assert q == Tune(label="a}b{c=d", max_iters=2)


def test_the_sigma_delta_kinds_option_round_trips_through_the_pipeline_string():
    (p,) = parse_pipeline('sigma-delta{kinds="cpx,relu",threshold=0.01}')
    assert p.kinds == "cpx,relu"
    assert parse_pipeline(pipeline_spec([p])) == [p]


@settings(max_examples=200, deadline=None)
@given(label=st.text(max_size=20), iters=st.integers(-(10**6), 10**6))
def test_any_string_option_prints_back_to_a_spec_that_parses_to_the_same_pass(label, iters):
    p = Tune(label=label, max_iters=iters)
    assert parse_pipeline(pipeline_spec([p, Canonicalize()])) == [p, Canonicalize()]


@pytest.mark.parametrize("text", ['test-tune{label="unclosed}', 'test-tune{label="a"b"}', "test-tune{label=1}x"])
def test_a_badly_quoted_option_is_refused(text):
    with pytest.raises(PassError):
        parse_pipeline(text)


# -- the registry ---------------------------------------------------------------
def test_registering_a_taken_name_is_refused():
    with pytest.raises(PassError, match="'canonicalize' is registered twice: by ssmc and by mypkg"):
        register_pass("canonicalize", lambda: Canonicalize, origin="mypkg")
    with pytest.raises(PassError, match="registered twice"):
        register_pass("test-tune", lambda: Tune)
    assert load_pass("canonicalize") is Canonicalize


def test_a_pass_is_loaded_only_when_a_pipeline_uses_it():
    calls = []

    def loader():
        calls.append(1)
        return Tune

    register_pass("test-lazy", loader)
    try:
        assert calls == []
        parse_pipeline("canonicalize")
        assert calls == []
        parse_pipeline("test-lazy")
        assert calls == [1]
    finally:
        del base._REGISTRY["test-lazy"]


def test_available_passes_lists_registered_passes_by_name_in_order():
    passes = available_passes()
    assert passes["canonicalize"] is Canonicalize
    assert passes["test-tune"] is Tune
    assert list(passes) == sorted(passes)


def test_passes_are_frozen_values():
    p = Tune(max_iters=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_iters = 5
    assert p == Tune(max_iters=4) and hash(p) == hash(Tune(max_iters=4))


# -- running --------------------------------------------------------------------
def test_run_pipeline_runs_passes_in_order_and_records_each():
    g = parse_graph(GRAPH)
    g, records = run_pipeline(g, parse_pipeline("canonicalize,test-tune{max-iters=9},canonicalize"))
    assert "dead" not in g
    assert [(r.name, r.spec, r.changed) for r in records] == [
        ("canonicalize", "canonicalize", True),
        ("test-tune", "test-tune{max-iters=9}", False),
        ("canonicalize", "canonicalize", False),
    ]
    assert all(isinstance(r, PassRecord) and r.seconds >= 0 for r in records)


def test_after_pass_is_called_once_per_pass_with_the_changed_flag():
    calls = []

    def after(p, graph, changed):
        calls.append((p.spec(), changed, "dead" in graph))

    run_pipeline(parse_graph(GRAPH), parse_pipeline("test-tune{label=a},canonicalize,canonicalize"), after_pass=after)
    assert calls == [("test-tune{label=a}", False, True), ("canonicalize", True, False), ("canonicalize", False, False)]


def test_a_pass_that_breaks_the_ir_is_caught_naming_the_pass():
    calls = []
    with pytest.raises(PassError) as e:
        run_pipeline(
            parse_graph(GRAPH),
            parse_pipeline("canonicalize,test-drop-outputs,canonicalize"),
            after_pass=lambda p, g, c: calls.append(p.name),
        )
    msg = str(e.value)
    assert msg.startswith("after pass test-drop-outputs:")
    assert "no output op" in msg
    assert calls == ["canonicalize"]  # stopped at the broken pass


def test_verification_between_passes_can_be_turned_off():
    g, records = run_pipeline(parse_graph(GRAPH), parse_pipeline("test-drop-outputs"), verify_each=False)
    assert g.outputs() == []
    assert [r.changed for r in records] == [True]


def test_an_analysis_that_reports_a_change_is_refused():
    with pytest.raises(PassError, match="analysis pass test-meddling-analysis reported a change"):
        run_pipeline(parse_graph(GRAPH), parse_pipeline("test-meddling-analysis"))


def test_an_analysis_that_changes_nothing_runs():
    g = parse_graph(GRAPH)
    text = print_graph(g)
    g, records = run_pipeline(g, parse_pipeline("test-honest-analysis"))
    assert print_graph(g) == text
    assert records[0].changed is False


def test_a_graph_that_is_broken_before_any_pass_is_reported_after_the_first():
    g = Graph("bad")  # no input, no output
    with pytest.raises(PassError, match="(?s)after pass test-tune: .*no input op"):
        run_pipeline(g, parse_pipeline("test-tune"))
