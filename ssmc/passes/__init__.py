"""Passes over the IR and the registry that names them.

Built-in passes are registered lazily: a pass module is imported only when
the pass is used or listed.
"""

from ssmc.passes.base import (Pass, PassError, PassRecord, available_passes, load_pass, parse_pipeline,
                              pipeline_spec, register_pass, run_pipeline)


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

#: The float part of the pipeline: S4D layers become complex neuron pairs between linears.
FLOAT_PIPELINE = "canonicalize,discretize,rescale-states,fuse-complex-pairs,fold-linear"
#: What `ssmc compile` runs when no --passes is given: the float part, quantization (LayerNorm on
#: neurons), then mapping onto cores.
DEFAULT_PIPELINE = FLOAT_PIPELINE + ",assign-bitwidths,partition,place"
#: The default with LayerNorm approximated by frozen statistics (freeze-norms): no norm neurons or
#: latency, but one calibrated gain for every token (docs/fixed_point.md).
FROZEN_NORMS_PIPELINE = FLOAT_PIPELINE + ",freeze-norms,assign-bitwidths,partition,place"

__all__ = ["Pass", "PassError", "PassRecord", "available_passes", "load_pass", "parse_pipeline", "pipeline_spec",
           "register_pass", "run_pipeline", "DEFAULT_PIPELINE", "FLOAT_PIPELINE",
           "FROZEN_NORMS_PIPELINE"]
