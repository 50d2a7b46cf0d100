"""Several gateways on one PostgreSQL store: acks, seq gaps and deletions (session 31).

Each test runs two gateway pipelines in this process, each with a store object of its
own on the same schema (what two ``edgewise serve`` sharing ``--store`` are), and sends
one device's messages to one or the other.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from edgewise.store.base import Store
from edgewise.transport.base import Outcome
from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.postgres

T0 = 1_769_860_800


def _body(seq: int, value: float = 1.0) -> bytes:
    return json.dumps({"ts": T0 + seq, "metrics": {"t": value}, "seq": seq}).encode()


class _Gateways:
    """Two pipelines (``a``, ``b``), each on a store object of its own, one schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sa: Store = open_store(url)
        self.sb: Store = open_store(url)
        self.a = Pipeline(self.sa, Settings(), detect_async=False, gap_grace_s=0)
        self.b = Pipeline(self.sb, Settings(), detect_async=False, gap_grace_s=0)

    def close(self) -> None:
        for p, s in ((self.a, self.sa), (self.b, self.sb)):
            p.close()
            s.close()


@pytest.fixture
def gws(pg_schema_url: str) -> Iterator[_Gateways]:
    g = _Gateways(pg_schema_url)
    yield g
    g.close()


def test_a_device_switching_gateways_is_acked_every_seq(gws: _Gateways) -> None:
    """Seqs 1..6 sent to the two gateways in turn: each ack is the seq just sent (the
    second gateway acked 0 for ever, as its tracker knew only the seqs it stored)."""
    acks = [(gws.a if s % 2 else gws.b).ingest("x", _body(s)).ack_seq for s in range(1, 7)]
    assert acks == [1, 2, 3, 4, 5, 6]
    # a device new to a gateway, after many seqs on the other: acked at once
    for s in range(7, 40):
        gws.a.ingest("x", _body(s))
    assert gws.b.ingest("x", _body(40)).ack_seq == 40
    assert gws.sb.seq_watermark("x") == 40 and gws.sb.seq_gaps("x") == []


def test_no_false_seq_gap_alert_when_seqs_alternate(gws: _Gateways) -> None:
    for s in range(1, 7):
        (gws.a if s % 2 else gws.b).ingest("x", _body(s))
    assert gws.a.check_gaps() == [] and gws.b.check_gaps() == []
    assert gws.sa.list_alerts(device_id="x", kind="seq_gap") == []


def test_a_gap_another_gateway_filled_is_not_reported(gws: _Gateways) -> None:
    """a stores 1 and 3; b stores 2 just after (a's look-up for 2 came first): a's
    check finds 2 in the tables and reports nothing."""
    gws.a.ingest("x", _body(1))
    gws.a.ingest("x", _body(3))
    gws.b.ingest("x", _body(2))
    assert gws.a.check_gaps() == []
    assert gws.sa.list_alerts(device_id="x", kind="seq_gap") == []


def test_a_reported_gap_filled_through_another_gateway_is_settled(gws: _Gateways) -> None:
    """a reports seq 2 missing; 2 then arrives at b, and 4 at a: a's next check finds 2
    stored and acknowledges its alert (it stayed open for ever)."""
    gws.a.ingest("x", _body(1))
    gws.a.ingest("x", _body(3))
    (alert,) = gws.a.check_gaps()
    gws.b.ingest("x", _body(2))
    assert gws.a.ingest("x", _body(4)).ack_seq == 4
    gws.a.check_gaps()
    got = gws.sa.get_alert(alert.id)
    assert got.status == "acknowledged" and got.acked_by == "gateway", got
    # b adopts nothing to report or settle wrongly either
    assert gws.b.check_gaps() == []
    assert len(gws.sb.list_alerts(device_id="x", kind="seq_gap")) == 1


def test_both_gateways_report_one_gap_once(gws: _Gateways) -> None:
    """A gap both gateways see (seq 2 never sent) is one alert, not one per gateway."""
    gws.a.ingest("x", _body(1))
    gws.b.ingest("x", _body(3))
    gws.a.ingest("x", _body(4))
    raised = gws.a.check_gaps() + gws.b.check_gaps()
    assert len(raised) == 1
    assert len(gws.sa.list_alerts(device_id="x", kind="seq_gap")) == 1


