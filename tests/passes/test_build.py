"""build_pipeline: the one place a CompileConfig becomes the passes a compile runs."""

import pytest

from ssmc.config import DEFAULT_PIPELINE, CompileConfig, FileRecord, LayerWidths
from ssmc.passes import OUTPUT_STEPS, PassError, build_pipeline
from ssmc.passes.build import recorded_pipeline

PASSES = DEFAULT_PIPELINE.split(",")


def names(config: CompileConfig) -> list[str]:
    return [p.name for p in build_pipeline(config)]


def step(config: CompileConfig, name: str):
    return next(p for p in build_pipeline(config) if p.name == name)


def test_the_default_config_runs_the_default_pipeline_then_the_output_steps():
    assert names(CompileConfig()) == PASSES + ["describe-target", "emit-microcode", "lava-processes"]
    assert recorded_pipeline(build_pipeline(CompileConfig())) == DEFAULT_PIPELINE  # replayable with --passes


def test_widths_go_into_assign_bitwidths_as_its_options():
    c = CompileConfig(
        weight_bits=6,
        coef_bits=12,
        weight_exp="row",
        layers=(LayerWidths("s4d0", state_bits=20), LayerWidths("linear1", weight_bits=4)),
    )
    p = step(c, "assign-bitwidths")
    assert (p.weight_bits, p.coef_bits, p.state_bits, p.weight_exp) == (6, 12, 24, "row")
    assert p.layer_bits == "s4d0:state=20;linear1:weight=4"


def test_sigma_delta_runs_right_after_assign_bitwidths_and_replaces_one_in_the_pipeline():
    c = CompileConfig(passes=DEFAULT_PIPELINE.replace("place", "place,sigma-delta{threshold=0.5}"), sigma_delta=0.01)
    got = names(c)
    assert got.index("sigma-delta") == got.index("assign-bitwidths") + 1 and got.count("sigma-delta") == 1
    assert step(c, "sigma-delta").threshold == 0.01


def test_target_options_go_into_partition_and_describe_target_reads_the_same_target():
    c = CompileConfig(target=FileRecord("t.json", "a" * 64), board="kapoho-point", chips=3, max_neurons_per_core=50)
    part, desc = step(c, "partition"), step(c, "describe-target")
    assert (part.target, part.board, part.chips, part.max_neurons_per_core) == ("t.json", "kapoho-point", 3, 50)
    assert (desc.target, desc.board, desc.chips) == ("t.json", "kapoho-point", 3)
    assert "partition{target=t.json,board=kapoho-point,chips=3,max-neurons-per-core=50}" in recorded_pipeline(
        build_pipeline(c)
    )


def test_skip_and_stop_after_select_passes_and_output_steps():
    assert names(CompileConfig(skip=("rescale-states", "lava-processes"))) == [
        p for p in PASSES if p != "rescale-states"
    ] + ["describe-target", "emit-microcode"]
    # stopping at a pass keeps the output steps (they write what the net holds); at a step, ends there
    assert names(CompileConfig(stop_after="assign-bitwidths")) == PASSES[: PASSES.index("assign-bitwidths") + 1] + [
        "emit-microcode",
        "lava-processes",
    ]  # no partition: no target to describe
    assert names(CompileConfig(stop_after="emit-microcode")) == PASSES + ["describe-target", "emit-microcode"]


def test_output_steps_named_in_the_pipeline_are_not_added_twice():
    assert names(CompileConfig(passes="canonicalize,emit-microcode")) == [
        "canonicalize",
        "emit-microcode",
        "lava-processes",
    ]
    assert set(OUTPUT_STEPS) == {"describe-target", "emit-microcode", "lava-processes"}


@pytest.mark.parametrize(
    "config,phrase",
    [
        (CompileConfig(passes="canonicalize", weight_bits=6), "bit-width options need assign-bitwidths"),
        (CompileConfig(passes="canonicalize", sigma_delta=0.0), "sigma-delta messages need assign-bitwidths"),
        (
            CompileConfig(stop_after="fold-linear", chips=2),
            "target options (--target, --board, --chips, --max-neurons-per-core) need partition",
        ),
        (CompileConfig(skip=("nope",)), "pass 'nope' is not in the pipeline"),
        (CompileConfig(stop_after="nope"), "pass 'nope' is not in the pipeline"),
        (CompileConfig(passes="canonicalize,nope"), "unknown pass 'nope'"),
    ],
)
def test_an_option_for_a_pass_that_does_not_run_is_refused_not_ignored(config, phrase):
    with pytest.raises(PassError) as e:
        build_pipeline(config)
    assert phrase in str(e.value)
