"""How the weights move: the optimizer, the learning-rate rule for several processes, the schedule.

The optimizer and the schedule come from timm's factories (``create_optimizer_v2``,
``create_scheduler_v2``), which also keep weight decay off norms and biases. The recipe's numbers stay the
original's: SGD with momentum 0.9 (not Nesterov), lr x ``gamma`` at the milestones, at epoch boundaries.
timm's schedulers are stateless: :class:`Schedule` tells them the epoch and the count of updates made (an
update fp16's gradient scaler skipped does not count: the learning rate waits for it), and that count is
all a checkpoint keeps of the schedule.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ran.errors import UserError
from ran.numbers import brief
from ran.training.config import REFERENCE_BATCH, TrainConfig


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


def build_optimizer(config: TrainConfig, model: nn.Module, lr: float) -> Any:
    """SGD (the original's) or AdamW over the trainable parameters at the peak learning rate ``lr``, by
    timm's factory: weight decay on weights only, never on norms and biases, unless
    ``decay_norms_and_biases`` (the original decays every parameter)."""
    from timm.optim import create_optimizer_v2

    optim = config.optim
    # timm's "sgd" is Nesterov's; the original RAN used plain momentum SGD
    name, extra = (
        ("momentum", {"momentum": optim.momentum}) if optim.optimizer == "sgd" else (optim.optimizer, {})
    )
    return create_optimizer_v2(
        model,
        opt=name,
        lr=lr,
        weight_decay=optim.weight_decay,
        filter_bias_and_bn=not optim.decay_norms_and_biases,
        **extra,
    )


class Schedule:
    """timm's ``scheduler`` driven by the loop: where the run is, in epochs and in updates made."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.updates = 0

    def start_epoch(self, epoch: int) -> None:
        """Set the learning rate for ``epoch`` (0-based) and the updates made so far (a resumed run too)."""
        self.scheduler.step(epoch)
        self.scheduler.step_update(self.updates)

    def update_done(self) -> None:
        """One optimizer update was made: the learning rate of the next one."""
        self.updates += 1
        self.scheduler.step_update(self.updates)

    def end_epoch(self, epoch: int) -> None:
        """``epoch`` is over: the learning rate of the next one (what the history records)."""
        self.scheduler.step(epoch + 1)

    def state_dict(self) -> dict[str, int]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The count from a checkpoint (``last_epoch``: a checkpoint of ran before timm's schedulers)."""
        updates = state.get("updates", state.get("last_epoch"))
        if type(updates) is not int or updates < 0:
            raise UserError(f"scheduler state: expected a count of updates >= 0, got {brief(updates)}")
        self.updates = updates


def build_scheduler(config: TrainConfig, optimizer: Any, updates_per_epoch: int) -> Schedule:
    """timm's scheduler for the recipe. multistep: stepped per epoch, lr x ``gamma`` from the first epoch at
    or past each milestone (a fraction of the epochs, rounded). cosine: stepped per update, a linear
    warm-up of ``warmup_epochs`` then a cosine down to 0 at the last update."""
    from timm.scheduler import create_scheduler_v2

    optim, epochs = config.optim, config.run.epochs
    if optim.schedule == "multistep":
        milestones = sorted(m for m in (round(f * epochs) for f in optim.milestones) if m > 0)
        # timm applies milestone m from epoch index m - 1 (its train loop steps with the next epoch);
        # this loop steps with the epoch about to run, hence m + 1: the drop lands on epoch m.
        scheduler, _ = create_scheduler_v2(
            optimizer,
            "multistep",
            num_epochs=epochs,
            decay_milestones=[m + 1 for m in milestones],
            decay_rate=optim.gamma,
            warmup_epochs=0,
        )
        return Schedule(scheduler)
    warmup = int(round(optim.warmup_epochs * updates_per_epoch))
    total = epochs * updates_per_epoch
    # counted in updates (updates_per_epoch=1 to timm): warm-up and cosine end exactly on an update
    scheduler, _ = create_scheduler_v2(
        optimizer,
        "cosine",
        num_epochs=max(1, total - warmup),
        warmup_epochs=warmup,
        warmup_lr=optimizer.param_groups[0]["lr"] / max(1, warmup),
        warmup_prefix=True,
        min_lr=0.0,
        step_on_epochs=False,
        updates_per_epoch=1,
    )
    return Schedule(scheduler)


def current_lr(optimizer: Any) -> float:
    """The learning rate of the next update (of the weights' group; every group has the same)."""
    return float(optimizer.param_groups[0]["lr"])


__all__ = [
    "Schedule",
    "build_optimizer",
    "build_scheduler",
    "current_lr",
    "lr_rule",
    "peak_lr",
    "total_batch",
]
