"""Running a RAN over the test split and every subset of a ``ran data`` folder.

One inference step per batch (``ran.inference.infer``) gives everything the reports need: the class
probabilities (over the classes the model and the data share) and the region weights. They are gathered on
the model's device and moved to the CPU once per subset, then kept per face (:class:`SubsetSamples`) so
that metrics, intervals, calibration, attention statistics and ``ran compare`` never run the model again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ran.data.batches import FaceImages, collate_faces
from ran.data.format.labelled import class_names_of, labelled_rows
from ran.errors import UserError
from ran.evaluation.attention import region_labels
from ran.evaluation.classes import ClassMatch, match_classes
from ran.evaluation.metrics import summarize
from ran.evaluation.samples import SubsetSamples, row_ids
from ran.evaluation.statistics import DEFAULT_RESAMPLES, DEFAULT_SEED, check_resamples
from ran.inference import REPORTED_PRECISION, infer, on_device
from ran.modelio.loading import class_names
from ran.precision import resolve_precision
from ran.transforms import FaceTransform, transform_for

NOT_EVALUATED = ("train", "validation")


def _subset_names(dataset_dict: Mapping[str, Any], subsets: Sequence[str] | None) -> list[str]:
    names = list(subsets) if subsets else [k for k in dataset_dict if k not in NOT_EVALUATED]
    if not names:
        raise UserError(f"no test split or subset to evaluate; the dataset has {sorted(dataset_dict)}")
    missing = [name for name in names if name not in dataset_dict]
    if missing:
        raise UserError(
            f"the dataset has no split {', '.join(map(repr, missing))}; it has {sorted(dataset_dict)}"
        )
    return names


def _data_classes(dataset_dict: Mapping[str, Any], names: list[str]) -> list[str]:
    classes = class_names_of(dataset_dict[names[0]], f"split {names[0]!r}")
    for name in names:
        other = class_names_of(dataset_dict[name], f"split {name!r}")
        if other != classes:
            raise UserError(f"split {name!r}: classes {other} differ from {classes}")
    return classes


def _kept_rows(split: Any, match: ClassMatch, name: str) -> tuple[Any, np.ndarray, np.ndarray, int]:
    """The rows scored: labelled ones (``-1`` rows are counted, never scored) of a class the model
    predicts. Returns the split of those rows, their indices, their labels among ``match.names``, and
    how many rows were unlabelled."""
    if not split.num_rows:
        raise UserError(f"split {name!r} is empty (0 rows): nothing to evaluate; leave it out with --subsets")
    labelled, data_labels = labelled_rows(split, len(match.data_classes), f"split {name!r}")
    if not labelled.size:
        raise UserError(
            f"split {name!r}: all {split.num_rows} rows are unlabelled (label -1): nothing to score; leave "
            "it out with --subsets"
        )
    labels = np.asarray(match.label_lookup(), dtype=np.int64)[data_labels]
    kept = labels >= 0
    if not kept.any():
        raise UserError(
            f"split {name!r}: no row has one of the evaluated classes ({', '.join(match.names)}); leave it "
            "out with --subsets"
        )
    rows, unlabelled = labelled[kept], split.num_rows - labelled.size
    if rows.size < split.num_rows:
        split = split.select(rows)
    return split, rows, labels[kept], unlabelled


def _dropped(match: ClassMatch, rows_dropped: int) -> dict[str, Any] | None:
    """What a cross-dataset report says about a subset's classes (None when nothing was dropped)."""
    return {**match.describe(), "rows_dropped": int(rows_dropped)} if match.is_cross_dataset else None


def predict_split(
    model: nn.Module,
    split: Any,
    transform: FaceTransform,
    *,
    logit_index: Sequence[int] | None = None,
    batch_size: int,
    precision: str,
    description: str = "",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (n, C), region weights (n, K); K = 0 for a plain classifier) of ``model`` on one split,
    on the CPU, through the one inference step (:func:`ran.inference.infer`).

    ``logit_index`` restricts the logits to those classes (in that order) before the softmax. The
    batches' results stay on the model's device until the end and move to the CPU once.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(
        FaceImages(split, transform), batch_size=batch_size, shuffle=False, collate_fn=collate_faces
    )
    probabilities, weights = [], []
    for batch in tqdm(loader, desc=description, leave=False, disable=not progress):
        output = infer(model, batch["images"], transform=transform, precision=precision, classes=logit_index)
        probabilities.append(output.probabilities)
        # a plain classifier has no region weights: zero columns
        weights.append(output.weights if output.weights is not None else output.probabilities[:, :0])
    return torch.cat(probabilities).cpu(), torch.cat(weights).cpu()


