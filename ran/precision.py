"""One precision vocabulary for every command: ``fp32``, ``bf16``, ``fp16`` (``ran.vocabulary``).

Training hands the choice to accelerate (which calls full precision ``no``); evaluation, prediction and
benchmarks use :func:`autocast`. ``no`` and the torch dtype names are accepted as aliases so that
``--mixed-precision no`` (accelerate's word) keeps working.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the parsers read the choices without importing torch
    import torch

from ran.errors import Note, UserError
from ran.vocabulary import PRECISION_ALIASES as ALIASES
from ran.vocabulary import PRECISION_CHOICES as CHOICES
from ran.vocabulary import PRECISIONS

DTYPES: dict[str, str] = dict(zip(PRECISIONS, ("float32", "bfloat16", "float16")))  # torch's names
EMULATED_BF16 = (
    "this CPU has neither AVX-512 BF16 nor AMX, so PyTorch emulates bf16: expect it several times slower "
    "than fp32 (the default) here"
)


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


def note_if_emulated(precision: str, device: torch.device | str) -> None:
    """bf16 on a CPU that only emulates it runs (it was asked for), with a note, once per process, that
    fp32 is faster there; called where bf16 starts running (:func:`autocast`, training's set-up)."""
    import torch

    device = torch.device(device)
    if resolve_precision(precision) == "bf16" and device.type == "cpu" and not bf16_is_native(device):
        _note_emulated_bf16()


@functools.cache
def _note_emulated_bf16() -> None:
    # once per process: warnings' own once-per-place is reset by every catch_warnings (decoding enters one)
    warnings.warn(EMULATED_BF16, Note, stacklevel=4)


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether ``device`` runs bf16 at hardware speed: a GPU that supports it, or a CPU with AVX-512 BF16
    or AMX. Elsewhere PyTorch emulates bf16 in fp32 arithmetic, several times slower than fp32 itself
    (the demo's training: 6x on a 2-core AVX2 EPYC), so it is never a default there."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return device.type == "cpu" and any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def autocast(device: torch.device | str, precision: str | None) -> Any:
    """The autocast context for ``precision`` on ``device`` (a no-op context for fp32)."""
    import torch

    key = resolve_precision(precision)
    device = torch.device(device)
    if key == "fp32":
        return contextlib.nullcontext()
    check_device_support(key, device)
    note_if_emulated(key, device)
    return torch.autocast(device.type, dtype=getattr(torch, DTYPES[key]))


__all__ = [
    "ALIASES",
    "CHOICES",
    "DTYPES",
    "PRECISIONS",
    "accelerate_precision",
    "autocast",
    "bf16_is_native",
    "check_device_support",
    "note_if_emulated",
    "resolve_precision",
]
