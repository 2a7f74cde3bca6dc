"""ran.files: every output is either the old version or the complete new one, with the umask's permissions,
and leftovers of a killed writer disappear with the next write; --overwrite replaces only folders the
package wrote. ran.locks: one writer per output folder."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import save_file

from ran.faults import fault_message, uninterrupted
from ran.files import (
    atomic_path,
    staging_dir,
    staging_files,
    write_json,
)
from ran.leftovers import remove_leftovers
from ran.locks import lock_path, output_lock
from ran.reading import read_small_json


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


def test_a_new_file_never_replaces_one_that_appeared_while_it_was_written(tmp_path):
    """ran export --onnx new.onnx checked that new.onnx did not exist, then replaced the file the user
    saved there during the export."""
    target = tmp_path / "new.onnx"
    with pytest.raises(FileExistsError, match="new.onnx: appeared while this command ran; left as it is"):
        with atomic_path(target, new=True) as tmp:
            tmp.write_text("the graph")
            target.write_text("my own file")  # saved meanwhile
    assert target.read_text() == "my own file" and sorted(tmp_path.iterdir()) == [target]
    target.unlink()
    with atomic_path(target, new=True) as tmp:
        tmp.write_text("the graph")
    assert target.read_text() == "the graph" and sorted(tmp_path.iterdir()) == [target]


def test_outputs_with_names_near_and_over_the_file_systems_limit(tmp_path):
    """A valid 249-character output name failed (its temporary name was over 255 bytes), and a name over
    the limit was a traceback: now the first works, the second is one fault line naming it."""
    long = tmp_path / ("x" * 240 + ".json")  # 245 characters: valid
    write_json(long, {"v": 1})
    with (
        output_lock(tmp_path / ("d" * 250), "ran data", inside=False),
        staging_dir(tmp_path / ("d" * 250)) as staging,
    ):
        (staging / "f").write_text("x")
    assert json.loads(long.read_text()) == {"v": 1} and (tmp_path / ("d" * 250) / "f").is_file()
    too_long = tmp_path / ("y" * 300 + ".json")
    with pytest.raises(OSError) as info:
        write_json(too_long, {"v": 1})
    assert fault_message(info.value) == f"{too_long}: file name too long"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([long.name, "d" * 250])
    first, second = (tmp_path / ("z" * 230 + end) for end in "AB")  # alike in their first 200 bytes
    with output_lock(first, "ran data", inside=False), output_lock(second, "ran data", inside=False):
        pass  # two outputs, two locks (a cut name made them one: the second was refused)


def test_staging_dir_swaps_whole_folders_and_applies_the_umask(tmp_path, umask_027):
    out = tmp_path / "model"
    with staging_dir(out, kind="dataset") as staging:
        save_file({"w": torch.zeros(2)}, str(staging / "model.safetensors"))  # safetensors writes 0600
        (staging / "sub").mkdir()
    assert oct(out.stat().st_mode & 0o777) == oct(0o750)
    assert oct((out / "model.safetensors").stat().st_mode & 0o777) == oct(0o640)
    with pytest.raises(FileExistsError):
        with staging_dir(out, kind="dataset"):
            pass
    with pytest.raises(ValueError), staging_dir(out, overwrite=True, kind="dataset") as staging:
        (staging / "new.txt").write_text("new")
        raise ValueError("build failed")
    # the old one, whole, with its marker
    assert sorted(p.name for p in out.iterdir()) == [".ran-dataset.json", "model.safetensors", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_staging_files_adds_files_to_an_existing_folder(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "keep.txt").write_text("kept")
    with staging_files(tmp_path / "results") as staging:
        (staging / "results.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["keep.txt", "results.json"]


def test_staging_files_replacing_an_earlier_write_removes_only_its_files(tmp_path):
    """The earlier write's files that the new one lacks go with the move; the user's files, a folder put
    where a listed file was, names a tampered marker points outside the folder with, and listed names that
    are no such file (a marker is data: it listed the user's notes) all stay."""
    out, outside = tmp_path / "results", tmp_path / "outside.txt"
    outside.write_text("not the folder's")
    replaces = ("*.png",)
    with staging_files(out, kind="evaluation", replaces=replaces) as staging:
        for name in ("results.json", "old_picture.png", "became_a_folder.png"):
            (staging / name).write_text("run 1")
    (out / "mine.txt").write_text("the user's")
    (out / "became_a_folder.png").unlink()
    (out / "became_a_folder.png").mkdir()
    marker = json.loads((out / ".ran-evaluation.json").read_text())
    marker["entries"] += ["../outside.txt", "..", "/etc/hostname", "mine.txt"]
    (out / ".ran-evaluation.json").write_text(json.dumps(marker))
    with staging_files(out, kind="evaluation", replaces=replaces) as staging:
        (staging / "results.json").write_text("run 2")
    kept = sorted(p.name for p in out.iterdir())
    assert kept == [".ran-evaluation.json", "became_a_folder.png", "mine.txt", "results.json"]
    assert (out / "results.json").read_text() == "run 2" and outside.read_text() == "not the folder's"
    assert (out / "mine.txt").read_text() == "the user's"


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals: main thread")
def test_renames_that_belong_together_hold_a_stop_signal_until_they_are_done():
    """Ctrl-C / SIGTERM / SIGHUP between two renames of one output would leave it half old, half new: the
    signal is delivered once the block is done."""
    events: list[str] = []
    previous = signal.signal(signal.SIGHUP, lambda *_: events.append("signal"))
    try:
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
            events.append("second rename")
        time.sleep(0.05)
        assert events == ["second rename", "signal"]
        os.kill(os.getpid(), signal.SIGHUP)  # and signals are no longer held afterwards
        time.sleep(0.05)
        assert events == ["second rename", "signal", "signal"]
    finally:
        signal.signal(signal.SIGHUP, previous)


def _ready_child(script: str) -> subprocess.Popen:
    """A Python child running ``script``, once it has printed 'ready'. It gets Ctrl-C as a terminal
    delivers it: a shell running the suite in the background (``pytest &``) hands its children SIGINT
    ignored, and Python keeps an ignored SIGINT ignored."""
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert child.stdout.readline().strip() == "ready"
    return child


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
    child = _ready_child(script)
    child.kill()
    child.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]
    assert leftovers and leftovers[0].name.endswith(".partial")
    with staging_dir(out) as staging:
        (staging / "ok.txt").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert remove_leftovers(out) == []


