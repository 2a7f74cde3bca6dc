"""Prediction on photos and videos as a pipeline: inputs -> faces -> model -> results (and pictures).

* ``inputs``: paths, folders, videos, PIL images, arrays and tensors -> frames; one-line errors per input.
* ``faces``: face detectors (MTCNN, cascade) on a bounded-size copy, square crops from the original.
* ``pipeline``: :class:`FacePipeline` (preprocess, ``_forward``, postprocess) and :func:`predict`.
* ``results``: :class:`InputResult` / :class:`FacePrediction` (``to_dict()`` = the ``ran predict --json``
  line) and the per-frame video CSV.
* ``pictures``: the region-attention picture of a face, as an array or a PNG file.
"""

from ran.pipeline.faces import Face, FaceDetector, get_detector
from ran.pipeline.pictures import face_picture, render_face_picture, save_face_picture
from ran.pipeline.pipeline import FacePipeline, iter_predictions, predict
from ran.pipeline.results import FacePrediction, InputResult, write_video_csv

__all__ = [
    "Face",
    "FaceDetector",
    "FacePipeline",
    "FacePrediction",
    "InputResult",
    "face_picture",
    "get_detector",
    "iter_predictions",
    "predict",
    "render_face_picture",
    "save_face_picture",
    "write_video_csv",
]
