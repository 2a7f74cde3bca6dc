"""Numbers a user gives: finite and in range, checked one way wherever they come from.

A :class:`NumberRange` is at once an argparse ``type`` (``--lr inf`` is refused while the flags are parsed,
before anything is written), the check of a value set in code or read from YAML (:meth:`NumberRange.check`)
and the words of the error (``expected a finite number > 0, got inf``). Dataclass options carry theirs as
``metadata={'type': ...}``: transformers' ``HfArgumentParser`` ignores that key (it sets the field's own
type), :func:`dataclass_parser` puts it on the parsed flag and :func:`check_numbers` checks an instance.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from ran.errors import UserError
from ran.vocabulary import MIN_FACE_SIDE

MESSAGE_VALUE_CHARS = 200  # a value quoted in an error message is cut to this many characters


def brief(value: Any, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a message never embeds an
    unbounded value (a 300 MB string, a list a YAML alias bomb expanded)."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value) if not isinstance(value, str) or len(value) <= 4 * limit else repr(value[: 4 * limit])
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _bound(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class NumberRange:
    """Finite numbers of one ``kind`` (int or float) between ``low`` and ``high`` (None: unbounded);
    ``low_open`` / ``high_open`` leave the bound itself out."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    @property
    def __name__(self) -> str:  # argparse names a type by it
        return "integer" if self.kind is int else "number"

    def describe(self) -> str:
        """``an integer >= 1``, ``a finite number > 0``, ``a number in [0, 1)``."""
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {left}{_bound(self.low)}, {_bound(self.high)}{right}"
        noun = noun if self.kind is int else "a finite number"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {_bound(self.low)}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {_bound(self.high)}"
        return noun

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is a finite number of this kind within the bounds (bools are not numbers)."""
        kinds = (numbers.Integral,) if self.kind is int else (numbers.Integral, numbers.Real)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, value: Any, name: str) -> Any:
        """``value`` if it holds (a numpy number as Python's), else a ValueError naming ``name``, the value
        and the range."""
        if not self.holds(value):
            raise UserError(f"{name}: expected {self.describe()}, got {brief(value)}")
        return (
            value
            if type(value) in (int, float)
            else (int if isinstance(value, numbers.Integral) else float)(value)
        )

    def __call__(self, text: str) -> int | float:
        """The argparse ``type``: the flag's text as a number in range, else argparse's usage error."""
        try:
            value = self.kind(text.strip())
        except ValueError:
            value = None
        if value is None or not self.holds(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {brief(text)}")
        return value


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    above: float | None = None,
    below: float | None = None,
) -> NumberRange:
    """A finite float: ``number(0, 1)`` is [0, 1], ``number(above=0)`` is > 0, ``number(0, below=1)`` is
    [0, 1)."""
    return NumberRange(
        float,
        above if above is not None else low,
        below if below is not None else high,
        low_open=above is not None,
        high_open=below is not None,
    )


def integer(low: int | None = None, high: int | None = None) -> NumberRange:
    """An integer in [low, high] (None: unbounded)."""
    return NumberRange(int, low, high)


SEED = integer(0, 2**32 - 1)  # what numpy, torch and random all take
IMAGE_SIDE = integer(MIN_FACE_SIDE, 4096)  # a side in pixels that a face image is resized to
REGION_SIDE = integer(MIN_FACE_SIDE, 1024)  # the side in pixels every region is resampled to
# inputs decoded and searched for faces ahead of the model: each holds a decoded photo, so the depth is
# bounded; a few batches ahead is all the overlap needs
PREFETCH_DEPTH = integer(0, 64)
MARGIN = number(0, 2)  # context around a face box, per side, as a fraction of its side
DETECT_FRACTION = number(above=0, high=1)  # the detection copy's size as a fraction of the image's: (0, 1]
SMOOTH_FACTOR = number(above=0, high=1)  # a moving average's weight of the newest value: (0, 1]


# the training criterion (ran.losses, ``loss:`` of a run's config)
RB_MARGIN = number(0, 1)  # attention weights are in [0, 1], so is any margin between two of them
RB_WEIGHT = number(0)
LABEL_SMOOTHING = number(0, 1)


def number_fields(cls: type) -> list[tuple[str, NumberRange]]:
    """(field name, range) of the dataclass ``cls``'s numeric options."""
    return [
        (f.name, f.metadata["type"])
        for f in dataclasses.fields(cls)
        if isinstance(f.metadata.get("type"), NumberRange)
    ]


def dataclass_parser(dataclass_types: list[type], **kwargs: Any) -> argparse.ArgumentParser:
    """transformers' ``HfArgumentParser`` over ``dataclass_types`` (``kwargs`` go to argparse), whose flags
    that carry a range parse through it (``HfArgumentParser`` gives each flag its field's plain type) and
    show their ``--dash-spelling`` before the ``--underscore_spelling`` alias."""
    from transformers import HfArgumentParser

    ranges = {name: bounds for cls in dataclass_types for name, bounds in number_fields(cls)}

    class RangedParser(HfArgumentParser):
        def add_argument(self, *flags: Any, **options: Any) -> argparse.Action:
            name = flags[0].lstrip("-") if flags else ""
            if name in ranges and "type" in options:
                options["type"] = ranges[name]
            return super().add_argument(*sorted(flags, key=lambda flag: "_" in flag), **options)

    return RangedParser(dataclass_types, **kwargs)


def check_numbers(instance: Any, name: Any = None) -> None:
    """Check every ranged field of a dataclass instance (lists element by element; None is "not given").
    ``name(field)`` says how to name an option in the error (default: its flag)."""
    for field_name, bounds in number_fields(type(instance)):
        value = getattr(instance, field_name)
        label = name(field_name) if name else f"--{field_name.replace('_', '-')}"
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and not bounds.holds(item):
                raise UserError(f"{label}: expected {bounds.describe()}, got {brief(item)}")


__all__ = [
    "IMAGE_SIDE",
    "MARGIN",
    "MESSAGE_VALUE_CHARS",
    "REGION_SIDE",
    "SEED",
    "NumberRange",
    "dataclass_parser",
    "brief",
    "check_numbers",
    "integer",
    "number",
]
