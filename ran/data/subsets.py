"""The RAN authors' occlusion / pose evaluation lists: fetch (pinned commit, sha256-checked, cached), parse,
and resolve against a built test split.

The lists are the paper's evaluation protocol, so they are read byte-for-byte from the authors' repository
at a fixed commit; a changed file is refused rather than silently giving other numbers.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import datasets

SUBSET_LISTS_ENV = "RAN_SUBSET_LISTS"  # a local directory holding the lists (the repository's layout)
SUBSET_LISTS_URL_ENV = "RAN_SUBSET_LISTS_URL"  # overrides the raw-file base URL (mirrors, tests)
FERPLUS_URL_ENV = "RAN_FERPLUS_URL"
CACHE_DIR_ENV = "RAN_CACHE_DIR"


@dataclass(frozen=True)
class PinnedRepository:
    """Raw files of one GitHub repository at one commit, each with its recorded sha256."""

    repo: str
    commit: str
    url_env: str
    sha256: Mapping[str, str]

    @property
    def default_base_url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}"

    def base_url(self, override: str | None = None) -> str:
        return (override or os.environ.get(self.url_env) or self.default_base_url).rstrip("/")

    def cache_root(self, cache_dir: str | Path | None = None) -> Path:
        return Path(cache_dir) if cache_dir is not None else default_cache_dir() / self.repo / self.commit

    def fetch(self, path: str, *, base_url: str | None = None, cache_dir: str | Path | None = None) -> Path:
        """Local path of ``path``: from the cache if its checksum holds, else downloaded and checked."""
        if path not in self.sha256:
            raise KeyError(f"{path} is not one of the pinned files of {self.repo}")
        expected = self.sha256[path]
        target = self.cache_root(cache_dir) / path
        if target.is_file() and _sha256(target.read_bytes()) == expected:
            return target
        url = f"{self.base_url(base_url)}/{urllib.parse.quote(path)}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise DownloadError(
                f"could not download {url} ({err}); give a local copy of the repository's files instead "
                f"(a directory argument or ${SUBSET_LISTS_ENV} / --lists for the subset lists)"
            ) from err
        actual = _sha256(payload)
        if actual != expected:
            raise ValueError(
                f"{url}: sha256 {actual} differs from the recorded {expected} "
                f"({self.repo}@{self.commit[:12]}); refusing the file"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
            tmp.write(payload)
        os.replace(tmp.name, target)
        return target

    def fetch_all(self, *, base_url: str | None = None, cache_dir: str | Path | None = None) -> Path:
        """Fetch every pinned file; returns the directory holding them in the repository's layout."""
        for path in self.sha256:
            self.fetch(path, base_url=base_url, cache_dir=cache_dir)
        return self.cache_root(cache_dir)


class DownloadError(OSError):
    """A pinned file could not be fetched (no network, wrong URL)."""


def default_cache_dir() -> Path:
    """``$RAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/ran`` (``~/.cache/ran``)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "ran"


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _checksums(listing: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <path>`` per line) as {path: hex}."""
    return {path: digest for digest, path in (line.split() for line in listing.strip().splitlines())}


AUTHORS_LISTS = PinnedRepository(
    repo="kaiwang960112/Challenge-condition-FER-dataset",
    commit="e43d7a06e696f3f87feb3cbced739a286bc08679",
    url_env=SUBSET_LISTS_URL_ENV,
    sha256=_checksums(
        """
b9d5c500fe762b1cda4c9fb537e4560fff9d01acabdcebedd57290a9b2f9d903  FERplus_dir/jianfei_occlusion_list.txt
f744e57c115834069ba0ad61c8f81ab578c91514274fa4c79a2ed83691457371  FERplus_dir/pose_30_ferplus_list.txt
89bc5b7bc7243102d05a5d939183ebabb673b1b0fc35f519976bb7686d7877e5  FERplus_dir/pose_45_ferplus_list.txt
02a9b2279251fc0701825f37f688d9391c9c09c5db1b640ca43602386437f475  RAF_DB_dir/rafdb_occlusion_list.txt
ef0329b7954697b362f3c2d4242bde83ab2b8712b43eb3ccd4496ec265cf68f5  RAF_DB_dir/val_raf_db_list.txt
268e3d4cf82b807b0f5600989ca9b6e36e3abaf78b0c655d293c86e80ffd5dbb  RAF_DB_dir/val_raf_db_label.txt
371758f6eaa8257b5925edd24f6838a529a2e07fa9bb72e2c3bf92d9b984e86f  RAF_DB_dir/val_raf_db_list_45.txt
debcc16939a320475c999d7af78a7f1950c603f8ed429cdf250340871f073097  RAF_DB_dir/val_raf_db_label_45.txt
bba97c5965d59de0bf759beefadeeac5304227b765408d335dbdba8bc487e823  AffectNet_dir/occlusion_affectnet_list.txt
e5a7da60c39f122f3bdc4a936ff264dc936bee275c7928281fec1d8418770925  AffectNet_dir/pose_30_affectnet_list.txt
7774d9b6654da83514398f0d6e616e27e53e2e8360d87ffaf67f55e3f4e042cc  AffectNet_dir/pose_45_affectnet_list.txt
04801b63aaa2e720ea8e299e4d0d656566da1e13c0fa2481bc943664961fed00  val_ferplus_mn.txt
"""
    ),
)

