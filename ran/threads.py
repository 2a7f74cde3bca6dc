"""Compute threads that yield the CPU while they wait, and as many of them as the machine gives this process.

OpenMP's worker threads (PyTorch's CPU kernels) spin between parallel regions by default: alone on a
machine that saves microseconds, beside one other busy process it burns the cores the other needs and both
slow down several-fold (issue 21: a demo 18x slower, a training loop 2.2x; see benchmarks/bench_threads.py).
``OMP_WAIT_POLICY=PASSIVE`` makes them sleep instead. The OpenMP runtime reads it once, when torch is first
imported, so ``import ran`` sets it before that, and only where the user has not chosen a policy.

How many threads: the compute commands take ``--threads`` (:func:`use_threads`). By default, the physical
cores this process may run on: its CPU affinity, hyper-threads of one core counted once (they share the
core's arithmetic units), and no more than the container's CPU quota (cgroup v2 ``cpu.max``), where
torch's own default counts every core of the host. ``OMP_NUM_THREADS`` set by the user or by a launcher
(``torchrun``, ``accelerate launch`` with several processes) is kept.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

WAIT_POLICY = "OMP_WAIT_POLICY"
NUM_THREADS = "OMP_NUM_THREADS"
MAX_THREADS = 1024  # the most --threads accepts
CPU_QUOTA = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")  # cpu<N>/topology/core_cpus_list: N's hyper-thread siblings


def passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless it is set or torch is already imported (too late to
    matter); returns whether it was set here."""
    if WAIT_POLICY in os.environ or "torch" in sys.modules:
        return False
    os.environ[WAIT_POLICY] = "PASSIVE"
    return True


def _cpus() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


def _quota() -> int | None:
    """The CPU quota of this process's cgroup, rounded up to whole CPUs; None when there is none."""
    try:
        quota, period = CPU_QUOTA.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def _core(cpu: int) -> str:
    """The physical core ``cpu`` belongs to (its hyper-thread siblings list); ``cpu`` itself if unknown."""
    topology = CPU_TOPOLOGY / f"cpu{cpu}" / "topology"
    for name in ("core_cpus_list", "thread_siblings_list"):
        try:
            return (topology / name).read_text().strip()
        except OSError:
            continue
    return str(cpu)


def available_cpus() -> int:
    """Logical CPUs this process may run on (affinity, container quota)."""
    cpus = len(_cpus())
    return max(1, min(cpus, _quota() or cpus))


def default_threads() -> int:
    """Compute threads when ``--threads`` is not given: ``OMP_NUM_THREADS`` when set, else the physical
    cores this process may run on."""
    given = os.environ.get(NUM_THREADS, "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    cores = len({_core(cpu) for cpu in _cpus()})
    return max(1, min(cores, _quota() or cores))


def threads_help() -> str:
    """The help line of ``--threads``, with this machine's default."""
    source = f"{NUM_THREADS}" if os.environ.get(NUM_THREADS) else "the physical cores this process may use"
    return f"CPU threads for the computation (default: {default_threads()} here: {source})"


def use_threads(threads: int | None) -> int:
    """Run torch's CPU computation on ``threads`` threads (None: :func:`default_threads`); returns the
    number. Before torch is imported this sets ``OMP_NUM_THREADS``, which torch reads when it starts (and
    processes it starts inherit); after, ``torch.set_num_threads``."""
    count = default_threads() if threads is None else threads
    if threads is not None or NUM_THREADS not in os.environ:
        os.environ[NUM_THREADS] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(count)
    return count


passive_waiting()
