"""Class-order mapping between FERPlus, RAF-DB and AffectNet.

The three datasets name the same basic expressions in different orders (and RAF-DB has no contempt), so a
model trained on one is evaluated on another only after its label indices are translated by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np

from ran.errors import UserError
from ran.labels import DATASET_CLASSES as CLASS_ORDERS

UNMAPPED = -1


def class_names(order: str | Sequence[str]) -> tuple[str, ...]:
    """A class order given by dataset name ('ferplus', 'rafdb', 'affectnet', 'affectnet7') or as names."""
    if isinstance(order, str):
        if order not in CLASS_ORDERS:
            raise UserError(f"unknown class order {order!r}; expected one of {', '.join(CLASS_ORDERS)}")
        return CLASS_ORDERS[order]
    return tuple(order)


def class_index_map(source: str | Sequence[str], target: str | Sequence[str]) -> list[int]:
    """For each source class index, the target index of the same name, or -1 when the target lacks it."""
    target_names = class_names(target)
    return [target_names.index(name) if name in target_names else UNMAPPED for name in class_names(source)]


def convert_labels(
    labels: Sequence[int] | np.ndarray, source: str | Sequence[str], target: str | Sequence[str]
) -> np.ndarray:
    """Translate label indices from one class order to another (-1 where the target has no such class)."""
    lookup = np.asarray(class_index_map(source, target), dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(lookup)):
        raise UserError(
            f"labels must lie in 0..{len(lookup) - 1} for the source order, "
            f"got {labels.min()}..{labels.max()}"
        )
    return lookup[labels]


def remap_dataset(
    dataset: datasets.Dataset, target: str | Sequence[str], *, drop_unmapped: bool = True
) -> datasets.Dataset:
    """A dataset relabelled in another class order: ``label`` by name, ``soft_label`` columns moved along
    (mass on classes the target lacks is dropped and the rest renormalised); rows whose class the target
    lacks are dropped (or an error when ``drop_unmapped`` is False)."""
    source_names = dataset.features["label"].names
    target_names = class_names(target)
    lookup = np.asarray(class_index_map(source_names, target_names))
    labels = np.asarray(dataset["label"])
    unmapped = lookup[labels] == UNMAPPED
    if unmapped.any():
        if not drop_unmapped:
            missing = sorted({source_names[i] for i in labels[unmapped]})
            raise UserError(
                f"{int(unmapped.sum())} rows have classes the target order lacks: {', '.join(missing)}"
            )
        dataset = dataset.select(np.flatnonzero(~unmapped))

    def relabel(labels: list[int], soft_labels: list[list[float]]) -> dict:
        moved = []
        for soft in soft_labels:
            out = np.zeros(len(target_names), dtype=np.float32)
            for index, value in enumerate(soft):
                if lookup[index] != UNMAPPED:
                    out[lookup[index]] = value
            moved.append((out / out.sum() if out.sum() > 0 else out).tolist())
        return {"label": lookup[np.asarray(labels, dtype=np.int64)].tolist(), "soft_label": moved}

    features = dataset.features.copy()
    features["label"] = datasets.ClassLabel(names=list(target_names))
    return dataset.map(relabel, batched=True, input_columns=["label", "soft_label"], features=features)
