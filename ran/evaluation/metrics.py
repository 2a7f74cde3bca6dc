"""Per-subset metrics from predictions and labels: accuracy with counts, per-class and mean class accuracy,
and the confusion matrix (what the RAN papers report)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def subset_metrics(predictions: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict:
    """Accuracy with counts, per-class accuracy, mean class accuracy and the confusion matrix."""
    num_classes = len(class_names)
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes)  # rows: true class, columns: predicted
    correct, total = int(confusion.diagonal().sum()), int(labels.numel())
    per_class: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(class_names):
        class_total = int(confusion[index].sum())
        class_correct = int(confusion[index, index])
        per_class[name] = {
            "accuracy": class_correct / class_total if class_total else None,
            "correct": class_correct,
            "total": class_total,
        }
    present = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    return {
        "accuracy": correct / total if total else 0.0,
        "correct": correct,
        "total": total,
        "mean_class_accuracy": sum(present) / len(present) if present else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }
