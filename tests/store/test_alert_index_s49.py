"""PostgreSQL stores index ``alerts.merged_into`` (``alerts_merged``): the lookups that
follow merges (``Store.absorbed``, a merge's moves) read the index, not every alert; a
store made before the index, or before merges, gets it at its next open."""

from __future__ import annotations

import json

import psycopg
import pytest

from edgewise.store import open_store
from edgewise.store.base import Alert

pytestmark = pytest.mark.postgres


def _indexes(base: str, schema: str) -> dict[str, str]:
    with psycopg.connect(base, autocommit=True) as con:
        rows = con.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
                           "AND tablename = 'alerts'", [schema]).fetchall()
    return {str(n): str(d) for n, d in rows}


def _merge_two(url: str) -> None:
    """Open the store at ``url``, merge one alert into another, and read it back."""
    store = open_store(url)
    try:
        a = store.add_alert(Alert("d", 0, 9, 0.9))
        b = store.add_alert(Alert("d", 20, 29, 0.9))
        store.merge_alert(b.id, into=a.id, end_ns=29)
        assert store.absorbed(a.id) == [b.id]
    finally:
        store.close()


def test_a_new_store_indexes_merged_into_and_absorbed_reads_it(pg_schema_url: str) -> None:
    base, schema = pg_schema_url.split("?schema=")
    _merge_two(pg_schema_url)
    assert "(merged_into)" in _indexes(base, schema).get("alerts_merged", "")
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'SET search_path TO "{schema}"')
        # 20,000 alerts, half merged into another: a lookup by merged_into is an index read
        con.execute(
            "INSERT INTO alerts (id, device_id, start_ns, end_ns, score, kind, drivers, "
            "message, created_ns, status, merged_into) SELECT 'x' || i, 'dev' || (i % 100), "
            "i, i + 1, 0.9, 'anomaly', '[]', '', i, 'open', "
            "CASE WHEN i >= 10000 THEN 'x' || (i - 10000) END FROM generate_series(0, 19999) i")
        con.execute("ANALYZE alerts")
        plan = con.execute("EXPLAIN (FORMAT JSON) SELECT id FROM alerts WHERE merged_into = %s",
                           ["x100"]).fetchone()[0]
    text = json.dumps(plan)
    assert "alerts_merged" in text and "Seq Scan" not in text, text


def test_a_store_made_before_the_index_gets_it_at_open(pg_schema_url: str) -> None:
    base, schema = pg_schema_url.split("?schema=")
    open_store(pg_schema_url).close()
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'DROP INDEX "{schema}".alerts_merged')
    assert "alerts_merged" not in _indexes(base, schema)
    open_store(pg_schema_url).close()
    assert "(merged_into)" in _indexes(base, schema)["alerts_merged"]


def test_a_store_made_before_merges_gets_the_column_then_the_index(pg_schema_url: str) -> None:
    """The column is added before its index is made (the index on a missing column failed
    the open)."""
    base, schema = pg_schema_url.split("?schema=")
    open_store(pg_schema_url).close()
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'ALTER TABLE "{schema}".alerts DROP COLUMN merged_into')  # its index too
        con.execute(f"DELETE FROM \"{schema}\".ew_meta WHERE key = 'alerts_merged_into'")
    _merge_two(pg_schema_url)
    assert "(merged_into)" in _indexes(base, schema)["alerts_merged"]
