"""build_pipeline: a CompileConfig -> the passes a compile runs. The one place that decides them.

In order: the config's pipeline string is parsed; the output steps (OUTPUT_STEPS,
ssmc.passes.output_steps) are appended unless it names them already; `skip` and
`stop_after` select from that list (a `stop_after` naming a pass ends the passes
there and the output steps still write what the net holds; naming an output step
ends everything there); then the overrides: the widths into assign-bitwidths,
sigma-delta placed right after assign-bitwidths (later passes see the message
rates it sets), the target options into partition, which describe-target reads
too. An option for a pass that is not in the pipeline is refused, not ignored.
"""

from __future__ import annotations

import dataclasses

from ssmc.config import CompileConfig
from ssmc.passes.base import Pass, PassError, parse_pipeline

OUTPUT_STEPS = ("describe-target", "emit-microcode", "lava-processes")


def select_passes(pipeline: list[Pass], skip=(), stop_after: str | None = None) -> list[Pass]:
    """`pipeline` without the `skip`ped passes and cut after `stop_after` (names must be in it); a cut
    at a pass keeps the output steps after it."""
    names = [p.name for p in pipeline]
    for name in list(skip or []) + ([stop_after] if stop_after else []):
        if name not in names:
            raise PassError(f"pass {name!r} is not in the pipeline ({','.join(names)})")
    if stop_after:
        end = names.index(stop_after) + 1
        keep_outputs = pipeline[end - 1].kind != "output"
        pipeline = pipeline[:end] + [p for p in pipeline[end:] if keep_outputs and p.kind == "output"]
    return [p for p in pipeline if p.name not in set(skip or [])]


def _replace(pipeline: list[Pass], name: str, options: dict, what: str) -> list[Pass]:
    if options and not any(p.name == name for p in pipeline):
        raise PassError(f"{what} need {name} in the pipeline")
    return [dataclasses.replace(p, **options) if p.name == name else p for p in pipeline]


def build_pipeline(config: CompileConfig) -> list[Pass]:
    """The passes and output steps `config` asks for, each with its options (data such as calibration
    is given at run time, ssmc.passes.base.with_data)."""
    pipeline = parse_pipeline(config.passes)
    present = {p.name for p in pipeline}
    pipeline += [parse_pipeline(name)[0] for name in OUTPUT_STEPS if name not in present]
    pipeline = select_passes(pipeline, config.skip, config.stop_after)
    pipeline = _replace(pipeline, "assign-bitwidths", config.widths(), "bit-width options")
    if config.sigma_delta is not None:
        if not any(p.name == "assign-bitwidths" for p in pipeline):
            raise PassError("sigma-delta messages need assign-bitwidths in the pipeline (they are a neuron setting)")
        sd = parse_pipeline("sigma-delta")[0]
        sd = dataclasses.replace(sd, threshold=config.sigma_delta)
        pipeline = [p for p in pipeline if p.name != "sigma-delta"]
        at = next(i for i, p in enumerate(pipeline) if p.name == "assign-bitwidths") + 1
        pipeline = pipeline[:at] + [sd] + pipeline[at:]
    mapping = config.mapping()
    pipeline = _replace(
        pipeline, "partition", mapping, "target options (--target, --board, --chips, --max-neurons-per-core)"
    )
    partition = next((p for p in pipeline if p.name == "partition"), None)
    if partition is None:  # nothing placed: no target to describe
        return [p for p in pipeline if p.name != "describe-target"]
    same_target = {k: getattr(partition, k) for k in ("target", "board", "chips")}
    return [dataclasses.replace(p, **same_target) if p.name == "describe-target" else p for p in pipeline]


def recorded_pipeline(pipeline: list[Pass]) -> str:
    """The pipeline string net.lava records: the passes without the output steps (build_pipeline adds
    them again when it is replayed)."""
    return ",".join(p.spec() for p in pipeline if p.kind != "output")
