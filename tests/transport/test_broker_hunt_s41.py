"""Embedded broker holes found by a hunt (session 41), on a real broker (in a thread of this
process, on a free port) with raw MQTT sockets.

1. Keep-alive was never enforced (amqtt's broker handler ignores its read timeout): a
   device gone without a FIN stayed logged in, counted against its connection cap, so
   after 8 such drops every CONNECT of it got CONNACK 3 until a restart. Now nothing
   received for 1.5 x the declared keep-alive drops the connection (``reason="keepalive"``).
2. Closing a connection (a take-over by the device's next CONNECT, revocation) waited for
   its client to read what was left, for ever when it read nothing: its socket stayed
   open after it had left the device's count, so one device held any number of sockets.
   Now the socket is aborted; and a client that takes nothing written to it for
   ``WRITE_STALL_S`` is dropped (``reason="write_stalled"``), freeing its slot.
3. Each ack or dead letter to a connection was a task of its own holding its message
   until the client answered (without bound for one that never does), and a refused
   PUBLISH's dead letter quoted its topic (up to 65,535 bytes) twice. Now each connection
   has an outbox (64 in flight, 4 MiB queued; past it a dead letter is dropped and counted)
   and a dead letter quotes 200 characters of the topic. A received message's topic now
   counts toward what a connection may hold unhandled (a long topic with a 2-byte payload
   counted as 2 bytes, and a connection queued tens of thousands of them).
4. A SUBSCRIBE naming the device's ack topic thousands of times ran a store watermark
   lookup on the shared thread pool for each (stalling every device's logins for seconds
   on PostgreSQL). Now a device has at most one lookup running at a time.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import pytest

from edgewise.transport.broker import EmbeddedBroker
from tests.conftest import wait_until
from tests.gateway.test_broker_limits import Running, _closed_by_peer, _length, _recv, _s

OK = b"\x20\x02\x00\x00"
UNAVAILABLE = b"\x20\x02\x00\x03"
PINGREQ, PINGRESP = b"\xc0\x00", b"\xd0\x00"


def _login(port: int, user: str, secret: str, client_id: str, *, keep_alive: int = 0,
           rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """A socket after its clean-session CONNECT declaring ``keep_alive`` s, and its CONNACK;
    ``rcvbuf``: a small receive buffer (a client that reads nothing fills it soon)."""
    so = socket.socket()
    if rcvbuf:
        so.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    so.settimeout(10)
    so.connect(("127.0.0.1", port))
    body = (_s(b"MQTT") + bytes([4, 0xC2]) + keep_alive.to_bytes(2, "big")
            + _s(client_id.encode()) + _s(user.encode()) + _s(secret.encode()))
    so.sendall(b"\x10" + _length(len(body)) + body)
    return so, _recv(so, 4)


def _subscribe(so: socket.socket, topic_filter: str, qos: int) -> bytes:
    body = (1).to_bytes(2, "big") + _s(topic_filter.encode()) + bytes([qos])
    so.sendall(b"\x82" + _length(len(body)) + body)
    return _recv(so, 5)


def _publish0(topic_name: str, payload: bytes = b"{}") -> bytes:
    """A QoS 0 PUBLISH."""
    variable = _s(topic_name.encode())
    return b"\x30" + _length(len(variable) + len(payload)) + variable + payload


def _read_packet(so: socket.socket) -> tuple[int, bytes]:
    """The next packet's type byte and body."""
    first = _recv(so, 1)
    n, shift = 0, 0
    while True:
        digit = _recv(so, 1)[0]
        n |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            return first[0], _recv(so, n)


def _ping(so: socket.socket) -> bool:
    so.sendall(PINGREQ)
    return _recv(so, 2) == PINGRESP


def _socket_fds() -> int:
    """Sockets this process holds open (the broker's and the test's)."""
    fds = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return fds


def _connections(r: Running, device: str) -> int:
    return r.on_loop(lambda: r.broker.connections_of(device))


def _shrink_send_buffer(r: Running, client_key: str) -> None:
    """Give the broker's socket of ``client_key`` a small send buffer, so that what a
    client does not read fills it in a moment (as on a slow link)."""
    def shrink() -> None:
        transport = r.broker._broker._sessions[client_key][1].writer._writer.transport
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                      4096)
    r.on_loop(shrink)


