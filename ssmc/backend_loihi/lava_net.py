"""A compiled net as a network of Lava processes, run in Lava's CPU simulator (fixed point).

`plan_lava` turns the neuro-level graph into a plan: one process per neuron
group (the classes of lava_procs, one per kind) and one per synapse group, and
the port links between them. A synapse group becomes Lava's own `Dense` (delay
1) or `DelayDense` (delay 2..64) where that is provably exact (see
`dense_exact`) -- Lava's `Sparse` (the same arithmetic over a CSR matrix) for a
delay-1 group whose weights are mostly zeros, like an S4D layer's B and C --
else a `lava_procs.Synapses` process that saturates as the contract says
(`SparseSynapses`, CSR, for mostly zeros). A mostly-zero group's weights stay
CSR in the plan too: no [H*M, H] matrix is held dense.
`build_lava` instantiates a plan (Lava is imported only then),
ssmc.runtime.lava_engine runs a batch through it, and
ssmc.backend_loihi.lava_script writes a plan as a standalone Python script.

The whole batch runs in one Lava run: sequence b occupies the time steps
[b * period, (b + 1) * period), period = steps + the largest delay, so every
synapse buffer has emptied before the next sequence starts (the processes
reset their state at each sequence's first step).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from ssmc.data import check_sequences
from ssmc.errors import EngineError
from ssmc.ir.fixed_point import ACC_BITS, check_neuro_graph, quantize_source, refuse_oversized_run
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ops import with_defaults
from ssmc.ir.placement import placement_of

MAX_DELAY_DENSE_DELAY = 64  # DelayDense: delays 0..63 on Loihi 2, i.e. contract delays 1..64
PROCS_MODULE = "ssmc.backend_loihi.lava_procs.processes"
LAVA_DENSE_MODULE = "lava.proc.dense.process"
LAVA_SPARSE_MODULE = "lava.proc.sparse.process"
SPARSE_DENSITY = 0.1  # an exact delay-1 group with fewer non-zeros than this fraction is Lava's Sparse
KIND_CLASS = {
    "source": "Source",
    "relay": "Relay",
    "relu": "Relu",
    "cpx": "Cpx",
    "integrator": "Integrator",
    "lut": "Lut",
    "product": "Product",
}
STATEFUL_CLASSES = ("Cpx", "Integrator")
SYNAPSE_CLASSES = ("Synapses", "SparseSynapses")  # ssmc's own saturating synapse processes


@dataclass
class ProcessSpec:
    """One Lava process: its class (module:name), constructor arguments, and what it implements."""

    name: str
    module: str
    cls: str
    group: str  # the neuron group it is, or the group a synapse group feeds
    size: int  # neurons, or a synapse group's post size
    kwargs: dict
    note: str = ""  # why a synapse group is (not) Lava's Dense


@dataclass
class Link:
    """src.src_port -> dst.dst_port (process names)."""

    src: str
    src_port: str
    dst: str
    dst_port: str


@dataclass
class LavaPlan:
    processes: list[ProcessSpec]
    links: list[Link]
    batch: int
    tokens: int
    steps: int  # contract steps per sequence: tokens + the largest depth
    period: int  # Lava time steps per sequence: steps + the largest delay
    source_clips: dict[str, int] = field(default_factory=dict)  # the host's quantization clips per source group

    def spec(self, name: str) -> ProcessSpec:
        return next(p for p in self.processes if p.name == name)


def on_lava_dense_grid(w: np.ndarray) -> bool:
    """Whether Lava 0.10's Dense keeps these integer weights unchanged at 8 bits.

    Written from lava/utils/weightutils.py (determine_sign_mode, clip_weights, truncate_weights
    with num_bits=8) rather than imported, so compiling a net needs no Lava (Lava is archived;
    tests check this against Lava's own functions where it is installed): all-positive weights
    keep 0..255, all-negative -255..0, mixed signs -256..255 with the lowest bit dropped.
    """
    if w.size == 0:
        return True
    lo, hi = int(w.min()), int(w.max())
    if lo >= 0:
        return hi <= 255
    if hi <= 0:
        return lo >= -255
    return lo >= -256 and hi <= 255 and not np.any(w & 1)


def dense_exact(weights: np.ndarray, weight_exp: int, pre_msg_bits: int, delay: int, pre_delta: int) -> str:
    """'' when Lava's bit-accurate Dense (delay 1) or DelayDense computes this synapse group
    exactly as the contract says, else the reason it does not.

    What Lava 0.10 does (lava/proc/dense/models.py): it clips and truncates the weights
    (8 bits; mixed signs lose the lowest bit), forms W @ s_in in int64 (our int64 messages
    promote its int32 weights), shifts by weight_exp, and sends through an int32 channel,
    which wraps where the contract saturates. So it is exact when the weights survive
    Lava's clip and truncation unchanged and |shr(W @ m, -weight_exp)| < 2^31 for every
    message m of pre_msg_bits; and it cannot sum sigma-delta changes before its shift.
    """
    if pre_delta:
        return "pre group sends sigma-delta changes: sums before its shift (own process)"
    if delay > MAX_DELAY_DENSE_DELAY:
        return f"delay {delay} > {MAX_DELAY_DENSE_DELAY} (DelayDense's limit)"
    w = np.asarray(weights, np.int64)
    if not on_lava_dense_grid(w):
        return "weights are not on Lava Dense's 8-bit grid"
    bound = int(np.abs(w).sum(axis=1).max(initial=0)) * (1 << (pre_msg_bits - 1))
    hi = (1 << (ACC_BITS - 1)) - 1
    if weight_exp >= 0:
        reach = bound << weight_exp
        top, bottom = reach, -reach
    else:
        top, bottom = bound >> -weight_exp, (-bound) >> -weight_exp
    if top > hi or bottom < -hi - 1:
        return "the shifted sum may leave 32 bits (Lava's Dense wraps, the contract saturates)"
    return ""


def plan_lava(graph: Graph, x: np.ndarray, record_all: bool = False) -> LavaPlan:
    """The Lava processes and links that run `graph` on sequences x [batch, tokens, features].
    Output groups always record their messages; with record_all every group does (traces)."""
    check_neuro_graph(graph, "Lava")
    x = check_sequences(x, graph.inputs()[0].shape[0])
    batch, tokens, _ = x.shape
    order = graph.ops()
    groups = {op.name: with_defaults(op) for op in order if op.kind == "neurons"}
    for name, a in groups.items():
        if a["kind"] not in KIND_CLASS:
            raise EngineError(
                f"%{name}: neuron kind {a['kind']!r} has no Lava process; "
                f"the Lava backend knows {', '.join(KIND_CLASS)}"
            )
    synapses = [op for op in order if op.kind == "synapses"]
    max_depth = max((int(a["depth"]) for a in groups.values()), default=0)
    steps = tokens + max_depth
    period = steps + max((int(with_defaults(s)["delay"]) for s in synapses), default=1)
    read = {out.inputs[0] for out in graph.outputs()}
    # Recorded messages (and with traces state and last) are held per time step in the processes, then copied
    # out by Var.get() as float64 and converted: 3 copies of 8 bytes; the source holds the quantized tokens.
    recorded = sum(
        int(a["size"]) * (3 if record_all else 1) for name, a in groups.items() if record_all or name in read
    )
    refuse_oversized_run("Lava engine", batch, tokens, 8 * period * (3 * recorded + x.shape[2]), record_all)
    plan = LavaPlan([], [], batch, tokens, steps, period)
    timing = {"steps": steps, "period": period, "tokens": tokens, "batch": batch}
    for op in order:
        if op.kind == "neurons":
            plan.processes.append(
                _neuron_process(op, groups[op.name], x, timing, record_all or op.name in read, plan.source_clips)
            )
    for op in synapses:
        post = graph.consumers(op.name)[0]
        plan.processes.append(_synapse_process(op, groups, post, steps, period))
        plan.links.append(Link(op.inputs[0], "s_out", op.name, "s_in"))
        port = "a_in"
        if groups[post.name]["kind"] == "product":
            port = ("a0_in", "a1_in")[post.inputs.index(op.name)]
        plan.links.append(Link(op.name, "a_out", post.name, port))
    _check_connected(plan)
    return plan


def _neuron_process(
    op: Op, a: dict, x: np.ndarray, timing: dict, record: bool, source_clips: dict[str, int]
) -> ProcessSpec:
    """The ssmc process of neuron group `op` (attributes `a` with defaults); a source quantizes the tokens x
    and counts in `source_clips` what that clips."""
    batch, tokens = timing["batch"], timing["tokens"]
    cls = KIND_CLASS[a["kind"]]
    kw = {
        "size": int(a["size"]),
        "depth": int(a["depth"]),
        **timing,
        "msg_bits": int(a["msg_bits"]),
        "delta": int(a["delta"]),
        "record": bool(record),
    }
    if "bias" in op.params and cls != "Source":
        # synapse outputs are 32-bit: a bias beyond 2^48 saturates the sum the same way (no int64 overflow)
        kw["bias"] = np.clip(op.params["bias"].astype(np.int64), -(1 << 48), 1 << 48)
    if cls in STATEFUL_CLASSES:
        kw.update(state_bits=int(a["state_bits"]), out_shift=int(a["out_shift"]))
    if cls == "Cpx":
        kw.update(
            coef_bits=int(a["coef_bits"]),
            c_re=op.params["c_re"].astype(np.int64),
            c_im=op.params["c_im"].astype(np.int64),
        )
    elif cls == "Lut":
        kw.update(lut_shift=int(a["lut_shift"]), lut_lo=int(a["lut_lo"]), table=op.params["table"].astype(np.int64))
    elif cls == "Product":
        kw["out_shift"] = int(a["out_shift"])
    elif cls == "Source":
        msgs, clipped = quantize_source(x, int(a["frac"]), int(a["msg_bits"]))
        kw["tokens_in"] = msgs.reshape(batch * tokens, -1)
        awake = np.arange(tokens) >= int(a["depth"])  # the source sends token t at step t if awake then
        source_clips[op.name] = int(clipped[:, awake].sum())
    return ProcessSpec(op.name, PROCS_MODULE, cls, op.name, int(a["size"]), kw)


def _synapse_process(op: Op, groups: dict[str, dict], post: Op, steps: int, period: int) -> ProcessSpec:
    """Lava's own Sparse, Dense or DelayDense where dense_exact proves it exact, else ssmc's Synapses process
    (SparseSynapses under SPARSE_DENSITY non-zeros)."""
    a = with_defaults(op)
    pre = groups[op.inputs[0]]
    w = op.params["weight"].astype(np.int64)
    delay, exp = int(a["delay"]), int(a["weight_exp"])
    why_not = dense_exact(w, exp, int(pre["msg_bits"]), delay, int(pre["delta"]))
    nonzero = int(np.count_nonzero(w))
    # a mostly-zero group is held as CSR from here on (an S4D layer's [H*M, H] B held dense would be 8 MB
    # per group here and in export-lava's .npz)
    sparse = nonzero < SPARSE_DENSITY * w.size
    held = scipy.sparse.csr_matrix(w) if sparse else w
    lava_args = {"weight_exp": exp, "num_weight_bits": 8, "num_message_bits": int(pre["msg_bits"])}
    if not why_not and delay == 1:
        # PySparseModelBitAcc clips and truncates like Dense and forms W @ s_in the same way (a CSR
        # product in int64), so dense_exact's proof holds for both
        cls, module = ("Sparse", LAVA_SPARSE_MODULE) if sparse else ("Dense", LAVA_DENSE_MODULE)
        note = f"Lava {cls}: exact (bound)" + (f", {nonzero} of {w.size} weights non-zero" if sparse else "")
        return ProcessSpec(op.name, module, cls, post.name, w.shape[0], {"weights": held, **lava_args}, note)
    if not why_not:
        return ProcessSpec(
            op.name,
            LAVA_DENSE_MODULE,
            "DelayDense",
            post.name,
            w.shape[0],
            {"weights": w, "delays": np.full(w.shape, delay - 1, np.int64), **lava_args},
            "Lava DelayDense: exact (bound)",
        )
    return ProcessSpec(
        op.name,
        PROCS_MODULE,
        "SparseSynapses" if sparse else "Synapses",
        post.name,
        w.shape[0],
        {
            "weights": held,
            "weight_exp": exp,
            "delay": delay,
            "sigma": bool(pre["delta"]),
            "wake": int(groups[post.name]["depth"]),
            "steps": steps,
            "period": period,
        },
        why_not + (f"; {nonzero} of {w.size} weights non-zero, held sparse" if sparse else ""),
    )


def _check_connected(plan: LavaPlan) -> None:
    """Lava runs the processes connected to the one it starts: refuse a group it would skip."""
    neighbours: dict[str, set[str]] = {p.name: set() for p in plan.processes}
    for link in plan.links:
        neighbours[link.src].add(link.dst)
        neighbours[link.dst].add(link.src)
    seen, todo = set(), [plan.processes[0].name]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(neighbours[name] - seen)
    cut = [p.name for p in plan.processes if p.name not in seen]
    if cut:
        raise EngineError(
            f"%{cut[0]} is not connected to the source group %{plan.processes[0].name}: Lava would not "
            "run it; recompile (the passes keep every group on a path from the input)"
        )


def require_lava() -> None:
    """Refuse, in one line, to build Lava processes where Lava is not installed (it is archived upstream)."""
    try:
        importlib.import_module("lava.magma.core.process.process")
    except ImportError as e:
        raise EngineError(
            f"Lava is not installed here ({e}): the Lava engine and Net.to_lava need lava-nc 0.10.0 "
            "(Python 3.10); the numpy and microcode engines compute the same integers without it "
            "(--engine numpy or microcode)"
        ) from None


def build_lava(plan: LavaPlan) -> dict:
    """Process name -> the connected Lava process of `plan`."""
    require_lava()
    procs = {}
    for spec in plan.processes:
        cls = getattr(importlib.import_module(spec.module), spec.cls)
        procs[spec.name] = cls(name=spec.name, **spec.kwargs)
    for link in plan.links:
        getattr(procs[link.src], link.src_port).connect(getattr(procs[link.dst], link.dst_port))
    return procs


def process_table(net) -> list[dict]:
    """One row per Lava process of the net (a compiled net, or its graph): name, class, neuron group, size (and why a synapse
    group is or is not Lava's Dense), and on a placed net the cores it runs on: a neuron process on
    its group's cores, a synapse process on the cores of the neurons it feeds (as the mapper counts
    synapse memory). Does not depend on the input."""
    graph = net if isinstance(net, Graph) else net.graph
    features = graph.inputs()[0].shape[0]
    plan = plan_lava(graph, np.zeros((1, 1, features)))
    placed = placement_of(graph)
    return [
        {
            "name": p.name,
            "class": p.cls,
            "module": p.module,
            "group": p.group,
            "size": p.size,
            "note": p.note,
            "cores": [{"chip": b.chip, "core": b.core, "neurons": [b.start, b.stop]} for b in placed.get(p.group, [])],
        }
        for p in plan.processes
    ]


def process_table_json(net) -> bytes:
    """process_table(net) as deterministic JSON, for a net.lava extra such as
    `lava/processes.json` (joined with a placement: which process runs on which core)."""
    return (json.dumps(process_table(net), indent=1, sort_keys=True) + "\n").encode()
