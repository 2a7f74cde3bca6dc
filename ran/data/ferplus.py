"""FERPlus as a ``datasets.DatasetDict`` straight from Kaggle's ``fer2013.csv`` and the FERPlus label files.

No intermediate PNG tree or crop files: pixels are parsed with numpy, encoded once as PNG, and the FERPlus
label rules (votes of 1 dropped, majority / probability / multi-target) are applied to the 10 vote columns.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from ran.data.columns import column_index
from ran.data.folder import dataset_features
from ran.data.subsets import (
    SubsetList,
    attach_subsets,
    fetch_ferplus_labels,
    load_subset_lists,
    select_subset,
)
from ran.labels import FERPLUS_CLASSES

IMAGE_SIZE = 48
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
SPLIT_FOLDERS: dict[str, str] = {"train": "FER2013Train", "validation": "FER2013Valid", "test": "FER2013Test"}
VOTE_COLUMNS: tuple[str, ...] = (*FERPLUS_CLASSES, "unknown", "NF")
LABEL_MODES: tuple[str, ...] = ("majority", "probability", "crossentropy", "multi_target")
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
        raise ValueError(f"unknown label mode {mode!r}; expected one of {', '.join(LABEL_MODES)}")
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.shape[1] != len(VOTE_COLUMNS):
        raise ValueError(f"votes must have shape (n, {len(VOTE_COLUMNS)}), got {votes.shape}")
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


def _parse_votes(fields: Sequence[str], path: Path, line: int) -> list[int]:
    values = []
    for column, text in zip(VOTE_COLUMNS, fields):
        text = text.strip()
        if not text.isdigit():
            raise ValueError(
                f"{path} line {line}: vote column {column!r} is {text!r}; expected a non-negative integer"
            )
        values.append(int(text))
    return values


def read_label_csv(path: str | Path, usage: str) -> VoteTable:
    """One FERPlus ``label.csv`` (no header): name, face box, then the 10 vote counts."""
    path = Path(path)
    names, votes, lines = [], [], []
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.reader(handle), 1):
            if not row:
                continue
            if len(row) != 2 + len(VOTE_COLUMNS):
                raise ValueError(
                    f"{path} line {line}: {len(row)} columns; expected 12 (name, face box, "
                    f"{', '.join(VOTE_COLUMNS)})"
                )
            if not row[0].strip():
                raise ValueError(f"{path} line {line}: empty image name; expected e.g. 'fer0032220.png'")
            names.append(row[0].strip())
            votes.append(_parse_votes(row[2:], path, line))
            lines.append(line)
    if not names:
        raise ValueError(f"{path}: no rows; expected FERPlus label.csv rows 'name,(0, 0, 48, 48),<10 votes>'")
    return VoteTable(
        path, names, np.asarray(votes, dtype=np.int32).reshape(-1, 10), lines, [usage] * len(names)
    )


def read_fer2013new(path: str | Path) -> VoteTable:
    """``fer2013new.csv``: one row per fer2013.csv row (same order); rows without an image name are
    non-faces and keep an empty name."""
    path = Path(path)
    names, votes, lines, usage = [], [], [], []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file; expected fer2013new.csv with a header line")
        index = column_index(header, ["Usage", "Image name", *VOTE_COLUMNS], path)
        for line, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path} line {line}: {len(row)} columns; expected {len(header)}")
            row_usage = row[index["Usage"]].strip()
            if row_usage not in USAGE_TO_SPLIT:
                raise ValueError(
                    f"{path} line {line}: Usage {row_usage!r}; expected one of {', '.join(USAGE_TO_SPLIT)}"
                )
            names.append(row[index["Image name"]].strip())
            votes.append(_parse_votes([row[index[c]] for c in VOTE_COLUMNS], path, line))
            lines.append(line)
            usage.append(row_usage)
    return VoteTable(path, names, np.asarray(votes, dtype=np.int32).reshape(-1, 10), lines, usage)


# ---------------------------------------------------------------------------------------------- pixels


@dataclass
class Fer2013Pixels:
    path: Path
    usage: list[str]
    images: np.ndarray  # (n, 48, 48) uint8


def _parse_pixel_row(text: str, path: Path, line: int) -> np.ndarray:
    """2304 space-separated integers 0..255, parsed in C (``np.fromstring``), with a clear error otherwise."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            values = np.fromstring(text, dtype=np.int32, sep=" ")
    except (ValueError, DeprecationWarning):
        values = None
    if values is None or values.size != PIXELS_PER_IMAGE or values.min() < 0 or values.max() > 255:
        found = len(text.split())
        raise ValueError(
            f"{path} line {line}: pixels column holds {found} values; expected {PIXELS_PER_IMAGE} "
            f"space-separated integers 0..255 ({IMAGE_SIZE}x{IMAGE_SIZE} grayscale)"
        )
    return values.astype(np.uint8)


