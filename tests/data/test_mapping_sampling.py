"""Class-order mapping between FERPlus / RAF-DB / AffectNet, and the class-balanced sampler."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch

from ran.data.batches.sampling import class_balanced_weights
from ran.data.format.folder import dataset_features
from ran.data.sources.mapping import class_index_map, convert_labels, remap_dataset
from ran.labels import FERPLUS_CLASSES, RAFDB_CLASSES


def test_index_maps_by_name():
    # FERPlus: neutral happiness surprise sadness anger disgust fear contempt
    # RAF-DB:  surprise fear disgust happiness sadness anger neutral
    assert class_index_map("ferplus", "rafdb") == [6, 3, 0, 4, 5, 2, 1, -1]
    assert class_index_map("rafdb", "ferplus") == [2, 6, 5, 1, 3, 4, 0]
    # AffectNet: neutral happy sad surprise fear disgust anger contempt
    assert class_index_map("ferplus", "affectnet") == [0, 1, 3, 2, 6, 5, 4, 7]
    assert class_index_map("affectnet", "affectnet7")[7] == -1


def test_round_trips_through_every_order():
    labels = np.arange(7)
    for middle in ("ferplus", "affectnet", "affectnet7"):
        there = convert_labels(labels, "rafdb", middle)
        assert np.array_equal(convert_labels(there, middle, "rafdb"), labels)
    for index, name in enumerate(FERPLUS_CLASSES[:7]):
        assert RAFDB_CLASSES[convert_labels([index], "ferplus", "rafdb")[0]] == name
    with pytest.raises(ValueError, match="0..6"):
        convert_labels([7], "rafdb", "ferplus")
    with pytest.raises(ValueError, match="unknown class order"):
        class_index_map("sfew", "rafdb")


def test_remap_dataset_moves_soft_labels_and_drops_contempt():
    soft = [[0.5, 0, 0, 0, 0, 0, 0, 0.5], [0, 0.2, 0.8, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1.0]]
    ds = datasets.Dataset.from_dict(
        {
            "image": [np.zeros((4, 4), np.uint8)] * 3,
            "label": [0, 2, 7],
            "votes": [[]] * 3,
            "soft_label": soft,
            "image_name": ["a", "b", "c"],
            "usage": ["x"] * 3,
        },
        features=dataset_features(FERPLUS_CLASSES),
    )
    remapped = remap_dataset(ds, "rafdb")
    assert remapped.features["label"].names == list(RAFDB_CLASSES)
    assert remapped["image_name"] == ["a", "b"]  # the contempt image has no RAF-DB class
    assert remapped["label"] == [6, 0]  # neutral, surprise
    np.testing.assert_allclose(remapped["soft_label"][0], [0, 0, 0, 0, 0, 0, 1])  # contempt mass dropped
    np.testing.assert_allclose(remapped["soft_label"][1], [0.8, 0, 0, 0.2, 0, 0, 0])
    with pytest.raises(ValueError, match="1 rows have classes the target order lacks: contempt"):
        remap_dataset(ds, "rafdb", drop_unmapped=False)


def test_balanced_weights_and_sampler():
    labels = [0] * 90 + [1] * 9 + [2] * 1
    weights = class_balanced_weights(labels)
    assert weights[0].item() == pytest.approx(1 / 90) and weights[-1].item() == pytest.approx(1.0)
    drawn = torch.multinomial(weights, 30_000, replacement=True, generator=torch.Generator().manual_seed(0))
    drawn = np.bincount(np.asarray(labels)[drawn.numpy()], minlength=3) / 30_000
    np.testing.assert_allclose(drawn, [1 / 3] * 3, atol=0.02)  # unbalanced 90/9/1 becomes even
    ds = datasets.Dataset.from_dict({"label": labels})
    assert torch.equal(class_balanced_weights(ds), weights)
    with pytest.raises(ValueError, match="at least one"):
        class_balanced_weights([])
