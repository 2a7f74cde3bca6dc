"""Writing RAN models as timm-style Hub folders (model.safetensors + config.json + README.md), pushing them.

One folder format serves every loader: timm (``hf-hub:`` / ``local-dir:``), ``ran.load_model`` (alias
``ran.from_pretrained``, see ``ran.modelio.loading``), and transformers' timm wrapper
(AutoModelForImageClassification, ``pipeline('image-classification')``).
transformers passes ``num_classes`` itself, so ``config.json``'s ``model_args`` must not hold it, and it
reads the class names from the top-level ``label_names``; both are fixed up after timm writes the file.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

import ran.models  # noqa: F401  (registers the architectures)
from ran.errors import UserError
from ran.files import staging_dir
from ran.modelio.card import render_model_card, validate_results
from ran.modelio.card_data import dataset_info
from ran.modelio.folder import read_json
from ran.modelio.loading import CONFIG_NAME, REPO_ID, WEIGHTS_NAME, class_names, load_model
from ran.models import RegionAttentionNet
from ran.models.folder_config import INITIALISATION_ARGS, check_config
from ran.reading import read_regular

CARD_NAME = "README.md"
RESULTS_NAME = "eval_results.json"
MODEL_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, RESULTS_NAME})


def is_model_folder(folder: Path, extra: Collection[str] = ()) -> bool:
    """Whether ``folder`` is a model folder as this package writes one: its weights and config.json and
    nothing but the files of a model folder (and ``extra``, e.g. a checkpoint's resume files). Such a
    folder may be replaced whole; one with anything else in it is the user's."""
    allowed = MODEL_FILES | set(extra)
    entries = list(folder.iterdir())
    return (
        all(entry.name in allowed and entry.is_file() for entry in entries)
        and (folder / CONFIG_NAME).is_file()
        and (folder / WEIGHTS_NAME).is_file()
    )


# --- writing ---------------------------------------------------------------------------------------
def _label_names(model: RegionAttentionNet, label_names: Sequence[str] | None) -> list[str]:
    if label_names is None:
        return class_names(model)
    names = [str(n) for n in label_names]
    if len(names) != int(getattr(model, "num_classes", 0)):
        raise UserError(f"label_names: the model has {model.num_classes} classes, got {len(names)} names")
    return names


def hub_config(raw: dict[str, Any], label_names: list[str]) -> dict[str, Any]:
    """timm's config.json made loadable by transformers: no ``num_classes`` in ``model_args``,
    class names at the top level and in ``pretrained_cfg``; no argument that says where the first weights
    came from (``backbone_file``, ``backbone_pretrained``): the folder's weights replace them, and a loader
    refuses a folder that names files or downloads."""
    config = dict(raw)
    model_args = {k: v for k, v in (config.get("model_args") or {}).items() if k not in INITIALISATION_ARGS}
    config["model_args"] = model_args
    config["label_names"] = list(label_names)
    pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    pretrained_cfg["label_names"] = list(label_names)
    pretrained_cfg["num_classes"] = config.get("num_classes", len(label_names))
    config["pretrained_cfg"] = pretrained_cfg
    return config


def write_model_files(
    model: RegionAttentionNet,
    folder: Path,
    *,
    results: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    repo_id: str | None = None,
    label_names: Sequence[str] | None = None,
    training_command: str | None = None,
    int8_report: Mapping[str, Any] | None = None,
) -> None:
    """Write weights, config.json, the README.md card (+ eval results) into the existing ``folder``;
    ``int8_report`` (``ran export --int8 --torch``) adds the card's int8 section.

    Not atomic by itself: callers write into a staging folder (``build_hub_folder``, training checkpoints).
    """
    if not hasattr(model, "ran_config"):
        raise UserError(
            f"model: expected a RegionAttentionNet (ran / timm 'ran_*'), got {type(model).__name__}"
        )
    measured = validate_results(results)
    names = _label_names(model, label_names)
    # timm's config writer; the weights are packed here so channels-last (or otherwise strided)
    # models save too -- safetensors stores only contiguous tensors.
    save_config_for_hf(
        model, str(folder / CONFIG_NAME), model_args=model.ran_config(), model_config={"label_names": names}
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_NAME))
    config = check_config(
        hub_config(json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")), names),
        f"{CONFIG_NAME} to write",
    )
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    card = render_model_card(
        config,
        results=measured,
        dataset=dataset,
        repo_id=repo_id,
        training_command=training_command,
        int8_report=int8_report,
    )
    card.save(folder / CARD_NAME)
    if measured:
        (folder / RESULTS_NAME).write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")


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

    Atomic: everything is written to a staging folder beside ``folder`` and renamed into place. With
    ``overwrite`` an existing ``folder`` is replaced only if it is a model folder (:func:`is_model_folder`)
    or empty.
    """
    with staging_dir(folder, overwrite=overwrite, recognise=is_model_folder) as staging:
        write_model_files(
            model,
            staging,
            results=results,
            dataset=dataset,
            repo_id=repo_id,
            label_names=label_names,
            training_command=training_command,
        )
    return Path(folder).expanduser().absolute()


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
    model: RegionAttentionNet | str | Path,
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

    ``model``: a RAN, or a model folder this package wrote (``ran export --int8 --torch``'s int8 folder
    too: its ``int8.json`` goes along, and ``ran predict --model REPO_ID`` then runs it in int8); the
    folder's files are uploaded with a card rendered for ``repo_id``. ``revision``: a branch to push to
    (created from main when missing), so loaders can pin it.
    """
    from huggingface_hub import HfApi

    if not REPO_ID.match(repo_id):
        raise UserError(f"repo_id: expected 'ORG/NAME', got {repo_id!r}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="ran-hub-") as tmp:
        card = {"dataset": dataset, "repo_id": repo_id, "training_command": training_command}
        if isinstance(model, (str, Path)):
            folder = _folder_to_push(Path(model).expanduser(), Path(tmp) / "repo", results, card)
        else:
            folder = build_hub_folder(model, Path(tmp) / "repo", results=results, **card)
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


def _folder_to_push(source: Path, out: Path, results: Mapping[str, Any] | None, card: dict[str, Any]) -> Path:
    """A copy of the model folder ``source`` (checked by loading it as the commands would) with its card
    rendered for the repo: the folder's own results unless ``results`` are given, its int8 report."""
    import shutil

    from ran.int8 import INT8_NAME, read_calibration, with_calibration

    if not source.is_dir() or not is_model_folder(source, extra={INT8_NAME}):
        raise UserError(
            f"{source}: expected a model folder this package wrote (config.json, model.safetensors, and "
            f"only {', '.join(sorted(MODEL_FILES - {CONFIG_NAME, WEIGHTS_NAME} | {INT8_NAME}))} beside them)"
        )
    with_calibration(load_model(source), source)  # the folder loads, int8.json included, before upload
    out.mkdir()
    for name in (CONFIG_NAME, WEIGHTS_NAME, INT8_NAME):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    where = "results"
    if results is None and (source / RESULTS_NAME).is_file():
        where, results = str(source / RESULTS_NAME), read_json(source / RESULTS_NAME)
    try:
        measured = validate_results(results)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    int8 = read_calibration(out)
    try:  # the results are checked: only int8.json's report can be at fault here
        rendered = render_model_card(
            read_json(out / CONFIG_NAME), results=measured, int8_report=int8 and int8.get("report"), **card
        )
    except UserError as err:
        raise UserError(f"{source / INT8_NAME}: {err}") from None
    if measured:
        (out / RESULTS_NAME).write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
    rendered.save(out / CARD_NAME)
    return out


# --- publishing what hub/<name>/ describes ----------------------------------------------------------
SPEC_NAME = "checkpoint.json"


def load_spec(spec_dir: str | Path) -> dict[str, Any]:
    """``hub/<name>/checkpoint.json``: repo id, architecture, dataset and the exact commands."""
    path = Path(spec_dir) / SPEC_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (each hub/<name>/ folder describes one checkpoint)")
    spec = read_json(path)  # one clear line naming the file when it is not JSON
    if not isinstance(spec, dict):
        raise UserError(f"{path}: expected a JSON object")
    for key in ("repo_id", "architecture", "dataset", "training_command"):
        if not spec.get(key):
            raise UserError(f"{path}: no {key!r}")
    return spec


def spec_results(spec_dir: str | Path, results_file: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Measured results for a checkpoint: ``ran evaluate``'s results.json (flat or under 'results')."""
    spec_dir = Path(spec_dir)
    default = spec_dir / load_spec(spec_dir).get("results_file", "results.json")
    path = Path(results_file) if results_file else default
    if results_file and not path.is_file():  # named on purpose: a typo must not publish a card without them
        raise UserError(
            f"{path}: {'a folder' if path.is_dir() else 'no such file'}; expected ran evaluate's results.json"
        )
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    if isinstance(data.get("results"), dict):
        data = data["results"]
    return validate_results(data)


def render_spec_card(spec_dir: str | Path, results_file: str | Path | None = None):
    """The model card of a checkpoint described in ``hub/<name>/`` (no weights needed): MODEL_CARD.md."""
    import torch

    from ran.models.folder_config import check_model_args

    spec = load_spec(spec_dir)
    # the input contract training will record (FERPlus: 48 px gray faces), so the card states it
    model_args = check_model_args(spec.get("model_args", {}), f"{spec_dir}/checkpoint.json")
    with torch.device("meta"):
        model = timm.create_model(spec["architecture"], **model_args)
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


def _card_datasets(card: Path) -> list[str] | None:
    """The ``datasets`` a model card's metadata names; None when it has no card or no readable metadata."""
    from huggingface_hub import ModelCard

    try:
        text = read_regular(card, 1 << 20)
        return ModelCard(text.decode("utf-8")).data.datasets if text is not None else None
    except (OSError, ValueError):
        return None


def _check_same_data(spec_dir: str | Path, dataset: str, model_dir: Path, results: Mapping[str, Any]) -> None:
    """A published card names the spec's dataset: refuse a model whose own card says it was trained on
    other data, and results counted on another number of faces than that dataset's subsets hold."""
    info = dataset_info(dataset)
    trained_on = _card_datasets(model_dir / CARD_NAME)
    if info is not None and trained_on and info.dataset_type not in trained_on:
        raise UserError(
            f"{model_dir}: trained on {', '.join(map(str, trained_on))} (its {CARD_NAME}), but {spec_dir} "
            f"publishes a {info.name} model"
        )
    for subset, entry in results.items():
        full = info.faces.get(subset) if info is not None else None
        if full is not None and entry.get("total") != full:
            raise UserError(
                f"results[{subset!r}]: {entry.get('total')} faces, but {info.name}'s {subset!r} has "
                f"{full:,}: evaluate on the whole {info.name} data (these results are of other data)"
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
    model = load_model(model_dir)
    if model.pretrained_cfg.get("architecture", spec["architecture"]) != spec["architecture"]:
        raise UserError(
            f"{model_dir}: architecture {model.pretrained_cfg.get('architecture')!r}, but {spec_dir} "
            f"describes {spec['architecture']!r}"
        )
    results = spec_results(spec_dir, results_file)
    _check_same_data(spec_dir, spec["dataset"], model_dir, results)
    return build_hub_folder(
        model,
        out,
        results=results,
        dataset=spec["dataset"],
        repo_id=spec["repo_id"],
        training_command=spec["training_command"],
        overwrite=overwrite,
    )


__all__ = [
    "assemble_checkpoint",
    "build_hub_folder",
    "hub_config",
    "is_model_folder",
    "write_model_files",
    "load_spec",
    "push_to_hub",
    "render_spec_card",
    "save_pretrained",
    "spec_results",
]
