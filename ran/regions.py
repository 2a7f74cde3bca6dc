"""Face regions: box presets, validation and the batched crop-and-resize that feeds the backbone.

Boxes are ``(x0, y0, x1, y1)`` fractions of the face image's width and height. By this package's
convention region 0 is the whole face (the region-biased loss compares every crop against it).
"""

import contextlib
from collections.abc import Sequence
from typing import Optional

import torch
from torch.nn.functional import grid_sample
from torchvision.ops import roi_align

from ran.errors import UserError

Box = tuple[float, float, float, float]

WHOLE_FACE: Box = (0.0, 0.0, 1.0, 1.0)

# RAN.md "Regions". The original AffectNet loader put the whole face last; here it comes first, which
# changes nothing in the logits (the attention pooling is permutation-equivariant) and keeps the
# loss's "region 0 is the whole face" rule.
# ``whole``: the whole face alone (K = 1), the paper's baseline. With one region both attention weights
# are 1, so the network is its backbone plus a linear classifier, and the region-biased loss (which
# needs a crop to compare with the whole face) is zero.
REGION_PRESETS: dict[str, tuple[Box, ...]] = {
    "whole": (WHOLE_FACE,),
    "ferplus6": (
        WHOLE_FACE,
        (0.0, 0.0, 0.75, 0.75),  # top-left
        (0.25, 0.0, 1.0, 0.75),  # top-right
        (0.125, 0.25, 0.875, 1.0),  # centre-down
        (0.05, 0.05, 0.95, 0.95),  # centre 90 %
        (0.075, 0.075, 0.925, 0.925),  # centre 85 %
    ),
    "affectnet8": (
        WHOLE_FACE,
        (0.125, 0.25, 0.875, 1.0),  # centre-down
        (0.0, 0.0, 0.75, 0.75),  # top-left
        (0.25, 0.0, 1.0, 0.75),  # top-right
        (0.05, 0.05, 0.95, 0.95),  # centre 90 %
        (0.1, 0.1, 0.9, 0.9),  # centre 80 %
        (0.125, 0.125, 0.875, 0.875),  # centre 75 %
        (0.125, 0.0, 0.875, 0.75),  # centre-top
    ),
}

DEFAULT_PRESET = "ferplus6"


# Names of the boxes of the built-in presets (ran.regions); any other box is shown by its coordinates.
_FERPLUS6_NAMES = ("whole", "top-left", "top-right", "centre-down", "centre 90%", "centre 85%")
_AFFECTNET8_NAMES = (
    "whole",
    "centre-down",
    "top-left",
    "top-right",
    "centre 90%",
    "centre 80%",
    "centre 75%",
    "centre-top",
)
REGION_NAMES: dict[Box, str] = {
    **dict(zip(REGION_PRESETS["ferplus6"], _FERPLUS6_NAMES)),
    **dict(zip(REGION_PRESETS["affectnet8"], _AFFECTNET8_NAMES)),
}


def region_labels(boxes: Sequence[Sequence[float]]) -> list[str]:
    """A short label per box: its preset name, else its (x0, y0, x1, y1) fractions. The one naming of
    regions: the evaluation's tables and attention picture and the prediction pictures all use it."""
    labels = []
    for box in boxes:
        key = tuple(round(float(v), 6) for v in box)
        labels.append(REGION_NAMES.get(key, "(" + ", ".join(f"{v:g}" for v in key) + ")"))  # type: ignore[arg-type]
    return labels


def validate_boxes(boxes: Sequence[Sequence[float]], name: str = "regions") -> tuple[Box, ...]:
    """Check a list of fractional boxes; raise a ValueError naming ``name`` and the bad box."""
    if isinstance(boxes, str):
        raise UserError(f"{name}: expected a preset name or a list of boxes, got {boxes!r}")
    boxes = list(boxes)
    if not boxes:
        raise UserError(f"{name}: expected at least one box (x0, y0, x1, y1), got an empty list")
    out = []
    for i, box in enumerate(boxes):
        try:
            x0, y0, x1, y1 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise UserError(f"{name}[{i}]: expected 4 numbers (x0, y0, x1, y1), got {box!r}") from None
        if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
            raise UserError(f"{name}[{i}]: box {box!r} must lie within [0, 1] (fractions of the image size)")
        if x1 <= x0 or y1 <= y0:
            raise UserError(f"{name}[{i}]: box {box!r} must have x1 > x0 and y1 > y0")
        out.append((x0, y0, x1, y1))
    return tuple(out)


