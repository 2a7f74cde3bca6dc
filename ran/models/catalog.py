"""The registered RAN architectures as rows (name, backbone, region size, feature size, parameters)."""

from __future__ import annotations

import fnmatch
from typing import Any

import timm
import torch

from ran.models.ran import RAN_VARIANTS


def describe_models(pattern: str = "*", num_classes: int = 8) -> list[dict[str, Any]]:
    """One row per registered RAN name matching ``pattern``; parameters counted on the meta device
    (no memory, no weights), for ``num_classes`` outputs."""
    rows = []
    for name in sorted(RAN_VARIANTS):
        if not fnmatch.fnmatch(name, pattern):
            continue
        defaults = RAN_VARIANTS[name]
        with torch.device("meta"):
            model = timm.create_model(name, num_classes=num_classes)
        rows.append(
            {
                "name": name,
                "backbone": defaults["backbone"],
                "region_size": defaults["region_size"],
                "num_regions": model.num_regions,
                "feature_dim": model.region_feature_dim,
                "params": sum(p.numel() for p in model.parameters()),
            }
        )
    return rows
