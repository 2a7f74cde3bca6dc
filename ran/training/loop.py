"""Training a RAN on a ``ran data`` folder under accelerate (1 CPU, 2 CPU processes, one or many GPUs).

Read top to bottom, as accelerate's ``complete_cv_example.py``: :func:`train` sets up (``setup.py``),
then for each epoch :func:`train_one_epoch`, :func:`validate` and :func:`end_of_epoch` (history, best
model, checkpoint), then :func:`finish`.

The loader moves the small source images (48x48 for FERPlus) and the model cuts its regions on the device,
with per-image jittered boxes, so no region files exist anywhere. Every random choice of a training step
(augmentation, dropout, data order) derives from (seed, epoch, batch, process), which is why a run stopped
and resumed from any checkpoint ends with the same weights as one that never stopped. Between logging
intervals a step never waits for the device: losses and counts are summed on it and read at epoch ends.

A loss or weights that stop being finite end the run with one line before anything of them is saved: a
diverged model never becomes ``best/`` or a checkpoint. Ctrl-C ends it with the ``--resume`` command of
the newest checkpoint.

The command is ``ran train`` (``ran.cli.train``); under a launcher, ``accelerate launch -m ran.train ...``
or ``torchrun --nproc_per_node 2 -m ran.train ...``.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from ran.errors import UserError
from ran.files import faults_named
from ran.modelio.checkpoints import CHECKPOINTS, latest_checkpoint, prune_checkpoints, write_checkpoint
from ran.training.config import RUN_CONFIG_FILE, TrainConfig
from ran.training.data import augment, step_seed
from ran.training.outputs import BEST_DIR, HISTORY_FILE, TRACKER_PROJECT, start_output
from ran.training.schedule import current_lr
from ran.training.setup import Training, determinism, set_up


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or continue) one training run; returns its summary (best accuracy, history, paths)."""
    from ran.devices import resolve_device
    from ran.threads import use_threads

    config = config.copy().validate()
    use_threads(config.run.threads)
    device = resolve_device(config.run.device, "--device")
    with determinism(config.run.deterministic, device), ExitStack() as held:  # held: the folder's lock
        run = set_up(config, held)
        with faults_named(run.out):  # tensorboard and accelerate write there too, naming no file
            begin(run)
            try:
                stopped = run_epochs(run)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(resume_hint(run.out)) from None
            return finish(run, stopped)


def run_epochs(run: Training) -> bool:
    """The epochs still to run; True when the run stopped early (--stop-after-steps)."""
    config = run.config
    for epoch in range(run.progress.epoch, config.run.epochs):
        started, skipped = time.perf_counter(), run.progress.batches_done
        if train_one_epoch(run, epoch):
            return True
        run.scheduler.end_epoch(epoch)
        end_of_epoch(run, epoch, validate(run), time.perf_counter() - started, skipped)
        stop_at = config.run.stop_after_steps
        if stop_at is not None and run.progress.global_step >= stop_at and epoch + 1 < config.run.epochs:
            return True
    return False


def resume_hint(out: Path) -> str:
    """How to continue a run that stopped: the ``--resume`` command of its newest checkpoint."""
    latest = latest_checkpoint(out / CHECKPOINTS)
    if latest is None:
        return f"no checkpoint was saved yet; start again with --overwrite (output folder {out})"
    return f"continue with: ran train --resume {shlex.quote(str(latest))}"


def begin(run: Training) -> None:
    """Say what runs where, write the resolved config, start the tensorboard log."""
    from ran.devices import gpu_fallback_warning
    from ran.training.setup import startup_line

    accelerator = run.accelerator
    warning = gpu_fallback_warning() if accelerator.device.type == "cpu" else None
    if warning:
        run.say(warning)
    run.say(startup_line(accelerator, run.launch["mixed_precision"], run.config))
    if run.main_process:
        run.out.mkdir(parents=True, exist_ok=True)
        start_output(run.out, run.config, run.launch)
        print(f"resolved config: {run.out / RUN_CONFIG_FILE}", flush=True)  # the file, not a 65-line dump
    accelerator.wait_for_everyone()
    accelerator.init_trackers(TRACKER_PROJECT, config=run.config.flat())


