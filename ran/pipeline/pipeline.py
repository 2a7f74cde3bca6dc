"""Expression prediction on real photos and videos: find faces, crop them, run a RAN, report per face.

``ran.predict(inputs, model=...)`` takes files, folders (searched recursively for images), videos,
PIL images, numpy arrays and tensors and returns one ``InputResult`` per image (per sampled frame for
videos) with one ``FacePrediction`` per face: the box, the label, the class probabilities and the
per-region attention weights with the region boxes. ``ran predict`` is the command line around it.

Faces are fed as the model's recorded data config says (``ran.transforms.transform_for``: size,
grayscale or RGB, mean/std); ``color='rgb'|'gray'`` overrides the colour mode.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ran.devices import inference_model
from ran.pipeline.faces import Face, FaceDetector, crop_face, get_detector, landmark_boxes
from ran.loading import class_names, load_model
from ran.transforms import FaceTransform, transform_for

_logger = logging.getLogger(__name__)

DEFAULT_MODEL = "ran-fer/ran_resnet18.ferplus"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class InputError(Exception):
    """One input could not be used (unreadable, unsupported, undecodable); the batch goes on."""


@dataclass
class FacePrediction:
    """One face. Boxes are (x0, y0, x1, y1) in the source image's pixels."""

    face_index: int
    box: list[float]
    crop_box: list[float]
    score: float | None
    label: str
    probabilities: dict[str, float]
    region_weights: list[float]
    region_boxes: list[list[float]]
    landmarks: list[list[float]] | None = None


@dataclass
class InputResult:
    """The faces found in one image or video frame, or why the input could not be used."""

    source: str
    faces: list[FacePrediction] = field(default_factory=list)
    error: str | None = None
    frame: int | None = None
    time_s: float | None = None
    image_size: list[int] | None = None  # [height, width]

    @property
    def message(self) -> str | None:
        """What to tell the user about this input (an error, or that no face was found)."""
        if self.error:
            return self.error
        if not self.faces:
            return "no face found"
        return None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.frame is None:
            out.pop("frame")
            out.pop("time_s")
        if out["error"] is None:
            out.pop("error")
        return out


# --- model -------------------------------------------------------------------------------------------


def resolve_model(model: str | Path | nn.Module | None) -> nn.Module:
    """An nn.Module as is; a string through ``ran.loading.load_model`` (model folder, training
    checkpoint, Hub id, or a registered name with random weights, with a warning)."""
    loaded = model if isinstance(model, nn.Module) else load_model(str(model or DEFAULT_MODEL))
    if not hasattr(loaded, "forward_with_attention"):
        raise ValueError(
            "model: expected a RAN (RegionAttentionNet with forward_with_attention), "
            f"got {type(loaded).__name__}"
        )
    return loaded


def face_transform(model: nn.Module, color: str = "auto", input_size: int | None = None) -> FaceTransform:
    """The model's own transform (``ran.transforms.transform_for``); ``color`` 'rgb' / 'gray' overrides
    the recorded colour mode."""
    if color not in ("auto", "rgb", "gray"):
        raise ValueError(f"color: expected 'auto', 'rgb' or 'gray', got {color!r}")
    transform = transform_for(model, input_size)
    if color != "auto":
        transform = dataclasses.replace(transform, grayscale=color == "gray")
    return transform


# --- inputs ------------------------------------------------------------------------------------------


@dataclass
class _Frame:
    source: str
    image: np.ndarray  # RGB uint8 (H, W, 3)
    frame: int | None = None
    time_s: float | None = None


