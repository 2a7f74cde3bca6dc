"""int8 in PyTorch: a RAN whose shared backbone runs quantized convolutions (``ran export --int8 --torch``).

Why beside the ONNX int8 graph (``ran.quantize``): onnxruntime's int8 convolutions use AVX-512 VNNI only,
while PyTorch's ``x86`` quantized engine (oneDNN) also uses AMX-INT8 where the CPU has it. On a 2-core Xeon
with AMX, ``ran_resnet18`` (8 faces of 224 px) runs about 4.5x its fp32 speed this way, against 1.6x for
the int8 ONNX graph.

What is quantized: the backbone, traced by torch.fx (``prepare_fx`` / ``convert_fx``), with int8 weights
per output channel and uint8 activations over the full 0-255 range (VNNI and AMX need no reduced range),
each covering what the calibration faces gave it (min / max). The region cut, the first convolution (the
stem, which sees the pixels) and the attention head stay float. Measured on the full demo model (1,000 test
faces, predictions unchanged against fp32): this recipe 98.4 %; the stem quantized too 97.6 %; histogram
ranges 98.7 % there but 97.5 % on the tests' small model (99.2 % with min / max); the default x86 recipe
(7-bit activations, histogram) 97.9 %. Quantizing the stem would run ``ran_resnet18`` about 1.2x faster.

What is saved is data, not a pickled module: the folder holds the float model as any model folder does
(``config.json``, ``model.safetensors``) and ``int8.json``, the scale and zero point of every activation
the calibration measured. Loading rebuilds the same int8 model from those numbers (the weights' own scales
follow from the weights), exactly: the logits equal the calibrated model's.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ran.errors import UserError

INT8_NAME = "int8.json"  # beside config.json and model.safetensors in an int8 model folder
WRITTEN_BY = "ran export --int8 --torch"
ENGINE = "x86"
FORMAT = 1
QUANTIZED_DTYPES = {"quint8": (0, 255), "qint8": (-128, 127)}
SCALES = (1e-10, 1e6)  # what an activation's step may be: a float32 far from 0 and from overflow


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao's FX quantization warns on every call (deprecation notes, observer arguments): none of it
    is the user's to act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def stem_name(backbone: nn.Module) -> str | None:
    """The backbone's first convolution (modules are registered in the order a CNN runs them)."""
    return next((name for name, m in backbone.named_modules() if isinstance(m, nn.Conv2d)), None)


def _qconfig_mapping(backbone: nn.Module) -> Any:
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    mapping = get_default_qconfig_mapping(ENGINE)
    activation = MinMaxObserver.with_args(reduce_range=False)
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    mapping.set_global(QConfig(activation=activation, weight=weight))
    stem = stem_name(backbone)
    if stem:
        mapping.set_module_name(stem, None)
    return mapping