# --- one epoch -----------------------------------------------------------------------------------
def _epoch_batches(run: Training, epoch: int) -> tuple[Any, int]:
    """The epoch's batches (the first ones skipped when resuming mid-epoch) and how many were skipped."""
    run.sampler.set_epoch(epoch)
    run.train_loader.set_epoch(epoch)
    skip = run.progress.batches_done
    if not skip:
        return run.train_loader, 0
    from accelerate import skip_first_batches

    loader = skip_first_batches(run.train_loader, skip)
    loader.set_epoch(epoch)
    return loader, skip


def train_one_epoch(run: Training, epoch: int) -> bool:
    """Train on one epoch's batches; True when the run stops here (--stop-after-steps) mid-epoch."""
    from tqdm.auto import tqdm

    progress, config = run.progress, run.config
    progress.epoch = epoch
    loader, skip = _epoch_batches(run, epoch)
    run.scheduler.start_epoch(epoch)
    run.wrapped.train()
    total = len(run.train_loader)
    desc = f"epoch {epoch + 1}/{config.run.epochs}"
    with tqdm(total=total, initial=skip, desc=desc, disable=not run.show_progress) as bar:
        for batch_index, batch in enumerate(loader, start=skip):
            losses = training_step(run, batch, step_seed(config.run.seed, epoch, batch_index, run.rank))
            progress.epoch_seen += batch["images"].shape[0]
            progress.batches_done = batch_index + 1
            bar.update(1)
            if not run.accelerator.sync_gradients:
                continue
            if not run.accelerator.optimizer_step_was_skipped:  # fp16: the scaler may skip a step
                run.scheduler.update_done()
            progress.global_step += 1
            if after_update(run, losses, bar, at_epoch_end=progress.batches_done >= total):
                return True
    return False


