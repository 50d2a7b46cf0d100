"""External-broker (Mosquitto) hunt of session 46.

1. A device publishing at QoS 0 faster than the store commits (or while a commit is
   stalled) grew the gateway's memory without end: QoS 1 is held back by the broker
   (what it queues for the gateway's session: Mosquitto's ``max_queued_messages``, 1,000),
   QoS 0 is not, and every QoS 0 message
   was queued whole for its commit (286 MiB sent during a 10 s stalled commit: 124 MiB
   held by the gateway, and growing with what is sent). A QoS 0 message of a device that
   holds its quarter of ``max_queued_bytes`` (64 MiB by default) is dropped on arrival and
   counted; another device's still goes through.
2. A stop committed the whole backlog queued behind the commit under way before it
   disconnected, and that commit had taken everything queued behind the one before it
   (Mosquitto sends its whole queue for the gateway once the in-flight window frees):
   1,000 messages of 250 readings, SIGINT 3 s later, 706 more committed and detected, a
   19-27 s stop, past ``docker stop``'s 10 s. A stop finishes the commit under way only,
   a commit takes at most 1 MiB of payload, and the broker sends the rest again at the
   next start.
3. A broker that closes the connection on a publish its ACL refuses (HiveMQ, EMQX with
   ``deny_action = disconnect``, AWS IoT), with the gateway's user not let to write acks,
   cut the gateway off at its first ack and again at every reconnect (paho resends the
   ack): nothing more was received for any device, and the log said 46 times in 8 s that
   the broker "closed the connection without answering the MQTT CONNECT" (is the port a
   TLS listener?) and then warned of a session takeover. One error now names the ack topic
   and the broker's ACL (ingest stays stopped until the broker lets the gateway write
   acks: that is the broker's to change).

A private Mosquitto per test (skipped where the binary is absent).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgewise.transport.base import Message, Outcome
from edgewise.transport.client import ExternalBroker
from tests.conftest import wait_until
from tests.transport.conftest import CutProxy, Mosquitto


def _publisher(port: int, client_id: str) -> mqtt.Client:
    """A plain MQTT client with no bound of its own on what it sends."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_a_qos0_flood_while_the_commit_stalls_is_bounded(mosquitto: Mosquitto) -> None:
    """Check that a device flooding 24 MB at QoS 0 while the store's commit is stalled
    makes the gateway hold at most its quarter of the 64 MiB default (16 MiB, plus one
    message), that the rest is counted as refused ``overloaded``, that another device's
    QoS 0 message sent meanwhile is still committed, and that the flooding device's
    messages are taken again once the commit is done (before: all 24 MB held)."""
    release = threading.Event()
    handled: dict[str, int] = {}
    lock = threading.Lock()

    def handler(messages: list[Message]) -> list[Outcome]:  # a stalled store, then a fast one
        release.wait(60)
        with lock:
            for m in messages:
                handled[m.device_id] = handled.get(m.device_id, 0) + len(m.payload)
        return [Outcome(m.device_id, None) for m in messages]

    counted: dict[str, float] = {}

    def count(name: str, value: float = 1.0, **labels: str) -> None:
        key = f"{name}{sorted(labels.items())}"
        counted[key] = counted.get(key, 0) + value

    size, n = 100_000, 240  # 24 MB from one device
    refused = "edgewise_messages_refused_total[('reason', 'overloaded')]"

    async def main() -> None:
        ext = ExternalBroker(handler, f"mqtt://127.0.0.1:{mosquitto.port}"
                             f"?client_id=gw-{uuid.uuid4().hex[:8]}", count=count)
        await ext.start()
        flood = _publisher(mosquitto.port, "d1-flood")
        other = _publisher(mosquitto.port, "d2-quiet")
        try:
            body = b"x" * size
            infos = [flood.publish("edgewise/d1/telemetry", body, qos=0) for _ in range(n)]
            # everything handed to the broker (QoS 0: written out), then the gateway's share
            assert await asyncio.to_thread(
                wait_until, lambda: all(i.is_published() for i in infos), 30)
            other.publish("edgewise/d2/telemetry", b"y" * 1000, qos=0).wait_for_publish(10)
            await asyncio.sleep(1.0)  # what Mosquitto still buffers reaches the gateway
            release.set()
            await asyncio.to_thread(wait_until, lambda: ext.batcher.pending() == 0, 30)
            await asyncio.sleep(0.5)  # the last batch's commit is done
            with lock:
                held_d1 = handled.get("d1", 0)
            assert handled.get("d2") == 1000, handled
            assert held_d1 <= 16 * 2**20 + size, (
                f"the gateway held {held_d1} bytes of one device's QoS 0 messages during a "
                f"stalled commit ({n * size} sent); at most 16 MiB and one message may be")
            assert counted.get(refused, 0) >= (n * size - held_d1) // size - 1, counted
            # the commit done, the device's QoS 0 messages are taken again
            flood.publish("edgewise/d1/telemetry", b"z" * 10, qos=0).wait_for_publish(10)
            assert await asyncio.to_thread(
                wait_until, lambda: handled.get("d1", 0) == held_d1 + 10, 10), handled
            assert ext.held_bytes() == 0
        finally:
            release.set()
            for c in (flood, other):
                c.disconnect()
                c.loop_stop()
            await ext.stop()

    t0 = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - t0 < 60


