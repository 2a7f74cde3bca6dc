"""Values the command-line parsers and the library share, in a module that imports nothing heavy (so a
parser can show them without importing torch)."""

from __future__ import annotations

import re
from typing import Any

# No trained RAN weights are published, so there is no default model: what to give instead.
HOW_TO_GET_A_MODEL = (
    "no trained weights are published, so give one: 'ran demo' trains a small one into ran-demo/best "
    "in a few minutes, 'ran train ... --output-dir DIR' writes DIR/best, or a Hub id of a model you uploaded"
)

# The named RAN architectures (registered in timm by ``ran.models``): backbone and region size of each;
# every other constructor argument can be overridden.
RAN_VARIANTS: dict[str, dict[str, Any]] = {
    "ran": {"backbone": "resnet18", "region_size": 224},
    **{f"ran_resnet{d}": {"backbone": f"resnet{d}", "region_size": 224} for d in (18, 34, 50, 101)},
    **{f"ran_iresnet{d}": {"backbone": f"iresnet{d}", "region_size": 112} for d in (18, 34, 50, 100)},
    "ran_vgg16": {"backbone": "vgg16", "region_size": 224},
}

# A Hugging Face Hub repository id, ORG/NAME (models and datasets).
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# The most classes a model may have: a model folder's config, ``ran models --num-classes``.
MAX_CLASSES = 100_000
MAX_IN_CHANS = 16  # input channels a model may take (RGB 3, gray 1, with depth or alpha a few more)

# The oldest ONNX opset ``ran export`` writes (RoiAlign with half_pixel needs 16); the newest is what the
# installed torch can write (``ran.export.OPSETS``).
MIN_OPSET = 17
# The default: opset 18 has Resize with antialias, which a model with a face size needs in its graph.
DEFAULT_OPSET = 18

# Videos (``ran predict``, ``ran.pipeline.video``): the face detector runs on every DETECT_EVERY-th sampled
# frame, faces are tracked in between; ``--smooth`` without a value weighs the newest frame by DEFAULT_SMOOTH.
DETECT_EVERY = 5
DEFAULT_SMOOTH = 0.5
# Photos and frames: the face detector sees a copy at this fraction of the image's size (``--detect-scale``;
# why 0.5: ran.pipeline.faces, beside DETECT_MIN_SIDE).
DETECT_SCALE = 0.5

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_SMOOTH",
    "DETECT_EVERY",
    "DETECT_SCALE",
    "HOW_TO_GET_A_MODEL",
    "MIN_OPSET",
    "RAN_VARIANTS",
]
