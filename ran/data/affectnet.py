"""AffectNet (manually annotated part) in the package's dataset form, 8 or 7 classes, with RAN's subsets."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from ran.data.columns import column_index
from ran.data.folder import labelled_split
from ran.data.subsets import attach_subsets, load_subset_lists
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


def _find(root: Path, name: str) -> Path:
    for folder in LIST_DIRS:
        candidate = root / folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{root}: no {name} (nor Manually_Annotated_file_lists/{name}); expected AffectNet's lists"
    )


def read_affectnet_csv(path: str | Path, num_classes: int) -> list[dict]:
    """Rows of training.csv / validation.csv with an expression below ``num_classes`` (8+ are not faces'
    expressions; 7-class drops contempt). Works with or without the header line."""
    path = Path(path)
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if first is None:
            raise ValueError(f"{path}: empty file; expected AffectNet rows ({', '.join(CSV_COLUMNS)})")
        if first[0].strip() == CSV_COLUMNS[0]:
            header, records, start = first, reader, 2
        else:
            header, records, start = list(CSV_COLUMNS), [first, *reader], 1
        index = column_index(header, CSV_COLUMNS, path)
        for number, row in enumerate(records, start):
            if not row:
                continue
            if len(row) < len(header):
                raise ValueError(f"{path} line {number}: {len(row)} columns; expected {len(header)}")
            try:
                expression = int(row[index["expression"]])
                box = [int(float(row[index[k]])) for k in ("face_x", "face_y", "face_width", "face_height")]
            except ValueError:
                found = [
                    row[index[k]] for k in ("expression", "face_x", "face_y", "face_width", "face_height")
                ]
                raise ValueError(
                    f"{path} line {number}: expression and face box must be integers, got {found}"
                ) from None
            if 0 <= expression < num_classes:
                rows.append(
                    {
                        "file": row[index["subDirectory_filePath"]].strip(),
                        "label": expression,
                        "box": box,
                        "line": number,
                    }
                )
    return rows


def _image_root(root: Path, rows: list[dict]) -> Path:
    for folder in IMAGE_DIRS:
        if rows and (root / folder / rows[0]["file"]).is_file():
            return root / folder
    raise FileNotFoundError(
        f"{root}: image {rows[0]['file'] if rows else '?'} not found under "
        f"{', '.join(f or '.' for f in IMAGE_DIRS)}"
    )


def _face_crop(data: bytes, box: list[int]) -> bytes:
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


def load_affectnet(
    root: str | Path,
    num_classes: int = 8,
    subset_lists: str | Path | bool | None = None,
    *,
    crop_faces: bool = True,
    progress: bool = True,
) -> datasets.DatasetDict:
    """AffectNet from training.csv / validation.csv and Manually_Annotated_Images.

    Splits: train (training.csv) and test (validation.csv, 500 images per class: AffectNet's test set is
    not public); validation repeats test, as in the RAN scripts. ``num_classes`` 8 keeps contempt, 7 drops
    it (from the subsets too). Subsets occlusion (683), pose30 (1,949 lines, 5 repeated) and pose45 (985
    lines, 2 repeated) come from the authors' lists.
    """
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 8 or 7, got {num_classes}")
    root = Path(root).expanduser()
    class_names = AFFECTNET_CLASSES[:num_classes]
    tables = {
        "train": read_affectnet_csv(_find(root, "training.csv"), num_classes),
        "test": read_affectnet_csv(_find(root, "validation.csv"), num_classes),
    }
    subsets = load_subset_lists("affectnet", subset_lists)
    image_root = _image_root(root, tables["test"] or tables["train"])
    splits = {}
    for split, rows in tables.items():
        csv_path = _find(root, "training.csv" if split == "train" else "validation.csv")
        images = []
        for row in tqdm(rows, desc=f"AffectNet {split}", disable=not progress):
            file = image_root / row["file"]
            if not file.is_file():
                raise FileNotFoundError(f"{csv_path} line {row['line']}: image {file} does not exist")
            data = file.read_bytes()
            images.append(_face_crop(data, row["box"]) if crop_faces else data)
        usage = "training" if split == "train" else "validation"
        splits[split] = labelled_split(
            images, [r["label"] for r in rows], [r["file"] for r in rows], [usage] * len(rows), class_names
        )
    result = datasets.DatasetDict(train=splits["train"], validation=splits["test"], test=splits["test"])
    return attach_subsets(result, subsets, keep=lambda entry: entry.label < num_classes)
