"""External-broker (Mosquitto) hunt.

1. A committed message is always PUBACKed. The device registry's lookup made after a
   commit (is the device still registered, before its retained ack goes out) raising (the
   registry's SQLite locked or failing) ended ``_after_commit`` before its PUBACKs: the
   committed messages held the broker's in-flight slots of the gateway's session
   (Mosquitto: 20, then nothing more was sent for any device) and were sent again, and
   committed again, at the next connect.
2. ``forget_device`` on the gateway's loop while the broker was away raised paho's
   ``RuntimeError`` for the clear it had queued.

A private Mosquitto per test (skipped where the binary is absent).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from edgewise.transport.base import Message, Outcome
from edgewise.transport.client import ExternalBroker
from tests.conftest import wait_until
from tests.transport.conftest import Mosquitto, Proxy
from tests.transport.test_external_hunt_extmqtt import Client, _reading


def test_a_failing_registry_lookup_after_a_commit_still_pubacks_the_batch(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    got: list[int] = []
    registry_down = False

    def handler(msgs: list[Message]) -> list[Outcome]:
        nonlocal registry_down
        got.extend(json.loads(m.payload)["seq"] for m in msgs)
        registry_down = True  # from here on, the lookup before the ack fails
        return [Outcome(m.device_id, json.loads(m.payload)["seq"]) for m in msgs]

    def known(device: str) -> bool:
        if registry_down:
            raise sqlite3.OperationalError("database is locked")
        return device == "pump-a"

    url = f"mqtt://127.0.0.1:{mosquitto.port}"

    async def run() -> None:
        dev = Client(mosquitto.port)
        try:
            b = ExternalBroker(handler, url, data_dir=tmp_path / "d", known_device=known)
            await b.start()
            try:
                await asyncio.to_thread(dev.publish, "edgewise/pump-a/telemetry", _reading(1))
                assert await asyncio.to_thread(wait_until, lambda: got == [1], 5), got
                await asyncio.sleep(0.5)  # the PUBACK's way to the broker
            finally:
                await b.stop()
            # the same session again: a message not PUBACKed is sent again now
            b = ExternalBroker(handler, url, data_dir=tmp_path / "d",
                               known_device=lambda d: True)
            await b.start()
            try:
                await asyncio.sleep(1.0)
            finally:
                await b.stop()
        finally:
            dev.close()

    asyncio.run(asyncio.wait_for(run(), 40))
    assert got == [1], f"committed message sent again (never PUBACKed): {got}"


def test_forget_device_on_the_loop_while_the_broker_is_away_queues_the_clear(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """``forget_device`` called on the gateway's event loop while the connection was down
    raised paho's ``RuntimeError`` ("The client is not currently connected") for the
    clear it had queued: it says ``False`` (not confirmed), and the clear goes out once
    the gateway reconnects."""
    proxy = Proxy(mosquitto.port)
    ack_topic = "edgewise/pump-a/ack"
    setter = Client(mosquitto.port)
    setter.c.publish(ack_topic, b'{"seq": 3}', qos=1, retain=True).wait_for_publish(10)
    setter.close()

    def handler(msgs: list[Message]) -> list[Outcome]:
        return [Outcome(m.device_id, None) for m in msgs]

    async def run() -> bool:
        b = ExternalBroker(handler, f"mqtt://127.0.0.1:{proxy.port}",
                           data_dir=tmp_path / "d")
        await b.start()
        try:
            proxy.cut()
            assert await asyncio.to_thread(
                wait_until, lambda: not b.client.is_connected(), 5)
            confirmed = b.forget_device("pump-a")  # on the loop
            proxy.restore()
            assert await asyncio.to_thread(wait_until, b.client.is_connected, 10)
            await asyncio.sleep(0.5)
            return confirmed
        finally:
            await b.stop()

    try:
        assert asyncio.run(asyncio.wait_for(run(), 40)) is False
    finally:
        proxy.close()
    reader = Client(mosquitto.port, subscribe=ack_topic)
    time.sleep(0.5)
    reader.close()
    assert reader.got == [], f"the retained ack was not cleared: {reader.got}"
