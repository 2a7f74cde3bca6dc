"""RAF-DB and AffectNet loaders on generated folders in the real layouts, with the real RAN lists."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reference_data import LISTS_DIR, needs_reference_data, skip_without_reference_data

from ran.data.format.folder import load_dataset_folder
from ran.data.sources.affectnet import load_affectnet
from ran.data.sources.rafdb import load_rafdb
from ran.data.sources.subsets import load_subset_lists
from ran.labels import AFFECTNET_CLASSES, RAFDB_CLASSES


def _jpeg(size: tuple[int, int], value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (value, 255 - value, 40)).save(out, format="JPEG")
    return out.getvalue()


def _listed_labels(dataset: str) -> dict[str, int]:
    labels: dict[str, int] = {}
    for subset in load_subset_lists(dataset, LISTS_DIR).values():
        for entry in subset.entries:
            labels[entry.key] = entry.label
    return labels


@pytest.fixture(scope="module")
def rafdb_root(tmp_path_factory) -> Path:
    """EmoLabel/list_patition_label.txt (labels 1..7) + Image/aligned/<name>_aligned.jpg."""
    skip_without_reference_data()
    root = tmp_path_factory.mktemp("rafdb")
    (root / "EmoLabel").mkdir()
    aligned = root / "Image" / "aligned"
    aligned.mkdir(parents=True)
    test_labels = _listed_labels("rafdb")
    unlisted = [f"test_{i:04d}" for i in range(1, 3069) if f"test_{i:04d}" not in test_labels][:2]
    test_labels.update({unlisted[0]: 0, unlisted[1]: 6})  # in no list
    train_labels = {f"train_{i:05d}": i % 7 for i in range(1, 15)}
    lines = []
    for stem, label in {**train_labels, **test_labels}.items():
        lines.append(f"{stem}.jpg {label + 1}")
        (aligned / f"{stem}_aligned.jpg").write_bytes(_jpeg((20, 20), label * 30))
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


@needs_reference_data
def test_rafdb_splits_and_subsets(rafdb_root):
    splits = load_rafdb(rafdb_root, subset_lists=LISTS_DIR, progress=False)
    listed = len(_listed_labels("rafdb"))
    counts = {name: split.num_rows for name, split in splits.items()}
    assert counts == {
        "train": 14, "validation": listed + 2, "test": listed + 2,
        "occlusion": 734, "pose30": 1_247, "pose45": 558,  # 735 occlusion lines, one repeated
    }  # fmt: skip
    assert splits["train"].features["label"].names == list(RAFDB_CLASSES)
    first = splits["occlusion"][0]  # 'test_0003_aligned 3 4'
    assert (first["image_name"], first["label"], first["occlusion_type"]) == ("test_0003.jpg", 3, 4)
    row = splits["train"][0]  # 'train_00001.jpg 2' -> label 1 (fear)
    assert (row["label"], row["soft_label"], row["votes"], row["usage"]) == (
        1,
        [0, 1, 0, 0, 0, 0, 0],
        [],
        "train",
    )
    assert row["image"].size == (20, 20)
    test_labels = dict(zip(splits["test"]["image_name"], splits["test"]["label"]))
    for name in ("occlusion", "pose30", "pose45"):
        assert all(test_labels[n] == lab for n, lab in zip(splits[name]["image_name"], splits[name]["label"]))


@needs_reference_data
def test_rafdb_cli_and_missing_image(rafdb_root, tmp_path):
    from ran.cli.data import main

    out = tmp_path / "raf"
    assert main(["rafdb", "--root", str(rafdb_root), "--lists", str(LISTS_DIR), "--out", str(out)]) == 0
    loaded = load_dataset_folder(out, cache_dir=tmp_path / "cache")
    assert list(loaded) == ["train", "validation", "test", "occlusion", "pose30", "pose45"]
    assert loaded["pose45"].num_rows == 558
    copy = tmp_path / "broken"
    (copy / "EmoLabel").mkdir(parents=True)
    (copy / "Image" / "aligned").mkdir(parents=True)
    (copy / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 2\ntest_0001.jpg 9\n")
    with pytest.raises(ValueError, match=r"list_patition_label.txt line 2: label 9; expected 1..7"):
        load_rafdb(copy, subset_lists=False, progress=False)
    (copy / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 2\n")
    with pytest.raises(
        FileNotFoundError, match=r"list_patition_label.txt line 1: image .*train_00001_aligned.jpg"
    ):
        load_rafdb(copy, subset_lists=False, progress=False)


AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


@pytest.fixture(scope="module")
def affectnet_root(tmp_path_factory) -> Path:
    """Manually_Annotated_file_lists/{training,validation}.csv (validation without a header, as shipped)
    and Manually_Annotated_Images/<folder>/<hash>.jpg, 40x30 images with a 20x16 face box."""
    skip_without_reference_data()
    root = tmp_path_factory.mktemp("affectnet")
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir()
    images = root / "Manually_Annotated_Images"
    rng = np.random.default_rng(0)

    def row(label: int, digest: str) -> str:
        folder = int(rng.integers(1, 1000))
        (images / str(folder)).mkdir(parents=True, exist_ok=True)
        (images / str(folder) / f"{digest}.jpg").write_bytes(_jpeg((40, 30), label * 25))
        return f'{folder}/{digest}.jpg,10,6,20,16,"1.0;2.0",{label},0.1,-0.2'

    validation = [row(label, key) for key, label in _listed_labels("affectnet").items()]
    validation += [row(8, "f" * 56), row(10, "e" * 56)]  # not expressions: dropped
    training = [row(i % 11, f"{i:056x}") for i in range(22)]
    (lists / "validation.csv").write_text("\n".join(validation) + "\n")
    (lists / "training.csv").write_text("\n".join([AFFECTNET_HEADER, *training]) + "\n")
    return root


def _unique_list_labels(file: str) -> dict[str, int]:
    """Plain reading of one AffectNet list: the hash after the label, first occurrence wins."""
    labels: dict[str, int] = {}
    for line in (LISTS_DIR / "AffectNet_dir" / file).read_text().split():
        label, digest = re.search(r"(\d)/([0-9a-f]{56})", line).groups()
        labels.setdefault(digest, int(label))
    return labels


@needs_reference_data
def test_affectnet_eight_classes(affectnet_root):
    splits = load_affectnet(affectnet_root, num_classes=8, subset_lists=LISTS_DIR, progress=False)
    listed = len(_listed_labels("affectnet"))
    counts = {name: split.num_rows for name, split in splits.items()}
    assert counts == {
        "train": 16, "validation": listed, "test": listed,  # 22 rows, expressions 8..10 dropped
        "occlusion": 683, "pose30": 1_944, "pose45": 983,  # 1,949 and 985 lines with repeats
    }  # fmt: skip
    assert splits["test"].features["label"].names == list(AFFECTNET_CLASSES)
    assert splits["test"][0]["image"].size == (20, 16)  # cropped to the face box
    assert splits["test"][0]["usage"] == "validation" and splits["train"][0]["usage"] == "training"
    test_labels = dict(zip(splits["test"]["image_name"], splits["test"]["label"]))
    for name in ("occlusion", "pose30", "pose45"):
        assert all(test_labels[n] == lab for n, lab in zip(splits[name]["image_name"], splits[name]["label"]))


@needs_reference_data
def test_affectnet_seven_classes_drop_contempt(affectnet_root):
    splits = load_affectnet(
        affectnet_root, num_classes=7, subset_lists=LISTS_DIR, crop_faces=False, progress=False
    )
    assert splits["test"].features["label"].names == list(AFFECTNET_CLASSES[:7])
    assert 7 not in set(splits["test"]["label"]) and splits["train"].num_rows == 14
    files = {
        "occlusion": "occlusion_affectnet_list.txt",
        "pose30": "pose_30_affectnet_list.txt",
        "pose45": "pose_45_affectnet_list.txt",
    }
    for name, file in files.items():
        expected = sum(1 for label in _unique_list_labels(file).values() if label != 7)
        assert splits[name].num_rows == expected
    assert splits["test"][0]["image"].size == (40, 30)  # --no-crop keeps the whole image


def test_affectnet_bad_input(tmp_path):
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    (lists / "training.csv").write_text(AFFECTNET_HEADER + '\n1/a.jpg,0,0,5,5,"",happy,0,0\n')
    (lists / "validation.csv").write_text('1/b.jpg,0,0,5,5,"",1,0,0\n')
    with pytest.raises(ValueError, match=r"training.csv line 2: expression and face box must be integers"):
        load_affectnet(tmp_path, subset_lists=False, progress=False)
    with pytest.raises(ValueError, match="num_classes must be 8 or 7"):
        load_affectnet(tmp_path, num_classes=5)
    (lists / "training.csv").write_text(AFFECTNET_HEADER + '\n1/a.jpg,0,0,5,5,"",1,0,0\n')
    with pytest.raises(FileNotFoundError, match="image 1/b.jpg not found"):
        load_affectnet(tmp_path, subset_lists=False, progress=False)


def test_affectnet_csv_header_without_a_column_is_named(tmp_path):
    from ran.data.sources.affectnet import read_affectnet_csv

    path = tmp_path / "validation.csv"
    path.write_text("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,valence\n")
    with pytest.raises(ValueError, match=r"validation.csv line 1: missing column\(s\) 'expression'"):
        read_affectnet_csv(path, num_classes=8)


def test_affectnet_streamed_in_two_processes_and_shards(affectnet_root, tmp_path):
    """Written by two worker processes into small shards, the folder holds what the in-memory build does."""
    import pyarrow.parquet as pq

    from ran.data.format.folder import read_folder_in_memory, split_files
    from ran.data.sources.affectnet import write_affectnet

    out = tmp_path / "affectnet"
    counts = write_affectnet(
        out, affectnet_root, subset_lists=LISTS_DIR, num_proc=2, max_shard_bytes=100_000, progress=False
    )
    test_files = split_files(out, "test")
    assert len(test_files) > 1 and all(pq.read_table(f).nbytes <= 100_000 for f in test_files)
    streamed = read_folder_in_memory(out)
    reference = load_affectnet(affectnet_root, subset_lists=LISTS_DIR, progress=False)
    assert counts == {name: split.num_rows for name, split in reference.items()}
    for name in ("train", "test", "pose45"):
        assert streamed[name]["image_name"] == reference[name]["image_name"]
        assert streamed[name][-1]["image"].tobytes() == reference[name][-1]["image"].tobytes()
    assert streamed["validation"]["image_name"] == streamed["test"]["image_name"]
