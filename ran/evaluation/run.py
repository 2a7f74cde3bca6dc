"""Running a RAN over the test split and every subset of a ``ran data`` folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ran.data.batches import FaceImages, collate_faces
from ran.devices import inference_model
from ran.evaluation.metrics import subset_metrics
from ran.precision import autocast
from ran.transforms import FaceTransform, transform_for

NOT_EVALUATED = ("train", "validation")


def _subset_names(dataset_dict: Mapping[str, Any], subsets: Sequence[str] | None) -> list[str]:
    names = list(subsets) if subsets else [k for k in dataset_dict if k not in NOT_EVALUATED]
    if not names:
        raise ValueError(f"no test split or subset to evaluate; the dataset has {sorted(dataset_dict)}")
    missing = [name for name in names if name not in dataset_dict]
    if missing:
        raise ValueError(
            f"the dataset has no split {', '.join(map(repr, missing))}; it has {sorted(dataset_dict)}"
        )
    return names


def _class_names(model: nn.Module, dataset_dict: Mapping[str, Any], names: list[str]) -> list[str]:
    classes = list(dataset_dict[names[0]].features["label"].names)
    if getattr(model, "num_classes", None) != len(classes):
        raise ValueError(
            f"num_classes mismatch: the model predicts {getattr(model, 'num_classes', None)} classes, the "
            f"dataset has {len(classes)} ({', '.join(classes)})"
        )
    for name in names:
        other = list(dataset_dict[name].features["label"].names)
        if other != classes:
            raise ValueError(f"split {name!r}: classes {other} differ from {classes}")
    return classes


def predict_split(
    model: nn.Module,
    split: Any,
    transform: FaceTransform,
    *,
    batch_size: int,
    precision: str,
    description: str = "",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions, labels) of ``model`` on one split; they stay on the model's device until the end."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    loader = DataLoader(
        FaceImages(split, transform), batch_size=batch_size, shuffle=False, collate_fn=collate_faces
    )
    predictions, labels = [], []
    with torch.inference_mode(), autocast(device, precision):
        for batch in tqdm(loader, desc=description, leave=False, disable=not progress):
            images = transform.normalize(batch["images"].to(device, non_blocking=True))
            predictions.append(model(images).argmax(dim=1))
            labels.append(batch["labels"])
    return torch.cat(predictions).cpu(), torch.cat(labels)


def evaluate(
    model: nn.Module,
    dataset_dict: Mapping[str, Any],
    subsets: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    mixed_precision: str = "fp32",
    device: str | torch.device | None = None,
    image_size: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on each subset (default: every split except train / validation).

    Faces are fed as ``ran.transforms.transform_for(model)`` says (``image_size`` overrides the side).
    Runs on ``device`` (default: the model's own); the caller's model is left as it was (device, memory
    format, mode). Returns ``{subset: {'accuracy', 'correct', 'total', 'mean_class_accuracy',
    'per_class', 'confusion_matrix'}}``, the form ``ran.save_pretrained(..., results=...)`` puts on the
    model card.
    """
    names = _subset_names(dataset_dict, subsets)
    classes = _class_names(model, dataset_dict, names)
    transform = transform_for(model, image_size)
    results: dict[str, dict[str, Any]] = {}
    with inference_model(model, device) as net:
        for name in names:
            predictions, labels = predict_split(
                net,
                dataset_dict[name],
                transform,
                batch_size=batch_size,
                precision=mixed_precision,
                description=f"evaluating {name}",
                progress=progress,
            )
            results[name] = subset_metrics(predictions, labels, classes)
    return results