def test_qos1_messages_are_never_dropped_for_room(mosquitto: Mosquitto) -> None:
    """Check that the bound drops QoS 0 only: QoS 1 messages over it (a bound of 4 bytes
    here) are each committed, the broker holding back what is not PUBACKed."""
    got: list[bytes] = []

    def handler(messages: list[Message]) -> list[Outcome]:
        got.extend(m.payload for m in messages)
        time.sleep(0.05)
        return [Outcome(m.device_id, None) for m in messages]

    async def main() -> None:
        ext = ExternalBroker(handler, f"mqtt://127.0.0.1:{mosquitto.port}"
                             f"?client_id=gw-{uuid.uuid4().hex[:8]}", max_queued_bytes=4)
        await ext.start()
        dev = _publisher(mosquitto.port, "d1-qos1")
        try:
            infos: list[Any] = [dev.publish("edgewise/d1/telemetry", b"%03d" % i, qos=1)
                                for i in range(100)]
            assert await asyncio.to_thread(wait_until, lambda: len(got) == 100, 30), len(got)
            assert all(i.is_published() for i in infos)
            assert sorted(got) == [b"%03d" % i for i in range(100)]
        finally:
            dev.disconnect()
            dev.loop_stop()
            await ext.stop()

    asyncio.run(main())


def test_a_stop_does_not_commit_the_backlog_and_the_broker_sends_it_again(
        mosquitto: Mosquitto) -> None:
    """Check that a stop finishes only the commit under way: the messages queued behind
    it are neither committed nor PUBACKed then, and the broker sends them to the next
    start, which commits each (before: the stop committed the whole backlog first)."""
    first_in, release = threading.Event(), threading.Event()
    seen: list[bytes] = []

    def held(messages: list[Message]) -> list[Outcome]:  # the first commit waits
        seen.extend(m.payload for m in messages)
        first_in.set()
        release.wait(20)
        return [Outcome(m.device_id, None) for m in messages]

    url = f"mqtt://127.0.0.1:{mosquitto.port}?client_id=gw-{uuid.uuid4().hex[:8]}"
    n = 30

    async def first_run() -> list[bytes]:
        ext = ExternalBroker(held, url)
        await ext.start()
        dev = _publisher(mosquitto.port, "d1-stop")
        try:
            dev.publish("edgewise/d1/telemetry", b"000", qos=1)
            assert await asyncio.to_thread(first_in.wait, 10)
            for i in range(1, n):
                dev.publish("edgewise/d1/telemetry", b"%03d" % i, qos=1)
            # the first commit PUBACKed nothing yet: the broker sends the next 19 of its
            # in-flight window, queued behind that commit
            assert await asyncio.to_thread(
                wait_until, lambda: ext.batcher.pending() >= 10, 10), ext.batcher.pending()
            stopping = asyncio.create_task(ext.stop())
            await asyncio.sleep(0.3)
            release.set()
            await asyncio.wait_for(stopping, 15)
            return list(seen)
        finally:
            release.set()
            dev.disconnect()
            dev.loop_stop()
            await ext.stop()

    during = asyncio.run(first_run())
    assert during == [b"000"], (
        f"the stop committed {len(during) - 1} queued messages behind the commit under way")

    again: list[bytes] = []

    def fast(messages: list[Message]) -> list[Outcome]:
        again.extend(m.payload for m in messages)
        return [Outcome(m.device_id, None) for m in messages]

    async def second_run() -> None:
        ext = ExternalBroker(fast, url)
        await ext.start()
        try:
            assert await asyncio.to_thread(wait_until, lambda: len(set(again)) == n - 1, 15), (
                f"{len(set(again))} of the {n - 1} uncommitted messages sent again")
            await asyncio.sleep(0.5)
        finally:
            await ext.stop()

    asyncio.run(second_run())
    # the first message was committed and PUBACKed: the broker does not send it again
    assert sorted(set(again)) == [b"%03d" % i for i in range(1, n)], sorted(set(again))



