"""What a local dataset folder's card (README.md) declares, checked before anything is read.

The card is data, never instructions: its YAML front matter is read as plain data (``ran.safeyaml``: no
aliases, a bounded size) and must be
a mapping whose ``configs:`` list names, per config and split, Parquet files inside the folder. An
absolute path, a ``..``, a URL or a symlink that leads out of the folder is refused (a downloaded folder
must not make evaluation score, or training read, someone else's files); each named shard must exist,
its footer must read and no split may be empty (``ran.data.format.shards``). Every fault is one line naming
README.md (and the YAML line where there is one) or the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ran.errors import UserError
from ran.safeyaml import load_yaml

DEFAULT_CONFIG = "default"
DEFAULT_SPLITS: tuple[str, ...] = ("train", "validation", "test")  # the default config's
_MAX_NAME = 100
MAX_CARD_BYTES = 4 << 20  # the cards ran data writes are a few kB


def _front_matter(card: Path) -> Any:
    """The YAML between the card's ``---`` lines (None when there is none), as plain data."""
    if card.stat().st_size > MAX_CARD_BYTES:
        raise UserError(f"{card}: larger than {MAX_CARD_BYTES:,} bytes; a dataset card is a small text file")
    text = card.read_text(encoding="utf-8")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if not match:
        return None
    return load_yaml(match.group(1), f"{card} front matter", first_line=2)  # line 1 is the opening ---


def read_card_configs(folder: str | Path) -> list[dict[str, Any]]:
    """The ``configs:`` entries of a local dataset folder's README.md (empty when there is none).

    The card is data: front matter that is not a mapping, or ``configs:`` that is not a list of
    mappings, is refused in one line naming README.md.
    """
    card = Path(folder) / "README.md"
    if not card.is_file():
        return []
    meta = _front_matter(card)
    if meta is None:
        return []
    if not isinstance(meta, dict):
        raise UserError(
            f"{card}: the front matter is a YAML {type(meta).__name__}, expected a mapping with a "
            "'configs:' block"
        )
    configs = meta.get("configs") or []
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise UserError(f"{card}: 'configs:' must be a list of mappings (config_name, data_files)")
    return configs


_NAME = re.compile(r"\w+(\.\w+)*")


def _name(card: Path, value: Any, what: str) -> str:
    """A config or split name from the card: a short string (an error never quotes a long one)."""
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_NAME:
        kind = (
            f"a string of {len(value)} characters"
            if isinstance(value, str)
            else f"a YAML {type(value).__name__}"
        )
        raise UserError(f"{card}: a {what} is {kind}, expected a name of 1..{_MAX_NAME} characters")
    if not _NAME.fullmatch(value):  # datasets' rule for split names; names become file names too
        raise UserError(
            f"{card}: {what} {_short(value)!r}: expected letters, digits and '_' (parts joined by '.')"
        )
    return value


def _config_name(card: Path, config: Mapping[str, Any]) -> str:
    return _name(card, config.get("config_name", DEFAULT_CONFIG), "config_name")


def _data_files(card: Path, name: str, config: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """(split, path patterns) of one card config; ``data_files`` may be a string, a list, or split entries."""
    entries = config.get("data_files") or []
    if isinstance(entries, str | dict):
        entries = [entries]
    if not isinstance(entries, list):
        raise UserError(f"{card}: data_files of config {name!r} is a YAML {type(entries).__name__}")
    result = []
    for entry in entries:
        split, paths = (
            ("train", entry)
            if not isinstance(entry, dict)
            else (entry.get("split", "train"), entry.get("path"))
        )
        paths = [paths] if isinstance(paths, str) else paths or []
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise UserError(
                f"{card}: a data_files entry of config {name!r} is not a split name with a path or a list "
                "of paths"
            )
        result.append((_name(card, split, "split name"), paths))
    return result


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _inside(folder: Path, card: Path, pattern: str, where: str) -> list[Path]:
    """The files a card path names, refused when the path (or a symlink on the way) leaves the folder.

    A card written by 'ran data' names files under its own folder; an absolute path, a ``..`` or a URL
    would let a downloaded folder make evaluation score (or training read) someone else's files.
    """
    entry = PurePosixPath(pattern.replace("\\", "/"))
    if (
        not pattern
        or entry.is_absolute()
        or PureWindowsPath(pattern).drive
        or ".." in entry.parts
        or ":" in pattern
    ):
        raise UserError(
            f"{card}: path {_short(pattern)!r} ({where}) leaves the folder; expected a relative path inside "
            "it, such as data/test.parquet"
        )
    matched = sorted(folder.glob(pattern)) if any(c in pattern for c in "*?[") else [folder / pattern]
    missing = [file for file in matched if not file.is_file()] if matched else [folder / pattern]
    if missing:
        raise FileNotFoundError(
            f"{missing[0]}: missing; {card} lists it for {where} (rebuild the folder with 'ran data', or "
            "restore the file)"
        )
    root = folder.resolve()
    for file in matched:
        if not file.resolve().is_relative_to(root):
            raise UserError(
                f"{card}: path {_short(pattern)!r} ({where}) leads out of the folder through a symlink "
                f"({file.relative_to(folder)}); expected files inside it"
            )
    return matched


def declared_configs(folder: str | Path) -> dict[str, dict[str, list[Path]]]:
    """``{config: {split: Parquet files}}`` as a local folder's card declares them, after checking that
    the card is a mapping, that each path stays inside the folder and exists, and that each shard's
    footer reads and no split is empty (``ran.data.format.shards``): a fault is named in one line, before
    ``datasets`` is asked."""
    from ran.data.format.shards import check_shards

    folder = Path(folder)
    card = folder / "README.md"
    configs = read_card_configs(folder)
    if not configs:
        from ran.modelio.folder import WEIGHTS_NAME

        if (folder / WEIGHTS_NAME).is_file():
            raise UserError(f"{folder}: a model folder; expected a dataset folder ('ran data' writes one)")
        raise UserError(f"{card}: missing or without a YAML 'configs:' block")
    result: dict[str, dict[str, list[Path]]] = {}
    for config in configs:
        name = _config_name(card, config)
        if name in result or name in DEFAULT_SPLITS:  # it would stand in for that config or split
            raise UserError(f"{card}: config {name!r}: the name of a split or of another config")
        splits: dict[str, list[Path]] = {}
        for split, patterns in _data_files(card, name, config):
            where = f"split {split!r} of config {name!r}"
            splits[split] = [file for pattern in patterns for file in _inside(folder, card, pattern, where)]
            check_shards(folder, {split if name == DEFAULT_CONFIG else name: splits[split]})
        result[name] = splits
    return result


def declared_files(folder: str | Path) -> dict[str, list[Path]]:
    """The Parquet files of each split a local folder's card declares (subsets under their config name),
    checked as :func:`declared_configs` says."""
    result: dict[str, list[Path]] = {}
    for name, splits in declared_configs(folder).items():
        for split, files in splits.items():
            result[split if name == DEFAULT_CONFIG else name] = files
    return result
