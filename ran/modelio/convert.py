"""``ran convert SRC DST``: original RAN checkpoints (.pth.tar) -> a safetensors repo folder.

Two source families are understood, both saved from ``nn.DataParallel`` (keys under ``module.``):

* the authors' code: torchvision ResNet-18/34 keys, ``alpha.0`` Linear(C, 1), ``beta.0`` Linear(2C, 1),
  ``fc`` Linear(2C, 8), sigmoid-then-softmax attention;
* the reimplementation: also ResNet-50/101 (Bottleneck, C = 2048) and IResNet-18..100 with the
  insightface arcface names (``conv1``, ``bn1``, ``prelu``, ``layerN`` of IBasicBlock, ``bn2``, optionally
  the ``fc`` + ``features`` embedding).

The architecture is inferred from the keys and shapes (or given with ``--arch``); keys are renamed to
ours (``backbone.*``, ``self_attention``, ``relation_attention``, ``fc``) and the folder is written with
``ran.modelio.hub.build_hub_folder``. Files are read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch

import ran.models  # noqa: F401  (registers the architectures)
from ran.constants import MAX_CLASSES
from ran.errors import UserError
from ran.labels import CHECKPOINT_LABEL_SETS, DATASET_CLASSES
from ran.modelio.state_dict import load_state_dict_file
from ran.models import RAN_VARIANTS

LABEL_SETS = {name: DATASET_CLASSES[name] for name in CHECKPOINT_LABEL_SETS}

# blocks per stage -> depth
RESNET_BASIC_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34}
RESNET_BOTTLENECK_DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
IRESNET_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 34, (3, 4, 14, 3): 50, (3, 13, 30, 3): 100}

SELF_ATTENTION_NAMES = ("alpha.0", "alpha")
RELATION_ATTENTION_NAMES = ("beta.0", "beta")
CLASSIFIER_NAMES = ("fc", "pred_fc2", "classifier", "head")
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


@dataclass
class SourceLayout:
    """What the converter found in a checkpoint."""

    family: str  # 'resnet' or 'iresnet'
    depth: int
    feature_dim: int  # C
    num_classes: int
    classifier: str  # source name of the classifier Linear(2C, classes)
    arcface_embedding: bool = False  # IResNet with its fc + features embedding head

    @property
    def architecture(self) -> str:
        return f"ran_{self.family}{self.depth}"


@dataclass
class ConversionReport:
    """The outcome of a conversion: what was built and which keys did not map."""

    source: str
    architecture: str
    model_args: dict[str, Any]
    num_classes: int
    loaded: int
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.source}: {self.architecture} with {self.num_classes} classes, "
            f"attention={self.model_args.get('attention')}; loaded {self.loaded} tensors",
            f"missing keys ({len(self.missing_keys)}): {', '.join(self.missing_keys) or 'none'}",
            f"unexpected keys ({len(self.unexpected_keys)}): {', '.join(self.unexpected_keys) or 'none'}",
        ]
        return "\n".join(lines)


def strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix DataParallel adds (only when every key has it)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _first_present(state: dict[str, torch.Tensor], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if f"{n}.weight" in state), None)


def _stage_depths(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    blocks: dict[int, set[int]] = {}
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    return tuple(len(blocks.get(i, ())) for i in range(1, 5))


def infer_layout(state: dict[str, torch.Tensor], source: str = "checkpoint") -> SourceLayout:
    """Recognise a RAN checkpoint (after ``strip_data_parallel``) from its key names and shapes."""
    alpha = _first_present(state, SELF_ATTENTION_NAMES)
    beta = _first_present(state, RELATION_ATTENTION_NAMES)
    if alpha is None or beta is None or "conv1.weight" not in state:
        sample = ", ".join(list(state)[:6])
        raise UserError(
            f"{source}: unknown checkpoint layout: expected a RAN state dict with 'conv1.weight', "
            f"'alpha.0.weight' and 'beta.0.weight' (optionally under 'module.'), found keys: {sample}, ..."
        )
    feature_dim = int(state[f"{alpha}.weight"].shape[-1])
    if tuple(state[f"{beta}.weight"].shape) != (1, 2 * feature_dim):
        raise UserError(
            f"{source}: shape mismatch: {beta}.weight is {tuple(state[f'{beta}.weight'].shape)}, expected "
            f"(1, {2 * feature_dim}) for {alpha}.weight {tuple(state[f'{alpha}.weight'].shape)}"
        )
    classifier = next(
        (
            n
            for n in CLASSIFIER_NAMES
            if f"{n}.weight" in state
            and state[f"{n}.weight"].dim() == 2
            and state[f"{n}.weight"].shape[1] == 2 * feature_dim
        ),
        None,
    )
    if classifier is None:
        raise UserError(
            f"{source}: no classifier Linear({2 * feature_dim}, classes) under any of {CLASSIFIER_NAMES}"
        )
    num_classes = int(state[f"{classifier}.weight"].shape[0])
    if not 1 <= num_classes <= MAX_CLASSES:  # the model is built with this many outputs
        raise UserError(
            f"{source}: {classifier}.weight has {num_classes} rows (classes); expected 1 to {MAX_CLASSES}"
        )
    depths = _stage_depths(state)
    kernel = state["conv1.weight"].shape[-1]
    if "prelu.weight" in state and kernel == 3:
        family, table = "iresnet", IRESNET_DEPTHS
        expected_dim = 512
    elif kernel == 7:
        bottleneck = "layer1.0.conv3.weight" in state
        family, table = "resnet", RESNET_BOTTLENECK_DEPTHS if bottleneck else RESNET_BASIC_DEPTHS
        expected_dim = 2048 if bottleneck else 512
    else:
        raise UserError(
            f"{source}: unknown backbone: conv1.weight {tuple(state['conv1.weight'].shape)} matches neither "
            "a torchvision ResNet (7x7 stem) nor an arcface IResNet (3x3 stem + prelu)"
        )
    if depths not in table:
        raise UserError(
            f"{source}: unknown {family} depth: blocks per stage {depths}, known: "
            + ", ".join(f"{d}: {b}" for b, d in table.items())
        )
    if feature_dim != expected_dim:
        raise UserError(
            f"{source}: shape mismatch: {alpha}.weight expects {feature_dim}-d region features, "
            f"a {family}{table[depths]} backbone gives {expected_dim}"
        )
    embedding = family == "iresnet" and "features.weight" in state
    return SourceLayout(family, table[depths], feature_dim, num_classes, classifier, embedding)


def map_keys(
    state: dict[str, torch.Tensor], layout: SourceLayout
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Source names -> ours. Returns the renamed tensors and the source keys that have no place."""
    heads = {
        _first_present(state, SELF_ATTENTION_NAMES): "self_attention",
        _first_present(state, RELATION_ATTENTION_NAMES): "relation_attention",
        layout.classifier: "fc",
    }
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module in heads:
            mapped[f"{heads[module]}.{param}"] = value
        elif layout.family == "resnet" and key.startswith("fc."):
            unexpected.append(key)  # a second fc (e.g. the backbone's ImageNet head) has no place
        elif key.startswith(("conv1.", "bn1.", "prelu.", "layer", "bn2.", "features.", "fc.")):
            mapped[f"backbone.{key}"] = value
        else:
            unexpected.append(key)
    return mapped, unexpected


