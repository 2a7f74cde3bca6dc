"""The main job end to end on the embedded default dataset, in a few minutes on a CPU (``ran demo``).

Generates the synthetic FERPlus-style faces (``ran.data.synthetic``), writes them as a ``ran data`` folder,
trains a small RAN, evaluates it on the test split and on the occlusion / pose subsets, and saves the model
(with its results), the results tables and the plots. Everything it needs ships with the package, so the
README's main command runs offline.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ran.numbers import REGION_SIDE, SEED, check_numbers, integer, number
from ran.threads import MAX_THREADS, threads_help

# Sizes chosen so the full demo takes about 3-6 minutes on a 2-core CPU in bf16 (AVX-512 BF16 or AMX; about
# 9 in fp32 on one with AVX2 only) and still learns well;
# --quick (or RAN_DEMO_QUICK=1) is the test suite's reduced version.
FULL = {"train_size": 6000, "test_size": 1000, "epochs": 10}
QUICK = {"train_size": 1500, "test_size": 320, "epochs": 5}
DEMO = "demo"  # the marker kind: .ran-demo.json
# What the demo's model is for, said in its output, its results and (through the dataset) its card.
PURPOSE = "the demo's model is trained on synthetic cartoon faces: it shows the method, not for real photos"


def _sized(what: str, key: str) -> str:
    """A size flag's help with its real defaults, full and --quick (the flag's own default is None)."""
    return f"{what} (default: {FULL[key]}; with --quick: {QUICK[key]})"


@dataclass
class DemoOptions:
    """What ``ran demo`` can be told (its flags)."""

    output_dir: Path = field(default=Path("ran-demo"), metadata={"help": "output folder"})
    quick: bool = field(default=False, metadata={"help": "a smaller, faster run (also: RAN_DEMO_QUICK=1)"})
    seed: int = field(default=0, metadata={"help": "random seed (data, weights, order)", "type": SEED})
    train_size: int | None = field(
        default=None,
        metadata={"help": _sized("training images to generate", "train_size"), "type": integer(1)},
    )
    test_size: int | None = field(
        default=None, metadata={"help": _sized("test images to generate", "test_size"), "type": integer(1)}
    )
    epochs: int | None = field(
        default=None, metadata={"help": _sized("training epochs", "epochs"), "type": integer(1)}
    )
    backbone: str = field(default="test_resnet", metadata={"help": "timm backbone (a 0.4M-parameter ResNet)"})
    region_size: int = field(default=48, metadata={"help": "region side in px", "type": REGION_SIDE})
    batch_size: int = field(default=32, metadata={"help": "images per batch", "type": integer(1)})
    lr: float = field(default=2e-3, metadata={"help": "AdamW peak learning rate", "type": number(above=0)})
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "training precision: fp32, bf16 or fp16 (default: bf16 where the CPU or GPU runs it "
            "natively - AVX-512 BF16, AMX, a GPU with bf16 - else fp32, as emulated bf16 is several times "
            "slower; evaluation runs in ran evaluate's precision)"
        },
    )
    overwrite: bool = field(
        default=False, metadata={"help": "replace an earlier demo's folder (never other folders)"}
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    threads: int | None = field(
        default=None, metadata={"help": threads_help(), "type": integer(1, MAX_THREADS)}
    )

    def sizes(self) -> dict[str, int]:
        """Training size, test size and epochs: the quick or full defaults, overridden where given."""
        quick = self.quick or os.environ.get("RAN_DEMO_QUICK", "") not in ("", "0")
        sizes = dict(QUICK if quick else FULL)
        for key in sizes:
            if getattr(self, key) is not None:
                sizes[key] = getattr(self, key)
        return sizes

    def is_quick(self) -> bool:
        return self.quick or os.environ.get("RAN_DEMO_QUICK", "") not in ("", "0")


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


def is_demo_folder(folder: Path) -> bool:
    """A demo folder written before markers existed: it holds the demo's report, results/demo.json."""
    return (folder / "results" / "demo.json").is_file()


def _prepare_output(out: Path, options: DemoOptions) -> None:
    """An empty ``out`` marked as the demo's; an earlier demo there is deleted only with --overwrite, and
    a folder that is not a demo's never (``ran.files.check_overwrite``)."""
    from ran.files import check_overwrite, write_marker

    if out.exists() and any(out.iterdir()):
        check_overwrite(out, overwrite=options.overwrite, kind=DEMO, recognise=is_demo_folder)
        _empty(out)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, DEMO)


def _empty(folder: Path) -> None:
    """Remove what ``folder`` holds, keeping the folder (the user's own, or a link to one)."""
    for entry in folder.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def training_precision(options: DemoOptions) -> str:
    """The precision asked for, else bf16 where the device training uses runs it natively, else fp32."""
    from ran.devices import resolve_device
    from ran.precision import bf16_is_native, check_device_support, resolve_precision

    device = resolve_device(None)
    if options.mixed_precision is None:
        return "bf16" if bf16_is_native(device) else "fp32"
    precision = resolve_precision(options.mixed_precision, "--mixed-precision")
    check_device_support(precision, device)  # fp16 on a CPU: refused before anything is written
    return precision


