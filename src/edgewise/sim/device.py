"""A device that speaks MQTT like a real one: numbered messages, kept until acknowledged.

:class:`MqttDevice` numbers its messages with ``seq`` from 1 (or from the gateway's
retained ack + 1 when it restarts), keeps every message until the gateway's ack covers
it, and resends whatever is unacknowledged after each reconnect and whenever acks stop
coming for ``resend_after_s``. Messages are compact JSON records.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["MqttDevice"]


class MqttDevice:
    """One simulated device over a real MQTT connection (paho-mqtt 2).

    Parameters
    ----------
    device_id, secret
        Credentials (MQTT username and password).
    host, port
        The broker.
    tls_ca
        CA file to verify the broker's TLS certificate (enables TLS).
    resend_after_s
        Resend everything pending when no ack arrived for this long.
    on_ack
        Called with ``(device_id, seq, monotonic_time)`` for every ack received.
    """

    def __init__(
        self,
        device_id: str,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 1884,
        *,
        tls_ca: str | None = None,
        resend_after_s: float = 5.0,
        on_ack: Callable[[str, int, float], None] | None = None,
        client_id: str | None = None,
        topic_prefix: str = "edgewise",
    ) -> None:
        self.device_id = device_id
        self.host, self.port = host, port
        self.resend_after_s = resend_after_s
        self.on_ack = on_ack
        self.telemetry_topic = f"{topic_prefix}/{device_id}/telemetry"
        self.ack_topic = f"{topic_prefix}/{device_id}/ack"
        self.deadletter_topic = f"{topic_prefix}/{device_id}/deadletter"
        self.pending: OrderedDict[int, bytes] = OrderedDict()
        self.acked = 0
        self.next_seq = 1
        self.deadletters: list[dict[str, Any]] = []
        self.connects = 0
        self.resends = 0
        self._lock = threading.Lock()
        self._got_ack = threading.Event()
        self._connected = threading.Event()
        self._last_progress = time.monotonic()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=client_id or f"{device_id}-{id(self):x}",
                        clean_session=True)
        c.username_pw_set(device_id, secret)
        if tls_ca:
            c.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.05, 0.5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c
        self._started = False

    # -- connection ----------------------------------------------------------------------
    def start(self, timeout: float = 10.0, resume: bool = True) -> MqttDevice:
        """Connect, subscribe to acks and dead letters; with ``resume`` continue from the
        retained ack (so a restarted device does not reuse seqs)."""
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._started = True
        if not self._connected.wait(timeout):
            raise ConnectionError(f"Device {self.device_id!r} could not connect to "
                                  f"{self.host}:{self.port} within {timeout:g} s.")
        if resume and self._got_ack.wait(min(timeout, 2.0)):
            with self._lock:
                self.next_seq = max(self.next_seq, self.acked + 1)
        return self

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            return
        self.connects += 1
        client.subscribe([(self.ack_topic, 1), (self.deadletter_topic, 1)])
        self._connected.set()
        if self.connects > 1:
            self.resend()

    def _on_disconnect(self, *args: Any) -> None:
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.ack_topic:
            try:
                seq = int(json.loads(msg.payload)["seq"])
            except (ValueError, KeyError, TypeError):
                return
            with self._lock:
                if seq > self.acked:
                    self.acked = seq
                    self._last_progress = time.monotonic()
                while self.pending and next(iter(self.pending)) <= self.acked:
                    self.pending.popitem(last=False)
            self._got_ack.set()
            if self.on_ack is not None:
                self.on_ack(self.device_id, seq, time.monotonic())
        elif msg.topic == self.deadletter_topic:
            try:
                self.deadletters.append(json.loads(msg.payload))
            except ValueError:
                self.deadletters.append({"raw": msg.payload.decode("utf-8", "replace")})

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- sending -------------------------------------------------------------------------
    def send(self, ts: float, metrics: dict[str, float], seq: int | None = None) -> int:
        """Number, keep and publish one reading; return its seq."""
        with self._lock:
            if seq is None:
                seq = self.next_seq
                self.next_seq += 1
            payload = json.dumps({"ts": ts, "metrics": metrics, "seq": seq},
                                 separators=(",", ":")).encode()
            self.pending[seq] = payload
        self.client.publish(self.telemetry_topic, payload, qos=1)
        return seq

    def publish_raw(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish anything (for tests of what the gateway refuses)."""
        self.client.publish(topic, payload, qos=qos)

    def resend(self) -> int:
        """Publish every unacknowledged message again; return how many."""
        with self._lock:
            items = list(self.pending.items())
            self._last_progress = time.monotonic()
        for _, payload in items:
            self.client.publish(self.telemetry_topic, payload, qos=1)
        self.resends += len(items)
        return len(items)

    def tick(self) -> None:
        """Resend pending messages when acks have stalled; call now and then."""
        with self._lock:
            stalled = (self.pending and self.connected
                       and time.monotonic() - self._last_progress > self.resend_after_s)
        if stalled:
            self.resend()

    def wait_acked(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is pending (resending on stalls); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.pending:
                    return True
            self.tick()
            time.sleep(0.02)
        return False
