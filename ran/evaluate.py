"""``ran evaluate``: accuracy of a RAN on every test split and subset of a ``ran data`` folder.

Reports what the RAN papers report, per subset (test, occlusion, pose30, pose45, ...): accuracy with its
counts (``0.8690 (2726/3137)``), per-class accuracy and the mean class accuracy, and writes them as
results.json, a Markdown table and one confusion-matrix picture per subset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

NOT_EVALUATED = ("train", "validation")
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


# --- model loading -------------------------------------------------------------------------------
def load_checkpoint_model(path: Path) -> nn.Module:
    """The network of a ``ran train`` checkpoint folder (OUT/checkpoints/<name>)."""
    import timm

    import ran  # noqa: F401  (registers the RAN family)
    from ran.models.checkpoint import load_state_dict_file
    from ran.train import MODEL_CONFIG_FILE

    try:
        spec = json.loads((path / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
        name, num_classes, model_args = spec["model"], int(spec["num_classes"]), dict(spec["model_args"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path / MODEL_CONFIG_FILE}: corrupt checkpoint description ({err})") from None
    model = timm.create_model(name, num_classes=num_classes, **model_args)
    state = load_state_dict_file(path / "model.safetensors")
    # accelerate saved the training wrapper (and DDP's "module." where there was one).
    state = {k.removeprefix("module.").removeprefix("model."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}/model.safetensors does not fit {name} {model_args}: {err}") from None
    if spec.get("label_names"):
        model.pretrained_cfg = {**model.pretrained_cfg, "label_names": list(spec["label_names"])}
    return model


def load_model(name_or_path: str | Path, revision: str | None = None) -> nn.Module:
    """A model from a save_pretrained folder, a training checkpoint folder, a Hub id or a RAN name."""
    from ran.train import MODEL_CONFIG_FILE

    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / MODEL_CONFIG_FILE).is_file() and not (path / "config.json").is_file():
        return load_checkpoint_model(path)
    if path.is_file():
        raise ValueError(
            f"--model {path}: a file; expected a model folder (config.json + model.safetensors), a training "
            "checkpoint folder, a Hub id or a registered RAN name"
        )
    from ran.hub import from_pretrained

    return from_pretrained(str(name_or_path), revision=revision)


# --- evaluation ----------------------------------------------------------------------------------
def _autocast(device: torch.device, mixed_precision: str):
    if mixed_precision == "no":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("--mixed-precision fp16 needs a GPU; use bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


def subset_metrics(predictions: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict:
    """Accuracy with counts, per-class accuracy, mean class accuracy and the confusion matrix."""
    num_classes = len(class_names)
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes)  # rows: true class, columns: predicted
    correct, total = int(confusion.diagonal().sum()), int(labels.numel())
    per_class: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(class_names):
        class_total = int(confusion[index].sum())
        class_correct = int(confusion[index, index])
        per_class[name] = {
            "accuracy": class_correct / class_total if class_total else None,
            "correct": class_correct,
            "total": class_total,
        }
    present = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    return {
        "accuracy": correct / total if total else 0.0,
        "correct": correct,
        "total": total,
        "mean_class_accuracy": sum(present) / len(present) if present else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def evaluate(
    model: nn.Module,
    dataset_dict: Mapping[str, Any],
    subsets: Sequence[str] | None = None,
    *,
    batch_size: int = 64,
    mixed_precision: str = "no",
    device: str | torch.device | None = None,
    image_size: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on each subset (default: every split except train / validation).

    Returns ``{subset: {'accuracy', 'correct', 'total', 'mean_class_accuracy', 'per_class',
    'confusion_matrix'}}``, the form ``ran.save_pretrained(..., results=...)`` puts in the model card.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from ran.train import FaceImages, collate_faces

    names = list(subsets) if subsets else [k for k in dataset_dict if k not in NOT_EVALUATED]
    if not names:
        raise ValueError(f"no test split or subset to evaluate; the dataset has {sorted(dataset_dict)}")
    missing = [name for name in names if name not in dataset_dict]
    if missing:
        raise ValueError(
            f"the dataset has no split {', '.join(map(repr, missing))}; it has {sorted(dataset_dict)}"
        )
    class_names = list(dataset_dict[names[0]].features["label"].names)
    model_classes = getattr(model, "num_classes", None)
    if model_classes != len(class_names):
        raise ValueError(
            f"num_classes mismatch: the model predicts {model_classes} classes, the dataset has "
            f"{len(class_names)} ({', '.join(class_names)})"
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).eval()  # faster convolutions
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        split = dataset_dict[name]
        if list(split.features["label"].names) != class_names:
            raise ValueError(
                f"split {name!r}: classes {split.features['label'].names} differ from {class_names}"
            )
        loader = DataLoader(
            FaceImages(split, image_size), batch_size=batch_size, shuffle=False, collate_fn=collate_faces
        )
        predictions, labels = [], []
        with torch.no_grad(), _autocast(device, mixed_precision):
            for batch in tqdm(loader, desc=f"evaluating {name}", leave=False, disable=not progress):
                logits = model(batch["images"].to(device).float().div_(255))
                predictions.append(logits.argmax(dim=1).cpu())
                labels.append(batch["labels"])
        results[name] = subset_metrics(torch.cat(predictions), torch.cat(labels), class_names)
    return results


# --- reporting -----------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(results: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """The summary table: per subset accuracy with counts and the mean class accuracy."""
    rows = [
        (name, f"{_fmt(r['accuracy'])} ({r['correct']}/{r['total']})", _fmt(r["mean_class_accuracy"]))
        for name, r in results.items()
    ]
    header = ("subset", "accuracy (correct/total)", "mean class accuracy")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---|---|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]
    )


def format_per_class(results: Mapping[str, Mapping[str, Any]], markdown: bool = False) -> str:
    """Per-class accuracy: one row per class, one column per subset."""
    names = list(results)
    classes = list(next(iter(results.values()))["per_class"])
    header = ["class", *names]
    rows = [[c, *(_fmt(results[n]["per_class"][c]["accuracy"]) for n in names)] for c in classes]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    return "\n".join(
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]
    )


def plot_confusion(result: Mapping[str, Any], title: str, path: Path) -> None:
    """Row-normalised confusion matrix with the counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(result["per_class"])
    counts = torch.tensor(result["confusion_matrix"], dtype=torch.float64)
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(classes), 0.6 + 0.7 * len(classes)))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                int(counts[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_title(f"{title}: {result['accuracy']:.4f} ({result['correct']}/{result['total']})")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def output_files(results: Mapping[str, Any]) -> list[str]:
    return [RESULTS_JSON, RESULTS_MD, *(f"confusion_{name}.png" for name in results)]


def write_results(
    results: Mapping[str, Mapping[str, Any]], out: str | Path, *, overwrite: bool = False, title: str = ""
) -> list[Path]:
    """results.json, results.md and confusion_<subset>.png into ``out``, staged then moved into place."""
    out = Path(out).expanduser().absolute()
    names = output_files(results)
    clashes = [n for n in (RESULTS_JSON, RESULTS_MD) if (out / n).exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{out / clashes[0]} already exists; pass --overwrite to replace the results")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        (staging / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        markdown = [
            f"# {title or 'Evaluation results'}",
            "",
            format_table(results, markdown=True),
            "",
            "Per-class accuracy:",
            "",
            format_per_class(results, markdown=True),
            "",
        ]
        (staging / RESULTS_MD).write_text("\n".join(markdown), encoding="utf-8")
        for name, result in results.items():
            plot_confusion(result, name, staging / f"confusion_{name}.png")
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / name for name in names]


def print_results(results: Mapping[str, Mapping[str, Any]]) -> None:
    print(format_table(results))
    print()
    print("per-class accuracy:")
    print(format_per_class(results))


# --- command line --------------------------------------------------------------------------------
def build_parser(prog: str = "ran evaluate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Accuracy of a RAN on every test split and subset of a dataset folder."
    )
    parser.add_argument(
        "--model",
        required=True,
        help="model folder (ran.save_pretrained), training checkpoint folder, Hub id or RAN name",
    )
    parser.add_argument(
        "--data", required=True, help="dataset folder written by 'ran data' (or a Hub dataset id)"
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="where results.json / .md / PNGs go")
    parser.add_argument("--subsets", nargs="+", help="splits to evaluate (default: all but train/validation)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--image-size", type=int, help="resize source images to this square size first")
    parser.add_argument("--revision", help="Hub revision of the model")
    parser.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results in OUTPUT_DIR")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected an integer >= 1, got {args.batch_size}")
    out = args.output_dir.expanduser()
    if (out / RESULTS_JSON).exists() and not args.overwrite:
        raise FileExistsError(f"{out / RESULTS_JSON} already exists; pass --overwrite to replace the results")
    from ran.train import load_splits

    dataset_dict = load_splits(args.data)
    model = load_model(args.model, revision=args.revision)
    results = evaluate(
        model,
        dataset_dict,
        args.subsets,
        batch_size=args.batch_size,
        mixed_precision=args.mixed_precision,
        device=args.device,
        image_size=args.image_size,
        progress=not args.no_progress,
    )
    print_results(results)
    written = write_results(results, out, overwrite=args.overwrite, title=f"{args.model} on {args.data}")
    print(f"\nwrote {', '.join(str(p.name) for p in written)} to {out}")
    return 0


if __name__ == "__main__":
    from ran.cli import run_main

    sys.exit(run_main(main, None, prog="ran evaluate"))
