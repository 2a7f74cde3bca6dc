"""Per-face predictions of one evaluation, kept so that later analysis (``ran compare``, attention,
calibration, error browsing) needs no second forward pass.

They are written as one Parquet file beside results.json (``predictions.parquet``), one row per face and
subset: ``subset``, ``row`` (index in the split), ``id`` (``image_name``, else the row index), ``label``,
``prediction``, ``correct``, ``confidence``, ``probabilities`` (over the evaluated classes) and
``weights`` (one per region). The class and region names, the count of unlabelled rows (label -1,
never scored and not in the file) and the precision the model ran in travel in the file's metadata (key
``ran``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ran.errors import UserError, one_line
from ran.labels import class_name_problem

PREDICTIONS = "predictions.parquet"
_METADATA_KEY = b"ran"
_FORMAT = 1
_COLUMNS = ("subset", "row", "id", "label", "prediction", "probabilities", "weights")


@dataclass
class SubsetSamples:
    """What the model said about every face of one subset (numpy arrays, one row per face)."""

    ids: list[str]
    rows: np.ndarray  # (n,) int64: row index in the split
    labels: np.ndarray  # (n,) int64: index into ``classes``
    probabilities: np.ndarray  # (n, C) float32 over ``classes``
    weights: np.ndarray  # (n, K) float32 region weights, each row sums to 1
    classes: list[str]
    regions: list[str]
    cross_dataset: dict[str, Any] | None = None  # ClassMatch.describe() when classes were dropped
    unlabelled: int = 0  # rows of the subset labelled -1: left out, not scored
    precision: str | None = None  # the autocast precision the model ran in (None: not recorded)

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    def __len__(self) -> int:
        return len(self.ids)


def row_ids(split: Any, rows: Sequence[int]) -> list[str]:
    """``image_name`` of each row where the split has one, else the row index."""
    names = list(split["image_name"]) if "image_name" in split.column_names else [None] * split.num_rows
    return [str(names[r]) if names[r] else str(r) for r in rows]


def _metadata(samples: Mapping[str, SubsetSamples]) -> bytes:
    info = {
        "format": _FORMAT,
        "classes": {name: list(s.classes) for name, s in samples.items()},
        "regions": {name: list(s.regions) for name, s in samples.items()},
        "cross_dataset": {name: s.cross_dataset for name, s in samples.items() if s.cross_dataset},
        "unlabelled": {name: s.unlabelled for name, s in samples.items() if s.unlabelled},
        "precision": {name: s.precision for name, s in samples.items() if s.precision},
    }
    return json.dumps(info).encode("utf-8")


def write_predictions(samples: Mapping[str, SubsetSamples], path: str | Path) -> Path:
    """Every subset's samples into one Parquet file at ``path`` (callers stage it; see report.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = list(samples.items())

    def column(get: Any) -> list:
        return [value for name, s in parts for value in get(name, s)]

    table = pa.table(
        {
            "subset": pa.array(column(lambda n, s: [n] * len(s)), pa.string()),
            "row": pa.array(np.concatenate([s.rows for _, s in parts]), pa.int64()),
            "id": pa.array(column(lambda n, s: s.ids), pa.string()),
            "label": pa.array(np.concatenate([s.labels for _, s in parts]), pa.int64()),
            "prediction": pa.array(np.concatenate([s.predictions for _, s in parts]), pa.int64()),
            "correct": pa.array(np.concatenate([s.correct for _, s in parts]), pa.bool_()),
            "confidence": pa.array(np.concatenate([s.confidence for _, s in parts]), pa.float32()),
            "probabilities": pa.array(column(lambda n, s: list(s.probabilities)), pa.list_(pa.float32())),
            "weights": pa.array(column(lambda n, s: list(s.weights)), pa.list_(pa.float32())),
        }
    )
    table = table.replace_schema_metadata({_METADATA_KEY: _metadata(samples)})
    pq.write_table(table, str(path))
    return Path(path)


def _read_table(path: Path) -> tuple[Any, dict[str, Any]]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no per-face predictions (written by 'ran evaluate' since it saves {PREDICTIONS}; "
            "evaluate the model again)"
        )
    try:
        table = pq.read_table(str(path))
        info = json.loads((table.schema.metadata or {}).get(_METADATA_KEY, b"{}"))
    except Exception as err:  # pyarrow raises its own types for a damaged or foreign file
        raise UserError(f"{path}: not a readable predictions file ({type(err).__name__}: {err})") from None
    missing = [c for c in _COLUMNS if c not in table.column_names]
    if missing or not isinstance(info, dict) or info.get("format") != _FORMAT:
        raise UserError(f"{path}: not a 'ran evaluate' predictions file (missing {missing or 'metadata'})")
    for key in ("classes", "regions"):
        entries = info.get(key)
        names_ok = isinstance(entries, dict) and all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in entries.values()
        )
        if not names_ok:
            raise UserError(f"{path}: metadata {key!r}: expected names per subset, as ran evaluate writes")
    return table, info


