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
from ran.labels import FERPLUS_CLASSES
from ran.modelio.hub import save_pretrained
from ran.modelio.loading import load_model

SUBSETS = ["test", "occlusion", "pose30", "pose45"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

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


def test_results_are_written_before_a_reader_can_stop_the_table(tiny_data, tmp_path, monkeypatch):
    """`ran evaluate ... | head -2` ended quietly (status 141) before the results were written: the whole
    evaluation was lost."""
    import ran.evaluation

    def reader_gone(results):
        raise BrokenPipeError

    monkeypatch.setattr(ran.evaluation, "print_results", reader_gone)
    model_dir = save_pretrained(_constant_model(0), tmp_path / "model")
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model_dir), "--data", str(tiny_data), "--output-dir", str(out)]
    monkeypatch.setattr("os.dup2", lambda *a: None)  # keep pytest's stdout: only the exit path is of interest
    assert ran_main([*args, "--no-progress"]) == 141
    assert set(json.loads((out / "results.json").read_text())) == set(SUBSETS)


def test_overwrite_replaces_only_results_ran_evaluate_wrote(tiny_data, tmp_path, capsys):
    model_dir = save_pretrained(_constant_model(0), tmp_path / "model")
    notes = tmp_path / "notes"  # the user's folder with a results.md of their own
    notes.mkdir()
    (notes / "results.md").write_text("# my results")
    args = ["evaluate", "--model", str(model_dir), "--data", str(tiny_data), "--no-progress", "--overwrite"]
    assert ran_main([*args, "--output-dir", str(notes)]) == 2
    err = capsys.readouterr().err
    assert f"{notes}: not a folder written by ran evaluate (no .ran-evaluation.json marker" in err
    assert sorted(p.name for p in notes.iterdir()) == ["results.md"]
    assert (notes / "results.md").read_text() == "# my results"


def test_the_users_own_pictures_and_results_are_never_replaced(tiny_data, tmp_path, capsys):
    """An evaluation removed every confusion_*.png / reliability_*.png it had not just written, the user's
    too and without --overwrite; --overwrite took any results.json mapping names to accuracies as its
    own. Only files the folder's marker lists as ran evaluate's are replaced or removed."""
    model_dir = save_pretrained(_constant_model(0), tmp_path / "model")
    out = tmp_path / "eval"
    out.mkdir()
    mine = {"confusion_my_holiday.png": "mine", "reliability_chart.png": "mine", "notes.txt": "n"}
    for name, text in mine.items():
        (out / name).write_text(text)
    args = ["evaluate", "--model", str(model_dir), "--data", str(tiny_data), "--no-progress"]
    assert ran_main([*args, "--output-dir", str(out), "--subsets", "test", "pose30"]) == 0
    assert (out / "confusion_pose30.png").is_file()
    assert ran_main([*args, "--output-dir", str(out), "--subsets", "test", "--overwrite"]) == 0
    assert not (out / "confusion_pose30.png").exists()  # the earlier run's picture of a subset not run now
    assert {name: (out / name).read_text() for name in mine} == mine
    legacy = tmp_path / "legacy"  # a user's folder with results of their own and no marker
    legacy.mkdir()
    (legacy / "results.json").write_text('{"baseline": {"accuracy": 0.91}}')
    capsys.readouterr()
    assert ran_main([*args, "--output-dir", str(legacy), "--overwrite"]) == 2
    assert "not a folder written by ran evaluate" in capsys.readouterr().err
    assert (legacy / "results.json").read_text() == '{"baseline": {"accuracy": 0.91}}'
    (out / "confusion_test.png").unlink()  # a marked folder where the user put a file of that name
    (out / "confusion_test.png").write_text("the user's")
    marker = json.loads((out / ".ran-evaluation.json").read_text())
    marker["entries"].remove("confusion_test.png")
    (out / ".ran-evaluation.json").write_text(json.dumps(marker))
    assert ran_main([*args, "--output-dir", str(out), "--subsets", "test", "--overwrite"]) == 2
    assert f"{out / 'confusion_test.png'}: not written by ran evaluate" in capsys.readouterr().err
    assert (out / "confusion_test.png").read_text() == "the user's"


