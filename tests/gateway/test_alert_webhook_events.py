"""Alert webhooks announce acknowledgements and labels (``alert.acknowledged``,
``alert.labelled``), from the store's ``alert_events`` outbox, against a real local HTTP
receiver: over the real HTTP API of ``edgewise serve``, after a receiver outage, after a
kill -9 between the commit and the send, after an upgrade of an old cursor file, and
always after the alert's own ``alert.raised``."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgewise.errors import StoreError
from edgewise.gateway.webhooks import SECRET_FILE, webhook_id
from edgewise.security.credentials import Security
from edgewise.store import open_store
from edgewise.store.base import Alert
from tests.gateway.test_alert_webhooks import (
    SECRET,
    Receiver,
    _add_pump,
    _count,
    _listed,
    _quiet,
    _raise,
    _send_with_a_gap,
    _settings,
    _until,
    _verify,
    running,
)


def _events(recv: Receiver) -> list[tuple[str, str]]:
    """``(event, alert id)`` of every request the receiver got, in order."""
    return [(json.loads(b)["event"], json.loads(b)["alert"]["id"]) for _, _, b in recv.requests]


def _serve_env(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    for name, value in (("EDGEWISE_SEQ_GAP_GRACE_S", "0"),
                        ("EDGEWISE_ALERT_WEBHOOK_POLL_S", "0.3"),
                        ("EDGEWISE_ALERT_WEBHOOK_RETRY_S", "0.1"),
                        ("EDGEWISE_ALERT_WEBHOOK_MAX_RETRY_S", "0.3"),
                        ("EDGEWISE_ALERT_WEBHOOK_SECRET", SECRET), *extra.items()):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("EDGEWISE_ALERT_WEBHOOKS", raising=False)


def _pg_schema(request: pytest.FixtureRequest) -> str:
    """The test PostgreSQL's URL with a schema of this test's own, dropped after it."""
    import psycopg

    base = request.getfixturevalue("postgres_url")
    schema = f"ew_hook_{uuid.uuid4().hex[:10]}"

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    request.addfinalizer(drop)
    return f"{base}?schema={schema}"


def _operator_token(d: Path) -> str:
    sec = Security(d)
    try:
        return sec.create_token("operator", "ops")
    finally:
        sec.close()


def test_ack_and_label_over_the_api_reach_the_receiver_signed(
        tmp_path: Path, receivers, gateway_factory, monkeypatch) -> None:
    """``edgewise serve --alert-webhook``: after the seq-gap alert, POST /v1/alerts/{id}/ack
    and /label each reach the receiver once, signed, as ``alert.acknowledged`` (who, when)
    and ``alert.labelled`` (label, who, note), with the alert as it stands; acknowledging
    again (nothing written) sends nothing.

    The URL is taken as given, never split: one whose query holds a comma starts the
    gateway as one webhook and everything goes to that very URL (only
    EDGEWISE_ALERT_WEBHOOKS is comma-separated). (That was
    ``test_serve_takes_a_webhook_url_with_a_comma``, merged here: one gateway start.)"""
    _serve_env(monkeypatch)
    d = tmp_path / "ew"
    device_secret = _add_pump(d)
    token = _operator_token(d)
    recv = receivers().start()
    url = recv.url + "?teams=ops,infra"
    g = gateway_factory("--alert-webhook", url, data_dir=d).start()
    assert f"alert webhooks: {webhook_id(url)} (http://127.0.0.1:{recv.port}/…)" in (
        g.log.read_text())
    _send_with_a_gap(g.http_port, device_secret)
    recv.wait_for(1, timeout=30)
    alert_id = json.loads(recv.requests[0][2])["alert"]["id"]
    with httpx.Client(base_url=f"http://127.0.0.1:{g.http_port}", timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        before = time.time_ns()
        acked = http.post(f"/v1/alerts/{alert_id}/ack")
        assert acked.status_code == 200, acked.text
        recv.wait_for(2)
        labelled = http.post(f"/v1/alerts/{alert_id}/label",
                             json={"label": "false_alarm", "note": "sensor cleaned"})
        assert labelled.status_code == 200, labelled.text
        recv.wait_for(3)
        again = http.post(f"/v1/alerts/{alert_id}/ack")
        assert again.status_code == 200 and again.json()["acked_by"] == acked.json()["acked_by"]
        time.sleep(1.5)  # more than one read of the store's events
    assert g.stop() == 0
    assert _events(recv) == [("alert.raised", alert_id), ("alert.acknowledged", alert_id),
                             ("alert.labelled", alert_id)]
    assert [path for path, _, _ in recv.requests] == ["/hook?teams=ops,infra"] * 3
    who = acked.json()["acked_by"]
    sent: list[dict[str, Any]] = []
    for _, headers, body in recv.requests[1:]:
        assert _verify(SECRET.encode(), headers, body)
        assert not _verify(SECRET.encode(), headers, body.replace(b"pump-1", b"pump-2"))
        p = json.loads(body)
        assert headers["X-Edgewise-Event"] == p["event"]
        assert headers["X-Edgewise-Delivery"] == f"{alert_id}:{p['event_id']}"
        assert headers["Content-Type"] == "application/json"
        sent.append(p)
    ack, label = sent
    assert ack["acked_by"] == who and ack["event_id"] < label["event_id"]
    assert before <= ack["at_ns"] <= label["at_ns"] <= time.time_ns()
    assert ack["at"].endswith(f".{ack['at_ns'] % 10**9:09d}Z")
    assert (label["label"], label["labelled_by"], label["note"]) == (
        "false_alarm", who, "sensor cleaned")
    for p in sent:
        a = p["alert"]
        assert (a["id"], a["device_id"], a["kind"], a["status"]) == (
            alert_id, "pump-1", "seq_gap", "acknowledged")
        assert a["path"] == f"/v1/alerts/{alert_id}"
        assert set(a) >= {"start", "end", "start_ns", "end_ns", "created", "score", "message"}


def test_a_kill_9_between_the_commit_and_the_send_sends_after_restart(
        tmp_path: Path, receivers, gateway_factory, monkeypatch) -> None:
    """The receiver is down: an alert (a seq gap in HTTP telemetry), its acknowledgement
    and its label are committed (over the HTTP API) but not sent when the gateway is
    killed with SIGKILL; after the restart the receiver gets each once, the alert first,
    in order, signed with the secret ``edgewise serve --alert-webhook URL`` made at its
    first start (no EDGEWISE_ALERT_WEBHOOK_SECRET): it says where it made it, once, and
    the restart keeps it. (That was also ``test_serve_delivers_what_a_kill_9_left_unsent``,
    merged here: one gateway started twice instead of two.)"""
    _serve_env(monkeypatch)
    monkeypatch.delenv("EDGEWISE_ALERT_WEBHOOK_SECRET")
    d = tmp_path / "ew"
    device_secret = _add_pump(d)
    token = _operator_token(d)
    recv = receivers()  # down: connections refused
    g = gateway_factory("--alert-webhook", recv.url, data_dir=d).start()
    assert f"alert webhook secret made: {d / SECRET_FILE}" in g.log.read_text()
    _send_with_a_gap(g.http_port, device_secret)
    with httpx.Client(base_url=f"http://127.0.0.1:{g.http_port}", timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        _until(lambda: http.get("/v1/alerts").json() != [], timeout=30)
        (listed,) = http.get("/v1/alerts").json()
        alert_id = listed["id"]
        assert http.post(f"/v1/alerts/{alert_id}/ack").status_code == 200
        assert http.post(f"/v1/alerts/{alert_id}/label",
                         json={"label": "true_alarm"}).status_code == 200
    _until(lambda: g.log.read_text().count("not delivered") >= 2, timeout=30)
    g.kill()
    recv.start()
    g.start()
    recv.wait_for(3, timeout=30)
    time.sleep(1.5)
    assert _events(recv) == [("alert.raised", alert_id), ("alert.acknowledged", alert_id),
                             ("alert.labelled", alert_id)]
    alert = json.loads(recv.requests[0][2])["alert"]
    assert (alert["device_id"], alert["kind"]) == ("pump-1", "seq_gap")
    made = (d / SECRET_FILE).read_bytes().strip()
    assert all(_verify(made, h, b) for _, h, b in recv.requests)
    assert not _verify(SECRET.encode(), *recv.requests[0][1:])  # not some other secret
    assert g.log.read_text().count("alert webhook secret made") == 1
    assert g.stop() == 0
    cursor = json.loads((d / "webhooks" / f"{webhook_id(recv.url)}.json").read_text())
    assert cursor["events_after"] == max(json.loads(b).get("event_id", 0)
                                         for _, _, b in recv.requests)


@pytest.mark.parametrize("backend", ["duckdb", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
def test_receiver_down_then_up_gets_the_events_once(
        tmp_path: Path, receivers, backend: str, request: pytest.FixtureRequest) -> None:
    """Connection refused is retried; once the receiver listens it gets the alert, its
    acknowledgement and its label, once each, in that order (DuckDB and PostgreSQL)."""
    store = "" if backend == "duckdb" else _pg_schema(request)
    recv = receivers()  # not listening yet
    with running(_settings(tmp_path, recv.url, store=store)) as gw:
        alert = _raise(gw)
        gw.store.acknowledge_alert(alert.id, "ops")  # what POST /v1/alerts/{id}/ack does
        gw.store.acknowledge_alert(alert.id, "lab", label="true_alarm", labelled_by="lab",
                                   note="bearing")
        _until(lambda: _count(gw, recv.url, "failed") >= 3)
        assert recv.requests == []
        recv.start()
        recv.wait_for(3)
        _quiet(gw)  # more reads of the list and the events: nothing more goes
        assert _events(recv) == [("alert.raised", alert.id),
                                 ("alert.acknowledged", alert.id),
                                 ("alert.labelled", alert.id)]
        assert _count(gw, recv.url, "delivered") == 3
    label = json.loads(recv.requests[2][2])
    assert (label["label"], label["labelled_by"], label["note"]) == ("true_alarm", "lab",
                                                                     "bearing")


def test_an_event_waits_for_its_alert(tmp_path: Path, receivers) -> None:
    """An alert another process stored (the gateway never told, the list read only every
    60 s) and acknowledged at once: the acknowledgement does not go out before the alert;
    the alert is sent first, then its acknowledgement."""
    recv = receivers().start()
    with running(_settings(tmp_path, recv.url, alert_webhook_poll_s=60.0)) as gw:
        _listed(gw)  # the start's read of the alert list is done
        now = time.time_ns()
        quiet = gw.store.add_alert(Alert("pump-9", now, now, 0.9, message="m"))
        gw.store.acknowledge_alert(quiet.id, "ops")
        recv.wait_for(2)
        time.sleep(1.2)
    assert _events(recv) == [("alert.raised", quiet.id), ("alert.acknowledged", quiet.id)]


def test_an_old_cursor_file_starts_at_the_events_of_the_upgrade(
        tmp_path: Path, receivers) -> None:
    """A cursor file written before events were sent (no ``events_after``), and a new
    webhook: the acknowledgements stored before are not sent (no replay of history);
    those made after are, and the file then keeps the last event sent."""
    old_recv, new_recv = receivers().start(), receivers().start()
    settings = _settings(tmp_path, (old_recv.url, new_recv.url))
    store = open_store(settings.store_url)
    now = time.time_ns()
    before = store.add_alert(Alert("pump-1", now, now, 0.9))
    store.acknowledge_alert(before.id, "ops", label="false_alarm", labelled_by="ops")
    assert store.last_alert_event_id() == 2
    store.close()
    cursor = tmp_path / "webhooks" / f"{webhook_id(old_recv.url)}.json"
    cursor.parent.mkdir(mode=0o700)
    cursor.write_text(json.dumps({"webhook": "http://127.0.0.1/…", "floor_ns": time.time_ns(),
                                  "done": {}}))  # as the gateway before this one wrote it
    with running(settings) as gw:
        assert json.loads(cursor.read_text())["events_after"] == 2  # written at the start
        _quiet(gw)  # reads of the list and the events: nothing of before goes
        assert old_recv.requests == [] and new_recv.requests == []
        after = _raise(gw)
        gw.store.acknowledge_alert(after.id, "ops")
        old_recv.wait_for(2)
        new_recv.wait_for(2)
        _quiet(gw)
    for recv in (old_recv, new_recv):
        assert _events(recv) == [("alert.raised", after.id), ("alert.acknowledged", after.id)]
        assert json.loads(recv.requests[1][2])["event_id"] == 3
    assert json.loads(cursor.read_text())["events_after"] == 3


def test_the_events_of_a_deleted_device_are_not_sent(tmp_path: Path, receivers) -> None:
    """The receiver is down while a device's alert is acknowledged; the device is deleted
    (its alerts and events with it) before the receiver is back: it gets nothing of it,
    and the next device's alert and acknowledgement still go out."""
    recv = receivers(answers=[503] * 3).start()
    with running(_settings(tmp_path, recv.url, alert_webhook_retry_s=0.5,
                           alert_webhook_max_retry_s=1.0)) as gw:
        doomed = _raise(gw, "doomed-1")
        gw.store.acknowledge_alert(doomed.id, "ops")
        recv.wait_for(1)  # 503: retried in 0.25 s or more
        gw.store.delete_device("doomed-1")
        assert [e for e in gw.store.alert_events() if e.device_id == "doomed-1"] == []
        kept = _raise(gw, "pump-2")
        gw.store.acknowledge_alert(kept.id, "ops")
        _until(lambda: _count(gw, recv.url, "delivered") == 2)
        time.sleep(1.2)
        assert _count(gw, recv.url, "delivered") == 2
    sent = _events(recv)
    assert sent[-2:] == [("alert.raised", kept.id), ("alert.acknowledged", kept.id)]
    assert {i for _, i in sent} == {doomed.id, kept.id}  # doomed: its first (503) try only
    assert ("alert.acknowledged", doomed.id) not in sent


