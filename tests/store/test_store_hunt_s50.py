"""Store hunt (hk): ``conflicts(limit=None)`` and ``list_alerts(limit=None)``, the "no
limit" their own error message offers, failed with a SQL column-not-found error; an
alert time past int64 was a raw DuckDB ConversionException from ``update_alert`` (no
StoreError) and, elsewhere, a "bigint out of range" that named no field; the contract's
deletion checks passed a store that deletes every id matching the one given as a LIKE
prefix."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from edgewise.checks import (
    check_store_delete_device,
    check_store_devices_summary,
    check_store_query_ranges_and_step,
    check_store_retention,
)
from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Alert
from edgewise.store.duckdb import DuckDBStore
from edgewise.telemetry import Reading

T0 = 1_700_000_000 * 10**9


def test_limit_none_means_no_limit(store_url: str) -> None:
    """Check ``conflicts`` and ``list_alerts`` take ``limit=None`` as no limit, as
    ``check_limit`` (whose error tells a caller to pass None) promises: both backends
    wrote "LIMIT None" into the SQL and failed."""
    store = open_store(store_url)
    try:
        store.append([Reading("pump-1", "t", T0 + i, 1.0) for i in range(3)])
        store.append([Reading("pump-1", "t", T0 + i, 2.0) for i in range(3)])
        for t in range(3):
            store.add_alert(Alert("pump-1", T0 + t, T0 + t + 1, 0.5))
        assert len(store.conflicts(limit=None)) == 3
        assert len(store.conflicts("pump-1", limit=None)) == 3
        assert len(store.list_alerts(limit=None)) == 3
        assert store.list_alerts(limit=None) == store.list_alerts(limit=100)
        with pytest.raises(StoreError, match=r"None \(no limit\)"):
            store.list_alerts(limit=-1)
    finally:
        store.close()


@pytest.mark.parametrize("field", ["start_ns", "end_ns"])
def test_update_alert_time_past_int64_names_the_field(store_url: str, field: str) -> None:
    """Check ``update_alert`` with a time past int64 raises a StoreError naming the field
    and the value, and changes nothing: DuckDB raised its raw ConversionException (not a
    StoreError, so a caller that catches StoreError crashed), PostgreSQL "bigint out of
    range"."""
    store = open_store(store_url)
    try:
        a = store.add_alert(Alert("pump-1", T0, T0 + 10, 0.5))
        for bad in (2**63, -(2**63) - 1):
            with pytest.raises(StoreError, match=rf"{field} must be an int64 .*{bad}"):
                store.update_alert(a.id, **{field: bad})
        assert (store.get_alert(a.id).start_ns, store.get_alert(a.id).end_ns) == (T0, T0 + 10)
        edge = store.update_alert(a.id, **{field: 2**63 - 1})  # the last int64 time is fine
        assert getattr(edge, field) == 2**63 - 1
        # what the database itself refuses is a StoreError too (DuckDB's was raw)
        with pytest.raises(StoreError, match=rf"Updating alert '{a.id}' in .* failed"):
            store.update_alert(a.id, **{field: "soon"})
    finally:
        store.close()


def test_add_alert_time_past_int64_names_the_field(store_url: str) -> None:
    """Check ``add_alert`` with a ``created_ns`` past int64 names it (both backends said
    only "Conversion Error ... INT64" or "bigint out of range"), and stores nothing."""
    store = open_store(store_url)
    try:
        with pytest.raises(StoreError, match=r"created_ns must be an int64 .*9223372036854775808"):
            store.add_alert(Alert("pump-1", T0, T0 + 10, 0.5, created_ns=2**63))
        assert store.list_alerts() == []
    finally:
        store.close()


class _LikeMatchingStore(DuckDBStore):
    """A real DuckDB store whose deletions take every device whose id the id given
    matches as a LIKE prefix pattern (``device_id LIKE id || '%'``): the bug the store
    contract must catch in a backend."""

    def _like(self, device_id: str) -> list[str]:
        rows = self._read("SELECT DISTINCT device_id FROM readings WHERE device_id LIKE ?",
                          [device_id + "%"])
        return sorted({device_id, *(str(r[0]) for r in rows)})

    def delete_device(self, device_id: str, *, purge: bool = True) -> int:
        return sum(super(_LikeMatchingStore, self).delete_device(d, purge=purge)
                   for d in self._like(device_id))

    def delete_before(self, ts_ns: int, device_id: str | None = None, *,
                      purge: bool = False) -> int:
        if device_id is None:
            return super().delete_before(ts_ns, purge=purge)
        return sum(super(_LikeMatchingStore, self).delete_before(ts_ns, d, purge=purge)
                   for d in self._like(device_id))


