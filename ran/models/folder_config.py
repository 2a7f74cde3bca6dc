"""What a model folder's ``config.json`` may say: data that rebuilds a RAN, never instructions.

timm passes a folder's ``model_args`` to the model's constructor and its ``pretrained_cfg`` to the loader,
so whoever wrote a folder would otherwise choose files to unpickle (``backbone_file``), downloads
(``backbone_pretrained``, ``hf-hub:`` backbones), devices and dtypes. A folder's config is checked against
an allowlist of what this package writes, each value against its type and sane bounds, before any model
is built. Errors are one line naming the file, the key, the value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import timm

from ran.constants import MAX_CLASSES, MAX_IN_CHANS
from ran.errors import UserError
from ran.labels import class_name_problem
from ran.models.ran import GLOBAL_POOLS, RAN_VARIANTS
from ran.numbers import IMAGE_SIDE, REGION_SIDE
from ran.regions import REGION_PRESETS, validate_boxes
from ran.vocabulary import ATTENTION_MODES, INPUT_COLORS

MAX_REGIONS = 64
MAX_SIDE = REGION_SIDE.high  # px: region_size, as the commands take it (the paper's regions are 224 px)
# Pixels of all of one face's regions together: at most what the commands make (the largest preset, 8
# regions, at the largest --region-size). A 1.5 MB folder of 64 regions of 1024 px took 2.6 GB and two
# minutes for one face. (ran_resnet18: 6 x 224 x 224 = 301,056.)
MAX_REGION_PIXELS = max(len(boxes) for boxes in REGION_PRESETS.values()) * MAX_SIDE**2
MIN_STD = 1e-3  # a std below it is 0 in float32 or near it: every input becomes inf or NaN
MAX_IMAGE_SIDE = IMAGE_SIDE.high  # px: input_size sides, as the commands take them
MAX_TEXT = 1000  # characters of one label, name or note
# Constructor arguments that say where the first weights come from (or, for num_classes, that transformers
# passes itself): the package never writes them into a folder, whose weights replace them.
INITIALISATION_ARGS = ("num_classes", "backbone_file", "backbone_pretrained")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES = ("center", "squash", "border")

Check = Callable[[str, str, Any], Any]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(where: str, key: str, value: Any, expected: str) -> UserError:
    return UserError(f"{where}: {key} = {_show(value)}; expected {expected}")


def _int(where: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, key, value, f"an integer in {low}..{high}")
    return value


def _number(where: str, key: str, value: Any, low: float, high: float, above_low: bool = False) -> None:
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and low <= number <= high) or (above_low and number == low):
        raise _fail(where, key, value, f"a finite number in {'(' if above_low else '['}{low}, {high}]")


def _list(where: str, key: str, value: Any, low: int, high: int) -> list[Any]:
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise _fail(where, key, value, f"a list of {low}..{high} entries")
    return value


def _text(where: str, key: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _fail(where, key, value, f"a string of at most {MAX_TEXT} characters")


def _texts(where: str, key: str, value: Any, high: int = MAX_CLASSES) -> None:
    for i, item in enumerate(_list(where, key, value, 0, high)):
        _text(where, f"{key}[{i}]", item)


def check_class_names(where: str, key: str, value: Any) -> None:
    """Class names: texts without control characters, which would command the terminal (ESC) or break
    the lines (newline) of every message, table and card that names a class, and not starting as a
    spreadsheet formula does (the per-frame CSV has a label column)."""
    _texts(where, key, value)
    for i, name in enumerate(value):
        problem = class_name_problem(name)
        if problem:
            raise _fail(where, f"{key}[{i}]", name, problem)


# --- check factories: each makes a Check(where, key, value) ---------------------------------------------
def _ints(low: int, high: int) -> Check:
    return lambda where, key, value: _int(where, key, value, low, high)


def _numbers(low: float, high: float, above_low: bool = False) -> Check:
    return lambda where, key, value: _number(where, key, value, low, high, above_low)


def _one_of(*choices: Any) -> Check:
    def check(where: str, key: str, value: Any) -> None:
        if not any(value == c and type(value) is type(c) for c in choices):
            raise _fail(where, key, value, f"one of {', '.join(repr(c) for c in choices)}")

    return check


def _maybe(check: Check) -> Check:
    """``check``, or nothing for null (timm writes null for unset entries)."""
    return lambda where, key, value: None if value is None else check(where, key, value)


def _text_or_texts(where: str, key: str, value: Any) -> None:
    (_text if isinstance(value, str) else _texts)(where, key, value)


def _descriptions(where: str, key: str, value: Any) -> None:
    if not isinstance(value, dict) or len(value) > MAX_CLASSES:
        raise _fail(where, key, value, "a mapping of class names to descriptions")
    _texts(where, key, [*value.keys(), *value.values()], 2 * MAX_CLASSES)


# --- model_args -------------------------------------------------------------------------------------------
def _sides(where: str, key: str, value: Any) -> None:
    single = isinstance(value, int) and not isinstance(value, bool)
    for i, side in enumerate([value] if single else _list(where, key, value, 2, 2)):
        _int(where, key if single else f"{key}[{i}]", side, REGION_SIDE.low, MAX_SIDE)


def _face_sides(where: str, key: str, value: Any) -> None:
    for i, side in enumerate(_list(where, key, value, 2, 2)):
        _int(where, f"{key}[{i}]", side, IMAGE_SIDE.low, MAX_IMAGE_SIDE)


def _backbone(where: str, key: str, value: Any) -> None:
    plain = isinstance(value, str) and len(value) <= 100 and ":" not in value and "/" not in value
    if not plain or not timm.is_model(value) or value in RAN_VARIANTS:
        raise _fail(
            where,
            key,
            value,
            "the name of a timm model registered in this process, without 'hf-hub:', 'local-dir:' or any "
            "prefix (a folder's config names no download and no other folder)",
        )


def _regions(where: str, key: str, value: Any) -> None:
    if isinstance(value, str):
        _one_of(*sorted(REGION_PRESETS))(where, key, value)
        return
    for i, box in enumerate(_list(where, key, value, 1, MAX_REGIONS)):
        for j, v in enumerate(_list(where, f"{key}[{i}]", box, 4, 4)):
            _number(where, f"{key}[{i}][{j}]", v, 0.0, 1.0)
    try:
        validate_boxes(value, name=key)
    except ValueError as err:
        raise UserError(f"{where}: {err}") from None


# timm's pooling names: SelectAdaptivePool2d's and the vision transformers' (each backbone takes some)
BACKBONE_POOLS = ("", "avg", "max", "avgmax", "catavgmax", "fast", "fastavg", "fastmax", "fastavgmax")
BACKBONE_POOLS += ("fastcatavgmax", "token", "map", "prr")


def _pool_name(where: str, key: str, value: Any) -> None:
    if not isinstance(value, str) or value not in BACKBONE_POOLS:
        names = ", ".join(map(repr, BACKBONE_POOLS))
        raise _fail(where, key, value, f"one of timm's pooling names ({names})")


# The backbone's own arguments a folder may set: drop rates and pooling (``ran convert`` writes
# ``global_pool: avg`` for ArcFace IResNets without their embedding head).
BACKBONE_KWARGS: dict[str, Check] = {
    **{k: _numbers(0.0, 0.99) for k in ("drop_rate", "drop_path_rate", "drop_block_rate")},
    "global_pool": _pool_name,
}


def _backbone_kwargs(where: str, key: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _fail(where, key, value, f"a mapping of {', '.join(BACKBONE_KWARGS)}")
    _check_entries(where, key, value, BACKBONE_KWARGS, "a model folder's config is data")


def _check_entries(
    where: str, key: str, entries: dict[Any, Any], allowed: dict[str, Check], why: str
) -> None:
    """Each entry of the mapping ``key`` through its check in ``allowed``; a name not there is refused
    (the allowlist is what the package writes, so anything else did not come from it)."""
    for name, entry in entries.items():
        check = allowed.get(name)
        if check is None:
            raise UserError(
                f"{where}: {key}[{_show(name)}] is not allowed: {why} (allowed: {', '.join(allowed)})"
            )
        check(where, f"{key}[{name!r}]", entry)


MODEL_ARGS: dict[str, Check] = {
    "backbone": _backbone,
    "region_size": _sides,
    "regions": _regions,
    "attention": _one_of(*ATTENTION_MODES),
    "relation_attention": _one_of(True, False),
    "drop_rate": _numbers(0.0, 0.99),
    "in_chans": _ints(1, MAX_IN_CHANS),
    "global_pool": _one_of(*GLOBAL_POOLS),
    "backbone_kwargs": _backbone_kwargs,
    # the input contract (RegionAttentionNet.set_input_format); mean / std are checked apart (in_chans)
    "input_color": _one_of(*INPUT_COLORS),
    "face_size": _maybe(_face_sides),
    "input_mean": lambda where, key, value: None,
    "input_std": lambda where, key, value: None,
}


def check_model_args(args: Any, where: str) -> dict[str, Any]:
    """Refuse ``model_args`` (read from ``where``, a config.json) that hold anything but the constructor
    arguments this package writes (``MODEL_ARGS``), or a value of the wrong type or out of bounds."""
    if not isinstance(args, dict):
        raise _fail(where, "model_args", args, "a mapping")
    why = (
        "a model folder's config is data and names no file, download, device or dtype (the folder's "
        "weights already hold the backbone, so remove the key)"
    )
    _check_entries(where, "model_args", args, MODEL_ARGS, why)
    channels = args.get("in_chans", 3)
    for key, low, above_low in (("input_mean", -1000.0, False), ("input_std", MIN_STD, False)):
        if args.get(key) is not None:
            _numbers_of(where, f"model_args[{key!r}]", args[key], channels, low, above_low)
    _check_pixels(where, args)
    return args


def _check_pixels(where: str, args: dict[str, Any]) -> None:
    """The pixels of one face's regions, together, within what the commands make."""
    side = args.get("region_size", 224)
    height, width = (side, side) if isinstance(side, int) else side
    regions = args.get("regions", "ferplus6")
    count = len(REGION_PRESETS[regions]) if isinstance(regions, str) else len(regions)
    if count * height * width > MAX_REGION_PIXELS:
        raise UserError(
            f"{where}: model_args: {count} regions of {height}x{width} px are {count * height * width} "
            f"pixels per face; expected at most {MAX_REGION_PIXELS}"
        )


