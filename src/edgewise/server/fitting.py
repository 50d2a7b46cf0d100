"""What the routes that fit a model on demand share: a bounded cache of fitted answers, one fit
per key at a time, a limit on fits at once, and the bucket a dense window is averaged to.

Used by :mod:`edgewise.server.routes.forecast` (per device, metric and horizon) and
:mod:`edgewise.server.routes.groups` (per fleet grouping). A fit takes a CPU and a threadpool
thread for a second or more, so a route keeps its answers in a :class:`FitCache`, fits a key
once however many requests ask for it at once (:meth:`FitCache.key_turn`), and runs at most
``max_fits`` fits at once (:func:`fit_slot`). A request waits for both, its key's turn and
then a slot, until one deadline (:func:`deadline`); past it, it is the route's 429, so many
requests (for one key or for many) cannot take every threadpool thread from the other routes
for longer than that. Nor can they take more than a few at all: a request first waits in the
event loop, holding no thread, for one of the route's :func:`thread_turn` places (its fit
slots and :data:`THREAD_SPARE` more), within the same deadline.

>>> bucket_s(600, 2000), bucket_s(86_400, 2000), bucket_s(7 * 86_400, 2000)
(1, 60, 600)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Generic, TypeVar

import anyio

from edgewise.server.problems import Problem

__all__ = ["BUCKETS_S", "THREAD_SPARE", "FitCache", "bucket_s", "busy", "deadline", "fit_slot",
           "thread_places", "thread_turn"]

#: Bucket steps (s) a dense window is averaged to: the common steps a grid snaps to.
BUCKETS_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200,
             10800, 21600, 43200, 86400)

#: Threadpool threads one fitting route's requests may hold beyond its fit slots (answers
#: from its cache, a key's waiters): see :func:`thread_turn`.
THREAD_SPARE = 2

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def deadline(wait_s: float) -> float:
    """The :func:`time.monotonic` time ``wait_s`` seconds from now: when a request stops
    waiting for its turn (:meth:`FitCache.key_turn` and :func:`fit_slot` share it).

    >>> 0 < deadline(10.0) - time.monotonic() <= 10.0
    True
    """
    return time.monotonic() + wait_s


def _left(until: float) -> float:
    """Seconds from now to ``until`` (a :func:`deadline`), 0 when it has passed."""
    return max(0.0, until - time.monotonic())


def bucket_s(span_s: float, max_points: int) -> int:
    """The smallest of :data:`BUCKETS_S` that cuts ``span_s`` seconds into at most
    ``max_points`` buckets (the largest when none does)."""
    return next((s for s in BUCKETS_S if span_s / s <= max_points), BUCKETS_S[-1])


class FitCache(Generic[K, V]):
    """Fitted answers per key, at most ``max_entries`` (the least recently used dropped
    first); thread-safe. ``fits`` is held while a fit runs: at most ``max_fits`` at once.

    ``generation`` counts :meth:`drop` calls: a fit that read its data before a drop may be
    stale, and :meth:`put` with the generation it started at then keeps nothing.

    >>> c = FitCache(max_entries=2)
    >>> for k in ("a", "b", "c"):
    ...     c.put(k, k.upper())
    >>> c.keys(), c.get("a"), c.get("b")
    (['b', 'c'], None, 'B')
    >>> g = c.generation
    >>> c.drop(lambda k: k == "b")
    1
    >>> c.put("b", "stale", generation=g)
    >>> c.keys()
    ['c']
    """

    def __init__(self, max_entries: int, max_fits: int = 1) -> None:
        self.max_entries = max_entries
        #: Held while a fit runs: at most ``max_fits`` at once (see :func:`fit_slot`).
        self.fits = threading.BoundedSemaphore(max_fits)
        #: The route's :func:`thread_turn` places: threads its requests may hold at once.
        self.threads = thread_places(max_fits)
        self.generation = 0
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._fitting: dict[K, threading.Lock] = {}

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: K, entry: V, generation: int | None = None) -> None:
        """Keep ``entry`` under ``key``; with ``generation``, only when no :meth:`drop` came
        since."""
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def key_lock(self, key: K) -> threading.Lock:
        """The lock one key's fit holds, so two requests for it fit once (wait for it
        with :meth:`key_turn`, which gives up at a deadline)."""
        with self._lock:
            if len(self._fitting) > 4 * self.max_entries:  # unheld ones only: bounded
                self._fitting = {k: v for k, v in self._fitting.items() if v.locked()}
            return self._fitting.setdefault(key, threading.Lock())

    @contextmanager
    def key_turn(self, key: K, until: float, busy: Callable[[], Problem]) -> Iterator[None]:
        """Hold ``key``'s lock (:meth:`key_lock`) while the block runs; raise ``busy()`` (a
        429 problem) when it is not free by ``until`` (a :func:`deadline`): requests for one
        key queue behind its fit, each for at most its own wait, not one after another.

        >>> c = FitCache(max_entries=2)
        >>> with c.key_turn("a", deadline(1.0), lambda: Problem(429, "Busy", "busy")):
        ...     c.key_lock("a").locked()
        True
        """
        with fit_slot(self.key_lock(key), until, busy):
            yield

    def drop(self, which: Callable[[K], bool]) -> int:
        """Drop every entry whose key ``which`` accepts; return how many."""
        with self._lock:
            self.generation += 1
            gone = [k for k in self._entries if which(k)]
            for k in gone:
                del self._entries[k]
            return len(gone)

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._entries)


@contextmanager
def fit_slot(fits: threading.BoundedSemaphore | threading.Lock, until: float,
             busy: Callable[[], Problem]) -> Iterator[None]:
    """Hold one of ``fits`` while the block runs; raise ``busy()`` (a 429 problem) when
    none is free by ``until`` (a :func:`deadline`: the one the request's
    :meth:`FitCache.key_turn` waited on, so the two waits together last no longer).
    :meth:`FitCache.key_turn` holds a key's lock the same way.

    >>> fits = threading.BoundedSemaphore(1)
    >>> with fit_slot(fits, deadline(1.0), lambda: Problem(429, "Busy", "busy")):
    ...     fits.acquire(blocking=False)
    False
    """
    if not fits.acquire(timeout=_left(until)):
        raise busy()
    try:
        yield
    finally:
        fits.release()


def thread_places(max_fits: int) -> threading.BoundedSemaphore:
    """A route's :func:`thread_turn` places: its ``max_fits`` and :data:`THREAD_SPARE`."""
    return threading.BoundedSemaphore(max_fits + THREAD_SPARE)


