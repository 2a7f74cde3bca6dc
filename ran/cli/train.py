"""``ran train``: train a RAN on a ``ran data`` folder (options: defaults < --config YAML < flags)."""

from __future__ import annotations

from ran.training.config import resolve_config
from ran.training.loop import train


def main(argv: list[str] | None = None) -> int:
    train(resolve_config(argv))
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran train")
