"""AffectNet (manually annotated part) in the package's dataset form, 8 or 7 classes, with RAN's subsets.

training.csv is streamed: its rows (about 290,000) are read, loaded and written a row group at a time,
never all held at once; only validation.csv (4,000 rows) is kept whole, to resolve the subset lists.
"""

from __future__ import annotations

import functools
import io
import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import datasets

from ran.data.format.folder import LabelledRows, dataset_features, labelled_columns
from ran.data.format.images import SourceImage, read_source_image
from ran.data.format.parallel import check_num_proc
from ran.data.format.writer import (
    DEFAULT_MAX_SHARD_BYTES,
    built_in_memory,
    dataset_folder_writer,
    write_images,
)
from ran.data.sources.columns import column_index, csv_rows
from ran.data.sources.subsets import load_subset_lists, resolve_subsets, subset_test_rows, write_subsets
from ran.errors import UserError
from ran.labels import AFFECTNET_CLASSES

CSV_COLUMNS: tuple[str, ...] = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
LIST_DIRS: tuple[str, ...] = ("", "Manually_Annotated_file_lists")
IMAGE_DIRS: tuple[str, ...] = (
    "Manually_Annotated_Images",
    "Manually_Annotated/Manually_Annotated_Images",
    "",
)


class AffectNetRow(NamedTuple):
    file: str  # subDirectory_filePath
    label: int
    box: tuple[int, int, int, int]  # face x, y, width, height
    line: int


class ImageTask(NamedTuple):
    """What a worker needs to produce one image: the file (with its folder and the CSV line naming it)
    and the face box to cut (None: whole image)."""

    image: SourceImage
    box: tuple[int, int, int, int] | None


def _find(root: Path, name: str) -> Path:
    for folder in LIST_DIRS:
        candidate = root / folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{root}: no {name} (nor Manually_Annotated_file_lists/{name}); expected AffectNet's lists"
    )


def _parse_row(row: Sequence[str], index: dict[str, int], path: Path, number: int) -> AffectNetRow:
    if len(row) < len(index):
        raise UserError(f"{path} line {number}: {len(row)} columns; expected {len(index)}")
    try:
        expression = int(row[index["expression"]])
        x, y, w, h = (int(float(row[index[k]])) for k in ("face_x", "face_y", "face_width", "face_height"))
    except (ValueError, OverflowError):  # OverflowError: an infinite box
        found = [row[index[k]][:20] for k in ("expression", "face_x", "face_y", "face_width", "face_height")]
        raise UserError(
            f"{path} line {number}: expression and face box must be integers, got {found}"
        ) from None
    return AffectNetRow(row[index["subDirectory_filePath"]].strip(), expression, (x, y, w, h), number)


def iter_affectnet_csv(path: str | Path, num_classes: int) -> Iterator[AffectNetRow]:
    """Rows of training.csv / validation.csv with an expression below ``num_classes`` (8+ are not faces'
    expressions; 7-class drops contempt), read lazily. Works with or without the header line."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv_rows(handle, path)
        first = next(reader, None)
        if first is None:
            raise UserError(f"{path}: empty file; expected AffectNet rows ({', '.join(CSV_COLUMNS)})")
        if first[0].strip() == CSV_COLUMNS[0]:
            header, start, pending = first, 2, []
        else:
            header, start, pending = list(CSV_COLUMNS), 1, [first]
        index = column_index(header, CSV_COLUMNS, path)
        for number, row in enumerate(itertools.chain(pending, reader), start):
            if not row:
                continue
            parsed = _parse_row(row, index, path, number)
            if 0 <= parsed.label < num_classes:
                yield parsed


def read_affectnet_csv(path: str | Path, num_classes: int) -> list[AffectNetRow]:
    """Every kept row of one AffectNet list (see :func:`iter_affectnet_csv`)."""
    return list(iter_affectnet_csv(path, num_classes))


def _image_root(root: Path, first: AffectNetRow | None) -> Path:
    for folder in IMAGE_DIRS:
        if first is not None and (root / folder / first.file).is_file():
            return root / folder
    raise FileNotFoundError(
        f"{root}: image {first.file if first else '?'} not found under "
        f"{', '.join(f or '.' for f in IMAGE_DIRS)}"
    )


def _face_crop(data: bytes, box: tuple[int, int, int, int]) -> bytes:
    """The annotated face box (clamped to the image) as JPEG; the regions are fractions of this face."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        x, y, width, height = box
        left, top = max(0, x), max(0, y)
        right, bottom = min(image.width, x + width), min(image.height, y + height)
        if right - left < 2 or bottom - top < 2:
            return data
        out = io.BytesIO()
        image.convert("RGB").crop((left, top, right, bottom)).save(out, format="JPEG", quality=95)
        return out.getvalue()


