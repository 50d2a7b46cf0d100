"""What amqtt would let past the embedded broker's device ACL: Will messages, another
device's client id, retained messages. Each test runs a real gateway process and real
MQTT clients; each fails on a broker that lets the trick through."""

from __future__ import annotations

import json
import socket
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from edgewise.security.credentials import Security
from tests.conftest import wait_until


def _client(gw, user: str, secret: str, client_id: str | None = None, *,
            clean: bool = True) -> tuple[mqtt.Client, list[tuple[str, bytes]], list[int]]:
    """A paho client (not yet connected) that records messages and CONNACK codes."""
    got: list[tuple[str, bytes]] = []
    rcs: list[int] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=client_id or f"{user}-{uuid.uuid4().hex[:6]}",
                    clean_session=clean)
    c.username_pw_set(user, secret)
    c.on_connect = lambda cl, ud, flags, rc, props=None: rcs.append(int(rc.value))
    c.on_message = lambda cl, ud, m: got.append((m.topic, m.payload))
    return c, got, rcs


def _run(c: mqtt.Client, gw) -> None:
    c.connect("127.0.0.1", gw.mqtt_port)
    c.loop_start()


def _stop(*clients: mqtt.Client) -> None:
    for c in clients:
        c.loop_stop()
        try:
            c.disconnect()
        except Exception:  # already dropped by the broker
            pass


def _drop(c: mqtt.Client) -> None:
    """Close the TCP connection without DISCONNECT, as a device losing power does."""
    c.loop_stop()
    sock = c.socket()
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.fixture
def gw(gateway_factory):
    g = gateway_factory()
    sec = Security(g.data_dir)
    g.creds = {name: sec.add_device(name)[1] for name in ("dev-a", "dev-b", "dev-c")}
    sec.close()
    g.start()
    yield g
    g.stop()


def test_a_will_cannot_forge_another_devices_ack(gw) -> None:
    """Check a CONNECT carrying a Will is refused: amqtt published a Will (and retained
    it) past the topic ACL, so dev-b told dev-a, and every later subscriber, that seq
    999999 was committed, and dev-a would drop what it had not sent."""
    a, got_a, _ = _client(gw, "dev-a", gw.creds["dev-a"])
    a.on_connect = lambda cl, *args: cl.subscribe("edgewise/dev-a/ack", qos=1)
    _run(a, gw)
    assert wait_until(lambda: any(t == "edgewise/dev-a/ack" for t, _ in got_a))  # its own
    b, _, rcs = _client(gw, "dev-b", gw.creds["dev-b"])
    b.will_set("edgewise/dev-a/ack", json.dumps({"seq": 999999}), qos=1, retain=True)
    _run(b, gw)
    time.sleep(1.0)
    _drop(b)
    time.sleep(1.0)
    assert rcs != [0], "a CONNECT with a Will was accepted"
    c, got_c, _ = _client(gw, "dev-c", gw.creds["dev-c"])
    c.on_connect = lambda cl, *args: cl.subscribe("edgewise/dev-c/ack", qos=1)
    _run(c, gw)
    assert wait_until(lambda: len(got_c) >= 1)
    time.sleep(0.5)
    _stop(a, c)
    forged = [p for _, p in got_a + got_c if json.loads(p).get("seq") == 999999]
    assert forged == [], (got_a, got_c)
    assert {t for t, _ in got_c} == {"edgewise/dev-c/ack"}


def test_another_devices_client_id_is_refused(gw) -> None:
    """Check dev-b connecting with the client id of dev-a's persistent session gets a
    session of its own, not dev-a's: amqtt handed it the session, so dev-b received dev-a's
    acks and dead letters. (It was refused; each device now has client ids of its own.)"""
    a, _, rcs_a = _client(gw, "dev-a", gw.creds["dev-a"], "pump-line-7", clean=False)
    a.on_connect = lambda cl, ud, flags, rc, props=None: (
        rcs_a.append(int(rc.value)), cl.subscribe("edgewise/dev-a/deadletter", qos=1))
    _run(a, gw)
    assert wait_until(lambda: rcs_a == [0])
    time.sleep(0.5)
    _stop(a)
    b, got_b, rcs_b = _client(gw, "dev-b", gw.creds["dev-b"], "pump-line-7", clean=False)
    _run(b, gw)
    time.sleep(1.5)
    _stop(b)
    assert rcs_b == [0] and got_b == [], (rcs_b, got_b)
    # dev-a itself still gets its session back, with its secret
    a2, _, rcs_a2 = _client(gw, "dev-a", gw.creds["dev-a"], "pump-line-7", clean=False)
    _run(a2, gw)
    assert wait_until(lambda: rcs_a2 == [0])
    _stop(a2)


