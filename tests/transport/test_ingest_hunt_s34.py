"""Ingest hunt (session 34), MQTT side.

* External broker: a telemetry message a device published with the retain flag was
  stored again at every gateway (re)subscribe (the broker replays it to each new
  subscription), and a deleted device's retained message came back as the telemetry of a
  device registered again under its id. A message with the retain flag is acknowledged
  and dropped (a live publish reaches the gateway with the flag cleared).
* SenML with no time was stamped when the gateway decoded it, not when it arrived: the
  messages that waited behind a slow commit were all stored within a millisecond.

Mosquitto runs privately on a free port (skipped where the binary is absent).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgewise.config import Settings
from edgewise.gateway.runtime import Gateway
from edgewise.store import open_store
from tests.conftest import free_port, wait_until
from tests.transport.conftest import Mosquitto


def _publish(port: int, topic: str, payload: bytes | str, *, retain: bool = False,
             auth: tuple[str, str] | None = None) -> int:
    """Publish one QoS 1 message from a client of its own and wait for the PUBACK; return
    ``time.time_ns()`` just before the publish."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:8]}")
    if auth is not None:
        c.username_pw_set(*auth)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        sent = time.time_ns()
        info = c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        c.disconnect()
        c.loop_stop()
    return sent


def _external(tmp_path: Path, mosquitto: Mosquitto) -> Settings:
    return Settings(data_dir=tmp_path / "ew", mqtt=f"mqtt://127.0.0.1:{mosquitto.port}")


async def _run(settings: Settings, body: Callable[[Gateway], Any] | None = None,
               seconds: float = 0.5) -> float:
    """Start a gateway on ``settings``, run ``body(gw)`` on a thread (else wait ``seconds``),
    stop it; return its count of retained messages dropped."""
    gw = Gateway(settings)
    await gw.start(http=False)
    try:
        if body is None:
            await asyncio.sleep(seconds)
        else:
            await asyncio.to_thread(body, gw)
    finally:
        dropped = gw.pipeline.metrics.get("edgewise_messages_refused_total", reason="retained")
        await gw.stop()
    return dropped


