"""ONNX export of a RAN, region cutting included, so deployment needs no PyTorch.

The graph takes uint8 RGB face images (B, 3, H, W) of any size, as a photo stores them (48 px FERPlus
faces as they are), and does the rest of what training did inside: ``ran.transforms.FaceTransform.normalize``
(grayscale when the model was trained on gray faces, 0..1, mean/std). It returns ``logits`` (B, classes)
and, unless disabled, ``weights`` (B, K), the per-region attention weights. The regions are cut
inside the graph by ONNX ``RoiAlign`` (opset >= 16; ``coordinate_transformation_mode='half_pixel'`` is
torchvision's ``aligned=True``) from boxes scaled by the image's own height and width.
With ``boxes_input=True`` the graph also takes ``boxes`` (B, K, 4) fractional boxes (landmark regions).

The batch, height and width axes are dynamic. ``input_size`` (default: the model's) is the face size
recorded in the metadata -- what the model was trained on, so what a runtime should resize faces to -- and
the size the export traces and checks at. The export uses the TorchScript-based exporter
(``dynamo=False``), which maps torchvision's roi_align to RoiAlign.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ran.constants import MIN_OPSET
from ran.extras import require
from ran.files import atomic_path
from ran.loading import class_names
from ran.numbers import integer
from ran.transforms import FaceTransform, transform_for

# The newest opset torch's TorchScript exporter writes (23 in torch 2.9); a newer one fails inside torch.
MAX_OPSET = int(getattr(getattr(torch.onnx, "_constants", None), "ONNX_MAX_OPSET", MIN_OPSET))
OPSETS = integer(MIN_OPSET, max(MIN_OPSET, MAX_OPSET))
MAX_ONNX_BYTES = 2**31  # protobuf's limit: a larger file is no ONNX graph of this exporter


def exported_by_ran(path: Path) -> bool:
    """Whether ``path`` is an ONNX graph :func:`export_onnx` wrote (its metadata holds ``ran_config``)."""
    onnx = require("onnx", "ran export")

    try:
        if path.stat().st_size > MAX_ONNX_BYTES:
            return False
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - whatever else the file is, it is not one of ours
        return False
    return any(prop.key == "ran_config" for prop in graph.metadata_props)


def check_onnx_target(path: str | Path, *, overwrite: bool) -> None:
    """Refuse an existing ``path`` unless ``overwrite`` and it is an ONNX graph this package exported:
    --overwrite never replaces another file, nor a folder."""
    path = Path(path).expanduser()
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if not path.is_file() or not exported_by_ran(path):
        raise FileExistsError(
            f"{path}: not an ONNX model written by ran export (no ran_config in its metadata); refusing to "
            "replace it with --overwrite: choose another --onnx or remove it yourself"
        )


class OnnxRAN(nn.Module):
    """The exported computation: uint8 images (and optional boxes) -> logits (and optional weights).

    Holds a float32 CPU copy of the model, so exporting never changes the caller's model.
    """

    def __init__(
        self,
        model: nn.Module,
        transform: FaceTransform,
        attention_weights: bool = True,
        boxes_input: bool = False,
    ) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).float().cpu().eval()
        self.transform = transform
        self.attention_weights = attention_weights
        self.boxes_input = boxes_input

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> Any:
        pixels = self.transform.normalize(images)
        output = self.model.forward_with_attention(pixels, boxes if self.boxes_input else None)
        if self.attention_weights:
            return output.logits, output.weights
        return output.logits


def _example_inputs(model: nn.Module, size: tuple[int, int], batch: int, boxes_input: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, model.in_chans, *size), generator=generator, dtype=torch.uint8)
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
    ``overwrite``, and then only an earlier export: :func:`check_onnx_target`). The model's label names,
    input size, mean/std and region boxes go into the ONNX metadata (``metadata_props``) so a runtime
    can preprocess and label without PyTorch."""
    onnx = require("onnx", "ran export")

    OPSETS.check(opset, "opset")
    if not hasattr(model, "forward_with_attention"):
        raise ValueError(f"model: expected a RAN (RegionAttentionNet), got {type(model).__name__}")
    path = Path(out)
    check_onnx_target(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    transform = transform_for(model, input_size)
    wrapper = OnnxRAN(model, transform, attention_weights, boxes_input).eval()
    size = transform.size
    example = _example_inputs(model, size, 2, boxes_input)
    input_names = ["images", "boxes"][: len(example)]
    output_names = ["logits", "weights"] if attention_weights else ["logits"]
    with atomic_path(path) as tmp:
        _trace(wrapper, example, tmp, input_names, output_names, opset)
        graph = onnx.load(tmp)
        metadata = {
            "ran_config": json.dumps(model.ran_config()),
            "label_names": json.dumps(class_names(model)),
            "region_boxes": json.dumps([list(b) for b in model.boxes]),
            # what the graph already does (grayscale, mean / std) and the face size it expects
            **{key: json.dumps(value) for key, value in transform.data_config().items()},
        }
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)
    return path


def _trace(
    wrapper: OnnxRAN, example: tuple, out: Path, input_names: list, output_names: list, opset: int
) -> None:
    """torch.onnx.export with a dynamic batch axis; exporter failures become one clear ValueError."""
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in input_names + output_names}
    dynamic_axes["images"] = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks turned into constants
            torch.onnx.export(
                wrapper,
                example,
                str(out),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
            )
    except torch.onnx.errors.OnnxExporterError as err:
        model = wrapper.model
        reason = str(err).split("[Caused by")[0].strip().splitlines()[0]
        raise ValueError(
            f"cannot export {model.backbone_name} RAN at region size {model.region_size} to ONNX: {reason}"
        ) from None


def check_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    sizes: list[tuple[int, int]] | None = None,
    batch_size: int = 3,
    atol: float = 1e-4,
    seed: int = 1,
) -> dict[str, float]:
    """Run the ONNX file under onnxruntime and PyTorch on the same random uint8 batches (a batch size
    other than the export's, to exercise the dynamic axis), one per face size in ``sizes`` (default: the
    size recorded in the file); return the max absolute difference per output over all sizes and raise
    ValueError if any exceeds ``atol``."""
    ort = require("onnxruntime", "ran export")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    names = [o.name for o in session.get_outputs()]
    recorded = session.get_modelmeta().custom_metadata_map.get("input_size")
    if sizes is None:
        if recorded is None:
            raise ValueError(f"{path}: no input_size in the ONNX metadata; pass sizes=[(H, W)]")
        sizes = [tuple(json.loads(recorded)[-2:])]
    wrapper = OnnxRAN(
        model, transform_for(model), attention_weights="weights" in names, boxes_input=len(inputs) > 1
    )
    diffs = dict.fromkeys(names, 0.0)
    for index, size in enumerate(sizes):
        example = _example_inputs(model, size, batch_size, len(inputs) > 1, seed=seed + index)
        with torch.no_grad():
            expected = wrapper(*example)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for name, e in zip(names, expected):
            if not torch.isfinite(e).all():
                raise ValueError(f"PyTorch output {name!r} has NaN/inf values; the model cannot be checked")
        got = session.run(names, {i.name: t.numpy() for i, t in zip(inputs, example)})
        for name, g, e in zip(names, got, expected):
            diffs[name] = max(diffs[name], float(np.abs(g - e.numpy()).max()))
    worst = max(diffs.values())
    if not worst <= atol:  # also catches NaN
        raise ValueError(f"{path}: onnxruntime differs from PyTorch by {worst:.3g} > {atol} ({diffs})")
    return diffs
