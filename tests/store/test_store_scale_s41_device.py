"""``Store.device(id)``: one device's summary without reading every device's (scale hunt,
session 41).

Each request about one device (its readings, CSV slices, quality, RUL, the label queue's
history) found its summary in ``store.devices()``, every device's: on PostgreSQL with
8,000 devices one ``/readings`` took 197 ms and one ``/quality`` 473 ms. ``device()``
answers that device's entry alone, on both backends, equal to its entry in
``devices()``.
"""

from __future__ import annotations

from typing import Any

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Alert
from edgewise.store.newest import newest_rows
from edgewise.telemetry import Reading

T0 = 1_700_000_000 * 10**9
S = 10**9
IDS = ["pump-1", "pump-2", "seqs-only", "alert-only", "nobody", "PUMP-1", "pump-1 ", "pump-%",
       "a\x00b", "\ud800", ""]


def _same_as_devices(store: Any) -> None:
    entries = {d.device_id: d for d in store.devices()}
    for device_id in IDS:
        assert store.device(device_id) == entries.get(device_id), device_id


def test_device_is_its_entry_in_devices(store_url: str) -> None:
    """Check that ``device(id)`` equals the device's entry in ``devices()`` (``None``
    where it has none): a device with readings of two metrics, one with seqs only, one
    with an alert only, an unknown id, ids differing in case or a trailing space, text no
    store can hold; after retention took one device's readings, and after a deletion.
    A device id that is not a str is a StoreError naming it."""
    store = open_store(store_url)
    try:
        _same_as_devices(store)
        store.append([*(Reading("pump-1", "temp", T0 + i * S, float(i)) for i in range(5)),
                      Reading("pump-1", "flow", T0 + 9 * S, 1.5),
                      Reading("pump-2", "temp", T0, 2.0)], seqs={"seqs-only": [1, 2]})
        store.add_alert(Alert("alert-only", T0, T0 + S, 0.9))
        got = store.device("pump-1")
        assert got is not None and (got.readings, got.first_ns, got.last_ns, got.metrics) == (
            6, T0, T0 + 9 * S, ["flow", "temp"])
        _same_as_devices(store)
        assert store.delete_before(T0 + 2 * S) == 3  # pump-2's only reading, 2 of pump-1's
        assert store.device("pump-2") is None and store.device("pump-1").first_ns == T0 + 2 * S
        _same_as_devices(store)
        store.delete_device("pump-1")
        assert store.device("pump-1") is None
        _same_as_devices(store)
        with pytest.raises(StoreError, match="device_id must be a str"):
            store.device(7)  # type: ignore[arg-type]
    finally:
        store.close()


class _CountingStore:
    """A store whose ``devices()`` calls are counted."""

    def __init__(self, inner: Any) -> None:
        self._inner, self.listed = inner, 0

    def devices(self) -> Any:
        self.listed += 1
        return self._inner.devices()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_newest_rows_reads_only_the_device_s_summary() -> None:
    """Check that finding a device's newest span under a limit reads its own summary,
    not every device's (before: ``store.devices()`` at each truncated read)."""
    inner = open_store("duckdb://:memory:")
    try:
        inner.append([Reading(d, "t", T0 + i * S, float(i)) for d in ("p", "q", "r")
                      for i in range(100)])
        store = _CountingStore(inner)
        rows, _start, cut = newest_rows(store, "p", None, 0, None, limit=30)
        assert cut and 15 <= len(rows) <= 30 and rows[-1][1] == T0 + 99 * S
        assert store.listed == 0
    finally:
        inner.close()
