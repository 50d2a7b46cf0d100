"""The embedded broker against session hijacking and revoked credentials (security hunt
H1, H2), on a real ``edgewise serve`` process (one per consumer for the module; each test
registers a device of its own on it, named afresh, and uses client ids of its own).

H1: amqtt dropped (clean session) or rewrote (persistent session) the session of a
CONNECT's client id *before* authenticating it, so an unauthenticated CONNECT reusing a
live device's client id cut the device off: its later telemetry was PUBACKed and dropped.
H2: deleting a device left its open MQTT connection publishing; after the id was
registered again, the old secret's connection wrote as the new device (also, later, with
the internal subscriber consumer). A persistent-session reconnect over a half-open old
connection left the live one without acks and out of reach of revocation.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from edgewise.security.credentials import Security
from tests.conftest import wait_until
from tests.gateway.test_mqtt_acl import SharedGateways

T0 = time.time() - 600


@dataclass
class Client:
    """A paho client and what it saw: CONNACK code, acks, disconnects."""

    client: mqtt.Client
    rc: list[str] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    subscribed: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def publish(self, device: str, seq: int, value: float) -> None:
        body = {"ts": T0 + seq, "seq": seq, "metrics": {"t": value}}
        self.client.publish(f"edgewise/{device}/telemetry", json.dumps(body), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _connect(port: int, user: str | None, secret: str | None, client_id: str, *,
             clean: bool = True, subscribe: str | None = None) -> Client:
    """Connect (no reconnects); wait for the CONNACK or the refusal."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                    reconnect_on_failure=False)
    out = Client(c)
    answered = threading.Event()
    if user is not None:
        c.username_pw_set(user, secret)

    def on_connect(cl: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        out.rc.append(str(rc))
        answered.set()
        if subscribe and not rc.is_failure:
            cl.subscribe(subscribe, qos=1)

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        out.rc.append(f"disconnected: {rc}")
        out.disconnected.set()
        answered.set()

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        out.acks.append(json.loads(m.payload)["seq"])

    c.on_connect, c.on_disconnect, c.on_message = on_connect, on_disconnect, on_message
    c.on_subscribe = lambda *_: out.subscribed.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert answered.wait(10), "no answer to CONNECT"
    return out


def _stored(gw: Any, admin: str, device: str) -> list[float]:
    r = httpx.get(f"http://127.0.0.1:{gw.http_port}/v1/devices/{device}/readings",
                  params={"metric": "t", "start": T0 - 10, "end": T0 + 1000},
                  headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    series = r.json()["series"]
    return [float(v) for v in series["t"]["v"]] if "t" in series else []


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedGateways]:
    yield from SharedGateways.for_module(tmp_path_factory, "hijack")


@pytest.fixture(params=["plugin", "subscriber"])
def consumer(request: pytest.FixtureRequest) -> str:
    """Both ways the gateway consumes telemetry (``EDGEWISE_MQTT_CONSUMER``)."""
    return str(request.param)


def _gateway(gateways: SharedGateways, consumer: str) -> tuple[Any, str, str, str]:
    """The module's gateway for ``consumer``, a device new to it (its name doubles as
    its client id, as pump-1's did), its secret, and an admin token."""
    gw = gateways.get(consumer)
    ((dev, secret),) = gateways.add_devices(gw, "pump").values()
    return gw, dev, secret, gw.admin


def test_unauthenticated_connect_with_a_live_client_id_does_not_cut_the_device_off(
        gateways: SharedGateways, consumer: str) -> None:
    """Check a refused CONNECT (anonymous with clean session, or a wrong secret with a
    persistent session) reusing a connected device's client id leaves that device's
    session alone: its later telemetry is stored and acknowledged."""
    gw, dev, secret, admin = _gateway(gateways, consumer)
    victim = _connect(gw.mqtt_port, dev, secret, dev, subscribe=f"edgewise/{dev}/ack")
    try:
        assert victim.rc == ["Success"] and victim.subscribed.wait(10)
        victim.publish(dev, 1, 1.0)
        assert wait_until(lambda: 1 in victim.acks, 10), victim.acks
        for user, pw, clean in ((None, None, True), (dev, "wrong", False),
                                (dev, "wrong", True)):
            attacker = _connect(gw.mqtt_port, user, pw, dev, clean=clean)
            attacker.close()
            assert attacker.rc[0] != "Success", attacker.rc
        assert not victim.disconnected.is_set()
        victim.publish(dev, 2, 2.0)
        assert wait_until(lambda: 2 in victim.acks, 10), f"no ack after the attack: {victim.acks}"
        assert _stored(gw, admin, dev) == [1.0, 2.0]
    finally:
        victim.close()


def test_a_replaced_connection_is_closed_not_left_dropping(gateways: SharedGateways,
                                                           consumer: str) -> None:
    """Check that when a device connects again with its client id and clean session while
    its first connection is still open, the first one is closed (so it reconnects) rather
    than left without a session, its messages PUBACKed and dropped."""
    gw, dev, secret, _ = _gateway(gateways, consumer)
    first = _connect(gw.mqtt_port, dev, secret, dev)
    second = _connect(gw.mqtt_port, dev, secret, dev,
                      subscribe=f"edgewise/{dev}/ack")
    try:
        assert second.rc == ["Success"] and second.subscribed.wait(10)
        assert first.disconnected.wait(10), "the replaced connection was left open"
        second.publish(dev, 1, 1.0)
        assert wait_until(lambda: 1 in second.acks, 10), second.acks
    finally:
        first.close()
        second.close()


def test_deleting_a_device_over_http_closes_its_connection(gateways: SharedGateways,
                                                           consumer: str) -> None:
    """Check DELETE /v1/devices/{id} closes the device's open MQTT connection at once."""
    gw, dev, secret, admin = _gateway(gateways, consumer)
    thief = _connect(gw.mqtt_port, dev, secret, f"x-{uuid.uuid4().hex[:6]}")
    try:
        assert thief.rc == ["Success"]
        r = httpx.delete(f"http://127.0.0.1:{gw.http_port}/v1/devices/{dev}",
                         headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        assert r.status_code == 200, r.text
        assert thief.disconnected.wait(5), "the revoked device is still connected"
    finally:
        thief.close()


def test_a_connection_with_a_revoked_secret_never_writes_as_the_new_device(
        gateways: SharedGateways, consumer: str) -> None:
    """Check a device deleted and registered again under the same id by another process
    (the CLI): the connection opened with the old secret is closed and what it sends is
    neither stored nor acknowledged, while the new secret works."""
    gw, dev, secret, admin = _gateway(gateways, consumer)
    thief = _connect(gw.mqtt_port, dev, secret, f"thief-{dev}",
                     subscribe=f"edgewise/{dev}/ack")
    try:
        assert thief.subscribed.wait(10)
        sec = Security(gw.data_dir)
        sec.delete_device(dev)
        _, new_secret = sec.add_device(dev)
        sec.close()
        thief.publish(dev, 1, 999.0)  # at once, before any poll could close it
        assert thief.disconnected.wait(5), "the connection with the revoked secret is open"
        device = _connect(gw.mqtt_port, dev, new_secret, dev,
                          subscribe=f"edgewise/{dev}/ack")
        try:
            assert device.subscribed.wait(10)
            device.publish(dev, 1, 1.0)
            assert wait_until(lambda: 1 in device.acks, 10), device.acks
        finally:
            device.close()
        assert 999.0 not in _stored(gw, admin, dev)
        assert _stored(gw, admin, dev) == [1.0]
        assert thief.acks in ([], [0]), thief.acks
    finally:
        thief.close()


def _socket_closed(sock: Any) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_persistent_reconnect_over_a_half_open_connection_keeps_its_acks(
        gateways: SharedGateways, consumer: str) -> None:
    """Check a device that reconnects with its client id and a persistent session while
    its old connection is half-open (socket open, silent): the old one is closed, the new
    one gets its acks (also after the old one's keep-alive would have run out), and
    deleting the device closes the new one at once."""
    gw, dev, secret, admin = _gateway(gateways, consumer)
    old = _connect(gw.mqtt_port, dev, secret, dev, clean=False,
                   subscribe=f"edgewise/{dev}/ack")
    new = None
    try:
        assert old.subscribed.wait(10)
        old.publish(dev, 1, 1.0)
        assert wait_until(lambda: 1 in old.acks, 10), old.acks
        sock = old.client.socket()
        old.client.loop_stop()  # half-open: nothing read or sent any more
        new = _connect(gw.mqtt_port, dev, secret, dev, clean=False,
                       subscribe=f"edgewise/{dev}/ack")
        assert new.rc == ["Success"] and new.subscribed.wait(10)
        assert wait_until(lambda: _socket_closed(sock), 5), "the old connection is open"
        time.sleep(0.5)  # the old connection's loop has ended by now
        new.publish(dev, 2, 2.0)
        assert wait_until(lambda: 2 in new.acks, 10), f"no ack on the live one: {new.acks}"
        assert _stored(gw, admin, dev) == [1.0, 2.0]
        r = httpx.delete(f"http://127.0.0.1:{gw.http_port}/v1/devices/{dev}",
                         headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        assert r.status_code == 200, r.text
        assert new.disconnected.wait(5), "the revoked device's live connection is open"
    finally:
        if new is not None:
            new.close()
        old.client.disconnect()
