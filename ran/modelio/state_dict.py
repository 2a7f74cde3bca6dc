"""Reading weight files safely, by timm's ``load_state_dict``: safetensors, or torch pickles restricted to
tensors (``weights_only=True``), unwrapped from ``{'state_dict': ...}`` / ``{'model': ...}`` and with the
``module.`` / ``_orig_mod.`` prefixes of DataParallel and torch.compile removed."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from ran.errors import UserError, one_line

# Wrappers timm does not unwrap itself (it knows 'state_dict', 'model' and the EMA keys).
STATE_DICT_KEYS = ("model_state_dict", "net")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a .safetensors (any case), .pth or .pth.tar file; a file that needs
    pickled code is refused rather than executed, and any other unreadable file is one clear error."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: a folder; expected a weight file (.pth, .pth.tar, .safetensors)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {'not a regular file' if path.exists() else 'no such weight file'}")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    from timm.models import load_state_dict

    try:
        with warnings.catch_warnings():  # torch's note on a pickle not written by torch.save; the file
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)  # loads or is refused
            obj = load_state_dict(str(path), use_ema=False, weights_only=True)
    # torch's reader of the legacy format meets text and other non-checkpoints with any of the last four
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        IndexError,
        KeyError,
        ValueError,
        UnicodeError,
    ) as err:
        refused = err if isinstance(err, pickle.UnpicklingError) else err.__cause__  # timm wraps it
        if isinstance(refused, pickle.UnpicklingError):
            found = re.search(r"GLOBAL ([\w.]+)", str(refused))
            needs = f" ({found.group(1)})" if found else ""
            raise UserError(
                f"{path}: refused to load: the file needs pickled Python code{needs}, which this package "
                "never runs; expected a checkpoint of plain tensors (a state dict, optionally under "
                "'state_dict')"
            ) from None
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({one_line(err, 200)})") from None
    except AttributeError:  # timm found no mapping to clean (a bare tensor or list)
        obj = None
    return _tensors_only(path, obj)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None


def _tensors_only(path: Path, obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict of tensors (optionally under 'state_dict')")
    return dict(obj)
