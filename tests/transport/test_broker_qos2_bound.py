"""Incoming QoS 2 PUBLISHes waiting for their PUBREL are bounded per session, on a real
embedded broker (in a thread of this process, on a free port) with raw MQTT sockets and
paho.

amqtt held each such message in the session's ``inflight_in`` with a task waiting for its
PUBREL, without bound: 2,000 QoS 2 PUBLISHes of 16 KiB never released held 2,000 tasks and
about 40 MiB, and a device may send 65,535 of up to ``max_packet_bytes`` (4 MiB) each. And
while one such task waited, amqtt's reader kept the finished task of every later packet
(20,000 PINGREQs: 20,000 tasks). Now a session holds at most ``QOS2_WINDOW`` of them within
``QOS2_BYTES`` (one alone always fits); the PUBLISH going past either drops the connection
(``reason="qos2_backlog"``), and no task waits for a PUBREL.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket

import paho.mqtt.client as mqtt
import pytest

from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import wait_until
from tests.gateway.test_broker_limits import Running, _closed_by_peer, _connect, _length, _s
from tests.transport.test_broker_hunt_s41 import OK, _login, _ping, _read_packet

TOPIC = "edgewise/dev-0/telemetry"
PUBREC, PUBCOMP = 0x50, 0x70
SESSION_PRESENT = b"\x20\x02\x01\x00"


def _publish2(packet_id: int, payload: bytes, topic_name: str = TOPIC) -> bytes:
    """A QoS 2 PUBLISH."""
    body = _s(topic_name.encode()) + packet_id.to_bytes(2, "big") + payload
    return b"\x34" + _length(len(body)) + body


def _pubrel(packet_id: int) -> bytes:
    return b"\x62\x02" + packet_id.to_bytes(2, "big")


def _answers(so: socket.socket, kind: int, n: int, timeout: float = 3.0) -> list[int]:
    """The packet ids of up to ``n`` packets of type ``kind`` (PUBREC, PUBCOMP) read from
    ``so`` before it closes or ``timeout`` s pass with nothing read."""
    so.settimeout(timeout)
    ids: list[int] = []
    try:
        while len(ids) < n:
            first, body = _read_packet(so)
            if first & 0xF0 == kind:
                ids.append(int.from_bytes(body[:2], "big"))
    except (OSError, IndexError):  # timed out, or closed (nothing left to read)
        pass
    return ids


def _held(r: Running, key: str) -> int:
    """QoS 2 messages the session ``key`` holds for their PUBREL (0: no session)."""
    def held() -> int:
        entry = r.broker._broker._sessions.get(key)
        return len(entry[0].inflight_in) if entry else 0
    return r.on_loop(held)


@pytest.fixture
def window_8(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session may hold 8 QoS 2 messages waiting for their PUBREL."""
    monkeypatch.setattr(EmbeddedBroker, "QOS2_WINDOW", 8, raising=False)


def test_qos2_publishes_never_released_close_the_connection_past_the_window(
        window_8: None, running: Running) -> None:
    """Check 50 QoS 2 PUBLISHes never released get 8 PUBRECs, then the connection is
    dropped (``reason="qos2_backlog"``) with at most 8 held, and dev-0's slot is free."""
    so, ack = _login(running.port, "dev-0", "secret-0", "greedy")
    assert ack == OK
    try:
        so.sendall(b"".join(_publish2(i, b'{"seq": %d}' % i) for i in range(1, 51)))
    except OSError:  # dropped while it sent
        pass
    assert _answers(so, PUBREC, 50) == list(range(1, 9))
    assert _closed_by_peer(so, 2.0), "a connection holding 50 unreleased QoS 2 is still open"
    assert running.closed("qos2_backlog") == 1
    assert _held(running, "dev-0/greedy") <= 8
    assert wait_until(lambda: running.on_loop(lambda: running.broker.connections_of("dev-0"))
                      == 0, 3)
    so.close()


def test_qos2_bytes_held_are_bounded_and_one_message_alone_always_fits(
        monkeypatch: pytest.MonkeyPatch, running: Running) -> None:
    """Check, with 64 KiB for QoS 2 messages waiting for their PUBREL: one of 100 KiB alone
    is taken (PUBREC), released and stored; three of 20 KiB are taken and the fourth
    drops the connection."""
    monkeypatch.setattr(EmbeddedBroker, "QOS2_BYTES", 64 * 1024, raising=False)
    big, ack1 = _login(running.port, "dev-0", "secret-0", "big")
    assert ack1 == OK
    big.sendall(_publish2(1, b'{"seq": 1, "pad": "' + b"x" * 100_000 + b'"}'))
    assert _answers(big, PUBREC, 1) == [1]
    big.sendall(_pubrel(1))
    assert _answers(big, PUBCOMP, 1) == [1]
    assert wait_until(lambda: len(running.received) == 1, 5)
    chunky, ack2 = _login(running.port, "dev-0", "secret-0", "chunky")
    assert ack2 == OK
    pubrecs: list[int] = []
    for i in range(1, 30):
        try:
            chunky.sendall(_publish2(i, b"y" * 20 * 1024))
        except OSError:  # dropped
            break
        got = _answers(chunky, PUBREC, 1, timeout=1.0)
        if not got:  # dropped
            break
        pubrecs += got
    assert pubrecs == [1, 2, 3], "not dropped at the fourth message of 20 KiB held"
    assert running.closed("qos2_backlog") == 1
    assert _held(running, "dev-0/chunky") <= 3
    assert not _closed_by_peer(big, 0.2), "the other connection was dropped too"
    for so in (big, chunky):
        so.close()


