"""Whether a verdict acknowledged its alert (the ``alert.label`` audit entry's
``acknowledged``) is read from that alert's own events after the mark
(``Store.alert_events_for``), not from every alert's events after it, on both stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.server.routes.alerts import _acknowledged_here
from edgewise.store import open_store
from edgewise.store.base import Alert


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A fresh store on each backend (PostgreSQL: a schema of its own, dropped after)."""
    if request.param == "duckdb":
        s = open_store(f"duckdb://{tmp_path / 'store.duckdb'}")
        yield s
        s.close()
        return
    import psycopg

    base = request.getfixturevalue("postgres_url")
    schema = f"ew_test_{uuid.uuid4().hex[:12]}"
    s = open_store(f"{base}{'&' if '?' in base else '?'}schema={schema}")
    try:
        yield s
    finally:
        s.close()
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_alert_events_for_lists_one_alerts_events(store: object) -> None:
    s = store
    a, b = s.add_alert(Alert("d", 0, 9, 0.9)), s.add_alert(Alert("d", 100, 109, 0.9))
    s.acknowledge_alert(b.id, "ops")  # 1 (b)
    s.acknowledge_alert(a.id, "ops", label="true_alarm", labelled_by="ops")  # 2, 3 (a)
    s.acknowledge_alert(b.id, "ops", label="false_alarm", labelled_by="ann")  # 4 (b)
    s.acknowledge_alert(a.id, "ops", label="false_alarm", labelled_by="ann")  # 5 (a)
    got = [(e.id, e.alert_id, e.event, e.actor) for e in s.alert_events_for(a.id)]
    assert got == [(2, a.id, "alert.acknowledged", "ops"), (3, a.id, "alert.labelled", "ops"),
                   (5, a.id, "alert.labelled", "ann")]
    # as alert_events lists them (detail too), only after after_id, at most limit
    assert s.alert_events_for(a.id) == [e for e in s.alert_events() if e.alert_id == a.id]
    assert [e.id for e in s.alert_events_for(a.id, after_id=2)] == [3, 5]
    assert [e.id for e in s.alert_events_for(a.id, after_id=3, limit=1)] == [5]
    assert [e.id for e in s.alert_events_for(b.id, after_id=0, limit=1)] == [1]
    assert s.alert_events_for(a.id, after_id=5) == []
    assert s.alert_events_for("no-such-alert") == []


def test_acknowledged_here_reads_the_alerts_own_events(store: object) -> None:
    """Other alerts' events around the verdict (their acks, labels and a merge) do not
    change the answer: True for the verdict that acknowledged the alert, False for one on
    an alert acknowledged before (by another request after the verdict's read)."""
    s = store
    others = [s.add_alert(Alert("d", 1000 + 10 * i, 1005 + 10 * i, 0.9)) for i in range(6)]
    a = s.add_alert(Alert("d", 0, 9, 0.9))
    c = s.add_alert(Alert("e", 0, 9, 0.9))
    before, mark = s.get_alert(a.id), s.last_alert_event_id()
    for o in others[:3]:
        s.acknowledge_alert(o.id, "ops", label="true_alarm", labelled_by="ops")
    s.acknowledge_alert(a.id, "ops", label="true_alarm", labelled_by="ops")
    s.merge_alert(others[4].id, into=others[3].id, end_ns=others[4].end_ns)
    s.acknowledge_alert(others[5].id, "ops", label="false_alarm", labelled_by="ops")
    assert _acknowledged_here(s, a.id, mark, before) is True
    # acknowledged by another request between the verdict's read and its write
    before, mark = s.get_alert(c.id), s.last_alert_event_id()
    s.acknowledge_alert(c.id, "bob")
    s.acknowledge_alert(others[0].id, "ops", label="false_alarm", labelled_by="ann")
    s.acknowledge_alert(c.id, "ann", label="false_alarm", labelled_by="ann")
    assert _acknowledged_here(s, c.id, mark, before) is False
