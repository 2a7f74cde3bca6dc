"""RAN model overheads, measured in one run on this machine.

Prints, for one model and batch:
  * RAN inference time / the same backbone's time on the same B*K crops  (goal <= 1.10: region cutting
    and attention pooling must cost little next to the backbone);
  * bf16-autocast / fp32 time for RAN inference and for one training step (RB loss included);
  * channels-last / default memory format time for RAN inference (what train / evaluate / predict use).

    python benchmarks/bench_model.py [--model ran_resnet18] [--batch 8] [--image 48] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import timm
import torch

import ran  # noqa: F401
from ran.losses import RANCriterion


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ran_resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image", type=int, default=48, help="source face size (FERPlus: 48)")
    parser.add_argument("--region-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args()

    device = torch.device(args.device)
    kwargs = {"region_size": args.region_size} if args.region_size else {}
    model = timm.create_model(args.model, **kwargs).to(device).eval()
    images = torch.rand(args.batch, 3, args.image, args.image, device=device)
    crops = model.cut(images).flatten(0, 1).contiguous()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def autocast(bf16: bool):
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def infer(fn: Callable[[], torch.Tensor], bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode(), autocast(bf16):
                fn()
            sync()

        return run

    results: dict[str, float] = {}
    for bf16 in (False, True):
        tag = "bf16" if bf16 else "fp32"
        results[f"ran_infer_{tag}_s"] = timed(infer(lambda: model(images), bf16), args.repeats)
        results[f"backbone_infer_{tag}_s"] = timed(infer(lambda: model.backbone(crops), bf16), args.repeats)

    model_cl = timm.create_model(args.model, **kwargs).to(device, memory_format=torch.channels_last).eval()
    model_cl.load_state_dict(model.state_dict())
    for bf16 in (False, True):
        tag = "bf16" if bf16 else "fp32"
        results[f"ran_infer_{tag}_channels_last_s"] = timed(
            infer(lambda: model_cl(images), bf16), args.repeats
        )

    train_model = timm.create_model(args.model, **kwargs).to(device).train()
    criterion = RANCriterion(margin=0.1)
    optimizer = torch.optim.SGD(train_model.parameters(), lr=1e-3, momentum=0.9)
    target = torch.randint(0, train_model.num_classes, (args.batch,), device=device)

    def train_step(bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with autocast(bf16):
                loss = criterion(train_model.forward_with_attention(images), target)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sync()

        return run

    for bf16 in (False, True):
        results[f"train_step_{'bf16' if bf16 else 'fp32'}_s"] = timed(train_step(bf16), args.repeats)

    k = model.num_regions
    ratios = {
        "ran_over_backbone_fp32": results["ran_infer_fp32_s"] / results["backbone_infer_fp32_s"],
        "ran_over_backbone_bf16": results["ran_infer_bf16_s"] / results["backbone_infer_bf16_s"],
        "bf16_over_fp32_inference": results["ran_infer_bf16_s"] / results["ran_infer_fp32_s"],
        "bf16_over_fp32_train_step": results["train_step_bf16_s"] / results["train_step_fp32_s"],
        "channels_last_over_default_fp32": results["ran_infer_fp32_channels_last_s"]
        / results["ran_infer_fp32_s"],
        "channels_last_over_default_bf16": results["ran_infer_bf16_channels_last_s"]
        / results["ran_infer_bf16_s"],
    }
    print(
        f"model {args.model}: batch {args.batch} faces of {args.image}px, K={k} regions of "
        f"{model.region_size[0]}px -> {args.batch * k} backbone images per call, device {device}"
    )
    for key, value in results.items():
        print(f"  {key:<28} {value * 1000:9.1f} ms")
    print(f"  {'images/s train fp32':<28} {args.batch / results['train_step_fp32_s']:9.1f}")
    print(f"  {'images/s train bf16':<28} {args.batch / results['train_step_bf16_s']:9.1f}")
    for key, value in ratios.items():
        goal = "  (goal <= 1.10)" if key.startswith("ran_over") else ""
        print(f"  {key:<28} {value:9.3f}{goal}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "times_s": results, "ratios": ratios}, fh, indent=2)


if __name__ == "__main__":
    main()
