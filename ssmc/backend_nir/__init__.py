"""Export the float model to NIR (the Neuromorphic Intermediate Representation, `nir` 1.0.8).

What NIR 1.0.8 can express of an ssmc model-level graph, and how (docs/nir.md):

- `linear` -> `Affine` (or `Linear` without bias); `add` -> `Scale(1)` with two
  incoming edges (NIR sums the edges into a node); `pool{mode=sum}` ->
  `I(r=1)`: v[k] = v[k-1] + u[k] is its forward-Euler step at dt = 1 token.
- `s4d`: NIR has no complex or diagonal-SSM node, but each complex mode is two
  coupled real states. Per layer: `<op>.B` (Linear, u -> 2HM), `<op>.x`
  (`I(r=1)`, the 2HM real states, interleaved re/im per mode), `<op>.A`
  (Linear 2HM x 2HM, block diagonal 2x2, on the recurrent edge x -> A -> x),
  `<op>.C` (Linear, x -> H, weights 2 Re C / -2 Im C), `<op>.D` (Scale D,
  u -> H) and `<op>` (Scale(1), the sum of C and D); a layer with P modes
  shared by all channels (S5, LRU) has 2P states and dense B and C. Two forms:
  * `euler` (default): A = [[Re a - 1, -Im a], [Im a, Re a - 1]], B = B_bar.
    Stepped by forward Euler at dt = 1 per token, with the recurrent edge
    read one step late -- the reading of `run_nir` below -- this is ssmc's
    recurrence x[k] = A_bar x[k-1] + B_bar u[k] exactly;
  * `ode`: A = the block of w = log(A_bar) (= dt A for a continuous layer),
    B = w B_bar / (A_bar - 1): the layer's own ODE in token time. Integrated
    exactly over one token with the input held (zero-order hold) it is the
    same recurrence; forward Euler only approximates it.
- NIR has no ReLU, GELU, sigmoid, tanh, GLU, LayerNorm or running mean. With
  `cut=True` each such op becomes a pair of graph ports: `Output` nodes
  `<op>.in<i>` (its inputs) and an `Input` node `<op>` (its result), which
  the host computes between them within the same token (metadata
  `ssmc_host_op` names the function and its inputs; `run_nir` does this).
  Without `cut` they are refused, each by name.

`run_nir` is this module's reading of an exported graph in discrete time (the
nir package ships no evaluator): one step per token, dt = 1.
"""

from __future__ import annotations

import io
import os

import nir
import numpy as np

from ssmc.errors import ModelLoadError, OptionError, UnsupportedModelError
from ssmc.outputs import write_file
from ssmc.ir.activations import activation
from ssmc.ir.graph import Graph, Op
from ssmc.ir.ssm import discrete_params, is_dense

FORMS = ("euler", "ode")


def _why_not(op: Op) -> str:
    """Why NIR 1.0.8 cannot express `op` (it has no node for it)."""
    if op.kind == "activation":
        return f"%{op.name} ({op.attrs['fn']}): NIR 1.0.8 has no {op.attrs['fn']} node"
    if op.kind == "norm":
        return f"%{op.name} (layer norm): NIR 1.0.8 has no normalisation node"
    if op.kind == "pool":
        return f"%{op.name} (running mean): a mean over a growing window is not a NIR node (a running sum is)"
    return f"%{op.name} ({op.kind}): no NIR 1.0.8 node expresses it"


def _pair_block(w: np.ndarray) -> np.ndarray:
    """The real 2M x 2M block-diagonal matrix of complex multipliers w [M] on interleaved (re, im) states."""
    M = w.size
    out = np.zeros((2 * M, 2 * M))
    i = 2 * np.arange(M)
    out[i, i], out[i, i + 1] = w.real, -w.imag
    out[i + 1, i], out[i + 1, i + 1] = w.imag, w.real
    return out


