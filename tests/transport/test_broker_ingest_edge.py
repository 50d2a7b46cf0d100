"""Two holes at the embedded broker's ingestion edge, on a real broker (in a thread of this
process, on a free port) with raw MQTT sockets.

1. A PUBLISH to a topic MQTT forbids (``$SYS/...``, one holding ``+`` or ``#``, an empty
   one) made amqtt end the connection's message loop and leave the socket open: PUBACKs and
   keep-alives were still answered, but the device's later telemetry was never handed on,
   acknowledged or dead-lettered, and it never reconnected (a wildcard topic even left its
   payload to be read as packets). Now such a PUBLISH is refused
   like any other topic (dead letter ``topic_not_allowed``) and telemetry keeps flowing;
   should amqtt end the loop anyway, the connection is closed so the device reconnects.
2. A socket that never completed its CONNECT was held for ever, before authentication.
   Now it is closed after ``connect_timeout_s``
   (``edgewise_mqtt_connections_closed_total{reason="connect_timeout"}``).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from amqtt.broker import Broker

from edgewise.transport import broker as broker_module
from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import wait_until
from tests.gateway.test_broker_limits import Running, _bye, _connect, _length, _recv, _s

DEV, SECRET = "dev-0", "secret-0"


def _publish(so: socket.socket, name: str, payload: bytes, mid: int, qos: int = 1) -> None:
    """A PUBLISH (QoS 1 or 2) of ``payload`` to ``name``."""
    body = _s(name.encode()) + mid.to_bytes(2, "big") + payload
    so.sendall(bytes([0x30 | qos << 1]) + _length(len(body)) + body)


def _recv_until(so: socket.socket, want: bytes, got: bytes, what: str) -> bytes:
    """``got`` plus what ``so`` sends until ``want`` is in it (5 s at most; then fails
    with ``what``)."""
    deadline = time.monotonic() + 5
    while want not in got and time.monotonic() < deadline:
        try:
            chunk = so.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    assert want in got, f"{what}: received {got!r}"
    return got


def _subscribe(so: socket.socket, name: str, mid: int = 1) -> None:
    body = mid.to_bytes(2, "big") + _s(name.encode()) + b"\x01"
    so.sendall(b"\x82" + _length(len(body)) + body)
    assert _recv(so, 5)[:1] == b"\x90", "no SUBACK"


def _telemetry(seq: int) -> bytes:
    return json.dumps({"ts": 1_700_000_000 + seq, "metrics": {"x": seq}, "seq": seq}).encode()


def _seqs(r: Running) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in list(r.received)]


def _dead_letters(r: Running) -> list[str]:
    return [labels.get("reason", "") for name, labels in list(r.counted)
            if name == "edgewise_messages_deadlettered_total"]


@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("bad", ["$SYS/anything", "edgewise/dev-0/+", "edgewise/#", ""])
def test_forbidden_publish_topic_is_dead_lettered_and_telemetry_keeps_flowing(
        running: Running, bad: str, qos: int) -> None:
    """The refused PUBLISH is acknowledged at its QoS: PUBACK, or PUBREC and then PUBCOMP
    for its PUBREL (a wildcard topic got neither at QoS 2: a compliant client kept it in
    flight for ever and resent it on every reconnect)."""
    so, connack = _connect(running.port, DEV, SECRET, "edge-1")
    assert connack == b"\x20\x02\x00\x00"
    try:
        _subscribe(so, f"edgewise/{DEV}/deadletter")
        _publish(so, running.broker.telemetry_topic(DEV), _telemetry(1), 10)
        assert wait_until(lambda: _seqs(running) == [1], 5), _seqs(running)
        _publish(so, bad, b"{}", 11, qos)
        so.settimeout(5)
        got = b""
        if qos == 2:  # delivered (so dead-lettered) once released
            got = _recv_until(so, b"\x50\x02\x00\x0b", got,
                              "the refused QoS 2 PUBLISH (id 11) got no PUBREC")
            so.sendall(b"\x62\x02\x00\x0b")  # PUBREL
            got = _recv_until(so, b"\x70\x02\x00\x0b", got,
                              "the PUBREL of the refused PUBLISH (id 11) got no PUBCOMP")
        for seq in (2, 3):
            _publish(so, running.broker.telemetry_topic(DEV), _telemetry(seq), 10 + seq)
        assert wait_until(lambda: _seqs(running) == [1, 2, 3], 5), \
            f"telemetry after a PUBLISH to {bad!r} was lost: handed on {_seqs(running)}"
        assert wait_until(lambda: _dead_letters(running) == ["topic_not_allowed"], 5), \
            _dead_letters(running)
        # the dead letter reaches the device, naming the topic
        got = _recv_until(so, b"topic_not_allowed", got, "no dead letter")
        assert json.dumps(bad).encode() in got, got
        if qos == 1:
            assert b"\x40\x02\x00\x0b" in got, \
                f"the refused PUBLISH (id 11) got no PUBACK: {got!r}"
        assert running.closed("protocol_error") == 0
    finally:
        _bye(so)
        so.close()


def test_amqtt_ending_the_message_loop_closes_the_connection(
        running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever else makes amqtt's delivery answer False, the socket is closed (the device
    reconnects and resends) instead of being left open and never read again."""
    async def refuse(self: Broker, *args: Any) -> bool:
        return False
    monkeypatch.setattr(Broker, "_handle_message_delivery", refuse)
    so, connack = _connect(running.port, DEV, SECRET, "edge-2")
    assert connack == b"\x20\x02\x00\x00"
    try:
        _publish(so, running.broker.telemetry_topic(DEV), _telemetry(1), 10)
        so.settimeout(5)
        got, start = b"", time.monotonic()
        while time.monotonic() - start < 5:
            chunk = so.recv(4096)
            if not chunk:
                break
            got += chunk
        else:
            pytest.fail("the connection was left open after amqtt ended its message loop")
        assert wait_until(lambda: running.closed("protocol_error") == 1, 5), running.counted
        # the device reconnects with the same client id, at once
        so2, connack2 = _connect(running.port, DEV, SECRET, "edge-2")
        assert connack2 == b"\x20\x02\x00\x00"
        _bye(so2)
        so2.close()
    finally:
        so.close()


