"""Evaluation of a RAN on every test subset: running it (``run``), the metrics (``metrics``) and the
reports people read (``report``)."""

from ran.evaluation.metrics import subset_metrics
from ran.evaluation.report import format_per_class, format_table, print_results, write_results
from ran.evaluation.run import evaluate

__all__ = ["evaluate", "format_per_class", "format_table", "print_results", "subset_metrics", "write_results"]
