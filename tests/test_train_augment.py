"""ran train --augment (perturbations as training augmentation) and the one-region baseline (--regions
whole, examples/ablation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ran.cli import main as ran_main
from ran.training.config import resolve_config
from ran.training.config_yaml import load_yaml_config
from ran.training.loop import perturbed_faces as PERTURBED_FACES
from ran.training.loop import train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "ran", "--backbone", "test_resnet", "--region-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

    out = tmp_path_factory.mktemp("data") / "tiny_augment"
    return write_dataset_folder(build_synthetic(seed=2, train_size=24, test_size=8, progress=False), out)


def _recorded_run(data: Path, out: Path, monkeypatch, *extra: str) -> tuple[list[torch.Tensor], list, dict]:
    """Train 2 epochs; the uint8 faces each step fed to the model, the rows they were, the weights."""
    import ran.training.loop as loop

    faces, rows = [], []
    original = PERTURBED_FACES

    def recording(run, batch):
        out_faces = original(run, batch)
        faces.append(out_faces.clone())
        rows.append((run.progress.epoch, list(batch["ids"])))
        return out_faces

    monkeypatch.setattr(loop, "perturbed_faces", recording)
    argv = ["--data", str(data), "--output-dir", str(out), *TINY, "--epochs", "2", "--batch-size", "8"]
    train(resolve_config([*argv, "--no-hflip", *extra]))
    from safetensors.torch import load_file

    return faces, rows, load_file(out / "best" / "model.safetensors")


def test_augment_changes_the_faces_seen_deterministically(tiny_data, tmp_path, monkeypatch):
    plain, plain_rows, _ = _recorded_run(tiny_data, tmp_path / "plain", monkeypatch)
    flags = ["--augment", "occlusion,gaussian_noise", "--augment-probability", "1"]
    first, rows, weights = _recorded_run(tiny_data, tmp_path / "a", monkeypatch, *flags)
    again, rows_again, weights_again = _recorded_run(tiny_data, tmp_path / "b", monkeypatch, *flags)
    assert rows == plain_rows == rows_again  # the same rows in the same order: only the faces differ
    changed = [(a != p).flatten(1).any(1) for a, p in zip(first, plain)]
    assert all(bool(c.all()) for c in changed)  # probability 1: every face perturbed
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # the same seed: the same faces
    assert all(torch.equal(weights[k], weights_again[k]) for k in weights)
    # a row meets another perturbation in the next epoch
    by_row = {}
    for (epoch, ids), batch in zip(rows, first):
        for position, row in enumerate(ids):
            by_row.setdefault(row, {})[epoch] = batch[position]
    assert any(not torch.equal(seen[0], seen[1]) for seen in by_row.values())
    other, _, _ = _recorded_run(tiny_data, tmp_path / "c", monkeypatch, *flags, "--seed", "1")
    assert not all(torch.equal(a.sort().values, b.sort().values) for a, b in zip(first, other))


def test_augment_probability_leaves_the_other_faces_unchanged(tiny_data, tmp_path, monkeypatch):
    plain, _, _ = _recorded_run(tiny_data, tmp_path / "plain", monkeypatch)
    flags = ["--augment", "eye_band:texture", "--augment-probability", "0.5"]
    some, _, _ = _recorded_run(tiny_data, tmp_path / "some", monkeypatch, *flags)
    changed = torch.cat([(s != p).flatten(1).any(1) for s, p in zip(some, plain)])
    assert 0 < int(changed.sum()) < changed.numel()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--augment", "noise"], "data.augment (--augment): 'noise' is not a perturbation"),
        (["--augment", "occlusion,gaussian_noise:texture"], "only occluders take a fill"),
        (["--augment", "eye_band:glitter"], "unknown fill 'glitter'"),
    ],
)
def test_bad_augment_values_get_one_line(tiny_data, tmp_path, capsys, flags, message):
    argv = ["train", "--data", str(tiny_data), "--output-dir", str(tmp_path / "out"), *TINY, *flags]
    assert ran_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_augment_probability_outside_0_1_is_refused(tiny_data, tmp_path, capsys):
    argv = ["train", "--data", str(tiny_data), "--output-dir", str(tmp_path / "out"), *TINY]
    with pytest.raises(SystemExit) as info:
        ran_main([*argv, "--augment-probability", "1.5"])
    assert info.value.code == 2 and not (tmp_path / "out").exists()
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("ran train: error: argument --augment-probability")
    assert line.endswith("expected a number in [0, 1], got '1.5' (see ran train --help)")


def test_augment_from_yaml_is_checked_the_same_way(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("data:\n  augment: occlusion,jpeg\n  augment_probability: 0.25\n", encoding="utf-8")
    config = load_yaml_config(good)
    assert (config.data.augment, config.data.augment_probability) == ("occlusion,jpeg", 0.25)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  augment: sunglasses\n", encoding="utf-8")
    config = load_yaml_config(bad)
    config.data.data, config.run.output_dir = "d", "o"
    with pytest.raises(ValueError, match=r"data.augment \(--augment\): 'sunglasses'"):
        config.validate()


def test_whole_face_baseline_is_backbone_and_linear_classifier(tiny_data, tmp_path, capsys):
    out = tmp_path / "whole"
    argv = ["train", "--data", str(tiny_data), "--output-dir", str(out), *TINY, "--epochs", "1"]
    assert ran_main([*argv, "--regions", "whole", "--batch-size", "8"]) == 0
    assert "the region-biased loss is off" in capsys.readouterr().out
    from ran.modelio.loading import load_model

    model = load_model(out / "best").eval()
    assert model.num_regions == 1 and model.boxes == ((0.0, 0.0, 1.0, 1.0),)
    faces = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        output = model.forward_with_attention(faces)
        features = model.backbone(model.cut(faces)[:, 0])
        c = model.region_feature_dim  # the classifier sees [f ; f]: one linear map of f
        linear = features @ (model.fc.weight[:, :c] + model.fc.weight[:, c:]).t() + model.fc.bias
    assert torch.allclose(output.alpha, torch.ones(3, 1)) and torch.allclose(output.beta, torch.ones(3, 1))
    assert torch.allclose(output.logits, linear, atol=1e-5)


ABLATION = ("baseline", "self_attention", "relation_attention", "rb_loss", "random_regions")


def test_ablation_folder_holds_every_step():
    assert sorted(p.stem for p in (REPO / "examples" / "ablation").glob("*.yaml")) == sorted(ABLATION)


@pytest.mark.parametrize("name", ABLATION)
def test_ablation_configs_train(tiny_data, tmp_path, name):
    config = load_yaml_config(REPO / "examples" / "ablation" / f"{name}.yaml")
    config.data.data, config.run.output_dir = str(tiny_data), str(tmp_path / "run")
    config.run.stop_after_steps, config.run.progress, config.model.region_size = 1, False, 16
    config.run.mixed_precision = "fp32"
    summary = train(config)
    assert summary["global_step"] == 1
    from ran.modelio.loading import load_model

    model = load_model(tmp_path / "run" / "best").eval()  # the variant survives saving and loading
    assert model.num_regions == (1 if config.model.regions == "whole" else 6)
    with torch.no_grad():
        beta = model.forward_with_attention(torch.rand(2, 3, 16, 16)).beta
    assert torch.equal(beta, torch.ones_like(beta)) == (
        not config.model.relation_attention or model.num_regions == 1
    )
