"""RAF-DB (basic expressions) in the package's dataset form, with the RAN occlusion / pose subsets."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import datasets

from ran.data.format.folder import LabelledRows, dataset_features
from ran.data.format.images import SourceImage, read_files
from ran.data.format.parallel import check_num_proc
from ran.data.format.writer import (
    DEFAULT_MAX_SHARD_BYTES,
    built_in_memory,
    dataset_folder_writer,
    write_images,
)
from ran.data.sources.subsets import load_subset_lists, resolve_subsets, subset_test_rows, write_subsets
from ran.errors import UserError
from ran.labels import RAFDB_CLASSES

PARTITION_FILE = "EmoLabel/list_patition_label.txt"  # sic: the dataset's own spelling
ALIGNED_DIR = "Image/aligned"
_PARTITION_LINE = re.compile(r"(?P<stem>(?P<split>train|test)_\d+)\.jpg\s+(?P<label>\d+)")
RAFDB_DESCRIPTION = (
    "RAF-DB basic expressions (Li et al., 2017), aligned 100x100 faces; labels shifted to 0..6. "
    "validation repeats test (RAF-DB has no validation split). Subsets from the RAN authors' lists."
)


def read_rafdb_partition(root: str | Path) -> dict[str, list[tuple[str, int, int]]]:
    """``{'train': [...], 'test': [...]}`` of (image stem, label 0..6, line) from the partition file.

    The file's labels run 1..7 (surprise .. neutral); they are shifted to 0..6 as the RAN lists use them.
    """
    path = Path(root) / PARTITION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected RAF-DB's basic/{PARTITION_FILE}")
    rows: dict[str, list[tuple[str, int, int]]] = {"train": [], "test": []}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        match = _PARTITION_LINE.fullmatch(line.strip())
        if not match:
            raise UserError(
                f"{path} line {number}: expected '<train|test>_NNNNN.jpg <label 1..7>', got {line!r}"
            )
        label = int(match.group("label"))
        if not 1 <= label <= len(RAFDB_CLASSES):
            raise UserError(f"{path} line {number}: label {label}; expected 1..{len(RAFDB_CLASSES)}")
        rows[match.group("split")].append((match.group("stem"), label - 1, number))
    return rows


def write_rafdb(
    out: str | Path,
    root: str | Path,
    subset_lists: str | Path | bool | None = None,
    *,
    overwrite: bool = False,
    num_proc: int = 1,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    description: str = RAFDB_DESCRIPTION,
    progress: bool = True,
) -> dict[str, int]:
    """Build RAF-DB basic (EmoLabel/list_patition_label.txt + Image/aligned/*_aligned.jpg) into ``out``.

    Splits: train (12,271 in the full set), test (3,068) and validation, which is the test set again:
    RAF-DB has no official validation split and the RAN scripts select on the test set. Subsets occlusion
    (734 unique of 735 lines), pose30 (1,247) and pose45 (558) come from the authors' lists. Returns the
    rows of each split written; images are read ``num_proc`` processes at a time, in row groups.
    """
    check_num_proc(num_proc)
    root = Path(root).expanduser()
    partition = read_rafdb_partition(root)
    rows = {
        split: LabelledRows(
            [f"{s}.jpg" for s, _, _ in entries], [lab for _, lab, _ in entries], split, len(RAFDB_CLASSES)
        )
        for split, entries in partition.items()
    }
    subsets = load_subset_lists("rafdb", subset_lists)
    resolved = resolve_subsets(rows["test"].names, rows["test"].labels, RAFDB_CLASSES, subsets)
    features = dataset_features(RAFDB_CLASSES)
    with dataset_folder_writer(
        out, description=description, overwrite=overwrite, max_shard_bytes=max_shard_bytes
    ) as folder:
        train = folder.split("train", features)
        validation = folder.split("validation", features)
        test = folder.split("test", features, subset_test_rows(resolved))
        for split, writers in (("train", [train]), ("test", [validation, test])):
            files = [
                (root / ALIGNED_DIR / f"{stem}_aligned.jpg", number) for stem, _, number in partition[split]
            ]
            tasks = [
                SourceImage(str(file), str(root / ALIGNED_DIR), f"{root / PARTITION_FILE} line {number}")
                for file, number in files
            ]
            write_images(
                writers,
                rows[split].columns,
                tasks,
                read_files,
                total=len(tasks),
                num_proc=num_proc,
                progress=progress,
                desc=f"RAF-DB {split}",
            )
        write_subsets(folder, test, resolved)
    return folder.written


def load_rafdb(
    root: str | Path, subset_lists: str | Path | bool | None = None, *, progress: bool = True
) -> datasets.DatasetDict:
    """RAF-DB as an in-memory DatasetDict (:func:`write_rafdb` into a temporary folder, read back)."""
    return built_in_memory(
        functools.partial(write_rafdb, root=root, subset_lists=subset_lists, progress=progress)
    )
