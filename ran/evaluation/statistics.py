"""How much a test-set number can be trusted: bootstrap intervals, McNemar's exact test, calibration.

Test subsets of a few hundred faces (Occlusion-FERPlus 605, Pose-FERPlus > 45 633) move an accuracy by a
point when a handful of faces flip, so every accuracy gets a seeded percentile-bootstrap interval, and two
models seen on the same faces are compared pairwise (the same resamples for both; McNemar on the faces
where they disagree). All resamples are drawn at once as a (resamples, n) count matrix, so a statistic is
a matrix product, not a Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ran.extras import require
from ran.numbers import integer

BOOTSTRAP_METHOD = "percentile bootstrap over the images"
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
LEVEL = 0.95
MIN_RESAMPLES = 100
MAX_RESAMPLES = 100_000  # 50x the default: intervals settle long before, and the time grows with it
RESAMPLES = integer(MIN_RESAMPLES, MAX_RESAMPLES)  # the range of --resamples
CALIBRATION_BINS = 15
_CHUNK_ELEMENTS = 1 << 22  # resample counts held in memory at once (32 MiB of int64)


def check_resamples(resamples: int) -> int:
    return RESAMPLES.check(resamples, "resamples")


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each of ``n`` items is drawn in each resample, as (r, n) chunks; seeded, deterministic."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        draws = rng.integers(0, n, size=(rows, n)) + (np.arange(rows)[:, None] * n)
        yield np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def bootstrap(
    n: int, statistic: Callable[[np.ndarray], np.ndarray], *, resamples: int, seed: int
) -> np.ndarray:
    """``statistic`` (a function of a (r, n) count matrix, one value per row) over every resample."""
    return np.concatenate([statistic(counts) for counts in resample_counts(n, resamples, seed)])


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return [float(low), float(high)]


def _accuracy(correct: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda counts: counts @ correct / correct.size


def _mean_class_accuracy(
    labels: np.ndarray, correct: np.ndarray, num_classes: int
) -> Callable[[np.ndarray], np.ndarray]:
    one_hot = np.eye(num_classes)[labels]

    def statistic(counts: np.ndarray) -> np.ndarray:
        totals = counts @ one_hot
        hits = counts @ (one_hot * correct[:, None])
        present = totals > 0  # a resample may miss a rare class: average over those it has
        rates = np.divide(hits, totals, out=np.zeros_like(hits), where=present)
        return rates.sum(axis=1) / present.sum(axis=1)

    return statistic


def accuracy_intervals(
    labels: np.ndarray,
    predictions: np.ndarray,
    num_classes: int,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> dict[str, Any]:
    """Bootstrap intervals of accuracy and mean class accuracy (results.json ``interval`` entry)."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    correct = (labels == predictions).astype(np.float64)
    both = {"accuracy": _accuracy(correct), "mean_class": _mean_class_accuracy(labels, correct, num_classes)}
    values = bootstrap(
        labels.size, lambda c: np.stack([f(c) for f in both.values()], axis=1), resamples=resamples, seed=seed
    )
    return {
        "method": BOOTSTRAP_METHOD,
        "level": level,
        "resamples": resamples,
        "seed": seed,
        "accuracy": percentile_interval(values[:, 0], level),
        "mean_class_accuracy": percentile_interval(values[:, 1], level),
    }


def paired_difference_interval(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> list[float]:
    """Interval of accuracy(B) - accuracy(A) when both are resampled together (the same faces)."""
    difference = np.asarray(correct_b, dtype=np.float64) - np.asarray(correct_a, dtype=np.float64)
    return percentile_interval(
        bootstrap(difference.size, _accuracy(difference), resamples=resamples, seed=seed)
    )


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test: a two-sided binomial test (p = 1/2) on the faces only one model gets right."""
    binomtest = require("scipy.stats", "McNemar's exact test (ran compare)").binomtest

    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int((correct_a & ~correct_b).sum()), int((correct_b & ~correct_a).sum())
    discordant = only_a + only_b
    p_value = binomtest(only_b, discordant, 0.5).pvalue if discordant else 1.0
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": float(p_value)}


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Expected calibration error over ``bins`` equal-width confidence bins, with the per-bin numbers a
    reliability diagram draws (None for an empty bin)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    # bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 goes to bin 0
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    hit_sum = np.bincount(index, weights=correct, minlength=bins)
    filled = count > 0
    mean_conf = np.divide(conf_sum, count, out=np.zeros(bins), where=filled)
    mean_acc = np.divide(hit_sum, count, out=np.zeros(bins), where=filled)
    ece = float((count * np.abs(mean_acc - mean_conf)).sum() / max(count.sum(), 1))
    return {
        "ece": ece,
        "bins": bins,
        "bin_count": count.tolist(),
        "bin_confidence": [float(v) if f else None for v, f in zip(mean_conf, filled)],
        "bin_accuracy": [float(v) if f else None for v, f in zip(mean_acc, filled)],
    }


__all__ = [
    "BOOTSTRAP_METHOD",
    "CALIBRATION_BINS",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "accuracy_intervals",
    "bootstrap",
    "calibration",
    "check_resamples",
    "mcnemar_exact",
    "paired_difference_interval",
    "percentile_interval",
    "resample_counts",
]
