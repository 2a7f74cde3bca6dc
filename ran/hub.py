"""Saving and loading RAN models as timm-style Hub folders (model.safetensors + config.json + README.md).

One folder format serves every loader: timm (``hf-hub:`` / ``local-dir:``), ``ran.from_pretrained``,
and transformers' timm wrapper (AutoModelForImageClassification, ``pipeline('image-classification')``).
transformers passes ``num_classes`` itself, so ``config.json``'s ``model_args`` must not hold it, and it
reads the class names from the top-level ``label_names``; both are fixed up after timm writes the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

import ran.models  # noqa: F401  (registers the architectures)
from ran.card import render_model_card, validate_results
from ran.models import RegionAttentionNet

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
RESULTS_NAME = "eval_results.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --- writing ---------------------------------------------------------------------------------------
def _label_names(model: RegionAttentionNet, label_names: Sequence[str] | None) -> list[str]:
    num_classes = int(getattr(model, "num_classes", 0))
    if label_names is not None:
        names = [str(n) for n in label_names]
        if len(names) != num_classes:
            raise ValueError(f"label_names: the model has {num_classes} classes, got {len(names)} names")
        return names
    cfg_names = list((getattr(model, "pretrained_cfg", None) or {}).get("label_names") or [])
    if len(cfg_names) == num_classes:
        return [str(n) for n in cfg_names]
    return [f"class_{i}" for i in range(num_classes)]


def hub_config(raw: dict[str, Any], label_names: list[str]) -> dict[str, Any]:
    """timm's config.json made loadable by transformers: no ``num_classes`` in ``model_args``,
    class names at the top level and in ``pretrained_cfg``."""
    config = dict(raw)
    model_args = dict(config.get("model_args") or {})
    model_args.pop("num_classes", None)
    config["model_args"] = model_args
    config["label_names"] = list(label_names)
    pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    pretrained_cfg["label_names"] = list(label_names)
    pretrained_cfg["num_classes"] = config.get("num_classes", len(label_names))
    config["pretrained_cfg"] = pretrained_cfg
    return config


def _publishable_permissions(folder: Path) -> None:
    """mkdtemp makes 0700 folders; a published folder should be readable like any other."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def build_hub_folder(
    model: RegionAttentionNet,
    folder: str | Path,
    *,
    results: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    repo_id: str | None = None,
    label_names: Sequence[str] | None = None,
    training_command: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write the exact repo folder that is uploaded: weights, config.json, README.md (+ eval results).

    Atomic: everything is written to a temp folder beside ``folder`` and renamed into place.
    """
    if not hasattr(model, "ran_config"):
        raise ValueError(
            f"model: expected a RegionAttentionNet (ran / timm 'ran_*'), got {type(model).__name__}"
        )
    measured = validate_results(results)
    out = Path(folder)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True to replace it)")
    names = _label_names(model, label_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # timm's config writer; the weights are packed here so channels-last (or otherwise strided)
        # models save too -- safetensors stores only contiguous tensors.
        save_config_for_hf(
            model,
            str(tmp / CONFIG_NAME),
            model_args=model.ran_config(),
            model_config={"label_names": names},
        )
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_NAME))
        config = hub_config(json.loads((tmp / CONFIG_NAME).read_text()), names)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        card = render_model_card(
            config, results=measured, dataset=dataset, repo_id=repo_id, training_command=training_command
        )
        card.save(tmp / CARD_NAME)
        if measured:
            (tmp / RESULTS_NAME).write_text(json.dumps(measured, indent=2) + "\n")
        _publishable_permissions(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_pretrained(
    model: RegionAttentionNet,
    save_directory: str | Path,
    results: Mapping[str, Any] | None = None,
    *,
    dataset: str | None = None,
    repo_id: str | None = None,
    label_names: Sequence[str] | None = None,
    training_command: str | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and the README.md model card into ``save_directory``.

    ``results``: ``{'test': {'accuracy': .., 'correct': .., 'total': ..}, 'occlusion': {...}}`` as
    ``ran evaluate`` measures them; they become the card's model-index. Replaces an existing folder.
    """
    return build_hub_folder(
        model,
        save_directory,
        results=results,
        dataset=dataset,
        repo_id=repo_id,
        label_names=label_names,
        training_command=training_command,
    )


def push_to_hub(
    model: RegionAttentionNet,
    repo_id: str,
    results: Mapping[str, Any] | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload RAN model (model.safetensors, config.json, model card)",
    token: str | None = None,
    *,
    dataset: str | None = None,
    training_command: str | None = None,
) -> str:
    """Build the repo folder (``build_hub_folder``) and upload it; returns the commit URL.

    ``revision``: a branch to push to (created from main when missing), so loaders can pin it.
    """
    from huggingface_hub import HfApi

    if not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id: expected 'ORG/NAME', got {repo_id!r}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="ran-hub-") as tmp:
        folder = build_hub_folder(
            model,
            Path(tmp) / "repo",
            results=results,
            dataset=dataset,
            repo_id=repo_id,
            training_command=training_command,
        )
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            revision=revision,
            commit_message=commit_message,
            repo_type="model",
        )
    return str(getattr(info, "commit_url", info))


# --- publishing what hub/<name>/ describes ----------------------------------------------------------
SPEC_NAME = "checkpoint.json"


def load_spec(spec_dir: str | Path) -> dict[str, Any]:
    """``hub/<name>/checkpoint.json``: repo id, architecture, dataset and the exact commands."""
    path = Path(spec_dir) / SPEC_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (each hub/<name>/ folder describes one checkpoint)")
    spec = json.loads(path.read_text())
    for key in ("repo_id", "architecture", "dataset", "training_command"):
        if not spec.get(key):
            raise ValueError(f"{path}: no {key!r}")
    return spec


