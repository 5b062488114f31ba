"""Self-contained HTML pages with inline PNG figures (`ssmc trace --html`, `ssmc profile`): one file, no
images beside it, every interpolated string escaped."""

from __future__ import annotations

import base64
import html
import io


def png_base64(fig, dpi: int) -> str:
    """A matplotlib figure as base64 PNG text, without the library version in its metadata (same bytes
    across runs)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def inline_page(heading: str, text: str, figures: list[tuple[str, str]]) -> str:
    """`heading` as title, `text` preformatted, then each (caption, base64 PNG) as a captioned image."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(heading)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}pre{font-size:12px}</style>",
        f"</head><body><h1>{html.escape(heading)}</h1>",
        f"<pre>{html.escape(text)}</pre>",
    ]
    for caption, png in figures:
        parts.append(
            f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>"
        )
    parts.append("</body></html>\n")
    return "".join(parts)
