"""Markdown table cells that cannot break their table or inject HTML (names and labels come from users)."""

from __future__ import annotations

import html
from typing import Any


def md_escape(value: Any) -> Any:
    """A string cell made inert in GitHub-flavoured Markdown: `&`, `<`, `>` HTML-escaped (so `<script>` is text),
    `|` as `\\|` (a bare one would shift every later cell under the wrong header), newlines as spaces; other values
    are returned unchanged (numbers keep their formatting)."""
    if not isinstance(value, str):
        return value
    return html.escape(value, quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(df: Any, index: bool = True) -> str:
    """`df.to_markdown` with every string cell, column header and index label passed through `md_escape`."""
    out = df.map(md_escape)
    out.columns = [md_escape(str(c)) for c in out.columns]
    out.index = out.index.map(md_escape)
    out.index.name = md_escape(df.index.name)
    return out.to_markdown(index=index)
