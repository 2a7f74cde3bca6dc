"""Rows labelled -1 (the ``datasets`` convention for "no label"): never scored, never trained on, counted;
a label outside the class list is refused, naming its row. Expectations are computed here, from the
model's own outputs on the labelled rows, not by the package's metric code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import timm
import torch

import ran  # noqa: F401
from ran.cli import main as ran_main
from ran.modelio.hub import save_pretrained

TINY = ["--model", "ran", "--backbone", "test_resnet", "--region-size", "32", "--no-progress"]


def _withhold(split: datasets.Dataset, every: int) -> datasets.Dataset:
    """``split`` with the label of every ``every``-th row (from row 1) replaced by -1."""
    labels = [-1 if i % every == 1 else label for i, label in enumerate(split["label"])]
    features = split.features["label"]
    return split.remove_columns("label").add_column("label", labels).cast_column("label", features)


@pytest.fixture(scope="module")
def unlabelled_data(tmp_path_factory) -> Path:
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

    source = build_synthetic(seed=2, train_size=16, test_size=80, progress=False)
    data = datasets.DatasetDict(
        train=source["train"], test=_withhold(source["test"], 5), pose45=_withhold(source["pose45"], 3)
    )
    return write_dataset_folder(data, tmp_path_factory.mktemp("unlabelled") / "data")


def _small_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=8).eval()


def _faces(split) -> torch.Tensor:
    """The split's faces as the model takes them: RGB, 224 px (PIL bilinear), 0..1."""
    from PIL import Image

    pixels = [
        np.asarray(row["image"].convert("RGB").resize((224, 224), Image.Resampling.BILINEAR), np.float32)
        / 255
        for row in split
    ]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)


def _relabel(shard: Path, row: int, label: int) -> None:
    """A hand-edited shard: one row's label set to ``label``, the file's schema (and features) kept."""
    table = pq.read_table(shard)
    labels = table.column("label").to_pylist()
    labels[row] = label
    index = table.schema.get_field_index("label")
    table = table.set_column(
        index, table.schema.field(index), pa.array(labels, table.schema.field(index).type)
    )
    pq.write_table(table, shard)


