"""``ran app``: a web page (Gradio) for trying a RAN model on photos, and the same app as a Hugging Face
Space (``hub/space/``).

* ``predictor``: the models visitors may use (the offered ones), loaded once per name, one pipeline per
  (model, detector, region mode), requests taking turns on the model (no gradio needed).
* ``limits``: what one request may take (faces, pixels, seconds, requests at once, models in memory).
* ``views``: what the page shows of a prediction, as plain values (no gradio needed).
* ``handlers`` / ``page``: the event functions and the page (need the ``app`` extra: gradio).

``build_app`` and ``serve`` (gradio's launch behind ``guard.RequestGuard``) are imported on first use,
so ``ran.app.predictor`` and ``ran.app.views`` work without gradio.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import ran.app.page

        return getattr(ran.app.page, name)
    raise AttributeError(f"module 'ran.app' has no attribute {name!r}")
