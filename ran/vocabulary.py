"""The words every option of the package is spelled with, defined once: the command-line parsers, the web
page and the library all import them from here, so a choice offered in one place is accepted in all.

This module imports nothing (not torch), so a parser can show the choices in ``--help`` at once. Each
vocabulary is a ``Literal`` type for annotations and a tuple of its values for checks and ``choices=``.
"""

from __future__ import annotations

from typing import Literal, get_args

# Which region boxes are cut from a face: the model's own, or boxes on the detected eyes, nose and mouth.
RegionMode = Literal["model", "landmarks"]
REGION_MODES: tuple[str, ...] = get_args(RegionMode)

# Face detectors by name; 'haar' is an older name of the OpenCV cascade, still accepted everywhere.
Detector = Literal["mtcnn", "cascade"]
DETECTORS: tuple[str, ...] = get_args(Detector)
DETECTOR_ALIASES: dict[str, str] = {"haar": "cascade"}
DETECTOR_CHOICES: tuple[str, ...] = (*DETECTORS, *DETECTOR_ALIASES)

# What colour a model is fed: the mode it was trained on ('auto'), or one forced.
ColorMode = Literal["auto", "rgb", "gray"]
COLOR_MODES: tuple[str, ...] = get_args(ColorMode)

# What colour a model was trained on: it makes any RGB input of a gray model gray itself.
InputColor = Literal["rgb", "gray"]
INPUT_COLORS: tuple[str, ...] = get_args(InputColor)

# How the region attention weights are normalised across regions.
AttentionMode = Literal["softmax", "sigmoid"]
ATTENTION_MODES: tuple[str, ...] = get_args(AttentionMode)

# What runs a model: PyTorch, or onnxruntime on an .onnx file from ``ran export`` (fp32 or int8).
Runtime = Literal["torch", "onnx"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)

# Training recipe choices: the optimizer (SGD as the original), the learning-rate schedule, the target
# a training face gives (its class index or the dataset's soft label distribution), the device.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
SCHEDULES: tuple[str, ...] = ("multistep", "cosine")
LABEL_TARGETS: tuple[str, ...] = ("hard", "soft")
DEVICES: tuple[str, ...] = ("cpu", "cuda")

# Autocast precisions; accelerate's 'no' and the torch dtype names are accepted as aliases.
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
PRECISION_ALIASES: dict[str, str] = {
    "no": "fp32",
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
}
PRECISION_CHOICES: tuple[str, ...] = (*PRECISIONS, *PRECISION_ALIASES)

# Two different minimum sizes, for two different things:
# the smallest side a model's input (a face, a region) is resized to: smaller ones show no expression;
MIN_FACE_SIDE = 8
# the smallest side of an image (photo, frame, array) accepted as input at all: it is resized up to the
# face size anyway, but a 1-pixel side cannot be resampled in both directions.
MIN_IMAGE_SIDE = 2


def resolve_detector(name: str) -> str:
    """A detector's canonical name (``haar`` -> ``cascade``); other names unchanged, checked by the caller."""
    return DETECTOR_ALIASES.get(name, name)


__all__ = [
    "ATTENTION_MODES",
    "COLOR_MODES",
    "DETECTORS",
    "DETECTOR_ALIASES",
    "DETECTOR_CHOICES",
    "DEVICES",
    "OPTIMIZERS",
    "SCHEDULES",
    "LABEL_TARGETS",
    "INPUT_COLORS",
    "MIN_FACE_SIDE",
    "MIN_IMAGE_SIDE",
    "PRECISIONS",
    "PRECISION_ALIASES",
    "PRECISION_CHOICES",
    "REGION_MODES",
    "RUNTIMES",
    "AttentionMode",
    "ColorMode",
    "Detector",
    "InputColor",
    "Precision",
    "RegionMode",
    "Runtime",
    "resolve_detector",
]
