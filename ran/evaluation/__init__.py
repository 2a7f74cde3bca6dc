"""Evaluation of a RAN on every test subset: running it (``run``), the per-face predictions (``samples``),
the metrics (``metrics``, ``statistics``, ``attention``), the reports people read (``report``) and the
paired comparison of two models (``compare``).

The names below are imported on first use: a parser reads ``statistics``' defaults without torch."""

from ran.lazy import lazy_attributes

__all__ = [
    "ClassMatch",
    "SubsetSamples",
    "evaluate",
    "evaluate_samples",
    "format_per_class",
    "format_table",
    "match_classes",
    "print_results",
    "read_predictions",
    "subset_metrics",
    "summarize",
    "write_results",
]

__getattr__ = lazy_attributes(
    __name__,
    {
        "ClassMatch": "ran.evaluation.classes",
        "match_classes": "ran.evaluation.classes",
        "subset_metrics": "ran.evaluation.metrics",
        "summarize": "ran.evaluation.metrics",
        "format_per_class": "ran.evaluation.report",
        "format_table": "ran.evaluation.report",
        "print_results": "ran.evaluation.report",
        "write_results": "ran.evaluation.report",
        "evaluate": "ran.evaluation.run",
        "evaluate_samples": "ran.evaluation.run",
        "SubsetSamples": "ran.evaluation.samples",
        "read_predictions": "ran.evaluation.samples",
    },
)
