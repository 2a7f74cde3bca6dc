"""``ran data perturb``: a fixed perturbed test set, so that others can reproduce exact robustness numbers.

Every face of one split is perturbed by :func:`ran.robustness.perturb` (its id: its row in the split) under
each requested kind and severity and written as a subset of a dataset folder named ``<kind>_<severity>``
(``eye_band_3``, ``hand_noise_5``), beside the clean faces as ``test``. ``ran evaluate --data OUT`` then
scores every subset. The dataset card records the source, split, seed, face size and what each severity
means. Faces are perturbed at their stored size (or ``image_size``), not at a model's input size.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ran.data.format.writer import ROWS_PER_GROUP, dataset_folder_writer
from ran.errors import UserError
from ran.robustness import PERTURBATIONS, SEVERITIES, parse_kind, perturb
from ran.transforms import FaceTransform


def subset_name(kind: str, severity: int) -> str:
    """``eye_band:noise`` at 3 -> ``eye_band_noise_3`` (a dataset config name)."""
    return f"{kind.replace(':', '_')}_{severity}"


def _png(face: torch.Tensor) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.fromarray(face.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def perturbed_card(
    source: str, split: str, kinds: Sequence[str], severities: Sequence[int], seed: int, side: str
) -> str:
    lines = [
        f"Perturbed faces made by `ran data perturb` from split `{split}` of `{source}`, seed {seed}, faces "
        f"of {side}: each face's perturbation depends only on (seed, kind, its row), so the same command "
        "gives these bytes again (`ran.robustness.perturb(faces, kind, severity, seed, ids=rows)`).",
        "",
        f"Severities {', '.join(map(str, severities))}; subsets `<kind>_<severity>`; `test` holds the "
        "clean faces.",
        "",
    ]
    lines += [f"- `{kind}`: {PERTURBATIONS[parse_kind(kind)[0]].severity}" for kind in kinds]
    return "\n".join(lines)


def write_perturbed(
    out: str | Path,
    dataset_dict: Mapping[str, Any],
    kinds: Sequence[str],
    *,
    source: str,
    split: str = "test",
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    image_size: int | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write the clean faces of ``split`` and every (kind, severity) of them to the dataset folder ``out``;
    returns the rows per subset."""
    if split not in dataset_dict:
        raise UserError(f"the dataset has no split {split!r}; it has {sorted(dataset_dict)}")
    for kind in kinds:
        parse_kind(kind)
    data = dataset_dict[split]
    keep = [c for c in ("image", "label", "image_name") if c in data.column_names]
    features = type(data.features)({c: data.features[c] for c in keep})
    transform = FaceTransform(size=(image_size, image_size) if image_size else None)
    side = f"{image_size} px" if image_size else "their stored size"
    card = perturbed_card(source, split, kinds, severities, seed, side)
    counts: dict[str, int] = {}
    with dataset_folder_writer(out, description=card, overwrite=overwrite) as writer:
        targets = {"test": writer.split("test", features)}
        targets |= {
            subset_name(k, s): writer.split(subset_name(k, s), features) for k in kinds for s in severities
        }
        for start in range(0, data.num_rows, ROWS_PER_GROUP):
            rows = data.select_columns(keep)[start : start + ROWS_PER_GROUP]
            faces = torch.stack([transform.prepare(image) for image in rows["image"]])
            ids = torch.arange(start, start + len(faces))
            other = {c: rows[c] for c in keep if c != "image"}
            targets["test"].write({"image": [_png(f) for f in faces], **other})
            for kind in kinds:
                for severity in severities:
                    perturbed = perturb(faces, kind, severity, seed, ids=ids)
                    targets[subset_name(kind, severity)].write(
                        {"image": [_png(f) for f in perturbed], **other}
                    )
        counts = {name: target.num_rows for name, target in targets.items()}
    return counts


__all__ = ["perturbed_card", "subset_name", "write_perturbed"]
