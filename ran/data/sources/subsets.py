"""The RAN authors' occlusion / pose evaluation lists: parse them, and resolve them against a test split.

The lists themselves are fetched at a pinned commit and checked (``ran.data.sources.pinned``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import datasets

from ran.data.sources.pinned import (  # noqa: F401  (re-exported: the names this module always offered)
    AUTHORS_LISTS,
    CACHE_DIR_ENV,
    FERPLUS_LABEL_FILES,
    FERPLUS_URL_ENV,
    SUBSET_LISTS_ENV,
    SUBSET_LISTS_URL_ENV,
    DownloadError,
    PinnedRepository,
    default_cache_dir,
    fetch_ferplus_labels,
)
from ran.errors import UserError

if TYPE_CHECKING:
    from ran.data.format.writer import FolderWriter, SplitWriter


# ----------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class SubsetEntry:
    """One list line: the image it names (file stem), the label it claims, and any extra columns."""

    key: str
    label: int
    line: int
    extras: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SubsetList:
    name: str
    path: Path
    entries: tuple[SubsetEntry, ...]
    duplicates: int = 0  # repeated lines dropped (the authors' lists have a few)
    extra_columns: tuple[str, ...] = ()


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines; CRLF and no final newline are fine."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise UserError(f"{path} line {line}: not UTF-8 text ({err.reason}); save it as UTF-8") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _entries_from_regex(
    path: Path, pattern: str, expected: str, extras: tuple[str, ...] = ()
) -> list[SubsetEntry]:
    regex = re.compile(pattern)
    entries = []
    for number, line in _lines(path):
        match = regex.fullmatch(line)
        if not match:
            raise UserError(f"{path} line {number}: expected {expected}, got {line!r}")
        entries.append(
            SubsetEntry(
                key=match.group("key"),
                label=int(match.group("label")),
                line=number,
                extras={name: int(match.group(name)) for name in extras},
            )
        )
    return entries


def _ferplus_occlusion(paths: list[Path]) -> list[SubsetEntry]:
    return _entries_from_regex(
        paths[0],
        r"(?P<label>\d+)_(?P<key>fer\d+)\.png\s+\d+\s+(?P<occlusion_type>\d+)",
        "'<label>_<ferNNNNNNN>.png <regions> <occlusion type>'",
        ("occlusion_type",),
    )


def _ferplus_pose(paths: list[Path]) -> list[SubsetEntry]:
    return _entries_from_regex(
        paths[0], r"(?P<label>\d+)/(?P<key>fer\d+)\.(?:jpg|png)", "'<label>/<ferNNNNNNN>.jpg'"
    )


def _ferplus_minor(paths: list[Path]) -> list[SubsetEntry]:
    return _entries_from_regex(
        paths[0],
        r"(?P<label>\d+)_(?P<key>fer\d+)\.txt\s+\S+\s+\d+",
        "'<label>_<ferNNNNNNN>.txt <label file> <n>'",
    )


def _rafdb_occlusion(paths: list[Path]) -> list[SubsetEntry]:
    return _entries_from_regex(
        paths[0],
        r"(?P<key>(?:train|test)_\d+)_aligned\s+(?P<label>\d+)\s+(?P<occlusion_type>\d+)",
        "'test_NNNN_aligned <label 0..6> <occlusion type>'",
        ("occlusion_type",),
    )


def _rafdb_pose(paths: list[Path]) -> list[SubsetEntry]:
    """List file ``<label>/test_NNNN_aligned.jpg`` plus a label file whose first line is ``<count> 7``."""
    list_path, label_path = paths
    entries = _entries_from_regex(
        list_path,
        r"(?P<label>\d+)/(?P<key>(?:train|test)_\d+)_aligned\.jpg",
        "'<label>/test_NNNN_aligned.jpg'",
    )
    label_lines = _lines(label_path)
    if not label_lines or not re.fullmatch(r"\d+\s+\d+", label_lines[0][1]):
        raise UserError(f"{label_path} line 1: expected the header '<count> <classes>', e.g. '1247 7'")
    count = int(label_lines[0][1].split()[0])
    labels = label_lines[1:]
    if count != len(labels) or count != len(entries):
        raise UserError(
            f"{label_path}: header says {count} labels; the file has {len(labels)} and {list_path} has "
            f"{len(entries)} entries"
        )
    for entry, (number, text) in zip(entries, labels):
        if not text.isdigit() or int(text) != entry.label:
            raise UserError(
                f"{label_path} line {number}: label {text!r} disagrees with {list_path} line {entry.line} "
                f"(label {entry.label})"
            )
    return entries


def _affectnet_list(paths: list[Path]) -> list[SubsetEntry]:
    return _entries_from_regex(
        paths[0],
        r"(?:val/)?(?P<label>\d+)/(?P<key>[0-9a-f]{56})(?:/|\.\w+|/\d+\.\w+)?",
        "'[val/]<label>/<56-hex image id>[.jpg|/|/<crop>.jpg]'",
    )


@dataclass(frozen=True)
class SubsetSpec:
    name: str
    files: tuple[str, ...]  # paths in the authors' repository layout
    parse: Callable[[list[Path]], list[SubsetEntry]]
    extra_columns: tuple[str, ...] = ()
    optional: bool = False  # used only when a local copy has it (the download always has it)


SUBSET_SPECS: dict[str, tuple[SubsetSpec, ...]] = {
    "ferplus": (
        SubsetSpec(
            "occlusion", ("FERplus_dir/jianfei_occlusion_list.txt",), _ferplus_occlusion, ("occlusion_type",)
        ),
        SubsetSpec("pose30", ("FERplus_dir/pose_30_ferplus_list.txt",), _ferplus_pose),
        SubsetSpec("pose45", ("FERplus_dir/pose_45_ferplus_list.txt",), _ferplus_pose),
        # The reimplementation's "ferplus_minor" list (the authors' repository root has it too).
        SubsetSpec("minor", ("val_ferplus_mn.txt",), _ferplus_minor, optional=True),
    ),
    "rafdb": (
        SubsetSpec(
            "occlusion", ("RAF_DB_dir/rafdb_occlusion_list.txt",), _rafdb_occlusion, ("occlusion_type",)
        ),
        SubsetSpec(
            "pose30", ("RAF_DB_dir/val_raf_db_list.txt", "RAF_DB_dir/val_raf_db_label.txt"), _rafdb_pose
        ),
        SubsetSpec(
            "pose45", ("RAF_DB_dir/val_raf_db_list_45.txt", "RAF_DB_dir/val_raf_db_label_45.txt"), _rafdb_pose
        ),
    ),
    "affectnet": (
        SubsetSpec("occlusion", ("AffectNet_dir/occlusion_affectnet_list.txt",), _affectnet_list),
        SubsetSpec("pose30", ("AffectNet_dir/pose_30_affectnet_list.txt",), _affectnet_list),
        SubsetSpec("pose45", ("AffectNet_dir/pose_45_affectnet_list.txt",), _affectnet_list),
    ),
}


def parse_subset_list(spec: SubsetSpec, paths: list[Path]) -> SubsetList:
    """Parse one list; identical repeated entries are dropped, contradicting ones are an error."""
    seen: dict[str, SubsetEntry] = {}
    duplicates = 0
    for entry in spec.parse(paths):
        first = seen.get(entry.key)
        if first is None:
            seen[entry.key] = entry
            continue
        if first.label != entry.label or first.extras != entry.extras:
            raise UserError(
                f"{paths[0]} line {entry.line}: {entry.key} repeats line {first.line} with different values"
            )
        duplicates += 1
    return SubsetList(spec.name, paths[0], tuple(seen.values()), duplicates, spec.extra_columns)


def _find_local(root: Path, repo_path: str) -> Path | None:
    for candidate in (root / repo_path, root / Path(repo_path).name):
        if candidate.is_file():
            return candidate
    return None


def load_subset_lists(
    dataset: str,
    subset_lists: str | Path | bool | None = None,
    *,
    base_url: str | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, SubsetList]:
    """The parsed evaluation lists of ``dataset`` ('ferplus', 'rafdb', 'affectnet').

    ``subset_lists``: a local directory (the repository's layout, or the files side by side); None / True:
    ``$RAN_SUBSET_LISTS`` if set, else the pinned download (cached); False: no subsets.
    """
    if dataset not in SUBSET_SPECS:
        raise UserError(f"unknown dataset {dataset!r}; expected one of {sorted(SUBSET_SPECS)}")
    if subset_lists is False:
        return {}
    if subset_lists is None or subset_lists is True:
        subset_lists = os.environ.get(SUBSET_LISTS_ENV) or None
    result: dict[str, SubsetList] = {}
    for spec in SUBSET_SPECS[dataset]:
        paths: list[Path] = []
        for repo_path in spec.files:
            if subset_lists is not None:
                root = Path(subset_lists).expanduser()
                if not root.is_dir():
                    raise NotADirectoryError(f"subset lists: {root} is not a directory")
                found = _find_local(root, repo_path)
                if found is None and not spec.optional:
                    raise FileNotFoundError(
                        f"subset lists: {root} has no {repo_path} (nor {Path(repo_path).name})"
                    )
            else:
                found = AUTHORS_LISTS.fetch(repo_path, base_url=base_url, cache_dir=cache_dir)
            if found is None:
                break
            paths.append(found)
        if len(paths) == len(spec.files):
            result[spec.name] = parse_subset_list(spec, paths)
    return result


# -------------------------------------------------------------------------------------------- resolution


def image_key(image_name: str) -> str:
    """The part of an image name the lists use: the file stem (``fer0032220``, ``test_0001``, a hash)."""
    return Path(image_name.replace("\\", "/")).stem.removesuffix("_aligned")


def subset_rows(
    names: Sequence[str], labels: Sequence[int], class_names: Sequence[str], subset: SubsetList
) -> list[int]:
    """The test rows the list names, in list order, given the test split's image names and labels.

    Every entry must name a test image whose label equals the list's; otherwise the error names the list
    file, the line and the entry.
    """
    index_of = {image_key(name): i for i, name in enumerate(names)}
    rows = []
    for entry in subset.entries:
        row = index_of.get(entry.key)
        if row is None:
            raise UserError(
                f"{subset.path} line {entry.line}: entry {entry.key!r} names no image of the test split "
                f"({len(names)} images); expected an image of the test set"
            )
        label = int(labels[row])
        if label != entry.label:
            claimed = class_names[entry.label] if 0 <= entry.label < len(class_names) else "out of range"
            raise UserError(
                f"{subset.path} line {entry.line}: entry {entry.key!r} has label {entry.label} ({claimed}) "
                f"but the test image's label is {label} ({class_names[label]})"
            )
        rows.append(row)
    return rows


def _kept(subset: SubsetList, keep: Callable[[SubsetEntry], bool] | None) -> SubsetList:
    if keep is None:
        return subset
    entries = tuple(e for e in subset.entries if keep(e))
    return SubsetList(subset.name, subset.path, entries, subset.duplicates, subset.extra_columns)


def _extra_columns(subset: SubsetList) -> dict[str, tuple[datasets.Value, list[int]]]:
    """The list's own columns (e.g. ``occlusion_type``) as int32 values, one per entry."""
    return {
        column: (datasets.Value("int32"), [entry.extras[column] for entry in subset.entries])
        for column in subset.extra_columns
    }


def select_subset(test: datasets.Dataset, subset: SubsetList) -> datasets.Dataset:
    """The rows of an in-memory ``test`` split the list names, in list order, with its extra columns."""
    rows = subset_rows(test["image_name"], test["label"], test.features["label"].names, subset)
    selected = test.select(rows)
    for column, (feature, values) in _extra_columns(subset).items():
        selected = selected.add_column(column, values, feature=feature)
    return selected


def attach_subsets(
    splits: datasets.DatasetDict,
    subsets: Mapping[str, SubsetList],
    *,
    keep: Callable[[SubsetEntry], bool] | None = None,
) -> datasets.DatasetDict:
    """Add one split per list, each resolved against ``splits['test']`` (in memory)."""
    for name, subset in subsets.items():
        splits[name] = select_subset(splits["test"], _kept(subset, keep))
    return splits


@dataclass(frozen=True)
class ResolvedSubset:
    """A list resolved against the test split's names and labels before any image is read."""

    subset: SubsetList
    rows: list[int]


def resolve_subsets(
    names: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    subsets: Mapping[str, SubsetList],
    *,
    keep: Callable[[SubsetEntry], bool] | None = None,
) -> dict[str, ResolvedSubset]:
    """Every list resolved to test rows: a bad entry stops a build before its long part, and the builder
    learns which test rows to keep aside for the subsets (``SplitWriter(keep_rows=...)``)."""
    resolved = {}
    for name, subset in subsets.items():
        subset = _kept(subset, keep)
        resolved[name] = ResolvedSubset(subset, subset_rows(names, labels, class_names, subset))
    return resolved


def subset_test_rows(resolved: Mapping[str, ResolvedSubset]) -> set[int]:
    """The test rows any subset uses."""
    return {row for item in resolved.values() for row in item.rows}


def write_subsets(writer: FolderWriter, test: SplitWriter, resolved: Mapping[str, ResolvedSubset]) -> None:
    """One split per resolved list: its rows of the written test split, with the list's own columns."""
    for name, item in resolved.items():
        writer.subset(name, test, item.rows, _extra_columns(item.subset))
