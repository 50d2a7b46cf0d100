"""An outbox's queued ack is never replaced by an older one (lower seq).

The embedded broker's ``ack_subscriber`` looks a device's watermark up on a thread; a
commit may queue a newer ack meanwhile. With the connection's window full, the ack of the
lookup that ended late used to replace the queued newer one, so the device got the older
watermark and waited for the next commit to learn the newer one.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from edgewise.transport._outgoing import Outbox
from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import wait_until
from tests.gateway.test_broker_limits import Running
from tests.transport.test_broker_hunt_s41 import OK, _login, _publish0, _subscribe


def test_a_late_watermark_ack_does_not_replace_a_newer_queued_ack() -> None:
    async def scenario() -> list[bytes]:
        sent: list[bytes] = []
        gate = asyncio.Event()

        async def send(topic: str, data: bytes, qos: int) -> None:
            sent.append(data)
            await gate.wait()  # the client has not answered PUBACK yet: the window is full

        box = Outbox(send, window=1, limit_bytes=10_000)
        assert box.put("edgewise/d1/deadletter", b"dl", 1)
        await asyncio.sleep(0)
        assert box.put("edgewise/d1/ack", b'{"seq": 9}', 1, ack=True)  # a commit's ack
        assert box.put("edgewise/d1/ack", b'{"seq": 4}', 1, ack=True)  # the late lookup's
        gate.set()
        while len(box):
            await asyncio.sleep(0)
        return sent

    assert asyncio.run(scenario()) == [b"dl", b'{"seq": 9}']


def test_a_newer_ack_still_replaces_the_queued_one_and_its_charge_follows() -> None:
    async def scenario() -> tuple[list[bytes], int]:
        sent: list[bytes] = []
        gate = asyncio.Event()

        async def send(topic: str, data: bytes, qos: int) -> None:
            sent.append(data)
            await gate.wait()

        box = Outbox(send, window=1, limit_bytes=10_000)
        box.put("edgewise/d1/deadletter", b"dl", 1)
        await asyncio.sleep(0)
        box.put("edgewise/d1/ack", b'{"seq": 4}', 1, ack=True)
        box.put("edgewise/d1/ack", b'{"seq": 12}', 1, ack=True)
        gate.set()
        while len(box):
            await asyncio.sleep(0)
        return sent, box.charged

    assert asyncio.run(scenario()) == ([b"dl", b'{"seq": 12}'], 0)


def test_the_embedded_brokers_late_watermark_ack_leaves_the_commits_newer_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on the embedded broker: a device subscribes to its ack topic (its watermark
    lookup, 4, is slow), its connection's window is full (a dead letter it has not
    PUBACKed), a commit queues ack 9, then the lookup ends: ack 9 stays queued."""
    monkeypatch.setattr(EmbeddedBroker, "OUTBOX_WINDOW", 1)  # sized at the CONNECT
    release = threading.Event()

    def watermark(device: str) -> int:
        release.wait(10)
        return 4

    r = Running(watermark=watermark)
    try:
        deaf, ok = _login(r.port, "dev-0", "secret-0", "deaf")
        sender, ok2 = _login(r.port, "dev-0", "secret-0", "sender")
        assert (ok, ok2) == (OK, OK)
        assert _subscribe(deaf, "edgewise/dev-0/deadletter", 1)[:2] == b"\x90\x03"
        assert _subscribe(deaf, "edgewise/dev-0/ack", 1)[:2] == b"\x90\x03"  # lookup waits
        sender.sendall(_publish0("edgewise/dev-0/elsewhere"))  # a dead letter, never acked

        def outbox() -> Any:
            return r.broker._broker._sessions["dev-0/deaf"][1].reader.outbox

        assert wait_until(lambda: r.on_loop(lambda: len(outbox().in_flight)) == 1, 10)
        r.run(r.broker.publish_ack("dev-0", 9))  # as after a commit: queued
        release.set()
        assert wait_until(lambda: r.on_loop(lambda: "dev-0" not in r.broker._acking), 10)
        queued = r.on_loop(lambda: [entry[1] for entry in outbox().queue])
        assert queued == [b'{"seq": 9}'], queued
        for so in (deaf, sender):
            so.close()
    finally:
        release.set()
        r.stop()
