"""``ran robustness``: models on one split under occluders, pose-like warps and corruptions, severities 1-5.

Per model and perturbation: accuracy and mean class accuracy per severity with bootstrap 95 % intervals,
ECE, ImageNet-C's corruption error and relative corruption error against a reference model, and for
occluders the attention shift (does region attention move to what stays visible?). The perturbed faces are
the same for every model and every run with the same ``--seed`` (``ran.robustness.perturb``). Writes
results.json, results.md, models/<name>/predictions.parquet (for ``ran compare``) and pictures.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ran.cli.options import add_evaluation_flags, add_runtime_flag, finish_help, runtime_device
from ran.errors import UserError
from ran.evaluation.statistics import DEFAULT_RESAMPLES, DEFAULT_SEED
from ran.numbers import SEED
from ran.threads import use_threads


def build_parser(prog: str = "ran robustness") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Accuracy, calibration and region attention of models under occlusion, pose-like "
        "geometry and corruptions, severities 1-5.",
    )
    parser.add_argument(
        "--model",
        nargs="+",
        help="model folders, Hub ids or RAN names (plain timm classifiers too); with --runtime onnx, "
        ".onnx files from 'ran export'",
    )
    parser.add_argument("--data", help="dataset folder written by 'ran data' (or a Hub dataset id)")
    parser.add_argument("--split", default="test", help="the split evaluated")
    parser.add_argument(
        "--output-dir", type=Path, help="where results.json / .md / pictures / predictions go"
    )
    parser.add_argument(
        "--perturbations",
        nargs="+",
        metavar="KIND",
        help="which (NAME or occluder NAME:FILL; default: all, solid fill)",
    )
    parser.add_argument(
        "--seed", type=SEED, default=DEFAULT_SEED, help="seed of the perturbations and the bootstrap"
    )
    parser.add_argument("--reference", help="the model CE is measured against (default: the first --model)")
    parser.add_argument(
        "--list", action="store_true", help="print the perturbations and what severity means; exit"
    )
    add_evaluation_flags(parser)
    add_runtime_flag(parser)
    parser.add_argument(
        "--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples of the intervals"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an OUTPUT_DIR 'ran robustness' wrote"
    )
    return finish_help(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ran.robustness import PERTURBATIONS, describe_perturbations

    if args.list:
        print(describe_perturbations())
        return 0
    for flag, value in (("--model", args.model), ("--data", args.data), ("--output-dir", args.output_dir)):
        if not value:
            raise UserError(f"{flag} is required (or --list to see the perturbations)")
    from ran.evaluation.robustness import canonical_kind
    from ran.evaluation.statistics import check_resamples

    check_resamples(args.resamples)
    use_threads(args.threads)
    kinds = list(dict.fromkeys(canonical_kind(k) for k in (args.perturbations or PERTURBATIONS)))
    names = model_names(args.model)
    reference = _reference(args.reference, args.model, names)
    return _run(args, kinds, names, reference)


def model_names(models: list[str]) -> list[str]:
    """A short, unique, file-safe name per model: the folder's or repo's last part, the run's name for a
    run's ``best/`` (``runs/ran/best`` -> ``ran``), ``-2``, ... if taken."""
    import re

    from ran.training.outputs import BEST_DIR

    names: list[str] = []
    for model in models:
        path = Path(model.rstrip("/"))
        last = path.parent.name if path.name == BEST_DIR and path.parent.name else path.name
        base = re.sub(r"[^\w.-]+", "_", last) or "model"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _reference(reference: str | None, models: list[str], names: list[str]) -> str:
    if reference is None:
        return names[0]
    for model, name in zip(models, names):
        if reference in (model, name):
            return name
    raise UserError(f"--reference {reference!r}: not one of the --model values ({', '.join(models)})")


def model_loaders(sources: list[str], runtime: str) -> list[Callable[[], Any]]:
    """One loader per ``--model``, every model checked first so that one that cannot be found (or an ONNX
    file that is not a graph from ``ran export``) is refused before any runs. A PyTorch model is loaded
    when its turn comes; an ONNX graph is opened here (a read-only session; its metadata is the check)."""
    from functools import partial

    from ran.runtime import load_runtime_model

    if runtime == "onnx":
        graphs = [load_runtime_model(source, runtime) for source in sources]
        return [lambda graph=graph: graph for graph in graphs]
    from ran.modelio.loading import resolve_model_source

    for source in sources:
        resolve_model_source(source)
    return [partial(load_runtime_model, source, runtime) for source in sources]


def _run(args: argparse.Namespace, kinds: list[str], names: list[str], reference: str) -> int:
    """Under the output folder's lock from the start: a second run into the same folder is refused at
    once, not after computing everything (the lock is taken again, nested, when the results are written)."""
    from ran.locks import output_lock

    with output_lock(args.output_dir.expanduser().absolute(), "ran robustness", inside=False):
        return _measure(args, kinds, names, reference)


def _measure(args: argparse.Namespace, kinds: list[str], names: list[str], reference: str) -> int:
    from ran.data.batches import load_splits
    from ran.data.format.folder import check_not_in_dataset
    from ran.evaluation.robustness import perturbation_grid, robustness_samples
    from ran.evaluation.robustness_metrics import corruption_errors, model_summary
    from ran.evaluation.robustness_report import ROBUSTNESS, print_robustness, write_robustness
    from ran.evaluation.run import recorded_precision
    from ran.files import check_overwrite
    from ran.robustness import PERTURBATIONS, parse_kind

    out = args.output_dir.expanduser()
    check_not_in_dataset(out)
    check_overwrite(out, overwrite=args.overwrite, kind=ROBUSTNESS)
    loaders = model_loaders(args.model, args.runtime)
    dataset_dict = load_splits(args.data, progress=not args.no_progress)
    device = runtime_device(args.device, args.runtime)
    runs, models, grid = {}, {}, None
    for source, name, load in zip(args.model, names, loaders):
        model = load()
        runs[name] = robustness_samples(
            model,
            dataset_dict,
            kinds,
            split=args.split,
            seed=args.seed,
            batch_size=args.batch_size,
            precision=args.mixed_precision,
            device=device,
            image_size=args.image_size,
            cross_dataset=args.cross_dataset,
            progress=not args.no_progress,
            description=f"{name} under {len(kinds)} perturbations",
        )
        models[name] = {
            "model": source,
            "precision": recorded_precision(model, args.mixed_precision),
            **model_summary(runs[name], resamples=args.resamples, seed=args.seed),
        }
        if grid is None:
            grid = perturbation_grid(
                model, dataset_dict[args.split], kinds, seed=args.seed, image_size=args.image_size
            )
    corruption_errors(models, reference)
    results = {
        "data": str(args.data),
        "split": args.split,
        "seed": args.seed,
        "reference": reference,
        "perturbations": {k: PERTURBATIONS[parse_kind(k)[0]].severity for k in kinds},
        "models": models,
    }
    print_robustness(results)
    written = write_robustness(results, runs, out, grid=grid, overwrite=args.overwrite)
    print(f"\nwrote {', '.join(p.name for p in written)} to {out}")
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran robustness")
