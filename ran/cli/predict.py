"""``ran predict``: find faces in photos, folders or videos and predict their expression with a RAN."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ran.pipeline.pipeline import DEFAULT_MODEL, InputResult, is_video


def _summary(result: InputResult) -> list[str]:
    where = result.source + (
        f" frame {result.frame} ({result.time_s:.2f} s)" if result.frame is not None else ""
    )
    lines = []
    for f in result.faces:
        box = ",".join(f"{v:.0f}" for v in f.box)
        weights = " ".join(f"{w:.2f}" for w in f.region_weights)
        lines.append(
            f"{where}\tface {f.face_index}\tbox {box}\t{f.label} {f.probabilities[f.label]:.2f}\t"
            f"region weights {weights}"
        )
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ran predict",
        description="Find faces in images, folders or videos and predict their expression with a RAN model.",
    )
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or videos")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"model folder, Hub id or registered name (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per image / video frame")
    parser.add_argument(
        "--visualize", metavar="DIR", help="write one PNG per face: regions by weight + probabilities"
    )
    parser.add_argument("--no-detect", action="store_true", help="every input is an already cropped face")
    parser.add_argument("--detector", default="mtcnn", choices=["mtcnn", "cascade", "haar"])
    parser.add_argument(
        "--regions",
        default="model",
        choices=["model", "landmarks"],
        help="the model's region boxes, or boxes on the detected eyes, nose and mouth",
    )
    parser.add_argument("--margin", type=float, default=0.2, help="context around each face box, per side")
    parser.add_argument("--max-faces", type=int, help="at most this many (largest) faces per image")
    parser.add_argument("--color", default="auto", choices=["auto", "rgb", "gray"])
    parser.add_argument(
        "--input-size", type=int, help="resize faces to this side (default: the model's config)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--every", type=int, help="videos: use every N-th frame (default: every frame)")
    sampling.add_argument("--fps", type=float, help="videos: sample about F frames per second")
    parser.add_argument("--csv-dir", default=".", help="videos: folder for the per-frame CSV (<video>.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing CSV files / pictures")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    videos = [Path(p) for p in args.inputs if is_video(p) and Path(p).is_file()]
    csv_paths = {str(v): Path(args.csv_dir) / f"{v.stem}.csv" for v in videos}
    if len(set(csv_paths.values())) < len(csv_paths):
        raise ValueError("two videos share a file name; predict them in separate runs or rename one")
    existing = [str(p) for p in csv_paths.values() if p.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it or choose --csv-dir")
    if (
        args.visualize
        and Path(args.visualize).is_dir()
        and any(Path(args.visualize).iterdir())
        and not args.overwrite
    ):
        raise FileExistsError(
            f"--visualize {args.visualize}: folder is not empty; pass --overwrite or choose another"
        )

    from ran.devices import default_device
    from ran.pipeline.pipeline import predict, write_video_csv

    results = predict(
        args.inputs,
        args.model,
        detector=args.detector,
        detect=not args.no_detect,
        margin=args.margin,
        regions=args.regions,
        batch_size=args.batch_size,
        device=args.device or default_device(),
        precision=args.precision,
        color=args.color,
        input_size=args.input_size,
        every=args.every,
        fps=args.fps,
        max_faces=args.max_faces,
        visualize=args.visualize,
        progress=not args.no_progress,
    )
    first_face = next((f for r in results for f in r.faces), None)
    names = list(first_face.probabilities) if first_face else []
    for video, path in csv_paths.items():
        frames = [r for r in results if r.source == video and r.frame is not None]
        if frames:
            write_video_csv(frames, path, names)
            print(
                f"{video}: {len(frames)} frames, {sum(len(r.faces) for r in frames)} faces -> {path}",
                file=sys.stderr,
            )

    failed = 0
    for r in results:
        if r.frame is None or r.error:
            if r.error:
                failed += 1
                print(f"ran predict: {r.source}: error: {r.error}", file=sys.stderr)
            elif not r.faces:
                print(f"ran predict: {r.source}: no face found", file=sys.stderr)
        if args.json:
            print(json.dumps(r.to_dict()))
        elif r.source not in csv_paths:
            for line in _summary(r):
                print(line)
    if results and failed == len(results):
        raise ValueError(f"no input could be used ({failed} failed)")
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran predict")
