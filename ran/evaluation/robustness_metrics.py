"""The numbers of ``ran robustness``: per setting accuracy, mean class accuracy (with the bootstrap 95 %
intervals of ``ran evaluate``) and ECE; per perturbation ImageNet-C's corruption error against a reference
model; for occluders the attention shift.

Corruption error (Hendrycks & Dietterich, ICLR 2019): CE = sum over severities of the model's top-1 error
divided by the same sum for the reference model; the relative CE first subtracts each model's clean error
from every term (how much a model degrades, not how bad it is). mCE and relative mCE average them over the
perturbations evaluated.

Attention shift: for a face and an occluder covering a share c_k of region k, the region weights w give
S(w) = sum(c w) / sum(c) - sum((1 - c) w) / sum(1 - c), the mean weight on the covered regions minus that
on the visible ones (with c_k of 0 or 1 exactly that; a partly covered region counts by its share). The
shift is S(occluded weights) - S(clean weights) of the same face, averaged over faces with a percentile
bootstrap interval: negative when attention leaves what the occluder hides, the paper's claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ran.evaluation.robustness import CLEAN, RobustnessSamples, setting_name
from ran.evaluation.samples import SubsetSamples
from ran.evaluation.statistics import accuracy_intervals, bootstrap, calibration, percentile_interval
from ran.robustness import SEVERITIES

SHIFT_METHOD = (
    "mean over faces of S(occluded) - S(clean), S = covered-weighted minus visible-weighted mean weight"
)


def setting_summary(samples: SubsetSamples, *, resamples: int, seed: int) -> dict[str, Any]:
    """accuracy, correct, total, mean_class_accuracy, their intervals, error and ECE of one setting."""
    labels, predictions, correct = samples.labels, samples.predictions, samples.correct
    present = np.unique(labels)
    per_class = [float(correct[labels == c].mean()) for c in present]
    interval = accuracy_intervals(labels, predictions, len(samples.classes), resamples=resamples, seed=seed)
    accuracy = float(correct.mean())
    return {
        "accuracy": accuracy,
        "interval": interval["accuracy"],
        "mean_class_accuracy": float(np.mean(per_class)),
        "mean_class_interval": interval["mean_class_accuracy"],
        "error": 1.0 - accuracy,
        "correct": int(correct.sum()),
        "total": int(len(samples)),
        "ece": calibration(samples.confidence, correct)["ece"],
    }


def _region_contrast(weights: np.ndarray, coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face S(w) and whether it is defined (something covered and something visible)."""
    hidden, visible = coverage.sum(axis=1), (1.0 - coverage).sum(axis=1)
    defined = (hidden > 0) & (visible > 0)
    covered = np.divide((coverage * weights).sum(axis=1), hidden, out=np.zeros_like(hidden), where=defined)
    shown = np.divide(
        ((1.0 - coverage) * weights).sum(axis=1), visible, out=np.zeros_like(hidden), where=defined
    )
    return covered - shown, defined


def attention_shift(
    clean: np.ndarray, occluded: np.ndarray, coverage: np.ndarray, *, resamples: int, seed: int
) -> dict[str, Any] | None:
    """The attention shift of one occluder setting (see the module docstring); None when no face has
    both covered and visible regions."""
    clean = np.asarray(clean, dtype=np.float64)
    occluded = np.asarray(occluded, dtype=np.float64)
    coverage = np.asarray(coverage, dtype=np.float64)
    before, defined = _region_contrast(clean, coverage)
    after, _ = _region_contrast(occluded, coverage)
    if not defined.any():
        return None
    shift = (after - before)[defined]
    values = bootstrap(shift.size, lambda counts: counts @ shift / shift.size, resamples=resamples, seed=seed)
    return {
        "shift": float(shift.mean()),
        "interval": percentile_interval(values),
        "clean": float(before[defined].mean()),
        "occluded": float(after[defined].mean()),
        "faces": int(shift.size),
    }


def model_summary(run: RobustnessSamples, *, resamples: int, seed: int) -> dict[str, Any]:
    """``{"clean": {...}, "perturbations": {kind: {"1": {...}, ..., "5": {...}}}}`` for one model."""
    clean = run.samples[CLEAN]
    out: dict[str, Any] = {
        "clean": setting_summary(clean, resamples=resamples, seed=seed),
        "perturbations": {},
    }
    for kind in run.kinds:
        levels = {}
        for severity in SEVERITIES:
            name = setting_name(kind, severity)
            level = setting_summary(run.samples[name], resamples=resamples, seed=seed)
            if run.has_attention and name in run.coverage:
                level["attention_shift"] = attention_shift(
                    clean.weights,
                    run.samples[name].weights,
                    run.coverage[name],
                    resamples=resamples,
                    seed=seed,
                )
            levels[str(severity)] = level
        out["perturbations"][kind] = levels
    return out


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def corruption_errors(results: Mapping[str, Any], reference: str) -> None:
    """Add ``ce`` and ``relative_ce`` to every perturbation of every model, and ``mce`` / ``relative_mce``
    to every model, against model ``reference`` (in place). A ratio whose reference sum is 0 is None."""
    ref = results[reference]
    ref_clean = ref["clean"]["error"]
    for summary in results.values():
        clean = summary["clean"]["error"]
        ces, relatives = [], []
        for kind, levels in summary["perturbations"].items():
            errors = [levels[str(s)]["error"] for s in SEVERITIES]
            ref_errors = [ref["perturbations"][kind][str(s)]["error"] for s in SEVERITIES]
            ce = _ratio(sum(errors), sum(ref_errors))
            relative = _ratio(sum(e - clean for e in errors), sum(e - ref_clean for e in ref_errors))
            summary.setdefault("corruption_error", {})[kind] = {"ce": ce, "relative_ce": relative}
            ces.append(ce)
            relatives.append(relative)
        summary["mce"] = _mean(ces)
        summary["relative_mce"] = _mean(relatives)
        summary["reference"] = reference


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept and len(kept) == len(values) else None


__all__ = ["SHIFT_METHOD", "attention_shift", "corruption_errors", "model_summary", "setting_summary"]
