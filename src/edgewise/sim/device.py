"""A device that speaks MQTT like a real one: numbered messages, kept until acknowledged.

:class:`MqttDevice` numbers its messages with ``seq`` from 1 (or from the gateway's
ack + 1 when it restarts: the embedded broker sends it when the device subscribes, an
external broker keeps it retained), keeps every message until the gateway's ack covers
it, and resends whatever is unacknowledged after each reconnect (each message once: paho's
own unacknowledged copies are dropped first, and nothing is handed to paho while the link
is down) and, a bounded batch at a time, oldest first, when acks stop coming (after
``resend_after_s``, then backing off). Messages are compact JSON records.
"""

from __future__ import annotations

import json
import numbers
import random
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edgewise.errors import InvalidParameterError

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
        CA file to verify the broker's TLS certificate (enables TLS); one that cannot be
        loaded is an :class:`~edgewise.errors.InvalidParameterError` naming it.
    resend_after_s
        When no ack moved the watermark for this long, resend the oldest ``resend_batch``
        pending messages; while acks stay away the wait doubles (with jitter: 1 to 1.5
        times it) up to ``max_resend_after_s``; an ack that covers the batch sends the
        next one at once, any ack progress resets the wait.
    resend_batch
        At most this many messages per stalled-ack resend.
    max_resend_after_s
        The longest wait between two stalled-ack resends (before jitter); default 60 s,
        or ``resend_after_s`` when that is longer.
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
        resend_batch: int = 100,
        max_resend_after_s: float | None = None,
        on_ack: Callable[[str, int, float], None] | None = None,
        client_id: str | None = None,
        topic_prefix: str = "edgewise",
    ) -> None:
        self.device_id = device_id
        self.host, self.port = host, port
        if max_resend_after_s is None:
            max_resend_after_s = max(60.0, resend_after_s)
        if not 0 < resend_after_s <= max_resend_after_s:
            raise InvalidParameterError(
                f"resend_after_s must be > 0 and at most max_resend_after_s. Got "
                f"{resend_after_s!r} and {max_resend_after_s!r} instead.",
                field="resend_after_s", value=resend_after_s)
        if isinstance(resend_batch, bool) or not isinstance(resend_batch, numbers.Integral) or (
                resend_batch < 1):  # 1.5 was taken, then every stalled resend raised
            raise InvalidParameterError(
                f"resend_batch must be an int >= 1. Got {resend_batch!r} instead.",
                field="resend_batch", value=resend_batch)
        self.resend_after_s = resend_after_s
        self.max_resend_after_s = max_resend_after_s
        self.resend_batch = resend_batch
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
        #: paho's handle of each pending seq's last publish (unpublished: paho holds it)
        self._info: dict[int, mqtt.MQTTMessageInfo] = {}
        self._backoff = resend_after_s  # the current stall wait, before jitter
        self._wait = resend_after_s  # the stall wait in force (jittered)
        self._stall_hi = 0  # the newest seq pending when acks stalled (0: not stalled)
        self._batch_hi = 0  # the newest seq of the last stalled-ack batch (0: none)
        self._jitter = random.Random()
        self.last_error: str | None = None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=client_id or f"{device_id}-{id(self):x}",
                        clean_session=True)
        c.username_pw_set(device_id, secret)
        if tls_ca:
            try:
                c.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:  # a bare FileNotFoundError
                raise InvalidParameterError(
                    f"tls_ca {tls_ca!r} cannot be loaded as PEM CA certificates "
                    f"({getattr(exc, 'strerror', None) or exc}). Give the path of a readable "
                    "PEM file of the CA certificates the broker's certificate is checked "
                    "with.", field="tls_ca", value=tls_ca) from None
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.05, 0.5)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c
        self._started = False

    # -- connection ----------------------------------------------------------------------
    def start(self, timeout: float = 10.0, resume: bool = True) -> MqttDevice:
        """Connect, subscribe to acks and dead letters; with ``resume`` continue from the
        ack its subscription brings (so a restarted device does not reuse seqs).

        When it cannot connect within ``timeout`` it stops its network thread and raises
        :class:`ConnectionError` naming the last error (a TLS certificate that does not
        verify, a refused connection, the broker's refusal).

        >>> MqttDevice("d", "s", port=1).start(timeout=0.5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ConnectionError: Device 'd' could not connect to 127.0.0.1:1 within 0.5 s; last error: ...
        """
        self.last_error = None
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._started = True
        if not self._connected.wait(timeout):
            self.stop()
            why = f"; last error: {self.last_error}" if self.last_error else ""
            raise ConnectionError(f"Device {self.device_id!r} could not connect to "
                                  f"{self.host}:{self.port} within {timeout:g} s{why}.")
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
            self.last_error = f"the broker refused the connection ({rc})"
            return
        self.connects += 1
        client.subscribe([(self.ack_topic, 1), (self.deadletter_topic, 1)])
        if self.connects > 1:
            drop = getattr(client, "drop_out_messages", None)  # paho >= 2.1
            if drop is not None:
                # paho would send its unacknowledged copies again after this callback, and
                # resend() sends every pending message: each goes once
                drop()
                with self._lock:
                    self._info.clear()
        self._connected.set()
        if self.connects > 1:
            self.resend()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` around the connect: the exception
        # being handled is the reason (a refused port, a TLS certificate that fails)
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            self.last_error = (f"TLS certificate verification failed: "
                               f"{exc.verify_message or exc}")
        elif isinstance(exc, ssl.SSLError):
            self.last_error = f"TLS: {exc}"
        elif exc is not None:
            self.last_error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"

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
                    self._backoff = self._wait = self.resend_after_s
                while self.pending and next(iter(self.pending)) <= self.acked:
                    self._info.pop(self.pending.popitem(last=False)[0], None)
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
    def reserve_seq(self) -> int:
        """Take the next seq without sending anything: :meth:`send` it later (``seq=``),
        after messages numbered after it (a simulated reordering)."""
        with self._lock:
            seq = self.next_seq
            self.next_seq += 1
            return seq

    def send(self, ts: float, metrics: dict[str, float], seq: int | None = None) -> int:
        """Number, keep and publish one reading; return its seq. While disconnected it is
        only kept: the reconnect sends it (paho is not handed it too, or it went twice).

        A ``seq`` taken earlier (:meth:`reserve_seq`) goes in ``pending`` at its place in
        seq order, which the ack, the resends and the stall logic rely on (oldest first):
        appended after newer ones, an acknowledged seq stayed pending behind an
        unacknowledged one, and a stall resent it instead of the one missing.
        """
        with self._lock:
            if seq is None:
                seq = self.next_seq
                self.next_seq += 1
            payload = json.dumps({"ts": ts, "metrics": metrics, "seq": seq},
                                 separators=(",", ":")).encode()
            newer = seq not in self.pending and bool(self.pending) and (
                next(reversed(self.pending)) > seq)
            self.pending[seq] = payload
            if newer:  # keep seq order: move every newer seq after it (rare, O(pending))
                for later in [s for s in self.pending if s > seq]:
                    self.pending.move_to_end(later)
            self._info.pop(seq, None)
            connected = self.connected
        if connected:
            self._publish(seq, payload)
        return seq

    def _publish(self, seq: int, payload: bytes) -> None:
        info = self.client.publish(self.telemetry_topic, payload, qos=1)
        with self._lock:
            if seq in self.pending:
                self._info[seq] = info

    def _held_by_paho(self, seq: int) -> bool:
        """Paho holds ``seq``'s last publish, sent and not yet acknowledged by the broker
        (paho sends it again itself after a reconnect). One published as the link went
        down (an error code) counts as not held: sent again, at worst twice."""
        info = self._info.get(seq)
        return (info is not None and info.rc == mqtt.MQTT_ERR_SUCCESS
                and not info.is_published())

    def publish_raw(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish anything (for tests of what the gateway refuses)."""
        self.client.publish(topic, payload, qos=qos)

    def resend(self) -> int:
        """Publish unacknowledged messages again, oldest first, except those paho still
        holds sent and unacknowledged by the broker (it sends them again itself after a
        reconnect; a reconnect drops them first where paho can); return how many went."""
        with self._lock:
            items = [(s, p) for s, p in self.pending.items() if not self._held_by_paho(s)]
            self._last_progress = time.monotonic()
            self._end_stall()
        for seq, payload in items:
            self._publish(seq, payload)
        self.resends += len(items)
        return len(items)

    def tick(self) -> int:
        """Resend when acks have stalled; call now and then; return how many went.

        After ``resend_after_s`` without ack progress the oldest ``resend_batch`` pending
        messages go again. An ack covering that batch sends the next batch at once (of
        those pending when the stall began); without any ack progress each further batch
        waits twice as long as the one before (times 1 to 1.5, jitter), up to
        ``max_resend_after_s``.
        """
        with self._lock:
            if not self.pending or not self.connected:
                return 0
            now = time.monotonic()
            if self._stall_hi and self.acked >= self._stall_hi:
                self._end_stall()  # everything pending when acks stalled is in
            through = self._batch_hi > 0 and self.acked >= self._batch_hi
            if not through and now - self._last_progress <= self._wait:
                return 0
            if not self._stall_hi:
                self._stall_hi = next(reversed(self.pending))
            if not through:  # the next batch without ack progress waits twice as long
                self._backoff = min(self._backoff * 2, self.max_resend_after_s)
            self._wait = self._backoff * self._jitter.uniform(1.0, 1.5)
            # paho's unacknowledged copies too: one the broker sits on blocks the watermark
            batch = [(s, p) for s, p in self.pending.items()
                     if s <= self._stall_hi][:self.resend_batch]
            self._batch_hi = batch[-1][0] if batch else 0
            self._last_progress = now
        for seq, payload in batch:
            self._publish(seq, payload)
        self.resends += len(batch)
        return len(batch)

    def _end_stall(self) -> None:
        """Forget a stall (under the lock): the next one starts at ``resend_after_s``."""
        self._stall_hi = self._batch_hi = 0
        self._backoff = self._wait = self.resend_after_s

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