def test_a_device_deleted_on_another_gateway_starts_again(gws: _Gateways) -> None:
    """Deleted through a, registered again under the same id: b acks its new seqs (it
    acked the deleted device's watermark, 5), drops the old device's detectors, and its
    close does not write the old watermark back into seq_marks."""
    for s in range(1, 6):
        assert gws.b.ingest("y", _body(s, float(s))).ack_seq == s
    gws.a.forget_device("y")
    gws.sa.delete_device("y")
    assert gws.b.ingest("y", _body(1, 9.0)).ack_seq == 1
    assert gws.b.ingest("y", _body(3, 9.0)).ack_seq == 1  # seq 2 never arrived
    assert gws.sb.seq_gaps("y") == [(2, 2)]
    assert gws.b._max_seq["y"] == 3  # the old y's high-water mark (5) is gone
    gws.b.close()
    gws.sb.close()
    with open_store(gws.url) as again:
        assert again.seq_watermark("y") == 1 and again.seq_gaps("y") == [(2, 2)]
    gws.sb = open_store(gws.url)
    gws.b = Pipeline(gws.sb, Settings(), detect_async=False, gap_grace_s=0)


def test_close_writes_no_mark_for_a_device_deleted_since(gws: _Gateways) -> None:
    """b held y at 5 and never heard of it again; y is deleted through a and its new
    incarnation sends seq 1 to a: b's close leaves y's mark alone (it wrote 5, which every
    gateway opened later acked to the new y)."""
    for s in range(1, 6):
        gws.b.ingest("y", _body(s))
    gws.sa.delete_device("y")
    assert gws.a.ingest("y", _body(1)).ack_seq == 1
    gws.b.close()
    gws.sb.close()
    with open_store(gws.url) as again:
        assert again.seq_watermark("y") == 1
    gws.sb = open_store(gws.url)
    gws.b = Pipeline(gws.sb, Settings(), detect_async=False, gap_grace_s=0)


def test_device_add_says_the_data_may_be_another_data_dirs_device(
        pg_schema_url: str, tmp_path: Path) -> None:
    """'device add' on a data dir of its own, of an id another data dir registered on the
    same store: the refusal says the data may be that device's (it said only to delete
    it, which would delete a live device's data)."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    with open_store(pg_schema_url) as st:
        st.append([], {"pump-7": [1]})  # pump-7, registered on another data dir
    res = CliRunner(mix_stderr=False).invoke(
        app, ["device", "add", "pump-7", "--data-dir", str(tmp_path / "own"),
              "--store", pg_schema_url], env={})
    assert res.exit_code == 2, res.stdout
    assert "still holds data of a device of that id" in res.stderr
    assert ("may belong to a device registered on another data dir serving the same store"
            in res.stderr), res.stderr
    assert "share one --data-dir" in res.stderr


def test_a_device_in_order_on_one_gateway_costs_no_look_up(
        gws: _Gateways, monkeypatch: pytest.MonkeyPatch) -> None:
    """The look-ups are for misses only: a device new to the gateway is looked up once,
    then its seqs in order (and a batch of several) never again."""
    calls: list[dict[str, list[tuple[int, int]]]] = []
    sync = gws.sa._sync_seqs  # type: ignore[attr-defined]
    monkeypatch.setattr(gws.sa, "_sync_seqs", lambda con, want: calls.append(dict(want))
                        or sync(con, want))
    for s in range(1, 51):
        assert gws.a.ingest("x", _body(s)).ack_seq == s
    gws.a.ingest_many([("x", _body(s)) for s in range(51, 61)])
    assert calls == [{"x": []}]
    assert gws.a.check_gaps() == []
    assert calls == [{"x": []}]


def _count_look_ups(store: Store, monkeypatch: pytest.MonkeyPatch
                    ) -> list[dict[str, list[tuple[int, int]]]]:
    """The seq look-ups (``_sync_seqs``) ``store`` makes from now on, each as the ranges
    it sent per device."""
    calls: list[dict[str, list[tuple[int, int]]]] = []
    sync = store._sync_seqs  # type: ignore[attr-defined]
    monkeypatch.setattr(store, "_sync_seqs", lambda con, want: calls.append(
        {d: list(r) for d, r in want.items()}) or sync(con, want))
    return calls


def test_a_device_with_a_lost_seq_costs_no_look_up_per_message(
        gws: _Gateways, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seq 11 lost for good, then 100 messages in order, each followed by a gap check (the
    gap thread's, every second while the alert is open): one look-up in all, for the
    second look at seq 11. Each message looked up every gap the device ever had, under
    the write lock (5,000 gaps: 48.5 ms an append against 7.9 ms), and so did each
    gap check (33.7 ms)."""
    monkeypatch.setattr(gws.sa, "RECHECK_EVERY_S", 3600.0, raising=False)
    calls = _count_look_ups(gws.sa, monkeypatch)
    for s in range(1, 11):
        gws.a.ingest("x", _body(s))
    assert gws.a.ingest("x", _body(12)).ack_seq == 10
    (alert,) = gws.a.check_gaps()
    assert "11" in alert.message, alert
    del calls[:]
    for s in range(13, 113):
        assert gws.a.ingest("x", _body(s)).ack_seq == 10
        assert gws.a.check_gaps() == []
    assert len(calls) <= 1, f"{len(calls)} look-ups: {calls[:3]}"
    assert sum(r.count((11, 11)) for c in calls for r in c.values()) <= 1
    assert gws.sa.seq_gaps("x") == [(11, 11)]


