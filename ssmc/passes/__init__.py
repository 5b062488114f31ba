"""Passes over the IR and the registry that names them.

Built-in passes are registered lazily: a pass module is imported only when
the pass is used or listed.
"""

from ssmc.passes.base import (Pass, PassError, PassRecord, available_passes, load_pass, parse_pipeline,
                              pipeline_spec, register_pass, run_pipeline)


def _canonicalize():
    from ssmc.passes.canonicalize import Canonicalize
    return Canonicalize


register_pass("canonicalize", _canonicalize)

#: What `ssmc compile` runs when no --passes is given.
DEFAULT_PIPELINE = "canonicalize"

__all__ = ["Pass", "PassError", "PassRecord", "available_passes", "load_pass", "parse_pipeline", "pipeline_spec",
           "register_pass", "run_pipeline", "DEFAULT_PIPELINE"]
