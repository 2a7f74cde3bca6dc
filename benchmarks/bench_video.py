"""Video prediction throughput (frames/s, one face) with the face detector every N-th frame and tracking
between (``ran predict --detect-every``), side by side in one run against video prediction as it ran
before issue 22 ("today": the detector on every whole frame, no prefetch), on a generated clip:
scikit-image's astronaut (head and shoulders) gliding over a photo background on a smooth path while the
light slowly changes. Also the share of frames whose label is the same as today's, and how far the boxes
are from the detector's on the whole frame.

    .venv/bin/python benchmarks/bench_video.py [--model ran-demo/best] [--detect-every 1 5 10] [--frames 150]

Without ``--model`` the demo's architecture (``test_resnet``, 48 px regions) with random weights is timed
(its labels hardly change, so pass a trained model for the label share). Decoding, detection, tracking,
cropping and the model are all included (``ran.predict`` on the video file).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import timm
import torch
from PIL import Image

import ran  # registers the models
from ran.pipeline import predict
from ran.pipeline.faces import get_detector


def make_clip(path: Path, frames: int, width: int = 640, height: int = 480, fps: float = 25.0) -> Path:
    """An MJPG clip: a 220 px head moving on a Lissajous path over a photo, the light changing slowly."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    head = Image.open(data / "astronaut.png").convert("RGB").crop((103, 7, 343, 247)).resize((220, 220))
    background = np.asarray(Image.open(data / "coffee.png").convert("RGB").resize((width, height)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for t in range(frames):
        x = int((width - 220) * (0.5 + 0.45 * math.sin(2 * math.pi * t / 150)))
        y = int((height - 220) * (0.5 + 0.4 * math.sin(2 * math.pi * t / 110)))
        gain = 0.85 + 0.3 * (0.5 + 0.5 * math.sin(2 * math.pi * t / 90))
        frame = background.copy()
        frame[y : y + 220, x : x + 220] = np.clip(np.asarray(head) * gain, 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class CountingDetector:
    """MTCNN, counting its calls."""

    def __init__(self) -> None:
        self.inner, self.calls = get_detector("mtcnn"), 0

    def detect(self, image: np.ndarray) -> list:
        self.calls += 1
        return self.inner.detect(image)


TODAY = {"detect_every": 1, "detect_scale": 1.0, "prefetch": 0}  # video prediction before issue 22


def timed(video: Path, model: torch.nn.Module, options: dict) -> tuple[list, float, int]:
    """Results, seconds and detector calls of one ``ran.predict`` over the clip."""
    detector = CountingDetector()
    start = time.perf_counter()
    results = predict(video, model, detector=detector, progress=False, **options)
    return results, time.perf_counter() - start, detector.calls


def compare(reference: list, results: list) -> tuple[float, float]:
    """Share of frames with the same label(s) as ``reference``, and the median largest box difference (px)."""
    same, shifts = 0, []
    for a, b in zip(reference, results):
        same += [f.label for f in a.faces] == [f.label for f in b.faces]
        if len(a.faces) == len(b.faces) == 1:
            shifts.append(float(np.abs(np.subtract(a.faces[0].box, b.faces[0].box)).max()))
    return same / len(reference), float(np.median(shifts)) if shifts else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder (default: the demo's architecture, random weights)")
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = (
        ran.load_model(args.model)
        if args.model
        else timm.create_model("ran", backbone="test_resnet", region_size=48)
    )
    options = {"batch_size": args.batch, "precision": args.precision}
    with tempfile.TemporaryDirectory() as tmp:
        video = make_clip(Path(tmp) / "clip.avi", args.frames)
        timed(video, model, {**options, **TODAY})  # warm-up: detector, model copy, caches
        print(
            f"{args.model or 'test_resnet (random weights)'}, {args.frames} frames of 640x480, one face, "
            f"batch {args.batch}, {args.precision}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
        )
        print(
            f"{'detect every':>12} | {'frames/s':>8} | {'speed-up':>8} | {'detector calls':>14} | "
            f"{'same label':>10} | {'box diff (median px)':>20}"
        )
        reference, seconds, calls = timed(video, model, {**options, **TODAY})
        base = args.frames / seconds
        print(f"{'1 (today)':>12} | {base:8.1f} | {1.0:7.2f}x | {calls:>14} | {'100.0 %':>10} | {0.0:>20.1f}")
        for n in args.detect_every:
            results, seconds, calls = timed(video, model, {**options, "detect_every": n})
            same, shift = compare(reference, results)
            fps = args.frames / seconds
            print(
                f"{n:>12} | {fps:8.1f} | {fps / base:7.2f}x | {calls:>14} | {100 * same:8.1f} % | "
                f"{shift:>20.1f}"
            )
        labels = sorted({f.label for r in reference for f in r.faces})
        print(f"labels with detection on every frame: {', '.join(labels)}")


if __name__ == "__main__":
    main()
