"""How the weights move: the optimizer, the learning-rate rule for several processes, the schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from ran.training.config import REFERENCE_BATCH, TrainConfig


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


def total_batch(config: TrainConfig, num_processes: int) -> int:
    """Images per optimizer update: ``batch_size`` is per process and per accumulated batch."""
    return config.data.batch_size * num_processes * config.optim.gradient_accumulation


def peak_lr(config: TrainConfig, num_processes: int) -> float:
    """``lr``, or with ``--scale-lr`` the linear scaling rule: lr x total batch / the recipe's 128."""
    if not config.optim.scale_lr:
        return config.optim.lr
    return config.optim.lr * total_batch(config, num_processes) / REFERENCE_BATCH


def lr_rule(config: TrainConfig, num_processes: int) -> str:
    """The learning-rate rule in words, for the start-up line and the saved config."""
    batch = total_batch(config, num_processes)
    parts = f"{config.data.batch_size} per process x {num_processes} x {config.optim.gradient_accumulation}"
    if config.optim.scale_lr:
        return (
            f"lr {peak_lr(config, num_processes):.4g} = {config.optim.lr:g} x {batch}/{REFERENCE_BATCH} "
            f"(--scale-lr; total batch {batch} = {parts})"
        )
    return f"lr {config.optim.lr:g} for a total batch of {batch} = {parts} (not scaled; see --scale-lr)"


def build_optimizer(config: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD (the original's) or AdamW over the trainable parameters, at the peak learning rate ``lr``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optim.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.optim.momentum, weight_decay=config.optim.weight_decay
        )
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.optim.weight_decay)


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, updates_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-update schedule of :func:`lr_factor`; its state is plain numbers (saved as JSON)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda update: lr_factor(config, update, updates_per_epoch)
    )


__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "lr_rule", "peak_lr", "total_batch"]
