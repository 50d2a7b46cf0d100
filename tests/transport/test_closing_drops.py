"""What is dropped while a connection, or the gateway, is closing is counted as what it is.

1. Embedded broker: a dead letter or ack for a connection whose outbox was already closed
   (the connection ending while its session still reads "connected") was counted as
   ``edgewise_mqtt_deliveries_dropped_total{reason="outbox_full"}`` and logged as a
   connection "which answers too slowly". It is now neither: it goes the way of what was
   queued to that connection when it closed.
2. External broker: a QoS 0 message arriving while the gateway stops was dropped without
   being counted (a QoS 1 one is not acknowledged: the broker sends it again). It is now
   counted, ``edgewise_messages_refused_total{reason="stopping"}``.

Real brokers: the embedded one on a free port (``Running``), a private Mosquitto.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edgewise.transport.base import Message, Outcome
from edgewise.transport.client import ExternalBroker
from tests.conftest import wait_until
from tests.gateway.test_broker_limits import Running
from tests.transport.conftest import Mosquitto
from tests.transport.test_broker_hunt_s41 import OK, _login, _subscribe
from tests.transport.test_external_hunt_extmqtt import Client, _reading


def test_a_dead_letter_for_a_closing_connection_is_not_counted_as_outbox_full(
        running: Running, caplog: Any) -> None:
    """Check a dead letter for a connection whose outbox was closed (what ``logged_out``
    does first as the connection ends) while its session still reads connected is neither
    counted ``outbox_full`` nor logged as a client answering too slowly, while one to an
    open connection still goes out."""
    so, ack = _login(running.port, "dev-0", "secret-0", "closing")
    assert ack == OK
    assert _subscribe(so, "edgewise/dev-0/deadletter", 1)[:2] == b"\x90\x03"

    def close_outbox() -> str:
        session, handler = running.broker._broker._sessions["dev-0/closing"]
        handler.reader.outbox.close()  # the connection's end, as logged_out does it
        return session.transitions.state
    assert running.on_loop(close_outbox) == "connected"
    with caplog.at_level(logging.DEBUG, logger="edgewise.transport.broker"):
        for _ in range(3):
            running.run(running.broker.publish_deadletter("dev-0", {"reason": "bad_json"}))
    dropped = [labels for name, labels in running.counted
               if name == "edgewise_mqtt_deliveries_dropped_total"]
    assert dropped == [], f"a closing connection's dead letters counted as {dropped}"
    slow = [r.getMessage() for r in caplog.records if "answers too slowly" in r.getMessage()]
    assert slow == [], slow
    assert any("its connection is closing" in r.getMessage() for r in caplog.records)
    so.close()


def test_a_qos0_message_arriving_while_the_gateway_stops_is_counted(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Check a QoS 0 message that arrives while ``stop()`` waits for the commit under way
    is counted ``edgewise_messages_refused_total{reason="stopping"}`` (it was dropped
    without a trace), and nothing of it is committed."""
    entered, release = threading.Event(), threading.Event()
    got: list[int] = []
    counted: list[tuple[str, dict[str, str]]] = []

    def handler(msgs: list[Message]) -> list[Outcome]:
        entered.set()
        release.wait(20)  # the commit under way, which stop() waits for
        got.extend(json.loads(m.payload)["seq"] for m in msgs)
        return [Outcome(m.device_id, json.loads(m.payload)["seq"]) for m in msgs]

    def count(name: str, value: float = 1.0, **labels: str) -> None:
        counted.append((name, labels))

    def stopping() -> int:
        return sum(1 for n, labels in counted if n == "edgewise_messages_refused_total"
                   and labels.get("reason") == "stopping")

    async def run() -> int:
        dev = Client(mosquitto.port)
        b = ExternalBroker(handler, f"mqtt://127.0.0.1:{mosquitto.port}",
                           data_dir=tmp_path / "d", count=count)
        await b.start()
        stop: asyncio.Task[None] | None = None
        try:
            await asyncio.to_thread(dev.publish, "edgewise/pump-a/telemetry", _reading(1))
            assert await asyncio.to_thread(entered.wait, 10), "the first commit never began"
            stop = asyncio.create_task(b.stop())
            assert await asyncio.to_thread(wait_until, lambda: b._closing, 5)
            dev.c.publish("edgewise/pump-a/telemetry", _reading(2), qos=0)
            await asyncio.to_thread(wait_until, lambda: stopping() > 0, 5)
            return stopping()
        finally:
            release.set()
            await (stop if stop is not None else b.stop())
            dev.close()

    assert asyncio.run(asyncio.wait_for(run(), 40)) == 1, counted
    assert got == [1], got


def test_a_qos0_message_queued_just_as_the_stop_begins_is_counted_and_let_go(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Check a QoS 0 message that passed ``_on_message`` just before ``stop()`` began, its
    hand-over to the batcher still waiting on the loop, is refused by the batcher, counted
    ``reason="stopping"`` and no longer held: it was queued behind the batcher's end,
    never committed, and not counted."""
    got: list[int] = []
    counted: list[tuple[str, dict[str, str]]] = []

    def handler(msgs: list[Message]) -> list[Outcome]:
        got.extend(json.loads(m.payload)["seq"] for m in msgs)
        return [Outcome(m.device_id, json.loads(m.payload)["seq"]) for m in msgs]

    def count(name: str, value: float = 1.0, **labels: str) -> None:
        counted.append((name, labels))

    async def run() -> tuple[int, int]:
        dev = Client(mosquitto.port)
        b = ExternalBroker(handler, f"mqtt://127.0.0.1:{mosquitto.port}",
                           data_dir=tmp_path / "d", count=count)
        await b.start()
        try:
            # the loop held up (a long step of another task): the message is received
            # and its hand-over queued on the loop, which then runs stop() first
            dev.c.publish("edgewise/pump-a/telemetry", _reading(1), qos=0)
            assert wait_until(lambda: b.held_bytes() > 0, 5), "the message never came"
            time.sleep(0.3)  # the paho thread's call_soon_threadsafe, just after _hold
        finally:
            await b.stop()
            dev.close()
        stopping = sum(1 for n, labels in counted if n == "edgewise_messages_refused_total"
                       and labels.get("reason") == "stopping")
        return stopping, b.held_bytes()

    stopping, held = asyncio.run(asyncio.wait_for(run(), 40))
    assert got == [], got
    assert (stopping, held) == (1, 0), counted
