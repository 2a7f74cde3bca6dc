"""Faults and bad numbers become one line: every numeric flag of every command is finite and in range
before anything is written; a full disk or a read-only folder under each writing command gives one line
naming the output, a non-zero exit and no leftovers; an error is the last line, after any progress bar.

Disk-full and read-only faults are real (a 3 MB tmpfs, a read-only tmpfs) where the tests may mount one
(root in CI), and simulated at the OS boundary otherwise (``os.replace`` / ``Path.mkdir`` under the folder
fail with ENOSPC / EROFS); ``RAN_TEST_SIMULATED_FAULTS=1`` forces the simulation."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import ran
import ran.cli.predict
from ran.cli import main as ran_main
from ran.cli import run_main
from ran.errors import UserError

LEFTOVER = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.(tmp|partial|old)$")
REASONS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

    out = tmp_path_factory.mktemp("faults") / "data"
    return write_dataset_folder(build_synthetic(seed=2, train_size=24, test_size=16, progress=False), out)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model("ran", backbone="test_resnet", region_size=32)
    return ran.save_pretrained(model, tmp_path_factory.mktemp("faults") / "model")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"face{i}.png")
    return sorted(folder.iterdir())


# --- numbers ---------------------------------------------------------------------------------------------
TRAIN = "train --data {data} --output-dir {out} --model ran --backbone test_resnet"
# (command line with {out} {data} {model} {photo}, the flag, what the error says)
NUMBER_CASES = [
    (f"{TRAIN} --lr inf", "--lr", "expected a finite number > 0, got 'inf'"),
    (f"{TRAIN} --gamma nan", "--gamma", "expected a number in (0, 1], got 'nan'"),
    (f"{TRAIN} --rb-margin inf", "--rb-margin", "expected a number in [0, 1], got 'inf'"),
    (f"{TRAIN} --max-grad-norm -1", "--max-grad-norm", "expected a finite number > 0, got '-1'"),
    (f"{TRAIN} --label-smoothing 5", "--label-smoothing", "expected a number in [0, 1], got '5'"),
    (f"{TRAIN} --warmup-epochs inf", "--warmup-epochs", "expected a finite number >= 0, got 'inf'"),
    ("data synthetic --out {out} --train-size -5", "--train-size", "expected an integer >= 1, got '-5'"),
    (
        "evaluate --model {model} --data {data} --output-dir {out} --seed -1",
        "--seed",
        "expected an integer in [0, 4294967295], got '-1'",
    ),
    ("compare {out} {out} --output-dir {out} --seed nan", "--seed", "expected an integer"),
    (
        "predict {photo} --model {model} --no-detect --visualize {out} --margin nan",
        "--margin",
        "expected a number in [0, 2], got 'nan'",
    ),
    ("predict {photo} --model {model} --fps inf", "--fps", "expected a finite number > 0, got 'inf'"),
    (
        "export --model {model} --onnx {out} --input-size 0",
        "--input-size",
        "expected an integer in [8, 4096]",
    ),
    (
        "demo --output-dir {out} --lr inf --train-size 16 --test-size 8 --epochs 1",
        "--lr",
        "expected a finite number > 0, got 'inf'",
    ),
    ("app --model {out}-none --port 70000", "--port", "expected an integer in [1, 65535], got '70000'"),
]


@pytest.mark.parametrize(
    "line, flag, expected", NUMBER_CASES, ids=[c[0].split()[0] + c[1] for c in NUMBER_CASES]
)
def test_bad_numbers_are_refused_before_anything_is_written(
    line, flag, expected, data, model_folder, photos, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = line.format(out=out, data=data, model=model_folder, photo=photos[0]).split()
    with pytest.raises(SystemExit) as info:
        ran_main(argv)
    [line] = capsys.readouterr().err.strip().splitlines()  # one line: no usage block before it
    assert info.value.code == 2
    assert re.match(rf"ran {argv[0]}( \w+)?: error: argument {flag}\b", line) and expected in line, line
    assert not out.exists()


@pytest.mark.parametrize("command", ["demo", "train", "predict", "app", "robustness", "models"])
def test_an_unknown_flag_is_one_line_naming_it(command, tmp_path, capsys):
    """HfArgumentParser raised a ValueError traceback for ``ran demo --bogus``; argparse printed a usage
    block a screen long before the line that matters."""
    with pytest.raises(SystemExit) as info:
        ran_main([*command.split(), "--output-dir", str(tmp_path / "out"), "--bogus", "7"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and f"ran {command}: error:" in line
    assert "--bogus" in line and f"ran {command} --help" in line, line
    assert not (tmp_path / "out").exists()


# --- faults ----------------------------------------------------------------------------------------------
def _mount(folder: Path, read_only: bool, free_bytes: int) -> bool:
    """A real 3 MB tmpfs at ``folder`` with ``free_bytes`` left, or read-only; False where not allowed."""
    if os.environ.get("RAN_TEST_SIMULATED_FAULTS") or os.geteuid() != 0:
        return False
    command = ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)]
    try:
        if subprocess.run(command, capture_output=True).returncode != 0:
            return False
    except OSError:  # no mount command
        return False
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    else:
        stat = os.statvfs(folder)
        (folder / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - free_bytes))
    return True


def _simulate(folder: Path, code: int, monkeypatch) -> None:
    """Writes under ``folder`` fail as the file system would: the final rename of every atomic output
    (disk full, read-only) and, read-only, making a folder."""
    real_replace, real_mkdir = os.replace, Path.mkdir

    def inside(path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(folder)

    def replace(src, dst, *args, **kwargs):
        if inside(dst):
            raise OSError(code, os.strerror(code), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    def mkdir(self, *args, **kwargs):
        if code == errno.EROFS and inside(self) and not self.is_dir():
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "mkdir", mkdir)


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    """``make(code, free_bytes)``: a folder whose writes fail with ``code`` (ENOSPC or EROFS)."""
    mounted = []

    def make(code: int, free_bytes: int = 16_000) -> Path:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        if _mount(folder, code == errno.EROFS, free_bytes):
            mounted.append(folder)
        else:
            _simulate(folder, code, monkeypatch)
        return folder

    yield make
    monkeypatch.undo()
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _writing_commands(root: Path, data: Path, model: Path, photo: Path) -> dict[str, tuple[list[str], Path]]:
    """Each writing command with its output under ``root`` (and that output, which must not appear)."""
    tiny = ["--model", "ran", "--backbone", "test_resnet", "--region-size", "32", "--epochs", "1"]
    return {
        "data": (["data", "synthetic", "--out", str(root / "d"), "--train-size", "40", "--test-size", "16"],
                 root / "d"),
        "train": (["train", "--data", str(data), "--output-dir", str(root / "r"), *tiny, "--batch-size", "8",
                   "--no-progress"], root / "r" / "best"),
        "evaluate": (["evaluate", "--model", str(model), "--data", str(data), "--output-dir", str(root / "e"),
                      "--resamples", "100", "--no-progress"], root / "e" / "results.json"),
        "export": (["export", "--model", str(model), "--onnx", str(root / "m.onnx"), "--no-check"],
                   root / "m.onnx"),
        "predict": (["predict", str(photo), "--model", str(model), "--no-detect", "--no-progress",
                     "--visualize", str(root / "v")], root / "v" / f"{photo.stem}_face0.png"),
    }  # fmt: skip


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("command", ["data", "train", "evaluate", "export", "predict"])
def test_a_refused_write_is_one_line_naming_the_output(
    command, code, data, model_folder, photos, faulty, capsys
):
    root = faulty(code)
    argv, output = _writing_commands(root, data, model_folder, photos[0])[command]
    status = ran_main(argv)
    err = capsys.readouterr().err
    lines = err.rstrip("\n").split("\n")
    assert status != 0 and "Traceback" not in err
    if command == "predict":  # the prediction is printed; its picture is reported, and the exit code says so
        assert "picture not written" in err or lines[-1].startswith("ran predict: error:")
    else:
        pattern = rf"ran {command}: error: {re.escape(str(root))}/\S+: {REASONS[code]}"
        assert re.fullmatch(pattern, lines[-1]), lines[-1]
    assert not output.exists()
    assert not [p for p in root.rglob("*") if LEFTOVER.match(p.name)]


def test_predict_goes_on_when_pictures_cannot_be_written(model_folder, photos, faulty, capsys):
    root = faulty(errno.ENOSPC, free_bytes=200_000)  # room for about two pictures on a real disk
    argv = [*map(str, photos), "--model", str(model_folder), "--no-detect", "--no-progress"]
    assert ran_main(["predict", *argv, "--visualize", str(root / "v")]) == 1
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [str(p) for p in photos]
    unwritten = re.findall(r": error: picture not written: (\S+): no space left on device", captured.err)
    written = sorted(p.name for p in (root / "v").iterdir()) if (root / "v").is_dir() else []
    assert len(unwritten) + len(written) == len(photos) and unwritten
    assert (
        captured.err.splitlines()[-1]
        == f"ran predict: {len(unwritten)} of {len(photos)} images / video frames failed (exit code 1)"
    )
    assert not [p for p in root.rglob("*") if LEFTOVER.match(p.name)]


# --- the error line ----------------------------------------------------------------------------------------
def test_the_error_is_the_last_line_after_an_open_progress_bar(capsys):
    from tqdm.auto import tqdm

    def command(argv):
        bar = tqdm(total=10, desc="working", file=sys.stderr, mininterval=0)
        bar.update(3)
        raise UserError("the input went wrong")

    assert run_main(command, [], "ran x") == 2
    err = capsys.readouterr().err
    assert err.endswith("\nran x: error: the input went wrong\n")
    assert "working" in err  # the bar was drawn, and closed before the error


def test_an_error_never_embeds_an_unbounded_value(capsys):
    def command(argv):
        raise UserError("bad value: " + "x" * 10_000_000)

    assert run_main(command, [], "ran x") == 2
    err = capsys.readouterr().err
    assert err.startswith("ran x: error: bad value: xxx") and len(err) <= 1100 and err.count("\n") == 1


def test_predict_lines_are_never_glued_to_its_progress_bar(model_folder, photos, tmp_path, capsys):
    argv = [str(photos[0]), str(tmp_path / "missing.png"), str(photos[1]), "--model", str(model_folder)]
    assert run_main(ran.cli.predict.main, [*argv, "--no-detect", "--batch-size", "1"], "ran predict") == 1
    captured = capsys.readouterr()
    assert "predict: " in captured.err  # the bar was drawn
    starts = [captured.err[m.start() - 1] for m in re.finditer("ran predict: ", captured.err) if m.start()]
    assert starts and set(starts) <= {"\r", "\n"}  # each message starts its own line, the bar cleared first
    assert captured.err.endswith("\nran predict: 1 of 3 images / video frames failed (exit code 1)\n")


def test_arguments_that_are_not_utf8_are_refused_before_any_work(tmp_path, capsys):
    """An output folder named with other bytes failed in pyarrow / json after the whole evaluation (a
    UnicodeEncodeError traceback); now one line before anything runs."""
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/ev\xffdir")
    calls = []
    assert run_main(lambda argv: calls.append(argv), ["--output-dir", out], "ran evaluate") == 2
    assert calls == [] and not os.path.lexists(out)
    err = capsys.readouterr().err
    expected = f"argument 2 '{tmp_path}/ev\\xffdir' is not UTF-8 text; rename the file or folder"
    assert err == f"ran evaluate: error: {expected}\n"


def test_a_command_that_catches_the_stop_itself_still_exits_with_the_signal(capsys):
    """ran app (gradio) catches the interruption a SIGTERM raises, closes the server and returns: the
    exit status was 0."""
    import signal

    def server(argv):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            print("closing server.")
        return 0

    assert run_main(server, [], "ran app") == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "ran app: stopped by SIGTERM\n"
