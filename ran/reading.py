"""Reading files that may not be what their names claim: a marker, a lock or a report that is a FIFO, a
huge file or not JSON says nothing, and never holds the reader."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

SMALL_JSON_BYTES = 1 << 20  # markers, locks and the files writers recognise are far smaller


def read_small_json(path: str | Path, limit: int = SMALL_JSON_BYTES) -> Any:
    """The JSON in ``path``, or None when it is missing, no regular file (a FIFO would hold the reader),
    larger than ``limit`` bytes or not JSON: for files that only say something about a folder, never read
    whole when they are not what they claim."""
    try:
        data = read_regular(path, limit + 1)
        return json.loads(data) if data is not None and len(data) <= limit else None
    except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return None


def read_regular(path: str | Path, size: int = -1) -> bytes | None:
    """Up to ``size`` bytes of ``path`` (all by default), or None when it is no regular file: opened
    without waiting, so a FIFO named like a file never holds the reader. OSError when it is missing."""
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
        return file.read(size) if stat.S_ISREG(os.fstat(file.fileno()).st_mode) else None


__all__ = ["SMALL_JSON_BYTES", "read_regular", "read_small_json"]