def read_predictions(folder_or_file: str | Path) -> dict[str, SubsetSamples]:
    """The per-face predictions of an evaluation folder (or of its predictions.parquet)."""
    from ran.modelio.folder import WEIGHTS_NAME

    given = Path(folder_or_file).expanduser()
    if not given.exists():
        raise FileNotFoundError(f"{given}: no such folder; expected a folder 'ran evaluate' wrote")
    if (given / WEIGHTS_NAME).is_file():
        raise UserError(
            f"{given}: a model folder; compare models with --models A B --data DATA, or runs of "
            "'ran evaluate' (their --output-dir folders)"
        )
    path = given / PREDICTIONS if given.is_dir() else given
    table, info = _read_table(path)
    columns = {name: table.column(name).to_pylist() for name in _COLUMNS}
    subsets = np.asarray(columns["subset"], dtype=object)
    out: dict[str, SubsetSamples] = {}
    for name in dict.fromkeys(columns["subset"]):
        picked = np.flatnonzero(subsets == name)
        try:
            out[name] = _subset(columns, picked, name, info)
            _check_subset(out[name])
        except (TypeError, ValueError, OverflowError) as err:  # ragged or null values, wrong types
            raise UserError(f"{path}: subset {str(name)[:80]!r}: {one_line(err, 200)}") from None
    return out


def _subset(columns: dict[str, list], picked: np.ndarray, name: Any, info: dict[str, Any]) -> SubsetSamples:
    if not isinstance(name, str) or not _SUBSET_NAME.fullmatch(name):
        raise ValueError("expected a subset name of letters, digits and _ . : @ -")
    unlabelled = (info.get("unlabelled") or {}).get(name, 0)
    if isinstance(unlabelled, bool) or not isinstance(unlabelled, int) or not 0 <= unlabelled <= 10**12:
        raise ValueError(f"unlabelled = {unlabelled!r}; expected a count")
    return SubsetSamples(
        ids=[str(columns["id"][i]) for i in picked],
        rows=np.asarray([columns["row"][i] for i in picked], dtype=np.int64),
        labels=np.asarray([columns["label"][i] for i in picked], dtype=np.int64),
        probabilities=np.asarray([columns["probabilities"][i] for i in picked], dtype=np.float32),
        weights=np.asarray([columns["weights"][i] for i in picked], dtype=np.float32),
        classes=list(info["classes"].get(name, [])),
        regions=list(info["regions"].get(name, [])),
        cross_dataset=(info.get("cross_dataset") or {}).get(name),
        unlabelled=unlabelled,
        precision=(info.get("precision") or {}).get(name),
    )


def _check_subset(samples: SubsetSamples) -> None:
    """The numbers a comparison is computed from are what ran evaluate writes: one probability per class
    (finite, in [0, 1]), one weight per region, labels naming a class (or -1, unlabelled)."""
    count, classes, regions = len(samples.ids), len(samples.classes), len(samples.regions)
    problems = [class_name_problem(name) for name in samples.classes]
    if any(problems):
        raise ValueError(f"a class name; expected {next(p for p in problems if p)}")
    shape = samples.probabilities.shape
    if not classes or shape != (count, classes):
        raise ValueError(f"probabilities of shape {shape}; expected ({count}, {classes})")
    if samples.weights.shape != (count, regions):
        raise ValueError(f"region weights of shape {samples.weights.shape}; expected ({count}, {regions})")
    probabilities = samples.probabilities
    if not np.isfinite(probabilities).all() or (probabilities < 0).any() or (probabilities > 1).any():
        raise ValueError("probabilities that are not finite numbers in [0, 1]")
    if not np.isfinite(samples.weights).all():
        raise ValueError("region weights that are not finite")
    if ((samples.labels < -1) | (samples.labels >= classes)).any():
        raise ValueError(f"labels outside -1 .. {classes - 1}")


_SUBSET_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,100}")  # split names, and robustness's 'hand:noise@2'


__all__ = ["PREDICTIONS", "SubsetSamples", "read_predictions", "row_ids", "write_predictions"]
