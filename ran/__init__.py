"""Region Attention Networks for pose- and occlusion-robust facial expression recognition.

``import ran`` registers the RAN model family in timm (``timm.create_model('ran_resnet18')``): at once if
timm is imported, else as soon as it is (``ran.registration``). Everything this package offers is imported
on first use (``ran.lazy``), so ``import ran`` itself does not import torch: ``ran --help`` answers at
once, and the compute threads' settings (``ran.threads``) are in place before torch starts.
"""

from __future__ import annotations

import ran.threads  # noqa: F401  (first: OMP_WAIT_POLICY=PASSIVE before torch is imported)
from ran.lazy import lazy_attributes
from ran.registration import register_in_timm

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

__getattr__ = lazy_attributes(
    __name__,
    {
        "RANCriterion": "ran.losses",
        "RegionBiasedLoss": "ran.losses",
        "RANOutput": "ran.models",
        "RegionAttentionNet": "ran.models",
        "REGION_PRESETS": "ran.regions",
        "crop_regions": "ran.regions",
        "resolve_regions": "ran.regions",
        "from_pretrained": "ran.modelio.loading",
        "load_model": "ran.modelio.loading",
        "save_pretrained": "ran.modelio.hub",
        "push_to_hub": "ran.modelio.hub",
        "predict": "ran.pipeline",
        "transform_for": "ran.transforms",
    },
)

register_in_timm()
