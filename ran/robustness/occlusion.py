"""Occluders: where a face is hidden (a boolean mask per face) and what hides it (a fill per face).

Every occluder is a mask over fractions of the face (x and y in [0, 1], pixel centres), so it means the
same at 48 px and at 224 px, and so the share of each model region it covers can be measured
(:func:`covered_fraction`, the attention shift of ``ran robustness``). A face's shape and fill depend only
on (seed, occluder, face id), never on the severity: a stronger severity grows the same occluder (the
masks are nested), so accuracy against severity measures covered area, not luck.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ran.robustness.randomness import uniform

Mask = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]

PATCH_GRID = 8  # random patches are cells of an 8 x 8 grid over the face
PATCH_AREA = (0.1, 0.2, 0.3, 0.45, 0.6)
EYE_BAND_HEIGHT = (0.1, 0.14, 0.18, 0.23, 0.28)
LOWER_FACE_HEIGHT = (0.2, 0.28, 0.36, 0.44, 0.52)
HALF_WIDTH = (0.1, 0.2, 0.3, 0.4, 0.5)
HAND_SCALE = (0.8, 1.0, 1.2, 1.4, 1.6)
EYE_LINE = 0.38  # where the eyes of an aligned face lie, as a fraction of its height
TEXTURE_OCTAVES = ((4, 0.5), (8, 0.3), (16, 0.2))  # (lattice cells, weight) of the value noise


def pixel_grid(size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) of every pixel centre as fractions, shaped (1, H, 1) and (1, 1, W)."""
    h, w = size
    ys = (torch.arange(h, device=device, dtype=torch.float64) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float64) + 0.5) / w
    return ys.view(1, h, 1), xs.view(1, 1, w)


def _patches(keys: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, severity: int) -> torch.Tensor:
    cells = PATCH_GRID * PATCH_GRID
    order = uniform(keys, "patch-cells", cells).argsort(dim=1).argsort(dim=1)  # each cell's rank
    chosen = order < round(PATCH_AREA[severity - 1] * cells)
    cell = (ys * PATCH_GRID).long() * PATCH_GRID + (xs * PATCH_GRID).long()  # (1, H, W)
    return chosen[:, cell.flatten()].view(keys.shape[0], ys.shape[1], xs.shape[2])


def _eye_band(keys: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, severity: int) -> torch.Tensor:
    centre = EYE_LINE + 0.04 * (uniform(keys, "eye-line", 1) - 0.5)  # (B, 1)
    half = EYE_BAND_HEIGHT[severity - 1] / 2
    inside = (ys - centre.view(-1, 1, 1)).abs() < half
    return inside & (xs > 0.04) & (xs < 0.96)


def _lower_face(keys: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, severity: int) -> torch.Tensor:
    top = 1.0 - LOWER_FACE_HEIGHT[severity - 1] + 0.04 * (uniform(keys, "mask-top", 1) - 0.5)
    return (ys > top.view(-1, 1, 1)) & (xs > 0.06) & (xs < 0.94)


def _side(left: bool) -> Mask:
    def mask(keys: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, severity: int) -> torch.Tensor:
        width = HALF_WIDTH[severity - 1]
        inside = xs < width if left else xs > 1.0 - width
        return inside.expand(keys.shape[0], ys.shape[1], xs.shape[2])

    return mask


def _ellipse(ys, xs, cy, cx, ry, rx, angle):  # noqa: ANN001, ANN202  (broadcast tensors, internal)
    dy, dx = ys - cy, xs - cx
    cos, sin = torch.cos(angle), torch.sin(angle)
    along, across = dx * cos + dy * sin, -dx * sin + dy * cos
    return (along / rx) ** 2 + (across / ry) ** 2 < 1.0


def _hand_shape(ys, xs, u, s: float):  # noqa: ANN001, ANN202  (broadcast tensors, internal)
    cy, cx = 0.3 + 0.4 * u[:, 0], 0.3 + 0.4 * u[:, 1]
    tilt = (u[:, 2] - 0.5) * 1.2 + torch.where(u[:, 3] < 0.5, 0.0, torch.pi)  # fingers up or down
    mask = _ellipse(ys, xs, cy, cx, 0.2 * s, 0.16 * s, tilt)
    up_y, up_x = -torch.cos(tilt), torch.sin(tilt)  # the direction the fingers point
    side_y, side_x = torch.sin(tilt), torch.cos(tilt)
    for finger in range(4):
        offset = (finger - 1.5) * 0.075 * s
        reach = 0.25 * s - abs(finger - 1.5) * 0.02 * s
        fy = cy + up_y * reach + side_y * offset
        fx = cx + up_x * reach + side_x * offset
        mask = mask | _ellipse(ys, xs, fy, fx, 0.11 * s, 0.032 * s, tilt + torch.pi / 2)
    return mask


