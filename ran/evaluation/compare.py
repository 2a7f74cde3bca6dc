"""Is model B really better than model A on these faces? A paired comparison, per subset.

Both models must have seen the same faces with the same labels (checked face by face). The difference of
accuracies gets a paired bootstrap interval (each resample draws the same faces for both models, so what
the faces have in common cancels out) and McNemar's exact p-value: a two-sided binomial test (p = 1/2) on
the faces that exactly one of the two models gets right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ran.errors import UserError
from ran.evaluation.samples import SubsetSamples
from ran.evaluation.statistics import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    LEVEL,
    check_resamples,
    mcnemar_exact,
    paired_difference_interval,
)
from ran.evaluation.tables import markdown_code, render_table
from ran.files import check_overwrite_files, staging_files
from ran.locks import output_lock
from ran.reading import read_small_json

COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
PAIRED_METHOD = "paired percentile bootstrap over the images"
TEST_METHOD = "McNemar exact test (two-sided binomial test on the faces only one model gets right)"
COMPARISON = "comparison"  # the marker kind: .ran-comparison.json
DIFFERENCE = "accuracy(B) - accuracy(A)"


def check_same_samples(name: str, a: SubsetSamples, b: SubsetSamples) -> None:
    """Refuse two runs that did not see the same faces, in the same order, with the same labels."""
    prefix = f"subset {name!r}: the two runs did not see the same samples"
    if len(a) != len(b):
        raise UserError(f"{prefix}: A has {len(a)} faces, B has {len(b)}")
    if list(a.classes) != list(b.classes):
        raise UserError(f"{prefix}: A was scored on classes {a.classes}, B on {b.classes}")
    differ = np.flatnonzero(np.asarray(a.ids, dtype=object) != np.asarray(b.ids, dtype=object))
    if differ.size:
        i = int(differ[0])
        raise UserError(f"{prefix}: face {i} is {a.ids[i]!r} in A and {b.ids[i]!r} in B")
    differ = np.flatnonzero(a.labels != b.labels)
    if differ.size:
        i = int(differ[0])
        raise UserError(
            f"{prefix}: face {a.ids[i]!r} is labelled {a.classes[a.labels[i]]!r} in A and "
            f"{b.classes[b.labels[i]]!r} in B"
        )


def compare_subset(
    name: str, a: SubsetSamples, b: SubsetSamples, *, resamples: int, seed: int, level: float = LEVEL
) -> dict[str, Any]:
    """Both accuracies, accuracy(B) - accuracy(A) with its paired interval, and McNemar's p-value."""
    check_same_samples(name, a, b)
    correct_a, correct_b = a.correct, b.correct
    accuracy_a, accuracy_b = float(correct_a.mean()), float(correct_b.mean())
    return {
        "total": len(a),
        "accuracy_a": accuracy_a,
        "correct_a": int(correct_a.sum()),
        "accuracy_b": accuracy_b,
        "correct_b": int(correct_b.sum()),
        "difference": accuracy_b - accuracy_a,
        "interval": paired_difference_interval(
            correct_a, correct_b, resamples=resamples, seed=seed, level=level
        ),
        **mcnemar_exact(correct_a, correct_b),
    }


def _common_subsets(
    a: Mapping[str, SubsetSamples], b: Mapping[str, SubsetSamples], subsets: Sequence[str] | None
) -> list[str]:
    if subsets:
        missing = [(n, side) for n in subsets for side, run in (("A", a), ("B", b)) if n not in run]
        if missing:
            name, side = missing[0]
            have = sorted(a if side == "A" else b)
            raise UserError(f"subset {name!r}: run {side} has no such subset; it has {have}")
        return list(subsets)
    common = [n for n in a if n in b]
    if not common:
        raise UserError(f"the two runs share no subset: A has {sorted(a)}, B has {sorted(b)}")
    return common


