"""``Store.trimmed_before``: the store records, per device, the cut of a ``delete_before``
(retention) that took its old readings, so a reader that needs a device's whole history
(a RUL model) can tell that it no longer starts at its beginning.

Readings cannot tell it: after retention a device's first stored reading looks like its
first reading ever, and its seq watermark counts messages, not readings.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from edgewise.store import open_store
from edgewise.telemetry import Reading

T0 = 1_700_000_000 * 10**9
S = 10**9


def _readings(device: str, n: int, t0: int = T0) -> list[Reading]:
    return [Reading(device, m, t0 + i * S, float(i)) for i in range(n) for m in ("t", "v")]


def test_delete_before_records_each_trimmed_device_until_it_is_deleted(store_url: str) -> None:
    """Check the cut is recorded for the devices that lost readings only (not for one the
    cut took nothing of, nor for a cut that took nothing), that the latest cut is kept
    (an older one later does not lower it), that it outlives a reopen, and that deleting
    the device clears it, so an id added again starts whole."""
    store = open_store(store_url)
    try:
        store.append(_readings("pump-a", 10) + _readings("pump-b", 10, T0 + 5 * S)
                     + _readings("pump-c", 3), {"pump-a": range(1, 11)})
        assert {d: store.trimmed_before(d) for d in ("pump-a", "pump-b", "nobody")} == \
            {"pump-a": None, "pump-b": None, "nobody": None}
        assert store.delete_before(T0 + 3 * S, device_id="pump-a") == 6
        assert store.trimmed_before("pump-a") == T0 + 3 * S
        assert store.trimmed_before("pump-b") is None  # not asked
        assert store.delete_before(T0 + 5 * S) == 2 * 2 + 3 * 2  # pump-a's 3, 4; pump-c's all
        trims = {d: store.trimmed_before(d) for d in ("pump-a", "pump-b", "pump-c")}
        assert trims == {"pump-a": T0 + 5 * S, "pump-b": None, "pump-c": T0 + 5 * S}, trims
        assert store.delete_before(T0 + 4 * S) == 0  # took nothing: nothing changes
        assert store.delete_before(T0 + 7 * S, device_id="pump-b") == 4
        assert store.delete_before(T0 + 6 * S) == 2  # pump-a's 5; pump-b's were taken before
        trims = {d: store.trimmed_before(d) for d in ("pump-a", "pump-b", "pump-c")}
        assert trims == {"pump-a": T0 + 6 * S, "pump-b": T0 + 7 * S, "pump-c": T0 + 5 * S}
        assert store.seq_watermark("pump-a") == 10  # the watermark never told it
        assert "pump-c" in store.held_device_ids() and store.has_device_data("pump-c")
    finally:
        store.close()
    store = open_store(store_url)
    try:
        assert store.trimmed_before("pump-a") == T0 + 6 * S
        assert store.delete_device("pump-a") > 0
        assert store.trimmed_before("pump-a") is None
        assert store.trimmed_before("pump-b") == T0 + 7 * S
        store.append(_readings("pump-a", 2))  # the id added again: its history is whole
        assert store.trimmed_before("pump-a") is None
        # its trim record was all it had left: held (DELETE finds it), no stored row
        assert store.has_device_data("pump-c") and store.delete_device("pump-c") == 0
        assert not store.has_device_data("pump-c")
    finally:
        store.close()


def test_delete_device_counts_stored_rows_not_the_trim_record(store_url: str) -> None:
    """Check ``delete_device`` answers the readings (and other rows) it deleted, not the
    note of a retention cut: it said 4 for a device with 3 readings left."""
    store = open_store(store_url)
    try:
        store.append(_readings("pump-d", 5))
        assert store.delete_before(T0 + 2 * S, device_id="pump-d") == 4
        assert store.delete_device("pump-d") == 6
    finally:
        store.close()


def test_a_duckdb_purge_keeps_the_record(tmp_path: Path) -> None:
    """Check a purge (which copies the live rows to a new file) keeps the record."""
    store = open_store(f"duckdb://{tmp_path / 'store.duckdb'}")
    try:
        store.append(_readings("pump-a", 10))
        assert store.delete_before(T0 + 2 * S, purge=True) == 4
        assert store.trimmed_before("pump-a") == T0 + 2 * S
    finally:
        store.close()


def test_a_duckdb_store_made_before_the_record_gets_it_at_open(tmp_path: Path) -> None:
    """Check a store without the table (made by an older Edgewise) opens, gets it (empty:
    earlier deletions are unknown) and records the next retention."""
    path = tmp_path / "store.duckdb"
    store = open_store(f"duckdb://{path}")
    store.append(_readings("pump-a", 10))
    store.close()
    with duckdb.connect(str(path)) as con:  # back to the old layout
        con.execute("DROP TABLE trimmed")
    store = open_store(f"duckdb://{path}")
    try:
        assert store.trimmed_before("pump-a") is None
        assert store.delete_before(T0 + 2 * S) == 4
        assert store.trimmed_before("pump-a") == T0 + 2 * S
    finally:
        store.close()


@pytest.mark.postgres
def test_a_postgres_store_made_before_the_record_gets_it_at_open(pg_schema_url: str) -> None:
    """Check a PostgreSQL store without the table opens, gets it and records the next
    retention."""
    import psycopg

    store = open_store(pg_schema_url)
    store.append(_readings("pump-a", 10))
    store.close()
    base, schema = pg_schema_url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as con:  # back to the old layout
        con.execute(f'DROP TABLE "{schema}".trimmed')
    store = open_store(pg_schema_url)
    try:
        assert store.trimmed_before("pump-a") is None
        assert store.delete_before(T0 + 2 * S) == 4
        assert store.trimmed_before("pump-a") == T0 + 2 * S
    finally:
        store.close()
