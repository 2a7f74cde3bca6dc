"""The GPU benchmark of issue 11: images/s of RAN training and inference in bf16, with and without
``torch.compile``, RAN over its backbone floor, and the data loader's images/s.

Each rate is the mean over ``--steps`` timed steps after warm-up (which also absorbs compilation), with one
device synchronisation at the end, so queued GPU work is counted and nothing else waits for the host.
Models run with channels-last weights (what ``ran train`` uses) and ``cudnn.benchmark`` (fixed shapes).

    python benchmarks/bench_gpu.py [--model ran_resnet18] [--batch 128] [--image 48] [--steps 20]
        [--no-compile] [--data FOLDER] [--workers 8] [--device cuda] [--json OUT]

On a CPU (``--device cpu``) the same rows run, as ``benchmarks/gpu_check.py --dry-run`` does it.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch

import ran  # noqa: F401  (registers the models)
from ran.losses import RANCriterion

Step = Callable[[], object]


def rate(fn: Step, batch: int, steps: int, sync: Callable[[], None], warmup: int = 3) -> dict[str, float]:
    """images/s of ``fn`` over ``steps`` calls; ``first_call_s`` is the first call (compilation)."""
    start = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    seconds = time.perf_counter() - start
    return {"images_per_s": batch * steps / seconds, "step_ms": 1000 * seconds / steps, "first_call_s": first}


def build(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    kwargs = {"region_size": args.region_size} if args.region_size else {}
    if args.backbone:
        kwargs["backbone"] = args.backbone
    model = timm.create_model(args.model, **kwargs)
    return model.to(device, memory_format=torch.channels_last)


def inference_step(model: torch.nn.Module, images: torch.Tensor, compile_: bool) -> Step:
    net = copy.deepcopy(model).eval()
    forward = torch.compile(net) if compile_ else net

    def run() -> None:
        with torch.inference_mode(), torch.autocast(images.device.type, dtype=torch.bfloat16):
            forward(images)

    return run


def floor_step(model: torch.nn.Module, images: torch.Tensor) -> Step:
    """The backbone alone on the B*K crops RAN feeds it (cut once, outside the timing)."""
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        crops = net.cut(images).flatten(0, 1).contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode(), torch.autocast(images.device.type, dtype=torch.bfloat16):
            net._region_features(crops)

    return run


def train_step(model: torch.nn.Module, images: torch.Tensor, compile_: bool) -> Step:
    """Forward with the attention weights, CE + region-biased loss, backward, SGD: what ``ran train`` does."""
    net = copy.deepcopy(model).train()
    criterion = RANCriterion(margin=0.1)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    target = torch.randint(0, net.num_classes, (images.shape[0],), device=images.device)

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        return criterion(net.forward_with_attention(x), target)["loss"]

    compute = torch.compile(loss_of) if compile_ else loss_of

    def run() -> None:
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            loss = compute(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def loader_rate(folder: str, batch: int, workers: int, steps: int, pin: bool) -> dict[str, float]:
    """images/s of the training input pipeline alone: decode + prepare + collate, ``workers`` processes."""
    from torch.utils.data import DataLoader

    from ran.data.batches import FaceImages, collate_faces, load_splits
    from ran.transforms import FaceTransform

    split = load_splits(folder)["train"]
    loader = DataLoader(
        FaceImages(split, FaceTransform()),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_faces,
        pin_memory=pin,
        persistent_workers=workers > 0,
        drop_last=True,
    )
    if len(loader) == 0:
        raise ValueError(f"{folder}: the train split has fewer than {batch} rows; lower --batch")
    count, start, seen = 0, None, 0
    while seen < steps + 1:
        for batch_dict in loader:
            if start is None:  # first batch: worker start-up, not throughput
                start = time.perf_counter()
            else:
                count += batch_dict["images"].shape[0]
            seen += 1
            if seen >= steps + 1:
                break
    seconds = time.perf_counter() - start
    return {"images_per_s": count / seconds if count else 0.0, "workers": workers, "batches": seen - 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ran_resnet18")
    parser.add_argument("--backbone", default=None, help="timm backbone overriding the model's")
    parser.add_argument("--region-size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image", type=int, default=48, help="source face size (FERPlus: 48)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--data", help="a 'ran data' folder for the loader row (skipped without)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="write the numbers to this JSON file")
    return parser.parse_args(argv)


def run_rows(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, float]]:
    model = build(args, device)
    images = torch.rand(args.batch, 3, args.image, args.image, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = {
        "inference bf16": inference_step(model, images, False),
        "backbone floor bf16 (B*K crops)": floor_step(model, images),
        "train step bf16": train_step(model, images, False),
    }
    if not args.no_compile:
        steps["inference bf16 compiled"] = inference_step(model, images, True)
        steps["train step bf16 compiled"] = train_step(model, images, True)
    rows = {name: rate(fn, args.batch, args.steps, sync) for name, fn in steps.items()}
    floor = rows["backbone floor bf16 (B*K crops)"]["images_per_s"]
    rows["inference bf16"]["ran_over_floor_time"] = floor / rows["inference bf16"]["images_per_s"]
    if args.data:
        rows["data loader"] = loader_rate(
            args.data, args.batch, args.workers, args.steps, device.type == "cuda"
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = run_rows(args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.model}, batch {args.batch} faces of {args.image}px, bf16, channels-last, on {name}:")
    for row, values in rows.items():
        extra = ", ".join(f"{k} {v:.3g}" for k, v in values.items() if k != "images_per_s")
        print(f"  {row:<34} {values['images_per_s']:10.1f} images/s  ({extra})")
    result = {"device": name, "torch": torch.__version__, "args": vars(args), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
