"""The region-biased (RB) loss and the RAN training criterion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ran.errors import UserError
from ran.models.ran import RANOutput
from ran.numbers import LABEL_SMOOTHING, RB_MARGIN, RB_WEIGHT


class RegionBiasedLoss(nn.Module):
    """L_RB = mean_batch max(0, margin - (max_{i>=1} alpha_i - alpha_0)).

    Pushes at least one crop's self-attention weight above the whole face's (region 0) by
    ``margin``. The max runs over the crops only (the reimplementation's off-by-one that included
    the whole face and skipped the last crop is not reproduced).
    """

    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        self.margin = RB_MARGIN.check(margin, "margin")

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        if alpha.dim() != 2 or alpha.shape[1] < 2:
            raise UserError(f"alpha: expected (B, K) weights with K >= 2 regions, got {tuple(alpha.shape)}")
        gap = alpha[:, 1:].max(dim=1).values - alpha[:, 0]
        return F.relu(self.margin - gap).mean()


class RANCriterion(nn.Module):
    """Cross-entropy (hard class indices or soft target distributions) + ``rb_weight`` * RB loss."""

    def __init__(self, margin: float = 0.1, rb_weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.rb = RegionBiasedLoss(margin)
        self.rb_weight = RB_WEIGHT.check(rb_weight, "rb_weight")
        self.label_smoothing = LABEL_SMOOTHING.check(label_smoothing, "label_smoothing")

    def forward(self, output: RANOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns {'loss', 'ce', 'rb'}; ``target`` (B,) class indices or (B, num_classes) probabilities."""
        logits = output.logits
        if target.dim() == 2:
            if target.shape != logits.shape:
                raise UserError(
                    f"target: soft targets {tuple(target.shape)} do not match logits {tuple(logits.shape)}"
                )
            target = target.to(logits.dtype)
        elif target.dim() != 1:
            raise UserError(
                f"target: expected (B,) class indices or (B, C) probabilities, got {tuple(target.shape)}"
            )
        ce = F.cross_entropy(
            logits.float(),
            target if target.dim() == 1 else target.float(),
            label_smoothing=self.label_smoothing,
        )
        rb = (
            self.rb(output.alpha.float())
            if self.rb_weight and output.alpha.shape[1] > 1
            else ce.new_zeros(())
        )
        return {"loss": ce + self.rb_weight * rb, "ce": ce, "rb": rb}
