"""Assign blocks (or neurons) to cores: CP-SAT, and the baselines it is measured against.

All solvers respect the same capacities: the additive block bounds of
ssmc.mapping.blocks against the target's per-core limits, and at most
`group_limit` neuron groups per core. Each returns one core index per block,
cores numbered 0.. in the order they were opened (or solved); `place` moves
them onto the mesh afterwards.

- `greedy`: blocks in layer order, filling cores one after another (what a
  user gets by filling cores by hand).
- `index_order`: neurons in index order, group after group, cut wherever a
  core is full -- ignores the mode/readout structure entirely (neuron level).
- `metis`: pymetis k-way partition of the block graph (edge weights = message
  rates, vertex weight = each block's largest capacity fraction), retried
  with more parts until every part fits.
- `cpsat`: OR-Tools CP-SAT, one Boolean per (block, core), every capacity as
  a linear constraint, groups per core via indicator Booleans; objective:
  rate-weighted messages to other cores (one per hyperedge and destination
  core) plus their hop distance, with logical cores 4r..4r+3 on router r and
  routers in a compact order (`mapper.band_router_order`: 2 x 2 for four routers). Four workers interleaved
  deterministically (`interleave_search`) and a deterministic time budget make it
  reproducible; the best baseline is given as a hint, so the solver starts
  from it. Reports its proven lower bound and gap.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ssmc.mapping.blocks import RESOURCES, Blocks

RATE_SCALE = 1000  # CP-SAT needs integer weights: messages per step x 1000
HOP_SCALE = 100  # and hop distances x 100


def fits(use: np.ndarray, limits: np.ndarray) -> bool:
    return bool(np.all(use <= limits + 1e-9))


def lower_bound_cores(blocks: Blocks, limits: np.ndarray) -> int:
    return max(1, int(math.ceil(float(np.max(blocks.use.sum(axis=0) / limits)) - 1e-9)))


def greedy(blocks: Blocks, limits: np.ndarray, group_limit: int) -> np.ndarray:
    core = np.zeros(blocks.n, np.int64)
    k, cur, cur_groups = 0, np.zeros(len(RESOURCES)), set()
    for b in range(blocks.n):
        gs = cur_groups | set(blocks.groups[b])
        if cur_groups and (not fits(cur + blocks.use[b], limits) or len(gs) > group_limit):
            k, cur, gs = k + 1, np.zeros(len(RESOURCES)), set(blocks.groups[b])
        core[b] = k
        cur = cur + blocks.use[b]
        cur_groups = gs
    return core


def index_order(per_neuron: np.ndarray, group_of: np.ndarray, limits: np.ndarray, group_limit: int) -> np.ndarray:
    """Core of every neuron when neurons fill cores in index order (per-neuron bounds, vectorised)."""
    n = len(group_of)
    csum = np.vstack([np.zeros((1, per_neuron.shape[1])), np.cumsum(per_neuron, axis=0)])
    group_starts = np.concatenate([[0], np.flatnonzero(np.diff(group_of)) + 1, [n]])
    core = np.zeros(n, np.int64)
    p, k = 0, 0
    while p < n:
        q = n
        for r in range(per_neuron.shape[1]):
            q = min(q, int(np.searchsorted(csum[:, r], csum[p, r] + limits[r] + 1e-9, side="right")) - 1)
        nxt = np.searchsorted(group_starts, p, side="right")  # group boundaries after p
        if nxt + group_limit - 1 < len(group_starts):
            q = min(q, int(group_starts[nxt + group_limit - 1]))
        q = max(q, p + 1)  # a single neuron always goes somewhere (the verifier reports it if it cannot fit)
        core[p:q] = k
        p, k = q, k + 1
    return core


def part_fits(blocks: Blocks, core: np.ndarray, limits: np.ndarray, group_limit: int) -> bool:
    n_cores = int(core.max()) + 1
    use = np.zeros((n_cores, len(RESOURCES)))
    np.add.at(use, core, blocks.use)
    if not np.all(use <= limits + 1e-9):
        return False
    pairs = {(int(c), g) for c, gs in zip(core, blocks.groups) for g in gs}
    counts = np.bincount([c for c, _ in pairs], minlength=n_cores)
    return bool(counts.max() <= group_limit)


def compact(core: np.ndarray) -> np.ndarray:
    """Renumber used cores 0.. in order of first use (empty parts dropped)."""
    _, first, inv = np.unique(core, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inv].astype(np.int64)


def metis(
    blocks: Blocks, limits: np.ndarray, group_limit: int, start_parts: int, seed: int = 0, max_parts: int | None = None
) -> np.ndarray | None:
    import pymetis

    n = blocks.n
    if n == 1:
        return np.zeros(1, np.int64)
    adj: dict[tuple[int, int], float] = {}
    for (a, b), w in zip(blocks.edges, blocks.weight):
        key = (min(a, b), max(a, b))
        adj[key] = adj.get(key, 0.0) + w
    nbrs: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    top = max(adj.values(), default=1.0) or 1.0
    for (a, b), w in sorted(adj.items()):
        # METIS balances badly with large edge weights (measured: 4 of 30 parts used at x1000): scale to 1..100
        iw = max(1, int(round(w / top * 100)))
        nbrs[a].append((b, iw))
        nbrs[b].append((a, iw))
    xadj, adjncy, ew = [0], [], []
    for lst in nbrs:
        for b, w in lst:
            adjncy.append(b)
            ew.append(w)
        xadj.append(len(adjncy))
    vw = [max(1, int(round(1000 * float(np.max(u / limits))))) for u in blocks.use]
    opts = pymetis.Options()
    opts.seed = seed
    for parts in range(max(2, start_parts), (max_parts or 2 * start_parts + 2) + 1):
        _, membership = pymetis.part_graph(
            parts, adjacency=pymetis.CSRAdjacency(xadj, adjncy), vweights=vw, eweights=ew or None, options=opts
        )
        core = compact(np.asarray(membership, np.int64))
        if part_fits(blocks, core, limits, group_limit):
            return core
    return None


@dataclass
class SolveInfo:
    status: str
    objective: float  # rate-weighted block cut of the solution (messages per step)
    bound: float  # proven lower bound on that cut
    gap: float  # (objective - bound) / objective, 0 when proven optimal
    seconds: float
    cores: int


def router_distances(n_routers: int, router_dist: np.ndarray | None) -> np.ndarray:
    """Hop distance between logical routers 0..n-1 (logical core k on router k // cores_per_router); without
    a geometry, every other router counts one hop."""
    if router_dist is not None and len(router_dist) >= n_routers:
        return np.asarray(router_dist, np.float64)[:n_routers, :n_routers]
    return 1.0 - np.eye(n_routers)


def cut_weight(
    blocks: Blocks, core: np.ndarray, cores_per_router: int = 4, router_dist: np.ndarray | None = None
) -> float:
    """The CP-SAT objective of an assignment, in messages per step: per hyperedge and other destination core,
    one message plus the hop distance from the source's router to that core's router (the benchmark's
    hop-weighted traffic also counts hops per destination core)."""
    n_routers = int(core.max()) // cores_per_router + 1 if len(core) else 1
    dist = router_distances(n_routers, router_dist)
    total = 0.0
    for src, dsts, w in blocks.hyper:
        cores = set(core[dsts].tolist())
        cores.discard(int(core[src]))
        rs = int(core[src]) // cores_per_router
        total += w * sum(1.0 + dist[rs, c // cores_per_router] for c in cores)
    return total


def improve_by_moves(
    blocks: Blocks,
    core: np.ndarray,
    limits: np.ndarray,
    group_limit: int,
    n_cores: int,
    cores_per_router: int = 4,
    router_dist: np.ndarray | None = None,
    max_passes: int = 20,
) -> np.ndarray:
    """Local search on `cut_weight`: move one block at a time to the core that lowers it most (keeping every
    capacity), blocks in order, until a pass finds nothing. Deterministic; a better hint for CP-SAT, whose
    LNS otherwise spends its budget far from good packings (measured: docs/mapping.md)."""
    core = core.copy()
    use = np.zeros((n_cores, len(RESOURCES)))
    np.add.at(use, core, blocks.use)
    cur = cut_weight(blocks, core, cores_per_router, router_dist)
    for _ in range(max_passes):
        improved = False
        for b in range(blocks.n):
            old, best, best_k = int(core[b]), cur, -1
            for k in range(n_cores):
                if k == old or not fits(use[k] + blocks.use[b], limits):
                    continue
                core[b] = k
                if part_fits(blocks, core, limits, group_limit):
                    c = cut_weight(blocks, core, cores_per_router, router_dist)
                    if c < best - 1e-9:
                        best, best_k = c, k
                core[b] = old
            if best_k >= 0:
                use[old] -= blocks.use[b]
                use[best_k] += blocks.use[b]
                core[b], cur, improved = best_k, best, True
        if not improved:
            break
    return core


def _solve(solver, model) -> int:
    """solver.Solve(model) in a worker thread (CP-SAT releases the GIL), so that a Ctrl-C or SIGTERM reaches
    the main thread at once: the search is stopped, and the interrupt raised, without waiting for the time limit.
    It waits on an Event, not Thread.join: an interrupted join(timeout) marks the thread stopped while it still
    runs (CPython 3.10), and a solver still running at exit aborts the process."""
    status, done = [], threading.Event()

    def work():
        try:
            status.append(solver.Solve(model))
        except BaseException as e:  # re-raised in the calling thread
            status.append(e)
        finally:
            done.set()

    threading.Thread(target=work, name="cp-sat", daemon=True).start()
    try:
        while not done.wait(0.05):
            pass
    except BaseException:
        solver.StopSearch()
        done.wait()
        raise
    if isinstance(status[0], BaseException):
        raise status[0]
    return status[0]


def cpsat(
    blocks: Blocks,
    limits: np.ndarray,
    group_limit: int,
    n_cores: int,
    hint: np.ndarray | None,
    time_limit: float,
    seed: int = 0,
    cores_per_router: int = 4,
    router_dist: np.ndarray | None = None,
    router_offset: int = 0,
    external: tuple[list, list] = ([], []),
    workers: int = 4,
) -> tuple[np.ndarray | None, SolveInfo]:
    """Minimise the rate-weighted cut over `n_cores` cores under every capacity.

    For a window of a larger mapping: `router_offset` is the first router of the window in `router_dist`
    (distances over all routers of the chip), and `external` = (outgoing, incoming) traffic with blocks
    fixed outside the window: outgoing (block, [their routers], messages per step), incoming (source's
    router, [blocks], messages per step)."""
    from ortools.sat.python import cp_model

    # The helpers add variables and constraints in a fixed order: CP-SAT's answer depends on it.
    n, K = blocks.n, n_cores
    m = cp_model.CpModel()
    x = [[m.NewBoolVar(f"x{b}_{k}") for k in range(K)] for b in range(n)]
    for b in range(n):
        m.AddExactlyOne(x[b])
    _add_capacities(m, x, blocks, limits, K)
    _add_group_limit(m, x, blocks, group_limit, K)
    # logical cores 4r..4r+3 share router r, routers at distances `dist`
    R = (K + cores_per_router - 1) // cores_per_router
    dist = router_distances(R, router_dist)
    xr = [
        [sum(x[b][k] for k in range(r * cores_per_router, min(K, (r + 1) * cores_per_router))) for r in range(R)]
        for b in range(n)
    ]
    terms = _cut_terms(m, x, xr, blocks, dist, K, cores_per_router)
    outgoing, incoming = external
    if outgoing or incoming:
        terms += _external_terms(
            m, x, xr, outgoing, incoming, np.asarray(router_dist, np.float64), router_offset + np.arange(R), K
        )
    m.Minimize(sum(terms) if terms else 0)
    # no symmetry breaking: with router geometry in the objective, cores are not interchangeable
    if hint is not None:
        for b in range(n):
            for k in range(K):
                m.AddHint(x[b][k], int(hint[b] == k))
    solver = _solver(cp_model, workers, seed, time_limit)
    status = _solve(solver, m)
    name = solver.StatusName(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, SolveInfo(name, math.inf, 0.0, math.inf, solver.WallTime(), 0)
    core = np.array([next(k for k in range(K) if solver.Value(x[b][k])) for b in range(n)], np.int64)
    obj = solver.ObjectiveValue() / RATE_SCALE / HOP_SCALE
    bound = solver.BestObjectiveBound() / RATE_SCALE / HOP_SCALE
    gap = 0.0 if obj <= 0 else max(0.0, (obj - bound) / obj)
    core = compact(core)
    return core, SolveInfo(name, obj, bound, gap, solver.WallTime(), int(core.max()) + 1)


def _add_capacities(m, x, blocks: Blocks, limits: np.ndarray, K: int) -> None:
    """Each core's usage of each resource within its capacity."""
    n = blocks.n
    scale = np.where(limits > 0, limits, 1)
    for r in range(len(RESOURCES)):
        # integer coefficients: usage in units of 1e-6 of the capacity, rounded up (never undercounts)
        coef = np.ceil(blocks.use[:, r] / scale[r] * 1e6).astype(np.int64)
        if coef.sum() <= 1e6:
            continue  # all blocks together fit one core in this resource
        for k in range(K):
            m.Add(sum(int(coef[b]) * x[b][k] for b in range(n) if coef[b]) <= 1_000_000)


def _add_group_limit(m, x, blocks: Blocks, group_limit: int, K: int) -> None:
    """At most `group_limit` neuron groups present on each core (only when the network has more groups)."""
    n_groups = 1 + max((g for gs in blocks.groups for g in gs), default=0)
    members: list[list[int]] = [[] for _ in range(n_groups)]
    for b, gs in enumerate(blocks.groups):
        for g in gs:
            members[g].append(b)
    if len([g for g in members if g]) <= group_limit:
        return
    for k in range(K):
        present = []
        for g, bs in enumerate(members):
            if not bs:
                continue
            y = m.NewBoolVar(f"g{g}_{k}")
            for b in bs:
                m.AddImplication(x[b][k], y)
            present.append(y)
        m.Add(sum(present) <= group_limit)


def _cut_terms(m, x, xr, blocks: Blocks, dist: np.ndarray, K: int, cores_per_router: int) -> list:
    """The objective within the window: for each hyperedge h (a source block and the blocks hearing the same
    senders) and core k, z[h,k] = 1 when some destination of h is on core k and the source is not: one message
    per such core, plus, for each such core, dist[source's router, core's router] (linearised per source
    router), as the hop-weighted traffic counts."""
    R = (K + cores_per_router - 1) // cores_per_router
    terms = []
    for h, (src, dsts, w) in enumerate(blocks.hyper):
        wi = max(1, int(round(w * RATE_SCALE)))
        for k in range(K):
            z = m.NewBoolVar(f"z{h}_{k}")
            for d in dsts:
                m.Add(z >= x[d][k] - x[src][k])
            terms.append(HOP_SCALE * wi * z)
            if R > 1:  # plus the hops from the source's router to core k's router
                rk = k // cores_per_router
                top = int(round(dist[:, rk].max() * HOP_SCALE))
                if top:
                    cost = m.NewIntVar(0, top, f"kc{h}_{k}")
                    for rs in range(R):
                        drs = int(round(dist[rs, rk] * HOP_SCALE))
                        if drs:
                            m.Add(cost >= drs * (z + xr[src][rs] - 1))
                    terms.append(wi * cost)
    return terms


def _external_terms(m, x, xr, outgoing: list, incoming: list, full: np.ndarray, glob: np.ndarray, K: int) -> list:
    """The objective's traffic with blocks fixed outside the window: `full` router distances over the chip,
    `glob` the chip router of each of the window's routers."""
    R = len(glob)
    terms = []
    for b, routers, w in outgoing:  # hops from b's router to fixed destination routers
        wi = max(1, int(round(w * RATE_SCALE)))
        for r in range(R):
            c = int(round(sum(full[glob[r], q] for q in routers) * HOP_SCALE))
            if c:
                terms.append(wi * c * xr[b][r])
    for h, (src_router, dsts, w) in enumerate(incoming):  # one message per core reached, plus hops
        wi = max(1, int(round(w * RATE_SCALE)))
        for k in range(K):
            z = m.NewBoolVar(f"ez{h}_{k}")
            for d in dsts:
                m.AddImplication(x[d][k], z)
            terms.append(HOP_SCALE * wi * z)
        for r in range(R):
            c = int(round(full[src_router, glob[r]] * HOP_SCALE))
            if c:
                zr = m.NewBoolVar(f"ezr{h}_{r}")
                for d in dsts:
                    m.Add(zr >= xr[d][r])
                terms.append(wi * c * zr)
    return terms


def _solver(cp_model, workers: int, seed: int, time_limit: float):
    """A CP-SAT solver set up for reproducible answers under a time budget."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = int(workers)
    solver.parameters.interleave_search = workers > 1  # LNS workers, interleaved deterministically
    solver.parameters.use_lns_only = False
    solver.parameters.random_seed = int(seed)
    # CP-SAT's own SIGINT handler stops the search and then leaves SIGINT at the default action (a later
    # Ctrl-C kills the process, leaving temporary files): keep the caller's handler (_solve stops the search)
    solver.parameters.catch_sigint_signal = False
    # deterministic time (not wall clock) so the same input gives the same answer on any machine load;
    # one deterministic unit is roughly one second on a typical core
    # about 3-4 wall seconds per deterministic unit on the loaded, shared 2-core dev machine (4 workers)
    solver.parameters.max_deterministic_time = float(time_limit) / 3
    # a wall-clock safety net only: when it binds, results depend on machine load (seen with 1.5 x limit)
    solver.parameters.max_time_in_seconds = max(30.0, float(time_limit) * 3)
    return solver
