"""The embedded broker's take-over loop, on a real broker (in a thread of this process, on
a free port) with raw MQTT sockets and the simulator's own MQTT device.

Two clients of one device using one client id (a copied config, two simulators given the
same ``client_id``) took the session from each other at every reconnect, for ever: the
simulator reconnects within 0.05 to 0.5 s, so its two copies were each cut off some ten
times a second and neither kept a connection, and with clean sessions the broker neither
counted nor logged a single take-over. Now a take-over of a clean session counts
``reason="taken_over"`` as a persistent one did, and once a client id's connections were
taken over ``TAKEOVER_LOOP_COUNT`` times in ``TAKEOVER_LOOP_WINDOW_S``, each within
``TAKEOVER_SHORT_S`` of its login, a CONNECT that would take it over again is refused
(CONNACK 2, identifier rejected; ``reason="takeover_loop"``, logged) and the live
connection keeps it.

A connection taken over went on handling the SUBSCRIBE or UNSUBSCRIBE it had sent, and
amqtt finds subscriptions by client id: its filters were listed again after its session
was deleted (the new connection's SUBSCRIBE then skipped as a duplicate), or its
UNSUBSCRIBE removed the new connection's subscription; either way the connection that
took over got no ack nor dead letter. Now each session's subscriptions are its own.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from edgewise.sim.device import MqttDevice
from tests.conftest import wait_until
from tests.gateway.test_broker_limits import (
    Running,
    _bye,
    _closed_by_peer,
    _connect,
    _length,
    _s,
    _subscribe,
)
from tests.transport.test_broker_hunt_s41 import _read_packet

OK = b"\x20\x02\x00\x00"
IDENTIFIER_REJECTED = b"\x20\x02\x00\x02"
#: the broker's TAKEOVER_LOOP_COUNT, set on it (the class's default: 5)
LOOP = 4


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running()
    r.broker.TAKEOVER_LOOP_COUNT = LOOP
    yield r
    r.stop()


def _loop_until_refused(r: Running, client_id: str) -> list[socket.socket]:
    """CONNECTs of dev-0 with ``client_id``, each taking the last one over at once, as far
    as the bound lets them: the sockets, all answered CONNACK 0."""
    socks = []
    for _ in range(LOOP + 1):
        so, ack = _connect(r.port, "dev-0", "secret-0", client_id)
        assert ack == OK
        socks.append(so)
    return socks


def test_a_client_id_taken_over_again_and_again_is_refused_and_the_live_one_kept(
        running: Running, caplog: pytest.LogCaptureFixture) -> None:
    """Check that 5 clean CONNECTs of dev-0 with one client id, each taking the last one
    over within a second of its login, are admitted (4 take-overs, counted), that the 6th
    is refused with CONNACK 2 (identifier rejected) while the 5th keeps its connection and
    its subscription, with a warning naming the device, the client id and what to do, and
    that once the take-overs are older than the window one more CONNECT takes it over.
    Before, every CONNECT took it over and no clean take-over was counted."""
    running.broker.TAKEOVER_LOOP_WINDOW_S = 4.0
    caplog.set_level(logging.WARNING, logger="edgewise.transport.broker")
    started = time.monotonic()
    socks = _loop_until_refused(running, "same")
    last = time.monotonic()  # every take-over was before this
    assert last - started < 3.0, "the machine is too slow for this window"
    assert wait_until(lambda: running.closed("taken_over") == LOOP, 5), \
        running.counted
    live = socks[-1]
    assert _subscribe(live, "edgewise/dev-0/ack")[:2] == b"\x90\x03"

    refused, ack = _connect(running.port, "dev-0", "secret-0", "same")
    assert ack == IDENTIFIER_REJECTED, ack
    assert _closed_by_peer(refused, 2.0)
    assert running.closed("takeover_loop") == 1
    assert not _closed_by_peer(live, 0.5), "the live connection was taken over"
    assert running.on_loop(lambda: running.broker.connections_of("dev-0")) == 1
    warned = [r.getMessage() for r in caplog.records if "takeover_loop" in r.getMessage()]
    assert len(warned) == 1 and "'dev-0'" in warned[0] and "'same'" in warned[0] \
        and "client id of its own" in warned[0], caplog.text

    # the other device, and dev-0 with another client id, are not held back
    other, ack = _connect(running.port, "dev-1", "secret-1", "same")
    assert ack == OK
    second, ack = _connect(running.port, "dev-0", "secret-0", "other")
    assert ack == OK

    time.sleep(max(0.0, last + 4.1 - time.monotonic()))  # the take-overs are past
    again, ack = _connect(running.port, "dev-0", "secret-0", "same")
    assert ack == OK
    assert _closed_by_peer(live, 2.0), "the older connection was not taken over"
    for so in [*socks, refused, other, second, again]:
        _bye(so)


def test_a_device_reconnecting_past_connections_that_lasted_is_never_refused(
        running: Running) -> None:
    """Check that a device whose connection has lasted past ``TAKEOVER_SHORT_S`` (here
    0.3 s) when it connects again with its client id (its old connection half-open) takes
    it over every time, however often."""
    running.broker.TAKEOVER_SHORT_S = 0.3
    socks = []
    for _ in range(LOOP + 3):
        so, ack = _connect(running.port, "dev-0", "secret-0", "same")
        assert ack == OK
        socks.append(so)
        time.sleep(0.4)
    assert running.closed("takeover_loop") == 0
    assert running.closed("taken_over") == LOOP + 2
    for so in socks:
        _bye(so)


def test_two_simulated_devices_with_one_client_id_settle_on_one_connection(
        running: Running) -> None:
    """Check that two of the simulator's devices for dev-0 given one client id stop
    taking the session from each other: in 5 s they log in at most ``TAKEOVER_LOOP_COUNT``
    (here 4) + 1 times between them, and one of them is connected at the end (before:
    some ten logins a second, each cutting the other off, for as long as both ran)."""
    first = MqttDevice("dev-0", "secret-0", port=running.port, client_id="same")
    second = MqttDevice("dev-0", "secret-0", port=running.port, client_id="same")
    try:
        first.start(resume=False)
        second.start(resume=False)  # takes the session over
        time.sleep(5.0)
        logins = first.connects + second.connects
        assert logins <= LOOP + 1, f"{logins} logins in 5 s"
        assert running.closed("taken_over") == logins - 1
        assert running.closed("takeover_loop") >= 1
        assert wait_until(lambda: first.connected or second.connected, 2)
    finally:
        first.stop()
        second.stop()


def _packet(so: socket.socket, timeout: float) -> bytes | None:
    """The body of the next packet ``so`` gets within ``timeout`` s (``None``: none)."""
    so.settimeout(timeout)
    try:
        return _read_packet(so)[1]
    except TimeoutError:
        return None


def _ends(so: socket.socket, timeout: float) -> bool:
    """Whether the peer closes ``so`` within ``timeout`` s (what it sends before is read)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        so.settimeout(left)
        try:
            if not so.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def _acks_after_take_over(r: Running, old_request: bytes) -> list[bytes]:
    """dev-0 logs in with client id "same", subscribes to its ack topic, and sends
    ``old_request`` (a SUBSCRIBE or UNSUBSCRIBE naming it 3,000 times, which the broker
    handles filter by filter); a clean CONNECT with the same client id takes it over at
    once and subscribes to the ack topic. Returns the payloads the new connection gets
    once the old one has ended and an ack of seq 9 is published."""
    old, ack = _connect(r.port, "dev-0", "secret-0", "same")
    assert ack == OK
    assert _subscribe(old, "edgewise/dev-0/ack")[:2] == b"\x90\x03"
    old.sendall(old_request)
    new, ack = _connect(r.port, "dev-0", "secret-0", "same")
    assert ack == OK
    assert _subscribe(new, "edgewise/dev-0/ack", 2)[:2] == b"\x90\x03"
    assert _ends(old, 5.0)
    time.sleep(0.5)  # the old connection's requests handled, its session ended
    while _packet(new, 0.3) is not None:
        pass  # anything sent while the two overlapped
    r.run(r.broker.publish_ack("dev-0", 9))
    got = []
    while (body := _packet(new, 2.0)) is not None:
        got.append(body[body.index(b"{"):])
    _bye(new)
    return got


