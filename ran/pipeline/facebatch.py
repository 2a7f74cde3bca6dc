"""Faces on their way through the model, a batch at a time: what preprocessing gives (:class:`FaceInput`),
what one model call gives (:class:`FaceOutputs`), and the step from outputs to :class:`FacePrediction`
objects (:func:`face_predictions`), done with one tensor operation per batch rather than per face: the
region boxes of every face mapped to source pixels at once, each output read out of its tensor once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ran.pipeline.faces import Face
from ran.pipeline.results import FacePrediction, InputResult


@dataclass
class FaceInput:
    """One face ready for the model: what ``preprocess`` gives and ``_forward`` takes."""

    result: InputResult
    face_index: int
    face: Face | None  # None when the whole input is the face (detect=False)
    crop_box: tuple[float, float, float, float]
    pixels: torch.Tensor  # uint8 (3, H, W), prepared by the model's transform
    boxes: torch.Tensor | None  # (K, 4) landmark regions, else None (the model's own boxes)
    crop: np.ndarray | None  # the crop at picture size, kept only for pictures


@dataclass
class FaceOutputs:
    """What one batched model call gives, on the CPU: probabilities (B, C), region weights (B, K) and the
    fractional region boxes used (B, K, 4)."""

    probabilities: torch.Tensor
    weights: torch.Tensor
    boxes: torch.Tensor


def region_pixels(boxes: torch.Tensor, crop_boxes: torch.Tensor) -> torch.Tensor:
    """Fractional region boxes (B, K, 4) of faces cropped at ``crop_boxes`` (B, 4), in source pixels."""
    origin = crop_boxes[:, :2].repeat(1, 2)  # x0, y0, x0, y0
    size = (crop_boxes[:, 2:] - crop_boxes[:, :2]).repeat(1, 2)  # w, h, w, h
    return boxes * size[:, None, :] + origin[:, None, :]


def face_predictions(batch: list[FaceInput], outputs: FaceOutputs, names: list[str]) -> list[FacePrediction]:
    """One :class:`FacePrediction` per face of ``batch``: boxes in the source image's pixels, numbers
    rounded for the JSON line (probabilities and weights to 6 places, pixels to 2)."""
    crop_boxes = torch.tensor([item.crop_box for item in batch], dtype=torch.float32)
    regions = region_pixels(outputs.boxes.float(), crop_boxes).tolist()
    probabilities = outputs.probabilities.tolist()
    weights = outputs.weights.tolist()
    labels = outputs.probabilities.argmax(dim=1).tolist()
    return [
        _prediction(item, names, labels[i], probabilities[i], weights[i], regions[i])
        for i, item in enumerate(batch)
    ]


def _prediction(
    item: FaceInput,
    names: list[str],
    label: int,
    probabilities: list[float],
    weights: list[float],
    regions: list[list[float]],
) -> FacePrediction:
    face = item.face
    return FacePrediction(
        face_index=item.face_index,
        box=[round(float(v), 2) for v in (face.box if face else item.crop_box)],
        crop_box=[round(float(v), 2) for v in item.crop_box],
        score=round(float(face.score), 5) if face else None,
        label=names[label],
        probabilities={name: round(p, 6) for name, p in zip(names, probabilities)},
        region_weights=[round(w, 6) for w in weights],
        region_boxes=[[round(v, 2) for v in box] for box in regions],
        landmarks=face.landmarks.round(2).tolist()
        if face is not None and face.landmarks is not None
        else None,
        crop=item.crop,
        track=getattr(face, "track", None),
    )


__all__ = ["FaceInput", "FaceOutputs", "face_predictions", "region_pixels"]
