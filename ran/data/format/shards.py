"""The Parquet shards of a dataset folder, checked before ``datasets`` or pyarrow read them for real.

A truncated download, a disk that filled up mid-copy or a hand-edited folder leaves a shard that pyarrow
cannot read, a split with no rows or a label past the class list; ``datasets`` then fails deep inside
its builder with a page of traceback that names no file. Reading each shard's footer and its small label
column (not the images) finds the truncated files, the empty splits and the labels outside the class
list first; a shard whose footer reads but whose image pages are damaged is found only when the rows
are read, so a failed read is followed by a search for the shard that causes it. Either way the user
gets one line naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from ran.errors import UserError, one_line

T = TypeVar("T")

_MESSAGE_CHARS = 160  # how much of pyarrow's own message a one-line error quotes
_REBUILD = "rebuild the folder with 'ran data' or restore the file"


def _reason(err: BaseException) -> str:
    text = one_line(err, _MESSAGE_CHARS)
    return text if text == type(err).__name__ else f"{type(err).__name__}: {text}"


def damaged(file: Path, err: BaseException) -> UserError:
    """The one-line error for a shard pyarrow cannot read."""
    return UserError(
        f"{file}: not a readable Parquet file ({_reason(err)}); it is truncated or damaged: {_REBUILD}"
    )


def _label_error(file: Path, parquet: pq.ParquetFile) -> UserError | None:
    """A label outside the class list the shard's own features declare: ``datasets`` would refuse to
    cast it deep in its builder; here the shard, the row and its image name are named."""
    import datasets

    from ran.data.format.labelled import UNLABELLED, label_error

    schema = parquet.schema_arrow
    label = datasets.Features.from_arrow_schema(schema).get("label")
    if not isinstance(label, datasets.ClassLabel):
        return None
    labels = parquet.read(columns=["label"]).column("label").fill_null(UNLABELLED).to_numpy()

    def name_of(row: int) -> object:
        return (
            parquet.read(columns=["image_name"]).column(0)[row].as_py()
            if "image_name" in schema.names
            else None
        )

    return label_error(labels, label.num_classes, str(file), name_of)


def shard_rows(file: Path) -> int:
    """The rows of one shard, from its footer (a damaged footer is named in one line), after checking its
    labels (one small column) against the classes its features declare."""
    try:
        parquet = pq.ParquetFile(str(file))
        rows = int(parquet.metadata.num_rows)
        error = _label_error(file, parquet)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise damaged(file, err) from None
    if error is not None:
        raise error
    return rows


def check_shards(folder: Path, files: Mapping[str, Sequence[Path]]) -> dict[str, int]:
    """The rows of each split, after checking that every shard's footer and labels read, that every label
    fits the class list, and that no split is empty.

    ``ran data`` never writes an empty split (it leaves it out of the card), so a declared split with no
    rows is a damaged or hand-made folder: refused, naming the split and its files.
    """
    rows: dict[str, int] = {}
    for split, shards in files.items():
        rows[split] = sum(shard_rows(file) for file in shards)
        if not rows[split]:
            names = ", ".join(str(file.relative_to(folder)) for file in shards[:3])
            raise UserError(
                f"{folder}: split {split!r} is empty (0 rows in {names}); 'ran data' never writes an empty "
                "split: rebuild the folder, or remove the split from its README.md"
            )
    return rows


def find_damaged_shard(files: Sequence[Path]) -> UserError | None:
    """The error naming the first shard whose rows cannot be read (None when every shard reads)."""
    for file in files:
        try:
            parquet = pq.ParquetFile(str(file))
            for group in range(parquet.num_row_groups):
                parquet.read_row_group(group)
        except (pa.ArrowException, OSError, ValueError) as err:
            return damaged(file, err)
    return None


def reading_shards(files: Sequence[Path], read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``read(*args, **kwargs)``; a failure is reported as the shard of ``files`` that causes it, in one line.

    ``datasets`` wraps a pyarrow error in its own (``DatasetGenerationError``) without the file's name;
    after a failure each shard is read in turn, and a damaged one is named. A failure that no shard
    explains is raised as it was.
    """
    try:
        return read(*args, **kwargs)
    except Exception as err:  # datasets and pyarrow raise their own types for a damaged file
        culprit = find_damaged_shard(files)
        if culprit is not None:
            raise culprit from err
        from datasets.exceptions import DatasetGenerationError

        if isinstance(err, DatasetGenerationError) and files:  # each shard reads, but not with the others
            cause = err.__cause__ or err
            raise UserError(
                f"{Path(files[0]).parent.parent}: its shards do not read as one dataset "
                f"({one_line(cause, 200)}); rebuild the folder with 'ran data'"
            ) from err
        raise
