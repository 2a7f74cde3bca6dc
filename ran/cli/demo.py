"""``ran demo``: generate the synthetic dataset, train a small RAN, evaluate it on every subset, save it."""

from __future__ import annotations

from ran.cli.options import parse_options
from ran.demo import DemoOptions, run_demo


def main(argv: list[str] | None = None) -> int:
    [options] = parse_options(
        DemoOptions,
        argv,
        prog="ran demo",
        description="Generate the synthetic FERPlus-style dataset, train a small RAN on it, evaluate it on "
        "every subset (test, occlusion, pose30, pose45) and save the model, results and plots.",
    )
    run_demo(options)
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran demo")