def spec_results(spec_dir: str | Path, results_file: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Measured results for a checkpoint: ``ran evaluate``'s results.json (flat or under 'results')."""
    spec_dir = Path(spec_dir)
    default = spec_dir / load_spec(spec_dir).get("results_file", "results.json")
    path = Path(results_file) if results_file else default
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if isinstance(data.get("results"), dict):
        data = data["results"]
    return validate_results(data)


def render_spec_card(spec_dir: str | Path, results_file: str | Path | None = None):
    """The model card of a checkpoint described in ``hub/<name>/`` (no weights needed): MODEL_CARD.md."""
    import torch

    spec = load_spec(spec_dir)
    with torch.device("meta"):
        model = timm.create_model(spec["architecture"])
    names = _label_names(model, None)
    config = {
        "architecture": spec["architecture"],
        "num_classes": model.num_classes,
        "label_names": names,
        "model_args": model.ran_config(),
    }
    return render_model_card(
        config,
        results=spec_results(spec_dir, results_file),
        dataset=spec["dataset"],
        repo_id=spec["repo_id"],
        training_command=spec["training_command"],
    )


def assemble_checkpoint(
    spec_dir: str | Path,
    out: str | Path,
    *,
    model_dir: str | Path | None = None,
    results_file: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """The repo folder for ``hub/<name>/``: the trained model (training output ``OUT/best``) with the
    measured results and the spec's dataset and training command on its card."""
    spec = load_spec(spec_dir)
    model_dir = Path(model_dir or spec.get("training_output", ""))
    model = from_pretrained(model_dir)
    if model.pretrained_cfg.get("architecture", spec["architecture"]) != spec["architecture"]:
        raise ValueError(
            f"{model_dir}: architecture {model.pretrained_cfg.get('architecture')!r}, but {spec_dir} "
            f"describes {spec['architecture']!r}"
        )
    return build_hub_folder(
        model,
        out,
        results=spec_results(spec_dir, results_file),
        dataset=spec["dataset"],
        repo_id=spec["repo_id"],
        training_command=spec["training_command"],
        overwrite=overwrite,
    )


# --- reading ---------------------------------------------------------------------------------------
def check_folder(folder: str | Path) -> dict[str, Any]:
    """Validate a repo folder before timm touches it; returns its config. Errors name what is wrong."""
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder}: no {CONFIG_NAME} (expected a folder written by ran.save_pretrained / ran convert)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    architecture = config.get("architecture") if isinstance(config, dict) else None
    if not architecture:
        raise ValueError(f"{config_path}: no 'architecture' entry (expected timm's config.json)")
    if not timm.is_model(architecture):
        known = ", ".join(sorted(ran.models.RAN_VARIANTS))
        raise ValueError(
            f"{config_path}: unknown architecture {architecture!r}: not a registered timm model "
            f"(RAN architectures: {known}; import the package that registers it before loading)"
        )
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} beside {CONFIG_NAME}")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), "pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights}: unreadable safetensors file, truncated or corrupt ({err})") from None
    return config


def _hub_folder(repo_id: str, revision: str | None, token: str | None) -> Path:
    """Download (or find in the cache) config.json and the weights; the snapshot folder holding them."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    path = None
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            path = hf_hub_download(repo_id, filename, revision=revision, token=token)
        except LocalEntryNotFoundError:
            why = (
                "HF_HUB_OFFLINE=1 forbids downloading"
                if constants.HF_HUB_OFFLINE
                else f"{constants.ENDPOINT} could not be reached"
            )
            raise FileNotFoundError(
                f"{where}: {filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}"
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


def _create_from_folder(folder: Path, **kwargs: Any) -> RegionAttentionNet:
    check_folder(folder)
    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True, **kwargs)
    except RuntimeError as err:
        text = str(err)
        if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
            details = "; ".join(line.strip() for line in text.splitlines()[1:6] if line.strip())
            raise ValueError(
                f"{folder / WEIGHTS_NAME}: the weights do not fit the model that {CONFIG_NAME} "
                f"describes: {details}"
            ) from None
        raise


def from_pretrained(
    name_or_path: str | Path, revision: str | None = None, *, token: str | None = None, **kwargs: Any
) -> RegionAttentionNet:
    """A RAN from a local folder, a Hub repo id ('ORG/NAME', ``revision`` pins a branch, tag or commit),
    or (random weights) a registered model name such as 'ran_resnet18'.

    Extra keyword arguments go to ``timm.create_model`` (e.g. ``drop_rate``).
    """
    path = Path(name_or_path).expanduser()
    name = str(name_or_path)
    if path.is_dir():
        if revision:
            raise ValueError(f"revision={revision!r}: a local folder ({path}) has no revisions")
        return _create_from_folder(path, **kwargs)
    if path.exists():
        raise NotADirectoryError(
            f"{path}: expected a model folder (config.json + model.safetensors); convert checkpoint files "
            f"with 'ran convert {path} OUT_DIR'"
        )
    if name in ran.models.RAN_VARIANTS or (name.startswith("ran") and timm.is_model(name)):
        return timm.create_model(name, **kwargs)
    if name.startswith((".", "/", "~")) or not _REPO_ID.match(name):
        raise FileNotFoundError(f"{name}: no such folder, and not a Hub repo id ('ORG/NAME') or a RAN name")
    return _create_from_folder(_hub_folder(name, revision, token), **kwargs)


__all__ = [
    "assemble_checkpoint",
    "build_hub_folder",
    "check_folder",
    "from_pretrained",
    "hub_config",
    "load_spec",
    "push_to_hub",
    "render_spec_card",
    "save_pretrained",
    "spec_results",
]