def training_step(run: Training, batch: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Forward, loss, backward and (every ``gradient_accumulation`` batches) an optimizer update.

    Nothing here reads a value back from the device: the epoch sums grow on it.
    """
    accelerator = run.accelerator
    torch.manual_seed(seed)  # dropout and anything else drawing from the global generator
    generator = torch.Generator(device=run.sums.device).manual_seed(seed)
    images = run.transform.normalize(perturbed_faces(run, batch))
    images, boxes = augment(images, run.base_boxes, run.config.data, generator)
    target = batch["soft_labels"] if run.config.loss.label_mode == "soft" else batch["labels"]
    with accelerator.accumulate(run.wrapped):
        output = run.wrapped(images, boxes, with_attention=True)
        losses = run.criterion(output, target)
        accelerator.backward(losses["loss"])
        if accelerator.sync_gradients and run.config.optim.max_grad_norm:
            accelerator.clip_grad_norm_(run.wrapped.parameters(), run.config.optim.max_grad_norm)
        run.optimizer.step()
        run.optimizer.zero_grad()
    count = images.shape[0]
    detached = torch.stack([losses[key].detach().float() for key in ("loss", "ce", "rb")])
    run.sums[:3] += detached.to(run.sums.dtype) * count
    run.sums[3] += (output.logits.detach().argmax(dim=1) == batch["labels"]).sum().to(run.sums.dtype)
    return losses


def perturbed_faces(run: Training, batch: dict[str, Any]) -> torch.Tensor:
    """The batch's uint8 faces, with ``--augment``'s perturbations drawn from (seed, epoch, row id):
    the same face meets the same perturbation in a resumed run, whatever its batch or process."""
    data = run.config.data
    if not data.augment:
        return batch["images"]
    from ran.robustness.augment import augment_kinds, epoch_seed, random_perturb

    ids = batch["ids"]
    if run.splits.train_files:  # --shard-data: rows are numbered within each process's shard
        ids = [run.rank << 40 | i for i in ids]
    seed = epoch_seed(run.config.run.seed, run.progress.epoch)
    return random_perturb(
        batch["images"], augment_kinds(data.augment), seed, ids=ids, probability=data.augment_probability
    )


def after_update(run: Training, losses: dict[str, torch.Tensor], bar: Any, at_epoch_end: bool) -> bool:
    """Logging and step checkpoints after an optimizer update; True when the run stops now."""
    config, step = run.config.run, run.progress.global_step
    if config.log_every_steps and step % config.log_every_steps == 0:
        loss, lr = float(losses["loss"].detach()), current_lr(run.optimizer)  # the interval's one read
        if not math.isfinite(loss):
            _diverged(run, f"the training loss is {loss}")
        run.accelerator.log({"train/step_loss": loss, "train/lr": lr}, step=step)
        if run.show_progress:
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2g}")
    stop_now = config.stop_after_steps is not None and step >= config.stop_after_steps
    every = config.save_every_steps
    if not at_epoch_end and (stop_now or (every and step % every == 0)):
        save_checkpoint(run, f"step_{step:07d}")
    return stop_now and not at_epoch_end


# --- validation, epoch end -----------------------------------------------------------------------
def validate(run: Training) -> dict[str, Any]:
    """Accuracy on the validation split, gathered over processes; counts stay on the device until the end.
    Each batch is one ``ran.inference.infer`` step, as evaluation and prediction run it, in the run's
    precision."""
    from tqdm.auto import tqdm

    from ran.inference import infer

    counts = torch.zeros(2, dtype=torch.long, device=run.sums.device)  # correct, total
    precision = run.launch["mixed_precision"]
    for batch in tqdm(run.val_loader, desc="validation", leave=False, disable=not run.show_progress):
        logits = infer(run.model, batch["images"], transform=run.transform, precision=precision).logits
        preds, labels = run.accelerator.gather_for_metrics((logits.argmax(dim=1), batch["labels"]))
        counts[0] += (preds == labels).sum()
        counts[1] += labels.numel()
    correct, total = counts.tolist()
    return {"accuracy": correct / max(total, 1), "correct": correct, "total": total}


def _epoch_totals(run: Training) -> list[float]:
    """(loss, ce, rb, correct, images) summed over the epoch and all processes (reads the device); stops
    the run when the loss or the weights are no longer finite (this is read before anything is saved)."""
    seen = run.sums.new_tensor([run.progress.epoch_seen])
    totals = run.accelerator.reduce(torch.cat([run.sums, seen]), reduction="sum").tolist()
    if not math.isfinite(totals[0]):
        _diverged(run, f"the training loss is {totals[0]}")
    if not bool(torch.stack([torch.isfinite(p).all() for p in run.model.parameters()]).all()):
        _diverged(run, "the weights are no longer finite")
    return totals


def _diverged(run: Training, what: str) -> None:
    """End a run whose numbers overflowed, before its model is saved anywhere."""
    progress = run.progress
    raise UserError(
        f"training diverged at update {progress.global_step} (epoch {progress.epoch + 1}): {what}; "
        f"nothing of it was saved as a checkpoint or best model. Try a lower --lr or --max-grad-norm"
    )


def end_of_epoch(run: Training, epoch: int, val: dict[str, Any], seconds: float, skipped: int) -> None:
    """History, tensorboard, the best model so far to OUT/best, the epoch's checkpoint."""
    from ran.modelio.hub import save_pretrained

    progress, name = run.progress, run.splits.val_name
    totals = _epoch_totals(run)
    seen = max(totals[4], 1.0)
    record = {
        "epoch": epoch + 1,
        "step": progress.global_step,
        "lr": current_lr(run.optimizer),
        "train_loss": totals[0] / seen,
        "train_ce": totals[1] / seen,
        "train_rb": totals[2] / seen,
        "train_accuracy": totals[3] / seen,
        f"{name}_accuracy": val["accuracy"],
        "val_accuracy": val["accuracy"],
        "val_correct": val["correct"],
        "val_total": val["total"],
        "seconds": seconds,
        "images_per_second": totals[4] / seconds if skipped == 0 else None,
    }
    progress.history.append(record)
    numbers = {f"epoch/{k}": v for k, v in record.items() if isinstance(v, float) and k != "epoch"}
    run.accelerator.log(numbers, step=progress.global_step)
    improved = val["accuracy"] > progress.best_accuracy
    if improved:
        progress.best_accuracy, progress.best_epoch = val["accuracy"], epoch + 1
        if run.main_process:
            save_pretrained(
                run.model, run.out / BEST_DIR, results={name: val}, label_names=run.splits.class_names
            )
    run.say(_epoch_line(run, record, val, improved))
    if run.main_process:
        from ran.files import write_json

        write_json(run.out / HISTORY_FILE, progress.history)
    run.sums.zero_()
    progress.epoch_seen = 0
    save_checkpoint(run, f"epoch_{epoch + 1:03d}")
    progress.batches_done = 0


def _epoch_line(run: Training, record: dict[str, Any], val: dict[str, Any], improved: bool) -> str:
    speed = f", {record['images_per_second']:.1f} img/s" if record["images_per_second"] else ""
    return (
        f"epoch {record['epoch']}/{run.config.run.epochs}: loss {record['train_loss']:.4f} "
        f"(ce {record['train_ce']:.4f} rb {record['train_rb']:.4f}) "
        f"train acc {record['train_accuracy']:.4f} | {run.splits.val_name} "
        f"{val['accuracy']:.4f} ({val['correct']}/{val['total']}){' *best*' if improved else ''} | "
        f"lr {record['lr']:.3g} | {record['seconds']:.1f} s{speed}"
    )


def save_checkpoint(run: Training, name: str) -> None:
    """OUT/checkpoints/<name>: the model folder plus the resume state, with the epoch sums of all
    processes (a collective: every process calls it; the main process writes)."""
    accelerator = run.accelerator
    totals = _epoch_totals(run)
    progress = dataclasses.replace(
        run.progress, epoch_sums=totals[:4], epoch_seen=int(totals[4]), history=list(run.progress.history)
    )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        root = run.out / CHECKPOINTS
        scaler = accelerator.scaler
        write_checkpoint(
            root / name,
            run.model,
            run.splits.class_names,
            run.optimizer.optimizer,
            run.scheduler,
            scaler,
            progress,
        )
        prune_checkpoints(root, run.config.run.keep_checkpoints)
    accelerator.wait_for_everyone()


def finish(run: Training, stopped: bool) -> dict[str, Any]:
    """Close the logs, say where the results are; the run's summary."""
    run.accelerator.end_training()
    progress, out, val_name = run.progress, run.out, run.splits.val_name
    if stopped:
        run.say(f"stopped after {progress.global_step} updates; {resume_hint(out)}")
    else:
        run.say(
            f"best {val_name} accuracy {progress.best_accuracy:.4f} at epoch {progress.best_epoch}; "
            f"model in {out / BEST_DIR}"
        )
    return {
        "output_dir": str(out),
        "best_accuracy": progress.best_accuracy,
        "best_epoch": progress.best_epoch,
        "val_split": val_name,
        "global_step": progress.global_step,
        "history": progress.history,
        "num_processes": run.accelerator.num_processes,
        "stopped": stopped,
    }


__all__ = [
    "after_update",
    "end_of_epoch",
    "finish",
    "resume_hint",
    "run_epochs",
    "train",
    "train_one_epoch",
    "training_step",
    "validate",
]
