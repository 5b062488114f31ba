"""Installed packages' entry points in one of ssmc's plugin groups (`ssmc.passes`, `ssmc.op_handlers`)."""

from __future__ import annotations


def installed(group: str) -> list[tuple[object, str]]:
    """(entry point, name of the package declaring it) for every entry point of `group`, sorted by name, so
    plugins register in the same order on every machine."""
    from importlib.metadata import entry_points

    out = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        out.append((ep, dist.name if dist else "?"))
    return out
