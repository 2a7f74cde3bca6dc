"""The on-disk dataset format every ``ran data`` builder writes and training / evaluation read.

A folder of Parquet files plus a README.md whose YAML ``configs:`` block lets plain
``datasets.load_dataset(OUT)`` (and, once pushed, ``load_dataset(repo_id)``) find the splits without any
loading script: ``datasets`` >= 4 runs none.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import yaml

DEFAULT_SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_CONFIG = "default"
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_RESERVED_CONFIG_NAMES = {DEFAULT_CONFIG, "data"}


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


def labelled_split(
    images: Sequence[bytes],
    labels: Sequence[int],
    image_names: Sequence[str],
    usage: Sequence[str],
    class_names: Sequence[str],
) -> datasets.Dataset:
    """A split of a hard-labelled dataset (no annotator votes): one-hot soft labels, encoded image bytes."""
    one_hot = [[1.0 if c == label else 0.0 for c in range(len(class_names))] for label in labels]
    columns = {
        "image": [{"bytes": data, "path": None} for data in images],
        "label": list(labels),
        "votes": [[] for _ in labels],
        "soft_label": one_hot,
        "image_name": list(image_names),
        "usage": list(usage),
    }
    return datasets.Dataset.from_dict(columns, features=dataset_features(class_names))


def _config_layout(split_names: Sequence[str]) -> list[dict[str, Any]]:
    """The README ``configs:`` entries: default train/validation/test, then one config per subset."""
    default_files = [
        {"split": name, "path": f"data/{name}.parquet"} for name in DEFAULT_SPLITS if name in split_names
    ]
    configs: list[dict[str, Any]] = []
    if default_files:
        configs.append({"config_name": DEFAULT_CONFIG, "default": True, "data_files": default_files})
    for name in split_names:
        if name not in DEFAULT_SPLITS:
            configs.append(
                {"config_name": name, "data_files": [{"split": "test", "path": f"{name}/test.parquet"}]}
            )
    return configs


def _dataset_card(splits: datasets.DatasetDict, description: str) -> str:
    """README.md: the YAML header ``datasets`` reads, and a short human-readable summary."""
    header = yaml.safe_dump({"configs": _config_layout(list(splits))}, sort_keys=False)
    lines = ["---", header.rstrip("\n"), "---", "", "# Facial expression dataset (RAN format)", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [
        "Load it with `datasets.load_dataset(PATH_OR_REPO)` (train / validation / test) or",
        "`datasets.load_dataset(PATH_OR_REPO, '<subset>')` for one evaluation subset (its `test` split),",
        "or all at once with `ran.data.load_dataset_folder(PATH_OR_REPO)`.",
        "",
        "| config | split | rows |",
        "|---|---|---|",
    ]
    for name, split in splits.items():
        config, split_name = (DEFAULT_CONFIG, name) if name in DEFAULT_SPLITS else (name, "test")
        lines.append(f"| {config} | {split_name} | {split.num_rows} |")
    first = next(iter(splits.values()))
    lines += ["", "Features: " + ", ".join(f"`{k}`" for k in first.features), ""]
    label = first.features.get("label")
    if isinstance(label, datasets.ClassLabel):
        lines += ["Classes: " + ", ".join(f"{i} {n}" for i, n in enumerate(label.names)), ""]
    return "\n".join(lines)


def _with_embedded_images(split: datasets.Dataset) -> datasets.Dataset:
    """Copy image files referenced only by path into the table, so the Parquet file is self-contained."""
    image_columns = [name for name, feat in split.features.items() if isinstance(feat, datasets.Image)]
    if not image_columns or split.num_rows == 0:
        return split
    table = split.data  # the underlying Arrow table (a superset of the rows when indices are selected)
    chunks = [chunk for name in image_columns for chunk in table.column(name).chunks]
    if all(chunk.field("bytes").null_count == 0 for chunk in chunks):
        return split
    from datasets.table import embed_table_storage

    return split.with_format("arrow").map(embed_table_storage, batched=True).with_format(None)


def write_dataset_folder(
    splits: datasets.DatasetDict,
    out: str | Path,
    *,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Write ``splits`` as Parquet files plus a dataset card; atomic (temp dir beside OUT, then rename).

    Splits named train / validation / test form the ``default`` config; every other split becomes a config
    of its own holding one ``test`` split.
    """
    out = Path(out).expanduser().absolute()
    if not splits:
        raise ValueError("write_dataset_folder: no splits to write")
    for name in splits:
        if name not in DEFAULT_SPLITS and (not _CONFIG_NAME.match(name) or name in _RESERVED_CONFIG_NAMES):
            raise ValueError(
                f"split name {name!r} cannot be a config name: expected letters, digits, '_' or '-', "
                f"and not one of {sorted(_RESERVED_CONFIG_NAMES)}"
            )
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
    empty = [name for name, split in splits.items() if split.num_rows == 0]
    if empty:  # datasets cannot load a split with no rows, so an empty one gets no config
        warnings.warn(f"not writing empty split(s) {', '.join(empty)}", stacklevel=2)
        splits = datasets.DatasetDict({name: split for name, split in splits.items() if split.num_rows})
        if not splits:
            raise ValueError("write_dataset_folder: every split is empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for name, split in splits.items():
            relative = f"data/{name}.parquet" if name in DEFAULT_SPLITS else f"{name}/test.parquet"
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            _with_embedded_images(split).to_parquet(str(target))
        (staging / "README.md").write_text(_dataset_card(splits, description), encoding="utf-8")
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the result is an ordinary folder
        _replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _replace_directory(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``; an existing ``out`` is removed only after the new one is in place."""
    if not out.exists():
        new.rename(out)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    backup.rmdir()
    out.rename(backup)
    try:
        new.rename(out)
    except BaseException:
        backup.rename(out)
        raise
    if backup.is_dir():
        shutil.rmtree(backup, ignore_errors=True)
    else:
        backup.unlink()


def read_card_configs(folder: str | Path) -> list[dict[str, Any]]:
    """The ``configs:`` entries of a local dataset folder's README.md (empty when there is none)."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return []
    text = card.read_text(encoding="utf-8")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if not match:
        return []
    meta = yaml.safe_load(match.group(1)) or {}
    return list(meta.get("configs") or [])


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


def load_dataset_folder(
    path_or_repo_id: str | Path,
    revision: str | None = None,
    *,
    cache_dir: str | Path | None = None,
) -> datasets.DatasetDict:
    """Every split of a folder (or Hub dataset repo) written by :func:`write_dataset_folder`, in one dict.

    Keys: train / validation / test from the default config, then one key per subset config.
    """
    target = str(path_or_repo_id)
    local = Path(target).expanduser()
    if local.exists():
        if not (local / "README.md").is_file():
            raise FileNotFoundError(f"{local}: no README.md; expected a folder written by 'ran data'")
        target = str(local.absolute())
        config_names = [c["config_name"] for c in read_card_configs(local)]
        if cache_dir is None:
            cache_dir = _folder_cache_dir(local.absolute())
    elif local.is_absolute() or target.startswith(".") or target.count("/") != 1:
        # not a Hub "org/name" id either: a local folder that is missing
        raise FileNotFoundError(f"{target}: no such dataset folder (expected a folder written by 'ran data')")
    else:
        config_names = datasets.get_dataset_config_names(target, revision=revision)
    if not config_names:
        raise ValueError(f"{target}: its README.md declares no dataset configs")
    result: dict[str, datasets.Dataset] = {}
    kwargs: dict[str, Any] = {"revision": revision}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    for name in config_names:
        loaded = datasets.load_dataset(target, name, **kwargs)
        if name == DEFAULT_CONFIG:
            result.update({split: loaded[split] for split in DEFAULT_SPLITS if split in loaded})
        elif "test" in loaded:
            result[name] = loaded["test"]
        else:
            result[name] = next(iter(loaded.values()))
    return datasets.DatasetDict(result)


def check_dataset_folder(folder: str | Path) -> list[Path]:
    """The files of a dataset folder, after checking that its card names exactly the Parquet files present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory; expected a folder written by 'ran data'")
    configs = read_card_configs(folder)
    if not configs:
        raise ValueError(f"{folder}/README.md: missing or without a YAML 'configs:' block")
    declared = {Path(f["path"]) for c in configs for f in c.get("data_files", [])}
    present = {p.relative_to(folder) for p in folder.rglob("*.parquet")}
    if declared - present:
        missing = ", ".join(sorted(map(str, declared - present)))
        raise FileNotFoundError(f"{folder}: README.md names files that are not there: {missing}")
    if present - declared:
        extra = ", ".join(sorted(map(str, present - declared)))
        raise ValueError(f"{folder}: Parquet files not named in README.md: {extra}")
    return sorted(p for p in folder.rglob("*") if p.is_file())


def push_dataset_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload dataset built with ran data",
    api: Any = None,
) -> Any:
    """Upload a dataset folder to a Hub dataset repo as it is, so ``load_dataset(repo_id)`` reads it."""
    folder = Path(folder)
    check_dataset_folder(folder)
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
    )
