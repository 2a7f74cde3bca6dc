"""ran.files: every output is either the old version or the complete new one, with the umask's permissions,
and leftovers of a killed writer disappear with the next write."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from ran.files import (
    atomic_path,
    fault_message,
    remove_leftovers,
    staging_dir,
    staging_files,
    write_json,
)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_staging_dir_swaps_whole_folders_and_applies_the_umask(tmp_path, umask_027):
    out = tmp_path / "model"
    with staging_dir(out) as staging:
        save_file({"w": torch.zeros(2)}, str(staging / "model.safetensors"))  # safetensors writes 0600
        (staging / "sub").mkdir()
    assert oct(out.stat().st_mode & 0o777) == oct(0o750)
    assert oct((out / "model.safetensors").stat().st_mode & 0o777) == oct(0o640)
    with pytest.raises(FileExistsError):
        with staging_dir(out):
            pass
    with pytest.raises(ValueError), staging_dir(out, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
        raise ValueError("build failed")
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "sub"]  # the old one, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_staging_files_adds_files_to_an_existing_folder(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("kept")
    with staging_files(tmp_path / "results") as staging:
        (staging / "results.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["keep.txt", "results.json"]


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    out = tmp_path / "data"
    script = (
        "import os, sys, time\n"
        "from ran.files import staging_dir\n"
        f"with staging_dir({str(out)!r}) as s:\n"
        "    (s / 'part.bin').write_bytes(b'x' * 1000)\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.kill()
    child.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]
    assert leftovers and leftovers[0].name.endswith(".partial")
    with staging_dir(out) as staging:
        (staging / "ok.txt").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert remove_leftovers(out) == []


class LibraryWriteError(Exception):
    """How a library writing for us (safetensors, in Rust) reports a full disk: no errno, no file name."""


def test_a_refused_write_names_the_output_and_leaves_nothing(tmp_path):
    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise LibraryWriteError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert fault_message(info.value) == f"{target}: no space left on device"
    assert list(tmp_path.iterdir()) == []
    # inside a staging folder: named after the folder asked for, not the temporary file in it
    with pytest.raises(OSError) as info, staging_dir(tmp_path / "data") as staging:
        with atomic_path(staging / "part.json"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert fault_message(info.value) == f"{tmp_path / 'data'}: read-only file system"
    assert list(tmp_path.iterdir()) == []
    # a file the user named stays named; errors that are not faults pass unchanged
    with pytest.raises(PermissionError) as info, staging_files(tmp_path / "results"):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/some/input.csv")
    assert fault_message(info.value) == "/some/input.csv: permission denied"
    with pytest.raises(RuntimeError, match="not a fault"), atomic_path(target):
        raise RuntimeError("not a fault (os error 2)")
    assert fault_message(ValueError("bad")) is None and list(tmp_path.iterdir()) == []