def _training_config(options: DemoOptions, data_dir: Path, out: Path, epochs: int) -> Any:
    """The demo's recipe: a small RAN, AdamW with a cosine schedule, bf16 where it is native."""
    from ran.training.config import TrainConfig

    config = TrainConfig()
    config.model.model, config.model.backbone = "ran", options.backbone
    config.model.region_size = options.region_size
    config.optim.optimizer, config.optim.lr, config.optim.weight_decay = "adamw", options.lr, 0.05
    config.optim.schedule, config.optim.warmup_epochs = "cosine", 0.5
    config.data.data, config.data.batch_size = str(data_dir), options.batch_size
    config.run.output_dir, config.run.epochs = str(out / "train"), epochs
    config.run.mixed_precision, config.run.seed = options.mixed_precision, options.seed
    config.run.progress, config.run.keep_checkpoints = options.progress, 1
    config.run.threads = options.threads
    return config


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Generate -> write -> train -> evaluate -> save; returns the results per subset and timings. One
    demo writes a folder at a time (its lock lives beside it, as the folder is replaced whole); a demo
    that fails or is interrupted leaves no folder behind."""
    from ran.locks import output_lock
    from ran.threads import use_threads

    check_numbers(options)  # before the output folder is touched
    options = replace(options, mixed_precision=training_precision(options))
    use_threads(options.threads)
    out = Path(options.output_dir).expanduser().absolute()
    with output_lock(out, "ran demo", inside=False):
        made_here = not out.exists() and not out.is_symlink()
        _prepare_output(out, options)
        try:
            return _run(options, out)
        except BaseException as err:  # half a demo is no demo: removed, so that running it again works
            with suppress(OSError):  # the error that stopped the demo is the one to report
                _empty(out)
                if made_here:
                    out.rmdir()
            if isinstance(err, KeyboardInterrupt):  # not training's hint: the demo has no --resume
                raise KeyboardInterrupt(f"the half-made demo in {out} removed; run ran demo again") from None
            raise


def _run(options: DemoOptions, out: Path) -> dict[str, Any]:
    from ran.data.batches import load_splits
    from ran.data.synthetic.generator import write_synthetic
    from ran.evaluation import evaluate_samples, print_results, summarize
    from ran.evaluation.report import ATTENTION_PNG
    from ran.files import marker_path, write_marker
    from ran.inference import REPORTED_PRECISION
    from ran.modelio.loading import load_model
    from ran.training import train

    sizes = options.sizes()
    timings: dict[str, float] = {}
    started = time.perf_counter()

    print(f"note: {PURPOSE}", flush=True)
    print(f"1/4 generating {sizes['train_size']} training and {sizes['test_size']} test faces", flush=True)
    data_dir = out / "data"
    write_synthetic(
        data_dir, options.seed, sizes["train_size"], sizes["test_size"], progress=options.progress
    )
    timings["data_s"] = time.perf_counter() - started

    print(
        f"2/4 training RAN ({options.backbone}, {options.region_size} px regions, {sizes['epochs']} epochs, "
        f"{options.mixed_precision})",
        flush=True,
    )
    summary = train(_training_config(options, data_dir, out, sizes["epochs"]))
    timings["train_s"] = time.perf_counter() - started - timings["data_s"]

    # Evaluated as `ran evaluate` does by default (precision, batch size), so that the card's numbers are
    # what anyone gets from `ran evaluate --model ran-demo/best --data ran-demo/data --output-dir eval`.
    print(f"3/4 evaluating on every test subset ({REPORTED_PRECISION})", flush=True)
    model = load_model(out / "train" / "best")
    splits = load_splits(data_dir, progress=options.progress)
    samples = evaluate_samples(model, splits, progress=options.progress)
    results = summarize(samples, seed=options.seed)
    timings["evaluate_s"] = time.perf_counter() - started - timings["data_s"] - timings["train_s"]

    print("4/4 saving the model, results and plots", flush=True)
    report = _save(options, out, model, results, summary, sizes, samples)
    timings["total_s"] = time.perf_counter() - started
    report["timings"] = timings
    (out / "results" / "demo.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_marker(out, DEMO, (p.name for p in out.iterdir() if p.name != marker_path(out, DEMO).name))

    print()
    print_results(results)
    print(
        f"\nchance level: 0.1250 (8 classes); total time {timings['total_s']:.0f} s "
        f"(data {timings['data_s']:.0f} s, training {timings['train_s']:.0f} s, "
        f"evaluation {timings['evaluate_s']:.0f} s)"
    )
    print(f"model: {out / 'best'}   results and plots: {out / 'results'}")
    print(f"note: {PURPOSE}")
    attention = out / "results" / ATTENTION_PNG
    if attention.is_file():  # drawn only with matplotlib (the plots extra)
        print(f"region attention per subset: {attention}")
    return report


def _save(
    options: DemoOptions, out: Path, model: Any, results: dict, summary: dict, sizes: dict, samples: Any
) -> dict[str, Any]:
    """The model with its card, the results tables and pictures (intervals, attention, calibration), the
    per-face predictions, the training curves."""
    from ran.evaluation import format_table, write_results
    from ran.evaluation.report import pictures_available
    from ran.modelio.hub import save_pretrained

    command = "ran demo" + (" --quick" if options.is_quick() else "")
    save_pretrained(model, out / "best", results=results, dataset="synthetic", training_command=command)
    write_results(
        results,
        out / "results",
        title=f"RAN on the synthetic FERPlus-style faces ({PURPOSE})",
        samples=samples,
    )
    if pictures_available():
        plot_training_curves(
            summary["history"], out / "results" / "training_curves.png", summary["val_split"]
        )
    (out / "results" / "table.txt").write_text(format_table(results) + "\n", encoding="utf-8")
    return {
        "results": results,
        "sizes": sizes,
        "seed": options.seed,
        "backbone": options.backbone,
        "region_size": options.region_size,
        "mixed_precision": options.mixed_precision,
        "evaluation_precision": results[next(iter(results))].get("precision"),
        "best_validation_accuracy": summary["best_accuracy"],
        "best_epoch": summary["best_epoch"],
    }