# --- pretrained_cfg ---------------------------------------------------------------------------------------
def _pool_size(where: str, key: str, value: Any) -> None:
    for i, v in enumerate(_list(where, key, value, 1, 4)):
        _int(where, f"{key}[{i}]", v, 1, MAX_SIDE)


# Every timm PretrainedCfg field except those naming a weight source (url, file, state_dict, hf_hub_id,
# hf_hub_filename, source), plus the package's own grayscale. Sizes, mean and std are checked apart
# (they depend on in_chans).
PRETRAINED_CFG: dict[str, Check] = {
    "custom_load": _one_of(False),
    "fixed_input_size": _one_of(False, True),
    "grayscale": _one_of(False, True),
    "interpolation": _one_of(*INTERPOLATIONS),
    "crop_mode": _one_of(*CROP_MODES),
    "crop_pct": _numbers(0.0, 1.0, above_low=True),
    "test_crop_pct": _maybe(_numbers(0.0, 1.0, above_low=True)),
    "num_classes": _ints(0, MAX_CLASSES),
    "label_offset": _maybe(_ints(0, 1)),
    "label_names": _maybe(check_class_names),
    "label_descriptions": _maybe(_descriptions),
    "pool_size": _maybe(_pool_size),
    "test_pool_size": _maybe(_pool_size),
    "first_conv": _maybe(_text_or_texts),
    "classifier": _maybe(_text_or_texts),
    "paper_ids": _maybe(_text_or_texts),
    "notes": _maybe(_text_or_texts),
    **{
        k: _maybe(_text)
        for k in ("architecture", "tag", "license", "description", "origin_url", "paper_name")
    },
}
SIZE_FIELDS = ("input_size", "test_input_size", "min_input_size")


