"""Benchmark: peak memory and throughput of ``ran data`` builds at two sizes, with ``--num-proc`` 1 and 2.

Each build runs as its own ``ran data ...`` process under ``/usr/bin/time -f %M`` (peak resident memory
of the build process or its largest worker), on inputs generated here in a temporary directory:

- AffectNet form (``Manually_Annotated_file_lists/{training,validation}.csv`` + 256 px JPEGs under
  ``Manually_Annotated_Images``), built with ``--no-crop``: 1,500 and 6,000 images (then the 6,000 with
  the face cut, the default, where decoding and encoding make worker processes pay);
- FERPlus: a random-pixel ``fer2013.csv`` (``write_random_fer2013_csv``) with the real label files
  (../shared/data/ferplus): every 12th row (about 3,000) and all 35,887 rows.

Both use ``--lists none`` (the generated images are not the ones the subset lists name). The goal (issue
11): the larger build's peak memory within 1.10x of the smaller one's.

    python benchmarks/bench_data.py [--only affectnet|ferplus] [--num-proc 1 2] [--baseline DIR]

Build times exclude the imports (about 1 GB and several seconds: torch comes with ``import ran``).
``--baseline DIR`` runs another checkout of the package (e.g. ``git worktree add DIR <before>``) side by
side, in the same run; a ``--num-proc`` of 1 is passed by leaving the flag out, so builds from before the
flag existed run too.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FERPLUS_LABELS = SHARED / "data" / "ferplus"
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)
FERPLUS_FOLDERS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


def make_affectnet(root: Path, count: int, seed: int = 0) -> None:
    """An AffectNet-form folder of ``count`` 256 px JPEGs (a fifth of them in validation.csv)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    rows: dict[str, list[str]] = {"training": [AFFECTNET_HEADER], "validation": []}
    for index in range(count):
        folder = f"{index % 500 + 1}"
        (root / "Manually_Annotated_Images" / folder).mkdir(parents=True, exist_ok=True)
        name = f"{folder}/{index:056x}.jpg"
        coarse = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).resize((256, 256))
        pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 20, (256, 256, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            root / "Manually_Annotated_Images" / name, format="JPEG", quality=90
        )
        split = "validation" if index % 5 == 0 else "training"
        rows[split].append(f'{name},40,40,176,176,"1.0;2.0",{index % 8},0.1,-0.2')
    for split, lines in rows.items():
        (lists / f"{split}.csv").write_text("\n".join(lines) + "\n")


def make_ferplus(root: Path, every: int) -> tuple[Path, Path]:
    """fer2013.csv (random pixels) and FERPlus label files for every ``every``-th row of the real ones."""
    from ran.data.sources.ferplus import write_random_fer2013_csv

    root.mkdir(parents=True, exist_ok=True)
    if every == 1:
        labels = FERPLUS_LABELS
    else:
        labels = root / "labels"
        with (FERPLUS_LABELS / "fer2013new.csv").open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            rows = [row for number, row in enumerate(reader) if number % every == 0]
        labels.mkdir(parents=True)
        with (labels / "fer2013new.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
        names = {row[1] for row in rows if row[1]}
        for folder in FERPLUS_FOLDERS.values():
            source = (FERPLUS_LABELS / "data" / folder / "label.csv").read_text().splitlines()
            (labels / "data" / folder).mkdir(parents=True)
            kept = [line for line in source if line.split(",", 1)[0] in names]
            (labels / "data" / folder / "label.csv").write_text("\n".join(kept) + "\n")
    with (labels / "fer2013new.csv").open(newline="") as handle:
        usage = [row[0] for row in list(csv.reader(handle))[1:]]
    fer2013 = root / "fer2013.csv"
    write_random_fer2013_csv(fer2013, usage, seed=0)
    return fer2013, labels


# The child: imports first (not timed), then the command itself, timed; its peak RSS comes from time(1).
CHILD = """
import sys, time
import ran.cli.data, ran.data.sources.affectnet, ran.data.sources.ferplus
start = time.perf_counter()
code = ran.cli.data.main(sys.argv[1:])
print(f"BUILD_SECONDS {time.perf_counter() - start:.3f}")
sys.exit(code)
"""


def run_build(argv: list[str], out: Path, num_proc: int, code: Path) -> tuple[float, int, str]:
    """Build seconds (imports excluded), peak RSS (MiB) and the printed counts of one ``ran data`` run
    of the package at ``code``."""
    command = ["/usr/bin/time", "-f", "%M", sys.executable, "-c", CHILD, *argv]
    command += ["--lists", "none", "--out", str(out), "--overwrite"]
    if num_proc != 1:
        command += ["--num-proc", str(num_proc)]
    env = {**os.environ, "PYTHONPATH": str(code), "TQDM_DISABLE": "1"}
    # cwd: not a checkout, so 'python -c' imports the package from PYTHONPATH (sys.path[0] is the cwd)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out.parent)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    peak_kib = int(proc.stderr.strip().splitlines()[-1])
    seconds = float(proc.stdout.split("BUILD_SECONDS")[-1])
    shutil.rmtree(out)
    return seconds, peak_kib // 1024, proc.stdout


def rows_written(printed: str) -> int:
    """Source images built: the default splits' counts (validation repeats test for AffectNet)."""
    counts = {}
    for line in printed.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].replace(",", "").isdigit():
            counts[parts[0]] = int(parts[1].replace(",", ""))
    if "validation" in counts and counts.get("validation") == counts.get("test"):
        counts.pop("validation")  # the same images written twice, built once
    return sum(counts.get(name, 0) for name in ("train", "validation", "test"))


