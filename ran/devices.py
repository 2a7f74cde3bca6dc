"""Where inference runs, without touching the caller's model.

Library functions (evaluation, prediction, export) take a model that the caller keeps using afterwards.
They must not move it, cast it, change its memory format or leave it in eval mode: :func:`inference_model`
hands them the model itself when nothing needs to change (eval mode for the block, then restored), and a
copy when it must move to another device or take the faster channels-last layout.
"""

from __future__ import annotations

import copy
import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ran.errors import UserError, one_line


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
        return one_line(err)
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
        raise UserError(f"{name}: expected cpu, cuda or cuda:N, got {requested!r}") from None
    if device.type == "cuda":
        reason = cuda_unusable_reason()
        if reason is not None:
            raise UserError(f"{name} {requested}: CUDA is not usable here: {reason}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{name} {requested}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise UserError(f"{name}: expected cpu, cuda or cuda:N, got {requested!r}")
    return device


def _is_channels_last(model: nn.Module) -> bool:
    weights = [p for p in model.parameters() if p.dim() == 4]
    return all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


@contextmanager
def inference_model(
    model: nn.Module, device: str | torch.device | None = None, channels_last: bool = True
) -> Iterator[nn.Module]:
    """``model`` ready for inference on ``device`` (default: where it is), in eval mode.

    The caller's model is never changed: when the device or the memory format must change, the block gets
    a copy; otherwise it gets the model itself in eval mode, and its train/eval mode is restored after.
    """
    target = torch.device(device) if device is not None else model_device(model)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    moves = model_device(model) != target
    reformats = channels_last and not _is_channels_last(model)
    if moves or reformats:
        work = copy.deepcopy(model).to(target)
        if reformats:
            work = work.to(memory_format=torch.channels_last)
        yield work.eval()
        return
    was_training = model.training
    try:
        yield model.eval()
    finally:
        model.train(was_training)


def inference_copy(
    model: nn.Module, device: str | torch.device | None = None, channels_last: bool = True
) -> nn.Module:
    """A copy of ``model`` for inference on ``device`` (default: where it is), in eval mode, channels-last
    when asked. For objects that keep a model across many calls (a prediction pipeline): the caller's model
    is never changed, and later changes to it do not reach the copy."""
    target = torch.device(device) if device is not None else model_device(model)
    work = copy.deepcopy(model).to(target)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    return work.eval()


def compile_for_inference(fn: Any, device: torch.device | str) -> Any:
    """``torch.compile`` for inference on ``device``. On a CPU with inductor's freezing, which folds the
    weights into the graph as constants (BatchNorm into convolutions, prepacked oneDNN kernels): ResNet-18,
    8 crops of 224 px, fp32, 2 cores: 1.23x eager, where compiling without freezing gives 1.05x. Only for
    models whose weights no longer change (inference copies)."""
    options = {"freezing": True} if torch.device(device).type == "cpu" else None
    return torch.compile(fn, options=options)


__all__ = [
    "compile_for_inference",
    "cuda_unusable_reason",
    "default_device",
    "gpu_expected",
    "gpu_fallback_warning",
    "inference_copy",
    "inference_model",
    "model_device",
    "resolve_device",
]
