"""A training config from a YAML mapping (``--config FILE``, a run's saved ``config.yaml``): each value
converted and checked by the rules of its flag (its number range, its choices, its type), then built by
transformers' ``HfArgumentParser.parse_dict``, so a value is converted and checked one way."""

from __future__ import annotations

import argparse
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from ran.errors import UserError
from ran.numbers import NumberRange, brief
from ran.safeyaml import read_yaml
from ran.training.config import _SECTION_OF, SECTIONS, TrainConfig


def _field(section: str, name: str) -> tuple[Field, Any, bool]:
    """The option's dataclass field, its value type (a list's element type for a list) and whether it is
    a list; ``Optional`` removed."""
    cls = SECTIONS[section]
    hint = get_type_hints(cls)[name]
    args = get_args(hint)
    kind = next((a for a in args if a is not type(None)), hint) if type(None) in args else hint
    is_list = get_origin(kind) is list
    return next(f for f in fields(cls) if f.name == name), get_args(kind)[0] if is_list else kind, is_list


def _expected(kind: Any, bounds: NumberRange | None, choices: Any, is_list: bool) -> str:
    if bounds is not None:
        return f"a list, each {bounds.describe()}" if is_list else bounds.describe()
    if choices:
        return f"one of {list(choices)}"
    word = "bool" if kind is bool else "str"
    return f"a list of {word}" if is_list else word


def _scalar(kind: Any, bounds: NumberRange | None, value: Any) -> Any:
    """One YAML scalar as the option's type, by the rules of its flag (YAML reads ``1e-4`` as text, which
    the flag's number type parses); a ValueError / TypeError / ArgumentTypeError when it is not one."""
    if bounds is not None:
        return bounds(value) if isinstance(value, str) else bounds.kind(bounds.check(value, "value"))
    if kind is bool:
        from transformers.hf_argparser import string_to_bool  # what the flag's own parsing uses

        if isinstance(value, (bool, str, int)):  # YAML's true / yes, or the flag's words: 1, "yes", ...
            return string_to_bool(value if isinstance(value, bool) else str(value))
        raise TypeError
    if isinstance(value, (bool, list, dict)):
        raise TypeError
    return str(value)


def _yaml_value(section: str, name: str, value: Any, source: str) -> Any:
    """A YAML value converted and checked as its flag's would be; errors name ``source`` and the key."""
    option, kind, is_list = _field(section, name)
    bounds, choices = option.metadata.get("type"), option.metadata.get("choices")
    expected = _expected(kind, bounds, choices, is_list)
    problem = f"{source}: {section}.{name}: expected {expected}, got {brief(value)}"
    if value is None:
        if option.default is None:  # an optional option
            return None
        raise UserError(problem)
    if value is False and choices and "no" in choices:
        value = "no"  # YAML 1.1 reads an unquoted ``no`` as false
    try:
        if is_list:
            values = value if isinstance(value, list) else [value]
            if not values:
                raise ValueError
            return [_scalar(kind, bounds, v) for v in values]
        converted = _scalar(kind, bounds, value)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        raise UserError(problem) from None
    if choices and converted not in choices:
        raise UserError(problem)
    return converted


def _mapping_items(data: Any, source: str) -> list[tuple[str, str, Any]]:
    """(section, option, value) of a ``{section: {name: value}}`` (or flat ``{name: value}``) mapping."""
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(data).__name__}"
        )
    items = []
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            pairs = [(key, str(name).replace("-", "_"), v) for name, v in value.items()]
        elif str(key).replace("-", "_") in _SECTION_OF:
            name = str(key).replace("-", "_")
            pairs = [(_SECTION_OF[name], name, value)]
        else:
            raise UserError(
                f"{source}: unknown key {key!r}; expected a section ({', '.join(SECTIONS)}) or an option name"
            )
        for section, name, _ in pairs:
            if _SECTION_OF.get(name) != section:
                known = ", ".join(f.name for f in fields(SECTIONS[section]))
                raise UserError(f"{source}: unknown option {section}.{name}; expected one of: {known}")
        items += pairs
    return items


def config_from_mapping(data: Any, source: str, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: the defaults) with a YAML-style mapping applied; errors name ``source`` and key.
    Each value is checked as its flag's would be, then transformers' ``HfArgumentParser.parse_dict``
    builds the sections."""
    from transformers import HfArgumentParser

    defaults = (base or TrainConfig()).to_dict().values()
    values = {name: value for section in defaults for name, value in section.items()}
    for section, name, value in _mapping_items(data, source):
        values[name] = _yaml_value(section, name, value, source)
    sections = HfArgumentParser(list(SECTIONS.values())).parse_dict(values)
    return TrainConfig(**dict(zip(SECTIONS, sections, strict=True)))


def load_yaml_config(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """A YAML training config applied over ``base`` (default: the defaults)."""
    return config_from_mapping(read_yaml(Path(path), "--config") or {}, str(path), base)


__all__ = ["config_from_mapping", "load_yaml_config"]
