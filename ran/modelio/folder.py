"""A model folder is data: what one may hold, checked before anything in it is used or memory is taken.

A model folder (``ran.save_pretrained``, ``ran convert``, a ``ran train`` checkpoint) holds JSON and
safetensors files. Before a model is built from one:

* a pickle anywhere in it (by suffix, in any case) refuses the folder: it did not come from this package;
* every JSON file is size-checked before it is read (:data:`MAX_JSON_BYTES`);
* every safetensors file's header alone is read (8-byte length + JSON, at most :data:`MAX_HEADER_BYTES`)
  and must declare tensors that exactly fill the file;
* ``config.json`` may hold only what :mod:`ran.models.folder_config` allows (no files, downloads, devices
  or dtypes; sizes in bounds);
* ``model.safetensors`` must declare exactly the tensors and shapes of the model ``config.json`` describes,
  compared with that model built on the meta device (no memory), so a 30-million-class head or an extra
  8 GB tensor is refused before anything is allocated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import timm
import torch

from ran.errors import UserError, one_line
from ran.files import faults_named
from ran.models.folder_config import check_config

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# What torch.save / accelerate's save_state / pickle write: never part of a folder this package writes.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".tar")
LEGACY_CHECKPOINT_FILE = "ran_model.json"  # ran 0.1 training checkpoints (accelerate pickles beside it)
MAX_JSON_BYTES = 4 << 20  # a RAN's config.json is about 2 KB, a checkpoint's optimizer.json tens of KB
MAX_HEADER_BYTES = 16 << 20  # ResNet-101's safetensors header is about 60 KB
DTYPE_BYTES = {
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E4M3", "F8_E5M2"), 1),
    **dict.fromkeys(("U16", "I16", "F16", "BF16"), 2),
    **dict.fromkeys(("U32", "I32", "F32"), 4),
    **dict.fromkeys(("U64", "I64", "F64"), 8),
}
# What a float weight may be stored as (read as itself, then cast to the model's dtype).
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
Shapes = dict[str, tuple[int, ...]]
Dtypes = dict[str, str]  # safetensors' dtype names by tensor


def pickle_files(folder: Path) -> list[Path]:
    """The files in ``folder`` whose suffix (any case: ``.PTH`` too) is a pickle's."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)


