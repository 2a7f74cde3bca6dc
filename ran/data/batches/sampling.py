"""Class-balanced sampling for training (the original AffectNet recipe): the weights torch's
``WeightedRandomSampler`` draws with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ran.errors import UserError


def _labels_of(labels_or_dataset: Sequence[int] | np.ndarray | torch.Tensor | object) -> np.ndarray:
    if hasattr(labels_or_dataset, "column_names") and "label" in labels_or_dataset.column_names:  # datasets
        return np.asarray(labels_or_dataset["label"], dtype=np.int64)
    return np.asarray(labels_or_dataset, dtype=np.int64)


def class_balanced_weights(
    labels_or_dataset: Sequence[int] | np.ndarray | torch.Tensor | object, num_classes: int | None = None
) -> torch.Tensor:
    """Per-sample weight 1 / (size of its class): each class is drawn equally often in expectation."""
    labels = _labels_of(labels_or_dataset)
    if labels.size == 0:
        raise UserError("class-balanced sampling needs at least one labelled sample")
    if labels.min() < 0:
        raise UserError(f"labels must be non-negative, got {labels.min()}")
    counts = np.bincount(labels, minlength=num_classes or 0)
    return torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
