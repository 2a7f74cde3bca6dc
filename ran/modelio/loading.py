"""The one way a name or a path becomes a RAN model, whichever command asks.

:func:`resolve_model_source` decides where the weights come from, in the manner of timm's
``_resolve_pretrained_source``; :func:`load_model` builds the model from there:

* a folder holding ``config.json`` + ``model.safetensors``: written by ``ran.save_pretrained``,
  ``ran convert``, or a ``ran train`` checkpoint (``OUT/checkpoints/<name>``, which *is* such a folder);
* a Hub id ``ORG/NAME`` (``revision`` pins a branch, tag or commit), downloaded to the Hugging Face cache;
* a registered name such as ``ran_resnet18``: the architecture with random weights (with a warning).

:func:`model_folder` gives the folder itself (a Hub id's snapshot, with optional files such as an int8
model's ``int8.json`` from the same commit), for what reads more than the model from it.

Only safetensors and JSON are read, never a pickle, and a folder's ``config.json`` is data, never
instructions: it names no file, download, device or dtype, and its sizes are checked against the weights'
header before memory is taken (:mod:`ran.modelio.folder`). Errors name the thing given and what was expected.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch

import ran.models  # noqa: F401  (registers the architectures)
from ran.constants import REPO_ID
from ran.errors import Note, UserError
from ran.modelio.folder import CONFIG_NAME, WEIGHTS_NAME, check_folder, refuse_pickles
from ran.models import RAN_VARIANTS, RegionAttentionNet


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``kind`` is 'folder', 'hub' or 'registered'."""

    kind: str
    location: str
    revision: str | None = None


def resolve_model_source(name_or_path: str | Path, revision: str | None = None) -> ModelSource:
    """Decide what ``name_or_path`` names, without loading anything (see the module docstring)."""
    path = Path(name_or_path).expanduser()
    name = str(name_or_path)
    if path.is_dir():
        if revision:
            raise UserError(f"revision={revision!r}: a local folder ({path}) has no revisions")
        refuse_pickles(path)
        return ModelSource("folder", str(path))
    if path.exists() and path.suffix.lower() == ".onnx":
        raise NotADirectoryError(f"{path}: an ONNX graph; run it with --runtime onnx")
    if path.exists() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
        raise NotADirectoryError(f"{path}: a file of a model folder; pass the folder, {path.parent}")
    if path.exists():
        raise NotADirectoryError(
            f"{path}: a file; expected a model folder (config.json + model.safetensors), a training "
            f"checkpoint folder, a Hub id or a registered RAN name (convert checkpoint files with "
            f"'ran convert {path} OUT_DIR')"
        )
    if name in RAN_VARIANTS or (name.startswith("ran") and timm.is_model(name)):
        return ModelSource("registered", name)
    if name.startswith((".", "/", "~")) or not REPO_ID.match(name):
        raise FileNotFoundError(f"{name}: no such folder, and not a Hub repo id ('ORG/NAME') or a RAN name")
    if path.parent.is_dir():  # ORG is a folder here: a mistyped path, not a Hub id (no download, no wait)
        raise FileNotFoundError(
            f"{name}: no such folder in {path.parent}/ (read as a path, as {path.parent} is a folder here; "
            "for the Hub repo of that name, run from a folder without it)"
        )
    return ModelSource("hub", name, revision)


def load_model(
    name_or_path: str | Path, revision: str | None = None, *, token: str | None = None, **kwargs: Any
) -> RegionAttentionNet:
    """A RAN from a model folder, a training checkpoint folder, a Hub id or a registered name.

    Extra keyword arguments go to ``timm.create_model`` (e.g. ``drop_rate``). The model is returned
    in eval mode on the CPU.
    """
    source = resolve_model_source(name_or_path, revision)
    if source.kind == "registered":
        warnings.warn(
            f"model {source.location!r} is a registered architecture name: it has RANDOM weights, so its "
            "predictions mean nothing (pass a trained model folder or Hub id)",
            Note,
            stacklevel=2,
        )
        return timm.create_model(source.location, **kwargs).eval()
    folder = Path(source.location) if source.kind == "folder" else _hub_folder(source, token)
    return _create_from_folder(folder, **kwargs).eval()


