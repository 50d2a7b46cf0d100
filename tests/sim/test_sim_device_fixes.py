"""Hunt fixes in the simulated devices (``edgewise.sim.device`` / ``fleet``): a failed
start that stops and says why, a fleet start that stops what it started, one copy per
message after an outage, stalled-ack resends in bounded batches with backoff, fault
readings that are always sent, held readings sent at a stop, whole-microsecond periods."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgewise.errors import InvalidParameterError
from edgewise.sim.device import MqttDevice
from edgewise.sim.fleet import FleetRunner
from edgewise.sim.pumps import PumpFleet
from tests.conftest import free_port, wait_until
from tests.transport.conftest import Proxy

T0 = 1_700_000_000 * 10**9


class _Info:
    """Stands in for paho's MQTTMessageInfo: ``published`` = the broker acknowledged it;
    ``lost_link``: published as the link went down (paho keeps it, and its error code)."""

    def __init__(self, published: bool = True, lost_link: bool = False) -> None:
        self.published, self.lost_link = published, lost_link
        self.rc = 4 if lost_link else 0  # MQTT_ERR_NO_CONN, MQTT_ERR_SUCCESS

    def is_published(self) -> bool:
        if self.lost_link:  # as paho: even once it has delivered it after the reconnect
            raise RuntimeError("Message publish failed: The client is not currently connected.")
        return self.published


def _offline_device(resend_after_s: float = 5.0, **kw: Any
                    ) -> tuple[MqttDevice, list[int]]:
    """A device that believes it is connected and records the seq of each telemetry
    publish instead of sending it (the broker acknowledges each at once)."""
    d = MqttDevice("dev", "s", port=free_port(), resend_after_s=resend_after_s, **kw)
    d._connected.set()
    out: list[int] = []

    def publish(topic: str, payload: bytes, qos: int = 1) -> _Info:
        out.append(json.loads(payload)["seq"])
        return _Info()

    d.client.publish = publish  # type: ignore[method-assign]
    return d, out


def _ack(d: MqttDevice, seq: int) -> None:
    """The gateway's ack ``{"seq": seq}`` reaching ``d``."""
    d._on_message(d.client, None, SimpleNamespace(  # type: ignore[arg-type]
        topic=d.ack_topic, payload=json.dumps({"seq": seq}).encode()))


def _paho_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("paho-mqtt-client")]


# -- 1. a start that fails stops, and names why -------------------------------------------


def test_a_device_that_cannot_connect_stops_its_thread_and_names_why() -> None:
    """Check a failed start raised "could not connect" with no reason and left paho's
    network thread reconnecting for ever."""
    before = set(_paho_threads())
    d = MqttDevice("dev3", "s", port=free_port())
    with pytest.raises(ConnectionError) as exc:
        d.start(timeout=1.0)
    try:
        assert wait_until(lambda: not set(_paho_threads()) - before, 2.0), _paho_threads()
    finally:
        d.stop()
    assert "within 1 s; last error: ConnectionRefusedError" in str(exc.value), exc.value


