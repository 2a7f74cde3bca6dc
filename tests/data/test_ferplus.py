"""FERPlus from the real label files and a generated fer2013.csv (35,887 rows, random pixels).

Expected counts come from ../shared/reference/RAN.md (FERPlus rules applied to the real label files).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from reference_data import FERPLUS_DIR, LISTS_DIR, needs_reference_data

from ran.data.format.folder import load_dataset_folder
from ran.data.format.writer import write_dataset_folder
from ran.data.sources.ferplus import (
    LABEL_MODES,
    ferplus_targets,
    load_ferplus,
    load_ferplus_votes,
    read_fer2013new,
    write_random_fer2013_csv,
)
from ran.labels import FERPLUS_CLASSES

pytestmark = needs_reference_data


SPLITS = ("train", "validation", "test")
# RAN.md: counts of each rule applied to every split of the label files.
EXPECTED_LABEL_CSV = {
    "majority": (25_045, 3_191, 3_137),
    "probability": (27_947, 3_508, 3_507),
    "crossentropy": (27_947, 3_508, 3_507),
}
EXPECTED_FER2013NEW_MAJORITY = (25_060, 3_199, 3_153)
EXPECTED_SUBSETS = {"occlusion": 605, "pose30": 1_170, "pose45": 633}


@pytest.fixture(scope="session")
def fer2013(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A fer2013.csv with fer2013new.csv's Usage column and random pixels; generated once per session."""
    usage = read_fer2013new(FERPLUS_DIR / "fer2013new.csv").usage
    path = tmp_path_factory.mktemp("fer2013") / "fer2013.csv"
    images = write_random_fer2013_csv(path, usage, seed=1234)
    return path, images


@pytest.fixture(scope="module")
def built(fer2013) -> datasets.DatasetDict:
    return load_ferplus(fer2013[0], FERPLUS_DIR, subset_lists=LISTS_DIR, progress=False)


@pytest.fixture(scope="module")
def label_csv_votes():
    kind, tables = load_ferplus_votes(FERPLUS_DIR)
    assert kind == "label_csv"
    return tables


def test_generated_csv_has_every_row(fer2013):
    path, images = fer2013
    assert images.shape == (35_887, 48, 48)
    with path.open() as handle:
        assert sum(1 for _ in handle) == 35_887 + 1


@pytest.mark.parametrize("mode", sorted(EXPECTED_LABEL_CSV))
def test_label_csv_counts_per_mode(label_csv_votes, mode):
    counts = tuple(int(ferplus_targets(label_csv_votes[s][0].votes, mode)[0].sum()) for s in SPLITS)
    assert counts == EXPECTED_LABEL_CSV[mode]


def test_fer2013new_majority_counts():
    kind, tables = load_ferplus_votes(FERPLUS_DIR / "fer2013new.csv")
    assert kind == "fer2013new"
    counts = tuple(int(ferplus_targets(tables[s][0].votes, "majority")[0].sum()) for s in SPLITS)
    assert counts == EXPECTED_FER2013NEW_MAJORITY


def _multi_target_reference(votes: list[int]) -> list[float] | None:
    """The multi-target rule written out plainly, one image at a time, as an independent check."""
    counts = [0 if v <= 1 else v for v in votes]
    total = sum(counts)
    chosen = [c if c >= 0.3 * total else 0 for c in counts]
    if sum(chosen) <= 0.5 * total:
        return None
    best = max(range(10), key=lambda i: (chosen[i], -i))
    if best >= 8:
        return None
    emotions = chosen[:8]
    return [c / sum(emotions) for c in emotions]


def test_multi_target_matches_plain_rule(label_csv_votes):
    for split in SPLITS:
        votes = label_csv_votes[split][0].votes
        keep, soft = ferplus_targets(votes, "multi_target")
        reference = [_multi_target_reference(row.tolist()) for row in votes]
        assert keep.tolist() == [r is not None for r in reference]
        expected = np.array([r for r in reference if r is not None], dtype=np.float32)
        np.testing.assert_allclose(soft[keep], expected, atol=1e-6)
    # fewer images than probability (it needs 30 % per class), more than majority
    train_kept = int(ferplus_targets(label_csv_votes["train"][0].votes, "multi_target")[0].sum())
    assert EXPECTED_LABEL_CSV["majority"][0] < train_kept < EXPECTED_LABEL_CSV["probability"][0]


