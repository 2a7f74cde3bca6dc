"""Training configuration: dataclasses filled from defaults, a run's saved config, a YAML file, then flags.

One place names every training option, so the CLI, the YAML files in ``examples/`` and the saved
``config.yaml`` of a run stay the same vocabulary (flag ``--rb-margin`` = YAML ``loss: {rb_margin: ...}``).
transformers' ``HfArgumentParser`` turns the dataclasses into flags; ``ran.training.config_yaml`` builds
them from a YAML mapping, each value checked by the rules of its flag, so a value is checked one way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

from ran.errors import UserError
from ran.numbers import (
    IMAGE_SIDE,
    LABEL_SMOOTHING,
    RB_MARGIN,
    RB_WEIGHT,
    REGION_SIDE,
    SEED,
    NumberRange,
    brief,
    check_numbers,
    dataclass_parser,
    integer,
    number,
)
from ran.precision import resolve_precision
from ran.safeyaml import read_yaml
from ran.threads import MAX_THREADS, threads_help
from ran.vocabulary import ATTENTION_MODES, DEVICES, LABEL_TARGETS, OPTIMIZERS, PRECISION_CHOICES, SCHEDULES

MAX_EPOCHS = 100_000  # more is a typo: the recipes train 40-60
REFERENCE_BATCH = 128  # the recipe's total batch size, the reference of --scale-lr
RUN_CONFIG_FILE = "config.yaml"  # the resolved config a run saves (and a resumed run starts from)


def _opt(default: Any, help_: str, choices: tuple | None = None, numbers: NumberRange | None = None) -> Any:
    """A dataclass field whose metadata ``HfArgumentParser`` passes to ``add_argument``; ``numbers`` is
    the range a numeric option's values must lie in (``ran.numbers``)."""
    meta: dict[str, Any] = {"help": help_}
    if choices:
        meta["choices"] = choices
    if numbers is not None:
        meta["type"] = numbers
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """What network to train."""

    model: str = _opt(
        "ran_resnet18", "registered RAN name (ran, ran_resnet18, ...) or a save_pretrained folder"
    )
    backbone: str | None = _opt(
        None, "timm backbone name overriding the model's (e.g. resnet34, test_resnet)"
    )
    backbone_file: str | None = _opt(
        None, "local backbone weights (.pth/.pth.tar/.safetensors) to start from"
    )
    regions: str = _opt(
        "ferplus6", "region preset (ferplus6, affectnet8; whole: the whole face alone, the baseline)"
    )
    region_size: int | None = _opt(
        None, "side in px every region is resampled to (default: the model's)", numbers=REGION_SIDE
    )
    attention: str = _opt("softmax", "attention normalisation", ATTENTION_MODES)
    relation_attention: bool = _opt(
        True, "relation attention (--no-relation-attention: self-attention alone, as in the ablation)"
    )
    drop_rate: float = _opt(0.0, "dropout before the classifier", numbers=number(0, below=1))
    freeze: str | None = _opt(
        None, "freeze the backbone up to a stage: stem, layer1..layer4, an index, or all"
    )


@dataclass
class OptimConfig:
    """How the weights move."""

    optimizer: str = _opt("sgd", "optimizer (SGD as the original)", OPTIMIZERS)
    lr: float = _opt(
        0.01, "peak learning rate (for the total batch; see --scale-lr)", numbers=number(above=0)
    )
    scale_lr: bool = _opt(
        False,
        f"scale lr linearly with the total batch (batch size x processes x accumulation) / "
        f"{REFERENCE_BATCH}, the recipe's batch",
    )
    momentum: float = _opt(0.9, "SGD momentum", numbers=number(0, below=1))
    weight_decay: float = _opt(1e-4, "weight decay", numbers=number(0))
    decay_norms_and_biases: bool = _opt(
        False,
        "weight decay on every parameter, norms and biases too, as the original (default: weights only)",
    )
    schedule: str = _opt(
        "multistep", "multistep: x gamma at the milestones; cosine: warm-up then cosine", SCHEDULES
    )
    milestones: list[float] = _opt(
        [0.3, 0.5, 0.8], "multistep: fractions of the epochs where lr drops", numbers=number(above=0, high=1)
    )
    gamma: float = _opt(0.1, "multistep: lr factor at each milestone", numbers=number(above=0, high=1))
    warmup_epochs: float = _opt(0.0, "cosine: epochs of linear warm-up", numbers=number(0))
    gradient_accumulation: int = _opt(1, "batches per optimizer update", numbers=integer(1))
    max_grad_norm: float | None = _opt(None, "clip the gradient norm to this value", numbers=number(above=0))


@dataclass
class LossConfig:
    """The RAN criterion: cross-entropy + rb_weight * region-biased loss."""

    rb_margin: float = _opt(0.1, "region-biased loss margin (0.1 FERPlus, 0.02 AffectNet)", numbers=RB_MARGIN)
    rb_weight: float = _opt(1.0, "weight of the region-biased loss", numbers=RB_WEIGHT)
    label_mode: str = _opt(
        "hard", "hard: class index; soft: the dataset's soft_label distribution", LABEL_TARGETS
    )
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy", numbers=LABEL_SMOOTHING)


