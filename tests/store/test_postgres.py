"""PostgreSQL-specific behaviour: a broken connection, schema isolation, URL checks."""

from __future__ import annotations

import time

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.postgres import PostgresStore
from edgewise.telemetry import Reading

pytestmark = pytest.mark.postgres
T0 = 1_700_000_000 * 10**9


def _batch(n: int, t0: int = T0) -> list[Reading]:
    return [Reading("pump-1", "temp_c", t0 + i * 10**9, float(i), seq=i + 1) for i in range(n)]


def test_killed_connection_fails_one_append_then_reconnects(pg_schema_url: str) -> None:
    """Check that an append on a connection the server killed stores nothing and the next works."""
    import psycopg

    store = open_store(pg_schema_url)
    try:
        store.append(_batch(10), {"pump-1": range(1, 11)})
        pid = store._writer.info.backend_pid  # the server-side process of the writer
        base = pg_schema_url.split("?")[0]
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        more = _batch(20)[10:]
        with pytest.raises(StoreError, match="failed and was rolled back; nothing of it"):
            store.append(more, {"pump-1": range(11, 21)})
        assert store.count_readings() == 10
        assert store.seq_watermark("pump-1") == 10
        r = store.append(more, {"pump-1": range(11, 21)})
        assert r.stored == 10 and r.watermarks == {"pump-1": 20}, r
    finally:
        store.close()


def test_schemas_are_isolated(pg_schema_url: str) -> None:
    """Check that two ?schema= values on one database see separate data."""
    other = pg_schema_url.replace("schema=", "schema=x")
    a, b = open_store(pg_schema_url), open_store(other)
    try:
        a.append(_batch(5))
        assert a.count_readings() == 5 and b.count_readings() == 0
    finally:
        a.close()
        b.close()
        import psycopg

        with psycopg.connect(pg_schema_url.split("?")[0], autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{other.split("schema=")[1]}" CASCADE')


def test_two_stores_on_one_schema_never_store_a_key_twice(pg_schema_url: str) -> None:
    """Check that two processes' stores writing the same keys store each key once."""
    a, b = open_store(pg_schema_url), open_store(pg_schema_url)
    try:
        ra, rb = a.append(_batch(50)), b.append(_batch(50))
        assert ra.stored + rb.stored == 50 and rb.duplicates == 50
        assert a.count_readings() == 50
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test?schema=1bad;drop", "schema must be"),
        ("postgresql://nobody:pw@127.0.0.1:1/test", "Cannot connect to PostgreSQL store"),
        ("postgresql://nobody:pw@[::1/test",
         r"'postgresql://nobody:\*\*\*@\[::1/test' is malformed: Invalid IPv6 URL"),
    ],
)
def test_bad_postgres_urls(url: str, match: str) -> None:
    """Check that a bad schema, a malformed URL (a ValueError from urlsplit) or an
    unreachable server gives a clear one-line StoreError (psycopg's refusal runs over two
    lines: '...Connection refused\\n\\tIs the server running...')."""
    with pytest.raises(StoreError, match=match) as info:
        PostgresStore(url)
    assert ":pw@" not in str(info.value), "the password was shown"
    assert "\n" not in str(info.value), str(info.value)


def test_concurrent_writers_record_a_conflict_once(pg_schema_url: str) -> None:
    """Check that two stores (two connections, as two gateway processes) appending the same
    conflicting value for the same keys at once record each conflict once and report it
    once between them (both recorded most of them: 390 rows for 200 conflicts)."""
    import threading

    n = 60
    first = open_store(pg_schema_url)
    first.append([Reading("pump-1", "temp_c", T0 + k, 1.0) for k in range(n)])
    first.close()
    stores = [open_store(pg_schema_url), open_store(pg_schema_url)]
    barrier = threading.Barrier(2)
    counts = [[0, 0], [0, 0]]

    def write(i: int) -> None:
        for k in range(n):
            barrier.wait()
            r = stores[i].append([Reading("pump-1", "temp_c", T0 + k, 2.0)])
            counts[i][0] += r.conflicts
            counts[i][1] += r.duplicates

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        rows = stores[0].conflicts("pump-1", limit=10 * n)
    finally:
        for st in stores:
            st.close()
    assert len(rows) == n, len(rows)
    assert sorted({(c.ts_ns, c.new_value) for c in rows}) == [(T0 + k, 2.0) for k in range(n)]
    assert counts[0][0] + counts[1][0] == n and counts[0][1] + counts[1][1] == n, counts