@pytest.mark.parametrize("consumer", ["plugin", "subscriber"])
def test_no_message_is_retained_for_other_devices(gateway_factory, monkeypatch,
                                                  consumer) -> None:
    """Check telemetry published with the retain flag is stored once and never replayed
    to another device at connect (with the internal subscriber, amqtt retained it and
    sent it to every device that subscribed to anything)."""
    monkeypatch.setenv("EDGEWISE_MQTT_CONSUMER", consumer)
    g = gateway_factory()
    sec = Security(g.data_dir)
    creds = {name: sec.add_device(name)[1] for name in ("dev-a", "dev-b")}
    sec.close()
    g.start()
    try:
        a, got_a, _ = _client(g, "dev-a", creds["dev-a"])
        a.on_connect = lambda cl, *args: cl.subscribe("edgewise/dev-a/ack", qos=1)
        _run(a, g)
        assert wait_until(lambda: len(got_a) >= 1)
        msg = {"ts": time.time() - 5, "metrics": {"secret_reading": 42.0}, "seq": 1}
        a.publish("edgewise/dev-a/telemetry", json.dumps(msg), qos=1, retain=True)
        assert wait_until(lambda: any(json.loads(p).get("seq") == 1 for _, p in got_a))
        b, got_b, _ = _client(g, "dev-b", creds["dev-b"])
        b.on_connect = lambda cl, *args: cl.subscribe("edgewise/dev-b/ack", qos=1)
        _run(b, g)
        assert wait_until(lambda: len(got_b) >= 1)
        time.sleep(1.0)
        _stop(a, b)
        assert {t for t, _ in got_b} == {"edgewise/dev-b/ack"}, got_b
    finally:
        assert g.stop() == 0


def test_a_device_cannot_lock_another_out_by_squatting_its_id(gw) -> None:
    """Check a device using another device's id as its client id does not lock that
    device out of it (a client id was bound to whoever used it first, for the broker's
    life: dev-a connecting once as 'dev-b' locked dev-b out until a restart), and a device
    registered after someone used its id as a client id can use it."""
    a, _, rcs_a = _client(gw, "dev-a", gw.creds["dev-a"], "dev-b")
    _run(a, gw)
    assert wait_until(lambda: rcs_a == [0]), rcs_a  # a client id of dev-a's own
    _stop(a)
    b, _, rcs_b = _client(gw, "dev-b", gw.creds["dev-b"], "dev-b")
    _run(b, gw)
    assert wait_until(lambda: rcs_b == [0]), rcs_b
    _stop(b)
    early, _, rcs_e = _client(gw, "dev-a", gw.creds["dev-a"], "pump-9", clean=False)
    _run(early, gw)
    assert wait_until(lambda: rcs_e == [0]), rcs_e
    _stop(early)
    sec = Security(gw.data_dir)
    secret = sec.add_device("pump-9")[1]
    sec.close()
    late, _, rcs_l = _client(gw, "pump-9", secret, "pump-9", clean=False)
    _run(late, gw)
    assert wait_until(lambda: rcs_l == [0]), rcs_l
    _stop(late)


def test_a_refused_connect_gets_connack_not_authorized(gw) -> None:
    """Check a CONNECT with a wrong secret, or none, is answered CONNACK 0x05 before the
    socket closes (it was closed with no answer: clients saw a network fault and retried)."""
    def connect(flags: int, user: bytes = b"dev-a", pw: bytes = b"wrong") -> bytes:
        def s(b: bytes) -> bytes:
            return len(b).to_bytes(2, "big") + b
        body = (s(b"MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big") + s(b"raw-1")
                + (s(user) if flags & 0x80 else b"") + (s(pw) if flags & 0x40 else b""))
        with socket.create_connection(("127.0.0.1", gw.mqtt_port), timeout=5) as so:
            so.sendall(bytes([0x10, len(body)]) + body)
            return so.recv(16)

    assert connect(0xC2) == b"\x20\x02\x00\x05"
    assert connect(0x02) == b"\x20\x02\x00\x05"
