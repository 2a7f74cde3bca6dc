"""CSV header checks shared by the dataset readers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ran.errors import UserError


def column_index(header: Sequence[str], required: Sequence[str], path: Path) -> dict[str, int]:
    """Position of each required column in a CSV header line; a missing one is an error naming the file."""
    stripped = [name.strip() for name in header]
    missing = [name for name in required if name not in stripped]
    if missing:
        raise UserError(
            f"{path} line 1: missing column(s) {', '.join(map(repr, missing))}; expected columns "
            f"{', '.join(required)} (found {', '.join(stripped)})"
        )
    return {name: stripped.index(name) for name in required}
