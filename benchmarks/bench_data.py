"""Benchmark: the full 35,887-row FERPlus build (fer2013.csv + label.csv + the RAN subset lists).

Times ``load_ferplus`` and ``write_dataset_folder`` and reports the build process's peak resident memory.
Without ``--fer2013`` it generates a stand-in fer2013.csv (random pixels, Usage from fer2013new.csv).

    python benchmarks/bench_data.py [--fer2013 F] [--labels D] [--lists L] [--label-mode M] [--keep DIR]

The build runs in a child process so its peak memory excludes generating the input.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build(fer2013: Path, labels: Path, lists: str, label_mode: str, out: Path) -> dict:
    """The measured part; runs in the child process."""
    start = time.perf_counter()
    import datasets  # noqa: F401  (import cost reported separately)

    from ran.data.ferplus import load_ferplus
    from ran.data.folder import write_dataset_folder

    imported = time.perf_counter()
    rss_after_import = _rss_mib()
    splits = load_ferplus(fer2013, labels, label_mode=label_mode, subset_lists=lists, progress=False)
    built = time.perf_counter()
    write_dataset_folder(splits, out, overwrite=True)
    written = time.perf_counter()
    return {
        "rows_in": 35_887,
        "counts": {name: split.num_rows for name, split in splits.items()},
        "import_s": round(imported - start, 2),
        "build_s": round(built - imported, 2),
        "write_s": round(written - built, 2),
        "total_s": round(written - imported, 2),
        "rss_after_import_mib": round(rss_after_import),
        "peak_rss_mib": round(_rss_mib()),
        "folder_mib": round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fer2013", type=Path, help="Kaggle fer2013.csv (default: generate one)")
    parser.add_argument("--labels", type=Path, default=SHARED / "data" / "ferplus")
    parser.add_argument("--lists", default=str(SHARED / "data" / "challenge-condition-fer"))
    parser.add_argument("--label-mode", default="majority")
    parser.add_argument("--keep", type=Path, help="write the folder here instead of a temporary directory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(build(args.fer2013, args.labels, args.lists, args.label_mode, args.out)))
        return 0

    with tempfile.TemporaryDirectory() as scratch:
        fer2013 = args.fer2013
        if fer2013 is None:
            from ran.data.ferplus import read_fer2013new, write_random_fer2013_csv

            fer2013 = Path(scratch) / "fer2013.csv"
            start = time.perf_counter()
            write_random_fer2013_csv(fer2013, read_fer2013new(args.labels / "fer2013new.csv").usage, seed=0)
            elapsed = time.perf_counter() - start
            print(f"generated {fer2013} ({fer2013.stat().st_size / 2**20:.0f} MiB) in {elapsed:.1f} s")
        out = args.keep or Path(scratch) / "ferplus"
        command = [
            sys.executable,
            __file__,
            "--child",
            "--fer2013",
            str(fer2013),
            "--labels",
            str(args.labels),
        ]
        command += ["--lists", args.lists, "--label-mode", args.label_mode, "--out", str(out)]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"FERPlus build ({args.label_mode}, {report['rows_in']:,} fer2013.csv rows):")
    print("  splits: " + ", ".join(f"{k} {v:,}" for k, v in report["counts"].items()))
    print(f"  load_ferplus {report['build_s']} s + write_dataset_folder {report['write_s']} s")
    print(f"  total {report['total_s']} s")
    print(f"  (imports {report['import_s']} s, not counted)")
    print(f"  peak RSS {report['peak_rss_mib']} MiB (after imports {report['rss_after_import_mib']} MiB)")
    print(f"  Parquet folder {report['folder_mib']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
