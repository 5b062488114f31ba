"""partition: every placement fits every capacity (checked by the verifier), keeps structure, is reproducible,
and a network that cannot fit gets a fit error that says what it needs."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from ssmc.errors import FitError, IRError
from ssmc.ir.placement import PLACEMENT_ATTR, TARGET_ATTR, core_assignment, placement_of, set_placement
from ssmc.ir.text import parse_graph, print_graph
from ssmc.ir.verify import verify
from ssmc.mapping.capacity import target_of
from ssmc.passes.partition import Partition
from ssmc.targets import load_target
from tests.builders.neuro_models import s4d_stack
from tests.runtime.test_engine_contract import random_extended_network, random_network

METHODS = ("cpsat", "greedy", "metis", "index")
TIGHT = "tight.json"


def tight_target(tmp_path, cores_per_chip=None, **core):
    """The loihi2 file with smaller cores (and chips), so small networks need many of them."""
    import json
    from importlib import resources

    data = json.loads(resources.files("ssmc.targets").joinpath("loihi2.json").read_text())
    for key, value in core.items():
        data["core"][key]["value"] = value
    if cores_per_chip:
        data["chip"]["cores_per_chip"]["value"] = cores_per_chip
    path = tmp_path / TIGHT
    path.write_text(json.dumps(data))
    return str(path)


def partition(graph, **options):
    g, changed = Partition(time_limit=0.5, rate_sequences=0, **options).run(graph)
    assert changed
    return g


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(6))
def test_every_placement_verifies_under_tight_capacities(tmp_path, method, seed):
    graph = (random_network if seed % 2 else random_extended_network)(seed)
    target = tight_target(tmp_path, neurons=8, memory_bytes=4096, synapse_bytes=2048, groups=3)
    placed = partition(graph, method=method, target=target)
    verify(placed)  # the verifier recounts every capacity from the IR
    sizes = {op.name: int(op.attrs["size"]) for op in placed.ops_of_kind("neurons")}
    for name, blocks in placement_of(placed).items():
        covered = sorted((b.start, b.stop) for b in blocks)
        assert covered[0][0] == 0 and covered[-1][1] == sizes[name]
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))


@pytest.mark.parametrize("method", ("cpsat", "greedy", "metis"))
def test_a_channels_modes_stay_with_the_neuron_that_sums_them(tmp_path, method):
    H, M = 16, 4
    g = s4d_stack(H, M, 2, rates=(1.0, 0.5))
    placed = partition(g, method=method, target=tight_target(tmp_path, neurons=48))
    target = target_of(placed)
    core_of, problems = core_assignment(placed, target)
    assert not problems
    offsets, o = {}, 0
    for op in placed.ops_of_kind("neurons"):
        offsets[op.name] = o
        o += int(op.attrs["size"])
    for layer in range(2):
        pairs, relu = offsets[f"s{layer}.pairs"], offsets[f"relu{layer}"]
        for h in range(H):
            modes = core_of[pairs + h * 2 * M : pairs + (h + 1) * 2 * M]
            assert set(modes.tolist()) == {int(core_of[relu + h])}
    assert len(np.unique(core_of)) > 2  # the test means something only if the layers were split


@pytest.mark.parametrize("method", ("cpsat", "greedy"))
def test_a_dense_s5_layer_is_spread_by_its_synapse_memory_and_keeps_each_modes_pair_together(tmp_path, method):
    # modes shared by all channels: every compartment reads all H channels, every relu sums all 2P compartments
    H, M = 8, 4
    target = tight_target(tmp_path, synapse_bytes=1024, memory_bytes=8192)
    sparse_cores = len(
        np.unique(core_assignment(partition(s4d_stack(H, M, 1), method=method, target=target), load_target(target))[0])
    )
    placed = partition(s4d_stack(H, M, 1, dense=True), method=method, target=target)
    verify(placed)  # every core within every capacity, synapses counted by non-zeros
    core_of, problems = core_assignment(placed, target_of(placed))
    assert not problems
    groups = placed.ops_of_kind("neurons")
    at = [g.name for g in groups].index("s0.pairs")
    pairs = sum(int(g.attrs["size"]) for g in groups[:at])
    modes = core_of[pairs : pairs + 2 * H * M].reshape(-1, 2)
    assert np.all(modes[:, 0] == modes[:, 1])
    assert len(np.unique(core_of)) > sparse_cores  # H x more B and C synapses need more cores


def test_verifier_rejects_a_core_over_capacity(tmp_path):
    g = partition(s4d_stack(8, 4, 1), target=tight_target(tmp_path, neurons=64))
    target = target_of(g)
    core_of, _ = core_assignment(g, target)
    set_placement(g, np.zeros_like(core_of), target)  # everything on core 0
    with pytest.raises(IRError, match="neurons .* per core = .* exceeds the target's 64"):
        verify(g)


def test_verifier_rejects_unplaced_and_doubly_placed_neurons(tmp_path):
    g = partition(random_network(3), target=tight_target(tmp_path, neurons=8))
    op = g.ops_of_kind("neurons")[1]
    quads = op.attrs[PLACEMENT_ATTR]
    op.attrs[PLACEMENT_ATTR] = quads + quads[:4]
    with pytest.raises(IRError, match="placed twice"):
        verify(g)
    op.attrs[PLACEMENT_ATTR] = ()
    with pytest.raises(IRError, match="not placed"):
        verify(g)
    del g.attrs[TARGET_ATTR]
    op.attrs[PLACEMENT_ATTR] = quads
    with pytest.raises(IRError, match="no 'target' attribute"):
        verify(g)


def test_placement_round_trips_through_the_text_form(tmp_path):
    g = partition(random_extended_network(2), target=tight_target(tmp_path, neurons=8))
    again = parse_graph(print_graph(g))
    assert placement_of(again) == placement_of(g)
    assert target_of(again) == target_of(g)
    verify(again)


@pytest.mark.parametrize("method", METHODS)
def test_the_same_input_gives_a_byte_identical_placement(tmp_path, method):
    target = tight_target(tmp_path, neurons=40)
    texts = {
        print_graph(partition(s4d_stack(8, 4, 2, rates=(1.0, 0.3)), method=method, target=target)) for _ in range(2)
    }
    assert len(texts) == 1


def test_placement_is_identical_across_processes(tmp_path):
    target = tight_target(tmp_path, neurons=40)
    code = (
        "import hashlib; from ssmc.passes.partition import Partition; from ssmc.ir.text import print_graph; "
        "from tests.builders.neuro_models import s4d_stack; "
        f"g, _ = Partition(time_limit=0.5, rate_sequences=0, target={target!r}).run(s4d_stack(8, 4, 2)); "
        "print(hashlib.sha256(print_graph(g).encode()).hexdigest())"
    )
    out = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(out) == 1


def test_a_network_that_does_not_fit_gets_cores_needed_binding_capacity_and_fixes(tmp_path):
    target = tight_target(tmp_path, neurons=16)
    with pytest.raises(FitError) as e:
        partition(s4d_stack(64, 4, 4), target=target)  # ~2.7k neurons, 1 chip of 120 cores of 16 neurons
    msg = str(e.value)
    assert "needs" in msg and "cores" in msg and "binding capacity" in msg and "--chips" in msg
    needed = int(msg.split("needs ")[1].split(" cores")[0])
    # the same numbers as fields, for callers that sweep targets
    cores = load_target(target).total_cores
    assert (e.value.need, e.value.have) == (needed, cores) and needed > cores
    assert e.value.binding == "neurons" and any(f.startswith("--chips") for f in e.value.fixes)
    # the advice is right: that many chips' worth of cores fits
    chips = -(-needed // load_target(target).cores_per_chip)
    verify(partition(s4d_stack(64, 4, 4), target=target, chips=chips, method="greedy"))


def test_an_indivisible_channel_larger_than_a_core_is_named(tmp_path):
    with pytest.raises(FitError, match="indivisible piece") as e:
        partition(s4d_stack(4, 64, 1), target=tight_target(tmp_path, neurons=64))
    # a channel of 64 modes is 128 cpx compartments plus its summing neuron, against 64 per core
    assert e.value.binding == "neurons" and e.value.have == 64 and e.value.need > 128


def test_sigma_delta_layers_are_cheaper_to_cut():
    """Rates flow into the objective: a sigma-delta layer's measured rate scales its traffic."""
    from ssmc.mapping.blocks import make_blocks
    from ssmc.mapping.mapper import limits_of
    from ssmc.mapping.netlist import build_netlist

    lim = limits_of(load_target())
    dense = make_blocks(build_netlist(s4d_stack(8, 4, 1, rates=(1.0,))), lim)
    sparse = make_blocks(build_netlist(s4d_stack(8, 4, 1, rates=(0.25,))), lim)
    assert sum(w for _, _, w in sparse.hyper) < sum(w for _, _, w in dense.hyper)


