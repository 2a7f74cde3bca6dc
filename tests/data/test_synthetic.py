"""The generated demo dataset: FERPlus form, subsets inside the test split, determinism, learnability."""

from __future__ import annotations

import re
import time

import datasets
import numpy as np
import pytest

from ran.data.format.folder import dataset_features
from ran.data.synthetic.generator import (
    OCCLUSION_TYPES,
    POSE30_MIN_ANGLE,
    POSE45_MIN_ANGLE,
    build_synthetic,
    synthetic_face,
)
from ran.labels import FERPLUS_CLASSES
from ran.precision import bf16_is_native

# 400 test images = 5 groups of 80: exactly 200 clean, 120 posed, 80 occluded (50 / 30 / 20 %).
TRAIN, TEST = 240, 400
SUBSETS = ("occlusion", "pose30", "pose45")


@pytest.fixture(scope="module")
def small():
    return build_synthetic(seed=0, train_size=TRAIN, test_size=TEST, progress=False)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)


def test_splits_sizes_and_features(small):
    assert set(small) == {"train", "validation", "test", *SUBSETS}
    assert (len(small["train"]), len(small["validation"]), len(small["test"])) == (TRAIN, TEST // 2, TEST)
    expected = dataset_features(FERPLUS_CLASSES)
    for split in ("train", "validation", "test"):
        assert small[split].features == expected
    assert small["train"].features["label"].names == list(FERPLUS_CLASSES)
    occlusion_features = dataset_features(FERPLUS_CLASSES, {"occlusion_type": datasets.Value("int32")})
    assert small["occlusion"].features == occlusion_features
    for name in ("pose30", "pose45"):
        assert small[name].features == dataset_features(FERPLUS_CLASSES, {"angle": datasets.Value("float32")})
    first = small["train"][0]["image"]
    assert (first.mode, first.size) == ("L", (48, 48))


def test_condition_shares_of_the_test_split(small):
    # Every 80 test images hold 2 occluded blocks of 8 and 3 posed blocks of 8.
    assert len(small["occlusion"]) == TEST * 20 // 100
    assert 0 < len(small["pose45"]) < len(small["pose30"]) <= TEST * 30 // 100
    angles = np.abs(np.array(small["pose30"]["angle"]))
    assert angles.min() > POSE30_MIN_ANGLE
    assert np.all(np.abs(np.array(small["pose45"]["angle"])) > POSE45_MIN_ANGLE)
    # Posed faces are drawn at 20..62 degrees, so some of them fall under the 30 degree cut.
    assert len(small["pose30"]) < TEST * 30 // 100
    assert set(small["occlusion"]["occlusion_type"]) == set(range(len(OCCLUSION_TYPES)))


def test_subsets_are_rows_of_the_test_split(small):
    test = small["test"]
    by_name = {name: index for index, name in enumerate(test["image_name"])}
    for subset in SUBSETS:
        rows = small[subset]
        assert len(set(rows["image_name"])) == len(rows)
        for row in rows:
            original = test[by_name[row["image_name"]]]
            assert row["label"] == original["label"]
            assert row["votes"] == original["votes"]
            np.testing.assert_array_equal(pixels(row["image"]), pixels(original["image"]))
    assert set(small["pose45"]["image_name"]) <= set(small["pose30"]["image_name"])
    assert not set(small["occlusion"]["image_name"]) & set(small["pose30"]["image_name"])


def test_every_class_in_every_split(small):
    for split, rows in small.items():
        assert set(rows["label"]) == set(range(len(FERPLUS_CLASSES))), split


def test_votes_and_soft_labels(small):
    for split in ("train", "test"):
        votes = np.array(small[split]["votes"])
        labels = np.array(small[split]["label"])
        soft = np.array(small[split]["soft_label"], dtype=np.float64)
        assert votes.shape == (len(labels), 10) and votes.dtype.kind == "i"
        assert np.all(votes.sum(axis=1) == 10)  # ten annotators, as FERPlus
        top = np.sort(votes, axis=1)
        assert np.all(votes[np.arange(len(labels)), labels] == top[:, -1])
        assert np.all(top[:, -1] > top[:, -2])  # a strict majority on the label
        assert soft.shape == (len(labels), 8)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(soft, votes[:, :8] / votes[:, :8].sum(axis=1, keepdims=True), atol=1e-6)
        assert np.all(soft.argmax(axis=1) == labels)
    # Some annotators disagree somewhere, as in FERPlus.
    assert np.any(np.array(small["train"]["votes"])[:, :8].max(axis=1) < 10)


def test_names_and_usage(small):
    usage = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}
    names = []
    for split, expected in usage.items():
        assert set(small[split]["usage"]) == {expected}
        names += small[split]["image_name"]
    assert all(re.fullmatch(r"syn\d{7}", name) for name in names)
    assert len(set(names)) == len(names)
    assert small["train"][12]["image_name"] == "syn0000012"


