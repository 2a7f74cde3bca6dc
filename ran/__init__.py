"""Region Attention Networks for pose- and occlusion-robust facial expression recognition.

``import ran`` registers the RAN model family in timm (``timm.create_model('ran_resnet18')``).
"""

from __future__ import annotations

from typing import Any

import ran.threads  # noqa: F401  (first: OMP_WAIT_POLICY=PASSIVE before torch is imported)
from ran.losses import RANCriterion, RegionBiasedLoss
from ran.models import RANOutput, RegionAttentionNet
from ran.regions import REGION_PRESETS, crop_regions, resolve_regions

__version__ = "0.1.0"

__all__ = [
    "REGION_PRESETS",
    "RANCriterion",
    "RANOutput",
    "RegionAttentionNet",
    "RegionBiasedLoss",
    "__version__",
    "crop_regions",
    "from_pretrained",
    "load_model",
    "predict",
    "push_to_hub",
    "resolve_regions",
    "save_pretrained",
    "transform_for",
]

# Layers above the model load lazily: `import ran` stays a model-only import.
_LAZY = {
    "from_pretrained": "ran.loading",
    "load_model": "ran.loading",
    "save_pretrained": "ran.hub",
    "push_to_hub": "ran.hub",
    "predict": "ran.pipeline",
    "transform_for": "ran.transforms",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ran' has no attribute {name!r}")
