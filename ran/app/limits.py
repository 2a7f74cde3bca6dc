"""What one visitor of the app may take, and the tools that keep one visitor from holding the others.

A public page is hostile input: a photo of a thousand faces, a 100-megapixel upload or a queue of
requests must not freeze the server for everyone. :class:`AppLimits` holds the bounds (faces per photo,
pixels, seconds of model time per request, requests at once, per visitor and waiting, models kept in
memory, the upload cache's age). :class:`Visitors` counts each address's requests being served, so one
visitor cannot take every place (four crowded photos from one address held another visitor for 31 s).
:class:`Turns` lets requests take the model in arrival order, one batch of faces
at a time, so a long request is interleaved with short ones instead of running ahead of them.
:class:`SharedDetector` lets face detection (seconds on a crowded photo) run beside the model calls of
other requests rather than inside one lock.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ran.numbers import check_numbers, integer, number

if TYPE_CHECKING:  # annotations only: ran app --help reads AppLimits without torch
    import numpy as np

    from ran.pipeline.faces import Face, FaceDetector

LARGEST = 10**12  # any bound beyond this is a typo, not a choice


@dataclass(frozen=True)
class AppLimits:
    """Bounds on what one request (and all of them together) may take; every value is checked.

    Attributes:
        max_faces: faces analysed per photo, the largest first; the others are counted in the result.
        max_pixels: larger photos are refused from their header, before they are decoded.
        max_seconds: time per request, from its start: no model call starts later, and the faces not
            analysed by then are counted (decoding and face detection come first and are not cut short).
        batch_faces: faces per model call; requests take turns between calls.
        concurrency: requests served at once (they take turns on the model); the others wait in the queue.
        per_visitor: requests of one visitor (one client address) served at once; a further one is
            answered at once that the visitor's earlier photo is still being analysed, rather than taking
            another of the ``concurrency`` places. Visitors sharing an address share this.
        behind_proxy: the visitor's address is the last ``X-Forwarded-For`` entry, the one the proxy in
            front of the app appended, not the connection's (on a Hugging Face Space every connection
            comes from the proxy). Only behind such a proxy: elsewhere a visitor writes that header.
        queue_size: requests waiting at most; more are refused by gradio ("queue is full").
        max_models: models (and pipelines) kept in memory; the least recently used is dropped.
        cache_check_s / cache_age_s: every ``cache_check_s`` seconds, uploads older than ``cache_age_s``
            seconds are deleted from gradio's cache.
        kept_pages: pages (the latest photos shown) whose face crops are kept for the pictures of faces
            chosen later, about 14 MB each for 20 faces; gradio keeps a page's state for an hour after it
            closes, so older pages drop theirs (their faces' bars still show, their pictures do not).
    """

    max_faces: int = field(default=20, metadata={"type": integer(1, LARGEST)})
    max_pixels: int = field(default=25_000_000, metadata={"type": integer(1, LARGEST)})
    max_seconds: float = field(default=10.0, metadata={"type": number(above=0, high=LARGEST)})
    batch_faces: int = field(default=4, metadata={"type": integer(1, LARGEST)})
    concurrency: int = field(default=4, metadata={"type": integer(1, LARGEST)})
    per_visitor: int = field(default=2, metadata={"type": integer(1, LARGEST)})
    behind_proxy: bool = False
    queue_size: int = field(default=32, metadata={"type": integer(1, LARGEST)})
    max_models: int = field(default=4, metadata={"type": integer(1, LARGEST)})
    cache_check_s: int = field(default=300, metadata={"type": integer(1, LARGEST)})
    cache_age_s: int = field(default=900, metadata={"type": integer(1, LARGEST)})
    kept_pages: int = field(default=16, metadata={"type": integer(1, 100_000)})

    def __post_init__(self) -> None:
        check_numbers(self, name=str)


class Visitors:
    """How many requests each visitor (a client address) has being served, each at most ``most``."""

    def __init__(self, most: int) -> None:
        self._most = most
        self._serving: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def admit(self, visitor: str | None) -> Iterator[bool]:
        """Yield whether ``visitor`` may be served now (counted until the ``with`` block ends); a request
        with no address (a direct call, not over HTTP) is always admitted."""
        with self._lock:
            admitted = visitor is None or self._serving.get(visitor, 0) < self._most
            if admitted and visitor is not None:
                self._serving[visitor] = self._serving.get(visitor, 0) + 1
        try:
            yield admitted
        finally:
            if admitted and visitor is not None:
                with self._lock:
                    left = self._serving.pop(visitor) - 1
                    if left:
                        self._serving[visitor] = left


class Turns:
    """A lock taken in arrival order (a ticket lock). ``threading.Lock`` promises no order: a request that
    loops over batches may take it again before a waiting one wakes up, as often as it happens to win."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for this caller's turn, hold it for the ``with`` block, then pass it on."""
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                self._changed.wait_for(lambda: self._serving == ticket)
            except BaseException:  # interrupted while waiting: its turn is skipped, never lost
                self._abandoned.add(ticket)
                self._skip_abandoned()
                raise
        try:
            yield
        finally:
            with self._changed:
                self._serving += 1
                self._skip_abandoned()

    def _skip_abandoned(self) -> None:
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._changed.notify_all()


class SharedDetector:
    """A face detector for several threads at once: each call borrows one of up to ``size`` detectors
    made by ``make`` (detectors keep state between calls, so one instance serves one call at a time).
    It also remembers, per thread, how many faces its last call found, before any cap."""

    def __init__(self, make: Callable[[], FaceDetector], size: int) -> None:
        self._make, self._size = make, size
        self._idle: queue.LifoQueue[FaceDetector] = queue.LifoQueue()
        self._made = 0
        self._making = threading.Lock()
        self._found = threading.local()

    def detect(self, image: np.ndarray) -> list[Face]:
        detector = self._borrow()
        try:
            faces = detector.detect(image)
        finally:
            self._idle.put(detector)
        self._found.count = len(faces)
        return faces

    def take_found(self) -> int:
        """How many faces this thread's last ``detect`` found (0 if none ran since the last ask)."""
        count = getattr(self._found, "count", 0)
        self._found.count = 0
        return count

    def _borrow(self) -> FaceDetector:
        with self._making:
            make = self._idle.empty() and self._made < self._size
            self._made += make
        if not make:
            return self._idle.get()
        try:
            return self._make()
        except BaseException:
            with self._making:
                self._made -= 1
            raise


__all__ = ["AppLimits", "SharedDetector", "Turns", "Visitors"]
