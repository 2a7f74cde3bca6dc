"""Prediction throughput (faces/s) on this machine: the model alone and end to end (decode + MTCNN
detection + crop + model), fp32 and bf16 autocast. Random weights (speed does not depend on them).

    .venv/bin/python benchmarks/bench_predict.py [--model ran_resnet18] [--region-size 224] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import timm
import torch

import ran  # noqa: F401  (registers the models)
from ran.pipeline import predict


def photos(count: int) -> list[Path]:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    portraits = [data / "astronaut.png", data / "camera.png"]
    return [portraits[i % 2] for i in range(count)]


def model_only(model: torch.nn.Module, batch: int, side: int, bf16: bool, repeats: int) -> float:
    images = torch.rand(batch, 3, side, side)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model.forward_with_attention(images)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model.forward_with_attention(images)
    return batch * repeats / (time.perf_counter() - start)


def end_to_end(model: torch.nn.Module, count: int, batch: int, bf16: bool) -> float:
    inputs = photos(count)
    predict(
        inputs[:2], model, batch_size=batch, precision="bf16" if bf16 else "fp32", progress=False
    )  # warm-up
    start = time.perf_counter()
    results = predict(inputs, model, batch_size=batch, precision="bf16" if bf16 else "fp32", progress=False)
    elapsed = time.perf_counter() - start
    faces = sum(len(r.faces) for r in results)
    return faces / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ran_resnet18")
    parser.add_argument("--region-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photos", type=int, default=16)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = timm.create_model(args.model, region_size=args.region_size).eval()
    side = int(model.pretrained_cfg["input_size"][-1])
    print(
        f"{args.model}, {model.num_regions} regions of {args.region_size} px, faces resized to {side} px, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    for bf16 in (False, True):
        name = "bf16 autocast" if bf16 else "fp32"
        model_fps = model_only(model, args.batch, side, bf16, args.repeats)
        e2e_fps = end_to_end(model, args.photos, args.batch, bf16)
        print(f"{name:>14}: model only {model_fps:6.2f} faces/s | end to end {e2e_fps:6.2f} faces/s")


if __name__ == "__main__":
    main()