@asynccontextmanager
async def thread_turn(places: threading.BoundedSemaphore, until: float,
                      busy: Callable[[], Problem]) -> AsyncIterator[None]:
    """Hold one of ``places`` (:func:`thread_places`) while the block (the request's work in
    the threadpool) runs; raise ``busy()`` (a 429 problem) when none is free by ``until``.

    It waits in the event loop, holding no thread: a route's waiting requests each held a
    threadpool thread (40 in all), so 45 requests for devices' RUL made a telemetry POST wait
    for one until they gave up. A :mod:`threading` semaphore, tried without blocking, as an
    app may be served on more than one event loop (a test client's, uvicorn's).

    >>> places = thread_places(0)
    >>> async def one():
    ...     async with thread_turn(places, deadline(1.0), lambda: Problem(429, "B", "b")):
    ...         return places.acquire(blocking=False), places.acquire(blocking=False)
    >>> anyio.run(one)  # 2 places: one held by the block, one more free, then none
    (True, False)
    """
    pause = 0.005
    while not places.acquire(blocking=False):
        left = _left(until)
        if left <= 0:
            raise busy()
        await anyio.sleep(min(pause, left))
        pause = min(2 * pause, 0.05)
    try:
        yield
    finally:
        places.release()


def busy(title: str, doing: str, wait_s: float, reason: str, retry_s: int) -> Problem:
    """The 429 problem of a request that found no turn (its key's, then a fit slot) within
    ``wait_s`` seconds; ``doing`` says what holds the slots ("2 forecasts are being
    fitted")."""
    return Problem(429, title, f"{doing}; this one waited {wait_s:g} s for its turn. Retry "
                   "after the Retry-After header.", reason=reason,
                   allowed="a retry after Retry-After seconds",
                   headers={"Retry-After": str(retry_s)})