def test_retained_telemetry_is_stored_once_not_at_every_restart(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Check a SenML message with no time (and no seq) published with retain is stored
    once (live), and not again when the gateway restarts and subscribes anew (old code:
    one more reading, stamped with the new start's time, per restart)."""
    settings = _external(tmp_path, mosquitto)
    topic = "edgewise/pump-1/telemetry"

    def first(gw: Gateway) -> None:
        gw.security.add_device("pump-1")
        _publish(mosquitto.port, topic, json.dumps([{"n": "temp", "v": 21.5}]), retain=True)
        assert wait_until(lambda: gw.store.count_readings() == 1, 10)

    async def main() -> list[float]:
        dropped = [await _run(settings, first)]
        for _ in range(3):  # the gateway restarts three times
            dropped.append(await _run(settings, seconds=0.7))
        return dropped

    dropped = asyncio.run(main())
    store = open_store(settings.store_url)
    try:
        rows = store.query("pump-1", "temp")
        assert [v for _, _, v in rows] == [21.5], rows
    finally:
        store.close()
    assert dropped[0] == 0  # the live publish came with the flag cleared, and was stored
    assert all(d == 1 for d in dropped[1:]), dropped  # each start's replay, dropped
    _publish(mosquitto.port, topic, b"", retain=True)


def test_deleted_devices_retained_telemetry_is_not_stored_for_the_new_one(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Check a device deleted and registered again does not get the old device's retained
    telemetry stored as its own at the next subscribe (old code: the old reading back,
    and a seq_gap alert for seqs 1..56 the new device never sent)."""
    settings = _external(tmp_path, mosquitto)
    old = json.dumps({"ts": time.time() - 60, "metrics": {"secret_level": 42.0}, "seq": 57})

    def first(gw: Gateway) -> None:
        gw.security.add_device("pump-1")
        _publish(mosquitto.port, "edgewise/pump-1/telemetry", old, retain=True)
        assert wait_until(lambda: gw.store.count_readings() == 1, 10)
        # what DELETE /v1/devices/pump-1 does: revoke, forget, delete the data, clear the ack
        gw.security.delete_device("pump-1", actor="test")
        gw.pipeline.forget_device("pump-1")
        with gw.pipeline.commit_lock:
            gw.store.delete_device("pump-1")
        gw.forget_device("pump-1")
        gw.security.add_device("pump-1")  # a new device under the same id

    def second(gw: Gateway) -> None:
        time.sleep(0.7)
        gw.pipeline.check_gaps(now=time.monotonic() + 3600)

    async def main() -> float:
        await _run(settings, first)
        return await _run(settings, second)  # restarted (or merely reconnected)

    dropped = asyncio.run(main())
    store = open_store(settings.store_url)
    try:
        assert store.query("pump-1") == []
        assert store.seq_watermark("pump-1") == 0
        assert [a.kind for a in store.list_alerts(device_id="pump-1")] == []
    finally:
        store.close()
    assert dropped == 1
    _publish(mosquitto.port, "edgewise/pump-1/telemetry", b"", retain=True)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Settings]:
    yield Settings(data_dir=tmp_path / "ew", mqtt="embedded", mqtt_port=free_port())


@pytest.mark.parametrize("consumer", ["plugin", "subscriber"])
def test_embedded_broker_stores_retained_telemetry_once_and_keeps_none(
        consumer: str, embedded: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the embedded broker agrees with the external one: telemetry published with
    retain is stored once, as it comes, and is never sent again (the broker retains
    nothing: a restart finds nothing to replay); with the internal subscriber too, which
    keeps what its broker sends with the retain flag (drop_retained=False)."""
    monkeypatch.setenv("EDGEWISE_MQTT_CONSUMER", consumer)
    topic = "edgewise/pump-1/telemetry"

    def first(gw: Gateway) -> None:
        _publish(embedded.mqtt_port, topic, json.dumps([{"n": "temp", "v": 21.5}]),
                 retain=True, auth=("pump-1", secret))
        assert wait_until(lambda: gw.store.count_readings() == 1, 10)
        time.sleep(0.3)
        assert gw.store.count_readings() == 1

    def second(gw: Gateway) -> None:
        time.sleep(0.5)
        assert gw.store.count_readings() == 1

    async def main() -> list[float]:
        return [await _run(embedded, first), await _run(embedded, second)]

    gw = Gateway(embedded)
    _, secret = gw.security.add_device("pump-1")
    asyncio.run(gw.stop())
    assert asyncio.run(main()) == [0, 0]


def _stalled_first_commit(gw: Gateway) -> tuple[threading.Event, threading.Event]:
    """Hold the gateway's first commit of readings until the returned ``release`` is set
    (a slow commit: a purge, a busy PostgreSQL); ``held`` is set once it is held."""
    real = gw.store.append
    held, release = threading.Event(), threading.Event()

    def append(readings: Any, seqs: Any = None) -> Any:
        if readings and not held.is_set():
            held.set()
            release.wait(20)
        return real(readings, seqs)

    gw.store.append = append  # type: ignore[method-assign]
    return held, release


@pytest.mark.parametrize("transport", ["external", "embedded"])
def test_messages_waiting_behind_a_slow_commit_keep_their_arrival_times(
        transport: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Check SenML messages with no time, sent 0.4 s apart while a commit is held, are
    stored 0.4 s apart, at about when each was sent (old code: all four within a
    millisecond, at the time the held commit ended)."""
    if transport == "external":
        mosquitto: Mosquitto = request.getfixturevalue("mosquitto")
        settings, port, auth = _external(tmp_path, mosquitto), mosquitto.port, None
    else:
        settings = request.getfixturevalue("embedded")
        port, auth = settings.mqtt_port, ("pump-1", "")
    sent: list[int] = []

    def body(gw: Gateway) -> None:
        held, release = _stalled_first_commit(gw)

        def send(seq: int) -> None:
            sent.append(_publish(port, "edgewise/pump-1/telemetry",
                                 json.dumps([{"n": "temp", "v": 20.0 + seq, "seq": seq}]),
                                 auth=auth))

        send(1)
        assert held.wait(10)
        for seq in range(2, 6):
            time.sleep(0.4)
            send(seq)
        time.sleep(0.4)
        release.set()
        assert wait_until(lambda: gw.store.count_readings() == 5, 10)

    async def main() -> None:
        gw = Gateway(settings)
        _, secret = gw.security.add_device("pump-1")
        nonlocal auth
        if auth is not None:
            auth = ("pump-1", secret)
        await gw.start(http=False)
        try:
            await asyncio.to_thread(body, gw)
            rows = gw.store.query("pump-1", "temp")
        finally:
            await gw.stop()
        stamps = [ts for _, ts, _ in sorted(rows, key=lambda r: r[2])]
        late = [(ts - t) / 1e9 for ts, t in zip(stamps, sent, strict=True)]
        # each stamped when it reached the gateway: within 0.25 s of its sending, not
        # 0.4-1.6 s later when the held commit let the batch behind it through
        assert all(0 <= x < 0.25 for x in late), late

    asyncio.run(main())


def test_retained_messages_are_acked_counted_and_logged_once_per_device(
        caplog: pytest.LogCaptureFixture) -> None:
    """Check (no broker needed) each retained message is PUBACKed, counted under
    edgewise_messages_refused_total{reason="retained"} and never handed to the batcher,
    and that a device is warned of once, however many come."""
    from edgewise.transport.client import ExternalBroker

    counted: list[tuple[str, dict[str, str]]] = []
    b = ExternalBroker(lambda msgs: [], "mqtt://127.0.0.1:1?client_id=gw-unit",
                       count=lambda name, value=1.0, **kw: counted.append((name, kw)))
    acked: list[tuple[int, int]] = []
    b.client.ack = lambda mid, qos: acked.append((mid, qos))  # type: ignore[method-assign]
    for mid, device in ((1, "pump-1"), (2, "pump-1"), (3, "pump-2")):
        msg = mqtt.MQTTMessage(mid=mid, topic=f"edgewise/{device}/telemetry".encode())
        msg.payload, msg.qos, msg.retain = b'[{"n": "t", "v": 1}]', 1, True
        with caplog.at_level("WARNING", logger="edgewise.transport.client"):
            b._on_message(b.client, None, msg)  # no loop: handing it on would fail
    assert acked == [(1, 1), (2, 1), (3, 1)]
    assert counted == [("edgewise_messages_refused_total", {"reason": "retained"})] * 3
    warned = [r.getMessage() for r in caplog.records if "retained telemetry" in r.getMessage()]
    assert len(warned) == 2 and "edgewise/pump-1/telemetry" in warned[0], warned
