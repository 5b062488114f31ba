"""partition: neuron groups -> cores of the target, capacity-feasible, minimising inter-core traffic.

Runs on the neuro-level IR (after assign-bitwidths and sigma-delta). Reads
the target (`target`, `board`, `chips`, `max-neurons-per-core`), measures
message rates on the calibration data when there is some (ssmc.mapping.rates),
cuts the network into structural blocks (a channel's modes stay with the
neuron that sums them; wide layers split at channel boundaries) and assigns
blocks to cores with the chosen method: `cpsat` (default; OR-Tools CP-SAT,
interleaved workers and a deterministic time budget (about `time-limit` wall
seconds), hinted with the
better of greedy and METIS, reporting its proven bound and gap) or the
baselines `greedy`, `metis`, `index` (docs/mapping.md). Large networks are
solved chips first, then cores per chip.

Changes: sets the graph attributes ``target`` and ``msg_rate_source``, and
``placement`` (cores in layer order) and ``msg_rate`` on every neuron group.
Guarantees: the verifier's capacity check passes, and the same graph and
options give the same placement. A network that cannot fit raises FitError
with the cores it needs, the binding capacity and options that would fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ssmc.ir.graph import Graph
from ssmc.ir.placement import set_placement
from ssmc.mapping.mapper import METHODS, map_network
from ssmc.mapping.netlist import build_netlist
from ssmc.passes.base import Pass, PassError, check_time_limit, data_field, log
from ssmc.runtime.rates import measure_rates
from ssmc.targets import load_target


@dataclass(frozen=True)
class Partition(Pass):
    name: ClassVar[str] = "partition"
    method: str = "cpsat"
    """cpsat (optimising), or a baseline: greedy (layer order), metis (pymetis), index (neuron order)."""
    time_limit: float = 10.0
    """CP-SAT budget, about wall seconds on the dev machine (spent as deterministic time, so reproducible)."""
    seed: int = 0
    """Solver seed (CP-SAT and METIS)."""
    target: str = ""
    """Target file (JSON) or built-in name; empty: the shipped loihi2."""
    board: str = ""
    """Board of the target (oheo-gulch, kapoho-point, ...); empty: the target's default."""
    chips: int = 0
    """Number of chips (overrides the board's); 0: the board's."""
    max_neurons_per_core: int = 0
    """Use at most this many neurons per core (spread for speed); 0: the target's capacity."""
    rate_sequences: int = 8
    """Calibration sequences the numpy engine runs to measure message rates (0: do not measure)."""
    calibration: object = data_field("calibration sequences [n, tokens, features] (message rates)")
    target_file: object = data_field(
        "the target file (a path, or its bytes as compile read them), when `target` records only its name"
    )

    def run(self, graph: Graph) -> tuple[Graph, bool]:
        if not graph.ops_of_kind("neurons"):
            raise PassError("partition works on neuron groups: run it after assign-bitwidths")
        if self.method not in METHODS:
            raise PassError(f"partition: method {self.method!r} is not one of {', '.join(METHODS)}")
        check_time_limit(self.name, self.time_limit)
        if self.max_neurons_per_core < 0:
            raise PassError(
                f"partition: max-neurons-per-core = {self.max_neurons_per_core}; give a whole number "
                "of at least 1, or 0 for the target's capacity"
            )
        target = load_target(
            self.target_file or self.target or None, board=self.board or None, chips=self.chips or None
        )
        graph = graph.copy()
        source = measure_rates(graph, self.calibration, self.rate_sequences)
        result = map_network(
            build_netlist(graph), target, self.method, self.time_limit, self.seed, self.max_neurons_per_core
        )
        set_placement(graph, result.core_of, target)
        i = result.info
        log.info(
            f"{i['cores']} cores ({i['method']}; {i['blocks']} blocks; capacity lower bound "
            f"{i['lower_bound_cores']}, binding: {i['binding_capacity']}); rates {source}"
        )
        if "status" in i:
            bound = i.get("bound", i.get("within_window_bound"))
            log.info(
                f"CP-SAT {i.get('formulation', '')}: {i['status']}, objective {i['objective']} "
                f"(messages + hops per step), proven bound {bound}, gap {i['gap']}"
            )
        return graph, True