def read_fer2013_pixels(
    path: str | Path, *, expected_rows: int | None = None, progress: bool = True
) -> Fer2013Pixels:
    """Every image of Kaggle's ``fer2013.csv`` (columns emotion, pixels, Usage) as one uint8 array."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected Kaggle's fer2013.csv")
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 20))
    usage: list[str] = []
    # One preallocated block (grown by doubling when the row count was not known): no per-row arrays.
    images = np.empty((expected_rows or 4096, PIXELS_PER_IMAGE), dtype=np.uint8)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file; expected a header 'emotion,pixels,Usage'")
        index = column_index(header, ["pixels", "Usage"], path)
        rows = tqdm(reader, total=expected_rows, desc="fer2013.csv", unit=" rows", disable=not progress)
        for line, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"{path} line {line}: {len(row)} columns; expected {len(header)} ({', '.join(header)})"
                )
            row_usage = row[index["Usage"]].strip()
            if row_usage not in USAGE_TO_SPLIT:
                raise ValueError(
                    f"{path} line {line}: Usage {row_usage!r}; expected one of {', '.join(USAGE_TO_SPLIT)}"
                )
            usage.append(row_usage)
            if len(usage) > len(images):
                images = np.concatenate([images, np.empty_like(images)])
            images[len(usage) - 1] = _parse_pixel_row(row[index["pixels"]], path, line)
    if not usage:
        raise ValueError(f"{path}: no data rows")
    return Fer2013Pixels(path, usage, images[: len(usage)].reshape(-1, IMAGE_SIZE, IMAGE_SIZE))


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a grayscale image (OpenCV when present: about twice as fast as PIL)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency, PIL is the fallback
        cv2 = None
    if cv2 is not None:
        ok, buffer = cv2.imencode(".png", image)
        if ok:
            return buffer.tobytes()
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image, mode="L").save(out, format="PNG")
    return out.getvalue()


# ------------------------------------------------------------------------------------------ the builder


def _label_folder(root: Path) -> Path | None:
    """The directory holding FER2013Train/Valid/Test (a FERPlus checkout's root or its ``data``)."""
    for candidate in (root, root / "data"):
        if all((candidate / folder / "label.csv").is_file() for folder in SPLIT_FOLDERS.values()):
            return candidate
    return None


def _has_png_tree(folder: Path) -> bool:
    return all(any((folder / name).glob("*.png")) for name in SPLIT_FOLDERS.values())


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
                raise ValueError(
                    f"{table.path} line {line}: image {name!r} is not in {fer2013new.path}; "
                    "expected a FERPlus image name"
                )
            if split_of_usage[fer2013new.usage[row]] != split:
                raise ValueError(
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


def build_ferplus_split(
    table: VoteTable,
    images: Sequence[bytes],
    mode: str,
) -> datasets.Dataset:
    """One split as a Dataset: rows the label mode keeps, with votes, soft labels and the argmax label."""
    keep, soft = ferplus_targets(table.votes, mode)
    kept = np.flatnonzero(keep)
    columns = {
        "image": [{"bytes": images[i], "path": None} for i in kept],
        "label": soft[kept].argmax(axis=1).tolist(),
        "votes": table.votes[kept].tolist(),
        "soft_label": soft[kept].tolist(),
        "image_name": [table.names[i] for i in kept],
        "usage": [table.usage[i] for i in kept],
    }
    return datasets.Dataset.from_dict(columns, features=dataset_features(FERPLUS_CLASSES))


def split_label_modes(label_mode: str) -> dict[str, str]:
    """The label mode of each split: the chosen one for training, majority for evaluation."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {label_mode!r}; expected one of {', '.join(LABEL_MODES)}")
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
    label_root = _label_folder(given)
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


def _png_tree_images(label_root: Path, split: str, table: VoteTable, progress: bool) -> list[bytes]:
    folder = label_root / SPLIT_FOLDERS[split]
    images = []
    for name, line in tqdm(
        list(zip(table.names, table.lines)), desc=f"{SPLIT_FOLDERS[split]} PNGs", disable=not progress
    ):
        file = folder / name
        if not file.is_file():
            raise FileNotFoundError(f"{table.path} line {line}: image {name} is not in {folder}")
        images.append(file.read_bytes())
    return images


def load_ferplus(
    fer2013_csv: str | Path | None,
    ferplus_labels: str | Path | None = None,
    label_mode: str = "majority",
    subset_lists: str | Path | bool | None = None,
    *,
    progress: bool = True,
) -> datasets.DatasetDict:
    """FERPlus as train / validation / test plus the occlusion, pose30, pose45 (and minor) test subsets.

    ``fer2013_csv``: Kaggle's fer2013.csv (the pixels; None only with a PNG tree). ``ferplus_labels``: see
    :func:`load_ferplus_votes`. ``label_mode`` applies to train; evaluation splits always use majority.
    ``subset_lists``: a local copy of the authors' lists, None (``$RAN_SUBSET_LISTS`` or the pinned
    download) or False (no subsets).
    """
    modes = split_label_modes(label_mode)
    kind, tables = load_ferplus_votes(ferplus_labels, use_png_tree=fer2013_csv is None)
    subsets = load_subset_lists("ferplus", subset_lists)
    _check_subsets(tables["test"][0], subsets, kind)  # fail early, before the long part
    splits: dict[str, datasets.Dataset] = {}
    if kind == "png_tree":
        label_root = _label_folder(Path(ferplus_labels))  # type: ignore[arg-type]
        assert label_root is not None
        for split, (table, _) in tables.items():
            splits[split] = build_ferplus_split(
                table, _png_tree_images(label_root, split, table, progress), modes[split]
            )
    else:
        if fer2013_csv is None:
            raise ValueError("fer2013_csv is required: the FERPlus label files hold votes, not pixels")
        expected_rows = max(int(rows.max()) + 1 for _, rows in tables.values() if len(rows))
        pixels = read_fer2013_pixels(fer2013_csv, expected_rows=expected_rows, progress=progress)
        _check_rows_match(pixels, tables)
        for split, (table, rows) in tables.items():
            keep, _ = ferplus_targets(table.votes, modes[split])
            needed = set(np.flatnonzero(keep).tolist())
            encoded: list[bytes] = [b""] * len(rows)
            for i in tqdm(sorted(needed), desc=f"{split} images", disable=not progress):
                encoded[i] = encode_png(pixels.images[rows[i]])
            splits[split] = build_ferplus_split(table, encoded, modes[split])
    return attach_subsets(datasets.DatasetDict(splits), subsets)


def _check_subsets(test: VoteTable, subsets: dict[str, SubsetList], kind: str) -> None:
    """Resolve the lists against the test labels alone, so a bad entry stops the build before the pixels."""
    keep, soft = ferplus_targets(test.votes, EVALUATION_LABEL_MODE)
    kept = np.flatnonzero(keep)
    labels_only = datasets.Dataset.from_dict(
        {"image_name": [test.names[i] for i in kept], "label": soft[kept].argmax(axis=1).tolist()},
        features=datasets.Features(
            {
                "image_name": datasets.Value("string"),
                "label": datasets.ClassLabel(names=list(FERPLUS_CLASSES)),
            }
        ),
    )
    for subset in subsets.values():
        try:
            select_subset(labels_only, subset)
        except ValueError as err:
            if kind != "fer2013new":
                raise
            raise ValueError(
                f"{err}. The RAN subset lists follow the label.csv labels, which differ from fer2013new.csv "
                "for about 1,600 images: build from the FERPlus label.csv folders, or without subsets "
                "(--lists none)"
            ) from err


def _check_rows_match(pixels: Fer2013Pixels, tables: dict[str, tuple[VoteTable, np.ndarray]]) -> None:
    """fer2013.csv and the FERPlus labels must describe the same rows in the same order."""
    for table, rows in tables.values():
        if len(rows) and rows.max() >= len(pixels.usage):
            raise ValueError(
                f"{pixels.path}: {len(pixels.usage)} data rows, but {table.path} refers to row "
                f"{rows.max() + 1}; expected the full Kaggle fer2013.csv (35,887 rows)"
            )
        for i, row in enumerate(rows):
            if pixels.usage[row] != table.usage[i]:
                raise ValueError(
                    f"{pixels.path} line {row + 2}: Usage {pixels.usage[row]!r}, but {table.path} line "
                    f"{table.lines[i]} ({table.names[i]}) expects {table.usage[i]!r}; the files do not "
                    "describe the same rows"
                )


def ferplus_description(label_mode: str, source: str | os.PathLike[str] | None = None) -> str:
    """The dataset card paragraph for a FERPlus build."""
    return (
        "FERPlus (Barsoum et al., 2016): FER2013 faces (48x48 grayscale) relabelled by 10 annotators each "
        "(microsoft/FERPlus). Splits: FER2013Train -> train, FER2013Valid -> validation, FER2013Test -> "
        f"test. Training labels use the FERPlus '{label_mode}' rule; validation, test and the subsets use "
        "'majority'. Subsets occlusion / pose30 / pose45 are the lists of Wang et al., Region Attention "
        "Networks (IEEE TIP 2020), kaiwang960112/Challenge-condition-FER-dataset."
        + (f" Built from {source}." if source else "")
    )


def write_random_fer2013_csv(path: str | Path, usage: Sequence[str], *, seed: int = 0) -> np.ndarray:
    """Write a stand-in for Kaggle's fer2013.csv with random pixels (tests, benchmarks, smoke runs).

    ``usage``: the Usage of each row (e.g. taken from fer2013new.csv, so the FERPlus labels line up).
    Returns the (n, 48, 48) images written. Formatting is vectorised: no per-pixel Python.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(usage), PIXELS_PER_IMAGE), dtype=np.uint8)
    emotions = rng.integers(0, 7, size=len(usage))
    # Each value 0..255 as up to 3 digits plus a space, left-aligned in 4 byte slots; unused slots masked out.
    glyphs = np.zeros((256, 4), dtype=np.uint8)
    used = np.zeros((256, 4), dtype=bool)
    for value in range(256):
        text = f"{value} ".encode()
        glyphs[value, : len(text)] = np.frombuffer(text, dtype=np.uint8)
        used[value, : len(text)] = True
    path = Path(path)
    with path.open("wb") as handle:
        handle.write(b"emotion,pixels,Usage\n")
        for start in range(0, len(usage), 2048):
            block = images[start : start + 2048]
            chars = glyphs[block][used[block]]
            ends = np.cumsum(used[block].sum(axis=(1, 2)))
            starts = np.concatenate([[0], ends[:-1]])
            for offset, (begin, end) in enumerate(zip(starts, ends)):
                row = start + offset
                handle.write(b"%d," % emotions[row])
                handle.write(chars[begin : end - 1].tobytes())  # drop the trailing space
                handle.write(b",%s\n" % usage[row].encode())
    return images.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
