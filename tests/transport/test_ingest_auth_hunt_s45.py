"""The embedded broker's device authentication and topic ACL, checked by a hunt (session
45) against a real broker (in a thread of this process, on a free port) and a real
credential store (:class:`~edgewise.security.credentials.Security`), with raw MQTT sockets.
Nothing here failed: these hold what the hunt checked, with the gateway's own credential
functions rather than a stand-in.

* a CONNECT is refused (CONNACK 5) without a user name, without a password, with a wrong
  or empty one, with another device's secret, and with a user name that only looks like
  the device's (case, a trailing NUL or space, a Unicode hyphen, full-width letters);
* a device's PUBLISH to any topic but its own telemetry topic (another device's, with
  ``+``/``#``, ``..``, a NUL, a trailing ``/``, its own ack) stores nothing;
* a device may subscribe to its own ack and dead-letter topics only (SUBACK 0x80 for
  ``#``, ``edgewise/+/ack``, another device's topics, ``$SYS/#``, its own telemetry);
* a live connection's credentials rotated or deleted in the store (as another process
  does) close it within the revocation poll, and what it sent meanwhile is not stored.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.security.credentials import Security
from edgewise.transport.base import Message, Outcome
from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import free_port, wait_until
from tests.gateway.test_broker_limits import _length, _recv, _s

OK, REFUSED = b"\x20\x02\x00\x00", b"\x20\x02\x00\x05"


class Live:
    """An :class:`EmbeddedBroker` on its own loop thread, authenticating against a real
    :class:`Security` with devices ``dev-a`` and ``dev-b``."""

    def __init__(self, data_dir: Path, consumer: str) -> None:
        self.sec = Security(data_dir)
        self.secret = {d: self.sec.add_device(d)[1] for d in ("dev-a", "dev-b")}
        self.received: list[Message] = []
        self.port = free_port()

        def handle(messages: list[Message]) -> list[Outcome]:
            self.received.extend(messages)
            return [Outcome(m.device_id) for m in messages]

        self.broker = EmbeddedBroker(handle, self.sec.device_credential, port=self.port,
                                     credential_tags=self.sec.credential_tags,
                                     consumer=consumer)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.broker.start())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def stored(self) -> list[tuple[str, bytes]]:
        """What reached the handler as telemetry (not a refused PUBLISH's seqs)."""
        return [(m.device_id, m.payload) for m in self.received if b'"ts"' in m.payload]

    def stop(self) -> None:
        self.run(self.broker.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.sec.close()


@pytest.fixture(params=["plugin", "subscriber"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    r = Live(tmp_path, request.param)
    yield r
    r.stop()


def _connect(port: int, user: bytes | None, password: bytes | None,
             client_id: str = "c1") -> tuple[socket.socket, bytes]:
    so = socket.socket()
    so.settimeout(5)
    so.connect(("127.0.0.1", port))
    flags, payload = 0x02, _s(client_id.encode())
    if user is not None:
        flags, payload = flags | 0x80, payload + _s(user)
    if password is not None:
        flags, payload = flags | 0x40, payload + _s(password)
    body = _s(b"MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + payload
    so.sendall(b"\x10" + _length(len(body)) + body)
    return so, _recv(so, 4)


def _publish1(so: socket.socket, topic: bytes, payload: bytes, packet_id: int) -> None:
    variable = _s(topic) + packet_id.to_bytes(2, "big")
    so.sendall(b"\x32" + _length(len(variable) + len(payload)) + variable + payload)


def _packets(so: socket.socket, quiet_s: float = 1.0) -> list[tuple[int, bytes]]:
    """Every packet that comes until none has for ``quiet_s``."""
    got = []
    so.settimeout(quiet_s)
    while True:
        try:
            first = _recv(so, 1)
        except (TimeoutError, OSError):
            return got
        n = shift = 0
        while True:
            digit = _recv(so, 1)[0]
            n |= (digit & 0x7F) << shift
            shift += 7
            if not digit & 0x80:
                break
        got.append((first[0], _recv(so, n)))


def _telemetry(seq: int) -> bytes:
    return json.dumps({"ts": time.time(), "metrics": {"t": 1.0}, "seq": seq}).encode()


def test_only_the_device_with_its_own_secret_connects(live: Live) -> None:
    a, b = live.secret["dev-a"].encode(), live.secret["dev-b"].encode()
    for user, password in [(None, None), (b"dev-a", None), (b"dev-a", b"wrong"),
                           (b"dev-a", b""), (b"dev-a", b), (b"dev-z", a), (b"DEV-A", a),
                           (b"dev-a\x00", a), (b"dev-a ", a), ("dev\u2010a".encode(), a),
                           ("ｄｅｖ-a".encode(), a), (b"dev-a", a + b"\x00"),
                           (b"dev-a", a + b"\xff"), (b"__gateway__", a)]:
        so, answer = _connect(live.port, user, password)
        so.close()
        assert answer == REFUSED, (user, password)
    so, answer = _connect(live.port, b"dev-a", a)
    so.close()
    assert answer == OK


def test_a_device_publishes_only_to_its_own_telemetry_topic(live: Live) -> None:
    so, answer = _connect(live.port, b"dev-a", live.secret["dev-a"].encode())
    assert answer == OK
    topics = [b"edgewise/dev-b/telemetry", b"edgewise/+/telemetry", b"edgewise/#",
              b"edgewise/dev-a/telemetry/", b"edgewise/dev-a/telemetry\x00",
              b"edgewise/dev-a/../dev-b/telemetry", b"edgewise//dev-a/telemetry",
              b"Edgewise/dev-a/telemetry", "edgewise/dev\u2010a/telemetry".encode(),
              b"edgewise/dev-a/ack", b"edgewise/dev-b/ack", b"$SYS/x", b"x" * 60_000]
    for i, name in enumerate(topics, start=1):
        _publish1(so, name, _telemetry(i), i)
    pubacks = [p for p in _packets(so) if p[0] == 0x40]
    assert len(pubacks) == len(topics)  # each acknowledged (so not resent) and refused
    assert live.stored() == []
    _publish1(so, b"edgewise/dev-a/telemetry", _telemetry(99), 99)
    assert wait_until(lambda: len(live.stored()) == 1, 5)
    assert live.stored()[0][0] == "dev-a"
    so.close()


def test_a_device_subscribes_only_to_its_own_ack_and_dead_letters(live: Live) -> None:
    so, answer = _connect(live.port, b"dev-a", live.secret["dev-a"].encode())
    assert answer == OK
    filters = {"#": 0x80, "edgewise/#": 0x80, "edgewise/+/ack": 0x80, "+/+/+": 0x80,
               "edgewise/dev-b/ack": 0x80, "edgewise/dev-b/deadletter": 0x80,
               "$SYS/#": 0x80, "edgewise/dev-a/+": 0x80, "edgewise/dev-a/#": 0x80,
               "edgewise/dev-a/telemetry": 0x80, "edgewise/+/telemetry": 0x80,
               "edgewise/dev-a/ack": 0x01, "edgewise/dev-a/deadletter": 0x01}
    # every SUBSCRIBE sent, then one quiet half second for all the SUBACKs (not half a
    # second after each): one SUBACK each, in order, with its filter's code
    for i, name in enumerate(filters, start=1):
        body = i.to_bytes(2, "big") + _s(name.encode()) + b"\x01"
        so.sendall(b"\x82" + _length(len(body)) + body)
    subacks = [p for p in _packets(so, 0.5) if p[0] == 0x90]
    want = [(0x90, i.to_bytes(2, "big") + bytes([code]))
            for i, code in enumerate(filters.values(), start=1)]
    assert subacks == want, [name for (name, _), got, w in zip(
        filters.items(), subacks, want, strict=False) if got != w] or subacks
    live.run(live.broker.publish_ack("dev-b", 5))
    live.run(live.broker.publish_deadletter("dev-b", {"reason": "x"}))
    got = [p for p in _packets(so, 1.0) if p[0] & 0xF0 == 0x30]
    assert got == []  # dev-b's ack and dead letter never reach dev-a
    so.close()


@pytest.mark.parametrize("revoke", ["rotate", "delete"])
def test_a_live_connection_is_closed_when_its_credentials_go(live: Live, revoke: str) -> None:
    so, answer = _connect(live.port, b"dev-a", live.secret["dev-a"].encode())
    assert answer == OK
    if revoke == "rotate":
        new = live.sec.rotate_device_secret("dev-a")
    else:
        live.sec.delete_device("dev-a")
    _publish1(so, b"edgewise/dev-a/telemetry", _telemetry(1), 1)
    t0 = time.monotonic()
    so.settimeout(5)
    with pytest.raises((ConnectionError, AssertionError)):  # closed: no more data
        while True:
            assert so.recv(100)
    assert time.monotonic() - t0 < 4  # the poll is 1 s
    assert live.stored() == []
    old, answer = _connect(live.port, b"dev-a", live.secret["dev-a"].encode(), "c2")
    old.close()
    assert answer == REFUSED
    if revoke == "rotate":
        fresh, answer = _connect(live.port, b"dev-a", new.encode(), "c3")
        fresh.close()
        assert answer == OK