@dataclass
class DataConfig:
    """Where the images come from and how they are augmented."""

    data: str | None = _opt(None, "dataset folder written by 'ran data' (or a Hub dataset id)")
    batch_size: int = _opt(64, "images per batch and process", numbers=integer(1))
    eval_batch_size: int | None = _opt(
        None, "validation batch size (default: 2 x batch size)", numbers=integer(1)
    )
    num_workers: int | None = _opt(
        None,
        "DataLoader worker processes (default: min(4, CPUs per process) on a GPU, 0 on a CPU)",
        numbers=integer(0, 256),
    )
    class_balanced: bool = _opt(False, "draw every class equally often (the AffectNet recipe)")
    box_jitter: bool = _opt(True, "jitter region boxes (scale +-2 %%, shift +-1 %%) as the original")
    hflip: bool = _opt(True, "random horizontal flip")
    random_crop_regions: bool = _opt(False, "train on random crops instead of the preset regions")
    augment: str | None = _opt(
        None,
        "perturbations as augmentation, comma-separated (occlusion, geometry, corruption or kinds such as "
        "eye_band:texture, gaussian_noise; 'ran robustness --list'): a random kind and severity per face",
    )
    augment_probability: float = _opt(0.5, "share of training faces --augment perturbs", numbers=number(0, 1))
    image_size: int | None = _opt(
        None, "resize source images to this square size (needed for mixed sizes)", numbers=IMAGE_SIDE
    )
    val_split: str = _opt("validation", "split that selects the best model (falls back to test)")
    shard_data: bool = _opt(
        False, "several processes: each reads only its own Parquet shard files of the train split"
    )


@dataclass
class RunConfig:
    """The run itself: device, length, precision, outputs, checkpoints."""

    output_dir: str | None = _opt(None, "output folder (config, checkpoints, best model, logs)")
    epochs: int = _opt(10, "training epochs", numbers=integer(1, MAX_EPOCHS))
    device: str | None = _opt(None, "cpu or cuda (default: cuda when usable, else cpu)", DEVICES)
    mixed_precision: str | None = _opt(
        None,
        "fp32 (alias no), bf16 or fp16 (default: bf16 on a GPU that supports it, else fp32)",
        PRECISION_CHOICES,
    )
    channels_last: bool = _opt(True, "channels-last weights: about 25 %% faster convolutions on CPU and GPU")
    compile: bool = _opt(False, "torch.compile the model (checkpoints keep plain weight names)")
    deterministic: bool = _opt(
        False, "deterministic kernels (cuDNN, cuBLAS): bit-exact resume on a GPU, somewhat slower"
    )
    threads: int | None = _opt(None, threads_help(), numbers=integer(1, MAX_THREADS))
    seed: int = _opt(0, "random seed (data order, augmentation, initial weights)", numbers=SEED)
    save_every_steps: int = _opt(
        0, "also save a checkpoint every N optimizer updates (0: epochs only)", numbers=integer(0)
    )
    keep_checkpoints: int = _opt(0, "keep only the newest N checkpoints (0: keep all)", numbers=integer(0))
    log_every_steps: int = _opt(10, "log the step loss to tensorboard every N updates", numbers=integer(0))
    resume: str | None = _opt(None, "checkpoint folder to continue from (OUT/checkpoints/...)")
    stop_after_steps: int | None = _opt(
        None, "end the run after N updates (resume later with --resume)", numbers=integer(1)
    )
    overwrite: bool = _opt(False, "start over in an existing output folder")
    progress: bool = _opt(True, "show progress bars")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "data": DataConfig,
    "run": RunConfig,
}
_SECTION_OF = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}


