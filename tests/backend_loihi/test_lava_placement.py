"""net.lava records which Lava process runs on which core and chip, and ssmc report shows it."""

import json

import ssmc
from ssmc.backend_loihi.lava_net import process_table
from ssmc.ir.placement import placement_of
from ssmc.report import build_report

EXAMPLE = "examples/digits/digits_s4d_step.onnx"
CALIB = "examples/digits/digits_calib.npz"
SECTION = "Lava processes (which runs on which core)"


def test_every_process_is_recorded_on_the_cores_of_the_neurons_it_is_or_feeds(tmp_path):
    # a small per-core neuron cap spreads the complex pairs over several cores
    net = ssmc.compile(EXAMPLE, readout="mean", calibration=CALIB, max_neurons_per_core=300)
    net.save(tmp_path / "net.lava")
    net = ssmc.load(tmp_path / "net.lava")
    recorded = json.loads(net.extras["lava/processes.json"])
    placed = placement_of(net.graph)
    assert any(len(blocks) > 1 for blocks in placed.values())
    assert {r["name"] for r in recorded} == {r["name"] for r in process_table(net)}
    post_of = {op.name: net.graph.consumers(op.name)[0].name for op in net.graph.ops_of_kind("synapses")}
    for row in recorded:
        group = post_of.get(row["name"], row["name"])  # a synapse process lives with the neurons it feeds
        want = [{"chip": b.chip, "core": b.core, "neurons": [b.start, b.stop]} for b in placed[group]]
        assert row["cores"] == want, row["name"]
    rows = build_report(net)["sections"][SECTION]
    assert len(rows) == len(recorded) and all(r["cores"].startswith("chip") for r in rows)


def test_an_unplaced_net_records_its_processes_without_cores():
    net = ssmc.compile(EXAMPLE, readout="mean", calibration=CALIB, skip=["partition", "place"])
    recorded = json.loads(net.extras["lava/processes.json"])
    assert recorded and all(r["cores"] == [] for r in recorded)
    assert {r["cores"] for r in build_report(net)["sections"][SECTION]} == {"unplaced"}
