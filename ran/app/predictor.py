"""The app's side of prediction: which models a visitor may use, models loaded once per name, one
:class:`~ran.pipeline.FacePipeline` per (model, detector, region mode), and requests that take turns.

Visitors choose nothing on the server that the operator did not offer. By default only the offered
models (``ran app --model`` and ``--choices``) are used, by their names exactly as given; any other value
(a path, a Hub id, a registered name, an empty or huge string) gets :data:`NOT_OFFERED`, one message
whatever the value names on the server, and nothing is loaded. ``allow_any_model`` lets visitors name
folders and Hub ids, and even then their Hub downloads do not use the server's Hub token unless
``hub_token_for_visitors``.

Several requests are served at once and bounded by :class:`~ran.app.limits.AppLimits`: photos are
decoded and faces detected in the request's own thread (detectors from a pool), while the model is taken
in turns, one batch of faces per turn (:class:`~ran.app.limits.Turns`), so a crowded photo is
interleaved with other visitors' photos instead of running ahead of them.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ran.app.limits import AppLimits, SharedDetector, Turns, Visitors
from ran.devices import default_device
from ran.errors import UserError, one_line
from ran.pipeline import FacePipeline, InputResult
from ran.pipeline.faces import get_detector
from ran.pipeline.inputs import Frame, InputError, read_image
from ran.pipeline.pipeline import FaceInput
from ran.precision import resolve_precision
from ran.runtime import OnnxModel, load_runtime_model
from ran.vocabulary import DETECTOR_CHOICES, REGION_MODES, RUNTIMES, resolve_detector

NOT_OFFERED = "model: not offered by this server; choose one of the listed models"
BUSY = (
    "photo: your earlier photos are still being analysed ({most} at a time from one address); "
    "send this one again when they are done"
)
SHOWN_CHARS = 200  # values from visitors are cut to this many characters in messages


@dataclass
class Prediction:
    """One photo's result, the photo as decoded (for display; None when it could not be read), any note
    about the model (e.g. random weights) and the seconds the prediction took."""

    result: InputResult
    image: Image.Image | None  # RGB or L, EXIF orientation applied
    model_note: str | None
    seconds: float


class OptionError(UserError):
    """A model or an option chosen in the page or the API cannot be used; the message names it and why."""


class AppPredictor:
    """Models and pipelines of one app.

    Args:
        offered: the models visitors may choose, by name (model folders, checkpoint folders, Hub ids or
            registered names, loaded with the server's own Hub token).
        allow_any_model: also load any other folder or Hub id a visitor names.
        hub_token_for_visitors: download visitors' Hub ids with the server's Hub token (else none).
        device / precision: as in ``ran predict``.
        limits: what one request may take (:class:`~ran.app.limits.AppLimits`).
    """

    def __init__(
        self,
        offered: Iterable[str] = (),
        *,
        allow_any_model: bool = False,
        hub_token_for_visitors: bool = False,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        limits: AppLimits | None = None,
        runtime: str = "torch",
    ) -> None:
        if runtime not in RUNTIMES:
            raise UserError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.runtime = runtime  # 'onnx': every model is an .onnx file from ran export (ran.runtime)
        self.offered = tuple(dict.fromkeys(offered))
        self.allow_any_model, self.hub_token_for_visitors = allow_any_model, hub_token_for_visitors
        default = torch.device("cpu") if runtime == "onnx" else default_device()
        self.device = torch.device(device) if device is not None else default
        self.precision = resolve_precision(precision)
        self.limits = limits or AppLimits()
        self._models: OrderedDict[str, tuple[nn.Module, str | None]] = OrderedDict()
        self._pipelines: OrderedDict[tuple[str, str, str], FacePipeline] = OrderedDict()
        self._detectors: dict[str, SharedDetector] = {}
        self._cache_lock = threading.Lock()  # held only to read or change the caches above
        self._load_lock = threading.Lock()  # one model load or pipeline build at a time
        self._turns = Turns()  # model calls, in arrival order
        self._visitors = Visitors(self.limits.per_visitor)  # requests served per client address

    def pipeline(self, model: Any, detector: Any, regions: Any) -> FacePipeline:
        """The pipeline for these options, built on first use; :class:`OptionError` if it cannot be."""
        name = self._allowed(model)
        _check_choice("detector", detector, DETECTOR_CHOICES)
        _check_choice("regions", regions, REGION_MODES)
        detector = resolve_detector(detector)
        key = (name, detector, regions)
        with self._cache_lock:
            if key in self._pipelines:
                self._pipelines.move_to_end(key)
                return self._pipelines[key]
        with self._load_lock:
            return self._build_pipeline(key)

    def load(self, model: Any) -> None:
        """Load ``model`` now if it is not loaded (to check it before serving); :class:`OptionError`."""
        name = self._allowed(model)
        with self._load_lock:
            self._model(name)

    def model_note(self, model: Any) -> str | None:
        """What loading ``model`` warned about (e.g. random weights), if it is loaded."""
        with self._cache_lock:
            entry = self._models.get(model) if isinstance(model, str) else None
        return entry[1] if entry else None

    def predict_file(
        self,
        path: str | Path,
        source: str,
        model: Any,
        detector: Any,
        regions: Any,
        keep_crops: bool = False,
        visitor: str | None = None,
    ) -> Prediction:
        """Predict the faces in the image file ``path`` (at most ``limits.max_faces``, the largest, within
        ``limits.max_seconds``); the result is named ``source`` (what the user knows the file as) and its
        ``warning`` counts the faces left out. An unusable file becomes the result's ``error``. A
        ``visitor`` (client address) with ``limits.per_visitor`` requests being served gets
        :class:`OptionError` at once, before the photo is read."""
        with self._visitors.admit(visitor) as admitted:
            if not admitted:
                raise OptionError(BUSY.format(most=self.limits.per_visitor))
            return self._predict_file(path, source, model, detector, regions, keep_crops)

    def _predict_file(
        self, path: str | Path, source: str, model: Any, detector: Any, regions: Any, keep_crops: bool
    ) -> Prediction:
        start = time.perf_counter()
        pipe = self.pipeline(model, detector, regions)
        note = self.model_note(model)
        try:
            image, warning = read_photo(path, self.limits.max_pixels)
        except InputError as err:
            return Prediction(
                InputResult(source=source, error=str(err)), None, note, time.perf_counter() - start
            )
        result, faces = pipe.preprocess(Frame(source, image, warning=warning), keep_crops)
        found = self._detectors[resolve_detector(detector)].take_found()  # 'haar' is the cascade's
        found = len(faces) if result.error else max(found, len(faces))
        analysed = self._run_model(pipe, faces, start)
        notes = [warning, _left_out_note(found, len(faces), analysed, self.limits)]
        result.warning = "; ".join(n for n in notes if n) or None
        return Prediction(result, image, note, time.perf_counter() - start)

    def _run_model(self, pipe: FacePipeline, faces: list[FaceInput], start: float) -> int:
        """The model on ``faces``, one batch per turn, until they are done or the time is up; how many."""
        done, size = 0, self.limits.batch_faces
        while done < len(faces) and time.perf_counter() - start < self.limits.max_seconds:
            with self._turns.turn():
                pipe.predict_faces(faces[done : done + size])
            done = min(done + size, len(faces))
        return done

    def _allowed(self, model: Any) -> str:
        """The model's name if this visitor may use it; else the one message that says nothing more. With
        ``allow_any_model``, a visitor may name a model folder or ONNX file of the server's, or a Hub id:
        not a file a visitor uploaded (their own graph would run here), nor a registered architecture
        name (random weights, each a model's memory)."""
        if isinstance(model, str) and model in self.offered:
            return model
        if isinstance(model, str) and self.allow_any_model and model.strip() and _visitor_may_name(model):
            return model
        raise OptionError(NOT_OFFERED)

    def _build_pipeline(self, key: tuple[str, str, str]) -> FacePipeline:
        name, detector, regions = key
        with self._cache_lock:
            if key in self._pipelines:  # built by another request while this one waited
                return self._pipelines[key]
        net = self._model(name)
        try:
            pipe = FacePipeline(
                net,
                detector=self._detector(detector),
                regions=regions,
                device=self.device,
                precision=self.precision,
                max_faces=self.limits.max_faces,
            )
        except (ValueError, RuntimeError, ImportError) as err:
            raise OptionError(f"model {_shown(name)} with regions={regions!r}: {one_line(err)}") from None
        with self._cache_lock:
            if name in self._models:  # keep the pipeline's copy (on the device) instead of a second one
                self._models[name] = (pipe.model, self._models[name][1])
            self._pipelines[key] = pipe
            while len(self._pipelines) > self.limits.max_models:
                self._pipelines.popitem(last=False)
        return pipe

    def _model(self, name: str) -> nn.Module:
        with self._cache_lock:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name][0]
        # A visitor's own Hub id never uses the server's token unless the operator said so.
        token = None if name in self.offered or self.hub_token_for_visitors else False
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                if self.runtime == "onnx":
                    net = OnnxModel(name.strip())
                else:
                    net = load_runtime_model(name.strip(), token=token)  # False: no token
        except (ValueError, OSError, RuntimeError, ImportError) as err:
            if name not in self.offered:  # a visitor's name: why it failed would tell them about the server
                print(
                    f"ran app: model {_shown(name)} asked for by a visitor: {one_line(err)}", file=sys.stderr
                )
                raise OptionError(f"model {_shown(name)} could not be loaded") from None
            raise OptionError(f"model {_shown(name)} could not be loaded: {one_line(err)}") from None
        notes = [one_line(w.message) for w in caught if issubclass(w.category, UserWarning)]
        with self._cache_lock:
            self._models[name] = (net, "; ".join(notes) or None)
            while len(self._models) > self.limits.max_models:
                dropped, _ = self._models.popitem(last=False)
                for pipe_key in [k for k in self._pipelines if k[0] == dropped]:
                    del self._pipelines[pipe_key]
        return net

    def _detector(self, name: str) -> SharedDetector:
        if name not in self._detectors:
            self._detectors[name] = SharedDetector(lambda: get_detector(name), self.limits.concurrency)
        return self._detectors[name]


def read_photo(path: str | Path, max_pixels: int) -> tuple[Image.Image, str | None]:
    """``ran.pipeline.inputs.read_image``, after refusing a photo of more than ``max_pixels`` from its
    header (nothing decoded); a file whose header cannot be read is left to ``read_image`` to explain."""
    try:
        with Image.open(path) as header:
            width, height = header.size
    except Image.DecompressionBombError:
        raise InputError(
            f"image too large: this server takes photos of at most {max_pixels:,} pixels"
        ) from None
    except (OSError, SyntaxError, ValueError):
        return read_image(path)
    if width * height > max_pixels:
        raise InputError(
            f"image too large: {width}x{height} = {width * height:,} pixels; this server takes photos of "
            f"at most {max_pixels:,} pixels (downscale it)"
        )
    return read_image(path)


def _visitor_may_name(model: str) -> bool:
    """Whether a model a visitor typed may be loaded (``allow_any_model``): not a registered architecture
    name, and not a path inside the folder where gradio keeps visitors' uploads."""
    from gradio.utils import get_upload_folder

    from ran.modelio.loading import resolve_model_source

    name = model.strip()
    uploads = Path(get_upload_folder()).resolve()
    path = Path(name).expanduser().resolve()
    if path == uploads or uploads in path.parents:
        return False
    try:
        return resolve_model_source(name).kind != "registered"
    except (ValueError, OSError):
        return True  # not a usable name at all: loading it says so


def _left_out_note(found: int, kept: int, analysed: int, limits: AppLimits) -> str | None:
    """How many faces were not analysed and why (the cap on faces, the request's time limit)."""
    reasons = []
    if found > kept:
        reasons.append(f"this server analyses at most {limits.max_faces} faces per photo (the largest)")
    if kept > analysed:
        reasons.append(f"the request's time limit ({limits.max_seconds:g} s) was reached")
    return f"{found - analysed} of {found} faces not analysed: {' and '.join(reasons)}" if reasons else None


def _shown(value: str) -> str:
    return repr(value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "...")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError(f"{name}: expected one of {', '.join(choices)}, got {_shown(str(value))}")


__all__ = [
    "NOT_OFFERED",
    "AppPredictor",
    "OptionError",
    "Prediction",
    "read_photo",
]
