"""ran.robustness.perturb: deterministic per face (runs, batch sizes, processes), severities that grow,
occluder masks that match the pixels replaced and the region coverage they imply, bad input refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ran.robustness import (
    FILLS,
    PERTURBATIONS,
    covered_fraction,
    describe_perturbations,
    occlusion_mask,
    parse_kind,
    perturb,
)

OCCLUDERS = [name for name, p in PERTURBATIONS.items() if p.family == "occlusion"]
ALL_KINDS = [*PERTURBATIONS, *(f"patches:{fill}" for fill in FILLS)]
DETERMINISTIC = (
    "jpeg",
    "low_resolution",
    "gaussian_blur",
    "contrast",
    "left_half",
    "right_half",
)  # no randomness
ROOT = Path(__file__).resolve().parents[1]


def _faces(n: int = 10, side: int = 40, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_faces_same_bytes_whatever_the_batch(kind):
    faces, ids = _faces(), torch.arange(500, 510)
    whole = perturb(faces, kind, 4, seed=11, ids=ids)
    assert whole.dtype == torch.uint8 and whole.shape == faces.shape
    assert not torch.equal(whole, faces)  # it did something
    assert torch.equal(whole, perturb(faces, kind, 4, seed=11, ids=ids))  # run to run
    singles = torch.cat([perturb(faces[i : i + 1], kind, 4, seed=11, ids=ids[i : i + 1]) for i in range(10)])
    assert torch.equal(whole, singles)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    shuffled = perturb(faces[order], kind, 4, seed=11, ids=ids[order])
    assert torch.equal(whole[order], shuffled)  # a face's result follows its id, not its place
    if kind not in DETERMINISTIC:
        assert not torch.equal(whole, perturb(faces, kind, 4, seed=12, ids=ids))


def _worker(path: str, start: int, stop: int) -> None:
    faces = _faces()
    ids = torch.arange(500, 510)
    out = [perturb(faces[start:stop], kind, 3, seed=5, ids=ids[start:stop]).numpy() for kind in ALL_KINDS]
    np.save(path, np.stack(out))


def test_two_processes_give_the_bytes_of_one(tmp_path):
    """Half the faces here, the other half in a second process: the bytes of one process doing all."""
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}];"
        f"from test_robustness_perturb import _worker; _worker({str(tmp_path / 'b.npy')!r}, 4, 10)"
    )
    other = subprocess.Popen([sys.executable, "-c", code])
    _worker(str(tmp_path / "a.npy"), 0, 4)
    _worker(str(tmp_path / "one.npy"), 0, 10)
    assert other.wait(timeout=120) == 0
    halves = np.concatenate([np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")], axis=1)
    assert np.array_equal(halves, np.load(tmp_path / "one.npy"))


@pytest.mark.parametrize("kind", OCCLUDERS)
def test_occluders_grow_with_severity_and_replace_exactly_their_mask(kind):
    faces, ids = _faces(6, 48), torch.arange(6)
    masks = [occlusion_mask(kind, s, (48, 48), seed=3, ids=ids) for s in range(1, 6)]
    areas = [float(m.float().mean()) for m in masks]
    assert all(a < b for a, b in zip(areas, areas[1:])), areas
    assert all(
        (small <= big).all() for small, big in zip(masks, masks[1:])
    )  # nested: the same occluder grows
    out = perturb(faces, f"{kind}:noise", 3, seed=3, ids=ids)
    changed = (out != faces).any(dim=1)
    assert not changed[~masks[2]].any()  # nothing outside the mask moved


def test_patch_area_and_half_widths_match_their_severity_table():
    ids = torch.arange(4)
    patch = [float(occlusion_mask("patches", s, (64, 64), ids=ids).float().mean()) for s in range(1, 6)]
    assert patch == pytest.approx([6 / 64, 13 / 64, 19 / 64, 29 / 64, 38 / 64])  # round(area * 64) cells
    left = occlusion_mask("left_half", 5, (40, 40), ids=ids)
    assert left[:, :, :20].all() and not left[:, :, 20:].any()


def test_covered_fraction_of_region_boxes():
    left = occlusion_mask("left_half", 5, (40, 40), ids=[0])
    boxes = torch.tensor(
        [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0], [0.0, 0.0, 0.75, 0.75]]
    )
    assert covered_fraction(left, boxes).tolist() == [[0.5, 1.0, 0.0, pytest.approx(2 / 3)]]


def test_corruptions_grow_with_severity():
    faces, ids = _faces(6, 48), torch.arange(6)
    for kind in ("gaussian_noise", "gaussian_blur", "brightness", "contrast", "rotation", "shear"):
        change = [
            float((perturb(faces, kind, s, ids=ids).float() - faces.float()).abs().mean())
            for s in range(1, 6)
        ]
        assert all(a < b for a, b in zip(change, change[1:])), (kind, change)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda f: perturb(f, "fog", 1), "unknown; expected one of"),
        (lambda f: perturb(f, "eye_band:mud", 1), "unknown fill 'mud'"),
        (lambda f: perturb(f, "jpeg:noise", 1), "only occluders take a fill"),
        (lambda f: perturb(f, "jpeg", 6), "severity: expected an integer 1 to 5, got 6"),
        (lambda f: perturb(f.float(), "jpeg", 1), "expected a uint8 tensor"),
        (lambda f: perturb(f[:, :1], "jpeg", 1), "expected 3 channels"),
        (lambda f: perturb(f, "jpeg", 1, seed=-1), "seed: expected an integer >= 0"),
        (lambda f: perturb(f, "hand", 1, ids=[1, 2]), "ids: expected one id per face"),
    ],
)
def test_bad_input_is_one_clear_error(call, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        call(_faces(3, 16))


def test_the_list_names_every_perturbation_and_fill():
    text = describe_perturbations()
    assert all(name in text for name in [*PERTURBATIONS, *FILLS])
    assert parse_kind("eye_band") == ("eye_band", "solid") and parse_kind("jpeg") == ("jpeg", None)
