"""Two bounds of the embedded broker that amqtt does not keep, on a real broker (in a
thread of this process, on a free port) with raw MQTT sockets.

1. Packet size: amqtt read a packet whole into memory, whatever its header announced
   (MQTT allows 256 MB), before the gateway could refuse it: a device announcing 50 MB
   and trickling the bytes made the broker buffer all of them. Now the connection is
   closed as soon as the fixed header announces more than ``max_packet_bytes``.
2. Client ids: every client id a device connected with stayed in the broker's client-id
   map for the broker's life (and a persistent session's in amqtt's session map), so a
   device connecting with ever-new random ids grew both without bound. Now each device
   keeps at most ``client_ids_per_device``; the rules of tests/gateway/test_mqtt_acl.py
   and test_mqtt_session_hijack.py still hold (each device has client ids of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgewise.config import Settings
from edgewise.errors import AuthError
from edgewise.transport.base import Message, Outcome
from edgewise.transport.broker import EmbeddedBroker, max_packet_bytes
from tests.conftest import free_port, wait_until

MB = 1024 * 1024
#: EmbeddedBroker's default client_ids_per_device
CAP = 16


class Running:
    """An :class:`EmbeddedBroker` on its own event loop thread, with registered devices
    ``secrets`` (mutable: add one to register it), what it was handed and what it counted."""

    def __init__(self, **kw: Any) -> None:
        self.secrets = {f"dev-{i}": f"secret-{i}" for i in range(3)}
        self.received: list[Message] = []
        self.counted: list[tuple[str, dict[str, str]]] = []

        def authenticate(user: str, secret: str) -> bytes:
            if self.secrets.get(user) != secret:
                raise AuthError(f"wrong secret for {user!r}")
            return user.encode()

        def handle(messages: list[Message]) -> list[Outcome]:
            self.received.extend(messages)
            return [Outcome(m.device_id) for m in messages]

        self.port = free_port()
        self.broker = EmbeddedBroker(
            handle, authenticate, port=self.port,
            credential_tags=lambda ids: {i: i.encode() for i in ids if i in self.secrets},
            count=lambda name, value=1.0, **labels: self.counted.append((name, labels)),
            **kw)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.broker.start())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` evaluated on the broker's loop (its maps change only there)."""
        async def call() -> Any:
            return fn()
        return self.run(call())

    def sizes(self) -> tuple[int, int]:
        """(client ids bound to devices, sessions amqtt holds)."""
        return self.on_loop(lambda: (len(self.broker._client_owner),
                                     len(self.broker._broker._sessions)))

    def closed(self, reason: str) -> int:
        return sum(1 for name, labels in self.counted
                   if name == "edgewise_mqtt_connections_closed_total"
                   and labels.get("reason") == reason)

    def stop(self) -> None:
        self.run(self.broker.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running()
    yield r
    r.stop()


# -- raw MQTT 3.1.1 --------------------------------------------------------------------
def _s(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def _length(n: int) -> bytes:
    """MQTT's variable-length remaining length."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _recv(so: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = so.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


def _connect(port: int, user: str, secret: str, client_id: str, *,
             clean: bool = True) -> tuple[socket.socket, bytes]:
    """A socket after its CONNECT, and the CONNACK it got (b"" when closed unanswered)."""
    body = (_s(b"MQTT") + bytes([4, 0xC0 | (0x02 if clean else 0)]) + (60).to_bytes(2, "big")
            + _s(client_id.encode()) + _s(user.encode()) + _s(secret.encode()))
    so = socket.create_connection(("127.0.0.1", port), timeout=10)
    so.sendall(b"\x10" + _length(len(body)) + body)
    return so, _recv(so, 4)


def _bye(so: socket.socket) -> None:
    with contextlib.suppress(OSError):
        so.sendall(b"\xe0\x00")  # DISCONNECT
    so.close()


def _subscribe(so: socket.socket, topic: str, packet_id: int = 1) -> bytes:
    body = packet_id.to_bytes(2, "big") + _s(topic.encode()) + b"\x01"
    so.sendall(b"\x82" + _length(len(body)) + body)
    return _recv(so, 5)  # SUBACK: 0x90 0x03 id id code


def _publish_header(topic: str, payload_bytes: int) -> bytes:
    """A QoS 0 PUBLISH's fixed and variable header, announcing ``payload_bytes``."""
    variable = _s(topic.encode())
    return b"\x30" + _length(len(variable) + payload_bytes) + variable


def _closed_by_peer(so: socket.socket, timeout: float) -> bool:
    """Whether the peer closes ``so`` within ``timeout`` s (reading nothing meanwhile)."""
    so.settimeout(timeout)
    try:
        return so.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _trickle(so: socket.socket, limit: int, chunk: int = 64 * 1024) -> int:
    """Send up to ``limit`` bytes of body in pieces, as long as the peer takes them; how
    many bytes went out."""
    sent, piece = 0, b"x" * chunk
    so.settimeout(2.0)
    while sent < limit:
        try:
            so.sendall(piece)
        except OSError:
            break
        sent += chunk
    return sent


# -- 1. packet size ---------------------------------------------------------------------
def test_packet_limit_follows_the_gateways_payload_limit(monkeypatch) -> None:
    """Check the limit is what the gateway still reads of a too-large telemetry message
    (to dead-letter and acknowledge it) plus the largest PUBLISH header, taken from
    EDGEWISE_MAX_PAYLOAD_BYTES when not given."""
    default = Settings().max_payload_bytes
    assert max_packet_bytes(default) == 16 * default + 65_539 == 4_259_843
    monkeypatch.delenv("EDGEWISE_MAX_PAYLOAD_BYTES", raising=False)
    assert EmbeddedBroker(lambda ms: [], lambda d, s: None).max_packet_bytes == 4_259_843
    monkeypatch.setenv("EDGEWISE_MAX_PAYLOAD_BYTES", "1000")
    assert EmbeddedBroker(lambda ms: [], lambda d, s: None).max_packet_bytes == 81_539
    assert EmbeddedBroker(lambda ms: [], lambda d, s: None,
                          max_payload_bytes=2000).max_packet_bytes == 97_539
    with pytest.raises(ValueError, match="max_payload_bytes"):
        EmbeddedBroker(lambda ms: [], lambda d, s: None, max_payload_bytes=0)


def test_an_oversized_publish_is_refused_before_its_body_is_read(running: Running) -> None:
    """Check a PUBLISH announcing 50 MB closes the connection as soon as its header
    arrives, with no body byte sent, and that trickling the body afterwards buffers
    nothing (amqtt waited for all 50 MB, buffering what came: 20 MB sent, 20 MB held)."""
    so, connack = _connect(running.port, "dev-0", "secret-0", "big-1")
    assert connack == b"\x20\x02\x00\x00"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        so.sendall(_publish_header("edgewise/dev-0/telemetry", 50 * MB))
        closed = _closed_by_peer(so, 5.0)
        sent = _trickle(so, 8 * MB)
        time.sleep(0.2)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        so.close()
    assert closed, "the broker kept reading a 50 MB PUBLISH"
    assert sent < 8 * MB, f"the broker took {sent} bytes of the body"
    assert peak - before < 2 * MB, f"{(peak - before) / MB:.1f} MB held at the peak"
    assert current - before < MB, f"{(current - before) / MB:.1f} MB still held"
    assert wait_until(lambda: running.closed("too_large") == 1)
    assert running.received == []
    # the broker serves the others as before
    ok, connack = _connect(running.port, "dev-1", "secret-1", "small-1")
    assert connack == b"\x20\x02\x00\x00"
    ok.sendall(_publish_header("edgewise/dev-1/telemetry", 2) + b"{}")
    assert wait_until(lambda: [m.payload for m in running.received] == [b"{}"])
    _bye(ok)


def test_a_payload_over_the_gateway_limit_but_within_the_packet_limit_gets_through() -> None:
    """Check a message over EDGEWISE_MAX_PAYLOAD_BYTES but within 16 times it still reaches
    the gateway (which dead-letters and acknowledges it, so the device drops it), and one
    byte over the packet limit closes the connection."""
    r = Running(max_payload_bytes=1024)
    try:
        limit = r.broker.max_packet_bytes
        assert limit == 16 * 1024 + 65_539
        topic = "edgewise/dev-0/telemetry"
        so, connack = _connect(r.port, "dev-0", "secret-0", "mid-1")
        assert connack == b"\x20\x02\x00\x00"
        big = b"[" + b" " * (16 * 1024 - 2) + b"]"  # 16 KiB: 16 x the payload limit
        so.sendall(_publish_header(topic, len(big)) + big)
        assert wait_until(lambda: [len(m.payload) for m in r.received] == [len(big)])
        assert not _closed_by_peer(so, 0.3)
        header = _publish_header(topic, 0)
        over = limit - (len(header) - 2) + 1  # remaining length = limit + 1
        so.sendall(_publish_header(topic, over))
        assert _closed_by_peer(so, 5.0)
        so.close()
        assert wait_until(lambda: r.closed("too_large") == 1)
        assert len(r.received) == 1
    finally:
        r.stop()


def test_an_oversized_connect_or_subscribe_is_refused(running: Running) -> None:
    """Check the limit holds for every packet: a CONNECT (before any authentication) and
    a SUBSCRIBE announcing 50 MB close their connection before their body is read."""
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as so:
        so.sendall(b"\x10" + _length(50 * MB) + _s(b"MQTT"))
        assert _closed_by_peer(so, 5.0)
    so, connack = _connect(running.port, "dev-0", "secret-0", "sub-1")
    assert connack == b"\x20\x02\x00\x00"
    so.sendall(b"\x82" + _length(50 * MB) + b"\x00\x01")
    assert _closed_by_peer(so, 5.0)
    so.close()
    assert wait_until(lambda: running.closed("too_large") == 2)
    assert wait_until(lambda: running.sizes() == (1, 0))  # "sub-1" bound, its session gone


# -- 2. client ids ----------------------------------------------------------------------
def test_random_client_ids_leave_the_maps_bounded(running: Running) -> None:
    """Check a device connecting with ever-new random client ids (clean and persistent
    sessions, each subscribing to its acks) and clients refused with ever-new ids leave
    at most ``client_ids_per_device`` client ids and sessions behind (it was one per id,
    for the broker's life: 200 here)."""
    cap = CAP
    for i in range(100):
        so, connack = _connect(running.port, "dev-1", "secret-1", uuid.uuid4().hex,
                               clean=i % 2 == 0)
        assert connack[:2] == b"\x20\x02" and connack[3] == 0, connack
        assert _subscribe(so, "edgewise/dev-1/ack")[:1] == b"\x90"
        _bye(so)
    for _ in range(50):  # refused: wrong secret, unknown device, empty password
        for user, secret, cid in (("dev-2", "wrong", uuid.uuid4().hex),
                                  ("nobody", "x", uuid.uuid4().hex),
                                  ("dev-2", "", uuid.uuid4().hex)):
            so, connack = _connect(running.port, user, secret, cid, clean=False)
            assert connack == b"\x20\x02\x00\x05", connack
            so.close()
    assert wait_until(lambda: running.sizes()[1] <= cap // 2)  # amqtt drops clean ones
    owners, sessions = running.sizes()
    assert owners <= cap and sessions <= cap // 2, (owners, sessions)
    subscribed = running.on_loop(
        lambda: len(running.broker._broker._subscriptions.get("edgewise/dev-1/ack", [])))
    assert subscribed <= cap // 2, subscribed
    released = sum(1 for name, _ in running.counted
                   if name == "edgewise_mqtt_client_ids_released_total")
    assert released == 100 - cap
    assert running.broker.client_ids_per_device == CAP


def test_the_client_id_rules_hold_with_the_bound(running: Running) -> None:
    """Check, with the bound: another device using a device's id, or a client id of its
    open or recent persistent sessions, gets a session of its own (none present) and leaves
    the device's as they are; a device registered after another used its id gets a fresh
    session; a client id the device has not used for ``client_ids_per_device`` client ids
    is released with its session, so the device finds nothing of it next time."""
    port, cap = running.port, CAP
    a, connack = _connect(port, "dev-0", "secret-0", "line-7", clean=False)
    assert connack == b"\x20\x02\x00\x00"
    assert _subscribe(a, "edgewise/dev-0/deadletter")[:1] == b"\x90"
    _bye(a)
    live, connack = _connect(port, "dev-0", "secret-0", "keep-1")  # stays open
    assert connack == b"\x20\x02\x00\x00"
    # another registered device's id, a client id of dev-0's sessions: dev-1's own
    for cid in ("dev-0", "line-7", "keep-1"):
        b, connack = _connect(port, "dev-1", "secret-1", cid, clean=False)
        assert connack == b"\x20\x02\x00\x00", (cid, connack)  # no session present
        _bye(b)
    assert not _closed_by_peer(live, 0.2)
    # dev-0 itself gets its persistent session back (session present)
    a, connack = _connect(port, "dev-0", "secret-0", "line-7", clean=False)
    assert connack == b"\x20\x02\x01\x00"
    _bye(a)
    # a device's own id, used by another before that device was registered: its own
    early, connack = _connect(port, "dev-1", "secret-1", "pump-9", clean=False)
    assert connack == b"\x20\x02\x00\x00"
    _bye(early)
    running.secrets["pump-9"] = "secret-9"
    late, connack = _connect(port, "pump-9", "secret-9", "pump-9", clean=False)
    assert connack == b"\x20\x02\x00\x00"  # a fresh session, not dev-1's
    _bye(late)
    # dev-0 uses `cap` other client ids: "line-7" is released, "keep-1" (open) is not
    for _ in range(cap):
        so, connack = _connect(port, "dev-0", "secret-0", uuid.uuid4().hex)
        assert connack == b"\x20\x02\x00\x00"
        _bye(so)
    assert running.on_loop(lambda: running.broker._broker.in_use("dev-0/keep-1"))
    subscribers = running.on_loop(lambda: [
        s.username for s, _ in running.broker._broker._subscriptions.get(
            "edgewise/dev-0/deadletter", [])])
    assert subscribers == [], subscribers
    b, connack = _connect(port, "dev-0", "secret-0", "line-7", clean=False)
    assert connack == b"\x20\x02\x00\x00", connack  # no session present: released
    _bye(b)
    assert not _closed_by_peer(live, 0.2)
    _bye(live)
