"""Image bytes for the dataset builders: lossless PNG encoding and reading source files, in worker processes.

These run inside ``ran.data.format.parallel.map_in_order`` workers, so they take and return plain data.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ran.errors import UserError
from ran.reading import read_regular


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a grayscale image (OpenCV when present: about twice as fast as PIL)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency, PIL is the fallback
        cv2 = None
    if cv2 is not None:
        ok, buffer = cv2.imencode(".png", image)
        if ok:
            return buffer.tobytes()
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image, mode="L").save(out, format="PNG")
    return out.getvalue()


class SourceImage(NamedTuple):
    """One image a list file names: the file, the image folder it must be in, and where it was named
    (``labels.csv line 7``) for the messages."""

    file: str
    root: str
    where: str


def read_source_image(image: SourceImage) -> bytes:
    """The bytes of ``image.file``: a regular file inside ``image.root`` (after links and ``..`` are
    resolved) that PIL recognises as an image. A list file is data: a name in it must not make the build
    read (and publish) any other file, nor wait on a FIFO. Each refusal names the list file and line."""
    from PIL import Image

    shown = f"{image.where}: image {image.file}"
    real = Path(os.path.realpath(image.file))
    if not real.is_relative_to(os.path.realpath(image.root)):
        raise UserError(f"{shown} is outside {image.root} (a link or '..' leads out of it); not read")
    try:
        data = read_regular(real)
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"{shown} does not exist") from None
    if data is None:
        raise UserError(f"{shown} is not a regular file")
    try:
        with Image.open(io.BytesIO(data)):
            pass  # the header only: the format and a size within PIL's decompression-bomb bound
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{shown} is not an image PIL can read ({type(err).__name__})") from None
    return data


def read_files(images: Sequence[SourceImage]) -> list[bytes]:
    """Worker: the bytes of each image (:func:`read_source_image`)."""
    return [read_source_image(image) for image in images]
