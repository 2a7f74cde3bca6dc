"""The app's side of prediction: models loaded once per name, one :class:`~ran.pipeline.FacePipeline` per
(model, detector, region mode), and one prediction at a time.

A web server calls from several threads while ``FacePipeline`` serves one call at a time, so every call
goes through one lock. Models come from ``ran.loading.load_model`` (model folders, training checkpoint
folders, Hub ids, registered names) and stay cached, so switching back and forth in the page costs
nothing; the oldest is dropped beyond ``max_models``.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ran.devices import default_device
from ran.loading import load_model
from ran.pipeline import FacePipeline, InputResult
from ran.pipeline.inputs import InputError, read_image
from ran.precision import resolve_precision

DETECTORS = ("mtcnn", "cascade")
REGION_MODES = ("model", "landmarks")


@dataclass
class Prediction:
    """One photo's result, the photo as decoded (for display; None when it could not be read), any note
    about the model (e.g. random weights) and the seconds the prediction took."""

    result: InputResult
    image: Image.Image | None  # RGB or L, EXIF orientation applied
    model_note: str | None
    seconds: float


class OptionError(ValueError):
    """A model or an option chosen in the page or the API cannot be used; the message names it and why."""


class AppPredictor:
    """Models and pipelines of one app. ``device`` / ``precision`` as in ``ran predict``."""

    def __init__(
        self,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        max_models: int = 4,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.precision = resolve_precision(precision)
        self.max_models = max_models
        self._models: OrderedDict[str, tuple[nn.Module, str | None]] = OrderedDict()
        self._pipelines: OrderedDict[tuple[str, str, str], FacePipeline] = OrderedDict()
        self._lock = threading.Lock()

    def pipeline(self, model: str, detector: str, regions: str) -> FacePipeline:
        """The pipeline for these options, built on first use; :class:`OptionError` if it cannot be."""
        with self._lock:
            return self._pipeline(model, detector, regions)

    def model_note(self, model: str) -> str | None:
        """What loading ``model`` warned about (e.g. random weights), if it is loaded."""
        entry = self._models.get(_key(model))
        return entry[1] if entry else None

    def predict_file(
        self, path: str | Path, source: str, model: str, detector: str, regions: str, keep_crops: bool = False
    ) -> Prediction:
        """Predict every face in the image file ``path``; the result is named ``source`` (what the user
        knows the file as). An unreadable file becomes the result's ``error``, as in ``ran predict``."""
        with self._lock:
            pipe = self._pipeline(model, detector, regions)
            start = time.perf_counter()
            try:
                image, warning = read_image(path)
            except InputError as err:
                result = InputResult(source=source, error=str(err))
                return Prediction(result, None, self.model_note(model), time.perf_counter() - start)
            [result] = pipe(image, keep_crops=keep_crops)
            result.source, result.warning = source, warning
            return Prediction(result, image, self.model_note(model), time.perf_counter() - start)

    def _pipeline(self, model: str, detector: str, regions: str) -> FacePipeline:
        _check_choice("detector", detector, DETECTORS)
        _check_choice("regions", regions, REGION_MODES)
        key = (_key(model), detector, regions)
        if key in self._pipelines:
            self._pipelines.move_to_end(key)
            return self._pipelines[key]
        net = self._model(model)
        try:
            pipe = FacePipeline(
                net, detector=detector, regions=regions, device=self.device, precision=self.precision
            )
        except (ValueError, RuntimeError, ImportError) as err:
            raise OptionError(f"model {model!r} with regions={regions!r}: {_one_line(err)}") from None
        self._pipelines[key] = pipe
        while len(self._pipelines) > self.max_models:
            self._pipelines.popitem(last=False)
        return pipe

    def _model(self, model: str) -> nn.Module:
        key = _key(model)
        if not key:
            raise OptionError("model: empty name; expected a model folder, a checkpoint folder or a Hub id")
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key][0]
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                net = load_model(key)
        except (ValueError, OSError, RuntimeError, ImportError) as err:
            raise OptionError(f"model {key!r} could not be loaded: {_one_line(err)}") from None
        notes = [_one_line(w.message) for w in caught if issubclass(w.category, UserWarning)]
        self._models[key] = (net, "; ".join(notes) or None)
        while len(self._models) > self.max_models:
            dropped, _ = self._models.popitem(last=False)
            for pipe_key in [k for k in self._pipelines if k[0] == dropped]:
                del self._pipelines[pipe_key]
        return net


def _key(model: str) -> str:
    return str(model or "").strip()


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


def _one_line(err: object) -> str:
    return " ".join(str(err).split()) or type(err).__name__


__all__ = ["DETECTORS", "REGION_MODES", "AppPredictor", "OptionError", "Prediction"]
