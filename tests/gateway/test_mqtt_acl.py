"""What amqtt would let past the embedded broker's device ACL: Will messages, another
device's client id, retained messages. Each test runs real MQTT clients against a real
gateway process (one per consumer for the module, :class:`SharedGateways`; each test
registers devices and client ids of its own on it); each fails on a broker that lets the
trick through."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest

from edgewise.security.credentials import Security
from tests.conftest import wait_until
from tests.gateway.conftest import GatewayProcess


class SharedGateways:
    """Real gateway processes (``edgewise serve``), one per ``EDGEWISE_MQTT_CONSUMER``,
    started when first asked for and stopped (a clean exit, checked) by :meth:`close`.
    The tests that share one never share a device or a client id: each registers
    devices under fresh names (:meth:`add_devices`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: dict[str, GatewayProcess] = {}

    def get(self, consumer: str) -> GatewayProcess:
        if consumer not in self.started:
            d = self.root / consumer
            d.mkdir()
            sec = Security(d)
            admin = sec.create_token("admin", "test-admin")
            sec.close()
            old = os.environ.get("EDGEWISE_MQTT_CONSUMER")
            os.environ["EDGEWISE_MQTT_CONSUMER"] = consumer  # read by the process at start
            try:
                g = GatewayProcess(d)
                self.started[consumer] = g  # stopped by close() even if the start fails
                g.start()
            finally:
                if old is None:
                    os.environ.pop("EDGEWISE_MQTT_CONSUMER")
                else:
                    os.environ["EDGEWISE_MQTT_CONSUMER"] = old
            g.admin = admin  # type: ignore[attr-defined]
        return self.started[consumer]

    @staticmethod
    def add_devices(g: GatewayProcess, *roles: str) -> dict[str, tuple[str, str]]:
        """Register a new device for each of ``roles`` on ``g`` (while it runs, as
        ``edgewise device add`` does): ``{role: (device name, secret)}``, the names
        unique (``ROLE-xxxxxx``)."""
        sec = Security(g.data_dir)
        try:
            out = {}
            for role in roles:
                name = f"{role}-{uuid.uuid4().hex[:6]}"
                out[role] = (name, sec.add_device(name)[1])
            return out
        finally:
            sec.close()

    def close(self) -> None:
        codes = {c: g.stop() for c, g in self.started.items()}
        assert all(rc == 0 for rc in codes.values()), f"gateway exit codes: {codes}"

    @classmethod
    def for_module(cls, tmp_path_factory: pytest.TempPathFactory,
                   name: str) -> Iterator[SharedGateways]:
        """A module fixture's body: the gateways under a new temp folder ``name``, each
        stopped (and its clean exit asserted) at the module's end."""
        shared = cls(tmp_path_factory.mktemp(name))
        try:
            yield shared
        finally:
            shared.close()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedGateways]:
    yield from SharedGateways.for_module(tmp_path_factory, "acl")


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
    """DISCONNECT, then end the client's loop (which the DISCONNECT ends at once: stopped
    first, the loop sat out its 1 s select before it saw it was told to stop)."""
    for c in clients:
        try:
            c.disconnect()
        except Exception:  # already dropped by the broker
            pass
        c.loop_stop()


def _drop(c: mqtt.Client) -> None:
    """Close the TCP connection without DISCONNECT, as a device losing power does."""
    c.loop_stop()
    sock = c.socket()
    if sock is not None:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.fixture
def gw(gateways: SharedGateways) -> SimpleNamespace:
    """The module's gateway (the default consumer, the broker plugin) with three devices
    new to it: ``names`` maps "dev-a", "dev-b", "dev-c" to their names (unique), ``creds``
    those names to their secrets."""
    g = gateways.get("plugin")
    added = gateways.add_devices(g, "dev-a", "dev-b", "dev-c")
    return SimpleNamespace(mqtt_port=g.mqtt_port, data_dir=g.data_dir,
                           names={r: n for r, (n, _) in added.items()},
                           creds=dict(added.values()))


