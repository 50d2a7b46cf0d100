"""PostgreSQL store hunt (session 46): retention held the ``device_stats`` row of every
device it trimmed, and this process's write lock, for its whole pass, so an append of any
of those devices (from any gateway process) waited for all of it; it now trims a chunk of
devices per transaction (:data:`edgewise.store.postgres.RETENTION_CHUNK`). And an alert id
longer than PostgreSQL's index holds is refused by both backends alike."""

from __future__ import annotations

import threading

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Alert
from edgewise.store.postgres import PostgresStore
from edgewise.telemetry import Reading
from tests.conftest import wait_until
from tests.store.test_postgres_hunt_s43 import _base, _count, _schema, _waits_on_lock

psycopg = pytest.importorskip("psycopg")

T0 = 1_700_000_000 * 10**9


@pytest.mark.postgres
def test_retention_blocks_an_append_only_for_its_own_chunk(
        pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention stuck on device 'a' (a row lock an admin holds) must not hold up an
    append of device 'b' by another gateway process: before, the pass locked 'b's
    ``device_stats`` row at its start and the append waited until the whole pass
    committed."""
    import edgewise.store.postgres as pg

    monkeypatch.setattr(pg, "RETENTION_CHUNK", 1, raising=False)  # one device a chunk
    keeper, other = PostgresStore(pg_schema_url), PostgresStore(pg_schema_url)
    admin = psycopg.connect(_base(pg_schema_url))  # a transaction held open
    errors: list[BaseException] = []
    try:
        for d in ("a", "b"):
            keeper.append([Reading(d, "m", T0 + i, 1.0) for i in range(3)])
        admin.execute(f'SELECT 1 FROM "{_schema(pg_schema_url)}".readings '
                      "WHERE device_id = 'a' AND ts_ns = %s FOR UPDATE", [T0])
        pid = keeper._writer.info.backend_pid
        done: list[int] = []

        def retain() -> None:
            try:
                done.append(keeper.delete_before(T0 + 2))
            except BaseException as exc:
                errors.append(exc)

        th = threading.Thread(target=retain)
        th.start()
        with psycopg.connect(_base(pg_schema_url), autocommit=True) as watch:
            assert wait_until(lambda: _waits_on_lock(watch, pid), timeout=10)
        appended: list[int] = []
        ap = threading.Thread(target=lambda: appended.append(
            other.append([Reading("b", "m", T0 + 10, 2.0)]).stored))
        ap.start()
        ap.join(10)
        blocked = ap.is_alive()
        admin.rollback()  # retention goes on
        th.join(20)
        ap.join(20)
        assert not blocked, "an append of 'b' waited for retention stuck on device 'a'"
        assert appended == [1] and done == [4] and not errors
        assert _count(pg_schema_url, "readings", "a") == 1
        assert _count(pg_schema_url, "readings", "b") == 2  # T0+2 and the new T0+10
        assert [(s.device_id, s.readings, s.first_ns) for s in keeper.devices()] == [
            ("a", 1, T0 + 2), ("b", 2, T0 + 2)]
        assert keeper.trimmed_before("a") == keeper.trimmed_before("b") == T0 + 2
    finally:
        admin.close()
        keeper.close()
        other.close()


@pytest.mark.parametrize("alert_id", ["a" * 3000, "é" * 600, "a\x00b"],
                         ids=["3000_ascii", "1200_bytes_utf8", "nul"])
def test_an_alert_id_no_store_can_index_is_refused_alike(store_url: str, alert_id: str) -> None:
    """An alert id of more than 1,024 bytes (or holding a NUL) is refused by both backends
    before anything is written, naming the id: DuckDB stored 3,000 bytes where PostgreSQL
    failed with "index row size 3016 exceeds btree version 4 maximum 2704"."""
    store = open_store(store_url)
    try:
        with pytest.raises(StoreError, match=r"Storing alert for device 'pump-1': id must"):
            store.add_alert(Alert("pump-1", 1, 2, 0.5, id=alert_id))
        assert store.list_alerts() == [] and store.last_alert_seq() == 0
        ok = store.add_alert(Alert("pump-1", 1, 2, 0.5, id="a" * 1024))  # the most allowed
        assert [a.id for a in store.list_alerts()] == [ok.id]
    finally:
        store.close()
