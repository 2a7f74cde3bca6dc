"""The region cut, side by side in one run: ``ran.regions.crop_regions`` (one ``grid_sample`` call) against
torchvision's ``roi_align`` kernel (what traced graphs use) and against the two dense matrix products with
separable bilinear weights that the cut used before (rebuilt here as the reference), on the same faces.

    python benchmarks/bench_cut.py [--faces 8] [--side 224] [--region-size 224] [--repeats 9]

All three give RoIAlign's numbers (aligned=True, one sample per output pixel when no crop is larger than
the output); the largest difference to ``roi_align`` is printed beside each time. Rows are interleaved
round by round; the table gives the median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.ops import roi_align

from ran.regions import DEFAULT_PRESET, REGION_PRESETS, crop_regions


def roi_align_cut(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    b, _, h, w = images.shape
    scale = torch.tensor([w, h, w, h], dtype=images.dtype)
    rois = torch.cat(
        [torch.arange(b).repeat_interleave(len(boxes))[:, None].to(images), (boxes * scale).repeat(b, 1)], 1
    )
    crops = roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return crops.unflatten(0, (b, len(boxes)))


def axis_weights(start: torch.Tensor, end: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """Bilinear weights along one axis as a dense (K, out, size) matrix."""
    step = (end - start) * (size / out)
    pos = (start * size - 0.5)[:, None] + (torch.arange(out) + 0.5) * step[:, None]
    pos = pos.clamp(0.0, size - 1.0)
    return (1.0 - (pos[..., None] - torch.arange(size)).abs()).clamp(min=0.0)


def matrix_cut(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The cut before: columns then rows as two matrix products, channels-last crops."""
    b, c, height, width = images.shape
    (h, w), k = size, len(boxes)
    wx, wy = (
        axis_weights(boxes[:, 0], boxes[:, 2], width, w),
        axis_weights(boxes[:, 1], boxes[:, 3], height, h),
    )
    cols = (images.reshape(b * c * height, width) @ wx.reshape(k * w, width).t()).reshape(b, c, height, k, w)
    cols = cols.permute(0, 3, 2, 4, 1).reshape(b, k, height, w * c)
    return (wy @ cols).reshape(b, k, h, w, c).permute(0, 1, 4, 2, 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", type=int, default=8)
    parser.add_argument("--side", type=int, default=224, help="face side in pixels")
    parser.add_argument("--region-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.rand(args.faces, 3, args.side, args.side)
    boxes = torch.tensor(REGION_PRESETS[DEFAULT_PRESET], dtype=torch.float32)
    size = (args.region_size, args.region_size)
    cuts = {
        "crop_regions (grid_sample)": lambda: crop_regions(images, boxes, size, channels_last=True),
        "matrix products (before)": lambda: matrix_cut(images, boxes, size),
        "roi_align": lambda: roi_align_cut(images, boxes, size),
    }
    reference = roi_align_cut(images, boxes, size)
    differences = {name: float((cut() - reference).abs().max()) for name, cut in cuts.items()}
    times: dict[str, list[float]] = {name: [] for name in cuts}
    for _ in range(args.repeats):
        for name, cut in cuts.items():
            start = time.perf_counter()
            cut()
            times[name].append(time.perf_counter() - start)
    ours = statistics.median(times["crop_regions (grid_sample)"])
    print(
        f"{args.faces} faces of {args.side} px, {len(boxes)} regions of {args.region_size} px, fp32, "
        f"{torch.get_num_threads()} threads"
    )
    print("| cut | ms | crop_regions is | max difference to roi_align |\n|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1000:.1f} | {median / ours:.2f}x faster | {differences[name]:.1e} |")


if __name__ == "__main__":
    main()