@pytest.mark.parametrize("running", [{"connect_timeout_s": 0.5}], indirect=True)
def test_connection_without_a_complete_connect_is_closed(running: Running) -> None:
    idle = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    slow = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    slow.sendall(b"\x10" + _length(200) + b"\x00\x04MQTT\x04")  # CONNECT begun, never ended
    try:
        start = time.monotonic()
        for so in (idle, slow):
            assert so.recv(1) == b"", "the broker sent something instead of closing"
        took = time.monotonic() - start
        assert 0.3 < took < 4, f"closed after {took:.2f} s; the timeout is 0.5 s"
        assert wait_until(lambda: running.closed("connect_timeout") == 2, 5), running.counted
        # a device that completes its CONNECT in time is untouched by the timeout
        so, connack = _connect(running.port, DEV, SECRET, "edge-3")
        assert connack == b"\x20\x02\x00\x00"
        time.sleep(1.0)
        _publish(so, running.broker.telemetry_topic(DEV), _telemetry(1), 10)
        assert wait_until(lambda: _seqs(running) == [1], 5)
        assert running.closed("connect_timeout") == 2
        _bye(so)
        so.close()
    finally:
        idle.close()
        slow.close()


def test_connect_timeout_default_and_validation() -> None:
    assert broker_module.CONNECT_TIMEOUT_S == 10.0
    b = EmbeddedBroker(lambda ms: [], lambda d, s: None, max_payload_bytes=1024)
    assert b.connect_timeout_s == 10.0
    for bad in (0, -1, float("nan"), True, "10"):
        with pytest.raises(ValueError, match="connect_timeout_s"):
            EmbeddedBroker(lambda ms: [], lambda d, s: None, max_payload_bytes=1024,
                           connect_timeout_s=bad)  # type: ignore[arg-type]