def resolve_regions(regions: str | Sequence[Sequence[float]] | None) -> tuple[Box, ...]:
    """A preset name, a list of boxes or None (the default preset) -> validated boxes."""
    if regions is None:
        regions = DEFAULT_PRESET
    if isinstance(regions, str):
        if regions not in REGION_PRESETS:
            raise UserError(f"regions: unknown preset {regions!r}; expected one of {sorted(REGION_PRESETS)}")
        return REGION_PRESETS[regions]
    return validate_boxes(regions)


def crop_regions(
    images: torch.Tensor,
    boxes: torch.Tensor,
    output_size: tuple[int, int],
    channels_last: bool = False,
) -> torch.Tensor:
    """Cut K boxes from each image and resample them to ``output_size`` in one batched op.

    ``images`` (B, C, H, W); ``boxes`` (K, 4) shared by all images or (B, K, 4) per image, as fractions
    within [0, 1]. Returns (B, K, C, h, w), in float32 whatever the images' dtype (float64 stays float64):
    box coordinates and batch indices in bf16 / fp16 would round (index 257 of a batch becomes 256), so
    the caller casts the crops to its compute dtype afterwards. ``channels_last`` lays each crop out as
    (h, w, C) in memory, as channels-last convolutions want it.

    The resampling is RoIAlign with half-pixel alignment: bilinear upsampling for small sources (48x48
    FERPlus faces) and area-averaging when the crop is larger than the output. When no source is larger
    than the output (one bilinear sample per output pixel), the same numbers come from one
    ``grid_sample`` call, several times cheaper than the RoIAlign kernel on a CPU; TorchScript and traced
    graphs (ONNX: one ``RoiAlign`` node) always use RoIAlign.
    """
    work = images if images.dtype == torch.float64 else images.float()
    boxes = boxes.to(device=images.device, dtype=work.dtype)
    if not torch.jit.is_scripting() and not torch.jit.is_tracing():
        if work.shape[-2] <= output_size[0] and work.shape[-1] <= output_size[1]:
            return _sampled_crops(work, boxes, output_size, channels_last)
    crops = _roi_align_crops(work, boxes, output_size)
    if channels_last:
        b, k, c = crops.shape[:3]
        crops = crops.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (b, k))
    return crops