# --- --overwrite replaces only what the package wrote -----------------------------------------------
def _user_folder(path):
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "photos").mkdir()
    (path / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_overwrite_refuses_folders_the_package_did_not_write(tmp_path):
    out = tmp_path / "out"
    before = _user_folder(out)
    with pytest.raises(FileExistsError) as info:
        with staging_dir(out, overwrite=True, kind="dataset") as staging:
            (staging / "new.txt").write_text("new")
    message = str(info.value)
    assert "not a folder written by ran data" in message and ".ran-dataset.json" in message
    assert "2 items such as notes.txt, photos/" in message and "\n" not in message
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left

    with staging_dir(out, overwrite=True, kind="dataset", recognise=lambda f: (f / "notes.txt").exists()):
        pass  # a writer that recognises the folder as its own (one written before markers) may replace it
    assert sorted(p.name for p in out.iterdir()) == [".ran-dataset.json"]
    with staging_dir(out, overwrite=True, kind="dataset") as staging:  # carries the marker now
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [".ran-dataset.json", "new.txt"]
    (tmp_path / "empty").mkdir()
    with staging_dir(tmp_path / "empty", overwrite=True, kind="run"):
        pass
    with pytest.raises(FileExistsError, match="not a folder written by ran train"):
        with staging_dir(out, overwrite=True, kind="run"):  # a marker of another kind does not count
            pass


def test_overwrite_keeps_what_the_user_added_to_a_folder_the_package_wrote(tmp_path):
    """A marked folder was replaced whole, with the notes the user had put in it since (ran robustness
    --overwrite). The marker lists what the package wrote; anything else there stops the swap."""
    out = tmp_path / "out"
    with staging_dir(out, kind="robustness") as staging:
        (staging / "results.json").write_text("{}")
        (staging / "pictures").mkdir()
    assert json.loads((out / ".ran-robustness.json").read_text())["entries"] == ["pictures", "results.json"]
    (out / "my_notes.txt").write_text("my analysis")
    (out / "mine").mkdir()
    with pytest.raises(FileExistsError) as info:
        with staging_dir(out, overwrite=True, kind="robustness") as staging:
            (staging / "results.json").write_text('{"new": 1}')
    message = str(info.value)
    assert "holds 2 item(s) that ran robustness did not write, such as mine/, my_notes.txt" in message
    assert (out / "my_notes.txt").read_text() == "my analysis" and (out / "results.json").read_text() == "{}"
    (out / "my_notes.txt").unlink()
    (out / "mine").rmdir()
    with staging_dir(out, overwrite=True, kind="robustness") as staging:
        (staging / "results.json").write_text('{"new": 1}')
    assert sorted(p.name for p in out.iterdir()) == [".ran-robustness.json", "results.json"]


def test_overwrite_never_replaces_the_working_folder_or_one_above_it(tmp_path, monkeypatch):
    work = tmp_path / "work"
    with staging_dir(work, kind="dataset") as staging:  # a marked folder, so only its place protects it
        (staging / "a.txt").write_text("a")
    (work / "inner").mkdir()
    for cwd, out in ((work, "."), (work / "inner", ".."), (work / "inner", str(work))):
        monkeypatch.chdir(cwd)
        with pytest.raises(FileExistsError, match="is the current folder or holds it"):
            with staging_dir(out, overwrite=True, kind="dataset"):
                pass
    assert sorted(p.name for p in work.iterdir()) == [".ran-dataset.json", "a.txt", "inner"]


# --- one writer per output folder ------------------------------------------------------------------
def _hold_lock(out, command, inside):
    """A live process holding the lock of ``out`` (as another ran command would)."""
    script = (
        "import sys, time\n"
        "from ran.locks import output_lock\n"
        f"with output_lock({str(out)!r}, {command!r}, inside={inside}):\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    return _ready_child(script)


def test_a_second_writer_is_refused_naming_the_first_and_ctrl_c_releases(tmp_path):
    out = tmp_path / "ds"
    child = _hold_lock(out, "ran data", inside=False)
    try:
        with pytest.raises(FileExistsError) as info:
            with output_lock(out, "ran data", inside=False):
                pass
        message = str(info.value)
        assert f"is being written by pid {child.pid} (ran data, started " in message
        assert "wait for it or choose another folder" in message
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(timeout=30)
    assert list(tmp_path.iterdir()) == []  # Ctrl-C released the lock; nothing left behind
    with output_lock(out, "ran data", inside=False) as lock:
        assert lock == lock_path(out, inside=False) and lock.is_file()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_command_as_ctrl_c_does(tmp_path, stop):
    """kill / timeout / a batch system send SIGTERM, a closed terminal SIGHUP: by default they ended the
    process at once and left the half-built folder and the lock behind."""
    out = tmp_path / "ds"
    script = (
        "import sys, time\n"
        "from ran.cli import run_main\n"
        "from ran.files import staging_dir\n"
        "from ran.locks import output_lock\n"
        "def build(argv):\n"
        f"    with output_lock({str(out)!r}, 'ran data', inside=False), staging_dir({str(out)!r}) as d:\n"
        "        (d / 'half.parquet').write_text('x')\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "sys.exit(run_main(build, [], prog='ran data'))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(stop, signal.SIG_DFL),  # nohup / a background job ignore SIGHUP
    )
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(stop)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 128 + stop
    assert err.strip().splitlines()[-1] == f"ran data: stopped by {signal.Signals(stop).name}"
    assert list(tmp_path.iterdir()) == []  # no half-built folder, no lock


def test_a_folder_is_not_replaced_while_another_command_writes_inside_it(tmp_path):
    """ran demo --overwrite deleted the checkpoints of a ran train still running in its train/ folder
    (and the training then died); the lock inside, or in a subfolder, now stops the replacement."""
    out = tmp_path / "demo"
    with staging_dir(out, kind="demo") as staging:
        (staging / "train").mkdir()
    child = _hold_lock(out / "train", "ran train", inside=True)
    try:
        with pytest.raises(FileExistsError, match=rf"train is being written by pid {child.pid} \(ran train"):
            with staging_dir(out, overwrite=True, kind="demo"):
                pass
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(timeout=30)
    assert (out / "train").is_dir()
    with staging_dir(out, overwrite=True, kind="demo") as staging:
        (staging / "new").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == [".ran-demo.json", "new"]


def test_a_lock_that_cannot_be_made_names_the_output_and_a_link_to_nowhere_is_named(tmp_path, monkeypatch):
    """On a read-only disk the error named the lock's temporary file (``..ran.lock.2701.f41b.tmp``); an
    output folder that is a link to nowhere was a bare '[Errno 17] File exists'."""
    import ran.locks
    from ran.leftovers import temp_name

    def refused(lock, text):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(temp_name(lock, "tmp")))

    monkeypatch.setattr(ran.locks, "_create_exclusive", refused)
    out = tmp_path / "results"
    with pytest.raises(OSError) as info:
        with output_lock(out, "ran evaluate", inside=True):
            pass
    assert fault_message(info.value) == f"{out}: read-only file system"
    assert list(tmp_path.iterdir()) == []  # the folder made for the lock is gone again
    monkeypatch.undo()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "x")
    with pytest.raises(NotADirectoryError, match=r"dangling: a link to .*nowhere/x, which does not exist"):
        with output_lock(tmp_path / "dangling", "ran evaluate", inside=True):
            pass