def evaluate_samples(
    model: nn.Module,
    dataset_dict: Mapping[str, Any],
    subsets: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    mixed_precision: str = REPORTED_PRECISION,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    cross_dataset: bool = False,
    progress: bool = True,
) -> dict[str, SubsetSamples]:
    """The per-face predictions of ``model`` on each subset (default: every split but train / validation).

    Unlabelled rows (label ``-1``) are not run nor scored; each subset counts them (``unlabelled``). A
    label outside the class list is refused, naming the row.

    Classes are matched by name (:func:`ran.evaluation.classes.match_classes`); with ``cross_dataset``
    a model is scored on the classes it shares with the data. Faces are fed as
    ``ran.transforms.transform_for(model)`` says (``image_size`` overrides the side). Runs on ``device``
    (default: the model's own); the caller's model is left as it was (device, memory format, mode).
    """
    names = _subset_names(dataset_dict, subsets)
    match = match_classes(class_names(model), _data_classes(dataset_dict, names), cross_dataset=cross_dataset)
    logit_index = None if list(match.model_index) == list(range(model.num_classes)) else match.model_index
    transform = transform_for(model, image_size)
    regions = region_labels(model.boxes) if hasattr(model, "forward_with_attention") else []
    samples: dict[str, SubsetSamples] = {}
    net = on_device(model, device)  # the caller's own model when it is already there
    for name in names:
        split, rows, labels, unlabelled = _kept_rows(dataset_dict[name], match, name)
        probabilities, weights = predict_split(
            net,
            split,
            transform,
            logit_index=logit_index,
            batch_size=batch_size,
            precision=mixed_precision,
            description=f"evaluating {name}",
            progress=progress,
        )
        samples[name] = SubsetSamples(
            ids=row_ids(dataset_dict[name], rows.tolist()),
            rows=rows,
            labels=labels,
            probabilities=probabilities.numpy(),
            weights=weights.numpy(),
            classes=list(match.names),
            regions=regions,
            cross_dataset=_dropped(match, dataset_dict[name].num_rows - unlabelled - rows.size),
            unlabelled=unlabelled,
            precision=recorded_precision(model, mixed_precision),
        )
    return samples


def recorded_precision(model: nn.Module, precision: str) -> str:
    """The precision results record: the autocast one, ``onnx fp32`` / ``onnx int8`` for an ONNX graph
    (``ran.runtime.OnnxModel``), ``torch int8`` for an int8 model folder (``ran.int8``): each runs in its
    own."""
    own = getattr(model, "runtime_precision", None)
    if own is None:
        return resolve_precision(precision)
    return f"{'onnx' if getattr(model, 'takes_pixels', False) else 'torch'} {own}"


def evaluate(
    model: nn.Module,
    dataset_dict: Mapping[str, Any],
    subsets: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    mixed_precision: str = REPORTED_PRECISION,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    cross_dataset: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on each subset: :func:`evaluate_samples`, then :func:`summarize`.

    Returns ``{subset: {'accuracy', 'correct', 'total', 'mean_class_accuracy', 'per_class',
    'confusion_matrix', 'interval', 'calibration', 'attention'[, 'classes']}}`` (see
    ``ran.evaluation.metrics.summarize``), the form ``ran.save_pretrained(..., results=...)`` puts on the
    model card. ``resamples`` / ``seed``: the bootstrap of the 95 % intervals.
    """
    check_resamples(resamples)
    samples = evaluate_samples(
        model,
        dataset_dict,
        subsets,
        batch_size=batch_size,
        mixed_precision=mixed_precision,
        device=device,
        image_size=image_size,
        cross_dataset=cross_dataset,
        progress=progress,
    )
    return summarize(samples, resamples=resamples, seed=seed)
