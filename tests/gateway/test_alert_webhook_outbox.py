"""Alert webhooks and the store's ``alert_events`` outbox, against a real local HTTP
receiver: an acknowledgement is not held back by a steady stream of new alerts (events
and new alerts go out interleaved, by time, each event after its own alert); a merge
reaches the receiver as ``alert.merged``, after both alerts (DuckDB and PostgreSQL); and
the gateway's retention prunes the outbox, keeping the events of its window."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.store.base import Alert
from tests.gateway.test_alert_webhook_events import _pg_schema
from tests.gateway.test_alert_webhooks import (
    SECRET,
    Receiver,
    _count,
    _raise,
    _settings,
    _until,
    _verify,
    running,
)

DAY_NS = 86_400 * 10**9


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Makes :class:`Receiver` s (not started), each stopped after the test."""
    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.stop()


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
        time.sleep(1.2)  # more than one read of the store's events: nothing more
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
        time.sleep(0.5)  # the start's read of the alert list is done
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
        time.sleep(1.2)
    assert _events(recv)[2:] == [("alert.raised", later.id), ("alert.acknowledged", later.id)]
    assert json.loads(recv.requests[3][2])["event_id"] == 2