def compare_samples(
    a: Mapping[str, SubsetSamples],
    b: Mapping[str, SubsetSamples],
    subsets: Sequence[str] | None = None,
    *,
    names: tuple[str, str] = ("A", "B"),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> dict[str, Any]:
    """The comparison of two runs (per-face predictions) on the subsets both have (or ``subsets``).

    Returns ``{'a', 'b', 'difference', 'interval': {method, level, resamples, seed}, 'test', 'subsets':
    {name: {'total', 'accuracy_a', 'correct_a', 'accuracy_b', 'correct_b', 'difference', 'interval':
    [lo, hi], 'only_a_correct', 'only_b_correct', 'p_value'}}, 'only_in_a', 'only_in_b'}`` (compare.json).
    """
    check_resamples(resamples)
    chosen = _common_subsets(a, b, subsets)
    return {
        "a": names[0],
        "b": names[1],
        "difference": DIFFERENCE,
        "interval": {"method": PAIRED_METHOD, "level": level, "resamples": resamples, "seed": seed},
        "test": TEST_METHOD,
        "subsets": {
            n: compare_subset(n, a[n], b[n], resamples=resamples, seed=seed, level=level) for n in chosen
        },
        "only_in_a": [n for n in a if n not in b],
        "only_in_b": [n for n in b if n not in a],
    }


def compare_models(
    model_a: Any,
    model_b: Any,
    dataset_dict: Mapping[str, Any],
    subsets: Sequence[str] | None = None,
    *,
    names: tuple[str, str] = ("A", "B"),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    **evaluate_options: Any,
) -> tuple[dict[str, Any], dict[str, SubsetSamples], dict[str, SubsetSamples]]:
    """Evaluate both models on the same data, then :func:`compare_samples`; returns the comparison and
    each model's per-face predictions. ``evaluate_options`` go to ``evaluate_samples`` (batch_size,
    mixed_precision, device, image_size, cross_dataset, progress)."""
    from ran.evaluation.run import evaluate_samples

    check_resamples(resamples)
    samples_a = evaluate_samples(model_a, dataset_dict, subsets, **evaluate_options)
    samples_b = evaluate_samples(model_b, dataset_dict, subsets, **evaluate_options)
    comparison = compare_samples(samples_a, samples_b, subsets, names=names, resamples=resamples, seed=seed)
    return comparison, samples_a, samples_b


def format_comparison(comparison: Mapping[str, Any], markdown: bool = False) -> str:
    """One row per subset: both accuracies, B - A with its interval, the discordant faces, McNemar's p."""
    header = ["subset", "faces", "A", "B", "B - A", "95% interval", "only A right", "only B right", "p"]
    rows = [
        [
            name,
            str(r["total"]),
            f"{r['accuracy_a']:.4f} ({r['correct_a']})",
            f"{r['accuracy_b']:.4f} ({r['correct_b']})",
            f"{r['difference']:+.4f}",
            f"[{r['interval'][0]:+.4f}, {r['interval'][1]:+.4f}]",
            str(r["only_a_correct"]),
            str(r["only_b_correct"]),
            f"{r['p_value']:.4f}" if r["p_value"] >= 1e-4 else f"{r['p_value']:.1e}",
        ]
        for name, r in comparison["subsets"].items()
    ]
    return render_table(header, rows, markdown)


def comparison_notes(comparison: Mapping[str, Any], markdown: bool = False) -> list[str]:
    """What A and B are, how the interval and p-value were computed, and the subsets left out (for
    Markdown, the names A and B, which are the user's paths or model names, as code spans)."""
    interval = comparison["interval"]
    name = markdown_code if markdown else str
    notes = [
        f"A: {name(comparison['a'])}",
        f"B: {name(comparison['b'])}",
        f"B - A: {round(100 * interval['level'])} % {interval['method']}, {interval['resamples']} resamples "
        f"(seed {interval['seed']}); p: {comparison['test']}.",
    ]
    for side in ("a", "b"):
        if comparison[f"only_in_{side}"]:
            notes.append(f"only in {side.upper()} (not compared): {', '.join(comparison[f'only_in_{side}'])}")
    return notes


def is_comparison_folder(folder: Path) -> bool:
    """A comparison folder written before markers existed: its compare.json is one of this module's."""
    comparison = read_small_json(folder / COMPARE_JSON)
    return isinstance(comparison, dict) and comparison.get("difference") == DIFFERENCE


def check_comparison_folder(out: str | Path, *, overwrite: bool) -> None:
    """Refuse to replace compare.json / compare.md unless ``overwrite`` and ``ran compare`` wrote them."""
    from ran.data.format.folder import check_not_in_dataset

    check_not_in_dataset(out)
    check_overwrite_files(
        out, (COMPARE_JSON, COMPARE_MD), overwrite=overwrite, kind=COMPARISON, recognise=is_comparison_folder
    )


def write_comparison(
    comparison: Mapping[str, Any], out: str | Path, *, overwrite: bool = False
) -> list[Path]:
    """compare.json and compare.md into ``out`` (staged, then moved in together, under the folder's lock;
    existing ones replaced only with ``overwrite``, :func:`check_comparison_folder`)."""
    import json

    out = Path(out).expanduser().absolute()
    markdown = ["# Paired comparison", "", format_comparison(comparison, markdown=True), ""]
    markdown += [f"- {note}" for note in comparison_notes(comparison, markdown=True)] + [""]
    with output_lock(out, "ran compare", inside=True):
        check_comparison_folder(out, overwrite=overwrite)
        with staging_files(out, kind=COMPARISON) as staging:
            (staging / COMPARE_JSON).write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
            (staging / COMPARE_MD).write_text("\n".join(markdown), encoding="utf-8")
    return [out / COMPARE_JSON, out / COMPARE_MD]


__all__ = [
    "COMPARE_JSON",
    "COMPARE_MD",
    "check_comparison_folder",
    "check_same_samples",
    "compare_models",
    "compare_samples",
    "compare_subset",
    "comparison_notes",
    "format_comparison",
    "write_comparison",
]