def _one_error_line(err: str, prog: str) -> str:
    """The error a command printed: its last line, the only one that is an error, and no traceback
    (the lines before it are datasets' progress bars)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines[-1].startswith(f"{prog}: error: ")
    assert [line for line in lines if "error" in line.lower()] == lines[-1:]
    return lines[-1]


def test_unlabelled_rows_are_left_out_of_every_number_and_counted(unlabelled_data, tmp_path, capsys):
    from ran.data.batches import load_splits

    model = _small_model(seed=5)
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(save_pretrained(model, tmp_path / "model")), "--data"]
    assert ran_main([*args, str(unlabelled_data), "--output-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    data = load_splits(unlabelled_data)
    withheld = {}
    for name in ("test", "pose45"):
        labels = np.asarray(data[name]["label"])
        labelled = np.flatnonzero(labels >= 0)
        withheld[name] = labels.size - labelled.size
        truth = labels[labelled]
        with torch.no_grad():
            probabilities = model(_faces(data[name].select(labelled))).softmax(1).numpy()
        predicted = probabilities.argmax(1)
        r = results[name]
        assert withheld[name] > 0 and r["unlabelled"] == withheld[name]
        assert r["total"] == labelled.size and r["correct"] == int((predicted == truth).sum())
        assert r["accuracy"] == pytest.approx(float((predicted == truth).mean()))
        confusion = np.zeros((8, 8), dtype=int)
        np.add.at(confusion, (truth, predicted), 1)
        assert r["confusion_matrix"] == confusion.tolist()
        per_class = [float((predicted[truth == c] == c).mean()) for c in sorted(set(truth.tolist()))]
        assert r["mean_class_accuracy"] == pytest.approx(sum(per_class) / len(per_class))
        assert [v["total"] for v in r["per_class"].values()] == np.bincount(truth, minlength=8).tolist()
        assert sum(r["calibration"]["bin_count"]) == labelled.size
        low, high = r["interval"]["accuracy"]
        assert low <= r["accuracy"] <= high
        table = pq.read_table(out / "predictions.parquet").to_pydict()
        rows = [row for row, subset in zip(table["row"], table["subset"]) if subset == name]
        assert rows == labelled.tolist()
    note = f"left out of every number above (test {withheld['test']}, pose45 {withheld['pose45']})"
    assert note in printed and note in (out / "results.md").read_text()


def test_label_past_the_class_count_is_refused_naming_the_row(unlabelled_data, tmp_path, capsys):
    data = shutil.copytree(unlabelled_data, tmp_path / "data")
    _relabel(data / "data" / "test.parquet", 6, 8)  # FERPlus has 8 classes: 0..7
    name = pq.read_table(data / "data" / "test.parquet").column("image_name")[6].as_py()
    out = tmp_path / "eval"
    model = save_pretrained(_small_model(seed=0), tmp_path / "model")
    args = ["evaluate", "--model", str(model), "--data", str(data), "--output-dir", str(out), "--no-progress"]
    assert ran_main(args) == 2
    err = _one_error_line(capsys.readouterr().err, "ran evaluate")
    assert f"{data / 'data' / 'test.parquet'}: row 6 ({name}) has label 8; expected 0..7" in err
    assert not out.exists()


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

    source = build_synthetic(seed=1, train_size=40, test_size=16, progress=False)
    data = datasets.DatasetDict(train=_withhold(source["train"], 4), test=source["test"])
    return write_dataset_folder(data, tmp_path_factory.mktemp("train") / "data")


def test_training_skips_unlabelled_rows_and_says_so(train_data, tmp_path, capsys):
    from ran.training.config import resolve_config
    from ran.training.data import read_splits

    shard = pq.read_table(train_data / "data" / "train.parquet").to_pydict()
    withheld = shard["label"].count(-1)
    labelled = [name for name, label in zip(shard["image_name"], shard["label"]) if label >= 0]
    args = ["--data", str(train_data), "--output-dir", str(tmp_path / "run"), *TINY, "--batch-size", "8"]
    splits, note = read_splits(resolve_config([*args, "--epochs", "1"]))
    assert withheld > 0 and list(splits.train["image_name"]) == labelled
    assert min(splits.train["label"]) >= 0
    assert f"note: {withheld} unlabelled rows (label -1) of split 'train' left out of training" in note
    assert ran_main(["train", *args, "--epochs", "1"]) == 0
    assert f"{withheld} unlabelled rows (label -1) of split 'train'" in capsys.readouterr().out


def test_training_refuses_a_label_past_the_class_count(train_data, tmp_path, capsys):
    data = shutil.copytree(train_data, tmp_path / "data")
    _relabel(data / "data" / "train.parquet", 3, 11)
    out = tmp_path / "run"
    assert ran_main(["train", "--data", str(data), "--output-dir", str(out), *TINY, "--epochs", "1"]) == 2
    err = _one_error_line(capsys.readouterr().err, "ran train")
    assert f"{data / 'data' / 'train.parquet'}: row 3 (" in err
    assert "has label 11; expected 0..7" in err
    assert not (out / "config.yaml").exists()


def test_labels_without_a_class_list_are_refused(unlabelled_data, tmp_path, capsys):
    """A hand-made shard without ``datasets`` features: its labels are bare integers, not classes."""
    data = shutil.copytree(unlabelled_data, tmp_path / "data")
    for shard in data.rglob("*.parquet"):
        pq.write_table(pq.read_table(shard).replace_schema_metadata(None), shard)
    out = tmp_path / "eval"
    model = save_pretrained(_small_model(seed=0), tmp_path / "model")
    args = ["evaluate", "--model", str(model), "--data", str(data), "--output-dir", str(out), "--no-progress"]
    assert ran_main(args) == 2
    err = _one_error_line(capsys.readouterr().err, "ran evaluate")
    assert "split 'test' has a 'label' column of Value; expected class labels (ClassLabel)" in err
    assert not out.exists()
