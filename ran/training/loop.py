"""Training a RAN on a ``ran data`` folder under accelerate (1 CPU, 2 CPU processes, many GPUs).

The loader moves the small source images (48x48 for FERPlus) and the model cuts its regions on the device,
with per-image jittered boxes, so no region files exist anywhere. Every random choice of a training step
(augmentation, dropout, data order) derives from (seed, epoch, batch, process), which is why a run stopped
and resumed from any checkpoint ends with the same weights as one that never stopped.

The command is ``ran train`` (``ran.cli.train``); under a launcher, ``accelerate launch -m ran.train ...`` or
``torchrun --nproc_per_node 2 -m ran.train ...``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from ran.data.batches import EpochSampler, FaceImages, collate_faces, load_splits
from ran.training.config import RUN_CONFIG_FILE, TrainConfig
from ran.transforms import FaceTransform, record_transform, transform_for_images

CHECKPOINTS = "checkpoints"
PROGRESS_FILE = "progress.json"
MODEL_CONFIG_FILE = "ran_model.json"
HISTORY_FILE = "history.json"
BEST_DIR = "best"
TRACKER_PROJECT = "logs"


# --- data order ------------------------------------------------------------------------------
def step_seed(seed: int, epoch: int, batch: int, process: int) -> int:
    """The seed of one training step's augmentation and dropout."""
    return (seed * 1_000_000_007 + epoch * 1_000_003 + batch * 1_009 + process) % (2**63 - 1)


