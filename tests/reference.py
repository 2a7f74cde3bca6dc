"""Independent reference implementations used by the tests (not by the package).

``reference_crop`` cuts one region with grid_sample from explicit half-pixel sample coordinates;
``reference_logits`` implements RAN.md's formulas one region at a time with Python loops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_crop(image: torch.Tensor, box, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) image, fractional box -> (C, h, w), bilinear at the output pixel centres."""
    _, height, width = image.shape
    x0, y0, x1, y1 = box
    h, w = size
    xs = x0 * width + (torch.arange(w, dtype=image.dtype) + 0.5) * (x1 - x0) * width / w - 0.5
    ys = y0 * height + (torch.arange(h, dtype=image.dtype) + 0.5) * (y1 - y0) * height / h - 0.5
    gx = (xs + 0.5) / width * 2 - 1
    gy = (ys + 0.5) / height * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)  # (h, w, 2) as (x, y)
    out = F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[0]


def reference_regions(images: torch.Tensor, boxes, size: tuple[int, int]) -> torch.Tensor:
    return torch.stack([torch.stack([reference_crop(img, b, size) for b in boxes]) for img in images])


def reference_logits(model, regions: torch.Tensor, attention: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-region RAN forward with the model's weights. Returns (logits, alpha)."""
    w_a, b_a = model.self_attention.weight[0], model.self_attention.bias[0]
    w_b, b_b = model.relation_attention.weight[0], model.relation_attention.bias[0]
    logits, alphas = [], []
    for sample in regions:
        feats = [model.backbone(region[None])[0] for region in sample]
        a = torch.stack([torch.sigmoid(torch.dot(w_a, f) + b_a) for f in feats])
        if attention == "softmax":
            a = torch.exp(a) / torch.exp(a).sum()
        f_m = sum(a_i * f_i for a_i, f_i in zip(a, feats)) / a.sum()
        pairs = [torch.cat([f_i, f_m]) for f_i in feats]
        b = torch.stack([torch.sigmoid(torch.dot(w_b, p) + b_b) for p in pairs])
        if attention == "softmax":
            b = torch.exp(b) / torch.exp(b).sum()
        pooled = sum(a_i * b_i * p for a_i, b_i, p in zip(a, b, pairs)) / sum(
            a_i * b_i for a_i, b_i in zip(a, b)
        )
        logits.append(model.fc.weight @ pooled + model.fc.bias)
        alphas.append(a)
    return torch.stack(logits), torch.stack(alphas)