def convert_state_dict(
    state: dict[str, torch.Tensor],
    *,
    arch: str | None = None,
    regions: str | list[list[float]] = "ferplus6",
    region_size: int | None = None,
    attention: str = "softmax",
    allow_missing: bool = False,
    source: str = "checkpoint",
) -> tuple[torch.nn.Module, ConversionReport]:
    """Build our RAN from a source state dict; errors name shape mismatches and missing weights."""
    state = strip_data_parallel(state)
    layout = infer_layout(state, source)
    architecture = arch or layout.architecture
    if architecture not in RAN_VARIANTS:
        raise UserError(
            f"{source}: unknown architecture {architecture!r} "
            f"({'given with --arch' if arch else 'inferred from the keys'}); "
            f"registered RAN architectures: {', '.join(sorted(RAN_VARIANTS))}"
        )
    kwargs: dict[str, Any] = {
        "num_classes": layout.num_classes,
        "regions": regions,
        "attention": attention,
        "region_size": region_size or RAN_VARIANTS[architecture]["region_size"],
    }
    if layout.family == "iresnet" and not layout.arcface_embedding:
        kwargs["backbone_kwargs"] = {"global_pool": "avg"}  # pooled layer4 features, no embedding head
    model = timm.create_model(architecture, pretrained=False, **kwargs)
    mapped, unexpected = map_keys(state, layout)
    own = model.state_dict()
    mismatched = [k for k, v in mapped.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if mismatched:
        details = "; ".join(
            f"{k}: checkpoint {tuple(mapped[k].shape)} vs {architecture} {tuple(own[k].shape)}"
            for k in mismatched[:5]
        )
        raise UserError(f"{source}: shape mismatch for {len(mismatched)} tensors ({details})")
    unexpected += [k for k in mapped if k not in own]
    usable = {k: v for k, v in mapped.items() if k in own}
    result = model.load_state_dict(usable, strict=False)
    # BatchNorm step counters are absent from old checkpoints and do not affect the output.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing and not allow_missing:
        raise UserError(
            f"{source}: {len(missing)} weights of {architecture} are not in the checkpoint "
            f"({', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''}); pass --allow-missing to "
            "keep them randomly initialised"
        )
    report = ConversionReport(
        source=source,
        architecture=architecture,
        model_args=model.ran_config(),
        num_classes=layout.num_classes,
        loaded=len(usable),
        missing_keys=missing,
        unexpected_keys=sorted(unexpected),
    )
    return model.eval(), report


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    arch: str | None = None,
    regions: str | list[list[float]] = "ferplus6",
    region_size: int | None = None,
    attention: str = "softmax",
    labels: str | None = None,
    allow_missing: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert one checkpoint file into a repo folder at ``dst`` (see the module docstring)."""
    from ran.modelio.hub import build_hub_folder

    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst}: already exists (pass --overwrite to replace it)")
    state = load_state_dict_file(src)
    model, report = convert_state_dict(
        state,
        arch=arch,
        regions=regions,
        region_size=region_size,
        attention=attention,
        allow_missing=allow_missing,
        source=str(src),
    )
    if labels is not None:
        if labels not in LABEL_SETS:
            raise UserError(f"--labels: expected one of {', '.join(LABEL_SETS)}, got {labels!r}")
        label_names: tuple[str, ...] | None = LABEL_SETS[labels]
    else:
        label_names = next((names for names in LABEL_SETS.values() if len(names) == report.num_classes), None)
    if label_names is not None and len(label_names) != report.num_classes:
        raise UserError(
            f"--labels {labels}: {len(label_names)} class names, but the checkpoint has {report.num_classes}"
        )
    build_hub_folder(
        model,
        dst,
        label_names=label_names,
        dataset=labels or ("ferplus" if report.num_classes == 8 else None),
        training_command=f"# converted from {src.name} with: ran convert {src.name} {dst.name}",
        overwrite=overwrite,
    )
    return report
