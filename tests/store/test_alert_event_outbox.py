"""The alert events outbox (``Store.alert_events``) beyond acknowledgements and labels,
on DuckDB and PostgreSQL alike: a merge writes ``alert.merged`` in its transaction (none
when it is refused, none kept when the transaction fails), and retention
(``delete_before``, ``prune_alert_events``) deletes the events older than its cut, keeps
the newer ones, and never reuses an id."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Alert
from edgewise.telemetry import Reading

T0 = 1_700_000_000 * 10**9
S = 10**9


def _events(store) -> list[tuple[str, str, str, str, dict]]:  # type: ignore[no-untyped-def]
    return [(e.alert_id, e.device_id, e.event, e.actor, e.detail)
            for e in store.alert_events()]


def test_a_merge_writes_alert_merged(store_url: str) -> None:
    """Merging C into B, then B into A, writes one ``alert.merged`` each, by the gateway,
    numbered on from the acknowledgement before them: C's names B; B's names A and C
    (merged into B before, it names A now too). A refused merge (another device, an
    alert merged already) writes none; a reopened store keeps them."""
    store = open_store(store_url)
    try:
        a, b, c = (store.add_alert(Alert("pump-1", T0 + i * S, T0 + i * S, 0.9))
                   for i in range(3))
        other = store.add_alert(Alert("pump-2", T0, T0, 0.9))
        store.acknowledge_alert(b.id, "ops")
        before = time.time_ns()
        store.merge_alert(c.id, into=b.id, end_ns=T0 + 2 * S)
        store.merge_alert(b.id, into=a.id, end_ns=T0 + 2 * S)
        for bad in ((other.id, a.id), (c.id, a.id), (a.id, a.id)):
            with pytest.raises(StoreError):
                store.merge_alert(*bad)
        events = store.alert_events()
    finally:
        store.close()
    assert [(e.alert_id, e.device_id, e.event, e.actor, e.detail) for e in events] == [
        (b.id, "pump-1", "alert.acknowledged", "ops", {"acked_by": "ops"}),
        (c.id, "pump-1", "alert.merged", "gateway", {"merged_into": b.id, "also_merged": []}),
        (b.id, "pump-1", "alert.merged", "gateway",
         {"merged_into": a.id, "also_merged": [c.id]}),
    ]
    assert [e.id for e in events] == [1, 2, 3]
    assert before <= events[1].at_ns <= events[2].at_ns <= time.time_ns()
    store = open_store(store_url)
    try:
        assert store.alert_events() == events and store.last_alert_event_id() == 3
        assert store.get_alert(c.id).merged_into == a.id
        assert store.get_alert(a.id).status == "acknowledged"  # B's, carried over
    finally:
        store.close()


def test_a_merge_whose_event_fails_is_not_merged(store_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The event is written in the merge's transaction: when its write fails, the merge
    is rolled back whole (the absorbed alert stays live, the survivor unchanged) and no
    event is kept; the next merge then writes both."""
    store = open_store(store_url)
    try:
        a = store.add_alert(Alert("pump-1", T0, T0, 0.9))
        b = store.add_alert(Alert("pump-1", T0 + S, T0 + S, 0.9))
        real = store._write_event  # type: ignore[attr-defined]

        def broken(con, alert, event, *args):  # type: ignore[no-untyped-def]
            real(con, alert, event, *args)
            raise StoreError("the disk is full")

        monkeypatch.setattr(store, "_write_event", broken)
        with pytest.raises(StoreError, match="the disk is full"):
            store.merge_alert(b.id, into=a.id, end_ns=T0 + S)
        assert store.get_alert(b.id).merged_into is None
        assert store.get_alert(a.id).end_ns == T0
        assert {x.id for x in store.list_alerts()} == {a.id, b.id}
        assert store.alert_events() == [] and store.last_alert_event_id() == 0
        monkeypatch.undo()
        store.merge_alert(b.id, into=a.id, end_ns=T0 + S)
        assert _events(store) == [
            (b.id, "pump-1", "alert.merged", "gateway", {"merged_into": a.id,
                                                         "also_merged": []})]
        assert store.last_alert_event_id() == 1
    finally:
        store.close()


def test_retention_prunes_the_events_before_its_cut(store_url: str) -> None:
    """``delete_before(cut)`` deletes, with the readings, the alert events written before
    ``cut`` and keeps those written at or after it (a webhook's cursor still needs
    those), and the alerts; ``device_id`` limits it to one device's; ids are not reused
    and ``last_alert_event_id`` does not move back, also after a reopen."""
    store = open_store(store_url)
    try:
        now = time.time_ns()
        store.append([Reading("pump-1", "t", now - 10 * S, 1.0),
                      Reading("pump-1", "t", now + 10 * S, 1.0)])
        old = [store.add_alert(Alert(d, now, now, 0.9)) for d in ("pump-1", "pump-2")]
        for x in old:
            store.acknowledge_alert(x.id, "ops", label="true_alarm", labelled_by="ops")
        time.sleep(0.01)
        cut = time.time_ns()
        time.sleep(0.01)
        new = store.add_alert(Alert("pump-1", now, now, 0.9))
        store.acknowledge_alert(new.id, "lab")
        assert [e.id for e in store.alert_events()] == [1, 2, 3, 4, 5]
        assert store.delete_before(cut, device_id="pump-2") == 0  # its events only
        assert [e.id for e in store.alert_events()] == [1, 2, 5]
        assert store.delete_before(cut) == 1  # one reading, and the events before the cut
        assert _events(store) == [(new.id, "pump-1", "alert.acknowledged", "lab",
                                   {"acked_by": "lab"})]
        assert store.prune_alert_events(cut) == 0
        assert store.last_alert_event_id() == 5
        assert {x.id for x in store.list_alerts()} == {old[0].id, old[1].id, new.id}
        assert store.get_alert(old[0].id).label == "true_alarm"
        store.acknowledge_alert(old[0].id, "lead", label="false_alarm", labelled_by="lead")
    finally:
        store.close()
    store = open_store(store_url)
    try:
        assert [e.id for e in store.alert_events()] == [5, 6]
        assert [e.id for e in store.alert_events(after_id=3)] == [5, 6]
        assert store.last_alert_event_id() == 6
        assert store.prune_alert_events(time.time_ns() + S, device_id="pump-9") == 0
        assert store.prune_alert_events(time.time_ns() + S) == 2
        assert store.alert_events() == [] and store.last_alert_event_id() == 6
    finally:
        store.close()


def test_duckdb_retention_of_events_alone_notes_a_purge(tmp_path: Path) -> None:
    """A DuckDB retention pass that deleted alert events and no reading still notes that
    deleted rows wait for a purge (the gateway's daily retention purge), and
    ``delete_before(purge=True)`` purges them."""
    path = tmp_path / "ew.duckdb"
    store = open_store(f"duckdb://{path}")
    try:
        a = store.add_alert(Alert("pump-1", T0, T0, 0.9))
        store.acknowledge_alert(a.id, "ops")
        assert store.delete_before(time.time_ns() + S) == 0
        assert store.alert_events() == [] and store.purge_pending  # type: ignore[attr-defined]
        b = store.add_alert(Alert("pump-1", T0, T0, 0.9))
        store.acknowledge_alert(b.id, "ops")
        store.purge()
        assert not store.purge_pending  # type: ignore[attr-defined]
        assert store.delete_before(time.time_ns() + S, purge=True) == 0
        assert store.alert_events() == [] and not store.purge_pending  # type: ignore[attr-defined]
        assert store.last_alert_event_id() == 2
    finally:
        store.close()
