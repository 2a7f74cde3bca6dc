"""Per-subset metrics from predictions and labels: accuracy with counts, per-class and mean class accuracy,
and the confusion matrix (what the RAN papers report), plus what a reviewer needs to trust them: bootstrap
intervals, calibration and the region-attention statistics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ran.evaluation.attention import region_statistics
from ran.evaluation.samples import SubsetSamples
from ran.evaluation.statistics import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    accuracy_intervals,
    calibration,
    check_resamples,
)


def subset_metrics(predictions: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict:
    """Accuracy with counts, per-class accuracy, mean class accuracy and the confusion matrix.

    Every label must be a class index: unlabelled rows (-1) are left out before (``evaluate_samples``
    does), as a confusion matrix has no row for them; they are refused here with their count.
    """
    num_classes = len(class_names)
    outside = int(((labels < 0) | (labels >= num_classes)).sum())
    if outside:
        raise ValueError(
            f"{outside} of {labels.numel()} labels are outside 0..{num_classes - 1} (-1: unlabelled); "
            "leave those rows out before scoring"
        )
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


def subset_summary(samples: SubsetSamples, *, resamples: int, seed: int) -> dict[str, Any]:
    """Everything results.json says about one subset, from its per-face predictions."""
    labels, predictions = samples.labels, samples.predictions
    result = subset_metrics(torch.from_numpy(predictions), torch.from_numpy(labels), samples.classes)
    result["interval"] = accuracy_intervals(
        labels, predictions, len(samples.classes), resamples=resamples, seed=seed
    )
    result["calibration"] = calibration(samples.confidence, samples.correct)
    result["attention"] = region_statistics(samples.weights, samples.regions)
    if samples.cross_dataset:
        result["classes"] = dict(samples.cross_dataset)
    if samples.unlabelled:
        result["unlabelled"] = int(samples.unlabelled)
    if samples.precision:
        result["precision"] = samples.precision
    return result


def summarize(
    samples: Mapping[str, SubsetSamples], *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> dict[str, dict[str, Any]]:
    """``{subset: subset_summary}``: the results of an evaluation (the form results.json holds).

    Per subset: ``accuracy``, ``correct``, ``total``, ``mean_class_accuracy``, ``per_class``,
    ``confusion_matrix``; ``interval`` (bootstrap 95 % intervals: ``method``, ``level``, ``resamples``,
    ``seed``, ``accuracy`` [lo, hi], ``mean_class_accuracy`` [lo, hi]); ``calibration`` (``ece``, ``bins``,
    ``bin_count``, ``bin_confidence``, ``bin_accuracy``); ``attention`` (``regions``, ``mean_weight``,
    ``top_share``); and, for a cross-dataset evaluation, ``classes`` (``evaluated``,
    ``dropped_from_model``, ``dropped_from_data``, ``rows_dropped``); ``unlabelled``: the rows labelled
    -1 that were left out of every number above (only when there were some); ``precision``: the autocast
    precision the model ran in (``fp32``, ``bf16``, ``fp16``), which every number above depends on.
    """
    check_resamples(resamples)
    return {name: subset_summary(s, resamples=resamples, seed=seed) for name, s in samples.items()}
