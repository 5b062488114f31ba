"""CompiledNet: a compiled network in memory, the one type net.lava is read into and written from.

It holds the compiled IR, the float model-level IR it came from, how it was made
(source model, pipeline, ssmc.config.CompileConfig, the pass report) and the files
later stages wrote (`extras`: net.lava's extra/<path> entries, raw bytes). The
net.lava reader and writer (ssmc.backend_loihi.bundle) use it; `ssmc.api.Net` is this
class with the library's methods (run, save, trace, report_dict), so nothing is
copied between the two. Engines take what they use (the graph, the extras).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ssmc import __version__
from ssmc.config import CompileConfig
from ssmc.ir.graph import Graph

#: The extras other parts of ssmc read, by the accessor that returns them parsed.
TARGET_JSON = "target.json"
LAVA_PROCESSES_JSON = "lava/processes.json"
MICROCODE_INDEX_JSON = "microcode/index.json"


@dataclass
class CompiledNet:
    """Everything net.lava holds (docs/net_lava.md), in memory."""

    graph: Graph
    model_graph: Graph | None = None  # the float model-level IR as imported, for --compare float
    source: dict = field(default_factory=dict)  # file name, sha256, size of the ONNX model
    pipeline: str = ""  # the passes that ran, as a replayable pipeline string
    config: CompileConfig = CompileConfig()  # how it was built (ssmc.config)
    report: dict = field(default_factory=dict)  # what the frontend recognised and what each pass did
    extras: dict[str, bytes] = field(default_factory=dict)  # extra/<path> entries: path -> bytes
    ssmc_version: str = __version__  # the ssmc that wrote it (as read from a file)
    format_version: int | None = None  # the net.lava format it was read from; None: not read from a file

    def _json_extra(self, path: str):
        blob = self.extras.get(path)
        return None if blob is None else json.loads(blob)

    def target_description(self) -> dict | None:
        """extra/target.json: the target the net was placed on, every value with its source and sureness
        (ssmc.targets.Target.describe); None when the net was not placed."""
        return self._json_extra(TARGET_JSON)

    def lava_processes(self) -> list[dict] | None:
        """extra/lava/processes.json: one row per Lava process and the cores it runs on
        (ssmc.backend_loihi.lava_net.process_table); None for a net without neuron groups."""
        return self._json_extra(LAVA_PROCESSES_JSON)

    def microcode_index(self) -> dict | None:
        """extra/microcode/index.json: the neuron programs and their files (docs/microcode.md); None without."""
        return self._json_extra(MICROCODE_INDEX_JSON)
