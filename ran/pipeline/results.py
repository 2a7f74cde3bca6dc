"""What prediction returns and writes: one :class:`InputResult` per image or video frame, one
:class:`FacePrediction` per face, the ``ran predict --json`` line (:meth:`InputResult.to_dict`) and the
per-frame CSV of a video."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ran.errors import UserError
from ran.files import atomic_path, check_not_a_broken_link
from ran.pipeline.inputs import is_video
from ran.reading import read_regular


@dataclass
class FacePrediction:
    """One face. Boxes are (x0, y0, x1, y1) in the source image's pixels; ``region_boxes`` are the boxes
    the model weighted (region 0 = the whole crop). ``crop`` is the face crop at picture size (at most
    ``ran.pipeline.pictures.PICTURE_SIDE``), kept only when asked for (``keep_crops=True``), for pictures;
    it is not part of :meth:`to_dict`. ``track`` is the face's id across a video's frames (None for photos;
    see ``ran.pipeline.video``)."""

    face_index: int
    box: list[float]
    crop_box: list[float]
    score: float | None
    label: str
    probabilities: dict[str, float]
    region_weights: list[float]
    region_boxes: list[list[float]]
    landmarks: list[list[float]] | None = None
    track: int | None = None
    crop: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The face as JSON-ready values (as in ``ran predict --json``); ``track`` only for video faces."""
        out = {
            "face_index": self.face_index,
            "box": list(self.box),
            "crop_box": list(self.crop_box),
            "score": self.score,
            "label": self.label,
            "probabilities": dict(self.probabilities),
            "region_weights": list(self.region_weights),
            "region_boxes": [list(b) for b in self.region_boxes],
            "landmarks": None if self.landmarks is None else [list(p) for p in self.landmarks],
        }
        if self.track is not None:
            out["track"] = self.track
        return out


@dataclass
class InputResult:
    """The faces found in one image or video frame, or why the input could not be used (``error``).

    ``warning`` is a note that did not stop the input (e.g. a photo over PIL's decompression-bomb warning
    threshold); ``image_size`` is [height, width]."""

    source: str
    faces: list[FacePrediction] = field(default_factory=list)
    error: str | None = None
    frame: int | None = None
    time_s: float | None = None
    image_size: list[int] | None = None
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``ran predict --json`` line of this input: ``frame`` / ``time_s`` only for video frames,
        ``error`` / ``warning`` only when set."""
        out: dict[str, Any] = {"source": self.source, "faces": [f.to_dict() for f in self.faces]}
        if self.error is not None:
            out["error"] = self.error
        if self.frame is not None:
            out["frame"] = self.frame
            out["time_s"] = self.time_s
        out["image_size"] = None if self.image_size is None else list(self.image_size)
        if self.warning is not None:
            out["warning"] = self.warning
        return out


# --- video CSVs ---------------------------------------------------------------------------------------


CSV_COLUMNS = ("frame", "time_s", "face", "x0", "y0", "x1", "y1", "score", "label")  # then the classes ...
CSV_HEADER_START = ",".join(CSV_COLUMNS).encode() + b","


def video_csv_paths(
    inputs: Iterable[str | Path], csv_dir: str | Path, overwrite: bool = False
) -> dict[str, Path]:
    """Where the per-frame CSV of each video among ``inputs`` goes (``csv_dir/<video stem>.csv``), checked
    before anything runs: two videos with one name, or an existing CSV without ``overwrite``, are refused."""
    videos = [Path(p) for p in inputs if is_video(p) and Path(p).is_file()]
    paths = {str(v): Path(csv_dir) / f"{v.stem}.csv" for v in videos}
    if len(set(paths.values())) < len(paths):
        raise UserError("two videos share a file name; predict them in separate runs or rename one")
    if videos:
        check_not_a_broken_link(Path(csv_dir), f"--csv-dir {csv_dir}")
    if videos and Path(csv_dir).exists() and not Path(csv_dir).is_dir():
        raise NotADirectoryError(f"--csv-dir {csv_dir}: not a folder; expected a folder for the CSV files")
    existing = [p for p in paths.values() if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it or choose --csv-dir")
    theirs = [p for p in existing if not _written_csv(p)]
    if theirs:
        raise FileExistsError(f"{theirs[0]}: not a CSV ran predict wrote; refusing to replace it")
    return paths


def _written_csv(path: Path) -> bool:
    """Whether ``path`` is a per-frame CSV this package wrote (a regular file starting with its header)."""
    try:
        return read_regular(path, len(CSV_HEADER_START)) == CSV_HEADER_START
    except OSError:
        return False


def write_video_csv(
    results: Sequence[InputResult], path: str | Path, names: Sequence[str], *, new: bool = False
) -> Path:
    """Per-frame CSV of one video's results: frame, time_s, face, box, score, label, one probability
    column per class, one weight column per region, then the face's track id across frames. Frames
    without a face get a row with empty face fields. Written atomically, with the process umask's
    permissions; ``new``: never over a file that appeared meanwhile (``ran.files.atomic_path``)."""
    num_regions = max((len(f.region_weights) for r in results for f in r.faces), default=0)
    header = list(CSV_COLUMNS)
    header += [f"prob_{n}" for n in names] + [f"weight_region{k}" for k in range(num_regions)] + ["track"]
    with atomic_path(path, new=new) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in results:
            if not r.faces:
                writer.writerow([r.frame, r.time_s] + [""] * (len(header) - 2))
            for f in r.faces:
                writer.writerow(
                    [r.frame, r.time_s, f.face_index, *f.box, "" if f.score is None else f.score, f.label]
                    + [f.probabilities[n] for n in names]
                    + f.region_weights
                    + [""] * (num_regions - len(f.region_weights))
                    + ["" if f.track is None else f.track]
                )
    return Path(path)


__all__ = ["FacePrediction", "InputResult", "video_csv_paths", "write_video_csv"]
