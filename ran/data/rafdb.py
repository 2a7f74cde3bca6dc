"""RAF-DB (basic expressions) in the package's dataset form, with the RAN occlusion / pose subsets."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from ran.data.folder import labelled_split
from ran.data.subsets import attach_subsets, load_subset_lists
from ran.labels import RAFDB_CLASSES

PARTITION_FILE = "EmoLabel/list_patition_label.txt"  # sic: the dataset's own spelling
ALIGNED_DIR = "Image/aligned"
_PARTITION_LINE = re.compile(r"(?P<stem>(?P<split>train|test)_\d+)\.jpg\s+(?P<label>\d+)")


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
            raise ValueError(
                f"{path} line {number}: expected '<train|test>_NNNNN.jpg <label 1..7>', got {line!r}"
            )
        label = int(match.group("label"))
        if not 1 <= label <= len(RAFDB_CLASSES):
            raise ValueError(f"{path} line {number}: label {label}; expected 1..{len(RAFDB_CLASSES)}")
        rows[match.group("split")].append((match.group("stem"), label - 1, number))
    return rows


def load_rafdb(
    root: str | Path, subset_lists: str | Path | bool | None = None, *, progress: bool = True
) -> datasets.DatasetDict:
    """RAF-DB basic from its folder (EmoLabel/list_patition_label.txt + Image/aligned/*_aligned.jpg).

    Splits: train (12,271 in the full set), test (3,068) and validation, which is the test set again:
    RAF-DB has no official validation split and the RAN scripts select on the test set. Subsets occlusion
    (734 unique of 735 lines), pose30 (1,247) and pose45 (558) come from the authors' lists.
    """
    root = Path(root).expanduser()
    partition = read_rafdb_partition(root)
    subsets = load_subset_lists("rafdb", subset_lists)
    image_dir = root / ALIGNED_DIR
    splits = {}
    for split, rows in partition.items():
        images = []
        for stem, _, number in tqdm(rows, desc=f"RAF-DB {split}", disable=not progress):
            file = image_dir / f"{stem}_aligned.jpg"
            if not file.is_file():
                raise FileNotFoundError(f"{root / PARTITION_FILE} line {number}: image {file} does not exist")
            images.append(file.read_bytes())
        splits[split] = labelled_split(
            images,
            [label for _, label, _ in rows],
            [f"{stem}.jpg" for stem, _, _ in rows],
            [split] * len(rows),
            RAFDB_CLASSES,
        )
    result = datasets.DatasetDict(train=splits["train"], validation=splits["test"], test=splits["test"])
    return attach_subsets(result, subsets)
