"""``ran export --int8``: static int8 quantization of a RAN, and the check that it still answers as fp32
does. Two forms share the calibration faces, the check and the report: the ONNX graph below (``--onnx``),
and the PyTorch model folder of ``ran.int8`` (``--torch``: the float model and its activation ranges, run
by oneDNN's int8 kernels, which use AMX where onnxruntime's do not).

onnxruntime's ``quantize_static`` rewrites the fp32 graph (:func:`ran.export.export_onnx`) with int8
operators (``QuantFormat.QOperator``: ``QLinearConv``): int8 weights per output channel, uint8 activations
whose ranges come from a few hundred faces of a dataset folder's train split. The backbone's convolutions
are quantized, all but the first; the input's normalisation, gray and resize, the region boxes and the
``RoiAlign`` cut stay float (everything upstream of the cut is excluded by node), and so do the first
convolution (the stem, which sees the pixels) and the attention head's matrix products. Those two decide
most of the answers that change: on ``ran demo --quick``'s model (320 test faces), quantizing every
convolution and matrix product leaves 96.9 % of the predictions unchanged, this choice 99.1 %; on the full
demo model (1,000 test faces) the stem alone moves 98.9 % to 98.3 %. The operator form runs about 1.2x the
QDQ form of the same choice on ``ran_resnet18`` under onnxruntime 1.32 (``QLinearConv`` kernels rather than
fused QDQ pairs), with as many predictions unchanged (98.9 % vs 98.6 % on the full demo model). Between
two quantized convolutions the residual blocks' additions and ReLUs are int8 too (``QLinearAdd``, the ReLU
folded into the operator before it: :func:`int8_nodes`), so values stay int8 from one convolution to the
next instead of going to float and back; that changes fewer answers, not more (demo models trained on an
AVX2 CPU: quick 98.8 % unchanged vs 97.8 % with convolutions alone, full 99.3 % vs 98.8 %).

The int8 graph is then measured against the fp32 graph on the folder's test split, both run by the one
inference step (``ran.inference.infer`` on ``ran.runtime.OnnxModel``): the share of predictions that stay
the same, the largest probability difference, both accuracies with the fp32 95 % interval and McNemar's
test, and faces per second. The numbers go into the graph's metadata (``int8_report``) and beside it
(``<name>.report.json``); the graph keeps every metadata entry of the fp32 one.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ran.errors import UserError
from ran.extras import require
from ran.files import atomic_path, check_overwrite, write_json
from ran.numbers import integer, number
from ran.reading import read_small_json

if TYPE_CHECKING:
    from torch import nn

QUANTIZED_OPS = ("Conv",)  # the backbone; the attention head's MatMul / Gemm stay float
JOINING_OPS = ("Add", "Relu")  # quantized only where they join quantized convolutions (int8_nodes)
FLOAT_CUT = ("RoiAlign",)  # this node and everything upstream of it stays float
CALIBRATION_FACES = 256
CALIBRATION_RANGE = integer(1, 100_000)
MIN_AGREEMENT = 0.98
AGREEMENT_RANGE = number(0.0, 1.0)
REPORT_KIND = "ran export --int8"
INT8_FORMS = ("onnx", "torch")  # an ONNX graph (onnxruntime), or a PyTorch model folder (ran.int8)
FEATURE = "ran export --int8"


def report_path(out: str | Path) -> Path:
    """Where the report goes beside the graph: ``model.onnx`` -> ``model.report.json``."""
    out = Path(out).expanduser()
    return out.with_name(f"{out.stem}.report.json")


def check_report_target(out: str | Path, *, overwrite: bool) -> None:
    """The report beside ``out`` may be replaced only with --overwrite and only when ran wrote it."""
    path = report_path(out)
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    data = read_small_json(path)
    if not path.is_file() or not isinstance(data, dict) or data.get("written_by") != REPORT_KIND:
        raise FileExistsError(f"{path}: not a report written by {REPORT_KIND}; refusing to replace it")


def calibration_batches(split: Any, transform: Any, faces: int, batch: int = 32) -> list[np.ndarray]:
    """``faces`` rows spread evenly over ``split`` (all of them when it has fewer), as uint8 batches at
    the model's face size: what the graph is fed."""
    from ran.data.batches import FaceImages, collate_faces

    if not split.num_rows:
        raise UserError("--calibration: the train split is empty; nothing to calibrate on")
    rows = np.unique(np.linspace(0, split.num_rows - 1, num=min(faces, split.num_rows)).round().astype(int))
    dataset = FaceImages(split.select(rows.tolist()), transform)
    starts = range(0, len(dataset), batch)
    items = (dataset.__getitems__(list(range(s, min(s + batch, len(dataset))))) for s in starts)
    return [collate_faces(chunk)["images"].numpy() for chunk in items]


