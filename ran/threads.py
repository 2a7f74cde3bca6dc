"""Compute threads that yield the CPU while they wait, so a shared machine does not collapse.

OpenMP's worker threads (PyTorch's CPU kernels) spin between parallel regions by default: alone on a
machine that saves microseconds, beside one other busy process it burns the cores the other needs and both
slow down several-fold (issue 21: a demo 18x slower, a training loop 2.2x; see benchmarks/bench_threads.py).
``OMP_WAIT_POLICY=PASSIVE`` makes them sleep instead. The OpenMP runtime reads it once, when torch is first
imported, so ``import ran`` sets it before that, and only where the user has not chosen a policy.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "OMP_WAIT_POLICY"


def passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set or torch is already imported (too late to
    matter); returns whether it was set here."""
    if WAIT_POLICY in os.environ or "torch" in sys.modules:
        return False
    os.environ[WAIT_POLICY] = "PASSIVE"
    return True


passive_waiting()
