"""Alert lifecycle: raise, merge into spans, acknowledge, label.

Consecutive anomalous readings of one device become *one* open alert whose span grows
while the anomaly lasts (readings closer than ``merge_gap_s`` apart join it), so a fault
that lasts ten minutes is one alert, not six hundred. Each alert carries the metrics that
drove it with their mean share of the score over its readings, and its message names them.

>>> from edgewise.store import open_store
>>> store = open_store("duckdb://:memory:")
>>> am = AlertManager(store)
>>> a = am.observe("pump-1", 10**18, 0.97, {"temp_c": 0.8, "rpm": 0.2})
>>> b = am.observe("pump-1", 10**18 + 10**9, 0.99, {"temp_c": 1.0})   # same fault: merged
>>> a is b, a.drivers
(True, {'temp_c': 0.9, 'rpm': 0.1})
>>> am.acknowledge(a.id, by="ops@example.org").status
'acknowledged'
>>> am.label(a.id, "true_alarm", by="ops@example.org").label
'true_alarm'
>>> store.close()
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from edgewise.detect.base import DEFAULT_THRESHOLD
from edgewise.errors import InvalidParameterError
from edgewise.store.base import Alert, Store

__all__ = ["LABELS", "AlertManager", "merge_drivers"]

#: Labels a person can give an alert.
LABELS = ("true_alarm", "false_alarm")


def merge_drivers(
    old: dict[str, float], new: dict[str, float], keep: int = 5
) -> dict[str, float]:
    """Average two driver maps (shares), keep the ``keep`` largest, renormalise to 1.

    >>> merge_drivers({"a": 1.0}, {"a": 0.5, "b": 0.5})
    {'a': 0.75, 'b': 0.25}
    """
    names = set(old) | set(new)
    both = {n: old.get(n, 0.0) + new.get(n, 0.0) for n in names}
    top = sorted(both.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    total = sum(v for _, v in top)
    return {n: round(v / total, 4) for n, v in top} if total > 0 else {}


@dataclass
class _Open:
    alert: Alert
    readings: int = 1
    dirty: dict[str, object] | None = None
    written: float = 0.0
    # each metric's summed share over the alert's readings (all metrics, not only the top)
    shares: dict[str, float] | None = None


def _top_shares(shares: dict[str, float], keep: int = 5) -> dict[str, float]:
    """The ``keep`` largest of summed shares, renormalised to 1."""
    return merge_drivers(shares, {}, keep)


class AlertManager:
    """Raises and merges anomaly alerts of every device into ``store``.

    Parameters
    ----------
    store
        Where alerts are kept (``add_alert``/``update_alert``).
    threshold
        Score at or above which a reading is anomalous.
    merge_gap_s
        Anomalous readings of one device closer than this (device time) join one alert.
    on_alert
        Called with each *new* alert (e.g. to count it).
    write_every_s
        A growing alert's span and score are written to the store at most this often
        (and by :meth:`flush`), so a long fault costs a few writes, not one per reading.
    """

    def __init__(
        self,
        store: Store,
        threshold: float = DEFAULT_THRESHOLD,
        merge_gap_s: float = 60.0,
        on_alert: object = None,
        write_every_s: float = 1.0,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise InvalidParameterError(
                f"The 'threshold' parameter of AlertManager must be a float in the range "
                f"(0, 1]. Got {threshold!r} instead."
            )
        self.store = store
        self.threshold = threshold
        self.merge_gap_ns = int(merge_gap_s * 1e9)
        self.on_alert = on_alert
        self.write_every_s = write_every_s
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()

    def observe(
        self, device_id: str, ts_ns: int, score: float, drivers: dict[str, float]
    ) -> Alert | None:
        """Feed one scored reading; return the alert it raised or extended, else ``None``."""
        if score < self.threshold:
            return None
        with self._lock:
            cur = self._open.get(device_id)
            a = cur.alert if cur else None
            gap = self.merge_gap_ns
            if a is not None and a.start_ns - gap <= ts_ns <= a.end_ns + gap:
                start, end = min(a.start_ns, ts_ns), max(a.end_ns, ts_ns)
                changes: dict[str, object] = {}
                if end != a.end_ns:
                    changes["end_ns"] = end
                if score > a.score:
                    changes["score"] = score
                # every reading of the alert weighs the same: the drivers are each
                # metric's mean share over the span, and the message names the same ones
                assert cur is not None
                shares = cur.shares if cur.shares is not None else dict(a.drivers)
                for name, v in drivers.items():
                    shares[name] = shares.get(name, 0.0) + v
                cur.shares = shares
                merged = _top_shares(shares)
                if merged != a.drivers:
                    changes["drivers"] = merged
                    message = _describe(merged)
                    if message != a.message:
                        changes["message"] = message
                        a.message = message
                a.drivers = merged
                a.start_ns, a.end_ns, a.score = start, end, max(a.score, score)
                cur.readings += 1
                if changes:
                    cur.dirty = {**(cur.dirty or {}), **changes}
                    if time.monotonic() - cur.written >= self.write_every_s:
                        self._write(cur)
                return a
            if cur is not None:  # the device's previous alert is over: write what is held
                self._write(cur)
            alert = self.store.add_alert(
                Alert(
                    device_id=device_id, start_ns=ts_ns, end_ns=ts_ns, score=float(score),
                    kind="anomaly", drivers=merge_drivers({}, drivers),
                    message=_describe(drivers),
                )
            )
            self._open[device_id] = _Open(alert, written=time.monotonic(),
                                          shares=merge_drivers({}, drivers, keep=len(drivers)))
        if callable(self.on_alert):
            self.on_alert(alert)
        return alert

    def _write(self, cur: _Open) -> None:
        if cur.dirty:
            self.store.update_alert(cur.alert.id, **cur.dirty)
        cur.dirty = None
        cur.written = time.monotonic()

    def flush(self, force: bool = False) -> None:
        """Write span changes held back (each open alert is written at most every
        ``write_every_s`` while it grows); ``force`` writes all of them now."""
        now = time.monotonic()
        with self._lock:
            for cur in self._open.values():
                if cur.dirty and (force or now - cur.written >= self.write_every_s):
                    self._write(cur)

    def forget(self, device_id: str) -> None:
        """Stop extending the device's open alert (its held-back update is dropped: the
        device and its alerts are being deleted)."""
        with self._lock:
            self._open.pop(device_id, None)

    def raise_alert(self, alert: Alert) -> Alert:
        """Store a non-anomaly alert (e.g. ``kind="seq_gap"``) as it is."""
        stored = self.store.add_alert(alert)
        if callable(self.on_alert):
            self.on_alert(stored)
        return stored

    def acknowledge(self, alert_id: str, by: str) -> Alert:
        """Mark an alert acknowledged by ``by``; ``KeyError`` if unknown."""
        return self.store.update_alert(alert_id, status="acknowledged", acked_by=by)

    def label(self, alert_id: str, label: str, by: str, note: str | None = None) -> Alert:
        """Label an alert ``"true_alarm"`` or ``"false_alarm"``; ``KeyError`` if unknown."""
        if label not in LABELS:
            raise InvalidParameterError(
                f"The 'label' of an alert must be one of {', '.join(map(repr, LABELS))}. "
                f"Got {label!r} instead."
            )
        changes: dict[str, object] = {"label": label, "labelled_by": by}
        if note is not None:
            changes["note"] = note
        return self.store.update_alert(alert_id, **changes)


def _describe(drivers: dict[str, float]) -> str:
    top = sorted(merge_drivers({}, drivers).items(), key=lambda kv: -kv[1])[:3]
    if not top:
        return "Anomalous reading."
    return "Anomalous " + ", ".join(f"{n} ({s:.0%})" for n, s in top) + "."