def to_rgb_uint8(image: Any) -> np.ndarray:
    """PIL image / array / tensor -> RGB uint8 (H, W, 3). Grayscale is repeated, alpha is composited on
    white, float data is read as 0..1, 16-bit data is scaled to 8 bits, tensors are (C, H, W)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return to_rgb_uint8(
                np.asarray(image).astype(np.float64) / (65535.0 if image.mode != "F" else 1.0)
            )
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dim() != 3 or tensor.shape[0] not in (1, 3, 4):
            raise InputError(
                f"expected a (C, H, W) tensor with C in 1, 3, 4, got shape {tuple(tensor.shape)}"
            )
        image = tensor.permute(1, 2, 0).numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if min(array.shape[:2]) < 2:
        raise InputError(f"image too small: {array.shape[:2]}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = (array.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError("image has NaN or infinite values")
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def read_image(path: Path) -> np.ndarray:
    """An image file -> RGB uint8, EXIF orientation applied; InputError with a reason if it fails."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            return to_rgb_uint8(ImageOps.exif_transpose(opened))
    except UnidentifiedImageError:
        raise InputError("cannot decode image (corrupt file or not an image)") from None
    except Image.DecompressionBombError as err:
        raise InputError(f"image too large to decode safely ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"cannot read image ({err})") from None


def read_video(path: Path, every: int | None = None, fps: float | None = None) -> Iterator[_Frame]:
    """Sample frames of a video (every ``every``-th frame, or about ``fps`` frames per second; default
    every frame) as RGB. InputError if it cannot be opened or no frame decodes."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError("cannot open video (unsupported codec or corrupt file)")
        video_fps = capture.get(cv2.CAP_PROP_FPS)
        video_fps = video_fps if video_fps and math.isfinite(video_fps) and video_fps > 0 else 25.0
        step = every or (max(1, round(video_fps / fps)) if fps else 1)
        index, decoded = 0, 0
        while capture.grab():
            if index % step == 0:
                ok, bgr = capture.retrieve()
                if ok and bgr is not None:
                    decoded += 1
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    yield _Frame(source=str(path), image=rgb, frame=index, time_s=round(index / video_fps, 4))
            index += 1
        if decoded == 0:
            raise InputError("cannot decode any frame of the video (unsupported codec or corrupt file)")
    finally:
        capture.release()


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def expand_inputs(inputs: Any) -> list[Any]:
    """Inputs as a flat list: folders become their image files (recursive, sorted), a (B, C, H, W)
    tensor or a list becomes its items; a missing path stays (it is reported as that input's error)."""
    if isinstance(inputs, (str, Path)) or not isinstance(inputs, Iterable) or _is_single_array(inputs):
        inputs = [inputs]
    items: list[Any] = []
    for item in inputs:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            found = sorted(
                p for p in Path(item).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            items.extend(found if found else [Path(item)])
        elif isinstance(item, torch.Tensor) and item.dim() == 4:
            items.extend(item.unbind(0))
        else:
            items.append(item)
    return items


def _is_single_array(value: Any) -> bool:
    from PIL import Image

    return isinstance(value, (np.ndarray, Image.Image)) or (
        isinstance(value, torch.Tensor) and value.dim() <= 3
    )


def _frames(item: Any, index: int, every: int | None, fps: float | None) -> Iterator[_Frame]:
    """The frames of one input (one for images); raises InputError for unusable inputs."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        if path.is_dir():
            raise InputError(f"no images found in folder (extensions {', '.join(IMAGE_EXTENSIONS)})")
        if not path.exists():
            raise InputError("no such file")
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            yield from read_video(path, every=every, fps=fps)
            return
        if suffix not in IMAGE_EXTENSIONS:
            raise InputError(
                f"unsupported format {suffix or '(no extension)'!r}; expected an image "
                f"({', '.join(IMAGE_EXTENSIONS)}) or a video ({', '.join(VIDEO_EXTENSIONS)})"
            )
        yield _Frame(source=str(path), image=read_image(path))
        return
    kind = type(item).__name__
    yield _Frame(source=f"<{kind} {index}>", image=to_rgb_uint8(item))


def _source_name(item: Any, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__} {index}>"


# --- prediction --------------------------------------------------------------------------------------


@dataclass
class _PendingFace:
    result: InputResult
    face_index: int
    face: Face | None
    crop_box: tuple[float, float, float, float]
    pixels: torch.Tensor
    boxes: torch.Tensor | None  # (K, 4) landmark regions, else None (the model's boxes)
    landmarks: np.ndarray | None
    picture: np.ndarray | None  # the crop, kept only for pictures


class _Runner:
    """Batches faces across inputs and runs the model once per batch."""

    def __init__(
        self,
        model: nn.Module,
        transform: FaceTransform,
        names: list[str],
        batch_size: int,
        device: torch.device,
        bf16: bool,
        visualize: Path | None,
    ) -> None:
        self.model, self.transform, self.names = model, transform, names
        self.batch_size, self.device, self.bf16, self.visualize = batch_size, device, bf16, visualize
        self.pending: list[_PendingFace] = []
        self.picture_names: set[str] = set()
        self.pictures: list[Path] = []

    def add(self, face: _PendingFace) -> None:
        self.pending.append(face)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        images = self.transform.normalize(torch.stack([f.pixels for f in batch]).to(self.device))
        boxes = None
        if batch[0].boxes is not None:
            boxes = torch.stack([f.boxes for f in batch]).to(self.device)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16),
        ):
            output = self.model.forward_with_attention(images, boxes)
        probs = output.logits.float().softmax(-1).cpu()
        weights = output.weights.float().cpu()
        used_boxes = (
            boxes if boxes is not None else self.model.region_boxes.expand(len(batch), -1, -1)
        ).cpu()
        for i, face in enumerate(batch):
            self._record(face, probs[i], weights[i], used_boxes[i].float())

    def _record(
        self, face: _PendingFace, probs: torch.Tensor, weights: torch.Tensor, boxes: torch.Tensor
    ) -> None:
        x0, y0, x1, y1 = face.crop_box
        scale = torch.tensor([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        offset = torch.tensor([x0, y0, x0, y0])
        region_px = (boxes * scale + offset).tolist()
        top = int(probs.argmax())
        probabilities = {name: round(float(p), 6) for name, p in zip(self.names, probs)}
        prediction = FacePrediction(
            face_index=face.face_index,
            box=[round(float(v), 2) for v in (face.face.box if face.face else face.crop_box)],
            crop_box=[round(float(v), 2) for v in face.crop_box],
            score=round(float(face.face.score), 5) if face.face else None,
            label=self.names[top],
            probabilities=probabilities,
            region_weights=[round(float(w), 6) for w in weights],
            region_boxes=[[round(v, 2) for v in box] for box in region_px],
            landmarks=(
                face.face.landmarks.round(2).tolist()
                if face.face is not None and face.face.landmarks is not None
                else None
            ),
        )
        face.result.faces.append(prediction)
        if self.visualize is not None and face.picture is not None:
            self._picture(face, prediction, boxes, weights)

    def _picture(
        self, face: _PendingFace, prediction: FacePrediction, boxes: torch.Tensor, weights: torch.Tensor
    ) -> None:
        from ran.pipeline.pictures import save_face_picture

        result = face.result
        stem = (
            re.sub(
                r"[^A-Za-z0-9_.-]+",
                "_",
                Path(result.source).stem if not result.source.startswith("<") else result.source.strip("<>"),
            ).strip("_")
            or "input"
        )
        frame = f"_frame{result.frame:06d}" if result.frame is not None else ""
        name = f"{stem}{frame}_face{face.face_index}"
        base, n = name, 1
        while name in self.picture_names:
            n += 1
            name = f"{base}-{n}"
        self.picture_names.add(name)
        title = f"{prediction.label} ({prediction.probabilities[prediction.label]:.2f})"
        self.pictures.append(
            save_face_picture(
                face.picture,
                boxes.tolist(),
                weights.tolist(),
                prediction.probabilities,
                self.visualize / f"{name}.png",
                title=title,
            )
        )


def predict(
    inputs: Any,
    model: str | Path | nn.Module | None = None,
    *,
    detector: str | FaceDetector | None = "mtcnn",
    detect: bool = True,
    margin: float = 0.2,
    regions: str = "model",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    color: str = "auto",
    input_size: int | None = None,
    every: int | None = None,
    fps: float | None = None,
    max_faces: int | None = None,
    visualize: str | Path | None = None,
    progress: bool = True,
) -> list[InputResult]:
    """Predict the expression of every face in ``inputs``.

    Args:
        inputs: a path (image, video, or folder searched recursively for images), a PIL image, a numpy
            array (H, W[, C]), a tensor (C, H, W) or (B, C, H, W) of 0..1 floats or uint8, or a list of these.
        model: an nn.Module (RAN) or a name for ``ran.load_model``; default ``DEFAULT_MODEL``. The
            caller's model is not changed (see ``ran.devices.inference_model``).
        detector: ``'mtcnn'`` (default, gives landmarks), ``'cascade'``, or any ``FaceDetector``.
        detect: False treats every input as an already cropped face.
        margin: extra context around each detected box, as a fraction of its side, per side.
        regions: ``'model'`` (the model's own boxes) or ``'landmarks'`` (boxes on the eyes, nose and
            mouth from the detector's 5 landmarks; the model must have 5 regions).
        precision: ``'fp32'`` or ``'bf16'`` (autocast).
        every / fps: video frame sampling (every N-th frame, or about F frames per second).
        max_faces: keep at most this many (largest) faces per image.
        visualize: a folder to write one PNG per face (regions coloured by weight + probabilities).

    Returns one ``InputResult`` per image or sampled video frame; an unusable input gets ``error`` set
    and the others go on.
    """
    if regions not in ("model", "landmarks"):
        raise ValueError(f"regions: expected 'model' or 'landmarks', got {regions!r}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if every is not None and fps is not None:
        raise ValueError("every and fps: pass one of them, not both")
    if (every is not None and every < 1) or (fps is not None and fps <= 0):
        raise ValueError(f"every / fps: expected a positive value, got every={every} fps={fps}")
    net = resolve_model(model)
    if regions == "landmarks":
        if not detect:
            raise ValueError(
                "regions='landmarks' needs landmarks from the face detector; it cannot work with detect=False"
            )
        if net.num_regions != 5:
            raise ValueError(
                f"regions='landmarks' gives 5 regions (whole face, eyes, nose, mouth) but the model has "
                f"{net.num_regions}; use a model built with 5 regions"
            )
    face_detector = get_detector(detector) if detect else None
    out_dir = Path(visualize) if visualize is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    items = expand_inputs(inputs)
    results: list[InputResult] = []
    with inference_model(net, device) as work:
        runner = _Runner(
            work,
            face_transform(net, color, input_size),
            class_names(net),
            batch_size,
            next(work.parameters()).device,
            precision == "bf16",
            out_dir,
        )
        for index, item in enumerate(
            tqdm(items, desc="predict", unit="input", disable=not progress or len(items) < 2)
        ):
            try:
                for frame in _frames(item, index, every, fps):
                    result = InputResult(
                        source=frame.source,
                        frame=frame.frame,
                        time_s=frame.time_s,
                        image_size=list(frame.image.shape[:2]),
                    )
                    results.append(result)
                    try:
                        _queue_faces(frame, result, face_detector, runner, margin, regions, max_faces)
                    except InputError as err:
                        result.error = str(err)
            except InputError as err:
                results.append(InputResult(source=_source_name(item, index), error=str(err)))
        runner.flush()
    return results


def _queue_faces(
    frame: _Frame,
    result: InputResult,
    detector: FaceDetector | None,
    runner: _Runner,
    margin: float,
    regions: str,
    max_faces: int | None,
) -> None:
    image = frame.image
    keep = runner.visualize is not None
    if detector is None:
        h, w = image.shape[:2]
        runner.add(
            _PendingFace(
                result,
                0,
                None,
                (0.0, 0.0, float(w), float(h)),
                runner.transform.prepare(image),
                None,
                None,
                image if keep else None,
            )
        )
        return
    faces = detector.detect(image)[: max_faces or None]
    for i, face in enumerate(faces):
        crop = crop_face(image, face, margin)
        boxes = None
        if regions == "landmarks":
            if crop.landmarks is None:
                raise InputError("the face detector gave no landmarks, which regions='landmarks' needs")
            side = crop.image.shape[0]
            boxes = landmark_boxes(crop.landmarks, (side, side))[0]
        runner.add(
            _PendingFace(
                result,
                i,
                face,
                crop.box,
                runner.transform.prepare(crop.image),
                boxes,
                crop.landmarks,
                crop.image if keep else None,
            )
        )


# --- outputs -----------------------------------------------------------------------------------------


def write_video_csv(results: Sequence[InputResult], path: str | Path, names: Sequence[str]) -> Path:
    """Per-frame CSV of one video's results: frame, time_s, face, box, score, label, one probability
    column per class, one weight column per region. Frames without a face get a row with empty face
    fields. Written atomically."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    num_regions = max((len(f.region_weights) for r in results for f in r.faces), default=0)
    header = ["frame", "time_s", "face", "x0", "y0", "x1", "y1", "score", "label"]
    header += [f"prob_{n}" for n in names] + [f"weight_region{k}" for k in range(num_regions)]
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
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
                    )
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["FacePrediction", "InputResult", "predict", "write_video_csv"]
