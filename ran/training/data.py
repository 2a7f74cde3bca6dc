"""What a training step is fed: the splits, the loaders that keep a GPU busy, augmentation on the device.

The loaders move uint8 source faces (48x48 for FERPlus) decoded a batch at a time
(:meth:`ran.data.batches.FaceImages.__getitems__`), in worker processes on a GPU machine, into pinned
memory so that the copy to the device does not block. Augmentation (flips, box jitter, random crops) is
drawn on the device from a generator seeded per step, so no step waits for the host and a resumed run
draws exactly what the original drew.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from ran.data.batches import EpochSampler, FaceImages, collate_faces, load_splits
from ran.data.format.labelled import class_names_of, keep_labelled
from ran.errors import UserError
from ran.threads import available_cpus
from ran.training.config import DataConfig, TrainConfig
from ran.transforms import FaceTransform


@dataclass
class Splits:
    """The training split, the split that selects the best model, and the class names they share.

    ``train_files``: with ``--shard-data``, the Parquet files this process reads (else empty: all)."""

    train: Any
    val: Any
    val_name: str
    class_names: list[str]
    train_files: list[str] = field(default_factory=list)


def read_splits(config: TrainConfig, rank: int = 0, world_size: int = 1) -> tuple[Splits, str | None]:
    """The dataset's splits; the notes to print (the validation split falls back to 'test', unlabelled
    rows were left out), or None.

    With ``--shard-data`` and several processes, process ``rank`` reads only its own shard files of the
    train split (``ran.data.load_split_shards``); validation reads the whole split everywhere.
    """
    data = config.data
    splits = load_splits(data.data, progress=config.run.progress)
    if "train" not in splits:
        raise UserError(f"--data {data.data}: no 'train' split; it has {sorted(splits)}")
    val_name = data.val_split if data.val_split in splits else "test" if "test" in splits else None
    if val_name is None:
        raise UserError(f"--data {data.data}: no validation or test split to select the best model")
    note = None
    if val_name != data.val_split:
        note = f"note: no {data.val_split!r} split; selecting the best model on {val_name!r}"
    class_names = class_names_of(splits["train"], f"--data {data.data}: split 'train'")
    val_classes = class_names_of(splits[val_name], f"--data {data.data}: split {val_name!r}")
    if val_classes != class_names:
        raise UserError(f"--data: {val_name} classes {val_classes} differ from train classes {class_names}")
    train, files = splits["train"], []
    if data.shard_data and world_size > 1:
        from ran.data.format.folder import load_split_shards, split_files

        train = load_split_shards(data.data, "train", rank, world_size)
        files = [path.name for path in split_files(data.data, "train")[rank::world_size]]
    train, train_note = _labelled(train, "train", data.data, len(class_names), "training")
    val, val_note = _labelled(splits[val_name], val_name, data.data, len(class_names), "model selection")
    notes = "\n".join(n for n in (note, train_note, val_note) if n) or None
    return Splits(train, val, val_name, class_names, files), notes


def _labelled(split: Any, name: str, data: str, num_classes: int, purpose: str) -> tuple[Any, str | None]:
    """``split`` without its unlabelled rows (label -1), and the note that says how many were left out.

    Unlabelled rows are skipped, not refused: a split with some withheld labels still trains on the
    rest, and the run says so. A label outside the class list is refused, naming the row.
    """
    kept, left_out = keep_labelled(split, num_classes, f"--data {data}: split {name!r}")
    if not left_out:
        return kept, None
    return kept, f"note: {left_out} unlabelled rows (label -1) of split {name!r} left out of {purpose}"


WORKERS_PER_CPU = 4  # more data-loader workers than this per CPU only contend (and can exhaust processes)


def loader_options(data: DataConfig, device: torch.device, num_processes: int) -> dict[str, Any]:
    """Workers, pinned memory and prefetching for ``device``.

    Default workers: on a GPU, min(4, CPUs per process), so decoding overlaps the GPU's work; on a CPU, 0,
    because worker processes would take the cores the model computes on (batched decoding keeps the main
    process's share small: see benchmarks/bench_loader.py).
    """
    workers = data.num_workers
    if workers is None:
        workers = min(4, max(1, available_cpus() // num_processes)) if device.type == "cuda" else 0
    elif workers > WORKERS_PER_CPU * available_cpus():  # a copied run's config.yaml asked for 256 on 2 cores
        raise UserError(
            f"data.num_workers (--num-workers): {workers} worker processes, on a machine that gives this "
            f"command {available_cpus()} CPUs (at most {WORKERS_PER_CPU} per CPU)"
        )
    options: dict[str, Any] = {
        "num_workers": workers,
        "collate_fn": collate_faces,
        "pin_memory": device.type == "cuda",
    }
    if workers:
        options.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=stop_quietly)
    return options


def stop_quietly(worker_id: int) -> None:
    """In a data-loader worker, SIGTERM and SIGHUP act as Ctrl-C: torch's worker loop ends quietly on the
    interruption. Killed by the signal instead (``timeout``, batch systems and ``docker stop`` signal every
    process of the command), the workers made the main process print a traceback as it shut them down."""
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _interrupt)


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt


def build_loaders(
    config: TrainConfig,
    splits: Splits,
    transform: FaceTransform,
    options: dict[str, Any],
    num_samples: int | None = None,
) -> tuple[DataLoader, DataLoader, EpochSampler]:
    """Training loader (order from :class:`EpochSampler`, ``num_samples`` rows an epoch; default all),
    validation loader, and the sampler."""
    from ran.data.batches.sampling import class_balanced_weights

    soft = config.loss.label_mode == "soft"
    train_set = FaceImages(splits.train, transform, soft_labels=soft)
    weights = (
        class_balanced_weights(splits.train, len(splits.class_names)) if config.data.class_balanced else None
    )
    sampler = EpochSampler(num_samples or len(train_set), config.run.seed, weights, population=len(train_set))
    train_loader = DataLoader(train_set, batch_size=config.data.batch_size, sampler=sampler, **options)
    val_loader = DataLoader(
        FaceImages(splits.val, transform),
        batch_size=config.data.eval_batch_size or 2 * config.data.batch_size,
        shuffle=False,
        **options,
    )
    return train_loader, val_loader, sampler


def step_seed(seed: int, epoch: int, batch: int, process: int) -> int:
    """The seed of one training step's augmentation and dropout."""
    return (seed * 1_000_000_007 + epoch * 1_000_003 + batch * 1_009 + process) % (2**63 - 1)


def augment(
    images: torch.Tensor, base_boxes: torch.Tensor, data: DataConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Horizontal flips and per-image boxes (jittered preset or random crops), drawn from ``generator``
    on the images' device (``base_boxes`` lives there too): nothing is copied from the host."""
    from ran.regions import jitter_boxes, random_crop_boxes

    batch_size, device = images.shape[0], images.device
    if data.hflip:
        flip = torch.rand(batch_size, generator=generator, device=device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if data.random_crop_regions:
        return images, random_crop_boxes(batch_size, base_boxes.shape[0], generator=generator, device=device)
    if data.box_jitter:
        return images, jitter_boxes(base_boxes, batch_size, generator=generator)
    return images, None


__all__ = [
    "Splits",
    "augment",
    "build_loaders",
    "loader_options",
    "read_splits",
    "step_seed",
]