def test_a_will_cannot_forge_another_devices_ack(gw) -> None:
    """Check a CONNECT carrying a Will is refused: amqtt published a Will (and retained
    it) past the topic ACL, so dev-b told dev-a, and every later subscriber, that seq
    999999 was committed, and dev-a would drop what it had not sent."""
    dev_a, dev_b, dev_c = (gw.names[r] for r in ("dev-a", "dev-b", "dev-c"))
    a, got_a, _ = _client(gw, dev_a, gw.creds[dev_a])
    a.on_connect = lambda cl, *args: cl.subscribe(f"edgewise/{dev_a}/ack", qos=1)
    _run(a, gw)
    assert wait_until(lambda: any(t == f"edgewise/{dev_a}/ack" for t, _ in got_a))  # its own
    b, _, rcs = _client(gw, dev_b, gw.creds[dev_b])
    b.will_set(f"edgewise/{dev_a}/ack", json.dumps({"seq": 999999}), qos=1, retain=True)
    dropped: list[int] = []
    b.on_disconnect = lambda *args: dropped.append(1)
    _run(b, gw)
    assert wait_until(lambda: rcs or dropped), "no answer to the CONNECT with a Will"
    _drop(b)
    time.sleep(1.0)
    assert rcs != [0], "a CONNECT with a Will was accepted"
    c, got_c, _ = _client(gw, dev_c, gw.creds[dev_c])
    c.on_connect = lambda cl, *args: cl.subscribe(f"edgewise/{dev_c}/ack", qos=1)
    _run(c, gw)
    assert wait_until(lambda: len(got_c) >= 1)
    time.sleep(0.5)
    _stop(a, c)
    forged = [p for _, p in got_a + got_c if json.loads(p).get("seq") == 999999]
    assert forged == [], (got_a, got_c)
    assert {t for t, _ in got_c} == {f"edgewise/{dev_c}/ack"}


def test_another_devices_client_id_is_refused(gw) -> None:
    """Check dev-b connecting with the client id of dev-a's persistent session gets a
    session of its own, not dev-a's: amqtt handed it the session, so dev-b received dev-a's
    acks and dead letters. (It was refused; each device now has client ids of its own.)"""
    dev_a, dev_b = gw.names["dev-a"], gw.names["dev-b"]
    client_id = f"pump-line-{uuid.uuid4().hex[:6]}"
    a, _, rcs_a = _client(gw, dev_a, gw.creds[dev_a], client_id, clean=False)
    subscribed: list[int] = []
    a.on_connect = lambda cl, ud, flags, rc, props=None: (
        rcs_a.append(int(rc.value)), cl.subscribe(f"edgewise/{dev_a}/deadletter", qos=1))
    a.on_subscribe = lambda *args: subscribed.append(1)
    _run(a, gw)
    assert wait_until(lambda: rcs_a == [0])
    assert wait_until(lambda: subscribed), "no SUBACK"  # the session holds the subscription
    _stop(a)
    b, got_b, rcs_b = _client(gw, dev_b, gw.creds[dev_b], client_id, clean=False)
    _run(b, gw)
    assert wait_until(lambda: rcs_b), "no CONNACK"
    time.sleep(1.0)  # what a session handed over would deliver comes right after it
    _stop(b)
    assert rcs_b == [0] and got_b == [], (rcs_b, got_b)
    # dev-a itself still gets its session back, with its secret
    a2, _, rcs_a2 = _client(gw, dev_a, gw.creds[dev_a], client_id, clean=False)
    _run(a2, gw)
    assert wait_until(lambda: rcs_a2 == [0])
    _stop(a2)


