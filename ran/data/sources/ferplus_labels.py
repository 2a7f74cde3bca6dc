"""The FERPlus labels: the ten annotator votes per image, the label rules, and where each row's pixels are.

FERPlus (microsoft/FERPlus) relabels Kaggle's fer2013.csv: one label.csv per split (FER2013Train / Valid /
Test) or one fer2013new.csv. The rules (votes of 1 dropped; majority / probability / multi-target) decide
which images a split keeps and their target distributions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ran.data.sources.columns import column_index, csv_rows
from ran.data.sources.subsets import fetch_ferplus_labels
from ran.errors import UserError
from ran.labels import FERPLUS_CLASSES
from ran.labels import FERPLUS_LABEL_MODES as LABEL_MODES

USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
SPLIT_FOLDERS: dict[str, str] = {"train": "FER2013Train", "validation": "FER2013Valid", "test": "FER2013Test"}
VOTE_COLUMNS: tuple[str, ...] = (*FERPLUS_CLASSES, "unknown", "NF")
EVALUATION_LABEL_MODE = "majority"  # validation, test and the subsets, whatever the training mode


# ------------------------------------------------------------------------------------------ label rules


def _probability_votes(counts: np.ndarray) -> np.ndarray | None:
    """FERPlus probability rule for one image: take the most-voted emotions (ties together) until they hold
    75 % of the votes or three are taken; an unknown / NF among them ends the search and is dropped when
    an emotion came first. Returns the kept votes, or None when they hold half the votes or less."""
    total = counts.sum()
    remaining = counts.astype(np.float64)
    kept = np.zeros_like(remaining)
    taken = 0
    while kept.sum() < 0.75 * total and taken < 3:
        peak = remaining.max()
        hit_non_emotion = False
        for index in np.flatnonzero(remaining == peak):
            kept[index], remaining[index] = peak, 0.0
            taken += 1
            if index >= len(FERPLUS_CLASSES):
                hit_non_emotion = True
                if kept.sum() > peak:
                    kept[index] = 0.0
                    taken -= 1
                break
        if hit_non_emotion:
            break
    if kept.sum() <= 0.5 * total or taken > 3:
        return None
    return kept


def ferplus_targets(votes: np.ndarray, mode: str = "majority") -> tuple[np.ndarray, np.ndarray]:
    """Which images a FERPlus label mode keeps, and their 8-class target distributions.

    ``votes``: (n, 10) counts in FERPlus column order (8 emotions, unknown, NF). Returns ``keep`` (n,) bool
    and ``soft`` (n, 8) float32, rows summing to 1 where kept. Unknown / NF results are dropped.
    """
    if mode not in LABEL_MODES:
        raise UserError(f"unknown label mode {mode!r}; expected one of {', '.join(LABEL_MODES)}")
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.shape[1] != len(VOTE_COLUMNS):
        raise UserError(f"votes must have shape (n, {len(VOTE_COLUMNS)}), got {votes.shape}")
    counts = np.where(votes <= 1, 0, votes).astype(np.float64)  # single votes are treated as outliers
    total = counts.sum(axis=1)
    if mode == "majority":
        top = counts.argmax(axis=1)
        valid = counts.max(axis=1) > 0.5 * total
        targets = np.zeros_like(counts)
        targets[np.arange(len(counts)), top] = 1.0
    elif mode == "multi_target":
        targets = np.where(counts >= 0.3 * total[:, None], counts, 0.0)
        valid = targets.sum(axis=1) > 0.5 * total
    else:  # probability and crossentropy share the target rule; they differ in the training loss
        targets = np.zeros_like(counts)
        valid = np.zeros(len(counts), dtype=bool)
        for row, row_counts in enumerate(counts):
            kept = _probability_votes(row_counts)
            if kept is not None:
                targets[row], valid[row] = kept, True
    emotion_mass = targets[:, : len(FERPLUS_CLASSES)]
    keep = valid & (targets.argmax(axis=1) < len(FERPLUS_CLASSES)) & (emotion_mass.sum(axis=1) > 0)
    soft = np.zeros_like(emotion_mass, dtype=np.float32)
    soft[keep] = emotion_mass[keep] / emotion_mass[keep].sum(axis=1, keepdims=True)
    return keep, soft


# ------------------------------------------------------------------------------------------ label files


@dataclass
class VoteTable:
    """Rows of one FERPlus label source: image names, the 10 vote counts, and where each row came from."""

    path: Path
    names: list[str]
    votes: np.ndarray  # (n, 10) int32
    lines: list[int]  # 1-based line numbers in ``path``
    usage: list[str]  # Kaggle Usage of each row


MAX_VOTES = 1_000_000  # FERPlus has 10 annotators a face; the votes are held as int32


def _parse_votes(fields: Sequence[str], path: Path, line: int) -> list[int]:
    values = []
    for column, text in zip(VOTE_COLUMNS, fields):
        text = text.strip()
        if not (text.isascii() and text.isdigit()) or int(text) > MAX_VOTES:
            raise UserError(
                f"{path} line {line}: vote column {column!r} is {text[:20]!r}; expected an integer "
                f"0..{MAX_VOTES}"
            )
        values.append(int(text))
    return values


def read_label_csv(path: str | Path, usage: str) -> VoteTable:
    """One FERPlus ``label.csv`` (no header): name, face box, then the 10 vote counts."""
    path = Path(path)
    names, votes, lines = [], [], []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for line, row in enumerate(csv_rows(handle, path), 1):
            if not row:
                continue
            if len(row) != 2 + len(VOTE_COLUMNS):
                raise UserError(
                    f"{path} line {line}: {len(row)} columns; expected 12 (name, face box, "
                    f"{', '.join(VOTE_COLUMNS)})"
                )
            if not row[0].strip():
                raise UserError(f"{path} line {line}: empty image name; expected e.g. 'fer0032220.png'")
            names.append(row[0].strip())
            votes.append(_parse_votes(row[2:], path, line))
            lines.append(line)
    if not names:
        raise UserError(f"{path}: no rows; expected FERPlus label.csv rows 'name,(0, 0, 48, 48),<10 votes>'")
    return VoteTable(
        path, names, np.asarray(votes, dtype=np.int32).reshape(-1, 10), lines, [usage] * len(names)
    )


def read_fer2013new(path: str | Path) -> VoteTable:
    """``fer2013new.csv``: one row per fer2013.csv row (same order); rows without an image name are
    non-faces and keep an empty name."""
    path = Path(path)
    names, votes, lines, usage = [], [], [], []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv_rows(handle, path)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: empty file; expected fer2013new.csv with a header line")
        index = column_index(header, ["Usage", "Image name", *VOTE_COLUMNS], path)
        for line, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(f"{path} line {line}: {len(row)} columns; expected {len(header)}")
            row_usage = row[index["Usage"]].strip()
            if row_usage not in USAGE_TO_SPLIT:
                raise UserError(
                    f"{path} line {line}: Usage {row_usage!r}; expected one of {', '.join(USAGE_TO_SPLIT)}"
                )
            names.append(row[index["Image name"]].strip())
            votes.append(_parse_votes([row[index[c]] for c in VOTE_COLUMNS], path, line))
            lines.append(line)
            usage.append(row_usage)
    return VoteTable(path, names, np.asarray(votes, dtype=np.int32).reshape(-1, 10), lines, usage)


# ------------------------------------------------------------------------------------------ label sources


def _missing_splits_message(folder: Path, missing: list[str], what: str) -> str:
    found = [SPLIT_FOLDERS[s] for s in SPLIT_FOLDERS if s not in missing]
    named = ", ".join(f"{SPLIT_FOLDERS[s]}/{what} (the {s} split)" for s in missing)
    return (
        f"{folder}: no {named}; found {', '.join(found)}. Expected {what} in each of "
        f"{', '.join(SPLIT_FOLDERS.values())}"
    )


def label_folder(root: Path) -> Path | None:
    """The directory holding FER2013Train/Valid/Test (a FERPlus checkout's root or its ``data``); a folder
    holding some splits' label.csv but not all is an error naming the missing split."""
    for candidate in (root, root / "data"):
        missing = [s for s, f in SPLIT_FOLDERS.items() if not (candidate / f / "label.csv").is_file()]
        if not missing:
            return candidate
        if len(missing) < len(SPLIT_FOLDERS):
            raise FileNotFoundError(_missing_splits_message(candidate, missing, "label.csv"))
    return None


def _has_png_tree(folder: Path) -> bool:
    """True when every split folder holds PNGs; some but not all is an error naming the split without."""
    missing = [s for s, f in SPLIT_FOLDERS.items() if not any((folder / f).glob("*.png"))]
    if missing and len(missing) < len(SPLIT_FOLDERS):
        raise FileNotFoundError(_missing_splits_message(folder, missing, "*.png"))
    return not missing


def _rows_by_name(table: VoteTable) -> dict[str, int]:
    """fer2013.csv row of each image name; a repeated name maps to its last row, the one the FERPlus
    image-generation script leaves on disk (it writes the file again)."""
    return {name: row for row, name in enumerate(table.names) if name}


def _split_tables_from_label_csv(
    folder: Path, fer2013new: VoteTable
) -> dict[str, tuple[VoteTable, np.ndarray]]:
    rows_of = _rows_by_name(fer2013new)
    split_of_usage = USAGE_TO_SPLIT
    tables = {}
    for split, folder_name in SPLIT_FOLDERS.items():
        table = read_label_csv(folder / folder_name / "label.csv", usage="")
        rows = np.empty(len(table.names), dtype=np.int64)
        for i, (name, line) in enumerate(zip(table.names, table.lines)):
            row = rows_of.get(name)
            if row is None:
                raise UserError(
                    f"{table.path} line {line}: image {name!r} is not in {fer2013new.path}; "
                    "expected a FERPlus image name"
                )
            if split_of_usage[fer2013new.usage[row]] != split:
                raise UserError(
                    f"{table.path} line {line}: {name} is a {fer2013new.usage[row]} image in "
                    f"{fer2013new.path}, not part of {folder_name}"
                )
            rows[i] = row
        table.usage = [fer2013new.usage[row] for row in rows]
        tables[split] = (table, rows)
    return tables


def _split_tables_from_fer2013new(fer2013new: VoteTable) -> dict[str, tuple[VoteTable, np.ndarray]]:
    tables = {}
    for usage, split in USAGE_TO_SPLIT.items():
        rows = np.array(
            [i for i, (u, n) in enumerate(zip(fer2013new.usage, fer2013new.names)) if u == usage and n]
        )
        table = VoteTable(
            fer2013new.path,
            [fer2013new.names[i] for i in rows],
            fer2013new.votes[rows] if len(rows) else np.zeros((0, 10), np.int32),
            [fer2013new.lines[i] for i in rows],
            [usage] * len(rows),
        )
        tables[split] = (table, rows)
    return tables


def _find_fer2013new(label_root: Path, given: Path) -> Path:
    for candidate in (
        given / "fer2013new.csv",
        label_root / "fer2013new.csv",
        label_root.parent / "fer2013new.csv",
    ):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{given}: no fer2013new.csv beside the label.csv folders; it maps FERPlus image names to "
        "fer2013.csv rows (expected it in the FERPlus checkout's root)"
    )


