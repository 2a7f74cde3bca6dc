"""Where the model runs: PyTorch, or an ONNX graph written by ``ran export`` (fp32 or int8) under
onnxruntime, for ``ran predict`` / ``ran evaluate`` ``--runtime``.

:class:`OnnxModel` is the ONNX graph as a model the one inference step (``ran.inference.infer``) runs: it
takes the uint8 faces themselves (``takes_pixels``; the graph normalises, makes gray and resizes them as
the exported model did) and gives the same :class:`ran.models.RANOutput` logits and region weights. Its
labels, face size, colour, mean / std and region boxes come from the graph's metadata, so the pipeline,
evaluation and their input checks read it as they read a RAN. It runs on the CPU, in the graph's own
precision (int8 where ``ran export --int8`` quantized it), and is never copied: a session is read-only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ran.errors import UserError
from ran.extras import require
from ran.numbers import IMAGE_SIDE
from ran.vocabulary import RUNTIMES

MAX_ONNX_BYTES = 2**31  # protobuf's limit: no ONNX graph of this exporter is larger
ONNX_FEATURE = "the onnx runtime (--runtime onnx)"
# onnxruntime (1.32) would move the int8 graph's first QuantizeLinear above the stem's max pool, which then
# runs on uint8 in NCHW: about 10x slower than the float pooling it replaces (``ran export --int8``)
SKIPPED_OPTIMIZERS = ("QDQPropagationTransformer",)
# ran export writes no control flow; a graph with it could loop for as long as its counter says
CONTROL_FLOW = ("If", "Loop", "Scan", "SequenceMap")
INT8_OPS = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "ConvInteger", "MatMulInteger", "QuantizeLinear"}


class GraphOutput(NamedTuple):
    """What the graph gives: logits (B, C) and region weights (B, K), the ``RANOutput`` fields infer reads."""

    logits: torch.Tensor
    weights: torch.Tensor


class OnnxModel(nn.Module):
    """An ONNX graph from ``ran export`` under onnxruntime (CPU), as a RAN for ``ran.inference.infer``.

    Args:
        path: the .onnx file.
        threads: onnxruntime's intra-op threads (default: onnxruntime's own choice, one per core).
    """

    takes_pixels = True  # infer feeds the uint8 faces: the graph holds the model's own normalisation

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        self.session, ops = _session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "ran_config" not in meta:
            raise UserError(
                f"{self.path}: not an ONNX graph written by ran export (no ran_config in its metadata)"
            )
        self._read_signature()
        labels = _meta(meta, "label_names", self.path)
        boxes = _meta(meta, "region_boxes", self.path)
        _check_labels(labels, self.path)
        _check_boxes(boxes, self.path)
        self._check_counts(len(labels), len(boxes))
        self.num_classes, self.num_regions = len(labels), len(boxes)
        self.boxes = [tuple(float(v) for v in box) for box in boxes]
        self.region_boxes = torch.tensor(self.boxes, dtype=torch.float32)
        size = _side_pair(_meta(meta, "input_size", self.path), self.path)
        self.face_size = size if _meta(meta, "resizes_input", self.path) is True else None
        self.input_color = "gray" if _meta(meta, "input_color", self.path) == "gray" else "rgb"
        self.input_mean = _triple(_meta(meta, "mean", self.path), "mean", self.path)
        self.input_std = _triple(_meta(meta, "std", self.path), "std", self.path)
        self.runtime_precision = "int8" if ops & INT8_OPS else "fp32"  # what the graph runs, not what it says
        self.pretrained_cfg = {
            "label_names": [str(n) for n in labels],
            "input_size": (3, *size),
            "mean": self.input_mean,
            "std": self.input_std,
            "interpolation": _interpolation(meta, self.path),
        }
        self._warm_up()

    def _warm_up(self) -> None:
        """One face of the graph's input size through the graph: a graph that cannot run, or answers in
        other shapes, is refused when it is loaded rather than on the first photo (or a visitor's)."""
        _, height, width = self.pretrained_cfg["input_size"]
        self(torch.zeros(1, 3, height, width, dtype=torch.uint8))

    def _check_counts(self, classes: int, regions: int) -> None:
        """The metadata's class names and region boxes are as many as the graph's outputs say (where the
        graph fixes them): names read beside the wrong logits would label every face wrongly."""
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        for output, count, what in (("logits", classes, "label_names"), ("weights", regions, "region_boxes")):
            size = shapes[output][-1] if shapes.get(output) else None
            if isinstance(size, int) and size != count:
                raise UserError(
                    f"{self.path}: the metadata's {what} has {count} entries but the graph's {output} {size}"
                )

    def _read_signature(self) -> None:
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs[:1] != ["images"] or outputs[:1] != ["logits"]:
            raise UserError(f"{self.path}: expected inputs (images[, boxes]) and outputs (logits, weights)")
        if "weights" not in outputs:
            raise UserError(
                f"{self.path}: the graph gives no region weights (exported with --no-weights), which "
                "prediction and evaluation report: export again without --no-weights"
            )
        self.boxes_input = "boxes" in inputs

    def forward(
        self, pixels: torch.Tensor, boxes: torch.Tensor | None = None, with_attention: bool = True
    ) -> Any:
        """uint8 faces (B, 3, H, W) and optional region boxes -> :class:`GraphOutput` (or the logits)."""
        feeds = {"images": np.ascontiguousarray(pixels.cpu().numpy())}
        if boxes is not None and not self.boxes_input:
            raise UserError(
                f"boxes: {self.path.name} was exported without --boxes-input; it cuts the model's own regions"
            )
        if self.boxes_input:
            given = self.region_boxes if boxes is None else boxes.float().cpu()
            feeds["boxes"] = np.ascontiguousarray(given.expand(len(pixels), -1, -1).numpy())
        try:
            answers = self.session.run(["logits", "weights"], feeds)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            raise UserError(f"{self.path}: onnxruntime could not run the graph ({_reason(err)})") from None
        logits, weights = (torch.from_numpy(v) for v in answers)
        expected = {"logits": (len(pixels), self.num_classes), "weights": (len(pixels), self.num_regions)}
        for name, value in (("logits", logits), ("weights", weights)):
            if tuple(value.shape) != expected[name]:
                raise UserError(
                    f"{self.path}: the graph's {name} for {len(pixels)} faces have shape "
                    f"{tuple(value.shape)}; expected {expected[name]} (label_names and region_boxes)"
                )
        return GraphOutput(logits, weights) if with_attention else logits

    def forward_with_attention(self, pixels: torch.Tensor, boxes: torch.Tensor | None = None) -> Any:
        return self(pixels, boxes, with_attention=True)

    def __deepcopy__(self, memo: dict) -> OnnxModel:
        return self  # an onnxruntime session is read-only and serves concurrent calls

    def extra_repr(self) -> str:
        classes, regions = self.num_classes, self.num_regions
        return f"{self.path.name}, {self.runtime_precision}, {classes} classes, {regions} regions"


def load_runtime_model(
    name_or_path: str | Path, runtime: str = "torch", *, revision: str | None = None, token: Any = None
) -> nn.Module:
    """The model the commands run: a RAN through ``ran.modelio.loading.load_model`` (``runtime='torch'``;
    int8 where its folder, local or a Hub repository's, holds ``int8.json``, see ``ran.int8``) or an .onnx
    file as an :class:`OnnxModel` (``runtime='onnx'``)."""
    if runtime not in RUNTIMES:
        raise UserError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    path = Path(name_or_path).expanduser()
    if runtime == "onnx":
        if revision:
            raise UserError(f"--revision {revision}: an ONNX file has no revisions")
        return OnnxModel(path)
    from ran.int8 import INT8_NAME, with_calibration
    from ran.modelio.loading import load_model, model_folder

    folder = model_folder(name_or_path, revision, token=token, optional=(INT8_NAME,))
    model = load_model(name_or_path if folder is None else folder)
    return with_calibration(model, folder)


def runtime_of(name_or_path: str | Path) -> str:
    """The runtime a model argument asks for by itself: ``onnx`` for an .onnx file, else ``torch`` (for
    commands that take two models, which one ``--runtime`` flag could not describe)."""
    path = Path(name_or_path).expanduser()
    return "onnx" if path.suffix.lower() == ".onnx" and path.is_file() else "torch"


def check_cpu(model: nn.Module, device: torch.device) -> None:
    """An :class:`OnnxModel` and an int8 model (``ran.int8``) run on the CPU only: refuse another device,
    naming it."""
    if device.type == "cpu":
        return
    if getattr(model, "takes_pixels", False):
        raise UserError(
            f"device: the onnx runtime runs on the CPU, not {device}; use --device cpu or --runtime torch"
        )
    if getattr(model, "runtime_precision", None) == "int8":
        raise UserError(f"device: an int8 model runs on the CPU, not {device}; use --device cpu")


def _session(path: Path, threads: int | None) -> tuple[Any, set[str]]:
    """An onnxruntime session of ``path`` and the graph's operator types."""
    ort = require("onnxruntime", ONNX_FEATURE)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file; expected an .onnx file written by ran export")
    if path.stat().st_size > MAX_ONNX_BYTES:
        raise UserError(f"{path}: larger than 2 GiB; not an ONNX graph written by ran export")
    ops = _check_ops(path)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # its errors come back as exceptions, said here in one line
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        skipped = list(SKIPPED_OPTIMIZERS)
        session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=skipped
        )
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for unreadable files
        raise UserError(f"{path}: not an ONNX graph onnxruntime can load ({_reason(err)})") from None
    return session, ops


