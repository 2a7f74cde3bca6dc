"""ONNX under onnxruntime: fp32 and int8 (static and dynamic quantization) against PyTorch, for speed
and for accuracy on a ``ran data`` split.

    ran demo --quick --output-dir /tmp/demo            # once: a trained model and its data
    python benchmarks/bench_onnx.py --model /tmp/demo/best --data /tmp/demo/data [--split test]
        [--speed-model ran_resnet18] [--batch 8] [--repeats 5] [--threads N] [--json out.json]

Accuracy: every face of the split goes through PyTorch (fp32) and each ONNX graph as the uint8 pixels the
graph takes; the table gives accuracy, agreement with PyTorch's predictions and the largest logit
difference. Speed: one batch of ``--batch`` faces at the data's face size, rows interleaved round by
round (median ms), for the trained model and for ``--speed-model`` (random weights: the size of the
paper's model, 8 faces x 6 regions of 224 px). Static quantization is ``ran export --int8``'s
(``ran.quantize.quantize_graph``: convolutions and matrix products after the region cut, calibrated on 256
training faces); dynamic quantization covers the convolutions only.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import timm
import torch

import ran  # noqa: F401  (registers the models)
from ran.export import export_onnx
from ran.quantize import quantize_graph
from ran.transforms import FaceTransform, transform_for


def face_batches(split, transform: FaceTransform, batch: int, limit: int | None = None) -> Iterator[tuple]:
    """(uint8 images, labels) batches of a split, prepared as the model was trained."""
    from ran.data.batches import FaceImages, collate_faces

    dataset = FaceImages(split, transform)
    stop = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, stop, batch):
        out = collate_faces([dataset[i] for i in range(start, min(start + batch, stop))])
        yield out["images"], out["labels"]


def quantized_graphs(fp32: Path, work: Path, calibration: list[np.ndarray]) -> dict[str, Path]:
    """int8 versions of ``fp32``: static as ``ran export --int8`` makes it (``ran.quantize``), and
    dynamic (activation ranges at run time, convolutions only)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    static, dynamic = work / "int8_static.onnx", work / "int8_dynamic.onnx"
    quantize_graph(fp32, static, calibration)
    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # RoiAlign: no symbolic shapes
    quantize_dynamic(str(prepared), str(dynamic), weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    return {"onnx int8 static": static, "onnx int8 dynamic": dynamic}


def sessions(graphs: dict[str, Path], threads: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    runners = {}
    for name, path in graphs.items():
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        runners[name] = lambda images, s=session: s.run(["logits"], {"images": images})[0]
    return runners


def pytorch_runners(model: torch.nn.Module) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The model in fp32 as loaded, and a channels-last copy under bf16 autocast (what ran predict uses)."""
    transform = transform_for(model)
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()

    def run(net: torch.nn.Module, bf16: bool) -> Callable[[np.ndarray], np.ndarray]:
        def call(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return net(transform.normalize(torch.from_numpy(images))).float().numpy()

        return call

    return {
        "pytorch fp32": run(model.eval(), False),
        "pytorch bf16 + channels-last": run(channels_last, True),
    }


def accuracy_table(runners: dict, split, transform: FaceTransform, batch: int) -> dict[str, dict[str, float]]:
    """Accuracy of every runner on the split, agreement with PyTorch fp32 and the largest logit difference."""
    correct = dict.fromkeys(runners, 0)
    agree = dict.fromkeys(runners, 0)
    worst = dict.fromkeys(runners, 0.0)
    total = 0
    for images, labels in face_batches(split, transform, batch):
        pixels = images.numpy()
        logits = {name: run(pixels) for name, run in runners.items()}
        reference = logits["pytorch fp32"]
        for name, value in logits.items():
            correct[name] += int((value.argmax(1) == labels.numpy()).sum())
            agree[name] += int((value.argmax(1) == reference.argmax(1)).sum())
            worst[name] = max(worst[name], float(np.abs(value - reference).max()))
        total += len(labels)
    return {
        name: {
            "accuracy": correct[name] / total,
            "agrees_with_pytorch": agree[name] / total,
            "max_logit_diff": worst[name],
        }
        for name in runners
    }


def speed_table(runners: dict, images: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms per batch, rows interleaved round by round."""
    for run in runners.values():
        run(images)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(images)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def all_runners(model: torch.nn.Module, work: Path, calibration: list[np.ndarray], threads: int) -> dict:
    fp32 = export_onnx(model, work / "fp32.onnx")
    graphs = {"onnx fp32": fp32, **quantized_graphs(fp32, work, calibration)}
    return {**pytorch_runners(model), **sessions(graphs, threads)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="trained model folder (e.g. the demo's best/)")
    parser.add_argument("--data", required=True, help="its 'ran data' folder")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--speed-model", default="ran_resnet18", help="registered RAN timed with random weights"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from ran.data.batches import load_splits
    from ran.modelio.loading import load_model

    model = load_model(args.model).eval()
    transform = transform_for(model)
    splits = load_splits(args.data)
    calibration = [images.numpy() for images, _ in face_batches(splits["train"], transform, 32, limit=256)]
    result: dict = {"args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        runners = all_runners(model, Path(tmp) / "trained", calibration, args.threads)
        result["accuracy"] = accuracy_table(runners, splits[args.split], transform, 64)
        batch = calibration[0][: args.batch]
        result["speed_trained_ms"] = speed_table(runners, batch, args.repeats)
        torch.manual_seed(0)
        big = timm.create_model(args.speed_model).eval()
        big_calibration = [np.ascontiguousarray(c[:8]) for c in calibration[:2]]
        big_runners = all_runners(big, Path(tmp) / "speed", big_calibration, args.threads)
        result["speed_model_ms"] = speed_table(big_runners, batch, args.repeats)
    print_tables(result, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def print_tables(result: dict, args: argparse.Namespace) -> None:
    print(f"accuracy on {args.data} [{args.split}] ({args.model}):")
    print("| graph | accuracy | agrees with PyTorch fp32 | max logit diff |\n|---|---|---|---|")
    for name, row in result["accuracy"].items():
        cells = [
            f"{row['accuracy']:.4f}",
            f"{row['agrees_with_pytorch']:.4f}",
            f"{row['max_logit_diff']:.2g}",
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for key, title in (
        ("speed_trained_ms", args.model),
        ("speed_model_ms", f"{args.speed_model}, random weights"),
    ):
        base = result[key]["pytorch fp32"]
        print(f"\nspeed, {args.batch} faces per batch, {args.threads} threads: {title}")
        print("| runtime | median ms | vs PyTorch fp32 |\n|---|---|---|")
        for name, ms in result[key].items():
            print(f"| {name} | {ms:.1f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()
