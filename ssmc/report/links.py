"""Load on every router-to-router link, and on every chip-to-chip step, under dimension-order routing.

Loihi 2's mesh routes messages dimension by dimension (XY; LOIHI2_FACTS.md
#19): along the router row to the destination's column, then along the
column. Routing each core-to-core flow of the report's traffic matrix that
way gives the messages per step crossing each directed link: where the
mapping congests the mesh, which the hop-weighted total hides. A flow between
chips is counted on the chip-mesh steps it takes (XY over the board's chip
mesh); its on-chip legs to and from the chip's edge are not counted, because
where the chip-to-chip links leave a chip is not public. A model of routing,
not a simulation of Intel's routers.
"""

from __future__ import annotations

from collections import defaultdict


def xy_path(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The (row, col) -> (row, col) steps from a to b: along the row to b's column first, then the column."""
    steps, (r, c) = [], a
    while c != b[1]:
        nxt = (r, c + (1 if b[1] > c else -1))
        steps.append(((r, c), nxt))
        r, c = nxt
    while r != b[0]:
        nxt = (r + (1 if b[0] > r else -1), c)
        steps.append(((r, c), nxt))
        r, c = nxt
    return steps


def link_loads(cores: list[dict], matrix, target) -> dict:
    """Messages per step on each directed link. `cores`: the report's cores (chip, core, router); `matrix[i][j]`:
    messages per step from core i to core j (one per sender and destination core)."""
    on_chip: dict = defaultdict(float)
    between: dict = defaultdict(float)
    for i, a in enumerate(cores):
        for j, b in enumerate(cores):
            w = float(matrix[i][j])
            if i == j or w <= 0:
                continue
            if a["chip"] == b["chip"]:
                for step in xy_path(tuple(a["router"]), tuple(b["router"])):
                    on_chip[(a["chip"], step)] += w
            else:
                for step in xy_path(target.chip_xy(a["chip"]), target.chip_xy(b["chip"])):
                    between[step] += w
    links = [
        {"chip": chip, "from": list(s), "to": list(d), "load": round(w, 3)} for (chip, (s, d)), w in on_chip.items()
    ]
    chip_links = [{"from": list(s), "to": list(d), "load": round(w, 3)} for (s, d), w in between.items()]
    by_load = lambda x: (-x["load"], x.get("chip", 0), x["from"], x["to"])  # noqa: E731
    return {
        "model": "dimension-order (XY) routing of the core-to-core traffic; chip-to-chip flows counted on "
        "chip-mesh steps only",
        "on_chip": sorted(links, key=by_load),
        "between_chips": sorted(chip_links, key=by_load),
    }
