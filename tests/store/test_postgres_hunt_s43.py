"""PostgreSQL store defects a hunt found (session 43): lock orders, a fleet's seq fold, a
deletion racing an append, a read-only role, hostless URLs, windowed queries of every
metric, and a schema holding another application's ``readings`` table."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store import postgres as pg
from edgewise.store.postgres import PostgresStore, _split_url
from edgewise.telemetry import Reading
from tests.conftest import dml_only_role, wait_until

pytestmark = pytest.mark.postgres
psycopg = pytest.importorskip("psycopg")

T0 = 1_700_000_000 * 10**9
SOCKET_DIR = Path("/var/run/postgresql")


def _schema(url: str) -> str:
    return url.split("schema=")[1]


def _base(url: str) -> str:
    return url.split("?")[0]


def _waits_on_lock(admin: psycopg.Connection, pid: int) -> bool:
    """Whether the server process ``pid`` waits for a lock now."""
    row = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                        [pid]).fetchone()
    return bool(row) and row[0] == "Lock"


def _count(url: str, table: str, device_id: str | None = None) -> int:
    with psycopg.connect(_base(url), autocommit=True) as con:
        sql = f'SELECT count(*) FROM "{_schema(url)}".{table}'
        if device_id is None:
            return int(con.execute(sql).fetchone()[0])
        return int(con.execute(sql + " WHERE device_id = %s", [device_id]).fetchone()[0])


# -- 1. retention locks device_stats rows in the appends' order -------------------------------

def test_retention_locks_device_stats_in_device_id_order(pg_schema_url: str) -> None:
    """Check that retention waits for an append holding the first device's stats row
    without holding a later one: it took them in page order, and with an append holding
    'a' and then asking for 'b' (id order) PostgreSQL failed one of them as a deadlock."""
    store = open_store(pg_schema_url)
    try:
        # b's row first in the table's pages, a's after: page order is not id order
        store.append([Reading("b", "t", i, 1.0) for i in range(10)])
        store.append([Reading("a", "t", i, 1.0) for i in range(10)])
        schema = _schema(pg_schema_url)
        with psycopg.connect(_base(pg_schema_url)) as writer, \
                psycopg.connect(_base(pg_schema_url), autocommit=True) as admin:
            writer.execute(f'SET search_path TO "{schema}"')
            # an append's first lock: device 'a', lowest id
            writer.execute("UPDATE device_stats SET readings = readings WHERE device_id = 'a'")
            errors: list[BaseException] = []

            def retention() -> None:
                try:
                    store.delete_before(5)
                except BaseException as exc:
                    errors.append(exc)

            th = threading.Thread(target=retention)
            th.start()
            pid = store._writer.info.backend_pid
            assert wait_until(lambda: _waits_on_lock(admin, pid), timeout=5)
            # the append's next lock: 'b'; a deadlock fails one side after deadlock_timeout
            writer.execute("SET lock_timeout = '5s'")
            writer.execute("UPDATE device_stats SET readings = readings WHERE device_id = 'b'")
            writer.commit()
            th.join(10)
            assert not th.is_alive()
        assert errors == []
        assert [(d.device_id, d.readings) for d in store.devices()] == [("a", 5), ("b", 5)]
    finally:
        store.close()


# -- 2. a fleet's seqs fold in chunks -----------------------------------------------------------

def test_a_fleet_of_15000_devices_folds_its_seqs_at_close_and_reopens(
    pg_schema_url: str,
) -> None:
    """Check that a gateway that stored a message of each of 15,000 devices folds their
    seqs at close and opens again: one advisory lock per device in one transaction ran
    out of the server's lock table ("out of shared memory"), the fold's failure was
    swallowed (seqs kept one row per message), and the next open raised psycopg's
    OutOfMemory."""
    n = 15_000
    store = open_store(pg_schema_url)
    store.append([Reading(f"dev-{i:05d}", "t", T0, 1.0, seq=1) for i in range(n)])
    store.close()
    assert _count(pg_schema_url, "seqs") == 0
    assert _count(pg_schema_url, "seq_marks") == n
    again = open_store(pg_schema_url)
    try:
        assert again.seq_watermark("dev-00000") == 1
        assert again.seq_watermark(f"dev-{n - 1:05d}") == 1
    finally:
        again.close()


def test_seqs_fold_in_chunks_of_compact_chunk_devices(
    pg_schema_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Check that a fold in many chunks keeps each device's mark and runs."""
    monkeypatch.setattr(pg, "COMPACT_CHUNK", 7)
    store = open_store(pg_schema_url)
    devs = [f"d{i:02d}" for i in range(30)]
    # seqs 1, 2, 4, 5 of each device (3 lost): mark 2, run 4..5
    store.append([Reading(d, "t", T0 + q, 1.0, seq=q) for d in devs for q in (1, 2, 4, 5)])
    store.close()
    assert _count(pg_schema_url, "seqs") == 0
    with psycopg.connect(_base(pg_schema_url), autocommit=True) as con:
        s = _schema(pg_schema_url)
        marks = dict(con.execute(f'SELECT device_id, watermark FROM "{s}".seq_marks').fetchall())
        runs = con.execute(f'SELECT device_id, lo, hi FROM "{s}".seq_runs ORDER BY 1').fetchall()
    assert marks == dict.fromkeys(devs, 2)
    assert runs == [(d, 4, 5) for d in devs]
    again = open_store(pg_schema_url)
    try:
        assert again.seq_gaps("d29") == [(3, 3)] and again.seq_watermark("d29") == 2
    finally:
        again.close()


