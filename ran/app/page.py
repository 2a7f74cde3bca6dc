"""The page: photo and options on the left, results on the right, and the events that connect them.

Every event that predicts shares one concurrency group, so the page and the API take turns on the one
pipeline (which serves one call at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ran.app.handlers import WELCOME, PageHandlers
from ran.app.predictor import DETECTORS, AppPredictor, OptionError
from ran.extras import require
from ran.pipeline import DEFAULT_MODEL

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
    model: str = DEFAULT_MODEL,
    *,
    models: Sequence[str] = (),
    detector: str = "mtcnn",
    regions: str = "model",
    device: str | torch.device | None = None,
    precision: str = "fp32",
    strict: bool = True,
) -> Any:
    """The web app as a ``gradio.Blocks`` (call ``.launch()`` on it).

    Args:
        model: the model shown first and used by the ``predict`` API endpoint: a model folder, a training
            checkpoint folder, a Hub id or a registered name (``ran.loading.load_model``).
        models: more choices for the page's model picker (which also takes any typed name).
        detector / regions / device / precision: as in ``ran predict``.
        strict: load ``model`` now and raise ``ValueError`` if it cannot be (``ran app`` fails before
            serving); False serves anyway and the page says why the model is unusable (a Space).
    """
    predictor = AppPredictor(device=device, precision=precision)
    try:
        predictor.pipeline(model, detector, regions)
    except OptionError:
        if strict:
            raise
    handlers = PageHandlers(predictor, model, detector, regions)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                inputs = _input_column(model, models, detector, regions)
            with gr.Column(scale=1):
                outputs = _output_column()
        shown = gr.State(None)
        _connect(app, handlers, inputs, outputs, shown)
    return app


def _input_column(model: str, models: Sequence[str], detector: str, regions: str) -> dict[str, Any]:
    photo = gr.Image(
        sources=["upload", "webcam"], type="filepath", label="Photo", elem_id="ran-photo", height=360
    )
    examples = sorted(EXAMPLES.glob("*.jpg"))
    if examples:
        gr.Examples(
            [[str(p)] for p in examples], inputs=[photo], label="Example photos", elem_id="ran-examples"
        )
    choices = list(dict.fromkeys([model, *models]))
    return {
        "photo": photo,
        "model": gr.Dropdown(
            choices=choices,
            value=model,
            allow_custom_value=True,
            label="Model: a model folder, a training checkpoint folder or a Hub id (ORG/NAME)",
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
    app: Any, handlers: PageHandlers, inputs: dict[str, Any], outputs: dict[str, Any], shown: Any
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
    app.load(handlers.model_status, inputs=options, outputs=[outputs["status"]], api_visibility="private")
    gr.on(
        [],
        handlers.api_predict,
        inputs=[inputs["photo"]],
        outputs=[outputs["json"]],
        preprocess=False,
        api_name="predict",
        concurrency_id=PREDICT_GROUP,
    )


__all__ = ["EXAMPLES", "build_app"]
