"""Following a face box from one video frame to the next without the detector (median flow).

Between two detections a face moves a few pixels and barely changes size, so a detector run (MTCNN: tens of
milliseconds a frame) can be replaced by sparse optical flow (about a millisecond a face): corners inside the
box are followed with pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``), forwards and back again; the
points that come back to where they started (forward-backward error under ``MAX_FLOW_ERROR`` px) vote, and
the box moves by their median shift and scales by the median ratio of their pairwise distances.

A track is *lost* (:func:`follow_face` returns None) when too few points survive, the scale jumps, or the
box leaves the frame; the caller then runs the detector on that frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from ran.extras import require
from ran.pipeline.faces import DETECT_SIDE, Face

MIN_POINTS = 6  # fewer surviving points than this: the track is lost
MAX_CORNERS = 60  # corners followed per face
MAX_FLOW_ERROR = 1.5  # px (tracking image): a point whose forward-backward error is larger does not vote
MAX_SCALE_STEP = 1.25  # a face grows or shrinks by at most this factor from one frame to the next
MIN_INSIDE = 0.6  # a box with less of its area inside the frame has left it
_FLOW_WINDOW = (21, 21)
_FLOW_LEVELS = 3


@dataclasses.dataclass
class GrayFrame:
    """A frame as the tracker sees it: gray uint8, at most ``DETECT_SIDE`` px long, and the factor that maps
    its pixels back to the frame's."""

    pixels: np.ndarray
    factor: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in the frame's own pixels."""
        height, width = self.pixels.shape[:2]
        return round(width * self.factor), round(height * self.factor)


def gray_frame(image: Image.Image, max_side: int = DETECT_SIDE) -> GrayFrame:
    """The tracker's copy of a frame (gray, bounded like the detector's copy)."""
    cv2 = require("cv2", "face tracking in videos (ran predict)")
    array = np.asarray(image)
    gray = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY) if array.ndim == 3 else array
    height, width = gray.shape
    if max(height, width) <= max_side:
        return GrayFrame(np.ascontiguousarray(gray), 1.0)
    factor = max(height, width) / max_side
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return GrayFrame(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), factor)


def _corners(gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Good corners inside the central part of ``box`` (tracking pixels), as (N, 1, 2) float32."""
    import cv2

    x0, y0, x1, y1 = box
    inset_x, inset_y = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    height, width = gray.shape
    left, top = max(0, int(x0 + inset_x)), max(0, int(y0 + inset_y))
    right, bottom = min(width, int(x1 - inset_x)), min(height, int(y1 - inset_y))
    if right - left < 8 or bottom - top < 8:
        return None
    spacing = max(2.0, min(right - left, bottom - top) / 16)
    found = cv2.goodFeaturesToTrack(gray[top:bottom, left:right], MAX_CORNERS, 0.01, spacing)
    if found is None:
        return None
    return (found.reshape(-1, 1, 2) + np.array([left, top], dtype=np.float32)).astype(np.float32)


def _flow(previous: np.ndarray, current: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points that flow forwards and back to where they started: (before, after), each (M, 2)."""
    import cv2

    options = {"winSize": _FLOW_WINDOW, "maxLevel": _FLOW_LEVELS}
    moved, ok, _ = cv2.calcOpticalFlowPyrLK(previous, current, points, None, **options)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, moved, None, **options)
    error = np.linalg.norm((back - points).reshape(-1, 2), axis=1)
    keep = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (error < MAX_FLOW_ERROR)
    return points.reshape(-1, 2)[keep], moved.reshape(-1, 2)[keep]


def _median_scale(before: np.ndarray, after: np.ndarray) -> float:
    """The median ratio of pairwise point distances after / before (how much the face grew)."""
    rows, cols = np.triu_indices(len(before), k=1)
    far_before = np.linalg.norm(before[rows] - before[cols], axis=1)
    far_after = np.linalg.norm(after[rows] - after[cols], axis=1)
    usable = far_before > 2.0
    return float(np.median(far_after[usable] / far_before[usable])) if usable.any() else 1.0


def inside_share(box: tuple[float, float, float, float], size: tuple[int, int]) -> float:
    """The share of ``box``'s area inside an image of ``size`` (width, height)."""
    x0, y0, x1, y1 = box
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    inside = max(min(x1, size[0]) - max(x0, 0.0), 0.0) * max(min(y1, size[1]) - max(y0, 0.0), 0.0)
    return inside / area if area > 0 else 0.0


def follow_face(previous: GrayFrame, current: GrayFrame, face: Face) -> Face | None:
    """``face`` (boxes and landmarks in frame pixels) moved from ``previous`` to ``current``, or None when
    the track is lost. The result keeps ``face``'s score, id and class (a dataclass copy)."""
    box = np.asarray(face.box, dtype=np.float32) / previous.factor
    points = _corners(previous.pixels, box)
    if points is None or len(points) < MIN_POINTS:
        return None
    before, after = _flow(previous.pixels, current.pixels, points)
    if len(before) < MIN_POINTS:
        return None
    scale = _median_scale(before, after)
    if not 1 / MAX_SCALE_STEP <= scale <= MAX_SCALE_STEP:
        return None
    shift = np.median(after - before, axis=0) * current.factor
    centre = (np.asarray(face.box[:2]) + np.asarray(face.box[2:])) / 2
    half = (np.asarray(face.box[2:]) - np.asarray(face.box[:2])) / 2 * scale
    moved_centre = centre + shift
    new_box = tuple(float(v) for v in (*(moved_centre - half), *(moved_centre + half)))
    if inside_share(new_box, current.size) < MIN_INSIDE:
        return None
    landmarks = None
    if face.landmarks is not None:
        landmarks = (moved_centre + (np.asarray(face.landmarks) - centre) * scale).astype(np.float32)
    return dataclasses.replace(face, box=new_box, landmarks=landmarks)


__all__ = ["GrayFrame", "follow_face", "gray_frame", "inside_share"]
