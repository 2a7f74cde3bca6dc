"""Image bytes for the dataset builders: lossless PNG encoding and reading source files, in worker processes.

These run inside ``ran.data.format.parallel.map_in_order`` workers, so they take and return plain data.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


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


def read_files(tasks: Sequence[tuple[str, str]]) -> list[bytes]:
    """The bytes of each ``(file, what to say when it is missing)``; a missing file is a FileNotFoundError
    with that message (it names the list file and line that asked for the image)."""
    images = []
    for file, missing in tasks:
        try:
            with open(file, "rb") as handle:
                images.append(handle.read())
        except (FileNotFoundError, IsADirectoryError):
            raise FileNotFoundError(missing) from None
    return images