def test_a_failed_fold_at_close_is_logged(
    pg_schema_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Check that a fold that fails at close says so in the log (it was swallowed silently,
    and seqs grew one row per message unnoticed)."""
    store = open_store(pg_schema_url)
    store.append([Reading("p", "t", T0, 1.0, seq=1)])
    monkeypatch.setattr(pg, "_FOLD", "SELECT no_such_column FROM seqs WHERE device_id = ANY(%s)")
    with caplog.at_level(logging.WARNING, logger="edgewise.store.postgres"):
        store.close()
    assert "folding the message seqs at close failed" in caplog.text
    assert "no_such_column" in caplog.text
    assert _count(pg_schema_url, "seqs") == 1


# -- 3. a deletion waits for an append of the device in flight ---------------------------------

def test_delete_device_waits_for_an_append_in_flight(pg_schema_url: str) -> None:
    """Check that deleting a device while an append of its readings is in flight (inserted,
    not committed) leaves none of them: the deletion missed the append's rows, and
    the readings stayed where devices() and count_readings() no longer counted them but
    has_device_data and query still found them."""
    a, b = open_store(pg_schema_url), open_store(pg_schema_url)
    try:
        a.append([Reading("pump-7", "t", T0 + i, 1.0) for i in range(10)])
        inside, release = threading.Event(), threading.Event()
        orig = a._sync_wanted

        def held(*args: object) -> dict[str, list[tuple[int, int]]]:
            inside.set()  # the append's readings are inserted, its transaction open
            assert release.wait(10)
            return orig(*args)  # type: ignore[arg-type]

        a._sync_wanted = held  # type: ignore[method-assign]
        appended: list[object] = []
        th_a = threading.Thread(target=lambda: appended.append(
            a.append([Reading("pump-7", "t", T0 + 100 + i, 2.0) for i in range(5)])))
        th_a.start()
        assert inside.wait(10)
        deleted: list[int] = []
        th_b = threading.Thread(target=lambda: deleted.append(b.delete_device("pump-7")))
        th_b.start()
        with psycopg.connect(_base(pg_schema_url), autocommit=True) as admin:
            pid = b._writer.info.backend_pid
            assert wait_until(lambda: _waits_on_lock(admin, pid), timeout=5)
        release.set()
        th_a.join(10)
        th_b.join(10)
        assert not th_a.is_alive() and not th_b.is_alive() and appended
        assert deleted == [15]
        assert _count(pg_schema_url, "readings", "pump-7") == 0
        assert not b.has_device_data("pump-7") and b.query("pump-7") == []
        assert b.devices() == [] and b.count_readings() == 0
    finally:
        a.close()
        b.close()


# -- 4. a SELECT-only role opens a store whose seqs wait to be folded ---------------------------

@pytest.mark.parametrize("create", [False, True])
def test_a_select_only_role_opens_while_a_gateway_s_seqs_wait_to_be_folded(
    pg_schema_url: str, postgres_url: str, create: bool, caplog: pytest.LogCaptureFixture,
) -> None:
    """Check that an analyst's SELECT-only role opens a store a running gateway writes to
    (its seqs not folded yet) and reads it, folding nothing: psycopg's
    InsufficientPrivilege came out of the fold at open."""
    gw = open_store(pg_schema_url)
    try:
        gw.append([Reading("pump-1", "t", T0 + i, float(i), seq=i) for i in range(1, 4)])
        with caplog.at_level(logging.WARNING, logger="edgewise.store.postgres"):
            _select_only_store(pg_schema_url, postgres_url, create)
        assert "folding" not in caplog.text
        assert _count(pg_schema_url, "seqs") == 3  # the gateway's to fold
    finally:
        gw.close()


def _select_only_store(pg_schema_url: str, postgres_url: str, create: bool) -> None:
    """Open the store as a role granted USAGE on its schema and SELECT on its tables, read
    it and close it; the role is dropped afterwards."""
    with dml_only_role(postgres_url, _schema(pg_schema_url), "ew_ro_", grants="SELECT") as (
            _, url):
        ro = open_store(url, create=create)
        try:
            assert [v for _, _, v in ro.query("pump-1")] == [1.0, 2.0, 3.0]
            assert ro.seq_watermark("pump-1") == 3
        finally:
            ro.close()


# -- 5. hostless URLs and query values with spaces ----------------------------------------------

@pytest.mark.parametrize(("url", "conninfo"), [
    ("postgresql:///test", "postgresql:///test"),
    ("postgresql:///test?host=/var/run/postgresql&schema=s",
     "postgresql:///test?host=%2Fvar%2Frun%2Fpostgresql"),
    ("postgresql://u@h/db?application_name=edge%20gw%2B1&schema=s",
     "postgresql://u@h/db?application_name=edge%20gw%2B1"),
])
def test_split_url_keeps_an_empty_host_and_encodes_spaces_as_libpq_reads_them(
    url: str, conninfo: str,
) -> None:
    """Check the URL handed to libpq: 'postgresql:/test' (the '//' dropped) was refused as
    an invalid option, and a space came out as '+', which libpq does not decode."""
    assert _split_url(url)[0] == conninfo


def test_a_unix_socket_url_and_a_spaced_libpq_option_reach_the_server(
    pg_schema_url: str,
) -> None:
    """Check that a store opens through the server's Unix socket (no host in the URL) and
    that application_name and options with spaces arrive as written."""
    if not (SOCKET_DIR / ".s.PGSQL.5432").exists():
        pytest.skip(f"no PostgreSQL socket in {SOCKET_DIR}")
    schema = _schema(pg_schema_url)
    url = (f"postgresql:///test?host={SOCKET_DIR}&user=postgres&application_name=edge%20gw"
           f"&options=-c%20statement_timeout%3D1234&schema={schema}")
    store = open_store(url)
    try:
        assert store._read("SHOW application_name") == [("edge gw",)]
        assert store._read("SHOW statement_timeout") == [("1234ms",)]
        assert store._read("SELECT inet_server_addr() IS NULL") == [(True,)]  # a socket
    finally:
        store.close()


# -- 6. a time window of every metric reads index ranges -----------------------------------------

def test_a_window_of_every_metric_is_read_by_index_ranges(pg_schema_url: str) -> None:
    """Check the plan of query(device, None, since): it read every index entry of the
    device's whole history, checking each one's ts_ns (65 index and table pages here
    against 26; 18 ms against 1.1 ms on 2M readings); now each metric's window is one
    index range."""
    store = open_store(pg_schema_url)
    try:
        for d in range(3):
            store.append([Reading(f"pump-{d}", m, T0 + i * 10**9, float(i % 50))
                          for m in ("a", "b", "c", "d") for i in range(3000)])
        with psycopg.connect(_base(pg_schema_url), autocommit=True) as admin:
            admin.execute(f'ANALYZE "{_schema(pg_schema_url)}".readings')
        since = T0 + 2990 * 10**9
        seen: list[tuple[str, list[object]]] = []
        orig = store._read

        def spy(sql: str, params: list[object] = ()) -> list[tuple[object, ...]]:
            seen.append((sql, list(params)))
            return orig(sql, params)

        store._read = spy  # type: ignore[method-assign]
        rows = store.query("pump-1", None, since)
        assert len(rows) == 40 and {m for m, _, _ in rows} == {"a", "b", "c", "d"}
        assert [t for m, t, _ in rows if m == "a"] == [T0 + i * 10**9 for i in range(2990, 3000)]
        sql, params = seen[-1]
        (plan,) = orig(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)[0]
        plan = plan if isinstance(plan, list) else json.loads(plan)
        nodes, filtered = [plan[0]["Plan"]], 0
        scans = []
        while nodes:
            node = nodes.pop()
            nodes.extend(node.get("Plans", []))
            if node.get("Relation Name") != "readings":
                continue
            filtered += int(node.get("Rows Removed by Filter", 0))
            scans.append((node["Node Type"], node.get("Index Cond", "")))
        # each metric's window by the primary key (device_id, metric, ts_ns): the metric
        # in the index condition, not the device's every entry checked for its ts_ns
        assert filtered == 0, plan
        assert any("metric = ANY" in cond and "ts_ns >=" in cond for _, cond in scans), scans
        assert all(kind != "Seq Scan" for kind, _ in scans), scans
        # the same rows as one metric at a time, and with a step
        assert rows == [r for m in "abcd" for r in store.query("pump-1", m, since)]
        assert store.query("pump-1", None, since, None, 10 * 10**9) == [
            (m, T0 + 2990 * 10**9, 44.5) for m in "abcd"]
    finally:
        store.close()


# -- 7. a schema holding another application's readings table ----------------------------------

@pytest.mark.parametrize("create", [False, True])
def test_another_application_s_readings_table_is_refused_before_any_ddl(
    pg_schema_url: str, create: bool,
) -> None:
    """Check that a schema whose 'readings' table is another application's is refused in one
    line naming the schema, with nothing made: the set-up made the store's tables beside it
    (then rolled back) and failed with 'column "device_id" does not exist'."""
    schema = _schema(pg_schema_url)
    with psycopg.connect(_base(pg_schema_url), autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        admin.execute(f'CREATE TABLE "{schema}".readings (id serial PRIMARY KEY, sensor text, '
                      "reading numeric, taken_at timestamptz)")
    with pytest.raises(StoreError) as info:
        PostgresStore(pg_schema_url, create=create)
    said = str(info.value)
    assert f"schema {schema!r} holds a table 'readings' that is not an Edgewise store's" in said
    assert "id, sensor, reading, taken_at" in said and "?schema=" in said
    with psycopg.connect(_base(pg_schema_url), autocommit=True) as admin:
        tables = admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s",
                               [schema]).fetchall()
    assert tables == [("readings",)]
