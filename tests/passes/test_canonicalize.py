"""canonicalize removes ops nobody uses, written as IR in -> IR out."""

from ssmc.ir.text import parse_graph, print_graph
from ssmc.ir.verify import verify
from ssmc.passes import parse_pipeline, run_pipeline
from ssmc.passes.canonicalize import Canonicalize, remove_dead_ops


def canonicalize(text: str) -> tuple[str, bool]:
    graph = verify(parse_graph(text))
    graph, changed = Canonicalize().run(graph)
    verify(graph)
    return print_graph(graph), changed


def test_a_dead_chain_hanging_off_the_graph_is_removed_and_unused_inputs_stay():
    before = """\
ssmc.graph @net
%x = input() {size = 2} : [2]
%aux = input() {size = 3} : [3]
%enc = linear(%x) : [2]
  weight = f32[2,2] [1, 0, 0.5, 1]
%d1 = activation(%enc) {fn = "relu"} : [2]
%d2 = norm(%d1) : [2]
  bias = f32[2] [0, 0]
  weight = f32[2] [1, 1]
%act = activation(%enc) {fn = "tanh"} : [2]
%y = output(%act) : [2]
"""
    after = """\
ssmc.graph @net
%x = input() {size = 2} : [2]
%aux = input() {size = 3} : [3]
%enc = linear(%x) : [2]
  weight = f32[2,2] [1, 0, 0.5, 1]
%act = activation(%enc) {fn = "tanh"} : [2]
%y = output(%act) : [2]
"""
    assert canonicalize(before) == (after, True)


def test_dead_ops_that_read_live_values_twice_or_join_two_dead_branches_are_removed():
    before = """\
ssmc.graph @net
%x = input() {size = 2} : [2]
%sq = add(%x, %x) : [2]
%a = activation(%sq) {fn = "relu"} : [2]
%b = activation(%sq) {fn = "sigmoid"} : [2]
%join = add(%a, %b) : [2]
%g = activation(%join) {fn = "glu"} : [1]
%p = pool(%x) {mode = "sum"} : [2]
%y = output(%p) : [2]
"""
    after = """\
ssmc.graph @net
%x = input() {size = 2} : [2]
%p = pool(%x) {mode = "sum"} : [2]
%y = output(%p) : [2]
"""
    assert canonicalize(before) == (after, True)


def test_every_output_and_everything_it_reads_is_kept():
    text = """\
ssmc.graph @two_heads
%x = input() {size = 2} : [2]
%h = activation(%x) {fn = "gelu"} : [2]
%y1 = output(%h) : [2]
%y2 = output(%x) : [2]
"""
    assert canonicalize(text) == (text, False)


def test_a_graph_with_nothing_dead_is_unchanged_and_says_so():
    text = """\
ssmc.graph @net {source = "m.onnx"}
%x = input() {size = 1} : [1]
%enc = linear(%x) : [2]
  bias = f32[2] [-0, 1e-45]
  weight = f32[2,1] [0.1, -3]
%ssm = s4d(%enc) {form = "discrete", modes = 1} : [2]
  A_bar = c64[2,1] [(0.5, 0.25), (0.9, -0.1)]
  B_bar = c64[2,1] [(1, 0), (0, 1)]
  C = c64[2,1] [(0.25, 0), (1, -1)]
  D = f32[2] [0, 1]
%y = output(%ssm) : [2]
"""
    assert canonicalize(text) == (text, False)


def test_remove_dead_ops_counts_what_it_removed():
    g = parse_graph("""\
ssmc.graph @net
%x = input() {size = 2} : [2]
%d1 = activation(%x) {fn = "relu"} : [2]
%d2 = activation(%d1) {fn = "relu"} : [2]
%d3 = activation(%d2) {fn = "relu"} : [2]
%y = output(%x) : [2]
""")
    assert remove_dead_ops(g) == 3
    assert remove_dead_ops(g) == 0
    assert [op.name for op in g.ops()] == ["x", "y"]


def test_canonicalize_in_a_pipeline_records_whether_it_changed_the_graph():
    g = parse_graph("""\
ssmc.graph @net
%x = input() {size = 2} : [2]
%d = activation(%x) {fn = "tanh"} : [2]
%y = output(%x) : [2]
""")
    g, records = run_pipeline(g, parse_pipeline("canonicalize,canonicalize"))
    assert [r.changed for r in records] == [True, False]
    assert "d" not in g
