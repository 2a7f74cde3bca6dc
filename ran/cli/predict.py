r"""``ran predict``: find faces in photos, folders or videos and predict their expression with a RAN.

Prints one tab-separated line per face (or, with ``--json``, one JSON object per image / video frame) as
soon as it is known; in those lines a backslash, tab, newline or carriage return inside a field (a file
name, a class name) is written ``\\``, ``\t``, ``\n``, ``\r``, so every face stays one line of the same
columns. Problems with an input go to stderr as one line naming it. Exit code: 0 when every input was used
(finding no face is a result, not a failure); 1 when some inputs failed or some of their outputs (a
picture, a CSV) could not be written, after all the others were predicted and printed, so a script
notices; 2 when nothing could run (bad flags, a model that does not load, existing outputs) or no input
at all could be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ran.cli.options import (
    add_device_flags,
    add_face_flags,
    add_runtime_flag,
    add_threads_flag,
    finish_help,
    require_model,
    runtime_device,
)
from ran.constants import DEFAULT_SMOOTH, DETECT_EVERY, DETECT_SCALE
from ran.errors import UserError
from ran.numbers import DETECT_FRACTION, IMAGE_SIDE, MARGIN, PREFETCH_DEPTH, SMOOTH_FACTOR, integer, number
from ran.threads import use_threads
from ran.vocabulary import COLOR_MODES

if TYPE_CHECKING:  # the parser loads without torch (ran --help); the pipeline loads in main()
    from ran.pipeline.results import InputResult

EXIT_SOME_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ran predict",
        description="Find faces in images, folders or videos and predict their expression with a RAN model.",
        epilog="Output: one tab-separated line per face; a backslash, tab, newline or carriage return in a "
        "field is written \\\\, \\t, \\n, \\r. Exit code: 0 all inputs used; 1 some inputs failed or "
        "some outputs could not be written (the others are printed); 2 bad options, a model that does not "
        "load, or no input could be used.",
    )
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or videos")
    parser.add_argument(
        "--model", help="model folder, training checkpoint folder or Hub id (required: none is published)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per image / video frame")
    parser.add_argument(
        "--visualize", metavar="DIR", help="write one PNG per face: regions by weight + probabilities"
    )
    parser.add_argument("--no-detect", action="store_true", help="every input is an already cropped face")
    add_face_flags(parser)
    parser.add_argument("--margin", type=MARGIN, default=0.2, help="context around each face box, per side")
    parser.add_argument("--max-faces", type=integer(1), help="at most this many (largest) faces per image")
    parser.add_argument(
        "--color",
        default="auto",
        choices=COLOR_MODES,
        help="colours the model is fed: auto = what the model was trained on (a gray-trained model makes "
        "every input gray itself); gray feeds an RGB model gray faces",
    )
    parser.add_argument(
        "--input-size", type=IMAGE_SIDE, help="resize faces to this side (default: the model's config)"
    )
    parser.add_argument("--batch-size", type=integer(1), default=16, help="faces per forward pass")
    parser.add_argument(
        "--prefetch",
        type=PREFETCH_DEPTH,
        help="inputs decoded and searched for faces ahead while the model runs, 0-64 (default: the batch "
        "size, at most 64; 0: one after the other)",
    )
    parser.add_argument(
        "--detect-scale",
        type=DETECT_FRACTION,
        default=DETECT_SCALE,
        help="size of the copy the detector sees, as a fraction of the photo (at most 1280 px); 1 finds "
        "faces of 20 px instead of 40, in about 3x the time",
    )
    add_device_flags(parser)
    add_runtime_flag(parser)
    add_threads_flag(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (slow first batch)")
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument(
        "--every", type=integer(1), help="videos: use every N-th frame (default: every frame)"
    )
    sampling.add_argument("--fps", type=number(above=0), help="videos: sample about F frames per second")
    parser.add_argument(
        "--detect-every",
        type=integer(1),
        default=DETECT_EVERY,
        metavar="N",
        help="videos: run the face detector on every N-th sampled frame and track the faces in between "
        "(sooner where a track is lost); 1 = detect on every frame",
    )
    parser.add_argument(
        "--smooth",
        type=SMOOTH_FACTOR,
        nargs="?",
        const=DEFAULT_SMOOTH,
        metavar="ALPHA",
        help="videos: smooth each face's probabilities over frames (moving average, newest frame weighted "
        f"ALPHA in (0, 1]; {DEFAULT_SMOOTH} without a value); the label follows them (default: off)",
    )
    parser.add_argument("--csv-dir", default=".", help="videos: folder for the per-frame CSV (<video>.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing CSV files / pictures")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return finish_help(parser)


# backslash, tab, newline, carriage return as \\ \t \n \r; other control characters (ESC starts a
# terminal's colour and cursor commands) as \xNN
_ESCAPES = str.maketrans(
    {
        **{chr(c): f"\\x{c:02x}" for c in (*range(32), 127)},
        **{"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"},
    }
)


def tsv_field(text: str) -> str:
    r"""``text`` as one field of a tab-separated line: backslash, tab, newline and carriage return
    escaped (``\\``, ``\t``, ``\n``, ``\r``), so a file named ``a<TAB>b.jpg`` does not add a column, and
    other control characters as ``\xNN``, so a label or file name cannot command the terminal."""
    return text.translate(_ESCAPES)


def _summary(result: InputResult) -> list[str]:
    where = tsv_field(result.source) + (
        f" frame {result.frame} ({result.time_s:.2f} s)" if result.frame is not None else ""
    )
    lines = []
    for f in result.faces:
        box = ",".join(f"{v:.0f}" for v in f.box)
        weights = " ".join(f"{w:.2f}" for w in f.region_weights)
        lines.append(
            f"{where}\tface {f.face_index}\tbox {box}\t{tsv_field(f.label)} {f.probabilities[f.label]:.2f}\t"
            f"region weights {weights}"
        )
    return lines


def _line(text: str, stream: Any = None) -> None:
    """Print one line around the progress bar (cleared first, drawn again after), never glued to it."""
    from tqdm.auto import tqdm

    tqdm.write(text, file=stream or sys.stdout)
    (stream or sys.stdout).flush()


def _say(source: str, message: str) -> None:
    """One line on stderr about one input (its name escaped as in the output lines)."""
    _line(f"ran predict: {tsv_field(source)}: {message}", sys.stderr)


def _report(result: InputResult, as_json: bool, is_video_frame: bool) -> None:
    """Print one result: its problems on stderr (one line each), its faces on stdout."""
    if result.warning:
        _say(result.source, f"warning: {result.warning}")
    if result.error:
        _say(result.source, f"error: {result.error}")
    elif not result.faces and result.frame is None:
        _say(result.source, "no face found")
    if as_json:
        _line(json.dumps(result.to_dict()))
    elif not is_video_frame:
        for line in _summary(result):
            _line(line)


def _check_picture_folder(folder: str | None, overwrite: bool) -> None:
    from ran.files import check_not_a_broken_link

    if folder:
        check_not_a_broken_link(Path(folder), f"--visualize {folder}")
    if folder and Path(folder).exists() and not Path(folder).is_dir():
        raise NotADirectoryError(f"--visualize {folder}: a file; expected a folder for the pictures")
    if folder and Path(folder).is_dir() and any(Path(folder).iterdir()) and not overwrite:
        raise FileExistsError(
            f"--visualize {folder}: folder is not empty; pass --overwrite or choose another"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require_model(args.model)
    use_threads(args.threads)
    from ran.pipeline.results import video_csv_paths

    csv_paths = video_csv_paths(args.inputs, args.csv_dir, overwrite=args.overwrite)
    _check_picture_folder(args.visualize, args.overwrite)
    try:
        results = _predictions(args)
    except FileNotFoundError as err:  # only the model is looked up before the first input
        expected = (
            "an .onnx file from ran export"
            if args.runtime == "onnx"
            else "a model folder, a training checkpoint or a Hub id"
        )
        raise FileNotFoundError(f"{err}; pass --model with {expected}") from None
    frames: dict[str, list[InputResult]] = {video: [] for video in csv_paths}
    names: list[str] = []
    total = failed = unused = 0
    for result in results:
        total += 1
        failed += result.error is not None
        unused += result.error is not None and not result.faces  # an unwritten picture still predicted
        if not names and result.faces:
            names = list(result.faces[0].probabilities)
        if result.source in frames and result.frame is not None:
            frames[result.source].append(result)
        _report(result, args.json, result.source in csv_paths)
    unwritten = _write_csvs(frames, csv_paths, names, args.overwrite)
    if total and unused == total:
        raise UserError(f"no input could be used ({failed} failed)")
    if failed or unwritten:
        what = [f"{failed} of {total} images / video frames failed"] if failed else []
        what += [f"{unwritten} of {len(csv_paths)} video CSVs not written"] if unwritten else []
        print(f"ran predict: {'; '.join(what)} (exit code {EXIT_SOME_FAILED})", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def _write_csvs(
    frames: dict[str, list[InputResult]], paths: dict[str, Path], names: list[str], overwrite: bool
) -> int:
    """Each video's per-frame CSV; one the file system refuses, or whose name a file took while the video
    ran (never replaced without ``overwrite``), is reported and the others are still written. Returns how
    many could not be."""
    from ran.faults import fault_message
    from ran.pipeline.results import write_video_csv

    unwritten = 0
    for video, rows in frames.items():
        if not rows:
            continue
        try:
            path = write_video_csv(rows, paths[video], names, new=not overwrite)
        except OSError as err:
            why = str(err) if isinstance(err, FileExistsError) else fault_message(err)
            if why is None:
                raise
            _say(video, f"error: CSV not written: {why}")
            unwritten += 1
            continue
        faces = sum(len(r.faces) for r in rows)
        print(f"{tsv_field(video)}: {len(rows)} frames, {faces} faces -> {path}", file=sys.stderr)
    return unwritten


def _predictions(args: argparse.Namespace) -> Iterator[InputResult]:
    from ran.pipeline.pipeline import iter_predictions
    from ran.runtime import OnnxModel

    return iter_predictions(
        args.inputs,
        OnnxModel(args.model) if args.runtime == "onnx" else args.model,
        detector=args.detector,
        detect=not args.no_detect,
        margin=args.margin,
        regions=args.regions,
        batch_size=args.batch_size,
        device=runtime_device(args.device, args.runtime),
        precision=args.precision,
        color=args.color,
        input_size=args.input_size,
        every=args.every,
        fps=args.fps,
        max_faces=args.max_faces,
        visualize=args.visualize,
        progress=not args.no_progress,
        compile=args.compile,
        detect_every=args.detect_every,
        smooth=args.smooth,
        prefetch=args.prefetch,
        detect_scale=args.detect_scale,
    )


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran predict")
