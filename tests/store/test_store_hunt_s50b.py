"""Store fixes: the alert/event listings and ``times_before`` take ``limit=None`` (no
limit) and refuse a negative one as the other listings do; a NaN retention cut is a
StoreError; DuckDB's ``checkpoint`` and ``get_alert`` wrap DuckDB errors; ``newest_rows``
gives the newest rows of a range far wider than its newest span; ``add_alert`` refuses an
alert that starts after its end. Each on both backends where it applies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Alert
from edgewise.store.newest import newest_rows
from edgewise.telemetry import Reading

T0 = 1_700_000_000 * 10**9
S = 10**9


def _limited_calls(store: Any, alert_id: str) -> dict[str, Callable[[int | None], Any]]:
    """The five methods under test, each as a function of ``limit``."""
    return {
        "alert_events": lambda n: store.alert_events(0, n),
        "alert_events_for": lambda n: store.alert_events_for(alert_id, 0, n),
        "raised_alerts": lambda n: store.raised_alerts(0, n),
        "unnumbered_alerts": lambda n: store.unnumbered_alerts(0, n),
        "times_before": lambda n: store.times_before("d", "t", T0 + 100 * S, n),
    }


def test_listings_take_no_limit_and_refuse_a_negative_one(store_url: str) -> None:
    """``limit=None`` lists everything (it was a TypeError); a negative limit is a
    StoreError naming it (it was taken as 0: an empty page, silently)."""
    store = open_store(store_url)
    try:
        store.append([Reading("d", "t", T0 + i * S, float(i)) for i in range(7)])
        a = store.add_alert(Alert("d", T0, T0 + S, 0.9))
        store.add_alert(Alert("d", T0 + 5 * S, T0 + 6 * S, 0.9))
        store.acknowledge_alert(a.id, "ops", label="true_alarm", labelled_by="ops")
        calls = _limited_calls(store, a.id)
        assert len(calls["alert_events"](None)) == 2
        assert len(calls["alert_events_for"](None)) == 2
        assert [n for n, _ in calls["raised_alerts"](None)] == [1, 2]
        assert calls["unnumbered_alerts"](None) == []
        assert calls["times_before"](None) == [T0 + i * S for i in range(7)]
        assert calls["times_before"](2) == [T0 + 5 * S, T0 + 6 * S]
        for name, call in calls.items():
            with pytest.raises(StoreError) as info:
                call(-1)
            said = str(info.value)
            assert "limit" in said and "-1" in said and ">= 0" in said, (name, said)
    finally:
        store.close()


def test_a_nan_retention_cut_is_a_store_error(store_url: str) -> None:
    """``delete_before(nan)`` (and an infinite cut, and ``prune_alert_events(nan)``) is a
    StoreError naming the value and what a cut must be (it was int()'s raw ValueError),
    and deletes nothing."""
    store = open_store(store_url)
    try:
        store.append([Reading("d", "t", T0 + i * S, float(i)) for i in range(3)])
        for bad in (float("nan"), float("inf")):
            with pytest.raises(StoreError) as info:
                store.delete_before(bad)
            said = str(info.value)
            assert "ts_ns" in said and repr(bad) in said and "nanoseconds" in said, said
        with pytest.raises(StoreError, match=r"before_ns .*Got nan"):
            store.prune_alert_events(float("nan"))
        assert store.count_readings() == 3
        assert store.delete_before(T0 + 1.5 * S) == 2  # a finite float cut still works
    finally:
        store.close()


def test_duckdb_checkpoint_wraps_duckdb_errors(tmp_path: Path) -> None:
    """A DuckDB error in ``checkpoint`` (another write transaction open) is a StoreError
    naming the store, as every other method's is (it was DuckDB's own exception)."""
    url = f"duckdb://{tmp_path / 's.duckdb'}"
    store = open_store(url)
    try:
        store.add_alert(Alert("d", T0, T0 + S, 0.9))
        other = store._con.cursor()  # type: ignore[attr-defined]
        other.execute("BEGIN")
        other.execute("UPDATE alerts SET note = 'x'")
        try:
            with pytest.raises(StoreError, match=r"Checkpoint of .* failed: .*CHECKPOINT"):
                store.checkpoint()  # type: ignore[attr-defined]
        finally:
            other.execute("ROLLBACK")
            other.close()
        store.checkpoint()  # type: ignore[attr-defined]
    finally:
        store.close()


def test_duckdb_get_alert_wraps_duckdb_errors(tmp_path: Path) -> None:
    """A DuckDB error in ``get_alert`` (its table gone) is a StoreError naming the alert
    and the store (it was DuckDB's CatalogException); an unknown id stays a KeyError."""
    store = open_store(f"duckdb://{tmp_path / 's.duckdb'}")
    try:
        a = store.add_alert(Alert("d", T0, T0 + S, 0.9))
        store._con.execute("ALTER TABLE alerts RENAME TO alerts_gone")  # type: ignore[attr-defined]
        try:
            with pytest.raises(StoreError, match=rf"Reading alert '{a.id}' from .* failed"):
                store.get_alert(a.id)
        finally:
            store._con.execute("ALTER TABLE alerts_gone RENAME TO alerts")  # type: ignore[attr-defined]
        assert store.get_alert(a.id).id == a.id
        with pytest.raises(KeyError):  # an unknown id is still a KeyError
            store.get_alert("nope")
    finally:
        store.close()


def test_newest_rows_of_a_range_far_wider_than_its_newest_span(store_url: str) -> None:
    """A device with one reading from a clock at 1970 and the rest dense now: its range is
    more than 2**40 times the newest span of ``limit`` rows. ``newest_rows`` gave the
    first metric's oldest rows of the dense part (its 40 look-ups ran out); it gives the
    newest span's rows, of both metrics, with its start."""
    store = open_store(store_url)
    try:
        store.append([Reading("d", "a", 1, -1.0)]
                     + [Reading("d", m, T0 + i * 1000, float(i))
                        for m in ("a", "b") for i in range(100)])
        rows, s, cut = newest_rows(store, "d", None, None, None, limit=30)
        assert cut and 15 <= len(rows) <= 30
        assert {m for m, _, _ in rows} == {"a", "b"}, rows  # not the first metric's only
        newest = {m: max(t for mm, t, _ in rows if mm == m) for m in ("a", "b")}
        assert newest == {"a": T0 + 99_000, "b": T0 + 99_000}
        assert s <= min(t for _, t, _ in rows)
        assert rows == store.query("d", None, s, None)  # every row of [s, end)
        one, s1, cut1 = newest_rows(store, "d", "b", None, None, limit=30)
        assert cut1 and one[-1][1] == T0 + 99_000 and one == store.query("d", "b", s1, None)
    finally:
        store.close()


def test_add_alert_refuses_a_start_after_its_end(store_url: str) -> None:
    """An alert whose start_ns is after its end_ns is refused, naming both (it was
    stored); one whose start is its end (one reading) is stored."""
    store = open_store(store_url)
    try:
        with pytest.raises(StoreError) as info:
            store.add_alert(Alert("d", T0 + S, T0, 0.9))
        said = str(info.value)
        assert f"start_ns ({T0 + S})" in said and f"end_ns ({T0})" in said, said
        assert store.list_alerts() == []
        a = store.add_alert(Alert("d", T0, T0, 0.9))
        assert store.get_alert(a.id).start_ns == store.get_alert(a.id).end_ns == T0
    finally:
        store.close()
