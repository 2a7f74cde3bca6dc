"""ONNX export of a RAN, region cutting included, so deployment needs no PyTorch.

The graph takes face images (B, 3, H, W) -- already resized to the model's input size and normalised
as its pretrained_cfg says -- and returns ``logits`` (B, classes) and, unless disabled, ``weights``
(B, K), the per-region attention weights. The regions are cut inside the graph by ONNX ``RoiAlign``
(opset >= 16; ``coordinate_transformation_mode='half_pixel'`` is torchvision's ``aligned=True``).
With ``boxes_input=True`` the graph also takes ``boxes`` (B, K, 4) fractional boxes (landmark regions).

The batch axis is dynamic; H and W are fixed at export time (the box-to-pixel scaling is traced as a
constant), so export at the size you will feed -- the model's ``input_size`` by default. The export uses
the TorchScript-based exporter (``dynamo=False``), which maps torchvision's roi_align to RoiAlign.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

MIN_OPSET = 17


class OnnxRAN(nn.Module):
    """The exported computation: images (and optional boxes) -> logits (and optional weights)."""

    def __init__(self, model: nn.Module, attention_weights: bool = True, boxes_input: bool = False) -> None:
        super().__init__()
        self.model = model
        self.attention_weights = attention_weights
        self.boxes_input = boxes_input

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> Any:
        output = self.model.forward_with_attention(images, boxes if self.boxes_input else None)
        if self.attention_weights:
            return output.logits, output.weights
        return output.logits


def _input_size(model: nn.Module, input_size: int | None) -> tuple[int, int]:
    if input_size:
        return int(input_size), int(input_size)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") or (3, 224, 224)
    return int(size[-2]), int(size[-1])


def _example_inputs(model: nn.Module, size: tuple[int, int], batch: int, boxes_input: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((batch, model.in_chans, *size), generator=generator)
    if not boxes_input:
        return (images,)
    from ran.regions import jitter_boxes

    boxes = jitter_boxes(
        model.region_boxes.float().cpu(), batch, scale=0.1, translate=0.05, generator=generator
    )
    return images, boxes


def export_onnx(
    model: nn.Module,
    out: str | Path,
    *,
    input_size: int | None = None,
    opset: int = MIN_OPSET,
    attention_weights: bool = True,
    boxes_input: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export ``model`` (a RAN) to ``out`` (written atomically; refuses to replace a file unless
    ``overwrite``). The model's label names, input size, mean/std and region boxes go into the ONNX
    metadata (``metadata_props``) so a runtime can preprocess and label without PyTorch."""
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(
            f"opset: expected >= {MIN_OPSET} (RoiAlign with half_pixel needs >= 16), got {opset}"
        )
    if not hasattr(model, "forward_with_attention"):
        raise ValueError(f"model: expected a RAN (RegionAttentionNet), got {type(model).__name__}")
    path = Path(out)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()
    wrapper = OnnxRAN(model, attention_weights, boxes_input).eval()
    size = _input_size(model, input_size)
    example = _example_inputs(model, size, 2, boxes_input)
    input_names = ["images", "boxes"][: len(example)]
    output_names = ["logits", "weights"] if attention_weights else ["logits"]
    dynamic_axes = {name: {0: "batch"} for name in input_names + output_names}

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks turned into constants
            torch.onnx.export(
                wrapper,
                example,
                tmp,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
            )
        graph = onnx.load(tmp)
    except torch.onnx.errors.OnnxExporterError as err:
        Path(tmp).unlink(missing_ok=True)
        reason = str(err).split("[Caused by")[0].strip().splitlines()[0]
        raise ValueError(
            f"cannot export {model.backbone_name} RAN at region size {model.region_size} to ONNX: {reason}"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        from ran.predict import class_names

        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        metadata = {
            "ran_config": json.dumps(model.ran_config()),
            "label_names": json.dumps(class_names(model)),
            "input_size": json.dumps([model.in_chans, *size]),
            "mean": json.dumps(list(cfg.get("mean") or (0.0, 0.0, 0.0))),
            "std": json.dumps(list(cfg.get("std") or (1.0, 1.0, 1.0))),
            "region_boxes": json.dumps([list(b) for b in model.boxes]),
        }
        if cfg.get("grayscale") is not None:
            metadata["grayscale"] = json.dumps(bool(cfg["grayscale"]))
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    batch_size: int = 3,
    atol: float = 1e-4,
    seed: int = 1,
) -> dict[str, float]:
    """Run the ONNX file under onnxruntime and PyTorch on the same random batch (a batch size other
    than the export's, to exercise the dynamic axis); return the max absolute difference per output and
    raise ValueError if any exceeds ``atol``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    height, width = int(inputs[0].shape[2]), int(inputs[0].shape[3])
    names = [o.name for o in session.get_outputs()]
    model = model.eval().float().cpu()
    wrapper = OnnxRAN(model, attention_weights="weights" in names, boxes_input=len(inputs) > 1).eval()
    example = _example_inputs(model, (height, width), batch_size, len(inputs) > 1, seed=seed)
    with torch.no_grad():
        expected = wrapper(*example)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(names, {i.name: t.numpy() for i, t in zip(inputs, example)})
    for name, e in zip(names, expected):
        if not torch.isfinite(e).all():
            raise ValueError(f"PyTorch output {name!r} has NaN/inf values; the model cannot be checked")
    diffs = {name: float(np.abs(g - e.numpy()).max()) for name, g, e in zip(names, got, expected)}
    worst = max(diffs.values())
    if not worst <= atol:  # also catches NaN
        raise ValueError(f"{path}: onnxruntime differs from PyTorch by {worst:.3g} > {atol} ({diffs})")
    return diffs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ran export", description="Export a RAN model to ONNX.")
    parser.add_argument("--model", required=True, help="model folder, Hub id or registered name")
    parser.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--input-size", type=int, help="image side the graph takes (default: model config)")
    parser.add_argument("--no-weights", action="store_true", help="output only the logits")
    parser.add_argument("--boxes-input", action="store_true", help="also take (B, K, 4) region boxes")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch check")
    parser.add_argument("--overwrite", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ran.predict import load_model

    out = Path(args.onnx)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    model = load_model(args.model)
    path = export_onnx(
        model,
        out,
        input_size=args.input_size,
        opset=args.opset,
        attention_weights=not args.no_weights,
        boxes_input=args.boxes_input,
        overwrite=args.overwrite,
    )
    message = f"wrote {path}"
    if not args.no_check:
        diffs = check_onnx(model, path)
        message += " (onnxruntime vs PyTorch max abs diff: " + ", ".join(
            f"{k} {v:.2g}" for k, v in diffs.items()
        )
        message += ")"
    print(message)
    return 0


if __name__ == "__main__":
    from ran.cli import run_main

    sys.exit(run_main(main, None, prog="ran export"))
