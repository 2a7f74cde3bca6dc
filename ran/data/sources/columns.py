"""CSV reading shared by the dataset readers: rows with the file's faults named, and header checks."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

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


def csv_rows(handle: IO[str], path: Path) -> Iterator[list[str]]:
    """The rows of a CSV file opened as text; bytes that are not UTF-8, a NUL byte or a field over the csv
    module's limit are one line naming the file and the line (the csv module's own errors name neither).
    Open the file with ``encoding="utf-8-sig"``: a spreadsheet's byte-order mark is no part of a name."""
    reader = csv.reader(handle)
    try:
        yield from reader
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not UTF-8 text near line {reader.line_num + 1} ({err.reason}); save it as UTF-8"
        ) from None
    except csv.Error as err:
        raise UserError(f"{path} line {reader.line_num}: not readable as CSV ({err})") from None