def float_nodes(graph: Any) -> list[str]:
    """Names of the nodes that stay float: the region cut and everything that feeds it (the input's
    normalisation, gray and resize, the boxes), and the first convolution (the stem, which sees the
    pixels)."""
    producers = {name: node for node in graph.graph.node for name in node.output}
    pending = [name for node in graph.graph.node if node.op_type in FLOAT_CUT for name in node.input]
    kept = [node.name for node in graph.graph.node if node.op_type in FLOAT_CUT]
    seen: set[str] = set()
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        kept.append(node.name)
        pending.extend(node.input)
    stem = next((node.name for node in graph.graph.node if node.op_type == "Conv"), None)  # nodes are sorted
    return kept + ([stem] if stem else [])


def int8_nodes(graph: Any) -> list[str]:
    """Names of the nodes to quantize: every convolution that :func:`float_nodes` leaves, and each Add or
    Relu fed only by other nodes, one of them quantized already: a residual block's sum and its ReLU, so
    that int8 values flow from one convolution to the next instead of being turned into float and back
    (about 12 % of ``ran_resnet18``'s int8 time on an AVX2 CPU). The attention head's additions, fed by its
    float matrix products, stay float."""
    floats = set(float_nodes(graph))
    producers = {name: node for node in graph.graph.node for name in node.output}
    chosen: set[str] = set()
    for node in graph.graph.node:  # sorted: a node's producers come before it
        if node.name in floats:
            continue
        sources = [producers.get(name) for name in node.input]
        joins = all(sources) and any(source.name in chosen for source in sources)
        if node.op_type in QUANTIZED_OPS or (node.op_type in JOINING_OPS and joins):
            chosen.add(node.name)
    return [node.name for node in graph.graph.node if node.name in chosen]


def quantize_graph(fp32: Path, out: Path, batches: Iterable[np.ndarray]) -> None:
    """Static int8 (operator form) of ``fp32`` into ``out``, calibrated on ``batches`` of uint8 faces (the
    99.999th percentile of each activation's magnitude: a few outliers do not stretch the range)."""
    onnx = require("onnx", FEATURE)
    quantization = require("onnxruntime.quantization", FEATURE)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Faces(quantization.CalibrationDataReader):
        """One face per run: the percentile calibrator stacks the runs' activations, so they must all
        have one shape."""

        def __init__(self) -> None:
            self.faces = (images[i : i + 1] for images in batches for i in range(len(images)))

        def get_next(self) -> dict | None:
            face = next(self.faces, None)
            return None if face is None else {"images": np.ascontiguousarray(face)}

    # the calibrators print their progress on stdout, which belongs to the command's own output
    with tempfile.TemporaryDirectory(prefix="ran-int8-") as work, contextlib.redirect_stdout(io.StringIO()):
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # RoiAlign: no symbolic shapes
        quantization.quantize_static(
            str(prepared),
            str(out),
            Faces(),
            quant_format=quantization.QuantFormat.QOperator,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(QUANTIZED_OPS + JOINING_OPS),
            nodes_to_quantize=int8_nodes(onnx.load(str(prepared))),
            calibrate_method=quantization.CalibrationMethod.Percentile,
        )


def agreement(fp32: nn.Module, int8: nn.Module, splits: Any, split: str = "test") -> dict[str, Any]:
    """int8 against fp32 on ``splits[split]``, each run by the one inference step: share of predictions
    unchanged, largest probability difference, both accuracies, the fp32 interval and McNemar's test."""
    from ran.evaluation import evaluate_samples
    from ran.evaluation.statistics import accuracy_intervals, mcnemar_exact

    if split not in splits:
        raise UserError(
            f"--calibration: the dataset has no {split!r} split to check on; it has {sorted(splits)}"
        )
    a, b = (
        evaluate_samples(m, splits, [split], cross_dataset=True, progress=False)[split] for m in (fp32, int8)
    )
    predicted_a, predicted_b = a.probabilities.argmax(1), b.probabilities.argmax(1)
    correct_a, correct_b = predicted_a == a.labels, predicted_b == b.labels
    interval = accuracy_intervals(a.labels, predicted_a, len(a.classes))["accuracy"]
    accuracy_b = float(correct_b.mean())
    return {
        "split": split,
        "faces": int(a.labels.size),
        "unchanged": float((predicted_a == predicted_b).mean()),
        "max_probability_difference": float(np.abs(a.probabilities - b.probabilities).max()),
        "accuracy_fp32": float(correct_a.mean()),
        "accuracy_int8": accuracy_b,
        "fp32_interval": interval,
        "int8_inside_fp32_interval": bool(interval[0] <= accuracy_b <= interval[1]),
        "mcnemar": mcnemar_exact(correct_a, correct_b),
    }