# --- model ---------------------------------------------------------------------------------------
class AttentionForward(nn.Module):
    """Makes ``forward_with_attention`` the ``forward`` so DDP and accelerate's autocast see the call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        out = self.model.forward_with_attention(images, boxes)
        return out.logits, out.alpha, out.beta, out.region_features


def build_model(config: TrainConfig, class_names: list[str]) -> nn.Module:
    """A RAN for ``class_names`` from a registered name (with overrides) or a save_pretrained folder."""
    import timm

    import ran  # noqa: F401  (registers the RAN family in timm)

    spec = config.model
    num_classes = len(class_names)
    registered = timm.list_models("ran*")
    if spec.model not in registered and Path(spec.model).is_dir():
        from ran.loading import load_model

        model = load_model(spec.model)
        if model.num_classes != num_classes:
            print(f"model {spec.model}: new {num_classes}-class classifier (it had {model.num_classes})")
            model.reset_classifier(num_classes)
    else:
        if spec.model not in registered:
            raise ValueError(
                f"--model {spec.model!r}: not a registered RAN name nor a folder; "
                f"expected one of {registered} or a save_pretrained folder"
            )
        kwargs: dict[str, Any] = {
            "num_classes": num_classes,
            "regions": spec.regions,
            "attention": spec.attention,
            "drop_rate": spec.drop_rate,
        }
        if spec.backbone:
            kwargs["backbone"] = spec.backbone
        if spec.region_size:
            kwargs["region_size"] = spec.region_size
        if spec.backbone_file:
            if not Path(spec.backbone_file).is_file():
                raise FileNotFoundError(f"--backbone-file {spec.backbone_file}: no such file")
            kwargs["backbone_file"] = spec.backbone_file
        model = timm.create_model(spec.model, **kwargs)
    if spec.freeze:
        up_to: str | int = int(spec.freeze) if spec.freeze.isdigit() else spec.freeze
        frozen = model.freeze_backbone(up_to)
        print(f"frozen backbone modules: {', '.join(frozen)}")
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        "label_names": list(class_names),
        "num_classes": num_classes,
    }
    return model


def model_description(model: nn.Module, class_names: list[str], model_name: str) -> dict[str, Any]:
    """What rebuilds the network of a checkpoint (``ran evaluate`` reads it)."""
    import timm

    return {
        "model": model_name if model_name in timm.list_models("ran*") else "ran",
        "num_classes": len(class_names),
        "label_names": list(class_names),
        "model_args": model.ran_config(),
    }


# --- schedule ------------------------------------------------------------------------------------
def lr_factor(config: TrainConfig, update: int, updates_per_epoch: int) -> float:
    """Learning-rate multiplier after ``update`` optimizer updates."""
    optim, epochs = config.optim, config.run.epochs
    total = epochs * updates_per_epoch
    if optim.schedule == "multistep":
        # Drops at epoch boundaries, as the original's epoch-based schedule.
        milestones = [round(m * epochs) * updates_per_epoch for m in optim.milestones]
        return optim.gamma ** sum(update >= m for m in milestones if m > 0)
    warmup = int(round(optim.warmup_epochs * updates_per_epoch))
    if update < warmup:
        return (update + 1) / warmup
    progress = (update - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optim.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.optim.lr, momentum=config.optim.momentum, weight_decay=config.optim.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)


# --- checkpoints ---------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_checkpoint(path: Path) -> dict[str, Any]:
    """The progress record of a checkpoint folder, after checking it is complete."""
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint folder")
    needed = [PROGRESS_FILE, "model.safetensors", "optimizer.bin"]
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise ValueError(
            f"--resume {path}: not a complete training checkpoint (missing {', '.join(missing)}); "
            f"expected a folder under OUT/{CHECKPOINTS}/"
        )
    try:
        progress = json.loads((path / PROGRESS_FILE).read_text(encoding="utf-8"))
        int(progress["epoch"]), int(progress["batches_done"]), int(progress["global_step"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--resume {path}/{PROGRESS_FILE}: corrupt ({err})") from None
    return progress


def _save_checkpoint(accelerator: Any, out: Path, name: str, progress: dict, extra: dict, keep: int) -> Path:
    """accelerate ``save_state`` into a staging folder, then renamed into place (never half-written)."""
    root = out / CHECKPOINTS
    final, staging = root / name, root / f".{name}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(staging / PROGRESS_FILE, progress)
        _write_json(staging / MODEL_CONFIG_FILE, extra)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        if keep:
            saved = sorted(
                (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                key=lambda p: (
                    json.loads((p / PROGRESS_FILE).read_text())["global_step"]
                    if (p / PROGRESS_FILE).is_file()
                    else -1
                ),
            )
            for old in saved[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _prepare_output(out: Path, config: TrainConfig) -> None:
    """Refuse to mix a new run into an existing one unless --overwrite (which clears the old outputs)."""
    ours = [out / n for n in (RUN_CONFIG_FILE, HISTORY_FILE, CHECKPOINTS, BEST_DIR, TRACKER_PROJECT)]
    existing = [p for p in ours if p.exists()]
    if existing and not config.run.resume and not config.run.overwrite:
        raise FileExistsError(
            f"{out} already holds a training run ({existing[0].name}); pass --resume "
            f"{out}/{CHECKPOINTS}/<name> to continue it or --overwrite to start over"
        )


def _clear_output(out: Path) -> None:
    for name in (RUN_CONFIG_FILE, HISTORY_FILE, CHECKPOINTS, BEST_DIR, TRACKER_PROJECT):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# --- training ------------------------------------------------------------------------------------
def _validate(
    accelerator: Any, model: nn.Module, loader: DataLoader, transform: FaceTransform, progress: bool
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in tqdm(loader, desc="validation", leave=False, disable=not progress):
            logits = model(transform.normalize(batch["images"]))[0]
            preds, labels = accelerator.gather_for_metrics((logits.argmax(dim=1), batch["labels"]))
            correct += int((preds == labels).sum())
            total += int(labels.numel())
    return {"accuracy": correct / max(total, 1), "correct": correct, "total": total}


def _augment(
    images: torch.Tensor, base_boxes: torch.Tensor, config: TrainConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Horizontal flips and per-image boxes (jittered preset or random crops), drawn from ``generator``."""
    from ran.regions import jitter_boxes, random_crop_boxes

    batch_size = images.shape[0]
    if config.data.hflip:
        flip = (torch.rand(batch_size, generator=generator) < 0.5).to(images.device)
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    boxes = None
    if config.data.random_crop_regions:
        boxes = random_crop_boxes(batch_size, base_boxes.shape[0], generator=generator)
    elif config.data.box_jitter:
        boxes = jitter_boxes(base_boxes.cpu(), batch_size, generator=generator)
    return images, None if boxes is None else boxes.to(images.device)


