"""RAN speed against the original computation, measured side by side in one run on this machine.

The baseline is the original computation: the same backbone run once per region on pre-cut (B, C, h, w)
crops (NCHW, fp32), then the same attention head. Every row is timed in the same rounds (one call of
each row per round, rows interleaved), so machine load hits all rows alike; the table gives the median
time and the speed-up over the baseline. Rows:

  * the original authors' RAN model file (FERPlus, `attention_rank_loss.py`), when ``--original DIR`` or
    ``$RAN_ORIGINAL_CODE`` names a folder holding it (never part of this repository);
  * RAN as ``timm.create_model`` gives it (fp32, NCHW weights), the same with channels-last weights, bf16
    autocast, bf16 + channels-last, and with ``--compile`` the ``torch.compile``d model;
  * the backbone alone on all B*K crops (the floor RAN cannot beat): RAN / floor is the cost of cutting
    regions and attention pooling;
  * training steps (forward, CE + region-biased loss, backward, SGD): the per-region loop in fp32, RAN in
    fp32 and in bf16 + channels-last (+ compiled with ``--compile``).

    python benchmarks/bench_model.py [--model ran_resnet18] [--batch 8] [--image 48] [--repeats 5]
        [--original /work/scratch/original] [--compile] [--chunks] [--json out.json]

``--chunks`` also times RAN inference at several backbone chunk sizes (``model.backbone_chunk``).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import timm
import torch

import ran  # noqa: F401  (registers the models)
from ran.devices import compile_for_inference
from ran.losses import RANCriterion
from ran.models.ran import RANOutput

Step = Callable[[], object]


def measure(rows: dict[str, Step], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times (s) of every row, rows interleaved round by round."""
    for fn in rows.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, fn in rows.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def loop_output(model: torch.nn.Module, regions: torch.Tensor) -> RANOutput:
    """The original computation: one backbone call per region over the batch, then RAN's head."""
    feats = torch.stack([model.backbone(regions[:, k]) for k in range(regions.shape[1])], dim=1)
    alpha = model._self_attention(feats)
    pooled, beta = model._relation_pool(model._pair_features(feats, alpha), alpha)
    return RANOutput(model.fc(pooled), alpha, beta, feats)


