"""``ran demo``: the main job end to end on the embedded default dataset, in a few minutes on a CPU.

Generates the synthetic FERPlus-style faces (``ran.data.synthetic``), writes them as a ``ran data`` folder,
trains a small RAN, evaluates it on the test split and on the occlusion / pose subsets, and saves the model
(with its results), the results tables and the plots. Everything it needs ships with the package, so the
README's main command runs offline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# Sizes chosen so the full demo takes about 3-6 minutes on a 2-core CPU in bf16 and still learns well;
# --quick (or RAN_DEMO_QUICK=1) is the test suite's reduced version.
FULL = {"train_size": 6000, "test_size": 1000, "epochs": 10}
QUICK = {"train_size": 1500, "test_size": 320, "epochs": 5}


def build_parser(prog: str = "ran demo") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Generate the synthetic FERPlus-style dataset, train a small RAN on it, evaluate it on "
        "every subset (test, occlusion, pose30, pose45) and save the model, results and plots.",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("ran-demo"), help="output folder (default: ran-demo)"
    )
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run (also: RAN_DEMO_QUICK=1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, help="training images to generate")
    parser.add_argument("--test-size", type=int, help="test images to generate")
    parser.add_argument("--epochs", type=int, help="training epochs")
    parser.add_argument(
        "--backbone",
        default="test_resnet",
        help="timm backbone (default: test_resnet, a 0.4M-parameter ResNet)",
    )
    parser.add_argument("--region-size", type=int, default=48, help="region side in px (default: 48)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate")
    parser.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        default="bf16",
        help="bf16 autocast is 3-4x faster on a CPU with AMX / AVX-512 bf16",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def plot_training_curves(history: list[dict[str, Any]], path: Path, val_name: str = "validation") -> None:
    """Loss and accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="total")
    loss_ax.plot(epochs, [h["train_ce"] for h in history], "s--", label="cross-entropy")
    loss_ax.plot(epochs, [h["train_rb"] for h in history], "^:", label="region-biased")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], "s-", label=val_name)
    acc_ax.axhline(1 / 8, color="grey", linestyle=":", label="chance (8 classes)")
    acc_ax.set_ylim(0, 1)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Generate -> write -> train -> evaluate -> save; returns the results per subset and timings."""
    from ran.config import TrainConfig
    from ran.data.folder import write_dataset_folder
    from ran.data.synthetic import SYNTHETIC_DESCRIPTION, build_synthetic
    from ran.evaluate import evaluate, format_table, load_model, print_results, write_results
    from ran.hub import save_pretrained
    from ran.train import load_splits, train

    quick = args.quick or os.environ.get("RAN_DEMO_QUICK", "") not in ("", "0")
    sizes = dict(QUICK if quick else FULL)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    out = args.output_dir.expanduser().absolute()
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to replace the demo")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    timings: dict[str, float] = {}
    started = time.perf_counter()

    print(f"1/4 generating {sizes['train_size']} training and {sizes['test_size']} test faces", flush=True)
    splits = build_synthetic(args.seed, sizes["train_size"], sizes["test_size"], progress=progress)
    data_dir = write_dataset_folder(splits, out / "data", description=SYNTHETIC_DESCRIPTION)
    timings["data_s"] = time.perf_counter() - started

    print(
        f"2/4 training RAN ({args.backbone}, {args.region_size} px regions, {sizes['epochs']} epochs, "
        f"{args.mixed_precision})",
        flush=True,
    )
    config = TrainConfig()
    config.model.model, config.model.backbone, config.model.region_size = (
        "ran",
        args.backbone,
        args.region_size,
    )
    config.optim.optimizer, config.optim.lr, config.optim.weight_decay = "adamw", args.lr, 0.05
    config.optim.schedule, config.optim.warmup_epochs = "cosine", 0.5
    config.data.data, config.data.batch_size = str(data_dir), args.batch_size
    config.run.output_dir, config.run.epochs = str(out / "train"), sizes["epochs"]
    config.run.mixed_precision, config.run.seed, config.run.progress = (
        args.mixed_precision,
        args.seed,
        progress,
    )
    config.run.keep_checkpoints = 1
    summary = train(config)
    timings["train_s"] = time.perf_counter() - started - timings["data_s"]

    print("3/4 evaluating on every test subset", flush=True)
    model = load_model(out / "train" / "best")
    results = evaluate(
        model,
        load_splits(data_dir),
        batch_size=128,
        mixed_precision=args.mixed_precision,
        progress=progress,
    )
    timings["evaluate_s"] = time.perf_counter() - started - timings["data_s"] - timings["train_s"]

    print("4/4 saving the model, results and plots", flush=True)
    command = "ran demo" + (" --quick" if quick else "")
    save_pretrained(model, out / "best", results=results, dataset="synthetic", training_command=command)
    write_results(results, out / "results", title="RAN on the synthetic FERPlus-style faces")
    plot_training_curves(summary["history"], out / "results" / "training_curves.png", summary["val_split"])
    timings["total_s"] = time.perf_counter() - started
    report = {
        "results": results,
        "sizes": sizes,
        "seed": args.seed,
        "backbone": args.backbone,
        "region_size": args.region_size,
        "mixed_precision": args.mixed_precision,
        "timings": timings,
        "best_validation_accuracy": summary["best_accuracy"],
        "best_epoch": summary["best_epoch"],
    }
    (out / "results" / "demo.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    print()
    print_results(results)
    print(
        f"\nchance level: 0.1250 (8 classes); total time {timings['total_s']:.0f} s "
        f"(data {timings['data_s']:.0f} s, training {timings['train_s']:.0f} s, "
        f"evaluation {timings['evaluate_s']:.0f} s)"
    )
    print(f"model: {out / 'best'}   results and plots: {out / 'results'}")
    (out / "results" / "table.txt").write_text(format_table(results) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    run_demo(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    from ran.cli import run_main

    sys.exit(run_main(main, None, prog="ran demo"))
