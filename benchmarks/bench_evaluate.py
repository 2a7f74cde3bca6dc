"""Benchmark: the statistics of an evaluation, on a FERPlus-test-sized subset (3,137 faces by default).

Measured side by side in one run, as ratios:

- the vectorised bootstrap (``ran.evaluation.statistics.accuracy_intervals``: one (resamples, n) count
  matrix, statistics as matrix products) against the textbook loop (one ``rng.choice`` per resample);
- everything ``summarize`` adds to a subset (intervals, calibration, attention statistics) against the
  forward pass that produced the predictions (``forward_with_attention`` on the same faces).

    python benchmarks/bench_evaluate.py [--faces 3137] [--resamples 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def loop_intervals(labels: np.ndarray, predictions: np.ndarray, classes: int, resamples: int, seed: int):
    """The reference: resample indices one resample at a time and recompute both statistics."""
    rng = np.random.default_rng(seed)
    accuracy, mean_class = [], []
    for _ in range(resamples):
        pick = rng.choice(labels.size, labels.size)
        y, p = labels[pick], predictions[pick]
        accuracy.append((y == p).mean())
        mean_class.append(np.mean([(p[y == c] == c).mean() for c in range(classes) if (y == c).any()]))
    return np.quantile(accuracy, [0.025, 0.975]), np.quantile(mean_class, [0.025, 0.975])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=3137)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import timm
    import torch

    import ran  # noqa: F401
    from ran.evaluation.metrics import subset_summary
    from ran.evaluation.samples import SubsetSamples
    from ran.evaluation.statistics import accuracy_intervals

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, args.faces)
    predictions = np.where(rng.random(args.faces) < 0.85, labels, rng.integers(0, 8, args.faces))
    vectorised = _best(
        lambda: accuracy_intervals(labels, predictions, 8, resamples=args.resamples), args.repeats
    )
    loop = _best(lambda: loop_intervals(labels, predictions, 8, args.resamples, 0), 1)

    torch.manual_seed(0)
    model = timm.create_model("ran", backbone="test_resnet", region_size=48).eval()
    faces = torch.rand(args.faces, 3, 48, 48)

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            outs = [model.forward_with_attention(batch) for batch in faces.split(128)]
        return torch.cat([o.logits for o in outs]).softmax(1), torch.cat([o.weights for o in outs])

    forward_s = _best(forward, 1)
    probabilities, weights = forward()
    samples = SubsetSamples(
        ids=[str(i) for i in range(args.faces)],
        rows=np.arange(args.faces),
        labels=labels,
        probabilities=probabilities.numpy(),
        weights=weights.numpy(),
        classes=[f"c{i}" for i in range(8)],
        regions=[f"r{i}" for i in range(6)],
    )
    summary_s = _best(lambda: subset_summary(samples, resamples=args.resamples, seed=0), args.repeats)
    report = {
        "faces": args.faces,
        "resamples": args.resamples,
        "vectorised_bootstrap_s": round(vectorised, 3),
        "loop_bootstrap_s": round(loop, 3),
        "loop_over_vectorised": round(loop / vectorised, 1),
        "forward_with_attention_s (test_resnet, 48 px regions, CPU)": round(forward_s, 3),
        "summarize_s": round(summary_s, 3),
        "summarize_over_forward": round(summary_s / forward_s, 3),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
