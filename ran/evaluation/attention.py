"""Where the model looks, measured: per subset, the mean weight of each region and how often each region
carries the largest weight.

The RAN paper's central claim is that on occluded and turned faces the attention moves to the regions that
stay visible. It shows hand-picked pictures; these numbers (and the grouped bar chart that puts test,
occlusion, pose30 and pose45 side by side) let anyone check the claim on their own model. The weight of a
region is its share of the final pooled feature (``RANOutput.weights``: alpha * beta, normalised).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ran.errors import UserError
from ran.evaluation.tables import render_table
from ran.regions import REGION_NAMES, region_labels


def region_statistics(weights: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Mean weight per region and the share of faces on which each region weighs most; each sums to 1."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != len(labels):
        raise UserError(f"region weights: expected (n, {len(labels)}), got shape {weights.shape}")
    top = np.bincount(weights.argmax(axis=1), minlength=len(labels)) / max(len(weights), 1)
    return {
        "regions": list(labels),
        "mean_weight": weights.mean(axis=0).tolist() if len(weights) else [0.0] * len(labels),
        "top_share": top.tolist(),
    }


def _subsets_with_attention(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {name: r["attention"] for name, r in results.items() if isinstance(r.get("attention"), Mapping)}


def format_attention(results: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """One row per region, one column per subset: ``mean weight / top share``."""
    stats = _subsets_with_attention(results)
    if not stats:
        return ""
    regions = next(iter(stats.values()))["regions"]
    header = ["region", *(f"{name} weight / top" for name in stats)]
    rows = [
        [label, *(f"{s['mean_weight'][i]:.3f} / {s['top_share'][i]:.3f}" for s in stats.values())]
        for i, label in enumerate(regions)
    ]
    return render_table(header, rows, markdown)


def plot_attention(results: Mapping[str, Mapping[str, Any]], path: Path) -> bool:
    """Grouped bars, subsets side by side per region: mean weight (left) and top-region share (right).
    Returns False (and draws nothing) when no subset has attention statistics."""
    stats = _subsets_with_attention(results)
    if not stats:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = next(iter(stats.values()))["regions"]
    x = np.arange(len(regions))
    width = 0.8 / len(stats)
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.8 * len(regions)), 4.4))
    panels = (("mean_weight", "mean region weight"), ("top_share", "share of faces where it weighs most"))
    for ax, (key, ylabel) in zip(axes, panels):
        for offset, (name, s) in enumerate(stats.items()):
            ax.bar(x - 0.4 + width * (offset + 0.5), s[key], width, label=name)
        ax.axhline(1 / len(regions), color="grey", linestyle=":", linewidth=1, label="uniform")
        ax.set_xticks(x, regions, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


__all__ = ["REGION_NAMES", "format_attention", "plot_attention", "region_labels", "region_statistics"]
