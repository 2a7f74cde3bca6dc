"""Writing files and folders so that nobody ever sees half of one: write beside the target, then rename.

Every output of the package (model folders, dataset folders, results, pictures, CSVs, checkpoints) goes
through these helpers, so each is either the old version or the complete new one, never a mix. Temporary
names carry the writer's process id: a build killed with ``kill -9`` leaves its leftovers behind, and the
next write of the same target removes them once that process is gone. Outputs get the process umask's
permissions (usually 0644 / 0755), like any file the user writes. A write the file system refuses (disk
full, read-only, no permission) leaves nothing behind and is raised as an ``OSError`` naming the output
(:func:`fault_message` is its one line), also where the library that wrote (pyarrow, safetensors, PIL)
named no file.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(?:tmp|partial|old)$")
# Errors of the file system, not of the command: disk full, quota, file too big, read-only, no permission.
FAULT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)
_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno)\s*(\d+)", re.IGNORECASE)  # safetensors, pyarrow


def fault_errno(err: BaseException) -> int | None:
    """The errno of a file-system fault (:data:`FAULT_ERRNOS`), also when a library wrapped it in its own
    error and only its message says it; None for any other error."""
    code = err.errno if isinstance(err, OSError) else None
    if code is None:
        match = _ERRNO_IN_TEXT.search(str(err)[:2000])
        code = int(match[1]) if match else None
    return code if code in FAULT_ERRNOS else None


def fault_message(err: BaseException) -> str | None:
    """``PATH: no space left on device`` (the file, then the reason) for a file-system fault, else None."""
    code = fault_errno(err)
    if code is None:
        return None
    reason = os.strerror(code)
    reason = reason[:1].lower() + reason[1:]
    name = getattr(err, "filename", None)
    return f"{name}: {reason}" if name else reason


def _names_a_user_path(err: BaseException) -> bool:
    """Whether ``err`` names a file the user knows (not none, not one of our temporary names)."""
    name = getattr(err, "filename", None)
    return bool(name) and not any(_LEFTOVER.match(part) for part in Path(os.fsdecode(name)).parts)


@contextmanager
def faults_named(target: str | Path) -> Iterator[None]:
    """Re-raise a file-system fault in the block as an ``OSError`` naming ``target`` (the output the user
    asked for) where it named no file (a library's write) or a temporary one."""
    try:
        yield
    except Exception as err:
        code = fault_errno(err)
        if code is None or (isinstance(err, OSError) and _names_a_user_path(err)):
            raise
        raise OSError(code, os.strerror(code), str(target)) from err


def _naming_faults(writer: Callable[..., Iterator[Path]]) -> Callable[..., Iterator[Path]]:
    """A writing generator (``atomic_path``, ``staging_dir`` ...) whose faults name its first argument."""

    @functools.wraps(writer)
    def wrapper(target: str | Path, *args: Any, **kwargs: Any) -> Iterator[Path]:
        with faults_named(Path(target).expanduser()):
            yield from writer(target, *args, **kwargs)

    return wrapper


def _remove_quietly(path: Path) -> None:
    """Delete a temporary file or folder; a failure here (a read-only folder refuses even to delete a file
    that is not there) must not hide the error that made it a leftover."""
    with suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()


def current_umask() -> int:
    """The process umask (there is no getter, so it is set and restored)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_name(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")


def _alive(pid: int) -> bool:
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
        match = _LEFTOVER.match(path.name)
        if not match or match["name"] != target.name or _alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextmanager
@_naming_faults
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it becomes ``path`` when the block succeeds and
    disappears when it fails."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    tmp = _temp_name(target, "tmp")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


def umask_permissions(root: Path) -> None:
    """Give ``root`` and everything in it the permissions of a freshly made file / folder under the
    process umask: some writers (safetensors, mkstemp) create private 0600 files."""
    mask = current_umask()
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def replace_dir(new: str | Path, out: str | Path) -> Path:
    """Put the folder ``new`` at ``out``: the old ``out`` is renamed aside, the new one renamed in, and
    only then is the old one deleted, so ``out`` is always complete."""
    new, out = Path(new), Path(out)
    if not out.exists():
        os.replace(new, out)
        return out
    aside = _temp_name(out, "old")
    os.replace(out, aside)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(aside, out)
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
    return out


@contextmanager
@_naming_faults
def staging_dir(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A fresh folder beside ``out`` to build into; it replaces ``out`` when the block succeeds and is
    deleted when it fails. An existing ``out`` is refused unless ``overwrite``."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    staging = _temp_name(out, "partial")
    staging.mkdir(mode=0o777)  # the umask applies, as for any folder the user makes
    try:
        yield staging
        umask_permissions(staging)
        replace_dir(staging, out)
    except BaseException:
        _remove_quietly(staging)
        raise


@contextmanager
@_naming_faults
def staging_files(out: str | Path) -> Iterator[Path]:
    """A fresh folder to write several files into; when the block succeeds they are moved into the folder
    ``out`` (created if needed, other files there kept), and when it fails none of them appears."""
    out = Path(out).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    staging = _temp_name(out, "partial")
    staging.mkdir(mode=0o777)
    try:
        yield staging
        umask_permissions(staging)
        out.mkdir(exist_ok=True)
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
    finally:
        _remove_quietly(staging)


__all__ = [
    "FAULT_ERRNOS",
    "atomic_path",
    "current_umask",
    "fault_errno",
    "fault_message",
    "faults_named",
    "remove_leftovers",
    "replace_dir",
    "staging_dir",
    "staging_files",
    "umask_permissions",
    "write_bytes",
    "write_json",
    "write_text",
]
