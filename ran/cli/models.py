"""``ran models``: the registered RAN architectures with their backbone, region size and size."""

from __future__ import annotations

import argparse
import json

from ran.constants import MAX_CLASSES, RAN_VARIANTS
from ran.errors import UserError
from ran.helptext import finish_help
from ran.numbers import integer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ran models", description="List the registered RAN models.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'ran_iresnet*'")
    parser.add_argument(
        "--num-classes", type=integer(1, MAX_CLASSES), default=8, help="classes the parameter count assumes"
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = finish_help(parser).parse_args(argv)
    from ran.models.catalog import describe_models

    rows = describe_models(args.pattern, args.num_classes)
    if not rows:
        known = ", ".join(sorted(RAN_VARIANTS))
        raise UserError(f"pattern {args.pattern!r}: no registered RAN model matches (known: {known})")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<16} {'backbone':<12} {'region':>6} {'regions':>7} {'C':>5} {'params':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['name']:<16} {row['backbone']:<12} {row['region_size']:>6} {row['num_regions']:>7} "
            f"{row['feature_dim']:>5} {row['params'] / 1e6:>8.2f}M"
        )
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran models")
