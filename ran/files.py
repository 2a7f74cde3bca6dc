"""Writing files and folders so that nobody ever sees half of one: write beside the target, then rename.

Every output of the package (model folders, dataset folders, results, pictures, CSVs, checkpoints) goes
through these helpers, so each is either the old version or the complete new one, never a mix. Temporary
names carry the writer's process id: a build killed with ``kill -9`` leaves its leftovers behind, and the
next write of the same target removes them once that process is gone. Outputs get the process umask's
permissions (usually 0644 / 0755), like any file the user writes. A write the file system refuses (disk
full, read-only, no permission) leaves nothing behind and is raised as an ``OSError`` naming the output
(``ran.faults.fault_message`` is its one line), also where the library that wrote (pyarrow, safetensors,
PIL) named no file.

``--overwrite`` replaces only what the package wrote: each output folder carries a small marker file
(``.ran-dataset.json``, ``.ran-run.json``, ...) and :func:`check_overwrite` refuses to replace a folder
without one (unless it is empty or its writer recognises it as its own). One writer at a time works on
an output folder: see :mod:`ran.locks`.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ran.errors import one_line
from ran.faults import fault_errno, uninterrupted
from ran.leftovers import LEFTOVER, remove_leftovers, temp_name
from ran.reading import read_small_json


def _names_a_user_path(err: BaseException) -> bool:
    """Whether ``err`` names a file the user knows (not none, not one of our temporary names)."""
    name = getattr(err, "filename", None)
    return bool(name) and not any(LEFTOVER.match(part) for part in Path(os.fsdecode(name)).parts)


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


def check_not_a_broken_link(path: Path, named: str | None = None) -> None:
    """Refuse a folder to write into that is a link to nowhere (or a loop of links): creating it is a
    bare 'File exists'. ``named``: how the message names it (the flag and value), default the path."""
    if path.is_symlink() and not path.exists():
        raise NotADirectoryError(
            f"{named or path}: a link to {os.readlink(path)}, which does not exist or loops; expected a "
            "folder to write into"
        )


def current_umask() -> int:
    """The process umask (there is no getter, so it is set and restored)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