def _cert_for(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate naming only DNS ``name``, and its key."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cp, kp = folder / f"{name}.pem", folder / f"{name}.key"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp


@contextlib.contextmanager
def tls_listener(cert: Path, key: Path) -> Iterator[int]:
    """A TLS listener on 127.0.0.1 serving ``cert`` (it speaks no MQTT: the handshake is
    what is tried), closing each connection after it; its port."""
    srv = socket.create_server(("127.0.0.1", 0))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            try:
                ctx.wrap_socket(c, server_side=True).close()
            except (OSError, ssl.SSLError):
                c.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


def test_a_tls_certificate_that_fails_is_named_in_the_start_error(tmp_path: Path) -> None:
    """Check a broker certificate that does not name the host the device dials is named
    as the reason (it was "could not connect within 10 s", nothing about TLS)."""
    cert, key = _cert_for(tmp_path, "gw.example.com")
    with tls_listener(cert, key) as port:
        d = MqttDevice("tls", "s", port=port, tls_ca=str(cert))
        with pytest.raises(ConnectionError) as exc:
            d.start(timeout=1.5)
        assert "TLS certificate verification failed" in str(exc.value), exc.value
        assert "127.0.0.1" in str(exc.value) and "mismatch" in str(exc.value), exc.value


def test_a_fleet_start_that_fails_stops_the_devices_it_started(mosquitto_port: int) -> None:
    """Check a device that cannot connect left the devices started before it connected,
    their network threads running."""
    fleet = PumpFleet(3, seed=0)
    r = FleetRunner(fleet, [(d, "s") for d in fleet.device_ids], port=mosquitto_port)

    def fail(*args: Any, **kw: Any) -> MqttDevice:
        raise ConnectionError("could not connect (stands in for a TLS failure)")

    r.devices[1].start = fail  # type: ignore[method-assign]
    with pytest.raises(ConnectionError, match="stands in"):
        r.start()
    first = r.devices[0]
    assert wait_until(lambda: first.client._thread is None, 3.0), "left running"
    assert not first.connected and not first.client.is_connected()
    assert r.devices[2].client._thread is None  # never started
    assert r._thread is None


# -- 2. one copy per message after an outage ----------------------------------------------


def test_messages_sent_during_an_outage_reach_the_broker_once(mosquitto_port: int) -> None:
    """Check every message published while the link was down went out twice after the
    reconnect: paho queued it, and the reconnect's resend published it again (50 -> 100)."""
    import paho.mqtt.client as mqtt

    prefix = f"simfix-{uuid.uuid4().hex[:8]}"
    got: list[int] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-count")
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload)["seq"])
    sub.connect("127.0.0.1", mosquitto_port)
    sub.subscribe(f"{prefix}/dev/telemetry", 1)
    sub.loop_start()
    proxy = Proxy(mosquitto_port)
    d = MqttDevice("dev", "s", port=proxy.port, topic_prefix=prefix, resend_after_s=1e9)
    try:
        d.start(resume=False, timeout=5)
        d.send(1.7e9, {"t": 0.0})
        assert wait_until(lambda: got == [1], 5), got
        sub.publish(f"{prefix}/dev/ack", json.dumps({"seq": 1}), qos=1)  # the gateway's
        assert wait_until(lambda: d.acked == 1 and not d.pending, 5)
        proxy.cut()
        assert wait_until(lambda: not d.connected, 5)
        for i in range(50):
            d.send(1.7e9 + 1 + i, {"t": 1.0})
        proxy.restore()
        assert wait_until(lambda: d.connected, 10)
        assert wait_until(lambda: len(set(got)) == 51, 10), len(set(got))
        time.sleep(1.0)  # a second copy would come now
        copies = Counter(got)
        assert max(copies.values()) == 1, Counter(copies.values())
        assert d.connects == 2
    finally:
        d.stop()
        proxy.close()
        sub.loop_stop()
        sub.disconnect()


def test_a_resend_skips_only_what_paho_still_holds() -> None:
    """Check a resend skips the messages paho holds sent and unacknowledged by the broker
    (paho sends those again itself after a reconnect), and nothing else: one published as
    the link went down is sent again (paho's handle of it raises, even once delivered)."""
    d, _ = _offline_device()
    infos = {1: _Info(False), 2: _Info(lost_link=True), 3: _Info(True), 4: _Info(True)}
    sent: list[int] = []

    def publish(topic: str, payload: bytes, qos: int = 1) -> _Info:
        seq = json.loads(payload)["seq"]
        sent.append(seq)
        return infos.get(seq, _Info())

    d.client.publish = publish  # type: ignore[method-assign]
    for i in range(4):
        d.send(1.7e9 + i, {"t": 1.0})
    d._connected.clear()
    d.send(1.7e9 + 9, {"t": 1.0})  # while disconnected: kept, not handed to paho
    assert sent == [1, 2, 3, 4]
    d._connected.set()
    sent.clear()
    assert d.resend() == 4
    assert sent == [2, 3, 4, 5]


