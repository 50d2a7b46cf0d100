"""A packet's body is timed once its fixed header is read, on a real embedded broker (in a
thread of this process, on a free port) with raw MQTT sockets.

Keep-alive timed only the wait for a packet to start: a logged-in client announcing a
4 MiB PUBLISH and sending one byte every half second (or gone half-way through a body)
held its connection, its place among its device's connections and what it had sent for
ever (still open after 12 s at a keep-alive of 1 s). Now the body must come within the
larger of ``PACKET_BODY_S`` and 1.5 keep-alives, plus a second per ``PACKET_BODY_RATE``
bytes announced (``reason="slow_packet"``). A CONNECT, body included, was and is timed by
``connect_timeout_s``.
"""

from __future__ import annotations

import socket
import time

import pytest

from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import wait_until
from tests.gateway.test_broker_limits import (
    Running,
    _closed_by_peer,
    _length,
    _publish_header,
    _s,
)
from tests.transport.test_broker_hunt_s41 import OK, _login, _ping

TOPIC = "edgewise/dev-0/telemetry"


@pytest.fixture
def body_1s(monkeypatch: pytest.MonkeyPatch) -> None:
    """A packet body has 1 s, plus a second per 64 KiB it announced."""
    monkeypatch.setattr(EmbeddedBroker, "PACKET_BODY_S", 1.0, raising=False)
    monkeypatch.setattr(EmbeddedBroker, "PACKET_BODY_RATE", 64 * 1024, raising=False)


def _trickle(so: socket.socket, seconds: float, every: float = 0.2) -> float | None:
    """Send a byte every ``every`` s for ``seconds`` s; the seconds after which a send
    failed (the broker dropped the connection), else ``None``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            so.sendall(b"x")
        except OSError:
            return time.monotonic() - t0
        time.sleep(every)
    return None


def _connections(r: Running) -> int:
    return r.on_loop(lambda: r.broker.connections_of("dev-0"))


def test_a_publish_body_trickled_a_byte_at_a_time_is_dropped(
        body_1s: None, running: Running) -> None:
    """Check a PUBLISH announcing 64 KiB whose body comes a byte every 0.2 s, on a
    connection with a keep-alive of 1 s, is dropped within 6 s (due after 1.5 + 1 s)
    (``reason="slow_packet"``) and frees dev-0's slot; another connection pinging goes on."""
    pinger, ack1 = _login(running.port, "dev-1", "secret-1", "pinger", keep_alive=1)
    so, ack2 = _login(running.port, "dev-0", "secret-0", "slow", keep_alive=1)
    assert (ack1, ack2) == (OK, OK)
    so.sendall(_publish_header(TOPIC, 64 * 1024))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6 and not running.closed("slow_packet"):
        so.sendall(b"x")
        assert _ping(pinger)
        time.sleep(0.2)
    assert running.closed("slow_packet") == 1, "a trickled body held its connection 6 s"
    assert time.monotonic() - t0 > 2.0, "dropped before its body was due"
    assert _closed_by_peer(so, 2.0)
    assert wait_until(lambda: _connections(running) == 0, 3)
    assert _ping(pinger) and running.closed("keepalive") == 0
    for s in (so, pinger):
        s.close()


def test_a_subscribe_cut_off_after_its_header_is_dropped_without_a_keep_alive(
        body_1s: None, running: Running) -> None:
    """Check a SUBSCRIBE whose body never comes after its fixed header (a link gone
    half-way) is dropped within 4 s on a connection declaring no keep-alive (0, which
    keeps an idle connection for ever), while such an idle connection stays."""
    idle, ack1 = _login(running.port, "dev-0", "secret-0", "idle")
    cut, ack2 = _login(running.port, "dev-0", "secret-0", "cut")
    assert (ack1, ack2) == (OK, OK)
    body = (1).to_bytes(2, "big") + _s(b"edgewise/dev-0/ack") + b"\x01"
    cut.sendall(b"\x82" + _length(len(body)) + body[:3])
    assert _closed_by_peer(cut, 4.0), "a body cut off half-way held its connection 4 s"
    assert running.closed("slow_packet") == 1
    assert _ping(idle), "an idle connection without a keep-alive was dropped"
    assert wait_until(lambda: _connections(running) == 1, 3)
    for s in (idle, cut):
        s.close()


def test_a_body_at_a_slow_links_pace_gets_through(body_1s: None, running: Running) -> None:
    """Check a 96 KiB PUBLISH whose body comes in 8 KiB parts over 1.6 s (longer than the
    1 s base, within the 1 s + 1.5 s it has at 64 KiB/s) is stored, and the connection
    stays up."""
    so, ack = _login(running.port, "dev-0", "secret-0", "paced", keep_alive=0)
    assert ack == OK
    payload = b'{"seq": 1, "pad": "' + b"z" * (96 * 1024 - 22) + b'"}'
    so.sendall(_publish_header(TOPIC, len(payload)))
    for i in range(0, len(payload), 8 * 1024):
        so.sendall(payload[i:i + 8 * 1024])
        time.sleep(0.125)
    assert wait_until(lambda: len(running.received) == 1, 5)
    assert running.received[0].payload == payload
    assert running.closed("slow_packet") == 0 and _ping(so)
    so.close()


@pytest.mark.parametrize("running", [{"connect_timeout_s": 1.0}], indirect=True)
def test_a_connect_trickled_before_authentication_is_closed_at_the_connect_timeout(
        running: Running) -> None:
    """Check a CONNECT announcing 60,000 bytes and sent a byte every 0.2 s is closed
    within 3 s of its accept at a connect timeout of 1 s (``reason="connect_timeout"``),
    before authentication: the body of a CONNECT is timed too."""
    so = socket.create_connection(("127.0.0.1", running.port), timeout=5)
    so.sendall(b"\x10" + _length(60_000))
    after = _trickle(so, 4.0)
    assert after is not None and after < 3.0, after
    assert running.closed("connect_timeout") == 1
    so.close()