def _forget_previous_run() -> None:
    """Let one process call ``train`` again with other settings (the demo, tests, notebooks).

    accelerate keeps its state in process-wide singletons and refuses a second Accelerator with another
    mixed precision; in a single process nothing else shares them, so they are cleared (accelerate's
    own tests do the same). Distributed processes run ``train`` once and keep theirs.
    """
    from accelerate.state import AcceleratorState, GradientState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
        GradientState._reset_state()


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or continue) one training run; returns its summary (best accuracy, history, paths)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from ran.data.sampling import class_balanced_weights
    from ran.hub import save_pretrained
    from ran.losses import RANCriterion
    from ran.models import RANOutput

    config.validate()
    out = Path(config.run.output_dir).expanduser().absolute()
    resume = Path(config.run.resume).expanduser().absolute() if config.run.resume else None
    resumed_progress = check_checkpoint(resume) if resume else None
    _prepare_output(out, config)
    has_gpu = torch.cuda.is_available()
    if config.run.mixed_precision == "fp16" and not has_gpu:
        raise ValueError("--mixed-precision fp16 needs a GPU; use bf16 on CPU")

    _forget_previous_run()
    accelerator = Accelerator(
        cpu=not has_gpu,  # without it, CPU processes started by torchrun / accelerate launch train alone
        mixed_precision=config.run.mixed_precision,
        gradient_accumulation_steps=config.optim.gradient_accumulation,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out)),
        rng_types=[],  # the data order comes from EpochSampler, not from shared generators
    )
    main_process, show = accelerator.is_main_process, accelerator.is_main_process and config.run.progress
    set_seed(config.run.seed)

    with accelerator.main_process_first():
        splits = load_splits(config.data.data)
    if "train" not in splits:
        raise ValueError(f"--data {config.data.data}: no 'train' split; it has {sorted(splits)}")
    val_name = (
        config.data.val_split if config.data.val_split in splits else "test" if "test" in splits else None
    )
    if val_name != config.data.val_split and main_process:
        print(f"note: no {config.data.val_split!r} split; selecting the best model on {val_name!r}")
    if val_name is None:
        raise ValueError(f"--data {config.data.data}: no validation or test split to select the best model")
    class_names = list(splits["train"].features["label"].names)
    val_classes = splits[val_name].features["label"].names
    if list(val_classes) != class_names:
        raise ValueError(f"--data: {val_name} classes {val_classes} differ from train classes {class_names}")

    model = build_model(config, class_names)
    if config.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    description = model_description(model, class_names, config.model.model)
    soft = config.loss.label_mode == "soft"
    # Record the faces training sees (48 px gray for FERPlus), so every loader and ran predict / export
    # feed them the same way (ran.transforms.transform_for reads it back).
    transform = transform_for_images(splits["train"], model, config.data.image_size)
    record_transform(model, transform)
    train_set = FaceImages(splits["train"], transform, soft_labels=soft)
    weights = (
        class_balanced_weights(splits["train"], len(class_names)) if config.data.class_balanced else None
    )
    sampler = EpochSampler(len(train_set), config.run.seed, weights)
    loader_args = {"num_workers": config.data.num_workers, "collate_fn": collate_faces}
    train_loader = DataLoader(train_set, batch_size=config.data.batch_size, sampler=sampler, **loader_args)
    val_loader = DataLoader(
        FaceImages(splits[val_name], transform),
        batch_size=config.data.eval_batch_size or 2 * config.data.batch_size,
        shuffle=False,
        **loader_args,
    )
    optimizer = build_optimizer(config, model)
    wrapped, optimizer, train_loader, val_loader = accelerator.prepare(
        AttentionForward(model), optimizer, train_loader, val_loader
    )
    batches_per_epoch = len(train_loader)
    updates_per_epoch = math.ceil(batches_per_epoch / config.optim.gradient_accumulation)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer.optimizer, lambda update: lr_factor(config, update, updates_per_epoch)
    )
    accelerator.register_for_checkpointing(scheduler)
    criterion = RANCriterion(config.loss.rb_margin, config.loss.rb_weight, config.loss.label_smoothing)

    state: dict[str, Any] = {
        "epoch": 0,
        "batches_done": 0,
        "global_step": 0,
        "best_accuracy": -1.0,
        "best_epoch": None,
        "history": [],
        "epoch_stats": [0.0, 0.0, 0.0, 0],  # loss sum, ce sum, rb sum, correct
        "epoch_seen": 0,
        "num_processes": accelerator.num_processes,
    }
    if resume is not None:
        try:
            accelerator.load_state(str(resume))
        except Exception as err:  # safetensors / pickle / shape errors all mean the same to the user
            raise ValueError(
                f"--resume {resume}: cannot load the checkpoint ({type(err).__name__}: {err})"
            ) from None
        state.update(resumed_progress)
        if resumed_progress.get("num_processes") != accelerator.num_processes and main_process:
            print(
                f"warning: checkpoint made with {resumed_progress.get('num_processes')} processes, resuming "
                f"with {accelerator.num_processes}: the data order per process differs from the original run"
            )
        if state["batches_done"] >= batches_per_epoch:
            state.update(
                epoch=state["epoch"] + 1, batches_done=0, epoch_stats=[0.0, 0.0, 0.0, 0], epoch_seen=0
            )

    launch = {
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type.value),
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
    }
    if main_process:
        if config.run.overwrite and not resume:
            _clear_output(out)
        out.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump({**config.to_dict(), "launch": launch}, sort_keys=False)
        print("resolved config:\n" + text, flush=True)
        tmp = out / f".{RUN_CONFIG_FILE}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / RUN_CONFIG_FILE)
    accelerator.wait_for_everyone()
    accelerator.init_trackers(TRACKER_PROJECT, config=config.flat())

    base_boxes = model.region_boxes.detach().cpu()
    stop_at = config.run.stop_after_steps
    stopped = False
    rank = accelerator.process_index

    def checkpoint(name: str) -> None:
        record = {key: state[key] for key in state}
        _save_checkpoint(accelerator, out, name, record, description, config.run.keep_checkpoints)

    start_epoch = state["epoch"]
    for epoch in range(start_epoch, config.run.epochs):
        state["epoch"] = epoch
        sampler.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        skip = state["batches_done"] if epoch == start_epoch else 0
        loader = train_loader
        if skip:
            from accelerate import skip_first_batches

            loader = skip_first_batches(train_loader, skip)
            loader.set_epoch(epoch)
        wrapped.train()
        started = time.perf_counter()
        bar = tqdm(
            total=batches_per_epoch,
            initial=skip,
            desc=f"epoch {epoch + 1}/{config.run.epochs}",
            disable=not show,
        )
        for batch_index, batch in enumerate(loader, start=skip):
            seed = step_seed(config.run.seed, epoch, batch_index, rank)
            generator = torch.Generator().manual_seed(seed)
            torch.manual_seed(seed)  # dropout and anything else drawing from the global generator
            images = transform.normalize(batch["images"])
            images, boxes = _augment(images, base_boxes, config, generator)
            target = batch["soft_labels"] if soft else batch["labels"]
            with accelerator.accumulate(wrapped):
                output = RANOutput(*wrapped(images, boxes))
                losses = criterion(output, target)
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and config.optim.max_grad_norm:
                    accelerator.clip_grad_norm_(wrapped.parameters(), config.optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            stats = state["epoch_stats"]
            count = int(images.shape[0])
            for i, key in enumerate(("loss", "ce", "rb")):
                stats[i] += float(losses[key].detach()) * count
            stats[3] += int((output.logits.argmax(dim=1) == batch["labels"]).sum())
            state["epoch_seen"] += count
            state["batches_done"] = batch_index + 1
            bar.update(1)
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state["global_step"] += 1
            step = state["global_step"]
            bar.set_postfix(
                loss=f"{float(losses['loss'].detach()):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2g}"
            )
            if config.run.log_every_steps and step % config.run.log_every_steps == 0:
                accelerator.log(
                    {
                        "train/step_loss": float(losses["loss"].detach()),
                        "train/lr": scheduler.get_last_lr()[0],
                    },
                    step=step,
                )
            at_epoch_end = state["batches_done"] >= batches_per_epoch
            stop_now = stop_at is not None and step >= stop_at
            every = config.run.save_every_steps
            if not at_epoch_end and (stop_now or (every and step % every == 0)):
                checkpoint(f"step_{step:07d}")
            if stop_now and not at_epoch_end:
                stopped = True
                break
        bar.close()
        if stopped:
            break

        # Epoch end: totals over processes, validation, best model, checkpoint.
        totals = torch.tensor(
            [*state["epoch_stats"], state["epoch_seen"]], dtype=torch.float64, device=accelerator.device
        )
        totals = accelerator.reduce(totals, reduction="sum").tolist()
        seen = max(totals[4], 1.0)
        elapsed = time.perf_counter() - started
        val = _validate(accelerator, wrapped, val_loader, transform, show)
        record = {
            "epoch": epoch + 1,
            "step": state["global_step"],
            "lr": scheduler.get_last_lr()[0],
            "train_loss": totals[0] / seen,
            "train_ce": totals[1] / seen,
            "train_rb": totals[2] / seen,
            "train_accuracy": totals[3] / seen,
            f"{val_name}_accuracy": val["accuracy"],
            "val_accuracy": val["accuracy"],
            "val_correct": val["correct"],
            "val_total": val["total"],
            "seconds": elapsed,
            "images_per_second": totals[4] / elapsed if skip == 0 else None,
        }
        state["history"].append(record)
        accelerator.log(
            {f"epoch/{k}": v for k, v in record.items() if isinstance(v, float) and k != "epoch"},
            step=state["global_step"],
        )
        improved = val["accuracy"] > state["best_accuracy"]
        if improved:
            state["best_accuracy"], state["best_epoch"] = val["accuracy"], epoch + 1
            if main_process:
                save_pretrained(
                    accelerator.unwrap_model(wrapped).model,
                    out / BEST_DIR,
                    results={val_name: val},
                    label_names=class_names,
                )
        if main_process:
            speed = f", {record['images_per_second']:.1f} img/s" if record["images_per_second"] else ""
            print(
                f"epoch {epoch + 1}/{config.run.epochs}: loss {record['train_loss']:.4f} "
                f"(ce {record['train_ce']:.4f} rb {record['train_rb']:.4f}) "
                f"train acc {record['train_accuracy']:.4f} | {val_name} "
                f"{val['accuracy']:.4f} ({val['correct']}/{val['total']}){' *best*' if improved else ''} | "
                f"lr {record['lr']:.3g} | {elapsed:.1f} s{speed}",
                flush=True,
            )
            _write_json(out / HISTORY_FILE, state["history"])
        state.update(epoch_stats=[0.0, 0.0, 0.0, 0], epoch_seen=0)
        checkpoint(f"epoch_{epoch + 1:03d}")
        state["batches_done"] = 0
        if stop_at is not None and state["global_step"] >= stop_at and epoch + 1 < config.run.epochs:
            stopped = True
            break

    accelerator.end_training()
    summary = {
        "output_dir": str(out),
        "best_accuracy": state["best_accuracy"],
        "best_epoch": state["best_epoch"],
        "val_split": val_name,
        "global_step": state["global_step"],
        "history": state["history"],
        "num_processes": accelerator.num_processes,
        "stopped": stopped,
    }
    if main_process:
        if stopped:
            print(
                f"stopped after {state['global_step']} updates; "
                f"continue with --resume {out}/{CHECKPOINTS}/<latest>"
            )
        else:
            print(
                f"best {val_name} accuracy {state['best_accuracy']:.4f} at epoch {state['best_epoch']}; "
                f"model in {out / BEST_DIR}"
            )
    return summary