def test_deterministic_for_a_seed_and_independent_of_sizes(small):
    again = build_synthetic(seed=0, train_size=16, test_size=80, validation_size=16, progress=False)
    other = build_synthetic(seed=1, train_size=16, test_size=80, validation_size=16, progress=False)
    for split in ("train", "validation", "test"):
        for index in (0, 7, 15):
            assert again[split][index]["image_name"] == small[split][index]["image_name"]
            assert again[split][index]["label"] == small[split][index]["label"]
            np.testing.assert_array_equal(
                pixels(again[split][index]["image"]), pixels(small[split][index]["image"])
            )
        differing = [
            not np.array_equal(pixels(a), pixels(b))
            for a, b in zip(again[split]["image"][:8], other[split]["image"][:8])
        ]
        assert all(differing)


def test_bad_sizes_are_rejected():
    for kwargs in ({"train_size": 0}, {"test_size": -5}, {"validation_size": 0}, {"train_size": 2.5}):
        with pytest.raises(ValueError, match="size must be an integer"):
            build_synthetic(progress=False, **kwargs)


def test_synthetic_face():
    rng = np.random.default_rng(3)
    face = synthetic_face("surprise", rng)
    assert (face.mode, face.size) == ("L", (48, 48))
    assert pixels(synthetic_face(2, 5)).tolist() == pixels(synthetic_face("surprise", 5)).tolist()
    frontal, turned = pixels(synthetic_face(1, 9)), pixels(synthetic_face(1, 9, yaw=50))
    assert np.abs(frontal.astype(int) - turned.astype(int)).mean() > 5
    covered = pixels(synthetic_face(1, 9, occlusion_type=1))
    assert np.abs(frontal.astype(int) - covered.astype(int)).mean() > 2
    with pytest.raises(ValueError, match="unknown expression"):
        synthetic_face("smug", rng)
    with pytest.raises(ValueError, match="out of range"):
        synthetic_face(8, rng)


def _train_and_score(splits, epochs: int) -> dict[str, float]:
    """A small plain CNN (bf16 autocast where the CPU runs bf16 natively); accuracy per split / subset."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def as_tensors(rows):
        images = np.stack([pixels(image) for image in rows["image"]]).astype(np.float32)
        return torch.from_numpy((images / 255.0 - 0.5) / 0.25).unsqueeze(1), torch.tensor(rows["label"])

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    torch.manual_seed(0)
    model = nn.Sequential(
        block(1, 16), nn.MaxPool2d(2), block(16, 32), block(32, 32), nn.MaxPool2d(2),
        block(32, 64), block(64, 64), nn.MaxPool2d(2), block(64, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, len(FERPLUS_CLASSES)),
    )  # fmt: skip
    images, labels = as_tensors(splits["train"])
    bf16 = bf16_is_native("cpu")  # emulated bf16 is ~8x slower than fp32
    batch = 64
    steps = epochs * (len(labels) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels))
        for start in range(0, len(labels) - batch + 1, batch):
            index = order[start : start + batch]
            flip = torch.rand(batch) < 0.5  # the one-sided expressions appear on both sides anyway
            inputs = torch.where(flip[:, None, None, None], images[index].flip(3), images[index])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(inputs), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    hard = set(splits["occlusion"]["image_name"]) | set(splits["pose30"]["image_name"])
    clean_rows = [i for i, name in enumerate(splits["test"]["image_name"]) if name not in hard]
    scores = {}
    for name, rows in (("clean", splits["test"].select(clean_rows)), *((s, splits[s]) for s in SUBSETS)):
        inputs, targets = as_tensors(rows)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores[name] = (model(inputs).argmax(1) == targets).float().mean().item()
    return scores


@pytest.mark.slow
def test_a_small_cnn_learns_it():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads thrash when other processes share the two cores
    try:
        splits = build_synthetic(seed=0, train_size=2400, test_size=480, progress=False)
        started = time.perf_counter()
        scores = _train_and_score(splits, epochs=4)  # clean 0.78, hard subsets 0.47-0.62 (seeded)
    finally:
        torch.set_num_threads(threads)
    print(f"accuracy after {time.perf_counter() - started:.0f} s of training: {scores}")
    chance = 1 / len(FERPLUS_CLASSES)
    assert scores["clean"] > 0.5
    for subset in SUBSETS:
        assert scores[subset] > 2 * chance, subset
    # The hard conditions really are harder than clean frontal faces.
    assert max(scores[subset] for subset in SUBSETS) < scores["clean"]
