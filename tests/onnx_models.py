"""Small models, data and pictures for the ONNX runtime and int8 tests (test_runtime.py, test_int8.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from ran.transforms import transform_for


def synthetic_data(out: Path, train: int = 64, test: int = 120) -> Path:
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

    return write_dataset_folder(
        build_synthetic(seed=2, train_size=train, test_size=test, progress=False), out
    )


def _train_faces(model: torch.nn.Module, data: Path) -> torch.Tensor:
    from ran.data.batches import FaceImages, collate_faces, load_splits

    split = load_splits(data)["train"]
    items = FaceImages(split, transform_for(model)).__getitems__(list(range(split.num_rows)))
    return collate_faces(items)["images"]


def principal_model(data: Path, seed: int = 0) -> torch.nn.Module:
    """A tiny RAN (test_resnet, 32 px regions) whose answers vary from face to face as a trained model's
    do: BatchNorm statistics from the training faces, and a classifier on the four main directions of
    the pooled features (classes = +/- each direction). A random classifier reads directions the faces
    barely move along, so nearly every face gets the same class."""
    torch.manual_seed(seed)
    model = timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=8)
    pixels = transform_for(model).normalize(_train_faces(model, data))
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    features: list[torch.Tensor] = []
    hook = model.fc.register_forward_hook(lambda _m, inputs, _o: features.append(inputs[0].detach()))
    with torch.no_grad():
        model.train()(pixels)
        model.eval()(pixels)
    hook.remove()
    x = features[-1]
    mean = x.mean(0)
    _, scale, directions = torch.linalg.svd(x - mean, full_matrices=False)
    unit = directions[:4] / scale[:4, None] * len(x) ** 0.5
    weight = torch.cat([unit, -unit]) * 3.0
    with torch.no_grad():
        model.fc.weight.copy_(weight)
        model.fc.bias.copy_(-(weight @ mean))
    return model.eval()


def face_pictures(folder: Path, count: int = 4, seed: int = 0) -> Path:
    """uint8 'face crops' of different sizes (for --no-detect)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        size = (40 + 9 * i, 36 + 7 * i, 3)
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / f"face{i}.png")
    return folder