# Hand-worked examples of the FERPlus rules (votes: 8 emotions, unknown, NF). None = image dropped.
RULE_CASES = [
    # votes of 1 are outliers; 6 of 8 is a majority, and 75 % is reached with one class
    ([6, 2, 1, 1, 0, 0, 0, 0, 0, 0], {"majority": [1, 0], "probability": [1, 0], "multi_target": [1, 0]}),
    # a 4-4 tie: no majority; probability and multi-target split it evenly
    (
        [4, 4, 2, 0, 0, 0, 0, 0, 0, 0],
        {"majority": None, "probability": [0.5, 0.5], "multi_target": [0.5, 0.5]},
    ),
    # five classes tied: probability takes too many, multi-target none reaches 30 %
    ([2, 2, 2, 2, 2, 0, 0, 0, 0, 0], {"majority": None, "probability": None, "multi_target": None}),
    # tie with unknown: probability drops unknown and half the votes is not enough; multi-target keeps both
    # (each has 30 %), the first maximum is neutral, and the unknown share is dropped
    ([5, 0, 0, 0, 0, 0, 0, 0, 5, 0], {"majority": None, "probability": None, "multi_target": [1, 0]}),
    # not a face
    ([0, 0, 0, 0, 0, 0, 0, 0, 0, 10], {"majority": None, "probability": None, "multi_target": None}),
    # neutral 7, contempt 3
    ([7, 0, 0, 0, 0, 0, 0, 3, 0, 0], {"majority": [1, 0], "probability": [0.7, 0], "multi_target": [0.7, 0]}),
    # unknown after an emotion is discarded; the NF single vote is an outlier
    ([6, 0, 0, 0, 0, 0, 0, 0, 3, 1], {"majority": [1, 0], "probability": [1, 0], "multi_target": [1, 0]}),
]


@pytest.mark.parametrize("votes, expected", RULE_CASES)
@pytest.mark.parametrize("mode", ["majority", "probability", "multi_target"])
def test_rules_on_hand_worked_votes(votes, expected, mode):
    keep, soft = ferplus_targets(np.array([votes]), mode)
    if expected[mode] is None:
        assert not keep[0]
    else:
        assert keep[0]
        np.testing.assert_allclose(soft[0, :2], expected[mode], atol=1e-6)
        assert soft[0].sum() == pytest.approx(1.0)


def test_unknown_label_mode():
    with pytest.raises(ValueError, match="label mode 'vote'"):
        ferplus_targets(np.zeros((1, 10)), "vote")
    assert set(LABEL_MODES) == {"majority", "probability", "crossentropy", "multi_target"}


def test_full_build_counts_and_features(built):
    assert [built[s].num_rows for s in SPLITS] == list(EXPECTED_LABEL_CSV["majority"])
    for name, count in EXPECTED_SUBSETS.items():
        assert built[name].num_rows == count
    assert built["minor"].num_rows == 1_170  # val_ferplus_mn.txt: pose>30 plus one repeated line
    features = built["train"].features
    assert features["label"].names == list(FERPLUS_CLASSES)
    assert isinstance(features["image"], datasets.Image)
    row = built["test"][0]
    assert len(row["votes"]) == 10 and len(row["soft_label"]) == 8
    assert row["usage"] == "PrivateTest"
    assert {built[s][0]["usage"] for s in SPLITS} == {"Training", "PublicTest", "PrivateTest"}


def test_images_are_the_source_pixels(built, fer2013):
    _, images = fer2013
    rows = read_fer2013new(FERPLUS_DIR / "fer2013new.csv").names
    row_of = {name: i for i, name in enumerate(rows) if name}
    for split in SPLITS:
        for index in (0, built[split].num_rows - 1):
            example = built[split][index]
            image = example["image"]
            assert image.mode == "L" and image.size == (48, 48)
            np.testing.assert_array_equal(np.asarray(image), images[row_of[example["image_name"]]])


def test_subsets_resolve_with_matching_labels(built):
    test_labels = dict(zip(built["test"]["image_name"], built["test"]["label"]))
    for name in (*EXPECTED_SUBSETS, "minor"):
        subset = built[name]
        for image_name, label in zip(subset["image_name"], subset["label"]):
            assert test_labels[image_name] == label
    # the occlusion list's first line is '1_fer0034656.png 8 0' and its type column is kept
    first = built["occlusion"][0]
    assert first["image_name"] == "fer0034656.png" and first["label"] == 1 and first["occlusion_type"] == 0
    assert sorted(set(built["occlusion"]["occlusion_type"])) == [0, 1, 2, 3]
    assert set(built["pose45"]["image_name"]) <= set(built["pose30"]["image_name"])