def split_label_modes(label_mode: str) -> dict[str, str]:
    """The label mode of each split: the chosen one for training, majority for evaluation."""
    if label_mode not in LABEL_MODES:
        raise UserError(f"unknown label mode {label_mode!r}; expected one of {', '.join(LABEL_MODES)}")
    return {"train": label_mode, "validation": EVALUATION_LABEL_MODE, "test": EVALUATION_LABEL_MODE}


def load_ferplus_votes(
    ferplus_labels: str | Path | None = None, *, use_png_tree: bool = False
) -> tuple[str, dict[str, tuple[VoteTable, np.ndarray]]]:
    """The vote tables of train / validation / test and each row's fer2013.csv row (-1 for a PNG tree).

    ``ferplus_labels``: a FERPlus checkout (or its ``data`` folder: label.csv per split, the default), the
    ``fer2013new.csv`` file, or a FERPlus PNG tree; None downloads the label files at the pinned commit.
    Returns the source kind ('label_csv', 'fer2013new' or 'png_tree') and the tables. ``use_png_tree``
    prefers a folder's PNGs (no fer2013.csv needed) over mapping label.csv rows to fer2013.csv.
    """
    given = Path(fetch_ferplus_labels() if ferplus_labels is None else ferplus_labels).expanduser()
    if given.is_file():
        return "fer2013new", _split_tables_from_fer2013new(read_fer2013new(given))
    if not given.is_dir():
        raise FileNotFoundError(
            f"{given}: no such file or directory; expected a FERPlus checkout, its data folder "
            "or fer2013new.csv"
        )
    label_root = label_folder(given)
    if label_root is None:
        raise FileNotFoundError(
            f"{given}: no FER2013Train/label.csv, FER2013Valid/label.csv and FER2013Test/label.csv "
            "(directly or under data/); expected a FERPlus checkout or PNG tree"
        )
    if use_png_tree and _has_png_tree(label_root):
        tables = {}
        for split, folder_name in SPLIT_FOLDERS.items():
            table = read_label_csv(label_root / folder_name / "label.csv", usage=_usage_of(split))
            tables[split] = (table, np.full(len(table.names), -1, dtype=np.int64))
        return "png_tree", tables
    fer2013new_path = _find_fer2013new(label_root, given)
    return "label_csv", _split_tables_from_label_csv(label_root, read_fer2013new(fer2013new_path))


def _usage_of(split: str) -> str:
    return next(usage for usage, name in USAGE_TO_SPLIT.items() if name == split)
