"""Evaluation results as people read them: tables on the terminal (with 95 % intervals, calibration error
and region attention), results.json / results.md, one confusion matrix and one reliability diagram per
subset, the attention chart, and the per-face predictions.parquet, written together into one folder.

The folder gets the marker ``.ran-evaluation.json``; ``--overwrite`` replaces these files only in a folder
with that marker (or with a results.json of this package, written before markers existed), and only one
command writes results into a folder at a time (its lock, ``OUT/.ran.lock``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ran.evaluation.attention import format_attention, plot_attention
from ran.evaluation.samples import PREDICTIONS, SubsetSamples, write_predictions
from ran.evaluation.tables import render_table
from ran.extras import optional_part
from ran.files import check_overwrite_files, staging_files
from ran.inference import precision_note
from ran.locks import output_lock

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
ATTENTION_PNG = "attention.png"
EVALUATION = "evaluation"  # the marker kind: .ran-evaluation.json
RESULT_FILES = (RESULTS_JSON, RESULTS_MD, PREDICTIONS, ATTENTION_PNG)  # and the pictures of each subset


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _interval(result: Mapping[str, Any], key: str) -> str:
    interval = result.get("interval") or {}
    bounds = interval.get(key)
    return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]" if bounds else "-"


def _ece(result: Mapping[str, Any]) -> str:
    return _fmt((result.get("calibration") or {}).get("ece"))


def format_table(results: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """The summary table: per subset accuracy with counts and its 95 % interval, the mean class accuracy
    with its interval, and the expected calibration error."""
    header = (
        "subset",
        "accuracy (correct/total)",
        "95% interval",
        "mean class accuracy",
        "95% interval",
        "ECE",
    )
    rows = [
        (
            name,
            f"{_fmt(r['accuracy'])} ({r['correct']}/{r['total']})",
            _interval(r, "accuracy"),
            _fmt(r["mean_class_accuracy"]),
            _interval(r, "mean_class_accuracy"),
            _ece(r),
        )
        for name, r in results.items()
    ]
    return render_table(header, rows, markdown)


def format_per_class(results: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """Per-class accuracy: one row per class, one column per subset (a class a subset lacks shows '-')."""
    names = list(results)
    classes = list(dict.fromkeys(c for r in results.values() for c in r["per_class"]))
    header = ["class", *names]
    rows = [
        [c, *(_fmt((results[n]["per_class"].get(c) or {}).get("accuracy")) for n in names)] for c in classes
    ]
    return render_table(header, rows, markdown)


def interval_note(results: Mapping[str, Mapping[str, Any]]) -> str:
    """How the intervals and the calibration error were computed (results.md and the terminal)."""
    intervals = [r["interval"] for r in results.values() if isinstance(r.get("interval"), Mapping)]
    if not intervals:
        return ""
    first = intervals[0]
    return (
        f"Intervals: {round(100 * first['level'])} % {first['method']}, {first['resamples']} resamples "
        f"(seed {first['seed']}). ECE: expected calibration error over "
        f"{(next(iter(results.values())).get('calibration') or {}).get('bins', '-')} confidence bins."
    )


def cross_dataset_note(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Which classes a cross-dataset evaluation left out (empty when none were)."""
    notes = {name: r["classes"] for name, r in results.items() if isinstance(r.get("classes"), Mapping)}
    if not notes:
        return ""
    first = next(iter(notes.values()))
    rows = ", ".join(f"{name} {info.get('rows_dropped', 0)}" for name, info in notes.items())
    return (
        f"Cross-dataset: evaluated on the {len(first['evaluated'])} shared classes "
        f"({', '.join(first['evaluated'])}); dropped from the model: "
        f"{', '.join(first['dropped_from_model']) or 'none'}; dropped from the data: "
        f"{', '.join(first['dropped_from_data']) or 'none'} (rows left out: {rows})."
    )


def unlabelled_note(results: Mapping[str, Mapping[str, Any]]) -> str:
    """How many rows labelled -1 each subset left out of its numbers (empty when none were)."""
    counts = {name: int(r["unlabelled"]) for name, r in results.items() if r.get("unlabelled")}
    if not counts:
        return ""
    rows = ", ".join(f"{name} {count}" for name, count in counts.items())
    return f"Unlabelled: rows labelled -1 left out of every number above ({rows})."