def test_one_evaluation_per_output_folder(tiny_data, tmp_path, capsys, lock_held_by_another_process):
    model_dir = save_pretrained(_constant_model(0), tmp_path / "model")
    out = tmp_path / "eval"
    first = lock_held_by_another_process(out, "ran evaluate", inside=True)
    args = ["evaluate", "--model", str(model_dir), "--data", str(tiny_data), "--output-dir", str(out)]
    assert ran_main([*args, "--no-progress"]) == 2
    assert f"{out} is being written by pid {first.pid} (ran evaluate, started" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [".ran.lock"]


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


# --- per-face predictions, intervals, calibration, attention (issue 12) ------------------------------
def _faces(split, side: int = 224) -> torch.Tensor:
    """A split's faces as the float batch the model takes: RGB, resized to the model's recorded input
    side (224 px; PIL bilinear), 0..1 (independent of ran.transforms)."""
    import numpy as np
    from PIL import Image

    pixels = [
        np.asarray(row["image"].convert("RGB").resize((side, side), Image.Resampling.BILINEAR), np.float32)
        / 255
        for row in split
    ]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)


def test_predictions_file_holds_what_the_model_says_face_by_face(tiny_data, splits, tmp_path, capsys):
    import numpy as np
    import pyarrow.parquet as pq

    model = _small_model(seed=3)
    model_dir = save_pretrained(model, tmp_path / "model")
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model_dir), "--data", str(tiny_data), "--output-dir", str(out)]
    assert ran_main([*args, "--no-progress", "--resamples", "500"]) == 0
    table = pq.read_table(out / "predictions.parquet").to_pydict()
    results = json.loads((out / "results.json").read_text())
    assert table["subset"] == [name for name in SUBSETS for _ in range(splits[name].num_rows)]
    for name in SUBSETS:
        rows = [i for i, s in enumerate(table["subset"]) if s == name]
        with torch.no_grad():
            expected = model.forward_with_attention(_faces(splits[name]))
        assert [table["id"][i] for i in rows] == list(splits[name]["image_name"])
        assert [table["label"][i] for i in rows] == list(splits[name]["label"])
        assert [table["row"][i] for i in rows] == list(range(splits[name].num_rows))
        probabilities = torch.tensor([table["probabilities"][i] for i in rows])
        torch.testing.assert_close(probabilities, expected.logits.softmax(1), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.tensor([table["weights"][i] for i in rows]), expected.weights)
        predictions = [table["prediction"][i] for i in rows]
        assert predictions == probabilities.argmax(1).tolist()
        assert sum(table["correct"][i] for i in rows) == results[name]["correct"]
        # the attention statistics are these weights' mean and arg-max shares
        attention = results[name]["attention"]
        assert attention["regions"] == [
            "whole",
            "top-left",
            "top-right",
            "centre-down",
            "centre 90%",
            "centre 85%",
        ]
        np.testing.assert_allclose(attention["mean_weight"], expected.weights.mean(0).numpy(), atol=1e-6)
        top = np.bincount(expected.weights.argmax(1).numpy(), minlength=6) / len(rows)
        np.testing.assert_allclose(attention["top_share"], top)
        assert sum(attention["mean_weight"]) == pytest.approx(1.0) and sum(
            attention["top_share"]
        ) == pytest.approx(1.0)
    for picture in ["attention.png", *(f"reliability_{n}.png" for n in SUBSETS)]:
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "results.md").read_text()
    assert "500 resamples" in markdown and "| whole |" in markdown and "attention.png" in markdown

    # results replaced by a run of one subset: the predictions file follows them
    assert ran_main([*args, "--no-progress", "--overwrite", "--subsets", "pose45"]) == 0
    assert set(pq.read_table(out / "predictions.parquet").column("subset").to_pylist()) == {"pose45"}
    pictures = {p.name for p in out.glob("*.png")}  # and so do the pictures: none of another subset
    assert pictures == {"attention.png", "confusion_pose45.png", "reliability_pose45.png"}
    # results written without predictions never sit beside the predictions of another run
    from ran.evaluation import write_results

    write_results(json.loads((out / "results.json").read_text()), out, overwrite=True)
    assert not (out / "predictions.parquet").exists()
    for resamples in ("10", "100001"):
        assert ran_main([*args, "--resamples", resamples]) == 2
        assert f"resamples: expected an integer in [100, 100000], got {resamples}" in capsys.readouterr().err


