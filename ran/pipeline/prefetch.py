"""Work ahead of the model: a bounded background thread that runs an iterator while its consumer computes.

Prediction decodes, detects and crops the next inputs (:func:`prefetched` around the pipeline's
preprocessing) while the model runs on the faces already found. Both halves spend their time in code that
releases the GIL (PIL's decoders, OpenCV's networks and resizes; PyTorch's and onnxruntime's kernels), so
with a core or two to spare the detector's work hides behind the model's.

What it keeps: the items come out in the order the iterator gives them; an exception the iterator raises
comes out of the consumer's ``next`` at that place in the sequence (items before it are delivered first);
at most ``depth`` finished items wait, plus the one being made, however slowly the consumer takes them; and
a consumer that stops early (``close``, ``break``, an exception of its own) stops the thread after the item
it is making, leaving no thread behind.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()  # the iterator is exhausted


class _Raised:
    """An exception the iterator raised, carried to the consumer's thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(source: Iterable[T], depth: int) -> Iterator[T]:
    """``source``'s items, made by a background thread at most ``depth`` items ahead of the consumer
    (``depth`` 0: ``source`` itself, in the caller's thread)."""
    if depth < 1:
        yield from source
        return
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    worker = threading.Thread(
        target=_produce, args=(iter(source), ready, stop), name="ran-prefetch", daemon=True
    )
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        _drain(ready)  # unblocks a put the worker may be waiting in; it sees ``stop`` next
        worker.join()


def _produce(items: Iterator[Any], ready: queue.Queue[Any], stop: threading.Event) -> None:
    try:
        for item in items:
            ready.put(item)
            if stop.is_set():
                return
        ready.put(_DONE)
    except BaseException as error:  # noqa: BLE001 - every failure goes to the consumer, in order
        ready.put(_Raised(error))
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # a generator's own clean-up (open videos) runs in the thread that ran it


def _drain(ready: queue.Queue[Any]) -> None:
    while True:
        try:
            ready.get_nowait()
        except queue.Empty:
            return


__all__ = ["prefetched"]
