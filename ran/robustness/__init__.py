"""Perturbed faces, for measuring (and training) robustness: occluders, pose-like geometry, corruptions.

:func:`perturb` takes a batch of uint8 faces (B, 3, H, W) and gives them back perturbed, on their own
device, each at a severity from 1 (mild) to 5 (strong). It is deterministic per face: the randomness of a
face comes from (seed, perturbation, the face's id), never from its place in the batch, so the same faces
are byte-identical whatever the batch size, the number of processes or the order they come in (on one
kind of device; GPUs may round differently from CPUs). ``ran robustness`` evaluates models under them,
``ran train --augment`` trains with them, and ``ran data perturb`` writes them as a fixed test set.

Names: ``PERTURBATIONS`` lists every kind with what its severity means. An occluder takes a fill after a
colon: ``eye_band`` (solid colour), ``eye_band:noise``, ``eye_band:texture``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ran.errors import UserError
from ran.robustness.corruption import CORRUPTIONS
from ran.robustness.geometry import WARPS, warp
from ran.robustness.occlusion import FILLS, OCCLUDERS, covered_fraction, occlude, occluder_mask
from ran.robustness.randomness import face_keys

SEVERITIES = (1, 2, 3, 4, 5)
DEFAULT_FILL = "solid"


@dataclass(frozen=True)
class Perturbation:
    """One perturbation kind: ``family`` is 'occlusion', 'geometry' or 'corruption'; ``severity`` says
    what severities 1 to 5 mean."""

    name: str
    family: str
    severity: str


PERTURBATIONS: dict[str, Perturbation] = {
    **{name: Perturbation(name, "occlusion", text) for name, (_, text) in OCCLUDERS.items()},
    **{name: Perturbation(name, "geometry", text) for name, (_, text) in WARPS.items()},
    **{name: Perturbation(name, "corruption", text) for name, (_, text) in CORRUPTIONS.items()},
}


def parse_kind(kind: str) -> tuple[str, str | None]:
    """``'eye_band:noise'`` -> ('eye_band', 'noise'); an occluder without a fill gets the solid colour.
    Raises ValueError naming the kind and what was expected."""
    name, _, fill = str(kind).partition(":")
    if name not in PERTURBATIONS:
        raise UserError(f"perturbation {kind!r}: unknown; expected one of {', '.join(PERTURBATIONS)}")
    if PERTURBATIONS[name].family != "occlusion":
        if fill:
            raise UserError(f"perturbation {kind!r}: only occluders take a fill (':{fill}')")
        return name, None
    fill = fill or DEFAULT_FILL
    if fill not in FILLS:
        raise UserError(f"perturbation {kind!r}: unknown fill {fill!r}; expected one of {', '.join(FILLS)}")
    return name, fill


def is_occluder(kind: str) -> bool:
    return PERTURBATIONS[parse_kind(kind)[0]].family == "occlusion"


def _check(images: torch.Tensor, severity: int, seed: int) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise UserError(f"images: expected a uint8 tensor (B, 3, H, W), got {_describe(images)}")
    if images.shape[1] != 3:
        raise UserError(f"images: expected 3 channels (B, 3, H, W), got shape {tuple(images.shape)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise UserError(f"severity: expected an integer 1 to 5, got {severity!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UserError(f"seed: expected an integer >= 0, got {seed!r}")


def _describe(images: object) -> str:
    if isinstance(images, torch.Tensor):
        return f"{images.dtype} of shape {tuple(images.shape)}"
    return type(images).__name__


def _face_ids(images: torch.Tensor, ids: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    if ids is None:
        return torch.arange(images.shape[0], device=images.device)
    ids = torch.as_tensor(ids, dtype=torch.int64, device=images.device).flatten()
    if ids.numel() != images.shape[0]:
        raise UserError(f"ids: expected one id per face ({images.shape[0]}), got {ids.numel()}")
    return ids


def perturb(
    images: torch.Tensor,
    kind: str,
    severity: int,
    seed: int = 0,
    *,
    ids: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """``images`` (B, 3, H, W) uint8 under perturbation ``kind`` at ``severity`` (1-5), as a new uint8
    tensor on the same device.

    ``ids``: one integer per face (e.g. its row in the dataset); a face's randomness depends only on
    ``seed``, ``kind`` and its id. Without ids the faces are numbered by their place in this batch, which
    is deterministic only for this batch: pass ids whenever the same faces may come in other batches.
    """
    _check(images, severity, seed)
    name, fill = parse_kind(kind)
    keys = face_keys(seed, name, _face_ids(images, ids))
    if fill is not None:
        mask = occluder_mask(name, severity, keys, tuple(images.shape[-2:]))
        return occlude(images, mask, fill, keys)
    if name in WARPS:
        return warp(images, name, severity, keys)
    return CORRUPTIONS[name][0](images, severity, keys)


def occlusion_mask(
    kind: str,
    severity: int,
    size: tuple[int, int],
    seed: int = 0,
    *,
    ids: Sequence[int] | torch.Tensor,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B, H, W) bool: where occluder ``kind`` at ``severity`` hides faces ``ids`` of side ``size`` (H, W),
    exactly the pixels :func:`perturb` replaces."""
    name, fill = parse_kind(kind)
    if fill is None:
        raise UserError(f"perturbation {kind!r} is not an occluder; it hides no region")
    ids = torch.as_tensor(ids, dtype=torch.int64, device=device).flatten()
    return occluder_mask(name, severity, face_keys(seed, name, ids), size)


def describe_perturbations() -> str:
    """The ``ran robustness --list`` text: every perturbation with what its severities mean, and the fills."""
    width = max(len(name) for name in PERTURBATIONS)
    lines = []
    for family in ("occlusion", "geometry", "corruption"):
        lines.append(f"{family}:")
        lines += [f"  {p.name:<{width}}  {p.severity}" for p in PERTURBATIONS.values() if p.family == family]
    lines.append("occluder fills (NAME:FILL, default solid):")
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in FILLS.items()]
    return "\n".join(lines)


__all__ = [
    "FILLS",
    "PERTURBATIONS",
    "SEVERITIES",
    "Perturbation",
    "covered_fraction",
    "describe_perturbations",
    "is_occluder",
    "occlusion_mask",
    "parse_kind",
    "perturb",
]