def test_a_subscribe_handled_after_its_connection_was_taken_over_leaves_the_new_one_its_acks(
        running: Running) -> None:
    """Check that a connection taken over while the broker handles its SUBSCRIBE (the ack
    topic named 3,000 times) does not keep the new connection of its client id from its
    acks. Before, the old session was listed again under the ack topic after the take-over,
    the new connection's SUBSCRIBE was skipped as a duplicate of its client id, and once
    the old one ended the new one got no ack at all."""
    one = _s(b"edgewise/dev-0/ack") + b"\x01"
    body = (5).to_bytes(2, "big") + one * 3000
    got = _acks_after_take_over(running, b"\x82" + _length(len(body)) + body)
    assert got == [b'{"seq": 9}'], got


def test_an_unsubscribe_handled_after_its_connection_was_taken_over_leaves_the_new_one_its_acks(
        running: Running) -> None:
    """Check that an UNSUBSCRIBE of the ack topic that a connection sent behind a long
    SUBSCRIBE, handled once a clean CONNECT of its client id has taken it over, does not
    remove the new connection's subscription: the new one still gets its acks. amqtt
    removed the first subscription of that client id, which was the new connection's."""
    one = _s(b"edgewise/dev-0/ack") + b"\x01"
    body = (5).to_bytes(2, "big") + one * 3000
    unsubscribe = (6).to_bytes(2, "big") + _s(b"edgewise/dev-0/ack")
    got = _acks_after_take_over(running, b"\x82" + _length(len(body)) + body + b"\xa2"
                                + _length(len(unsubscribe)) + unsubscribe)
    assert got == [b'{"seq": 9}'], got