def imports_floor() -> int:
    """Peak RSS of importing the ``ran data`` command and the builders, doing nothing (MiB)."""
    code = "import ran.cli.data, ran.data.sources.affectnet, ran.data.sources.ferplus"
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-c", code], capture_output=True, text=True
    )
    return int(proc.stderr.strip().splitlines()[-1]) // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("affectnet", "ferplus"))
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1500, 6000], help="AffectNet image counts")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of the package (e.g. before a change), run side by side",
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs per build; the fastest is reported")
    args = parser.parse_args(argv)
    codes = {"this": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
    print(f"imports alone: peak RSS {imports_floor()} MiB; build times exclude imports")
    print(
        f"{'code':<8} {'build':<26} {'proc':>4} {'images':>7} {'build s':>7} {'img/s':>7} "
        f"{'peak MiB':>8} {'vs small':>8}"
    )
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        small: dict[tuple[str, str, int], int] = {}
        for label, family, argv_case in _cases(args, scratch):
            for num_proc in args.num_proc:
                for name, code in codes.items():
                    if name == "baseline" and num_proc != 1:
                        continue  # builds before --num-proc existed use one process
                    runs = [run_build(argv_case, scratch / "out", num_proc, code) for _ in range(args.repeat)]
                    seconds = min(run[0] for run in runs)
                    peak = max(run[1] for run in runs)
                    images = rows_written(runs[0][2])
                    ratio = peak / small.setdefault((name, family, num_proc), peak)
                    print(
                        f"{name:<8} {label:<26} {num_proc:>4} {images:>7,} {seconds:>7.2f} "
                        f"{images / seconds:>7.0f} {peak:>8,} {ratio:>7.2f}x",
                        flush=True,
                    )
    return 0


def _cases(args: argparse.Namespace, scratch: Path) -> list[tuple[str, str, list[str]]]:
    """(label, family, ran data arguments) of each build, on inputs generated in ``scratch``."""
    cases = []
    if args.only in (None, "affectnet"):
        for count in args.sizes:
            make_affectnet(scratch / f"affectnet{count}", count)
            argv_case = ["affectnet", "--root", str(scratch / f"affectnet{count}"), "--no-crop"]
            cases.append((f"affectnet --no-crop {count:,}", "affectnet", argv_case))
        # the default build cuts each face (decode, crop, JPEG encode): where worker processes pay
        cases.append((f"affectnet (crop) {count:,}", "affectnet crop", argv_case[:-1]))
    if args.only in (None, "ferplus"):
        for every in (12, 1):
            fer2013, labels = make_ferplus(scratch / f"ferplus{every}", every)
            argv_case = ["ferplus", "--fer2013", str(fer2013), "--labels", str(labels)]
            cases.append((f"ferplus {'all' if every == 1 else f'1/{every} of'} rows", "ferplus", argv_case))
    return cases


if __name__ == "__main__":
    sys.exit(main())