def s4d_matrices(op: Op, form: str) -> dict[str, np.ndarray]:
    """The real matrices of one S4D layer's NIR nodes: A (recurrent), B, C, D (see the module doc)."""
    if is_dense(op):
        return _shared_matrices(op, form)
    A_bar, B_bar = discrete_params(op)
    C = op.params["C"].astype(np.complex128)
    H, M = C.shape
    if form == "euler":
        w, b = A_bar.reshape(-1) - 1.0, B_bar.reshape(-1)
    elif op.attrs["form"] == "continuous":
        dt = np.exp(op.params["log_dt"].astype(np.float64))[:, None]
        w = (dt * op.params["A"].astype(np.complex128)).reshape(-1)
        b = (dt * op.params["B"].astype(np.complex128)).reshape(-1)
    else:
        a = A_bar.reshape(-1)
        w = np.log(a)
        if np.any(a == 0):
            raise UnsupportedModelError(f"%{op.name}: a mode with A_bar = 0 has no ODE; export with --form euler")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(a == 1.0, 1.0, w / (a - 1.0))
        b = ratio * B_bar.reshape(-1)
    B = np.zeros((2 * H * M, H))
    Cm = np.zeros((H, 2 * H * M))
    for h in range(H):
        rows = 2 * (h * M + np.arange(M))
        B[rows, h], B[rows + 1, h] = b[h * M : (h + 1) * M].real, b[h * M : (h + 1) * M].imag
        Cm[h, rows], Cm[h, rows + 1] = 2 * C[h].real, -2 * C[h].imag
    return {"A": _pair_block(w), "B": B, "C": Cm, "D": op.params["D"].astype(np.float64)}


def _shared_matrices(op: Op, form: str) -> dict[str, np.ndarray]:
    """s4d_matrices of a layer whose P modes are shared by all channels (B_bar [P, H], C [H, P])."""
    A_bar, B_bar = discrete_params(op)
    C = op.params["C"].astype(np.complex128)
    if form == "euler":
        w, b = A_bar - 1.0, B_bar
    elif op.attrs["form"] == "continuous":
        dt = np.exp(op.params["log_dt"].astype(np.float64))
        w, b = dt * op.params["A"].astype(np.complex128), dt[:, None] * op.params["B"].astype(np.complex128)
    else:
        if np.any(A_bar == 0):
            raise UnsupportedModelError(f"%{op.name}: a mode with A_bar = 0 has no ODE; export with --form euler")
        w = np.log(A_bar)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(A_bar == 1.0, 1.0, w / (A_bar - 1.0))
        b = ratio[:, None] * B_bar
    B = np.zeros((2 * len(w), b.shape[1]))
    Cm = np.zeros((C.shape[0], 2 * len(w)))
    B[0::2], B[1::2] = b.real, b.imag
    Cm[:, 0::2], Cm[:, 1::2] = 2 * C.real, -2 * C.imag
    return {"A": _pair_block(w), "B": B, "C": Cm, "D": op.params["D"].astype(np.float64)}


def to_nir(graph: Graph, form: str = "euler", cut: bool = False) -> tuple[nir.NIRGraph, list[str]]:
    """The model-level float graph as a NIR graph, and one line per op cut out for the host (see module doc)."""
    if form not in FORMS:
        raise OptionError(f"unknown S4D form {form!r}; choose one of {', '.join(FORMS)}")
    if graph.ops_of_kind("neurons") or graph.ops_of_kind("cpx"):
        raise OptionError("export-nir reads the float model graph, not a lowered one (internal: pass net.model_graph)")
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    head: dict[str, str] = {}  # ssmc value -> the NIR node that carries it
    cuts: list[str] = []
    refused = [op for op in graph.ops() if not _expressible(op)]
    if refused and not cut:
        raise UnsupportedModelError(
            "NIR cannot express "
            + "; ".join(_why_not(op) for op in refused)
            + ": export with --cut to leave these ops to the host between NIR ports"
        )
    for op in graph.ops():
        ins = [head[s] for s in op.inputs]
        if op.kind == "s4d":
            op_nodes, op_edges = _s4d_nodes(op, ins, form)
        elif _expressible(op):
            op_nodes, op_edges = _plain_node(op, ins)
        else:  # cut: the host computes the op between two ports of the graph
            op_nodes, op_edges = _cut_nodes(graph, op, ins)
            cuts.append(f"{_why_not(op)}: cut, the host computes it from {', '.join(_ports(op))} into input {op.name}")
        nodes.update(op_nodes)
        edges += op_edges
        head[op.name] = op.name
    meta = {"producer": "ssmc", "s4d_form": form, "time_step": "one token per unit of time (dt = 1)"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta), cuts


