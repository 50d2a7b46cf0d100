"""Embedded broker holes found by a hunt (session 36), on a real broker (in a thread of this
process, on a free port) with raw MQTT sockets.

1. One device's secret opened any number of logged-in connections: 1,005 at ``ulimit -n
   1024`` took every file descriptor, locking out the other devices and the HTTP API. Now a
   device holds at most ``EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE`` (8); the next CONNECT
   gets CONNACK 3 (server unavailable) and is logged with the device and the cap.
2. A SUBSCRIBE or UNSUBSCRIBE could announce up to the PUBLISH limit (4 MB: a million
   filters, decoded whole, stalling every device's acks for seconds). Now every packet but
   PUBLISH is closed past 64 KiB, before its body is read.
3. With the store stalled, amqtt PUBACKed every message and the gateway's queue held them
   all (25,000 after 20 s, growing). Now the queue is bounded
   (``EDGEWISE_MQTT_MAX_QUEUED_BYTES``), a QoS 1 PUBLISH is PUBACKed only once queued, and
   past the bound the broker stops reading, so TCP holds the device back; nothing
   acknowledged is lost.
4. The README's ``mosquitto_passwd passwd edgewise-gateway`` fails on a password file that
   does not exist yet; its recipe is run here as written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgewise.errors import AuthError, ConfigError
from edgewise.transport.base import Message, Outcome
from edgewise.transport.batcher import Batcher
from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import REPO, free_port, wait_until
from tests.gateway.test_broker_limits import (
    Running,
    _bye,
    _closed_by_peer,
    _connect,
    _length,
    _publish_header,
    _s,
    _subscribe,
)

OK = b"\x20\x02\x00\x00"
UNAVAILABLE = b"\x20\x02\x00\x03"


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running()
    yield r
    r.stop()


# -- 1. logged-in connections per device ------------------------------------------------
@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    """A broker whose devices may hold 2 logged-in connections each (set as the gateway
    sets it: the environment)."""
    monkeypatch.setenv("EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE", "2")
    r = Running()
    yield r
    r.stop()


def test_a_device_over_its_connection_cap_is_refused_with_server_unavailable(
        capped: Running, caplog: pytest.LogCaptureFixture) -> None:
    """Check a device's third logged-in connection at a cap of 2 gets CONNACK 3 and is
    closed, logged with the device and the cap, while another device still connects."""
    caplog.set_level(logging.WARNING, logger="edgewise.transport.broker")
    held = [_connect(capped.port, "dev-0", "secret-0", f"c{i}") for i in range(2)]
    assert [ack for _, ack in held] == [OK, OK]
    third, ack = _connect(capped.port, "dev-0", "secret-0", "c2")
    assert ack == UNAVAILABLE, f"a third connection of dev-0 got CONNACK {ack!r}"
    assert _closed_by_peer(third, 5.0)
    third.close()
    assert capped.closed("per_device") == 1
    assert capped.broker.max_connections_per_device == 2
    lines = [r.getMessage() for r in caplog.records if "dev-0" in r.getMessage()]
    assert any("at most 2" in line and "EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE" in line
               for line in lines), lines
    other, ack = _connect(capped.port, "dev-1", "secret-1", "c0")  # its own count
    assert ack == OK
    assert capped.on_loop(lambda: capped.broker.connections_of("dev-0")) == 2
    for so, _ in [*held, (other, b"")]:
        _bye(so)


def test_a_device_at_its_cap_may_reconnect_a_client_id_and_connect_once_one_closes(
        capped: Running) -> None:
    """Check a CONNECT reusing the client id of a held connection still gets in (it takes
    that one over, which is closed), and a new client id does once a connection ends."""
    first, ack1 = _connect(capped.port, "dev-0", "secret-0", "a")
    second, ack2 = _connect(capped.port, "dev-0", "secret-0", "b")
    assert (ack1, ack2) == (OK, OK)
    again, ack = _connect(capped.port, "dev-0", "secret-0", "a")  # a half-open one's id
    assert ack == OK
    assert _closed_by_peer(first, 5.0)
    first.close()
    extra, ack = _connect(capped.port, "dev-0", "secret-0", "c")
    assert ack == UNAVAILABLE
    extra.close()
    _bye(second)
    assert wait_until(lambda: capped.on_loop(
        lambda: capped.broker.connections_of("dev-0")) == 1)
    last, ack = _connect(capped.port, "dev-0", "secret-0", "c")
    assert ack == OK
    _bye(again)
    _bye(last)
    assert wait_until(lambda: capped.on_loop(lambda: capped.broker._logged_in) == {})


def test_paho_reports_the_cap_as_server_unavailable(capped: Running) -> None:
    """Check what a paho device is told when over its cap."""
    held = [_connect(capped.port, "dev-0", "secret-0", f"p{i}") for i in range(2)]
    got: list[Any] = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="p2",
                    protocol=mqtt.MQTTv311)
    c.username_pw_set("dev-0", "secret-0")
    c.on_connect = lambda cl, u, f, rc, p=None: (got.append(rc), done.set())
    c.connect("127.0.0.1", capped.port)
    c.loop_start()
    try:
        assert done.wait(10)
    finally:
        c.loop_stop()
    assert got[0].is_failure and str(got[0]) == "Server unavailable", got
    for so, _ in held:
        _bye(so)


@pytest.mark.parametrize("value", ["-1", "many"])
def test_a_bad_connection_cap_setting_names_the_variable(
        monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE", value)
    with pytest.raises(ConfigError, match=r"EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE.*"
                                          r"whole number of 1 or more"):
        EmbeddedBroker(lambda ms: [], lambda d, s: None)
    monkeypatch.setenv("EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE", "0")
    assert EmbeddedBroker(lambda ms: [], lambda d, s: None).max_connections_per_device == 8


# -- 2. packets other than PUBLISH ------------------------------------------------------
@pytest.mark.parametrize("first_byte", [0x82, 0xA2], ids=["subscribe", "unsubscribe"])
def test_a_100_kb_subscribe_or_unsubscribe_is_closed_before_its_body(
        running: Running, first_byte: int) -> None:
    """Check a SUBSCRIBE/UNSUBSCRIBE announcing 100 KB (within the 4 MB PUBLISH limit)
    closes its connection as soon as its header arrives, while a 100 KB PUBLISH still
    gets through and a normal SUBSCRIBE is answered."""
    so, ack = _connect(running.port, "dev-0", "secret-0", "s1")
    assert ack == OK
    assert _subscribe(so, "edgewise/dev-0/ack")[:2] == b"\x90\x03"
    payload = b"[" + b" " * (100_000 - 2) + b"]"
    so.sendall(_publish_header("edgewise/dev-0/telemetry", len(payload)) + payload)
    assert wait_until(lambda: [len(m.payload) for m in running.received] == [100_000])
    so.sendall(bytes([first_byte]) + _length(100_000) + b"\x00\x01")
    assert _closed_by_peer(so, 5.0), "the broker went on reading a 100 KB control packet"
    so.close()
    assert wait_until(lambda: running.closed("too_large") == 1)


def test_a_100_kb_connect_is_closed_before_its_body(running: Running) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as so:
        so.sendall(b"\x10" + _length(100_000) + _s(b"MQTT"))
        assert _closed_by_peer(so, 5.0)
    assert wait_until(lambda: running.closed("too_large") == 1)


# -- 3. what waits for the store --------------------------------------------------------
def test_put_wait_waits_for_room_and_gives_up_when_the_batcher_stops() -> None:
    """Check the batcher's bound: put_wait returns once a commit takes what is queued,
    per device too, and returns False (queuing nothing) when the batcher stops first."""
    gate = threading.Event()

    def handler(ms: list[Message]) -> list[Outcome]:
        gate.wait(10)
        return [Outcome(m.device_id, 1) for m in ms]

    committed: list[str] = []

    async def main() -> None:
        async def done(ms: list[Message], outs: list[Outcome]) -> None:
            committed.extend(m.payload.decode() for m in ms)

        b = Batcher(handler, done, max_queued_bytes=10, max_device_bytes=5)
        await b.start()
        assert await b.put_wait(Message("d1", b"12345"))  # taken by the first commit
        await asyncio.sleep(0.05)
        assert await b.put_wait(Message("d1", b"12345"))
        other = asyncio.ensure_future(b.put_wait(Message("d2", b"1234")))
        waiting = asyncio.ensure_future(b.put_wait(Message("d1", b"1")))
        await asyncio.sleep(0.05)
        assert other.done() and other.result()  # d2 has room of its own
        assert not waiting.done(), "d1 was let past its 5 bytes"
        assert b.pending_bytes() == 9 and b.pending_bytes("d1") == 5
        gate.set()  # the first commit returns; the next takes what waits
        assert await asyncio.wait_for(waiting, 5)
        assert await _until(lambda: "1" in committed)  # all committed: the store idles
        gate.clear()
        assert await b.put_wait(Message("d4", b"x"))  # the next commit holds the store
        assert await _until(lambda: b.pending() == 0)
        assert await b.put_wait(Message("d3", b"123456"))  # queued
        last = asyncio.ensure_future(b.put_wait(Message("d3", b"7")))  # d3 is full
        await asyncio.sleep(0.05)
        assert not last.done()
        stopping = asyncio.ensure_future(b.stop())
        assert await asyncio.wait_for(last, 5) is False  # stopped first: not queued
        gate.set()
        await asyncio.wait_for(stopping, 5)
        assert committed == ["12345", "12345", "1234", "1", "x", "123456"]

    asyncio.run(main())


class _Stalled:
    """An :class:`EmbeddedBroker` on its own loop thread whose store blocks until
    :attr:`gate` is set, with a small queue bound (set as the gateway sets it)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.batches: list[int] = []
        self.stored: list[int] = []

        def handler(ms: list[Message]) -> list[Outcome]:
            self.batches.append(len(ms))
            self.gate.wait(60)
            self.stored.extend(json.loads(m.payload)["seq"] for m in ms)
            return [Outcome(m.device_id, json.loads(m.payload)["seq"]) for m in ms]

        def authenticate(user: str, secret: str) -> bytes:
            if secret != "pw":
                raise AuthError(f"wrong secret for {user!r}")
            return b"t"

        self.port = free_port()
        self.broker = EmbeddedBroker(handler, authenticate, port=self.port,
                                     credential_tags=lambda ids: {i: b"t" for i in ids})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.broker.start(), self.loop).result(20)

    def on_loop(self, fn: Any) -> Any:
        async def call() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(20)

    def stop(self) -> None:
        self.gate.set()
        asyncio.run_coroutine_threadsafe(self.broker.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_stalled_store_holds_the_device_back_and_loses_nothing_acknowledged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that with the store blocked the queue stays within its bound, only what was
    queued is PUBACKed, the broker stops reading (the device's sends stall), and once the
    store is back every message is stored and PUBACKed."""
    monkeypatch.setenv("EDGEWISE_MQTT_MAX_QUEUED_BYTES", "80000")  # 20,000 per device
    s = _Stalled()
    so: socket.socket | None = None
    try:
        so = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        so.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        so.sendall(_connect_packet())
        assert so.recv(4) == OK
        pubacks: list[int] = []

        def read_acks() -> None:
            buf = b""
            while True:
                try:
                    chunk = so.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 4:
                    assert buf[:2] == b"\x40\x02", buf[:8]
                    pubacks.append(int.from_bytes(buf[2:4], "big"))
                    buf = buf[4:]

        threading.Thread(target=read_acks, daemon=True).start()
        n, pad = 12000, "x" * 900
        packets = b"".join(_qos1(i, json.dumps({"seq": i, "pad": pad}).encode())
                           for i in range(1, n + 1))  # ~11 MB
        sent = [0]

        def send() -> None:
            view = memoryview(packets)
            while sent[0] < len(packets):
                try:
                    sent[0] += so.send(view[sent[0]:sent[0] + 65536])
                except TimeoutError:
                    continue
                except OSError:
                    return

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        assert wait_until(lambda: bool(s.batches), 10), "nothing reached the store"
        # the broker stops reading: the device's sends stop short of the end
        last, still, deadline = -1, 0, time.monotonic() + 15
        while still < 4 and time.monotonic() < deadline:
            time.sleep(0.25)
            still = still + 1 if sent[0] == last else 0
            last = sent[0]
        assert sent[0] < len(packets), "the broker read every message of a stalled store"
        assert s.broker.batcher.max_device_bytes == 20_000
        queued = s.on_loop(lambda: s.broker.batcher.pending_bytes("dev-0"))
        assert queued < 20_000 + 1000, f"{queued} bytes queued past the 20,000 bound"
        held = s.on_loop(lambda: s.broker.batcher.pending())
        in_commit = sum(s.batches)
        # PUBACKed: exactly what was queued (and the batch the store holds), no more
        assert wait_until(lambda: len(pubacks) == held + in_commit, 5), (
            len(pubacks), held, in_commit)
        time.sleep(0.3)
        assert len(pubacks) == held + in_commit
        s.gate.set()
        sender.join(60)
        assert sent[0] == len(packets)
        assert wait_until(lambda: len(s.stored) == n, 60), len(s.stored)
        assert s.stored == list(range(1, n + 1))
        assert wait_until(lambda: len(pubacks) == n, 20), len(pubacks)
        assert sorted(pubacks) == list(range(1, n + 1))
    finally:
        if so is not None:
            so.close()
        s.stop()


async def _until(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def _connect_packet() -> bytes:
    body = (_s(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big") + _s(b"stall-1")
            + _s(b"dev-0") + _s(b"pw"))
    return b"\x10" + _length(len(body)) + body


def _qos1(packet_id: int, payload: bytes) -> bytes:
    body = _s(b"edgewise/dev-0/telemetry") + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + _length(len(body)) + body


# -- 4. the README's Mosquitto password file --------------------------------------------
def test_the_readme_mosquitto_passwd_recipe_makes_the_file(tmp_path: Path) -> None:
    """Check the README's mosquitto_passwd commands, run in order as written (with -b and a
    password, for a test), make a password file holding the gateway's user and a device
    from none (the first one without -c failed: no such file)."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed")
    text = (REPO / "README.md").read_text()
    recipe = text[text.index("MQTT user name is its device id"):]
    recipe = recipe[:recipe.index("mosquitto.conf")]
    commands = re.findall(r"`mosquitto_passwd ((?:-c )?)passwd ([\w-]+)`", recipe)
    assert commands and commands[0][1] == "edgewise-gateway", commands
    for create, user in commands:
        run = subprocess.run(["mosquitto_passwd", *create.split(), "-b", "passwd", user, "pw"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, f"mosquitto_passwd {create}passwd {user}: {run.stderr}"
    users = [line.split(":")[0] for line in (tmp_path / "passwd").read_text().splitlines()]
    assert users == [user for _, user in commands] and len(users) >= 2, users
