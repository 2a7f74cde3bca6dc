"""Temporary names beside an output, and the leftovers of writers that were killed.

A writer works under ``.NAME.PID.RANDOM.tmp`` (or ``.partial`` for a folder, ``.old`` for one set aside)
beside its output ``NAME``; ``kill -9`` leaves that behind, and the next write of the same output removes
it once process PID is gone.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path

LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?:tmp|partial|old)$", re.DOTALL)
# The output's name inside a temporary name, cut so that '.NAME.PID.RANDOM.partial' fits the 255 bytes
# file systems allow a name (an output named with 240 characters is valid; its temporary name was not).
TEMP_NAME_BYTES = 200


def cut_name(name: str) -> str:
    """``name`` as part of a longer one (a temporary name, a lock's): itself when it is at most
    :data:`TEMP_NAME_BYTES` long, else its start and a digest of the whole (two long names that begin
    alike still differ)."""
    raw = os.fsencode(name)
    if len(raw) <= TEMP_NAME_BYTES:
        return name
    return os.fsdecode(raw[: TEMP_NAME_BYTES - 9]) + "~" + hashlib.sha256(raw).hexdigest()[:8]


def temp_name(target: Path, kind: str) -> Path:
    """A fresh temporary name beside ``target`` for this process (``kind``: tmp, partial, old)."""
    return target.with_name(f".{cut_name(target.name)}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (this process always does)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_leftovers(target: str | Path) -> list[Path]:
    """Delete the temporary siblings of ``target`` left by writers that no longer run; returns them."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed = []
    for path in target.parent.iterdir():
        match = LEFTOVER.match(path.name)
        if not match or match["name"] != cut_name(target.name) or process_alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


__all__ = ["LEFTOVER", "TEMP_NAME_BYTES", "cut_name", "process_alive", "remove_leftovers", "temp_name"]