def _check_sized(cfg: dict[str, Any], where: str, in_chans: int) -> None:
    """Face sizes (channels = in_chans, sides within IMAGE_SIDE); mean and std: in_chans finite values,
    std > 0."""
    for key in SIZE_FIELDS:
        value = cfg.get(key)
        if value is None:
            continue
        name = f"pretrained_cfg[{key!r}]"
        _list(where, name, value, 3, 3)
        _one_of(in_chans)(where, f"{name}[0]", value[0])
        _int(where, f"{name}[1]", value[1], IMAGE_SIDE.low, MAX_IMAGE_SIDE)
        _int(where, f"{name}[2]", value[2], IMAGE_SIDE.low, MAX_IMAGE_SIDE)
    for key, low, above_low in (("mean", -1000.0, False), ("std", MIN_STD, False)):
        if key in cfg:
            _numbers_of(where, f"pretrained_cfg[{key!r}]", cfg[key], in_chans, low, above_low)


def _numbers_of(where: str, name: str, value: Any, count: int, low: float, above_low: bool) -> None:
    """``count`` finite numbers in [low, 1000] (above ``low`` when ``above_low``): a mean or a std."""
    for i, v in enumerate(_list(where, name, value, count, count)):
        _number(where, f"{name}[{i}]", v, low, 1000.0, above_low)


