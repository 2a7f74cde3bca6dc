"""Pictures of one prediction: the face with its regions coloured by attention weight, beside the
class probabilities. Shows users which parts of their face image the network relied on (the paper's
attention figures, for their own photos).

:func:`render_face_picture` draws one as an RGB array (for a web page), :func:`face_picture` draws the
picture of a :class:`FacePrediction` that kept its crop, and :func:`save_face_picture` /
:class:`PictureWriter` write PNG files. Faces are drawn from a copy of at most :data:`PICTURE_SIDE` pixels,
so a face from a 144-megapixel photo costs no more to draw than one from a webcam.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ran.errors import UserError
from ran.extras import require
from ran.faults import fault_message
from ran.files import atomic_path
from ran.regions import region_labels

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ran.pipeline.results import FacePrediction, InputResult

# Faces are drawn about 400 px wide; larger crops are shrunk to this side first.
PICTURE_SIDE = 512


def picture_crop(crop: Image.Image | np.ndarray) -> np.ndarray:
    """A face crop as the RGB uint8 array pictures are drawn from: shrunk to at most ``PICTURE_SIDE``."""
    image = crop if isinstance(crop, Image.Image) else Image.fromarray(np.asarray(crop))
    if max(image.size) > PICTURE_SIDE:
        factor = max(image.size) / PICTURE_SIDE
        size = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)


def render_face_picture(
    face: np.ndarray,
    region_boxes: Sequence[Sequence[float]],
    region_weights: Sequence[float],
    probabilities: Mapping[str, float],
    title: str | None = None,
    cmap: str = "plasma",
) -> np.ndarray:
    """The picture as an RGB uint8 array (480, 900, 3): ``face`` (H, W, 3 uint8 RGB) with each fractional
    region box drawn in the colour of its weight (colour bar as legend, region 0 = whole face drawn as the
    frame), and a horizontal bar chart of ``probabilities`` with the top class highlighted."""
    FigureCanvasAgg = require(
        "matplotlib.backends.backend_agg", "pictures (ran predict --visualize)"
    ).FigureCanvasAgg

    figure = _draw(picture_crop(face), region_boxes, region_weights, probabilities, title, cmap)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[..., :3]


def save_face_picture(
    face: np.ndarray,
    region_boxes: Sequence[Sequence[float]],
    region_weights: Sequence[float],
    probabilities: Mapping[str, float],
    out_path: str | Path,
    title: str | None = None,
    cmap: str = "plasma",
) -> Path:
    """Write :func:`render_face_picture`'s picture as a PNG, atomically and with the process umask's
    permissions (``ran.files``)."""
    return _write_png(
        out_path, render_face_picture(face, region_boxes, region_weights, probabilities, title, cmap)
    )


def face_picture(prediction: FacePrediction, cmap: str = "plasma") -> np.ndarray:
    """The picture of one predicted face as an RGB uint8 array; the prediction must have kept its crop
    (``FacePipeline(...)(image, keep_crops=True)``)."""
    if prediction.crop is None:
        raise UserError("prediction.crop: the face crop was not kept; predict with keep_crops=True")
    x0, y0, x1, y1 = prediction.crop_box
    scale = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
    boxes = (np.asarray(prediction.region_boxes, dtype=float) - [x0, y0, x0, y0]) / scale
    top = prediction.probabilities[prediction.label]
    return render_face_picture(
        prediction.crop,
        boxes.clip(0.0, 1.0).tolist(),
        prediction.region_weights,
        prediction.probabilities,
        title=f"{prediction.label} ({top:.2f})",
        cmap=cmap,
    )


class PictureWriter:
    """Writes the picture of every face of a run into one folder, one PNG per face, named after the input
    (``<stem>[_frameNNNNNN]_face<i>.png``, ``-2``, ``-3`` ... when two inputs share a stem)."""

    def __init__(self, folder: str | Path) -> None:
        require("matplotlib", "pictures (ran predict --visualize)")  # say so before any work, not after
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.names: set[str] = set()
        self.written: list[Path] = []

    def write(self, result: InputResult) -> list[Path]:
        """The pictures of ``result``'s faces (those that kept their crop). One the file system refuses
        (disk full, read-only folder) becomes ``result.error``, so the run goes on with the next input."""
        paths = []
        for face in result.faces:
            if face.crop is None:
                continue
            path = self.folder / f"{self._name(result, face.face_index)}.png"
            if (path.exists() or path.is_symlink()) and not written_picture(path):
                result.error = f"picture not written: {path} exists and ran did not write it"
                break
            try:
                paths.append(_write_png(path, face_picture(face)))
            except OSError as err:
                message = fault_message(err)
                if message is None:
                    raise
                result.error = f"picture not written: {message}"
                break
        self.written.extend(paths)
        return paths

    def _name(self, result: InputResult, face_index: int) -> str:
        source = result.source
        stem = Path(source).stem if not source.startswith("<") else source.strip("<>")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_") or "input"
        frame = f"_frame{result.frame:06d}" if result.frame is not None else ""
        name = base = f"{stem}{frame}_face{face_index}"
        n = 1
        while name in self.names:
            n += 1
            name = f"{base}-{n}"
        self.names.add(name)
        return name


PICTURE_MARK = ("Software", "ran predict")  # a text chunk in every picture: --overwrite replaces only these


def _write_png(path: str | Path, pixels: np.ndarray) -> Path:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(*PICTURE_MARK)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG", pnginfo=info)
    return Path(path)


def written_picture(path: Path) -> bool:
    """Whether ``path`` is a picture this package wrote (its PNG text chunk says so); a user's own file of
    that name is never replaced."""
    if not path.is_file():
        return False
    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(PICTURE_MARK[0]) == PICTURE_MARK[1]
    except (OSError, ValueError, SyntaxError):
        return False


def _draw(
    face: np.ndarray,
    region_boxes: Sequence[Sequence[float]],
    region_weights: Sequence[float],
    probabilities: Mapping[str, float],
    title: str | None,
    cmap: str,
) -> Figure:
    from matplotlib.figure import Figure

    boxes = np.asarray(region_boxes, dtype=float)
    weights = np.asarray(region_weights, dtype=float)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(weights):
        raise UserError(
            f"region_boxes {boxes.shape} and region_weights {weights.shape} do not match (K, 4), (K,)"
        )
    figure = Figure(figsize=(9, 4.8), dpi=100, layout="constrained")
    ax_face, ax_prob = figure.subplots(1, 2, width_ratios=[1.1, 1])
    _draw_regions(figure, ax_face, face, boxes, weights, cmap)
    _draw_probabilities(ax_prob, probabilities, title)
    return figure


def _draw_regions(
    figure: Figure, ax: Axes, face: np.ndarray, boxes: np.ndarray, weights: np.ndarray, cmap: str
) -> None:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    h, w = face.shape[:2]
    ax.imshow(face)
    # Colours span the weights' own range, so differences show even when the weights are close.
    low, high = float(weights.min()), float(weights.max())
    if high - low < 1e-6:
        low, high = low - 1e-3, high + 1e-3
    norm = Normalize(vmin=low, vmax=high)
    colours = colormaps[cmap]
    names = region_labels(boxes)
    handles: dict[int, Rectangle] = {}
    # Heaviest last, so it is drawn on top; thicker lines for larger weights.
    for k in np.argsort(weights, kind="stable"):
        x0, y0, x1, y1 = boxes[k] * [w, h, w, h]
        inset = 1.5 + 0.6 * k  # nested boxes sharing an edge stay distinguishable
        patch = Rectangle(
            (x0 + inset, y0 + inset),
            max(x1 - x0 - 2 * inset, 1.0),
            max(y1 - y0 - 2 * inset, 1.0),
            fill=False,
            edgecolor=colours(norm(weights[k])),
            linewidth=1.0 + 2.5 * norm(weights[k]),
            label=f"{names[k]}: {weights[k]:.3f}",
        )
        ax.add_patch(patch)
        handles[int(k)] = patch
    ax.set_axis_off()
    ax.set_title("regions coloured by attention weight")
    ax.legend(
        handles=[handles[k] for k in sorted(handles)],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=2,
        fontsize=7,
        frameon=False,
    )
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=colours), ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("region weight (alpha * beta, normalised)")


def _draw_probabilities(ax: Axes, probabilities: Mapping[str, float], title: str | None) -> None:
    names = list(probabilities)
    values = np.array([probabilities[n] for n in names], dtype=float)
    top = int(values.argmax()) if len(values) else -1
    ax.barh(
        range(len(names)), values, color=["tab:orange" if i == top else "tab:blue" for i in range(len(names))]
    )
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    for i, v in enumerate(values):
        ax.text(min(v + 0.01, 0.85), i, f"{v:.2f}", va="center", fontsize=8)
    ax.set_title(title or (f"prediction: {names[top]}" if top >= 0 else "prediction"))


__all__ = [
    "PICTURE_SIDE",
    "PictureWriter",
    "face_picture",
    "picture_crop",
    "render_face_picture",
    "save_face_picture",
]