FERPLUS_LABEL_FILES = PinnedRepository(
    repo="microsoft/FERPlus",
    commit="ae2128abf776409c93e50cf7c9d87180673314e6",
    url_env=FERPLUS_URL_ENV,
    sha256=_checksums(
        """
9206e20d62f56475939f516847d61753e4860caeac9718b560129541b776fc2c  fer2013new.csv
a82c40c825505cd30e139195c246bc38f8ac39de0e8968cbf15e1dab7837658c  data/FER2013Train/label.csv
aad6298bed23cad816550362c2c00ae49b99513c7cae7d49651f347afd9ab860  data/FER2013Valid/label.csv
425142295cc23872651271be9f45a99dac11af426f948d1b60967c8845b7bdf2  data/FER2013Test/label.csv
"""
    ),
)


def fetch_ferplus_labels(*, base_url: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The FERPlus label files (fer2013new.csv, data/FER2013*/label.csv) at the pinned commit, cached."""
    return FERPLUS_LABEL_FILES.fetch_all(base_url=base_url, cache_dir=cache_dir)


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
    text = path.read_bytes().decode("utf-8")
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _entries_from_regex(
    path: Path, pattern: str, expected: str, extras: tuple[str, ...] = ()
) -> list[SubsetEntry]:
    regex = re.compile(pattern)
    entries = []
    for number, line in _lines(path):
        match = regex.fullmatch(line)
        if not match:
            raise ValueError(f"{path} line {number}: expected {expected}, got {line!r}")
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
        raise ValueError(f"{label_path} line 1: expected the header '<count> <classes>', e.g. '1247 7'")
    count = int(label_lines[0][1].split()[0])
    labels = label_lines[1:]
    if count != len(labels) or count != len(entries):
        raise ValueError(
            f"{label_path}: header says {count} labels; the file has {len(labels)} and {list_path} has "
            f"{len(entries)} entries"
        )
    for entry, (number, text) in zip(entries, labels):
        if not text.isdigit() or int(text) != entry.label:
            raise ValueError(
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
            raise ValueError(
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
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SUBSET_SPECS)}")
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


def select_subset(test: datasets.Dataset, subset: SubsetList) -> datasets.Dataset:
    """The rows of ``test`` the list names, in list order, with the list's extra columns added.

    Every entry must name a test image whose label equals the list's; otherwise the error names the list
    file, the line and the entry.
    """
    names = test["image_name"]
    labels = test["label"]
    class_names = test.features["label"].names
    index_of = {image_key(name): i for i, name in enumerate(names)}
    indices = []
    for entry in subset.entries:
        row = index_of.get(entry.key)
        if row is None:
            raise ValueError(
                f"{subset.path} line {entry.line}: entry {entry.key!r} names no image of the test split "
                f"({len(names)} images); expected an image of the test set"
            )
        if labels[row] != entry.label:
            claimed = class_names[entry.label] if 0 <= entry.label < len(class_names) else "out of range"
            raise ValueError(
                f"{subset.path} line {entry.line}: entry {entry.key!r} has label {entry.label} ({claimed}) "
                f"but the test image's label is {labels[row]} ({class_names[labels[row]]})"
            )
        indices.append(row)
    selected = test.select(indices)
    for column in subset.extra_columns:
        values = [entry.extras[column] for entry in subset.entries]
        selected = selected.add_column(column, values, feature=datasets.Value("int32"))
    return selected


def attach_subsets(
    splits: datasets.DatasetDict,
    subsets: Mapping[str, SubsetList],
    *,
    keep: Callable[[SubsetEntry], bool] | None = None,
) -> datasets.DatasetDict:
    """Add one split per list, each resolved against ``splits['test']``."""
    for name, subset in subsets.items():
        if keep is not None:
            kept = tuple(e for e in subset.entries if keep(e))
            subset = SubsetList(subset.name, subset.path, kept, subset.duplicates, subset.extra_columns)
        splits[name] = select_subset(splits["test"], subset)
    return splits
