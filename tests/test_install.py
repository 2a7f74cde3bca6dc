"""The package as users get it: a wheel built from the repository, installed (no ``-e``) into a fresh
virtual environment, runs ``ran demo`` and ``ran predict``; and the test suite outside this project's layout.

The fresh environment borrows the already installed dependencies (torch alone is gigabytes) through a
``.pth`` line, so what is tested is the wheel itself: its files, its entry point, its metadata.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel (its dependencies seen through a .pth line)."""
    root = tmp_path_factory.mktemp("install")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            "dist",
            str(REPO),
        ],
        root,
    )
    [wheel] = (root / "dist").glob("ran-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", "venv"], root)
    python = root / "venv" / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root)
    (Path(purelib.stdout.strip()) / "borrowed_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        root,
    )
    return root / "venv"


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"), "MPLBACKEND": "Agg"}


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_demo_and_predict(installed, tmp_path):
    env = _clean_env(tmp_path)
    where = _run([str(installed / "bin" / "python"), "-c", "import ran; print(ran.__file__)"], tmp_path, env)
    assert Path(where.stdout.strip()).is_relative_to(installed), (
        "ran must come from the wheel, not the checkout"
    )
    assert (Path(where.stdout.strip()).parent / "app" / "examples" / "astronaut.jpg").is_file(), (
        "the web app's example photo is package data"
    )

    demo = tmp_path / "demo"
    small = ["--quick", "--train-size", "160", "--test-size", "64", "--epochs", "1", "--no-progress"]
    _run([str(installed / "bin" / "ran"), "demo", "--output-dir", str(demo), *small], tmp_path, env)
    assert (demo / "best" / "model.safetensors").is_file() and (demo / "results" / "results.json").is_file()

    skimage = pytest.importorskip("skimage")
    photo = Path(skimage.__file__).parent / "data" / "astronaut.png"
    done = _run(
        [str(installed / "bin" / "ran"), "predict", str(photo), "--model", str(demo / "best"), "--json"],
        tmp_path,
        env,
    )
    [line] = [json.loads(text) for text in done.stdout.splitlines() if text.startswith("{")]
    assert line["source"] == str(photo) and len(line["faces"]) == 1


def test_declared_dependencies_are_what_the_code_imports_at_its_core():
    """The core requirements are the design stack; optional parts are extras named for what they enable."""
    requires = metadata.requires("ran") or []
    core = {
        r.split(";")[0].split(">")[0].split("=")[0].strip().lower() for r in requires if "extra ==" not in r
    }
    assert {
        "torch",
        "timm",
        "huggingface_hub",
        "safetensors",
        "transformers",
        "datasets",
        "accelerate",
    } <= core
    heavy = {"matplotlib", "opencv-python-headless", "onnx", "onnxruntime", "tensorboard", "gradio", "scipy"}
    assert not core & heavy, f"heavy packages in the core install: {core & heavy}"
    extras = set(metadata.metadata("ran").get_all("Provides-Extra") or [])
    assert {"predict", "export", "plots", "all"} <= extras
