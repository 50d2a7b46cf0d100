"""External-broker mode (Mosquitto) when commits fail: the gateway's session must never
stall (each unacked message holds one of Mosquitto's 20 in-flight slots; with 20 held it
sent the gateway nothing more, for every device, until a restart), and a PUBACK must only
ever acknowledge the message it was meant for."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

from edgewise.config import Settings
from edgewise.gateway.runtime import Gateway
from edgewise.transport.client import ExternalBroker
from tests.conftest import wait_until
from tests.transport.conftest import Mosquitto, Proxy

T0 = time.time() - 600


class Device:
    """A plain MQTT device on the private Mosquitto: records acks and dead letters."""

    def __init__(self, port: int, device_id: str) -> None:
        self.id = device_id
        self.acks: list[int] = []
        self.dead: list[dict[str, Any]] = []
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=f"{device_id}-{uuid.uuid4().hex[:6]}")

        def on_connect(cl: mqtt.Client, u: Any, f: Any, rc: Any, p: Any = None) -> None:
            cl.subscribe([(f"edgewise/{device_id}/ack", 1),
                          (f"edgewise/{device_id}/deadletter", 1)])

        def on_subscribe(cl: mqtt.Client, *a: Any) -> None:
            self.ready.set()

        def on_message(cl: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            if msg.topic.endswith("/ack"):
                self.acks.append(json.loads(msg.payload)["seq"])
            else:
                self.dead.append(json.loads(msg.payload))

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert self.ready.wait(10)
        self.c = c

    def send(self, seq: int) -> None:
        self.c.publish(f"edgewise/{self.id}/telemetry",
                       json.dumps({"ts": T0 + seq, "metrics": {"a": seq}, "seq": seq}), qos=1)

    def acked(self, seq: int) -> Callable[[], bool]:
        return lambda: bool(self.acks) and self.acks[-1] >= seq

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _rows(gw: Gateway, device: str) -> int:
    """Readings of ``device`` in the store; the first read after the outage may find the
    store's read connection closed by the cut (the store's to reconnect), so try thrice."""
    for _ in range(2):
        try:
            return len(gw.store.query(device, "a"))
        except Exception:
            time.sleep(0.2)
    return len(gw.store.query(device, "a"))


def _run_outage(tmp_path: Path, mosquitto: Mosquitto, pg_proxy: Proxy, postgres_url: str,
                retry_delays: tuple[float, ...] | None, outage_s: float,
                after: Callable[[Device, Device, Gateway], None]) -> None:
    schema = "t_ext_" + uuid.uuid4().hex[:8]
    settings = Settings(
        data_dir=tmp_path / "ew",
        store=f"postgresql://postgres@127.0.0.1:{pg_proxy.port}/test?schema={schema}",
        mqtt=f"mqtt://127.0.0.1:{mosquitto.port}?client_id=gw-{schema}")

    async def main() -> None:
        gw = Gateway(settings)
        for name in ("x1", "x2"):
            gw.security.add_device(name)
        await gw.start(http=False)
        x1, x2 = Device(mosquitto.port, "x1"), Device(mosquitto.port, "x2")
        try:
            if retry_delays is not None:
                gw.transport.retry_delays = retry_delays  # type: ignore[union-attr]
            for s in range(1, 4):
                x1.send(s)
            assert await asyncio.to_thread(wait_until, x1.acked(3), 10)
            pg_proxy.cut()
            for s in range(4, 29):
                x1.send(s)
            await asyncio.sleep(outage_s)
            pg_proxy.restore()
            await asyncio.to_thread(after, x1, x2, gw)
        finally:
            x1.close()
            x2.close()
            await gw.stop()

    try:
        asyncio.run(main())
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_short_store_outage_loses_nothing_and_ingest_goes_on(
        tmp_path: Path, mosquitto: Mosquitto, pg_proxy: Proxy, postgres_url: str) -> None:
    """Check that after a store outage shorter than the retries, every message sent during
    it is stored and acked without the device resending, and another device that sends
    only afterwards is acked (before, 20 failed commits held every in-flight slot and
    Mosquitto sent the gateway nothing more: x1 stayed at ack 3, x2 got no ack)."""

    def after(x1: Device, x2: Device, gw: Gateway) -> None:
        for s in range(1, 4):
            x2.send(s)
        assert wait_until(lambda: x1.acked(28)() and x2.acked(3)(), 25), (
            f"x1 acks end {x1.acks[-1:]}, x2 acks {x2.acks}")
        assert _rows(gw, "x1") == 28
        assert _rows(gw, "x2") == 3
        assert x1.dead == []

    _run_outage(tmp_path, mosquitto, pg_proxy, postgres_url, None, 1.0, after)


def test_a_long_store_outage_dead_letters_and_the_device_resends(
        tmp_path: Path, mosquitto: Mosquitto, pg_proxy: Proxy, postgres_url: str) -> None:
    """Check that a message that still cannot be stored after the last retry is PUBACKed
    and dead-lettered (store_error) to its device, which resends it by seq; ingest goes
    on for every device."""

    def after(x1: Device, x2: Device, gw: Gateway) -> None:
        assert len(x1.dead) >= 20, f"{len(x1.dead)} dead letters"
        assert {d["reason"] for d in x1.dead} == {"store_error"}
        assert "Send it again later" in x1.dead[0]["detail"]
        assert wait_until(lambda: len(x1.dead) == 25, 10), f"{len(x1.dead)} dead letters"
        for s in range(4, 31):  # x1 resends what is not acked, and goes on
            x1.send(s)
        for s in range(1, 4):
            x2.send(s)
        assert wait_until(lambda: x1.acked(30)() and x2.acked(3)(), 20), (
            f"x1 acks end {x1.acks[-1:]}, x2 acks {x2.acks}")
        assert _rows(gw, "x1") == 30

    # retries of 0.2 s: the outage (6 s) outlasts them, the 25 messages are given up
    _run_outage(tmp_path, mosquitto, pg_proxy, postgres_url, (0.2, 0.2), 6.0, after)


def test_no_puback_of_an_old_connection_acks_a_message_of_the_new_one(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Check that a message committed after its connection was replaced is not PUBACKed
    on the new one: after Mosquitto restarted (no persistence: the gateway's new session
    numbers messages from 1 again), the PUBACK of the old message 1 acknowledged the new
    message 1 before it was committed, and a gateway that then died lost it from the
    broker."""
    first_in, release_first, hold_second = threading.Event(), threading.Event(), threading.Event()
    seen: list[bytes] = []
    gw = Gateway(Settings(data_dir=tmp_path / "ew"))
    gw.security.add_device("x1")

    def handler(messages: list[Any]) -> list[Any]:  # the gateway's commit, held in the test
        seen.extend(m.payload for m in messages)
        if len(seen) == 1:
            first_in.set()
            assert release_first.wait(20)
        else:
            hold_second.wait(20)
        return gw.handle(messages)

    client_id = f"gw-{uuid.uuid4().hex[:8]}"
    redelivered: list[bytes] = []

    async def main() -> None:
        ext = ExternalBroker(handler, f"mqtt://127.0.0.1:{mosquitto.port}?client_id={client_id}",
                             known_device=gw.security.has_device)
        reconnected = threading.Event()
        on_connect = ext.client.on_connect

        def hooked(*args: Any) -> None:
            on_connect(*args)
            reconnected.set()

        await ext.start()
        ext.client.on_connect = hooked
        x1 = Device(mosquitto.port, "x1")
        try:
            x1.send(1)
            assert await asyncio.to_thread(first_in.wait, 10)
            x1.close()
            mosquitto.stop()  # a restart: the broker forgets the gateway's session
            mosquitto.start()
            assert await asyncio.to_thread(reconnected.wait, 15)
            await asyncio.sleep(0.3)  # its SUBSCRIBE is in
            x1 = Device(mosquitto.port, "x1")
            x1.send(2)  # the new session's message 1
            assert await asyncio.to_thread(wait_until, lambda: ext.batcher.pending() == 1, 10)
            release_first.set()  # the old message 1 commits; the new one waits
            assert await asyncio.to_thread(wait_until, lambda: len(seen) == 2, 10)
            await asyncio.sleep(0.5)  # any PUBACK the gateway sent is at the broker
            ext.client.loop_stop()  # the gateway dies before the new message commits

            # who takes the session over gets what the broker still holds unacked
            got = threading.Event()
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                            clean_session=False)

            def on_message(cl: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
                redelivered.append(msg.payload)
                got.set()

            c.on_message = on_message
            c.connect("127.0.0.1", mosquitto.port)
            c.loop_start()
            await asyncio.to_thread(got.wait, 3)
            c.disconnect()
            c.loop_stop()
        finally:
            release_first.set()
            hold_second.set()
            x1.close()
            await ext.stop()
            await gw.stop()

    asyncio.run(main())
    assert [json.loads(p)["seq"] for p in redelivered] == [2], (
        "the broker no longer holds the uncommitted message: a PUBACK of the old "
        "connection acknowledged it")
