"""ran robustness end to end on tiny models (a RAN and a plain timm classifier), and a plain classifier
through ran evaluate: the results schema, numbers checked against a direct forward pass on perturb()'s
faces, predictions that ran compare reads, and bad flags refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import ran  # noqa: F401
from ran.cli import main as ran_main
from ran.labels import FERPLUS_CLASSES
from ran.modelio.hub import save_pretrained

KINDS = ["eye_band", "gaussian_noise"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    from timm.models import save_for_hf

    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

    root = tmp_path_factory.mktemp("robustness")
    data = write_dataset_folder(
        build_synthetic(seed=3, train_size=8, test_size=24, progress=False), root / "data"
    )
    torch.manual_seed(0)
    net = timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=8).eval()
    net.pretrained_cfg = {
        **net.pretrained_cfg,
        "label_names": list(FERPLUS_CLASSES),
        "input_size": (3, 40, 40),
    }
    save_pretrained(net, root / "tiny_ran")
    plain = timm.create_model("test_resnet", num_classes=8)
    plain.pretrained_cfg = {**plain.pretrained_cfg, "input_size": (3, 40, 40)}
    save_for_hf(
        plain, root / "plain", model_config={"label_names": list(FERPLUS_CLASSES)}, safe_serialization=True
    )
    return {"root": root, "data": data, "ran": root / "tiny_ran", "plain": root / "plain"}


@pytest.fixture(scope="module")
def robustness_run(lab) -> Path:
    out = lab["root"] / "out"
    argv = ["robustness", "--model", str(lab["ran"]), str(lab["plain"]), "--data", str(lab["data"])]
    argv += ["--output-dir", str(out), "--perturbations", *KINDS, "--resamples", "100", "--no-progress"]
    assert ran_main(argv) == 0
    return out


def _direct_accuracy(model_dir: Path, data: Path, kind: str, severity: int) -> float:
    """Accuracy from the model itself on perturb()'s faces (ids = row numbers), without the lab."""
    from ran.data.batches import load_splits
    from ran.modelio.loading import load_model
    from ran.robustness import perturb
    from ran.transforms import transform_for

    model = load_model(model_dir)
    split = load_splits(data)["test"]
    transform = transform_for(model)
    faces = torch.stack([transform.prepare(image) for image in split["image"]])
    faces = perturb(faces, kind, severity, 0, ids=torch.arange(len(faces)))
    with torch.no_grad():
        logits = model(transform.normalize(faces))
    return float((logits.argmax(1).numpy() == np.asarray(split["label"])).mean())


def test_results_schema_and_numbers(robustness_run, lab):
    results = json.loads((robustness_run / "results.json").read_text())
    assert list(results["models"]) == ["tiny_ran", "plain"] and results["reference"] == "tiny_ran"
    for name, source in (("tiny_ran", lab["ran"]), ("plain", lab["plain"])):
        summary = results["models"][name]
        assert summary["clean"]["total"] == 24
        assert list(summary["perturbations"]) == KINDS
        for kind in KINDS:
            levels = summary["perturbations"][kind]
            assert list(levels) == ["1", "2", "3", "4", "5"]
            for level in levels.values():
                low, high = level["interval"]
                assert low <= level["accuracy"] <= high and 0.0 <= level["ece"] <= 1.0
        assert summary["perturbations"]["eye_band"]["3"]["accuracy"] == pytest.approx(
            _direct_accuracy(source, lab["data"], "eye_band", 3)
        )
    ran_levels = results["models"]["tiny_ran"]["perturbations"]["eye_band"]
    shift = ran_levels["5"]["attention_shift"]
    assert shift["faces"] == 24 and shift["interval"][0] <= shift["shift"] <= shift["interval"][1]
    assert shift["shift"] == pytest.approx(shift["occluded"] - shift["clean"])
    assert "attention_shift" not in results["models"]["plain"]["perturbations"]["eye_band"]["5"]
    assert "attention_shift" not in results["models"]["tiny_ran"]["perturbations"]["gaussian_noise"]["5"]
    ce = results["models"]["tiny_ran"]["corruption_error"]
    assert all(v["ce"] in (None, pytest.approx(1.0)) for v in ce.values())  # the reference against itself
    assert {"mce", "relative_mce"} <= set(results["models"]["plain"])
    for picture in ("accuracy_vs_severity.png", "perturbations.png", "attention_shift.png", "results.md"):
        assert (robustness_run / picture).is_file()


def test_predictions_feed_ran_compare(robustness_run, capsys):
    from ran.evaluation.samples import read_predictions

    samples = read_predictions(robustness_run / "models" / "tiny_ran")
    assert list(samples)[:2] == ["clean", "eye_band@1"] and len(samples) == 11
    assert samples["eye_band@2"].weights.shape == (24, 6)
    assert read_predictions(robustness_run / "models" / "plain")["clean"].weights.shape == (24, 0)
    runs = [str(robustness_run / "models" / name) for name in ("tiny_ran", "plain")]
    assert ran_main(["compare", *runs, "--subsets", "eye_band@5", "--resamples", "100"]) == 0
    assert "eye_band@5" in capsys.readouterr().out