def test_interval_contains_the_accuracy_and_is_seeded(splits):
    results = evaluate(
        _small_model(seed=4), splits, ["test", "pose30"], resamples=400, seed=7, progress=False
    )
    again = evaluate(_small_model(seed=4), splits, ["test"], resamples=400, seed=7, progress=False)
    assert again["test"]["interval"] == results["test"]["interval"]
    for r in results.values():
        interval = r["interval"]
        assert interval["resamples"] == 400 and interval["seed"] == 7 and interval["level"] == 0.95
        low, high = interval["accuracy"]
        assert low <= r["accuracy"] <= high and low < high
        low, high = interval["mean_class_accuracy"]
        assert low <= r["mean_class_accuracy"] <= high
    with pytest.raises(ValueError, match="resamples"):
        evaluate(_small_model(), splits, ["pose45"], resamples=10, progress=False)


def test_interval_narrows_as_the_subset_grows_like_the_binomial_error():
    import numpy as np

    from ran.evaluation.statistics import accuracy_intervals

    rng = np.random.default_rng(0)
    widths = []
    for n in (60, 240, 960, 3840):
        labels = rng.integers(0, 4, size=n)
        wrong = rng.random(n) < 0.3  # about 70 % correct
        predictions = np.where(wrong, (labels + 1) % 4, labels)
        interval = accuracy_intervals(labels, predictions, 4, resamples=2000, seed=1)
        accuracy = float((predictions == labels).mean())
        low, high = interval["accuracy"]
        assert low <= accuracy <= high
        # the normal approximation of a binomial proportion: 2 * 1.96 * sqrt(p (1 - p) / n)
        expected = 2 * 1.96 * (accuracy * (1 - accuracy) / n) ** 0.5
        assert high - low == pytest.approx(expected, rel=0.15)
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)
    assert widths[0] / widths[-1] == pytest.approx(8.0, rel=0.2)  # sqrt(3840 / 60)


def test_expected_calibration_error_on_constructed_confidences():
    import numpy as np

    from ran.evaluation.statistics import calibration

    # 10 faces at confidence 0.9 with 6 right; 10 at 0.5 (bin (7/15, 8/15]) with 5 right
    confidence = np.array([0.9] * 10 + [0.5] * 10)
    correct = np.array([1] * 6 + [0] * 4 + [1] * 5 + [0] * 5)
    cal = calibration(confidence, correct)
    assert cal["bins"] == 15 and sum(cal["bin_count"]) == 20
    assert cal["ece"] == pytest.approx(0.5 * abs(0.9 - 0.6) + 0.5 * abs(0.5 - 0.5))
    assert cal["bin_count"][13] == 10 and cal["bin_accuracy"][13] == pytest.approx(0.6)
    assert cal["bin_count"][7] == 10 and cal["bin_confidence"][7] == pytest.approx(0.5)
    assert cal["bin_accuracy"][0] is None
    perfect = calibration(np.ones(5), np.ones(5))
    assert perfect["ece"] == 0.0 and perfect["bin_count"][14] == 5


def test_region_labels_name_preset_boxes_and_show_others():
    from ran.evaluation.attention import region_labels
    from ran.regions import REGION_PRESETS

    assert region_labels(REGION_PRESETS["affectnet8"])[:2] == ["whole", "centre-down"]
    assert region_labels([(0.0, 0.0, 1.0, 1.0), (0.1, 0.2, 0.6, 0.7)]) == ["whole", "(0.1, 0.2, 0.6, 0.7)"]


def test_card_states_intervals_method_and_resamples(splits, tmp_path):
    from huggingface_hub import ModelCard

    model = _small_model(seed=6)
    results = evaluate(model, splits, ["test", "occlusion"], resamples=300, progress=False)
    card = ModelCard.load(save_pretrained(model, tmp_path / "m", results=results) / "README.md")
    low, high = results["test"]["interval"]["accuracy"]
    assert f"| {low:.4f} - {high:.4f} |" in card.text
    assert "95 % intervals: percentile bootstrap over the images, 300 resamples" in card.text
    broken = {
        "test": {**results["test"], "interval": {**results["test"]["interval"], "accuracy": [0.9, 0.1]}}
    }
    with pytest.raises(ValueError, match=r"results\['test'\]\['interval'\]\['accuracy'\]"):
        save_pretrained(model, tmp_path / "m2", results=broken)


