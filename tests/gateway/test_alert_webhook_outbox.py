"""Alert webhooks and the store's ``alert_events`` outbox, against a real local HTTP
receiver: an acknowledgement is not held back by a steady stream of new alerts (events
and new alerts go out interleaved, by time, each event after its own alert); a merge
reaches the receiver as ``alert.merged``, after both alerts (DuckDB and PostgreSQL); an
event the receiver keeps failing does not hold new alerts back (later events wait for it);
an acknowledgement goes before the alerts raised after it, however seldom the outbox is
read; and the gateway's retention prunes the outbox, keeping the events of its window,
and purges what it pruned from the disk."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgewise.gateway import webhooks
from edgewise.gateway.metrics import Metrics
from edgewise.gateway.webhooks import Webhook
from edgewise.store import open_store
from edgewise.store.base import Alert
from tests.gateway.test_alert_webhook_events import _pg_schema
from tests.gateway.test_alert_webhooks import (
    SECRET,
    Receiver,
    _count,
    _listed,
    _quiet,
    _raise,
    _settings,
    _until,
    _verify,
    running,
)

DAY_NS = 86_400 * 10**9


def _sent(recv: Receiver) -> list[dict[str, Any]]:
    """The JSON body of every request the receiver got, in order."""
    return [json.loads(b) for _, _, b in list(recv.requests)]


def _events(recv: Receiver) -> list[tuple[str, str]]:
    return [(p["event"], p["alert"]["id"]) for p in _sent(recv)]


def test_an_acknowledgement_is_not_held_back_by_a_stream_of_new_alerts(
        tmp_path: Path, receivers) -> None:
    """The receiver takes 50 ms a request, and new alerts keep coming so that at least
    ten always wait. An acknowledgement of an alert already delivered still reaches it
    while they keep coming (it waited only for the alerts raised before it: they went
    first, and those raised after it after it), instead of waiting for a pause that never
    comes."""
    recv = receivers(delay_s=0.05).start()
    with running(_settings(tmp_path, recv.url)) as gw:
        first = _raise(gw, "pump-0")
        recv.wait_for(1)
        raised = [first]
        while len(raised) - len(recv.requests) < 15:  # a backlog of new alerts
            raised.append(_raise(gw, "pump-stream"))
        gw.store.acknowledge_alert(first.id, "ops")
        acked = ("alert.acknowledged", first.id)
        deadline = time.monotonic() + 10.0
        while acked not in _events(recv) and time.monotonic() < deadline:
            if len(raised) - len(recv.requests) < 10:  # never fewer than 10 waiting
                raised.append(_raise(gw, "pump-stream"))
            else:
                time.sleep(0.005)
        got = _sent(recv)
        waiting = len(raised) - len(got)
        assert acked in _events(recv), (
            f"the acknowledgement of {first.id} did not reach the receiver in 10 s while "
            f"new alerts kept coming ({len(raised)} raised, {len(got)} sent, none of them "
            "the acknowledgement)")
        assert waiting >= 5, f"only {waiting} alerts waited when the acknowledgement went"
        recv.wait_for(len(got) + 2)  # the new alerts that waited go on after it
        got = _sent(recv)
    i = next(n for n, p in enumerate(got) if p["event"] == "alert.acknowledged")
    ack = got[i]
    assert ack["alert"]["id"] == first.id and ack["acked_by"] == "ops"
    assert (got[0]["event"], got[0]["alert"]["id"]) == ("alert.raised", first.id)
    assert all(p["event"] == "alert.raised" for p in got[:i] + got[i + 1:])
    # in the order things happened: the alerts raised before the acknowledgement went
    # before it, and every one sent after it was raised after it
    before = [p["alert"]["created_ns"] for p in got[:i]]
    assert max(before) < ack["at_ns"] <= min(p["alert"]["created_ns"] for p in got[i + 1:])


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_a_merge_reaches_the_receiver_as_alert_merged(
        tmp_path: Path, receivers, backend: str, request: pytest.FixtureRequest) -> None:
    """Two delivered alerts of one device are merged (as the alert manager merges them
    when a late reading shows they are one): the receiver gets ``alert.merged``, signed,
    naming the absorbed alert (``alert``), the one it is part of now (``merged_into``,
    ``into`` as it stands, with the absorbed one's acknowledgement) and the alerts that
    were merged into the absorbed one before (``also_merged``); once (DuckDB and
    PostgreSQL)."""
    store = "" if backend == "duckdb" else _pg_schema(request)
    recv = receivers().start()
    with running(_settings(tmp_path, recv.url, store=store)) as gw:
        survivor, absorbed, earlier = (_raise(gw, "pump-1") for _ in range(3))
        recv.wait_for(3)
        gw.store.merge_alert(earlier.id, into=absorbed.id)
        recv.wait_for(4)
        gw.store.acknowledge_alert(absorbed.id, "ops")
        recv.wait_for(5)
        gw.store.merge_alert(absorbed.id, into=survivor.id, end_ns=absorbed.end_ns + 5)
        recv.wait_for(6)
        _quiet(gw)  # more than one read of the store's events: nothing more
        assert _count(gw, recv.url, "delivered") == 6
    assert _events(recv) == [
        ("alert.raised", survivor.id), ("alert.raised", absorbed.id),
        ("alert.raised", earlier.id), ("alert.merged", earlier.id),
        ("alert.acknowledged", absorbed.id), ("alert.merged", absorbed.id)]
    _, headers, body = recv.requests[-1]
    assert _verify(SECRET.encode(), headers, body)
    merged = json.loads(body)
    assert headers["X-Edgewise-Event"] == "alert.merged"
    assert headers["X-Edgewise-Delivery"] == f"{absorbed.id}:{merged['event_id']}"
    assert (merged["merged_into"], merged["also_merged"]) == (survivor.id, [earlier.id])
    assert merged["event_id"] > json.loads(recv.requests[-2][2])["event_id"]
    assert merged["at"].endswith(f".{merged['at_ns'] % 10**9:09d}Z")
    assert (merged["alert"]["id"], merged["alert"]["status"]) == (absorbed.id, "acknowledged")
    into = merged["into"]
    assert (into["id"], into["status"], into["end_ns"], into["path"]) == (
        survivor.id, "acknowledged", absorbed.end_ns + 5, f"/v1/alerts/{survivor.id}")
    first = json.loads(recv.requests[3][2])
    assert (first["merged_into"], first["also_merged"], first["into"]["id"]) == (
        absorbed.id, [], absorbed.id)


def test_a_merge_goes_out_after_both_alerts(tmp_path: Path, receivers) -> None:
    """Two alerts another process stored (the gateway never told; the list read only
    every 60 s) are merged at once: the ``alert.merged`` does not go before its alerts;
    the surviving alert is sent first, the absorbed one is skipped (merged before it was
    sent), then the merge."""
    recv = receivers().start()
    with running(_settings(tmp_path, recv.url, alert_webhook_poll_s=60.0)) as gw:
        _listed(gw)  # the start's read of the alert list is done
        now = time.time_ns()
        survivor = gw.store.add_alert(Alert("pump-9", now, now, 0.9, message="m"))
        absorbed = gw.store.add_alert(Alert("pump-9", now + 5, now + 5, 0.9, message="m"))
        gw.store.merge_alert(absorbed.id, into=survivor.id, end_ns=now + 5)
        recv.wait_for(2)
        time.sleep(1.2)
        assert _count(gw, recv.url, "skipped") == 1
    assert _events(recv) == [("alert.raised", survivor.id), ("alert.merged", absorbed.id)]


def test_retention_prunes_the_outbox_but_keeps_its_window(tmp_path: Path, receivers) -> None:
    """``EDGEWISE_RETENTION_DAYS=1``: a pass now keeps an acknowledgement written now,
    also while the receiver is down (it gets it once up); a pass two days later deletes
    it from the store's outbox; the webhook goes on from there (the next acknowledgement
    is numbered on and sent), the alerts themselves stay."""
    recv = receivers()  # down: connections refused
    with running(_settings(tmp_path, recv.url, retention_days=1)) as gw:
        alert = _raise(gw)
        gw.store.acknowledge_alert(alert.id, "ops")
        _until(lambda: _count(gw, recv.url, "failed") >= 2)
        gw.apply_retention()
        assert [e.alert_id for e in gw.store.alert_events()] == [alert.id]
        recv.start()
        recv.wait_for(2)
        assert _events(recv) == [("alert.raised", alert.id),
                                 ("alert.acknowledged", alert.id)]
        gw.apply_retention(now_ns=time.time_ns() + 2 * DAY_NS)
        assert gw.store.alert_events() == [] and gw.store.last_alert_event_id() == 1
        assert gw.store.get_alert(alert.id).status == "acknowledged"
        later = _raise(gw, "pump-2")
        gw.store.acknowledge_alert(later.id, "ops")
        recv.wait_for(4)
        _quiet(gw)
    assert _events(recv)[2:] == [("alert.raised", later.id), ("alert.acknowledged", later.id)]
    assert json.loads(recv.requests[3][2])["event_id"] == 2


class EventFailer:
    """A real HTTP receiver on 127.0.0.1 that answers 500 to the alert events whose
    ``event_id`` is in :attr:`failing` (as one written before ``alert.merged`` existed
    answers it), 200 to everything else; records ``(event, alert id, event_id, status)``
    of every request, in order."""

    def __init__(self) -> None:
        self.failing: set[int] = set()
        self.got: list[tuple[str, str, int | None, int]] = []
        failer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                p = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 500 if p.get("event_id") in failer.failing else 200
                failer.got.append((p["event"], p["alert"]["id"], p.get("event_id"), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def delivered(self) -> list[tuple[str, str]]:
        return [(e, a) for e, a, _, status in list(self.got) if status == 200]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.parametrize("first_event", ["alert.acknowledged", "alert.merged"])
def test_a_failing_event_does_not_hold_new_alerts_back(tmp_path: Path,
                                                       first_event: str) -> None:
    """The receiver answers 500 to the first alert event (an acknowledgement, or a merge,
    new in this release), for as long as it runs. Alerts raised meanwhile still reach it
    (pages matter most: they overtake the event waiting for its retry), the event after
    it (an acknowledgement of one of those alerts) waits for it (events go in id order),
    and once the receiver takes it, it goes, then the one after."""
    recv = EventFailer()
    recv.failing = {1}
    try:
        with running(_settings(tmp_path, recv.url)) as gw:
            a, b = _raise(gw), _raise(gw)
            _until(lambda: len(recv.delivered()) == 2)
            if first_event == "alert.merged":
                gw.store.merge_alert(b.id, into=a.id, end_ns=b.end_ns + 5)
            else:
                gw.store.acknowledge_alert(a.id, "ops")
            _until(lambda: _count(gw, recv.url, "failed") >= 2)  # it failed, and again
            page = _raise(gw, "pump-2")
            _until(lambda: ("alert.raised", page.id) in recv.delivered(), 10.0)
            gw.store.acknowledge_alert(page.id, "ops")  # event 2, behind the failing one
            failed = _count(gw, recv.url, "failed")
            _until(lambda: _count(gw, recv.url, "failed") >= failed + 2)
            page2 = _raise(gw, "pump-3")
            _until(lambda: ("alert.raised", page2.id) in recv.delivered(), 10.0)
            assert [i for _, _, i, _ in recv.got if i not in (None, 1)] == [], (
                f"an event went before event 1, which was failing: {recv.got}")
            recv.failing = set()  # the receiver takes it now
            _until(lambda: len(recv.delivered()) == 6)
            time.sleep(0.3)
        first = (first_event, b.id if first_event == "alert.merged" else a.id)
        assert recv.delivered() == [
            ("alert.raised", a.id), ("alert.raised", b.id), ("alert.raised", page.id),
            ("alert.raised", page2.id), first, ("alert.acknowledged", page.id)]
        assert {s for e, _, i, s in recv.got if i == 1} == {500, 200}
    finally:
        recv.stop()


def test_an_acknowledgement_goes_before_alerts_raised_after_it_however_seldom_events_are_read(
        tmp_path: Path, receivers, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox is read once a minute here (``EVENT_POLL_S``, 1 s by default, made 60).
    An alert is sent; another is raised, then the first is acknowledged, then two more
    are raised: the acknowledgement goes after the alert raised before it and before
    the two raised after it (the events are read again before an alert raised after
    the last read is sent), not a minute later. The webhook's steps are run here, one at
    a time (no thread: nothing depends on timing)."""
    monkeypatch.setattr(webhooks, "EVENT_POLL_S", 60.0)
    recv = receivers().start()
    store = open_store("duckdb://:memory:")
    w = Webhook(recv.url, store, SECRET.encode(), Metrics(), tmp_path, poll_s=60.0)

    def alert(device: str) -> Alert:
        now = time.time_ns()
        made = store.add_alert(Alert(device, now, now, 0.9, message="m"))
        w.notify(made)
        return made

    try:
        first = alert("pump-1")
        w.run_once()
        assert _events(recv) == [("alert.raised", first.id)]
        before = alert("pump-2")
        store.acknowledge_alert(first.id, "ops")
        after = [alert("pump-3"), alert("pump-4")]
        w.run_once()  # takes the new alerts (and sends one)
        for _ in range(10):  # each step sends one; none is left to wait for
            if not w.pending():
                break
            w.run_once()
        assert _events(recv) == [
            ("alert.raised", first.id), ("alert.raised", before.id),
            ("alert.acknowledged", first.id),
            ("alert.raised", after[0].id), ("alert.raised", after[1].id)]
    finally:
        w.close()
        store.close()


