"""``ran train``: train a RAN on a ``ran data`` folder (options: defaults < --config YAML < flags)."""

from __future__ import annotations

from ran.training.config import resolve_config


def main(argv: list[str] | None = None) -> int:
    config = resolve_config(argv)  # --help and bad flags end here, before torch is imported
    from ran.training.loop import train

    train(config)
    return 0


if __name__ == "__main__":
    from ran.cli import run_module

    run_module(main, "ran train")
