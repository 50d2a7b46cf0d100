"""PostgreSQL-specific behaviour: a broken connection, schema isolation, URL checks."""

from __future__ import annotations

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
    ],
)
def test_bad_postgres_urls(url: str, match: str) -> None:
    """Check that a bad schema or an unreachable server gives a clear StoreError."""
    with pytest.raises(StoreError, match=match) as info:
        PostgresStore(url)
    assert ":pw@" not in str(info.value), "the password was shown"