def test_plain_classifier_through_ran_evaluate(lab):
    out = lab["root"] / "evaluate_plain"
    assert (
        ran_main(
            [
                "evaluate",
                "--model",
                str(lab["plain"]),
                "--data",
                str(lab["data"]),
                "--output-dir",
                str(out),
                "--no-progress",
                "--resamples",
                "100",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["total"] == 24 and "attention" not in results["test"]
    assert results["test"]["accuracy"] == pytest.approx(_clean_accuracy(lab))


def _clean_accuracy(lab) -> float:
    from ran.data.batches import load_splits
    from ran.modelio.loading import load_model
    from ran.transforms import transform_for

    model = load_model(lab["plain"])
    split = load_splits(lab["data"])["test"]
    transform = transform_for(model)
    faces = torch.stack([transform.prepare(image) for image in split["image"]])
    with torch.no_grad():
        logits = model(transform.normalize(faces))
    return float((logits.argmax(1).numpy() == np.asarray(split["label"])).mean())


def test_list_names_every_perturbation(capsys):
    from ran.robustness import PERTURBATIONS

    assert ran_main(["robustness", "--list"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in PERTURBATIONS)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--perturbations", "fog"], "perturbation 'fog': unknown"),
        (["--perturbations", "jpeg:noise"], "only occluders take a fill"),
        (["--reference", "other"], "--reference 'other': not one of the --model values"),
        (["--split", "nope"], "no split 'nope'"),
    ],
)
def test_bad_values_are_one_line(lab, capsys, extra, words):
    argv = ["robustness", "--model", str(lab["ran"]), "--data", str(lab["data"])]
    argv += ["--output-dir", str(lab["root"] / "bad"), "--no-progress", *extra]
    assert ran_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and err[0].startswith("ran robustness: error:")
    assert not (lab["root"] / "bad").exists()


def test_missing_model_and_existing_output_are_refused(lab, robustness_run, capsys):
    assert ran_main(["robustness", "--data", str(lab["data"]), "--output-dir", "x"]) == 2
    assert "--model is required" in capsys.readouterr().err
    argv = [
        "robustness",
        "--model",
        str(lab["ran"]),
        "--data",
        str(lab["data"]),
        "--output-dir",
        str(robustness_run),
    ]
    assert ran_main([*argv, "--perturbations", "jpeg"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_a_second_run_into_a_folder_is_refused_before_it_computes(
    lab, tmp_path, capsys, monkeypatch, lock_held_by_another_process
):
    """The lock was taken only to write: two runs into one folder both computed in full."""
    import ran.evaluation.robustness

    def computed(*args, **kwargs):
        raise AssertionError("computed while another run holds the folder")

    monkeypatch.setattr(ran.evaluation.robustness, "robustness_samples", computed)
    out = tmp_path / "rob"
    first = lock_held_by_another_process(out, "ran robustness", inside=False)
    argv = ["robustness", "--model", str(lab["ran"]), "--data", str(lab["data"]), "--output-dir", str(out)]
    assert ran_main([*argv, "--perturbations", "jpeg", "--no-progress"]) == 2
    assert f"{out} is being written by pid {first.pid} (ran robustness" in capsys.readouterr().err


def test_data_perturb_writes_the_faces_perturb_makes(lab):
    from ran.data.batches import load_splits
    from ran.robustness import perturb
    from ran.transforms import FaceTransform

    out = lab["root"] / "perturbed"
    argv = ["data", "perturb", "--data", str(lab["data"]), "--out", str(out)]
    assert ran_main([*argv, "--perturbations", "hand:noise", "--severities", "2", "--seed", "9"]) == 0
    written = load_splits(out)
    assert sorted(written) == ["hand_noise_2", "test"]
    source = load_splits(lab["data"])["test"]
    faces = torch.stack([FaceTransform().prepare(image) for image in source["image"]])
    expected = perturb(faces, "hand:noise", 2, 9, ids=torch.arange(len(faces)))
    got = torch.stack([FaceTransform().prepare(image) for image in written["hand_noise_2"]["image"]])
    assert torch.equal(got, expected) and list(written["hand_noise_2"]["label"]) == list(source["label"])
    card = (out / "README.md").read_text()
    assert "seed 9" in card and "`hand:noise`" in card
    other = ["data", "perturb", "--data", str(lab["data"]), "--out", str(lab["root"] / "fog")]
    assert ran_main([*other, "--perturbations", "fog"]) == 2
    assert not (lab["root"] / "fog").exists()
    # the perturbed copy never replaces the dataset it is made from, --overwrite or not
    before = sorted(p.name for p in Path(lab["data"]).rglob("*"))
    onto = ["data", "perturb", "--data", str(lab["data"]), "--out", str(lab["data"]), "--overwrite"]
    assert ran_main([*onto, "--perturbations", "hand:noise", "--severities", "2"]) == 2
    inside = ["data", "perturb", "--data", str(lab["data"]), "--out", str(Path(lab["data"]) / "inner")]
    assert ran_main([*inside, "--perturbations", "hand:noise", "--severities", "2"]) == 2  # nor into it
    assert sorted(p.name for p in Path(lab["data"]).rglob("*")) == before


def test_models_of_runs_are_named_by_their_run():
    """The README's `ran robustness --model runs/ran/best runs/whole/best` named both 'best' ('best',
    'best-2'), so its next line, `ran compare robustness/models/whole ...`, found nothing."""
    from ran.cli.robustness import model_names

    assert model_names(["runs/ran/best", "runs/whole/best/"]) == ["ran", "whole"]
    assert model_names(["ORG/ran_resnet18", "a/m", "b/m", "best", "x y"]) == [
        "ran_resnet18",
        "m",
        "m-2",
        "best",
        "x_y",
    ]