def _roi_align_crops(images: torch.Tensor, boxes: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """torchvision's RoIAlign (aligned=True, adaptive sampling); box-to-pixel scaling follows the image
    size as traced values, so an exported graph takes any H and W."""
    b, c, h, w = images.shape
    if boxes.dim() == 2:
        boxes = boxes.unsqueeze(0).expand(b, -1, -1)
    k = boxes.shape[1]
    # scalar products, not a [w, h, w, h] tensor: no host-to-device copy, and H, W stay symbolic in a trace
    pixel_boxes = torch.stack(
        [boxes[..., 0] * w, boxes[..., 1] * h, boxes[..., 2] * w, boxes[..., 3] * h], -1
    )
    batch_index = torch.arange(b, device=images.device, dtype=images.dtype).repeat_interleave(k)
    rois = torch.cat([batch_index[:, None], pixel_boxes.reshape(-1, 4)], dim=1)
    crops = roi_align(
        images, rois, output_size=output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )
    return crops.reshape(b, k, c, output_size[0], output_size[1])


def _sample_positions(start: torch.Tensor, end: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """RoIAlign's sample along one axis, one at each output pixel's centre, as grid_sample's coordinate
    (-1 and 1 the outer edges of the ``size`` source pixels): (..., out) for boxes from ``start`` to ``end``
    (fractions)."""
    step = (end - start) * (size / out)
    centres = torch.arange(out, device=start.device, dtype=start.dtype) + 0.5
    pos = (start * size - 0.5).unsqueeze(-1) + centres * step.unsqueeze(-1)  # in source pixels
    return (2.0 * pos + 1.0) / size - 1.0


@torch.jit.unused
def _sampled_crops(
    images: torch.Tensor, boxes: torch.Tensor, output_size: tuple[int, int], channels_last: bool
) -> torch.Tensor:
    """RoIAlign for one sample per output pixel as one ``grid_sample`` call over all boxes (exact up to
    float rounding; ``benchmarks/bench_cut.py``: 2.5x the two matrix products this replaced on a CPU, 8
    faces, 6 regions of 224 px, 18 ms instead of 46). Boxes inside the image sample within half a pixel of
    its edge, where RoIAlign clamps to the edge pixel as ``padding_mode='border'`` does. Runs in the images'
    precision even under autocast."""
    b, c, height, width = images.shape
    h, w = output_size
    boxes = boxes.unsqueeze(0) if boxes.dim() == 2 else boxes  # (1 or B, K, 4)
    k = boxes.shape[1]
    device = images.device.type
    autocasting = device in ("cpu", "cuda") and torch.is_autocast_enabled(device)
    with torch.autocast(device, enabled=False) if autocasting else contextlib.nullcontext():
        gx = _sample_positions(boxes[..., 0], boxes[..., 2], width, w)  # (1|B, K, w)
        gy = _sample_positions(boxes[..., 1], boxes[..., 3], height, h)  # (1|B, K, h)
        xs, ys = torch.broadcast_tensors(gx.unsqueeze(-2), gy.unsqueeze(-1))  # (1|B, K, h, w) each
        grid = torch.stack([xs, ys], dim=-1).reshape(-1, k * h, w, 2).expand(b, -1, -1, -1)
        crops = grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        crops = crops.reshape(b, c, k, h, w)  # the K crops were stacked along the height
        if channels_last:  # each crop stored as (h, w, C): one copy
            return crops.permute(0, 2, 3, 4, 1).contiguous().permute(0, 1, 4, 2, 3)
        return crops.transpose(1, 2).contiguous()


def landmark_regions(
    landmarks: torch.Tensor,
    image_size: tuple[int, int],
    box_fraction: float = 0.4,
) -> torch.Tensor:
    """Regions centred on 5-point landmarks (eyes, nose, mouth corners), the paper's third scheme.

    ``landmarks`` (B, 5, 2) in pixels of an image of ``image_size`` (H, W), in the order left eye,
    right eye, nose, left mouth corner, right mouth corner. Returns (B, 5, 4) fractional boxes:
    the whole face, then squares of side ``box_fraction`` of the face centred on the left eye, the
    right eye, the nose and the mouth centre, shifted to stay inside the image.
    """
    if landmarks.dim() != 3 or landmarks.shape[1:] != (5, 2):
        raise UserError(f"landmarks: expected shape (B, 5, 2), got {tuple(landmarks.shape)}")
    if not 0.0 < box_fraction <= 1.0:
        raise UserError(f"box_fraction: expected a value in (0, 1], got {box_fraction}")
    h, w = image_size
    pts = landmarks.float() / torch.tensor([w, h], dtype=torch.float32, device=landmarks.device)
    mouth = pts[:, 3:5].mean(dim=1, keepdim=True)
    centres = torch.cat([pts[:, 0:3], mouth], dim=1)  # (B, 4, 2)
    half = box_fraction / 2
    centres = centres.clamp(half, 1.0 - half)
    crops = torch.cat([centres - half, centres + half], dim=-1)
    whole = torch.tensor(WHOLE_FACE, device=crops.device).expand(crops.shape[0], 1, 4)
    return torch.cat([whole, crops], dim=1)


def jitter_boxes(
    boxes: torch.Tensor,
    batch_size: int,
    scale: float = 0.02,
    translate: float = 0.01,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The original training jitter ("CaffeCrop"): per image and region, scale +-``scale`` and
    shift +-``translate`` of the box, clipped to the image. Returns (B, K, 4)."""
    k = boxes.shape[0]
    device = boxes.device
    rand = torch.rand((batch_size, k, 3), generator=generator, device=device) * 2 - 1
    size = (boxes[:, 2:] - boxes[:, :2]).unsqueeze(0)  # (1, K, 2)
    centre = ((boxes[:, 2:] + boxes[:, :2]) / 2).unsqueeze(0)
    size = size * (1 + scale * rand[..., :1])
    centre = centre + translate * rand[..., 1:]
    half = (size / 2).clamp(max=0.5)
    centre = torch.maximum(torch.minimum(centre, 1 - half), half)
    return torch.cat([centre - half, centre + half], dim=-1)


def random_crop_boxes(
    batch_size: int,
    num_regions: int,
    min_size: float = 0.6,
    max_size: float = 0.9,
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The paper's random-crop regions: region 0 the whole face, the others random squares with a side
    in [min_size, max_size] of the face. Returns (B, K, 4)."""
    if num_regions < 1:
        raise UserError(f"num_regions: expected >= 1, got {num_regions}")
    k = num_regions - 1
    side = min_size + (max_size - min_size) * torch.rand(
        (batch_size, k, 1), generator=generator, device=device
    )
    origin = (1 - side) * torch.rand((batch_size, k, 2), generator=generator, device=device)
    crops = torch.cat([origin, origin + side], dim=-1)
    whole = torch.tensor(WHOLE_FACE, device=device).expand(batch_size, 1, 4)
    return torch.cat([whole, crops], dim=1)