def load_original(folder: str | None) -> torch.nn.Module | None:
    """The authors' FERPlus RAN (``attention_rank_loss.resnet18``) from a folder outside the repository."""
    if not folder:
        return None
    path = Path(folder) / "attention_rank_loss.py"
    if not path.is_file():
        print(f"(no {path}: the original-code row is skipped)", file=sys.stderr)
        return None
    spec = importlib.util.spec_from_file_location("ran_original_code", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.resnet18()


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def variant(model: torch.nn.Module, channels_last: bool = False, compile_: bool = False) -> torch.nn.Module:
    """A copy of ``model`` with channels-last weights and / or compiled."""
    out = copy.deepcopy(model)
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    return compile_for_inference(out, next(out.parameters()).device) if compile_ else out


def inference_rows(args, model, original, images, regions, sync) -> dict[str, Step]:
    device = images.device

    def infer(fn: Callable[[], object], bf16: bool = False) -> Step:
        def run() -> None:
            with torch.inference_mode(), autocast(device, bf16):
                fn()
            sync()

        return run

    cl = variant(model, channels_last=True)
    crops = regions.flatten(0, 1).contiguous(memory_format=torch.channels_last)
    rows = {
        "loop: backbone per region, fp32 (the original computation)": infer(
            lambda: loop_output(model, regions)
        )
    }
    if original is not None:
        stacked = regions.permute(0, 2, 3, 4, 1).contiguous()  # the original's (B, C, h, w, K) input
        rows["original authors' code, fp32"] = infer(lambda: original(stacked))
    rows["RAN as timm.create_model gives it, fp32"] = infer(lambda: model(images))
    rows["RAN, channels-last weights, fp32"] = infer(lambda: cl(images))
    rows["RAN, bf16 autocast"] = infer(lambda: model(images), bf16=True)
    rows["RAN, bf16 autocast + channels-last"] = infer(lambda: cl(images), bf16=True)
    rows["backbone floor: B*K crops, channels-last, fp32"] = infer(lambda: cl._region_features(crops))
    rows["backbone floor: B*K crops, channels-last, bf16"] = infer(lambda: cl._region_features(crops), True)
    if args.compile:
        compiled = variant(model, channels_last=True, compile_=True)
        rows["RAN compiled, channels-last, fp32"] = infer(lambda: compiled(images))
        rows["RAN compiled, channels-last, bf16"] = infer(lambda: compiled(images), bf16=True)
    if args.chunks:
        for chunk in (2, 4, 8, 16, 24, 0):
            chunked = variant(model, channels_last=True)
            chunked.backbone_chunk = chunk
            rows[f"RAN, channels-last, bf16, chunk {chunk or 'all'}"] = infer(
                lambda m=chunked: m(images), True
            )
            rows[f"RAN, channels-last, fp32, chunk {chunk or 'all'}"] = infer(lambda m=chunked: m(images))
    return rows


def train_rows(args, model, images, regions, sync) -> dict[str, Step]:
    device = images.device
    criterion = RANCriterion(margin=0.1)
    target = torch.randint(0, model.num_classes, (images.shape[0],), device=device)

    def step(net: torch.nn.Module, forward: Callable[[torch.nn.Module], RANOutput], bf16: bool) -> Step:
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

        def run() -> None:
            with autocast(device, bf16):
                loss = criterion(forward(net), target)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sync()

        return run

    def ran_forward(net: torch.nn.Module) -> RANOutput:
        return net.forward_with_attention(images)

    loop = variant(model).train()
    rows = {"train step: loop per region, fp32": step(loop, lambda net: loop_output(net, regions), False)}
    rows["train step: RAN as created, fp32"] = step(variant(model).train(), ran_forward, False)
    cl = variant(model, channels_last=True).train()
    rows["train step: RAN, bf16 + channels-last"] = step(cl, ran_forward, True)
    if args.compile:
        compiled_model = variant(model, channels_last=True).train()
        compiled = torch.compile(ran_forward)
        rows["train step: RAN compiled, bf16 + channels-last"] = step(compiled_model, compiled, True)
    return rows


def report(
    times: dict[str, list[float]], baselines: dict[str, str], batch: int
) -> dict[str, dict[str, float]]:
    """Print the table; return median ms and speed-up per row."""
    table = {}
    print("| row | median ms | min ms | images/s | vs baseline |\n|---|---|---|---|---|")
    for name, values in times.items():
        base = baselines["train" if name.startswith("train") else "infer"]
        median = statistics.median(values)
        speedup = statistics.median(times[base]) / median
        table[name] = {"median_ms": median * 1000, "min_ms": min(values) * 1000, "speedup": speedup}
        cells = [
            f"{median * 1000:.0f}",
            f"{min(values) * 1000:.0f}",
            f"{batch / median:.1f}",
            f"{speedup:.2f}x",
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ran_resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image", type=int, default=48, help="source face size (FERPlus: 48)")
    parser.add_argument("--region-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--original", default=os.environ.get("RAN_ORIGINAL_CODE"), help="folder of the original code"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile'd inference and training"
    )
    parser.add_argument("--chunks", action="store_true", help="also time several backbone chunk sizes")
    parser.add_argument("--no-train", action="store_true", help="inference rows only")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kwargs = {"region_size": args.region_size} if args.region_size else {}
    model = timm.create_model(args.model, **kwargs).to(device).eval()
    original = load_original(args.original)
    if original is not None:
        original = original.to(device).eval()
    images = torch.rand(args.batch, 3, args.image, args.image, device=device)
    with torch.no_grad():
        regions = model.cut(images).contiguous()  # (B, K, C, h, w), NCHW crops for the loop
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = inference_rows(args, model, original, images, regions, sync)
    if not args.no_train:
        rows.update(train_rows(args, model, images, regions, sync))
    times = measure(rows, args.repeats)
    k, side = model.num_regions, model.region_size[0]
    print(
        f"{args.model}: {args.batch} faces of {args.image}px x {k} regions of {side}px = {args.batch * k} "
        f"backbone images per batch; device {device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; {args.repeats} interleaved rounds"
    )
    baselines = {"infer": next(iter(rows)), "train": "train step: loop per region, fp32"}
    table = report(times, baselines, args.batch)
    result = {"args": vars(args), "rows": table}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
