"""Expression prediction as a pipeline, in the manner of transformers' ``ImageClassificationPipeline``.

:class:`FacePipeline` is built once (model, detector, regions, precision, device) and called many times:
``preprocess`` (a frame -> face crops from the original image + uint8 tensors the model's transform
prepared), ``_forward`` (one batched ``ran.inference.infer`` call), ``postprocess``
(-> :class:`FacePrediction` objects in the source image's pixels). Faces are batched across inputs;
results come back in input order, each as soon as its faces are done. While the model runs, a background
thread decodes, detects and crops the next inputs (``prefetch``, ``ran.pipeline.prefetch``).

:func:`predict` (``ran.predict``) and :func:`iter_predictions` are the one-call forms, which can also
write one picture per face (``visualize``). Faces are fed as every other loader feeds them
(``ran.transforms.transform_for``: RGB at the model's face size, its mean/std); a model trained on gray
faces makes them gray itself. ``color='gray'`` feeds an RGB-trained model gray faces. Nothing is guessed
from the label names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ran.constants import HOW_TO_GET_A_MODEL
from ran.devices import default_device, model_device
from ran.errors import UserError
from ran.inference import REPORTED_PRECISION, compile_for_inference, infer, inference_copy
from ran.modelio.loading import class_names
from ran.numbers import DETECT_FRACTION, MARGIN, PREFETCH_DEPTH, integer
from ran.pipeline.facebatch import FaceInput, FaceOutputs, face_predictions
from ran.pipeline.faces import (
    DETECT_SCALE,
    FaceDetector,
    crop_face,
    get_detector,
    landmark_boxes,
)
from ran.pipeline.inputs import Frame, InputError, expand_inputs, iter_frames, source_name
from ran.pipeline.pictures import PictureWriter, picture_crop
from ran.pipeline.prefetch import prefetched
from ran.pipeline.results import FacePrediction, InputResult
from ran.pipeline.video import DETECT_EVERY, ProbabilitySmoother, VideoFaces, check_sampling
from ran.precision import check_device_support, resolve_precision
from ran.runtime import load_runtime_model
from ran.transforms import FaceTransform, transform_for
from ran.vocabulary import COLOR_MODES, REGION_MODES

_AT_LEAST_ONE = integer(1)
LANDMARK_REGIONS = 5  # landmark boxes: the whole face, both eyes, the nose, the mouth


def resolve_model(model: str | Path | nn.Module | None) -> nn.Module:
    """An nn.Module as is; a string through ``ran.runtime.load_runtime_model`` (model folder, int8 model
    folder, training checkpoint, Hub id, or a registered name with random weights, with a warning)."""
    if model is None or (isinstance(model, (str, Path)) and not str(model)):
        raise UserError(f"model: none given; {HOW_TO_GET_A_MODEL}")
    loaded = model if isinstance(model, nn.Module) else load_runtime_model(str(model))
    if not hasattr(loaded, "forward_with_attention"):
        raise UserError(
            "model: expected a RAN (RegionAttentionNet with forward_with_attention), "
            f"got {type(loaded).__name__}"
        )
    return loaded


def landmarks_unusable(num_regions: int) -> str | None:
    """Why landmark regions cannot feed a model with ``num_regions`` regions (None when they can): the
    detector's landmarks give 5 (whole face, eyes, nose, mouth); ``ran demo``'s model, for one, has 6."""
    if num_regions == LANDMARK_REGIONS:
        return None
    return (
        f"regions='landmarks' (--regions landmarks) needs a model with {LANDMARK_REGIONS} regions (whole "
        f"face, eyes, nose, mouth) but the model has {num_regions}; use regions='model'"
    )


def face_transform(model: nn.Module, color: str = "auto", input_size: int | None = None) -> FaceTransform:
    """The model's own transform (``ran.transforms.transform_for``); ``color='gray'`` makes the faces gray
    for an RGB-trained model. A gray-trained model makes every input gray itself, so ``color='rgb'``
    cannot reach it and is refused."""
    if color not in COLOR_MODES:
        raise UserError(f"color: expected 'auto', 'rgb' or 'gray', got {color!r}")
    if color == "rgb" and getattr(model, "input_color", "rgb") == "gray":
        raise UserError(
            "color='rgb' (--color rgb): the model was trained on gray faces and makes its input gray itself; "
            "use color='auto'"
        )
    transform = transform_for(model, input_size)
    if color == "gray":
        transform = dataclasses.replace(transform, grayscale=True)
    return transform


class FacePipeline:
    """Find faces, crop them, run a RAN, report per face. Build once, call many times.

    Args:
        model: an nn.Module (RAN) or a name for ``ran.load_model`` (required). The pipeline
            works on its own inference copy (eval mode, channels-last, on ``device``): the caller's model
            is never changed, and later changes to it do not reach the pipeline.
        detector: ``'mtcnn'`` (default, gives landmarks), ``'cascade'``, or any ``FaceDetector``; it sees a
            copy of each image at most ``ran.pipeline.faces.DETECT_SIDE`` px long and at most
            ``detect_scale`` of its size; faces are cropped from the original.
        detect: False treats every input as an already cropped face.
        detect_scale: the detection copy's size as a fraction of the image's (``DETECT_SCALE``, 0.5: MTCNN
            finds faces of 40 px and more); 1.0 finds faces down to 20 px, in about 3x the time.
        margin: extra context around each detected box, as a fraction of its side, per side.
        regions: ``'model'`` (the model's own boxes) or ``'landmarks'`` (boxes on the eyes, nose and
            mouth from the detector's 5 landmarks; the model must have 5 regions).
        batch_size: faces per model call (faces of several inputs share a batch).
        prefetch: inputs decoded, detected and cropped ahead by a background thread while the model runs
            (default: ``batch_size``, at most 64; 0: none, one step after the other in the caller's
            thread). Results are the same either way, in input order.
        device: where the model runs; default: the given model's own device, or
            ``ran.devices.default_device()`` for a model given by name.
        precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` autocast (``ran.precision``; fp16 needs a GPU).
        color / input_size: override the colour mode ('rgb' / 'gray') and face side the model's config
            records.
        max_faces: keep at most this many (largest) faces per image.
        compile: run the model through ``torch.compile`` (worth it for many calls; the first is slow).
        detect_every / smooth: videos: the detector on every N-th sampled frame, tracking between; per-face
            smoothing of the probabilities over frames (``ran.pipeline.video``).

    Not thread-safe: one call at a time. (``preprocess`` only reads the pipeline, so with a detector that
    serves several threads it may run beside a model call; ``ran.app`` does that.)
    """

    def __init__(
        self,
        model: str | Path | nn.Module | None = None,
        *,
        detector: str | FaceDetector | None = "mtcnn",
        detect: bool = True,
        margin: float = 0.2,
        regions: str = "model",
        batch_size: int = 16,
        device: str | torch.device | None = None,
        precision: str = REPORTED_PRECISION,
        color: str = "auto",
        input_size: int | None = None,
        max_faces: int | None = None,
        compile: bool = False,
        detect_every: int = DETECT_EVERY,
        smooth: float | None = None,
        prefetch: int | None = None,
        detect_scale: float = DETECT_SCALE,
    ) -> None:
        _check_options(regions, batch_size, margin, max_faces, detect)
        default_depth = min(batch_size, PREFETCH_DEPTH.high)
        self.prefetch = default_depth if prefetch is None else PREFETCH_DEPTH.check(prefetch, "prefetch")
        self.detect_scale = DETECT_FRACTION.check(detect_scale, "detect_scale")
        self.precision = resolve_precision(precision)
        net = resolve_model(model)
        if regions == "landmarks" and landmarks_unusable(net.num_regions):
            raise UserError(landmarks_unusable(net.num_regions))
        if device is None:
            device = model_device(net) if isinstance(model, nn.Module) else default_device()
        check_device_support(self.precision, device)
        self.transform = face_transform(net, color, input_size)
        self.class_names = class_names(net)
        self.model = inference_copy(net, device)
        self.device = model_device(self.model)
        if compile:
            compile_for_inference(self.model, self.device)
        self.detector = get_detector(detector) if detect else None
        # where the faces are: detected on photos; on videos detected every N frames, tracked between
        self.video = VideoFaces(self.detector, detect_every, max_faces, detect_scale)
        self.smooth = ProbabilitySmoother(smooth)  # a no-op when smooth is None
        self.margin, self.regions, self.batch_size, self.max_faces = margin, regions, batch_size, max_faces

    # --- the three steps ----------------------------------------------------------------------------------

    def preprocess(self, frame: Frame, keep_crops: bool = False) -> tuple[InputResult, list[FaceInput]]:
        """A frame -> its (still empty) result and its faces, cropped from the original image and prepared
        by the model's transform. A problem with this frame becomes the result's ``error``."""
        width, height = frame.image.size
        result = InputResult(
            frame.source,
            frame=frame.frame,
            time_s=frame.time_s,
            image_size=[height, width],
            warning=frame.warning,
        )
        try:
            return result, self._faces(frame, result, keep_crops)
        except InputError as err:
            result.error = str(err)
            return result, []

    def _faces(self, frame: Frame, result: InputResult, keep_crops: bool) -> list[FaceInput]:
        if self.detector is None:
            width, height = frame.image.size
            crop = picture_crop(frame.image) if keep_crops else None
            pixels = self.transform.prepare(frame.image)
            return [FaceInput(result, 0, None, (0.0, 0.0, float(width), float(height)), pixels, None, crop)]
        inputs = []
        for index, face in enumerate(self.video.faces(frame)):
            crop = crop_face(frame.image, face, self.margin)
            boxes = None
            if self.regions == "landmarks":
                if crop.landmarks is None:
                    raise InputError("the face detector gave no landmarks, which regions='landmarks' needs")
                boxes = landmark_boxes(crop.landmarks, (crop.image.height, crop.image.width))[0]
            pixels = self.transform.prepare(crop.image)
            kept = picture_crop(crop.image) if keep_crops else None
            inputs.append(FaceInput(result, index, face, crop.box, pixels, boxes, kept))
        return inputs

    def _forward(self, batch: list[FaceInput]) -> FaceOutputs:
        """One model call for a batch of faces (``ran.inference.infer``, the pipeline's precision)."""
        faces = torch.stack([f.pixels for f in batch])
        boxes = torch.stack([f.boxes for f in batch]) if batch[0].boxes is not None else None
        output = infer(self.model, faces, transform=self.transform, precision=self.precision, boxes=boxes)
        used = boxes if boxes is not None else self.model.region_boxes.expand(len(batch), -1, -1)
        return FaceOutputs(
            probabilities=output.probabilities.cpu(),
            weights=output.weights.cpu(),
            boxes=used.float().cpu(),
        )

    def postprocess(self, batch: list[FaceInput], outputs: FaceOutputs) -> list[FacePrediction]:
        """Model outputs -> one :class:`FacePrediction` per face (boxes in the source image's pixels),
        each also appended to its input's result."""
        if self.smooth.alpha is not None and batch:  # per track, in frame order
            smoothed = [self.smooth(item.face, outputs.probabilities[i]) for i, item in enumerate(batch)]
            outputs = dataclasses.replace(outputs, probabilities=torch.stack(smoothed))
        predictions = face_predictions(batch, outputs, self.class_names)
        for item, prediction in zip(batch, predictions):
            item.result.faces.append(prediction)
        return predictions

    def predict_faces(self, batch: list[FaceInput]) -> list[FacePrediction]:
        """``_forward`` then ``postprocess`` for a batch of faces from ``preprocess``: for callers that
        schedule the model calls themselves (the web app takes turns between visitors batch by batch)."""
        return self.postprocess(batch, self._forward(batch))

    # --- calls --------------------------------------------------------------------------------------------

    def __call__(
        self,
        inputs: Any,
        *,
        every: int | None = None,
        fps: float | None = None,
        keep_crops: bool = False,
        progress: bool = False,
    ) -> list[InputResult]:
        """Predict every face in ``inputs`` (see :func:`predict`); one :class:`InputResult` per image or
        sampled video frame. ``keep_crops`` keeps each face's crop (at picture size) on its prediction,
        for ``ran.pipeline.pictures.face_picture``."""
        return list(self.iterate(inputs, every=every, fps=fps, keep_crops=keep_crops, progress=progress))

    def iterate(
        self,
        inputs: Any,
        *,
        every: int | None = None,
        fps: float | None = None,
        keep_crops: bool = False,
        progress: bool = False,
    ) -> Iterator[InputResult]:
        """Like ``__call__``, but yields each result, in input order, as soon as its faces are done."""
        check_sampling(every, fps)
        return self._iterate(expand_inputs(inputs), every, fps, keep_crops, progress)

    def _iterate(
        self, items: Iterable[Any], every: int | None, fps: float | None, keep_crops: bool, progress: bool
    ) -> Iterator[InputResult]:
        """Batches of faces through the model, fed by ``_prepared`` (``prefetch`` inputs ahead, in a
        background thread); each result is yielded once none of its faces waits for the model."""
        waiting: list[InputResult] = []
        pending: list[FaceInput] = []
        for result, faces in prefetched(
            self._prepared(items, every, fps, keep_crops, progress), self.prefetch
        ):
            waiting.append(result)
            pending.extend(faces)
            while len(pending) >= self.batch_size:
                batch, pending = pending[: self.batch_size], pending[self.batch_size :]
                self.postprocess(batch, self._forward(batch))
            blocked = pending[0].result if pending else None
            while waiting and waiting[0] is not blocked:
                yield waiting.pop(0)
        if pending:
            self.postprocess(pending, self._forward(pending))
        yield from waiting

    def _prepared(
        self, items: Iterable[Any], every: int | None, fps: float | None, keep_crops: bool, progress: bool
    ) -> Iterator[tuple[InputResult, list[FaceInput]]]:
        """Every frame of ``items``, preprocessed, in order: what the model's side of ``_iterate`` takes."""
        from tqdm.auto import tqdm

        total = len(items) if isinstance(items, Sized) else None  # a generator: counted as it goes
        for index, item in enumerate(
            tqdm(
                items,
                desc="predict",
                unit="input",
                total=total,
                disable=not progress or (total is not None and total < 2),
            )
        ):
            yield from self._preprocess_item(item, index, every, fps, keep_crops)

    def _preprocess_item(
        self, item: Any, index: int, every: int | None, fps: float | None, keep_crops: bool
    ) -> Iterator[tuple[InputResult, list[FaceInput]]]:
        try:
            for frame in iter_frames(item, index, every, fps):
                yield self.preprocess(frame, keep_crops)
        except InputError as err:
            yield InputResult(source=source_name(item, index), error=str(err)), []


def _check_options(regions: str, batch_size: int, margin: float, max_faces: int | None, detect: bool) -> None:
    if regions not in REGION_MODES:
        raise UserError(f"regions: expected one of {', '.join(REGION_MODES)}, got {regions!r}")
    if regions == "landmarks" and not detect:
        raise UserError(
            "regions='landmarks' needs landmarks from the face detector; it cannot work with detect=False"
        )
    _AT_LEAST_ONE.check(batch_size, "batch_size")
    MARGIN.check(margin, "margin")
    if max_faces is not None:
        _AT_LEAST_ONE.check(max_faces, "max_faces")


# --- one-call forms -------------------------------------------------------------------------------------


def iter_predictions(
    inputs: Any,
    model: str | Path | nn.Module | None = None,
    *,
    every: int | None = None,
    fps: float | None = None,
    visualize: str | Path | None = None,
    progress: bool = True,
    **options: Any,
) -> Iterator[InputResult]:
    """:func:`predict`, one result at a time (each as soon as its faces are done): for long videos and
    large folders, and for ``ran predict``, which prints each line as it comes."""
    pipeline = FacePipeline(model, **options)
    writer = PictureWriter(visualize) if visualize is not None else None
    results = pipeline.iterate(inputs, every=every, fps=fps, keep_crops=writer is not None, progress=progress)
    return _with_pictures(results, writer)


def _with_pictures(results: Iterator[InputResult], writer: PictureWriter | None) -> Iterator[InputResult]:
    for result in results:
        if writer is not None:
            writer.write(result)
            for face in result.faces:
                face.crop = None  # drawn; not kept for the whole run
        yield result


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
    precision: str = REPORTED_PRECISION,
    color: str = "auto",
    input_size: int | None = None,
    every: int | None = None,
    fps: float | None = None,
    max_faces: int | None = None,
    visualize: str | Path | None = None,
    progress: bool = True,
    compile: bool = False,
    detect_every: int = DETECT_EVERY,
    smooth: float | None = None,
    prefetch: int | None = None,
    detect_scale: float = DETECT_SCALE,
) -> list[InputResult]:
    """Predict the expression of every face in ``inputs``.

    Args:
        inputs: a path (image, video, or folder searched recursively for images), the bytes of an image
            file or an open binary file, a PIL image, a numpy array (H, W[, C]), a tensor (C, H, W) or
            (B, C, H, W) of 0..1 floats or uint8, or a list or generator of these. Files, bytes and open
            files are turned upright by their EXIF orientation; a PIL image is used as given (apply
            ``PIL.ImageOps.exif_transpose`` to a camera photo opened yourself).
        model: an nn.Module (RAN) or a name for ``ran.load_model`` (required). The
            caller's model is never changed (device, dtype, memory format, train/eval mode): prediction
            runs on a copy.
        device: default: the given model's own device; for a model given by name,
            ``ran.devices.default_device()``.
        every / fps: video frame sampling (every N-th frame, or about F frames per second).
        visualize: a folder to write one PNG per face (regions coloured by weight + probabilities).
        The other arguments are :class:`FacePipeline`'s.

    Returns one ``InputResult`` per image or sampled video frame; an unusable input gets ``error`` set
    (one line) and the others go on.
    """
    return list(
        iter_predictions(
            inputs,
            model,
            every=every,
            fps=fps,
            visualize=visualize,
            progress=progress,
            detector=detector,
            detect=detect,
            margin=margin,
            regions=regions,
            batch_size=batch_size,
            device=device,
            precision=precision,
            color=color,
            input_size=input_size,
            max_faces=max_faces,
            compile=compile,
            detect_every=detect_every,
            smooth=smooth,
            prefetch=prefetch,
            detect_scale=detect_scale,
        )
    )


__all__ = [
    "FaceInput",
    "FaceOutputs",
    "FacePipeline",
    "face_transform",
    "iter_predictions",
    "predict",
    "resolve_model",
]
