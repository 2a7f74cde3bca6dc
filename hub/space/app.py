"""The ``ran app`` page as a Hugging Face Space.

Environment variables (Space settings -> Variables):
    RAN_MODEL    the model shown and used by the /predict API endpoint: a Hub id or a folder inside the
                 Space (required: no trained weights are published)
    RAN_CHOICES  more models for the page's picker, separated by commas (optional)
    RAN_DEVICE   cpu, cuda, ... (default: cuda when the Space has a GPU)

Visitors can use only these models, and each request is bounded (``ran.app.limits.AppLimits``'s
defaults): the Space is served with ``build_app``'s safe defaults. Every connection to a Space comes from
its proxy, so a visitor's address (requests at once per visitor) is the one the proxy appends to
``X-Forwarded-For`` (``behind_proxy``; Spaces set ``SPACE_ID``). A model that does not load does not stop
the Space: the page says why (``strict=False``).
"""

from __future__ import annotations

import os

from ran.app import build_app, serve
from ran.app.limits import AppLimits
from ran.constants import HOW_TO_GET_A_MODEL

MODEL = os.environ.get("RAN_MODEL")
if not MODEL:
    raise SystemExit(f"RAN_MODEL is not set (Space settings -> Variables); {HOW_TO_GET_A_MODEL}")
CHOICES = [name.strip() for name in os.environ.get("RAN_CHOICES", "").split(",") if name.strip()]

LIMITS = AppLimits(behind_proxy=bool(os.environ.get("SPACE_ID")))
demo = build_app(
    MODEL, models=CHOICES, device=os.environ.get("RAN_DEVICE") or None, strict=False, limits=LIMITS
)

if __name__ == "__main__":
    serve(demo, behind_proxy=LIMITS.behind_proxy, max_file_size="50mb")