def test_a_reconnect_sends_every_pending_message_once() -> None:
    """Check the reconnect drops paho's own copies and sends each pending message once,
    those paho held included (they must not be skipped once paho forgot them)."""
    d, out = _offline_device()
    d.client.publish = lambda topic, payload, qos=1: (  # type: ignore[method-assign]
        out.append(json.loads(payload)["seq"]), _Info(False))[1]  # never acknowledged
    for i in range(3):
        d.send(1.7e9 + i, {"t": 1.0})
    d._connected.clear()
    d.send(1.7e9 + 3, {"t": 1.0})
    out.clear()
    d.connects = 1
    d._on_connect(d.client, None, None, SimpleNamespace(is_failure=False))
    assert sorted(out) == [1, 2, 3, 4] and d.connects == 2 and d.connected


# -- 3. stalled acks: bounded batches with backoff ----------------------------------------


def test_stalled_acks_resend_bounded_batches_oldest_first_with_backoff() -> None:
    """Check a device without acks republished all it held every ``resend_after_s``
    (200 messages -> 2000 publishes in 5 s), with no cap and no backoff."""
    d, out = _offline_device(resend_after_s=0.05)
    for i in range(250):
        d.send(1.7e9 + i, {"t": 1.0})
    assert out == list(range(1, 251))
    out.clear()
    assert not d.wait_acked(1.5)
    batches = [out[i:i + 100] for i in range(0, len(out), 100)]
    assert all(b == list(range(1, 101)) for b in batches), out  # the oldest, 100 at a time
    # waits of 0.05, 0.1, 0.2, 0.4, 0.8 s (each 1-1.5 times that): at most 5 in 1.5 s
    assert 3 <= len(batches) <= 5, len(batches)
    assert d.resends == len(out)


def test_an_ack_covering_a_resent_batch_sends_the_next_one_at_once() -> None:
    """Check acks moving again go on through what was pending, a batch at a time, and
    reset the backoff."""
    d, out = _offline_device(resend_after_s=0.05)
    for i in range(250):
        d.send(1.7e9 + i, {"t": 1.0})
    out.clear()
    time.sleep(0.08)
    d.tick()
    assert out == list(range(1, 101))
    d.tick()
    assert len(out) == 100  # the batch is on its way
    _ack(d, 100)
    d.tick()
    assert out[100:] == list(range(101, 201))
    d.send(1.7e9 + 250, {"t": 1.0})  # seq 251, sent after the stall began: not resent
    _ack(d, 200)
    d.tick()
    assert out[201:] == list(range(201, 251))
    _ack(d, 251)
    assert not d.pending and d._wait == 0.05 and d.resends == 250


@pytest.mark.parametrize("kw", [{"resend_after_s": 0.0}, {"resend_batch": 0},
                                {"resend_after_s": 5.0, "max_resend_after_s": 1.0}])
def test_bad_resend_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(InvalidParameterError, match="must be"):
        MqttDevice("d", "s", **kw)  # type: ignore[arg-type]


# -- 4-6. the fleet: ground truth, held readings, period ----------------------------------


def _recording_runner(fleet: PumpFleet, **kw: Any
                      ) -> tuple[FleetRunner, dict[str, dict[int, dict[str, Any]]]]:
    """A runner whose devices record what they send (``{device: {ts_ns: record}}``),
    each message acknowledged at once as a gateway would (its seq watermark)."""
    from edgewise.telemetry import decode

    r = FleetRunner(fleet, [(d, "s") for d in fleet.device_ids], **kw)
    sent: dict[str, dict[int, dict[str, Any]]] = {}
    for d in r.devices:
        d._connected.set()
        seen: set[int] = set()

        def publish(topic: str, payload: bytes, qos: int = 1, _d: MqttDevice = d,
                    _seen: set[int] = seen) -> _Info:
            rec = json.loads(payload)
            ts = decode(payload, _d.device_id, now_ns=4 * 10**18).readings[0].ts_ns
            sent.setdefault(_d.device_id, {})[ts] = rec
            _seen.add(rec["seq"])
            w = _d.acked
            while w + 1 in _seen:
                w += 1
            _ack(_d, w)
            return _Info()

        d.client.publish = publish  # type: ignore[method-assign]
    return r, sent


