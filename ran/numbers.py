"""Numbers a user gives: finite and in range, checked one way wherever they come from.

A :class:`NumberRange` is at once an argparse ``type`` (``--lr inf`` is refused while the flags are parsed,
before anything is written), the check of a value set in code or read from YAML (:meth:`NumberRange.check`)
and the words of the error (``expected a finite number > 0, got inf``). Dataclass options carry theirs as
``metadata={'type': ...}``: ``ran.flags`` makes it the type of the field's flag and :func:`check_numbers`
checks an instance.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

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
        kinds = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, value: Any, name: str) -> Any:
        """``value`` if it holds, else a ValueError naming ``name``, the value and the range."""
        if not self.holds(value):
            raise ValueError(f"{name}: expected {self.describe()}, got {brief(value)}")
        return value

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
IMAGE_SIDE = integer(8, 4096)  # a side in pixels that a face image is resized to
REGION_SIDE = integer(8, 1024)  # the side in pixels every region is resampled to
MARGIN = number(0, 2)  # context around a face box, per side, as a fraction of its side


def number_fields(cls: type) -> list[tuple[str, NumberRange]]:
    """(field name, range) of the dataclass ``cls``'s numeric options."""
    return [
        (f.name, f.metadata["type"])
        for f in dataclasses.fields(cls)
        if isinstance(f.metadata.get("type"), NumberRange)
    ]


def check_numbers(instance: Any, name: Any = None) -> None:
    """Check every ranged field of a dataclass instance (lists element by element; None is "not given").
    ``name(field)`` says how to name an option in the error (default: its flag)."""
    for field_name, bounds in number_fields(type(instance)):
        value = getattr(instance, field_name)
        label = name(field_name) if name else f"--{field_name.replace('_', '-')}"
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and not bounds.holds(item):
                raise ValueError(f"{label}: expected {bounds.describe()}, got {brief(item)}")


__all__ = [
    "IMAGE_SIDE",
    "MARGIN",
    "MESSAGE_VALUE_CHARS",
    "REGION_SIDE",
    "SEED",
    "NumberRange",
    "brief",
    "check_numbers",
    "integer",
    "number",
]
