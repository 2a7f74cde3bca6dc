"""FERPlus straight from Kaggle's ``fer2013.csv`` and the FERPlus label files, streamed into a dataset folder.

No intermediate PNG tree or crop files: fer2013.csv is read row by row, each kept face is encoded once as
PNG (in ``num_proc`` processes when asked) and written in row groups, so memory stays flat however many
rows there are. Each split is written in fer2013.csv order (the label files' order). The label rules and
label files are ``ran.data.sources.ferplus_labels``.
"""

from __future__ import annotations

import csv
import functools
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from ran.data.format.folder import dataset_features
from ran.data.format.images import SourceImage, encode_png, read_files
from ran.data.format.parallel import batched, check_num_proc, map_in_order
from ran.data.format.writer import (
    DEFAULT_MAX_SHARD_BYTES,
    ROWS_PER_GROUP,
    SplitWriter,
    built_in_memory,
    dataset_folder_writer,
    write_images,
)
from ran.data.sources.columns import column_index, csv_rows
from ran.data.sources.ferplus_labels import (  # noqa: F401  (re-exported: the names this module always offered)
    EVALUATION_LABEL_MODE,
    LABEL_MODES,
    SPLIT_FOLDERS,
    USAGE_TO_SPLIT,
    VOTE_COLUMNS,
    VoteTable,
    ferplus_targets,
    label_folder,
    load_ferplus_votes,
    read_fer2013new,
    read_label_csv,
    split_label_modes,
)
from ran.data.sources.subsets import (
    ResolvedSubset,
    SubsetList,
    load_subset_lists,
    resolve_subsets,
    subset_test_rows,
    write_subsets,
)
from ran.errors import UserError
from ran.labels import FERPLUS_CLASSES

IMAGE_SIZE = 48
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
ROWS_PER_TASK = 256  # fer2013.csv rows per worker task (about 2 MB of pixel text)


# ---------------------------------------------------------------------------------------------- pixels


def parse_pixels(text: str, path: str | Path, line: int) -> np.ndarray:
    """2304 space-separated integers 0..255, parsed in C (``np.fromstring``); otherwise one line naming the
    file, the line and the first bad value (or how many values there are)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            values = np.fromstring(text, dtype=np.int32, sep=" ")
    except (ValueError, DeprecationWarning):
        values = None
    if values is not None and values.size == PIXELS_PER_IMAGE and values.min() >= 0 and values.max() <= 255:
        return values.astype(np.uint8)
    tokens = text.split()
    expected = (
        f"expected {PIXELS_PER_IMAGE} space-separated integers 0..255 ({IMAGE_SIZE}x{IMAGE_SIZE} grayscale)"
    )
    for position, token in enumerate(tokens, 1):
        digits = token.isascii() and token.isdigit()
        if not digits or int(token) > 255:
            shown = token if digits and len(token) < 12 else repr(token[:20])
            raise UserError(f"{path} line {line}: pixel value {position} is {shown}; {expected}")
    raise UserError(f"{path} line {line}: pixels column holds {len(tokens)} values; {expected}")


# A worker task: file, then per row: fer2013.csv row, line, Usage, pixel text, whether a split keeps it.
Task = tuple[str, list[int], list[int], list[str], list[str], list[bool]]


def encode_fer2013_rows(task: Task) -> tuple[list[int], list[int], list[str], list[bytes | None]]:
    """Worker: check every row's pixels; PNG-encode the rows a split keeps (None for the others).
    Returns rows, lines and Usage as given, with the images."""
    path, rows, lines, usage, texts, needed = task
    images: list[bytes | None] = []
    for line, text, keep in zip(lines, texts, needed):
        pixels = parse_pixels(text, path, line)
        images.append(encode_png(pixels.reshape(IMAGE_SIZE, IMAGE_SIZE)) if keep else None)
    return rows, lines, usage, images


def _fer2013_records(path: Path, total: int | None, progress: bool) -> Iterator[tuple[int, int, str, str]]:
    """(row, line, Usage, pixel text) of each data row of fer2013.csv, checked for columns and Usage."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 20))
    row = 0
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv_rows(handle, path)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: empty file; expected a header 'emotion,pixels,Usage'")
        index = column_index(header, ["pixels", "Usage"], path)
        lines = tqdm(reader, total=total, desc="fer2013.csv", unit=" rows", disable=not progress)
        for line, fields in enumerate(lines, 2):
            if not fields:
                continue
            if len(fields) != len(header):
                raise UserError(
                    f"{path} line {line}: {len(fields)} columns; expected {len(header)} ({', '.join(header)})"
                )
            usage = fields[index["Usage"]].strip()
            if usage not in USAGE_TO_SPLIT:
                raise UserError(
                    f"{path} line {line}: Usage {usage!r}; expected one of {', '.join(USAGE_TO_SPLIT)}"
                )
            yield row, line, usage, fields[index["pixels"]]
            row += 1
    if row == 0:
        raise UserError(f"{path}: no data rows")