# -- 1. keep-alive ----------------------------------------------------------------------
def test_a_connection_silent_past_one_and_a_half_keep_alives_is_dropped(
        running: Running) -> None:
    """Check 8 silent connections declaring a 1 s keep-alive (a device rebooted 8 times
    without a FIN) fill dev-0's cap, are dropped between 1.2 and 6 s later (1.5 s due) and
    counted, after which dev-0 logs in again; a connection that pings every 0.25 s and
    one declaring no keep-alive (0: no limit) stay up meanwhile."""
    t0 = time.monotonic()  # each connection's silence starts after this
    silent = [_login(running.port, "dev-0", "secret-0", f"boot-{i}", keep_alive=1)
              for i in range(8)]
    assert [ack for _, ack in silent] == [OK] * 8
    pinger, ack1 = _login(running.port, "dev-1", "secret-1", "pinger", keep_alive=1)
    no_limit, ack2 = _login(running.port, "dev-2", "secret-2", "no-keep-alive")
    over, ack3 = _login(running.port, "dev-0", "secret-0", "boot-8", keep_alive=1)
    assert (ack1, ack2, ack3) == (OK, OK, UNAVAILABLE)
    over.close()
    while time.monotonic() - t0 < 1.2:
        assert _ping(pinger)
        time.sleep(0.25)
    assert _connections(running, "dev-0") == 8, "dropped before 1.5 x the keep-alive"
    while time.monotonic() - t0 < 6 and _connections(running, "dev-0"):
        assert _ping(pinger)
        time.sleep(0.25)
    assert _connections(running, "dev-0") == 0, \
        "connections silent for 6 s with a keep-alive of 1 s still count"
    assert all(_closed_by_peer(so, 1.0) for so, _ in silent)
    assert running.closed("keepalive") == 8
    fresh, ack = _login(running.port, "dev-0", "secret-0", "boot-9", keep_alive=1)
    assert ack == OK, "the device stays locked out after its silent connections"
    assert _ping(pinger) and _ping(no_limit)
    for so in (fresh, pinger, no_limit, *(so for so, _ in silent)):
        so.close()


# -- 2. closing a connection whose client reads nothing ---------------------------------
def test_take_overs_and_revocation_close_the_socket_of_a_client_that_reads_nothing(
        running: Running) -> None:
    """Check 4 CONNECTs of dev-0 with one client id, each subscribing to its dead letters
    (QoS 0, a 4 KB send buffer on the broker's side), publishing 30 refused messages with
    60 KB topics and reading nothing (what the broker writes to it waits), leave one
    broker-side socket open, not 4 (each CONNECT takes the last one over), and that
    revoking dev-0 closes that one too."""
    before = _socket_fds()
    held = []
    for _ in range(4):
        so, ack = _login(running.port, "dev-0", "secret-0", "same", rcvbuf=4096)
        assert ack == OK
        assert _subscribe(so, "edgewise/dev-0/deadletter", 0)[:2] == b"\x90\x03"
        _shrink_send_buffer(running, "dev-0/same")
        for k in range(30):
            so.sendall(_publish0("edgewise/dev-0/x" + "y" * 60_000, b'{"seq": %d}' % k))
        time.sleep(0.3)
        held.append(so)  # never read again
    assert wait_until(lambda: _socket_fds() - before <= len(held) + 1, 5), \
        f"{_socket_fds() - before - len(held)} broker-side sockets open, 1 expected"
    assert _connections(running, "dev-0") == 1
    del running.secrets["dev-0"]  # revoked, as `edgewise device delete` elsewhere
    assert wait_until(lambda: _socket_fds() - before <= len(held), 5), \
        "the revoked connection's socket is still open"
    for so in held:
        so.close()


