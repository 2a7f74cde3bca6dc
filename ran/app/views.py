"""What the page shows of one prediction, as plain values (no gradio here, so it is testable alone): the
status line, the photo with labelled face boxes and the face selector's choices. (A face's bars are its
``probabilities``; its region-attention picture is ``ran.pipeline.pictures.face_picture``.)"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from ran.app.predictor import Prediction
from ran.errors import UserError
from ran.pipeline import FacePrediction

# The photo is shown at most this many pixels long (boxes scaled to match); the model saw the original.
DISPLAY_SIDE = 1024
NO_FACE_HINT = "try a photo with a larger, less covered face, or the other face detector"
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def escape(text: str) -> str:
    """``text`` shown literally in Markdown (file names come from users)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def face_label(face: FacePrediction) -> str:
    """How a face is named on the photo and in the selector: its index, top expression and probability."""
    return f"face {face.face_index}: {face.label} {face.probabilities[face.label]:.2f}"


def status_text(prediction: Prediction) -> str:
    """The line above the results: how many faces, or why there are none; then any notes."""
    result = prediction.result
    name = escape(result.source)
    if result.error:
        lines = [f"**Could not use {name}**: {escape(result.error)}"]
    elif not result.faces:
        lines = [f"**No face found** in {name}: {NO_FACE_HINT}."]
    else:
        count = len(result.faces)
        found = "; ".join(escape(face_label(f)) for f in result.faces)
        lines = [
            f"**{count} face{'s' if count != 1 else ''} found** in {name} "
            f"({prediction.seconds:.2f} s): {found}"
        ]
    for note in (result.warning, prediction.model_note):
        if note:
            lines.append(f"Note: {escape(note)}")
    return "\n\n".join(lines)


def error_text(message: str) -> str:
    """A problem with the model or the options, shown where the results would be."""
    return f"**Could not predict**: {escape(message)}"


def annotated_photo(prediction: Prediction) -> tuple[np.ndarray, list[tuple[tuple[int, int, int, int], str]]]:
    """The photo (RGB, at most ``DISPLAY_SIDE`` long) and one (box, label) per face, in its pixels."""
    image = prediction.image
    if not isinstance(image, Image.Image):
        raise UserError("prediction.image: the photo could not be read, so there is nothing to show")
    factor = min(1.0, DISPLAY_SIDE / max(image.size))
    shown = image.convert("RGB") if image.mode != "RGB" else image
    if factor < 1.0:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        shown = shown.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    width, height = shown.size
    boxes = []
    for face in prediction.result.faces:
        x0, y0, x1, y1 = (v * factor for v in face.box)
        box = (
            int(np.clip(round(x0), 0, width - 1)),
            int(np.clip(round(y0), 0, height - 1)),
            int(np.clip(round(x1), 1, width)),
            int(np.clip(round(y1), 1, height)),
        )
        boxes.append((box, face_label(face)))
    return np.asarray(shown), boxes


def face_choices(prediction: Prediction) -> list[tuple[str, int]]:
    """The selector's (label, face index) pairs."""
    return [(face_label(f), f.face_index) for f in prediction.result.faces]


__all__ = [
    "DISPLAY_SIDE",
    "annotated_photo",
    "error_text",
    "escape",
    "face_choices",
    "face_label",
    "status_text",
]
