"""One inference step: a batch of uint8 faces in; logits, probabilities and region weights out.

Prediction (``ran.pipeline``), evaluation, training's validation, the web app and export's parity check
all run a model through :func:`infer`, so they cannot disagree on how faces are normalised, which
precision runs, or whether the region weights sum to 1. It takes a RAN or a plain timm classifier (which
has no region weights).

One copy policy, here and nowhere else: :func:`infer` never copies, moves, casts or reformats the
caller's model; it runs the model where it is, in eval mode for the call (each module's own mode is
restored after). A model that must run on another device or in another dtype, or that is kept across
calls while the caller may go on changing it (a pipeline), is copied once, by :func:`inference_copy`.

An ONNX graph from ``ran export`` (``ran.runtime.OnnxModel``, fp32 or int8) runs through the same step:
it takes the uint8 faces as they are (its graph holds the normalisation), on the CPU, in its own precision.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import nn

from ran.devices import model_device
from ran.errors import UserError
from ran.precision import autocast, resolve_precision
from ran.runtime import check_cpu
from ran.transforms import FaceTransform, transform_for

# The precision every reported number is measured in unless a user asks otherwise: ``ran evaluate``,
# ``ran demo``'s evaluation (so the demo's card and ``ran evaluate`` give the same counts) and prediction.
REPORTED_PRECISION = "fp32"


def precision_note(results: Mapping[str, Any]) -> str:
    """The sentence that says which precision measured ``results`` (``{subset: {..., 'precision'}}``, as
    ``ran evaluate`` writes them), for results.md, the terminal and model cards ('' for no results)."""
    entries = [r for r in results.values() if isinstance(r, Mapping) and "accuracy" in r]
    if not entries:
        return ""
    named = dict.fromkeys(str(r.get("precision") or "not recorded") for r in entries)
    how = (
        "the model's int8 weights"
        if any("int8" in name for name in named)
        else "`ran evaluate --mixed-precision`"
    )
    return f"Precision: {' / '.join(named)} (the model's forward pass; {how})."


class Inference(NamedTuple):
    """What one inference step gives, float32 on the model's device.

    ``logits`` and ``probabilities`` (B, C): C the model's classes, or the ``classes`` asked for;
    ``weights`` (B, K): each region's share of the pooled feature, rows summing to 1 (within 1e-6, also
    under bf16 / fp16); None for a model without region attention (a plain timm classifier).
    """

    logits: torch.Tensor
    probabilities: torch.Tensor
    weights: torch.Tensor | None


def infer(
    model: nn.Module,
    faces: torch.Tensor,
    *,
    transform: FaceTransform | None = None,
    device: str | torch.device | None = None,
    precision: str = REPORTED_PRECISION,
    boxes: torch.Tensor | None = None,
    classes: Sequence[int] | None = None,
) -> Inference:
    """Run ``model`` on ``faces``, uint8 RGB (B, 3, H, W) as ``transform.prepare`` gives them.

    Args:
        transform: how the faces are normalised; default ``ran.transforms.transform_for(model)``, the
            model's own recorded data config.
        device: where it runs; default: where the model is. A model elsewhere runs on an
            :func:`inference_copy` made for this call: for many calls, copy once and pass the copy.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast (``ran.precision``).
        boxes: region boxes (K, 4) or (B, K, 4) as fractions of each face (RAN only).
        classes: keep only these logits, in this order, before the softmax (cross-dataset evaluation).
    """
    _check_faces(faces)
    net = on_device(model, device)
    target = model_device(net)
    attention = hasattr(net, "forward_with_attention")
    if boxes is not None and not attention:
        raise UserError(f"boxes: {type(model).__name__} has no regions; boxes are for a RAN")
    transform = transform if transform is not None else transform_for(model)
    pixels_in = getattr(net, "takes_pixels", False)
    _check_own_precision(net, precision)
    if pixels_in:
        _check_graph_input(net, transform)
    with torch.inference_mode(), eval_mode(net), autocast(target, precision):
        images = faces if pixels_in else transform.normalize(faces.to(target, non_blocking=True))
        if boxes is not None:
            boxes = boxes.to(target)
        if attention:
            output = net(images, boxes, with_attention=True)
            logits, weights = output.logits, output.weights
        else:
            logits, weights = net(images), None
    logits = logits.float()
    if not bool(torch.isfinite(logits).all()):  # NaN would be printed as a probability, and JSON has none
        broken = int((~torch.isfinite(logits).all(dim=1)).sum())
        raise UserError(
            f"the model's logits are not finite (NaN or inf) for {broken} of {len(logits)} faces: its "
            "weights or its input normalisation (mean / std) are broken"
        )
    if classes is not None:
        logits = logits.index_select(1, torch.as_tensor(list(classes), device=logits.device))
    return Inference(logits, logits.softmax(dim=1), None if weights is None else _renormalised(weights))


def _check_own_precision(model: nn.Module, precision: str) -> None:
    """A model with a precision of its own (an ONNX graph, an int8 model: ``runtime_precision``) runs in
    it: refuse autocast to another rather than silently running the model's own."""
    own = getattr(model, "runtime_precision", None)
    if own is not None and resolve_precision(precision) != REPORTED_PRECISION:
        graph = getattr(model, "takes_pixels", False)
        where = "the onnx runtime runs the graph's" if graph else "it runs its"
        raise UserError(
            f"precision {precision}: {where} own precision ({own}); use fp32 (the default), or the float "
            "model with --runtime torch"
        )