@pytest.mark.parametrize("consumer", ["plugin", "subscriber"])
def test_no_message_is_retained_for_other_devices(gateways: SharedGateways,
                                                  consumer: str) -> None:
    """Check telemetry published with the retain flag is stored once and never replayed
    to another device at connect (with the internal subscriber, amqtt retained it and
    sent it to every device that subscribed to anything)."""
    g = gateways.get(consumer)
    added = gateways.add_devices(g, "dev-a", "dev-b")
    (dev_a, secret_a), (dev_b, secret_b) = added["dev-a"], added["dev-b"]
    a, got_a, _ = _client(g, dev_a, secret_a)
    a.on_connect = lambda cl, *args: cl.subscribe(f"edgewise/{dev_a}/ack", qos=1)
    _run(a, g)
    assert wait_until(lambda: len(got_a) >= 1)
    msg = {"ts": time.time() - 5, "metrics": {"secret_reading": 42.0}, "seq": 1}
    a.publish(f"edgewise/{dev_a}/telemetry", json.dumps(msg), qos=1, retain=True)
    assert wait_until(lambda: any(json.loads(p).get("seq") == 1 for _, p in got_a))
    b, got_b, _ = _client(g, dev_b, secret_b)
    b.on_connect = lambda cl, *args: cl.subscribe(f"edgewise/{dev_b}/ack", qos=1)
    _run(b, g)
    assert wait_until(lambda: len(got_b) >= 1)
    time.sleep(1.0)
    _stop(a, b)
    assert {t for t, _ in got_b} == {f"edgewise/{dev_b}/ack"}, got_b


def test_a_device_cannot_lock_another_out_by_squatting_its_id(gw) -> None:
    """Check a device using another device's id as its client id does not lock that
    device out of it (a client id was bound to whoever used it first, for the broker's
    life: dev-a connecting once as 'dev-b' locked dev-b out until a restart), and a device
    registered after someone used its id as a client id can use it."""
    dev_a, dev_b = gw.names["dev-a"], gw.names["dev-b"]
    a, _, rcs_a = _client(gw, dev_a, gw.creds[dev_a], dev_b)
    _run(a, gw)
    assert wait_until(lambda: rcs_a == [0]), rcs_a  # a client id of dev-a's own
    _stop(a)
    b, _, rcs_b = _client(gw, dev_b, gw.creds[dev_b], dev_b)
    _run(b, gw)
    assert wait_until(lambda: rcs_b == [0]), rcs_b
    _stop(b)
    pump = f"pump-9-{uuid.uuid4().hex[:6]}"  # not registered yet
    early, _, rcs_e = _client(gw, dev_a, gw.creds[dev_a], pump, clean=False)
    _run(early, gw)
    assert wait_until(lambda: rcs_e == [0]), rcs_e
    _stop(early)
    sec = Security(gw.data_dir)
    secret = sec.add_device(pump)[1]
    sec.close()
    late, _, rcs_l = _client(gw, pump, secret, pump, clean=False)
    _run(late, gw)
    assert wait_until(lambda: rcs_l == [0]), rcs_l
    _stop(late)


def test_a_refused_connect_gets_connack_not_authorized(gw) -> None:
    """Check a CONNECT with a wrong secret, or none, is answered CONNACK 0x05 before the
    socket closes (it was closed with no answer: clients saw a network fault and retried)."""
    dev_a = gw.names["dev-a"].encode()

    def connect(flags: int, user: bytes = dev_a, pw: bytes = b"wrong") -> bytes:
        def s(b: bytes) -> bytes:
            return len(b).to_bytes(2, "big") + b
        body = (s(b"MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big") + s(b"raw-1")
                + (s(user) if flags & 0x80 else b"") + (s(pw) if flags & 0x40 else b""))
        with socket.create_connection(("127.0.0.1", gw.mqtt_port), timeout=5) as so:
            so.sendall(bytes([0x10, len(body)]) + body)
            return so.recv(16)

    assert connect(0xC2) == b"\x20\x02\x00\x05"
    assert connect(0x02) == b"\x20\x02\x00\x05"
