"""ONNX export of a RAN, region cutting included, so deployment needs no PyTorch.

The graph takes uint8 RGB face images (B, 3, H, W) of any size, as a photo stores them, and does the rest
of what the model does with its input inside: ``ran.transforms.FaceTransform.normalize`` (0..1, mean/std),
then the model's own input contract (``RegionAttentionNet.set_input_format``): gray for a model trained on
gray faces, and a resize to the face size training used (an ONNX ``Resize``, bilinear with antialiasing,
opset >= 18) for a model that records one. It returns ``logits`` (B, classes) and, unless disabled,
``weights`` (B, K), the per-region attention weights. The regions are cut inside the graph by ONNX
``RoiAlign`` (``coordinate_transformation_mode='half_pixel'`` is torchvision's ``aligned=True``) from boxes
scaled by the image's own height and width. With ``boxes_input=True`` the graph also takes ``boxes``
(B, K, 4) fractional boxes (landmark regions).

The batch, height and width axes are dynamic. The metadata records the face size (``input_size``): the
graph resizes any other size to it in float, so a runtime that resizes faces to it first (PIL's bilinear,
as ``ran predict`` does) gets ``ran predict``'s answer exactly and one that feeds a larger crop gets it up
to the rounding of PIL's uint8 resize. ``input_size`` (default: the model's face size) is the size the
export traces and checks at. The export uses the TorchScript-based exporter (``dynamo=False``), which
maps torchvision's roi_align to RoiAlign; the antialiased resize gets its ``Resize`` here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ran.constants import DEFAULT_OPSET, MIN_OPSET
from ran.errors import UserError
from ran.extras import require
from ran.files import atomic_path
from ran.inference import infer, inference_copy
from ran.modelio.loading import class_names
from ran.numbers import integer
from ran.transforms import FaceTransform, transform_for

RESIZE_OPSET = DEFAULT_OPSET  # Resize with antialias: the resize to the face size inside the graph
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

    Holds a float32 CPU copy of the model (``ran.inference.inference_copy``), so exporting never changes
    the caller's model.
    """

    def __init__(
        self,
        model: nn.Module,
        transform: FaceTransform,
        attention_weights: bool = True,
        boxes_input: bool = False,
    ) -> None:
        super().__init__()
        self.model = inference_copy(model, "cpu", dtype=torch.float32, channels_last=False)
        self.transform = transform
        self.attention_weights = attention_weights
        self.boxes_input = boxes_input

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> Any:
        pixels = self.transform.normalize(images)  # the model makes them gray and resizes them itself
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
    opset: int = DEFAULT_OPSET,
    attention_weights: bool = True,
    boxes_input: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export ``model`` (a RAN) to ``out`` (written atomically; refuses to replace a file unless
    ``overwrite``, and then only an earlier export: :func:`check_onnx_target`). The model's label names,
    face size, colour, mean/std and region boxes go into the ONNX metadata (``metadata_props``) so a
    runtime can preprocess and label without PyTorch."""
    onnx = require("onnx", "ran export")

    OPSETS.check(opset, "opset")
    if not hasattr(model, "forward_with_attention"):
        raise UserError(f"model: expected a RAN (RegionAttentionNet), got {type(model).__name__}")
    if model.face_size is not None and opset < RESIZE_OPSET:
        raise UserError(
            f"opset: {opset} has no antialiased Resize, which the graph needs to resize faces to the model's "
            f"{model.face_size[0]}x{model.face_size[1]} px face size; use opset >= {RESIZE_OPSET}"
        )
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
            **{key: json.dumps(value) for key, value in _input_metadata(model, transform).items()},
        }
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)
    return path


def _input_metadata(model: nn.Module, transform: FaceTransform) -> dict[str, Any]:
    """What the graph does with its input (colour, mean / std) and the face size it works at: the model's
    face size, which the graph resizes any other size to (``resizes_input``), else the traced size."""
    face_size = model.face_size or transform.size
    return {
        **transform.data_config(),
        "input_size": [3, *face_size],
        "input_color": model.input_color,
        "grayscale": model.input_color == "gray",
        "resizes_input": model.face_size is not None,
    }


def _antialiased_resize(
    g: Any, images: Any, output_size: list[int], align_corners: bool, *scales: Any
) -> Any:
    """ONNX ``Resize`` for torch's bilinear antialiased interpolation (``resize_faces``), which the
    TorchScript exporter has no symbolic for: linear, half-pixel, antialias, out-of-bounds taps excluded
    (PyTorch renormalises the remaining weights, as ``exclude_outside=1`` does)."""
    if align_corners:
        raise ValueError("antialiased resize with align_corners=True has no ONNX form")
    leading = g.op(
        "Slice",
        g.op("Shape", images),
        g.op("Constant", value_t=torch.tensor([0])),
        g.op("Constant", value_t=torch.tensor([2])),
    )
    sizes = g.op("Concat", leading, g.op("Constant", value_t=torch.tensor(output_size)), axis_i=0)
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op(
        "Resize",
        images,
        empty,
        empty,
        sizes,
        mode_s="linear",
        coordinate_transformation_mode_s="half_pixel",
        antialias_i=1,
        exclude_outside_i=1,
    )


def _register_resize() -> None:
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx.symbolic_helper import parse_args

    symbolic = parse_args("v", "is", "b", "v", "v")(_antialiased_resize)
    register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", symbolic, RESIZE_OPSET)


def _trace(
    wrapper: OnnxRAN, example: tuple, out: Path, input_names: list, output_names: list, opset: int
) -> None:
    """torch.onnx.export with a dynamic batch axis; exporter failures become one clear ValueError."""
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in input_names + output_names}
    dynamic_axes["images"] = {0: "batch", 2: "height", 3: "width"}
    _register_resize()
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
        raise UserError(
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
    """Run the ONNX file under onnxruntime and PyTorch (``ran.inference.infer`` on a float32 CPU copy: what
    prediction and evaluation give) on the same random uint8 batches (a batch size other than the
    export's, to exercise the dynamic axis), one per face size in ``sizes`` (default: the size recorded in
    the file); return the max absolute difference per output over all sizes and raise ValueError if any
    exceeds ``atol``."""
    ort = require("onnxruntime", "ran export")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    names = [o.name for o in session.get_outputs()]
    recorded = session.get_modelmeta().custom_metadata_map.get("input_size")
    if sizes is None:
        if recorded is None:
            raise UserError(f"{path}: no input_size in the ONNX metadata; pass sizes=[(H, W)]")
        sizes = [tuple(json.loads(recorded)[-2:])]
    boxes_input = len(inputs) > 1
    reference = inference_copy(model, "cpu", dtype=torch.float32, channels_last=False)
    diffs = dict.fromkeys(names, 0.0)
    for index, size in enumerate(sizes):
        example = _example_inputs(model, size, batch_size, boxes_input, seed=seed + index)
        # what prediction and evaluation give on these faces: the one inference step, fp32
        output = infer(
            reference, example[0], transform=transform_for(model), boxes=example[-1] if boxes_input else None
        )
        expected = {"logits": output.logits, "weights": output.weights}
        for name in names:
            if not torch.isfinite(expected[name]).all():
                raise UserError(f"PyTorch output {name!r} has NaN/inf values; the model cannot be checked")
        got = session.run(names, {i.name: t.numpy() for i, t in zip(inputs, example)})
        for name, g in zip(names, got):
            diffs[name] = max(diffs[name], float(np.abs(g - expected[name].numpy()).max()))
    worst = max(diffs.values())
    if not worst <= atol:  # also catches NaN
        raise UserError(f"{path}: onnxruntime differs from PyTorch by {worst:.3g} > {atol} ({diffs})")
    return diffs
