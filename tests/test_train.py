"""ran train: configuration, schedule, exact resume, 2-process launch, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ran.cli import main as ran_main
from ran.data.batches import EpochSampler
from ran.training.config import TrainConfig, load_yaml_config, resolve_config
from ran.training.loop import lr_factor, train

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "ran", "--backbone", "test_resnet", "--region-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from ran.data.folder import write_dataset_folder
    from ran.data.synthetic import build_synthetic

    out = tmp_path_factory.mktemp("data") / "tiny_train"
    return write_dataset_folder(build_synthetic(seed=1, train_size=40, test_size=16, progress=False), out)


def _config(data: Path, out: Path, *extra: str) -> TrainConfig:
    return resolve_config(
        ["--data", str(data), "--output-dir", str(out), *TINY, "--epochs", "2", "--batch-size", "8", *extra]
    )


def test_config_precedence_defaults_yaml_flags(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("optim:\n  lr: 0.5\n  milestones: [0.5]\nrun:\n  epochs: 3\nbatch_size: 4\n")
    config = resolve_config(
        ["--config", str(yaml_file), "--lr", "0.2", "--data", "d", "--output-dir", "o", "--no-hflip"]
    )
    assert config.optim.lr == 0.2  # flag beats YAML
    assert config.run.epochs == 3 and config.data.batch_size == 4 and config.optim.milestones == [0.5]
    assert config.data.hflip is False and config.data.box_jitter is True  # default kept
    assert config.optim.momentum == TrainConfig().optim.momentum


@pytest.mark.parametrize(
    "text, message",
    [
        ("optim:\n  lrr: 0.1\n", "unknown option optim.lrr"),
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("run:\n  epochs: many\n", "run.epochs: expected int"),
        ("optim:\n  optimizer: adam\n", "expected one of ['sgd', 'adamw']"),
    ],
)
def test_config_yaml_errors_name_the_key(tmp_path, text, message):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text(text)
    with pytest.raises(ValueError, match="") as info:
        load_yaml_config(yaml_file).validate()
    assert message in str(info.value)


def test_lr_schedules():
    config = TrainConfig()
    config.run.epochs = 10  # milestones 30/50/80 % -> epochs 3, 5, 8; 2 updates per epoch
    factors = [lr_factor(config, update, 2) for update in (0, 5, 6, 9, 10, 15, 16, 19)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    config.optim.schedule, config.optim.warmup_epochs = "cosine", 1.0
    assert lr_factor(config, 0, 4) == pytest.approx(0.25)  # linear warm-up over 4 updates
    assert lr_factor(config, 3, 4) == pytest.approx(1.0)
    assert lr_factor(config, 4, 4) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_factor(config, 22, 4) == pytest.approx(0.5)  # half-way through the 36 cosine updates
    assert lr_factor(config, 39, 4) < 0.01


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    sampler = EpochSampler(50, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    assert sorted(first) == list(range(50))
    assert list(sampler) == first
    sampler.set_epoch(2)
    assert list(sampler) != first
    labels = torch.tensor([0] * 90 + [1] * 10)
    balanced = EpochSampler(100, seed=0, weights=1.0 / torch.bincount(labels)[labels].double())
    drawn = labels[list(balanced)]
    assert 30 < int((drawn == 1).sum()) < 70  # the rare class is drawn about half the time, not 10 %


def test_stop_and_resume_ends_with_the_same_weights(tiny_data, tmp_path):
    """Uninterrupted run vs. one stopped mid-epoch and resumed: identical final weights."""
    extra = ["--save-every-steps", "2", "--gradient-accumulation", "2", "--drop-rate", "0.2"]
    straight = train(_config(tiny_data, tmp_path / "straight", *extra))
    assert straight["global_step"] == 2 * 3  # 5 batches of 8 per epoch, 2 per update -> 3 updates
    stopped = train(_config(tiny_data, tmp_path / "stopped", *extra, "--stop-after-steps", "4"))
    assert stopped["stopped"] and stopped["global_step"] == 4
    checkpoint = tmp_path / "stopped" / "checkpoints" / "step_0000004"
    progress = json.loads((checkpoint / "progress.json").read_text())
    assert progress["epoch"] == 1 and 0 < progress["batches_done"] < 5  # really mid-epoch
    resumed = train(resolve_config(["--resume", str(checkpoint), "--no-progress"]))
    assert not resumed["stopped"] and resumed["global_step"] == straight["global_step"]

    final_a = load_file(tmp_path / "straight" / "checkpoints" / "epoch_002" / "model.safetensors")
    final_b = load_file(tmp_path / "stopped" / "checkpoints" / "epoch_002" / "model.safetensors")
    assert final_a.keys() == final_b.keys()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert [h["train_loss"] for h in straight["history"]] == pytest.approx(
        [h["train_loss"] for h in resumed["history"]]
    )
    # and training changed the weights at all
    start = load_file(tmp_path / "straight" / "checkpoints" / "step_0000002" / "model.safetensors")
    assert not all(torch.equal(start[k], final_a[k]) for k in final_a)
    for run in ("straight", "stopped"):
        assert (tmp_path / run / "best" / "model.safetensors").is_file()
        saved = (tmp_path / run / "config.yaml").read_text()
        assert "num_processes: 1" in saved


def test_options_soft_labels_balanced_random_crops_freeze(tiny_data, tmp_path):
    summary = train(
        _config(
            tiny_data,
            tmp_path / "out",
            "--label-mode",
            "soft",
            "--class-balanced",
            "--random-crop-regions",
            "--freeze",
            "stem",
            "--optimizer",
            "sgd",
            "--schedule",
            "cosine",
            "--warmup-epochs",
            "0.5",
            "--epochs",
            "1",
            "--max-grad-norm",
            "1.0",
        )
    )
    assert len(summary["history"]) == 1 and summary["best_epoch"] == 1
    from ran.loading import from_pretrained

    best = from_pretrained(tmp_path / "out" / "best")
    assert best.num_classes == 8 and best.ran_config()["region_size"] == [32, 32]
    # the saved data config describes the faces training saw, not the registered 224 px default
    assert tuple(best.pretrained_cfg["input_size"]) == (3, 48, 48)


def test_existing_output_is_never_overwritten(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tiny_data),
        "--output-dir",
        str(out),
        *TINY,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--save-every-steps",
        "1",
    ]
    assert ran_main(args) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    assert ran_main(args) == 2
    assert "already holds a training run" in capsys.readouterr().err

    # a corrupt checkpoint on resume: clear error, nothing written
    corrupt = out / "checkpoints" / "step_0000001"
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    before[corrupt / "model.safetensors"] = b"not a safetensors file"
    assert ran_main(["train", "--resume", str(corrupt), "--no-progress"]) == 2
    assert "cannot load the checkpoint" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before

    (corrupt / "progress.json").unlink()
    assert ran_main(["train", "--resume", str(corrupt)]) == 2
    assert "not a complete training checkpoint" in capsys.readouterr().err


def test_bad_inputs(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        ran_main(["train", "--data", str(tiny_data), "--output-dir", str(tmp_path / "x"), "--bogus-flag"])
    assert info.value.code == 2
    assert ran_main(["train", "--output-dir", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err

    from datasets import DatasetDict

    from ran.data.batches import load_splits
    from ran.data.folder import write_dataset_folder

    splits = load_splits(tiny_data)
    only_test = write_dataset_folder(DatasetDict({"test": splits["test"]}), tmp_path / "only_test")
    assert ran_main(["train", "--data", str(only_test), "--output-dir", str(tmp_path / "y"), *TINY]) == 2
    assert "no 'train' split" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()

    assert (
        ran_main(
            [
                "train",
                "--data",
                str(tiny_data),
                "--output-dir",
                str(tmp_path / "z"),
                "--model",
                "ran_nonexistent",
            ]
        )
        == 2
    )
    assert "not a registered RAN name" in capsys.readouterr().err
    assert ran_main(
        [
            "train",
            "--data",
            str(tiny_data),
            "--output-dir",
            str(tmp_path / "z"),
            *TINY,
            "--mixed-precision",
            "fp16",
        ]
    ) == (0 if torch.cuda.is_available() else 2)


@pytest.mark.slow
def test_two_process_cpu_launch(tiny_data, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 on CPU: DDP over gloo, both processes train."""
    out = tmp_path / "ddp"
    launcher = Path(sys.executable).with_name("accelerate")
    command = [
        str(launcher),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "ran.train",
        "--data",
        str(tiny_data),
        "--output-dir",
        str(out),
        *TINY,
        "--epochs",
        "1",
        "--batch-size",
        "8",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["launch"]["num_processes"] == 2
    assert saved["launch"]["distributed_type"] == "MULTI_CPU"
    # each process wrote its own RNG state into the checkpoint
    checkpoint = out / "checkpoints" / "epoch_001"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    history = json.loads((out / "history.json").read_text())
    assert history[0]["val_total"] == 8  # validation gathered over both processes, no duplicates
    assert (out / "best" / "model.safetensors").is_file()
    shutil.rmtree(out)
