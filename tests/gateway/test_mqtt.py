"""MQTT behaviour of a real gateway process with the embedded broker (and Mosquitto when it
answers): acks, dead letters with counters, auth, topic ACL, throttling, rate limits,
seq gaps, out-of-order readings, TLS."""

from __future__ import annotations

import json
import socket
import time
import uuid

import httpx
import pytest

from edgewise.security.credentials import Security
from edgewise.sim.device import MqttDevice
from edgewise.store import open_store
from tests.conftest import self_signed_cert, wait_until
from tests.gateway.conftest import GatewayProcess

T0 = time.time() - 3600


def _metrics(gw: GatewayProcess) -> str:
    return httpx.get(f"http://127.0.0.1:{gw.http_port}/metrics", timeout=10).text


def _counter(text: str, name: str, **labels: str) -> float:
    lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    key = f"{name}{{{lab}}}" if lab else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = tmp_path_factory.mktemp("mqtt") / "ew"
    data.mkdir()
    sec = Security(data)
    creds = {name: sec.add_device(name)[1] for name in
             ("good", "other", "bad", "throttled", "fast", "gappy", "late")}
    sec.close()
    import os

    old = {k: os.environ.get(k) for k in ("EDGEWISE_RATE_LIMIT_PER_S",
                                          "EDGEWISE_RATE_LIMIT_BURST",
                                          "EDGEWISE_MAX_PAYLOAD_BYTES",
                                          "EDGEWISE_SEQ_GAP_GRACE_S")}
    os.environ.update(EDGEWISE_RATE_LIMIT_PER_S="20", EDGEWISE_RATE_LIMIT_BURST="100",
                      EDGEWISE_MAX_PAYLOAD_BYTES="4096", EDGEWISE_SEQ_GAP_GRACE_S="1")
    gw = GatewayProcess(data).start()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k)
        else:
            os.environ[k] = v
    yield gw, creds
    gw.kill()


def _device(env, name: str, **kw) -> MqttDevice:
    gw, creds = env
    return MqttDevice(name, creds[name], port=gw.mqtt_port, **kw).start(resume=False)


def test_good_messages_are_stored_and_acked(env) -> None:
    d = _device(env, "good")
    try:
        for i in range(20):
            d.send(T0 + i, {"flow": 10.0 + i, "temp": 40.0})
        assert d.wait_acked(15)
        assert d.acked == 20
    finally:
        d.stop()


def test_bad_payloads_are_deadlettered_counted_and_good_records_kept(env) -> None:
    gw, _ = env
    before = _metrics(gw)
    d = _device(env, "bad")
    try:
        batch = [{"ts": T0, "metrics": {"a": 1.0}, "seq": 1},
                 {"ts": T0 + 1, "metrics": {"a": "hot"}, "seq": 2},
                 {"ts": T0 + 2, "metrics": {"a": 2.0}, "seq": 3}]
        d.publish_raw(d.telemetry_topic, json.dumps(batch).encode())
        d.publish_raw(d.telemetry_topic, b"{not json")
        d.publish_raw(d.telemetry_topic, b'{"ts": 1700000000, "metrics": {"a": NaN}, "seq": 4}')
        d.publish_raw(d.telemetry_topic, json.dumps(
            {"ts": time.time() + 86400, "metrics": {"a": 1.0}, "seq": 5}).encode())
        d.publish_raw(d.telemetry_topic, json.dumps(
            {"ts": T0, "metrics": {f"m{i}": 1.0 for i in range(400)}}).encode())
        assert wait_until(lambda: len(d.deadletters) >= 5), d.deadletters
        reasons = sorted(p["reason"] for p in d.deadletters)
        assert reasons == ["bad_json", "bad_type", "future_ts", "not_finite", "too_large"]
        bad_type = next(p for p in d.deadletters if p["reason"] == "bad_type")
        assert (bad_type["field"], bad_type["value"], bad_type["index"]) == ("metrics.a", "hot", 1)
        assert set(bad_type) >= {"reason", "detail", "field", "value", "index"}
        assert wait_until(lambda: d.acked >= 4)
    finally:
        d.stop()
    after = _metrics(gw)
    for reason in ("bad_json", "bad_type", "future_ts", "not_finite", "too_large"):
        assert (_counter(after, "edgewise_messages_deadlettered_total", reason=reason)
                - _counter(before, "edgewise_messages_deadlettered_total", reason=reason)) == 1
    store_rows = _query(gw, "bad")
    assert sorted(v for _, _, v in store_rows) == [1.0, 2.0]


