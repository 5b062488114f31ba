"""Target descriptions: every shipped value has a source and a sureness; overrides are marked as the user's."""

import hashlib
import json
import pathlib

import pytest

import ssmc
from ssmc.targets import CAPACITIES, SURENESS, TargetError, load_target
from tests.conftest import EXAMPLES


def test_every_shipped_value_has_a_source_and_a_sureness():
    t = load_target()
    for key in list(CAPACITIES) + ["cores_per_chip", "router_mesh", "hop_cost", "chip_link_cost", "chips"]:
        assert t.provenance[key]["source"], key
        assert t.provenance[key]["sureness"] in SURENESS, key


def test_boards_and_chip_overrides():
    assert load_target().chips == 1
    kp = load_target(board="kapoho-point")
    assert kp.chips == 8 and kp.chip_mesh[0] * kp.chip_mesh[1] >= 8
    t = load_target(chips=6)
    assert t.chips == 6 and t.chip_mesh == (2, 3) and t.provenance["chips"]["sureness"] == "user"
    t = load_target(overrides={"neurons": 512})
    assert t.neurons == 512 and t.provenance["neurons"]["sureness"] == "user"


def test_hops_count_routers_and_chip_links():
    t = load_target(chips=2)
    assert t.hops((0, 0), (0, 3)) == 0  # same router
    assert t.hops((0, 0), (0, 4)) == 1  # the next router
    assert t.hops((0, 0), (1, 0)) == t.chip_link_cost


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d["core"].pop("neurons"), "lacks neurons"),
        (lambda d: d["core"]["groups"].update(value=0), "at least 1"),
    ],
)
def test_bad_target_files_are_refused_by_name(tmp_path, change, match):
    data = json.loads(open("ssmc/targets/loihi2.json").read())
    change(data)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TargetError, match=match):
        load_target(str(path))


def test_unknown_board_and_field_are_refused():
    with pytest.raises(TargetError, match="no board"):
        load_target(board="nope")
    with pytest.raises(TargetError, match="unknown target field"):
        load_target(overrides={"nope": 1})
    with pytest.raises(TargetError, match="cannot read"):
        load_target("/nonexistent/t.json")


def test_a_target_file_given_as_a_path_object_compiles_and_saves(tmp_path):
    # pathlib.Path from the Python API was recorded as is and made net.lava's manifest unserialisable
    target = pathlib.Path(ssmc.targets.__file__).with_name("loihi2.json")
    net = ssmc.compile(EXAMPLES / "digits_s4d_step.onnx", readout="mean", target=target)
    net.save(tmp_path / "net.lava")
    assert ssmc.load(tmp_path / "net.lava").config.target.file == "loihi2.json"


def test_compile_builds_from_the_target_bytes_it_hashed_even_if_the_file_changes_meanwhile(tmp_path):
    # the file is read once: replacing it while the passes run cannot give a net built for another
    # target than the sha256 it records
    shipped = pathlib.Path(ssmc.targets.__file__).with_name("loihi2.json")
    target = tmp_path / "t.json"
    target.write_bytes(shipped.read_bytes())
    other = json.loads(shipped.read_text())
    other["core"]["neurons"]["value"] = 7
    swapped = []

    def swap(pass_, graph, changed):
        if not swapped:
            target.write_text(json.dumps(other))
            swapped.append(pass_)

    net = ssmc.compile(EXAMPLES / "digits_s4d_step.onnx", readout="mean", target=target, after_pass=swap)
    assert swapped and json.loads(net.graph.attrs["target"])["neurons"] == load_target(shipped).neurons
    assert net.config.target.sha256 == hashlib.sha256(shipped.read_bytes()).hexdigest()
