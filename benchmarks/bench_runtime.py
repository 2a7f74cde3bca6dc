"""Model alone, one runtime beside another: PyTorch fp32 / bf16 / int8 and ONNX fp32 / int8 faces per
second.

    python benchmarks/bench_runtime.py [--model ran_resnet18] [--batch 8] [--repeats 7] [--threads N]
        [--json out.json]

Every row runs the same uint8 faces through the one inference step (``ran.inference.infer``), as ``ran
predict`` / ``ran evaluate`` do: PyTorch on a channels-last inference copy (fp32, and bf16 autocast),
PyTorch int8 (``ran export --int8 --torch``'s model, ``ran.int8``), and the ``ran export`` graph under
onnxruntime (``--runtime onnx``), fp32 and int8 (``ran export --int8``'s quantization,
``ran.quantize.quantize_graph``). The model has RANDOM weights (timing does not depend on them; the int8
ranges are calibrated on random faces, so its answers are not checked here: ``ran export --int8`` does that
on real data). Rows are interleaved round by round; the table gives the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

import ran  # noqa: F401  (registers the models)
from ran.export import export_onnx
from ran.inference import infer, inference_copy
from ran.int8 import calibrate, quantized
from ran.quantize import quantize_graph
from ran.runtime import OnnxModel


def runtimes(model: torch.nn.Module, work: Path, calibration: list[np.ndarray], threads: int) -> dict:
    """name -> (model, precision) for :func:`ran.inference.infer`."""
    fp32 = export_onnx(model, work / "fp32.onnx")
    int8 = work / "int8.onnx"
    quantize_graph(fp32, int8, calibration)
    copy = inference_copy(model, "cpu")
    return {
        "torch fp32": (copy, "fp32"),
        "torch bf16": (copy, "bf16"),
        "torch int8": (quantized(model, calibrate(model, calibration)), "fp32"),
        "onnx fp32": (OnnxModel(fp32, threads), "fp32"),
        "onnx int8": (OnnxModel(int8, threads), "fp32"),
    }


def faces_per_second(rows: dict, faces: torch.Tensor, repeats: int) -> dict[str, float]:
    for model, precision in rows.values():
        infer(model, faces, precision=precision)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, (model, precision) in rows.items():
            start = time.perf_counter()
            infer(model, faces, precision=precision)
            times[name].append(time.perf_counter() - start)
    return {name: len(faces) / statistics.median(values) for name, values in times.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ran_resnet18", help="registered RAN (random weights)")
    parser.add_argument("--batch", type=int, default=8, help="faces per call")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calibration", type=int, default=16, help="random faces calibrating int8")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model).eval()
    side = model.face_size or (224, 224)
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (args.calibration, 3, *side), dtype=np.uint8)]
    faces = torch.from_numpy(rng.integers(0, 256, (args.batch, 3, *side), dtype=np.uint8))
    with tempfile.TemporaryDirectory() as tmp:
        rows = runtimes(model, Path(tmp), calibration, args.threads)
        speed = faces_per_second(rows, faces, args.repeats)
    result = {
        "args": vars(args),
        "regions": f"{model.num_regions} x {model.region_size[0]} px",
        "faces_per_second": speed,
        "int8_vs_torch_fp32": speed["onnx int8"] / speed["torch fp32"],
        "int8_vs_onnx_fp32": speed["onnx int8"] / speed["onnx fp32"],
    }
    print_table(result, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def print_table(result: dict, args: argparse.Namespace) -> None:
    speed = result["faces_per_second"]
    base = speed["torch fp32"]
    print(
        f"{args.model} (random weights, {result['regions']} regions), model alone, {args.batch} faces per "
        f"call, {args.threads} threads"
    )
    print("| runtime | faces/s | vs torch fp32 |\n|---|---|---|")
    for name, value in speed.items():
        print(f"| {name} | {value:.1f} | {value / base:.2f}x |")
    ratios = result["int8_vs_torch_fp32"], result["int8_vs_onnx_fp32"]
    print(f"\nint8 / torch fp32: {ratios[0]:.2f}x; int8 / onnx fp32: {ratios[1]:.2f}x")


if __name__ == "__main__":
    main()
