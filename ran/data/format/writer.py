"""Writing a dataset folder as it is built: Parquet shards in row groups, so memory does not grow with it.

Every ``ran data`` builder hands its rows here a batch at a time. Each split becomes Parquet shards of at
most ``max_shard_bytes`` (500 MB, the Hub's convention, by default), so one machine never holds a whole
split and each process of a multi-node run can read its own shards
(``ran.data.format.folder.load_split_shards``).
A split that fits in one shard keeps the single-file name (``data/train.parquet``) that folders written
before sharding use; larger ones become ``data/train-00000-of-00003.parquet`` and so on. The folder is
built beside OUT with ``ran.files.staging_dir`` and swapped in only when complete, while the build holds
OUT's lock (``ran.locks``, beside OUT so that it outlives the swap). The folder carries the marker
``.ran-dataset.json``; ``--overwrite`` replaces only a folder with that marker, an empty one, or one written
before markers existed (its README.md is this writer's card and the rest is Parquet files in folders).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm.auto import tqdm

from ran.data.format.folder import (
    DATASET,
    DEFAULT_CONFIG,
    DEFAULT_SPLITS,
    check_split_name,
    config_of,
    read_folder_in_memory,
)
from ran.data.format.parallel import batched, map_in_order
from ran.errors import Note, UserError
from ran.files import staging_dir
from ran.locks import output_lock
from ran.reading import read_regular

T = TypeVar("T")

DEFAULT_MAX_SHARD_BYTES = 500_000_000  # what push_to_hub calls "500MB"
ROWS_PER_GROUP = 100  # datasets' row-group size for image columns: random access stays cheap
SCRATCH_DIR = ".scratch"
CARD_TITLE = "# Facial expression dataset (RAN format)"


def parse_shard_size(value: str | int) -> int:
    """A shard size given as bytes or with a unit ('500MB', '2GB', '64KB'), in bytes."""
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        size = convert_file_size_to_int(value)
    except (ValueError, TypeError):
        size = 0
    if not isinstance(size, int) or size <= 0:
        raise UserError(f"max shard size {value!r}: expected a positive size such as 500MB, 2GB or 65536")
    return size


class SplitWriter:
    """The rows of one split, appended in order and written as Parquet shards.

    Rows listed in ``keep_rows`` are also copied to a scratch file, one per record batch, so that subsets
    of the split can later be written in any order without reading the whole split back.
    """

    def __init__(
        self,
        root: Path,
        name: str,
        features: datasets.Features,
        max_shard_bytes: int,
        keep_rows: Collection[int] = (),
    ) -> None:
        self.name, self.features = name, features
        self.schema = features.arrow_schema
        self.folder = root / ("data" if name in DEFAULT_SPLITS else name)
        self.stem = name if name in DEFAULT_SPLITS else "test"
        self.max_shard_bytes = max_shard_bytes
        self.num_rows = 0
        self.files: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._keep = frozenset(keep_rows)
        self._kept: dict[int, int] = {}  # row -> record batch in the scratch file
        self._scratch_path = root / SCRATCH_DIR / f"{name}.arrow"
        self._scratch: pa.ipc.RecordBatchFileWriter | None = None

    def write(self, columns: Mapping[str, Sequence[Any]]) -> None:
        """Append rows given as columns (images as ``{'bytes': ..., 'path': None}``)."""
        self.write_table(
            pa.Table.from_pydict({name: columns[name] for name in self.schema.names}, self.schema)
        )

    def write_table(self, table: pa.Table) -> None:
        """Append an Arrow table with this split's columns, one row group per ``ROWS_PER_GROUP`` rows."""
        table = table.select(self.schema.names)
        if not table.schema.equals(self.schema, check_metadata=True):
            table = table.cast(self.schema)
        for start in range(0, table.num_rows, ROWS_PER_GROUP):
            self._write_group(table.slice(start, ROWS_PER_GROUP))

    def _write_group(self, group: pa.Table) -> None:
        if self._writer is not None and self._shard_bytes + group.nbytes > self.max_shard_bytes:
            self._close_shard()
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.files.append(self.folder / f".{self.stem}-{len(self.files):05d}.parquet")
            self._writer = pq.ParquetWriter(self.files[-1], self.schema)
            self._shard_bytes = 0
        self._writer.write_table(group, row_group_size=group.num_rows)
        self._shard_bytes += group.nbytes
        self._copy_kept(group)
        self.num_rows += group.num_rows

    def _copy_kept(self, group: pa.Table) -> None:
        if not self._keep:
            return
        for offset in range(group.num_rows):
            row = self.num_rows + offset
            if row not in self._keep:
                continue
            if self._scratch is None:
                self._scratch_path.parent.mkdir(exist_ok=True)
                self._scratch = pa.ipc.new_file(str(self._scratch_path), self.schema)
            self._kept[row] = len(self._kept)
            self._scratch.write_table(group.slice(offset, 1))

    def kept_rows(self, rows: Sequence[int]) -> Iterator[pa.Table]:
        """The kept rows ``rows`` (in that order, repeats allowed), ``ROWS_PER_GROUP`` at a time."""
        missing = [row for row in rows if row not in self._kept]
        if missing:
            raise UserError(f"split {self.name!r}: rows {missing[:5]} were not kept for subsets")
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
        if not rows:
            return
        with pa.OSFile(str(self._scratch_path)) as source:  # read, not mapped: only the rows asked for
            reader = pa.ipc.open_file(source)
            for start in range(0, len(rows), ROWS_PER_GROUP):
                chunk = rows[start : start + ROWS_PER_GROUP]
                yield pa.Table.from_batches([reader.get_batch(self._kept[row]) for row in chunk], self.schema)

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> list[str]:
        """Finish the shards and give them their final names; returns their paths relative to the root."""
        self._close_shard()
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
        count = len(self.files)
        final = []
        for index, file in enumerate(self.files):
            name = f"{self.stem}.parquet" if count == 1 else f"{self.stem}-{index:05d}-of-{count:05d}.parquet"
            file.rename(file.with_name(name))
            final.append(f"{self.folder.name}/{name}")
        self.files = [self.folder.parent / path for path in final]
        return final


