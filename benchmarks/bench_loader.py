"""The training input pipeline alone: images/s of a DataLoader over a ``ran data`` folder, row by row
(the loader before ``__getitems__``: one ``split[i]`` per image) vs batched (``FaceImages.__getitems__``, one
``split[indices]`` per batch), with 0 and N worker processes, side by side in one run.

    python benchmarks/bench_loader.py                       # 8192 FERPlus-like 48x48 gray faces
    python benchmarks/bench_loader.py --source-size 112 --resize 224 --rows 2048   # AffectNet-like, resized

No model runs: this is the rate at which the loader can feed one, to compare with a training step's.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ran.data.batches import FaceImages, collate_faces, load_splits
from ran.transforms import FaceTransform


class RowByRow(Dataset):
    """The loader before batched decoding: one ``split[i]`` (every column) per image, then the transform."""

    def __init__(self, faces: FaceImages) -> None:
        self.split, self.transform = faces.split, faces.transform

    def __len__(self) -> int:
        return self.split.num_rows

    def __getitem__(self, index: int):
        row = self.split[int(index)]
        return {"image": self.transform.prepare(row["image"]), "label": int(row["label"])}


def make_folder(root: Path, rows: int, side: int, gray: bool) -> Path:
    """A ``ran data`` folder of random PNG faces (random pixels compress like real faces, or worse)."""
    from ran.data.format.folder import labelled_split
    from ran.data.format.writer import write_dataset_folder
    from ran.labels import FERPLUS_CLASSES

    rng = np.random.default_rng(0)
    images = []
    for _ in range(rows):
        shape = (side, side) if gray else (side, side, 3)
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    labels = rng.integers(0, len(FERPLUS_CLASSES), rows).tolist()
    names = [f"{i:06d}.png" for i in range(rows)]
    split = labelled_split(images, labels, names, ["Training"] * rows, FERPLUS_CLASSES)
    from datasets import DatasetDict

    return write_dataset_folder(DatasetDict({"train": split}), root / "faces")


def images_per_second(dataset: Dataset, batch_size: int, workers: int, epochs: int) -> float:
    options = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate_faces, **options
    )
    for _ in loader:  # warm-up epoch: workers start, files are mapped
        pass
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        for batch in loader:
            seen += batch["images"].shape[0]
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--source-size", type=int, default=48, help="side of the stored faces")
    parser.add_argument("--resize", type=int, help="side the transform resizes to (default: none)")
    parser.add_argument("--color", action="store_true", help="RGB faces instead of grayscale")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per variant")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = make_folder(Path(scratch), args.rows, args.source_size, not args.color)
        split = load_splits(folder)["train"]
        size = (args.resize, args.resize) if args.resize else None
        faces = FaceImages(split, FaceTransform(size=size, grayscale=not args.color))
        print(
            f"{args.rows} rows of {args.source_size} px {'RGB' if args.color else 'gray'} PNG"
            f"{f' resized to {args.resize} px' if args.resize else ''}, batch {args.batch_size}"
        )
        for workers in args.workers:
            row = images_per_second(RowByRow(faces), args.batch_size, workers, args.epochs)
            batched = images_per_second(faces, args.batch_size, workers, args.epochs)
            print(
                f"workers {workers}: row by row {row:8.0f} img/s | batched {batched:8.0f} img/s | "
                f"batched / row by row {batched / row:.2f}x",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
