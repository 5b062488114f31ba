"""Passes over the IR and the registry that names them.

Built-in passes are registered lazily: a pass module is imported only when
the pass is used or listed.
"""

from ssmc.config import DEFAULT_PIPELINE, FLOAT_PIPELINE, FROZEN_NORMS_PIPELINE
from ssmc.passes.build import OUTPUT_STEPS, build_pipeline, select_passes
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


def _canonicalize():
    from ssmc.passes.canonicalize import Canonicalize

    return Canonicalize


def _discretize():
    from ssmc.passes.discretize import Discretize

    return Discretize


def _rescale_states():
    from ssmc.passes.rescale_states import RescaleStates

    return RescaleStates


def _fuse_complex_pairs():
    from ssmc.passes.fuse_complex_pairs import FuseComplexPairs

    return FuseComplexPairs


def _fold_linear():
    from ssmc.passes.fold_linear import FoldLinear

    return FoldLinear


def _freeze_norms():
    from ssmc.passes.freeze_norms import FreezeNorms

    return FreezeNorms


def _sigma_delta():
    from ssmc.passes.sigma_delta import SigmaDelta

    return SigmaDelta


def _assign_bitwidths():
    from ssmc.passes.assign_bitwidths import AssignBitwidths

    return AssignBitwidths


def _partition():
    from ssmc.passes.partition import Partition

    return Partition


def _place():
    from ssmc.passes.place import Place

    return Place


def _output_step(name: str):
    def load():
        from ssmc.passes import output_steps

        return {
            "describe-target": output_steps.DescribeTarget,
            "emit-microcode": output_steps.EmitMicrocode,
            "lava-processes": output_steps.LavaProcesses,
        }[name]

    return load


register_pass("canonicalize", _canonicalize)
register_pass("assign-bitwidths", _assign_bitwidths)
register_pass("discretize", _discretize)
register_pass("rescale-states", _rescale_states)
register_pass("fuse-complex-pairs", _fuse_complex_pairs)
register_pass("fold-linear", _fold_linear)
register_pass("freeze-norms", _freeze_norms)
register_pass("sigma-delta", _sigma_delta)
register_pass("partition", _partition)
register_pass("place", _place)
for _name in OUTPUT_STEPS:  # appended by build_pipeline after the passes
    register_pass(_name, _output_step(_name))

__all__ = [
    "Pass",
    "PassError",
    "PassRecord",
    "available_passes",
    "load_pass",
    "parse_pipeline",
    "pipeline_spec",
    "register_pass",
    "run_pipeline",
    "DEFAULT_PIPELINE",
    "FLOAT_PIPELINE",
    "FROZEN_NORMS_PIPELINE",
    "OUTPUT_STEPS",
    "build_pipeline",
    "select_passes",
]
