"""``ran convert SRC DST``: an original RAN checkpoint (.pth.tar) -> a safetensors model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ran.constants import RAN_VARIANTS
from ran.helptext import finish_help
from ran.labels import CHECKPOINT_LABEL_SETS
from ran.numbers import REGION_SIDE
from ran.vocabulary import ATTENTION_MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ran convert",
        description="Convert an original RAN checkpoint (.pth.tar / .pth / .safetensors) into a "
        "safetensors model folder loadable by ran.from_pretrained, timm and transformers.",
    )
    parser.add_argument("src", type=Path, help="checkpoint file (read with torch.load weights_only=True)")
    parser.add_argument("dst", type=Path, help="output folder (model.safetensors, config.json, README.md)")
    parser.add_argument("--arch", choices=sorted(RAN_VARIANTS), help="architecture (default: inferred)")
    parser.add_argument("--regions", default="ferplus6", help="region preset the model was trained with")
    parser.add_argument(
        "--region-size", type=REGION_SIDE, help="region side in px (default: the architecture's)"
    )
    parser.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default="softmax",
        help="softmax = the original code (default; required for the authors' checkpoints)",
    )
    parser.add_argument(
        "--labels", choices=sorted(CHECKPOINT_LABEL_SETS), help="class names (default: by class count)"
    )
    parser.add_argument("--allow-missing", action="store_true", help="keep missing weights random")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    args = finish_help(parser).parse_args(argv)
    from ran.modelio.convert import convert

    report = convert(
        args.src,
        args.dst,
        arch=args.arch,
        regions=args.regions,
        region_size=args.region_size,
        attention=args.attention,
        labels=args.labels,
        allow_missing=args.allow_missing,
        overwrite=args.overwrite,
    )
    print(report.summary())
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran convert")