@pytest.mark.parametrize("move", ["fresh_store", "backup_restored"])
def test_a_gateway_moved_to_another_store_sends_its_events(
        tmp_path: Path, receivers, move: str) -> None:
    """Event ids are the store's own: the gateway keeps its data dir (and the webhook's
    cursor, at event 3) but opens another store (a fresh file: another store id) or a
    backup taken before those events (the same id, its newest event 0): the
    acknowledgements made there, numbered from 1 again, are sent all the same."""
    recv = receivers().start()
    first = tmp_path / "first.duckdb"
    settings = _settings(tmp_path, recv.url, store=f"duckdb://{first}")
    open_store(settings.store_url).close()
    backup = first.read_bytes()
    with running(settings) as gw:
        for i in range(3):
            gw.store.acknowledge_alert(_raise(gw, f"pump-{i}").id, "ops")
        recv.wait_for(6)
        _quiet(gw)
    cursor = json.loads((tmp_path / "webhooks" / f"{webhook_id(recv.url)}.json").read_text())
    assert cursor["events_after"] == 3
    if move == "fresh_store":
        settings = _settings(tmp_path, recv.url, store=f"duckdb://{tmp_path / 'second.duckdb'}")
    else:
        first.write_bytes(backup)
        first.with_name(first.name + ".wal").unlink(missing_ok=True)
    with running(settings) as gw:
        moved = [_raise(gw, "pump-9"), _raise(gw, "pump-8")]
        for a in moved:
            gw.store.acknowledge_alert(a.id, "ops")
        recv.wait_for(10)
        _quiet(gw)
        assert [e.id for e in gw.store.alert_events()] == [1, 2]
        store_id = gw.store.store_id()
    assert sorted(_events(recv)[6:]) == sorted((e, a.id) for a in moved
                                               for e in ("alert.raised", "alert.acknowledged"))
    cursor = json.loads((tmp_path / "webhooks" / f"{webhook_id(recv.url)}.json").read_text())
    assert (cursor["events_after"], cursor["store"]) == (2, store_id)