def test_a_store_with_repeated_conflict_rows_is_mended_at_open(pg_schema_url: str) -> None:
    """Check that a store written before conflicts had a unique key, holding the same
    conflict twice, keeps the first-received row at open and records no repeat after."""
    import psycopg

    store = open_store(pg_schema_url)
    store.append([Reading("pump-1", "temp_c", T0, 1.0)])
    store.append([Reading("pump-1", "temp_c", T0, 2.0)])
    store.close()
    base, schema = pg_schema_url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as con:  # back to the old layout
        con.execute(f'SET search_path TO "{schema}"')
        con.execute("DROP INDEX conflicts_unique")
        con.execute("DELETE FROM ew_meta WHERE key = 'conflicts_unique'")
        con.execute("INSERT INTO conflicts SELECT device_id, metric, ts_ns, stored_value, "
                    "new_value, seq, received_ns + 5 FROM conflicts")
        first = con.execute("SELECT min(received_ns) FROM conflicts").fetchone()[0]
    store = open_store(pg_schema_url)
    try:
        rows = store.conflicts("pump-1")
        assert [(c.ts_ns, c.new_value, c.received_ns) for c in rows] == [(T0, 2.0, first)]
        r = store.append([Reading("pump-1", "temp_c", T0, 2.0)])
        assert (r.conflicts, r.duplicates) == (0, 1) and len(store.conflicts("pump-1")) == 1
    finally:
        store.close()