def faces_per_second(models: dict[str, nn.Module], images: np.ndarray, repeats: int = 5) -> dict[str, float]:
    """Faces per second of each model on one batch, rows interleaved round by round (median)."""
    import torch

    from ran.inference import infer

    faces = torch.from_numpy(images)
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        infer(model, faces)  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            infer(model, faces)
            times[name].append(time.perf_counter() - start)
    return {name: len(images) / statistics.median(values) for name, values in times.items()}


def check_agreement(report: dict[str, Any], min_agreement: float) -> None:
    """Refuse an int8 graph that changes too many predictions or leaves the fp32 accuracy interval."""
    check = report["agreement"]
    low, high = check["fp32_interval"]
    if check["unchanged"] < min_agreement or not check["int8_inside_fp32_interval"]:
        raise UserError(
            f"int8 check failed on {check['faces']} {check['split']} faces: {check['unchanged']:.2%} of "
            f"predictions unchanged (need >= {min_agreement:.0%}), accuracy int8 "
            f"{check['accuracy_int8']:.4f} vs fp32 {check['accuracy_fp32']:.4f} [{low:.4f}, {high:.4f}]; "
            "nothing written (see --min-agreement, --calibration-faces, --no-check)"
        )


def _calibration_data(model: nn.Module, calibration: str | Path, faces: int) -> tuple[Any, list[np.ndarray]]:
    """The dataset folder's splits and ``faces`` of its train split as uint8 batches at the model's size."""
    from ran.data.batches import load_splits
    from ran.transforms import transform_for

    splits = load_splits(calibration)
    if "train" not in splits:
        raise UserError(
            f"--calibration {calibration}: no train split to calibrate on; it has {sorted(splits)}"
        )
    return splits, calibration_batches(splits["train"], transform_for(model), faces)


def _measure(
    fp32: nn.Module, int8: nn.Module, splits: Any, batches: list[np.ndarray], method: dict[str, Any]
) -> dict[str, Any]:
    """The report beside an int8 model: how it was made, how it answers against fp32, how fast."""
    report = {
        "written_by": REPORT_KIND,
        "quantization": method,
        "agreement": agreement(fp32, int8, splits),
        "faces_per_second": faces_per_second({"fp32": fp32, "int8": int8}, batches[0]),
    }
    speeds = report["faces_per_second"]
    report["speedup"] = speeds["int8"] / speeds["fp32"]
    return report


def export_int8(
    model: nn.Module,
    out: str | Path,
    calibration: str | Path,
    *,
    form: str = "onnx",
    calibration_faces: int = CALIBRATION_FACES,
    min_agreement: float = MIN_AGREEMENT,
    check: bool = True,
    overwrite: bool = False,
    **export_options: Any,
) -> tuple[Path, dict[str, Any]]:
    """Quantize ``model`` to int8, calibrated on ``calibration``'s train split, check it against fp32 on
    its test split, and write it to ``out``: an ONNX graph and its report beside it (``form='onnx'``;
    ``export_options`` go to ``export_onnx``), or an int8 PyTorch model folder (``form='torch'``,
    ``ran.int8``). Atomic; nothing is written when the agreement check fails."""
    if form not in INT8_FORMS:
        raise UserError(f"form: expected one of {', '.join(INT8_FORMS)}, got {form!r}")
    if form == "torch" and export_options:
        named = ", ".join(sorted(export_options))
        raise UserError(f"{named}: options of an ONNX graph, not of a model folder")
    CALIBRATION_RANGE.check(calibration_faces, "calibration_faces")
    AGREEMENT_RANGE.check(min_agreement, "min_agreement")
    job = _Job(model, Path(out).expanduser(), calibration, calibration_faces, min_agreement, check, overwrite)
    return _write_graph(job, export_options) if form == "onnx" else _write_folder(job)


@dataclass(frozen=True)
class _Job:
    """One int8 export: the model, where it goes, what calibrates and checks it."""

    model: nn.Module
    out: Path
    calibration: str | Path
    faces: int
    min_agreement: float
    check: bool
    overwrite: bool


