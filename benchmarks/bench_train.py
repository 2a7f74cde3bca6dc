"""Training throughput of RAN (images/s), fp32 vs bf16 autocast, in one run.

A training step is what ``ran train`` does: 48x48 source images in, regions cut on the device with
jittered boxes, RAN forward with attention, CE + region-biased loss, backward, SGD step. The "floor" is the
bare backbone trained on the same number of already-cut crops (B x K images of the region size), so
``RAN / floor`` is the cost of everything RAN adds (cutting, attention, the bigger head).

    python benchmarks/bench_train.py                      # CPU: ran_resnet18 @224 and a small config
    python benchmarks/bench_train.py --device cuda --batch-size 64 --steps 20
"""

from __future__ import annotations

import argparse
import json
import time

import timm
import torch
import torch.nn.functional as F

import ran  # noqa: F401  (registers the RAN family)
from ran.losses import RANCriterion
from ran.regions import jitter_boxes

CONFIGS = {
    "ran_resnet18@224": {"model": "ran_resnet18", "region_size": 224},
    "ran_resnet18@64": {"model": "ran_resnet18", "region_size": 64},
}


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def bench(
    name: str,
    spec: dict,
    precision: str,
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    floor: bool,
) -> dict:
    torch.manual_seed(0)
    model = (
        timm.create_model(spec["model"], region_size=spec["region_size"], num_classes=8).to(device).train()
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = RANCriterion(0.1)
    images = torch.rand(batch_size, 3, 48, 48, device=device)
    labels = torch.randint(0, 8, (batch_size,), device=device)
    generator = torch.Generator().manual_seed(0)

    def ran_step() -> None:
        boxes = jitter_boxes(model.region_boxes.cpu(), batch_size, generator=generator).to(device)
        with _autocast(device, precision):
            out = model.forward_with_attention(images, boxes)
        loss = criterion(out, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = _time_steps(ran_step, steps, warmup, device)
    result = {
        "config": name,
        "precision": precision,
        "batch_size": batch_size,
        "num_regions": model.num_regions,
        "step_s": seconds,
        "images_per_s": batch_size / seconds,
    }
    if floor:
        backbone = timm.create_model(model.backbone_name, num_classes=8).to(device).train()
        floor_opt = torch.optim.SGD(backbone.parameters(), lr=0.01, momentum=0.9)
        size = model.region_size
        crops = torch.rand(batch_size * model.num_regions, 3, *size, device=device)
        crop_labels = labels.repeat_interleave(model.num_regions)

        def floor_step() -> None:
            with _autocast(device, precision):
                logits = backbone(crops)
            loss = F.cross_entropy(logits.float(), crop_labels)
            floor_opt.zero_grad(set_to_none=True)
            loss.backward()
            floor_opt.step()

        floor_seconds = _time_steps(floor_step, steps, warmup, device)
        result["floor_step_s"] = floor_seconds
        result["ran_over_floor"] = seconds / floor_seconds
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-backbone floor")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"batch {args.batch_size}, {args.steps} timed steps"
    )
    results = []
    for name in args.configs:
        for precision in args.precisions:
            r = bench(
                name,
                CONFIGS[name],
                precision,
                args.batch_size,
                args.steps,
                args.warmup,
                device,
                not args.no_floor,
            )
            results.append(r)
            floor = f", RAN/floor {r['ran_over_floor']:.2f}" if "ran_over_floor" in r else ""
            print(
                f"{name:18s} {precision:5s} {r['images_per_s']:8.1f} img/s ({r['step_s']:.3f} s/step){floor}",
                flush=True,
            )
    for name in args.configs:
        speeds = {r["precision"]: r["images_per_s"] for r in results if r["config"] == name}
        if "fp32" in speeds and "bf16" in speeds:
            print(f"{name}: bf16 / fp32 throughput = {speeds['bf16'] / speeds['fp32']:.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
