"""What a model is fed, decided once: face size, scaling and mean/std.

The model owns its input contract (``RegionAttentionNet.set_input_format``: colour, face size, mean/std,
saved with its constructor arguments): a model trained on gray faces makes RGB input gray inside its own
forward and resizes other sizes to its face size, so every loader (timm, transformers, ONNX, a user's
``model(x)``) feeds it alike. Training sets the contract from the faces it saw
(:func:`transform_for_images`, :func:`record_transform`); :func:`transform_for` reads it back, in the
manner of timm's ``resolve_model_data_config``, and feeds RGB at the face size, as timm's and transformers'
processors do from the ``pretrained_cfg`` the model writes. Nothing is guessed from the label names.

The work is split in two so that each half runs where it is cheap: :meth:`FaceTransform.prepare` (resize,
on the CPU, in data-loader workers) gives uint8 RGB, and :meth:`FaceTransform.normalize` (0..1, mean/std;
gray only when asked, e.g. ``ran predict --color gray`` for an RGB model) runs on the batch on the model's
device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ran.errors import UserError
from ran.models.inputs import gray_pixels
from ran.numbers import IMAGE_SIDE
from ran.vocabulary import MIN_FACE_SIDE

_INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass(frozen=True)
class FaceTransform:
    """Faces resized to ``size`` (H, W; None keeps the source size), scaled to 0..1, as gray-as-RGB when
    ``grayscale`` (the luma a gray-trained model computes itself) and normalised with ``mean`` / ``std``."""

    size: tuple[int, int] | None = None
    grayscale: bool = False
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise UserError(
                f"interpolation: expected one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if self.size is not None and min(self.size) < MIN_FACE_SIDE:
            raise UserError(f"input size: expected at least {MIN_FACE_SIDE} px, got {self.size}")

    # --- CPU side ------------------------------------------------------------------------------------
    def prepare(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """A PIL image or an (H, W[, 3]) uint8 array -> uint8 RGB tensor (3, H, W) at ``size``."""
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if image.mode != "RGB":
            image = image.convert("RGB")  # grayscale sources become gray-as-RGB, exactly
        if self.size is not None and image.size != (self.size[1], self.size[0]):
            image = image.resize((self.size[1], self.size[0]), _INTERPOLATIONS[self.interpolation])
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)

    # --- device side ---------------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB images (..., 3, H, W) -> float32 model input. Traceable (the ONNX graph contains it).

        The constants are Python numbers, not tensors: building a tensor on a GPU would copy it from the
        host and make the host wait, once per batch.
        """
        x = images.float() / 255.0
        if self.grayscale:
            x = gray_pixels(x, [0.0], [1.0])
        if any(self.mean) or any(s != 1.0 for s in self.std):
            channels = x.unbind(dim=-3)
            x = torch.stack([(c - m) / s for c, m, s in zip(channels, self.mean, self.std)], dim=-3)
        return x

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """One face -> the float (3, H, W) tensor the model takes."""
        return self.normalize(self.prepare(image))

    # --- configs -------------------------------------------------------------------------------------
    def data_config(self) -> dict[str, Any]:
        """The transform as timm's data config entries (the ONNX metadata records them)."""
        config: dict[str, Any] = {
            "grayscale": self.grayscale,
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "interpolation": self.interpolation,
            "crop_pct": 1.0,
        }
        if self.size is not None:
            config["input_size"] = (3, *self.size)
        return config


def transform_for(model: torch.nn.Module, input_size: int | None = None) -> FaceTransform:
    """The transform that feeds ``model`` what it was trained on: RGB (a gray-trained RAN makes it gray
    itself) at the model's face size, with its mean/std; from ``pretrained_cfg`` for other models.

    ``input_size`` overrides the face side (a square); a RAN that records a face size still resizes
    to it in its forward.
    """
    if input_size is not None:
        IMAGE_SIDE.check(input_size, "input_size")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    cfg = cfg if isinstance(cfg, dict) else cfg.to_dict()
    size = getattr(model, "face_size", None) or (cfg.get("input_size") or (3, 224, 224))[-2:]
    side = (int(input_size), int(input_size)) if input_size else (int(size[-2]), int(size[-1]))
    mean = getattr(model, "input_mean", None) or cfg.get("mean") or (0.0, 0.0, 0.0)
    std = getattr(model, "input_std", None) or cfg.get("std") or (1.0, 1.0, 1.0)
    return FaceTransform(
        size=side,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        interpolation=cfg.get("interpolation") if cfg.get("interpolation") in _INTERPOLATIONS else "bilinear",
    )


def transform_for_images(
    images: Any, model: torch.nn.Module, image_size: int | None = None, samples: int = 32
) -> FaceTransform:
    """The transform that training on ``images`` (a ``datasets`` split) uses: the faces at their stored
    size (or ``image_size``), gray when the stored images are gray (checked on ``samples`` rows spread
    over the split), the model's mean / std."""
    if not len(images):
        raise UserError("the training split has no images")
    if image_size is not None:
        IMAGE_SIDE.check(image_size, "image_size")
    rows = np.unique(np.linspace(0, len(images) - 1, num=min(samples, len(images))).round().astype(int))
    sample = [images[int(i)]["image"] for i in rows]
    gray = all(image.mode in _GRAY_MODES for image in sample)
    width, height = sample[0].size
    side = (int(image_size), int(image_size)) if image_size else (height, width)
    base = transform_for(model)
    return FaceTransform(
        size=side, grayscale=gray, mean=base.mean, std=base.std, interpolation=base.interpolation
    )


def record_transform(model: torch.nn.Module, transform: FaceTransform) -> FaceTransform:
    """Make the faces ``transform`` describes (training's: size, gray or not, mean/std) the model's input
    contract, which saved folders carry; returns the transform that feeds the model from now on (RGB at
    that size: the model makes it gray itself)."""
    color = "gray" if transform.grayscale else "rgb"
    model.set_input_format(color, transform.size, transform.mean, transform.std)
    return transform_for(model)


__all__ = ["FaceTransform", "record_transform", "transform_for", "transform_for_images"]