def observed(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose backbone records its activations (the calibration pass runs it)."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    if not hasattr(model, "_cut") or not hasattr(model, "backbone"):
        raise UserError(f"int8 (torch): expected a RAN, got {type(model).__name__}")
    torch.backends.quantized.engine = ENGINE
    copied = copy.deepcopy(model).float().eval()
    size = tuple(copied.region_size)
    example = torch.zeros(1, copied.in_chans, *size).contiguous(memory_format=torch.channels_last)
    try:
        with _quiet():
            copied.backbone = prepare_fx(copied.backbone, _qconfig_mapping(copied.backbone), (example,))
    except Exception as err:  # noqa: BLE001 - torch.fx raises many kinds on an untraceable model
        raise UserError(
            f"int8 (torch): backbone {model.backbone_name!r} cannot be traced by torch.fx "
            f"({type(err).__name__}); use the int8 ONNX graph (ran export --int8 --onnx) instead"
        ) from None
    copied.fold_batchnorm = False  # the quantizer folds BatchNorm itself
    return copied


def _observers(backbone: nn.Module) -> dict[str, Any]:
    from torch.ao.quantization.observer import ObserverBase

    return {
        name: module
        for name, module in backbone.named_modules()
        if isinstance(module, ObserverBase) and str(module.dtype).removeprefix("torch.") in QUANTIZED_DTYPES
    }


def calibrate(model: nn.Module, batches: Iterable[np.ndarray]) -> dict[str, Any]:
    """Run ``model``'s observed copy over uint8 face ``batches``; the scales and zero points it measured
    (``int8.json``'s content)."""
    from ran.inference import infer

    watcher = observed(model)
    for images in batches:
        infer(watcher, torch.from_numpy(images))
    entries = {}
    with _quiet():
        for name, observer in _observers(watcher.backbone).items():
            scale, zero_point = observer.calculate_qparams()
            entries[name] = {
                "scale": float(scale.reshape(-1)[0]),
                "zero_point": int(zero_point.reshape(-1)[0]),
                "dtype": str(observer.dtype).removeprefix("torch."),
            }
    return {
        "written_by": WRITTEN_BY,
        "format": FORMAT,
        "engine": ENGINE,
        "torch": torch.__version__.split("+")[0],
        "float_modules": [stem_name(model.backbone)],
        "activations": entries,
    }


def quantized(model: nn.Module, calibration: dict[str, Any], where: str = INT8_NAME) -> nn.Module:
    """The int8 copy of ``model`` that ``calibration`` (checked first) describes; runs on the CPU only."""
    from torch.ao.quantization.observer import FixedQParamsObserver
    from torch.ao.quantization.quantize_fx import convert_fx

    entries = check_calibration(calibration, where)
    net = observed(model)
    found = _observers(net.backbone)
    if set(found) != set(entries):
        raise UserError(
            f"{where}: its {len(entries)} activation ranges do not fit this model's {len(found)} "
            f"(calibrated with another model or torch version: {str(calibration.get('torch'))[:20]!r}); "
            "export it again"
        )
    for name, entry in entries.items():
        expected = str(found[name].dtype).removeprefix("torch.")
        if entry["dtype"] != expected:  # the kernels take the dtype the model's observer chose, no other
            raise UserError(f"{where}: activation {name!r}: dtype {entry['dtype']!r}, expected {expected!r}")
        low, high = QUANTIZED_DTYPES[entry["dtype"]]
        fixed = FixedQParamsObserver(
            entry["scale"], entry["zero_point"], getattr(torch, entry["dtype"]), quant_min=low, quant_max=high
        )
        parent, _, attr = name.rpartition(".")
        setattr(net.backbone.get_submodule(parent) if parent else net.backbone, attr, fixed)
    with _quiet():
        net.backbone = convert_fx(net.backbone)
    net.runtime_precision = "int8"
    return net


def check_calibration(calibration: Any, where: str) -> dict[str, dict[str, Any]]:
    """``int8.json`` is data: a known kind and format, and for every activation a finite positive scale,
    an integer zero point inside its dtype's range. One line naming the file otherwise."""
    if not isinstance(calibration, dict) or calibration.get("written_by") != WRITTEN_BY:
        raise UserError(f"{where}: not written by {WRITTEN_BY}")
    if calibration.get("format") != FORMAT or calibration.get("engine") != ENGINE:
        raise UserError(f"{where}: expected format {FORMAT} for the {ENGINE!r} engine; export it again")
    entries = calibration.get("activations")
    if not isinstance(entries, dict) or not entries:
        raise UserError(f"{where}: 'activations' must map each activation to its scale and zero point")
    for name, entry in entries.items():
        _check_entry(name, entry, where)
    return entries


def _check_entry(name: str, entry: Any, where: str) -> None:
    dtype = entry.get("dtype") if isinstance(entry, dict) else None
    ok = isinstance(dtype, str) and dtype in QUANTIZED_DTYPES  # a list or a mapping is no dtype name
    scale, zero_point = (entry.get(k) if ok else None for k in ("scale", "zero_point"))
    ok = ok and isinstance(scale, float) and math.isfinite(scale) and SCALES[0] <= scale <= SCALES[1]
    ok = ok and isinstance(zero_point, int) and not isinstance(zero_point, bool)
    if ok:
        low, high = QUANTIZED_DTYPES[entry["dtype"]]
        ok = low <= zero_point <= high
    if not ok or not name.replace("_", "").replace(".", "").isalnum():
        raise UserError(
            f"{where}: activation {str(name)[:80]!r}: expected a scale in [{SCALES[0]:g}, {SCALES[1]:g}] and "
            "an integer zero point inside its dtype's range"
        )


def read_calibration(folder: str | Path) -> dict[str, Any] | None:
    """``folder``'s ``int8.json`` (size-checked), or None where the folder holds a float model only."""
    from ran.modelio.folder import read_json

    path = Path(folder).expanduser() / INT8_NAME
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():  # a folder, a device, a dangling link: never silently the float model instead
        raise UserError(f"{path}: not a regular file; expected the int8 ranges {WRITTEN_BY} writes")
    return read_json(path)


def is_int8_folder(folder: Path) -> bool:
    """A folder ``ran export --int8 --torch`` wrote: a model folder with ``int8.json`` (and nothing else),
    which ``--overwrite`` may replace."""
    from ran.modelio.hub import is_model_folder

    return is_model_folder(folder, extra={INT8_NAME})


def with_calibration(model: nn.Module, folder: str | Path | None) -> nn.Module:
    """``model`` as int8 where the folder it was read from (a local folder or a Hub snapshot, see
    ``ran.modelio.loading.model_folder``) holds ``int8.json`` (written by ``ran export --int8 --torch``),
    else as it is."""
    table = None if folder is None else read_calibration(folder)
    if table is None:
        return model
    return quantized(model, table, str(Path(folder).expanduser() / INT8_NAME))


__all__ = [
    "ENGINE",
    "INT8_NAME",
    "WRITTEN_BY",
    "calibrate",
    "is_int8_folder",
    "check_calibration",
    "observed",
    "quantized",
    "read_calibration",
    "stem_name",
    "with_calibration",
]
