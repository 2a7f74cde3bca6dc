"""The one table renderer of the evaluation reports: aligned plain text for the terminal, or Markdown."""

from __future__ import annotations

import re
from collections.abc import Sequence


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """``header`` and ``rows`` (strings) as a column-aligned text table, or as a Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]
    )


def markdown_code(text: str) -> str:
    """``text`` as a Markdown code span, so a name (a path, a repo id) shows as typed: ``*``, ``|``, ``<`` and
    ``_`` lose their meaning, a backtick inside gets a longer fence, line breaks become spaces."""
    text = " ".join(str(text).splitlines())
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


__all__ = ["markdown_code", "render_table"]
