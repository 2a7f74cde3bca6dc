"""A model on one split under every perturbation and severity: the per-face predictions (``ran robustness``).

The split is read and decoded once; each batch of faces is then run clean and under every (perturbation,
severity), perturbed on the model's device by :func:`ran.robustness.perturb` with the faces' row numbers
as their ids, so every model sees the very same perturbed faces. What comes back is one
:class:`SubsetSamples` per setting (``clean``, ``eye_band@3``, ...), the form ``ran compare`` reads, plus,
for occluders, the share of each model region the occluder covered on each face (the attention shift).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ran.data.batches import FaceImages, collate_faces
from ran.devices import model_device
from ran.errors import UserError
from ran.evaluation.attention import region_labels
from ran.evaluation.classes import match_classes
from ran.evaluation.run import _data_classes, _dropped, _kept_rows, recorded_precision
from ran.evaluation.samples import SubsetSamples, row_ids
from ran.inference import infer, on_device
from ran.modelio.loading import class_names
from ran.robustness import SEVERITIES, covered_fraction, is_occluder, occlusion_mask, parse_kind, perturb
from ran.transforms import transform_for

CLEAN = "clean"


def canonical_kind(kind: str) -> str:
    """The one spelling of a perturbation: ``eye_band`` for the solid fill, ``eye_band:noise`` otherwise."""
    name, fill = parse_kind(kind)
    return name if fill in (None, "solid") else f"{name}:{fill}"


def setting_name(kind: str, severity: int) -> str:
    """``eye_band@3``: a perturbation at a severity, the 'subset' name of its faces."""
    return f"{kind}@{severity}"


def settings(kinds: Sequence[str], severities: Sequence[int] = SEVERITIES) -> list[tuple[str, int]]:
    return [(kind, s) for kind in kinds for s in severities]


@dataclass
class _Collected:
    """Per setting, the batches' probabilities, region weights and region coverage (CPU tensors)."""

    probabilities: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    weights: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    coverage: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def add(self, name: str, result: Any, coverage: torch.Tensor | None = None) -> None:
        self.probabilities.setdefault(name, []).append(result.probabilities.cpu())
        if result.weights is not None:
            self.weights.setdefault(name, []).append(result.weights.cpu())
        if coverage is not None:
            self.coverage.setdefault(name, []).append(coverage.cpu())


@dataclass
class RobustnessSamples:
    """What one model said on the clean faces and on every perturbed setting, face by face."""

    samples: dict[str, SubsetSamples]  # CLEAN first, then setting_name(kind, severity)
    coverage: dict[str, np.ndarray]  # occluder settings: (n, K) share of each region covered
    kinds: list[str]
    has_attention: bool


def _batch_coverage(
    kind: str, severity: int, faces: torch.Tensor, ids: torch.Tensor, boxes: torch.Tensor | None, seed: int
) -> torch.Tensor | None:
    if boxes is None or not is_occluder(kind):
        return None
    mask = occlusion_mask(kind, severity, tuple(faces.shape[-2:]), seed, ids=ids, device=faces.device)
    return covered_fraction(mask, boxes)


def _run_batches(
    net: nn.Module, loader: Any, kinds: Sequence[str], *, seed: int, options: Mapping[str, Any], bar: Any
) -> _Collected:
    collected = _Collected()
    boxes = getattr(net, "boxes", None) if hasattr(net, "forward_with_attention") else None
    device = model_device(net)  # an ONNX graph (ran.runtime.OnnxModel) has no parameters: the CPU
    for batch in loader:
        faces, ids = batch["images"].to(device), batch["ids"].to(device)
        collected.add(CLEAN, infer(net, faces, **options))
        bar.update(1)
        for kind, severity in settings(kinds):
            perturbed = perturb(faces, kind, severity, seed, ids=ids)
            coverage = _batch_coverage(kind, severity, faces, ids, boxes, seed)
            collected.add(setting_name(kind, severity), infer(net, perturbed, **options), coverage)
            bar.update(1)
    return collected