def test_a_fault_reading_is_never_skipped_or_stripped_of_its_sensor() -> None:
    """Check gaps and sensor dropouts were drawn after the fleet's step, so a fault's
    only reading (a spike) could go unsent while labels() listed it (2 of 95 faults)."""
    fleet = PumpFleet(6, seed=1, fault_rate_per_h=60.0)
    r, sent = _recording_runner(fleet, p_gap=0.3, p_dropout=0.3, p_duplicate=0, p_swap=0)
    for i in range(3000):
        r._emit(T0 + i * 10**9)
    labels = fleet.labels(until_ns=fleet.last_ns)
    assert len(labels) > 15 and {x["kind"] for x in labels} >= {"spike", "drift"}
    for f in labels:
        for ts in range(int(f["start_ns"]), int(f["end_ns"]) + 1, 10**9):
            rec = sent[str(f["device_id"])].get(ts)
            assert rec is not None, (f, ts)
            assert set(f["metrics"]) <= set(rec["metrics"]), (f, rec)
    # elsewhere samples are skipped as drawn (0.3)
    outside = [(dev, ts) for dev in fleet.device_ids for ts in range(T0, T0 + 3000 * 10**9, 10**9)
               if not any(f["device_id"] == dev and f["start_ns"] <= ts <= f["end_ns"]
                          for f in labels)]
    skipped = sum(ts not in sent[dev] for dev, ts in outside)
    assert len(outside) > 1000 and 0.25 < skipped / len(outside) < 0.35, (len(outside), skipped)


def test_a_reading_held_back_at_stop_is_sent() -> None:
    """Check a swapped reading (to go after the next one) was never sent when the run
    stopped first, and its seq held every later ack back."""
    fleet = PumpFleet(2, seed=0)
    r, sent = _recording_runner(fleet, p_gap=0, p_dropout=0, p_duplicate=0, p_swap=1.0)
    for i in range(3):  # held, sent with the held one after it, held
        r._emit(T0 + i * 10**9)
    assert r._held
    r.stop()
    assert not r._held
    for d in r.devices:
        assert sorted(rec["seq"] for rec in sent[d.device_id].values()) == [1, 2, 3]
        assert sorted(sent[d.device_id]) == [T0, T0 + 10**9, T0 + 2 * 10**9]
        assert not d.pending and d.acked == 3


def test_a_period_that_is_not_whole_microseconds_keeps_fault_times_stored() -> None:
    """Check ``period_s=1/3`` stepped 333333333 ns: the gateway keeps times to the
    microsecond, so a fault's start (in ns) was not the time stored for its reading."""
    fleet = PumpFleet(20, seed=0, fault_rate_per_h=3600.0)
    r, sent = _recording_runner(fleet, period_s=1 / 3, backfill_s=20.0, p_gap=0,
                                p_dropout=0, p_duplicate=0, p_swap=0)
    t = threading.Thread(target=r._run, daemon=True)
    t.start()
    try:
        assert wait_until(lambda: all(len(sent.get(d, ())) >= 60 for d in fleet.device_ids),
                          10)
    finally:
        r._stop.set()
        t.join(5)
    labels = fleet.labels(until_ns=fleet.last_ns)
    assert len(labels) > 10
    off = [f for f in labels if f["start_ns"] not in sent[str(f["device_id"])]]
    assert not off, off[:3]
    assert r.step_ns == 333_333_000 and r.period_s == 0.333333


@pytest.mark.parametrize("period", [1e-7, 0.0, -1.0, float("nan")])
def test_a_period_under_a_microsecond_is_refused(period: float) -> None:
    with pytest.raises(InvalidParameterError, match=r"period_s must be at least 1e-06"):
        FleetRunner(PumpFleet(1), [], period_s=period)