def test_a_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a writer killed before it could clean up
    gone.wait()
    out.mkdir()
    lock = lock_path(out, inside=True)
    owner = {"pid": gone.pid, "host": socket.gethostname(), "command": "ran train", "started": "earlier"}
    lock.write_text(json.dumps(owner))
    with output_lock(out, "ran train", inside=True):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with output_lock(out, "ran train", inside=True):  # the same process may nest it
            pass
        assert lock.is_file()
    assert list(out.iterdir()) == []  # the lock is gone (the folder was the killed writer's)
    lock.write_text("[1, 2]")  # JSON that names no process: nobody holds it
    with output_lock(out, "ran train", inside=True):
        pass
    lock.write_text("garbled")  # maybe a lock being written: refused, and left for the user to judge
    with pytest.raises(FileExistsError, match="is unreadable; remove it if no ran command runs"):
        with output_lock(out, "ran train", inside=True):
            pass
    assert lock.read_text() == "garbled"


def test_a_failing_writer_leaves_no_lock_and_no_folders(tmp_path):
    out = tmp_path / "a" / "b" / "results"
    with pytest.raises(RuntimeError), output_lock(out, "ran evaluate", inside=True):
        raise RuntimeError("evaluation failed")
    assert list(tmp_path.iterdir()) == []


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


