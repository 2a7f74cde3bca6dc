"""``ran data``: build FERPlus / RAF-DB / AffectNet / synthetic datasets as Parquet folders, and push them.

Each build streams its rows into Parquet shards (at most --max-shard-size each, with --num-proc
processes), prints the split counts and writes OUT atomically; an existing OUT is kept unless --overwrite,
which replaces only a dataset folder that ``ran data`` wrote (or an empty one). One build of OUT runs at a
time: a second is refused while the first holds OUT's lock.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ran.errors import UserError
from ran.helptext import finish_help
from ran.labels import FERPLUS_LABEL_MODES
from ran.numbers import IMAGE_SIDE, SEED, integer


def _lists_argument(value: str | None) -> str | bool | None:
    """--lists: a directory, 'none' (no subsets), or unset ($RAN_SUBSET_LISTS or the pinned download)."""
    if value is None:
        return None
    return False if value.lower() == "none" else value


def _print_counts(counts: dict[str, int], out: Path) -> int:
    width = max(len(name) for name in counts)
    for name, rows in counts.items():
        print(f"{name:<{width}}  {rows:>7,}")
    print(f"wrote {out}")
    return 0


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an existing OUT before reading any input rather than after the (long) build (the writer
    checks again, under OUT's lock)."""
    from ran.data.format.writer import DATASET, is_dataset_folder
    from ran.files import check_overwrite

    check_overwrite(args.out, overwrite=args.overwrite, kind=DATASET, recognise=is_dataset_folder)


def _output(args: argparse.Namespace) -> dict:
    """The options every builder takes: where, whether to replace, processes, shard size."""
    _check_out(args)
    return {
        "overwrite": args.overwrite,
        "num_proc": args.num_proc,
        "max_shard_bytes": args.max_shard_size,
    }


def _ferplus(args: argparse.Namespace) -> int:
    from ran.data.sources.ferplus import write_ferplus

    options = _output(args)
    counts = write_ferplus(
        args.out, args.fer2013, args.labels, args.label_mode, _lists_argument(args.lists), **options
    )
    return _print_counts(counts, args.out)


def _rafdb(args: argparse.Namespace) -> int:
    from ran.data.sources.rafdb import write_rafdb

    options = _output(args)
    return _print_counts(write_rafdb(args.out, args.root, _lists_argument(args.lists), **options), args.out)


def _affectnet(args: argparse.Namespace) -> int:
    from ran.data.sources.affectnet import write_affectnet

    options = _output(args)
    counts = write_affectnet(
        args.out,
        args.root,
        args.num_classes,
        _lists_argument(args.lists),
        crop_faces=not args.no_crop,
        **options,
    )
    return _print_counts(counts, args.out)


def _perturb(args: argparse.Namespace) -> int:
    from ran.data.batches import load_splits
    from ran.data.sources.perturbed import write_perturbed
    from ran.robustness import PERTURBATIONS

    given = Path(str(args.data)).expanduser()
    out = Path(args.out).expanduser().resolve()
    if given.exists() and (out == given.resolve() or out.is_relative_to(given.resolve())):
        raise UserError(
            f"--out {args.out}: the dataset read (--data) or a folder inside it (its card would no longer "
            "match its files); write the perturbed copy elsewhere"
        )
    _check_out(args)
    counts = write_perturbed(
        args.out,
        load_splits(args.data),
        args.perturbations or list(PERTURBATIONS),
        source=str(args.data),
        split=args.split,
        severities=args.severities,
        seed=args.seed,
        image_size=args.image_size,
        overwrite=args.overwrite,
    )
    return _print_counts(counts, args.out)


def _synthetic(args: argparse.Namespace) -> int:
    from ran.data.synthetic.generator import write_synthetic

    options = _output(args)
    sizes = {
        name: value
        for name, value in (("train_size", args.train_size), ("test_size", args.test_size))
        if value
    }
    description = (
        f"Procedurally drawn 48x48 grayscale faces in FERPlus form (ran data synthetic, seed {args.seed}); "
        "test images are also rendered turned (pose30, pose45) and partly covered (occlusion)."
    )
    counts = write_synthetic(args.out, seed=args.seed, description=description, **sizes, **options)
    return _print_counts(counts, args.out)


def _push(args: argparse.Namespace) -> int:
    from ran.data.format.folder import push_dataset_folder

    result = push_dataset_folder(args.folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"uploaded {args.folder} to https://huggingface.co/datasets/{args.repo_id}")
    if result is not None:
        print(result)
    return 0


