"""Where every neuron lives: the placement recorded in the IR, and its checks.

A placed graph has two things (added by the `partition` pass, moved by `place`):

- graph attribute ``target``: the resolved target values as canonical JSON
  (`ssmc.targets.Target.to_json`), so the graph alone says what it was mapped
  onto and the verifier can check it;
- on every ``neurons`` op, attribute ``placement``: a flat int tuple of
  (chip, core, start, stop) quadruples, the ranges [start, stop) of the group's
  neurons on each core, in neuron order. Synapse groups live on the cores of
  the neurons they feed (rows of their weight), so they need no attribute.

`placement_of(graph)` is the accessor other stages (the Lava backend, the
report) use. The IR only records a placement: reading the target back
(`ssmc.mapping.capacity.target_of`) and checking the placement against it
(every neuron placed exactly once, cores that exist, every per-core capacity
respected) is the mapper's knowledge, in ssmc.mapping.capacity, which
registers that check with the verifier (`ssmc.ir.verify.register_placement_check`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssmc.ir.graph import Graph

PLACEMENT_ATTR = "placement"
TARGET_ATTR = "target"


@dataclass(frozen=True, order=True)
class CoreBlock:
    """Neurons [start, stop) of one group on core `core` of chip `chip`."""

    chip: int
    core: int
    start: int
    stop: int


def is_placed(graph: Graph) -> bool:
    return TARGET_ATTR in graph.attrs or any(PLACEMENT_ATTR in op.attrs for op in graph.ops_of_kind("neurons"))


def placement_of(graph: Graph) -> dict[str, list[CoreBlock]]:
    """Neuron group name -> its CoreBlocks in neuron order (empty dict for an unplaced graph)."""
    out = {}
    for op in graph.ops_of_kind("neurons"):
        flat = op.attrs.get(PLACEMENT_ATTR)
        if flat is not None:
            out[op.name] = [CoreBlock(*flat[i : i + 4]) for i in range(0, len(flat) - len(flat) % 4, 4)]
    return out


def blocks_from_cores(core_ids: np.ndarray, cores_per_chip: int) -> list[CoreBlock]:
    """Runs of equal global core index (chip * cores_per_chip + core) -> CoreBlocks."""
    core_ids = np.asarray(core_ids)
    if core_ids.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(core_ids)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [core_ids.size]])
    return [CoreBlock(*divmod(int(core_ids[a]), cores_per_chip), int(a), int(b)) for a, b in zip(starts, stops)]


def set_placement(graph: Graph, core_of: np.ndarray, target) -> None:
    """Record the global core index of every neuron (netlist order: groups in graph order)."""
    graph.attrs[TARGET_ATTR] = target.to_json()
    offset = 0
    for op in graph.ops_of_kind("neurons"):
        size = int(op.attrs["size"])
        blocks = blocks_from_cores(core_of[offset : offset + size], target.cores_per_chip)
        op.attrs[PLACEMENT_ATTR] = tuple(v for b in blocks for v in (b.chip, b.core, b.start, b.stop))
        offset += size


def core_assignment(graph: Graph, target) -> tuple[np.ndarray | None, list[str]]:
    """Global core index of every neuron (netlist order), or None and the problems that prevent it."""
    problems, parts = [], []
    for op in graph.ops_of_kind("neurons"):
        size = int(op.attrs["size"])
        flat = op.attrs.get(PLACEMENT_ATTR)
        where = f"%{op.name} (neurons)"
        if flat is None:
            problems.append(f"{where} is not placed, but the graph is (every neuron group needs a placement)")
            continue
        if len(flat) % 4:
            problems.append(f"{where}: placement has {len(flat)} values, not (chip, core, start, stop) quadruples")
            continue
        cores = np.full(size, -1, np.int64)
        for chip, core, start, stop in (flat[i : i + 4] for i in range(0, len(flat), 4)):
            if not (0 <= chip < target.chips and 0 <= core < target.cores_per_chip):
                problems.append(
                    f"{where}: chip {chip} core {core} does not exist on the target "
                    f"({target.chips} chip(s) x {target.cores_per_chip} cores)"
                )
            elif not 0 <= start < stop <= size:
                problems.append(f"{where}: neurons [{start}, {stop}) are not a range inside 0..{size}")
            elif (cores[start:stop] >= 0).any():
                problems.append(f"{where}: neurons [{start}, {stop}) are placed twice")
            else:
                cores[start:stop] = chip * target.cores_per_chip + core
        if (cores < 0).any() and not any(p.startswith(where) for p in problems):
            problems.append(f"{where}: {int((cores < 0).sum())} neuron(s) are not placed on any core")
        parts.append(cores)
    if problems:
        return None, problems
    return (np.concatenate(parts) if parts else np.zeros(0, np.int64)), []
