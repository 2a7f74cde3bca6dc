"""Command-line flags from dataclasses, through transformers' ``HfArgumentParser`` (shared by commands).

A dataclass field ``batch_size: int = 32`` becomes ``--batch-size`` (and ``--batch_size``); a ``bool``
field that defaults to True also gets ``--no-<name>``; ``metadata={'help': ...}`` is its help.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def options_parser(dataclass_types: Sequence[type], prog: str, description: str) -> Any:
    """An ``HfArgumentParser`` for ``dataclass_types`` (one flag per field)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(list(dataclass_types), prog=prog, description=description)
    for action in parser._actions:  # show --batch-size before its --batch_size alias
        action.option_strings.sort(key=lambda flag: "_" in flag)
    return parser


def parse_options(
    dataclass_type: type | Sequence[type], argv: list[str] | None, prog: str, description: str
) -> tuple[Any, ...]:
    """Parse ``argv`` into one instance per dataclass; unknown flags exit with argparse's usage error."""
    types = [dataclass_type] if isinstance(dataclass_type, type) else list(dataclass_type)
    parser = options_parser(types, prog, description)
    return tuple(parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False))


def device_option(requested: str | None, flag: str = "--device") -> Any:
    """The device a command runs on: ``requested`` (a CUDA request where CUDA does not work is refused
    with the reason), else the GPU when CUDA works, else the CPU, with a warning on stderr when the
    machine looks like it has a GPU that CUDA cannot use (a quiet CPU fallback would look like a slow GPU).
    """
    import sys

    from ran.devices import gpu_fallback_warning, resolve_device

    device = resolve_device(requested, flag)
    warning = gpu_fallback_warning() if requested is None else None
    if warning:
        print(warning, file=sys.stderr)
    return device
