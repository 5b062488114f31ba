"""Recognise the recurrences of a step-form model: S4D layers and running pools.

A step-form model carries each recurrent state in as a graph input and out as
the matching graph output, in whatever layout its author chose: re and im as
separate states, several layers packed in one state tensor, the batch on any
axis or a fixed batch of 1. This module groups the state elements into layers
by measurement (the elements one [batch, H] tensor drives are one layer, that
tensor its input u), finds each layer's output y in the dataflow, then
*measures* the layer with probes through onnxruntime instead of matching op
patterns:

    s_out = M s_in + Bu u          y = Ky s_in + Ly u

It checks that the maps are linear, that M is block diagonal with 2x2
rotation-scaling blocks (one complex mode each; 1x1 blocks are real modes),
that every mode belongs to one channel, and reads off the diagonal complex
parameters. Because it measures rather than matches, the raw-parameter export
(Exp/Cos/Sin arithmetic, folded to constants first) and exporters that fold
the discretization themselves give the same result. Where the raw graph holds
initializers that reproduce A_bar by zero-order hold, the layer keeps its
continuous parameters (log_dt, A, B) too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import permutations

import numpy as np
import onnx_graphsurgeon as gs
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from ssmc import limits
from ssmc.errors import UnsupportedModelError
from ssmc.frontend.gsutil import GraphIndex
from ssmc.frontend.subgraph import slice_runner
from ssmc.ir.ssm import zoh_discretize

# Probe batches are cut to at most this many rows so a wide layer never needs one huge run ...
PROBE_CHUNK = 2048
# ... and to about this many probe values (rows x state elements), so a chunk's buffers stay ~100 MB.
PROBE_VALUES = 1 << 22
# Probes gathered per step when a fixed batch of 1 makes onnxruntime take them one at a time.
FIXED_BATCH_STEP = 64
# Largest state (elements per sample) of one layer the frontend will measure (default; see ssmc.limits).
MAX_STATE_ELEMENTS = limits.Limits().state_elements
#: Progress of slow steps (one line per measured layer); `ssmc.compile` shows it in its log.
progress = logging.getLogger("ssmc.frontend")


@dataclass
class Recurrence:
    """One recognised recurrence, ready to become an IR op."""

    kind: str  # "s4d" or "pool"
    state_in: str  # the state input(s) it reads, for messages
    state_out: str
    u: str  # layer input tensor
    y: str  # layer output tensor
    nodes: set[int] = field(default_factory=set)  # ids of the gs nodes it replaces
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    where: str = ""  # how messages name it, if not by its state pair

    @property
    def source(self) -> str:
        return self.where or f"state '{self.state_in}' -> '{self.state_out}'"


@dataclass(frozen=True)
class StateLayout:
    """Where a state pair keeps its batch: `shape` is one sequence's state, `batch_axis` where the batch
    sits in the declared tensor (None: the model has a fixed batch of 1 and the tensor is one sequence's)."""

    s_in: str
    s_out: str
    shape: tuple
    batch_axis: int | None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def declared(self) -> list:
        if self.batch_axis is None:
            return list(self.shape)
        return [*self.shape[: self.batch_axis], "batch", *self.shape[self.batch_axis :]]

    def full(self, batch) -> tuple:
        """The fed tensor's shape with `batch` at the batch axis (as declared for a fixed batch)."""
        if self.batch_axis is None:
            return tuple(self.shape)
        return (*self.shape[: self.batch_axis], batch, *self.shape[self.batch_axis :])


ACCEPTED_LAYOUTS = (
    "one symbolic batch axis at any position of every state (and first in the token and output), "
    "or a fixed batch of 1 everywhere"
)


def _fail(pair: tuple[str, str] | str, msg: str) -> UnsupportedModelError:
    """An error naming the state pair (or `pair` as given, e.g. one layer of a packed state)."""
    where = pair if isinstance(pair, str) else f"state '{pair[0]}' -> '{pair[1]}'"
    return UnsupportedModelError(f"{where}: {msg}")


def state_layout(ix: GraphIndex, s_in: str, s_out: str, fixed_batch: bool) -> StateLayout:
    """The layout of a state pair: its batch axis (the one symbolic axis), or none for a fixed batch of 1."""
    pair = (s_in, s_out)
    shape = ix.shape(s_in)
    if shape is None:
        raise _fail(pair, "the state input has no declared shape; export it with one")
    symbolic = [a for a, d in enumerate(shape) if not isinstance(d, int)]
    if fixed_batch:
        if symbolic:
            raise _fail(
                pair,
                f"the state {list(shape)} has symbolic axes but the token input has a fixed batch of 1; "
                f"ssmc accepts {ACCEPTED_LAYOUTS}. In torch: give the state the same dynamic_axes as "
                "the token, or none at all",
            )
        return StateLayout(s_in, s_out, tuple(shape), None)
    if len(symbolic) != 1:
        if not symbolic:
            raise _fail(
                pair,
                f"the state {list(shape)} has no batch axis but the token input has a symbolic batch; "
                f"ssmc accepts {ACCEPTED_LAYOUTS}. In torch: name the state's batch axis too, e.g. "
                f"dynamic_axes={{'{s_in}': {{0: 'batch'}}, '{s_out}': {{0: 'batch'}}, ...}}",
            )
        raise _fail(
            pair,
            f"the state {list(shape)} has {len(symbolic)} symbolic axes; only the batch may be "
            f"symbolic ({ACCEPTED_LAYOUTS}). In torch: list only the batch axis in dynamic_axes",
        )
    b = symbolic[0]
    return StateLayout(s_in, s_out, tuple(d for a, d in enumerate(shape) if a != b), b)


class _Probes:
    """A slice of the graph evaluated on n probes at once, whatever axis each tensor keeps its batch on.

    Values go in and come out as [n, elements of one sequence]. With a fixed batch of 1 the probes run one by
    one (the graph may reshape to constant shapes that hold the batch of 1)."""

    def __init__(
        self,
        ix: GraphIndex,
        feeds: dict[str, StateLayout],
        fetch: dict[str, StateLayout],
        opset: int,
        fixed: bool,
        where: str,
    ):
        self.feeds, self.fetch, self.fixed, self.where = feeds, fetch, fixed, where
        shapes = {name: lay.full(1 if fixed else "probes") for name, lay in feeds.items()}
        self.runner = slice_runner(ix.graph, shapes, list(fetch), opset, full_shapes=True)

    def __call__(self, values: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        if self.fixed:
            rows = [self._run({k: v[i : i + 1] for k, v in values.items()}, 1) for i in range(n)]
            return (
                [np.concatenate(parts) for parts in zip(*rows)]
                if rows
                else [np.zeros((0, lay.size), np.float32) for lay in self.fetch.values()]
            )
        return self._run(values, n)

    def _run(self, values: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        feed = {}
        for name, lay in self.feeds.items():
            v = np.asarray(values[name], np.float32).reshape((n,) + tuple(lay.shape))
            feed[name] = v.reshape(lay.shape) if lay.batch_axis is None else np.moveaxis(v, 0, lay.batch_axis)
        outs = []
        for (name, lay), got in zip(self.fetch.items(), self.runner(feed)):
            want = lay.full(n)
            if tuple(got.shape) != want:
                raise UnsupportedModelError(
                    f"{self.where}: evaluated on {n} sample(s), '{name}' has shape {list(got.shape)}, expected "
                    f"{list(want)} (declared {lay.declared()}); the batch axis is not where the declared shape "
                    f"puts it, or broadcasting changes the shape. ssmc accepts {ACCEPTED_LAYOUTS}"
                )
            o = got if lay.batch_axis is None else np.moveaxis(got, lay.batch_axis, 0)
            outs.append(o.reshape(n, -1))
        return outs


def _channel(name: str, width: int) -> StateLayout:
    return StateLayout(name, name, (width,), 0)


def find_recurrences(
    ix: GraphIndex, raw: GraphIndex | None, pairs: list[tuple[str, str]], opset: int, fixed_batch: bool
) -> list[Recurrence]:
    """Every recurrence of the state pairs: running pools one per pair; S4D layers grouped by measurement
    (a layer may span several pairs, e.g. re and im apart, and a pair may hold several layers, packed)."""
    layouts = [state_layout(ix, s_in, s_out, fixed_batch) for s_in, s_out in pairs]
    for lay in layouts:
        if any(not isinstance(d, int) for d in lay.shape):
            raise _fail((lay.s_in, lay.s_out), f"needs a static shape beyond the batch axis, has {lay.declared()}")
        if lay.s_out not in ix.producer:
            raise _fail((lay.s_in, lay.s_out), "the state output is not computed by the graph")
        limits.check(
            "state_elements",
            lay.size,
            f"state '{lay.s_in}' -> '{lay.s_out}': a state of {list(lay.shape)} per sequence",
        )
    recs, s4d = [], []
    for lay in layouts:
        pool = _find_pool(ix, lay.s_in, lay.s_out) if len(ix.shape(lay.s_in)) == 2 else None
        if pool is None:  # any other state (a 2-D one too: S5 and LRU keep [batch, P]) is measured
            s4d.append(lay)
            continue
        if lay.batch_axis == 1:
            raise _fail(
                (lay.s_in, lay.s_out),
                f"a 2-D running sum is [batch, C]; this one is {lay.declared()}: in torch, keep the batch first",
            )
        recs.append(pool)
    if s4d:
        recs += _find_s4d_layers(ix, raw, s4d, {s for p in pairs for s in p}, opset, fixed_batch)
    return recs


# -- running pools --------------------------------------------------------------
def _find_pool(ix: GraphIndex, s_in: str, s_out: str) -> Recurrence | None:
    """A running sum (state_out = state_in + x, x not computed from the state), or None."""
    node = ix.producer[s_out]
    ins = [t.name for t in node.inputs]
    if node.op == "Add" and len(ins) == 2 and s_in in ins:
        other = ins[1 - ins.index(s_in)]
        if s_in not in ix.ancestors(other)[0] and not ix.is_const(other):
            return Recurrence("pool", s_in, s_out, u=other, y=s_out, nodes={id(node)}, attrs={"mode": "sum"})
    return None


# -- S4D layers -----------------------------------------------------------------
def _is_channel_tensor(ix: GraphIndex, name: str, H: int | None = None) -> bool:
    s = ix.shape(name)
    return (
        s is not None
        and len(s) == 2
        and isinstance(s[1], int)
        and (H is None or s[1] == H)
        and (not isinstance(s[0], int) or s[0] == 1)
    )


@dataclass
class _Layer:
    """State elements (indices into the concatenated per-sequence states) driven by one [batch, H] tensor u."""

    u: str
    elements: np.ndarray
    layouts: list[StateLayout]  # the pairs it has elements in, in graph order
    packed: bool = False  # its state tensors hold other layers' elements too
    y: str = ""

    @property
    def pair(self) -> tuple[str, str]:
        return " + ".join(lay.s_in for lay in self.layouts), " + ".join(lay.s_out for lay in self.layouts)

    @property
    def where(self) -> str:
        return f"state '{self.pair[0]}' -> '{self.pair[1]}'" + (
            f" (the layer fed by '{self.u}')" if self.packed else ""
        )


def _find_s4d_layers(
    ix: GraphIndex, raw: GraphIndex | None, layouts: list[StateLayout], states: set[str], opset: int, fixed: bool
) -> list[Recurrence]:
    """Group the state elements into layers by which [batch, H] tensor drives them, then measure each layer."""
    graph_inputs = {t.name for t in ix.graph.inputs}
    channels = sorted(
        (
            t
            for t in ix.tensors
            if t not in states
            and not ix.is_const(t)
            and (t in ix.producer or t in graph_inputs)
            and _is_channel_tensor(ix, t)
        ),
        key=lambda t: (ix.tensor_index(t), t),
    )
    layers, channels = _drive_groups(ix, layouts, channels, opset, fixed)
    for layer in layers:
        layer.y, channels = _locate_y_lifting(ix, layer, layouts, channels, opset, fixed)
    nodes = _claimed_nodes(ix, layouts, layers)
    recs = []
    for k, layer in enumerate(layers):
        rec = _find_s4d(ix, raw, layer, layouts, channels, opset, fixed)
        rec.nodes = nodes if k == 0 else set()  # the layers share state plumbing (slices of a packed state)
        recs.append(rec)
    return recs


def _offsets(layouts: list[StateLayout]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([lay.size for lay in layouts])]).astype(np.int64)


def _element_name(layouts: list[StateLayout], offsets: np.ndarray, e: int) -> str:
    k = int(np.searchsorted(offsets, e, side="right") - 1)
    idx = np.unravel_index(e - offsets[k], layouts[k].shape)
    return f"'{layouts[k].s_in}'{list(map(int, idx))}"


def _drive_groups(
    ix: GraphIndex, layouts: list[StateLayout], channels: list[str], opset: int, fixed: bool
) -> tuple[list[_Layer], list[str]]:
    """One probe per [batch, C] tensor (all of them cut, the states zero): the state elements that respond
    are driven by it. A layer is the elements one tensor drives. Returns the layers and the [batch, C]
    tensors that lie between layers (the cuts the measurement may make).

    Two refinements for states kept as [batch, P] tensors with a dense input map (S5, LRU):
    a [batch, C] tensor inside a state update (lam_re * x_re, lam_im * x_im) lies on a loop from state
    elements through itself back to them, so it is not a layer input and is not cut (rounds repeat until
    no driver is on a loop); and groups of elements that drive each other
    (a mode's re and im parts) but are driven by different tensors (u @ B_re^T and u @ B_im^T) are one
    layer, whose input is the tensor those drivers are all computed from alone (u)."""
    offsets = _offsets(layouts)
    where = "the state inputs " + ", ".join(f"'{lay.s_in}'" for lay in layouts)
    for _ in range(len(channels) + 1):
        driven = _driven(ix, layouts, channels, opset, fixed, where)
        inside = _inside_recurrences(ix, layouts, channels, driven, opset, fixed, where)
        if not inside:
            break
        channels = [c for c in channels if c not in inside]
    twice = np.flatnonzero(driven.sum(axis=0) > 1)
    if twice.size:
        e = int(twice[0])
        by = [channels[k] for k in np.flatnonzero(driven[:, e])]
        raise UnsupportedModelError(
            f"state element {_element_name(layouts, offsets, e)} is driven by several "
            f"tensors ({', '.join(repr(t) for t in by[:3])}); an S4D layer reads one input "
            "u [batch, H]: sum the inputs before the layer"
        )
    S = int(offsets[-1])
    owner = np.full(S, -1)
    for k in range(len(channels)):
        owner[driven[k]] = k
    # An element no tensor drives joins the layer that drives the rest of its state tensor, if just one does
    # (e.g. the imaginary half of a real pole); it stays 0 and is dropped as a mode.
    for lay, lo, hi in zip(layouts, offsets[:-1], offsets[1:]):
        drivers = set(owner[lo:hi].tolist()) - {-1}
        if not drivers:
            raise _fail(
                (lay.s_in, lay.s_out),
                f"no [batch, C] tensor drives any element of the state "
                f"{lay.declared()} (found none feeding the state update; "
                "is the state updated from the layer input?)",
            )
        if len(drivers) == 1:
            seg = owner[lo:hi]
            seg[seg == -1] = drivers.pop()
    owner, inputs, channels = _merge_coupled_drivers(ix, layouts, channels, owner, opset, fixed, where)
    layers = []
    for k in sorted(set(owner.tolist()) - {-1}):
        elements = np.flatnonzero(owner == k)
        touched = [
            lay for lay, lo, hi in zip(layouts, offsets[:-1], offsets[1:]) if np.any((elements >= lo) & (elements < hi))
        ]
        layers.append(_Layer(inputs[k], elements, touched))
    for layer in layers:
        layer.packed = _pairs_shared(layer, layouts)
    return layers, channels


def _driven(
    ix: GraphIndex, layouts: list[StateLayout], channels: list[str], opset: int, fixed: bool, where: str
) -> np.ndarray:
    """[channels, S] bool: the state elements each [batch, C] tensor drives, all of them cut."""
    offsets = _offsets(layouts)
    feeds = {lay.s_in: lay for lay in layouts} | {t: _channel(t, ix.shape(t)[1]) for t in channels}
    fetch = {lay.s_out: lay for lay in layouts}
    probes = _Probes(ix, feeds, fetch, opset, fixed, where)
    n = len(channels) + 1  # the last probe is all zeros: the response to nothing
    rng = np.random.default_rng(0)
    values = {lay.s_in: np.zeros((n, lay.size), np.float32) for lay in layouts}
    for k, t in enumerate(channels):
        v = np.zeros((n, ix.shape(t)[1]), np.float32)
        v[k] = rng.uniform(0.5, 1.5, v.shape[1]) * rng.choice([-1, 1], v.shape[1])
        values[t] = v
    resp = np.concatenate(probes(values, n), axis=1)  # [n, S]
    if not np.all(np.isfinite(resp)):
        raise UnsupportedModelError(
            f"{where}: probing the layers gives NaN or infinite values; check the weights for huge values"
        )
    base = resp[-1]
    if np.abs(base).max(initial=0.0) > 1e-6:
        e = int(np.argmax(np.abs(base)))
        k = int(np.searchsorted(offsets, e, side="right") - 1)
        raise _fail(
            (layouts[k].s_in, layouts[k].s_out),
            "the layer adds a constant (bias) to its state or output; "
            "S4D layers have none: move the bias into a linear before "
            "or after",
        )
    size = np.abs(resp[:-1])
    return size > 1e-6 * np.maximum(size.max(axis=1, keepdims=True), 1e-30)


def _inside_recurrences(
    ix: GraphIndex,
    layouts: list[StateLayout],
    channels: list[str],
    driven: np.ndarray,
    opset: int,
    fixed: bool,
    where: str,
) -> set[str]:
    """The driving tensors that lie on a loop of a state update (lam_re * x_re, or lam_im * x_im driving
    x_re' of a [batch, P] state): not a layer's input. Elements with the same drivers form an atom; a driver
    reads an atom if it responds to it (nothing cut, token zero), and drives the atoms of its elements; it
    is inside a recurrence if an atom it drives leads back, through drivers, to an atom it reads. A layer
    input reads only earlier layers' atoms, which its own never reach."""
    drivers = [k for k in range(len(channels)) if driven[k].any()]
    if not drivers:
        return set()
    offsets = _offsets(layouts)
    keys = driven[drivers].T  # [S, drivers]
    hit = keys.any(axis=1)
    atoms, atom_of = np.unique(keys[hit], axis=0, return_inverse=True)
    atom = np.full(len(keys), -1)
    atom[hit] = atom_of.reshape(-1)
    A = len(atoms)
    graph_inputs = [t.name for t in ix.graph.inputs if t.name in channels]
    feeds = {lay.s_in: lay for lay in layouts} | {t: _channel(t, ix.shape(t)[1]) for t in graph_inputs}
    fetch = {channels[k]: _channel(channels[k], ix.shape(channels[k])[1]) for k in drivers}
    rng = np.random.default_rng(3)
    state = np.zeros((A + 1, int(offsets[-1])), np.float32)  # the last row is the zero state
    for a in range(A):
        state[a, atom == a] = rng.uniform(0.5, 1.5, int(np.sum(atom == a)))
    values = {t: np.zeros((A + 1, ix.shape(t)[1]), np.float32) for t in graph_inputs}
    for lay, lo, hi in zip(layouts, offsets[:-1], offsets[1:]):
        values[lay.s_in] = state[:, lo:hi]
    got = _Probes(ix, feeds, fetch, opset, fixed, where)(values, A + 1)
    with np.errstate(invalid="ignore"):  # a NaN response reads nothing here; the measurement refuses it by name
        reads = np.array(
            [[np.abs(v[a] - v[-1]).max() > 1e-6 * (1.0 + np.abs(v[-1]).max()) for a in range(A)] for v in got]
        ).reshape(len(drivers), A)
    drives = atoms.T  # [drivers, atoms]
    reach = np.eye(A, dtype=bool) | (reads.T.astype(np.int64) @ drives.astype(np.int64) > 0)  # atom -> atom
    for _ in range(A):
        reach = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
    # driver t is on a loop if it drives b, b reaches a, and t reads a
    loop = (drives.astype(np.int64) @ reach.astype(np.int64) * reads).any(axis=1)
    return {channels[k] for k, on in zip(drivers, loop) if on}


def _merge_coupled_drivers(
    ix: GraphIndex,
    layouts: list[StateLayout],
    channels: list[str],
    owner: np.ndarray,
    opset: int,
    fixed: bool,
    where: str,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Merge groups of state elements that drive each other's next value and are driven by tensors computed
    from one common [batch, C] tensor alone (u @ B_re^T and u @ B_im^T): one layer with input u.
    Returns (owner per element, each owner's input tensor, the channels left as cuts)."""
    groups = sorted(set(owner.tolist()) - {-1})
    inputs = list(channels)
    if len(groups) < 2:
        return owner, inputs, channels
    offsets = _offsets(layouts)
    feeds = {lay.s_in: lay for lay in layouts} | {t: _channel(t, ix.shape(t)[1]) for t in channels}
    probes = _Probes(ix, feeds, {lay.s_out: lay for lay in layouts}, opset, fixed, where)
    n = len(groups)
    rng = np.random.default_rng(4)
    state = np.zeros((n, int(offsets[-1])), np.float32)
    for r, g in enumerate(groups):
        sel = owner == g
        state[r, sel] = rng.uniform(0.5, 1.5, int(sel.sum()))
    values = {t: np.zeros((n, ix.shape(t)[1]), np.float32) for t in channels}
    for lay, lo, hi in zip(layouts, offsets[:-1], offsets[1:]):
        values[lay.s_in] = state[:, lo:hi]
    resp = np.abs(np.concatenate(probes(values, n), axis=1))
    parent = {g: g for g in groups}

    def find(g):
        while parent[g] != g:
            g = parent[g]
        return g

    stray = owner == -1
    for r, g in enumerate(groups):
        tol = 1e-6 * max(resp[r].max(), 1e-30)
        for g2 in groups:
            if g2 != g and resp[r, owner == g2].max() > tol:
                parent[find(g2)] = find(g)
    # An element no tensor drives measurably (in a packed state, e.g. the imaginary half of a slow mode, whose
    # A_imag ~ 0 after training leaves it driven by the input below the threshold) joins the group whose state
    # drives it: the one that drives it measurably, or, if none does, the one that drives it at all (its re/im
    # partner's layer). Ownership must not stop at the threshold the coupling check uses, or that check flags
    # the element as coupled out of the partner's layer. Two groups driving it measurably stay a coupling
    # (the measurement refuses it by name).
    if stray.any():
        tols = 1e-6 * np.maximum(resp.max(axis=1, keepdims=True), 1e-30)
        drive = resp[:, stray]
        by = drive > tols
        count = by.sum(axis=0)
        pick = np.where(count == 1, by.argmax(axis=0), drive.argmax(axis=0))
        adopt = (count == 1) | ((count == 0) & (drive.max(axis=0) > 0))
        owner[np.flatnonzero(stray)[adopt]] = np.asarray(groups)[pick[adopt]]
    sets: dict[int, list[int]] = {}
    for g in groups:
        sets.setdefault(find(g), []).append(g)
    chan_set = set(channels)
    internal: set[str] = set()
    for members in sets.values():
        if len(members) < 2:
            continue
        chains = [_root_chain(ix, channels[g], chan_set) for g in members]
        common = next((t for t in chains[0] if all(t in c for c in chains[1:])), None)
        if common is None:  # not one layer: the measurement refuses the coupling by name
            continue
        for g, chain in zip(members, chains):
            internal.update(chain[: chain.index(common)])
            owner[owner == g] = members[0]
        inputs[members[0]] = common
    return owner, inputs, [c for c in channels if c not in internal]


def _root_chain(ix: GraphIndex, t: str, chan_set: set[str]) -> list[str]:
    """t, then the [batch, C] tensor t is computed from alone (with constants), then that one's, ..."""
    chain = [t]
    while True:
        cone, _ = ix.ancestors(chain[-1], stop=chan_set - {chain[-1]})
        roots = (cone & chan_set) - {chain[-1]}
        if len(roots) != 1 or not ix.depends_only_on(chain[-1], roots) or next(iter(roots)) in chain:
            return chain
        chain.append(roots.pop())


def _locate_y(
    ix: GraphIndex, layer: _Layer, layouts: list[StateLayout], channels: list[str], opset: int, fixed: bool
) -> str:
    """The layer output: the first [batch, H] tensor read from the layer's state elements (its other channel
    tensors cut), extended through the D skip, constant scales and other parts of the readout (a sum of
    terms computed from the layer's own state and input alone)."""
    H = ix.shape(layer.u)[1]
    states_in = {lay.s_in for lay in layouts}
    mine = {lay.s_in for lay in layer.layouts}
    cut = set(channels)
    readers = []
    for t in channels:
        if t == layer.u or not _is_channel_tensor(ix, t, H):
            continue
        cone, _ = ix.ancestors(t, stop=(cut - {t}) | states_in)
        if cone & mine:
            readers.append(t)
    y = readers[0] if readers and not layer.packed else None
    if layer.packed:  # several layers read the same state tensors: which reader reads this layer's elements?
        offsets = _offsets(layouts)
        state = np.zeros(int(offsets[-1]), np.float32)
        state[layer.elements] = np.random.default_rng(1).normal(size=len(layer.elements))
        for t in readers:
            feeds = {lay.s_in: lay for lay in layouts} | {c: _channel(c, ix.shape(c)[1]) for c in channels if c != t}
            values = {c: np.zeros((1, ix.shape(c)[1]), np.float32) for c in channels if c != t}
            for lay, lo, hi in zip(layouts, offsets[:-1], offsets[1:]):
                values[lay.s_in] = state[None, lo:hi]
            (got,) = _Probes(ix, feeds, {t: _channel(t, H)}, opset, fixed, layer.where)(values, 1)
            if np.abs(got).max() > 1e-6:
                y = t
                break
    if y is None:
        raise UnsupportedModelError(
            f"{layer.where}: found no [batch, {H}] tensor read out of the layer's state "
            f"(the layer output; its input is '{layer.u}')"
        )
    u = layer.u
    # Extend through the D skip (adding a function of u) and constant scales.
    while True:
        users = ix.consumers.get(y, [])
        if len(users) != 1 or y in ix.graph_outputs:
            break
        n = users[0]
        others = [t.name for t in n.inputs if t.name != y]
        if len(n.inputs) != 2 or len(others) != 1 or not _is_channel_tensor(ix, n.outputs[0].name, H):
            break
        other = others[0]
        if n.op in ("Add", "Sub") and not ix.is_const(other) and ix.depends_only_on(other, {u}):
            y = n.outputs[0].name
        elif (
            n.op in ("Add", "Sub")
            and not layer.packed
            and not ix.is_const(other)
            and ix.depends_only_on(other, {u} | mine)
        ):  # another part of the readout (Re(C x) = C_re x_re - C_im x_im)
            y = n.outputs[0].name
        elif n.op in ("Mul", "Div") and ix.is_const(other) and ix.const(other).size in (1, H):
            y = n.outputs[0].name
        else:
            break
    return y


def _locate_y_lifting(
    ix: GraphIndex, layer: _Layer, layouts: list[StateLayout], channels: list[str], opset: int, fixed: bool
) -> tuple[str, list[str]]:
    """The layer output, as _locate_y. When nothing of the driver's width is read out of the state (the
    driver is the layer's input map, e.g. u @ [B_re; B_im]^T of width 2P), the input is the tensor the
    driver is computed from alone (u), and the tensors in between are part of the layer."""
    try:
        return _locate_y(ix, layer, layouts, channels, opset, fixed), channels
    except UnsupportedModelError as first:
        chain = _root_chain(ix, layer.u, set(channels))
        for k, cand in enumerate(chain[1:], start=1):
            rest = [c for c in channels if c not in chain[:k]]
            try:
                y = _locate_y(
                    ix, _Layer(cand, layer.elements, layer.layouts, layer.packed), layouts, rest, opset, fixed
                )
            except UnsupportedModelError:
                continue
            layer.u = cand
            return y, rest
        raise first


def _pairs_shared(layer: _Layer, layouts: list[StateLayout]) -> bool:
    """True if a state tensor of this layer holds elements of other layers too (packed)."""
    offsets = _offsets(layouts)
    for lay, lo, hi in zip(layouts, offsets[:-1], offsets[1:]):
        if lay in layer.layouts and np.count_nonzero((layer.elements >= lo) & (layer.elements < hi)) < hi - lo:
            return True
    return False


def _claimed_nodes(ix: GraphIndex, layouts: list[StateLayout], layers: list[_Layer]) -> set[int]:
    """The nodes of all layers together (their state plumbing may be shared); nothing computed inside may be
    used outside."""
    stop = {lay.s_in for lay in layouts} | {layer.u for layer in layers}
    after = set()
    for t in stop:
        after |= ix.descendants(t)
    tops = [lay.s_out for lay in layouts] + [layer.y for layer in layers]
    nodes = set()
    for top in tops:
        nodes |= ix.ancestors(top, stop=stop)[1]
    keep = {id(n) for n in ix.nodes if id(n) in nodes and any(o.name in after for o in n.outputs)}
    ends = set(tops)
    for n in ix.nodes:
        if id(n) not in keep:
            continue
        for o in n.outputs:
            if o.name in ends:
                continue
            outside = [c for c in ix.consumers.get(o.name, []) if id(c) not in keep]
            if outside or o.name in ix.graph_outputs:
                layer = next((la for la in layers if o.name in ix.ancestors(la.y, stop=stop)[0]), None)
                where = layer.where if layer else "the state inputs " + ", ".join(f"'{la.s_in}'" for la in layouts)
                raise UnsupportedModelError(
                    f"{where}: tensor '{o.name}' inside the layer is also used outside it (by "
                    f"'{outside[0].name if outside else 'a graph output'}'); only the layer output and the next "
                    "state may leave a layer: return the next state as a state output, or compute the other use "
                    "from the layer output"
                )
    return keep


def _probe_sets(ix: GraphIndex, layer: _Layer, layouts: list[StateLayout], channels: list[str]):
    """What probing `layer` feeds and reads: the cut channels, the tensors the probed outputs need,
    the state layouts fed and the next-state layouts fetched."""
    u, y = layer.u, layer.y
    states_in = {lay.s_in for lay in layouts}
    inner, _ = ix.ancestors(y, stop=states_in | {u})
    cut = {c for c in channels if c == u or c not in inner}
    mine = {lay.s_in for lay in layer.layouts}
    # The next states this layer's state reaches (its own, and any other layer's it would couple into) are
    # fetched; every state input they read is fed (zero outside the layer).
    cones = {lay.s_out: ix.ancestors(lay.s_out, stop=cut | states_in)[0] for lay in layouts}
    fetched = [lay for lay in layouts if cones[lay.s_out] & mine]
    needed = set().union(*(cones[lay.s_out] for lay in fetched), ix.ancestors(y, stop=cut | states_in)[0])
    fed = [lay for lay in layouts if lay.s_in in needed or lay.s_in in mine]
    return cut, needed, fed, fetched


def _probe_plan(S: int, H: int, widest: int, fixed: bool, where: str) -> tuple[int, int]:
    """The probe chunk size and the measuring's base memory (checked against work_bytes), announced."""
    chunk = 1 if fixed else int(np.clip(PROBE_VALUES // max(widest, 1), 16, PROBE_CHUNK))
    # Probes go through in chunks (probe, response and onnxruntime's copies: ~4 buffers of chunk x S values);
    # B and C are dense S x H, D is H x H. M is kept sparse: a diagonal layer has ~2 entries per state element.
    base_bytes = 8 * (4 * chunk * (widest + H) + 3 * S * H + 2 * H * H)
    limits.check(
        "work_bytes",
        base_bytes,
        f"{where}: measuring this layer ({S} state elements, {H} channels)",
        fix="give the layer fewer state elements (channels x modes)",
    )

    batches = -(-S // chunk)
    progress.info(
        f"measuring {where}: {S} state elements, {H} channels ({batches} probe batch{'' if batches == 1 else 'es'})"
    )
    return chunk, base_bytes


def _measure(ix: GraphIndex, layer: _Layer, layouts: list[StateLayout], channels: list[str], opset: int, fixed: bool):
    """The four linear maps of the layer: the state map M as a sparse matrix (entries above 1e-7 of the largest
    in each probe chunk; the caller thresholds against the global largest), B, C and D as float64 arrays."""
    offsets = _offsets(layouts)
    elements = layer.elements
    S = len(elements)
    u, y = layer.u, layer.y
    H = ix.shape(u)[1]
    where = layer.where
    states_in = {lay.s_in for lay in layouts}
    cut, needed, fed, fetched = _probe_sets(ix, layer, layouts, channels)
    fed_size, fetched_size = sum(lay.size for lay in fed), sum(lay.size for lay in fetched)
    limits.check("state_elements", S, f"{where}: a layer of {S} state elements per sequence")
    chunk, base_bytes = _probe_plan(S, H, max(fed_size, fetched_size), fixed, where)
    feeds = {lay.s_in: lay for lay in fed} | {c: _channel(c, ix.shape(c)[1]) for c in cut if c in needed}
    probes = _Probes(ix, feeds, {lay.s_out: lay for lay in fetched} | {y: _channel(y, H)}, opset, fixed, where)

    fed_pos = _positions(elements, offsets, layouts, fed)
    fetched_pos = _positions(elements, offsets, layouts, fetched)
    if np.any(fetched_pos < 0):  # an element of this layer that does not reach its next state: not a recurrence
        raise UnsupportedModelError(f"{where}: the next state does not depend on the state input")
    outside = np.ones(fetched_size, bool)
    outside[fetched_pos] = False
    coupling_possible = bool(outside.any())
    # a layer alone in its state tensors (the common case) needs no scatter and gather of every probe
    fed_all = fed_size == S and np.array_equal(fed_pos, np.arange(S))
    fetched_all = fetched_size == S and np.array_equal(fetched_pos, np.arange(S))

    def run(s_batch: np.ndarray, u_batch: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
        outs_s, outs_y = [], []
        for lo in range(0, len(s_batch), chunk):
            sc = s_batch[lo : lo + chunk]
            n = len(sc)
            if fed_all:
                full = np.asarray(sc, np.float32)
            else:
                full = np.zeros((n, fed_size), np.float32)
                full[:, fed_pos] = sc
            values = {c: np.zeros((n, ix.shape(c)[1]), np.float32) for c in feeds if c not in states_in}
            values[u] = u_batch[lo : lo + chunk]
            at = 0
            for lay in fed:
                values[lay.s_in] = full[:, at : at + lay.size]
                at += lay.size
            *so, yo = probes(values, n)
            so = so[0] if len(so) == 1 else np.concatenate(so, axis=1)
            if coupling_possible:
                _check_no_coupling(so, outside, fetched, where)
            outs_s.append(so if fetched_all else so[:, fetched_pos])
            outs_y.append(yo)
        return np.concatenate(outs_s).astype(dtype, copy=False), np.concatenate(outs_y).astype(dtype, copy=False)

    not_finite = UnsupportedModelError(
        f"{where}: probing the layer gives NaN or infinite values; check its weights for huge values"
    )
    _check_no_bias(run, S, H, where)
    step = FIXED_BATCH_STEP if fixed else chunk  # with a fixed batch run() still goes one probe at a time
    M, Ky = _probe_states(run, S, H, step, base_bytes, where, not_finite)
    Bu, Ly = _probe_inputs(run, S, H, not_finite)
    _check_linear(run, M, Bu, Ky, Ly, where)
    return M, Bu, Ky, Ly


def _check_no_bias(run, S: int, H: int, where: str) -> None:
    """Refuse a layer whose state or output moves from a zero state and input (a bias)."""
    s0, y0 = run(np.zeros((1, S)), np.zeros((1, H)))
    if np.abs(s0).max(initial=0.0) > 1e-6 or np.abs(y0).max() > 1e-6:
        raise UnsupportedModelError(
            f"{where}: the layer adds a constant (bias) to its state or output; "
            "S4D layers have none: move the bias into a linear before or after"
        )


def _probe_inputs(run, S: int, H: int, not_finite: UnsupportedModelError) -> tuple[np.ndarray, np.ndarray]:
    """The input-to-state map Bu [S, H] and the direct input-to-output map Ly [H, H], from unit input probes."""
    Bu, Ly = run(np.zeros((H, S)), np.eye(H))
    Bu, Ly = Bu.T, Ly.T  # columns are responses to unit probes
    if not (np.all(np.isfinite(Bu)) and np.all(np.isfinite(Ly))):
        raise not_finite
    return Bu, Ly


def _positions(
    elements: np.ndarray, offsets: np.ndarray, layouts: list[StateLayout], pairs: list[StateLayout]
) -> np.ndarray:
    """Where each layer element sits in the concatenation of `pairs`' states."""
    pos, at = np.full(len(elements), -1, np.int64), 0
    for lay in pairs:
        lo = offsets[layouts.index(lay)]
        sel = (elements >= lo) & (elements < lo + lay.size)
        pos[sel] = at + elements[sel] - lo
        at += lay.size
    return pos


def _check_no_coupling(so: np.ndarray, outside: np.ndarray, fetched: list[StateLayout], where: str) -> None:
    """Refuse a probe response that reaches next-state elements outside the layer (`outside` of `fetched`)."""
    leak = np.abs(so[:, outside])
    if leak.max() > 1e-6 * max(np.abs(so).max(), 1e-30):
        e = int(np.flatnonzero(outside)[np.argmax(leak.max(axis=0))])
        k = 0
        while e >= fetched[k].size:
            e -= fetched[k].size
            k += 1
        idx = list(map(int, np.unravel_index(e, fetched[k].shape)))
        raise UnsupportedModelError(
            f"{where}: the layer's state drives element {idx} of the next state "
            f"'{fetched[k].s_out}' outside the layer; layers must not couple "
            "their states (only a diagonal state map per layer is supported)"
        )


def _probe_states(
    run, S: int, H: int, step: int, base_bytes: int, where: str, not_finite: UnsupportedModelError
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """The state map M (sparse, see _measure) and the state-to-output map Ky, from unit state probes."""
    # State probes: unit vectors e_lo .. e_hi-1 per chunk; response row r is column lo + r of M.
    Ky = np.empty((H, S))
    rows, cols, vals = [], [], []
    kept = 0
    for lo in range(0, S, step):
        n = min(step, S - lo)
        probe = np.zeros((n, S), np.float32)  # what onnxruntime computes in, so no conversion of S^2 values
        probe[np.arange(n), lo + np.arange(n)] = 1.0
        so, yo = run(probe, np.zeros((n, H), np.float32), dtype=np.float32)
        if not (np.all(np.isfinite(so)) and np.all(np.isfinite(yo))):
            raise not_finite
        Ky[:, lo : lo + n] = yo.T
        size = np.abs(so)
        r, c = np.nonzero(size > 1e-7 * size.max())  # an entry above 1e-7 of the global largest is above this
        rows.append(c)
        cols.append(lo + r)
        vals.append(so[r, c].astype(np.float64))
        kept += len(r)
        limits.check(
            "work_bytes",
            base_bytes + 24 * kept,
            f"{where}: measuring this layer ({kept} coupled state entries so far)",
            fix="only diagonal SSM layers are supported: their state entries are ~2 per element",
        )
    M = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(S, S))
    return M, Ky


def _check_linear(run, M: sparse.csr_matrix, Bu: np.ndarray, Ky: np.ndarray, Ly: np.ndarray, where: str) -> None:
    """Refuse a layer whose response to random (state, input) differs from what the measured maps predict."""
    S, H = Ky.shape[1], Ly.shape[0]
    rng = np.random.default_rng(0)
    s_r, u_r = rng.normal(size=(4, S)), rng.normal(size=(4, H))
    got_s, got_y = run(s_r, u_r)
    want_s, want_y = (M @ s_r.T).T + u_r @ Bu.T, s_r @ Ky.T + u_r @ Ly.T
    err = max(
        np.abs(got_s - want_s).max() / (np.abs(want_s).max() + 1e-12),
        np.abs(got_y - want_y).max() / (np.abs(want_y).max() + 1e-12),
    )
    if err > 1e-4:
        raise UnsupportedModelError(
            f"{where}: the recurrence is not linear in (state, input) (relative error "
            f"{err:.1e}); only linear state-space layers are supported"
        )


def _components(M: sparse.csr_matrix) -> list[list[int]]:
    """Groups of state elements coupled by M's off-diagonal entries (expect singletons and pairs), each sorted,
    in order of first element."""
    _, label = connected_components(M, directed=True, connection="weak")
    order = np.argsort(label, kind="stable")
    cuts = np.flatnonzero(np.diff(label[order])) + 1
    return sorted((g.tolist() for g in np.split(order, cuts)), key=lambda g: g[0])


def _mode_channels(comps: list[list[int]], drives: np.ndarray, reads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each group of state elements: the channels that drive it or read it ([groups, H] bool each)."""
    S = drives.shape[0]
    member = np.empty(S, np.int64)
    for k, comp in enumerate(comps):
        member[comp] = k
    P = sparse.csr_matrix((np.ones(S, np.int32), (member, np.arange(S))), shape=(len(comps), S))
    return (P @ drives.astype(np.int32)) > 0, (P @ reads.T.astype(np.int32)) > 0


def _find_s4d(
    ix: GraphIndex,
    raw: GraphIndex | None,
    layer: _Layer,
    layouts: list[StateLayout],
    channels: list[str],
    opset: int,
    fixed: bool,
) -> Recurrence:
    """Measure `layer` and read off its diagonal parameters: modes of one channel each (S4D; continuous
    parameters where initializers of the raw graph reproduce A_bar), or modes shared by the channels (S5, LRU)."""
    H = ix.shape(layer.u)[1]
    M, Bu, Ky, Ly = _measure(ix, layer, layouts, channels, opset, fixed)
    where = layer.where

    tol_m, entry = _drop_tiny_entries(M)
    # which channels drive / read each state element (thresholds relative to the whole map, computed once:
    # per mode they made import quadratic in the state size)
    drives = np.abs(Bu) > 1e-7 * max(np.abs(Bu).max(), 1e-30)  # [S, H]
    reads = np.abs(Ky) > 1e-7 * max(np.abs(Ky).max(), 1e-30)  # [H, S]
    comps = _components(M)
    _check_uncoupled(where, comps, entry)
    driven_by, read_by = _mode_channels(comps, drives, reads)
    touching = driven_by | read_by
    if np.any(touching.sum(axis=1) > 1):  # modes shared by channels: S5, LRU
        return _shared_layer(layer, comps, entry, tol_m, driven_by, Bu, Ky, Ly)
    per_channel, n_modes = _modes_per_channel(where, comps, driven_by, touching, H)
    A_bar, B_bar, C, C_full = _channel_parameters(where, per_channel, n_modes, entry, tol_m, Bu, Ky)
    D = _diagonal_skip(where, Ly, C_full, Bu, A_bar, B_bar, C)
    padded = any(len(v) < n_modes for v in per_channel.values())
    return _s4d_recurrence(layer, raw, A_bar, B_bar, C, D, padded)


def _drop_tiny_entries(M: sparse.csr_matrix) -> tuple[float, dict[tuple[int, int], float]]:
    """Remove M's entries at or below 1e-7 of its largest, in place (below the layer's tolerance: not a
    coupling); returns that tolerance and the entries left, by (row, column)."""
    tol_m = 1e-7 * max(np.abs(M.data).max(initial=0.0), 1e-30)
    M.data[np.abs(M.data) <= tol_m] = 0.0
    M.eliminate_zeros()
    entry = {(int(i), int(j)): float(v) for i, j, v in zip(*sparse.find(M))}  # ~2 per state element
    return tol_m, entry


def _check_uncoupled(where: str, comps: list[list[int]], entry: dict) -> None:
    """Refuse a group of more than two state elements coupled by the state map (not a diagonal SSM)."""
    coupled = next((comp for comp in comps if len(comp) > 2), None)
    if coupled is not None:
        shown = coupled[:4]
        block = np.round([[entry.get((a, b), 0.0) for b in shown] for a in shown], 4).tolist()
        raise _fail(
            where,
            f"state elements {coupled[:6]} are coupled together (measured state map "
            f"{'block' if len(coupled) <= 4 else 'corner'} {block}); only diagonal SSMs "
            "(independent complex modes: 1x1 or [[a, -b], [b, a]] blocks) are supported",
        )


def _modes_per_channel(
    where: str, comps: list[list[int]], driven_by: np.ndarray, touching: np.ndarray, H: int
) -> tuple[dict[int, list[list[int]]], int]:
    """The modes (groups of state elements) of each of the H channels, and the most modes a channel has."""
    # A mode never driven from a zero initial state stays 0 and is dropped: e.g. the imaginary
    # half of a mode whose pole is real (A_imag = 0 in S4D-Lin's first mode).
    channel = touching.argmax(axis=1)
    modes = [(int(channel[k]), comp) for k, comp in enumerate(comps) if driven_by[k].any()]

    per_channel: dict[int, list[list[int]]] = {h: [] for h in range(H)}
    for h, comp in modes:
        per_channel[h].append(comp)
    n_modes = max((len(v) for v in per_channel.values()), default=0)
    if n_modes == 0:
        raise _fail(where, "no mode of the state reaches the output")
    return per_channel, n_modes


def _channel_parameters(
    where: str,
    per_channel: dict[int, list[list[int]]],
    n_modes: int,
    entry: dict,
    tol_m: float,
    Bu: np.ndarray,
    Ky: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A_bar, B_bar, C [H, n_modes] (zero modes pad channels with fewer) and the readout of every state
    element C_full [H, S]."""
    H, S = Ky.shape
    A_bar = np.zeros((H, n_modes), np.complex128)
    B_bar = np.zeros((H, n_modes), np.complex128)
    C = np.zeros((H, n_modes), np.complex128)
    C_full = np.zeros((H, S))
    for h, comps in per_channel.items():
        for m, comp in enumerate(comps):
            A_bar[h, m], B_bar[h, m], C[h, m], C_full[h, comp] = _mode(
                where, comp, entry, tol_m, Bu[:, h], Ky[h, comp], f"mode {m} of channel {h}"
            )
    return A_bar, B_bar, C, C_full


def _s4d_recurrence(
    layer: _Layer,
    raw: GraphIndex | None,
    A_bar: np.ndarray,
    B_bar: np.ndarray,
    C: np.ndarray,
    D: np.ndarray,
    padded: bool,
) -> Recurrence:
    """The S4D recurrence of `layer`: continuous parameters when initializers of the raw graph reproduce A_bar
    (and no channel is `padded` with zero modes), else the measured discrete ones."""
    n_modes = A_bar.shape[1]
    rec = Recurrence("s4d", *layer.pair, u=layer.u, y=layer.y, where=layer.where)
    notes = []
    if padded:
        notes.append("channels have different mode counts; padded with zero modes")
    cont = None if notes else _match_continuous(raw, layer.layouts[0].s_out, A_bar, B_bar)
    if cont is not None:
        log_dt, A, B, names, conj = cont
        if conj:  # the state stores (im, re): the conjugate realisation is the same layer
            B_bar, C = np.conj(B_bar), np.conj(C)
        rec.attrs = {"form": "continuous", "modes": n_modes}
        rec.params = {
            "log_dt": log_dt.astype(np.float32),
            "A": A.astype(np.complex64),
            "B": B.astype(np.complex64),
            "C": C.astype(np.complex64),
            "D": D.astype(np.float32),
        }
        notes.append("continuous parameters from initializers " + ", ".join(names))
    else:
        rec.attrs = {"form": "discrete", "modes": n_modes}
        rec.params = {
            "A_bar": A_bar.astype(np.complex64),
            "B_bar": B_bar.astype(np.complex64),
            "C": C.astype(np.complex64),
            "D": D.astype(np.float32),
        }
        notes.append("discrete parameters measured from the graph")
    rec.notes = notes
    return rec


def _mode(where: str, comp: list[int], entry: dict, tol_m: float, Bu, Ky_rows, name: str):
    """(A_bar, B_bar, C, readout of the elements) of the mode on state elements `comp` (1: real, 2: complex):
    Bu holds the elements' input weights (one channel's column, or [S, H] for modes shared by channels),
    Ky_rows the readout of the elements ([len(comp)] or [H, len(comp)])."""
    block = np.array([[entry.get((a, b), 0.0) for b in comp] for a in comp])
    if abs(np.linalg.det(block)) < 1e-12:
        raise _fail(where, f"{name} has A_bar = 0; its output map cannot be recovered")
    c_rows = Ky_rows @ np.linalg.inv(block)  # y reads x_t = M x_{t-1} + ...
    if len(comp) == 1:
        return block[0, 0], Bu[comp[0]], c_rows[..., 0] / 2, c_rows
    i, j = comp
    (m_ii, m_ij), (m_ji, m_jj) = block
    if abs(m_ii - m_jj) > 1e-5 * (abs(m_ii) + 1e-6) + tol_m or abs(m_ij + m_ji) > 1e-5 * (abs(m_ji) + 1e-6) + tol_m:
        raise _fail(
            where,
            f"state elements {comp} do not form a complex mode "
            f"(block {np.round(block, 6).tolist()} is not [[a, -b], [b, a]])",
        )
    return m_ii + 1j * m_ji, Bu[i] + 1j * Bu[j], (c_rows[..., 0] - 1j * c_rows[..., 1]) / 2, c_rows


def _diagonal_skip(where: str, Ly, C_full, Bu, A_bar, B_bar, C, dense: bool = False) -> np.ndarray:
    """D (the direct term left of y once the modes are read out), refused unless diagonal; and every measured
    parameter finite in float32. With dense B and C (dense=True) D is the difference of two dense float32
    measurements: what stays under their rounding (relative to |C| |B|) is 0."""
    D_full = Ly - C_full @ Bu
    scale = max(np.abs(D_full).max(), 1e-6)
    if dense:
        scale = max(scale, float((np.abs(C_full) @ np.abs(Bu)).max()))
        D_full[np.abs(D_full) <= 1e-5 * scale] = 0.0
    D = np.diag(D_full).copy()
    off = D_full - np.diag(D)
    if np.abs(off).max() > 1e-5 * scale:
        raise _fail(where, "the skip term mixes channels (D is not diagonal); move that mixing into a linear")
    for label, v in (("A_bar", A_bar), ("B_bar", B_bar), ("C", C), ("D", D)):
        if not np.all(np.isfinite(v.astype(np.complex64 if np.iscomplexobj(v) else np.float32))):
            raise _fail(
                where,
                f"the measured {label} is not finite in float32 "
                f"(max |value| {np.abs(v).max():.3g}); check the layer's weights for huge values",
            )
    return D


def _shared_layer(
    layer: _Layer,
    comps: list[list[int]],
    entry: dict,
    tol_m: float,
    driven_by: np.ndarray,
    Bu: np.ndarray,
    Ky: np.ndarray,
    Ly: np.ndarray,
) -> Recurrence:
    """A layer whose modes read or drive several channels (S5, LRU): P modes shared by all H channels,
    A_bar [P], B_bar [P, H], C [H, P] (mixing = dense), modes in order of their first state element."""
    where = layer.where
    H = Ly.shape[0]
    modes = [comp for k, comp in enumerate(comps) if driven_by[k].any()]  # undriven modes stay 0
    if not modes:
        raise _fail(where, "no mode of the state reaches the output")
    P = len(modes)
    A_bar = np.zeros(P, np.complex128)
    B_bar = np.zeros((P, H), np.complex128)
    C = np.zeros((H, P), np.complex128)
    C_full = np.zeros((H, Ky.shape[1]))
    for p, comp in enumerate(modes):
        A_bar[p], B_bar[p], C[:, p], C_full[:, comp] = _mode(where, comp, entry, tol_m, Bu, Ky[:, comp], f"mode {p}")
    D = _diagonal_skip(where, Ly, C_full, Bu, A_bar, B_bar, C, dense=True)
    rec = Recurrence("s4d", *layer.pair, u=layer.u, y=layer.y, where=where)
    rec.attrs = {"form": "discrete", "modes": P, "mixing": "dense"}
    rec.params = {
        "A_bar": A_bar.astype(np.complex64),
        "B_bar": B_bar.astype(np.complex64),
        "C": C.astype(np.complex64),
        "D": D.astype(np.float32),
    }
    rec.notes = [
        f"{P} complex modes shared by all {H} channels (dense B and C: S5/LRU); discrete parameters "
        "measured from the graph"
    ]
    return rec


def _match_continuous(raw: GraphIndex | None, s_out: str, A_bar: np.ndarray, B_bar: np.ndarray):
    """Find initializers (log_dt, A parameters) whose ZOH discretization is A_bar.

    Tries the S4D parametrisation A = -exp(log_A_real) + i A_imag and the
    direct one A = A_real + i A_imag. Returns (log_dt, A, B, names, conj) or None.
    """
    if raw is None or s_out not in raw.tensors:
        return None
    H, M = A_bar.shape
    _, cone_nodes = raw.ancestors(s_out)
    consts: dict[str, np.ndarray] = {}
    for n in raw.nodes:
        if id(n) in cone_nodes:
            for t in n.inputs:
                if isinstance(t, gs.Constant) and np.issubdtype(np.asarray(t.values).dtype, np.floating):
                    consts[t.name] = np.asarray(t.values, dtype=np.float64)
    per_h = {k: v.reshape(H) for k, v in consts.items() if v.size == H}
    per_hm = {k: v.reshape(H, M) for k, v in consts.items() if v.size == H * M}
    with np.errstate(all="ignore"):  # candidates from unrelated initializers may overflow; they just do not match
        return _search_continuous(per_h, per_hm, A_bar, B_bar)


def _search_continuous(per_h, per_hm, A_bar, B_bar):
    for dt_name, log_dt in sorted(per_h.items()):
        dt = np.exp(log_dt)[:, None]
        for re_name, im_name in permutations(sorted(per_hm), 2):
            for a_re in (-np.exp(per_hm[re_name]), per_hm[re_name]):
                A = a_re + 1j * per_hm[im_name]
                if np.any(A.real >= 0):
                    continue
                cand = np.exp(dt * A)
                for conj in (False, True):
                    target = np.conj(A_bar) if conj else A_bar
                    if np.allclose(cand, target, rtol=1e-4, atol=1e-6):
                        bb = np.conj(B_bar) if conj else B_bar
                        denom = cand - 1.0
                        if np.abs(denom).min() < 1e-9:
                            return None
                        B = bb * A / denom
                        A2, B2 = zoh_discretize(log_dt, A, B)
                        if not np.allclose(B2, bb, rtol=1e-4, atol=1e-7):
                            return None
                        return log_dt, A, B, [dt_name, re_name, im_name], conj
    return None
