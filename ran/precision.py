"""One precision vocabulary for every command: ``fp32``, ``bf16``, ``fp16`` (``ran.vocabulary``).

Training hands the choice to accelerate (which calls full precision ``no``); evaluation, prediction and
benchmarks use :func:`autocast`. ``no`` and the torch dtype names are accepted as aliases so that
``--mixed-precision no`` (accelerate's word) keeps working.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the parsers read the choices without importing torch
    import torch

from ran.errors import UserError
from ran.vocabulary import PRECISION_ALIASES as ALIASES
from ran.vocabulary import PRECISION_CHOICES as CHOICES
from ran.vocabulary import PRECISIONS

DTYPES: dict[str, str] = dict(zip(PRECISIONS, ("float32", "bfloat16", "float16")))  # torch's names


def resolve_precision(value: str | None, name: str = "precision") -> str:
    """``fp32`` / ``bf16`` / ``fp16`` for any accepted spelling; a ValueError naming ``name`` otherwise."""
    key = "fp32" if value is None else str(value).lower()
    key = ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise UserError(f"{name}: expected one of {', '.join(PRECISIONS)}, got {value!r}")
    return key


def accelerate_precision(value: str | None) -> str:
    """The value accelerate's ``mixed_precision`` takes (``no`` for fp32)."""
    key = resolve_precision(value, "mixed_precision")
    return "no" if key == "fp32" else key


def check_device_support(precision: str, device: torch.device | str) -> None:
    """fp16 autocast needs a GPU here; say so before anything runs."""
    import torch

    if resolve_precision(precision) == "fp16" and torch.device(device).type == "cpu":
        raise UserError("precision fp16 needs a GPU; use bf16 on a CPU")


def autocast(device: torch.device | str, precision: str | None) -> Any:
    """The autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    import torch

    key = resolve_precision(precision)
    device = torch.device(device)
    if key == "fp32":
        return contextlib.nullcontext()
    check_device_support(key, device)
    return torch.autocast(device.type, dtype=getattr(torch, DTYPES[key]))


__all__ = [
    "ALIASES",
    "CHOICES",
    "DTYPES",
    "PRECISIONS",
    "accelerate_precision",
    "autocast",
    "check_device_support",
    "resolve_precision",
]
