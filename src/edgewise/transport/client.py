"""External broker mode: the gateway subscribes to a broker such as Mosquitto.

``mqtt://[user:pass@]HOST:PORT[?prefix=edgewise&client_id=NAME]`` (``mqtts://`` for TLS).
The gateway connects with a **persistent session** (``clean_session=False``, a stable
client id) and subscribes to ``<prefix>/+/telemetry`` at QoS 1 with paho's
``manual_ack``: each message is acknowledged to the broker (PUBACK) only after the store
committed it, so a gateway that dies before the commit gets the message again from the
broker when it reconnects. After the commit the gateway publishes the retained QoS 1
``{"seq": w}`` on ``<prefix>/<device>/ack``.

What the broker does is the broker's: authentication and the per-device topic ACL must
be configured there (Mosquitto: ``pattern write edgewise/%u/telemetry``); the gateway
refuses telemetry of devices it does not know (dead letter ``unknown_device``).
Mosquitto drops messages silently when a client's queue is full (1,000 by default) and
writes its persistence file only now and then: the seq watermark and the gap alerts
make such a loss visible, and devices resend what is not acked.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt

from edgewise.errors import ConfigError
from edgewise.transport.base import Handler, Message, Outcome
from edgewise.transport.batcher import Batcher

__all__ = ["ExternalBroker", "parse_mqtt_url"]

log = logging.getLogger(__name__)


def parse_mqtt_url(url: str) -> dict[str, Any]:
    """Split an ``mqtt://`` URL into host, port, credentials, TLS, prefix and client id.

    >>> p = parse_mqtt_url("mqtt://gw:pw@broker.local:1883?prefix=plant7")
    >>> p["host"], p["port"], p["username"], p["prefix"], p["tls"]
    ('broker.local', 1883, 'gw', 'plant7', False)
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            f"Setting 'mqtt' has value {url!r}. Use 'embedded' or mqtt://HOST:PORT "
            "(mqtts:// for TLS)."
        )
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    tls = parts.scheme == "mqtts"
    return {
        "host": parts.hostname,
        "port": parts.port or (8883 if tls else 1883),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "tls": tls,
        "prefix": q.get("prefix", "edgewise").strip("/"),
        "client_id": q.get("client_id"),
        "ca": q.get("ca"),
    }


class ExternalBroker:
    """Consume device telemetry from an external MQTT broker, acking after each commit.

    Parameters
    ----------
    handler
        Commits a batch of messages.
    url
        The broker (see :func:`parse_mqtt_url`).
    count
        ``count(metric, value, **labels)`` for dead letters.
    data_dir
        Used to derive a stable client id (so the broker keeps the session across restarts).
    known_device
        ``known_device(id) -> bool``; telemetry of unknown devices is dead-lettered.
    """

    def __init__(
        self,
        handler: Handler,
        url: str,
        *,
        count: Callable[..., None] | None = None,
        data_dir: Path | None = None,
        known_device: Callable[[str], bool] | None = None,
        max_batch: int = 4000,
    ) -> None:
        self.cfg = parse_mqtt_url(url)
        self.prefix = self.cfg["prefix"]
        self.handler = handler
        self._count = count
        self.known_device = known_device
        self.batcher = Batcher(handler, self._after_commit, max_batch=max_batch)
        tag = hashlib.sha256(str(data_dir or "").encode()).hexdigest()[:12]
        self.client_id = self.cfg["client_id"] or f"edgewise-gateway-{tag}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=False, manual_ack=True)
        if self.cfg["username"]:
            c.username_pw_set(self.cfg["username"], self.cfg["password"])
        if self.cfg["tls"]:
            c.tls_set(ca_certs=self.cfg["ca"], cert_reqs=ssl.CERT_REQUIRED)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.1, 2.0)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.client = c

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        if self._count is not None:
            self._count(name, value, **labels)

    def _topic(self, device_id: str, kind: str) -> str:
        return f"{self.prefix}/{device_id}/{kind}"

    async def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; raises ConnectionError if the broker does not answer."""
        self._loop = asyncio.get_running_loop()
        await self.batcher.start()
        self.client.connect_async(self.cfg["host"], self.cfg["port"], keepalive=30)
        self.client.loop_start()
        ok = await asyncio.to_thread(self._connected.wait, timeout)
        if not ok:
            await self.stop()
            raise ConnectionError(
                f"MQTT broker {self.cfg['host']}:{self.cfg['port']} did not accept the "
                f"gateway within {timeout:g} s."
            )

    async def stop(self) -> None:
        """Commit what has arrived, ack it, disconnect (the broker keeps the session)."""
        await self.batcher.stop()
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            log.warning("MQTT broker refused the gateway: %s", rc)
            return
        client.subscribe(self._topic("+", "telemetry"), qos=1)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        device = parts[-2] if len(parts) >= 3 else ""
        if self.known_device is not None and not self.known_device(device):
            self.count("edgewise_messages_deadlettered_total", reason="unknown_device")
            client.publish(self._topic(device, "deadletter"), json.dumps({
                "reason": "unknown_device", "field": "device", "value": device, "index": None,
                "detail": f"Device {device!r} is not registered; run 'edgewise device add'.",
            }), qos=1)
            client.ack(msg.mid, msg.qos)
            return
        m = Message(device, bytes(msg.payload), token=(msg.mid, msg.qos))
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.batcher.put, m)

    async def _after_commit(self, messages: list[Message], outcomes: list[Outcome]) -> None:
        best: dict[str, int] = {}
        for o in outcomes:
            for p in o.deadletters:
                self.count("edgewise_messages_deadlettered_total", reason=str(p.get("reason")))
                self.client.publish(self._topic(o.device_id, "deadletter"),
                                    json.dumps(p, default=str), qos=1)
            if o.ack_seq is not None:
                best[o.device_id] = max(best.get(o.device_id, 0), o.ack_seq)
        for device, w in best.items():
            self.client.publish(self._topic(device, "ack"), json.dumps({"seq": w}),
                                qos=1, retain=True)
        for m in messages:  # PUBACK to the broker only now that the batch is committed
            mid, qos = m.token
            if qos:
                self.client.ack(mid, qos)
