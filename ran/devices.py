"""Where inference runs, without touching the caller's model.

Library functions (evaluation, prediction, export) take a model that the caller keeps using afterwards.
They must not move it, cast it, change its memory format or leave it in eval mode: :func:`inference_model`
hands them the model itself when nothing needs to change (eval mode for the block, then restored), and a
copy when it must move to another device or take the faster channels-last layout.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

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


__all__ = ["default_device", "inference_copy", "inference_model", "model_device"]