def check_pretrained_cfg(cfg: Any, where: str, in_chans: int = 3) -> dict[str, Any]:
    """Refuse a ``pretrained_cfg`` naming a weight source (file, URL, Hub repo) or holding a value that
    breaks prediction (a zero std, a 60000 px face, a mean of the wrong length)."""
    if not isinstance(cfg, dict):
        raise _fail(where, "pretrained_cfg", cfg, "a mapping")
    for key, value in cfg.items():
        if key in SIZE_FIELDS or key in ("mean", "std"):
            continue
        check = PRETRAINED_CFG.get(key)
        if check is None:
            raise UserError(
                f"{where}: pretrained_cfg[{_show(key)}] is not allowed: a model folder's config is data and "
                "names no file, URL or Hub repo to load (the folder's model.safetensors holds the weights)"
            )
        check(where, f"pretrained_cfg[{key!r}]", value)
    _check_sized(cfg, where, in_chans)
    return cfg


def _is_timm_classifier(architecture: str) -> bool:
    """A plain image classifier registered in timm (``resnet18``): built from its name, no arguments.
    Only registered names, so a config never names code to run."""
    import timm

    return timm.is_model(architecture) and not architecture.startswith("ran")


# What timm's save_for_hf writes into a plain classifier's model_args; nothing else is taken.
PLAIN_MODEL_ARGS: dict[str, Check] = {
    "num_classes": _ints(0, MAX_CLASSES),
    "in_chans": _ints(1, MAX_IN_CHANS),
    "global_pool": _one_of("avg", "max", "avgmax", "catavgmax", ""),
}


def _plain_model_args(args: Any, where: str) -> dict[str, Any]:
    if not isinstance(args, dict):
        raise _fail(where, "model_args", args, "a mapping")
    _check_entries(
        where, "model_args", args, PLAIN_MODEL_ARGS, "a plain timm classifier is built from its name"
    )
    return args


def check_config(config: Any, where: str) -> dict[str, Any]:
    """A whole config.json: a RAN architecture, ``num_classes`` in bounds (timm lets it override
    ``pretrained_cfg``'s), ``model_args`` and ``pretrained_cfg`` as :func:`check_model_args` and
    :func:`check_pretrained_cfg` allow. Keys timm does not read are left alone. Returns the config."""
    if not isinstance(config, dict):
        raise _fail(where, "the file", config, "a JSON object (timm's config.json)")
    architecture = config.get("architecture")
    if not architecture:
        raise UserError(f"{where}: no 'architecture' entry (expected timm's config.json)")
    named = isinstance(architecture, str)  # a list or a mapping is no name (nor hashable)
    plain = named and architecture not in RAN_VARIANTS and _is_timm_classifier(architecture)
    if not named or (architecture not in RAN_VARIANTS and not plain):
        raise UserError(
            f"{where}: unknown architecture {_show(architecture)}: neither a RAN architecture "
            f"({', '.join(sorted(RAN_VARIANTS))}) nor a timm image classifier"
        )
    _int(where, "num_classes", config.get("num_classes"), 0, MAX_CLASSES)
    _maybe(_ints(0, 1 << 20))(where, "num_features", config.get("num_features"))
    args = (_plain_model_args if plain else check_model_args)(config.get("model_args", {}), where)
    check_pretrained_cfg(config.get("pretrained_cfg"), where, args.get("in_chans", 3))
    _maybe(check_class_names)(where, "label_names", config.get("label_names"))
    for key, names in (
        ("label_names", config.get("label_names")),
        ("pretrained_cfg['label_names']", config["pretrained_cfg"].get("label_names")),
    ):
        _check_label_count(where, key, names, config["num_classes"])
    return config


def _check_label_count(where: str, key: str, names: list[str] | None, num_classes: int) -> None:
    """One distinct name per class: names read beside the logits label each face, and a probability
    table keyed by name would merge two classes of one name."""
    if names is not None and (len(names) != num_classes or len(set(names)) != len(names)):
        raise UserError(
            f"{where}: {key} holds {len(names)} names, {len(set(names))} distinct; expected "
            f"{num_classes} distinct names, one per class (num_classes)"
        )


__all__ = [
    "INITIALISATION_ARGS",
    "MAX_CLASSES",
    "MAX_REGIONS",
    "MAX_IMAGE_SIDE",
    "MAX_SIDE",
    "MODEL_ARGS",
    "PRETRAINED_CFG",
    "check_class_names",
    "check_config",
    "check_model_args",
    "check_pretrained_cfg",
]
