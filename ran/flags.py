"""Command-line flags from dataclasses: one flag per field, with the help, choices and range its metadata
gives (shared by ``ran train``'s options, the YAML files that set them and ``ran demo``).

``batch_size: int = 32`` becomes ``--batch-size`` (``--batch_size`` is accepted too); a ``bool`` field is
``--x`` or ``--x true|false`` and, when it defaults to True, also ``--no-x``; ``list[float]`` takes one or
more values; ``X | None`` is parsed as ``X``; a ``Literal[...]`` offers its values.
``metadata={'help': ..., 'choices': ..., 'type': ran.numbers.integer(1)}`` is the help line, the allowed
values and the range every value must lie in (refused while the flags are parsed).

The spelling is that of transformers' ``HfArgumentParser``, which the commands used before; it is built here
because importing transformers alone takes about 0.6 s, more than a whole ``ran train --help`` may.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from types import UnionType
from typing import Any, Literal

TRUE_WORDS = ("yes", "true", "t", "y", "1")
FALSE_WORDS = ("no", "false", "f", "n", "0")


def string_to_bool(text: str | bool) -> bool:
    """The argparse type of a boolean flag's optional value (``--hflip false``)."""
    if isinstance(text, bool):
        return text
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}, got {text!r}")


def _plain(hint: Any) -> Any:
    """``X`` for ``X | None`` / ``Optional[X]``; other hints unchanged."""
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(kinds) != 1:
            raise TypeError(f"a flag has one type, not {hint}")
        return kinds[0]
    return hint


def _field_arguments(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """``add_argument`` keywords for a dataclass field."""
    meta = dict(f.metadata)
    kind = _plain(hint)
    arguments: dict[str, Any] = {"dest": f.name, "help": meta.get("help")}
    if f.default is not dataclasses.MISSING:
        arguments["default"] = f.default
    elif f.default_factory is not dataclasses.MISSING:
        arguments["default"] = f.default_factory()
    elif kind is not bool:
        arguments["required"] = True
    if "choices" in meta:
        arguments["choices"] = meta["choices"]
    if kind is bool:
        arguments.update(type=string_to_bool, nargs="?", const=True)
        arguments.setdefault("default", False)
    elif typing.get_origin(kind) is Literal:
        arguments.update(choices=typing.get_args(kind), type=type(typing.get_args(kind)[0]))
    elif typing.get_origin(kind) is list:
        arguments.update(type=meta.get("type", typing.get_args(kind)[0]), nargs="+")
    else:
        arguments["type"] = meta.get("type", kind)
    return arguments


def add_dataclass_flags(parser: Any, cls: type) -> None:
    """One flag per field of the dataclass ``cls`` (and ``--no-x`` for a boolean that defaults to True)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        dashed = f.name.replace("_", "-")
        names = [f"--{dashed}", f"--{f.name}"] if "_" in f.name else [f"--{f.name}"]
        parser.add_argument(*names, **_field_arguments(f, hints[f.name]))
        if f.default is True and _plain(hints[f.name]) is bool:
            off = [f"--no-{dashed}", f"--no_{f.name}"]
            parser.add_argument(*off, action="store_false", dest=f.name, help=f"turn --{dashed} off")


def dataclass_parser(dataclass_types: Sequence[type], **kwargs: Any) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` (``kwargs`` go to it) with one flag per field of ``dataclass_types``."""
    parser = argparse.ArgumentParser(**kwargs)
    for cls in dataclass_types:
        add_dataclass_flags(parser, cls)
    return parser


def parse_dataclasses(
    parser: argparse.ArgumentParser, dataclass_types: Sequence[type], argv: list[str] | None
) -> tuple[Any, ...]:
    """Parse ``argv`` (an unknown flag exits with argparse's usage error) into one instance per dataclass."""
    namespace = parser.parse_args(argv)
    return tuple(
        cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if f.init})
        for cls in dataclass_types
    )


__all__ = ["add_dataclass_flags", "dataclass_parser", "parse_dataclasses", "string_to_bool"]