def _hand(keys: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, severity: int) -> torch.Tensor:
    """A palm and four fingers at a random place and tilt; a severity adds a larger hand to the smaller
    ones, so the masks are nested."""
    u = uniform(keys, "hand", 4).view(-1, 4, 1, 1)
    mask = _hand_shape(ys, xs, u, HAND_SCALE[0])
    for scale in HAND_SCALE[1:severity]:
        mask = mask | _hand_shape(ys, xs, u, scale)
    return mask


OCCLUDERS: dict[str, tuple[Mask, str]] = {
    "patches": (_patches, "random 8x8-grid cells covering 10 / 20 / 30 / 45 / 60 % of the face"),
    "eye_band": (_eye_band, "a band over the eyes (sunglasses), 10 / 14 / 18 / 23 / 28 % of the face high"),
    "lower_face": (_lower_face, "a mask over the lower 20 / 28 / 36 / 44 / 52 % of the face"),
    "left_half": (_side(True), "the left 10 / 20 / 30 / 40 / 50 % of the face (as seen) hidden"),
    "right_half": (_side(False), "the right 10 / 20 / 30 / 40 / 50 % of the face (as seen) hidden"),
    "hand": (_hand, "a hand-like blob (palm and four fingers) at 0.8 / 1 / 1.2 / 1.4 / 1.6 x its size"),
}


def occluder_mask(kind: str, severity: int, keys: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool: where occluder ``kind`` at ``severity`` hides each face (one key per face)."""
    ys, xs = pixel_grid(size, keys.device)
    return OCCLUDERS[kind][0](keys, ys, xs, severity)


def _solid(keys: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return (uniform(keys, "solid", 3) * 255.0).view(-1, 3, 1, 1).expand(-1, 3, *size)


def _noise(keys: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return (uniform(keys, "noise-fill", 3 * size[0] * size[1]) * 255.0).view(-1, 3, *size)


def _texture(keys: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Procedurally generated value noise (three octaves) between two colours: a mottled surface such
    as cloth, foliage or stone. Generated here from the seed; no image file is shipped."""
    value = torch.zeros(keys.shape[0], 1, *size, dtype=torch.float64, device=keys.device)
    for cells, weight in TEXTURE_OCTAVES:
        lattice = uniform(keys, f"texture-{cells}", (cells + 1) ** 2).view(-1, 1, cells + 1, cells + 1)
        value += weight * F.interpolate(lattice, size=size, mode="bilinear", align_corners=True)
    low, high = (uniform(keys, name, 3).view(-1, 3, 1, 1) * 255.0 for name in ("tex-low", "tex-high"))
    return low + (high - low) * value


FILLS: dict[str, tuple[Callable[[torch.Tensor, tuple[int, int]], torch.Tensor], str]] = {
    "solid": (_solid, "one random colour per face"),
    "noise": (_noise, "uniform random pixels"),
    "texture": (_texture, "a procedurally generated natural-looking texture (value noise), per face"),
}


def occlude(images: torch.Tensor, mask: torch.Tensor, fill: str, keys: torch.Tensor) -> torch.Tensor:
    """``images`` (B, 3, H, W) uint8 with the ``mask`` pixels replaced by the ``fill``."""
    filled = FILLS[fill][0](keys, tuple(images.shape[-2:])).round().clamp(0, 255).to(torch.uint8)
    return torch.where(mask.unsqueeze(1), filled, images)


def covered_fraction(mask: torch.Tensor, boxes: torch.Tensor | Sequence[Sequence[float]]) -> torch.Tensor:
    """(B, K): the share of each region box (K, 4) of fractional (x0, y0, x1, y1) that ``mask`` (B, H, W)
    covers, counted over the pixel centres inside the box (a box no centre falls in counts as uncovered)."""
    ys, xs = pixel_grid(tuple(mask.shape[-2:]), mask.device)
    boxes = torch.as_tensor(boxes, dtype=torch.float64, device=mask.device).view(-1, 4, 1, 1)
    inside = (
        (xs >= boxes[:, 0]) & (xs < boxes[:, 2]) & (ys >= boxes[:, 1]) & (ys < boxes[:, 3])
    ).double()  # (K, H, W)
    hidden = torch.einsum("bhw,khw->bk", mask.double(), inside)
    return hidden / inside.sum(dim=(1, 2)).clamp(min=1.0)


__all__ = ["FILLS", "OCCLUDERS", "covered_fraction", "occlude", "occluder_mask", "pixel_grid"]
