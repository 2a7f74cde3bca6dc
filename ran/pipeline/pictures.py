"""Pictures of one prediction: the face with its regions coloured by attention weight, beside the
class probabilities. Shows users which parts of their face image the network relied on (the paper's
attention figures, for their own photos).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def save_face_picture(
    face: np.ndarray,
    region_boxes: Sequence[Sequence[float]],
    region_weights: Sequence[float],
    probabilities: Mapping[str, float],
    out_path: str | Path,
    title: str | None = None,
    cmap: str = "plasma",
) -> Path:
    """Write a PNG: ``face`` (H, W, 3 uint8 RGB) with each fractional region box drawn in the colour of
    its weight (colour bar as legend, region 0 = whole face drawn as the frame), and a horizontal bar
    chart of ``probabilities`` with the top class highlighted. Written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    boxes = np.asarray(region_boxes, dtype=float)
    weights = np.asarray(region_weights, dtype=float)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(weights):
        raise ValueError(
            f"region_boxes {boxes.shape} and region_weights {weights.shape} do not match (K, 4), (K,)"
        )
    h, w = face.shape[:2]
    fig = Figure(figsize=(9, 4.8), dpi=100, layout="constrained")
    ax_face, ax_prob = fig.subplots(1, 2, width_ratios=[1.1, 1])

    ax_face.imshow(face, cmap="gray" if face.ndim == 2 else None)
    # Colours span the weights' own range, so differences show even when the weights are close.
    low, high = float(weights.min()), float(weights.max())
    if high - low < 1e-6:
        low, high = low - 1e-3, high + 1e-3
    norm = Normalize(vmin=low, vmax=high)
    colours = colormaps[cmap]
    handles = []
    # Heaviest last, so it is drawn on top; thicker lines for larger weights.
    for k in np.argsort(weights, kind="stable"):
        x0, y0, x1, y1 = boxes[k] * [w, h, w, h]
        inset = 1.5 + 0.6 * k  # nested boxes sharing an edge stay distinguishable
        colour = colours(norm(weights[k]))
        patch = Rectangle(
            (x0 + inset, y0 + inset),
            max(x1 - x0 - 2 * inset, 1.0),
            max(y1 - y0 - 2 * inset, 1.0),
            fill=False,
            edgecolor=colour,
            linewidth=1.0 + 2.5 * norm(weights[k]),
            label=f"region {k}: {weights[k]:.3f}" + (" (whole face)" if k == 0 else ""),
        )
        ax_face.add_patch(patch)
        handles.append(patch)
    ax_face.set_axis_off()
    ax_face.set_title("regions coloured by attention weight")
    handles.sort(key=lambda p: p.get_label())
    ax_face.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=7, frameon=False
    )
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=colours), ax=ax_face, fraction=0.046, pad=0.02)
    bar.set_label("region weight (alpha * beta, normalised)")

    names = list(probabilities)
    values = np.array([probabilities[n] for n in names], dtype=float)
    top = int(values.argmax()) if len(values) else -1
    ax_prob.barh(
        range(len(names)), values, color=["tab:orange" if i == top else "tab:blue" for i in range(len(names))]
    )
    ax_prob.set_yticks(range(len(names)), names)
    ax_prob.invert_yaxis()
    ax_prob.set_xlim(0, 1)
    ax_prob.set_xlabel("probability")
    for i, v in enumerate(values):
        ax_prob.text(min(v + 0.01, 0.85), i, f"{v:.2f}", va="center", fontsize=8)
    ax_prob.set_title(title or (f"prediction: {names[top]}" if top >= 0 else "prediction"))

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["save_face_picture"]
