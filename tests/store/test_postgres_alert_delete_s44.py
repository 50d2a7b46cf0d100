"""PostgreSQL store (session 44): an alert raised while its device is being deleted never
outlives the deletion. ``add_alert`` took no ``device_stats`` lock, so a deletion did not
wait for an alert in flight: the alert committed after the deletion's ``DELETE FROM
alerts`` and stayed, an alert of a device that no longer exists. It now locks the device's
``device_stats`` row first, as appends do."""

from __future__ import annotations

import pytest

from edgewise.store import open_store
from edgewise.store.base import Alert
from edgewise.telemetry import Reading
from tests.conftest import wait_until
from tests.store.test_postgres_hunt_s43 import _base, _count, _schema, _waits_on_lock
from tests.store.test_postgres_hunt_s44 import T0, _run, delete_during

pytestmark = pytest.mark.postgres
psycopg = pytest.importorskip("psycopg")


def _alert(device: str = "X") -> Alert:
    return Alert(device_id=device, start_ns=T0 + 1, end_ns=T0 + 3, score=9.0,
                 message="too hot")


@pytest.mark.parametrize("before", ["readings", "nothing"])
def test_delete_device_waits_for_an_alert_in_flight(pg_schema_url: str, before: str) -> None:
    """An alert inserted, not yet committed, by another store object (another gateway
    process) while the device is deleted: the deletion waits for it and deletes it (it
    outlived the deletion: 1 alert left of a deleted device). A device with readings, and
    one whose first row the alert is, alike."""
    a, b = open_store(pg_schema_url), open_store(pg_schema_url)
    try:
        if before == "readings":
            a.append([Reading("X", "t", T0 + i, 1.0, seq=i) for i in range(1, 4)])
        # held inside add_alert's transaction: its raise number taken, the row not yet in
        delete_during(a, b, "_take_raised_seq", lambda: a.add_alert(_alert()))
        assert _count(pg_schema_url, "alerts", "X") == 0
        assert b.list_alerts(device_id="X") == []
        assert "X" not in [d.device_id for d in b.devices()]
    finally:
        a.close()
        b.close()


def test_an_alert_waits_for_a_deletion_in_flight_and_is_kept_after_it(
        pg_schema_url: str) -> None:
    """The other order: a deletion holding the device's stats row (uncommitted) makes
    ``add_alert`` wait; the alert is stored after the deletion (a new alert, listed), and
    the 0-reading stats row it makes does not list the device."""
    a = open_store(pg_schema_url)
    try:
        a.append([Reading("X", "t", T0 + i, 1.0, seq=i) for i in range(1, 4)])
        errors: list[BaseException] = []
        with psycopg.connect(_base(pg_schema_url)) as deleting:
            deleting.execute(f'SET search_path TO "{_schema(pg_schema_url)}"')
            deleting.execute("UPDATE device_stats SET readings = readings "
                             "WHERE device_id = 'X'")
            for table in ("readings", "alerts", "device_stats"):
                deleting.execute(f"DELETE FROM {table} WHERE device_id = 'X'")
            th = _run(lambda: a.add_alert(_alert()), errors)
            with psycopg.connect(_base(pg_schema_url), autocommit=True) as admin:
                pid = a._writer.info.backend_pid
                assert wait_until(lambda: _waits_on_lock(admin, pid), timeout=5), \
                    "add_alert did not wait for the device's stats row"
            deleting.commit()
        th.join(10)
        assert not th.is_alive() and errors == []
        assert _count(pg_schema_url, "alerts", "X") == 1
        assert len(a.list_alerts(device_id="X")) == 1
        assert "X" not in [d.device_id for d in a.devices()]
    finally:
        a.close()