class FolderWriter:
    """The splits of one dataset folder being built (see :func:`dataset_folder_writer`)."""

    def __init__(self, root: Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
        if max_shard_bytes <= 0:
            raise UserError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        self.root = root
        self.max_shard_bytes = max_shard_bytes
        self.splits: dict[str, SplitWriter] = {}
        self.written: dict[str, int] = {}  # rows per split, once finished (empty splits are not written)

    def split(self, name: str, features: datasets.Features, keep_rows: Collection[int] = ()) -> SplitWriter:
        """A new split (train / validation / test, or a subset name: a config of its own)."""
        check_split_name(name)
        if name in self.splits:
            raise UserError(f"split {name!r} is written twice")
        self.splits[name] = SplitWriter(self.root, name, features, self.max_shard_bytes, keep_rows)
        return self.splits[name]

    def subset(
        self,
        name: str,
        test: SplitWriter,
        rows: Sequence[int],
        extra: Mapping[str, tuple[datasets.Value, Sequence[Any]]] | None = None,
    ) -> SplitWriter:
        """A subset split: rows of ``test`` (kept for it) in the given order, plus its own columns."""
        extra = dict(extra or {})
        features = datasets.Features(
            {**test.features, **{column: feat for column, (feat, _) in extra.items()}}
        )
        writer = self.split(name, features)
        start = 0
        for table in test.kept_rows(rows):
            for column, (feature, values) in extra.items():
                chunk = values[start : start + table.num_rows]
                table = table.append_column(column, pa.array(chunk, type=feature.pa_type))
            writer.write_table(table)
            start += table.num_rows
        return writer

    def counts(self) -> dict[str, int]:
        return {name: split.num_rows for name, split in self.splits.items()}

    def finish(self, description: str) -> dict[str, int]:
        """Close every split and write the README card; returns the rows of each split written."""
        layout = {name: split.close() for name, split in self.splits.items()}
        shutil.rmtree(self.root / SCRATCH_DIR, ignore_errors=True)
        empty = [name for name, split in self.splits.items() if split.num_rows == 0]
        if empty:  # datasets cannot load a split with no rows, so an empty one gets no config
            warnings.warn(f"not writing empty split(s) {', '.join(empty)}", Note, stacklevel=3)
        written = {name: split for name, split in self.splits.items() if split.num_rows}
        if not written:
            raise UserError("no rows to write: every split is empty")
        card = dataset_card({name: layout[name] for name in written}, written, description)
        (self.root / "README.md").write_text(card, encoding="utf-8")
        self.written = {name: split.num_rows for name, split in written.items()}
        return self.written

    def abort(self) -> None:
        """Close open files after a failure (the staging folder is then deleted)."""
        for split in self.splits.values():
            try:
                split.close()
            except Exception:  # noqa: BLE001 - already failing; the folder goes away anyway
                pass


@contextmanager
def dataset_folder_writer(
    out: str | Path,
    *,
    description: str = "",
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Iterator[FolderWriter]:
    """Build a dataset folder at ``out``: add splits to the yielded writer; the folder appears, complete,
    when the block ends, and nothing appears when it fails (``ran.files.staging_dir``). An existing
    ``out`` is refused unless ``overwrite`` and it is a dataset folder (:func:`is_dataset_folder`); a
    second build of ``out`` is refused while this one runs; leftovers of killed builds are removed."""
    with (
        output_lock(out, "ran data", inside=False),
        staging_dir(out, overwrite=overwrite, kind=DATASET, recognise=is_dataset_folder) as root,
    ):
        writer = FolderWriter(root, max_shard_bytes)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.finish(description)


def is_dataset_folder(folder: Path) -> bool:
    """A dataset folder written before markers existed: this writer's card and Parquet files in folders,
    nothing else (``--overwrite`` may replace it; a folder with anything more is the user's)."""
    try:
        card = (read_regular(folder / "README.md", 1 << 16) or b"").decode("utf-8", errors="replace")
    except OSError:
        return False
    if f"\n{CARD_TITLE}\n" not in card:
        return False
    for entry in folder.iterdir():
        if entry.name == "README.md" and entry.is_file():
            continue
        if not entry.is_dir() or entry.is_symlink():
            return False
        if not all(file.suffix == ".parquet" and file.is_file() for file in entry.iterdir()):
            return False
    return True


def write_images(
    writers: Sequence[SplitWriter],
    columns: Callable[[int, list[T], list[bytes]], Mapping[str, Sequence[Any]]],
    tasks: Iterable[T],
    load: Callable[[list[T]], list[bytes]],
    *,
    total: int | None = None,
    num_proc: int = 1,
    progress: bool = True,
    desc: str = "images",
) -> None:
    """Load images a row group at a time (``load`` over batches of ``tasks``, in ``num_proc`` processes)
    and append them, with the columns ``columns(first_row, tasks, images)`` gives, to every writer in
    ``writers`` (RAF-DB and AffectNet write the same rows as validation and test). ``tasks`` is read
    lazily, so it may stream from a file."""
    sent: deque[list[T]] = deque()  # batches handed to the workers, whose results come back in order

    def batches() -> Iterator[list[T]]:
        for batch in batched(tasks, ROWS_PER_GROUP):
            sent.append(batch)
            yield batch

    start = 0
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for images in map_in_order(load, batches(), num_proc):
            rows = columns(start, sent.popleft(), images)
            for writer in writers:
                writer.write(rows)
            start += len(images)
            bar.update(len(images))


def built_in_memory(write: Callable[[Path], Any]) -> datasets.DatasetDict:
    """What ``write(folder)`` builds, read back into memory: the DatasetDict form of a streaming builder,
    for tests and small sets (the temporary folder is gone when this returns)."""
    with tempfile.TemporaryDirectory(prefix="ran-data-") as scratch:
        folder = Path(scratch) / "dataset"
        write(folder)
        return read_folder_in_memory(folder)


def _config_layout(layout: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    """The README ``configs:`` entries: default train/validation/test, then one config per subset."""

    def entry(split: str, files: list[str]) -> dict[str, Any]:
        return {"split": split, "path": files[0] if len(files) == 1 else files}

    default = [entry(name, layout[name]) for name in DEFAULT_SPLITS if name in layout]
    configs: list[dict[str, Any]] = []
    if default:
        configs.append({"config_name": DEFAULT_CONFIG, "default": True, "data_files": default})
    for name, files in layout.items():
        if name not in DEFAULT_SPLITS:
            configs.append({"config_name": name, "data_files": [entry("test", files)]})
    return configs


def dataset_card(layout: Mapping[str, list[str]], splits: Mapping[str, SplitWriter], description: str) -> str:
    """README.md: the YAML header ``datasets`` reads, and a short human-readable summary."""
    header = yaml.safe_dump({"configs": _config_layout(layout)}, sort_keys=False)
    lines = ["---", header.rstrip("\n"), "---", "", CARD_TITLE, ""]
    if description:
        lines += [description.strip(), ""]
    lines += [
        "Load it with `datasets.load_dataset(PATH_OR_REPO)` (train / validation / test) or",
        "`datasets.load_dataset(PATH_OR_REPO, '<subset>')` for one evaluation subset (its `test` split),",
        "or all at once with `ran.data.load_dataset_folder(PATH_OR_REPO)`.",
        "",
        "| config | split | rows | files |",
        "|---|---|---|---|",
    ]
    for name, split in splits.items():
        config, split_name = config_of(name)
        lines.append(f"| {config} | {split_name} | {split.num_rows} | {len(layout[name])} |")
    first = next(iter(splits.values())).features
    lines += ["", "Features: " + ", ".join(f"`{k}`" for k in first), ""]
    label = first.get("label")
    if isinstance(label, datasets.ClassLabel):
        lines += ["Classes: " + ", ".join(f"{i} {n}" for i, n in enumerate(label.names)), ""]
    return "\n".join(lines)


def write_dataset_folder(
    splits: datasets.DatasetDict,
    out: str | Path,
    *,
    description: str = "",
    overwrite: bool = False,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write in-memory ``splits`` as a dataset folder (Parquet shards plus a dataset card), atomically.

    Splits named train / validation / test form the ``default`` config; every other split becomes a config
    of its own holding one ``test`` split. Builders of large datasets stream into
    :func:`ran.data.format.writer.dataset_folder_writer` instead of building a DatasetDict first.
    """
    from datasets.table import embed_table_storage

    out = Path(out).expanduser().absolute()
    if not splits:
        raise UserError("write_dataset_folder: no splits to write")
    for name in splits:
        check_split_name(name)
    with dataset_folder_writer(
        out,
        description=description,
        overwrite=overwrite,
        max_shard_bytes=max_shard_bytes or DEFAULT_MAX_SHARD_BYTES,
    ) as writer:
        for name, split in splits.items():
            target = writer.split(name, split.features)
            for table in split.with_format("arrow").iter(batch_size=ROWS_PER_GROUP):
                target.write_table(embed_table_storage(table))  # files given by path are copied in
    return out
