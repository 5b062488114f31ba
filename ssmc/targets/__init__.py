"""Target descriptions: the hardware capacities the mapper plans with.

A target is a JSON data file (``ssmc/targets/loihi2.json`` ships) in which
every number carries its source and how sure it is (published, third-party,
derived or assumed). `load_target` reads one, picks a board (or a chip count)
and applies user overrides; the result, a plain `Target`, is what partition,
place, the verifier and the report read. Overridden values are marked
``"user"`` so a report never passes a user's number off as Intel's.

Geometry used for hop counts: a chip is a mesh of routers (``router_mesh``,
rows x cols) with ``cores_per_router`` cores each; core k of a chip sits at
router k // cores_per_router, routers numbered row by row. Chips sit on a
board mesh (``chip_mesh``). The hop distance between two cores is the router
Manhattan distance plus ``chip_link_cost`` times the chip Manhattan distance
(a model, not a routing simulation: docs/mapping.md).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources

from ssmc.errors import SsmcError, TargetError
from ssmc.data import read_small_file

FORMAT = "ssmc.target/1"
BUILTIN = ("loihi2",)
#: A target description file is a few KiB; anything over this is not one (and is not read whole).
TARGET_FILE_BYTES = 1 << 20
#: Per-core capacities the verifier and the mapper check, with their meaning.
CAPACITIES = {
    "neurons": "neurons (compartments) per core",
    "memory_bytes": "bytes of core memory (neuron state + synapses + routing)",
    "synapse_bytes": "bytes of synapse memory",
    "fan_in_axons": "distinct presynaptic neurons (input axons) per core",
    "fan_out_routes": "output routes (source neuron x destination core) per core",
    "groups": "neuron groups per core",
}
SURENESS = ("published", "third-party", "derived", "assumed", "user")


@dataclass(frozen=True)
class Target:
    """Resolved capacities and geometry (plain values; provenance kept beside them)."""

    name: str
    board: str
    chips: int
    chip_mesh: tuple[int, int]
    cores_per_chip: int
    router_mesh: tuple[int, int]
    cores_per_router: int
    neurons: int
    memory_bytes: int
    synapse_bytes: int
    fan_in_axons: int
    fan_out_routes: int
    groups: int
    hop_cost: float
    chip_link_cost: float
    provenance: dict = field(default_factory=dict, compare=False)  # field -> {"source", "sureness"}

    @property
    def total_cores(self) -> int:
        return self.chips * self.cores_per_chip

    def capacity(self, key: str) -> int:
        return int(getattr(self, key))

    def slot(self, k: int) -> tuple[int, int]:
        """Core index k (0 .. total_cores-1, chip-major) -> (chip, core)."""
        return divmod(int(k), self.cores_per_chip)

    def router_xy(self, core: int) -> tuple[int, int]:
        return divmod(int(core) // self.cores_per_router, self.router_mesh[1])

    def chip_xy(self, chip: int) -> tuple[int, int]:
        return divmod(int(chip), self.chip_mesh[1])

    def hops(self, a: tuple[int, int], b: tuple[int, int]) -> float:
        """Hop-weighted distance between (chip, core) a and b (see the module doc)."""
        (ra, ca), (rb, cb) = self.router_xy(a[1]), self.router_xy(b[1])
        (xa, ya), (xb, yb) = self.chip_xy(a[0]), self.chip_xy(b[0])
        return self.hop_cost * (abs(ra - rb) + abs(ca - cb)) + self.chip_link_cost * (abs(xa - xb) + abs(ya - yb))

    def values(self) -> dict:
        """The resolved values (no provenance): what the IR records for the verifier."""
        d = asdict(self)
        d.pop("provenance")
        d["chip_mesh"], d["router_mesh"] = list(self.chip_mesh), list(self.router_mesh)
        return d

    def to_json(self) -> str:
        """Canonical compact JSON of the values (deterministic; stored as a graph attribute)."""
        return json.dumps(self.values(), sort_keys=True, separators=(",", ":"))

    def describe(self) -> dict:
        """Values with their sources and sureness, for net.lava's extra/target.json and reports."""
        return {"format": FORMAT, "values": self.values(), "provenance": self.provenance}


def from_values(values: dict, provenance: dict | None = None) -> Target:
    """A Target from `values()` output (how the verifier reads the graph attribute back)."""
    try:
        v = dict(values)
        v["chip_mesh"], v["router_mesh"] = tuple(v["chip_mesh"]), tuple(v["router_mesh"])
        return Target(**v, provenance=dict(provenance or {}))
    except (TypeError, KeyError, ValueError) as e:
        raise TargetError(f"target values are incomplete or malformed ({e}); recompile the net") from None


def target_from_json(text: str) -> Target:
    try:
        return from_values(json.loads(text))
    except json.JSONDecodeError as e:
        raise TargetError(f"target attribute is not JSON ({e}); recompile the net") from None


