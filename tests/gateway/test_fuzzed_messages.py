"""Messages an API fuzzer found, through the pipeline and the embedded MQTT broker: values
that overflow a float or a datetime are dead-lettered and their seq acknowledged (they
used to fail the commit, get no dead-letter and hold the device's ack for ever); a decoder
bug rejects one message, not the device; a seq gap partly filled is not reported again."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import edgewise.gateway.pipeline as pipeline_mod
from edgewise.config import Settings
from edgewise.errors import StoreError
from edgewise.gateway.pipeline import Pipeline
from edgewise.security.credentials import Security
from edgewise.sim.device import MqttDevice
from edgewise.store import open_store
from edgewise.transport.base import Message, Outcome
from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import wait_until
from tests.gateway.conftest import GatewayProcess

T0 = 1_700_000_000
HUGE = 10**400


def _msg(seq: int, ts: float, **metrics: float) -> bytes:
    return json.dumps({"ts": ts, "metrics": metrics, "seq": seq}).encode()


@pytest.fixture
def pipe(tmp_path):
    store = open_store(f"duckdb:///{tmp_path / 'p.duckdb'}")
    # no detection worker: it checks gaps every second too, and this test counts reports
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0, detect_async=False)
    yield p
    p.close()
    store.close()


def _gap_messages(p: Pipeline) -> list[str]:
    return sorted(a.message for a in p.store.list_alerts(kind="seq_gap"))


def test_a_gap_partly_filled_is_not_reported_or_counted_again(pipe: Pipeline, tmp_path) -> None:
    for s in (1, 11):
        pipe.ingest("pump-2", _msg(s, T0 + s, a=float(s)))
    assert [a.message for a in pipe.check_gaps(now=time.monotonic() + 1)] == [
        "messages seq 2..10 missing (9)"]
    for s in (2, 3):  # partly filled: 4..10 still missing, the same gap
        pipe.ingest("pump-2", _msg(s, T0 + s, a=float(s)))
    assert pipe.check_gaps(now=time.monotonic() + 2) == []  # was "seq 4..10 missing (7)"
    pipe.ingest("pump-2", _msg(6, T0 + 6, a=6.0))  # 4..5 and 7..10: still the same gap
    assert pipe.check_gaps(now=time.monotonic() + 3) == []
    pipe.ingest("pump-2", _msg(15, T0 + 15, a=15.0))  # 12..14 is a new gap, and only it
    assert [a.message for a in pipe.check_gaps(now=time.monotonic() + 4)] == [
        "messages seq 12..14 missing (3)"]
    assert _gap_messages(pipe) == [  # the partly filled one says what is still missing
        "messages seq 12..14 missing (3)",
        "messages seq 2..10 missing (9); 4..5, 7..10 still missing (6)"]
    assert pipe.metrics.get("edgewise_seq_gaps_total") == 2
    assert pipe.metrics.get("edgewise_seq_missing_total") == 12  # was 9 + 7 + ... counted
    # a restarted pipeline knows the reported gaps from the stored alerts
    again = Pipeline(pipe.store, Settings(data_dir=tmp_path), gap_grace_s=0.0,
                     detect_async=False)
    try:
        assert again.check_gaps(now=time.monotonic() + 5) == []
        again.ingest("pump-2", _msg(8, T0 + 8, a=8.0))
        assert again.check_gaps(now=time.monotonic() + 6) == []
    finally:
        again.close()
    assert len(_gap_messages(pipe)) == 2


@pytest.mark.parametrize("bad", [
    {"ts": T0, "metrics": {"a": HUGE}},
    {"ts": HUGE, "metrics": {"a": 1.0}},
    {"ts": "0001-01-01T00:00:00+14:00", "metrics": {"a": 1.0}},
    {"ts": "9999-12-31T23:59:59-14:00", "metrics": {"a": 1.0}},
])
def test_an_overflowing_message_is_rejected_and_acknowledged(pipe: Pipeline, bad) -> None:
    pipe.ingest("pump-1", _msg(1, T0, a=1.0))
    (res,) = pipe.ingest_many([("pump-1", json.dumps({**bad, "seq": 2}).encode())])
    assert not isinstance(res, Exception), res  # raised OverflowError before
    assert res.ack_seq == 2 and res.accepted == 0 and len(res.rejected) == 1
    assert pipe.ingest("pump-1", _msg(3, T0 + 3, a=3.0)).ack_seq == 3


def test_a_decoder_bug_rejects_that_message_and_its_seq_counts(pipe: Pipeline,
                                                               monkeypatch) -> None:
    real = pipeline_mod.decode

    def decode(payload, device_id, **kw):
        if b'"boom"' in payload:
            raise RuntimeError("decoder bug")
        return real(payload, device_id, **kw)

    monkeypatch.setattr(pipeline_mod, "decode", decode)
    out = pipe.ingest_many([
        ("pump-1", _msg(1, T0, a=1.0)),
        ("pump-1", json.dumps({"ts": T0 + 2, "metrics": {"a": 2.0}, "seq": 2,
                               "x": "boom"}).encode()),
        ("pump-1", _msg(3, T0 + 3, a=3.0)),
    ])
    assert not any(isinstance(r, Exception) for r in out), out
    assert [r.ack_seq for r in out] == [3, 3, 3]
    (err,) = out[1].rejected
    assert err.reason == "undecodable" and "RuntimeError: decoder bug" in str(err)
    assert pipe.metrics.get("edgewise_readings_rejected_total", reason="undecodable") == 1
    assert sorted(v for _, _, v in pipe.store.query("pump-1")) == [1.0, 3.0]


def test_a_message_whose_commit_fails_alone_is_deadlettered() -> None:
    """The embedded broker passes the batcher an on_error hook: a message the store refuses
    is reported to its device (not acknowledged, to be resent), the others commit."""
    sent: list[tuple[str, dict]] = []
    counted: list[tuple[str, dict]] = []

    def handler(batch: list[Message]) -> list[Outcome]:
        if any(m.payload == b"poison" for m in batch):
            raise StoreError("disk full")
        return [Outcome(m.device_id, 1) for m in batch]

    broker = EmbeddedBroker(handler, lambda d, s: None,
                            count=lambda name, value=1.0, **labels: counted.append((name, labels)))
    real = broker.publish_deadletter

    async def publish_deadletter(device_id: str, problem: dict) -> None:
        sent.append((device_id, problem))
        await real(device_id, problem)

    broker.publish_deadletter = publish_deadletter  # type: ignore[method-assign]

    async def main() -> None:
        b = broker.batcher
        b.put(Message("dev-1", b"ok"))
        b.put(Message("dev-2", b"poison"))
        await b.start()
        await b.stop()

    asyncio.run(main())
    assert [(d, p["reason"]) for d, p in sent] == [("dev-2", "store_error")]
    assert "disk full" in sent[0][1]["detail"] and "not" in sent[0][1]["detail"]
    assert ("edgewise_messages_deadlettered_total", {"reason": "store_error"}) in counted


def test_overflowing_mqtt_messages_are_deadlettered_and_acknowledged(tmp_path) -> None:
    """The fuzzer's case over the embedded broker: each overflowing message gets a
    dead-letter, and the ack passes it (it used to stay at the old seq for ever)."""
    data = tmp_path / "ew"
    data.mkdir()
    sec = Security(data)
    secret = sec.add_device("pump-9")[1]
    sec.close()
    gw = GatewayProcess(data).start()
    d = MqttDevice("pump-9", secret, port=gw.mqtt_port).start(resume=False)
    try:
        now = time.time() - 60
        d.send(now, {"a": 1.0}, seq=1)
        assert wait_until(lambda: d.acked == 1, 15.0)
        bad = [{"ts": now, "metrics": {"a": HUGE}, "seq": 2},
               {"ts": HUGE, "metrics": {"a": 1.0}, "seq": 3},
               {"ts": "0001-01-01T00:00:00+14:00", "metrics": {"a": 1.0}, "seq": 4},
               [{"bt": HUGE, "n": "a", "v": 1.0, "seq": 5}]]
        for doc in bad:
            d.publish_raw(d.telemetry_topic, json.dumps(doc).encode())
        d.send(now + 1, {"a": 6.0}, seq=6)
        assert wait_until(lambda: d.acked == 6, 15.0), (d.acked, d.deadletters)
        assert wait_until(lambda: len(d.deadletters) >= 4, 15.0), d.deadletters
        assert sorted((p["field"], p["reason"]) for p in d.deadletters) == [
            ("bt", "not_finite"), ("metrics.a", "not_finite"), ("ts", "ancient_ts"),
            ("ts", "future_ts")]
        assert all(len(p["detail"]) < 400 for p in d.deadletters)
    finally:
        d.stop()
        gw.kill()
    assert "failed; not acknowledged" not in gw.log.read_text()