def test_the_precision_is_stated_with_every_number(tiny_data, splits, tmp_path, capsys):
    """results.json, results.md, the terminal and the model card say which precision measured them."""
    from huggingface_hub import ModelCard

    from ran.evaluation.samples import read_predictions

    model_dir = save_pretrained(_small_model(seed=3), tmp_path / "model")
    args = ["evaluate", "--model", str(model_dir), "--data", str(tiny_data), "--no-progress"]
    for flags, precision in [([], "fp32"), (["--mixed-precision", "bf16"], "bf16")]:
        out = tmp_path / f"eval_{precision}"
        assert ran_main([*args, "--output-dir", str(out), "--subsets", "test", "pose30", *flags]) == 0
        results = json.loads((out / "results.json").read_text())
        assert {r["precision"] for r in results.values()} == {precision}
        assert f"Precision: {precision} " in (out / "results.md").read_text()
        assert f"Precision: {precision} " in capsys.readouterr().out
        assert {s.precision for s in read_predictions(out).values()} == {precision}
        card = ModelCard.load(
            save_pretrained(load_model(str(model_dir)), tmp_path / precision, results=results) / "README.md"
        )
        assert f"Precision: {precision} " in card.text


# --- cross-dataset evaluation -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def renamed_data(tmp_path_factory) -> Path:
    """The tiny faces relabelled in RAF-DB order (contempt rows dropped), with anger renamed 'angry'."""
    import datasets

    from ran.data.format.writer import write_dataset_folder
    from ran.data.sources.mapping import remap_dataset
    from ran.data.synthetic.generator import build_synthetic

    names = ["surprise", "fear", "disgust", "happiness", "sadness", "angry", "neutral"]
    source = build_synthetic(seed=2, train_size=16, test_size=80, progress=False)
    renamed = datasets.DatasetDict(
        {
            split: remap_dataset(source[split], "rafdb").cast_column(
                "label", datasets.ClassLabel(names=names)
            )
            for split in ("test", "pose45")
        }
    )
    return write_dataset_folder(renamed, tmp_path_factory.mktemp("renamed") / "data")


def test_cross_dataset_scores_the_shared_classes(renamed_data, tmp_path, capsys):
    import numpy as np

    from ran.data.batches import load_splits
    from ran.evaluation import evaluate_samples

    data = load_splits(renamed_data)
    model = _small_model(seed=8)  # FERPlus classes
    with pytest.raises(ValueError, match="--cross-dataset"):
        evaluate(model, data, progress=False)
    samples = evaluate_samples(model, data, cross_dataset=True, progress=False)
    shared = ["surprise", "fear", "disgust", "happiness", "sadness", "neutral"]
    for name, s in samples.items():
        split_labels = list(data[name]["label"])
        angry = [i for i, label in enumerate(split_labels) if label == 5]
        assert s.classes == shared
        assert s.cross_dataset == {
            "evaluated": shared,
            "dropped_from_model": ["anger", "contempt"],
            "dropped_from_data": ["angry"],
            "rows_dropped": len(angry),
        }
        kept = [i for i in range(len(split_labels)) if i not in angry]
        assert s.rows.tolist() == kept
        assert [shared[label] for label in s.labels] == [
            data[name].features["label"].names[split_labels[i]] for i in kept
        ]
        with torch.no_grad():
            logits = model(_faces(data[name].select(kept)))
        model_index = [FERPLUS_CLASSES.index(c) for c in shared]
        np.testing.assert_array_equal(s.predictions, logits[:, model_index].argmax(1).numpy())

    model_dir = save_pretrained(model, tmp_path / "model")
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model_dir), "--data", str(renamed_data), "--output-dir", str(out)]
    assert ran_main([*args, "--no-progress"]) == 2
    assert "pass --cross-dataset" in capsys.readouterr().err
    assert ran_main([*args, "--no-progress", "--cross-dataset"]) == 0
    printed = capsys.readouterr().out
    assert "dropped from the model: anger, contempt; dropped from the data: angry" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["classes"]["dropped_from_data"] == ["angry"]
    assert list(results["test"]["per_class"]) == shared
    assert "dropped from the data: angry" in (out / "results.md").read_text()