def target_bytes(target: str | os.PathLike | None) -> tuple[bytes, str]:
    """The bytes of a target description (a built-in name, default loihi2, or a file) and the name a
    compile records for it: the built-in name or the file's base name (never its folder)."""
    if target is None or str(target) in BUILTIN:
        name = "loihi2" if target is None else str(target)
        return resources.files("ssmc.targets").joinpath(f"{name}.json").read_bytes(), name
    path = os.fspath(target)
    try:
        return read_small_file(path, TARGET_FILE_BYTES, "target description"), os.path.basename(path)
    except SsmcError as e:
        raise TargetError(
            f"cannot read target: {e}; give a JSON file like ssmc/targets/loihi2.json or one of {', '.join(BUILTIN)}"
        ) from None


@dataclass(frozen=True)
class TargetFile:
    """A target file's bytes as already read once (compile hashes them and builds from the same bytes:
    a file changed in between cannot give a net whose recorded sha256 is not what it was built for)."""

    data: bytes
    path: str


def _read_file(target: str | os.PathLike | TargetFile | None) -> tuple[dict, str]:
    if isinstance(target, TargetFile):
        data, path = target.data, target.path
    else:
        data, name = target_bytes(target)
        if target is None or str(target) in BUILTIN:
            return json.loads(data.decode("utf-8")), name
        path = os.fspath(target)
    try:
        return json.loads(data.decode("utf-8")), path
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise TargetError(f"target file {path} is not valid JSON: {type(e).__name__}: {e}") from None


def _grid(n: int) -> tuple[int, int]:
    """A near-square rows x cols arrangement of n chips (rows <= cols)."""
    rows = max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)
    return rows, n // rows


def load_target(
    target: str | os.PathLike | TargetFile | None = None,
    board: str | None = None,
    chips: int | None = None,
    overrides: dict | None = None,
) -> Target:
    """Read a target file (default: the shipped loihi2), choose a board, apply overrides.

    `chips` replaces the board's chip count (arranged as a near-square mesh);
    `overrides` maps any field (e.g. ``neurons``) to a value and marks it "user".
    """
    data, origin = _read_file(target)
    if data.get("format") != FORMAT:
        raise TargetError(f"target {origin}: 'format' must be {FORMAT!r}, got {data.get('format')!r}")
    flat, prov = {}, {}
    try:
        for section in ("chip", "core", "network"):
            for key, entry in data[section].items():
                flat[key] = entry["value"]
                prov[key] = {"source": entry.get("source", ""), "sureness": entry.get("sureness", "assumed")}
        boards = data["boards"]
        board = board or data.get("board") or next(iter(boards))
    except (KeyError, TypeError, AttributeError) as e:
        raise TargetError(f"target {origin} lacks {e} (see ssmc/targets/loihi2.json for the layout)") from None
    if board not in boards:
        raise TargetError(f"target {origin} has no board {board!r}; boards: {', '.join(sorted(boards))}")
    b = boards[board]
    flat["chips"], flat["chip_mesh"] = int(b["chips"]), tuple(b.get("chip_mesh", _grid(int(b["chips"]))))
    prov["chips"] = prov["chip_mesh"] = {"source": b.get("source", ""), "sureness": b.get("sureness", "assumed")}
    if chips is not None:
        if int(chips) < 1:
            raise TargetError(f"--chips {chips}: give at least 1 chip")
        flat["chips"], flat["chip_mesh"] = int(chips), _grid(int(chips))
        prov["chips"] = prov["chip_mesh"] = {"source": f"--chips {chips}", "sureness": "user"}
    names = {f.name for f in fields(Target)} - {"name", "board", "provenance"}
    for key, value in (overrides or {}).items():
        if key not in names:
            raise TargetError(f"unknown target field {key!r}; fields: {', '.join(sorted(names))}")
        flat[key] = value
        prov[key] = {"source": "user override", "sureness": "user"}
    missing = names - set(flat)
    if missing:
        raise TargetError(f"target {origin} lacks {', '.join(sorted(missing))}")
    try:
        t = from_values({"name": str(data.get("name", os.path.basename(origin))), "board": board, **flat}, prov)
        t = replace(
            t,
            **{k: int(getattr(t, k)) for k in CAPACITIES},
            chips=int(t.chips),
            cores_per_chip=int(t.cores_per_chip),
            cores_per_router=int(t.cores_per_router),
            hop_cost=float(t.hop_cost),
            chip_link_cost=float(t.chip_link_cost),
            chip_mesh=tuple(int(v) for v in t.chip_mesh),
            router_mesh=tuple(int(v) for v in t.router_mesh),
        )
    except (TypeError, ValueError) as e:
        raise TargetError(f"target {origin}: a value has the wrong type ({e})") from None
    for key in list(CAPACITIES) + ["chips", "cores_per_chip", "cores_per_router"]:
        if getattr(t, key) < 1:
            raise TargetError(f"target {origin}: {key} = {getattr(t, key)} must be at least 1")
    if t.chip_mesh[0] * t.chip_mesh[1] < t.chips:
        raise TargetError(f"target {origin}: chip_mesh {list(t.chip_mesh)} has fewer places than {t.chips} chips")
    if t.router_mesh[0] * t.router_mesh[1] * t.cores_per_router < t.cores_per_chip:
        raise TargetError(
            f"target {origin}: router_mesh {list(t.router_mesh)} x {t.cores_per_router} holds fewer "
            f"than {t.cores_per_chip} cores"
        )
    return t
