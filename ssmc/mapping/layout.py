"""Place logical cores on chip meshes (and chips on a board), minimising hop-weighted traffic.

Hierarchical and deterministic:

1. chips: logical cores (numbered in layer order by the partitioner) are cut
   into consecutive, balanced runs, one run per chip, then improved by
   swapping cores between chips when that lowers inter-chip traffic;
2. board: chips go to board positions by pairwise swaps that lower
   chip-traffic x link distance;
3. on each chip: cores are laid along a snake path over the router mesh in
   the order of a traffic-greedy walk (heaviest neighbour next), then
   improved by pairwise swaps (including with empty slots) that lower
   traffic x hop distance. Swap gains are computed a row at a time (numpy).

Costs come from `Target.hops`: router Manhattan distance on a chip, and
`chip_link_cost` per chip-to-chip step (a model: docs/mapping.md).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ssmc.errors import FitError
from ssmc.targets import Target

# The swap searches stop on counted work, not on the clock, so a placement is the same on a loaded and on
# an idle machine (a wall-clock stop gave different places for one 64x16x3 network under load). One unit
# is one multiply-add of a swap-gain row; a few hundred million of them take about a second with numpy on
# the 2-core dev machine, so `time_limit` seconds buy about that much work. The wall clock (3 x, at least
# 30 s, as for CP-SAT in ssmc.mapping.solvers) only stops a runaway search.
WORK_PER_SECOND = 3e8
ITEM_OVERHEAD = 20_000  # numpy's per-call cost of one item's gain row, in units


class Budget:
    """Deterministic work units left for the searches, and the wall-clock safety net."""

    def __init__(self, time_limit: float):
        self.units = float(time_limit) * WORK_PER_SECOND
        self.deadline = time.perf_counter() + max(30.0, 3.0 * float(time_limit))

    def spend(self, units: float) -> bool:
        """Charge `units`; False once the budget (or the safety net) is used up."""
        self.units -= units
        return self.units > 0 and time.perf_counter() <= self.deadline


def snake_slots(target: Target) -> list[int]:
    """Core slots of one chip along a boustrophedon path over its routers."""
    rows, cols = target.router_mesh
    order = []
    for r in range(rows):
        cs = range(cols) if r % 2 == 0 else range(cols - 1, -1, -1)
        for c in cs:
            router = r * cols + c
            for j in range(target.cores_per_router):
                k = router * target.cores_per_router + j
                if k < target.cores_per_chip:
                    order.append(k)
    return order


def chip_hops(target: Target) -> np.ndarray:
    k = np.arange(target.cores_per_chip)
    rx, ry = np.divmod(k // target.cores_per_router, target.router_mesh[1])
    return target.hop_cost * (np.abs(rx[:, None] - rx[None, :]) + np.abs(ry[:, None] - ry[None, :]))


def greedy_walk(t_sym: np.ndarray) -> list[int]:
    """Visit order: start at the busiest core, then always the unvisited core most tied to the visited ones."""
    n = len(t_sym)
    if n == 0:
        return []
    visited = np.zeros(n, bool)
    tie = np.zeros(n)
    order = [int(np.argmax(t_sym.sum(axis=1)))]
    while True:
        v = order[-1]
        visited[v] = True
        tie += t_sym[v] * 2 + 1e-9 * t_sym[v]  # recent and total ties
        tie *= 0.5
        if visited.all():
            return order
        cand = np.where(visited, -np.inf, tie)
        order.append(int(np.argmax(cand)))


def swap_improve(
    t_sym: np.ndarray, dist: np.ndarray, pos: np.ndarray, budget: Budget, max_passes: int = 50
) -> np.ndarray:
    """Pairwise-swap local search for min 1/2 sum t[a,b] dist[pos[a], pos[b]] (`pos`: item -> slot; items
    without traffic stand for empty slots). Deterministic: best swap for each item in order, until a pass
    finds nothing. The swap gain for all partners b of item a at once is
    sum_c (t[a,c] - t[b,c]) (D[b,c] - D[a,c]) over c not in {a, b}, with D[i,c] = dist[pos[i], pos[c]]."""
    pos = pos.copy()
    n = len(pos)
    D = dist[pos][:, pos]
    for _ in range(max_passes):
        improved = False
        rowdot = (t_sym * D).sum(axis=1)
        for a in range(n):
            ta = t_sym[a]
            if not ta.any():
                continue
            if not budget.spend(4 * n * n + ITEM_OVERHEAD):
                return pos
            delta = D @ ta - ta @ D[a] - rowdot + t_sym @ D[a] + 2 * ta * D[a]
            delta[a] = 0.0
            b = int(np.argmin(delta))
            if delta[b] < -1e-9:
                pos[a], pos[b] = pos[b], pos[a]
                D[[a, b], :] = D[[b, a], :]
                D[:, [a, b]] = D[:, [b, a]]
                rowdot = (t_sym * D).sum(axis=1)
                improved = True
        if not improved:
            break
    return pos


def anneal(
    t_sym: np.ndarray, dist: np.ndarray, pos: np.ndarray, budget: Budget, iters: int = 30000, seed: int = 0
) -> np.ndarray:
    """Simulated annealing over pairwise swaps (a busy item with any item, including empty slots); a seeded
    generator and a fixed iteration count, cut short only by the counted budget, make it deterministic."""
    rng = np.random.default_rng(seed)
    pos = pos.copy()
    n = len(pos)
    busy = np.flatnonzero(t_sym.any(axis=1))
    if len(busy) < 2:
        return pos
    D = dist[pos][:, pos]
    cost = 0.5 * float((t_sym * D).sum())
    best, best_cost = pos.copy(), cost
    scale = float(t_sym[t_sym > 0].mean()) * float(dist[dist > 0].min() if (dist > 0).any() else 1.0)
    a_all = busy[rng.integers(0, len(busy), iters)]
    b_all = rng.integers(0, n, iters)
    u_all = rng.random(iters)
    for i in range(iters):
        if i % 1000 == 0 and not budget.spend(1000 * (2 * n + ITEM_OVERHEAD // 10)):
            break
        a, b = int(a_all[i]), int(b_all[i])
        if a == b:
            continue
        delta = float((t_sym[a] - t_sym[b]) @ (D[b] - D[a]) + 2 * t_sym[a, b] * D[a, b])
        temp = scale * 2.0 * (1.0 - i / iters) + 1e-12
        if delta <= 0 or u_all[i] < np.exp(-delta / temp):
            pos[a], pos[b] = pos[b], pos[a]
            D[[a, b], :] = D[[b, a], :]
            D[:, [a, b]] = D[:, [b, a]]
            cost += delta
            if cost < best_cost - 1e-9:
                best, best_cost = pos.copy(), cost
    return best


def total_cost(t_sym: np.ndarray, dist: np.ndarray, pos: np.ndarray) -> float:
    return 0.5 * float((t_sym * dist[pos][:, pos]).sum())


def layout(traffic: np.ndarray, target: Target, time_limit: float = 10.0) -> np.ndarray:
    """Global slot (chip * cores_per_chip + core) for each logical core 0..K-1 of the traffic matrix."""
    budget = Budget(time_limit)
    K = len(traffic)
    cpc = target.cores_per_chip
    n_chips = max(1, math.ceil(K / cpc))
    if n_chips > target.chips:
        raise FitError(
            f"{K} cores need {n_chips} chips, the target has {target.chips}; give --chips {n_chips} or more",
            need=n_chips,
            have=target.chips,
            binding="chips",
            fixes=(f"--chips {n_chips}",),
        )
    t_sym = traffic + traffic.T
    np.fill_diagonal(t_sym, 0.0)
    chip_of = _chip_of_cores(t_sym, n_chips, cpc, budget)
    board_pos = _board_places(t_sym, chip_of, n_chips, target, budget)
    # 3. on each chip: greedy walk along the snake, then swaps
    hops = chip_hops(target)
    snake = np.array(snake_slots(target))
    slot = np.zeros(K, np.int64)
    for c in range(n_chips):
        members = np.flatnonzero(chip_of == c)
        local = _core_slots_on_chip(t_sym[np.ix_(members, members)], cpc, hops, snake, budget)
        slot[members] = int(board_pos[c]) * cpc + local
    return slot


def _chip_of_cores(t_sym: np.ndarray, n_chips: int, cpc: int, budget: Budget) -> np.ndarray:
    """Stage 1, the chip of each logical core: balanced consecutive runs, improved by swaps on the chip-cut."""
    K = len(t_sym)
    per = math.ceil(K / n_chips)
    chip_of = np.minimum(np.arange(K) // per, n_chips - 1)
    if n_chips == 1:
        return chip_of
    pad = n_chips * cpc - K  # dummies: empty core slots
    tp = np.zeros((K + pad, K + pad))
    tp[:K, :K] = t_sym
    chip_pos = np.concatenate([chip_of, np.repeat(np.arange(n_chips), cpc - np.bincount(chip_of, minlength=n_chips))])
    cut = (np.arange(n_chips)[:, None] != np.arange(n_chips)[None, :]).astype(float)
    slots = np.concatenate([np.flatnonzero(chip_pos == c) for c in range(n_chips)])
    # express "which chip" as slot positions so swap_improve can work on it
    pos = np.empty(K + pad, np.int64)
    pos[slots] = np.arange(K + pad)
    slot_chip = np.repeat(np.arange(n_chips), cpc)
    dist = cut[slot_chip][:, slot_chip]
    if K + pad <= 480:  # O(n^3) per pass: only for a few chips; larger boards keep the layer-order runs
        pos = swap_improve(tp, dist, pos, budget, max_passes=5)
    return slot_chip[pos[:K]]


def _board_places(t_sym: np.ndarray, chip_of: np.ndarray, n_chips: int, target: Target, budget: Budget) -> np.ndarray:
    """Stage 2, the board chip index of each chip of the mapping: swaps that lower chip traffic x link distance."""
    K = len(t_sym)
    ct = np.zeros((n_chips, n_chips))
    np.add.at(ct, (chip_of[:, None].repeat(K, 1), chip_of[None, :].repeat(K, 0)), t_sym)
    np.fill_diagonal(ct, 0.0)
    places = target.chip_mesh[0] * target.chip_mesh[1]
    bx, by = np.divmod(np.arange(places), target.chip_mesh[1])
    bdist = np.abs(bx[:, None] - bx[None, :]) + np.abs(by[:, None] - by[None, :])
    ctp = np.zeros((places, places))
    ctp[:n_chips, :n_chips] = ct
    board_pos = swap_improve(ctp, bdist.astype(float), np.arange(places), budget)
    # a board place beyond `target.chips` does not exist: only use places < chips (row-major)
    return _keep_valid(board_pos, n_chips, target.chips)


def _core_slots_on_chip(sub: np.ndarray, cpc: int, hops: np.ndarray, snake: np.ndarray, budget: Budget) -> np.ndarray:
    """Stage 3, the core slot on its chip of each of a chip's logical cores (`sub`: their traffic): the cheaper
    of two starts laid along the snake, each improved by swaps and annealing."""
    n = len(sub)
    order = greedy_walk(sub)
    tpad = np.zeros((cpc, cpc))
    tpad[:n, :n] = sub
    best = None
    # two starts: the partitioner's order (layer order) and the traffic walk, both along the snake
    for start in (list(range(n)), order):
        local = np.empty(n, np.int64)
        local[np.asarray(start, np.int64)] = snake[:n]
        taken = set(local.tolist())
        pos = np.concatenate([local, np.array([s for s in range(cpc) if s not in taken], np.int64)])
        pos = swap_improve(tpad, hops, pos, budget)
        pos = swap_improve(tpad, hops, anneal(tpad, hops, pos, budget), budget)
        cost = total_cost(tpad, hops, pos)
        if best is None or cost < best[0] - 1e-9:
            best = (cost, pos)
    return best[1][:n]


def _keep_valid(board_pos: np.ndarray, used: int, chips: int) -> np.ndarray:
    """Chip c of the mapping -> a board chip index < `chips`, keeping the swap search's order where valid."""
    out = board_pos[:used].copy()
    if np.all(out < chips):
        return out
    return np.arange(used)
