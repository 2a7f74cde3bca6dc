"""Reading weight files safely: safetensors, or torch pickles restricted to tensors (weights_only)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from ran.errors import UserError

STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} from a .safetensors, .pth or .pth.tar file.

    Pickled files are read with ``torch.load(weights_only=True)``: a file that needs arbitrary
    pickled code is refused rather than executed. Wrapped checkpoints ({'state_dict': ...}) are
    unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise UserError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        needs = f" ({found.group(1)})" if found else ""
        raise UserError(
            f"{path}: refused to load: the file needs pickled Python code{needs}, which this package never "
            "runs; expected a checkpoint of plain tensors (a state dict, optionally under 'state_dict')"
        ) from None
    except (RuntimeError, EOFError) as err:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict of tensors (optionally under 'state_dict')")
    return dict(obj)
