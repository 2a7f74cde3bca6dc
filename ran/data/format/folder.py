"""The on-disk dataset format every ``ran data`` builder writes and training / evaluation read.

A folder of Parquet files plus a README.md whose YAML ``configs:`` block lets plain
``datasets.load_dataset(OUT)`` (and, once pushed, ``load_dataset(repo_id)``) find the splits without any
loading script: ``datasets`` >= 4 runs none. train / validation / test form the default config
(``data/<split>.parquet``, or ``data/<split>-00000-of-0000N.parquet`` shards listed in the card when a
split is larger than one shard); each evaluation subset is a config of its own (``<subset>/test.parquet``).
Writing is ``ran.data.format.writer`` (``write_dataset_folder`` too); this module names, checks and reads the
files.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ran.constants import REPO_ID
from ran.data.format.declared import (  # noqa: F401  (read_card_configs: callers read the card through here)
    DEFAULT_CONFIG,
    DEFAULT_SPLITS,
    declared_configs,
    declared_files,
    read_card_configs,
)
from ran.errors import UserError
from ran.files import marker_path

_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_RESERVED_CONFIG_NAMES = {DEFAULT_CONFIG, "data"}

DATASET = "dataset"  # the marker kind: .ran-dataset.json


def dataset_features(class_names: Sequence[str], extra: Mapping[str, Any] | None = None) -> datasets.Features:
    """The features shared by every dataset the package builds, so one training loop reads them all."""
    features = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(class_names)),
        "votes": datasets.Sequence(datasets.Value("int32")),
        "soft_label": datasets.Sequence(datasets.Value("float32")),
        "image_name": datasets.Value("string"),
        "usage": datasets.Value("string"),
    }
    features.update(extra or {})
    return datasets.Features(features)


def check_split_name(name: str) -> None:
    """A split other than train / validation / test becomes a config, so its name must be one."""
    if name not in DEFAULT_SPLITS and (not _CONFIG_NAME.match(name) or name in _RESERVED_CONFIG_NAMES):
        raise UserError(
            f"split name {name!r} cannot be a config name: expected letters, digits, '_' or '-', "
            f"and not one of {sorted(_RESERVED_CONFIG_NAMES)}"
        )


def config_of(split: str) -> tuple[str, str]:
    """(config, split) a folder stores a split under: default/<split>, or <subset>/test."""
    return (DEFAULT_CONFIG, split) if split in DEFAULT_SPLITS else (split, "test")


def labelled_columns(
    images: Sequence[bytes],
    labels: Sequence[int],
    image_names: Sequence[str],
    usage: Sequence[str],
    num_classes: int,
) -> dict[str, list]:
    """Rows of a hard-labelled dataset (no annotator votes) as columns: one-hot soft labels, image bytes."""
    return {
        "image": [{"bytes": data, "path": None} for data in images],
        "label": [int(label) for label in labels],
        "votes": [[] for _ in labels],
        "soft_label": [[1.0 if c == label else 0.0 for c in range(num_classes)] for label in labels],
        "image_name": list(image_names),
        "usage": list(usage),
    }


@dataclass(frozen=True)
class LabelledRows:
    """Hard-labelled rows known before their images are read (RAF-DB, AffectNet validation)."""

    names: Sequence[str]
    labels: Sequence[int]
    usage: str
    num_classes: int

    def columns(self, start: int, _tasks: Sequence[Any], images: Sequence[bytes]) -> dict[str, list]:
        """Rows ``start ..`` (one per image) as columns, for ``ran.data.format.writer.write_images``."""
        stop = start + len(images)
        usage = [self.usage] * len(images)
        return labelled_columns(
            images, self.labels[start:stop], self.names[start:stop], usage, self.num_classes
        )


def labelled_split(
    images: Sequence[bytes],
    labels: Sequence[int],
    image_names: Sequence[str],
    usage: Sequence[str],
    class_names: Sequence[str],
) -> datasets.Dataset:
    """A split of a hard-labelled dataset held in memory (small sets, tests)."""
    columns = labelled_columns(images, labels, image_names, usage, len(class_names))
    return datasets.Dataset.from_dict(columns, features=dataset_features(class_names))


def split_files(folder: str | Path, split: str) -> list[Path]:
    """The Parquet shard files of one split (train / validation / test, or a subset name), in order."""
    files = declared_files(folder)
    if split not in files:
        raise UserError(f"{folder}: no split {split!r}; its README.md declares {', '.join(files)}")
    return files[split]


def _folder_cache_dir(folder: Path) -> Path:
    """A ``datasets`` cache directory keyed by the folder's path and its files' sizes and times.

    ``datasets`` caches a local Parquet folder under its base name, so two different folders both
    named ``data`` would otherwise share (and return) one cached copy.
    """
    key = hashlib.sha1(str(folder).encode())
    for file in sorted(folder.rglob("*")):
        if file.is_file() and ".cache" not in file.parts:
            stat = file.stat()
            key.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return Path(datasets.config.HF_DATASETS_CACHE) / "ran-folders" / key.hexdigest()[:16]


def _add_config(result: dict[str, datasets.Dataset], name: str, loaded: Mapping[str, Any]) -> None:
    """Default config: its train / validation / test; a subset config: its test split (else its first).
    A subset config named like a split (or twice) would stand in for it: refused."""
    if name in DEFAULT_SPLITS or (name != DEFAULT_CONFIG and name in result):
        raise UserError(f"config {name!r}: the name of a split or of another config; expected another name")
    if name == DEFAULT_CONFIG:
        result.update({split: loaded[split] for split in DEFAULT_SPLITS if split in loaded})
    else:
        result[name] = loaded["test"] if "test" in loaded else next(iter(loaded.values()))


def _load_local(folder: Path, cache_dir: str | Path) -> dict[str, datasets.Dataset]:
    """Each config of a local folder, read from exactly the files its card declares once they are
    checked (``declared_configs``): ``datasets`` is never left to resolve the card's paths itself."""
    from ran.data.format.shards import reading_shards

    result: dict[str, datasets.Dataset] = {}
    for name, splits in declared_configs(folder).items():
        data_files = {split: [str(file) for file in files] for split, files in splits.items()}
        loaded = reading_shards(
            [file for files in splits.values() for file in files],
            datasets.load_dataset,
            "parquet",
            data_files=data_files,
            cache_dir=str(cache_dir),
        )
        _add_config(result, name, loaded)
    return result