@pytest.mark.parametrize("check", [check_store_delete_device, check_store_retention])
def test_store_checks_catch_deletions_of_alike_ids(tmp_path: Path, check: object) -> None:
    """Check the contract's deletion and retention checks fail a store that deletes by
    prefix or LIKE pattern ("pump-1" taking "pump-10", "pump_1" taking "pump-1"): they
    used only ids no pattern confuses ("pump-a", "pump-b"), so such a store passed."""
    n = itertools.count()
    with pytest.raises(AssertionError, match=r"took|another's"):
        check(lambda: _LikeMatchingStore(tmp_path / f"s{next(n)}.duckdb"))  # type: ignore[operator]
    check(lambda: DuckDBStore(tmp_path / f"ok{next(n)}.duckdb"))  # type: ignore[operator]


@pytest.mark.parametrize("seqs", [{"pump-1": 5}, {"pump-1": None}, {"pump-1": "12"},
                                  [("pump-1", [1])]])
def test_append_with_malformed_seqs_is_a_store_error(store_url: str, seqs: object) -> None:
    """Check ``append`` refuses seqs of the wrong shape (one seq given bare, a list of
    pairs) with a StoreError saying what they must be, storing nothing: it raised a raw
    TypeError ("'int' object is not iterable") or AttributeError, which the StoreError a
    failed append promises is not (``"12"`` was refused seq by seq, as "'1'")."""
    store = open_store(store_url)
    try:
        with pytest.raises(StoreError, match=r"iterable of ints|must be a mapping"):
            store.append([Reading("pump-1", "t", T0, 1.0)], seqs)  # type: ignore[arg-type]
        assert store.count_readings() == 0 and store.seq_watermark("pump-1") == 0
    finally:
        store.close()


class _LimitlessStore(DuckDBStore):
    """A real DuckDB store whose ``query`` reads every row, whatever the ``limit``."""

    def query(self, device_id: str, metric: str | None = None, start_ns: int | None = None,
              end_ns: int | None = None, step_ns: int | None = None,
              limit: int | None = None) -> list[tuple[str, int, float]]:
        return super().query(device_id, metric, start_ns, end_ns, step_ns, None)


class _NoDeviceStore(DuckDBStore):
    """A real DuckDB store whose ``device`` knows no device (``devices`` does)."""

    def device(self, device_id: str) -> None:  # type: ignore[override]
        return None


@pytest.mark.parametrize(("store_cls", "check"), [
    (_LimitlessStore, check_store_query_ranges_and_step),
    (_NoDeviceStore, check_store_devices_summary),
])
def test_store_checks_catch_a_query_limit_or_device_summary_not_kept(
        tmp_path: Path, store_cls: type[DuckDBStore], check: object) -> None:
    """Check the contract fails a store whose ``query`` ignores ``limit`` (the API bounds
    its memory by it; ``query_many``'s check only compared it with ``query``'s own) or
    whose ``device`` does not give a device's entry in ``devices``: neither was checked."""
    n = itertools.count()
    with pytest.raises(AssertionError):
        check(lambda: store_cls(tmp_path / f"s{next(n)}.duckdb"))  # type: ignore[operator]
    check(lambda: DuckDBStore(tmp_path / f"ok{next(n)}.duckdb"))  # type: ignore[operator]


def test_query_many_refuses_one_id_given_bare(store_url: str) -> None:
    """Check ``query_many("pump-1")`` (one id, not a list of them) is a StoreError saying
    to pass a list: it read each character as a device id and answered ``{'p': [], 'u':
    [], ...}``, the device's rows missing without a word."""
    store = open_store(store_url)
    try:
        store.append([Reading("pump-1", "t", T0, 1.0)])
        with pytest.raises(StoreError, match=r"list of device ids.*\['pump-1'\]"):
            store.query_many("pump-1")  # type: ignore[arg-type]
        assert store.query_many(["pump-1"]) == {"pump-1": [("t", T0, 1.0)]}
    finally:
        store.close()
