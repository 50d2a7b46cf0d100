"""The embedded broker stops in bounded time while devices keep publishing flat out.

amqtt's ``Broker.shutdown`` stops each connection's handler, which waits for the
connection's reader, and that reader read on for as long as its client kept sending: with
devices publishing QoS 1 as fast as they could, ``EmbeddedBroker.stop`` (and so SIGTERM to
``edgewise serve``) never returned, and the gateway never saved its state. Now the broker
stops listening and aborts its connections before amqtt's shutdown, which is bounded too;
every message acknowledged to a device was committed before its ack.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from edgewise.errors import AuthError
from edgewise.transport.base import Message, Outcome
from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import free_port, wait_until

DEVICES = [f"pump-{i}" for i in range(4)]


class Fleet:
    """An :class:`EmbeddedBroker` on its own loop thread, committing into ``stored``, and
    paho devices that publish QoS 1 telemetry flat out and note their acks."""

    def __init__(self) -> None:
        self.stored: dict[str, set[int]] = {d: set() for d in DEVICES}
        self.acked: dict[str, list[int]] = {d: [] for d in DEVICES}
        self.running = threading.Event()
        self.running.set()

        def authenticate(user: str, secret: str) -> bytes:
            if user not in self.stored or secret != f"secret-{user}":
                raise AuthError(f"wrong secret for {user!r}")
            return user.encode()

        def handle(messages: list[Message]) -> list[Outcome]:
            out = []
            for m in messages:
                seq = json.loads(m.payload)["seq"]
                self.stored[m.device_id].add(seq)
                out.append(Outcome(m.device_id, seq))
            return out

        self.port = free_port()
        self.broker = EmbeddedBroker(handle, authenticate, port=self.port)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.broker.start(), self.loop).result(20)
        self.clients = [self._device(d) for d in DEVICES]
        self.publishers = [threading.Thread(target=self._publish, args=(c, d), daemon=True)
                           for c, d in zip(self.clients, DEVICES, strict=True)]

    def _device(self, name: str) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        c.username_pw_set(name, f"secret-{name}")
        c.on_message = lambda _c, _u, msg: self.acked[name].append(json.loads(msg.payload)["seq"])
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        assert wait_until(c.is_connected, 10), f"{name} did not connect"
        c.subscribe(f"edgewise/{name}/ack", 1)
        return c

    def _publish(self, c: mqtt.Client, name: str) -> None:
        seq = 0
        while self.running.is_set():
            seq += 1
            body = json.dumps({"seq": seq, "ts": time.time(), "metrics": {"temp": seq % 13}})
            c.publish(f"edgewise/{name}/telemetry", body, qos=1)
            if seq % 50 == 0:
                time.sleep(0.001)

    def close(self) -> None:
        self.running.clear()
        for t in self.publishers:
            t.join(10)
        for c in self.clients:
            sock = c.socket()  # a device blocked writing to a broker that stopped reading
            if sock is not None:  # would hold loop_stop() (its thread's join) for ever
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            c.loop_stop()
            c.disconnect()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet()
    yield f
    f.close()


def test_stop_is_bounded_while_devices_publish_flat_out(fleet: Fleet) -> None:
    for t in fleet.publishers:
        t.start()
    # traffic flowing on every device (200 each took 10 s on a slow day: a precondition only)
    assert wait_until(lambda: all(len(s) > 50 for s in fleet.stored.values()), 20), (
        "the devices' telemetry was not committed")
    time.sleep(0.5)  # the devices keep publishing, acks flowing
    t0 = time.monotonic()
    stopping = asyncio.run_coroutine_threadsafe(fleet.broker.stop(), fleet.loop)
    try:
        stopping.result(12)  # was: never, while the devices kept sending
    except TimeoutError:
        pytest.fail("EmbeddedBroker.stop() still running 12 s after it was called, with "
                    "4 devices publishing QoS 1 flat out")
    took = time.monotonic() - t0
    # ended by the dropped connections (0.1 s here), not by the shutdown's time limit
    assert took < EmbeddedBroker.SHUTDOWN_TIMEOUT_S, f"stop took {took:.1f} s"
    # the devices were disconnected, not left talking to a broker that no longer reads
    assert wait_until(lambda: not any(c.is_connected() for c in fleet.clients), 5)
    # every ack a device got names a message that was committed
    for d in DEVICES:
        assert fleet.acked[d], f"{d} got no ack"
        assert max(fleet.acked[d]) in fleet.stored[d]
        assert set(range(1, max(fleet.acked[d]) + 1)) <= fleet.stored[d]
