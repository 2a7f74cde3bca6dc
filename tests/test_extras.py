"""Optional parts of the install: a missing one is named, with the extra that brings it, in one line."""

from __future__ import annotations

import sys

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
