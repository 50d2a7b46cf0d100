"""The external-broker gateway is ready only once the broker granted its subscription.

``ExternalBroker.start`` returned when the CONNACK came, with the SUBSCRIBE merely sent: a
gateway on a new session (a new data dir) holds no subscription until the SUBACK, and a
device publishing in between lost its message at the broker (seen in CI: seq 1 of 20
never reached the gateway, the other 19 did). A broker that refused the subscription
(an ACL that does not let the gateway read ``<prefix>/+/telemetry``) was reported as a
running gateway that received nothing.

The broker here is a socket that speaks just enough MQTT 3.1.1 to hold the SUBACK back,
or to refuse the subscription, which a real Mosquitto cannot be told to do on demand.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from edgewise.errors import BrokerUnavailableError
from edgewise.transport.client import ExternalBroker


class HeldBroker:
    """Accepts one gateway, answers CONNECT with CONNACK (accepted), then answers its
    SUBSCRIBE as told: ``suback=None`` never, ``suback=0x80`` a refusal, ``suback=1`` QoS 1
    granted."""

    def __init__(self, suback: int | None) -> None:
        self.suback = suback
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.subscribed = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def _read_packet(conn: socket.socket) -> tuple[int, bytes]:
        head = conn.recv(1)
        if not head:
            raise ConnectionError("closed")
        length, mult = 0, 1
        while True:  # the variable-length "remaining length"
            b = conn.recv(1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        body = b""
        while len(body) < length:
            chunk = conn.recv(length - len(body))
            if not chunk:
                raise ConnectionError("closed")
            body += chunk
        return head[0] >> 4, body

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            self.conns.append(conn)
            kind, _ = self._read_packet(conn)
            assert kind == 1  # CONNECT
            conn.sendall(bytes([0x20, 0x02, 0x00, 0x00]))
            while True:
                kind, body = self._read_packet(conn)
                if kind == 8:  # SUBSCRIBE: packet id in its first two bytes
                    self.subscribed.set()
                    if self.suback is not None:
                        conn.sendall(bytes([0x90, 0x03]) + body[:2] + bytes([self.suback]))
                elif kind == 12:  # PINGREQ
                    conn.sendall(bytes([0xD0, 0x00]))
                elif kind == 14:  # DISCONNECT
                    return
        except (OSError, ConnectionError, IndexError):
            return

    def close(self) -> None:
        for c in [*self.conns, self.sock]:
            c.close()


@pytest.fixture
def held(request: pytest.FixtureRequest):
    broker = HeldBroker(request.param)
    yield broker
    broker.close()


def _start(port: int, tmp_path, timeout: float) -> ExternalBroker:
    gw = ExternalBroker(lambda msgs: [], f"mqtt://127.0.0.1:{port}", data_dir=tmp_path)

    async def go() -> None:
        try:
            await gw.start(timeout=timeout)
        finally:
            await gw.stop()

    asyncio.run(go())
    return gw


@pytest.mark.parametrize("held", [None], indirect=True)
def test_start_waits_for_the_suback_not_just_the_connack(held: HeldBroker, tmp_path) -> None:
    with pytest.raises(BrokerUnavailableError, match="did not accept the gateway"):
        _start(held.port, tmp_path, timeout=1.5)
    # it did connect and subscribe: what it waited for was the broker's grant
    assert held.subscribed.is_set()


@pytest.mark.parametrize("held", [0x80], indirect=True)
def test_a_refused_subscription_is_a_failed_start_that_says_so(
        held: HeldBroker, tmp_path) -> None:
    with pytest.raises(BrokerUnavailableError,
                       match=r"refused the subscription to edgewise/\+/telemetry"):
        _start(held.port, tmp_path, timeout=1.5)


@pytest.mark.parametrize("held", [1], indirect=True)
def test_a_granted_subscription_starts_the_gateway(held: HeldBroker, tmp_path) -> None:
    _start(held.port, tmp_path, timeout=5)
    assert held.subscribed.is_set()
