"""Set-up of a training run: device, precision, determinism, model, data, optimizer, resume state.

Everything that can refuse the run (bad options, a missing split, a checkpoint that does not fit) runs
before the output folder is touched, so a refused run leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ran.data.batches import EpochSampler
from ran.errors import UserError
from ran.modelio.checkpoints import Progress, ResumeState
from ran.training.config import TrainConfig
from ran.training.data import Splits
from ran.transforms import FaceTransform


@dataclass
class Training:
    """One run's moving parts, as ``train_one_epoch`` / ``validate`` / ``end_of_epoch`` use them.

    ``model`` is the plain RAN (checkpoints and best/ are written from it, so DDP's ``module.`` never
    reaches a weight name); ``wrapped`` is what the steps call: the model as accelerate prepared it (DDP
    across processes), whose ``forward(images, boxes, with_attention=True)`` gives the ``RANOutput`` the
    loss reads, with no adapter.
    """

    config: TrainConfig
    accelerator: Any
    model: nn.Module
    wrapped: nn.Module
    optimizer: Any
    scheduler: Any  # ran.training.schedule.Schedule (timm scheduler underneath)
    criterion: nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: EpochSampler
    transform: FaceTransform
    splits: Splits
    out: Path
    base_boxes: torch.Tensor
    sums: torch.Tensor  # (loss, ce, rb, correct) of this process's images this epoch, on the device
    progress: Progress = field(default_factory=Progress)
    launch: dict[str, Any] = field(default_factory=dict)

    @property
    def main_process(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def show_progress(self) -> bool:
        return self.main_process and self.config.run.progress

    def say(self, text: str) -> None:
        """Print on the main process only."""
        if self.main_process:
            print(text, flush=True)


# --- model ---------------------------------------------------------------------------------------
def build_model(config: TrainConfig, class_names: list[str]) -> nn.Module:
    """A RAN for ``class_names`` from a registered name (with overrides) or a save_pretrained folder."""
    import timm

    from ran.modelio.loading import load_model

    spec = config.model
    registered = timm.list_models("ran*")
    if spec.model not in registered and Path(spec.model).is_dir():
        model = load_model(spec.model).train()
        if model.num_classes != len(class_names):
            print(f"model {spec.model}: new {len(class_names)}-class classifier (it had {model.num_classes})")
            model.reset_classifier(len(class_names))
    elif spec.model not in registered:
        raise UserError(
            f"--model {spec.model!r}: not a registered RAN name nor a folder; "
            f"expected one of {registered} or a save_pretrained folder"
        )
    else:
        model = timm.create_model(spec.model, **_model_kwargs(config, len(class_names)))
    if spec.freeze:
        frozen = model.freeze_backbone(int(spec.freeze) if spec.freeze.isdigit() else spec.freeze)
        print(f"frozen backbone modules: {', '.join(frozen)}")
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        "label_names": class_names,
        "num_classes": len(class_names),
    }
    return model


def _model_kwargs(config: TrainConfig, num_classes: int) -> dict[str, Any]:
    spec = config.model
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
    if not spec.relation_attention:
        kwargs["relation_attention"] = False
    if spec.backbone_file:
        if not Path(spec.backbone_file).is_file():
            raise FileNotFoundError(f"--backbone-file {spec.backbone_file}: no such file")
        kwargs["backbone_file"] = spec.backbone_file
    return kwargs


# --- device, precision, determinism --------------------------------------------------------------
def choose_device_and_precision(config: TrainConfig) -> tuple[torch.device, str]:
    """The device (a CUDA request refused with the reason when CUDA is unusable) and the precision:
    as given, else bf16 on a GPU that supports it and fp32 elsewhere (bf16 autocast on a CPU is fast
    with AMX but its accuracy is not checked on every CPU: ``--mixed-precision bf16`` chooses it)."""
    from ran.devices import resolve_device
    from ran.precision import check_device_support, note_if_emulated, resolve_precision

    device = resolve_device(config.run.device, "--device")
    if config.run.mixed_precision is None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return device, "bf16" if bf16 else "fp32"
    precision = resolve_precision(config.run.mixed_precision, "--mixed-precision")
    check_device_support(precision, device)
    note_if_emulated(precision, device)
    return device, precision


@contextmanager
def determinism(deterministic: bool, device: torch.device) -> Iterator[None]:
    """``--deterministic``: the settings PyTorch documents for reproducible GPU results (deterministic
    algorithms, cuDNN without autotuning, a fixed cuBLAS workspace); otherwise cuDNN autotuning, as the
    shapes are fixed. Restored afterwards: a library call must not change the caller's process."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: an op without a deterministic kernel says so instead of ending the run
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


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