def _query(gw: GatewayProcess, device: str) -> list[tuple[str, int, float]]:
    sec = Security(gw.data_dir)
    token = sec.create_token("viewer", "test")
    sec.close()
    r = httpx.get(f"http://127.0.0.1:{gw.http_port}/v1/devices/{device}/readings",
                  headers={"Authorization": f"Bearer {token}"}, timeout=10)
    r.raise_for_status()
    rows = []
    for metric, s in r.json()["series"].items():
        rows.extend((metric, t, v) for t, v in zip(s["t"], s["v"], strict=True))
    return rows


def _connect(gw: GatewayProcess, user: str | None, password: str | None) -> bool:
    """One raw MQTT 3.1.1 CONNECT; True if the broker answers CONNACK 0 (exactly one try)."""

    def field(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    flags = 0x02
    payload = field(f"probe-{uuid.uuid4().hex[:8]}".encode())
    if user is not None:
        flags |= 0x80
        payload += field(user.encode())
        if password is not None:
            flags |= 0x40
            payload += field(password.encode())
    body = field(b"MQTT") + bytes([4, flags]) + (5).to_bytes(2, "big") + payload
    n, rem = len(body), b""
    while True:
        n, digit = divmod(n, 128)
        rem += bytes([digit | (0x80 if n else 0)])
        if not n:
            break
    with socket.create_connection(("127.0.0.1", gw.mqtt_port), timeout=10) as sock:
        sock.sendall(bytes([0x10]) + rem + body)
        try:
            answer = sock.recv(4)
        except (ConnectionResetError, TimeoutError):
            return False
    return len(answer) == 4 and answer[0] == 0x20 and answer[3] == 0


def test_a_device_deleted_while_connected_stores_nothing_more(env) -> None:
    """Check an MQTT connection that outlives its device (deleted while connected, here by
    another process as `edgewise device delete` does) stores nothing more and is closed
    (its credentials are revoked); it used to go on storing for good."""
    gw, creds = env
    sec = Security(gw.data_dir)
    creds["doomed"] = sec.add_device("doomed")[1]
    sec.close()
    d = _device(env, "doomed")
    try:
        d.send(T0, {"a": 1.0})
        assert d.wait_acked(15)
        sec = Security(gw.data_dir)
        sec.delete_device("doomed")
        sec.close()
        d.send(T0 + 1, {"a": 2.0})

        def closed() -> bool:
            q = httpx.get(f"http://127.0.0.1:{gw.http_port}/metrics", timeout=10).text
            return _counter(q, "edgewise_mqtt_connections_closed_total", reason="revoked") >= 1
        assert wait_until(closed, 10)
    finally:
        d.stop()
    assert d.acked == 1
    assert [v for _, _, v in _query(gw, "doomed")] in ([], [1.0])


def test_a_device_is_never_told_another_devices_ack(env) -> None:
    """Check a device that connects while others hold acks receives on its ack topic only
    its own watermark, from the store, at once (amqtt sent every retained ack of every
    subscribed topic to each new client, past the topic ACL)."""
    import paho.mqtt.client as mqtt

    gw, creds = env
    for name in ("good", "other"):
        d = _device(env, name)
        try:
            d.send(T0 + 500, {"a": 1.0})
            assert d.wait_acked(15)
        finally:
            d.stop()
    got: list[tuple[str, bytes]] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"spy-{uuid.uuid4().hex[:6]}")
    c.username_pw_set("late", creds["late"])
    c.on_connect = lambda cl, *_: cl.subscribe([("edgewise/late/ack", 1)])
    c.on_message = lambda _c, _u, m: got.append((m.topic, m.payload))
    other = _device(env, "other")  # keeps a subscription to its own ack open meanwhile
    try:
        c.connect("127.0.0.1", gw.mqtt_port)
        c.loop_start()
        assert wait_until(lambda: len(got) >= 1)
        time.sleep(1.0)
    finally:
        c.loop_stop()
        c.disconnect()
        other.stop()
    assert {t for t, _ in got} == {"edgewise/late/ack"}, got
    assert json.loads(got[0][1]) == {"seq": 0}


