"""The torch side of a ``ran data`` folder: its rows as batches of source faces, for training and evaluation.

Only the small source faces travel (48x48 for FERPlus), as uint8; the model cuts its regions on its own
device after :meth:`ran.transforms.FaceTransform.normalize`, so no region files exist anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from ran.transforms import FaceTransform


def load_splits(path_or_repo_id: str | Path) -> Any:
    """Every split of a dataset folder (or Hub dataset repo) written by ``ran data``."""
    from ran.data.folder import load_dataset_folder

    return load_dataset_folder(path_or_repo_id)


class FaceImages(Dataset):
    """Rows of a ``ran data`` split as {image: uint8 (3, H, W), label, [soft_label]}, prepared by
    ``transform`` (the size and colour the model is fed)."""

    def __init__(self, split: Any, transform: FaceTransform, soft_labels: bool = False) -> None:
        self.split = split
        self.transform = transform
        self.soft_labels = soft_labels
        self.num_classes = split.features["label"].num_classes

    def __len__(self) -> int:
        return self.split.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.split[int(index)]
        item = {"image": self.transform.prepare(row["image"]), "label": int(row["label"])}
        if self.soft_labels:
            soft = row.get("soft_label") or []
            if len(soft) != self.num_classes:
                raise ValueError(
                    f"row {index} ({row.get('image_name')}): soft_label has {len(soft)} values, expected "
                    f"{self.num_classes}; use --label-mode hard for this dataset"
                )
            item["soft_label"] = torch.tensor(soft, dtype=torch.float32)
        return item


def collate_faces(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack source images (uint8) and their targets."""
    sizes = {tuple(item["image"].shape) for item in items}
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sorted(sizes)} in one batch; pass --image-size N")
    batch = {
        "images": torch.stack([item["image"] for item in items]),
        "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),
    }
    if "soft_label" in items[0]:
        batch["soft_labels"] = torch.stack([item["soft_label"] for item in items])
    return batch


class EpochSampler(Sampler[int]):
    """Data order fixed by (seed, epoch): a permutation, or class-balanced draws with replacement.

    Stateless apart from the epoch number, so a resumed run (and every process of a distributed one)
    sees exactly the order the original run saw.
    """

    def __init__(self, num_samples: int, seed: int, weights: torch.Tensor | None = None) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.weights = weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        return iter(order.tolist())


__all__ = ["EpochSampler", "FaceImages", "collate_faces", "load_splits"]
