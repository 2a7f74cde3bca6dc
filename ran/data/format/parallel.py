"""Running a builder's per-image work (decode, crop, encode, draw) in several processes, in order.

The writer needs the rows in a fixed order and must not hold more than a few batches at once, so this is
an ordered map over a process pool with a bounded number of tasks in flight: the source is read lazily
and a fast producer never queues the whole dataset in memory (``multiprocessing.Pool.imap`` would).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import TypeVar

from ran.errors import UserError

T = TypeVar("T")
R = TypeVar("R")


def check_num_proc(num_proc: int) -> int:
    """``num_proc`` as given, once it is a positive integer."""
    if isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1:
        raise UserError(f"num_proc must be a positive integer (processes to build with), got {num_proc!r}")
    return num_proc


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def map_in_order(
    function: Callable[[T], R], items: Iterable[T], num_proc: int = 1, *, in_flight: int | None = None
) -> Iterator[R]:
    """``function`` over ``items``, results in input order; in ``num_proc`` worker processes when > 1.

    At most ``in_flight`` (default ``2 * num_proc``) items are submitted and not yet taken, which bounds
    memory. ``function`` and the items must pickle (module-level functions, plain data). An exception in
    a worker is raised here, in order, and the remaining work is cancelled.
    """
    check_num_proc(num_proc)
    if num_proc == 1:
        yield from map(function, items)
        return
    limit = in_flight or 2 * num_proc
    pending: deque[Future[R]] = deque()
    pool = ProcessPoolExecutor(max_workers=num_proc)
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
