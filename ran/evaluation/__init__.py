"""Evaluation of a RAN on every test subset: running it (``run``), the per-face predictions (``samples``),
the metrics (``metrics``, ``statistics``, ``attention``), the reports people read (``report``) and the
paired comparison of two models (``compare``)."""

from ran.evaluation.classes import ClassMatch, match_classes
from ran.evaluation.metrics import subset_metrics, summarize
from ran.evaluation.report import format_per_class, format_table, print_results, write_results
from ran.evaluation.run import evaluate, evaluate_samples
from ran.evaluation.samples import SubsetSamples, read_predictions

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
