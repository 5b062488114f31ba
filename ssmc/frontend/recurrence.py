"""Recognise the recurrences of a step-form model: S4D layers and running pools.

A step-form model carries each recurrent state in as a graph input and out as
the matching graph output. For every such pair this module finds the layer's
input u and output y in the dataflow, then *measures* the layer with probes
through onnxruntime instead of matching op patterns:

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
# Largest state (elements per sample) of one layer the frontend will measure (default; see ssmc.limits).
MAX_STATE_ELEMENTS = limits.Limits().state_elements
#: Progress of slow steps (one line per measured layer); `ssmc.compile` shows it in its log.
progress = logging.getLogger("ssmc.frontend")


@dataclass
class Recurrence:
    """One recognised recurrence, ready to become an IR op."""

    kind: str  # "s4d" or "pool"
    state_in: str
    state_out: str
    u: str  # layer input tensor
    y: str  # layer output tensor
    nodes: set[int] = field(default_factory=set)  # ids of the gs nodes it replaces
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _fail(pair: tuple[str, str], msg: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"state '{pair[0]}' -> '{pair[1]}': {msg}")


def find_recurrence(ix: GraphIndex, raw: GraphIndex | None, s_in: str, s_out: str, opset: int) -> Recurrence:
    pair = (s_in, s_out)
    shape = ix.shape(s_in)
    if shape is None or any(not isinstance(d, int) for d in shape[1:]):
        raise _fail(pair, f"needs a static shape beyond the batch axis, has {shape}")
    if s_out not in ix.producer:
        raise _fail(pair, "the state output is not computed by the graph")
    if len(shape) == 2:
        return _find_pool(ix, s_in, s_out)
    return _find_s4d(ix, raw, s_in, s_out, opset)


# -- running pools --------------------------------------------------------------
def _find_pool(ix: GraphIndex, s_in: str, s_out: str) -> Recurrence:
    node = ix.producer[s_out]
    ins = [t.name for t in node.inputs]
    if node.op == "Add" and len(ins) == 2 and s_in in ins:
        other = ins[1 - ins.index(s_in)]
        if s_in not in ix.ancestors(other)[0] and not ix.is_const(other):
            return Recurrence("pool", s_in, s_out, u=other, y=s_out, nodes={id(node)}, attrs={"mode": "sum"})
    raise _fail((s_in, s_out), f"a 2-D state is supported as a running sum (state_out = state_in + x); "
                               f"this one is computed by {node.op}")


# -- S4D layers -----------------------------------------------------------------
def _is_channel_tensor(ix: GraphIndex, name: str, H: int) -> bool:
    s = ix.shape(name)
    return s is not None and len(s) == 2 and s[1] == H


def _locate(ix: GraphIndex, s_in: str, s_out: str, H: int) -> tuple[str, str]:
    """The layer input u and output y around the state pair."""
    pair = (s_in, s_out)
    state_dep = ix.descendants(s_in)
    cone, _ = ix.ancestors(s_out, stop={s_in})
    u_cands = [t for t in cone if t not in state_dep and not ix.is_const(t) and _is_channel_tensor(ix, t, H)]
    if not u_cands:
        raise _fail(pair, f"found no [batch, {H}] tensor feeding the state update (the layer input)")
    u = max(u_cands, key=ix.tensor_index)

    y_cands = [t for t in state_dep if t not in (s_in, s_out) and _is_channel_tensor(ix, t, H)]
    if not y_cands:
        raise _fail(pair, f"found no [batch, {H}] tensor read out of the state (the layer output)")
    y = min(y_cands, key=ix.tensor_index)
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
        elif n.op in ("Mul", "Div") and ix.is_const(other) and ix.const(other).size in (1, H):
            y = n.outputs[0].name
        else:
            break
    return u, y


def _claimed_nodes(ix: GraphIndex, s_in: str, s_out: str, u: str, y: str) -> set[int]:
    after_u = ix.descendants(u) | ix.descendants(s_in)
    nodes = set()
    for top in (s_out, y):
        _, cone_nodes = ix.ancestors(top, stop={s_in, u})
        nodes |= cone_nodes
    keep = set()
    for n in ix.nodes:
        if id(n) in nodes and any(o.name in after_u for o in n.outputs):
            keep.add(id(n))
    # Nothing computed inside the layer may be used outside it.
    for n in ix.nodes:
        if id(n) not in keep:
            continue
        for o in n.outputs:
            if o.name in (y, s_out):
                continue
            outside = [c for c in ix.consumers.get(o.name, []) if id(c) not in keep]
            if outside or o.name in ix.graph_outputs:
                raise _fail((s_in, s_out), f"tensor '{o.name}' inside the layer is also used outside it "
                                           f"(by '{outside[0].name if outside else 'a graph output'}')")
    return keep


def _measure(ix: GraphIndex, s_in: str, s_out: str, u: str, y: str, opset: int):
    """The four linear maps of the layer: the state map M as a sparse matrix (entries above 1e-7 of the largest
    in each probe chunk; the caller thresholds against the global largest), B, C and D as float64 arrays."""
    state_shape = tuple(ix.shape(s_in)[1:])
    S = int(np.prod(state_shape))
    H = ix.shape(u)[1]
    where = f"state '{s_in}' -> '{s_out}'"
    limits.check("state_elements", S, f"{where}: a state of {list(state_shape)} per sequence")
    chunk = int(np.clip(PROBE_VALUES // max(S, 1), 16, PROBE_CHUNK))
    # Probes go through in chunks (probe, response and onnxruntime's copies: ~4 buffers of chunk x S values);
    # B and C are dense S x H, D is H x H. M is kept sparse: a diagonal layer has ~2 entries per state element.
    base_bytes = 8 * (4 * chunk * (S + H) + 3 * S * H + 2 * H * H)
    limits.check("work_bytes", base_bytes, f"{where}: measuring this layer ({S} state elements, {H} channels)",
                 fix="give the layer fewer state elements (channels x modes)")

    batches = -(-S // chunk)
    progress.info(f"measuring {where}: {S} state elements, {H} channels "
                  f"({batches} probe batch{'' if batches == 1 else 'es'})")
    runner = slice_runner(ix.graph, {u: (H,), s_in: state_shape}, [s_out, y], opset)

    def run(s_batch: np.ndarray, u_batch: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
        outs_s, outs_y = [], []
        for lo in range(0, len(s_batch), chunk):
            s_chunk = s_batch[lo:lo + chunk].reshape((-1,) + state_shape)
            so, yo = runner({u: u_batch[lo:lo + chunk], s_in: s_chunk})
            if so.shape != s_chunk.shape or yo.shape != (len(s_chunk), H):
                # broadcasting inside the layer can make the declared shapes wrong
                raise _fail((s_in, s_out), f"evaluated on {len(s_chunk)} samples, the next state has shape "
                                           f"{list(so.shape)} (expected {list(s_chunk.shape)}) and the layer output "
                                           f"{list(yo.shape)} (expected {[len(s_chunk), H]})")
            outs_s.append(so.reshape(len(s_chunk), -1))
            outs_y.append(yo.reshape(len(s_chunk), -1))
        return np.concatenate(outs_s).astype(dtype, copy=False), np.concatenate(outs_y).astype(dtype, copy=False)

    not_finite = _fail((s_in, s_out), "probing the layer gives NaN or infinite values; check its weights for "
                                      "huge values")
    zero_s, zero_u = np.zeros((1, S)), np.zeros((1, H))
    s0, y0 = run(zero_s, zero_u)
    if np.abs(s0).max() > 1e-6 or np.abs(y0).max() > 1e-6:
        raise _fail((s_in, s_out), "the layer adds a constant (bias) to its state or output; "
                                   "S4D layers have none: move the bias into a linear before or after")
    # State probes: unit vectors e_lo .. e_hi-1 per chunk; response row r is column lo + r of M.
    Ky = np.empty((H, S))
    rows, cols, vals = [], [], []
    kept = 0
    for lo in range(0, S, chunk):
        n = min(chunk, S - lo)
        probe = np.zeros((n, S), np.float32)  # what onnxruntime computes in, so no conversion of S^2 values
        probe[np.arange(n), lo + np.arange(n)] = 1.0
        so, yo = run(probe, np.zeros((n, H), np.float32), dtype=np.float32)
        if not (np.all(np.isfinite(so)) and np.all(np.isfinite(yo))):
            raise not_finite
        Ky[:, lo:lo + n] = yo.T
        size = np.abs(so)
        r, c = np.nonzero(size > 1e-7 * size.max())  # an entry above 1e-7 of the global largest is above this
        rows.append(c)
        cols.append(lo + r)
        vals.append(so[r, c].astype(np.float64))
        kept += len(r)
        limits.check("work_bytes", base_bytes + 24 * kept,
                     f"{where}: measuring this layer ({kept} coupled state entries so far)",
                     fix="only diagonal SSM layers are supported: their state entries are ~2 per element")
    M = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(S, S))
    Bu, Ly = run(np.zeros((H, S)), np.eye(H))
    Bu, Ly = Bu.T, Ly.T  # columns are responses to unit probes
    if not (np.all(np.isfinite(Bu)) and np.all(np.isfinite(Ly))):
        raise not_finite

    rng = np.random.default_rng(0)
    s_r, u_r = rng.normal(size=(4, S)), rng.normal(size=(4, H))
    got_s, got_y = run(s_r, u_r)
    want_s, want_y = (M @ s_r.T).T + u_r @ Bu.T, s_r @ Ky.T + u_r @ Ly.T
    err = max(np.abs(got_s - want_s).max() / (np.abs(want_s).max() + 1e-12),
              np.abs(got_y - want_y).max() / (np.abs(want_y).max() + 1e-12))
    if err > 1e-4:
        raise _fail((s_in, s_out), f"the recurrence is not linear in (state, input) (relative error {err:.1e}); "
                                   "only linear state-space layers are supported")
    return M, Bu, Ky, Ly


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


def _find_s4d(ix: GraphIndex, raw: GraphIndex | None, s_in: str, s_out: str, opset: int) -> Recurrence:
    pair = (s_in, s_out)
    shape = ix.shape(s_in)
    H = shape[1]
    u, y = _locate(ix, s_in, s_out, H)
    nodes = _claimed_nodes(ix, s_in, s_out, u, y)
    M, Bu, Ky, Ly = _measure(ix, s_in, s_out, u, y, opset)

    tol_m = 1e-7 * max(np.abs(M.data).max(initial=0.0), 1e-30)
    M.data[np.abs(M.data) <= tol_m] = 0.0  # below the layer's tolerance: not a coupling
    M.eliminate_zeros()
    entry = {(int(i), int(j)): float(v) for i, j, v in zip(*sparse.find(M))}  # ~2 per state element
    # which channels drive / read each state element (thresholds relative to the whole map, computed once:
    # per mode they made import quadratic in the state size)
    drives = np.abs(Bu) > 1e-7 * max(np.abs(Bu).max(), 1e-30)   # [S, H]
    reads = np.abs(Ky) > 1e-7 * max(np.abs(Ky).max(), 1e-30)    # [H, S]
    comps = _components(M)
    coupled = next((comp for comp in comps if len(comp) > 2), None)
    if coupled is not None:
        raise _fail(pair, f"state elements {coupled[:6]} are coupled together; only diagonal SSMs "
                          "(independent complex modes) are supported")
    driven_by, read_by = _mode_channels(comps, drives, reads)
    touching = driven_by | read_by
    shared = np.flatnonzero(touching.sum(axis=1) > 1)
    if shared.size:
        k = int(shared[0])
        raise _fail(pair, f"a mode (state elements {comps[k]}) connects channels "
                          f"{np.flatnonzero(touching[k]).tolist()}; S4D modes must each belong to one channel")
    # A mode never driven from a zero initial state stays 0 and is dropped: e.g. the imaginary
    # half of a mode whose pole is real (A_imag = 0 in S4D-Lin's first mode).
    channel = touching.argmax(axis=1)
    modes = [(int(channel[k]), comp) for k, comp in enumerate(comps) if driven_by[k].any()]

    per_channel: dict[int, list[list[int]]] = {h: [] for h in range(H)}
    for h, comp in modes:
        per_channel[h].append(comp)
    n_modes = max((len(v) for v in per_channel.values()), default=0)
    if n_modes == 0:
        raise _fail(pair, "no mode of the state reaches the output")

    A_bar = np.zeros((H, n_modes), np.complex128)
    B_bar = np.zeros((H, n_modes), np.complex128)
    C = np.zeros((H, n_modes), np.complex128)
    C_full = np.zeros((H, M.shape[0]))
    for h, comps in per_channel.items():
        for m, comp in enumerate(comps):
            block = np.array([[entry.get((a, b), 0.0) for b in comp] for a in comp])
            if abs(np.linalg.det(block)) < 1e-12:
                raise _fail(pair, f"mode {m} of channel {h} has A_bar = 0; its output map cannot be recovered")
            c_rows = Ky[h, comp] @ np.linalg.inv(block)  # y reads x_t = M x_{t-1} + ...
            C_full[h, comp] = c_rows
            if len(comp) == 1:
                i = comp[0]
                A_bar[h, m], B_bar[h, m], C[h, m] = block[0, 0], Bu[i, h], c_rows[0] / 2
            else:
                i, j = comp
                (m_ii, m_ij), (m_ji, m_jj) = block
                if abs(m_ii - m_jj) > 1e-5 * (abs(m_ii) + 1e-6) + tol_m \
                        or abs(m_ij + m_ji) > 1e-5 * (abs(m_ji) + 1e-6) + tol_m:
                    raise _fail(pair, f"state elements {comp} do not form a complex mode "
                                      f"(block {np.round(block, 6).tolist()} is not [[a, -b], [b, a]])")
                A_bar[h, m] = m_ii + 1j * m_ji
                B_bar[h, m] = Bu[i, h] + 1j * Bu[j, h]
                C[h, m] = (c_rows[0] - 1j * c_rows[1]) / 2
    D_full = Ly - C_full @ Bu
    D = np.diag(D_full).copy()
    off = D_full - np.diag(D)
    if np.abs(off).max() > 1e-5 * max(np.abs(D_full).max(), 1e-6):
        raise _fail(pair, "the skip term mixes channels (D is not diagonal); move that mixing into a linear")

    for label, v in (("A_bar", A_bar), ("B_bar", B_bar), ("C", C), ("D", D)):
        if not np.all(np.isfinite(v.astype(np.complex64 if np.iscomplexobj(v) else np.float32))):
            raise _fail(pair, f"the measured {label} is not finite in float32 (max |value| {np.abs(v).max():.3g}); "
                              "check the layer's weights for huge values")
    rec = Recurrence("s4d", s_in, s_out, u=u, y=y, nodes=nodes)
    notes = []
    if any(len(v) < n_modes for v in per_channel.values()):
        notes.append("channels have different mode counts; padded with zero modes")
    cont = None if notes else _match_continuous(raw, s_out, A_bar, B_bar)
    if cont is not None:
        log_dt, A, B, names, conj = cont
        if conj:  # the state stores (im, re): the conjugate realisation is the same layer
            B_bar, C = np.conj(B_bar), np.conj(C)
        rec.attrs = {"form": "continuous", "modes": n_modes}
        rec.params = {"log_dt": log_dt.astype(np.float32), "A": A.astype(np.complex64),
                      "B": B.astype(np.complex64), "C": C.astype(np.complex64), "D": D.astype(np.float32)}
        notes.append("continuous parameters from initializers " + ", ".join(names))
    else:
        rec.attrs = {"form": "discrete", "modes": n_modes}
        rec.params = {"A_bar": A_bar.astype(np.complex64), "B_bar": B_bar.astype(np.complex64),
                      "C": C.astype(np.complex64), "D": D.astype(np.float32)}
        notes.append("discrete parameters measured from the graph")
    rec.notes = notes
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
    for (dt_name, log_dt) in sorted(per_h.items()):
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
