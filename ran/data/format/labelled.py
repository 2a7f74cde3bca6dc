"""Which rows of a split carry a label.

``-1`` is the ``datasets`` convention for "no label" (test splits whose answers are withheld, rows an
annotator skipped). Such rows are never scored and never trained on: evaluation leaves them out of every
metric and reports how many it left out; training leaves them out and says so. Indexing a class list
with -1 would silently make them the last class, so every reader of labels goes through here. Any other
label outside the class list (a hand-edited or damaged file) is refused, naming the row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ran.errors import UserError
from ran.labels import class_name_problem

UNLABELLED = -1


def class_names_of(split: Any, what: str) -> list[str]:
    """The class names of a split's ``label`` column; a split whose labels have no class list (a
    hand-made file without ``datasets`` features) is refused in one line."""
    feature = split.features.get("label")
    names = getattr(feature, "names", None)
    if not names:
        kind = "no 'label' column" if feature is None else f"a 'label' column of {type(feature).__name__}"
        raise UserError(f"{what} has {kind}; expected class labels (ClassLabel), as 'ran data' writes them")
    for name in names:
        problem = class_name_problem(str(name))
        if problem:
            raise UserError(f"{what}: class name {str(name)[:80]!r}; expected {problem}")
    return list(names)


def as_labels(values: Any) -> np.ndarray:
    """A label column as int64 (a missing label, None, counts as unlabelled)."""
    return np.asarray([UNLABELLED if v is None else v for v in values], dtype=np.int64).reshape(-1)


def label_error(
    labels: np.ndarray, num_classes: int, what: str, name_of: Callable[[int], Any]
) -> UserError | None:
    """The one-line error for the first label outside ``-1 .. num_classes - 1`` (None when all are in):
    ``what``, the row (index and ``name_of(row)``, its image name) and the expected range."""
    bad = np.flatnonzero((labels < UNLABELLED) | (labels >= num_classes))
    if not bad.size:
        return None
    row = int(bad[0])
    name = name_of(row)
    more = f" ({bad.size} such rows)" if bad.size > 1 else ""
    return UserError(
        f"{what}: row {row}{f' ({str(name)[:100]})' if name else ''} has label {int(labels[row])}; expected "
        f"0..{num_classes - 1} (one of its {num_classes} classes) or {UNLABELLED} for an unlabelled row{more}"
    )


def _image_name(split: Any, row: int) -> Any:
    if "image_name" not in split.column_names:
        return None
    return split.select_columns(["image_name"])[row]["image_name"]


def labelled_rows(split: Any, num_classes: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the rows that carry a label, their labels) of ``split``.

    Rows labelled ``-1`` (or with no label at all) are left out; the caller counts them as
    ``split.num_rows - len(indices)``. A label outside ``-1 .. num_classes - 1`` is refused in one line
    naming ``what``, the row (index and image name) and the expected range.
    """
    labels = as_labels(split["label"])
    error = label_error(labels, num_classes, what, lambda row: _image_name(split, row))
    if error is not None:
        raise error
    rows = np.flatnonzero(labels != UNLABELLED)
    return rows, labels[rows]


def keep_labelled(split: Any, num_classes: int, what: str) -> tuple[Any, int]:
    """``split`` without its unlabelled rows, and how many were left out (training and model selection).

    A split with no labelled row at all (or no row) is refused: there is nothing to learn or select on.
    """
    if not split.num_rows:
        raise UserError(f"{what} is empty (0 rows)")
    rows, _ = labelled_rows(split, num_classes, what)
    if not rows.size:
        raise UserError(f"{what}: all {split.num_rows} rows are unlabelled (label {UNLABELLED})")
    left_out = split.num_rows - rows.size
    return (split.select(rows) if left_out else split), left_out


__all__ = ["UNLABELLED", "as_labels", "class_names_of", "keep_labelled", "label_error", "labelled_rows"]
