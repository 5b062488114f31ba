"""Link loads: every core-to-core flow is routed along the router row first, then the column (XY), and the loads
on all links of a chip add up to that chip's hop-weighted traffic, counted independently by the mapper."""

import pytest

from ssmc.api import Net
from ssmc.passes.place import Place
from ssmc.report import build_report
from ssmc.report.links import link_loads, xy_path
from ssmc.report.render import to_text
from ssmc.targets import load_target
from tests.passes.test_place import partitioned


def test_xy_path_goes_along_the_row_then_down_the_column():
    assert xy_path((0, 0), (2, 3)) == [
        ((0, 0), (0, 1)),
        ((0, 1), (0, 2)),
        ((0, 2), (0, 3)),
        ((0, 3), (1, 3)),
        ((1, 3), (2, 3)),
    ]
    assert xy_path((1, 2), (0, 0)) == [((1, 2), (1, 1)), ((1, 1), (1, 0)), ((1, 0), (0, 0))]
    assert xy_path((3, 3), (3, 3)) == []


def test_loads_of_hand_placed_flows():
    cores = [
        {"chip": 0, "core": 0, "router": [0, 0]},
        {"chip": 0, "core": 9, "router": [0, 2]},
        {"chip": 0, "core": 41, "router": [1, 2]},
        {"chip": 1, "core": 0, "router": [0, 0]},
    ]
    matrix = [
        [0, 2.0, 1.0, 0.5],  # core 0 -> (0,2) twice a step, -> (1,2) once, -> the other chip half a step
        [0, 0, 0, 0],
        [3.0, 0, 0, 0],  # (1,2) -> (0,0): along row 1 to column 0, then up
        [0, 0, 0, 0],
    ]
    loads = link_loads(cores, matrix, load_target(board="kapoho-point"))
    got = {(tuple(k["from"]), tuple(k["to"])): k["load"] for k in loads["on_chip"]}
    assert got == {
        ((0, 0), (0, 1)): 3.0,
        ((0, 1), (0, 2)): 3.0,
        ((0, 2), (1, 2)): 1.0,
        ((1, 2), (1, 1)): 3.0,
        ((1, 1), (1, 0)): 3.0,
        ((1, 0), (0, 0)): 3.0,
    }
    assert [(k["from"], k["to"], k["load"]) for k in loads["between_chips"]] == [([0, 0], [0, 1], 0.5)]
    assert loads["on_chip"][0]["load"] == 3.0  # busiest first


@pytest.mark.parametrize("neurons", [40, 24])
def test_link_loads_sum_to_the_hop_weighted_traffic_of_a_placed_net(tmp_path, neurons):
    placed, _ = Place(time_limit=2.0).run(partitioned(tmp_path, chips=1, neurons=neurons))
    rep = build_report(Net(graph=placed, source={}, pipeline="", report={}))
    assert rep["placement"]["cores_used"] > 8  # several routers, so flows cross links
    total = sum(k["load"] for k in rep["links"]["on_chip"])
    assert total == pytest.approx(rep["traffic"]["hop_weighted"], rel=1e-6, abs=1e-3)
    assert rep["links"]["between_chips"] == []
    assert "busiest links" in to_text(rep)


def test_a_multi_chip_html_report_draws_the_board_and_tabulates_chip_to_chip_loads(tmp_path):
    from ssmc.report.render import write_html

    placed, _ = Place(time_limit=2.0).run(partitioned(tmp_path, chips=3, neurons=12, cores_per_chip=32))
    rep = build_report(Net(graph=placed, source={}, pipeline="", report={}))
    assert rep["placement"]["chips_used"] > 1 and rep["links"]["between_chips"]
    # the busiest link drawn at full strength once made matplotlib refuse an alpha of 1.0000000000000002
    files = write_html(rep, str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert all(p.endswith(".png") for p in files[1:]) and "to chip at" in page
    assert "chip at" in to_text(rep)