def _shard_size(value: str) -> int:
    from ran.data.format.writer import parse_shard_size

    try:
        return parse_shard_size(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_output(sub: argparse.ArgumentParser) -> None:
    """The output flags every builder shares."""
    sub.add_argument("--out", required=True, type=Path, help="output folder (Parquet files + README.md)")
    sub.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it is a dataset folder written by 'ran data' (never other folders)",
    )
    sub.add_argument(
        "--num-proc",
        type=integer(1, 256),
        default=1,
        metavar="N",
        help="processes reading / encoding images",
    )
    sub.add_argument(
        "--max-shard-size",
        type=_shard_size,
        default="500MB",
        metavar="SIZE",
        help="largest Parquet file per split, e.g. 500MB (default), 2GB; larger splits are sharded",
    )


def _add_lists(sub: argparse.ArgumentParser) -> None:
    """Where the RAN authors' occlusion / pose subset lists come from."""
    sub.add_argument(
        "--lists",
        metavar="DIR",
        help="local copy of the RAN authors' subset lists (repository layout); 'none' for no subsets; "
        "default: $RAN_SUBSET_LISTS, else download at the pinned commit (sha256-checked, cached)",
    )


def build_parser(prog: str = "ran data") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Build FERPlus / RAF-DB / AffectNet / synthetic datasets as Parquet folders."
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{ferplus,rafdb,affectnet,synthetic,perturb,push}"
    )

    ferplus = commands.add_parser("ferplus", help="FERPlus from fer2013.csv and the FERPlus labels")
    ferplus.add_argument(
        "--fer2013", type=Path, help="Kaggle fer2013.csv (not needed with a FERPlus PNG tree)"
    )
    ferplus.add_argument(
        "--labels",
        type=Path,
        help="FERPlus checkout or its data/ folder (label.csv per split), fer2013new.csv, or a FERPlus PNG "
        "tree; default: download the label files at the pinned commit",
    )
    ferplus.add_argument(
        "--label-mode", choices=FERPLUS_LABEL_MODES, default="majority", help="training-label rule"
    )
    _add_lists(ferplus)
    _add_output(ferplus)
    ferplus.set_defaults(handler=_ferplus)

    rafdb = commands.add_parser("rafdb", help="RAF-DB basic (EmoLabel/ + Image/aligned/)")
    rafdb.add_argument("--root", required=True, type=Path, help="RAF-DB basic folder")
    _add_lists(rafdb)
    _add_output(rafdb)
    rafdb.set_defaults(handler=_rafdb)

    affectnet = commands.add_parser("affectnet", help="AffectNet (training.csv / validation.csv + images)")
    affectnet.add_argument("--root", required=True, type=Path, help="AffectNet folder")
    affectnet.add_argument("--num-classes", type=int, choices=(8, 7), default=8, help="7 drops contempt")
    affectnet.add_argument("--no-crop", action="store_true", help="keep whole images instead of the face box")
    _add_lists(affectnet)
    _add_output(affectnet)
    affectnet.set_defaults(handler=_affectnet)

    synthetic = commands.add_parser("synthetic", help="the generated default dataset (FERPlus form)")
    synthetic.add_argument("--seed", type=SEED, default=0, help="random seed of the generated faces")
    synthetic.add_argument("--train-size", type=integer(1), help="training images (default: the generator's)")
    synthetic.add_argument("--test-size", type=integer(1), help="test images (default: the generator's)")
    _add_output(synthetic)
    synthetic.set_defaults(handler=_synthetic)

    perturb = commands.add_parser(
        "perturb", help="a fixed perturbed test set (ran.robustness) from a dataset"
    )
    perturb.add_argument("--data", required=True, help="dataset folder written by 'ran data' (or a Hub id)")
    perturb.add_argument("--split", default="test", help="the split perturbed")
    perturb.add_argument(
        "--perturbations", nargs="+", metavar="KIND", help="see 'ran robustness --list' (default: all)"
    )
    perturb.add_argument(
        "--severities", nargs="+", type=integer(1, 5), default=[1, 2, 3, 4, 5], help="severities 1-5"
    )
    perturb.add_argument("--seed", type=SEED, default=0, help="seed of the perturbations")
    perturb.add_argument("--image-size", type=IMAGE_SIDE, help="resize faces to this square side first")
    _add_output(perturb)
    perturb.set_defaults(handler=_perturb)

    push = commands.add_parser("push", help="upload a folder built by 'ran data' to a Hub dataset repo")
    push.add_argument("folder", type=Path, help="the folder (its README.md and Parquet files)")
    push.add_argument("repo_id", help="Hub dataset repo, e.g. user/ferplus-ran")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--revision", help="branch to upload to")
    push.set_defaults(handler=_push)
    return finish_help(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran data")