def test_a_lost_seq_stored_through_another_gateway_is_found_by_the_next_full_recheck(
        gws: _Gateways, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a's appends count seq 11 as lost, b stores it: a's gap check looks all gaps
    up again every RECHECK_EVERY_S, finds it and settles the alert, and a acks past it."""
    monkeypatch.setattr(gws.sa, "RECHECK_EVERY_S", 3600.0, raising=False)
    for s in (*range(1, 11), 12, 13, 14):
        gws.a.ingest("x", _body(s))
    (alert,) = gws.a.check_gaps()
    gws.b.ingest("x", _body(11))
    monkeypatch.setattr(gws.sa, "RECHECK_EVERY_S", 0.0, raising=False)  # the time is up
    gws.a.ingest("x", _body(15))
    gws.a.check_gaps()
    got = gws.sa.get_alert(alert.id)
    assert got.status == "acknowledged" and got.acked_by == "gateway", got
    assert gws.a.ingest("x", _body(16)).ack_seq == 16


class _Broker:
    """An :class:`EmbeddedBroker` on a loop thread of its own, acking from ``store`` as
    the gateway's does (``watermark=store.recheck_seq_watermark``); any device's secret is
    ``"s"``."""

    def __init__(self, store: Store) -> None:
        self.port = free_port()
        self.broker = EmbeddedBroker(
            lambda messages: [Outcome(m.device_id) for m in messages],
            lambda device, secret: None, port=self.port, watermark=store.recheck_seq_watermark)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.broker.start(), self.loop).result(20)

    def ack_on_subscribe(self, device_id: str) -> dict[str, Any]:
        """The first ack a device subscribing to its ack topic receives."""
        import paho.mqtt.client as mqtt

        got: list[bytes] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=f"{device_id}-{uuid.uuid4().hex[:6]}")
        c.username_pw_set(device_id, "s")
        c.on_connect = lambda cl, *_: cl.subscribe([(f"edgewise/{device_id}/ack", 1)])
        c.on_message = lambda _c, _u, m: got.append(m.payload)
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        try:
            assert wait_until(lambda: got, 15), "no ack on subscribing"
        finally:
            c.loop_stop()
            c.disconnect()
        return dict(json.loads(got[0]))

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.broker.stop(), self.loop).result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_device_deleted_on_another_gateway_is_acked_the_tables_on_subscribing(
        gws: _Gateways) -> None:
    """b stored y's seqs 1..5; y is deleted through a and registered again, and connects
    to b: b's broker acks 0 when it subscribes (it acked 5 before y's first message, and
    y dropped seqs 1..5 it never sent), and b then acks y's seqs as sent, the old y's
    state gone."""
    for s in range(1, 6):
        assert gws.b.ingest("y", _body(s)).ack_seq == s
    gws.a.forget_device("y")
    gws.sa.delete_device("y")
    broker = _Broker(gws.sb)
    try:
        assert broker.ack_on_subscribe("y") == {"seq": 0}
        # a device b never saw, stored through a: the tables' watermark, not 0
        for s in range(1, 4):
            gws.a.ingest("z", _body(s))
        assert broker.ack_on_subscribe("z") == {"seq": 3}
    finally:
        broker.stop()
    assert gws.b.ingest("y", _body(1, 9.0)).ack_seq == 1
    assert gws.b.ingest("y", _body(2, 9.0)).ack_seq == 2
    assert gws.b._max_seq["y"] == 2  # the old y's high-water mark (5) is gone
