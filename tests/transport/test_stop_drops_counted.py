"""What ``ExternalBroker.stop()`` drops uncommitted is let go, and a QoS 0 one is counted.

A QoS 1 or 2 message dropped at a stop is not acknowledged: the broker sends it again at
the next start. A QoS 0 one is lost there (its device resends it, its ack not having
moved), so it is counted ``edgewise_messages_refused_total{reason="stopping"}`` as one
arriving during the stop already was. Three ways it was lost without a count, its bytes
still held (``held_bytes()``) after the stop:

1. one waiting for a new try after a failed commit (its retry cancelled by the stop);
2. one queued behind the commit under way (dropped by ``batcher.stop(drop_queued=True)``,
   only logged at INFO as "left unacknowledged");
3. one of the commit under way that failed during the stop: its retry was scheduled after
   the stop had cancelled the others, and outlived it.

A private Mosquitto per test.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from edgewise.errors import StoreError
from edgewise.transport.base import Handler, Message, Outcome
from edgewise.transport.client import ExternalBroker
from tests.conftest import wait_until
from tests.transport.conftest import Mosquitto
from tests.transport.test_external_hunt_extmqtt import Client, _reading

TOPIC = "edgewise/pump-a/telemetry"


class Counted:
    """The gateway's counters, as a list."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    def __call__(self, name: str, value: float = 1.0, **labels: str) -> None:
        self.seen.append((name, labels))

    def stopping(self) -> int:
        return sum(1 for n, labels in self.seen if n == "edgewise_messages_refused_total"
                   and labels.get("reason") == "stopping")


def _broker(mosquitto: Mosquitto, tmp_path: Path, handler: Handler,
            counted: Counted) -> ExternalBroker:
    # one new try, far off: a test's stop always comes before it
    return ExternalBroker(handler, f"mqtt://127.0.0.1:{mosquitto.port}",
                          data_dir=tmp_path / "d", count=counted, retry_delays=(30.0,))


def test_qos0_messages_waiting_for_a_retry_at_stop_are_counted_and_let_go(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Check a QoS 0 and a QoS 1 message whose commits failed, both waiting for their new
    try when ``stop()`` comes, are let go (``held_bytes() == 0``) and only the QoS 0 one is
    counted ``reason="stopping"``: the QoS 1 one is sent again by the broker."""
    counted = Counted()

    def handler(msgs: list[Message]) -> list[Outcome]:
        raise StoreError("the store is down (test)")

    async def run() -> tuple[int, int, int]:
        dev = Client(mosquitto.port)
        b = _broker(mosquitto, tmp_path, handler, counted)
        await b.start()
        try:
            dev.c.publish(TOPIC, _reading(1), qos=0)
            dev.c.publish(TOPIC, _reading(2), qos=1)
            assert await asyncio.to_thread(wait_until, lambda: len(b._retries) == 2, 10), \
                "the two failed commits were never scheduled for a new try"
            assert b.held_bytes() > 0
        finally:
            await b.stop()
            dev.close()
        return counted.stopping(), b.held_bytes(), len(b._retries)

    assert asyncio.run(asyncio.wait_for(run(), 40)) == (1, 0, 0), counted.seen


def test_qos0_messages_queued_behind_the_commit_at_stop_are_counted_and_let_go(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Check a QoS 0 and a QoS 1 message queued behind the commit under way when
    ``stop()`` comes (dropped, uncommitted, by ``batcher.stop(drop_queued=True)``) are let
    go and only the QoS 0 one is counted ``reason="stopping"``; the commit under way is
    finished."""
    counted = Counted()
    entered, release = threading.Event(), threading.Event()
    got: list[int] = []

    def handler(msgs: list[Message]) -> list[Outcome]:
        entered.set()
        release.wait(20)  # the commit under way, which stop() waits for
        got.extend(json.loads(m.payload)["seq"] for m in msgs)
        return [Outcome(m.device_id, json.loads(m.payload)["seq"]) for m in msgs]

    async def run() -> tuple[int, int]:
        dev = Client(mosquitto.port)
        b = _broker(mosquitto, tmp_path, handler, counted)
        await b.start()
        stop: asyncio.Task[None] | None = None
        try:
            dev.c.publish(TOPIC, _reading(1), qos=0)
            assert await asyncio.to_thread(entered.wait, 10), "the first commit never began"
            dev.c.publish(TOPIC, _reading(2), qos=0)
            dev.c.publish(TOPIC, _reading(3), qos=1)
            assert await asyncio.to_thread(wait_until, lambda: b.batcher.pending() == 2, 10), \
                "the two messages never queued behind the commit"
            stop = asyncio.create_task(b.stop())
            assert await asyncio.to_thread(wait_until, lambda: b._closing, 5)
        finally:
            release.set()
            await (stop if stop is not None else b.stop())
            dev.close()
        return counted.stopping(), b.held_bytes()

    assert asyncio.run(asyncio.wait_for(run(), 40)) == (1, 0), counted.seen
    assert got == [1], got


def test_a_qos0_message_whose_commit_fails_during_the_stop_is_counted_and_let_go(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Check a QoS 0 message of the commit that ``stop()`` waits for, that commit failing,
    is counted ``reason="stopping"`` and let go at once, no new try left scheduled: its
    retry was scheduled after the stop had cancelled the others, outlived the stop, and
    nothing counted it."""
    counted = Counted()
    entered, release = threading.Event(), threading.Event()

    def handler(msgs: list[Message]) -> list[Outcome]:
        entered.set()
        release.wait(20)
        raise StoreError("the store went down (test)")

    async def run() -> tuple[int, int, int]:
        dev = Client(mosquitto.port)
        b = _broker(mosquitto, tmp_path, handler, counted)
        await b.start()
        stop: asyncio.Task[None] | None = None
        try:
            dev.c.publish(TOPIC, _reading(1), qos=0)
            assert await asyncio.to_thread(entered.wait, 10), "the commit never began"
            stop = asyncio.create_task(b.stop())
            assert await asyncio.to_thread(wait_until, lambda: b._closing, 5)
        finally:
            release.set()
            await (stop if stop is not None else b.stop())
            dev.close()
        return counted.stopping(), b.held_bytes(), len(b._retries)

    assert asyncio.run(asyncio.wait_for(run(), 40)) == (1, 0, 0), counted.seen
