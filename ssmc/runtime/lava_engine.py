"""The Lava engine: runs a compiled net in Lava's fixed-point CPU simulator.

The processes come from the backend (ssmc.backend_loihi.lava_net: `plan_lava`
plans them, `build_lava` instantiates them); this module runs a batch through
them and reads the same EngineResult as the numpy engine. Lava itself is
imported only when a network is built or run, so importing this module stays
cheap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ssmc.backend_loihi.lava_net import (
    PROCS_MODULE,
    STATEFUL_CLASSES,
    SYNAPSE_CLASSES,
    LavaPlan,
    build_lava,
    plan_lava,
)
from ssmc.errors import EngineError
from ssmc.ir.fixed_point import SAT_QUANTITIES, decode_output
from ssmc.ir.graph import Graph
from ssmc.ir.ops import with_defaults
from ssmc.runtime.numpy_engine import EngineResult


@dataclass
class LavaNetwork:
    """The connected Lava processes of a net for one batch of input sequences."""

    graph: Graph
    plan: LavaPlan
    processes: dict  # process name -> Lava process

    @property
    def num_steps(self) -> int:
        """Lava time steps that run the whole batch."""
        return self.plan.batch * self.plan.period

    def run(self, trace: bool = False, timings: dict | None = None) -> EngineResult:
        """Run the batch in Lava's fixed-point CPU simulation (Loihi2SimCfg) and read the
        results; Lava's runtime is stopped afterwards, also when something fails.
        trace=True needs a network built with record_all=True. With a `timings` dict the first
        time step runs alone (Lava compiles the network and starts its runtime then) and the dict
        gets its wall seconds as "start", the other steps' as "steps" and their count as
        "num_steps"; the integers are the same either way (one run continues where the last stopped)."""
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg

        first = self.processes[self.plan.processes[0].name]
        chunks = [self.num_steps] if timings is None or self.num_steps < 2 else [1, self.num_steps - 1]
        try:
            try:
                for key, num_steps in zip(("start", "steps"), chunks):
                    began = time.perf_counter()
                    first.run(condition=RunSteps(num_steps=num_steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
                    if timings is not None:
                        timings[key] = time.perf_counter() - began
                if timings is not None:
                    timings["num_steps"] = self.num_steps - chunks[0] if len(chunks) == 2 else 0
            except Exception as e:  # Lava's own errors: one line, not its traceback
                first_line = str(e).splitlines()[0] if str(e) else ""
                raise EngineError(f"the Lava simulation failed: {type(e).__name__}: {first_line}") from None
            return _collect(self.graph, self.plan, self.processes, trace)
        finally:
            try:
                first.stop()
            except Exception:  # a runtime that never started has nothing to stop
                pass


def build_network(graph: Graph, x: np.ndarray, record_all: bool = False) -> LavaNetwork:
    """The connected Lava network that runs `graph` on x [batch, tokens, features]: the source
    process holds the quantized tokens (input injection), output groups record their messages
    (probes; every group, with its state, when record_all)."""
    plan = plan_lava(graph, x, record_all=record_all)
    return LavaNetwork(graph, plan, build_lava(plan))


def run_lava(graph: Graph, x: np.ndarray, trace: bool = False) -> EngineResult:
    """Run x [batch, tokens, features] through `graph` in Lava's fixed-point CPU simulation."""
    return build_network(graph, x, record_all=trace).run(trace=trace)


def run_net(net, x: np.ndarray, trace: bool = False) -> EngineResult:
    """The engine entry point `ssmc.api` uses (FIXED_POINT_ENGINES["lava"])."""
    return run_lava(net.graph, x, trace=trace)


def _get(var) -> np.ndarray:
    # Lava returns Vars as float64; every value here is an integer below 2^53 in magnitude
    return np.rint(np.asarray(var.get(), np.float64)).astype(np.int64)


def _collect(graph: Graph, plan: LavaPlan, procs: dict, trace: bool) -> EngineResult:
    batch, tokens, steps = plan.batch, plan.tokens, plan.steps
    for spec in plan.processes:
        if spec.module == PROCS_MODULE and _get(procs[spec.name].failed)[0]:
            step = int(_get(procs[spec.name].failed)[0])
            raise EngineError(
                f"Lava process {spec.name} ({spec.cls}) failed at time step {step} (a bug in ssmc's "
                "process model; its traceback is printed above)"
            )
    saturation, sparsity, traces, read = {}, {}, {}, {}
    neuron_specs = [p for p in plan.processes if p.module == PROCS_MODULE and p.cls not in SYNAPSE_CLASSES]
    for spec in neuron_specs:
        counts = _get(procs[spec.name].counts)
        saturation[spec.name] = dict(zip(SAT_QUANTITIES, (int(c) for c in counts)))
        saturation[spec.name]["message"] += plan.source_clips.get(spec.name, 0)
        total = batch * tokens * spec.size
        sparsity[spec.name] = int(_get(procs[spec.name].zeros)[0]) / total if total else 0.0
        if spec.kwargs["record"]:
            msgs = _get(procs[spec.name].messages).reshape(batch, steps, spec.size)
            read[spec.name] = msgs
            if trace:
                traces[spec.name] = msgs
                if spec.cls in STATEFUL_CLASSES:
                    traces[f"{spec.name}.state"] = _get(procs[spec.name].states).reshape(batch, steps, spec.size)
                if spec.kwargs["delta"]:
                    traces[f"{spec.name}.last"] = _get(procs[spec.name].lasts).reshape(batch, steps, spec.size)
    for spec in plan.processes:
        if spec.cls in SYNAPSE_CLASSES:  # a synapse group's clips count for the group it feeds
            saturation[spec.group]["accumulator"] += int(_get(procs[spec.name].counts)[0])
    outputs, raw = {}, {}
    for out in graph.outputs():
        g = graph.op(out.inputs[0])
        a = with_defaults(g)
        depth = int(a["depth"])
        msgs = read[g.name][:, depth : depth + tokens].copy()
        raw[out.name] = msgs
        outputs[out.name] = decode_output(msgs, a["frac"], a["decode"])
    return EngineResult(
        outputs=outputs, raw=raw, saturation=saturation, sparsity=sparsity, trace=traces if trace else None, steps=steps
    )