def _notes(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    notes = (
        interval_note(results),
        precision_note(results),
        cross_dataset_note(results),
        unlabelled_note(results),
    )
    return [note for note in notes if note]


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
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class's faces (row)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# The two directions a bin's accuracy can miss its confidence, each with its own colour and legend entry.
GAPS = (
    ("over-confident (confidence above accuracy)", "tab:red"),
    ("under-confident (accuracy above confidence)", "tab:green"),
)


def _draw_gaps(
    ax: Any, edges: list[float], accuracy: list[float], confidence: list[float], width: float
) -> None:
    """The gap between each bin's accuracy and its confidence, drawn upwards from the lower of the two
    in the colour of its direction (:data:`GAPS`); a direction no bin shows gets no legend entry."""
    over = [max(c - a, 0.0) for a, c in zip(accuracy, confidence)]
    under = [max(a - c, 0.0) for a, c in zip(accuracy, confidence)]
    for (label, colour), heights, bottom in zip(GAPS, (over, under), (accuracy, confidence)):
        if any(h > 0 for h in heights):
            ax.bar(
                edges,
                heights,
                bottom=bottom,
                width=width,
                align="edge",
                color=colour,
                alpha=0.35,
                label=label,
            )


def plot_reliability(result: Mapping[str, Any], title: str, path: Path) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the faces per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = result["calibration"]
    bins = int(cal["bins"])
    edges = [i / bins for i in range(bins)]
    accuracy = [a if a is not None else 0.0 for a in cal["bin_accuracy"]]
    confidence = [c if c is not None else 0.0 for c in cal["bin_confidence"]]
    fig, (ax, count_ax) = plt.subplots(
        2, 1, figsize=(4.8, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.bar(edges, accuracy, width=1 / bins, align="edge", edgecolor="black", label="accuracy")
    _draw_gaps(ax, edges, accuracy, confidence, 1 / bins)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: ECE {cal['ece']:.4f}")
    ax.legend(fontsize=8, loc="upper left")
    count_ax.bar(edges, cal["bin_count"], width=1 / bins, align="edge", color="grey")
    count_ax.set_xlabel("confidence (top probability)")
    count_ax.set_ylabel("faces")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def results_markdown(results: Mapping[str, Mapping[str, Any]], title: str = "", pictures: bool = True) -> str:
    """results.md: the summary with intervals, per-class accuracy, attention and (where they were drawn)
    the pictures."""
    parts = [f"# {title or 'Evaluation results'}", "", format_table(results, markdown=True), ""]
    parts += [note + "\n" for note in _notes(results)]
    parts += ["Per-class accuracy:", "", format_per_class(results, markdown=True), ""]
    attention = format_attention(results, markdown=True)
    if attention:
        parts += [
            "Region attention (mean weight / share of faces on which the region weighs most):",
            "",
            attention,
            "",
            *([f"![region attention]({ATTENTION_PNG})", ""] if pictures else []),
        ]
    for name in results if pictures else ():
        parts.append(f"![confusion {name}](confusion_{name}.png)")
        if "calibration" in results[name]:
            parts.append(f"![reliability {name}](reliability_{name}.png)")
    return "\n".join([*parts, ""])


def check_results_folder(out: str | Path, *, overwrite: bool, subsets: Iterable[str] = ()) -> None:
    """Refuse to replace results in ``out`` unless ``overwrite`` and ``ran evaluate`` wrote them."""
    names = [
        *RESULT_FILES,
        *(f"{kind}_{name}.png" for name in subsets for kind in ("confusion", "reliability")),
    ]
    from ran.data.format.folder import check_not_in_dataset  # datasets: imported when results are written

    check_not_in_dataset(out)
    check_overwrite_files(out, names, overwrite=overwrite, kind=EVALUATION)


# What an evaluation writes that a later one may not write again (a subset it leaves out, no predictions)
REPLACED_FILES = ("confusion_*.png", "reliability_*.png", ATTENTION_PNG, PREDICTIONS)


def write_results(
    results: Mapping[str, Mapping[str, Any]],
    out: str | Path,
    *,
    overwrite: bool = False,
    title: str = "",
    samples: Mapping[str, SubsetSamples] | None = None,
) -> list[Path]:
    """results.json, results.md, confusion_<subset>.png, reliability_<subset>.png, attention.png and (with
    ``samples``) predictions.parquet into ``out``: staged, then moved into place together, under the
    folder's lock. Existing results are replaced only with ``overwrite`` (:func:`check_results_folder`).

    A predictions.parquet or a picture of an earlier run that these results replace is removed, so that
    the folder never pairs results with the faces or pictures of another run: only files the folder's
    marker lists as written by ``ran evaluate`` (a picture of the user's own is never touched).
    """
    out = Path(out).expanduser().absolute()
    with output_lock(out, "ran evaluate", inside=True):
        check_results_folder(out, overwrite=overwrite, subsets=results)
        with staging_files(out, kind=EVALUATION, replaces=REPLACED_FILES) as staging:
            pictures = pictures_available()
            (staging / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            (staging / RESULTS_MD).write_text(results_markdown(results, title, pictures), encoding="utf-8")
            if pictures:
                _plot_all(results, staging)
            if samples is not None:
                write_predictions(samples, staging / PREDICTIONS)
            written = sorted(p.name for p in staging.iterdir())
    return [out / name for name in written]


def pictures_available() -> bool:
    """Pictures need matplotlib (the ``plots`` extra); without it the tables are written alone, and a
    note (once) says why."""
    return optional_part("matplotlib", "pictures")


def _plot_all(results: Mapping[str, Mapping[str, Any]], folder: Path) -> None:
    for name, result in results.items():
        plot_confusion(result, name, folder / f"confusion_{name}.png")
        if "calibration" in result:
            plot_reliability(result, name, folder / f"reliability_{name}.png")
    plot_attention(results, folder / ATTENTION_PNG)


def print_results(results: Mapping[str, Mapping[str, Any]]) -> None:
    """The summary (with intervals), per-class accuracy and the attention table, on the terminal."""
    print(format_table(results))
    for note in _notes(results):
        print(note)
    print()
    print("per-class accuracy:")
    print(format_per_class(results))
    attention = format_attention(results)
    if attention:
        print()
        print("region attention (mean weight / share of faces on which the region weighs most):")
        print(attention)