# ------------------------------------------------------------------------------------------ the builder


@dataclass
class SplitPlan:
    """One split's kept rows in the order they are written: everything but the pixels."""

    name: str
    table: VoteTable
    table_rows: np.ndarray  # fer2013.csv row of every table row (-1 for a PNG tree)
    order: np.ndarray  # table indices of the kept rows, in output order
    soft: np.ndarray  # (n, 8) float32 targets, in output order

    @property
    def labels(self) -> np.ndarray:
        return self.soft.argmax(axis=1)

    @property
    def names(self) -> list[str]:
        return [self.table.names[i] for i in self.order]

    def columns(self, start: int, images: Sequence[bytes]) -> dict[str, list]:
        """Output rows ``start ..`` (one per image) as columns."""
        stop = start + len(images)
        index = self.order[start:stop]
        return {
            "image": [{"bytes": data, "path": None} for data in images],
            "label": self.soft[start:stop].argmax(axis=1).tolist(),
            "votes": self.table.votes[index].tolist(),
            "soft_label": self.soft[start:stop].tolist(),
            "image_name": [self.table.names[i] for i in index],
            "usage": [self.table.usage[i] for i in index],
        }


def plan_split(name: str, table: VoteTable, rows: np.ndarray, mode: str) -> SplitPlan:
    """The rows ``mode`` keeps, ordered by fer2013.csv row (the order the file is read in)."""
    keep, soft = ferplus_targets(table.votes, mode)
    kept = np.flatnonzero(keep)
    order = kept[np.argsort(rows[kept], kind="stable")]
    return SplitPlan(name, table, rows, order, soft[order])


class _Fer2013Routes:
    """Which splits each fer2013.csv row feeds, and the Usage the label files expect of each row."""

    def __init__(self, path: Path, plans: dict[str, SplitPlan]) -> None:
        self.path = path
        self.targets: dict[int, list[str]] = {}
        self.expected: dict[int, tuple[str, VoteTable, int]] = {}
        for name, plan in plans.items():
            for index, row in enumerate(plan.table_rows.tolist()):
                self.expected[row] = (plan.table.usage[index], plan.table, index)
            for row in plan.table_rows[plan.order].tolist():
                self.targets.setdefault(row, []).append(name)
        self.last_row = max(self.expected, default=-1)
        self.rows_read = 0

    def check(self, row: int, line: int, usage: str) -> None:
        """fer2013.csv and the FERPlus labels must describe the same rows in the same order."""
        want = self.expected.get(row)
        if want is not None and want[0] != usage:
            usage_wanted, table, index = want
            raise UserError(
                f"{self.path} line {line}: Usage {usage!r}, but {table.path} line {table.lines[index]} "
                f"({table.names[index]}) expects {usage_wanted!r}; the files do not describe the same rows"
            )

    def tasks(self, progress: bool) -> Iterator[Task]:
        """Worker tasks of ROWS_PER_TASK rows; counts the rows read."""
        records = _fer2013_records(self.path, self.last_row + 1 or None, progress)
        for chunk in batched(records, ROWS_PER_TASK):
            rows, lines, usage, texts = (list(column) for column in zip(*chunk))
            self.rows_read = rows[-1] + 1
            yield str(self.path), rows, lines, usage, texts, [row in self.targets for row in rows]
        if self.last_row >= self.rows_read:
            table = self.expected[self.last_row][1]
            raise UserError(
                f"{self.path}: {self.rows_read} data rows, but {table.path} refers to row "
                f"{self.last_row + 1}; expected the full Kaggle fer2013.csv (35,887 rows)"
            )


def _write_from_fer2013(
    path: Path, plans: dict[str, SplitPlan], writers: dict[str, SplitWriter], num_proc: int, progress: bool
) -> None:
    """Stream fer2013.csv through the workers into the split writers, a row group at a time."""
    routes = _Fer2013Routes(path, plans)
    pending: dict[str, list[bytes]] = {name: [] for name in plans}

    def flush(name: str) -> None:
        writers[name].write(plans[name].columns(writers[name].num_rows, pending[name]))
        pending[name] = []

    for rows, lines, usage, images in map_in_order(encode_fer2013_rows, routes.tasks(progress), num_proc):
        for row, line, row_usage, image in zip(rows, lines, usage, images):
            routes.check(row, line, row_usage)  # after the pixels, as a whole-file check would order them
            for name in routes.targets.get(row, ()):
                pending[name].append(image)
                if len(pending[name]) == ROWS_PER_GROUP:
                    flush(name)
    for name in plans:
        flush(name)