def _with_ids(rows: np.ndarray) -> Any:
    """collate_faces with each face's id its row number in the split (its perturbation id): the batch's
    ids count the kept rows, which ``rows`` maps back to the split's."""

    def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate_faces(items)
        batch["ids"] = torch.as_tensor([int(rows[i]) for i in batch["ids"]], dtype=torch.int64)
        return batch

    return collate


def robustness_samples(
    model: nn.Module,
    dataset_dict: Mapping[str, Any],
    kinds: Sequence[str],
    *,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 64,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    image_size: int | None = None,
    cross_dataset: bool = False,
    progress: bool = True,
    description: str = "",
) -> RobustnessSamples:
    """``model`` on split ``split``, clean and under every kind in ``kinds`` at severities 1-5.

    A RAN, a plain classifier (no region weights: empty weight columns, no coverage) or an ONNX graph from
    ``ran export`` (``ran.runtime.OnnxModel``, fp32 or int8, on the CPU). Faces are fed as
    ``transform_for(model, image_size)`` says; a face's perturbation id is its row in the split. Every
    setting records the precision it ran in (``fp32``, ``bf16``, ``onnx int8``, ...).
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    if split not in dataset_dict:
        raise UserError(f"the dataset has no split {split!r}; it has {sorted(dataset_dict)}")
    kinds = list(dict.fromkeys(canonical_kind(k) for k in kinds))
    match = match_classes(
        class_names(model), _data_classes(dataset_dict, [split]), cross_dataset=cross_dataset
    )
    identity = list(match.model_index) == list(range(int(model.num_classes)))
    data, rows, labels, unlabelled = _kept_rows(dataset_dict[split], match, split)
    transform = transform_for(model, image_size)
    loader = DataLoader(
        FaceImages(data, transform),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=_with_ids(rows),
    )
    options = {
        "transform": transform,
        "precision": precision,
        "classes": None if identity else match.model_index,
    }
    net = on_device(model, device)
    total = len(loader) * (1 + len(kinds) * len(SEVERITIES))
    with tqdm(total=total, desc=description or "perturbing", leave=False, disable=not progress) as bar:
        collected = _run_batches(net, loader, kinds, seed=seed, options=options, bar=bar)
    has_attention = bool(collected.weights)
    regions = region_labels(model.boxes) if has_attention else []
    base = {
        "ids": row_ids(dataset_dict[split], rows.tolist()),
        "rows": rows,
        "labels": labels,
        "classes": list(match.names),
        "regions": regions,
        "cross_dataset": _dropped(match, dataset_dict[split].num_rows - unlabelled - rows.size),
        "unlabelled": unlabelled,
        "precision": recorded_precision(model, precision),
    }
    samples = {}
    for name, parts in collected.probabilities.items():
        weights = (
            torch.cat(collected.weights[name]).numpy()
            if has_attention
            else np.zeros((len(rows), 0), np.float32)
        )
        samples[name] = SubsetSamples(probabilities=torch.cat(parts).numpy(), weights=weights, **base)
    coverage = {name: torch.cat(parts).numpy() for name, parts in collected.coverage.items()}
    return RobustnessSamples(samples, coverage, kinds, has_attention)


def perturbation_grid(
    model: nn.Module,
    split: Any,
    kinds: Sequence[str],
    *,
    seed: int,
    row: int = 0,
    image_size: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """One face (row ``row`` of ``split``, as ``model`` is fed it) under every kind and severity:
    (kinds, 1 + severities, H, W, 3) uint8, clean face first in each row, and the row names."""
    face = FaceImages(split, transform_for(model, image_size))[row]["image"].unsqueeze(0)
    ids = torch.tensor([row])
    names = [canonical_kind(k) for k in kinds]
    rows = [[face[0]] + [perturb(face, kind, s, seed, ids=ids)[0] for s in SEVERITIES] for kind in names]
    return torch.stack([torch.stack(r) for r in rows]).permute(0, 1, 3, 4, 2).numpy(), names


__all__ = [
    "CLEAN",
    "RobustnessSamples",
    "canonical_kind",
    "perturbation_grid",
    "robustness_samples",
    "setting_name",
    "settings",
]
