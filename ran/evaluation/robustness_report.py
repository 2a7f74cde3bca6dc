"""What ``ran robustness`` writes: results.json, results.md, one predictions.parquet per model (under
``models/<name>/``, so that ``ran compare OUT/models/A OUT/models/B`` compares two models on the same
perturbed faces, setting by setting) and the pictures: accuracy against severity, one face under every
perturbation and severity, and the attention shift of the occluders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ran.evaluation.report import pictures_available
from ran.evaluation.robustness import CLEAN, RobustnessSamples
from ran.evaluation.robustness_metrics import SHIFT_METHOD
from ran.evaluation.samples import PREDICTIONS, write_predictions
from ran.evaluation.statistics import BOOTSTRAP_METHOD
from ran.evaluation.tables import render_table
from ran.files import staging_dir
from ran.locks import output_lock
from ran.robustness import SEVERITIES

ROBUSTNESS = "robustness"  # the marker kind: .ran-robustness.json
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
CURVES_PNG, GRID_PNG, SHIFT_PNG = "accuracy_vs_severity.png", "perturbations.png", "attention_shift.png"
MODELS_DIR = "models"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(values: list[float] | None) -> str:
    return "-" if not values else f"[{values[0]:.4f}, {values[1]:.4f}]"


def accuracy_table(results: Mapping[str, Any], markdown: bool = False) -> str:
    """One row per model and perturbation: accuracy (interval) per severity, CE and relative CE."""
    header = ["model", "perturbation", *(f"severity {s}" for s in SEVERITIES), "CE", "rel. CE"]
    rows = []
    for model, summary in results["models"].items():
        clean = summary["clean"]
        rows.append([model, CLEAN, f"{_fmt(clean['accuracy'])} {_interval(clean['interval'])}", *[""] * 6])
        for kind, levels in summary["perturbations"].items():
            errors = summary.get("corruption_error", {}).get(kind, {})
            cells = [_fmt(levels[str(s)]["accuracy"]) for s in SEVERITIES]
            rows.append([model, kind, *cells, _fmt(errors.get("ce"), 3), _fmt(errors.get("relative_ce"), 3)])
    return render_table(header, rows, markdown=markdown)


def shift_table(results: Mapping[str, Any], markdown: bool = False) -> str:
    """The attention shift of every occluder, per model and severity, with its interval."""
    rows = []
    for model, summary in results["models"].items():
        for kind, levels in summary["perturbations"].items():
            for severity in SEVERITIES:
                shift = levels[str(severity)].get("attention_shift")
                if shift:
                    rows.append(
                        [
                            model,
                            kind,
                            str(severity),
                            f"{shift['shift']:+.4f}",
                            _interval(shift["interval"]),
                            str(shift["faces"]),
                        ]
                    )
    header = ["model", "occluder", "severity", "shift", "95% interval", "faces"]
    return render_table(header, rows, markdown=markdown) if rows else ""


def precision_line(results: Mapping[str, Any]) -> str:
    """Which precision (and runtime) each model ran in: ``Precision: a fp32; b onnx int8.`` ('' if none
    recorded, as in results written before it was)."""
    named = [f"{m} {s['precision']}" for m, s in results["models"].items() if s.get("precision")]
    return f"Precision: {'; '.join(named)}." if named else ""


def robustness_markdown(results: Mapping[str, Any]) -> str:
    lines = [f"# Robustness: {results['data']} ({results['split']})", ""]
    lines += [
        f"Seed {results['seed']}; accuracy intervals: {BOOTSTRAP_METHOD}, 95 %. CE and relative CE against "
        f"{results['reference']} (ImageNet-C definitions; 1.0 = as robust as the reference). "
        f"{precision_line(results)}".rstrip(),
        "",
        accuracy_table(results, markdown=True),
        "",
    ]
    mce = [[m, _fmt(s.get("mce"), 3), _fmt(s.get("relative_mce"), 3)] for m, s in results["models"].items()]
    lines += [render_table(["model", "mCE", "relative mCE"], mce, markdown=True), ""]
    shifts = shift_table(results, markdown=True)
    if shifts:
        lines += [
            f"Attention shift ({SHIFT_METHOD}; negative: attention leaves what is hidden):",
            "",
            shifts,
            "",
        ]
        lines += [f"![attention shift]({SHIFT_PNG})", ""]
    lines += [
        f"![accuracy against severity]({CURVES_PNG})",
        "",
        f"![one face, every perturbation]({GRID_PNG})",
        "",
    ]
    return "\n".join(lines)


def write_robustness(
    results: Mapping[str, Any],
    runs: Mapping[str, RobustnessSamples],
    out: str | Path,
    *,
    grid: tuple[np.ndarray, list[str]] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Everything into ``out``, built in a staging folder and moved into place whole (an existing
    ``out`` is replaced only with ``overwrite`` and only when ``ran robustness`` wrote it).
    ``grid``: the pictures' face grid, (rows, columns, H, W, 3) uint8 and the row names."""
    out = Path(out).expanduser().absolute()
    with output_lock(out, "ran robustness", inside=False):
        with staging_dir(out, overwrite=overwrite, kind=ROBUSTNESS) as staging:
            (staging / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            (staging / RESULTS_MD).write_text(robustness_markdown(results), encoding="utf-8")
            for name, run in runs.items():
                (staging / MODELS_DIR / name).mkdir(parents=True)
                write_predictions(run.samples, staging / MODELS_DIR / name / PREDICTIONS)
            if pictures_available():
                from ran.evaluation.robustness_pictures import plot_curves, plot_grid, plot_shift

                plot_curves(results, staging / CURVES_PNG)
                plot_shift(results, staging / SHIFT_PNG)
                if grid is not None:
                    plot_grid(*grid, staging / GRID_PNG)
            written = sorted(p.name for p in staging.iterdir())
    return [out / name for name in written]


def print_robustness(results: Mapping[str, Any]) -> None:
    print(accuracy_table(results))
    if precision_line(results):
        print(precision_line(results))
    shifts = shift_table(results)
    if shifts:
        print("\nattention shift (negative: attention leaves what the occluder hides):")
        print(shifts)


__all__ = [
    "MODELS_DIR",
    "RESULTS_JSON",
    "ROBUSTNESS",
    "print_robustness",
    "robustness_markdown",
    "write_robustness",
]