def _write_png_tree(
    root: Path, plans: dict[str, SplitPlan], writers: dict[str, SplitWriter], num_proc: int, progress: bool
) -> None:
    """A FERPlus PNG tree (the FERPlus script's output): each split's PNG files as they are."""
    for name, plan in plans.items():
        folder = root / SPLIT_FOLDERS[name]
        table = plan.table
        tasks = (
            SourceImage(str(folder / table.names[i]), str(folder), f"{table.path} line {table.lines[i]}")
            for i in plan.order
        )
        write_images(
            [writers[name]],
            lambda start, _tasks, images, plan=plan: plan.columns(start, images),
            tasks,
            read_files,
            total=len(plan.order),
            num_proc=num_proc,
            progress=progress,
            desc=f"{SPLIT_FOLDERS[name]} PNGs",
        )


def _resolve_ferplus_subsets(
    test: SplitPlan, subsets: dict[str, SubsetList], kind: str
) -> dict[str, ResolvedSubset]:
    """Resolve the lists against the test labels alone, so a bad entry stops the build before the pixels."""
    try:
        return resolve_subsets(test.names, test.labels, FERPLUS_CLASSES, subsets)
    except ValueError as err:
        if kind != "fer2013new":
            raise
        raise UserError(
            f"{err}. The RAN subset lists follow the label.csv labels, which differ from fer2013new.csv "
            "for about 1,600 images: build from the FERPlus label.csv folders, or without subsets "
            "(--lists none)"
        ) from err


def write_ferplus(
    out: str | Path,
    fer2013_csv: str | Path | None,
    ferplus_labels: str | Path | None = None,
    label_mode: str = "majority",
    subset_lists: str | Path | bool | None = None,
    *,
    overwrite: bool = False,
    num_proc: int = 1,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    description: str | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Build FERPlus into the dataset folder ``out``: train / validation / test plus the occlusion, pose30,
    pose45 (and minor) test subsets. Returns the rows of each split written.

    ``fer2013_csv``: Kaggle's fer2013.csv (the pixels; None only with a PNG tree). ``ferplus_labels``: see
    :func:`load_ferplus_votes`. ``label_mode`` applies to train; evaluation splits always use majority.
    ``subset_lists``: a local copy of the authors' lists, None (``$RAN_SUBSET_LISTS`` or the pinned
    download) or False (no subsets). ``num_proc`` processes parse and encode the pixels; memory stays flat.
    """
    check_num_proc(num_proc)
    modes = split_label_modes(label_mode)
    if fer2013_csv is not None and not Path(fer2013_csv).is_file():  # before any label file is fetched
        raise FileNotFoundError(f"{fer2013_csv}: no such file; expected Kaggle's fer2013.csv")
    kind, tables = load_ferplus_votes(ferplus_labels, use_png_tree=fer2013_csv is None)
    plans = {split: plan_split(split, table, rows, modes[split]) for split, (table, rows) in tables.items()}
    resolved = _resolve_ferplus_subsets(plans["test"], load_subset_lists("ferplus", subset_lists), kind)
    if kind != "png_tree":
        if fer2013_csv is None:
            raise UserError(
                "Kaggle's fer2013.csv is required (--fer2013, fer2013_csv=): the FERPlus label files hold "
                "votes, not pixels"
            )
    features = dataset_features(FERPLUS_CLASSES)
    card = ferplus_description(label_mode) if description is None else description
    with dataset_folder_writer(
        out, description=card, overwrite=overwrite, max_shard_bytes=max_shard_bytes
    ) as folder:
        kept = subset_test_rows(resolved)
        writers = {s: folder.split(s, features, kept if s == "test" else ()) for s in plans}
        if kind == "png_tree":
            root = label_folder(Path(ferplus_labels).expanduser())  # type: ignore[arg-type]
            _write_png_tree(root, plans, writers, num_proc, progress)  # type: ignore[arg-type]
        else:
            _write_from_fer2013(Path(fer2013_csv), plans, writers, num_proc, progress)  # type: ignore[arg-type]
        write_subsets(folder, writers["test"], resolved)
    return folder.written


def load_ferplus(
    fer2013_csv: str | Path | None,
    ferplus_labels: str | Path | None = None,
    label_mode: str = "majority",
    subset_lists: str | Path | bool | None = None,
    *,
    progress: bool = True,
) -> datasets.DatasetDict:
    """FERPlus as an in-memory DatasetDict (built by :func:`write_ferplus` into a temporary folder and read
    back): for tests and small experiments; ``ran data ferplus`` writes the folder directly."""
    write = functools.partial(
        write_ferplus,
        fer2013_csv=fer2013_csv,
        ferplus_labels=ferplus_labels,
        label_mode=label_mode,
        subset_lists=subset_lists,
        progress=progress,
    )
    return built_in_memory(write)


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
