"""Benchmark: what perturbing costs ``ran robustness``, as a fraction of evaluating ``ran_resnet18``.

Per batch of uint8 faces at the model's input size, the time of ``ran.robustness.perturb`` (every
perturbation at severity 3, averaged over the kinds) against one forward pass of ``ran_resnet18`` through
the inference step (``ran.inference.infer``) on the same faces: the lab runs one perturbation and one
forward pass per batch and setting, so the ratio is the share of its time spent perturbing. The issue's
bar: under 1/5.

    python benchmarks/bench_perturb.py [--batch 64] [--side 224] [--device cpu|cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def _best(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=float, default=0.2, help="fail (exit 1) above this ratio")
    args = parser.parse_args(argv)

    import timm

    import ran  # noqa: F401  (registers the models)
    from ran.inference import infer
    from ran.robustness import PERTURBATIONS, perturb

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model("ran_resnet18", num_classes=8).eval().to(device)
    faces = torch.randint(0, 256, (args.batch, 3, args.side, args.side), dtype=torch.uint8, device=device)
    ids = torch.arange(args.batch, device=device)
    infer(model, faces)  # warm-up
    forward = _best(lambda: infer(model, faces), args.repeats, device)
    per_kind = {}
    for kind in PERTURBATIONS:
        perturb(faces, kind, 3, ids=ids)
        per_kind[kind] = _best(lambda k=kind: perturb(faces, k, 3, ids=ids), args.repeats, device)
    mean = sum(per_kind.values()) / len(per_kind)
    report = {
        "device": str(device),
        "batch": args.batch,
        "side": args.side,
        "forward_s": forward,
        "perturb_mean_s": mean,
        "ratio": mean / forward,
        "slowest": max(per_kind, key=per_kind.get),
        "per_kind_ratio": {k: round(v / forward, 4) for k, v in per_kind.items()},
    }
    print(json.dumps(report, indent=2))
    return 0 if report["ratio"] < args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