def test_class_matching_by_name():
    from ran.evaluation.classes import match_classes
    from ran.labels import AFFECTNET_CLASSES, RAFDB_CLASSES

    same = match_classes(AFFECTNET_CLASSES, FERPLUS_CLASSES)  # same names, another order: no flag needed
    assert same.names == FERPLUS_CLASSES and not same.is_cross_dataset
    assert [AFFECTNET_CLASSES[i] for i in same.model_index] == list(FERPLUS_CLASSES)
    ferplus_on_raf = match_classes(FERPLUS_CLASSES, RAFDB_CLASSES, cross_dataset=True)
    assert ferplus_on_raf.names == RAFDB_CLASSES and ferplus_on_raf.dropped_from_model == ["contempt"]
    with pytest.raises(ValueError, match="no shared class"):
        match_classes(["cat", "dog"], FERPLUS_CLASSES, cross_dataset=True)
    with pytest.raises(ValueError, match="num_classes mismatch"):
        match_classes([f"class_{i}" for i in range(7)], FERPLUS_CLASSES, cross_dataset=True)


def test_no_progress_hides_the_bars_of_datasets_too(tiny_data, tmp_path, capsys):
    """A folder's first read builds datasets' cache with a bar per split: shown by default, hidden by
    --no-progress (and datasets' own switch is as it was afterwards)."""
    import shutil

    import datasets

    model_dir = save_pretrained(_small_model(), tmp_path / "model")
    for flags, shown in (([], True), (["--no-progress"], False)):
        data = Path(shutil.copytree(tiny_data, tmp_path / f"data{len(flags)}"))  # a first read each time
        out = tmp_path / f"eval{len(flags)}"
        argv = ["evaluate", "--model", str(model_dir), "--data", str(data), "--output-dir", str(out)]
        assert ran_main([*argv, "--subsets", "test", *flags]) == 0
        assert ("Generating test split" in capsys.readouterr().err) is shown
        assert datasets.is_progress_bar_enabled()


def test_a_dataset_whose_class_names_command_the_terminal_is_refused(tiny_data, tmp_path, capsys):
    """Class names come from the dataset's files too: one holding ESC (a terminal command) or a newline
    reached the terminal and results.md as it was."""
    import shutil

    import pyarrow.parquet as pq

    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    for shard in data.rglob("*.parquet"):
        table = pq.read_table(shard)
        meta = dict(table.schema.metadata)
        meta[b"huggingface"] = meta[b"huggingface"].replace(b'"neutral"', b'"neutral\\u001b[2J"')
        pq.write_table(table.replace_schema_metadata(meta), shard)
    model_dir = save_pretrained(_constant_model(0), tmp_path / "model")
    argv = ["evaluate", "--model", str(model_dir), "--data", str(data), "--output-dir", str(tmp_path / "out")]
    assert ran_main([*argv, "--no-progress", "--subsets", "test"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "class name 'neutral\\x1b[2J'; expected a name without control characters or '$'" in line, line
    assert "\x1b" not in line and not (tmp_path / "out").exists()


def test_results_are_never_written_into_a_dataset_folder(tiny_data, tmp_path, capsys):
    """Results inside the dataset folder left Parquet files its card does not name: ran data push and
    the readers then refused the dataset."""
    model_dir = save_pretrained(_constant_model(0), tmp_path / "model")
    before = sorted(str(p) for p in tiny_data.rglob("*"))
    for out in (tiny_data, tiny_data / "results"):
        argv = ["evaluate", "--model", str(model_dir), "--data", str(tiny_data), "--output-dir", str(out)]
        assert ran_main([*argv, "--no-progress", "--subsets", "test"]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        assert f"inside the dataset folder {tiny_data}" in line, line
    assert sorted(str(p) for p in tiny_data.rglob("*")) == before


def test_the_precision_note_of_int8_results_points_to_no_flag_int8_refuses():
    from ran.inference import precision_note

    assert "--mixed-precision" in precision_note({"test": {"accuracy": 0.5, "precision": "bf16"}})
    int8 = precision_note({"test": {"accuracy": 0.5, "precision": "torch int8"}})
    assert "--mixed-precision" not in int8 and "int8 weights" in int8