def test_one_qos2_message_never_released_does_not_keep_every_later_packets_task(
        running: Running) -> None:
    """Check a connection holding one QoS 2 message for its PUBREL and then sending 2,000
    PINGREQs leaves fewer than 200 tasks alive on the broker's loop (amqtt's reader kept
    each finished task behind the one waiting for the PUBREL)."""
    so, ack = _login(running.port, "dev-0", "secret-0", "pinger")
    assert ack == OK
    so.sendall(_publish2(7, b'{"seq": 7}'))
    assert _answers(so, PUBREC, 1) == [7]
    for _ in range(2000):
        assert _ping(so)

    def tasks() -> int:
        gc.collect()
        # type(), not isinstance(): isinstance reads __class__, which some objects in the
        # heap answer with a warning (torch's deprecated reduce_op), an error under pytest
        return sum(1 for o in gc.get_objects()
                   if type(o) is asyncio.Task and o.get_loop() is running.loop)
    alive = running.on_loop(tasks)
    assert alive < 200, f"{alive} tasks alive after 2,000 PINGREQs"
    so.sendall(_pubrel(7))
    assert _answers(so, PUBCOMP, 1) == [7]
    assert wait_until(lambda: len(running.received) == 1, 5)
    so.close()


@pytest.mark.parametrize("in_flight", [20, 64])
def test_a_paho_client_publishing_qos2_quickly_gets_everything_stored(
        running: Running, in_flight: int) -> None:
    """Check paho publishing 400 QoS 2 messages as fast as it can, with 20 in flight (its
    default) and with 64 (the broker's window), has all 400 stored and is never dropped."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fast-{in_flight}",
                    clean_session=True)
    c.username_pw_set("dev-0", "secret-0")
    c.max_inflight_messages_set(in_flight)
    c.connect("127.0.0.1", running.port)
    c.loop_start()
    try:
        infos = [c.publish(TOPIC, json.dumps({"seq": i}), qos=2) for i in range(1, 401)]
        for info in infos:
            info.wait_for_publish(20)
        assert all(info.is_published() for info in infos)
        assert wait_until(lambda: len(running.received) == 400, 10), len(running.received)
    finally:
        c.disconnect()
        c.loop_stop()
    assert sorted(json.loads(m.payload)["seq"] for m in running.received) == \
        list(range(1, 401))
    assert running.closed("qos2_backlog") == 0


def test_a_persistent_session_keeps_what_it_holds_within_the_same_window(
        monkeypatch: pytest.MonkeyPatch, running: Running) -> None:
    """Check a persistent session keeps 3 QoS 2 messages held for their PUBREL across a
    reconnect (their PUBRECs sent again), counts them against its window of 4 (a fifth
    drops the connection), and stores all 4 once they are released."""
    monkeypatch.setattr(EmbeddedBroker, "QOS2_WINDOW", 4, raising=False)
    so, ack = _connect(running.port, "dev-0", "secret-0", "keeper", clean=False)
    assert ack == OK
    so.sendall(b"".join(_publish2(i, b'{"seq": %d}' % i) for i in (1, 2, 3)))
    assert _answers(so, PUBREC, 3) == [1, 2, 3]
    so.close()  # gone before it sent a PUBREL
    assert wait_until(lambda: not running.on_loop(
        lambda: running.broker._broker.in_use("dev-0/keeper")), 5)
    so, ack = _connect(running.port, "dev-0", "secret-0", "keeper", clean=False)
    assert ack == SESSION_PRESENT
    assert sorted(_answers(so, PUBREC, 3)) == [1, 2, 3]
    so.sendall(_publish2(4, b'{"seq": 4}'))
    assert _answers(so, PUBREC, 1) == [4]
    so.sendall(_publish2(5, b'{"seq": 5}'))
    assert _closed_by_peer(so, 3.0), "a fifth message held was taken"
    assert running.closed("qos2_backlog") == 1
    so.close()
    assert wait_until(lambda: not running.on_loop(
        lambda: running.broker._broker.in_use("dev-0/keeper")), 5)
    so, ack = _connect(running.port, "dev-0", "secret-0", "keeper", clean=False)
    assert ack == SESSION_PRESENT
    assert sorted(_answers(so, PUBREC, 4)) == [1, 2, 3, 4]
    so.sendall(b"".join(_pubrel(i) for i in (1, 2, 3, 4)))
    assert sorted(_answers(so, PUBCOMP, 4)) == [1, 2, 3, 4]
    assert wait_until(lambda: len(running.received) == 4, 5)
    assert sorted(json.loads(m.payload)["seq"] for m in running.received) == [1, 2, 3, 4]
    assert _held(running, "dev-0/keeper") == 0
    so.close()
