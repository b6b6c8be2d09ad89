"""A self-contained HTML page: every table with its picture, images inlined as base64 (no side files)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
thead th{background:#f0f0f0} tbody th{text-align:left;font-weight:normal}
td.best{background:#e8f5e9} caption{caption-side:bottom;font-size:12px;color:#555;text-align:left}
img{max-width:100%;border:1px solid #eee} section{margin-bottom:2.5em} pre{background:#f7f7f7;padding:.5em}
ul.notes{color:#333} p.warning{background:#fff3e0;border-left:4px solid #e65100;padding:.4em .8em}
"""


@dataclass
class Section:
    title: str
    html_table: str = ""
    images: list[Path] = field(default_factory=list)
    text: str = ""


def inline_png(path: Path) -> str:
    """An ``<img>`` whose source is the PNG itself as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def render_page(title: str, intro: str, sections: list[Section], notes: list[str] | None = None,
                warnings: list[str] | None = None) -> str:
    """The whole page as one string; it references no file or network address.

    ``notes`` (e.g. which split selected configurations, the headline) are listed under the intro;
    ``warnings`` stand out below them.
    """
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts += [f'<p class="warning"><b>Warning:</b> {html.escape(w)}</p>' for w in warnings or []]
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<pre>{html.escape(s.text)}</pre>")
        parts.append(s.html_table)
        parts += [inline_png(p) for p in s.images]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
