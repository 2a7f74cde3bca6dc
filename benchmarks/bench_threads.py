"""A training loop beside one busy process: how much it slows down before issue 21 (OpenMP threads
spinning while they wait, one per logical CPU) and after (``OMP_WAIT_POLICY=PASSIVE``, which ``import ran``
sets, and the ``--threads`` default, the physical cores this process may use: ``ran.threads``).

Each case runs a small fp32 RAN training loop (test_resnet backbone, 32 px regions, batch 8) in a fresh
process, once alone and once beside a process that keeps one core busy; the slow-down is the ratio of
the two step times. Every case is measured ``--repeats`` times, alternating, and the medians are shown,
as other work on a shared machine moves single runs. A few minutes in all.

    python benchmarks/bench_threads.py [--steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

LOOP = """
import time
from ran.threads import use_threads
threads = use_threads(THREADS)
import torch, timm
from ran.losses import RANCriterion
torch.manual_seed(0)
model = timm.create_model("ran", backbone="test_resnet", region_size=32, num_classes=8)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
criterion = RANCriterion()
images, labels = torch.randn(8, 3, 48, 48), torch.randint(0, 8, (8,))
def step():
    loss = criterion(model.forward_with_attention(images), labels)["loss"]
    optimizer.zero_grad(); loss.backward(); optimizer.step()
for _ in range(3):
    step()
start = time.perf_counter()
for _ in range(STEPS):
    step()
print(torch.get_num_threads(), (time.perf_counter() - start) / STEPS)
"""

BUSY = "while True: pass"

# name -> (OMP_WAIT_POLICY, threads: a number, or None for ran's default)
CASES = {
    "before: spinning, a thread per logical CPU": ("ACTIVE", os.cpu_count() or 1),
    "after: passive, --threads default": ("PASSIVE", None),
}


def step_seconds(policy: str, threads: int | None, steps: int, busy: bool) -> tuple[int, float]:
    """(threads torch used, seconds per training step) in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["OMP_WAIT_POLICY"] = policy
    other = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        time.sleep(0.5 if busy else 0)  # the competitor is running before the loop starts
        code = LOOP.replace("STEPS", str(steps)).replace("THREADS", repr(threads))
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        used, seconds = done.stdout.split()[-2:]
        return int(used), float(seconds)
    finally:
        if other is not None:
            other.kill()
            other.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, dict[str, list[float]]] = {name: {"alone": [], "busy": []} for name in CASES}
    used: dict[str, int] = {}
    for _ in range(args.repeats):  # alternate the cases, so a change in the machine's load hits all
        for name, (policy, threads) in CASES.items():
            for key, busy in (("alone", False), ("busy", True)):
                used[name], seconds = step_seconds(policy, threads, args.steps, busy)
                runs[name][key].append(seconds)
    rows = {}
    for name, times in runs.items():
        alone, shared = statistics.median(times["alone"]), statistics.median(times["busy"])
        rows[name] = {
            "threads": used[name],
            "alone_ms": 1000 * alone,
            "beside_busy_ms": 1000 * shared,
            "slowdown": shared / alone,
        }
        print(
            f"{name:44s} {used[name]:2d} threads  alone {1000 * alone:7.1f} ms/step  beside a busy "
            f"process {1000 * shared:7.1f} ms/step  slow-down {shared / alone:.2f}x",
            flush=True,
        )
    before, after = (rows[name]["beside_busy_ms"] for name in CASES)
    print(f"beside a busy process, after / before: {before / after:.2f}x faster per step", flush=True)
    print(json.dumps({"cpus": os.cpu_count(), "repeats": args.repeats, "results": rows}))


if __name__ == "__main__":
    main()
