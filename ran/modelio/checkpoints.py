"""Training checkpoints that anything can load and nothing can turn into code.

A checkpoint folder ``OUT/checkpoints/<step_0000004|epoch_002>/`` *is* a standard model folder
(``config.json`` + ``model.safetensors`` + model card, written by
:func:`ran.modelio.hub.write_model_files`), so
``ran.load_model`` and ``ran evaluate --model`` read it as any saved model. Beside the model it holds what
resuming needs, written by this module in two safe formats only:

* ``optimizer.safetensors`` (the optimizer's tensors) + ``optimizer.json`` (its groups and other values);
* ``scheduler.json``, ``grad_scaler.json`` (fp16 only) and ``progress.json`` (position, history, sums).

No pickle is written or read: accelerate's ``save_state`` / ``load_state`` are not used (``load_state``
unpickles ``custom_checkpoint_*.pkl`` and ``random_states_*.pkl`` from the folder it is given). The random
state needs no saving at all: every step reseeds from (seed, epoch, batch, process).
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ran.errors import UserError, one_line
from ran.files import staging_dir, write_json
from ran.modelio.folder import read_json, read_safetensors_header, refuse_pickles
from ran.modelio.loading import CONFIG_NAME, WEIGHTS_NAME, check_folder
from ran.numbers import brief

CHECKPOINTS = "checkpoints"
PROGRESS_FILE = "progress.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_FILE = "optimizer.json"
SCHEDULER_FILE = "scheduler.json"
SCALER_FILE = "grad_scaler.json"
RESUME_FILES = (CONFIG_NAME, WEIGHTS_NAME, OPTIMIZER_TENSORS, OPTIMIZER_FILE, SCHEDULER_FILE, PROGRESS_FILE)
FORMAT = "ran-checkpoint-2"
CHECKPOINT_NAME = re.compile(r"(?:step|epoch)_\d+")


MAX_COUNT = 2**53  # epochs, batches and updates a progress record may count (a float holds them exactly)


@dataclass
class Progress:
    """Where a run stands; ``epoch_sums`` = (loss, ce, rb, correct) summed over the epoch's images so far
    and over all processes, ``epoch_seen`` = those images."""

    epoch: int = 0
    batches_done: int = 0
    global_step: int = 0
    best_accuracy: float = -1.0
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    epoch_seen: int = 0
    num_processes: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Progress:
        """Checked field by field: a wrong type is a corrupt file, not a crash later."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{where}: not a progress record of this version (expected format {FORMAT!r})")
        expected = {
            "epoch": int,
            "batches_done": int,
            "global_step": int,
            "best_accuracy": (int, float),
            "history": list,
            "epoch_sums": list,
            "epoch_seen": int,
            "num_processes": int,
        }
        for key, kind in expected.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise UserError(f"{where}: corrupt ({key!r} missing or of the wrong type)")
        for key in ("epoch", "batches_done", "global_step", "epoch_seen"):  # tensorboard takes int64 steps
            if not 0 <= data[key] <= MAX_COUNT:
                raise UserError(
                    f"{where}: corrupt ({key!r} = {brief(data[key])}; expected a count 0..{MAX_COUNT})"
                )
        if data["num_processes"] < 1:
            raise UserError(f"{where}: corrupt ('num_processes' = {data['num_processes']}; expected >= 1)")
        if not (data["best_accuracy"] == -1 or 0 <= data["best_accuracy"] <= 1):  # NaN fails both
            raise UserError(
                f"{where}: corrupt ('best_accuracy' = {data['best_accuracy']}; expected 0..1, or -1)"
            )
        sums = data["epoch_sums"]
        if len(sums) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in sums):
            raise UserError(f"{where}: corrupt ('epoch_sums' must be 4 finite numbers)")
        best = data.get("best_epoch")
        if best is not None and (
            not isinstance(best, int) or isinstance(best, bool) or not 1 <= best <= MAX_COUNT
        ):
            raise UserError(f"{where}: corrupt ('best_epoch' must be an epoch number >= 1 or null)")
        return cls(**{k: data.get(k) for k in (*expected, "best_epoch")})


