"""Faces in videos: the detector every N sampled frames, tracking between, one id per face, and optional
smoothing of each face's probabilities over time.

Faces move little from one frame to the next, and the detector costs more than a small model, so
:class:`VideoFaces` runs the detector on every ``detect_every``-th sampled frame (and on the first) and
follows each face with :func:`ran.pipeline.tracking.follow_face` in between. It runs the detector early on
a frame where any track is lost (too few points followed, a jump in size, the box leaving the frame), so a
face that leaves is dropped there, and a face that enters is found at the next detection at the latest.
Each face keeps a ``track`` id across frames: at a detection, a face takes over the id of the tracked box
it overlaps most (intersection over union at least ``MATCH_IOU``); a tracked face the detector no longer
finds ends.

:class:`ProbabilitySmoother` (``smooth=ALPHA``): each track's probabilities become an exponential moving
average, ``s_t = ALPHA * p_t + (1 - ALPHA) * s_(t-1)`` (the first frame of a track as it is), and the label
follows the smoothed probabilities. ALPHA = 1 is no smoothing; smaller is smoother and slower to follow a
change (ALPHA = 0.5: a frame's weight halves each frame). Region weights stay per frame.

Photos and in-memory images (frames without a frame index) are always detected, never tracked.
"""

from __future__ import annotations

import dataclasses
import itertools

import torch

from ran.constants import DEFAULT_SMOOTH, DETECT_EVERY
from ran.errors import UserError
from ran.numbers import SMOOTH_FACTOR, integer, number
from ran.pipeline.faces import DETECT_SCALE, Face, FaceDetector, detect_faces
from ran.pipeline.inputs import Frame
from ran.pipeline.tracking import GrayFrame, follow_face, gray_frame

DETECT_EVERY_RANGE = integer(1)
MATCH_IOU = 0.3


@dataclasses.dataclass
class TrackedFace(Face):
    """A face in a video frame: ``track`` is its id within the video (0, 1, ... in order of appearance);
    ``stream`` tells apart the videos a pipeline has seen (for smoothing)."""

    track: int = 0
    stream: int = 0


def check_sampling(every: int | None, fps: float | None) -> None:
    """Video frame sampling: every N-th frame or about F frames per second, not both."""
    if every is not None and fps is not None:
        raise UserError("every and fps: pass one of them, not both")
    if every is not None:
        integer(1).check(every, "every")
    if fps is not None:
        number(above=0).check(fps, "fps")


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


class VideoFaces:
    """Where the faces are in each frame: detected on photos and on every ``detect_every``-th sampled video
    frame, tracked on the others (see the module's docstring). Frames of one video come in order; a frame
    of another source, or one not after the last, starts a new video. Not thread-safe for video frames
    (photos keep no state)."""

    def __init__(
        self,
        detector: FaceDetector | None,
        detect_every: int = DETECT_EVERY,
        max_faces: int | None = None,
        detect_scale: float = DETECT_SCALE,
    ) -> None:
        DETECT_EVERY_RANGE.check(detect_every, "detect_every")
        self.detector, self.detect_every, self.max_faces = detector, detect_every, max_faces
        self.detect_scale = detect_scale
        self._streams = itertools.count()
        self._source: tuple[str, int] | None = None  # (source, last frame index)
        self._stream = 0
        self._previous: GrayFrame | None = None
        self._tracks: list[TrackedFace] = []
        self._ids = itertools.count()
        self._since_detection = 0

    def faces(self, frame: Frame) -> list[Face]:
        """The faces of ``frame``, largest first for photos; video faces are :class:`TrackedFace`."""
        if self.detector is None:
            raise UserError("faces: this pipeline finds no faces (detect=False)")
        if frame.frame is None:
            return detect_faces(self.detector, frame.image, max_faces=self.max_faces, scale=self.detect_scale)
        current = gray_frame(frame.image)
        if self._source is None or self._source[0] != frame.source or frame.frame <= self._source[1]:
            self._start(frame.source)
        self._source = (frame.source, frame.frame)
        self._since_detection += 1
        followed = self._follow(current)
        if any(face is None for face in followed) or self._since_detection >= self.detect_every:
            followed = self._detect(frame, [face or track for face, track in zip(followed, self._tracks)])
        self._tracks, self._previous = followed, current
        return list(self._tracks)

    def _start(self, source: str) -> None:
        self._stream, self._ids = next(self._streams), itertools.count()
        self._previous, self._tracks, self._since_detection = None, [], self.detect_every

    def _follow(self, current: GrayFrame) -> list[TrackedFace | None]:
        """Every track moved to ``current`` (None where it is lost)."""
        if self._previous is None:
            return [None] * len(self._tracks)
        return [follow_face(self._previous, current, face) for face in self._tracks]  # type: ignore[misc]

    def _detect(self, frame: Frame, tracks: list[TrackedFace]) -> list[TrackedFace]:
        """The detector's faces, each with the id of the track it continues (or a new one): the one whose
        box in this frame (followed, or where it was last where it is lost) it overlaps most."""
        self._since_detection = 0
        found = detect_faces(self.detector, frame.image, max_faces=self.max_faces, scale=self.detect_scale)
        pairs = sorted(
            (
                (iou(face.box, track.box), i, j)
                for i, face in enumerate(found)
                for j, track in enumerate(tracks)
            ),
            reverse=True,
        )
        ids: dict[int, int] = {}
        taken: set[int] = set()
        for overlap, i, j in pairs:
            if overlap >= MATCH_IOU and i not in ids and j not in taken:
                ids[i] = tracks[j].track
                taken.add(j)
        return [
            TrackedFace(
                face.box, face.score, face.landmarks, ids[i] if i in ids else next(self._ids), self._stream
            )
            for i, face in enumerate(found)
        ]


class ProbabilitySmoother:
    """Per-track exponential moving average of the probabilities (see the module's docstring); faces without
    a track (photos), and every face when ``alpha`` is None (smoothing off), pass unchanged. Faces must
    come in frame order, as the pipeline's batches do."""

    def __init__(self, alpha: float | None = DEFAULT_SMOOTH) -> None:
        if alpha is not None:
            SMOOTH_FACTOR.check(alpha, "smooth")
        self.alpha = alpha
        self._stream: int | None = None
        self._state: dict[int, torch.Tensor] = {}

    def __call__(self, face: Face | None, probabilities: torch.Tensor) -> torch.Tensor:
        if self.alpha is None or not isinstance(face, TrackedFace):
            return probabilities
        if face.stream != self._stream:
            self._stream, self._state = face.stream, {}
        last = self._state.get(face.track)
        smoothed = probabilities if last is None else self.alpha * probabilities + (1 - self.alpha) * last
        self._state[face.track] = smoothed
        return smoothed


__all__ = [
    "DEFAULT_SMOOTH",
    "DETECT_EVERY",
    "ProbabilitySmoother",
    "TrackedFace",
    "VideoFaces",
    "check_sampling",
    "iou",
]
