"""ssmc profile: per group histograms of the values the net carries against their fixed-point range and
resolution, weights on their grid, |A_bar| per mode against its coefficient levels; one page of readable
PNGs (decoded here from their IHDR header), written as every ssmc output."""

import base64
import re
import struct

import numpy as np
import pytest

from ssmc.cli import main
from ssmc.report.profile import FEW_LEVELS, profile_data
from tests.builders.neuro_models import s4d_stack

EXAMPLE = "examples/digits/digits_s4d_step.onnx"
CALIB = "examples/digits/digits_calib.npz"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which the format requires to come first."""
    assert data[:8] == PNG_MAGIC
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def net_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "net.lava"
    assert main(["compile", EXAMPLE, "-o", str(path), "--readout", "mean", "--calibrate", CALIB, "-q"]) == 0
    return path


def test_page_has_one_readable_png_per_figure_and_names_every_group(net_path, tmp_path, capsys):
    import ssmc

    page = tmp_path / "profile.html"
    assert main(["profile", str(net_path), "--input", CALIB, "--limit", "2", "-o", str(page), "-q"]) == 0
    body = page.read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", body)
    graph = ssmc.load(net_path).graph
    neurons, synapses = graph.ops_of_kind("neurons"), graph.ops_of_kind("synapses")
    stateful = [op for op in neurons if op.attrs["kind"] in ("cpx", "integrator")]
    cpx = [op for op in neurons if op.attrs["kind"] == "cpx"]
    # messages per neuron group, state per stateful group, modes per cpx group, weights per synapse group
    assert len(images) == len(neurons) + len(stateful) + len(cpx) + len(synapses)
    assert cpx and stateful
    for b64 in images:
        data = base64.b64decode(b64)
        width, height = png_size(data)
        assert width >= 800 and height >= 300 and len(data) > 5000
    for op in neurons + synapses:
        assert f"<h2>{op.name}: " in body
    out = capsys.readouterr().out
    assert all(op.name in out for op in neurons + synapses) and f"wrote {page}" in out


def test_profile_refuses_to_write_onto_its_input_or_into_a_missing_folder(net_path, tmp_path, capsys):
    assert main(["profile", str(net_path), "--input", CALIB, "-o", str(net_path), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ssmc: error:") and "is the input" in err and err.count("\n") == 1
    missing = tmp_path / "nowhere" / "profile.html"
    assert main(["profile", str(net_path), "--input", CALIB, "-o", str(missing), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ssmc: error:") and "does not exist" in err and err.count("\n") == 1
    assert not missing.parent.exists()


@pytest.fixture
def small_net():
    graph = s4d_stack(H=2, M=2, layers=1)
    ops = {op.name: op for op in graph.ops()}
    ops["relu0"].attrs.update(msg_bits=10, frac=4)
    ops["s0.pairs"].attrs.update(coef_bits=12)
    # modes: |A_bar| = 1 - 3/2^11 (3 levels below 1, highlighted), 0.5, 0.75, 0
    ops["s0.pairs"].params["c_re"] = np.array([2048 - 3, 0, 1536, 0], np.int64)
    ops["s0.pairs"].params["c_im"] = np.array([0, 1024, 0, 0], np.int64)
    ops["mix0"].attrs["weight_exp"] = -3
    ops["mix0"].params["weight"] = np.array([[8, 0], [-4, 8]], np.int32)
    return graph


def test_drawn_range_and_resolution_are_the_groups_msg_bits_and_frac(small_net):
    x = np.random.default_rng(0).normal(size=(2, 6, 1))
    data = {e["group"]: e for e in profile_data(small_net, x)}
    relu = data["relu0"]["messages"]
    # 10-bit messages at frac 4: integers -512..511 stand for -512/16 .. 511/16 in steps of 1/16
    assert (relu["lo"], relu["hi"], relu["lsb"]) == (-32.0, 511 / 16, 1 / 16)
    assert np.all(relu["values"] * 16 == np.round(relu["values"] * 16))  # every value on the 1/16 grid
    state = data["s0.pairs"]["state"]
    assert (state["lo"], state["hi"]) == (-(2.0**23), 2.0**23 - 1)  # state_bits default 24
    modes = data["s0.pairs"]["modes"]
    np.testing.assert_allclose(modes["abs_a"], [1 - 3 / 2048, 0.5, 0.75, 0.0])
    np.testing.assert_allclose(modes["levels"], [3, 1024, 512, 2048])
    assert int(np.count_nonzero(modes["levels"] <= FEW_LEVELS)) == 1
    mix = data["mix0"]
    # absent connections (zeros) are not weights; the rest are W * 2^-3
    assert sorted(mix["values"]) == [-0.5, 1.0, 1.0] and mix["levels"] == 2 and mix["step"] == 1 / 8


def test_summary_counts_values_near_zero_and_at_the_edge():
    from ssmc.report.profile import _value_stats

    values = np.array([0.0, 0.05, -0.1, 0.5, 2.0, -2.0, 1.9])
    stats = _value_stats(values, lsb=0.1, lo=-2.0, hi=1.9)
    assert stats == {"count": 7, "near_zero": 3 / 7, "at_edge": 3 / 7}
