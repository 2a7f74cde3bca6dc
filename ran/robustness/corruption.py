"""Corruptions in the manner of ImageNet-C, sized relative to the face (a blur of 2 % of the side is the
same blur at 48 px and at 224 px).

Everything here is computed per pixel from the face's own pixels and its key (blurs as sums of shifted
copies, not convolutions whose algorithm may change with the batch), so results are byte-identical
whatever the batch. JPEG runs through Pillow on the CPU, face by face.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ran.robustness.randomness import normal, signs, uniform

Corruption = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]

NOISE_SIGMA = (8.0, 16.0, 24.0, 36.0, 50.0)  # on the 0..255 scale
BLUR_SIGMA = (0.01, 0.02, 0.03, 0.045, 0.06)  # fractions of the face side
MOTION_LENGTH = (0.04, 0.08, 0.12, 0.17, 0.22)
MOTION_TAPS = 17
JPEG_QUALITY = (50, 30, 20, 12, 7)
LOW_RESOLUTION = (1.5, 2.0, 3.0, 4.0, 6.0)  # downscale factors
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # a shift of this fraction of 255, darker or lighter
CONTRAST = (0.75, 0.6, 0.45, 0.3, 0.2)  # distances from the face's mean grey multiplied by this


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _gaussian_noise(images: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    noise = normal(keys, "gaussian-noise", images[0].numel()).view(images.shape)
    return _to_uint8(images.double() + NOISE_SIGMA[severity - 1] * noise)


def _blur_axis(x: torch.Tensor, sigma: float, dim: int) -> torch.Tensor:
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2) / (2 * sigma * sigma))
    taps = (taps / taps.sum()).tolist()
    pad = (0, 0, radius, radius) if dim == 2 else (radius, radius, 0, 0)
    padded = F.pad(x, pad, mode="replicate")
    size = x.shape[dim]
    out = torch.zeros_like(x)
    for offset, weight in enumerate(taps):
        out += weight * padded.narrow(dim, offset, size)
    return out


def _gaussian_blur(images: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    sigma = BLUR_SIGMA[severity - 1] * max(images.shape[-2:])
    x = images.double()
    return _to_uint8(_blur_axis(_blur_axis(x, sigma, 2), sigma, 3))


def _motion_blur(images: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    """The mean of the face shifted along a line (a random direction per face), as a moving camera does."""
    b, _, h, w = images.shape
    angle = (uniform(keys, "motion", 1) * torch.pi).view(-1, 1, 1)
    length = MOTION_LENGTH[severity - 1] * 2.0  # in [-1, 1] grid units
    v = ((torch.arange(h, device=images.device, dtype=torch.float64) + 0.5) * 2.0 / h - 1.0).view(1, h, 1)
    u = ((torch.arange(w, device=images.device, dtype=torch.float64) + 0.5) * 2.0 / w - 1.0).view(1, 1, w)
    total = torch.zeros(images.shape, dtype=torch.float64, device=images.device)
    for step in np.linspace(-0.5, 0.5, MOTION_TAPS):
        x, y = u + step * length * torch.cos(angle), v + step * length * torch.sin(angle)
        grid = torch.stack(torch.broadcast_tensors(x, y), dim=-1).expand(b, h, w, 2).float()
        shifted = F.grid_sample(
            images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        total += shifted.double()
    return _to_uint8(total / MOTION_TAPS)


def _jpeg(images: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    quality = JPEG_QUALITY[severity - 1]
    out = []
    for face in images.permute(0, 2, 3, 1).cpu().numpy():
        buffer = io.BytesIO()
        Image.fromarray(face).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(images.device)


def _low_resolution(images: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    h, w = images.shape[-2:]
    factor = LOW_RESOLUTION[severity - 1]
    small = F.interpolate(
        images.double(), size=(max(1, round(h / factor)), max(1, round(w / factor))), mode="area"
    )
    return _to_uint8(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False))


def _brightness(images: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    shift = signs(keys, "brightness").view(-1, 1, 1, 1) * BRIGHTNESS[severity - 1] * 255.0
    return _to_uint8(images.double() + shift)


def _contrast(images: torch.Tensor, severity: int, keys: torch.Tensor) -> torch.Tensor:
    # the mean from an exact integer sum: a float reduction's order (and last bit) may depend on the batch
    mean = images.to(torch.int64).sum(dim=(1, 2, 3)).double() / images[0].numel()
    mean = mean.view(-1, 1, 1, 1)
    return _to_uint8(mean + (images.double() - mean) * CONTRAST[severity - 1])


CORRUPTIONS: dict[str, tuple[Corruption, str]] = {
    "gaussian_noise": (_gaussian_noise, "Gaussian noise of sigma 8 / 16 / 24 / 36 / 50 (of 255)"),
    "gaussian_blur": (_gaussian_blur, "Gaussian blur of sigma 1 / 2 / 3 / 4.5 / 6 % of the face side"),
    "motion_blur": (_motion_blur, "a straight smear 4 / 8 / 12 / 17 / 22 % of the side long, any direction"),
    "jpeg": (_jpeg, "JPEG compression at quality 50 / 30 / 20 / 12 / 7"),
    "low_resolution": (_low_resolution, "shrunk 1.5 / 2 / 3 / 4 / 6 times, then enlarged back"),
    "brightness": (_brightness, "lighter or darker by 10 / 20 / 30 / 40 / 50 % of full scale"),
    "contrast": (_contrast, "contrast cut to 75 / 60 / 45 / 30 / 20 % around the face's mean grey"),
}

__all__ = ["CORRUPTIONS"]