def make_accelerator(config: TrainConfig, device: torch.device, precision: str, out: Path) -> Any:
    """accelerate's Accelerator for one process or many; RNG syncing off (the data order comes from
    :class:`EpochSampler`), non-blocking copies from pinned memory on a GPU."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    from ran.extras import optional_part
    from ran.precision import accelerate_precision

    _forget_previous_run()
    return Accelerator(
        cpu=device.type == "cpu",  # without it, CPU processes started by a launcher train alone
        mixed_precision=accelerate_precision(precision),
        gradient_accumulation_steps=config.optim.gradient_accumulation,
        log_with="tensorboard" if optional_part("tensorboard", "tensorboard logs") else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out)),
        dataloader_config=DataLoaderConfiguration(non_blocking=device.type == "cuda"),
        rng_types=[],
    )


def startup_line(accelerator: Any, precision: str, config: TrainConfig) -> str:
    """Device, precision, processes and the learning-rate rule, said once at the start."""
    from ran.training.schedule import lr_rule

    device = accelerator.device
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    processes = accelerator.num_processes
    kind = "" if processes == 1 else f", {accelerator.distributed_type.value}"
    exact = ", deterministic" if config.run.deterministic else ""
    return (
        f"ran train: device {device}{name}, precision {precision}{exact}, {processes} process"
        f"{'es' if processes > 1 else ''}{kind}; {lr_rule(config, processes)}"
    )


def apply_resume(run: Training, state: ResumeState) -> None:
    """Optimizer / schedule / scaler state and the position of a checked checkpoint into ``run``."""
    from ran.modelio.checkpoints import load_training_state

    load_training_state(state, run.optimizer, run.scheduler, run.accelerator.scaler)
    progress = state.progress
    if progress.epoch >= run.config.run.epochs:  # nothing would run, and no best model would be written
        raise UserError(
            f"--resume {state.path}: the checkpoint is in epoch {progress.epoch + 1}, past this run's "
            f"{run.config.run.epochs} epochs; give --epochs of at least {progress.epoch + 1}"
        )
    if progress.num_processes != run.accelerator.num_processes:
        run.say(
            f"warning: checkpoint made with {progress.num_processes} processes, resuming with "
            f"{run.accelerator.num_processes}: the data order per process differs from the original run"
        )
    if run.main_process:  # the saved sums are over all processes: one of them carries them on
        run.sums.copy_(torch.tensor(progress.epoch_sums, dtype=run.sums.dtype))
    else:
        progress.epoch_seen = 0
    progress.num_processes = run.accelerator.num_processes
    if progress.batches_done >= len(run.train_loader):  # saved at the very end of an epoch
        progress.epoch, progress.batches_done, progress.epoch_seen = progress.epoch + 1, 0, 0
        run.sums.zero_()
    run.progress = progress


# --- the whole set-up ----------------------------------------------------------------------------
def set_up(config: TrainConfig, held: ExitStack) -> Training:
    """Everything a run needs; every check and read happens here, before anything is written. The output
    folder is locked for the run until ``held`` closes (``ran.training.outputs.claim_output``).

    Call inside :func:`determinism` (``train`` does).
    """
    from accelerate.utils import set_seed

    from ran.modelio.checkpoints import read_checkpoint
    from ran.training.outputs import claim_output

    out = Path(config.run.output_dir).expanduser().absolute()
    resume = read_checkpoint(config.run.resume) if config.run.resume else None
    device, precision = choose_device_and_precision(config)
    accelerator = make_accelerator(config, device, precision, out)
    claim_output(out, config, accelerator, held)
    set_seed(config.run.seed)  # the initial weights
    run = _build(config, accelerator, out, resume)
    if resume is not None:
        apply_resume(run, resume)
    config.run.mixed_precision = precision  # a resumed run continues in the same precision
    run.launch = {
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type.value),
        "device": str(accelerator.device),
        "mixed_precision": precision,
        "lr": run.optimizer.param_groups[0]["initial_lr"],
        "num_workers": run.train_loader.num_workers,
    }
    if run.splits.train_files:
        from accelerate.utils import gather_object

        run.launch["train_shards"] = gather_object([run.splits.train_files])
    return run


ONE_REGION_NOTE = (
    "note: one region (the whole face, the baseline): the region-biased loss is off, as it compares crops "
    "with the whole face (rb stays 0); attention over one region is 1"
)


def _build(config: TrainConfig, accelerator: Any, out: Path, resume: ResumeState | None) -> Training:
    """Data, model (with the checkpoint's weights), optimizer and schedule, prepared by accelerate."""
    from ran.losses import RANCriterion
    from ran.modelio.checkpoints import load_model_weights
    from ran.training.data import build_loaders, loader_options, read_splits
    from ran.training.schedule import build_optimizer, build_scheduler, peak_lr
    from ran.transforms import record_transform, transform_for_images

    with accelerator.main_process_first():
        splits, note = read_splits(config, accelerator.process_index, accelerator.num_processes)
    if note and accelerator.is_main_process:
        print(note)
    model = build_model(config, splits.class_names)
    if model.num_regions == 1 and config.loss.rb_weight and accelerator.is_main_process:
        print(ONE_REGION_NOTE)
    if config.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if resume is not None:
        load_model_weights(model, resume)
    # The faces training sees (48 px gray for FERPlus) become the model's input contract, saved with it:
    # the model makes RGB gray and resizes to that size itself, so every loader feeds it alike.
    transform = record_transform(model, transform_for_images(splits.train, model, config.data.image_size))
    options = loader_options(config.data, accelerator.device, accelerator.num_processes)
    rows = _rows_every_process_has(accelerator, len(splits.train)) if splits.train_files else None
    train_loader, val_loader, sampler = build_loaders(config, splits, transform, options, rows)
    optimizer = build_optimizer(config, model, peak_lr(config, accelerator.num_processes))
    if splits.train_files:  # each process already reads its own rows: accelerate must not split them again
        wrapped, optimizer, val_loader = accelerator.prepare(model, optimizer, val_loader)
        train_loader = _on_device(train_loader, accelerator.device)
    else:
        wrapped, optimizer, train_loader, val_loader = accelerator.prepare(
            model, optimizer, train_loader, val_loader
        )
    if config.run.compile:  # after DDP wrapping, so that dynamo splits the graph at gradient buckets
        wrapped.compile()  # in place: checkpoints are written from ``model``, with its plain weight names
    updates_per_epoch = -(-len(train_loader) // config.optim.gradient_accumulation)
    scheduler = build_scheduler(config, optimizer.optimizer, updates_per_epoch)
    device = accelerator.device
    return Training(
        config=config,
        accelerator=accelerator,
        model=model,
        wrapped=wrapped,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=RANCriterion(config.loss.rb_margin, config.loss.rb_weight, config.loss.label_smoothing),
        train_loader=train_loader,
        val_loader=val_loader,
        sampler=sampler,
        transform=transform,
        splits=splits,
        out=out,
        base_boxes=model.region_boxes.detach().to(device),
        sums=torch.zeros(4, dtype=torch.float64, device=device),
        progress=Progress(num_processes=accelerator.num_processes),
    )


def _rows_every_process_has(accelerator: Any, rows: int) -> int:
    """The fewest training rows any process holds: with shards of different sizes, every process takes
    that many a epoch, so that all run the same number of steps (DDP needs it)."""
    counts = accelerator.gather(torch.tensor([rows], device=accelerator.device))
    return int(counts.min())


def _on_device(loader: Any, device: torch.device) -> Any:
    """``loader`` with its batches put on ``device`` (non-blocking from pinned memory), not split up."""
    from accelerate.data_loader import prepare_data_loader

    return prepare_data_loader(
        loader,
        device,
        num_processes=1,
        process_index=0,
        put_on_device=True,
        non_blocking=device.type == "cuda",
    )


__all__ = [
    "Training",
    "apply_resume",
    "build_model",
    "choose_device_and_precision",
    "determinism",
    "make_accelerator",
    "set_up",
    "startup_line",
]
