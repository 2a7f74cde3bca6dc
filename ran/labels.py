"""Class names of the FER datasets, in each dataset's own label order.

Kept free of heavy imports: the model configs, the data builders and the CLI all read them.
"""

from __future__ import annotations

import unicodedata

# FERPlus order (microsoft/FERPlus label.csv vote columns 0..7).
FERPLUS_CLASSES: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)

# How FERPlus's ten annotator votes per face become a training label (``ran data ferplus --label-mode``).
FERPLUS_LABEL_MODES: tuple[str, ...] = ("majority", "probability", "crossentropy", "multi_target")

# RAF-DB basic, official labels 1..7 shifted to 0..6.
RAFDB_CLASSES: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")

# AffectNet expression codes 0..7 (8+ are not expressions).
AFFECTNET_CLASSES: tuple[str, ...] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
)

# Every dataset the package knows, by the name commands and configs use, with its class order.
DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "ferplus": FERPLUS_CLASSES,
    "rafdb": RAFDB_CLASSES,
    "affectnet": AFFECTNET_CLASSES,
    "affectnet7": AFFECTNET_CLASSES[:7],
}

# The class orders an original RAN checkpoint may have been trained with (``ran convert --labels``).
CHECKPOINT_LABEL_SETS: tuple[str, ...] = ("ferplus", "rafdb", "affectnet")


FORMULA_STARTS = ("=", "+", "-", "@")  # a spreadsheet cell starting so is run as a formula


def class_name_problem(name: str) -> str | None:
    """What is wrong with a class name read from a file, or None: a control character would command the
    terminal (ESC) or break the lines (newline) of every message, table and card that names the class,
    a name starting as a spreadsheet formula does would run in the per-frame CSV's label column, and a
    '$' starts matplotlib's math text in every plot (an unknown command in it stopped the plotting)."""
    if any(unicodedata.category(c) == "Cc" for c in name) or name[:1] in FORMULA_STARTS or "$" in name:
        return f"a name without control characters or '$', not starting with {' '.join(FORMULA_STARTS)}"
    return None