def _plain_node(op: Op, ins: list[str]) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    """The one NIR node of an input, output, linear, add or sum pool (named as the op), and its incoming edges
    from the nodes `ins`."""
    k, size = op.kind, int(np.prod(op.shape))
    if k == "input":
        return {op.name: nir.Input(input_type={"input": np.array([size])})}, []
    if k == "output":
        return {op.name: nir.Output(output_type={"output": np.array([size])})}, [(ins[0], op.name)]
    if k == "linear":
        w = op.params["weight"].astype(np.float64)
        node = (
            nir.Affine(weight=w, bias=op.params["bias"].astype(np.float64))
            if "bias" in op.params
            else nir.Linear(weight=w)
        )
        return {op.name: node}, [(ins[0], op.name)]
    if k == "add":
        return {op.name: nir.Scale(scale=np.ones(size))}, [(i, op.name) for i in ins]
    return {op.name: nir.I(r=np.ones(size))}, [(ins[0], op.name)]  # a sum pool: v[k] = v[k-1] + u[k]


def _s4d_nodes(op: Op, ins: list[str], form: str) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    """An S4D layer's nodes <op>.B, .x, .A, .C, .D and <op> (the sum of C and D), and their edges (module doc)."""
    m = s4d_matrices(op, form)
    n = op.name
    nodes = {
        f"{n}.B": nir.Linear(weight=m["B"]),
        f"{n}.x": nir.I(r=np.ones(m["A"].shape[0])),
        f"{n}.A": nir.Linear(weight=m["A"]),
        f"{n}.C": nir.Linear(weight=m["C"]),
        f"{n}.D": nir.Scale(scale=m["D"]),
        n: nir.Scale(scale=np.ones(int(np.prod(op.shape)))),
    }
    edges = [
        (ins[0], f"{n}.B"),
        (f"{n}.B", f"{n}.x"),
        (f"{n}.x", f"{n}.A"),
        (f"{n}.A", f"{n}.x"),
        (f"{n}.x", f"{n}.C"),
        (ins[0], f"{n}.D"),
        (f"{n}.C", n),
        (f"{n}.D", n),
    ]
    return nodes, edges


def _cut_nodes(graph: Graph, op: Op, ins: list[str]) -> tuple[dict[str, nir.NIRNode], list[tuple[str, str]]]:
    """An op cut out for the host: an Output port <op>.in<i> per input, then the Input node <op> that carries
    its result (metadata: the host function and the ports it reads), and the edges into the ports."""
    ports = _ports(op)
    nodes: dict[str, nir.NIRNode] = {}
    edges = []
    for port, src, value in zip(ports, ins, op.inputs):
        nodes[port] = nir.Output(output_type={"output": np.array([int(np.prod(graph.op(value).shape))])})
        edges.append((src, port))
    nodes[op.name] = nir.Input(
        input_type={"input": np.array([int(np.prod(op.shape))])},
        metadata={"ssmc_host_op": _host_spec(op), "ssmc_reads": ",".join(ports)},
    )
    return nodes, edges


def _ports(op: Op) -> list[str]:
    """The names of the Output ports that carry a cut op's inputs to the host."""
    return [f"{op.name}.in{i}" for i in range(len(op.inputs))]


def _expressible(op: Op) -> bool:
    return op.kind in ("input", "output", "linear", "add", "s4d") or (op.kind == "pool" and op.attrs["mode"] == "sum")


def _host_spec(op: Op) -> str:
    if op.kind == "activation":
        return f"activation:{op.attrs['fn']}"
    if op.kind == "pool":
        return f"pool:{op.attrs['mode']}"
    raise UnsupportedModelError(f"{_why_not(op)}, and the host side of a cut does not compute it either")


def nir_bytes(graph: nir.NIRGraph) -> bytes:
    """The NIR file (HDF5) of `graph`, in memory."""
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    return buffer.getvalue()


def write_nir(graph: nir.NIRGraph, path: str | os.PathLike, inputs=()) -> None:
    """Write `graph` to `path` as ssmc writes every output: a regular file, never one of `inputs`,
    atomically (ssmc.outputs), so nothing is half-written on failure."""
    write_file(path, nir_bytes(graph), inputs, "NIR graph", example="net.nir")


def read_nir(path: str | os.PathLike) -> nir.NIRGraph:
    try:
        return nir.read(os.fspath(path))
    except (OSError, KeyError, ValueError) as e:
        raise ModelLoadError(f"{os.fspath(path)}: cannot read as NIR ({e})") from None


# -- a discrete-time reading of NIR graphs ---------------------------------------------------
def _text(v) -> str:
    v = v.item() if isinstance(v, np.ndarray) else v
    return v.decode() if isinstance(v, bytes) else str(v)


