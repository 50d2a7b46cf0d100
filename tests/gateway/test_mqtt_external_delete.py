"""Deleting a device clears its retained ack on an external broker (Mosquitto at
127.0.0.1:1883; skipped when it does not answer): a device registered again under the same id
was told the old watermark, resumed after it and had its first readings taken as acked."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import paho.mqtt.client as mqtt
from typer.testing import CliRunner

from edgewise.security.credentials import Security
from edgewise.sim.device import MqttDevice
from tests.conftest import wait_until

T0 = time.time() - 3600


def _retained(port: int, topic: str, timeout: float = 10.0) -> list[bytes]:
    """The retained message(s) a new subscriber to ``topic`` gets (none once cleared).

    Collected until a marker comes back: the spy subscribes to ``topic`` and a topic of its
    own in one SUBSCRIBE and, once acknowledged, publishes the marker there. The broker
    queues a subscription's retained messages while it handles the SUBSCRIBE, so they
    reach the spy ahead of the marker published after it (a fixed wait of 1 s did the
    same, slower)."""
    got: list[bytes] = []
    subscribed, marked = threading.Event(), threading.Event()
    marker = f"ewtest-spy/{uuid.uuid4().hex}"

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        if m.topic == marker:
            marked.set()
        elif m.retain and not marked.is_set():
            got.append(bytes(m.payload))

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"spy-{uuid.uuid4().hex[:8]}")
    c.on_connect = lambda cl, *_: cl.subscribe([(topic, 1), (marker, 1)])
    c.on_subscribe = lambda *_: subscribed.set()
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        assert subscribed.wait(timeout), "no SUBACK from Mosquitto"
        c.publish(marker, b"marker", qos=1)
        assert marked.wait(timeout), "the spy's marker did not come back from Mosquitto"
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def test_deleting_a_device_clears_its_retained_ack_on_mosquitto(gateway_factory,
                                                                mosquitto_port) -> None:
    """Check DELETE /v1/devices/{id} on a gateway run against Mosquitto clears the device's
    retained ack, so the device registered again starts at seq 1 and is acked from there."""
    prefix = f"ewtest-{uuid.uuid4().hex[:10]}"
    url = f"mqtt://127.0.0.1:{mosquitto_port}?prefix={prefix}&client_id=gw-{prefix}"
    ack_topic = f"{prefix}/ext-del/ack"
    gw = gateway_factory("--mqtt", url)
    sec = Security(gw.data_dir)
    _, secret = sec.add_device("ext-del")
    admin = sec.create_token("admin", "test-admin")
    sec.close()
    gw.start()
    try:
        d = MqttDevice("ext-del", secret, port=mosquitto_port, topic_prefix=prefix,
                       resend_after_s=60).start(resume=False)
        try:
            for i in range(5):
                d.send(T0 + i, {"a": float(i)})
            assert wait_until(lambda: d.acked == 5, 15.0), d.acked
        finally:
            d.stop()
        assert [json.loads(p) for p in _retained(mosquitto_port, ack_topic)] == [{"seq": 5}]

        r = httpx.delete(f"http://127.0.0.1:{gw.http_port}/v1/devices/ext-del",
                         headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        assert r.status_code == 200, r.text
        assert _retained(mosquitto_port, ack_topic) == [], "the old watermark is still retained"

        sec = Security(gw.data_dir)
        _, secret = sec.add_device("ext-del")  # the same id, registered again
        sec.close()
        again = MqttDevice("ext-del", secret, port=mosquitto_port, topic_prefix=prefix,
                           resend_after_s=60).start(resume=True)
        try:
            assert again.next_seq == 1 and again.acked == 0  # it was resumed at 6, "acked" 5
            again.send(T0 + 100, {"a": 1.0})
            assert wait_until(lambda: again.acked == 1, 15.0), again.acked
        finally:
            again.stop()
    finally:
        assert gw.stop() == 0
    # leave nothing retained behind in the broker (it persists across runs)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tidy-{uuid.uuid4().hex[:8]}")
    c.connect("127.0.0.1", mosquitto_port)
    c.loop_start()
    c.publish(ack_topic, b"", qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_device_delete_command_clears_the_retained_ack(data_dir, mosquitto_port) -> None:
    """Check 'edgewise device delete --mqtt URL' (the gateway stopped, or holding another
    store) clears the retained ack on the external broker too, and says so; a broker that does
    not answer leaves a one-line warning naming the topic, and the data is deleted all the same."""
    from edgewise.cli import app, load_commands

    prefix = f"ewtest-{uuid.uuid4().hex[:10]}"
    topic = f"{prefix}/pump-9/ack"
    sec = Security(data_dir)
    sec.add_device("pump-9")
    sec.close()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-{uuid.uuid4().hex[:8]}")
    c.connect("127.0.0.1", mosquitto_port)
    c.loop_start()
    c.publish(topic, json.dumps({"seq": 7}), qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    assert _retained(mosquitto_port, topic) == [b'{"seq": 7}']
    load_commands()
    runner = CliRunner(mix_stderr=False)
    res = runner.invoke(app, ["device", "delete", "pump-9", "--data-dir", str(data_dir),
                              "--mqtt", f"mqtt://127.0.0.1:{mosquitto_port}?prefix={prefix}",
                              "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["retained_ack_cleared"] is True
    assert _retained(mosquitto_port, topic) == []

    sec = Security(data_dir)
    sec.add_device("pump-8")
    sec.close()
    res = runner.invoke(app, ["device", "delete", "pump-8", "--data-dir", str(data_dir),
                              "--mqtt", "mqtt://127.0.0.1:9?prefix=plant"])
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("warning: MQTT broker "), \
        res.stderr
    assert "'plant/pump-8/ack' was not cleared" in res.stderr
    assert "credentials revoked" in res.stdout