def load_images(tasks: Sequence[ImageTask]) -> list[bytes]:
    """Worker: each task's file, cut to its face box when it has one."""
    images = []
    for task in tasks:
        data = read_source_image(task.image)
        try:
            images.append(data if task.box is None else _face_crop(data, task.box))
        except (OSError, ValueError) as err:  # PIL: truncated or damaged pixels, found only when decoded
            image = task.image
            raise UserError(f"{image.where}: image {image.file} cannot be decoded ({err})") from None
    return images


def _task(row: AffectNetRow, image_root: Path, csv_path: Path, crop: bool) -> tuple[ImageTask, AffectNetRow]:
    image = SourceImage(str(image_root / row.file), str(image_root), f"{csv_path} line {row.line}")
    return ImageTask(image, row.box if crop else None), row


def _streamed_columns(num_classes: int, usage: str) -> Callable[[int, list, list[bytes]], dict]:
    """Columns of a streamed batch: the rows travel with their tasks (training.csv is not held)."""

    def columns(_start: int, tasks: list[tuple[ImageTask, AffectNetRow]], images: list[bytes]) -> dict:
        rows = [row for _, row in tasks]
        return labelled_columns(
            images, [r.label for r in rows], [r.file for r in rows], [usage] * len(rows), num_classes
        )

    return columns


def _load_task_batch(tasks: Sequence[tuple[ImageTask, AffectNetRow]]) -> list[bytes]:
    return load_images([task for task, _ in tasks])


def write_affectnet(
    out: str | Path,
    root: str | Path,
    num_classes: int = 8,
    subset_lists: str | Path | bool | None = None,
    *,
    crop_faces: bool = True,
    overwrite: bool = False,
    num_proc: int = 1,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    description: str | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Build AffectNet from training.csv / validation.csv and Manually_Annotated_Images into ``out``.

    Splits: train (training.csv) and test (validation.csv, 500 images per class: AffectNet's test set is
    not public); validation repeats test, as in the RAN scripts. ``num_classes`` 8 keeps contempt, 7 drops
    it (from the subsets too). Subsets occlusion (683), pose30 (1,949 lines, 5 repeated) and pose45 (985
    lines, 2 repeated) come from the authors' lists. ``crop_faces`` cuts each image to its face box.
    Images are read (and cut) ``num_proc`` processes at a time; memory does not grow with the dataset.
    """
    if num_classes not in (7, 8):
        raise UserError(f"num_classes must be 8 or 7, got {num_classes}")
    check_num_proc(num_proc)
    root = Path(root).expanduser()
    class_names = AFFECTNET_CLASSES[:num_classes]
    train_csv, test_csv = _find(root, "training.csv"), _find(root, "validation.csv")
    train_count = sum(1 for _ in iter_affectnet_csv(train_csv, num_classes))  # checks it before the long part
    test_rows = read_affectnet_csv(test_csv, num_classes)
    subsets = load_subset_lists("affectnet", subset_lists)
    test = LabelledRows([r.file for r in test_rows], [r.label for r in test_rows], "validation", num_classes)
    resolved = resolve_subsets(
        test.names, test.labels, class_names, subsets, keep=lambda entry: entry.label < num_classes
    )
    first = test_rows[0] if test_rows else next(iter_affectnet_csv(train_csv, num_classes), None)
    image_root = _image_root(root, first)
    features = dataset_features(class_names)
    if description is None:
        description = (
            f"AffectNet manually annotated images (Mollahosseini et al., 2017), {num_classes} classes; "
            "test = the official validation set (validation repeats it). Subsets from the RAN authors' lists."
        )
    options: dict[str, Any] = {"num_proc": num_proc, "progress": progress}
    with dataset_folder_writer(
        out, description=description, overwrite=overwrite, max_shard_bytes=max_shard_bytes
    ) as folder:
        train = folder.split("train", features)
        validation = folder.split("validation", features)
        test_writer = folder.split("test", features, subset_test_rows(resolved))
        train_rows = iter_affectnet_csv(train_csv, num_classes)
        train_tasks = (_task(row, image_root, train_csv, crop_faces) for row in train_rows)
        columns = _streamed_columns(num_classes, "training")
        write_images(
            [train],
            columns,
            train_tasks,
            _load_task_batch,
            total=train_count,
            desc="AffectNet train",
            **options,
        )
        test_tasks = [_task(row, image_root, test_csv, crop_faces) for row in test_rows]
        write_images(
            [validation, test_writer],
            test.columns,
            test_tasks,
            _load_task_batch,
            total=len(test_tasks),
            desc="AffectNet test",
            **options,
        )
        write_subsets(folder, test_writer, resolved)
    return folder.written


def load_affectnet(
    root: str | Path,
    num_classes: int = 8,
    subset_lists: str | Path | bool | None = None,
    *,
    crop_faces: bool = True,
    progress: bool = True,
) -> datasets.DatasetDict:
    """AffectNet as an in-memory DatasetDict (:func:`write_affectnet` into a temporary folder, read back)."""
    write = functools.partial(
        write_affectnet,
        root=root,
        num_classes=num_classes,
        subset_lists=subset_lists,
        crop_faces=crop_faces,
        progress=progress,
    )
    return built_in_memory(write)
