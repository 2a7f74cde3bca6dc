"""Evaluation results as people read them: tables on the terminal, results.json / results.md and one
confusion-matrix picture per subset, written together into one folder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ran.files import staging_files

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(results: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """The summary table: per subset accuracy with counts and the mean class accuracy."""
    rows = [
        (name, f"{_fmt(r['accuracy'])} ({r['correct']}/{r['total']})", _fmt(r["mean_class_accuracy"]))
        for name, r in results.items()
    ]
    header = ("subset", "accuracy (correct/total)", "mean class accuracy")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---|---|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]
    )


def format_per_class(results: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """Per-class accuracy: one row per class, one column per subset."""
    names = list(results)
    classes = list(next(iter(results.values()))["per_class"])
    header = ["class", *names]
    rows = [[c, *(_fmt(results[n]["per_class"][c]["accuracy"]) for n in names)] for c in classes]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]
    )


def plot_confusion(result: Mapping[str, Any], title: str, path: Path) -> None:
    """Row-normalised confusion matrix with the counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(result["per_class"])
    counts = torch.tensor(result["confusion_matrix"], dtype=torch.float64)
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(classes), 0.6 + 0.7 * len(classes)))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                int(counts[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_title(f"{title}: {result['accuracy']:.4f} ({result['correct']}/{result['total']})")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def output_files(results: Mapping[str, Any]) -> list[str]:
    return [RESULTS_JSON, RESULTS_MD, *(f"confusion_{name}.png" for name in results)]


def write_results(
    results: Mapping[str, Mapping[str, Any]], out: str | Path, *, overwrite: bool = False, title: str = ""
) -> list[Path]:
    """results.json, results.md and confusion_<subset>.png into ``out``, staged then moved into place."""
    out = Path(out).expanduser().absolute()
    names = output_files(results)
    clashes = [n for n in (RESULTS_JSON, RESULTS_MD) if (out / n).exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{out / clashes[0]} already exists; pass --overwrite to replace the results")
    with staging_files(out) as staging:
        (staging / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        markdown = [
            f"# {title or 'Evaluation results'}",
            "",
            format_table(results, markdown=True),
            "",
            "Per-class accuracy:",
            "",
            format_per_class(results, markdown=True),
            "",
        ]
        (staging / RESULTS_MD).write_text("\n".join(markdown), encoding="utf-8")
        for name, result in results.items():
            plot_confusion(result, name, staging / f"confusion_{name}.png")
    return [out / name for name in names]


def print_results(results: Mapping[str, Mapping[str, Any]]) -> None:
    print(format_table(results))
    print()
    print("per-class accuracy:")
    print(format_per_class(results))
