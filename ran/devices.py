"""Which device a command runs on: the user's choice checked, the default, and why a GPU is not used.

How inference treats the caller's model on that device (never changed; one copy policy) is
``ran.inference``'s.
"""

from __future__ import annotations

import glob
import os

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without tensors."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def default_device() -> torch.device:
    """Where a command runs when the user names no device: the GPU when CUDA works, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def gpu_expected() -> str | None:
    """Why this machine looks like it has an NVIDIA GPU (a visible-devices setting, device files), or None.

    Used to tell a silent CPU fallback from a machine that simply has no GPU.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return None if visible.strip() in ("", "-1") else f"CUDA_VISIBLE_DEVICES={visible}"
    files = sorted(glob.glob("/dev/nvidia[0-9]*"))
    return f"{files[0]} exists" if files else None


def cuda_unusable_reason() -> str | None:
    """Why PyTorch cannot use CUDA here (no CUDA build, no driver, driver too old, ...); None when it can."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build"
    try:
        torch.cuda.init()
    except (RuntimeError, AssertionError) as err:
        return " ".join(str(err).split())
    return "torch.cuda.is_available() is False (no usable device)"


def gpu_fallback_warning() -> str | None:
    """A one-line warning when a GPU seems present but CUDA is not usable, with both reasons; else None."""
    expected = gpu_expected()
    if expected is None:
        return None
    reason = cuda_unusable_reason()
    if reason is None:
        return None
    return (
        f"warning: running on the CPU although a GPU seems present ({expected}): CUDA is not usable: {reason}"
    )


def resolve_device(requested: str | None, name: str = "device") -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` -> that device; None or ``auto`` -> :func:`default_device`.

    A CUDA request on a machine where CUDA is not usable is refused (a ValueError with the reason),
    never quietly run on the CPU.
    """
    if requested is None or str(requested).lower() == "auto":
        return default_device()
    try:
        device = torch.device(str(requested).lower())
    except RuntimeError:
        raise ValueError(f"{name}: expected cpu, cuda or cuda:N, got {requested!r}") from None
    if device.type == "cuda":
        reason = cuda_unusable_reason()
        if reason is not None:
            raise ValueError(f"{name} {requested}: CUDA is not usable here: {reason}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {requested}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ValueError(f"{name}: expected cpu, cuda or cuda:N, got {requested!r}")
    return device


__all__ = [
    "cuda_unusable_reason",
    "default_device",
    "gpu_expected",
    "gpu_fallback_warning",
    "model_device",
    "resolve_device",
]