def test_auth_refuses_wrong_anonymous_empty_and_unknown(env) -> None:
    gw, creds = env
    before = _counter(_metrics(gw), "edgewise_auth_failures_total", reason="bad_secret")
    assert _connect(gw, "good", creds["good"])
    assert not _connect(gw, "good", "not-the-secret")
    assert not _connect(gw, None, None)
    assert not _connect(gw, "good", "")
    assert not _connect(gw, "nobody", "whatever-secret")
    m = _metrics(gw)
    assert _counter(m, "edgewise_auth_failures_total", reason="bad_secret") - before == 2
    assert _counter(m, "edgewise_auth_failures_total", reason="anonymous") >= 1
    assert _counter(m, "edgewise_auth_failures_total", reason="empty_password") >= 1


def test_publishing_as_another_device_is_deadlettered(env) -> None:
    gw, _ = env
    d = _device(env, "other")
    try:
        d.publish_raw("edgewise/good/telemetry",
                      json.dumps({"ts": T0 + 999, "metrics": {"flow": -1.0}}).encode())
        d.publish_raw("edgewise/other/ack", b'{"seq": 999}')
        assert wait_until(lambda: len(d.deadletters) >= 2)
        assert {p["reason"] for p in d.deadletters} == {"topic_not_allowed"}
        assert {p["value"] for p in d.deadletters} == {"edgewise/good/telemetry",
                                                       "edgewise/other/ack"}
    finally:
        d.stop()
    assert all(v != -1.0 for _, _, v in _query(gw, "good"))


def test_throttled_after_100_wrong_secrets(env) -> None:
    """Wrong secrets are throttled per source; the right secret is never locked out."""
    gw, creds = env
    for _ in range(101):
        _connect(gw, "throttled", "wrong")
    assert _counter(_metrics(gw), "edgewise_auth_failures_total", reason="throttled") >= 1
    assert _connect(gw, "throttled", creds["throttled"])  # the right secret still passes


def test_rate_limit_deadletters_with_reason_and_device_catches_up(env) -> None:
    gw, _ = env
    d = _device(env, "fast", resend_after_s=1.0)
    try:
        for i in range(60):  # 120 readings at once: over the burst of 100
            d.send(T0 + i, {"a": float(i), "b": 1.0})
        assert wait_until(lambda: any(p["reason"] == "rate_limited" for p in d.deadletters))
        p = next(p for p in d.deadletters if p["reason"] == "rate_limited")
        assert p["retry_after_s"] > 0
        assert d.wait_acked(30)  # refused messages are resent later and stored
        assert d.acked == 60
    finally:
        d.stop()
    assert _counter(_metrics(gw), "edgewise_readings_rejected_total", reason="rate_limited") > 0


