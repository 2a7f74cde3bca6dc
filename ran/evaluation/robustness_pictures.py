"""The pictures of ``ran robustness`` (matplotlib, the ``plots`` extra): accuracy against severity with
interval bands, one face under every perturbation and severity, and the occluders' attention shift."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ran.robustness import SEVERITIES


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(results: Mapping[str, Any], path: Path) -> None:
    """One panel per perturbation: accuracy against severity (0 = clean), one line per model, its 95 %
    interval as a band."""
    plt = _pyplot()
    models = results["models"]
    kinds = list(next(iter(models.values()))["perturbations"])
    columns = min(4, max(1, len(kinds)))
    rows = max(1, math.ceil(len(kinds) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.7 * rows), squeeze=False, sharey=True)
    x = [0, *SEVERITIES]
    for ax, kind in zip(axes.flat, kinds):
        for model, summary in models.items():
            levels = [summary["clean"], *(summary["perturbations"][kind][str(s)] for s in SEVERITIES)]
            ax.plot(x, [level["accuracy"] for level in levels], marker="o", markersize=3, label=model)
            low, high = zip(*(level["interval"] for level in levels))
            ax.fill_between(x, low, high, alpha=0.2)
        ax.set_title(kind, fontsize=9)
        ax.set_xticks(x, ["clean", *map(str, SEVERITIES)], fontsize=7)
        ax.set_ylim(0.0, 1.0)
    for ax in list(axes.flat)[len(kinds) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_grid(faces: np.ndarray, names: Sequence[str], path: Path) -> None:
    """``faces`` (rows, 1 + severities, H, W, 3): each row one perturbation, clean face first."""
    plt = _pyplot()
    rows, columns = faces.shape[:2]
    fig, axes = plt.subplots(rows, columns, figsize=(1.1 * columns + 1.2, 1.1 * rows), squeeze=False)
    for r in range(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.imshow(faces[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {c}", fontsize=7)
        axes[r, 0].set_ylabel(names[r], fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_shift(results: Mapping[str, Any], path: Path) -> bool:
    """Attention shift against severity per occluder, one line per model with its interval as error
    bars; False (nothing drawn) when no model has one."""
    series = []
    for model, summary in results["models"].items():
        for kind, levels in summary["perturbations"].items():
            shifts = [levels[str(s)].get("attention_shift") for s in SEVERITIES]
            if all(shifts):
                series.append((f"{model}: {kind}", shifts))
    if not series:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for offset, (label, shifts) in enumerate(series):
        x = np.asarray(SEVERITIES) + (offset - len(series) / 2) * 0.03
        y = np.asarray([s["shift"] for s in shifts])
        low, high = np.asarray([s["interval"] for s in shifts]).T
        ax.errorbar(x, y, yerr=[y - low, high - y], marker="o", markersize=3, capsize=2, label=label)
    ax.axhline(0.0, color="grey", linewidth=1, linestyle=":")
    ax.set_xticks(SEVERITIES)
    ax.set_xlabel("severity")
    ax.set_ylabel("weight on covered - on visible regions\n(occluded minus clean)")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


__all__ = ["plot_curves", "plot_grid", "plot_shift"]
