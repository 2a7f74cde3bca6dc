"""A training loop beside one busy process: how much it slows down, with OpenMP threads spinning while
they wait (the old default) and with ``OMP_WAIT_POLICY=PASSIVE`` (what ``import ran`` now sets).

Each case runs a small fp32 RAN training loop (test_resnet backbone, 32 px regions, batch 8) in a fresh
process, once alone and once beside a process that keeps one core busy; the slow-down is the ratio of
the two step times. About a minute in all.

    python benchmarks/bench_threads.py [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

LOOP = """
import time, torch, timm, ran
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
print((time.perf_counter() - start) / STEPS)
"""

BUSY = "while True: pass"


def step_seconds(policy: str | None, steps: int, busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_WAIT_POLICY"] = policy or "ACTIVE"
    other = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        time.sleep(0.5 if busy else 0)  # the competitor is running before the loop starts
        code = LOOP.replace("STEPS", str(steps))
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        return float(done.stdout.split()[-1])
    finally:
        if other is not None:
            other.kill()
            other.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    rows = {}
    for name, policy in (
        ("spinning (OMP_WAIT_POLICY=ACTIVE)", "ACTIVE"),
        ("passive (ran's default)", "PASSIVE"),
    ):
        alone = step_seconds(policy, args.steps, busy=False)
        shared = step_seconds(policy, args.steps, busy=True)
        rows[name] = {"alone_ms": 1000 * alone, "beside_busy_ms": 1000 * shared, "slowdown": shared / alone}
        print(
            f"{name:36s} alone {1000 * alone:7.1f} ms/step  beside a busy process {1000 * shared:7.1f} "
            f"ms/step  slow-down {shared / alone:.2f}x",
            flush=True,
        )
    print(json.dumps({"cpus": os.cpu_count(), "results": rows}))


if __name__ == "__main__":
    main()