def _check_graph_input(model: nn.Module, transform: FaceTransform) -> None:
    """A model that takes the uint8 faces (``ran.runtime.OnnxModel``) normalises them itself: refuse a
    transform it cannot honour, rather than silently running another."""
    if transform.grayscale and model.input_color != "gray":
        raise UserError(
            "color='gray' (--color gray): the ONNX graph feeds its RGB model RGB; use --runtime torch"
        )
    if (transform.mean, transform.std) != (model.input_mean, model.input_std):
        raise UserError(
            f"transform: mean {transform.mean} / std {transform.std} differ from the ONNX graph's own "
            f"{model.input_mean} / {model.input_std}"
        )


def _renormalised(weights: torch.Tensor) -> torch.Tensor:
    """Rows that sum to 1 in float32, whatever precision computed them."""
    weights = weights.float()
    return weights / weights.sum(dim=1, keepdim=True)


def _check_faces(faces: torch.Tensor) -> None:
    if not isinstance(faces, torch.Tensor) or faces.dtype != torch.uint8:
        kind = faces.dtype if isinstance(faces, torch.Tensor) else type(faces).__name__
        raise UserError(f"faces: expected a uint8 tensor (B, 3, H, W) of 0..255 pixels, got {kind}")
    if faces.dim() != 4 or faces.shape[1] != 3:
        raise UserError(f"faces: expected a uint8 tensor (B, 3, H, W), got shape {tuple(faces.shape)}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every module's own train/eval mode is restored after (a
    model whose parts were deliberately left in eval mode keeps them so)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def on_device(model: nn.Module, device: str | torch.device | None = None) -> nn.Module:
    """``model`` itself when it is already on ``device`` (default: where it is), else an
    :func:`inference_copy` there."""
    if device is None:
        return model
    check_cpu(model, torch.device(device))
    target = _exact(torch.device(device))
    return model if model_device(model) == target else inference_copy(model, target)


def inference_copy(
    model: nn.Module,
    device: str | torch.device | None = None,
    *,
    dtype: torch.dtype | None = None,
    channels_last: bool = True,
) -> nn.Module:
    """The one way inference copies a model: a copy on ``device`` (default: where it is), cast to
    ``dtype`` when given, channels-last when asked (faster convolutions), in eval mode. The caller's model
    is never changed, and its later changes do not reach the copy."""
    import copy

    if device is not None:
        check_cpu(model, torch.device(device))
    target = _exact(torch.device(device)) if device is not None else model_device(model)
    work = copy.deepcopy(model).to(target)
    if dtype is not None:
        work = work.to(dtype)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    return work.eval()


def compile_for_inference(model: nn.Module, device: torch.device | str) -> nn.Module:
    """``model`` compiled in place (``nn.Module.compile``: its calls, :func:`infer`'s included, run the
    compiled graph) for inference on ``device``. On a CPU with inductor's freezing, which folds the weights
    into the graph as constants (BatchNorm into convolutions, prepacked oneDNN kernels): ResNet-18, 8 crops
    of 224 px, fp32, 2 cores: 1.23x eager, where compiling without freezing gives 1.05x. Only for models
    whose weights no longer change (an :func:`inference_copy`)."""
    if getattr(model, "takes_pixels", False):
        raise UserError(
            "compile: the onnx runtime runs its own optimised graph; --compile is for --runtime torch"
        )
    if getattr(model, "runtime_precision", None) == "int8":
        raise UserError(
            "compile: an int8 model runs oneDNN's int8 kernels as they are; --compile is for fp32"
        )
    options = {"freezing": True} if torch.device(device).type == "cpu" else None
    model.compile(options=options)
    return model


def _exact(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:N`` (the current device), so that it compares equal to a tensor's device."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


__all__ = [
    "REPORTED_PRECISION",
    "Inference",
    "compile_for_inference",
    "eval_mode",
    "infer",
    "inference_copy",
    "on_device",
    "precision_note",
]
