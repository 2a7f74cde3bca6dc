"""ran train: configuration, schedule, exact resume, pickle-free checkpoints, no device syncs, 2-process
launch, bad input."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

from ran.cli import main as ran_main
from ran.data.batches import EpochSampler
from ran.training.config import TrainConfig, resolve_config
from ran.training.config_yaml import load_yaml_config
from ran.training.loop import train

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT_FILES = sorted(
    [
        "README.md",
        "config.json",
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "progress.json",
        "scheduler.json",
    ]
)
TINY = ["--model", "ran", "--backbone", "test_resnet", "--region-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

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
    yaml_file.write_text(
        "optim: {lr: 1e-4, milestones: 0.5}\ndata: {hflip: 'no'}\nrun: {mixed_precision: no}\n"
    )
    config = load_yaml_config(yaml_file)  # YAML reads 1e-4 as text and 'no' as false: read as the flags do
    assert (config.optim.lr, config.optim.milestones, config.data.hflip) == (1e-4, [0.5], False)
    assert config.run.mixed_precision == "no"


@pytest.mark.parametrize(
    "text, message",
    [
        ("optim:\n  lrr: 0.1\n", "unknown option optim.lrr"),
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("run:\n  epochs: many\n", "run.epochs: expected an integer in [1, 100000], got 'many'"),
        ("optim:\n  optimizer: adam\n", "expected one of ['sgd', 'adamw']"),
        ("data:\n  hflip: maybe\n", "data.hflip: expected bool, got 'maybe'"),
        ("optim:\n  milestones: []\n", "optim.milestones: expected a list, each a number in (0, 1], got []"),
    ],
)
def test_config_yaml_errors_name_the_key(tmp_path, text, message):
    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text(text)
    with pytest.raises(ValueError) as info:
        load_yaml_config(yaml_file).validate()
    assert message in str(info.value)


def _lrs_per_update(config: TrainConfig, updates_per_epoch: int) -> list[float]:
    """The learning rate of every update of a run, as the training loop drives the schedule."""
    from ran.training.schedule import build_optimizer, build_scheduler, current_lr

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    optimizer = build_optimizer(config, model, 0.1)
    schedule = build_scheduler(config, optimizer, updates_per_epoch)
    lrs = []
    for epoch in range(config.run.epochs):
        schedule.start_epoch(epoch)
        for _ in range(updates_per_epoch):
            lrs.append(current_lr(optimizer))
            schedule.update_done()
        schedule.end_epoch(epoch)
    return lrs


def test_the_recipe_schedule_drops_lr_tenfold_at_30_50_80_percent_of_the_epochs():
    config = TrainConfig()
    config.run.epochs = 10  # milestones 30/50/80 % -> epochs 3, 5, 8; 2 updates per epoch
    by_epoch = [0.1] * 3 + [0.01] * 2 + [0.001] * 3 + [0.0001] * 2  # the original's epoch-based schedule
    assert _lrs_per_update(config, 2) == pytest.approx([lr for lr in by_epoch for _ in range(2)])
    config.run.epochs = 60  # the FERPlus recipe: drops at epochs 18, 30, 48
    lrs = _lrs_per_update(config, 1)
    assert [lrs[i] / 0.1 for i in (17, 18, 29, 30, 47, 48, 59)] == pytest.approx(
        [1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


def test_cosine_schedule_warms_up_then_reaches_zero_at_the_last_update():
    config = TrainConfig()
    config.run.epochs, config.optim.schedule, config.optim.warmup_epochs = 10, "cosine", 1.0
    lrs = [lr / 0.1 for lr in _lrs_per_update(config, 4)]
    assert lrs[0] == pytest.approx(0.25) and lrs[:4] == sorted(lrs[:4])  # linear warm-up over 4 updates
    assert lrs[4] == pytest.approx(1.0)  # cosine starts at the peak
    assert lrs[22] == pytest.approx(0.5)  # half-way through the 36 cosine updates
    assert lrs[39] < 0.01 and lrs == lrs[:4] + sorted(lrs[4:], reverse=True)


def test_weight_decay_is_off_for_norms_and_biases_and_sgd_is_plain_momentum():
    from ran.training.schedule import build_optimizer

    config = TrainConfig()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen parameters are not optimised at all
    optimizer = build_optimizer(config, model, 0.1)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay == {
        id(model[0].weight): 1e-4,
        id(model[2].weight): 1e-4,
        id(model[1].weight): 0.0,
        id(model[1].bias): 0.0,
        id(model[2].bias): 0.0,
    }
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.9 and not g["nesterov"] and g["lr"] == 0.1 for g in optimizer.param_groups)

    config.optim.decay_norms_and_biases = True  # the original: every trained parameter decays
    optimizer = build_optimizer(config, model, 0.1)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay == {id(p): 1e-4 for p in model.parameters() if p.requires_grad}


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
    extra = [
        "--save-every-steps",
        "2",
        "--gradient-accumulation",
        "2",
        "--drop-rate",
        "0.2",
        "--deterministic",
    ]
    straight = train(_config(tiny_data, tmp_path / "straight", *extra))
    assert straight["global_step"] == 2 * 3  # 5 batches of 8 per epoch, 2 per update -> 3 updates
    stopped = train(_config(tiny_data, tmp_path / "stopped", *extra, "--stop-after-steps", "4"))
    assert stopped["stopped"] and stopped["global_step"] == 4
    checkpoint = tmp_path / "stopped" / "checkpoints" / "step_0000004"
    progress = json.loads((checkpoint / "progress.json").read_text())
    assert progress["epoch"] == 1 and 0 < progress["batches_done"] < 5  # really mid-epoch
    resumed = train(resolve_config(["--resume", str(checkpoint), "--no-progress"]))
    assert not resumed["stopped"] and resumed["global_step"] == straight["global_step"]

    assert sorted(p.name for p in checkpoint.iterdir()) == CHECKPOINT_FILES  # JSON + safetensors only
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
        assert "num_processes: 1" in saved and "deterministic: true" in saved
    # a checkpoint IS a model folder: the one loader reads it, with the plain weight names
    from ran.modelio.loading import load_model

    loaded = load_model(tmp_path / "stopped" / "checkpoints" / "epoch_002").state_dict()
    assert loaded.keys() == final_b.keys() and all(torch.equal(loaded[k], final_b[k]) for k in final_b)
    assert torch.are_deterministic_algorithms_enabled() is False  # --deterministic did not leak out


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
    from ran.modelio.loading import from_pretrained

    best = from_pretrained(tmp_path / "out" / "best")
    assert best.num_classes == 8 and best.ran_config()["region_size"] == [32, 32]
    # the saved data config describes the faces training saw, not the registered 224 px default
    assert tuple(best.pretrained_cfg["input_size"]) == (3, 48, 48)


def test_existing_output_is_never_overwritten(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = _one_epoch(tiny_data, out, "--save-every-steps", "1")
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


def _one_epoch(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--output-dir",
        str(out),
        *TINY,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        *extra,
    ]


def test_overwrite_deletes_only_what_runs_wrote(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert ran_main(_one_epoch(tiny_data, out)) == 0
    old_events = sorted(p.name for p in (out / "logs").rglob("events.out.tfevents.*"))
    mine = {
        out / "logs" / "notes.txt": "mine",
        out / "checkpoints" / "keep.txt": "mine",
        out / "todo.md": "x",
    }
    for path, text in mine.items():
        path.write_text(text)
    assert ran_main(_one_epoch(tiny_data, out, "--overwrite")) == 0
    assert "--overwrite kept 2 file(s) that no run wrote: checkpoints/keep.txt, logs/notes.txt" in (
        capsys.readouterr().out
    )
    assert all(path.read_text() == text for path, text in mine.items())
    new_events = sorted(p.name for p in (out / "logs").rglob("events.out.tfevents.*"))
    assert new_events and not set(old_events) & set(new_events)  # the old run's logs went
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_001", "keep.txt"]

    user = tmp_path / "project"  # the user's own config.yaml and logs/ are no run's outputs
    (user / "logs").mkdir(parents=True)
    (user / "config.yaml").write_text("lr: 0.1\n")
    (user / "logs" / "events.out.tfevents.1.host").write_text("my experiment")
    assert ran_main(_one_epoch(tiny_data, user, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert f"{user}: not a folder written by ran train (no .ran-run.json marker; holds 2 items" in err
    assert (user / "config.yaml").read_text() == "lr: 0.1\n"
    assert sorted(str(p.relative_to(user)) for p in user.rglob("*")) == [
        "config.yaml",
        "logs",
        "logs/events.out.tfevents.1.host",
    ]


def test_one_run_per_output_folder(tiny_data, tmp_path, capsys, lock_held_by_another_process):
    out = tmp_path / "run"
    first = lock_held_by_another_process(out, "ran train", inside=True)
    assert ran_main(_one_epoch(tiny_data, out)) == 2
    err = capsys.readouterr().err
    assert f"{out} is being written by pid {first.pid} (ran train, started 12:03:01); wait for it" in err
    assert [p.name for p in out.iterdir()] == [".ran.lock"]  # nothing of the second run
    first.kill()
    first.wait()  # the first run died without cleaning up: its lock is taken over
    assert ran_main(_one_epoch(tiny_data, out)) == 0
    assert not (out / ".ran.lock").exists() and (out / ".ran-run.json").is_file()


def test_bad_inputs(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        ran_main(["train", "--data", str(tiny_data), "--output-dir", str(tmp_path / "x"), "--bogus-flag"])
    assert info.value.code == 2
    assert ran_main(["train", "--output-dir", str(tmp_path / "x")]) == 2
    assert "--data" in capsys.readouterr().err

    from datasets import DatasetDict

    from ran.data.batches import load_splits
    from ran.data.format.writer import write_dataset_folder

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


def test_flags_keep_their_spelling_and_the_precision_vocabulary():
    config = resolve_config(
        [
            *["--data", "d", "--output-dir", "o", "--lr", "0.3", "--rb-margin", "0.02", "--no-hflip"],
            *["--no-box-jitter", "--no-channels-last", "--no-progress", "--class-balanced"],
            *["--milestones", "0.3", "0.5", "--mixed-precision", "no", "--scale-lr", "--deterministic"],
            *["--compile", "--device", "cpu", "--num-workers", "2", "--keep-checkpoints", "3"],
        ]
    )
    assert config.optim.lr == 0.3 and config.loss.rb_margin == 0.02 and config.optim.milestones == [0.3, 0.5]
    assert not (
        config.data.hflip or config.data.box_jitter or config.run.channels_last or config.run.progress
    )
    assert config.data.class_balanced and config.optim.scale_lr and config.run.deterministic
    assert config.run.compile and config.run.device == "cpu" and config.data.num_workers == 2
    assert config.run.mixed_precision == "fp32" and config.run.keep_checkpoints == 3  # 'no' is fp32
    base = ["--data", "d", "--output-dir", "o"]
    assert resolve_config([*base, "--mixed-precision", "bfloat16"]).run.mixed_precision == "bf16"
    assert resolve_config(base).run.mixed_precision is None  # chosen for the device at start-up
    with pytest.raises(SystemExit):
        resolve_config([*base, "--mixed-precision", "fp8"])


def test_config_layers_saved_run_then_yaml_then_flags(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    saved = TrainConfig()
    saved.data.data, saved.run.output_dir, saved.run.epochs = "d", str(run), 7
    saved.optim.lr, saved.loss.rb_weight, saved.run.stop_after_steps = 0.5, 0.25, 3
    (run / "config.yaml").write_text(yaml.safe_dump(saved.to_dict()) + "launch: {num_processes: 1}\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optim: {lr: 0.2}\nrun: {mixed_precision: no}\n")
    config = resolve_config(["--resume", str(run / "checkpoints" / "step_0000003"), "--config", str(recipe)])
    assert config.run.epochs == 7 and config.loss.rb_weight == 0.25  # from the run's saved config
    assert config.optim.lr == 0.2 and config.run.mixed_precision == "fp32"  # YAML over the saved config
    assert config.run.stop_after_steps is None  # a resumed run does not stop at the old point again
    flagged = resolve_config(
        ["--resume", str(run / "checkpoints" / "x"), "--config", str(recipe), "--lr", "0.1", "--epochs", "9"]
    )
    assert flagged.optim.lr == 0.1 and flagged.run.epochs == 9  # flags over both


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--momentum", "0"], "optim.momentum (--momentum): 0.0, but the checkpoint's run has 0.9"),
        (
            ["--regions", "whole"],
            "model.regions (--regions): 'whole', but the checkpoint's run has 'ferplus6'",
        ),
        (["--batch-size", "16"], "data.batch_size (--batch-size): 16, but the checkpoint's run has 64"),
        (["--decay-norms-and-biases"], "optim.decay_norms_and_biases (--decay-norms-and-biases): True"),
    ],
)
def test_a_resumed_run_keeps_its_model_optimizer_and_batch_size(tmp_path, flags, named):
    """--momentum 0 at --resume was ignored (the checkpoint's optimizer came back) while config.yaml
    recorded 0; --regions whole trained the ferplus6 weights as a one-region model; --batch-size dropped
    the rest of the epoch in progress. Each is refused, naming the flag."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    saved = TrainConfig()
    saved.data.data, saved.run.output_dir = "d", str(run)
    (run / "config.yaml").write_text(yaml.safe_dump(saved.to_dict()))
    with pytest.raises(ValueError, match=re.escape(named)):
        resolve_config(["--resume", str(run / "checkpoints" / "step_0000003"), *flags])
    config = resolve_config(["--resume", str(run / "checkpoints" / "step_0000003"), "--lr", "0.5"])
    assert config.optim.lr == 0.5  # what may change: the learning rate, epochs, ...


def test_lr_rule_for_several_processes():
    from ran.training.schedule import lr_rule, peak_lr, total_batch

    config = TrainConfig()
    config.data.batch_size, config.optim.lr, config.optim.gradient_accumulation = 64, 0.1, 2
    assert total_batch(config, 4) == 512 and peak_lr(config, 4) == 0.1  # not scaled unless asked
    assert "not scaled" in lr_rule(config, 4)
    config.optim.scale_lr = True
    assert peak_lr(config, 4) == pytest.approx(0.1 * 512 / 128)
    assert "0.4 = 0.1 x 512/128" in lr_rule(config, 4)


def test_loader_decodes_a_batch_in_one_read(tiny_data):
    from torch.utils.data import DataLoader

    from ran.data.batches import FaceImages, collate_faces, load_splits
    from ran.transforms import FaceTransform

    split = load_splits(tiny_data)["train"]
    faces = FaceImages(split, FaceTransform(grayscale=True), soft_labels=True)
    indices = [5, 0, 17, 5]
    batched = faces.__getitems__(indices)
    for index, item in zip(indices, batched, strict=True):
        row = split[index]  # independent: the row as datasets gives it
        expected = torch.from_numpy(np.array(row["image"].convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(item["image"], expected) and item["label"] == row["label"]
        assert torch.equal(item["soft_label"], torch.tensor(row["soft_label"], dtype=torch.float32))
    reads = []
    original = faces.__getitems__
    faces.__getitems__ = lambda idx: reads.append(len(idx)) or original(idx)
    batches = list(DataLoader(faces, batch_size=16, collate_fn=collate_faces))
    assert reads == [16, 16, 8] and sum(b["images"].shape[0] for b in batches) == 40


def test_training_step_never_waits_for_the_device(tiny_data, tmp_path, monkeypatch):
    """Outside logging intervals a step reads nothing back from the device (no .item() / float() /
    int() / .tolist() anywhere, no bool() / .cpu() / .numpy() in the training code); validation reads its
    counts once. Counted by patching torch.Tensor, which CPU and GPU tensors share."""
    import ran.training.loop as loop

    reads: list[tuple[str, str, str]] = []
    phase = [""]

    def counting(name: str, training_code_only: bool):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1).f_code
            ours = f"{os.sep}ran{os.sep}training{os.sep}" in caller.co_filename
            # the DataLoader draws its worker seed on a CPU tensor on every machine: not a device read
            loader = f"torch{os.sep}utils{os.sep}data{os.sep}" in caller.co_filename
            if phase[0] and not loader and (ours or not training_code_only):
                reads.append((phase[0], name, caller.co_name))
            return original(self, *args, **kwargs)

        return wrapper

    for name in ("item", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, training_code_only=False))
    for name in ("__bool__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name, training_code_only=True))

    def watched(fn, label):
        def wrapper(*args, **kwargs):
            phase[0] = label
            try:
                return fn(*args, **kwargs)
            finally:
                phase[0] = ""

        return wrapper

    phase[0] = "check"
    float(torch.ones(()))  # the counter sees a read
    phase[0] = ""
    assert reads == [("check", "__float__", "test_training_step_never_waits_for_the_device")]
    reads.clear()
    for name, label in (("training_step", "step"), ("after_update", "update"), ("validate", "validate")):
        monkeypatch.setattr(loop, name, watched(getattr(loop, name), label))
    # 40 images in batches of 8: 5 steps, logged at updates 2 and 4 only
    train(_config(tiny_data, tmp_path / "out", "--epochs", "1", "--log-every-steps", "2", "--no-hflip"))
    assert [r for r in reads if r[0] == "step"] == []
    assert [r for r in reads if r[0] == "update"] == [("update", "__float__", "after_update")] * 2
    assert [r for r in reads if r[0] == "validate"] == [("validate", "tolist", "validate")]


def test_schedule_waits_for_skipped_optimizer_steps(tiny_data, tmp_path, monkeypatch):
    """fp16's gradient scaler may skip an update; the learning rate then stays where it was."""
    from accelerate import Accelerator

    args = ["--epochs", "1", "--schedule", "cosine", "--warmup-epochs", "1", "--batch-size", "16"]
    stepped = train(_config(tiny_data, tmp_path / "stepped", *args))
    monkeypatch.setattr(Accelerator, "optimizer_step_was_skipped", property(lambda self: True))
    skipped = train(_config(tiny_data, tmp_path / "skipped", *args))
    base = TrainConfig().optim.lr
    # 3 updates of a 3-update warm-up: lr after them is 3/3 x lr when stepping, 1/3 x lr when all skipped
    assert stepped["history"][0]["lr"] == pytest.approx(base)
    assert skipped["history"][0]["lr"] == pytest.approx(base / 3)


def test_startup_line_and_gpu_expectations(tiny_data, tmp_path, monkeypatch, capsys):
    from ran import devices

    out = tmp_path / "run"
    assert ran_main(_one_epoch(tiny_data, out, "--scale-lr", "--mixed-precision", "bf16")) == 0
    printed = capsys.readouterr().out
    assert "ran train: device cpu, precision bf16, 1 process; lr 0.00125 = 0.01 x 16/128" in printed
    import yaml

    launch = yaml.safe_load((out / "config.yaml").read_text())["launch"]
    assert launch["lr"] == pytest.approx(0.01 * 16 / 128) and launch["mixed_precision"] == "bf16"
    assert launch["num_workers"] == 0  # CPU default

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    warning = devices.gpu_fallback_warning()
    assert warning and "CUDA_VISIBLE_DEVICES=0" in warning and "CUDA is not usable" in warning
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.gpu_fallback_warning() is None  # GPUs hidden on purpose: nothing to say
    with pytest.raises(ValueError, match="CUDA is not usable here"):
        devices.resolve_device("cuda")
    args = [
        "train",
        "--data",
        str(tiny_data),
        "--output-dir",
        str(tmp_path / "gpu"),
        *TINY,
        "--device",
        "cuda",
    ]
    assert ran_main(args) == 2
    assert "--device cuda: CUDA is not usable here" in capsys.readouterr().err
    assert not (tmp_path / "gpu").exists()


def test_refuses_old_pickled_checkpoints_without_reading_them(tmp_path, capsys):
    old = tmp_path / "run" / "checkpoints" / "step_0000010"
    old.mkdir(parents=True)
    for name in (
        "ran_model.json",
        "model.safetensors",
        "optimizer.bin",
        "scheduler.bin",
        "random_states_0.pkl",
    ):
        (old / name).write_bytes(b"\x80\x04not read")
    assert ran_main(["train", "--resume", str(old), "--data", "d", "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "a training checkpoint from ran 0.1" in err and "never loads pickles" in err
    assert len(err.strip().splitlines()) == 1 and "weights_only" not in err
    assert not (tmp_path / "o").exists()


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def real_checkpoint(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("payload") / "run"
    args = ["--epochs", "1", "--batch-size", "16", "--save-every-steps", "1", "--stop-after-steps", "1"]
    train(_config(tiny_data, out, *args))
    return out / "checkpoints" / "step_0000001"


def test_a_resumed_run_continues_in_its_own_folder_and_reads_no_file_its_config_names(
    real_checkpoint, tmp_path
):
    """A run's config.yaml is data from that folder: a copied run (or one whose config was edited to
    name another folder and a backbone file) resumes into the folder its checkpoint is in, and reads no
    backbone file (the checkpoint holds the backbone)."""
    import yaml

    copy = Path(shutil.copytree(real_checkpoint.parent.parent, tmp_path / "copy"))
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    assert (
        Path(saved["run"]["output_dir"]) == real_checkpoint.parent.parent
    )  # where the run was first written
    saved["run"]["output_dir"] = str(tmp_path / "someone-elses-folder")
    saved["model"]["backbone_file"] = str(tmp_path / "not-a-backbone.pth")
    (copy / "config.yaml").write_text(yaml.safe_dump(saved))
    config = resolve_config(["--resume", str(copy / "checkpoints" / real_checkpoint.name), "--no-progress"])
    assert config.run.output_dir == str(copy) and config.model.backbone_file is None
    given = resolve_config(
        ["--resume", str(copy / "checkpoints" / real_checkpoint.name), "--output-dir", "x"]
    )
    assert given.run.output_dir == "x"  # a flag given still decides


# what accelerate's load_state would unpickle, planted beside a real checkpoint
ATTACKER_FILES = ("custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl")


@pytest.mark.parametrize("planted", [*CHECKPOINT_FILES[1:], *ATTACKER_FILES])
def test_planted_payloads_never_run(planted, real_checkpoint, tiny_data, tmp_path, capsys):
    """A pickle payload in any file of a real checkpoint folder, in turn: resume, evaluate and predict
    never run it; each refuses the folder with one line, no traceback."""
    run = tmp_path / "run"
    folder = run / "checkpoints" / real_checkpoint.name
    shutil.copytree(real_checkpoint, folder)
    shutil.copy(real_checkpoint.parent.parent / "config.yaml", run / "config.yaml")
    marker = tmp_path / "payload-ran"
    if planted.endswith(".bin"):
        torch.save({"state": _Payload(marker)}, folder / planted)  # what torch.load would read
    else:
        (folder / planted).write_bytes(pickle.dumps(_Payload(marker)))
    from ran.data.batches import load_splits

    face = tmp_path / "face.png"
    load_splits(tiny_data)["test"][0]["image"].save(face)
    commands = {
        "train": ["train", "--resume", str(folder), "--output-dir", str(run), "--no-progress"],
        "evaluate": [
            "evaluate",
            "--model",
            str(folder),
            "--data",
            str(tiny_data),
            "--output-dir",
            str(tmp_path / "eval"),
            "--subsets",
            "test",
            "--no-progress",
        ],
        "predict": ["predict", "--model", str(folder), "--no-detect", "--no-progress", str(face)],
    }
    for name, argv in commands.items():
        code = ran_main(argv)
        err = capsys.readouterr().err
        assert not marker.exists(), f"{name}: the payload in {planted} ran"
        assert "Traceback" not in err
        assert code != 0, f"{name} accepted a checkpoint with a payload in {planted}"
        assert planted in err or "pickle" in err or "ran 0.1" in err, err
        assert len(err.strip().splitlines()) == 1 and "weights_only" not in err, err


def test_resume_refuses_optimizer_state_larger_than_the_model_unread(real_checkpoint, tmp_path, monkeypatch):
    """optimizer.safetensors declaring an extra 8 GB tensor (a sparse file): refused from its header."""
    import safetensors.torch

    from ran.modelio.checkpoints import read_checkpoint

    read_whole = safetensors.torch.load_file

    def small_only(path, *args, **kwargs):
        assert Path(path).stat().st_size < 100_000_000, "a huge safetensors file was read"
        return read_whole(path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load_file", small_only)
    folder = Path(shutil.copytree(real_checkpoint, tmp_path / real_checkpoint.name))
    state = folder / "optimizer.safetensors"
    data = state.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header, end, extra = json.loads(data[8 : 8 + length]), len(data) - 8 - length, 8 << 30
    header["0.extra"] = {"dtype": "F32", "shape": [extra // 4], "data_offsets": [end, end + extra]}
    text = json.dumps(header).encode()
    state.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])
    os.truncate(state, state.stat().st_size + extra)
    with pytest.raises(ValueError, match=r"optimizer\.safetensors: declares \d+ values for a model of \d+"):
        read_checkpoint(folder)


@pytest.mark.parametrize("key, value", [("momentum", float("nan")), ("weight_decay", float("inf"))])
def test_resume_refuses_optimizer_hyperparameters_that_are_not_finite(real_checkpoint, tmp_path, key, value):
    """A NaN momentum or an infinite weight decay in optimizer.json ended the resumed run as 'diverged,
    try a lower --lr': the cause was the file."""
    from ran.modelio.checkpoints import read_checkpoint

    folder = Path(shutil.copytree(real_checkpoint, tmp_path / real_checkpoint.name))
    meta = json.loads((folder / "optimizer.json").read_text())
    meta["param_groups"][0][key] = value
    (folder / "optimizer.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"optimizer\.json: corrupt \(a hyper-parameter of 'param_gro"):
        read_checkpoint(folder)


def test_a_resumed_run_never_writes_into_another_folder_that_holds_something(
    real_checkpoint, tmp_path, capsys
):
    """`--resume CKPT --output-dir FOLDER` replaced the config.yaml and history.json of any folder (and
    marked it as a run's, so a later --overwrite would take it for one)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my notes")
    argv = ["train", "--resume", str(real_checkpoint), "--output-dir", str(mine), "--no-progress"]
    assert ran_main(argv) == 2
    assert "not empty; --resume continues in the checkpoint's run folder" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml"]
    assert (mine / "config.yaml").read_text() == "my notes"


def test_pruning_keeps_the_newest_written_and_deletes_only_the_runs_own_checkpoints(
    real_checkpoint, tmp_path
):
    """--keep-checkpoints deleted a folder of the user's named like a checkpoint, followed a checkpoints/
    link out of the run, and (by update count) deleted the checkpoint a run resumed from an earlier one
    had just written, keeping the abandoned branch's."""
    from ran.modelio.checkpoints import latest_checkpoint, prune_checkpoints

    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    for name, step, written in (("epoch_001", 4, 100), ("epoch_003", 12, 200), ("epoch_002", 8, 300)):
        folder = Path(shutil.copytree(real_checkpoint, root / name))  # epoch_002: the resumed branch's
        progress = json.loads((folder / "progress.json").read_text())
        (folder / "progress.json").write_text(json.dumps({**progress, "global_step": step}))
        os.utime(folder / "progress.json", (written, written))
    (root / "epoch_099").mkdir()
    (root / "epoch_099" / "notes.txt").write_text("mine")
    assert latest_checkpoint(root) == root / "epoch_002"
    assert prune_checkpoints(root, 1) == [root / "epoch_001", root / "epoch_003"]
    assert sorted(p.name for p in root.iterdir()) == ["epoch_002", "epoch_099"]
    link = tmp_path / "other" / "checkpoints"
    link.parent.mkdir()
    link.symlink_to(root)
    shutil.copytree(root / "epoch_002", root / "epoch_004")
    assert prune_checkpoints(link, 1) == [] and sorted(p.name for p in root.iterdir())[-1] == "epoch_099"
    assert (root / "epoch_002").is_dir() and (root / "epoch_004").is_dir()  # nothing pruned through the link


def test_overwrite_with_a_user_file_in_best_is_refused_before_anything_is_deleted(
    real_checkpoint, tiny_data, tmp_path, capsys
):
    """--overwrite deleted the old run, trained an epoch, then failed on best/ holding a user's file."""
    run = Path(shutil.copytree(real_checkpoint.parent.parent, tmp_path / "run"))
    (run / "best").mkdir(exist_ok=True)
    (run / "best" / "mine.txt").write_text("mine")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    argv = ["train", "--data", str(tiny_data), "--backbone", "test_resnet", "--output-dir", str(run)]
    assert ran_main([*argv, "--overwrite", "--epochs", "1", "--no-progress"]) == 2
    assert "best: holds 1 item such as mine.txt, not only a model a run saved" in capsys.readouterr().err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_resume_refuses_a_checkpoint_past_the_runs_epochs(real_checkpoint, tmp_path, capsys):
    """progress.json saying epoch 999999 of a one-epoch run: nothing ran, and the run said its best model
    was in a best/ folder that did not exist."""
    folder = Path(shutil.copytree(real_checkpoint.parent.parent, tmp_path / "run"))
    checkpoint = folder / "checkpoints" / real_checkpoint.name
    progress = json.loads((checkpoint / "progress.json").read_text())
    progress["epoch"] = 999_999
    (checkpoint / "progress.json").write_text(json.dumps(progress))
    argv = ["train", "--resume", str(checkpoint), "--no-progress"]
    assert ran_main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "the checkpoint is in epoch 1000000, past this run's 1 epochs" in line, line


@pytest.mark.slow
def test_compile_keeps_plain_weight_names(tiny_data, tmp_path, monkeypatch):
    """--compile wraps the model in torch.compile; checkpoints and best/ keep the plain module's names.
    (Dynamo's 'eager' backend here: the same wrapping as inductor's, without minutes of code generation.)"""
    compiled = []
    original = torch.nn.Module.compile

    def eager_compile(self, *args, **kwargs):
        compiled.append(type(self).__name__)
        return original(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    out = tmp_path / "out"
    train(_config(tiny_data, out, "--epochs", "1", "--batch-size", "16", "--compile"))
    assert compiled == ["RegionAttentionNet"]  # the model itself: no adapter around it
    plain = timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=8).state_dict()
    for folder in (out / "checkpoints" / "epoch_001", out / "best"):
        assert load_file(folder / "model.safetensors").keys() == plain.keys()


@pytest.fixture(scope="module")
def sharded_data(tmp_path_factory) -> Path:
    """400 training faces in 4 Parquet shards of 100 (one row group each)."""
    from ran.data.format.writer import write_dataset_folder
    from ran.data.synthetic.generator import build_synthetic

    out = tmp_path_factory.mktemp("data") / "sharded"
    splits = build_synthetic(seed=1, train_size=400, test_size=16, progress=False)
    return write_dataset_folder(splits, out, max_shard_bytes=150_000)


@pytest.mark.slow
def test_two_process_cpu_launch(sharded_data, tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 on CPU: DDP over gloo, both processes train, each on
    its own shard files of the train split (--shard-data)."""
    from ran.data.format.folder import split_files

    shards = [path.name for path in split_files(sharded_data, "train")]
    assert len(shards) == 4
    out = tmp_path / "ddp"
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ran.train"]
    command += ["--data", str(sharded_data), "--output-dir", str(out), *TINY, "--epochs", "1"]
    command += ["--batch-size", "50", "--shard-data"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["launch"]["num_processes"] == 2
    assert saved["launch"]["distributed_type"] == "MULTI_CPU"
    mine = saved["launch"]["train_shards"]  # the files each process read: disjoint, all of them
    assert len(mine) == 2 and not set(mine[0]) & set(mine[1]) and sorted(mine[0] + mine[1]) == shards
    # one pickle-free checkpoint for both processes: a model folder plus the resume state, with the
    # epoch's images counted over both processes
    checkpoint = out / "checkpoints" / "epoch_001"
    assert sorted(p.name for p in checkpoint.iterdir()) == CHECKPOINT_FILES
    progress = json.loads((checkpoint / "progress.json").read_text())
    assert progress["num_processes"] == 2 and progress["global_step"] == 4  # 200 rows each / 50 per step
    history = json.loads((out / "history.json").read_text())
    assert history[0]["images_per_second"] > 0 and 0.0 <= history[0]["train_accuracy"] <= 1.0
    assert history[0]["val_total"] == 8  # validation gathered over both processes, no duplicates
    assert (out / "best" / "model.safetensors").is_file()
    assert not (out / ".ran.lock").exists()  # the main process held the folder's lock, and let it go
    shutil.rmtree(out)


# --- numbers, YAML, divergence, Ctrl-C (issue 18) ------------------------------------------------------
def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_bad_numbers_are_refused_before_anything_is_written(tiny_data, tmp_path, capsys):
    fresh = tmp_path / "fresh"
    with pytest.raises(SystemExit) as info:
        ran_main(["train", "--data", str(tiny_data), "--output-dir", str(fresh), *TINY, "--lr", "inf"])
    assert info.value.code == 2 and not fresh.exists()
    assert capsys.readouterr().err.splitlines()[-1] == (
        "ran train: error: argument --lr: expected a finite number > 0, got 'inf' (see ran train --help)"
    )
    # from a YAML file: one line naming the file and the key
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optim:\n  lr: .inf\nloss:\n  label_smoothing: 5\n")
    assert (
        ran_main(["train", "--data", str(tiny_data), "--output-dir", str(fresh), "--config", str(recipe)])
        == 2
    )
    assert (
        capsys.readouterr().err
        == f"ran train: error: {recipe}: optim.lr: expected a finite number > 0, got inf\n"
    )
    # a config built in code
    config = _config(tiny_data, fresh)
    config.loss.label_smoothing = 5.0
    with pytest.raises(
        ValueError, match=r"loss.label_smoothing \(--label-smoothing\): expected a number in \[0, 1\]"
    ):
        train(config)
    assert not fresh.exists()
    # resuming an existing run with a bad number leaves it exactly as it was
    run = tmp_path / "run"
    train(_config(tiny_data, run, "--epochs", "1", "--batch-size", "16"))
    before = _files(run)
    with pytest.raises(SystemExit):
        ran_main(
            ["train", "--resume", str(run / "checkpoints" / "epoch_001"), "--epochs", "2", "--gamma", "nan"]
        )
    assert _files(run) == before


def test_a_diverging_run_stops_in_one_line_and_saves_no_nan_model(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_data), "--output-dir", str(out), *TINY, "--epochs", "2"]
    assert ran_main([*argv, "--batch-size", "8", "--lr", "1e30", "--log-every-steps", "1"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert (
        last.startswith("ran train: error: training diverged at update ")
        and "nothing of it was saved" in last
    )
    assert not (out / "best").exists() and not any((out / "checkpoints").glob("*"))
    # and the next run is told there is no checkpoint to resume, only --overwrite
    assert ran_main([*argv, "--batch-size", "8"]) == 2
    assert "it saved no checkpoint; pass --overwrite" in capsys.readouterr().err


def test_ctrl_c_names_the_resume_command_that_continues_the_run(tiny_data, tmp_path, monkeypatch, capsys):
    import ran.training.loop as loop

    real_step = loop.training_step

    def step_then_interrupt(run, batch, seed):
        if run.progress.epoch == stop_in_epoch:
            raise KeyboardInterrupt
        return real_step(run, batch, seed)

    monkeypatch.setattr(loop, "training_step", step_then_interrupt)
    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_data), "--output-dir", str(out), *TINY, "--epochs", "2"]
    stop_in_epoch = 0  # before the first checkpoint
    assert ran_main([*argv, "--batch-size", "16"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        "ran train: interrupted; no checkpoint was saved yet; "
        f"start again with --overwrite (output folder {out})"
    )
    stop_in_epoch = 1  # after epoch 1's checkpoint
    assert ran_main([*argv, "--batch-size", "16", "--overwrite"]) == 130
    last = capsys.readouterr().err.splitlines()[-1]
    assert (
        last
        == f"ran train: interrupted; continue with: ran train --resume {out / 'checkpoints' / 'epoch_001'}"
    )
    stop_in_epoch = None
    command = last.split("continue with: ")[1].split()
    assert command[:2] == ["ran", "train"] and ran_main([*command[1:], "--no-progress"]) == 0
    assert json.loads((out / "history.json").read_text())[-1]["epoch"] == 2


BOMB = "".join(
    f"  - &{name} [{', '.join([prev] * 9)}]\n"
    for name, prev in zip("abcdef", ['"lol"', "*a", "*b", "*c", "*d", "*e"])
)  # 6 levels of nine: 9**6 = 531,441 strings from about 250 bytes


def test_yaml_alias_bombs_are_refused_in_a_config_and_in_a_saved_run(tiny_data, tmp_path, capsys):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("optim:\n  milestones:\n" + BOMB)
    assert (
        ran_main(
            ["train", "--data", str(tiny_data), "--output-dir", str(tmp_path / "x"), "--config", str(recipe)]
        )
        == 2
    )
    err = capsys.readouterr().err
    expected = f"{recipe}: not valid YAML at line 4, column 9: aliases (*name) are not accepted"
    assert err == f"ran train: error: {expected}\n"
    # the same bomb in the config.yaml of a run that --resume starts from
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch_001"
    checkpoint.mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("optim:\n  lr:\n" + BOMB)
    assert ran_main(["train", "--resume", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert len(err.replace(str(tmp_path), "")) < 300 and err.count("\n") == 1
    assert "aliases (*name) are not accepted" in err


def test_a_config_that_is_a_folder_is_named_as_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--config .*: a folder; expected a YAML file"):
        load_yaml_config(tmp_path)


def test_a_key_given_twice_in_a_config_is_refused(tmp_path):
    """`run: {seed: 7, epochs: 4}` then `run: {epochs: 2}`: the seed 7 was lost without a word."""
    recipe = tmp_path / "twice.yaml"
    recipe.write_text("run: {seed: 7, epochs: 4}\nrun: {epochs: 2}\n")
    with pytest.raises(
        ValueError, match=r"twice.yaml: not valid YAML at line 2, column 1: the key 'run' appears twice"
    ):
        load_yaml_config(recipe)


@pytest.mark.parametrize(
    "key, value",
    [
        ("best_accuracy", float("nan")),
        ("best_accuracy", 1.5),
        ("epoch", -5),
        ("global_step", -1),
        ("num_processes", 0),
        ("epoch_sums", [0.0, float("inf"), 0.0, 0.0]),
    ],
)
def test_a_progress_record_with_impossible_values_is_corrupt(key, value):
    """Values of the right type that no run writes (a NaN best accuracy, a negative epoch) are a corrupt
    file, not a run that trains 'epoch 0/2' or reports 'best nan'."""
    from ran.modelio.checkpoints import Progress

    good = Progress(epoch=2, global_step=10, best_accuracy=0.5, best_epoch=1).to_json()
    assert Progress.from_json(good, "progress.json").best_accuracy == 0.5
    with pytest.raises(ValueError, match=rf"progress.json: corrupt \('{key}'"):
        Progress.from_json({**good, key: value}, "progress.json")


def test_data_loader_workers_take_sigterm_as_ctrl_c():
    """timeout / batch systems signal every process: workers killed by SIGTERM made the main process print
    a traceback while shutting them down; torch's worker loop ends quietly on an interruption."""
    import signal

    from ran.training.data import loader_options, stop_quietly

    options = loader_options(TrainConfig().data.__class__(num_workers=2), torch.device("cpu"), 1)
    assert options["worker_init_fn"] is stop_quietly
    from ran.threads import available_cpus
    from ran.training.data import WORKERS_PER_CPU

    too_many = WORKERS_PER_CPU * available_cpus() + 1
    with pytest.raises(ValueError, match=rf"data.num_workers \(--num-workers\): {too_many} worker processes"):
        loader_options(TrainConfig().data.__class__(num_workers=too_many), torch.device("cpu"), 1)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        stop_quietly(0)
        for number in previous:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), number)
                time.sleep(5)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@pytest.mark.parametrize(
    "key, value", [("global_step", 10**30), ("epoch_seen", 10**30), ("best_epoch", -3), ("best_epoch", True)]
)
def test_progress_records_hold_counts_in_range(real_checkpoint, key, value):
    """global_step 10^30 was a traceback in tensorboard; best_epoch -3 was printed as the best epoch."""
    from ran.modelio.checkpoints import Progress

    data = json.loads((real_checkpoint / "progress.json").read_text())
    assert Progress.from_json(data, "progress.json")  # the real one reads
    with pytest.raises(ValueError, match=rf"progress.json: corrupt \('{key}'"):
        Progress.from_json({**data, key: value}, "progress.json")
