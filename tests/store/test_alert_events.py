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
def test_a_role_granted_before_an_upgrade_is_told_the_grant_to_run(
        pg_schema_url: str, postgres_url: str) -> None:
    """A least-privilege role granted its rights on the tables of an older store (no
    alert_events), and without UPDATE on ew_meta (its event counter): once the owner
    opened the store with this Edgewise (alert_events made), the role's open is refused
    in one line naming what it lacks and the GRANT to run (it opened, then every
    acknowledgement and device deletion failed: permission denied); after that GRANT
    it acknowledges, labels and deletes a device."""
    import psycopg

    from edgewise.errors import StoreError

    store = open_store(pg_schema_url)
    store.add_alert(Alert("d", T0, T0 + S, 0.9, id="old"))
    store.close()
    base, schema = pg_schema_url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as admin:  # the store before alert events
        admin.execute(f'DROP TABLE "{schema}".alert_events')
        admin.execute(f"DELETE FROM \"{schema}\".ew_meta WHERE key = 'alert_event_id'")
    with dml_only_role(postgres_url, schema, "ew_up_") as (role, url):
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'REVOKE UPDATE ON "{schema}".ew_meta FROM "{role}"')
        open_store(pg_schema_url).close()  # the owner upgrades it: alert_events made
        with pytest.raises(StoreError) as info:
            open_store(url)
        said = str(info.value)
        grant = (f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{schema}"."ew_meta", '
                 f'"{schema}"."alert_events" TO "{role}";')
        assert "\n" not in said and said.endswith(grant), said
        assert (f"role {role!r} lacks UPDATE on table 'ew_meta'; SELECT, INSERT, UPDATE, "
                f"DELETE on table 'alert_events'") in said
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(grant)
        _acknowledge_and_label(url)
        store = open_store(url)
        try:
            assert store.delete_device("d") >= 3  # the alert and its two events
        finally:
            store.close()


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


def _drop_store_id(url: str) -> None:
    """Make the store at ``url`` one from before store ids (no 'store_id' in ew_meta)."""
    if url.startswith("duckdb://"):
        import duckdb

        con = duckdb.connect(url.removeprefix("duckdb://"))
        con.execute("DELETE FROM ew_meta WHERE key = 'store_id'")
        con.close()
        return
    import psycopg

    base, schema = url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f"DELETE FROM \"{schema}\".ew_meta WHERE key = 'store_id'")


def _ids_kept_and_told_apart(url: str, other: str, old_opener: str | None = None) -> None:
    """A store's id stays across opens; another store's differs; a store made before
    store ids gets one at its next open (by ``old_opener``'s URL when given) and keeps it."""
    first = open_store(url)
    made = first.store_id()
    first.close()
    second = open_store(other)
    assert second.store_id() != made and len(made) == 32
    second.close()
    again = open_store(url)
    assert again.store_id() == made
    again.close()
    _drop_store_id(url)
    older = open_store(old_opener or url)
    given = older.store_id()
    older.close()
    assert given != made
    reopened = open_store(url)
    assert reopened.store_id() == given
    reopened.close()


def test_a_duckdb_store_keeps_its_own_id(tmp_path: Path) -> None:
    """Check the DuckDB store's id: kept across opens and a purge (the file rewritten),
    another file's differs, an older file gets one."""
    url = f"duckdb://{tmp_path / 'a.duckdb'}"
    _ids_kept_and_told_apart(url, f"duckdb://{tmp_path / 'b.duckdb'}")
    store = open_store(url)
    try:
        made = store.store_id()
        store.purge()
        assert store.store_id() == made
    finally:
        store.close()
    store = open_store(url)
    assert store.store_id() == made
    store.close()


@pytest.mark.postgres
def test_a_postgres_store_keeps_its_own_id(pg_schema_url: str, postgres_url: str) -> None:
    """Check the PostgreSQL store's id: kept across opens, another schema's differs, and
    an older store gets one at its next open, also when that open is a role with only
    SELECT, INSERT, UPDATE and DELETE on the tables."""
    import psycopg

    schema = pg_schema_url.split("?schema=")[1]
    other = f"{postgres_url}?schema={schema}_b"
    try:
        open_store(pg_schema_url).close()  # made by the tables' owner
        with dml_only_role(postgres_url, schema, "ew_id_") as (_, url):
            _ids_kept_and_told_apart(pg_schema_url, other, old_opener=url)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}_b" CASCADE')


def test_the_alert_managers_label_writes_its_events() -> None:
    """Check that ``AlertManager.label`` (which the fleet bench and library users call)
    labels as the HTTP route does: an open alert is acknowledged with it and both events
    are written for the webhooks; a relabel writes one more; an alert merged into another
    is refused, naming that one (the merge wrote its own event; the refusal writes none)."""
    from edgewise.alerts import AlertManager
    from edgewise.errors import InvalidParameterError

    store = open_store("duckdb://:memory:")
    try:
        am = AlertManager(store)
        a = store.add_alert(Alert("d", T0, T0 + S, 0.9))
        b = store.add_alert(Alert("d", T0 + 9 * S, T0 + 10 * S, 0.9))
        got = am.label(a.id, "false_alarm", by="ops", note="cleaning")
        assert (got.status, got.acked_by, got.label, got.note) == (
            "acknowledged", "ops", "false_alarm", "cleaning")
        am.label(a.id, "true_alarm", by="lead")
        assert [(e.event, e.actor, e.detail) for e in store.alert_events()] == [
            ("alert.acknowledged", "ops", {"acked_by": "ops"}),
            ("alert.labelled", "ops",
             {"label": "false_alarm", "labelled_by": "ops", "note": "cleaning"}),
            ("alert.labelled", "lead",
             {"label": "true_alarm", "labelled_by": "lead", "note": "cleaning"}),
        ]
        store.merge_alert(b.id, into=a.id)
        assert [(e.alert_id, e.event) for e in store.alert_events()[3:]] == [
            (b.id, "alert.merged")]
        with pytest.raises(InvalidParameterError, match=f"merged into alert {a.id!r}"):
            am.label(b.id, "true_alarm", by="ops")
        assert store.get_alert(b.id).label is None and len(store.alert_events()) == 4
    finally:
        store.close()


@pytest.mark.postgres
def test_a_read_only_role_still_opens_the_store_and_reads(
        pg_schema_url: str, postgres_url: str) -> None:
    """A role granted SELECT alone (an analyst's `edgewise train rul --data postgresql://`)
    holds no write right anywhere, so no grant missed a table: it opens and reads as it
    did before the open checked rights; only its writes are refused, by PostgreSQL."""
    import psycopg

    from edgewise.errors import StoreError

    store = open_store(pg_schema_url)
    store.add_alert(Alert("d", T0, T0 + S, 0.9, id="r1"))
    store.close()
    base, schema = pg_schema_url.split("?schema=")
    with dml_only_role(postgres_url, schema, "ew_ro_") as (role, url):
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" '
                          f'FROM "{role}"')
        store = open_store(url)
        try:
            assert [a.id for a in store.list_alerts()] == ["r1"]
            with pytest.raises(StoreError, match="permission denied"):
                store.acknowledge_alert("r1", "ops")
        finally:
            store.close()