def test_a_store_silent_at_start_never_leaves_a_cursor_without_its_events(
        tmp_path: Path, receivers, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store does not answer when a new webhook starts; it answers later and the
    webhook sends an alert (its cursor file written), then the gateway dies. An
    acknowledgement written before the restart is sent after it: the file never lacks
    the events position, which a restart would read as a file of an Edgewise from before
    alert events and start after the acknowledgement."""
    from edgewise.gateway.metrics import Metrics
    from edgewise.gateway.webhooks import Webhook

    recv = receivers().start()
    store = open_store(f"duckdb://{tmp_path / 'ew.duckdb'}")
    state = tmp_path / "webhooks"
    try:
        down = [True]
        for name in ("store_id", "last_alert_event_id"):
            real = getattr(store, name, None)
            if real is None:  # an Edgewise before store ids
                continue

            def flaky(real=real):  # type: ignore[no-untyped-def]
                if down[0]:
                    raise StoreError("the store does not answer")
                return real()

            monkeypatch.setattr(store, name, flaky)
        hook = Webhook(recv.url, store, SECRET.encode(), Metrics(), state, poll_s=0.2)
        down[0] = False
        now = time.time_ns()
        alert = store.add_alert(Alert("pump-1", now, now, 0.9))
        hook.notify(alert)
        for _ in range(20):
            if recv.requests:
                break
            hook.run_once()
        assert _events(recv) == [("alert.raised", alert.id)]
        saved = json.loads((state / f"{hook.id}.json").read_text())
        hook._signal_stop()  # dies: the cursor file stays as last written
        store.acknowledge_alert(alert.id, "ops")
        again = Webhook(recv.url, store, SECRET.encode(), Metrics(), state, poll_s=0.2)
        for _ in range(20):
            if len(recv.requests) > 1:
                break
            again.run_once()
        again.close()
        hook._client.close()
        assert _events(recv) == [("alert.raised", alert.id),
                                 ("alert.acknowledged", alert.id)]
        assert (saved.get("events_after"), saved.get("store")) == (0, store.store_id())
    finally:
        store.close()
