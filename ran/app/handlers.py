"""The page's event functions: a photo (upload, webcam snapshot or example) -> everything the page shows;
a face chosen -> its bars and picture; and the ``predict`` API endpoint (the ``ran predict --json`` line).

Photos arrive as gradio's raw upload record (the events run with ``preprocess=False``): the file as
uploaded, its path inside gradio's upload cache (checked here: the record is the visitor's) and the name
the user gave it. So a corrupt file reaches ``ran.pipeline.inputs.read_image`` and becomes a message in
the page, as in ``ran predict``, instead of an exception inside gradio. Nothing here raises for a bad
photo, model or option: each becomes the status line, and the server keeps serving.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ran.app import views
from ran.app.predictor import AppPredictor, OptionError
from ran.extras import require
from ran.pipeline import FacePrediction
from ran.pipeline.pictures import face_picture

gr = require("gradio", "ran app")

WELCOME = "Upload a photo or take a webcam snapshot; every face found is shown with its expression."


def uploaded_file(payload: Any) -> tuple[str, str]:
    """(path on the server, the name the user knows) of an uploaded photo (gradio's FileData record).

    The record comes from the visitor: gradio checks its path only when the record says it is one of
    gradio's (``meta``), so any other path is refused here. Only a regular file inside gradio's upload
    cache is read (after links and ``..`` are resolved): an upload, a webcam snapshot or an example."""
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path or not isinstance(path, str) or "\x00" in path:
        raise OptionError("photo: no image file was received; upload the photo again")
    real = Path(os.path.realpath(path))
    cache = Path(os.path.realpath(gr.utils.get_upload_folder()))
    if not real.is_relative_to(cache) or not real.is_file():  # is_file: no folder, FIFO or device
        raise OptionError("photo: not a photo uploaded to this page; upload the photo again")
    name = payload.get("orig_name")
    name = name if isinstance(name, str) and name else real.name
    return str(real), Path(name).name


def visitor_address(request: gr.Request | None, behind_proxy: bool = False) -> str | None:
    """Who sent a request over HTTP: its connection's address or, ``behind_proxy``, the last
    ``X-Forwarded-For`` entry (the one the proxy appended; earlier entries are the visitor's to write).
    None for a direct call."""
    if request is None:
        return None
    headers = getattr(request, "headers", None) or {}
    forwarded = [v for k, v in headers.items() if k.lower() == "x-forwarded-for"] if behind_proxy else []
    last = ",".join(forwarded).rsplit(",", 1)[-1].strip()
    host = last or getattr(getattr(request, "client", None), "host", None)
    return host if isinstance(host, str) and host else None


@dataclass
class Shown:
    """What a session's page shows (its state): the photo and options it was predicted with, and its faces
    (with their crops, for the pictures of the face chosen later)."""

    key: tuple[str, str, str, str] | None = None
    faces: list[FacePrediction] = field(default_factory=list)

    def face(self, index: Any) -> FacePrediction | None:
        return next((f for f in self.faces if f.face_index == index), None)

    def drop_crops(self) -> None:
        for face in self.faces:
            face.crop = None


class PageHandlers:
    """Event functions bound to one app's predictor and its default model / detector / region mode."""

    def __init__(self, predictor: AppPredictor, model: str, detector: str, regions: str) -> None:
        self.predictor = predictor
        self.model, self.detector, self.regions = model, detector, regions
        self._kept: deque[Shown] = deque()  # the pages whose crops are kept, oldest first
        self._kept_lock = threading.Lock()

    def _keep(self, shown: Shown) -> Shown:
        """Keep ``shown``'s crops, and only the latest ``kept_pages`` pages' (``AppLimits``): a page's state
        outlives it by an hour, so the crops of every visitor's photo would otherwise add up."""
        with self._kept_lock:
            self._kept.append(shown)
            while len(self._kept) > self.predictor.limits.kept_pages:
                self._kept.popleft().drop_crops()
        return shown

    def analyse(
        self,
        payload: Any,
        model: str,
        detector: str,
        regions: str,
        shown: Shown | None,
        request: gr.Request | None = None,
    ) -> tuple[Any, ...]:
        """A photo and the page's options -> status, annotated photo, face selector, bars, picture, JSON,
        and what is shown (the session's state). The photo already shown with the same options is not
        predicted again (gradio fires ``change`` twice when an image replaces another). gradio passes the
        ``request``: its client address is the visitor whose requests at once are bounded."""
        if payload is None:
            return self._empty(self.model_status(model, detector, regions))
        try:
            path, name = uploaded_file(payload)
            key = (path, model, detector, regions)
            if shown is not None and shown.key == key:
                return gr.skip()
            prediction = self.predictor.predict_file(
                path, name, model, detector, regions, keep_crops=True, visitor=self._visitor(request)
            )
        except OptionError as err:
            return self._empty(views.error_text(str(err)))
        faces = prediction.result.faces
        photo = views.annotated_photo(prediction) if prediction.image is not None else None
        first = faces[0] if faces else None
        return (
            views.status_text(prediction),
            photo,
            gr.update(choices=views.face_choices(prediction), value=first.face_index if first else None),
            *self._face_outputs(first),
            prediction.result.to_dict(),
            self._keep(Shown(key, faces)),
        )

    def choose_face(self, shown: Shown | None, index: Any) -> tuple[Any, Any]:
        """The bars and the region-attention picture of the face chosen in the selector."""
        return self._face_outputs(shown.face(index) if shown else None)

    def click_face(self, shown: Shown | None, event: gr.SelectData) -> tuple[Any, ...]:
        """A face clicked on the photo (or its legend entry) becomes the chosen face."""
        chosen = shown.face(event.index) if shown and isinstance(event.index, int) else None
        return (chosen.face_index if chosen else None, *self._face_outputs(chosen))

    def model_status(self, model: str, detector: str, regions: str) -> str:
        """The status line when the page opens or the model changes without a photo: ready, or why not."""
        try:
            pipe = self.predictor.pipeline(model, detector, regions)
        except OptionError as err:
            return views.error_text(str(err))
        lines = [f"Model {views.escape(model)} ready ({', '.join(pipe.class_names)}). {WELCOME}"]
        note = self.predictor.model_note(model)
        return "\n\n".join(lines + ([f"Note: {views.escape(note)}"] if note else []))

    def api_predict(self, photo: Any, request: gr.Request | None = None) -> dict[str, Any]:
        """The ``predict`` endpoint: one photo -> the ``ran predict --json`` line of it, with the app's
        model, detector and region mode; ``source`` is the uploaded file's name. A photo that cannot be
        used gives a line with ``error`` (as ``ran predict --json`` prints); a model that does not load
        is an API error."""
        try:
            path, name = uploaded_file(photo)
            prediction = self.predictor.predict_file(
                path, name, self.model, self.detector, self.regions, visitor=self._visitor(request)
            )
        except OptionError as err:
            raise gr.Error(str(err), print_exception=False) from None
        return prediction.result.to_dict()

    def _visitor(self, request: gr.Request | None) -> str | None:
        return visitor_address(request, self.predictor.limits.behind_proxy)

    @staticmethod
    def _face_outputs(face: FacePrediction | None) -> tuple[Any, Any]:
        if face is None:
            return None, None
        return dict(face.probabilities), face_picture(face) if face.crop is not None else None

    @staticmethod
    def _empty(status: str) -> tuple[Any, ...]:
        return status, None, gr.update(choices=[], value=None), None, None, None, Shown()


__all__ = ["WELCOME", "PageHandlers", "Shown", "uploaded_file", "visitor_address"]
