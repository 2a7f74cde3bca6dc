"""One loader for every source, and one transform from training to prediction and ONNX.

A training checkpoint folder, a ``save_pretrained`` folder and a Hub id go through ``ran.load_model``
with the same class names and bitwise-equal logits. A model trained on grayscale faces records it, and
``ran predict`` and the exported ONNX graph feed a colour photo to it exactly as training fed its faces.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ran
from ran.cli import main as ran_main
from ran.loading import resolve_model_source

REVISION = "89abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny RAN trained for a few steps on the generated (grayscale) faces."""
    from ran.data.synthetic import build_synthetic
    from ran.data.writer import write_dataset_folder
    from ran.training import resolve_config, train

    root = tmp_path_factory.mktemp("loading")
    data = write_dataset_folder(
        build_synthetic(seed=3, train_size=32, test_size=16, progress=False), root / "data"
    )
    argv = [
        "--data",
        str(data),
        "--output-dir",
        str(root / "run"),
        "--model",
        "ran",
        "--backbone",
        "test_resnet",
    ]
    argv += ["--region-size", "32", "--epochs", "1", "--batch-size", "16", "--save-every-steps", "1"]
    train(resolve_config([*argv, "--no-progress"]))
    return root / "run"


def _hub_cache(root: Path, repo_id: str, folder: Path) -> Path:
    """``folder`` in the Hugging Face cache layout (refs/main -> snapshots/<revision>/)."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(folder, repo / "snapshots" / REVISION)
    return root


def test_checkpoint_saved_folder_and_hub_id_load_the_same(trained, tmp_path, monkeypatch):
    from huggingface_hub import constants

    checkpoint = trained / "checkpoints" / "step_0000001"
    saved = ran.save_pretrained(ran.load_model(checkpoint), tmp_path / "saved")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_hub_cache(tmp_path / "hub", "ran-test/tiny", saved)))
    sources = {"checkpoint": checkpoint, "saved": saved, "hub": "ran-test/tiny"}
    assert [resolve_model_source(s).kind for s in sources.values()] == ["folder", "folder", "hub"]

    images = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    models = {name: ran.load_model(source) for name, source in sources.items()}
    logits = {name: model(images) for name, model in models.items()}
    names = {name: ran.loading.class_names(model) for name, model in models.items()}
    assert names["checkpoint"] == list(ran.labels.FERPLUS_CLASSES)
    assert names["saved"] == names["checkpoint"] and names["hub"] == names["checkpoint"]
    assert torch.equal(logits["saved"], logits["checkpoint"]) and torch.equal(
        logits["hub"], logits["checkpoint"]
    )
    assert not models["checkpoint"].training  # ready for inference, whatever the source


def _colour_face(seed: int = 5) -> np.ndarray:
    """A colourful 64x64 photo crop: its RGB and its gray versions differ a lot."""
    rng = np.random.default_rng(seed)
    return (rng.random((64, 64, 3)) ** 2 * 255).astype(np.uint8)


def _as_training_fed(face: np.ndarray) -> torch.Tensor:
    """Independently of ran.transforms: what training feeds for this face (48 px, PIL's gray, as RGB)."""
    gray = Image.fromarray(face).resize((48, 48), Image.Resampling.BILINEAR).convert("L")
    pixels = torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0)
    return pixels.expand(3, -1, -1)[None]


def test_grayscale_training_is_recorded_and_fed_back_by_predict_and_onnx(trained, tmp_path, capsys):
    best = trained / "best"
    assert json.loads((best / "config.json").read_text())["pretrained_cfg"]["grayscale"] is True
    model = ran.load_model(best)
    face = _colour_face()
    Image.fromarray(face).save(tmp_path / "face.png")
    with torch.no_grad():
        expected = model(_as_training_fed(face)).softmax(-1)[0]
        as_rgb = model(torch.from_numpy(face).permute(2, 0, 1)[None].float() / 255.0).softmax(-1)[0]
    assert not torch.allclose(expected, as_rgb, atol=1e-4), "the test photo must tell gray from colour"

    assert (
        ran_main(["predict", str(tmp_path / "face.png"), "--model", str(best), "--no-detect", "--json"]) == 0
    )
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    got = torch.tensor([line["faces"][0]["probabilities"][n] for n in ran.loading.class_names(model)])
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-6)

    onnxruntime = pytest.importorskip("onnxruntime")
    from ran.export import export_onnx

    path = export_onnx(model, tmp_path / "model.onnx")
    resized = np.asarray(Image.fromarray(face).resize((48, 48), Image.Resampling.BILINEAR))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": resized.transpose(2, 0, 1)[None].copy()})[0]
    torch.testing.assert_close(torch.from_numpy(logits).softmax(-1)[0], expected, rtol=0, atol=1e-5)