@_naming_faults
def atomic_path(path: str | Path, *, new: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it becomes ``path`` when the block succeeds and
    disappears when it fails. ``new``: ``path`` did not exist when the command checked, so a file that
    appeared there meanwhile (the user's) is never replaced: FileExistsError, and the new one is dropped."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    tmp = temp_name(target, "tmp")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~current_umask())
        _move_new(tmp, target) if new else os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _move_new(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target`` only if nothing is there: a hard link fails when the name exists, in
    one step; on a file system without hard links, a check just before the rename."""
    appeared = FileExistsError(
        f"{target}: appeared while this command ran; left as it is (pass --overwrite to replace it)"
    )
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise appeared from None
    except OSError:  # no hard links here (some network and FUSE file systems)
        if target.exists() or target.is_symlink():
            raise appeared from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


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
    aside = temp_name(out, "old")
    with uninterrupted():
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


# --- what the package wrote ----------------------------------------------------------------------
WRITERS = {
    "dataset": "ran data",
    "run": "ran train",
    "evaluation": "ran evaluate",
    "comparison": "ran compare",
    "demo": "ran demo",
    "robustness": "ran robustness",
}
BOOKKEEPING = re.compile(r"\.ran[.-].*")  # markers and locks (ran.locks): no content of a folder


def _contents(folder: Path, limit: int) -> list[os.DirEntry]:
    """Up to ``limit`` entries of ``folder``, leaving out the package's markers and locks."""
    found: list[os.DirEntry] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not BOOKKEEPING.fullmatch(entry.name):
                found.append(entry)
                if len(found) >= limit:
                    break
    return found


def marker_path(folder: str | Path, kind: str) -> Path:
    """The marker file a ``kind`` output folder carries (``.ran-dataset.json``, ``.ran-run.json``, ...)."""
    return Path(folder) / f".ran-{kind}.json"


def write_marker(folder: str | Path, kind: str, entries: Iterable[str] | None = None) -> Path:
    """Mark ``folder`` as a ``kind`` output of this package, so ``--overwrite`` may later replace it;
    ``entries``: the names the package wrote at its top level (anything else there is the user's)."""
    from ran import __version__

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = {"kind": kind, "written_by": WRITERS[kind], "ran_version": __version__, "created": created}
    if entries is not None:
        data["entries"] = sorted(set(entries))
    return write_json(marker_path(folder, kind), data)


def written_entries(folder: str | Path, kind: str | None) -> set[str] | None:
    """The top-level names ``folder``'s marker of ``kind`` says the package wrote; None when there is no
    such marker or it lists none (markers of older versions, folders written step by step). A marker is a
    file like any other: an entry that is no plain name (``../x``, ``a/b``) names nothing of the folder's."""
    data = read_small_json(marker_path(folder, kind)) if kind else None
    entries = data.get("entries") if isinstance(data, dict) and data.get("kind") == kind else None
    if not (isinstance(entries, list) and all(isinstance(e, str) for e in entries)):
        return None
    return {e for e in entries if e not in ("", ".", "..") and not any(c in e for c in "/\\\0")}


def foreign_entries(folder: str | Path, kind: str | None) -> list[str]:
    """Names at ``folder``'s top level that its marker does not list: the user's, never replaced."""
    recorded = written_entries(folder, kind)
    entries = [] if recorded is None else _contents(Path(folder), 100_000)
    return sorted(e.name + ("/" if e.is_dir() else "") for e in entries if e.name not in (recorded or ()))


def written_by(folder: Path, kind: str | None, recognise: Callable[[Path], bool] | None = None) -> bool:
    """Whether ``folder`` holds nothing but what this package wrote: it is empty, carries the marker of
    ``kind``, or ``recognise`` knows it (folders written before markers existed)."""
    if not _contents(folder, 1):
        return True
    data = read_small_json(marker_path(folder, kind)) if kind else None
    if isinstance(data, dict) and data.get("kind") == kind:
        return True
    return recognise is not None and recognise(folder)


def describe_contents(folder: Path, shown: int = 3, limit: int = 1000) -> str:
    """'3 items such as notes.txt, photos/': what a refusal names (counting stops at ``limit``)."""
    entries = _contents(folder, limit)
    names = sorted(one_line(e.name, 80) + ("/" if e.is_dir() else "") for e in entries[:shown])
    count, more = len(entries), "+" if len(entries) >= limit else ""
    return f"{count}{more} item{'s' if count != 1 else ''} such as {', '.join(names)}"


def not_written_error(folder: Path, kind: str | None, action: str = "replace it") -> FileExistsError:
    """The one-line refusal for a folder this package did not write (``action``: what --overwrite would
    have done)."""
    writer = WRITERS.get(kind or "", "ran")
    marker = f"no {marker_path(folder, kind).name} marker; " if kind else ""
    return FileExistsError(
        f"{folder}: not a folder written by {writer} ({marker}holds {describe_contents(folder)}); refusing "
        f"to {action} with --overwrite: choose another output folder or remove it yourself"
    )


def _protected(folder: Path) -> str | None:
    """Why ``folder`` must never be replaced whole, if it must not: the working folder or one above it
    (the process and the user's shell stand in it), the home folder, the root."""
    real = folder.resolve()
    try:
        cwd = Path.cwd().resolve()
    except OSError:
        cwd = None
    if cwd is not None and (real == cwd or real in cwd.parents):
        return "is the current folder or holds it"
    if real == Path.home().resolve():
        return "is the home folder"
    return "is the root folder" if real.parent == real else None


def check_overwrite(
    out: str | Path,
    *,
    overwrite: bool,
    kind: str | None = None,
    recognise: Callable[[Path], bool] | None = None,
) -> None:
    """Refuse to replace an existing ``out`` unless ``overwrite`` and the package wrote it (see
    :func:`written_by`); the working folder, the home folder and the folders above them are never
    replaced. Raises FileExistsError with one line naming the folder and what it holds."""
    out = Path(out).expanduser().absolute()
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    reason = _protected(out) if out.exists() else None
    if reason:
        raise FileExistsError(
            f"{out}: {reason}; refusing to replace it with --overwrite: choose another folder"
        )
    if not out.is_dir():
        raise FileExistsError(f"{out}: not a folder; refusing to replace it with --overwrite")
    if not written_by(out, kind, recognise):
        raise not_written_error(out, kind)
    from ran.locks import check_no_writer_inside  # ran.locks builds on this module

    check_no_writer_inside(out)
    foreign = foreign_entries(out, kind)
    if foreign:
        raise FileExistsError(
            f"{out}: holds {len(foreign)} item(s) that {WRITERS.get(kind or '', 'ran')} did not write, "
            f"such as {', '.join(one_line(n, 80) for n in foreign[:3])}; refusing to replace the folder "
            "with --overwrite: move them out or choose another folder"
        )


def check_overwrite_files(
    out: str | Path,
    names: Iterable[str],
    *,
    overwrite: bool,
    kind: str,
    recognise: Callable[[Path], bool] | None = None,
) -> None:
    """For writers that add files to a folder (results, comparisons): refuse when any of ``names``
    exists in ``out``, unless ``overwrite`` and the folder carries the marker of ``kind``."""
    out = Path(out).expanduser().absolute()
    clashes = [name for name in names if (out / name).exists()]
    if not clashes:
        return
    if not overwrite:
        raise FileExistsError(f"{out / clashes[0]} already exists; pass --overwrite to replace it")
    if not written_by(out, kind, recognise):
        raise not_written_error(out, kind, "replace its files")
    recorded = written_entries(out, kind)
    theirs = [name for name in clashes if recorded is not None and name not in recorded]
    if theirs:
        raise FileExistsError(
            f"{out / theirs[0]}: not written by {WRITERS.get(kind or '', 'ran')}; refusing to replace it "
            "with --overwrite: move it out or choose another folder"
        )


@contextmanager
@_naming_faults
def staging_dir(
    out: str | Path,
    *,
    overwrite: bool = False,
    kind: str | None = None,
    recognise: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """A fresh folder beside ``out`` to build into; it replaces ``out`` when the block succeeds and is
    deleted when it fails. An existing ``out`` is refused unless ``overwrite`` and the package wrote it
    (:func:`check_overwrite`, checked before the build and again before the swap); with ``kind`` the new
    folder carries that kind's marker."""
    out = Path(out).expanduser().absolute()
    check_overwrite(out, overwrite=overwrite, kind=kind, recognise=recognise)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    staging = temp_name(out, "partial")
    staging.mkdir(mode=0o777)  # the umask applies, as for any folder the user makes
    try:
        yield staging
        if kind:
            write_marker(staging, kind, (entry.name for entry in _contents(staging, 100_000)))
        umask_permissions(staging)
        check_overwrite(out, overwrite=overwrite, kind=kind, recognise=recognise)
        replace_dir(staging, out)
    except BaseException:
        _remove_quietly(staging)
        raise


@contextmanager
@_naming_faults
def staging_files(
    out: str | Path, *, kind: str | None = None, replaces: Collection[str] = ()
) -> Iterator[Path]:
    """A fresh folder to write several files into; when the block succeeds they are moved into the folder
    ``out`` (created if needed, other files there kept), and when it fails none of them appears. With
    ``kind``, the folder gets that kind's marker too; ``replaces``: name patterns of files an earlier write
    of that kind made (its marker lists them) that go with the move when this one does not write them
    again, so the folder never pairs the new files with the old run's. A marker is a file like any other:
    a listed name that matches no pattern is never removed."""
    out = Path(out).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    staging = temp_name(out, "partial")
    staging.mkdir(mode=0o777)
    try:
        yield staging
        names = {entry.name for entry in _contents(staging, 100_000)}
        earlier = (written_entries(out, kind) or set()) if kind else set()
        obsolete = {n for n in earlier - names if any(fnmatch.fnmatchcase(n, p) for p in replaces)}
        if kind:
            write_marker(staging, kind, (names | earlier) - obsolete)
        umask_permissions(staging)
        out.mkdir(exist_ok=True)
        with uninterrupted():
            for path in sorted(staging.iterdir()):
                os.replace(path, out / path.name)
            for name in sorted(obsolete):
                if not (out / name).is_dir():  # a file of the earlier run's, never a folder put there since
                    (out / name).unlink(missing_ok=True)
    finally:
        _remove_quietly(staging)


__all__ = [
    "WRITERS",
    "atomic_path",
    "check_not_a_broken_link",
    "check_overwrite",
    "check_overwrite_files",
    "current_umask",
    "describe_contents",
    "foreign_entries",
    "marker_path",
    "not_written_error",
    "faults_named",
    "replace_dir",
    "staging_dir",
    "staging_files",
    "umask_permissions",
    "write_bytes",
    "write_json",
    "written_entries",
    "write_marker",
    "write_text",
    "written_by",
]