def refuse_pickles(folder: Path, flag: str = "") -> None:
    """The one folder-safety check, for model folders and training checkpoints alike, before anything in
    ``folder`` is read: a ran 0.1 checkpoint (its resume state is pickled) or any pickle (by suffix, in any
    case) refuses the folder. ``flag`` names the option that gave it (``--resume``) in the message."""
    pickles = [p.name for p in pickle_files(folder)]
    given = f"{flag} " if flag else ""
    if (folder / LEGACY_CHECKPOINT_FILE).is_file():
        raise UserError(
            f"{given}{folder}: a training checkpoint from ran 0.1, whose resume state is "
            f"pickled ({', '.join(pickles) or LEGACY_CHECKPOINT_FILE}); this version never loads pickles, so "
            "it neither loads nor continues it. Use the old run's best/ folder (--model OUT/best), or train "
            "again"
        )
    if pickles:
        raise UserError(
            f"{given}{folder / pickles[0]}: a pickle in a model folder; this package never loads pickles and "
            "refuses the folder (model folders and training checkpoints hold only JSON and safetensors files)"
        )


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file of a model folder, refused unread when it is over ``limit`` bytes."""
    size = path.stat().st_size
    if size <= limit:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    if size > limit or len(data) > limit:
        raise UserError(f"{path}: {size} bytes; a model folder's JSON files are at most {limit} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path}: not valid JSON ({one_line(err, 120)})") from None


def _corrupt(path: Path, why: str) -> UserError:
    return UserError(f"{path}: unreadable safetensors file, truncated or corrupt ({why})")


def _tensor_span(path: Path, name: str, entry: Any) -> tuple[int, int, tuple[int, ...], str]:
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        numbers = [*shape, begin, end]
        if len(shape) > 8 or not all(type(n) is int and n >= 0 for n in numbers):
            raise ValueError
        nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
    except (KeyError, TypeError, ValueError):
        raise _corrupt(path, f"tensor {name[:80]!r}: bad dtype, shape or offsets") from None
    if end - begin != nbytes:
        raise _corrupt(
            path, f"tensor {name[:80]!r}: shape {shape} needs {nbytes} bytes, offsets span {end - begin}"
        )
    return begin, end, tuple(shape), dtype


def read_safetensors_header(path: Path) -> Shapes:
    """The tensor shapes a safetensors file declares, from its header alone (no tensor is read)."""
    return {name: shape for name, (_, shape) in _read_header(path).items()}


def _read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} from a safetensors file's header.

    Refused: a header over :data:`MAX_HEADER_BYTES` or longer than the file, and tensors that do not fill
    the file exactly (declared past its end, overlapping, or leaving bytes over), as safetensors requires.
    """
    size = path.stat().st_size
    with faults_named(path), path.open("rb") as handle:  # a read error names no file by itself
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise _corrupt(path, f"header length {length}, file {size} bytes, at most {MAX_HEADER_BYTES}")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (ValueError, RecursionError):
            raise _corrupt(path, "the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "the header is not a JSON object")
    header.pop("__metadata__", None)
    spans = sorted((*_tensor_span(path, str(name), entry), str(name)) for name, entry in header.items())
    position, data_bytes = 0, size - 8 - length
    for begin, end, _, _, name in spans:
        if begin != position:
            raise _corrupt(path, f"tensor {name[:80]!r} starts at {begin}, expected {position}")
        position = end
    if position != data_bytes:
        raise _corrupt(path, f"the header declares {position} bytes of tensors, the file holds {data_bytes}")
    return {name: (dtype, shape) for _, _, shape, dtype, name in spans}


def check_folder_files(folder: Path) -> dict[str, dict[str, tuple[str, tuple[int, ...]]]]:
    """Refuse a folder that holds pickles, oversized or invalid JSON, or unreadable safetensors files;
    returns each safetensors file's declared {tensor: (dtype, shape)} by file name.

    A model folder (and a training checkpoint, which is one) holds only JSON and safetensors; a pickle in
    it, or a tampered file, means it did not come from this package as it is, so nothing in it is trusted.
    """
    refuse_pickles(folder)
    headers: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        suffix = path.suffix.lower()
        if suffix == ".json":
            read_json(path)
        elif suffix == ".safetensors":
            headers[path.name] = _read_header(path)
    return headers


def _mismatch(name: str, got: tuple[int, ...] | None, expected: tuple[int, ...] | None) -> str:
    name = name[:80]
    if expected is None:
        return f"{name} {list(got or ())}: not a tensor of this model"
    if got is None:
        return f"{name}: missing, expected {list(expected)}"
    return f"{name} {list(got)}, expected {list(expected)}"


def _stored_kind(dtype: str) -> str:
    """What a value stored as safetensors' ``dtype`` (``F32``, ``I64``, ``F8_E4M3``) is to a model."""
    if dtype in FLOAT_DTYPES:
        return "floating point"
    return "boolean" if dtype == "BOOL" else "integer" if dtype[:1] in ("I", "U") else dtype


def _model_kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "floating point"
    return "boolean" if dtype == torch.bool else "integer"


def _check_dtypes(weights: Path, model: torch.nn.Module, dtypes: Dtypes) -> None:
    """A float weight stored as integers (or fp8) would be cast silently and answer nonsense: each tensor's
    stored kind must be the model's (float as F16 / BF16 / F32 / F64, integer counters as integers)."""
    for name, tensor in model.state_dict().items():
        stored, expected = dtypes.get(name), _model_kind(tensor.dtype)
        if stored is not None and _stored_kind(stored) != expected:
            allowed = f" ({', '.join(FLOAT_DTYPES)})" if expected == "floating point" else ""
            raise UserError(
                f"{weights}: tensor {name[:80]!r} is stored as {stored}; this model's is {expected}{allowed}"
            )


def check_weights_fit(
    weights: Path, config: dict[str, Any], shapes: Shapes, dtypes: Dtypes | None = None
) -> None:
    """Refuse weights whose tensors or shapes differ from the model ``config`` describes (built on the meta
    device: no memory, no weights), or whose stored dtypes are of another kind (``dtypes``, when given).
    BatchNorm step counters may be absent (frozen BatchNorm has none)."""
    args = {k: v for k, v in (config.get("model_args") or {}).items() if k != "num_classes"}
    try:
        with torch.device("meta"):
            model = timm.create_model(config["architecture"], num_classes=config["num_classes"], **args)
    except AssertionError as err:  # timm's own argument checks (a pooling this backbone lacks, say)
        where = weights.parent / CONFIG_NAME
        raise UserError(f"{where}: timm cannot build the model it describes: {err}") from err
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [k for k in sorted({*expected, *shapes}) if expected.get(k) != shapes.get(k)]
    wrong = [k for k in wrong if not (k.endswith("num_batches_tracked") and k not in shapes)]
    if wrong:
        details = "; ".join(_mismatch(k, shapes.get(k), expected.get(k)) for k in wrong[:4])
        more = f" (and {len(wrong) - 4} more)" if len(wrong) > 4 else ""
        raise UserError(
            f"{weights}: the weights do not fit the model that {CONFIG_NAME} describes: {details}{more}"
        )
    _check_dtypes(weights, model, dtypes or {})


def check_folder(folder: str | Path) -> dict[str, Any]:
    """Validate a model folder before any model is built from it (see the module docstring); returns its
    config. Errors are one line naming the file and what was expected."""
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder}: no {CONFIG_NAME} (expected a folder written by ran.save_pretrained, ran convert "
            "or ran train)"
        )
    config = check_config(read_json(config_path), str(config_path))
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} beside {CONFIG_NAME}")
    header = check_folder_files(folder)[WEIGHTS_NAME]
    shapes = {name: shape for name, (_, shape) in header.items()}
    check_weights_fit(weights, config, shapes, {name: dtype for name, (dtype, _) in header.items()})
    return config


__all__ = [
    "CONFIG_NAME",
    "LEGACY_CHECKPOINT_FILE",
    "MAX_HEADER_BYTES",
    "MAX_JSON_BYTES",
    "WEIGHTS_NAME",
    "check_folder",
    "check_folder_files",
    "pickle_files",
    "refuse_pickles",
    "read_json",
    "read_safetensors_header",
]
