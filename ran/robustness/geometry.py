"""Pose-like geometry: the face turned in the image plane, seen from the side, or cut from a box that is
too large, too small or off-centre (what a face detector's error does).

Each is a map from output pixels to source positions, sampled bilinearly (``grid_sample``), so every
output pixel is computed on its own: a face's result never depends on its batch. Edges are filled by
reflection, so the borders do not become a black occluder. Directions (left / right, up / down) are drawn
per face from its key.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ran.robustness.randomness import signs, uniform

Warp = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]

ROTATION_DEGREES = (6.0, 12.0, 18.0, 24.0, 30.0)
YAW_STRENGTH = (0.08, 0.16, 0.24, 0.32, 0.4)
SHEAR = (0.08, 0.16, 0.24, 0.32, 0.4)
BOX_ERROR = (0.05, 0.1, 0.15, 0.2, 0.25)


def _rotation(keys: torch.Tensor, u: torch.Tensor, v: torch.Tensor, severity: int):  # noqa: ANN202
    angle = (signs(keys, "rotation") * ROTATION_DEGREES[severity - 1] * torch.pi / 180.0).view(-1, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return cos * u - sin * v, sin * u + cos * v


def _yaw(keys: torch.Tensor, u: torch.Tensor, v: torch.Tensor, severity: int):  # noqa: ANN202
    """A head turned about its vertical axis, roughly: one side nearer (taller, wider), the other farther."""
    p = (signs(keys, "yaw") * YAW_STRENGTH[severity - 1]).view(-1, 1, 1)
    x = u + p * (1.0 - u * u) / 2.0  # the face's middle slides toward the far side
    return x, v / (1.0 + p * u)  # the near side is magnified vertically


def _shear(keys: torch.Tensor, u: torch.Tensor, v: torch.Tensor, severity: int):  # noqa: ANN202
    s = (signs(keys, "shear") * SHEAR[severity - 1]).view(-1, 1, 1)
    return u + s * v, v.expand_as(u + s * v)


def _box(keys: torch.Tensor, u: torch.Tensor, v: torch.Tensor, severity: int):  # noqa: ANN202
    """The face box scaled by 1 +- e and moved by e / 2 of its side in a random direction."""
    e = BOX_ERROR[severity - 1]
    scale = (1.0 + signs(keys, "box-scale") * e).view(-1, 1, 1)
    angle = (uniform(keys, "box-shift", 1) * 2.0 * torch.pi).view(-1, 1, 1)
    return u * scale + e * torch.cos(angle), v * scale + e * torch.sin(angle)


WARPS: dict[str, tuple[Warp, str]] = {
    "rotation": (_rotation, "in-plane rotation by 6 / 12 / 18 / 24 / 30 degrees, left or right"),
    "yaw": (_yaw, "a horizontal perspective (a turned head, roughly) of strength 0.08 ... 0.4"),
    "shear": (_shear, "horizontal shear of 0.08 / 0.16 / 0.24 / 0.32 / 0.4 (x moves by s * y)"),
    "box": (_box, "face box scaled by 1 +- 0.05 ... 0.25 and shifted by half of that, in any direction"),
}


def warp(images: torch.Tensor, kind: str, severity: int, keys: torch.Tensor) -> torch.Tensor:
    """``images`` (B, 3, H, W) uint8 resampled through warp ``kind`` at ``severity``."""
    h, w = images.shape[-2:]
    v = ((torch.arange(h, device=images.device, dtype=torch.float64) + 0.5) * 2.0 / h - 1.0).view(1, h, 1)
    u = ((torch.arange(w, device=images.device, dtype=torch.float64) + 0.5) * 2.0 / w - 1.0).view(1, 1, w)
    x, y = WARPS[kind][0](keys, u, v, severity)
    grid = torch.stack(torch.broadcast_tensors(x, y), dim=-1).expand(images.shape[0], h, w, 2)
    return sample(images, grid.float())


def sample(images: torch.Tensor, grid: torch.Tensor, padding: str = "reflection") -> torch.Tensor:
    """Bilinear resampling of uint8 images at ``grid`` ((B, H, W, 2), x and y in [-1, 1]), rounded back."""
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


__all__ = ["WARPS", "sample", "warp"]
