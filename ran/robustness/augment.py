"""Perturbations as training augmentation (``ran train --augment occlusion,gaussian_noise``).

Each face of a batch is perturbed with probability ``probability`` by one kind drawn from a list, at a
severity drawn from 1-5; the draws and the perturbation itself come from (seed, face id) alone, so a
face gets the same perturbation in whatever batch, order or process it travels, and a resumed run sees
exactly what the original saw. Training passes a seed per epoch (:func:`epoch_seed`), so a face meets
another perturbation every epoch.

The plan (which face gets what) is drawn on the host from the face ids the loader hands over as plain
integers, so grouping the faces by (kind, severity) never reads anything back from the device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ran.errors import UserError
from ran.robustness import PERTURBATIONS, SEVERITIES, parse_kind, perturb
from ran.robustness.randomness import face_keys, uniform

FAMILIES = ("occlusion", "geometry", "corruption")


def augment_kinds(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``'occlusion,gaussian_noise'`` -> the kinds it names, each once, in order. A family name
    (occlusion, geometry, corruption) stands for all its kinds (occluders with their solid fill; name a
    fill to get another: ``eye_band:texture``). Raises ValueError naming the bad entry."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    kinds: list[str] = []
    for part in (str(p).strip() for p in parts):
        if part in FAMILIES:
            named = [p.name for p in PERTURBATIONS.values() if p.family == part]
        elif part.partition(":")[0] in PERTURBATIONS:
            parse_kind(part)
            named = [part]
        else:
            expected = ", ".join([*FAMILIES, *PERTURBATIONS])
            raise UserError(f"{part!r} is not a perturbation; expected a comma-separated list of {expected}")
        kinds += [kind for kind in named if kind not in kinds]
    return tuple(kinds)


def epoch_seed(seed: int, epoch: int) -> int:
    """The augmentation seed of one epoch of a run seeded ``seed`` (a different draw every epoch;
    :func:`ran.robustness.perturb` mixes it into every face's key)."""
    return (seed * 1_000_003 + epoch) % (2**63)


def augment_plan(
    kinds: Sequence[str], seed: int, ids: Sequence[int], probability: float
) -> dict[tuple[str, int], list[int]]:
    """Which faces (positions in the batch) get which (kind, severity); faces left clean are absent.
    Computed on the host from the ids: a function of (seed, kinds, id) only."""
    keys = face_keys(seed, "augment:" + ",".join(kinds), torch.as_tensor(list(ids), dtype=torch.int64))
    draws = uniform(keys, "plan", 3)
    plan: dict[tuple[str, int], list[int]] = {}
    for position, (chance, which, level) in enumerate(draws.tolist()):
        if chance < probability:
            kind = kinds[min(int(which * len(kinds)), len(kinds) - 1)]
            severity = SEVERITIES[min(int(level * len(SEVERITIES)), len(SEVERITIES) - 1)]
            plan.setdefault((kind, severity), []).append(position)
    return plan


def random_perturb(
    images: torch.Tensor,
    kinds: Sequence[str],
    seed: int,
    *,
    ids: Sequence[int],
    probability: float = 1.0,
) -> torch.Tensor:
    """``images`` (B, 3, H, W) uint8 with each face perturbed, with ``probability``, by a kind from
    ``kinds`` at a severity 1-5 (both drawn per face from ``seed`` and its id in ``ids``, plain ints);
    a new tensor on the images' device. The faces left clean are unchanged, byte for byte."""
    if not kinds:
        raise UserError("kinds: expected at least one perturbation")
    if len(ids) != images.shape[0]:
        raise UserError(f"ids: expected one id per face ({images.shape[0]}), got {len(ids)}")
    out = images.clone()
    for (kind, severity), positions in augment_plan(kinds, seed, ids, probability).items():
        index = _on_device(positions, images.device)
        group_ids = _on_device([int(ids[p]) for p in positions], images.device)
        out[index] = perturb(images.index_select(0, index), kind, severity, seed, ids=group_ids)
    return out


def _on_device(values: list[int], device: torch.device) -> torch.Tensor:
    """Host integers as an int64 tensor on ``device``; to a GPU from pinned memory, so that the copy
    does not wait for the work queued there."""
    tensor = torch.tensor(values, dtype=torch.int64)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


__all__ = ["FAMILIES", "augment_kinds", "augment_plan", "epoch_seed", "random_perturb"]
