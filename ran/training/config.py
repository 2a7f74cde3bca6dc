"""Training configuration: dataclasses filled from defaults, then a YAML file, then command-line flags.

One place names every training option, so the CLI, the YAML files in ``examples/`` and the saved
``config.yaml`` of a run stay the same vocabulary (flag ``--rb-margin`` = YAML ``loss: {rb_margin: ...}``).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine")
MIXED_PRECISION = ("no", "bf16", "fp16")
LABEL_MODES = ("hard", "soft")
ATTENTION_MODES = ("softmax", "sigmoid")


def _opt(default: Any, help_: str, choices: tuple | None = None, flag: str | None = None) -> Any:
    meta = {"help": help_, "choices": choices, "flag": flag}
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
    regions: str = _opt("ferplus6", "region preset (ferplus6, affectnet8)")
    region_size: int | None = _opt(None, "side in px every region is resampled to (default: the model's)")
    attention: str = _opt("softmax", "attention normalisation", ATTENTION_MODES)
    drop_rate: float = _opt(0.0, "dropout before the classifier")
    freeze: str | None = _opt(
        None, "freeze the backbone up to a stage: stem, layer1..layer4, an index, or all"
    )


@dataclass
class OptimConfig:
    """How the weights move."""

    optimizer: str = _opt("sgd", "optimizer (SGD as the original)", OPTIMIZERS)
    lr: float = _opt(0.01, "peak learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(1e-4, "weight decay")
    schedule: str = _opt(
        "multistep", "multistep: x gamma at the milestones; cosine: warm-up then cosine", SCHEDULES
    )
    milestones: list[float] = _opt([0.3, 0.5, 0.8], "multistep: fractions of the epochs where lr drops")
    gamma: float = _opt(0.1, "multistep: lr factor at each milestone")
    warmup_epochs: float = _opt(0.0, "cosine: epochs of linear warm-up")
    gradient_accumulation: int = _opt(1, "batches per optimizer update")
    max_grad_norm: float | None = _opt(None, "clip the gradient norm to this value")


@dataclass
class LossConfig:
    """The RAN criterion: cross-entropy + rb_weight * region-biased loss."""

    rb_margin: float = _opt(0.1, "region-biased loss margin (0.1 FERPlus, 0.02 AffectNet)")
    rb_weight: float = _opt(1.0, "weight of the region-biased loss")
    label_mode: str = _opt(
        "hard", "hard: class index; soft: the dataset's soft_label distribution", LABEL_MODES
    )
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy")


@dataclass
class DataConfig:
    """Where the images come from and how they are augmented."""

    data: str | None = _opt(None, "dataset folder written by 'ran data' (or a Hub dataset id)")
    batch_size: int = _opt(64, "images per batch and process")
    eval_batch_size: int | None = _opt(None, "validation batch size (default: 2 x batch size)")
    num_workers: int = _opt(0, "DataLoader worker processes")
    class_balanced: bool = _opt(False, "draw every class equally often (the AffectNet recipe)")
    box_jitter: bool = _opt(True, "jitter region boxes (scale +-2 %%, shift +-1 %%) as the original")
    hflip: bool = _opt(True, "random horizontal flip")
    random_crop_regions: bool = _opt(False, "train on random crops instead of the preset regions")
    image_size: int | None = _opt(None, "resize source images to this square size (needed for mixed sizes)")
    val_split: str = _opt("validation", "split that selects the best model (falls back to test)")


@dataclass
class RunConfig:
    """The run itself: length, precision, outputs, checkpoints."""

    output_dir: str | None = _opt(None, "output folder (config, checkpoints, best model, logs)")
    epochs: int = _opt(10, "training epochs")
    mixed_precision: str = _opt("no", "autocast precision through accelerate", MIXED_PRECISION)
    channels_last: bool = _opt(True, "channels-last weights: about 25 %% faster convolutions on CPU and GPU")
    seed: int = _opt(0, "random seed (data order, augmentation, initial weights)")
    save_every_steps: int = _opt(0, "also save a checkpoint every N optimizer updates (0: epochs only)")
    keep_checkpoints: int = _opt(0, "keep only the newest N checkpoints (0: keep all)")
    log_every_steps: int = _opt(10, "log the step loss to tensorboard every N updates")
    resume: str | None = _opt(None, "checkpoint folder to continue from (OUT/checkpoints/...)")
    stop_after_steps: int | None = _opt(None, "end the run after N updates (resume later with --resume)")
    overwrite: bool = _opt(False, "start over in an existing output folder")
    progress: bool = _opt(True, "show progress bars")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "loss": LossConfig,
    "data": DataConfig,
    "run": RunConfig,
}


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

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """``section.name -> value`` with lists as strings (tensorboard hparams take scalars only)."""
        out: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            for name, value in values.items():
                out[f"{section}.{name}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
        return out

    def validate(self) -> TrainConfig:
        """Raise a ValueError naming the option when a value cannot work."""
        checks = [
            (self.run.epochs >= 1, "epochs", "an integer >= 1"),
            (self.data.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.optim.lr > 0, "lr", "a positive number"),
            (self.optim.gradient_accumulation >= 1, "gradient_accumulation", "an integer >= 1"),
            (self.loss.rb_margin >= 0, "rb_margin", "a number >= 0"),
            (self.run.save_every_steps >= 0, "save_every_steps", "an integer >= 0"),
            (self.run.keep_checkpoints >= 0, "keep_checkpoints", "an integer >= 0"),
            (self.data.num_workers >= 0, "num_workers", "an integer >= 0"),
            (all(0 < m <= 1 for m in self.optim.milestones), "milestones", "fractions in (0, 1]"),
            (self.optim.warmup_epochs >= 0, "warmup_epochs", "a number >= 0"),
            (self.model.region_size is None or self.model.region_size >= 8, "region_size", ">= 8 px"),
        ]
        for ok, name, expected in checks:
            if not ok:
                section = _SECTION_OF[name]
                value = getattr(getattr(self, section), name)
                raise ValueError(
                    f"{section}.{name} (--{name.replace('_', '-')}): expected {expected}, got {value!r}"
                )
        for section, cls in SECTIONS.items():
            for f in fields(cls):
                choices = f.metadata.get("choices")
                value = getattr(getattr(self, section), f.name)
                if choices and value not in choices:
                    raise ValueError(
                        f"{section}.{f.name} (--{f.name.replace('_', '-')}): expected one of "
                        f"{list(choices)}, got {value!r}"
                    )
        if self.data.data is None:
            raise ValueError("data (--data): a dataset folder is required")
        if self.run.output_dir is None:
            raise ValueError("output_dir (--output-dir): an output folder is required")
        return self


_SECTION_OF = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}


def _field_type(cls: type, name: str) -> tuple[type, bool]:
    """(element type, is_list) of a dataclass field, Optional stripped."""
    hint = get_type_hints(cls)[name]
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) is list:
        return get_args(hint)[0], True
    if args and get_origin(hint) is not list:
        if get_origin(args[0]) is list:
            return get_args(args[0])[0], True
        return args[0], False
    return hint, False


def _coerce(section: str, name: str, value: Any, source: str) -> Any:
    """Check / convert a YAML value to the field's type; the error names the source and key."""
    cls = SECTIONS[section]
    kind, is_list = _field_type(cls, name)
    if value is None:
        return None
    try:
        if is_list:
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return [kind(v) for v in value]
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise TypeError
        if kind in (int, float) and isinstance(value, bool):
            raise TypeError
        return kind(value)
    except (TypeError, ValueError):
        expected = f"a list of {kind.__name__}" if is_list else kind.__name__
        raise ValueError(f"{source}: {section}.{name}: expected {expected}, got {value!r}") from None