def class_names(model: torch.nn.Module) -> list[str]:
    """The model's class names (``pretrained_cfg['label_names']``), else ``class_0`` ... ``class_N``."""
    num_classes = int(getattr(model, "num_classes", 0))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = list(cfg.get("label_names") or [])
    if len(names) == num_classes:
        return [str(n) for n in names]
    return [f"class_{i}" for i in range(num_classes)]


def _create_from_folder(folder: Path, **kwargs: Any) -> RegionAttentionNet:
    check_folder(folder)
    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True, **kwargs)
    except RuntimeError as err:
        text = str(err)
        if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
            details = "; ".join(line.strip() for line in text.splitlines()[1:6] if line.strip())
            raise UserError(
                f"{folder / WEIGHTS_NAME}: the weights do not fit the model that {CONFIG_NAME} "
                f"describes: {details}"
            ) from None
        raise


def model_folder(
    name_or_path: str | Path,
    revision: str | None = None,
    *,
    token: str | None = None,
    optional: tuple[str, ...] = (),
) -> Path | None:
    """The folder a model is read from: a local folder as given, a Hub id's snapshot in the Hugging Face
    cache (config.json, the weights and those of ``optional`` the repository holds, all from one commit),
    or None for a registered name (random weights, no folder)."""
    source = resolve_model_source(name_or_path, revision)
    if source.kind == "registered":
        return None
    if source.kind == "folder":
        return Path(source.location)
    folder = _hub_folder(source, token)
    for filename in optional:
        _hub_optional_file(source, folder, filename, token)
    return folder


def _hub_folder(source: ModelSource, token: str | None) -> Path:
    """Download (or find in the cache) config.json and the weights; the snapshot folder holding them."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = source.location, source.revision
    where = f"{repo_id}@{revision or 'main'}"
    path = None
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            path = hf_hub_download(repo_id, filename, revision=revision, token=token)
        except LocalEntryNotFoundError:
            raise FileNotFoundError(
                f"{where}: {filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                f"{_why_not_downloaded()}"
            ) from None
        except RepositoryNotFoundError:
            raise FileNotFoundError(
                f"{repo_id}: no such model repository on {constants.ENDPOINT}, or no access to it "
                "(private or gated: pass a token)"
            ) from None
        except RevisionNotFoundError:
            raise FileNotFoundError(f"{repo_id}: no revision {revision!r}") from None
        except EntryNotFoundError:
            raise FileNotFoundError(
                f"{where}: the repository has no {filename} (expected a folder written by ran.push_to_hub)"
            ) from None
    assert path is not None
    return Path(path).parent


def _why_not_downloaded() -> str:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1 forbids downloading"
    return f"{constants.ENDPOINT} could not be reached"


def _hub_optional_file(source: ModelSource, snapshot: Path, filename: str, token: str | None) -> None:
    """Bring ``filename`` into ``snapshot`` (the commit config.json came from) where the repository holds
    it. A file the repository lacks is not an error; one whose presence cannot be known (offline, and the
    cache neither holds it nor records it missing) is a warning, and the model is read without it."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        hf_hub_download(source.location, filename, revision=snapshot.name, token=token)
    except LocalEntryNotFoundError:  # offline or unreachable (a subclass of EntryNotFoundError: first)
        if try_to_load_from_cache(source.location, filename, revision=snapshot.name) is None:
            warnings.warn(
                f"{source.location}@{snapshot.name[:12]}: {filename} is not in the Hugging Face cache and "
                f"{_why_not_downloaded()}, so whether the repository holds one is unknown; reading the "
                "model without it",
                Note,
                stacklevel=3,
            )
    except (EntryNotFoundError, RepositoryNotFoundError):
        return  # the repository was just read: "not found" now is the file (some mirrors answer 401)


# ``ran.from_pretrained`` is the Hugging Face name for the same thing.
from_pretrained = load_model

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ModelSource",
    "check_folder",
    "class_names",
    "from_pretrained",
    "load_model",
    "model_folder",
    "resolve_model_source",
]
