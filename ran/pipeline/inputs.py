"""What prediction accepts, turned into frames: files, folders, videos, PIL images, arrays and tensors.

Every input becomes one or more :class:`Frame` objects holding a PIL image in mode ``RGB`` or ``L``. An image
file stays the image PIL decoded (no RGB copy, no numpy copy), so a 144-megapixel photo costs its decoded
size once; detection and cropping then work on small pieces of it (see ``ran.pipeline.faces``).

An input that cannot be used raises :class:`InputError` with one line saying why; the pipeline records it
as that input's error and goes on with the others.

Large photos: PIL refuses images over ``2 * PIL.Image.MAX_IMAGE_PIXELS`` pixels (178,956,970 by default,
about 13,400 x 13,400) as possible decompression bombs, and warns above ``MAX_IMAGE_PIXELS``. Prediction
keeps that policy and turns both into one line for the input: above the limit the input is refused (its
``error``), between the two thresholds it is decoded and its result carries a ``warning``. Raise
``PIL.Image.MAX_IMAGE_PIXELS`` to accept larger photos you trust.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from ran.errors import one_line
from ran.extras import require
from ran.vocabulary import MIN_IMAGE_SIDE

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class InputError(Exception):
    """One input could not be used (unreadable, unsupported, too small or too large); the batch goes on."""


@dataclass
class Frame:
    """One image to find faces in: a photo, or one sampled frame of a video (``frame``, ``time_s``).

    ``image`` is a PIL image in mode ``RGB`` or ``L`` (never changed by the pipeline); ``warning`` is a
    note about the input that did not stop it (e.g. a very large photo)."""

    source: str
    image: Image.Image
    frame: int | None = None
    time_s: float | None = None
    warning: str | None = None


# --- in-memory images ---------------------------------------------------------------------------------


def to_image(image: Any) -> Image.Image:
    """A PIL image, numpy array or tensor -> PIL image in mode ``RGB`` or ``L``, at least ``MIN_IMAGE_SIDE``.

    Alpha is composited on white, float data is read as 0..1, 16-bit data is scaled to 8 bits, tensors are
    (C, H, W). A PIL image already in ``RGB`` or ``L`` is returned as is (not copied)."""
    if isinstance(image, Image.Image):
        try:
            converted = _pil_to_image(image)
        except (ValueError, OSError) as err:  # a mode PIL cannot convert ('La'), a truncated lazy image
            raise InputError(f"cannot use a PIL image of mode {image.mode!r} ({one_line(err)})") from None
    else:
        array = _to_uint8_array(image)
        converted = Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB")
    width, height = converted.size
    if min(width, height) < MIN_IMAGE_SIDE:
        side = MIN_IMAGE_SIDE
        raise InputError(f"image too small: {width}x{height} pixels; expected at least {side}x{side}")
    return converted


def _pil_to_image(image: Image.Image) -> Image.Image:
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in _WIDE_MODES:
        scale = 1.0 if image.mode == "F" else 65535.0
        return to_image(np.asarray(image).astype(np.float64) / scale)
    return image.convert("L" if image.mode == "1" else "RGB")


def _to_uint8_array(image: Any) -> np.ndarray:
    """An array or tensor -> uint8 (H, W) or (H, W, 3)."""
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dim() != 3 or tensor.shape[0] not in (1, 3, 4):
            raise InputError(
                f"expected a (C, H, W) tensor with C in 1, 3, 4, got shape {tuple(tensor.shape)}"
            )
        tensor = tensor.float() if tensor.dtype == torch.bfloat16 else tensor  # numpy has no bfloat16
        image = tensor.permute(1, 2, 0).numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"expected an image array (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    array = _scale_to_uint8(array)
    if array.ndim == 3 and array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        return (array.astype(np.float64) / 257.0).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError("image has NaN or infinite values")
        return (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.dtype != np.uint8:
        return np.clip(array, 0, 255).astype(np.uint8)
    return array


# --- files --------------------------------------------------------------------------------------------


def read_image(path: str | Path | BinaryIO) -> tuple[Image.Image, str | None]:
    """An image file (a path or an open binary file) -> (PIL image in RGB or L with EXIF orientation
    applied, a warning or None).

    Warnings PIL raises while reading (a photo over the decompression-bomb warning threshold, corrupt
    EXIF data) become the returned one-line note instead of a raw warning print."""
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as opened:
                opened.load()
                ImageOps.exif_transpose(opened, in_place=True)
                image = to_image(opened)
    except UnidentifiedImageError:
        raise InputError("cannot decode image (corrupt file or not an image)") from None
    except Image.DecompressionBombError as err:
        raise InputError(_too_large(err)) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"cannot read image ({one_line(err)})") from None
    notes = []
    for found in caught:
        if issubclass(found.category, (UserWarning, Image.DecompressionBombWarning)):
            notes.append(_note(found.message, image.size))
        else:  # not about this image (e.g. a deprecation): passed on as it came
            warnings.warn_explicit(found.message, found.category, found.filename, found.lineno)
    return image, "; ".join(dict.fromkeys(notes)) or None


def _too_large(err: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(err))
    pixels = f"{int(found[1]):,} pixels" if found else "more pixels"
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return (
        f"image too large: {pixels} is over the limit of {limit:,} (2 x PIL.Image.MAX_IMAGE_PIXELS, "
        "PIL's decompression-bomb guard); downscale the photo, or raise PIL.Image.MAX_IMAGE_PIXELS for "
        "photos you trust"
    )


def _note(message: Warning | str, size: tuple[int, int]) -> str:
    if isinstance(message, Image.DecompressionBombWarning):
        width, height = size
        return (
            f"large image: {width}x{height} = {width * height:,} pixels, over PIL's decompression-bomb "
            f"warning threshold of {Image.MAX_IMAGE_PIXELS:,}; decoded since it is under the limit of "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,}"
        )
    return one_line(message)


def read_video(path: str | Path, every: int | None = None, fps: float | None = None) -> Iterator[Frame]:
    """Sample frames of a video (every ``every``-th frame, or about ``fps`` frames per second; default
    every frame). InputError if it cannot be opened or no frame decodes."""
    cv2 = require("cv2", "video input (ran predict)")

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError("cannot open video (unsupported codec or corrupt file)")
        _check_frame_size(capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        video_fps = capture.get(cv2.CAP_PROP_FPS)
        video_fps = video_fps if video_fps and math.isfinite(video_fps) and video_fps > 0 else 25.0
        step = every or (max(1, round(video_fps / fps)) if fps else 1)
        index, decoded = 0, 0
        while capture.grab():
            if index % step == 0:
                ok, bgr = capture.retrieve()
                if ok and bgr is not None:
                    _check_frame_size(bgr.shape[1], bgr.shape[0])  # the container may say less
                    decoded += 1
                    image = to_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    yield Frame(str(path), image, frame=index, time_s=round(index / video_fps, 4))
            index += 1
        if decoded == 0:
            raise InputError("cannot decode any frame of the video (unsupported codec or corrupt file)")
    finally:
        capture.release()


def _check_frame_size(width: float, height: float) -> None:
    """Frames are held to the photos' decompression-bomb limit: a 1 MB video of 14000 x 14000 frames
    took 3.5 GB."""
    pixels, limit = int(width) * int(height), 2 * (Image.MAX_IMAGE_PIXELS or 0)
    if limit and pixels > limit:
        raise InputError(
            f"video frames too large: {int(width)}x{int(height)} = {pixels:,} pixels, over the limit of "
            f"{limit:,} (2 x PIL.Image.MAX_IMAGE_PIXELS, as for photos)"
        )


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video (by its extension)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


# --- lists of inputs ----------------------------------------------------------------------------------


def expand_inputs(inputs: Any) -> Iterable[Any]:
    """Inputs one by one: folders become their image files (recursive, sorted), a (B, C, H, W) tensor or
    a list becomes its items; a missing path stays (it is reported as that input's error). A list (any
    sized collection) gives a list; a generator or other iterator is followed as it yields, never
    drained ahead (a camera's frames never end)."""
    if isinstance(inputs, (str, Path)) or not isinstance(inputs, Iterable) or _is_single_image(inputs):
        inputs = [inputs]
    items = _expanded(inputs)
    return list(items) if isinstance(inputs, Sized) else items


def _expanded(inputs: Iterable[Any]) -> Iterator[Any]:
    for item in inputs:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            found = sorted(
                p for p in Path(item).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            yield from found if found else [Path(item)]
        elif isinstance(item, torch.Tensor) and item.dim() == 4:
            yield from item.unbind(0)
        else:
            yield item


_BYTES = (bytes, bytearray, memoryview)


def _is_encoded(value: Any) -> bool:
    """The bytes of an image file, or a binary file object (``open(path, 'rb')``, ``io.BytesIO``)."""
    return isinstance(value, _BYTES) or (
        callable(getattr(value, "read", None)) and not isinstance(value, Path)
    )


def _is_single_image(value: Any) -> bool:
    return (
        isinstance(value, (np.ndarray, Image.Image))
        or (isinstance(value, torch.Tensor) and value.dim() <= 3)
        or _is_encoded(value)
    )


def source_name(item: Any, index: int) -> str:
    """How results name an input: its path (an open file's too), or ``<kind index>`` for in-memory images."""
    if isinstance(item, (str, Path)):
        return str(item)
    name = getattr(item, "name", None) if _is_encoded(item) else None
    return name if isinstance(name, str) else f"<{type(item).__name__} {index}>"


def iter_frames(item: Any, index: int, every: int | None = None, fps: float | None = None) -> Iterator[Frame]:
    """The frames of one input (one for images); InputError for an unusable input."""
    name = source_name(item, index)
    if _is_encoded(item):  # the bytes of an image file, or an open file: decoded as the file would be
        image, warning = read_image(io.BytesIO(bytes(item)) if isinstance(item, _BYTES) else item)
        yield Frame(name, image, warning=warning)
        return
    if not isinstance(item, (str, Path)):
        yield Frame(name, to_image(item))
        return
    path = Path(item)
    if path.is_dir():
        raise InputError(f"no images found in folder (extensions {', '.join(IMAGE_EXTENSIONS)})")
    if not path.exists():
        raise InputError("no such file")
    if not path.is_file():  # a FIFO would hold the reader until someone writes into it
        raise InputError("not a regular file (a FIFO, device or socket); expected an image or a video file")
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        yield from read_video(path, every=every, fps=fps)
        return
    if suffix not in IMAGE_EXTENSIONS:
        raise InputError(
            f"unsupported format {suffix or '(no extension)'!r}; expected an image "
            f"({', '.join(IMAGE_EXTENSIONS)}) or a video ({', '.join(VIDEO_EXTENSIONS)})"
        )
    image, warning = read_image(path)
    yield Frame(name, image, warning=warning)


__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "InputError",
    "expand_inputs",
    "is_video",
    "iter_frames",
    "read_image",
    "read_video",
    "source_name",
    "to_image",
]