def _write_graph(job: _Job, export_options: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    from ran.export import check_onnx, check_onnx_target, export_onnx
    from ran.runtime import OnnxModel

    check_onnx_target(job.out, overwrite=job.overwrite)
    check_report_target(job.out, overwrite=job.overwrite)
    splits, batches = _calibration_data(job.model, job.calibration, job.faces)
    with tempfile.TemporaryDirectory(prefix="ran-int8-") as work:
        fp32_path = export_onnx(job.model, Path(work) / "fp32.onnx", **export_options)
        if job.check:
            check_onnx(job.model, fp32_path)
        quantize_graph(fp32_path, Path(work) / "int8.onnx", batches)
        fp32, int8 = OnnxModel(fp32_path), OnnxModel(Path(work) / "int8.onnx")
        method = _method("onnx", job.calibration, sum(len(b) for b in batches))
        report = _measure(fp32, int8, splits, batches, method)
        if job.check:
            check_agreement(report, job.min_agreement)
        _save(Path(work) / "int8.onnx", fp32_path, job.out, report, job.overwrite)
    return job.out, report


def _write_folder(job: _Job) -> tuple[Path, dict[str, Any]]:
    """The float model's files and ``int8.json`` (the calibrated activation ranges with the report);
    ``--overwrite`` replaces only a model folder this package wrote."""
    from ran.files import staging_dir
    from ran.int8 import INT8_NAME, calibrate, is_int8_folder, quantized
    from ran.modelio.hub import write_model_files

    check_overwrite(job.out, overwrite=job.overwrite, recognise=is_int8_folder)  # before the calibration
    splits, batches = _calibration_data(job.model, job.calibration, job.faces)
    table = calibrate(job.model, batches)
    int8 = quantized(job.model, table, "the calibration")
    method = _method("torch", job.calibration, sum(len(b) for b in batches))
    report = _measure(job.model, int8, splits, batches, method)
    if job.check:
        check_agreement(report, job.min_agreement)
    with staging_dir(job.out, overwrite=job.overwrite, recognise=is_int8_folder) as staging:
        write_model_files(job.model, staging, int8_report=report)
        write_json(staging / INT8_NAME, {**table, "report": report})
    return job.out, report


METHODS = {  # how each form is made: into every report
    "onnx": {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QOperator",
        "weights": "int8, per output channel",
        "activations": "uint8, percentile calibration",
        "ops": [*QUANTIZED_OPS, "Add and Relu between quantized convolutions"],
        "float": "input normalisation / gray / resize, boxes, RoiAlign, first convolution, attention head",
    },
    "torch": {
        "tool": "torch.ao.quantization.quantize_fx (x86 engine: oneDNN, AMX-INT8 / VNNI)",
        "format": "int8.json: activation scales and zero points over the float model folder",
        "weights": "int8, per output channel",
        "activations": "uint8 (0-255), min / max calibration",
        "ops": ["the backbone after its first convolution"],
        "float": "input normalisation / gray / resize, region cut, first convolution, attention head",
    },
}


def _method(form: str, calibration: str | Path, faces: int) -> dict[str, Any]:
    return {**METHODS[form], "calibration_data": Path(str(calibration)).name, "calibration_faces": faces}


def _save(int8: Path, fp32: Path, out: Path, report: dict[str, Any], overwrite: bool) -> None:
    """The int8 graph with the fp32 graph's metadata, the method and the report, then the report beside it
    (each written atomically; without ``overwrite``, neither replaces a file that appeared meanwhile)."""
    onnx = require("onnx", FEATURE)
    graph, source = onnx.load(str(int8)), onnx.load(str(fp32), load_external_data=False)
    del graph.metadata_props[:]
    for prop in source.metadata_props:
        graph.metadata_props.add(key=prop.key, value=prop.value)
    graph.metadata_props.add(key="quantization", value=json.dumps(report["quantization"]))
    graph.metadata_props.add(key="int8_report", value=json.dumps(report))
    with atomic_path(out, new=not overwrite) as tmp:
        onnx.save(graph, str(tmp))
    with atomic_path(report_path(out), new=not overwrite) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


__all__ = [
    "CALIBRATION_FACES",
    "MIN_AGREEMENT",
    "QUANTIZED_OPS",
    "agreement",
    "calibration_batches",
    "check_agreement",
    "export_int8",
    "faces_per_second",
    "float_nodes",
    "int8_nodes",
    "quantize_graph",
    "report_path",
]