def test_rates_are_measured_on_calibration_data():
    g = random_extended_network(5)
    x = np.random.default_rng(0).standard_normal((3, 12, g.inputs()[0].shape[0]))
    placed, _ = dataclasses.replace(Partition(time_limit=1.0, rate_sequences=2), calibration=x).run(g)
    assert "measured" in placed.attrs["msg_rate_source"]
    rates = [op.attrs["msg_rate"] for op in placed.ops_of_kind("neurons")]
    assert all(0.0 <= r <= 1.0 for r in rates) and any(r < 1.0 for r in rates)


def test_a_target_allowing_fewer_groups_per_core_than_a_channel_needs_is_refused_by_name(tmp_path):
    # a channel's modes (cpx) and its summing neuron (relu) are one piece: one group per core cannot hold it
    with pytest.raises(
        FitError, match=r"indivisible piece of %s0.pairs, %relu0 .*holds 2 neuron groups.*allows 1 per core"
    ):
        partition(s4d_stack(4, 4, 1), target=tight_target(tmp_path, groups=1))


def test_a_network_too_big_for_one_model_is_solved_hierarchically_and_identically_across_processes(tmp_path):
    # FLAT_LIMIT forced down so a small network takes the path of million-neuron ones: chips from greedy runs,
    # CP-SAT per window of cores; the result satisfies every capacity and is the same in every process
    target = tight_target(tmp_path, neurons=24, cores_per_chip=24)
    code = (
        "import hashlib; import ssmc.mapping.mapper as mp; mp.FLAT_LIMIT = 50; "
        "from ssmc.passes.base import run_pipeline; from ssmc.passes.partition import Partition; "
        "from ssmc.ir.text import print_graph; from tests.builders.neuro_models import s4d_stack; "
        f"p = Partition(time_limit=2.0, rate_sequences=0, target={target!r}, chips=2); "
        "g, recs = run_pipeline(s4d_stack(16, 4, 3, rates=(1.0, 0.3, 0.6)), [p], verify_each=True); "
        "print(any('hierarchical' in n for n in recs[0].notes), hashlib.sha256(print_graph(g).encode()).hexdigest())"
    )
    out = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(out) == 1
    assert out.pop().startswith("True ")