def test_a_commit_takes_at_most_a_mebibyte_of_the_backlog(mosquitto: Mosquitto) -> None:
    """Check that a backlog of large messages is committed in batches of at most 1 MiB of
    payload (plus one message), so that the commit a stop waits for stays short: the
    commit after a held one took every message queued behind it (here 19 of 200 kB)."""
    first_in, release = threading.Event(), threading.Event()
    batches: list[int] = []

    def handler(messages: list[Message]) -> list[Outcome]:
        batches.append(sum(len(m.payload) for m in messages))
        first_in.set()
        release.wait(20)
        return [Outcome(m.device_id, None) for m in messages]

    size, n = 200_000, 20

    async def main() -> None:
        ext = ExternalBroker(handler, f"mqtt://127.0.0.1:{mosquitto.port}"
                             f"?client_id=gw-{uuid.uuid4().hex[:8]}")
        await ext.start()
        dev = _publisher(mosquitto.port, "d1-big")
        try:
            dev.publish("edgewise/d1/telemetry", b"a" * size, qos=1)
            assert await asyncio.to_thread(first_in.wait, 10)
            for _ in range(1, n):
                dev.publish("edgewise/d1/telemetry", b"b" * size, qos=1)
            assert await asyncio.to_thread(
                wait_until, lambda: ext.batcher.pending() == n - 1, 10), ext.batcher.pending()
            release.set()
            assert await asyncio.to_thread(wait_until, lambda: sum(batches) == n * size, 10)
        finally:
            release.set()
            dev.disconnect()
            dev.loop_stop()
            await ext.stop()

    asyncio.run(main())
    assert max(batches) <= 2**20 + size, batches


@pytest.fixture
def acl_cut(mosquitto: Mosquitto) -> Iterator[CutProxy]:
    p = CutProxy(mosquitto.port, 3, b"/ack")  # a PUBLISH on an ack topic
    try:
        yield p
    finally:
        p.close()


def test_a_broker_closing_the_connection_on_the_ack_is_named_once(
        mosquitto: Mosquitto, acl_cut: CutProxy, caplog: pytest.LogCaptureFixture) -> None:
    """Check that a broker that closes the gateway's connection at each of its acks (and
    at the same ack sent again after each reconnect) is reported in one error naming the
    ack topic and the broker's ACL, and not as a TLS port spoken to in clear (46 warnings
    in 8 s before) nor as a session takeover."""

    def handler(messages: list[Message]) -> list[Outcome]:
        return [Outcome(m.device_id, 1) for m in messages]

    async def main() -> None:
        ext = ExternalBroker(handler, f"mqtt://127.0.0.1:{acl_cut.port}"
                             f"?client_id=gw-{uuid.uuid4().hex[:8]}")
        await ext.start()
        dev = _publisher(mosquitto.port, "d1-acl")
        try:
            dev.publish("edgewise/d1/telemetry", b"{}", qos=1)
            assert await asyncio.to_thread(wait_until, lambda: acl_cut.cuts >= 5, 20), (
                f"{acl_cut.cuts} connections closed on the ack")
            await asyncio.sleep(1.0)
        finally:
            dev.disconnect()
            dev.loop_stop()
            await ext.stop()

    with caplog.at_level(logging.WARNING, logger="edgewise.transport.client"):
        asyncio.run(main())
    records = [r for r in caplog.records if r.name == "edgewise.transport.client"]
    named = [r.getMessage() for r in records if "'edgewise/d1/ack'" in r.getMessage()]
    assert len(named) == 1 and "ACL" in named[0] and "edgewise/+/ack" in named[0], named
    assert named[0] == next(r.getMessage() for r in records if r.levelno >= logging.ERROR)
    wrong = [r.getMessage() for r in records
             if "TLS listener" in r.getMessage() or "client id" in r.getMessage()]
    assert wrong == [], wrong[:2]
    assert len(records) <= 4, [r.getMessage()[:100] for r in records]


def test_the_queued_bytes_setting_reaches_the_external_broker(tmp_path: Path) -> None:
    """Check EDGEWISE_MQTT_MAX_QUEUED_BYTES bounds an external broker's QoS 0 queue too (the
    gateway made it with the 64 MiB default whatever the setting), and unset is 64 MiB."""
    from edgewise.config import Settings
    from edgewise.gateway.runtime import Gateway

    for env, want in (({"EDGEWISE_MQTT_MAX_QUEUED_BYTES": "8388608"}, 8 * 2**20), ({}, 64 * 2**20)):
        settings = Settings.load(env={**env, "EDGEWISE_MQTT": "mqtt://127.0.0.1:9"},
                                 data_dir=tmp_path / str(want))
        gw = Gateway(settings)
        try:  # made, not started: nothing connects
            transport = gw.make_transport()
            assert (transport.max_queued_bytes, transport.max_device_bytes) == (want, want // 4)
        finally:
            gw._close_opened()