@dataclass
class ResumeState:
    """Everything read from a checkpoint folder, checked, before the run touches its outputs."""

    path: Path
    progress: Progress
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None


# --- writing ---------------------------------------------------------------------------------------
def optimizer_files(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer ``state_dict`` as (tensors named ``<param index>.<name>``, everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        values[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous()
            else:
                values[str(index)][name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": values}


def write_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    class_names: list[str],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    progress: Progress,
) -> Path:
    """Write one checkpoint folder atomically (a staging folder renamed into place)."""
    from safetensors.torch import save_file

    from ran.modelio.hub import write_model_files

    with staging_dir(folder, overwrite=True, recognise=is_checkpoint_folder) as staging:
        write_model_files(model, staging, label_names=class_names)
        tensors, rest = optimizer_files(optimizer.state_dict())
        save_file(tensors, str(staging / OPTIMIZER_TENSORS))
        write_json(staging / OPTIMIZER_FILE, rest)
        write_json(staging / SCHEDULER_FILE, scheduler.state_dict())
        if scaler is not None:
            write_json(staging / SCALER_FILE, scaler.state_dict())
        write_json(staging / PROGRESS_FILE, progress.to_json())
    return folder


def _global_step(folder: Path) -> int:
    try:
        return int(read_json(folder / PROGRESS_FILE)["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def is_checkpoint_name(name: str) -> bool:
    """``step_0000004`` / ``epoch_002``: the names a run gives its checkpoints (anything else under
    OUT/checkpoints is not the run's, and is never pruned or cleared)."""
    return CHECKPOINT_NAME.fullmatch(name) is not None


def is_checkpoint_folder(folder: Path) -> bool:
    """A checkpoint folder as a run writes one: a model folder with the resume files and nothing else
    (anything else there is the user's, and is never replaced or pruned)."""
    from ran.modelio.hub import is_model_folder

    return is_model_folder(folder, extra=(*RESUME_FILES, SCALER_FILE))


def _saved_checkpoints(root: Path) -> list[Path]:
    """The run's checkpoint folders under ``root`` (real folders, not links, holding only a checkpoint's
    files), oldest first: by the second they were written, then update count and name (a run resumed
    from an earlier checkpoint writes newer ones with fewer updates than the abandoned ones)."""
    if not root.is_dir() or root.is_symlink():
        return []

    def written(path: Path) -> tuple[int, int, str]:
        return int((path / PROGRESS_FILE).stat().st_mtime), _global_step(path), path.name

    found = [p for p in root.iterdir() if is_checkpoint_name(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(
        (p for p in found if is_checkpoint_folder(p) and (p / PROGRESS_FILE).is_file()), key=written
    )


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (one whose progress can be read), if any."""
    complete = [p for p in _saved_checkpoints(root) if _global_step(p) >= 0]
    return complete[-1] if complete else None


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (by update count) under ``root``; returns them."""
    if not keep:
        return []
    saved = _saved_checkpoints(root)
    for old in saved[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return saved[:-keep]


# --- reading ---------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except OSError as err:
        raise UserError(f"{path}: unreadable ({err.strerror or err})") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: unreadable safetensors file ({one_line(err)})") from None


def _check_optimizer_size(path: Path) -> None:
    """The optimizer's tensors (headers checked by ``check_folder``) are read whole: refuse more than an
    optimizer keeps, a few tensors per weight (Adam: 2, AMSGrad: 3), before memory is taken."""

    def declared(name: str) -> int:
        return sum(math.prod(shape) for shape in read_safetensors_header(path / name).values())

    weights, state = declared(WEIGHTS_NAME), declared(OPTIMIZER_TENSORS)
    if state > 4 * weights + 1024:
        raise UserError(
            f"{path / OPTIMIZER_TENSORS}: declares {state} values for a model of {weights}; an optimizer "
            "keeps at most a few per weight"
        )


def _read_optimizer(path: Path) -> dict[str, Any]:
    """The optimizer ``state_dict`` from ``optimizer.json`` + ``optimizer.safetensors``."""
    meta = _read_json(path / OPTIMIZER_FILE)
    if not isinstance(meta, dict) or not isinstance(meta.get("param_groups"), list):
        raise UserError(f"{path / OPTIMIZER_FILE}: corrupt (no 'param_groups' list)")
    if not isinstance(meta.get("state"), dict) or not all(
        isinstance(v, dict) for v in meta["state"].values()
    ):
        raise UserError(f"{path / OPTIMIZER_FILE}: corrupt (no 'state' mapping)")
    groups = meta["param_groups"]
    if not all(isinstance(group, dict) for group in groups) or not _finite(groups):
        raise UserError(
            f"{path / OPTIMIZER_FILE}: corrupt (a hyper-parameter of 'param_groups' is not a finite number)"
        )
    _check_optimizer_size(path)
    tensors = _read_tensors(path / OPTIMIZER_TENSORS)
    state: dict[int, dict[str, Any]] = {}
    try:
        for index, values in meta["state"].items():
            state[int(index)] = dict(values)
        for key, tensor in tensors.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = tensor
    except ValueError:
        raise UserError(f"{path}: corrupt optimizer state (parameter indices must be integers)") from None
    return {"state": state, "param_groups": meta["param_groups"]}


def _finite(value: Any) -> bool:
    """Whether every number in ``value`` (nested lists and mappings) is finite: the optimizer's learning
    rate, momentum or weight decay read from a file (JSON has NaN and Infinity)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def read_checkpoint(path: str | Path) -> ResumeState:
    """Read and check a checkpoint folder for ``--resume``; one clear ValueError when it cannot serve."""
    path = Path(path).expanduser().absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint folder")
    refuse_pickles(path, "--resume")
    missing = [name for name in RESUME_FILES if not (path / name).is_file()]
    if missing:
        raise UserError(
            f"--resume {path}: not a complete training checkpoint (missing {', '.join(missing)}); "
            f"expected a folder under OUT/{CHECKPOINTS}/"
        )
    try:
        check_folder(path)
        progress = Progress.from_json(_read_json(path / PROGRESS_FILE), str(path / PROGRESS_FILE))
        weights = _read_tensors(path / WEIGHTS_NAME)
        optimizer = _read_optimizer(path)
        scheduler = _read_json(path / SCHEDULER_FILE)
        scaler = _read_json(path / SCALER_FILE) if (path / SCALER_FILE).is_file() else None
    except (ValueError, FileNotFoundError) as err:
        raise UserError(f"--resume {path}: cannot load the checkpoint: {err}") from None
    for name, value in ((SCHEDULER_FILE, scheduler), (SCALER_FILE, scaler)):
        if value is not None and not isinstance(value, dict):
            raise UserError(f"--resume {path}: cannot load the checkpoint: {name} is not a JSON object")
    return ResumeState(path, progress, weights, optimizer, scheduler, scaler)


def _keep_memory_format(optimizer: torch.optim.Optimizer) -> None:
    """Optimizer state saved contiguous gets the layout of its parameter again (channels-last)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.dim() == 4:
                    optimizer.state[param][name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def load_model_weights(model: torch.nn.Module, state: ResumeState) -> None:
    """The checkpoint's weights into ``model``, which must be the network the run's config builds."""
    try:
        model.load_state_dict(state.weights, strict=True)
    except RuntimeError as err:
        details = "; ".join(line.strip() for line in str(err).splitlines()[1:4] if line.strip())
        raise UserError(
            f"--resume {state.path}: the weights do not fit the model this run's config builds: {details}"
        ) from None


def load_training_state(state: ResumeState, optimizer: Any, scheduler: Any, scaler: Any) -> None:
    """Optimizer, schedule and gradient-scaler state from a checked checkpoint."""
    try:
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if scaler is not None and state.scaler is not None:
            scaler.load_state_dict(state.scaler)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise UserError(
            f"--resume {state.path}: the optimizer state does not fit this run "
            f"({type(err).__name__}: {one_line(err)})"
        ) from None
    _keep_memory_format(getattr(optimizer, "optimizer", optimizer))


__all__ = [
    "CHECKPOINTS",
    "PROGRESS_FILE",
    "Progress",
    "ResumeState",
    "is_checkpoint_name",
    "load_model_weights",
    "load_training_state",
    "latest_checkpoint",
    "prune_checkpoints",
    "read_checkpoint",
    "write_checkpoint",
]
