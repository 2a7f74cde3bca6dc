"""What a RAN accepts, checked before anything runs: images, per-image boxes, pre-cut regions; the input
as training saw it (gray, at the face size); and the cut.

The checks name the argument, the image / region index and what was expected. Box values are checked
only outside traced or compiled graphs and outside training steps (reading the verdict is a host-device
sync); shapes always. ``cut_regions`` and ``as_trained`` are leaves for timm's FX tracing (they branch on
shapes).
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ran.errors import UserError
from ran.regions import crop_regions


@torch.jit.ignore
def _check_images(images: torch.Tensor, in_chans: int) -> None:
    if images.dim() != 4:
        raise UserError(f"images: expected a (B, {in_chans}, H, W) tensor, got shape {tuple(images.shape)}")
    if images.shape[1] != in_chans:
        raise UserError(
            f"images: expected {in_chans} channels (B, {in_chans}, H, W), got shape {tuple(images.shape)}"
        )
    if images.shape[2] < 2 or images.shape[3] < 2:
        raise UserError(f"images: expected H, W >= 2, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise UserError(
            f"images: expected floating-point pixels (0..1, normalised as by "
            f"ran.transforms.FaceTransform.normalize), got {images.dtype}; pass uint8 faces through "
            f"ran.transforms.transform_for(model).normalize first"
        )


@torch.jit.ignore
def _check_boxes(boxes: torch.Tensor, batch_size: int, num_regions: int, check_values: bool = True) -> None:
    """Shape, then values (finite, within [0, 1], x1 > x0, y1 > y0) as ``regions=`` checks them, naming
    the first bad image / region. Reading the verdict is one host-device sync, which a training step
    skips (``check_values=False``): its boxes come from ``jitter_boxes`` / ``random_crop_boxes``."""
    if boxes.dim() not in (2, 3) or boxes.shape[-2:] != (num_regions, 4):
        raise UserError(
            f"boxes: expected ({num_regions}, 4) or (B, {num_regions}, 4) fractional boxes, "
            f"got shape {tuple(boxes.shape)}"
        )
    if boxes.dim() == 3 and boxes.shape[0] != batch_size:
        raise UserError(f"boxes: expected a batch of {batch_size} box lists, got {boxes.shape[0]}")
    if not boxes.is_floating_point():
        raise UserError(f"boxes: expected floating-point fractions of the image size, got {boxes.dtype}")
    if not check_values or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return  # a traced or compiled graph cannot branch on the verdict
    x0, y0, x1, y1 = boxes.unbind(-1)
    inside = torch.isfinite(boxes).all(-1) & ((boxes >= 0) & (boxes <= 1)).all(-1)
    bad = ~(inside & (x1 > x0) & (y1 > y0))
    if bool(bad.any()):
        index = [int(i) for i in bad.nonzero()[0]]
        where = "".join(f"[{i}]" for i in index)
        box = [round(float(v), 6) for v in boxes[tuple(index)]]
        rule = "be within [0, 1] and finite" if not bool(inside[tuple(index)]) else "have x1 > x0 and y1 > y0"
        raise UserError(f"boxes{where}: box {box} must {rule} (fractions x0, y0, x1, y1 of the image size)")


def cut_regions(
    images: torch.Tensor,
    boxes: Optional[torch.Tensor],
    default_boxes: torch.Tensor,
    region_size: List[int],
    in_chans: int,
    dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    check_values: bool = True,
) -> torch.Tensor:
    """Validated crop of every region of every image, flattened to (B*K, C, h, w) for the backbone.

    The crop runs in float32 (float64 images stay float64) and the crops are then cast to ``dtype``,
    the backbone's: batch indices and box corners would round in bf16 / fp16."""
    _check_images(images, in_chans)
    if boxes is None:
        boxes = default_boxes
    else:
        _check_boxes(boxes, images.shape[0], default_boxes.shape[0], check_values)
    crops = crop_regions(images, boxes, (region_size[0], region_size[1]), channels_last).flatten(0, 1)
    return crops if dtype is None else crops.to(dtype)


