"""The torch side of a ``ran data`` folder: its rows as batches of source faces, for training and evaluation.

Only the small source faces travel (48x48 for FERPlus), as uint8; the model cuts its regions on its own
device after :meth:`ran.transforms.FaceTransform.normalize`, so no region files exist anywhere.
Class-balanced sampling weights (the original AffectNet recipe) are in ``ran.data.batches.sampling``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from ran.errors import UserError
from ran.transforms import FaceTransform


def load_splits(path_or_repo_id: str | Path, *, progress: bool = True) -> Any:
    """Every split of a dataset folder (or Hub dataset repo) written by ``ran data``; ``progress=False``
    hides ``datasets``' own bars too (a folder's first read builds its cache with one per split)."""
    from ran.data.format.folder import load_dataset_folder

    return load_dataset_folder(path_or_repo_id, progress=progress)


class FaceImages(Dataset):
    """Rows of a ``ran data`` split as {image: uint8 (3, H, W), label, [soft_label]}, prepared by
    ``transform`` (the size and colour the model is fed).

    The DataLoader fetches a batch through :meth:`__getitems__`: one ``split[indices]`` call reads and
    decodes the batch's rows, instead of one ``split[i]`` call (and its per-row overhead) per image.
    """

    def __init__(self, split: Any, transform: FaceTransform, soft_labels: bool = False) -> None:
        self.split = split
        self.transform = transform
        self.soft_labels = soft_labels
        self.num_classes = split.features["label"].num_classes
        columns = ["image", "label", *(["soft_label", "image_name"] if soft_labels else [])]
        # only the columns a batch needs are read (votes, names, usage stay on disk)
        self._columns = split.select_columns([c for c in columns if c in split.column_names])

    def __len__(self) -> int:
        return self.split.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """The rows ``indices`` read and decoded in one call; a list of items for ``collate_faces``."""
        indices = [int(i) for i in indices]
        try:
            rows = self._columns[indices]
            images = [self.transform.prepare(image) for image in rows["image"]]
        except OSError as err:  # PIL's: bytes that are no image, a truncated one
            raise UserError(self._undecodable(indices, err)) from None
        items = []
        for position, index in enumerate(indices):
            item = {
                "image": images[position],
                "label": self._label(rows["label"][position], index),
                "id": index,
            }
            if self.soft_labels:
                item["soft_label"] = self._soft_label(rows, position, index)
            items.append(item)
        return items

    def _undecodable(self, indices: list[int], err: OSError) -> str:
        """One line naming the first row of ``indices`` whose image does not decode (the batch decodes as
        a whole); ``err`` as it was where no single row fails (not an image's fault, then)."""
        for index in indices:
            try:
                self.transform.prepare(self._columns[index]["image"])
            except OSError as row_err:
                reason = "not an image format PIL reads" if "cannot identify" in str(row_err) else row_err
                return f"split {self.split.split or '?'}, row {index}: its image cannot be decoded ({reason})"
        raise err

    def _label(self, label: int | None, index: int) -> int:
        """A class index; an unlabelled row (-1) reaching a batch is a caller's slip, refused, not
        trained on as the last class (``ran.data.format.labelled.keep_labelled`` leaves such rows out)."""
        if label is None or not 0 <= int(label) < self.num_classes:
            raise UserError(
                f"row {index}: label {label} is not a class index 0..{self.num_classes - 1}; leave "
                "unlabelled rows (-1) out first (ran.data.format.labelled.keep_labelled)"
            )
        return int(label)

    def _soft_label(self, rows: dict[str, list], position: int, index: int) -> torch.Tensor:
        soft = (rows.get("soft_label") or [None] * (position + 1))[position] or []
        if len(soft) != self.num_classes:
            name = (rows.get("image_name") or [None] * (position + 1))[position]
            raise UserError(
                f"row {index} ({name}): soft_label has {len(soft)} values, expected "
                f"{self.num_classes}; use --label-mode hard for this dataset"
            )
        return torch.tensor(soft, dtype=torch.float32)


def collate_faces(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack source images (uint8) and their targets; ``ids``: each face's row, as plain integers, so
    that they stay on the host when the batch moves to the device (``ran train --augment`` plans there)."""
    sizes = {tuple(item["image"].shape) for item in items}
    if len(sizes) > 1:
        raise UserError(f"images of different sizes {sorted(sizes)} in one batch; pass --image-size N")
    batch = {
        "images": torch.stack([item["image"] for item in items]),
        "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),
    }
    if "id" in items[0]:
        batch["ids"] = [item["id"] for item in items]
    if "soft_label" in items[0]:
        batch["soft_labels"] = torch.stack([item["soft_label"] for item in items])
    return batch


class EpochSampler(Sampler[int]):
    """Data order fixed by (seed, epoch): a permutation, or class-balanced draws with replacement.

    Stateless apart from the epoch number, so a resumed run (and every process of a distributed one)
    sees exactly the order the original run saw. ``population``: the rows drawn from, when an epoch takes
    fewer (``num_samples``): processes that read shards of different sizes agree on the steps per epoch.
    """

    def __init__(
        self, num_samples: int, seed: int, weights: torch.Tensor | None = None, population: int | None = None
    ) -> None:
        self.num_samples = num_samples
        self.population = num_samples if population is None else population
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
            order = torch.randperm(self.population, generator=generator)[: self.num_samples]
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        return iter(order.tolist())


__all__ = ["EpochSampler", "FaceImages", "collate_faces", "load_splits"]