def _check_ops(path: Path) -> set[str]:
    """The graph's operator types, in it and in its functions, after refusing control flow
    (:data:`CONTROL_FLOW`); a file onnx cannot parse is left to onnxruntime, which says why."""
    onnx = require("onnx", ONNX_FEATURE)
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf's and onnx's own types
        return set()
    nodes = [*graph.graph.node, *(node for function in graph.functions for node in function.node)]
    ops = {node.op_type for node in nodes}
    found = sorted(ops & set(CONTROL_FLOW))
    if found:
        raise UserError(
            f"{path}: the graph has control flow ({', '.join(found)}), which ran export never writes; not run"
        )
    return ops


def _reason(err: Exception) -> str:
    """onnxruntime's message, its first line, cut to 200 characters."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def _meta(meta: dict[str, str], key: str, path: Path) -> Any:
    if key not in meta:
        raise UserError(f"{path}: the ONNX metadata has no {key!r}; export it again with this version")
    try:
        return json.loads(meta[key])
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise UserError(f"{path}: the ONNX metadata {key!r} is not JSON") from None


def _interpolation(meta: dict[str, str], path: Path) -> str:
    """How the graph's faces were resized in training (timm's data config): one of the known names."""
    from ran.models.folder_config import INTERPOLATIONS

    value = _meta(meta, "interpolation", path) if "interpolation" in meta else "bilinear"
    if not isinstance(value, str) or value not in INTERPOLATIONS:
        raise UserError(
            f"{path}: the ONNX metadata 'interpolation' must be one of {', '.join(INTERPOLATIONS)}"
        )
    return value


def _check_labels(labels: Any, path: Path) -> None:
    if not isinstance(labels, list) or not labels or not all(isinstance(n, str) for n in labels):
        raise UserError(f"{path}: the ONNX metadata 'label_names' must be a non-empty list of names")
    if len(set(labels)) != len(labels):  # a probability table keyed by name would merge two classes
        raise UserError(f"{path}: the ONNX metadata 'label_names' names a class twice")
    from ran.models.folder_config import check_class_names

    check_class_names(str(path), "the ONNX metadata's label_names", labels)


def _check_boxes(boxes: Any, path: Path) -> None:
    def good(box: Any) -> bool:
        return (
            isinstance(box, list)
            and len(box) == 4
            and all(_number(v) and 0 <= v <= 1 for v in box)
            and box[2] > box[0]
            and box[3] > box[1]
        )

    if not isinstance(boxes, list) or not boxes or not all(good(b) for b in boxes):
        raise UserError(
            f"{path}: the ONNX metadata 'region_boxes' must be a list of [x0, y0, x1, y1] fractions"
        )


def _side_pair(size: Any, path: Path) -> tuple[int, int]:
    if (
        not isinstance(size, list)
        or len(size) != 3
        or size[0] != 3
        or not all(_number(v) and isinstance(v, int) and IMAGE_SIDE.holds(v) for v in size[1:])
    ):
        raise UserError(
            f"{path}: the ONNX metadata 'input_size' must be [3, H, W], sides {IMAGE_SIDE.describe()}, "
            f"got {str(size)[:80]}"
        )
    return int(size[1]), int(size[2])


def _triple(values: Any, key: str, path: Path) -> tuple[float, float, float]:
    ok = isinstance(values, list) and len(values) == 3
    ok = ok and all(_number(v) and math.isfinite(v) for v in values)
    if not ok or (key == "std" and min(values) <= 0):
        raise UserError(f"{path}: the ONNX metadata {key!r} must be 3 finite numbers, got {values!r}")
    return tuple(float(v) for v in values)


def _number(value: Any) -> bool:
    """An int or float from JSON metadata (``true`` is no number, though Python counts it as 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["RUNTIMES", "GraphOutput", "OnnxModel", "check_cpu", "load_runtime_model", "runtime_of"]