@pytest.fixture
def stall_1s(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients may take nothing written to them for 1 s."""
    monkeypatch.setattr(EmbeddedBroker, "WRITE_STALL_S", 1.0, raising=False)


def test_a_client_taking_nothing_written_to_it_is_dropped_and_frees_its_slot(
        stall_1s: None, running: Running) -> None:
    """Check a connection subscribed to its dead letters (QoS 0) that sends refused
    messages and reads nothing is dropped once its writes have stalled for 1 s
    (``reason="write_stalled"``) and no longer counts among dev-0's connections."""
    so, ack = _login(running.port, "dev-0", "secret-0", "deaf", rcvbuf=4096)
    assert ack == OK
    assert _subscribe(so, "edgewise/dev-0/deadletter", 0)[:2] == b"\x90\x03"
    _shrink_send_buffer(running, "dev-0/deaf")
    burst = _publish0("edgewise/dev-0/x" + "y" * 2000) * 50
    so.settimeout(0.2)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6 and not running.closed("write_stalled"):
        try:
            so.sendall(burst)
        except OSError:  # the broker stopped reading it, or dropped it
            time.sleep(0.05)
    assert running.closed("write_stalled") == 1, \
        "a client reading nothing for 6 s is still connected"
    assert wait_until(lambda: _connections(running, "dev-0") == 0, 3)
    so.close()


# -- 3. what waits to be written to a connection ----------------------------------------
def test_dead_letters_to_a_connection_that_never_answers_are_bounded(
        monkeypatch: pytest.MonkeyPatch, running: Running) -> None:
    """Check 600 dead letters (QoS 1) for a connection that never sends PUBACK keep at
    most 64 in flight to it (amqtt's in-flight map) and all of them within 64 KiB, the
    others dropped and counted, while the device's ack is still queued for it."""
    monkeypatch.setattr(EmbeddedBroker, "OUTBOX_BYTES", 64 * 1024, raising=False)
    # the outbox of a connection is sized at its CONNECT
    deaf, ack1 = _login(running.port, "dev-0", "secret-0", "deaf")
    sender, ack2 = _login(running.port, "dev-0", "secret-0", "sender")
    assert (ack1, ack2) == (OK, OK)
    assert _subscribe(deaf, "edgewise/dev-0/deadletter", 1)[:2] == b"\x90\x03"
    assert _subscribe(deaf, "edgewise/dev-0/ack", 1)[:2] == b"\x90\x03"
    sender.sendall(_publish0("edgewise/dev-0/elsewhere") * 600)
    assert wait_until(lambda: sum(1 for n, _ in running.counted
                                  if n == "edgewise_messages_deadlettered_total") == 600, 10)

    def state() -> tuple[int, int]:
        session = running.broker._broker._sessions["dev-0/deaf"][0]
        return len(session.inflight_out), len(running.broker._pending)
    in_flight, tasks = running.on_loop(state)
    assert in_flight <= 64 and tasks <= 64 + 8, (in_flight, tasks)
    dropped = sum(1 for n, labels in running.counted
                  if n == "edgewise_mqtt_deliveries_dropped_total")
    assert 0 < dropped < 600, dropped
    running.run(running.broker.publish_ack("dev-0", 5))  # as after a commit

    def ack_queued() -> bool:
        outbox = running.broker._broker._sessions["dev-0/deaf"][1].reader.outbox
        return any(entry[1] == b'{"seq": 5}' for entry in outbox.queue)
    assert running.on_loop(ack_queued), "the ack was dropped with the dead letters"
    for so in (deaf, sender):
        so.close()


def test_a_refused_topic_is_quoted_short_in_its_dead_letter(running: Running) -> None:
    """Check a PUBLISH to a 60,016-character topic gets a dead letter under 2 KB quoting
    its first 200 characters and saying how long it was (it quoted all of it twice)."""
    so, ack = _login(running.port, "dev-0", "secret-0", "long")
    assert ack == OK
    assert _subscribe(so, "edgewise/dev-0/deadletter", 0)[:2] == b"\x90\x03"
    name = "edgewise/dev-0/x" + "y" * 60_000
    so.sendall(_publish0(name))
    kind, body = _read_packet(so)
    assert kind >> 4 == 3, kind  # PUBLISH
    assert len(body) < 2000, f"a dead letter of {len(body)} bytes"
    size = int.from_bytes(body[:2], "big")
    problem = json.loads(body[2 + size:])
    assert problem["reason"] == "topic_not_allowed"
    assert problem["value"] == name[:200]
    assert "60016 characters" in problem["detail"], problem["detail"]
    so.close()


def test_long_topics_count_toward_what_a_connection_holds_unhandled(
        running: Running) -> None:
    """Check refused PUBLISHes with 2 KB topics and 2-byte payloads sent flat out leave at
    most a few hundred unhandled in the connection's queue (its 256 KiB bound counted
    their topics too), not tens of thousands."""
    so, ack = _login(running.port, "dev-0", "secret-0", "flood")
    assert ack == OK
    burst = _publish0("edgewise/dev-0/x" + "y" * 2000) * 50
    so.settimeout(0.2)
    held = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:
        try:
            so.sendall(burst)
        except OSError:
            pass
        held = max(held, running.on_loop(lambda: running.broker._broker._sessions[
            "dev-0/flood"][0].delivered_message_queue.qsize()))
    assert held < 1000, f"{held} received messages waiting in one connection's queue"
    so.close()


# -- 4. SUBSCRIBE amplification ---------------------------------------------------------
def test_a_subscribe_naming_the_ack_topic_1000_times_runs_one_lookup_at_a_time() -> None:
    """Check one SUBSCRIBE naming dev-0's ack topic 1,000 times runs a few watermark
    lookups (2 due, 3 allowed under load), never two at once (it ran one per filter, 6 at
    a time on the thread pool), and dev-0 still gets its ack."""
    lock = threading.Lock()
    seen = {"calls": 0, "running": 0, "peak": 0}

    def watermark(device: str) -> int:
        with lock:
            seen["calls"] += 1
            seen["running"] += 1
            seen["peak"] = max(seen["peak"], seen["running"])
        time.sleep(0.05)
        with lock:
            seen["running"] -= 1
        return 7

    r = Running(watermark=watermark)
    try:
        so, ack = _login(r.port, "dev-0", "secret-0", "many")
        assert ack == OK
        one = _s(b"edgewise/dev-0/ack") + b"\x00"
        body = (1).to_bytes(2, "big") + one * 1000
        so.sendall(b"\x82" + _length(len(body)) + body)
        kind, suback = _read_packet(so)
        assert kind == 0x90 and len(suback) == 1002
        kind, publish = _read_packet(so)
        assert kind >> 4 == 3 and publish.endswith(b'{"seq": 7}'), publish
        time.sleep(1.0)  # what else would run
        got: dict[str, Any] = dict(seen)
        assert got["peak"] == 1 and got["calls"] <= 3, got
        so.close()
    finally:
        r.stop()
