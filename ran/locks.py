"""One writer per output folder: a lock file naming the process that writes, so that two commands never
mix their files in one folder (two ``ran train`` runs into one OUT, two ``ran data`` builds of one OUT).

The lock is a small JSON file (pid, host, command, start time, a random token) created atomically: a
complete temporary file is hard-linked to the lock's name, which fails when the lock exists. A second writer
is refused with one line naming the first. A lock whose process is gone (``kill -9``, a crashed machine
restarted) is taken over; one from another machine is never, as its process cannot be checked from here.
The lock goes away when the command ends, by success, error or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from ran.errors import UserError, one_line
from ran.files import check_not_a_broken_link, faults_named
from ran.leftovers import cut_name, process_alive, remove_leftovers, temp_name
from ran.reading import read_small_json

_held: dict[Path, int] = {}  # locks this process holds -> nesting depth


def lock_path(out: str | Path, *, inside: bool) -> Path:
    """Where the lock of ``out`` lives: inside a folder that commands write into, beside one that is
    replaced whole (so the lock outlives the swap)."""
    out = Path(os.path.abspath(Path(out).expanduser()))  # '..' resolved, so the lock sits beside OUT
    if not out.name:
        raise UserError(f"{out}: not a folder to write into")
    return out / ".ran.lock" if inside else out.with_name(f".{cut_name(out.name)}.ran.lock")


def _make_folders(folder: Path) -> list[Path]:
    """``folder`` and its missing parents, created; returns the ones this call made, outermost first."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()][::-1]
    for path in missing:
        check_not_a_broken_link(path)
    blocking = next((path for path in (folder, *folder.parents) if path.exists() and not path.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(f"{blocking}: a file, not a folder; expected a folder to write into")
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty (the output, or someone else's files): kept
            return


def _create_exclusive(lock: Path, text: str) -> None:
    """Create ``lock`` with ``text`` atomically (FileExistsError when it exists): a complete temporary
    file is hard-linked to it, so nobody reads a half-written lock; without hard links, O_EXCL."""
    tmp = temp_name(lock, "tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, lock)
            return
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links
            pass
    finally:
        tmp.unlink(missing_ok=True)
    descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)


def _live_owner(owner: Any) -> bool:
    """A lock's owner counts as running unless it ran on this machine and its process is gone (a lock
    from another machine is never taken over)."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return False
    return owner.get("host") != socket.gethostname() or process_alive(owner["pid"])


def _token(owner: Any) -> Any:
    return owner.get("token") if isinstance(owner, dict) else None


def _take_over(lock: Path, stale: Any) -> None:
    """Remove a lock whose owner is gone; one that a new owner made meanwhile is put back."""
    aside = temp_name(lock, "old")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:
        return
    moved = read_small_json(aside)
    if isinstance(moved, dict) and moved.get("token") != _token(stale):
        with suppress(OSError):
            os.link(aside, lock)
    aside.unlink(missing_ok=True)


def _busy_error(out: Path, lock: Path, owner: dict) -> FileExistsError:
    def field(key: str) -> str:  # a lock file is data: its values are cut, never printed whole
        return one_line(owner.get(key), 100)

    host = "" if owner.get("host") == socket.gethostname() else f" on {field('host')}"
    return FileExistsError(
        f"{out} is being written by pid {field('pid')}{host} ({field('command')}, started "
        f"{field('started')}); wait for it or choose another folder (if that process is gone, remove "
        f"{lock})"
    )


def _acquire(out: Path, lock: Path, command: str) -> str:
    token = secrets.token_hex(8)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "token": token}
    owner["started"] = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    remove_leftovers(lock)
    for _ in range(5):
        try:
            _create_exclusive(lock, json.dumps(owner) + "\n")
            return token
        except FileExistsError:
            holder = read_small_json(lock)
        if holder is None and lock.exists():
            raise FileExistsError(f"{out}: its lock {lock} is unreadable; remove it if no ran command runs")
        if _live_owner(holder):
            raise _busy_error(out, lock, holder)
        if holder is not None:
            _take_over(lock, holder)
    raise FileExistsError(f"{out}: could not take its lock {lock}; try again")


def _release(lock: Path, token: str) -> None:
    owner = read_small_json(lock)
    if _token(owner) == token:
        lock.unlink(missing_ok=True)


@contextmanager
def output_lock(out: str | Path, command: str, *, inside: bool) -> Iterator[Path]:
    """Hold the lock of the output folder ``out`` for the block: one writer at a time. A second writer
    is refused with one line naming the first (pid, command, start); a lock whose process is gone
    (killed) is taken over. Folders made for the lock and left empty, and the lock itself, are removed
    when the block ends, however it ends; the same process may nest locks of one folder."""
    lock = lock_path(out, inside=inside)
    if lock in _held:
        _held[lock] += 1
        try:
            yield lock
        finally:
            _held[lock] -= 1
        return
    target = Path(out).expanduser().absolute()
    with faults_named(target):  # a read-only or full disk names the output, not the lock's temporary file
        created = _make_folders(lock.parent)
        try:
            token = _acquire(target, lock, command)
        except BaseException:
            _remove_if_empty(created)
            raise
    _held[lock] = 1
    try:
        yield lock
    finally:
        del _held[lock]
        _release(lock, token)
        _remove_if_empty(created)


def check_no_writer_inside(folder: str | Path, limit: int = 100_000) -> None:
    """Refuse to replace or delete ``folder`` while a command of another process writes inside it (its
    lock is there or in a subfolder: a ``ran train`` resumed into a demo's folder, an evaluation in a
    folder that robustness would replace). Looks at up to ``limit`` entries."""
    seen = 0
    for root, folders, files in os.walk(folder):
        seen += len(folders) + len(files)
        for name in files:
            lock = Path(root) / name
            if not name.endswith(".ran.lock") or lock in _held:
                continue
            owner = read_small_json(lock)
            if _live_owner(owner):
                written = lock.parent if name == ".ran.lock" else lock.with_name(name[1 : -len(".ran.lock")])
                raise _busy_error(written, lock, owner)
        if seen >= limit:
            return


__all__ = ["check_no_writer_inside", "lock_path", "output_lock"]
