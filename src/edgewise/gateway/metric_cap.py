"""The metric names a device may have: at most ``max_metrics`` (the setting
``max_metrics_per_device``, ``EDGEWISE_MAX_METRICS_PER_DEVICE``, default 256).

Each metric name new to a device costs the gateway a per-metric detector (about 128 KB of
tables for the default ``context-likelihood``), its cleaner's and gates' state, a share of
``detectors.pickle`` and of every stop; a device that sent a new name in every reading
grew the gateway by about a gigabyte per 60,000 names, within its rate limit. So the
gateway remembers each device's names: a reading of a name the device already has is
taken as always; one of a name new to a device that has ``max_metrics`` names already is
refused (dead-letter reason ``too_many_metrics``), its message's other readings taken.

A device's names are first those the store holds of it (:meth:`MetricCap.seed` for each
device the store lists, as the pipeline does at start while it lists them for its seq-gap
checks; :meth:`MetricCap.from_store` does it alone), then each one admitted since, first
come first served within a message. Names the store holds are never refused, not even past
the cap (a cap lowered after the fact does not cut a device's readings off);
:meth:`MetricCap.forget` drops a deleted device, so the id registered again starts with
none. The class is thread-safe: transports ingest from several threads.

>>> from edgewise.telemetry import decode
>>> cap = MetricCap(max_metrics=2)
>>> cap.seed("pump-1", ["flow"])
>>> sorted(cap.admit("pump-1", ["flow", "speed", "temp", "speed"]))   # the refused names
['temp']
>>> sorted(cap.known("pump-1"))
['flow', 'speed']
>>> dec = decode(b'{"ts": 1700000000, "metrics": {"flow": 1, "head": 2, "speed": 3}}', "pump-1")
>>> cap.refuse_past_cap(dec, "pump-1")
1
>>> [r.metric for r in dec.readings], [e.reason for e in dec.rejected]
(['flow', 'speed'], ['too_many_metrics'])
>>> cap.forget("pump-1"); cap.known("pump-1")
frozenset()
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from edgewise.errors import PayloadError
from edgewise.params import Interval, validate_params
from edgewise.telemetry import Decoded

__all__ = ["DEFAULT_MAX_METRICS", "REASON", "MetricCap"]

#: The default cap: 10 times the largest real device the project reads (C-MAPSS's 24
#: columns of settings and sensors; the simulated pumps have 8), Mahalanobis's default.
DEFAULT_MAX_METRICS = 256
#: The dead-letter reason of a reading refused for its name.
REASON = "too_many_metrics"


class MetricCap:
    """Per device, the metric names it has, at most ``max_metrics`` new ones admitted.

    Parameters
    ----------
    max_metrics
        The most metric names a device may have; names the store already holds of it
        (:meth:`seed`) count, and are never refused.

    Examples
    --------
    >>> cap = MetricCap(max_metrics=3)
    >>> cap.admit("d", ["a", "b"]), cap.admit("d", ["c", "d", "a"])
    (set(), {'d'})
    """

    def __init__(self, max_metrics: int = DEFAULT_MAX_METRICS) -> None:
        validate_params({"max_metrics": Interval(int, 1, None)},
                        {"max_metrics": max_metrics}, self)
        self.max_metrics = max_metrics
        self._names: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_store(cls, store: Any, max_metrics: int = DEFAULT_MAX_METRICS) -> MetricCap:
        """A cap seeded with every device's metric names the store holds
        (``store.devices()``, :class:`~edgewise.store.base.DeviceSummary` ``metrics``).

        >>> from edgewise.store import open_store
        >>> from edgewise.telemetry import Reading
        >>> st = open_store("duckdb://:memory:")
        >>> _ = st.append([Reading("p", "flow", 1, 1.0), Reading("p", "temp", 1, 2.0)])
        >>> sorted(MetricCap.from_store(st, 5).known("p"))
        ['flow', 'temp']
        >>> st.close()
        """
        cap = cls(max_metrics)
        for summary in store.devices():
            cap.seed(summary.device_id, summary.metrics)
        return cap

    def seed(self, device_id: str, metrics: Iterable[str]) -> None:
        """Remember ``metrics`` as names ``device_id`` has (stored already): they are
        always admitted, and count towards its cap, even past it."""
        with self._lock:
            self._names.setdefault(device_id, set()).update(metrics)

    def admit(self, device_id: str, metrics: Iterable[str]) -> set[str]:
        """Remember the names of ``metrics`` new to ``device_id`` while it has fewer than
        ``max_metrics``, in their order; return the names refused (new past the cap).

        >>> cap = MetricCap(max_metrics=1)
        >>> cap.admit("d", ["b", "a"]), cap.admit("e", ["a"])
        ({'a'}, set())
        """
        with self._lock:
            have = self._names.setdefault(device_id, set())
            refused: set[str] = set()
            for m in metrics:
                if m in have or m in refused:
                    continue
                if len(have) < self.max_metrics:
                    have.add(m)
                else:
                    refused.add(m)
            return refused

    def refuse_past_cap(self, dec: Decoded, device_id: str) -> int:
        """Move each reading of ``dec`` whose name :meth:`admit` refuses to ``dec``'s
        rejections (reason :data:`REASON`, one per reading, as the decoder's), the others
        admitted; return how many were moved. A reading's seq still counts: its message
        is handled (dead-lettered), not resent."""
        refused = self.admit(device_id, (r.metric for r in dec.readings))
        if not refused:
            return 0
        kept = [r for r in dec.readings if r.metric not in refused]
        moved = len(dec.readings) - len(kept)
        allowed = (f"a metric name device {device_id!r} already has: it has "
                   f"{self.max_metrics} or more, the most a device may have "
                   f"(EDGEWISE_MAX_METRICS_PER_DEVICE)")
        for r in dec.readings:
            if r.metric in refused:
                dec.reject(PayloadError(device_id=device_id, field="metric", value=r.metric,
                                        allowed=allowed, reason=REASON))
        dec.readings = kept
        return moved

    def known(self, device_id: str) -> frozenset[str]:
        """The names ``device_id`` has (seeded or admitted); empty for a device unseen."""
        with self._lock:
            return frozenset(self._names.get(device_id, ()))

    def forget(self, device_id: str) -> None:
        """Drop ``device_id``'s names (the device deleted): the id registered again
        starts with none."""
        with self._lock:
            self._names.pop(device_id, None)
