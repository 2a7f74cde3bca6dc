"""``ran evaluate``: accuracy of a RAN on every test split and subset of a ``ran data`` folder.

Reports what the RAN papers report, per subset (test, occlusion, pose30, pose45, ...): accuracy with its
counts (``0.8690 (2726/3137)``), per-class accuracy and the mean class accuracy; and what a reviewer needs
to trust them: seeded bootstrap 95 % intervals, the expected calibration error and the region-attention
statistics. Writes results.json, results.md, one confusion matrix and one reliability diagram per subset,
attention.png and the per-face predictions.parquet (read by ``ran compare``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ran.cli.options import add_evaluation_flags, add_runtime_flag, finish_help, runtime_device
from ran.evaluation.statistics import DEFAULT_RESAMPLES, DEFAULT_SEED
from ran.numbers import SEED
from ran.threads import use_threads


def build_parser(prog: str = "ran evaluate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Accuracy of a RAN on every test split and subset of a dataset folder."
    )
    parser.add_argument(
        "--model",
        required=True,
        help="model folder (ran.save_pretrained), training checkpoint folder, Hub id or RAN name",
    )
    parser.add_argument(
        "--data", required=True, help="dataset folder written by 'ran data' (or a Hub dataset id)"
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="where results.json / .md / PNGs go")
    parser.add_argument("--subsets", nargs="+", help="splits to evaluate (default: all but train/validation)")
    add_evaluation_flags(parser)
    add_runtime_flag(parser)
    parser.add_argument(
        "--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples of the 95%% intervals"
    )
    parser.add_argument("--seed", type=SEED, default=DEFAULT_SEED, help="seed of the bootstrap")
    parser.add_argument("--revision", help="Hub revision of the model")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace results 'ran evaluate' wrote in OUTPUT_DIR"
    )
    return finish_help(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_threads(args.threads)
    from ran.evaluation.statistics import check_resamples
    from ran.locks import output_lock

    check_resamples(args.resamples)
    out = args.output_dir.expanduser()
    with output_lock(out, "ran evaluate", inside=True):  # held from the check to the last file written
        return _evaluate(args, out)


def _evaluate(args: argparse.Namespace, out: Path) -> int:
    from ran.data.batches import load_splits
    from ran.evaluation import evaluate_samples, print_results, summarize, write_results
    from ran.evaluation.report import check_results_folder
    from ran.runtime import load_runtime_model

    check_results_folder(out, overwrite=args.overwrite)
    dataset_dict = load_splits(args.data, progress=not args.no_progress)
    model = load_runtime_model(args.model, args.runtime, revision=args.revision)
    samples = evaluate_samples(
        model,
        dataset_dict,
        args.subsets,
        batch_size=args.batch_size,
        mixed_precision=args.mixed_precision,
        device=runtime_device(args.device, args.runtime),
        image_size=args.image_size,
        cross_dataset=args.cross_dataset,
        progress=not args.no_progress,
    )
    results = summarize(samples, resamples=args.resamples, seed=args.seed)
    # written before anything is printed: a reader that stops early (| head) must not lose the results
    written = write_results(
        results, out, overwrite=args.overwrite, title=f"{args.model} on {args.data}", samples=samples
    )
    print_results(results)
    print(f"\nwrote {', '.join(str(p.name) for p in written)} to {out}")
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran evaluate")
