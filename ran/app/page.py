"""The page: photo and options on the left, results on the right, and the events that connect them.

Every event that predicts shares one concurrency group of ``AppLimits.concurrency`` requests at once
(more wait in a queue of ``AppLimits.queue_size``); inside, requests take turns on the model one batch
of faces at a time (``ran.app.predictor``). The model picker offers the server's models only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ran.app.handlers import WELCOME, PageHandlers
from ran.app.limits import AppLimits
from ran.app.predictor import AppPredictor, OptionError
from ran.errors import UserError
from ran.extras import require
from ran.pipeline.pipeline import LANDMARK_REGIONS, landmarks_unusable
from ran.vocabulary import DETECTORS

gr = require("gradio", "ran app")

EXAMPLES = Path(__file__).resolve().parent / "examples"
TITLE = "RAN: facial expressions"
INTRO = (
    "# Facial expressions with a Region Attention Network\n"
    "Upload a photo or take a webcam snapshot. Every face found is boxed and named with its most likely "
    "expression; choose a face to see its probabilities and which regions of the face the network weighted."
)
PREDICT_GROUP = "ran-predict"
REGION_CHOICES = [("the model's regions", "model"), ("eyes, nose, mouth (landmarks)", "landmarks")]


def build_app(
    model: str,
    *,
    models: Sequence[str] = (),
    detector: str = "mtcnn",
    regions: str = "model",
    device: str | torch.device | None = None,
    precision: str = "fp32",
    strict: bool = True,
    allow_any_model: bool = False,
    hub_token_for_visitors: bool = False,
    limits: AppLimits | None = None,
    runtime: str = "torch",
) -> Any:
    """The web app as a ``gradio.Blocks`` (call ``.launch()`` on it), its queue set up.

    Args:
        model: the model shown first and used by the ``predict`` API endpoint: a model folder, a training
            checkpoint folder, a Hub id or a registered name (``ran.modelio.loading.load_model``).
        models: more models offered in the page's picker. Visitors may use only these and ``model``
            (by these names), unless ``allow_any_model``.
        detector / regions / device / precision: as in ``ran predict``.
        strict: load the offered models now and raise ``ValueError`` if one cannot be (``ran app`` fails
            before serving); False serves anyway and the page says why a model is unusable (a Space).
        allow_any_model: the picker also takes any model folder on the server or Hub id a visitor types.
        hub_token_for_visitors: with ``allow_any_model``, download visitors' Hub ids with the server's Hub
            token (its private repositories become reachable); by default they get no token.
        limits: what one request may take (``ran.app.limits.AppLimits``; defaults when None).
        runtime: ``torch``, or ``onnx``: the models are .onnx files from ``ran export`` (fp32 or int8),
            run by onnxruntime on the CPU (``ran.runtime.OnnxModel``).
    """
    if hub_token_for_visitors and not allow_any_model:
        raise UserError("hub_token_for_visitors: only with allow_any_model (--allow-any-model)")
    limits = limits or AppLimits()
    offered = list(dict.fromkeys([model, *models]))
    predictor = AppPredictor(
        offered,
        allow_any_model=allow_any_model,
        hub_token_for_visitors=hub_token_for_visitors,
        device=device,
        precision=precision,
        limits=limits,
        runtime=runtime,
    )
    _preload(predictor, offered if strict else [model], detector, regions, strict)
    handlers = PageHandlers(predictor, model, detector, regions)
    cache = (limits.cache_check_s, limits.cache_age_s)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=cache) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                inputs = _input_column(offered, detector, regions, allow_any_model)
            with gr.Column(scale=1):
                outputs = _output_column()
        shown = gr.State(None)
        _connect(app, handlers, inputs, outputs, shown, limits.concurrency)
    return app.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency)


def _preload(
    predictor: AppPredictor, models: Sequence[str], detector: str, regions: str, strict: bool
) -> None:
    """Load ``models`` before serving, and the pipeline of the first (shown first; loaded last, so the
    most recently used); a model that does not load raises when ``strict``, else the page says why."""
    for name in reversed(models):
        try:
            if name == models[0]:
                pipe = predictor.pipeline(name, detector, regions)
                _note_landmarks(name, pipe.model.num_regions)
            else:
                predictor.load(name)
            if predictor.model_note(name):  # random weights, say: the operator hears it before visitors
                print(f"note: model {name}: {predictor.model_note(name)}", file=sys.stderr)
        except OptionError:
            if strict:
                raise


def _note_landmarks(name: str, num_regions: int) -> None:
    """Say before serving that the page's landmark regions will not work with this model (a visitor
    would otherwise learn it only after a photo)."""
    if landmarks_unusable(num_regions):
        print(
            f"note: model {name}: the page's 'landmarks' regions choice will fail for it (it has "
            f"{num_regions} regions; landmarks give {LANDMARK_REGIONS}); its own regions work",
            file=sys.stderr,
        )


def _input_column(
    offered: Sequence[str], detector: str, regions: str, allow_any_model: bool
) -> dict[str, Any]:
    photo = gr.Image(
        sources=["upload", "webcam"], type="filepath", label="Photo", elem_id="ran-photo", height=360
    )
    examples = sorted(EXAMPLES.glob("*.jpg"))
    if examples:
        gr.Examples(
            [[str(p)] for p in examples], inputs=[photo], label="Example photos", elem_id="ran-examples"
        )
    label = "Model: one of the listed models" + (
        ", a model folder, a training checkpoint folder or a Hub id (ORG/NAME)" if allow_any_model else ""
    )
    return {
        "photo": photo,
        "model": gr.Dropdown(
            choices=list(offered),
            value=offered[0],
            allow_custom_value=allow_any_model,
            label=label,
            elem_id="ran-model",
        ),
        "detector": gr.Radio(list(DETECTORS), value=detector, label="Face detector", elem_id="ran-detector"),
        "regions": gr.Radio(REGION_CHOICES, value=regions, label="Face regions", elem_id="ran-regions"),
    }


def _output_column() -> dict[str, Any]:
    outputs = {
        "status": gr.Markdown(WELCOME, elem_id="ran-status"),
        "photo": gr.AnnotatedImage(label="Faces found", elem_id="ran-faces", format="png"),
        "face": gr.Dropdown(choices=[], label="Face", interactive=True, elem_id="ran-face"),
        "bars": gr.Label(label="Expression probabilities", elem_id="ran-bars"),
        "picture": gr.Image(
            label="Regions weighted by attention",
            type="numpy",
            format="png",
            interactive=False,
            elem_id="ran-picture",
        ),
    }
    with gr.Accordion("JSON (the same as ran predict --json)", open=False):
        outputs["json"] = gr.JSON(label="result", elem_id="ran-json")
    return outputs


def _connect(
    app: Any,
    handlers: PageHandlers,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    shown: Any,
    concurrency: int,
) -> None:
    options = [inputs["model"], inputs["detector"], inputs["regions"]]
    page = [outputs[k] for k in ("status", "photo", "face", "bars", "picture", "json")] + [shown]
    gr.on(
        [inputs["photo"].change, *(o.change for o in options)],
        handlers.analyse,
        inputs=[inputs["photo"], *options, shown],
        outputs=page,
        preprocess=False,
        api_visibility="private",
        concurrency_id=PREDICT_GROUP,
        concurrency_limit=concurrency,
    )
    outputs["face"].input(
        handlers.choose_face,
        inputs=[shown, outputs["face"]],
        outputs=[outputs["bars"], outputs["picture"]],
        api_visibility="private",
    )
    outputs["photo"].select(
        handlers.click_face,
        inputs=[shown],
        outputs=[outputs["face"], outputs["bars"], outputs["picture"]],
        api_visibility="private",
    )
    app.load(
        handlers.model_status,
        inputs=options,
        outputs=[outputs["status"]],
        preprocess=False,  # the handler checks the values itself, with the same message for any
        api_visibility="private",
    )
    gr.on(
        [],
        handlers.api_predict,
        inputs=[inputs["photo"]],
        outputs=[outputs["json"]],
        preprocess=False,
        api_name="predict",
        concurrency_id=PREDICT_GROUP,
        concurrency_limit=concurrency,
    )


def serve(app: Any, *, behind_proxy: bool = False, **launch_options: Any) -> Any:
    """Serve the page (``launch_options`` go to gradio's ``launch``) behind :class:`RequestGuard`. Without
    ``behind_proxy``, the server takes no visitor's word for their address: uvicorn would take
    ``X-Forwarded-For`` from any connection made from this machine (an ssh tunnel, a port forward), and
    the requests-per-visitor bound would count whatever address the header names."""
    import os

    from starlette.middleware import Middleware

    from ran.app.guard import RequestGuard

    if not behind_proxy:
        os.environ["FORWARDED_ALLOW_IPS"] = ""  # read by uvicorn when gradio starts it
    return app.launch(app_kwargs={"middleware": [Middleware(RequestGuard)]}, **launch_options)


__all__ = ["EXAMPLES", "build_app", "serve"]
