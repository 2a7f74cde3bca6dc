"""``ran compare``: is model B really better than model A on the same faces?

Two forms:

- ``ran compare RUN_A RUN_B``: two ``ran evaluate`` output folders of the same data (their
  predictions.parquet; no model runs again);
- ``ran compare --models MODEL_A MODEL_B --data DATA``: evaluates both models on the data first.

Prints per subset both accuracies, accuracy(B) - accuracy(A) with a paired bootstrap 95 % interval, the
faces only one model gets right and McNemar's exact p-value; refuses two runs that did not see the same
faces. ``--output-dir`` also writes compare.json and compare.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ran.cli.options import add_evaluation_flags, device_option, finish_help
from ran.errors import UserError
from ran.evaluation.statistics import DEFAULT_RESAMPLES, DEFAULT_SEED
from ran.numbers import SEED
from ran.threads import use_threads


def build_parser(prog: str = "ran compare") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Paired comparison of two models on the same faces: two 'ran evaluate' folders "
        "(RUN_A RUN_B), or --models MODEL_A MODEL_B --data DATA.",
    )
    parser.add_argument("runs", nargs="*", metavar="RUN", help="two 'ran evaluate' output folders: A then B")
    parser.add_argument(
        "--models",
        nargs=2,
        metavar=("MODEL_A", "MODEL_B"),
        help="two models to evaluate: model folders (int8 ones too), Hub ids, or .onnx files "
        "(run by onnxruntime)",
    )
    parser.add_argument("--data", help="dataset folder written by 'ran data' (with --models)")
    parser.add_argument("--subsets", nargs="+", help="subsets to compare (default: all both runs have)")
    parser.add_argument("--output-dir", type=Path, help="also write compare.json and compare.md here")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a comparison 'ran compare' wrote in OUTPUT_DIR"
    )
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=SEED, default=DEFAULT_SEED, help="seed of the bootstrap")
    group = parser.add_argument_group("evaluating models (with --models)")
    add_evaluation_flags(group)
    return finish_help(parser)


def _check_form(args: argparse.Namespace) -> None:
    if args.models:
        if args.runs:
            raise UserError("give either two evaluation folders or --models MODEL_A MODEL_B --data DATA")
        if not args.data:
            raise UserError("--models: also give --data DATA, the dataset both models are evaluated on")
    elif len(args.runs) != 2:
        raise UserError(f"expected two evaluation folders (RUN_A RUN_B), got {len(args.runs)}")
    elif args.data:
        raise UserError("--data goes with --models; two evaluation folders already name their data")
    if args.batch_size < 1:
        raise UserError(f"--batch-size: expected an integer >= 1, got {args.batch_size}")


def _compare_models(args: argparse.Namespace) -> dict:
    from ran.data.batches import load_splits
    from ran.evaluation.compare import compare_models
    from ran.runtime import load_runtime_model, runtime_of

    dataset_dict = load_splits(args.data, progress=not args.no_progress)
    model_a, model_b = (load_runtime_model(name, runtime_of(name)) for name in args.models)
    comparison, _, _ = compare_models(
        model_a,
        model_b,
        dataset_dict,
        args.subsets,
        names=(args.models[0], args.models[1]),
        resamples=args.resamples,
        seed=args.seed,
        batch_size=args.batch_size,
        mixed_precision=args.mixed_precision,
        device=device_option(args.device),
        image_size=args.image_size,
        cross_dataset=args.cross_dataset,
        progress=not args.no_progress,
    )
    return comparison


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_threads(args.threads)
    _check_form(args)
    from ran.evaluation.statistics import check_resamples
    from ran.extras import require
    from ran.locks import output_lock

    require("scipy.stats", "McNemar's exact test (ran compare)")  # before any model runs
    check_resamples(args.resamples)
    out = args.output_dir.expanduser() if args.output_dir else None
    if out is None:
        return _compare(args, None)
    with output_lock(out, "ran compare", inside=True):  # held while the models run: one writer of OUT
        return _compare(args, out)


def _compare(args: argparse.Namespace, out: Path | None) -> int:
    from ran.evaluation.compare import (
        check_comparison_folder,
        compare_samples,
        comparison_notes,
        format_comparison,
        write_comparison,
    )
    from ran.evaluation.samples import read_predictions

    if out is not None:
        check_comparison_folder(out, overwrite=args.overwrite)
    if args.models:
        comparison = _compare_models(args)
    else:
        run_a, run_b = (read_predictions(run) for run in args.runs)
        names = (str(args.runs[0]), str(args.runs[1]))
        comparison = compare_samples(
            run_a, run_b, args.subsets, names=names, resamples=args.resamples, seed=args.seed
        )
    print(format_comparison(comparison))
    print()
    print("\n".join(comparison_notes(comparison)))
    if out is not None:
        written = write_comparison(comparison, out, overwrite=args.overwrite)
        print(f"\nwrote {', '.join(p.name for p in written)} to {out}")
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran compare")