def test_small_json_files_that_are_no_regular_file_or_nest_deep_are_unread(tmp_path):
    """A FIFO named like a marker or an int8 report held the reader forever; arrays nested 100,000 deep
    were a RecursionError traceback. Both are 'not what it claims' (None), and the int8 report is refused."""
    from ran.quantize import check_report_target

    fifo, deep, fine = tmp_path / "m.report.json", tmp_path / "deep.json", tmp_path / "fine.json"
    os.mkfifo(fifo)
    deep.write_text("[" * 100_000 + "]" * 100_000)
    fine.write_text('{"kind": "x"}')
    assert read_small_json(fifo) is None and read_small_json(deep) is None
    assert read_small_json(fine) == {"kind": "x"} and read_small_json(tmp_path / "missing.json") is None
    with pytest.raises(FileExistsError, match="not a report written by ran export --int8"):
        check_report_target(tmp_path / "m.onnx", overwrite=True)


@pytest.mark.parametrize("command", ["data", "train"])
def test_a_folder_whose_recognised_file_is_a_fifo_is_not_recognised_and_never_waits(tmp_path, command):
    """Folders written before markers are recognised by a file's first lines (a dataset's README.md, a
    run's config.yaml); such a file that is a FIFO held ``--overwrite`` forever."""
    from ran.data.format.writer import is_dataset_folder
    from ran.training.outputs import is_run_folder

    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / ("README.md" if command == "data" else "config.yaml"))
    recognise = is_dataset_folder if command == "data" else is_run_folder
    answers: list[bool] = []
    reader = threading.Thread(target=lambda: answers.append(recognise(out)), daemon=True)
    reader.start()
    reader.join(20)
    assert answers == [False]


def test_an_output_folder_that_is_a_file_is_named_as_one(tmp_path):
    """ran evaluate / compare --output-dir naming a file said '[Errno 17] File exists'."""
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, inside in ((afile, True), (afile / "sub", True), (afile / "sub", False)):
        with pytest.raises(NotADirectoryError, match=rf"^{afile}: a file, not a folder; expected a folder"):
            with output_lock(out, "ran evaluate", inside=inside):
                pass
    assert afile.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