def test_seq_gap_is_reported_as_metric_and_alert(env) -> None:
    gw, _ = env
    d = _device(env, "gappy")
    try:
        for seq in (1, 2, 3, 7, 8):
            d.send(T0 + seq, {"a": 1.0}, seq=seq)
        assert wait_until(lambda: d.acked == 3)
    finally:
        d.stop()
    sec = Security(gw.data_dir)
    token = sec.create_token("viewer", "t")
    sec.close()

    def gappy_alerts() -> str:
        return httpx.get(f"http://127.0.0.1:{gw.http_port}/v1/alerts",
                         params={"device": "gappy", "kind": "seq_gap"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10).text

    # waited for by this device's own alert: the counter is the whole gateway's, and other
    # tests' devices open gaps too (a refused message's seq counts as handled)
    assert wait_until(lambda: "4..6" in gappy_alerts(), 15), gappy_alerts()
    assert _counter(_metrics(gw), "edgewise_seq_gaps_total") >= 1


def test_out_of_order_readings_are_stored_in_time_order(env) -> None:
    gw, _ = env
    d = _device(env, "late")
    try:
        for seq in (3, 1, 2, 5, 4):
            d.send(T0 + seq, {"a": float(seq)}, seq=seq)
        assert d.wait_acked(15)
        assert d.acked == 5
    finally:
        d.stop()
    rows = _query(gw, "late")
    assert [v for _, _, v in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_tls_mqtt_and_https(gateway_factory, tmp_path) -> None:
    cert, key = (str(p) for p in self_signed_cert(tmp_path))
    gw = gateway_factory("--tls-cert", cert, "--tls-key", key)
    sec = Security(gw.data_dir)
    _, secret = sec.add_device("tls-1")
    sec.close()
    gw.start()
    d = MqttDevice("tls-1", secret, port=gw.mqtt_port, tls_ca=cert).start(resume=False)
    try:
        d.send(T0, {"a": 1.0})
        assert d.wait_acked(10)
    finally:
        d.stop()
    assert not _connect(gw, "tls-1", secret)  # plain MQTT is not spoken on the TLS port
    r = httpx.get(f"https://127.0.0.1:{gw.http_port}/healthz", verify=cert, timeout=10)
    assert r.status_code == 200
    assert gw.stop() == 0


def test_external_mosquitto_persistent_session_survives_kill_9(gateway_factory, mosquitto_port):
    mosquitto = mosquitto_port
    prefix = f"ewtest-{uuid.uuid4().hex[:10]}"
    url = f"mqtt://127.0.0.1:{mosquitto}?prefix={prefix}&client_id=gw-{prefix}"
    gw = gateway_factory("--mqtt", url)
    sec = Security(gw.data_dir)
    _, secret = sec.add_device("ext-1")
    sec.close()
    gw.start()
    d = MqttDevice("ext-1", secret, port=mosquitto, topic_prefix=prefix,
                   resend_after_s=60).start(resume=False)
    try:
        for i in range(50):
            d.send(T0 + i, {"a": float(i)})
        assert wait_until(lambda: d.acked == 50, 15)
        gw.kill()  # the broker keeps the gateway's session and queues for it
        for i in range(50, 200):
            d.send(T0 + i, {"a": float(i)})
        time.sleep(0.5)
        gw.start()
        assert wait_until(lambda: d.acked == 200, 30), d.acked  # delivered from the session
        assert d.resends == 0
        d.publish_raw(d.telemetry_topic, b"oops")
        assert wait_until(lambda: any(p["reason"] == "bad_json" for p in d.deadletters))
    finally:
        d.stop()
    assert gw.stop() == 0
    store = open_store(f"duckdb:///{gw.data_dir / 'edgewise.duckdb'}")
    try:
        assert len(store.query("ext-1")) == 200
    finally:
        store.close()


def test_internal_subscriber_consumer_mode(gateway_factory, monkeypatch) -> None:
    """The measured alternative: telemetry reaches the gateway through an internal
    MQTT subscriber instead of the broker plugin; same acks and dead letters."""
    monkeypatch.setenv("EDGEWISE_MQTT_CONSUMER", "subscriber")
    gw = gateway_factory()
    sec = Security(gw.data_dir)
    _, secret = sec.add_device("sub-1")
    _, other = sec.add_device("sub-2")
    sec.close()
    gw.start()
    d = MqttDevice("sub-1", secret, port=gw.mqtt_port).start(resume=False)
    spy = MqttDevice("sub-2", other, port=gw.mqtt_port).start(resume=False)
    try:
        for i in range(30):
            d.send(T0 + i, {"a": float(i)})
        assert d.wait_acked(15) and d.acked == 30
        d.publish_raw(d.telemetry_topic, b"{bad")
        assert wait_until(lambda: any(p["reason"] == "bad_json" for p in d.deadletters))
        assert not _connect(gw, "__gateway__", "guess")  # the internal user needs its secret
        spy.client.subscribe("edgewise/sub-1/telemetry", qos=1)  # refused by the ACL
        got: list[bytes] = []
        spy.client.on_message = lambda c, u, m: got.append(m.payload)
        d.send(T0 + 99, {"a": 1.0})
        assert d.wait_acked(10)
        time.sleep(0.3)
        assert got == []
    finally:
        d.stop()
        spy.stop()
    assert gw.stop() == 0