def test_parquet_round_trip_through_load_dataset(built, tmp_path):
    out = write_dataset_folder(built, tmp_path / "ferplus", description="test build")
    cache = tmp_path / "cache"
    default = datasets.load_dataset(str(out), cache_dir=str(cache))
    assert {s: default[s].num_rows for s in default} == dict(zip(SPLITS, EXPECTED_LABEL_CSV["majority"]))
    occlusion = datasets.load_dataset(str(out), "occlusion", cache_dir=str(cache))
    assert list(occlusion) == ["test"] and occlusion["test"].num_rows == 605
    assert occlusion["test"]["occlusion_type"][:3] == built["occlusion"]["occlusion_type"][:3]
    assert occlusion["test"].features["label"].names == list(FERPLUS_CLASSES)
    assert datasets.load_dataset(str(out), "pose45", cache_dir=str(cache))["test"].num_rows == 633
    everything = load_dataset_folder(out, cache_dir=cache)
    assert list(everything) == [*SPLITS, "occlusion", "pose30", "pose45", "minor"]
    reloaded, original = everything["test"][10], built["test"][10]
    assert reloaded["image_name"] == original["image_name"] and reloaded["votes"] == original["votes"]
    np.testing.assert_array_equal(np.asarray(reloaded["image"]), np.asarray(original["image"]))


def test_cli_builds_probability_mode(fer2013, tmp_path, capsys):
    from ran.cli.data import main

    out = tmp_path / "fp"
    code = main(
        ["ferplus", "--fer2013", str(fer2013[0]), "--labels", str(FERPLUS_DIR / "data"), "--lists", "none"]
        + ["--label-mode", "probability", "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "27,947" in printed and "3,191" in printed and "3,137" in printed  # evaluation stays majority
    splits = load_dataset_folder(out, cache_dir=tmp_path / "cache")
    assert list(splits) == list(SPLITS)
    assert splits["train"].num_rows == 27_947
    soft = np.array(splits["train"]["soft_label"])
    assert (soft.max(axis=1) < 1).any()  # real distributions, not one-hot
    np.testing.assert_allclose(soft.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(np.array(splits["train"]["label"]), soft.argmax(axis=1))


def test_png_tree_source(fer2013, tmp_path):
    """An existing FERPlus PNG tree (FER2013Train/Valid/Test with PNGs and label.csv) needs no fer2013.csv."""
    from PIL import Image

    _, images = fer2013
    _, tables = load_ferplus_votes(FERPLUS_DIR)
    tree = tmp_path / "tree"
    expected = {}
    for split, folder in zip(SPLITS, ("FER2013Train", "FER2013Valid", "FER2013Test")):
        table, rows = tables[split]
        (tree / folder).mkdir(parents=True)
        lines = (FERPLUS_DIR / "data" / folder / "label.csv").read_text().splitlines()[:40]
        (tree / folder / "label.csv").write_text("\n".join(lines) + "\n")
        for i in range(40):
            Image.fromarray(images[rows[i]]).save(tree / folder / table.names[i])
        keep, _ = ferplus_targets(table.votes[:40], "majority")
        expected[split] = int(keep.sum())
    splits = load_ferplus(None, tree, subset_lists=False, progress=False)
    assert {s: splits[s].num_rows for s in SPLITS} == expected
    first = splits["test"][0]
    row = tables["test"][1][tables["test"][0].names.index(first["image_name"])]
    np.testing.assert_array_equal(np.asarray(first["image"]), images[row])


def test_fer2013new_labels_do_not_fit_the_lists(tmp_path):
    """The lists follow label.csv; with fer2013new.csv labels the mismatch is named, with a way out,
    before fer2013.csv is even read."""
    with pytest.raises(
        ValueError, match=r"jianfei_occlusion_list.txt line \d+: .*follow the label.csv labels"
    ):
        not_read = tmp_path / "not-read.csv"
        not_read.write_text("not a fer2013.csv: reading it would fail")
        load_ferplus(not_read, FERPLUS_DIR / "fer2013new.csv", subset_lists=LISTS_DIR)