def test_bucket_means_match_duckdb_to_the_last_digit(pg_schema_url: str, tmp_path) -> None:
    """Check that step-averaged queries give DuckDB's figures exactly: PostgreSQL's
    float8::numeric kept 15 significant digits (1712345678.123456 came back as
    1712345678.12346)."""
    values = [1712345678.123456, 1.0000000000000002, 0.1, 2.0 / 3.0, 123456.78901234567]
    readings = [Reading("pump-1", "temp_c", T0 + i, v) for i, v in enumerate(values)]
    readings += [Reading("pump-1", "pair", T0 + i, v) for i, v in enumerate(values[:2])]
    answers = []
    for url in (f"duckdb://{tmp_path / 'ew.duckdb'}", pg_schema_url):
        store = open_store(url)
        try:
            store.append(readings)
            answers.append((store.query("pump-1", step_ns=1), store.query("pump-1", step_ns=100)))
        finally:
            store.close()
    assert answers[0] == answers[1], answers
    by_one = {(m, t): v for m, t, v in answers[1][0]}
    assert by_one[("temp_c", T0)] == 1712345678.123456
    assert answers[1][1][0] == ("pair", T0 // 100 * 100, (values[0] + values[1]) / 2)


def test_a_reading_just_before_a_bucket_boundary_stays_in_its_bucket(
        pg_schema_url: str, tmp_path) -> None:
    """Check a reading 1 ns before midnight is averaged into its own day on PostgreSQL as
    on DuckDB (numeric division rounded the quotient up first: both days became one
    bucket of 2.0), before 1970 too, and a step near 2**62 does not overflow bigint."""
    day = 86_400 * 10**9
    midnight = 1_796_083_200_000_000_000  # 2026-12-01
    readings = [Reading("p", "edge", midnight - 1, 1.0), Reading("p", "edge", midnight + 5, 3.0),
                Reading("p", "old", -day - 1, 4.0), Reading("p", "old", -day + 1, 6.0)]
    answers = []
    for url in (f"duckdb://{tmp_path / 'b.duckdb'}", pg_schema_url):
        store = open_store(url)
        try:
            store.append(readings)
            answers.append((store.query("p", step_ns=day), store.query("p", step_ns=2**62)))
        finally:
            store.close()
    assert answers[0] == answers[1], answers
    assert answers[1][0] == [("edge", midnight - day, 1.0), ("edge", midnight, 3.0),
                             ("old", -2 * day, 4.0), ("old", -day, 6.0)]


def test_opposite_order_appends_of_the_same_keys_both_succeed(pg_schema_url: str) -> None:
    """Two gateways appending the same readings in opposite orders (devices X and Y each
    re-delivered through the other one) each locked the keys of its first device, then
    waited for the other's: PostgreSQL failed one whole append as a deadlock (4 of 5 rounds
    of 6,000 readings). Made certain here: a third connection holds one key of device Z
    that each batch reaches after its first device, until both appends wait. Rows are
    inserted in key order now, so one waits for the other instead of locking its half."""
    import threading

    import psycopg

    base, schema = pg_schema_url.split("?schema=")
    x = [Reading("pump-X", "temp", T0 + i, 1.0) for i in range(50)]
    y = [Reading("pump-Y", "temp", T0 + i, 2.0) for i in range(50)]
    a, b = open_store(pg_schema_url), open_store(pg_schema_url)
    out: dict[str, object] = {}

    def go(name: str, store: object, batch: list[Reading]) -> None:
        try:
            out[name] = store.append(batch).stored  # type: ignore[attr-defined]
        except StoreError as exc:
            out[name] = exc

    with psycopg.connect(base) as blocker:
        blocker.execute(f'SET search_path TO "{schema}"')
        blocker.execute("INSERT INTO readings VALUES ('pump-Z', 'temp', %s, 0.0, NULL), "
                        "('pump-Z', 'temp', %s, 0.0, NULL)", [T0, T0 + 1])
        me = blocker.execute("SELECT pg_backend_pid()").fetchone()[0]
        threads = [
            threading.Thread(target=go, args=(
                "A", a, [*x, Reading("pump-Z", "temp", T0, 3.0), *y])),
            threading.Thread(target=go, args=(
                "B", b, [*y, Reading("pump-Z", "temp", T0 + 1, 3.0), *x])),
        ]
        try:
            for t in threads:
                t.start()
            with psycopg.connect(base, autocommit=True) as watch:
                waiting = 0
                for _ in range(200):  # both appends wait, on the blocker or on each other
                    waiting = watch.execute(
                        "WITH RECURSIVE w(pid) AS (SELECT %s::int UNION SELECT a.pid FROM "
                        "pg_stat_activity a JOIN w ON w.pid = ANY(pg_blocking_pids(a.pid))) "
                        "SELECT count(*) - 1 FROM w", [me]).fetchone()[0]
                    if waiting >= 2:
                        break
                    time.sleep(0.02)
                assert waiting == 2, "the two appends never both waited"
            blocker.rollback()
            for t in threads:
                t.join(30)
        finally:
            a.close()
            b.close()
    assert not any(isinstance(v, StoreError) for v in out.values()), out
    assert sorted(out.values()) == [1, 101]  # X, Y and its Z key; then only its own Z key


def test_a_failed_append_is_one_line(pg_schema_url: str) -> None:
    """The append's error carried PostgreSQL's message as it came, over several lines
    ("...\\nDETAIL:  Process 16342 waits for ShareLock...", "...\\nHINT: ..."), where every
    other PostgreSQL error of the store is one line."""
    import psycopg

    store = open_store(pg_schema_url)
    base, schema = pg_schema_url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'ALTER TABLE "{schema}".readings ADD CONSTRAINT small CHECK (value < 100)')
    try:
        with pytest.raises(StoreError, match=r"nothing of it is stored: new row .* violates "
                           r'check constraint "small"; DETAIL:  Failing row contains') as info:
            store.append([Reading("pump-1", "temp_c", T0, 500.0)])
        assert "\n" not in str(info.value), str(info.value)
        assert store.append(_batch(2)).stored == 2
    finally:
        store.close()
