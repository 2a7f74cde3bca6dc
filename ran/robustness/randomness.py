"""Per-face random numbers that depend only on (seed, perturbation, face id, what they are for).

A perturbed face must be byte-identical whatever batch it travels in, on however many processes: a
generator shared by the batch would hand a face different numbers when the batch changes. So every
number is a hash of its coordinates instead (a counter-based generator): integer arithmetic on int64
tensors, on the images' device, with values kept below 2**32 so that no product overflows.
"""

from __future__ import annotations

import zlib

import torch

_MASK = 0xFFFFFFFF
_MIX = 0x45D9F3B  # an odd multiplier < 2**27: (2**32) * _MIX stays below 2**63
_TWO32 = float(2**32)


def mix(values: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash of each element (int64 in, int64 in [0, 2**32) out)."""
    x = values & _MASK
    x = (((x >> 16) ^ x) * _MIX) & _MASK
    x = (((x >> 16) ^ x) * _MIX) & _MASK
    return (x >> 16) ^ x


def text_code(text: str) -> int:
    """A stable 32-bit number for a name (the same in every process and Python version)."""
    return zlib.crc32(text.encode("utf-8"))


def face_keys(seed: int, kind: str, ids: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per face from the seed, the perturbation's name and the face's id (int64, (B,))."""
    base = mix(torch.tensor([seed & _MASK, (seed >> 32) & _MASK, text_code(kind)], dtype=torch.int64))
    start = int(mix(base[0:1] ^ mix(base[1:2] ^ base[2:3])).item())
    ids = ids.to(torch.int64)
    return mix(mix(ids & _MASK ^ start) ^ ((ids >> 32) & _MASK))


def uniform(keys: torch.Tensor, stream: str, count: int) -> torch.Tensor:
    """(B, count) float64 numbers in (0, 1), a fixed function of each face's key, ``stream`` and position."""
    offset = text_code(stream)
    index = mix(torch.arange(count, device=keys.device, dtype=torch.int64) + offset)
    bits = mix(keys.unsqueeze(1) ^ index.unsqueeze(0))
    return (bits.double() + 0.5) / _TWO32


def normal(keys: torch.Tensor, stream: str, count: int) -> torch.Tensor:
    """(B, count) float64 standard normal numbers (Box-Muller on two uniform streams)."""
    radius = torch.sqrt(-2.0 * torch.log(uniform(keys, stream + ":r", count)))
    return radius * torch.cos(2.0 * torch.pi * uniform(keys, stream + ":a", count))


def signs(keys: torch.Tensor, stream: str) -> torch.Tensor:
    """(B,) float64 values -1 or +1, one per face."""
    return torch.where(uniform(keys, stream, 1)[:, 0] < 0.5, -1.0, 1.0).double()


__all__ = ["face_keys", "mix", "normal", "signs", "text_code", "uniform"]
