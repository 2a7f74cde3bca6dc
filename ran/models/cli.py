"""``ran models``: the registered RAN architectures with their backbone, region size and size."""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from typing import Any

import timm
import torch

from ran.models import RAN_VARIANTS


def describe_models(pattern: str = "*", num_classes: int = 8) -> list[dict[str, Any]]:
    """One row per registered RAN name matching ``pattern``; parameters counted on the meta device
    (no memory, no weights), for ``num_classes`` outputs."""
    rows = []
    for name in sorted(RAN_VARIANTS):
        if not fnmatch.fnmatch(name, pattern):
            continue
        defaults = RAN_VARIANTS[name]
        with torch.device("meta"):
            model = timm.create_model(name, num_classes=num_classes)
        rows.append(
            {
                "name": name,
                "backbone": defaults["backbone"],
                "region_size": defaults["region_size"],
                "num_regions": model.num_regions,
                "feature_dim": model.region_feature_dim,
                "params": sum(p.numel() for p in model.parameters()),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ran models", description="List the registered RAN models.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'ran_iresnet*'")
    parser.add_argument("--num-classes", type=int, default=8, help="classes the parameter count assumes")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    rows = describe_models(args.pattern, args.num_classes)
    if not rows:
        known = ", ".join(sorted(RAN_VARIANTS))
        raise ValueError(f"pattern {args.pattern!r}: no registered RAN model matches (known: {known})")
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
    from ran.cli import run_main

    sys.exit(run_main(main, None, prog="ran models"))
