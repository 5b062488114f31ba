"""The output steps: what a compile writes besides the IR, as named steps of the pipeline driver.

They run after the passes (build_pipeline appends them), so --stop-after, --skip,
--print-ir-after and the pass records (timings, notes) see them like any pass.
Each writes net.lava extra/ files from the graph and changes nothing:

    describe-target   extra/target.json: the partition pass's target with every value's source
                      and sureness (written when the pipeline has partition)
    emit-microcode    extra/microcode/...: one neuron program per group or core block
                      (docs/microcode.md); nothing for a net without neuron groups
    lava-processes    extra/lava/processes.json: which Lava process runs on which core
                      (docs/lava_backend.md); nothing for a net without neuron groups
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from ssmc.backend_loihi.lava_net import process_table_json
from ssmc.backend_loihi.microcode.emit import emit_microcode
from ssmc.ir.graph import Graph
from ssmc.mapping.capacity import target_of
from ssmc.passes.base import Pass, PassError, data_field, log
from ssmc.targets import load_target


@dataclass(frozen=True)
class DescribeTarget(Pass):
    """describe-target: write extra/target.json, the placed net's target with every value's source and sureness."""

    name: ClassVar[str] = "describe-target"
    kind: ClassVar[str] = "output"
    target: str = ""
    """Target file (JSON) or built-in name, as the partition pass was given it; empty: the shipped loihi2."""
    board: str = ""
    """Board of the target, as for partition."""
    chips: int = 0
    """Number of chips, as for partition."""
    target_file: object = data_field(
        "the target file (a path, or its bytes as compile read them), when `target` records only its name"
    )

    def emit(self, graph: Graph) -> dict[str, bytes]:
        described = load_target(
            self.target_file or self.target or None, board=self.board or None, chips=self.chips or None
        ).describe()
        if described["values"] != target_of(graph).values():
            raise PassError(
                "describe-target: the target differs from the one partition placed the net on; "
                "give describe-target the partition pass's target, board and chips"
            )
        return {"target.json": (json.dumps(described, indent=1, sort_keys=True) + "\n").encode()}


@dataclass(frozen=True)
class EmitMicrocode(Pass):
    """emit-microcode: write one neuron program per group or core block (extra/microcode/, docs/microcode.md)."""

    name: ClassVar[str] = "emit-microcode"
    kind: ClassVar[str] = "output"

    def emit(self, graph: Graph) -> dict[str, bytes]:
        if not graph.ops_of_kind("neurons"):
            return {}
        log.info(f"{len(graph.ops_of_kind('neurons'))} programs (docs/microcode.md)")
        return emit_microcode(graph)


@dataclass(frozen=True)
class LavaProcesses(Pass):
    """lava-processes: write extra/lava/processes.json, which Lava process runs on which core."""

    name: ClassVar[str] = "lava-processes"
    kind: ClassVar[str] = "output"

    def emit(self, graph: Graph) -> dict[str, bytes]:
        if not graph.ops_of_kind("neurons"):
            return {}
        return {"lava/processes.json": process_table_json(graph)}