def config_from_mapping(data: dict[str, Any], source: str, base: TrainConfig | None = None) -> TrainConfig:
    """Apply a nested ``{section: {name: value}}`` mapping (a flat ``{name: value}`` one also works)."""
    config = dataclasses.replace(base) if base is not None else TrainConfig()
    config = TrainConfig(**{s: dataclasses.replace(getattr(config, s)) for s in SECTIONS})
    if not isinstance(data, dict):
        raise ValueError(
            f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(data).__name__}"
        )
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            items = [(key, name, v) for name, v in value.items()]
        elif key in _SECTION_OF:
            items = [(_SECTION_OF[key], key, value)]
        else:
            raise ValueError(
                f"{source}: unknown key {key!r}; expected a section ({', '.join(SECTIONS)}) or an option name"
            )
        for section, name, v in items:
            name = name.replace("-", "_")
            if _SECTION_OF.get(name) != section:
                known = ", ".join(f.name for f in fields(SECTIONS[section]))
                raise ValueError(f"{source}: unknown option {section}.{name}; expected one of: {known}")
            setattr(getattr(config, section), name, _coerce(section, name, v, source))
    return config


def load_yaml_config(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """A YAML training config applied over ``base`` (default: the defaults)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    return config_from_mapping(data, str(path), base)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option; defaults are suppressed so that only the flags given override the YAML."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section)
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            kind, is_list = _field_type(cls, f.name)
            help_ = f.metadata.get("help", "")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            help_ = f"{help_} (default: {default})"
            common = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_}
            if kind is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
            elif is_list:
                group.add_argument(flag, type=kind, nargs="+", **common)
            else:
                group.add_argument(flag, type=kind, choices=f.metadata.get("choices"), **common)


def config_from_args(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    """``base`` with every flag that was given on the command line applied."""
    given = {name: value for name, value in vars(args).items() if name in _SECTION_OF}
    return config_from_mapping(given, "command line", base)


RUN_CONFIG_FILE = "config.yaml"  # the resolved config a run saves (and a resumed run starts from)


def build_parser(prog: str = "ran train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a RAN on a dataset folder written by 'ran data'. Options come from the defaults, "
        "then --config YAML, then the flags given here.",
    )
    parser.add_argument("--config", type=Path, help="YAML file with sections model/optim/loss/data/run")
    add_config_arguments(parser)
    return parser


def resolve_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < the run's saved config (when resuming) < --config YAML < flags."""
    args = build_parser().parse_args(argv)
    base = TrainConfig()
    resume = getattr(args, "resume", None)
    if resume:
        saved = Path(resume).expanduser().parent.parent / RUN_CONFIG_FILE
        if saved.is_file():
            data = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
            data.pop("launch", None)
            base = config_from_mapping(data, str(saved))
            base.run.resume = None
            base.run.stop_after_steps = None
    if args.config is not None:
        base = load_yaml_config(args.config, base)
    return config_from_args(args, base).validate()