def load_dataset_folder(
    path_or_repo_id: str | Path,
    revision: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> datasets.DatasetDict:
    """Every split of a folder (or Hub dataset repo) written by ``ran data``, in one dict.

    Keys: train / validation / test from the default config, then one key per subset config. A local
    folder's card, paths and shards are checked first (:func:`declared_configs`); a fault is one line.
    ``progress=False`` hides ``datasets``' bars while it reads (as ``--no-progress`` promises).
    """
    with _bars(progress):
        return _load_folder(path_or_repo_id, revision, cache_dir)


@contextlib.contextmanager
def _bars(shown: bool) -> Iterator[None]:
    """``datasets``' progress bars off for the block unless ``shown`` (and as they were after it)."""
    if shown or not datasets.is_progress_bar_enabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


def _load_folder(
    path_or_repo_id: str | Path, revision: str | None, cache_dir: str | Path | None
) -> datasets.DatasetDict:
    target = str(path_or_repo_id)
    local = Path(target).expanduser()
    if local.exists():
        if not (local / "README.md").is_file():
            raise FileNotFoundError(f"{local}: no README.md; expected a folder written by 'ran data'")
        local = local.absolute()
        cache = Path(cache_dir) if cache_dir is not None else _folder_cache_dir(local)
        fresh = cache_dir is None and not cache.exists()
        try:
            return _embedded_images(datasets.DatasetDict(_load_local(local, cache)), str(local))
        except BaseException:
            if fresh:  # a failed first read (a damaged shard) leaves no half-built cache of its own
                shutil.rmtree(cache, ignore_errors=True)
            raise
    if local.is_absolute() or target.startswith(".") or target.count("/") != 1:
        # not a Hub "org/name" id either: a local folder that is missing
        raise FileNotFoundError(f"{target}: no such dataset folder (expected a folder written by 'ran data')")
    config_names = datasets.get_dataset_config_names(target, revision=revision)
    if not config_names:
        raise UserError(f"{target}: its README.md declares no dataset configs")
    result: dict[str, datasets.Dataset] = {}
    kwargs: dict[str, Any] = {"revision": revision}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    for name in config_names:
        _add_config(result, name, datasets.load_dataset(target, name, **kwargs))
    return _embedded_images(datasets.DatasetDict(result), target)


def _embedded_images(splits: datasets.DatasetDict, where: str) -> datasets.DatasetDict:
    """Every row's image is embedded bytes, as ``ran data`` writes them: for a row without bytes,
    ``datasets`` would open the file its ``path`` names (anywhere on this machine, chosen by whoever wrote
    the shard), and a row without an image would fail in the middle of a run. Only the columns' validity
    is read, not the images."""
    import pyarrow.compute as pc

    for name, split in splits.items():
        if "image" not in split.column_names:
            continue
        start = 0
        for chunk in split.data.column("image").chunks:
            missing = pc.is_null(pc.struct_field(chunk, "bytes"))
            if pc.any(missing).as_py():
                row = start + pc.index(missing, True).as_py()
                raise UserError(
                    f"{where}: split {name!r}, row {row}: the image is not embedded in the shard (a 'path' "
                    "only, or none); a 'ran data' folder holds every image's bytes"
                )
            start += len(chunk)
    return splits


def load_split_shards(
    folder: str | Path,
    split: str,
    rank: int,
    world_size: int,
    *,
    cache_dir: str | Path | None = None,
) -> datasets.Dataset:
    """The rows of ``split`` that process ``rank`` of ``world_size`` reads: only its own shard files.

    For multi-node training (``accelerate launch --num_machines ...``): call it with
    ``accelerator.process_index`` and ``accelerator.num_processes`` so each process converts and reads
    only shards ``rank, rank + world_size, ...`` of the split, instead of every process loading all of
    it. The files of the ranks are disjoint and together hold every row once. Ranks get whole shards,
    so their row counts differ by up to one shard: a training loop must agree on the number of steps
    per epoch (for example the smallest rank's). A split with fewer shards than processes is refused;
    rebuild it with a smaller ``--max-shard-size``.
    """
    folder = Path(folder).expanduser().absolute()
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise UserError(f"world_size must be a positive integer, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise UserError(f"rank must be an integer in 0..{world_size - 1}, got {rank!r}")
    from ran.data.format.shards import reading_shards

    files = split_files(folder, split)
    if len(files) < world_size:
        raise UserError(
            f"{folder}: split {split!r} has {len(files)} shard file(s), fewer than the {world_size} "
            "processes; rebuild it with a smaller --max-shard-size ('ran data ... --max-shard-size 100MB') "
            "or run fewer processes"
        )
    mine = files[rank::world_size]
    return reading_shards(
        mine,
        datasets.load_dataset,
        "parquet",
        data_files={split: [str(file) for file in mine]},
        split=split,
        cache_dir=str(cache_dir or _folder_cache_dir(folder)),
    )


def read_folder_in_memory(folder: str | Path) -> datasets.DatasetDict:
    """Every split of a local folder read fully into memory (no cache files): for small builds and tests
    that want a DatasetDict, such as ``load_ferplus``, which builds a folder and reads it back."""
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    from ran.data.format.shards import reading_shards

    files = declared_files(folder)
    ordered = [name for name in DEFAULT_SPLITS if name in files] + [
        n for n in files if n not in DEFAULT_SPLITS
    ]
    return datasets.DatasetDict(
        {
            name: datasets.Dataset(
                InMemoryTable(reading_shards(files[name], pq.read_table, [str(f) for f in files[name]]))
            )
            for name in ordered
        }
    )


def check_not_in_dataset(out: str | Path, flag: str = "--output-dir") -> None:
    """Refuse an output folder that is a dataset folder or inside one: files added there no longer match
    its card (``ran data push`` and the readers refuse such a folder)."""
    out = Path(out).expanduser().absolute()
    for folder in (out, *out.parents):
        if marker_path(folder, DATASET).is_file():
            raise UserError(
                f"{flag} {out}: inside the dataset folder {folder} (its card would no longer match its "
                "files); choose a folder outside it"
            )


def check_dataset_folder(folder: str | Path) -> list[Path]:
    """The files of a dataset folder that make the dataset: its card (README.md), the Parquet files the
    card names (exactly those present; ``declared_files`` refuses links out of the folder) and the
    marker. Anything else there (notes, a ``.env``, a link to elsewhere) is not the dataset's and is never
    uploaded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory; expected a folder written by 'ran data'")
    declared = {file.relative_to(folder) for files in declared_files(folder).values() for file in files}
    present = {p.relative_to(folder) for p in folder.rglob("*.parquet")}
    if present - declared:
        extra = ", ".join(sorted(map(str, present - declared)))
        raise UserError(f"{folder}: Parquet files not named in README.md: {extra}")
    marker = marker_path(folder, DATASET)
    own = [
        folder / "README.md",
        *(folder / name for name in declared),
        *([marker] if marker.is_file() else []),
    ]
    return sorted(own)


def push_dataset_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload dataset built with ran data",
    api: Any = None,
) -> Any:
    """Upload a dataset folder's files (:func:`check_dataset_folder`) to a Hub dataset repo, so
    ``load_dataset(repo_id)`` reads it."""
    if not REPO_ID.match(repo_id):
        raise UserError(f"repo_id: expected 'ORG/NAME', got {repo_id!r}")
    folder = Path(folder)
    files = check_dataset_folder(folder)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        commit_message=commit_message,
        allow_patterns=[str(path.relative_to(folder)) for path in files],  # the dataset's files only
    )