def test_a_retention_pass_that_prunes_only_alert_events_purges_them(tmp_path: Path) -> None:
    """DuckDB, ``EDGEWISE_RETENTION_DAYS=1``, no reading old enough to delete: a pass two
    days after a label prunes its alert events, and purges them from the disk at that
    pass (a relabelled alert's first note, kept only by its event, is gone from the
    file); nothing is left to purge."""
    note = "first-note-5f1d0c9a7be84e3b9d2c41a6e08f7731c2b9"
    with running(_settings(tmp_path, (), retention_days=1)) as gw:
        alert = _raise(gw)
        gw.store.acknowledge_alert(alert.id, "ops", label="true_alarm", labelled_by="ops",
                                   note=note)
        gw.store.acknowledge_alert(alert.id, "ops", label="false_alarm", labelled_by="ops",
                                   note="cleaned")
        gw.store.checkpoint()
        path = Path(gw.store.path)  # type: ignore[attr-defined]

        def on_disk() -> bool:
            return note.encode() in b"".join(
                p.read_bytes() for p in (path, path.with_name(path.name + ".wal"))
                if p.exists())

        assert on_disk() and len(gw.store.alert_events()) == 3
        assert gw.apply_retention(now_ns=time.time_ns() + 2 * DAY_NS) == 0
        assert gw.store.alert_events() == []
        assert gw.store.get_alert(alert.id).note == "cleaned"
        assert gw.store.purge_pending is False  # type: ignore[attr-defined]
        assert not on_disk(), "the pruned events' bytes stayed in the store file"