@dataclass
class TrainConfig:
    """Every training option, grouped as in the YAML file."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``section.name -> value`` with lists as strings (tensorboard hparams take scalars only)."""
        out: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            for name, value in values.items():
                out[f"{section}.{name}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
        return out

    def copy(self) -> TrainConfig:
        return TrainConfig(**{s: dataclasses.replace(getattr(self, s)) for s in SECTIONS})

    def validate(self) -> TrainConfig:
        """Raise a ValueError naming the option when a value cannot work (also for configs built in code)."""
        for section in SECTIONS:
            check_numbers(getattr(self, section), partial(_option_name, section))
        for section, cls in SECTIONS.items():
            for f in fields(cls):
                choices = f.metadata.get("choices")
                value = getattr(getattr(self, section), f.name)
                if choices and value is not None and value not in choices:
                    _refuse(self, f.name, f"one of {list(choices)}")
        if self.run.mixed_precision is not None:
            self.run.mixed_precision = resolve_precision(self.run.mixed_precision, "mixed_precision")
        if self.data.augment is not None:
            from ran.robustness.augment import augment_kinds

            try:
                augment_kinds(self.data.augment)
            except ValueError as err:
                raise UserError(f"{_option_name('data', 'augment')}: {err}") from None
        if self.data.data is None:
            raise UserError("data (--data): a dataset folder is required")
        if self.run.output_dir is None:
            raise UserError("output_dir (--output-dir): an output folder is required")
        return self


def _option_name(section: str, name: str) -> str:
    """How errors name an option: its YAML key and its flag."""
    return f"{section}.{name} (--{name.replace('_', '-')})"


def _refuse(config: TrainConfig, name: str, expected: str) -> None:
    section = _SECTION_OF[name]
    value = getattr(getattr(config, section), name)
    raise UserError(f"{_option_name(section, name)}: expected {expected}, got {brief(value)}")


# --- parsing -----------------------------------------------------------------------------------------
@dataclass
class ConfigFile:
    """The YAML file the flags start from."""

    config: str | None = field(default=None, metadata={"help": "YAML file of model/optim/loss/data/run"})


DESCRIPTION = (
    "Train a RAN on a dataset folder written by 'ran data'. Options come from the defaults, then the run's "
    "saved config.yaml (with --resume), then --config YAML, then the flags given here."
)


def build_parser(prog: str = "ran train", **kwargs: Any) -> Any:
    """One flag per option (``--batch-size`` / ``--batch_size``, ``--no-hflip`` ...), by transformers'
    ``HfArgumentParser`` as every command's flags (``ran.cli.options``); ``kwargs`` go to argparse."""
    from ran.helptext import finish_help

    parser = dataclass_parser([ConfigFile, *SECTIONS.values()], prog=prog, description=DESCRIPTION, **kwargs)
    return finish_help(parser)


def saved_run_config(checkpoint: str | Path) -> TrainConfig | None:
    """The config.yaml of the run a checkpoint folder (``OUT/checkpoints/<name>``) belongs to, if any: data,
    so the run continues in OUT (a copied run in the copy, wherever its config says it began) and reads no
    file the config names (``backbone_file``: the checkpoint holds the backbone)."""
    saved = (run := Path(checkpoint).expanduser().parent.parent) / RUN_CONFIG_FILE
    if not saved.is_file():
        return None
    from ran.training.config_yaml import config_from_mapping

    data = read_yaml(saved, "run config") or {}
    if isinstance(data, dict):
        data.pop("launch", None)
    config = config_from_mapping(data, str(saved))
    config.run.resume = config.run.stop_after_steps = None
    config.run.output_dir, config.model.backbone_file = str(run), None
    return config


def _parse_flags(parser: Any, argv: list[str] | None) -> tuple[ConfigFile, TrainConfig]:
    """argparse's own parse (an unknown flag exits with its usage line), then one instance per section."""
    namespace = parser.parse_args(argv)

    def instance(cls: type) -> Any:
        return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)})

    return instance(ConfigFile), TrainConfig(**{name: instance(cls) for name, cls in SECTIONS.items()})


def resolve_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < the run's saved config (when resuming) < --config YAML < flags given."""
    parser = build_parser()
    config_file, given = _parse_flags(parser, argv)
    saved = saved_run_config(given.run.resume) if given.run.resume else None
    base = saved or TrainConfig()
    if config_file.config is not None:
        from ran.training.config_yaml import load_yaml_config

        base = load_yaml_config(config_file.config, base)
    # Second pass: the flags given override ``base`` (argparse fills in what was not given from it).
    parser.set_defaults(
        **{name: value for section in base.to_dict().values() for name, value in section.items()}
    )
    config = _parse_flags(parser, argv)[1].validate()
    if saved is not None:
        _check_kept_at_resume(saved, config)
    return config


# What a resumed run keeps from its checkpoint's run: its model, its optimizer (restored from the
# checkpoint, whatever the flags say) and its batches (the epoch in progress is counted in them).
KEPT_AT_RESUME = {
    "model": ("model", "backbone", "regions", "region_size", "attention", "relation_attention"),
    "optim": ("optimizer", "momentum", "weight_decay", "decay_norms_and_biases", "gradient_accumulation"),
    "data": ("batch_size",),
}


def _check_kept_at_resume(saved: TrainConfig, config: TrainConfig) -> None:
    """Refuse a change of what :data:`KEPT_AT_RESUME` names: it was ignored (the optimizer's settings came
    back from the checkpoint while config.yaml recorded the new ones), or failed without naming the flag."""
    for section, names in KEPT_AT_RESUME.items():
        for name in names:
            before, now = getattr(getattr(saved, section), name), getattr(getattr(config, section), name)
            if before != now:
                raise UserError(
                    f"{_option_name(section, name)}: {brief(now)}, but the checkpoint's run has "
                    f"{brief(before)}; a resumed run keeps its model, optimizer and batch size (start a new "
                    "run to change them)"
                )


__all__ = [
    "REFERENCE_BATCH",
    "RUN_CONFIG_FILE",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "build_parser",
    "resolve_config",
    "saved_run_config",
]
