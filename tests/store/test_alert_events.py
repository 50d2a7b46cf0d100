"""The alert events outbox (``Store.alert_events``): stores made before it open and get
it, a PostgreSQL role with only SELECT/INSERT/UPDATE/DELETE writes events, several
writers sharing one PostgreSQL store never give two events one id, and a device's
deletion takes its events out of the DuckDB file too."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edgewise.store import open_store
from edgewise.store.base import Alert
from tests.conftest import dml_only_role

T0 = 1_700_000_000 * 10**9
S = 10**9


def _acknowledge_and_label(url: str) -> None:
    """Open ``url`` (which holds alert 'old' and no alert event), acknowledge and label
    'old', and check the two events it wrote, numbered from 1, also after a reopen."""
    store = open_store(url)
    try:
        assert store.alert_events() == [] and store.last_alert_event_id() == 0
        store.acknowledge_alert("old", "ops", label="true_alarm", labelled_by="ops",
                                note="bearing")
    finally:
        store.close()
    store = open_store(url)
    try:
        got = [(e.id, e.alert_id, e.event, e.actor, e.detail) for e in store.alert_events()]
        assert got == [
            (1, "old", "alert.acknowledged", "ops", {"acked_by": "ops"}),
            (2, "old", "alert.labelled", "ops",
             {"label": "true_alarm", "labelled_by": "ops", "note": "bearing"}),
        ]
    finally:
        store.close()


def test_a_duckdb_store_made_before_alert_events_opens_and_writes_them(tmp_path: Path) -> None:
    """Check a DuckDB file without the alert_events table and its counter (an older
    Edgewise) opens, keeps its alerts, and writes events from 1."""
    import duckdb

    path = tmp_path / "old.duckdb"
    store = open_store(f"duckdb://{path}")
    store.add_alert(Alert("d", T0, T0 + S, 0.9, id="old"))
    store.close()
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE alert_events")
    con.execute("DELETE FROM ew_meta WHERE key = 'alert_event_id'")
    con.close()
    _acknowledge_and_label(f"duckdb://{path}")


@pytest.mark.postgres
def test_a_postgres_store_made_before_alert_events_opens_and_writes_them(
        pg_schema_url: str) -> None:
    """Check a PostgreSQL schema without the alert_events table and its counter opens
    (the table and counter are made once, at open) and writes events from 1."""
    import psycopg

    store = open_store(pg_schema_url)
    store.add_alert(Alert("d", T0, T0 + S, 0.9, id="old"))
    store.close()
    base, schema = pg_schema_url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'DROP TABLE "{schema}".alert_events')
        con.execute(f"DELETE FROM \"{schema}\".ew_meta WHERE key = 'alert_event_id'")
    _acknowledge_and_label(pg_schema_url)


@pytest.mark.postgres
def test_a_dml_only_role_writes_alert_events(pg_schema_url: str, postgres_url: str) -> None:
    """Check that a role with only SELECT, INSERT, UPDATE and DELETE on the tables (no
    sequence privilege, owning nothing) acknowledges and labels, with their events."""
    store = open_store(pg_schema_url)  # made by the tables' owner
    store.add_alert(Alert("d", T0, T0 + S, 0.9, id="old"))
    store.close()
    schema = pg_schema_url.split("?schema=")[1]
    with dml_only_role(postgres_url, schema, "ew_ev_") as (_, url):
        _acknowledge_and_label(url)


@pytest.mark.postgres
def test_writers_sharing_postgres_never_give_two_events_one_id(pg_schema_url: str) -> None:
    """Check that two stores on one PostgreSQL schema (two gateway processes) labelling
    40 alerts at once give every event its own id, 1..80 without a hole, each alert's
    acknowledgement before its label."""
    first = open_store(pg_schema_url)
    second = open_store(pg_schema_url)
    try:
        alerts = [first.add_alert(Alert("d", T0 + i * S, T0 + i * S, 0.9)) for i in range(40)]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def label(store, mine) -> None:  # type: ignore[no-untyped-def]
            try:
                barrier.wait(10)
                for a in mine:
                    store.acknowledge_alert(a.id, "ops", label="true_alarm", labelled_by="ops")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=label, args=(s, alerts[k::2]))
                   for k, s in enumerate((first, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        events = first.alert_events(limit=1000)
        assert [e.id for e in events] == list(range(1, 81))
        for a in alerts:
            mine = [e.event for e in events if e.alert_id == a.id]
            assert mine == ["alert.acknowledged", "alert.labelled"], (a.id, mine)
        assert second.last_alert_event_id() == 80
    finally:
        first.close()
        second.close()


def test_a_deleted_devices_events_leave_the_duckdb_file(tmp_path: Path) -> None:
    """Check that deleting a device takes its alert events (who labelled it, the note)
    out of the store: not listed, and their bytes not in the file after the purge."""
    path = tmp_path / "ew.duckdb"
    store = open_store(f"duckdb://{path}")
    try:
        gone = store.add_alert(Alert("gone-7", T0, T0 + S, 0.9))
        kept = store.add_alert(Alert("kept-1", T0, T0 + S, 0.9))
        store.acknowledge_alert(gone.id, "ops", label="false_alarm", labelled_by="ops",
                                note="note-f00d-cafe-1234")
        store.acknowledge_alert(kept.id, "ops")
        store.checkpoint()  # type: ignore[attr-defined]
        assert b"note-f00d-cafe-1234" in path.read_bytes()
        assert store.delete_device("gone-7") >= 3  # the alert and its two events
        assert [(e.alert_id, e.event) for e in store.alert_events()] == [
            (kept.id, "alert.acknowledged")]
        assert store.last_alert_event_id() == 3
    finally:
        store.close()
    assert b"note-f00d-cafe-1234" not in path.read_bytes()
