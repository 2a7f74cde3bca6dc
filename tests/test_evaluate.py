"""ran evaluate: counts against independent computations, outputs, model sources, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import ran  # noqa: F401
from ran.cli import main as ran_main
from ran.evaluation import evaluate
from ran.hub import save_pretrained
from ran.labels import FERPLUS_CLASSES
from ran.loading import load_model

SUBSETS = ["test", "occlusion", "pose30", "pose45"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from ran.data.folder import write_dataset_folder
    from ran.data.synthetic import build_synthetic

    out = tmp_path_factory.mktemp("data") / "tiny_eval"
    return write_dataset_folder(build_synthetic(seed=2, train_size=16, test_size=80, progress=False), out)


@pytest.fixture(scope="module")
def splits(tiny_data):
    from ran.data.batches import load_splits

    return load_splits(tiny_data)


def _small_model(num_classes: int = 8, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=num_classes).eval()


def _constant_model(cls: int) -> torch.nn.Module:
    """A RAN whose classifier ignores its features and always answers ``cls``."""
    model = _small_model()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.fill_(-5.0)
        model.fc.bias[cls] = 5.0
    return model


def test_constant_predictor_counts_match_the_labels(splits):
    cls = FERPLUS_CLASSES.index("surprise")
    results = evaluate(_constant_model(cls), splits, progress=False)
    assert list(results) == SUBSETS  # every split but train / validation, in folder order
    for name in SUBSETS:
        labels = list(splits[name]["label"])
        r = results[name]
        assert r["total"] == len(labels)
        assert r["correct"] == labels.count(cls)
        assert r["accuracy"] == pytest.approx(labels.count(cls) / len(labels))
        present = sorted(set(labels))
        for index, class_name in enumerate(FERPLUS_CLASSES):
            per_class = r["per_class"][class_name]
            assert per_class["total"] == labels.count(index)
            expected = None if index not in present else (1.0 if index == cls else 0.0)
            assert per_class["accuracy"] == expected
        assert r["mean_class_accuracy"] == pytest.approx((cls in present) / len(present))
        confusion = torch.tensor(r["confusion_matrix"])
        assert confusion[:, cls].tolist() == [labels.count(i) for i in range(8)]
        assert int(confusion.sum()) == len(labels)


def test_counts_match_an_image_by_image_computation(splits):
    import numpy as np
    from PIL import Image  # noqa: F401

    model = _small_model(seed=5)
    results = evaluate(model, splits, ["test", "pose30"], batch_size=7, progress=False)
    assert list(results) == ["test", "pose30"]
    for name in ("test", "pose30"):
        correct = 0
        for row in splits[name]:
            pixels = np.asarray(row["image"].convert("RGB"), dtype=np.float32) / 255.0
            x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
            with torch.no_grad():
                correct += int(model(x).argmax(dim=1).item() == row["label"])
        assert results[name]["correct"] == correct
        assert results[name]["total"] == splits[name].num_rows


def test_cli_writes_results_and_refuses_to_overwrite(tiny_data, splits, tmp_path, capsys):
    model_dir = save_pretrained(_constant_model(0), tmp_path / "model")
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--model",
        str(model_dir),
        "--data",
        str(tiny_data),
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    assert ran_main(args) == 0
    printed = capsys.readouterr().out
    test_labels = list(splits["test"]["label"])
    expected = f"{test_labels.count(0) / len(test_labels):.4f} ({test_labels.count(0)}/{len(test_labels)})"
    assert expected in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results) == set(SUBSETS)
    assert results["test"]["correct"] == test_labels.count(0) and results["test"]["total"] == len(test_labels)
    assert expected in (out / "results.md").read_text()
    for name in SUBSETS:
        assert (out / f"confusion_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = (out / "results.json").read_bytes()
    assert ran_main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before
    assert ran_main([*args, "--overwrite", "--subsets", "pose45"]) == 0
    assert set(json.loads((out / "results.json").read_text())) == {"pose45"}


def test_bad_inputs(tiny_data, tmp_path, capsys):
    seven = save_pretrained(_small_model(num_classes=7), tmp_path / "seven")
    out = tmp_path / "eval"
    assert (
        ran_main(["evaluate", "--model", str(seven), "--data", str(tiny_data), "--output-dir", str(out)]) == 2
    )
    assert "num_classes mismatch" in capsys.readouterr().err
    eight = save_pretrained(_small_model(), tmp_path / "eight")
    assert (
        ran_main(
            [
                "evaluate",
                "--model",
                str(eight),
                "--data",
                str(tiny_data),
                "--output-dir",
                str(out),
                "--subsets",
                "test",
                "minor",
            ]
        )
        == 2
    )
    assert "no split 'minor'" in capsys.readouterr().err
    assert not (out / "results.json").exists()
    assert (
        ran_main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "missing"),
                "--data",
                str(tiny_data),
                "--output-dir",
                str(out),
            ]
        )
        == 2
    )
    with pytest.raises(SystemExit) as info:
        ran_main(
            ["evaluate", "--model", str(eight), "--data", str(tiny_data), "--output-dir", str(out), "--nope"]
        )
    assert info.value.code == 2


def test_training_checkpoint_and_best_folder_agree(tiny_data, splits, tmp_path):
    from ran.training import resolve_config, train

    out = tmp_path / "run"
    train(
        resolve_config(
            [
                "--data",
                str(tiny_data),
                "--output-dir",
                str(out),
                "--model",
                "ran",
                "--backbone",
                "test_resnet",
                "--region-size",
                "32",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--no-progress",
            ]
        )
    )
    # the checkpoint folder is a model folder: the one loader reads it as it reads best/, no special case
    checkpoint, best = load_model(out / "checkpoints" / "epoch_001"), load_model(out / "best")
    assert (
        checkpoint.pretrained_cfg["label_names"]
        == best.pretrained_cfg["label_names"]
        == list(FERPLUS_CLASSES)
    )
    weights = checkpoint.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in best.state_dict().items())
    from_checkpoint = evaluate(checkpoint, splits, progress=False)
    from_best = evaluate(best, splits, progress=False)
    assert from_checkpoint == from_best
