"""CompiledNet: the one in-memory form of a compiled net; net.lava is read into it and the API's Net is it."""

import json

import ssmc
from ssmc.api import Net
from ssmc.backend_loihi import bundle
from ssmc.config import CompileConfig
from ssmc.ir.net import CompiledNet
from tests.backend_loihi.sample import make_graph


def test_the_api_net_is_the_compiled_net_and_net_lava_loads_straight_into_it(tmp_path):
    net = Net(
        graph=make_graph(),
        source={"file": "s.onnx"},
        pipeline="canonicalize",
        config=CompileConfig(readout="mean"),
        extras={"notes/a.txt": b"hi"},
    )
    assert isinstance(net, CompiledNet) and bundle.Bundle is CompiledNet
    net.save(tmp_path / "n.lava")
    back = ssmc.load(tmp_path / "n.lava")
    assert type(back) is Net and back.format_version == bundle.FORMAT_VERSION and net.format_version is None
    assert (back.source, back.pipeline, back.config, back.extras) == (net.source, net.pipeline, net.config, net.extras)
    assert type(bundle.load(tmp_path / "n.lava")) is CompiledNet  # the reader needs no API


def test_the_extras_other_stages_read_have_typed_accessors():
    target = {"format": "ssmc.target", "values": {"chips": 1}, "provenance": {"chips": {"sureness": "user"}}}
    rows = [{"name": "p0", "class": "Dense", "cores": []}]
    net = CompiledNet(
        graph=make_graph(),
        extras={"target.json": json.dumps(target).encode(), "lava/processes.json": json.dumps(rows).encode()},
    )
    assert net.target_description() == target and net.lava_processes() == rows
    assert net.microcode_index() is None and CompiledNet(graph=make_graph()).target_description() is None