# The one definition of gray: ITU-R 601 luma with PIL's own weights (19595, 38470, 7471) / 2^16. They are
# exact in float32 and sum to exactly 1, so gray-as-RGB input keeps its value up to float rounding.
LUMA = (19595.0 / 65536.0, 38470.0 / 65536.0, 7471.0 / 65536.0)


def _luma(red: torch.Tensor, green: torch.Tensor, blue: torch.Tensor) -> torch.Tensor:
    return red * (19595.0 / 65536.0) + green * (38470.0 / 65536.0) + blue * (7471.0 / 65536.0)


def gray_pixels(images: torch.Tensor, mean: List[float], std: List[float]) -> torch.Tensor:
    """Normalised RGB images (..., 3, H, W) -> the luma (``LUMA``) of their pixels, normalised again per
    channel, as (..., 3, H, W) in float (no rounding to whole pixels). ``mean`` / ``std`` are the
    normalisation the input carries (1 or 3 values); where they are the same for every channel the luma
    of the normalised values is already the normalised luma (the weights sum to 1): no un-normalising."""
    means = [mean[i % len(mean)] for i in range(3)]
    stds = [std[i % len(std)] for i in range(3)]
    channels = [images.select(-3, i) for i in range(3)]
    if means[0] == means[1] == means[2] and stds[0] == stds[1] == stds[2]:
        return _luma(channels[0], channels[1], channels[2]).unsqueeze(-3).expand(images.shape)
    pixels = [channels[i] * stds[i] + means[i] for i in range(3)]
    luma = _luma(pixels[0], pixels[1], pixels[2])
    return torch.stack([(luma - means[i]) / stds[i] for i in range(3)], dim=-3)


def resize_faces(images: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Images (B, C, H, W) -> (B, C, size[0], size[1]): bilinear with antialiasing (PIL's BILINEAR
    resampling, which the processors use, in float), computed in float32 (float64 stays float64)."""
    work = images if images.dtype == torch.float64 else images.float()
    return F.interpolate(work, size=(size[0], size[1]), mode="bilinear", align_corners=False, antialias=True)


def as_trained(
    images: torch.Tensor, gray: bool, face_size: Optional[List[int]], mean: List[float], std: List[float]
) -> torch.Tensor:
    """The input as training saw it: RGB made gray for a model trained on gray faces, then resized to the
    face size training used (when it differs, and always inside an ONNX export, whose height and width
    are dynamic). Input that already is gray-as-RGB at the face size passes through unchanged."""
    if gray and images.dim() == 4 and images.shape[1] == 3 and images.is_floating_point():
        images = gray_pixels(images, mean, std)
    if face_size is not None and images.dim() == 4 and images.is_floating_point():
        exporting = False
        if not torch.jit.is_scripting() and not torch.compiler.is_compiling():
            exporting = torch.onnx.is_in_onnx_export()
        if exporting or images.shape[-2] != face_size[0] or images.shape[-1] != face_size[1]:
            images = resize_faces(images, face_size)
    return images


def _check_region_batch(
    regions: torch.Tensor, num_regions: int, in_chans: int, region_size: List[int]
) -> None:
    expected = f"(B, {num_regions}, {in_chans}, {region_size[0]}, {region_size[1]})"
    if regions.dim() != 5:
        raise UserError(f"regions: expected a {expected} tensor, got shape {tuple(regions.shape)}")
    if regions.shape[1] != num_regions:
        raise UserError(
            f"regions: expected K={num_regions} regions (the model's region list), got {regions.shape[1]}"
        )
    if regions.shape[2] != in_chans or list(regions.shape[3:]) != list(region_size):
        raise UserError(f"regions: expected {expected}, got shape {tuple(regions.shape)}")
    if not regions.is_floating_point():
        raise UserError(
            f"regions: expected floating-point pixels (0..1 after normalisation), got {regions.dtype}"
        )


# FX tracing (timm's feature extraction) treats these as leaves: they branch on shapes.
register_notrace_function(cut_regions)
register_notrace_function(as_trained)
register_notrace_function(_check_region_batch)