def _order(g: nir.NIRGraph) -> tuple[list[str], set[tuple[str, str]]]:
    """Evaluation order and back edges: a depth-first walk from the inputs (in node order) marks an edge into
    a node still being walked as a back edge (read one step late); the rest is ordered topologically, with a
    host input after the ports it reads."""
    succ: dict[str, list[str]] = {n: [] for n in g.nodes}
    for a, b in g.edges:
        succ[a].append(b)
    back, state = set(), {}

    def walk(n):
        state[n] = 1
        for m in succ[n]:
            if state.get(m) == 1:
                back.add((n, m))
            elif m not in state:
                walk(m)
        state[n] = 2

    for n, node in g.nodes.items():
        if isinstance(node, nir.Input) and n not in state:
            walk(n)
    deps = {n: {a for a, b in g.edges if b == n and (a, b) not in back} for n in g.nodes}
    for n, node in g.nodes.items():
        if isinstance(node, nir.Input) and "ssmc_reads" in node.metadata:
            deps[n] |= set(_text(node.metadata["ssmc_reads"]).split(","))
    order, done = [], set()
    while len(order) < len(g.nodes):
        ready = [n for n in g.nodes if n not in done and deps[n] <= done]
        if not ready:
            raise UnsupportedModelError("the NIR graph has a cycle that is not through a stateful node")
        order.append(ready[0])
        done.add(ready[0])
    return order, back


def run_nir(g: nir.NIRGraph, x: np.ndarray, dt: float = 1.0) -> dict[str, np.ndarray]:
    """Run a NIR graph of Input, Output, Affine, Linear, Scale, I and LI nodes over x [batch, tokens, features]
    (fed to the one Input without `ssmc_host_op`), one step of `dt` per token, and return every Output
    [batch, tokens, size]. Reading: a node's input is the sum of its incoming edges, a back edge carries the
    previous step's value (0 at first); I: v += dt r in; LI: v += dt / tau (v_leak - v + r in) (forward
    Euler); a stateful node outputs its updated state. Host inputs (ssmc cuts) apply their function to the
    ports they read."""
    order, back = _order(g)
    feeds = [n for n, node in g.nodes.items() if isinstance(node, nir.Input) and "ssmc_host_op" not in node.metadata]
    if len(feeds) != 1:
        raise UnsupportedModelError(f"run_nir feeds one input, the graph has {len(feeds)}")
    incoming = {n: [(a, (a, n) in back) for a, b in g.edges if b == n] for n in g.nodes}
    batch, tokens, _ = x.shape
    prev: dict[str, np.ndarray] = {}
    state: dict[str, np.ndarray] = {}
    outs = {n: [] for n, node in g.nodes.items() if isinstance(node, nir.Output)}
    for k in range(tokens):
        now: dict[str, np.ndarray] = {}
        for n in order:
            node = g.nodes[n]
            parts = [(prev.get(a) if late else now[a]) for a, late in incoming[n]]
            u = sum(p for p in parts if p is not None) if any(p is not None for p in parts) else 0.0
            if isinstance(node, nir.Input):
                if n in feeds:
                    now[n] = x[:, k].astype(np.float64)
                else:
                    spec = _text(node.metadata["ssmc_host_op"])
                    reads = [now[p] for p in _text(node.metadata["ssmc_reads"]).split(",")]
                    now[n] = _host(spec, reads, k, state, n)
            elif isinstance(node, nir.Output):
                now[n] = u
                outs[n].append(np.broadcast_to(u, (batch, int(node.output_type["output"][0]))).copy())
            elif isinstance(node, nir.Affine):
                now[n] = u @ node.weight.T + node.bias
            elif isinstance(node, nir.Linear):
                now[n] = u @ node.weight.T
            elif isinstance(node, nir.Scale):
                now[n] = u * node.scale
            elif isinstance(node, nir.I):
                v = state.get(n, np.zeros((batch, node.r.size)))
                state[n] = now[n] = v + dt * node.r * u
            elif isinstance(node, nir.LI):
                v = state.get(n, np.zeros((batch, node.r.size)))
                state[n] = now[n] = v + dt / node.tau * (node.v_leak - v + node.r * u)
            else:
                raise UnsupportedModelError(f"run_nir does not run NIR {type(node).__name__} node {n!r}")
        prev = now
    return {n: np.stack(v, axis=1) for n, v in outs.items()}


def _host(spec: str, reads: list[np.ndarray], k: int, state: dict, name: str) -> np.ndarray:
    kind, arg = spec.split(":", 1)
    if kind == "activation":
        return activation(arg, reads[0])
    if kind == "pool":
        acc = state[name] = state.get(name, 0.0) + reads[0]
        return acc / (k + 1) if arg == "mean" else acc
    raise UnsupportedModelError(f"unknown host op {spec!r} at NIR input {name!r}")
