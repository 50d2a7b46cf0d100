"""The embedded MQTT broker (amqtt, in process) with device auth, topic ACL and ingest.

Devices connect with username = device id and password = device secret; anonymous
clients and empty passwords are refused, and so is everything after too many wrong
secrets (throttled). A device may publish only to ``edgewise/<its id>/telemetry`` and
subscribe only to its own ``ack`` and ``deadletter`` topics; a publish anywhere else is
refused and reported on the device's dead-letter topic with reason ``topic_not_allowed``,
and so is a PUBLISH to a topic MQTT forbids (empty, holding ``+`` or ``#``, or starting
with ``$``), which amqtt answered by ending the connection's message loop with its socket
left open (PUBACKs and keep-alives answered, telemetry never read again). A refused
PUBLISH is acknowledged (PUBACK, so the device drops it) and its payload's seqs, where
they can be read, count as handled for the device that sent it (its own stream, whatever
topic it named): they are passed to the handler as records holding only their seq (left
out, not stored), so the device's ack moves past them and no seq gap opens behind them.
Should amqtt end that loop for any other reason, the connection is closed
(``edgewise_mqtt_connections_closed_total{reason="protocol_error"}``), so the device
reconnects and resends.

Three things of amqtt's would step past those checks, so they are refused or kept apart:

* a **Will** message (CONNECT with the will flag): amqtt publishes it when the client
  drops, and retains it, without the publish check, so a device could forge another's
  ack (``edgewise/<other>/ack``) or, with the internal subscriber, its telemetry. A
  CONNECT carrying one is refused (``edgewise_auth_failures_total{reason="will"}``).
* **another device's client id**: amqtt hands a persistent session to whoever connects
  with its client id (subscriptions, queued acks and dead letters included) and lets a
  live one be taken over. So each device has client ids of its own: the session of a
  CONNECT is kept under its device id and its client id together (``<device>/<client
  id>``; a device id holds no ``/``), so the client ids of two devices never meet. A device
  gets its own persistent session back with its client id, and no other device can reach
  it, take it over or lock it out, whatever client id it picks (one device using
  ``pump-2-main`` or ``pump-2`` as its client id only names a session of its own); nor
  does the answer to a CONNECT tell which device ids are registered.
  amqtt would also drop (clean session) or rewrite (persistent session) the session of a
  CONNECT's client id *before* authenticating it, so an unauthenticated CONNECT reusing a
  live device's client id cut that device off; :class:`_GuardedBroker` authenticates and
  admits the CONNECT first and only then touches a session. A connection whose session is
  gone (taken over by its own device) is closed, not left to lose what it sends, and a
  SUBSCRIBE or UNSUBSCRIBE it was still handling no longer touches the subscriptions of
  the connection that took it over (amqtt found them by client id: the new one lost its
  acks).
* **retained messages**: amqtt sends every retained message to each client that
  connects, past the topic ACL. The broker keeps none (the gateway's acks are not
  retained either, see below); a retain flag is ignored.

Telemetry does not fan out to other subscribers: the broker hands each message straight
to the gateway's handler (from its message loop, no second MQTT hop), and after the commit
the gateway publishes the QoS 1 ack ``{"seq": w}`` on ``edgewise/<id>/ack``; a device that
subscribes to it gets its watermark from the store at once. Acks are not retained: amqtt
sends every retained message of every subscribed topic to each client that connects,
past the topic ACL, so one device was told the others' acks.

Revocation: a device's connections are closed as soon as its credentials go: at once
when the gateway deletes it (:meth:`EmbeddedBroker.forget_device`), within
``revocation_poll_s`` (1 s) when another process does (``edgewise device delete``). Each
connection keeps the credential tag it authenticated with; telemetry is committed only
while that tag is still the device's (checked against the credential store per batch), so
a connection opened with a revoked secret never writes as a device registered again
under the same id. With the internal subscriber (``consumer="subscriber"``) the tag is
also read afresh at each telemetry PUBLISH, before it fans out, and the batch is checked
against the tag its device's telemetry was last let through with. A refused message gets
no ack and its connection is closed. A device reconnecting with its persistent session
while its old connection is still open (half-open) gets that old connection closed, and
its loop ended, before the session is handed over, so the live connection keeps its acks
and is closed on revocation.

Durability: the broker sends a QoS 1 PUBACK once the message is queued for the store (in
memory; amqtt alone sent it as soon as the message was read), so PUBACK means nothing for
durability; the application ack is sent only after the store has committed.

Bounds amqtt does not keep (amqtt 0.11 has no maximum packet size nor CONNECT timeout, no
limit on connections, logged in or not, nor on what waits for the store, and keeps a
persistent session for ever):

* **CONNECT time**: a new connection has ``connect_timeout_s`` (10 s) from its accept to
  send its whole CONNECT, its TLS handshake included on a TLS listener; one that has not
  (idle, trickling, or never starting TLS) is closed before authentication
  (``edgewise_mqtt_connections_closed_total{reason="connect_timeout"}``).
* **connections not logged in**: at most ``max_pending_per_source`` (128, or half of
  ``max_pending`` where that is less, so one address never fills it) connections from
  one source address (an IPv6 one counted by its /64) and ``max_pending`` in all
  (:func:`default_max_pending`: a quarter of the open-file limit, 16 to 4096) may be open
  without having finished their CONNECT; a new one over either is closed at its accept
  (``reason="pending_per_source"`` or ``"pending_total"``, logged at most once per 10 s).
  The gateway's HTTP server and the store share the process's file descriptors, so idle
  sockets could otherwise starve them (and every device's reconnect) until each timed out.
* **connections logged in**: one device may hold at most ``max_connections_per_device``
  (``EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE``, 8) open at once; its next CONNECT is
  answered CONNACK 3 (server unavailable; paho: "Server unavailable") and closed
  (``reason="per_device"``, logged with the device and the cap at most every 10 s per
  device). A CONNECT reusing the client id of one of them counts one more, as it closes
  that one when it takes its session over. Else one device's secret was enough to open
  connections until the process had no file descriptor left (1,005 at ``ulimit -n 1024``),
  locking out every other device and the HTTP API.
* **keep-alive** (amqtt's broker ignores it): a connection from which nothing has come
  for :data:`KEEPALIVE_FACTOR` (1.5) times the keep-alive its CONNECT declared is dropped
  (MQTT 3.1.1 3.1.2.10; ``reason="keepalive"``; a keep-alive of 0 means none), so a device
  gone without a FIN (power loss, a NAT that forgot it) leaves its device's count; else
  8 such drops locked the device out (CONNACK 3) until a restart. Time the broker itself
  holds a connection back (see *what waits for the store*) does not count.
* **what is written to a connection**: a client that takes nothing written to it for
  :attr:`EmbeddedBroker.WRITE_STALL_S` (30 s; a zero TCP window) is dropped
  (``reason="write_stalled"``), and a connection the broker closes (taken over,
  revoked, ...) is aborted, not drained: amqtt waited for its client to read what was
  left, for ever, so its socket stayed open after it had left its device's count (one
  device held any number of sockets, and a revocation waiting on one held every later
  one). Each connection's acks and dead letters go through an outbox
  (:class:`~edgewise.transport._outgoing.Outbox`): :attr:`EmbeddedBroker.OUTBOX_WINDOW`
  (64) in flight, all of them within :attr:`EmbeddedBroker.OUTBOX_BYTES` (4 MiB), past
  which a dead letter is dropped (``edgewise_mqtt_deliveries_dropped_total{reason=
  "outbox_full"}``, logged at most every 10 s per device) and a queued ack is replaced by a
  newer one (never dropped); amqtt held each in a task of its own until its client
  answered. A refused PUBLISH's dead letter quotes :data:`QUOTED_TOPIC_CHARS` (200)
  characters of its topic (a topic may hold 65,535 bytes; it was quoted whole, twice).
* **watermark lookups**: a device subscribing to its ack topic gets its ack from one store
  lookup at a time (:meth:`EmbeddedBroker.ack_subscriber`); amqtt announces a SUBSCRIBE
  once per filter, duplicates included, and 5 SUBSCRIBEs naming the ack topic 3,100 times
  each queued 15,500 lookups on the thread pool that authenticates every CONNECT.

* **packet size**: amqtt reads each packet whole into memory, whatever its fixed header
  announces (MQTT allows 256 MB), before anything can look at it. The broker reads the
  fixed header, and a connection announcing a packet over :attr:`EmbeddedBroker.max_packet_bytes`
  is closed before its body is read (``edgewise_mqtt_connections_closed_total{reason=
  "too_large"}``). The limit is :func:`max_packet_bytes`: 16 times
  ``EDGEWISE_MAX_PAYLOAD_BYTES`` (4 MiB for 256 KiB), because the gateway still reads a
  telemetry message that large for its seqs, to dead-letter and acknowledge it (see
  ``edgewise.gateway.pipeline``), plus the largest PUBLISH header (a 65,535-byte topic).
  Every other packet (CONNECT, SUBSCRIBE, UNSUBSCRIBE, ...) may announce at most
  :attr:`EmbeddedBroker.max_control_packet_bytes` (:data:`MAX_CONTROL_PACKET_BYTES`,
  64 KiB), the same way: amqtt decodes every topic filter of a SUBSCRIBE before anything
  checks one, and a 4 MB one (a million filters) held the loop, and every device's acks,
  for seconds.
* **what waits for the store**: the telemetry queued for the commit holds at most
  ``max_queued_bytes`` of payload (``EDGEWISE_MQTT_MAX_QUEUED_BYTES``, 64 MiB), a quarter
  of it per device. Past that a message waits for room before it is queued and
  acknowledged (PUBACK), and its connection reads no further PUBLISH while it holds
  :data:`CONNECTION_BACKLOG_BYTES` (256 KiB, topics and 128 bytes a message counted with
  the payloads) received but not handled, so a stalled store
  holds the devices back through TCP rather than in the gateway's memory (amqtt
  acknowledged and held every message: 25,000 after 20 s of a stall, and growing).
* **QoS 2 messages waiting for their PUBREL**: a session holds at most
  :attr:`EmbeddedBroker.QOS2_WINDOW` (:data:`QOS2_WINDOW`, 64) received QoS 2 PUBLISHes
  that got their PUBREC and wait for their PUBREL, within
  :attr:`EmbeddedBroker.QOS2_BYTES` (:data:`QOS2_BYTES`, 8 MiB; one alone is always
  taken); the PUBLISH that would go past either drops its connection
  (``reason="qos2_backlog"``, logged at most every 10 s per device), unanswered. Waiting
  for room cannot work: the PUBRELs that make it come on the same connection. A client
  never has more pending here than it has in flight (paho: 20 by default). amqtt held
  each without bound, with a task waiting for its PUBREL: 2,000 such PUBLISHes of 16 KiB
  held 2,000 tasks and about 40 MiB, and a device may send 65,535 of up to ``max_packet_bytes``
  each; and while one such task waited, amqtt's reader kept every later packet's task
  (20,000 PINGREQs: 20,000 tasks). Now none waits (:func:`_qos2_held_bounded`,
  :func:`_pubrel_always_answered`). A persistent session keeps what it holds across a
  reconnect (each one's PUBREC is sent again), counted against the same bound.
* **packet body time**: keep-alive times only the wait for a packet to start. Once a
  logged-in connection's fixed header is read, the body must come within
  :meth:`EmbeddedBroker.packet_body_timeout`: the larger of
  :attr:`EmbeddedBroker.PACKET_BODY_S` (:data:`PACKET_BODY_S`, 30 s) and 1.5 keep-alives,
  plus one second per :attr:`EmbeddedBroker.PACKET_BODY_RATE` (:data:`PACKET_BODY_RATE`,
  4 KiB) it announced (a 32 kbit/s link's time to carry it); a wait for room in the store's
  queue (above) does not count. Past it the connection is dropped
  (``reason="slow_packet"``, logged at most every 10 s per device). Else a client
  announcing a 4 MiB PUBLISH and sending a byte every few seconds, or gone (power lost)
  half-way through one, held its connection, its place among its device's and what it
  had sent for ever. A CONNECT, body included, is timed by ``connect_timeout_s`` (above).
* **client ids**: each device keeps at most ``client_ids_per_device`` (16) client ids:
  when it uses one more, its least recently used one with no open connection is released,
  with its offline persistent session (``edgewise_mqtt_client_ids_released_total``), so
  when it uses that id again it finds nothing of it. A device connecting with ever-new
  client ids (random ones; each run of the simulator picks a new one) thus cannot grow the
  broker's maps; amqtt itself drops a clean session within a second of its disconnect. A
  refused CONNECT leaves nothing behind, and a deleted device's client ids are released.
* **take-over loops**: two clients of one device with one client id (a copied config, two
  simulators given one ``client_id``) take its session from each other at every
  reconnect, for ever (two simulators: some twenty take-overs a second, neither ever
  connected for long). Once a client id's connections were taken over
  :data:`TAKEOVER_LOOP_COUNT` (5) times in :data:`TAKEOVER_LOOP_WINDOW_S` (60 s), each
  within :data:`TAKEOVER_SHORT_S` (10 s) of its login, a CONNECT that would take it over
  again is answered CONNACK 2 (identifier rejected; ``reason="takeover_loop"``, logged at
  most every 10 s per device, naming the client id) and the live connection keeps it; a
  device reconnecting past its own half-open connection takes over one that lasted.
  Every take-over, of a clean session too, counts ``reason="taken_over"``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hmac
import inspect
import json
import logging
import os
import secrets
import ssl
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from amqtt.adapters import (
    ReaderAdapter,
    StreamReaderAdapter,
    WriterAdapter,
)
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerConfig, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import (
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    ConnackPacket,
)
from amqtt.mqtt.packet import PUBLISH, MQTTFixedHeader, MQTTPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import ProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import INCOMING, ApplicationMessage, IncomingApplicationMessage, Session
from amqtt.utils import gen_client_id

from edgewise.config import Settings
from edgewise.errors import AuthError, ConfigError, StoreError, ThrottledError
from edgewise.security.credentials import source_key
from edgewise.telemetry import SEQ_SCAN_FACTOR, payload_seqs
from edgewise.transport._outgoing import ENTRY_OVERHEAD_BYTES, BoundedWriter, Outbox
from edgewise.transport.base import Handler, Message, Outcome, topic
from edgewise.transport.batcher import Batcher

__all__ = ["CONNECT_TIMEOUT_S", "INTERNAL_USER", "MAX_CONNECTIONS_PER_DEVICE",
           "MAX_CONTROL_PACKET_BYTES", "MAX_PENDING_PER_SOURCE", "MAX_QUEUED_BYTES",
           "PACKET_BODY_RATE", "PACKET_BODY_S", "QOS2_BYTES", "QOS2_WINDOW",
           "TAKEOVER_LOOP_COUNT", "TAKEOVER_LOOP_WINDOW_S", "TAKEOVER_SHORT_S",
           "EmbeddedBroker", "default_max_pending", "max_packet_bytes"]

#: MQTT user of the gateway's own subscriber in ``consumer="subscriber"`` mode; it cannot
#: be a device id (those start with a letter or digit).
INTERNAL_USER = "__gateway__"

log = logging.getLogger(__name__)

_INSTANCES: dict[str, EmbeddedBroker] = {}

#: amqtt's handlers of an acknowledgement from a client: one that comes after amqtt gave
#: up waiting for it (5 s, under load) sets the result of a cancelled future. amqtt means
#: to catch that InvalidStateError, but on Python < 3.12 it catches a stand-in class of
#: its own, so each ended a task in "Task exception was never retrieved" on stderr.
_LATE_ACK_HANDLERS = frozenset(
    getattr(ProtocolHandler, name).__code__
    for name in ("handle_puback", "handle_pubrec", "handle_pubcomp", "handle_pubrel"))


class _LateAckQuiet:
    """An event loop's exception handler: amqtt's InvalidStateError for a client's late
    acknowledgement (see :data:`_LATE_ACK_HANDLERS`) is logged at debug level, anything
    else goes to the handler that was there before (else the loop's default one)."""

    def __init__(self, previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]
                 | None) -> None:
        self.previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        task = context.get("future")
        coro = task.get_coro() if isinstance(task, asyncio.Task) else None
        if (isinstance(context.get("exception"), asyncio.InvalidStateError)
                and getattr(coro, "cr_code", None) in _LATE_ACK_HANDLERS):
            log.debug("amqtt: a client's acknowledgement came after its wait ended (%s)",
                      getattr(coro, "__qualname__", coro))
            return
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


def _quiet_amqtt(loop: asyncio.AbstractEventLoop) -> None:
    """Keep amqtt's per-message noise off stderr under load: its protocol handler's
    warnings ("Timeout waiting for PUBACK", "Received PUBACK for unknown pending message
    Id"; the device resends what our ack does not cover) below ERROR, and the tasks that
    end in :class:`_LateAckQuiet`'s error at debug level on ``loop``. Our own log and
    every other exception of the loop are as they were."""
    logging.getLogger("amqtt.mqtt.protocol.handler").setLevel(logging.ERROR)
    current = loop.get_exception_handler()
    if not isinstance(current, _LateAckQuiet):
        loop.set_exception_handler(_LateAckQuiet(current))

#: Session attributes this module sets: the CONNECT's verdict, and the credential tag the
#: connection authenticated with (``None``: not tracked, e.g. the internal subscriber).
_VERDICT = "_edgewise_authenticated"
_TAG = "_edgewise_credential"
#: set while a CONNECT is authenticated: its connection (the :class:`_PacketLimit` reader,
#: which holds its place among its device's logged-in connections), and the CONNACK return
#: code of a refusal other than "not authorized"
_CONN = "_edgewise_connection"
_REFUSAL = "_edgewise_refusal"
#: ``EmbeddedBroker._current`` value of a device whose credentials were revoked.
_REVOKED = b""

#: The largest PUBLISH variable header MQTT 3.1.1 allows: a topic of 65,535 bytes, its
#: 2-byte length and the 2-byte packet id.
_PUBLISH_HEADER_MAX = 2 + 65_535 + 2
#: Seconds a new connection has to complete its CONNECT, a TLS handshake included
#: (``EmbeddedBroker.connect_timeout_s``)
CONNECT_TIMEOUT_S = 10.0
#: Connections from one source (an IPv6 address counted by its /64) that may be open at once
#: without having finished their CONNECT (``EmbeddedBroker.max_pending_per_source``)
MAX_PENDING_PER_SOURCE = 128
#: Logged-in connections one device may hold open at once
#: (``EmbeddedBroker.max_connections_per_device``,
#: ``EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE``)
MAX_CONNECTIONS_PER_DEVICE = 8
#: The largest remaining length of a packet other than PUBLISH (CONNECT, SUBSCRIBE,
#: UNSUBSCRIBE, ...; ``EmbeddedBroker.max_control_packet_bytes``): 16,000 one-character
#: topic filters, where amqtt decodes every filter of a SUBSCRIBE before anything checks one
MAX_CONTROL_PACKET_BYTES = 64 * 1024
#: Telemetry payload bytes that may wait for the store at once
#: (``EmbeddedBroker.max_queued_bytes``, ``EDGEWISE_MQTT_MAX_QUEUED_BYTES``); one device's
#: part of it is a quarter of it
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: Bytes of a connection's received messages not yet handled (queued for the store, or
#: refused) past which the broker reads no further PUBLISH from it (TCP holds the device
#: back); each message counts its payload, its topic and 128 bytes (:func:`_held_bytes`)
CONNECTION_BACKLOG_BYTES = 256 * 1024
#: A connection is dropped once nothing has come from it for this many times the
#: keep-alive its CONNECT declared (MQTT 3.1.1 3.1.2.10; a keep-alive of 0: never)
KEEPALIVE_FACTOR = 1.5
#: Seconds a client may take nothing the broker writes to it (acks, dead letters, PUBACKs)
#: before its connection is dropped (``EmbeddedBroker.WRITE_STALL_S``)
WRITE_STALL_S = 30.0
#: Seconds a connection the broker closes has to take what is left to write before it is
#: dropped (``EmbeddedBroker.CLOSE_GRACE_S``)
CLOSE_GRACE_S = 1.0
#: Acks and dead letters in flight to one connection at once (each QoS 1 publish waits for
#: its PUBACK; ``EmbeddedBroker.OUTBOX_WINDOW``)
OUTBOX_WINDOW = 64
#: Bytes of acks and dead letters queued or in flight to one connection past which a new
#: dead letter is dropped (a queued ack is replaced by a newer one;
#: ``EmbeddedBroker.OUTBOX_BYTES``)
OUTBOX_BYTES = 4 * 1024 * 1024
#: Characters of a refused PUBLISH topic quoted in its dead letter (and log line)
QUOTED_TOPIC_CHARS = 200
#: QoS 2 PUBLISHes received on one session and not yet released (PUBREC sent, PUBREL
#: awaited) past which its connection is closed (``EmbeddedBroker.QOS2_WINDOW``): paho's
#: default is 20 in flight, and a client never has more pending here than it has in flight
QOS2_WINDOW = 64
#: Bytes of those (:func:`_held_bytes` each) past which the connection is closed
#: (``EmbeddedBroker.QOS2_BYTES``); one message alone is always taken, whatever its size
#: (up to ``max_packet_bytes``). 20 payloads of the default 256 KiB limit fit
QOS2_BYTES = 8 * 1024 * 1024
#: Seconds a logged-in connection has to send a packet's body once its fixed header is
#: read, at least (``EmbeddedBroker.PACKET_BODY_S``): the larger of this and
#: :data:`KEEPALIVE_FACTOR` times its keep-alive, plus one second per
#: :data:`PACKET_BODY_RATE` bytes the header announced
PACKET_BODY_S = 30.0
#: Bytes per second below which a packet's body is too slow
#: (``EmbeddedBroker.PACKET_BODY_RATE``; 32 kbit/s, a GPRS link): a 256 KiB payload has
#: 64 s more, the largest PUBLISH (4 MiB) 17 minutes
PACKET_BODY_RATE = 4 * 1024
#: A CONNECT that would take over a live connection with its client id is refused (CONNACK
#: 2, identifier rejected) once that client id's connections were taken over this many
#: times in :data:`TAKEOVER_LOOP_WINDOW_S`, each within :data:`TAKEOVER_SHORT_S` of being
#: admitted (``EmbeddedBroker.TAKEOVER_LOOP_COUNT``): two clients using one client id
#: take the session from each other at every reconnect, for ever
TAKEOVER_LOOP_COUNT = 5
#: Seconds over which the take-overs of one client id are counted
#: (``EmbeddedBroker.TAKEOVER_LOOP_WINDOW_S``)
TAKEOVER_LOOP_WINDOW_S = 60.0
#: A take-over counts toward :data:`TAKEOVER_LOOP_COUNT` only when the connection taken
#: over had been admitted less than this many seconds before
#: (``EmbeddedBroker.TAKEOVER_SHORT_S``): a device reconnecting past its own half-open
#: connection takes over one that has lasted, once
TAKEOVER_SHORT_S = 10.0
#: names of the packets whose size matters, for the log
_PACKET_NAMES = {1: "CONNECT", 3: "PUBLISH", 8: "SUBSCRIBE", 10: "UNSUBSCRIBE"}


def _env_limit(name: str, default: int) -> int:
    """The whole number in environment variable ``name`` (unset, empty or 0: ``default``),
    as the embedded broker's limits without a CLI flag are read.

    >>> _env_limit("EDGEWISE_TEST_UNSET_LIMIT", 8)
    8
    """
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else 0
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"Setting {name} has value {raw!r}. Use a whole number of 1 or "
                          f"more (0 or unset: the default, {default}).")
    return value or default


def max_packet_bytes(max_payload_bytes: int) -> int:
    """The largest MQTT packet (its remaining length, in bytes) the embedded broker reads,
    for a telemetry payload limit of ``max_payload_bytes`` (``EDGEWISE_MAX_PAYLOAD_BYTES``):
    what the gateway still reads of a payload over the limit (to dead-letter and acknowledge
    it), plus the largest PUBLISH header.

    >>> max_packet_bytes(256 * 1024)  # 4 MiB + 65,539 bytes
    4259843
    """
    return SEQ_SCAN_FACTOR * max_payload_bytes + _PUBLISH_HEADER_MAX


def default_max_pending() -> int:
    """How many connections may be open at once, in all, without having finished their
    CONNECT (``EmbeddedBroker.max_pending``): a quarter of this process's open-file limit
    (``ulimit -n``; the HTTP server, the store and the logged-in devices share those file
    descriptors), at least 16 and at most 4096 (1024 where the limit cannot be read).

    >>> 16 <= default_max_pending() <= 4096
    True
    """
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1024
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 4096
    return max(16, min(4096, soft // 4))


def _session_key(device_id: str, client_id: str) -> str:
    """The key amqtt keeps the session of ``device_id``'s client id ``client_id`` under:
    each device has client ids of its own (a device id holds no ``/``).

    >>> _session_key("pump-3", "pump-2-main")
    'pump-3/pump-2-main'
    """
    return f"{device_id}/{client_id}"


class _Pending:
    """A connection that has not finished its CONNECT: its place in :class:`_PendingGate`,
    held until :meth:`release` (idempotent), and when its time to log in ends."""

    __slots__ = ("deadline", "gate", "source", "transport")

    def __init__(self, gate: _PendingGate, source: str, deadline: float,
                 transport: asyncio.BaseTransport) -> None:
        self.gate: _PendingGate | None = gate
        self.source = source
        self.deadline = deadline
        self.transport = transport

    def remaining(self) -> float:
        """Seconds left until :attr:`deadline` (negative once past)."""
        return self.deadline - time.monotonic()

    def release(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.leave(self)


class _PendingGate:
    """The connections open without a finished CONNECT, counted per source (an IPv6 address
    by its /64, :func:`~edgewise.security.credentials.source_key`) and in all: a new one
    over ``per_source`` or ``total`` is refused at its accept (see the module docstring).
    Used on the broker's loop only."""

    #: at most one log line of refusals this often (a flood refuses thousands a second)
    LOG_EVERY_S = 10.0

    def __init__(self, owner: EmbeddedBroker, per_source: int, total: int) -> None:
        self.owner = owner
        self.per_source = per_source
        self.total = total
        self.by_source: dict[str, int] = {}
        self.open: dict[_Pending, None] = {}  # an ordered set
        self._refused = 0
        self._logged_at = -self.LOG_EVERY_S

    def enter(self, transport: asyncio.BaseTransport, timeout: float) -> _Pending | None:
        """A place for the connection of ``transport``, which has ``timeout`` s to log in;
        ``None`` when it is over a cap (counted and, now and then, logged: the caller
        closes it)."""
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple | list) and peer else str(peer or "")
        source = source_key(host)
        reason = ("pending_per_source" if self.by_source.get(source, 0) >= self.per_source
                  else "pending_total" if len(self.open) >= self.total else None)
        if reason is not None:
            self._refuse(reason, source)
            return None
        place = _Pending(self, source, time.monotonic() + timeout, transport)
        self.by_source[source] = self.by_source.get(source, 0) + 1
        self.open[place] = None
        return place

    def leave(self, place: _Pending) -> None:
        if place not in self.open:
            return
        del self.open[place]
        left = self.by_source.get(place.source, 0) - 1
        if left > 0:
            self.by_source[place.source] = left
        else:
            self.by_source.pop(place.source, None)

    def abort_all(self) -> int:
        """Drop every connection still logging in (the broker stops); how many."""
        places = list(self.open)
        for place in places:
            with contextlib.suppress(Exception):
                place.transport.abort()
        return len(places)

    def _refuse(self, reason: str, source: str) -> None:
        self.owner.count("edgewise_mqtt_connections_closed_total", reason=reason)
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at < self.LOG_EVERY_S:
            return
        log.warning(
            "MQTT: %d new connection(s) closed at once since the last such line: too many "
            "connections have not finished their CONNECT (now %d from %s, at most %d per "
            "source; %d in all, at most %d: EDGEWISE_MQTT_MAX_PENDING_PER_SOURCE, "
            "EDGEWISE_MQTT_MAX_PENDING); the last was over the %s cap", self._refused,
            self.by_source.get(source, 0), source or "?", self.per_source, len(self.open),
            self.total, "per-source" if reason == "pending_per_source" else "total")
        self._refused = 0
        self._logged_at = now


def _payload_limit_setting() -> int:
    """``EDGEWISE_MAX_PAYLOAD_BYTES`` as the gateway reads it: the environment, else the
    default (the setting has no CLI flag)."""
    key = "EDGEWISE_MAX_PAYLOAD_BYTES"
    return Settings.load(env={key: os.environ[key]} if key in os.environ else {}
                         ).max_payload_bytes


class _PacketLimit(ReaderAdapter):
    """A connection's reader (wrapping amqtt's) that carries its packet size limit.

    amqtt 0.11 has no maximum packet size: it reads a packet's fixed header, then its whole
    body into memory (a PUBLISH payload in one ``read(n)``, ``n`` being what the header
    announced, up to 256 MB), and only then can a plugin look at it. Every packet's fixed
    header is read by :meth:`MQTTFixedHeader.from_stream`, which :func:`_install_packet_limit`
    wraps: when the reader is one of these, a remaining length over ``limit`` (a PUBLISH) or
    ``control_limit`` (any other packet) refuses the connection there, before one byte of
    the body is read. Should amqtt read a body some other way, a single read of more than
    the larger of the two is refused here too.

    Refusing drops the connection at once (the socket is aborted: no drain, no wait for a
    client that does not read) and makes every later read answer "no data", which ends
    amqtt's reading of the connection as if it had closed.
    """

    def __init__(self, inner: ReaderAdapter, writer: WriterAdapter, limit: int,
                 owner: EmbeddedBroker, place: _Pending | None = None,
                 control_limit: int | None = None) -> None:
        self.inner = inner
        #: its place among the connections not logged in (released once its CONNECT is
        #: answered), and when its time to log in ends; ``None`` when not counted
        self.place = place
        self.writer = writer
        self.limit = limit
        self.control_limit = limit if control_limit is None else control_limit
        self.owner = owner
        #: its session's received messages not yet handled (:class:`_CountedQueue`), once
        #: logged in: no PUBLISH is read while they hold CONNECTION_BACKLOG_BYTES or more
        self.deliveries: _CountedQueue | None = None
        self.user: str | None = None  # the device, once its CONNECT is authenticated
        #: the device it counts among the logged-in connections of (EmbeddedBroker.admit)
        self.counted_for: str | None = None
        #: when it was admitted (time.monotonic(); EmbeddedBroker.admit)
        self.admitted_at = 0.0
        self.tag: bytes | None = None  # and the credential tag it authenticated with
        self.refused = False
        #: the rest of the PUBLISH being read (read whole by the fixed-header check), served
        #: before the socket; dropped at the next fixed header, so a packet amqtt gives up
        #: on half-way (a wildcard topic) cannot leave its payload to be read as packets
        self.pending = b""
        #: the keep-alive its CONNECT declared (s; 0: none), once logged in
        self.keep_alive = 0
        #: its acks and dead letters on their way, once logged in (EmbeddedBroker._deliver)
        self.outbox: Outbox | None = None
        #: once logged in: bytes of the body of the packet being read still to come (set
        #: from its fixed header), and the timer that drops the connection when they take
        #: too long (armed at the first byte read of it: :meth:`_body_started`)
        self.body_left = 0
        self._body_timer: asyncio.TimerHandle | None = None
        peer = None
        with contextlib.suppress(Exception):
            peer = writer.get_peer_info()
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    async def read(self, n: int = -1) -> bytes:
        if not self.refused and n > max(self.limit, self.control_limit):
            await self.refuse(n, "read", max(self.limit, self.control_limit))
        if self.refused:
            raise NoDataError("connection dropped by the broker (a packet over its size "
                              "limit, keep-alive expired or writes stalled)")
        if self.pending:
            if n < 0:
                n = len(self.pending)
            chunk, self.pending = self.pending[:n], self.pending[n:]
            return chunk
        if self.body_left <= 0:
            return await self.inner.read(n)
        self._body_started()
        chunk = await self.inner.read(n)
        self._body_got(len(chunk))
        return chunk

    async def read_exactly(self, n: int) -> bytes:
        """``n`` bytes from the socket (fewer only at its end, or once the packet's body
        has taken too long: :meth:`slow_packet`)."""
        self._body_started()
        got = b""
        try:
            while len(got) < n:
                try:
                    chunk = await self.inner.read(n - len(got))
                except asyncio.IncompleteReadError as exc:  # the connection ended mid-packet
                    return got + exc.partial
                except (ConnectionResetError, BrokenPipeError):
                    return got
                if not chunk:
                    break
                got += chunk
            return got
        finally:
            self._body_got(len(got))

    def packet_started(self, remaining_length: int) -> None:
        """A packet's fixed header announcing ``remaining_length`` bytes was read: once
        logged in, its body must come within :meth:`EmbeddedBroker.packet_body_timeout`
        of the broker starting to read it (the broker holding the connection back first,
        :meth:`backlog_room`, does not count)."""
        self.packet_ended()
        if self.user is not None and not self.refused:
            self.body_left = remaining_length

    def packet_ended(self) -> None:
        """No packet's body is being read (the next fixed header comes): no deadline."""
        self.body_left = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_started(self) -> None:
        if self.body_left > 0 and self._body_timer is None and not self.refused:
            delay = self.owner.packet_body_timeout(self.body_left, self.keep_alive)
            self._body_timer = asyncio.get_running_loop().call_later(
                delay, self.slow_packet, self.body_left, delay)

    def _body_got(self, n: int) -> None:
        if self.body_left > 0:
            self.body_left -= n
            if self.body_left <= 0:
                self.packet_ended()

    def slow_packet(self, announced: int, delay: float) -> None:
        """The body of the packet being read (``announced`` bytes) did not come within
        ``delay`` s of the broker starting to read it: drop the connection
        (``reason="slow_packet"``). Keep-alive times only the wait for a packet to start,
        so a client trickling a body (or gone half-way through one) held its connection,
        its place among its device's and what it had sent of the body for ever."""
        self._body_timer = None
        self.drop("slow_packet", f"the body of a packet announcing {announced} bytes did "
                  f"not come within {delay:.1f} s (keep-alive {self.keep_alive} s)")

    async def refuse_topic(self, body: bytes, flags: int) -> bool:
        """For a PUBLISH ``body`` whose topic holds a wildcard: amqtt drops such a packet
        half-read, unanswered; it is refused here as any topic outside the device's own
        (dead letter ``topic_not_allowed``, its payload's seqs handled; acknowledged so the
        device drops it: QoS 1 with PUBACK, QoS 2 with PUBREC, its PUBREL then answered
        with PUBCOMP by :func:`_pubrel_always_answered`, as nothing of it is pending).
        Returns whether it was refused."""
        if len(body) < 2:
            return False
        size = int.from_bytes(body[:2], "big")
        name = body[2:2 + size].decode("utf-8", "replace")
        problem = _publish_topic_problem(name)
        if problem is None or "wildcard" not in problem:
            return False  # a '$' or empty topic is refused once amqtt has read it
        qos = (flags >> 1) & 0x03
        # queued for the store (waiting for room there) before it is acknowledged
        await self.owner.refuse_publish(self.user, name, problem,
                                        payload=body[2 + size + (2 if qos else 0):],
                                        tag=self.tag)
        ack = {1: b"\x40\x02", 2: b"\x50\x02"}.get(qos)  # PUBACK, PUBREC
        if ack is not None and len(body) >= 4 + size:
            with contextlib.suppress(Exception):
                self.writer.write(ack + body[2 + size:4 + size])
        return True

    def feed_eof(self) -> None:
        self.inner.feed_eof()

    async def backlog_room(self) -> None:
        """Wait (reading nothing) while this connection's received messages not yet
        handled hold :data:`CONNECTION_BACKLOG_BYTES` or more: while the store's queue is
        full they are not handled, and TCP then holds the device back."""
        if self.deliveries is not None:
            await self.deliveries.room()

    def keepalive_expired(self) -> None:
        """Nothing came from the client for 1.5 times the keep-alive its CONNECT declared
        (:func:`_keepalive_expired`): drop the connection at once (MQTT 3.1.1 3.1.2.10), so
        a device gone without a FIN (power loss, a NAT that forgot it) does not keep its
        place among its device's connections; count and log it."""
        if self.refused:
            return
        self.refused = True  # any later read answers "no data": amqtt's reading ends
        _abort(self.writer)
        self.owner.count("edgewise_mqtt_connections_closed_total", reason="keepalive")
        log.info("MQTT client %r (%s): nothing received for %g s, %g x the keep-alive of "
                 "%d s its CONNECT declared; connection dropped", self.user, self.peer,
                 KEEPALIVE_FACTOR * self.keep_alive, KEEPALIVE_FACTOR, self.keep_alive)

    def drop(self, reason: str, why: str) -> None:
        """Close the connection at once (its socket aborted, any later read answers "no
        data", which ends amqtt's reading of it) for ``reason``: counted, and logged at
        most every ``CAP_LOG_EVERY_S`` per device (:meth:`EmbeddedBroker.dropped_for`)."""
        if self.refused:
            return
        self.refused = True
        self.packet_ended()
        _abort(self.writer)
        self.owner.dropped_for(reason, self.user, self.peer, why)

    def qos2_room(self, held: dict[int, Any], message: Any) -> bool:
        """Whether ``message``, a QoS 2 PUBLISH received, may join ``held`` (its session's
        QoS 2 messages waiting for their PUBREL, by packet id; one of the same id is
        replaced): at most ``QOS2_WINDOW`` of them, within ``QOS2_BYTES`` (one alone is
        always taken). Else the connection is dropped (``reason="qos2_backlog"``) and
        ``False`` returned: waiting for room cannot work, as the PUBRELs that make room
        come on this same connection, behind what it would stop reading."""
        owner = self.owner
        mid = message.packet_id
        count, size = 1, _held_bytes(message)
        for key, other in held.items():
            if key != mid:
                count += 1
                size += _held_bytes(other)
        if count <= owner.QOS2_WINDOW and (count == 1 or size <= owner.QOS2_BYTES):
            return True
        self.drop("qos2_backlog", f"{count} QoS 2 PUBLISHes ({size} bytes) would wait for "
                  f"their PUBREL, at most {owner.QOS2_WINDOW} within {owner.QOS2_BYTES} bytes")
        return False

    def write_stalled(self) -> None:
        """The client took nothing written to it for ``EmbeddedBroker.WRITE_STALL_S``
        (:class:`~edgewise.transport._outgoing.BoundedWriter` drops the connection):
        count and log it, and read nothing more from it."""
        self.refused = True
        self.owner.count("edgewise_mqtt_connections_closed_total", reason="write_stalled")
        log.info("MQTT client %r (%s) read nothing the broker sent it for %g s; connection "
                 "dropped", self.user, self.peer, self.owner.WRITE_STALL_S)

    async def refuse(self, announced: int, what: str, limit: int | None = None) -> None:
        """Close the connection now, before the body is read; count and log it (once)."""
        if self.refused:
            return
        self.refused = True
        _abort(self.writer)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.close(), 1.0)
        limit = self.limit if limit is None else limit
        self.owner.count("edgewise_mqtt_connections_closed_total", reason="too_large")
        log.info("MQTT client %r (%s): %s of %d bytes announced, over the broker's limit of "
                 "%d bytes (%s); connection closed before its body was read", self.user,
                 self.peer, what, announced, limit,
                 "16 x EDGEWISE_MAX_PAYLOAD_BYTES + headers" if limit == self.limit
                 else "for a packet other than PUBLISH")


def _held_bytes(item: Any) -> int:
    """What a received message held in memory is counted as: its payload, its topic (up to
    65,535 bytes: a refused PUBLISH with a long topic and a 2-byte payload was counted as 2
    bytes, so a device's tens of thousands of them queued without bound) and
    :data:`~edgewise.transport._outgoing.ENTRY_OVERHEAD_BYTES` for the message itself."""
    return (len(getattr(item, "data", None) or b"") + len(getattr(item, "topic", None) or "")
            + ENTRY_OVERHEAD_BYTES)


class _CountedQueue(asyncio.Queue):  # type: ignore[type-arg]
    """A session's ``delivered_message_queue`` (the messages its connection received that
    the broker's message loop has not handled yet) that counts the bytes they hold
    (:func:`_held_bytes`), so the connection's reader can wait for :meth:`room` before it
    reads another PUBLISH."""

    def __init__(self, limit: int = CONNECTION_BACKLOG_BYTES) -> None:
        super().__init__()
        self.limit = limit
        self.bytes = 0
        self._room = asyncio.Event()
        self._room.set()

    def _put(self, item: Any) -> None:
        super()._put(item)  # type: ignore[misc]
        self.bytes += _held_bytes(item)
        if self.bytes >= self.limit:
            self._room.clear()

    def _get(self) -> Any:
        item = super()._get()  # type: ignore[misc]
        self.bytes -= _held_bytes(item)
        if self.bytes < self.limit:
            self._room.set()
        return item

    async def room(self) -> None:
        """Return once the messages held come to less than :attr:`limit` bytes."""
        while self.bytes >= self.limit:
            self._room.clear()
            await self._room.wait()


def _count_deliveries(session: Session) -> _CountedQueue:
    """``session``'s ``delivered_message_queue`` as a :class:`_CountedQueue` (replaced,
    what it held moved over, the first time)."""
    queue = session.delivered_message_queue
    if isinstance(queue, _CountedQueue):
        return queue
    counted = _CountedQueue()
    while not queue.empty():
        counted.put_nowait(queue.get_nowait())
    session.delivered_message_queue = counted
    return counted


class _PubackDue:
    """Stands in a QoS 1 message's ``puback_packet`` until its PUBACK is sent: amqtt sends
    PUBACK as soon as the message is in its session's memory; the embedded broker sends it
    once the message is queued for the store (:func:`_qos1_acked_when_queued`), and only on
    the connection (``reader``) that it came on."""

    __slots__ = ("reader",)

    def __init__(self, reader: _PacketLimit) -> None:
        self.reader = reader


async def _send_puback_due(handler: BrokerProtocolHandler, message: Any) -> None:
    """Send ``message``'s PUBACK where it is due (:class:`_PubackDue`); else nothing."""
    due = getattr(message, "puback_packet", None)
    if not isinstance(due, _PubackDue) or message.packet_id is None:
        return
    puback = PubackPacket.build(message.packet_id)
    message.puback_packet = puback
    if due.reader is handler.reader:
        with contextlib.suppress(Exception):  # gone: the device sends it again
            await handler._send_packet(puback)


@dataclass(slots=True)
class _Refused(Message):
    """A device's PUBLISH refused for its topic (:meth:`EmbeddedBroker.refuse_publish`),
    queued only so that its payload's seqs count as handled for that device."""


def _seqs_only(message: Message, max_bytes: int) -> Message | None:
    """``message`` (a refused PUBLISH) as its device's records holding only their seq: the
    handler leaves each out (no ``ts``) and counts its seq as handled, so the device's ack
    moves past it, as for a message refused as too large. ``None`` when no seq can be read.

    >>> _seqs_only(Message("d1", b'[{"seq": 4, "ts": 1}, {"seq": 5}]'), 100).payload
    b'[{"seq": 4}, {"seq": 5}]'
    >>> _seqs_only(Message("d1", b"{}"), 100) is None
    True
    """
    seqs = payload_seqs(message.payload, max_bytes)
    if not seqs:
        return None
    return Message(message.device_id, json.dumps([{"seq": s} for s in seqs]).encode(),
                   message.received_ns, token=message.token)


def _abort(writer: WriterAdapter | None) -> None:
    """Drop ``writer``'s connection at once: its socket aborted, no drain, no wait for a
    client that does not read (a no-op for a writer that is not amqtt's stream adapter)."""
    if isinstance(writer, BoundedWriter):
        writer.abort()  # and nothing more written to it
        return
    stream = getattr(writer, "_writer", None)  # amqtt's StreamWriterAdapter
    transport = getattr(stream, "transport", None)
    if transport is not None:
        transport.abort()


def _publish_topic_problem(name: str | None) -> str | None:
    """Why ``name`` cannot be a PUBLISH topic at all (MQTT 3.1.1 4.7: not empty, no
    wildcard, no leading ``$``), else ``None``. amqtt ends the client's message loop on such
    a topic (the socket left open, later telemetry never read); the broker refuses it as
    any other topic outside the device's own.

    >>> _publish_topic_problem("$SYS/x")
    "a topic starting with '$' is the broker's"
    >>> _publish_topic_problem("edgewise/d1/telemetry") is None
    True
    """
    if not name:
        return "the topic is empty"
    if "+" in name or "#" in name:
        return "a PUBLISH topic may not hold the wildcards '+' or '#'"
    if name.startswith("$"):
        return "a topic starting with '$' is the broker's"
    return None


_read_fixed_header = getattr(MQTTFixedHeader.from_stream.__func__, "__wrapped__",
                             MQTTFixedHeader.from_stream.__func__)


async def _fixed_header_within_limit(cls: type[MQTTFixedHeader],
                                     reader: ReaderAdapter) -> MQTTFixedHeader | None:
    """amqtt's ``MQTTFixedHeader.from_stream``, then, for a connection of the embedded
    broker (a :class:`_PacketLimit` reader), the announced remaining length checked against
    its limit (``limit`` for a PUBLISH, ``control_limit`` for any other packet): over it,
    the connection is closed and ``None`` returned (amqtt's "end of stream", which ends its
    reading of the connection) before the body is read. Within it, the body's deadline is
    set (:meth:`_PacketLimit.packet_started`). Any other reader (amqtt's client, another
    broker in the process) reads as before."""
    if isinstance(reader, _PacketLimit):
        reader.pending = b""  # what amqtt left of the previous packet is not a packet
        reader.packet_ended()
    header = await _read_fixed_header(cls, reader)
    if header is None or not isinstance(reader, _PacketLimit):
        return header
    limit = reader.limit if header.packet_type == PUBLISH else reader.control_limit
    if header.remaining_length > limit:
        name = _PACKET_NAMES.get(header.packet_type, f"packet of type {header.packet_type}")
        await reader.refuse(header.remaining_length, name, limit)
        return None
    reader.packet_started(header.remaining_length)
    return header


_fixed_header_within_limit.__wrapped__ = _read_fixed_header  # type: ignore[attr-defined]

_read_packet = getattr(MQTTPacket.from_stream.__func__, "__wrapped__",
                       MQTTPacket.from_stream.__func__)


async def _publish_read_whole(cls: type[PublishPacket], reader: ReaderAdapter,
                              fixed_header: MQTTFixedHeader | None = None,
                              variable_header: Any = None) -> PublishPacket:
    """amqtt's ``PublishPacket.from_stream``, except that for a connection of the embedded
    broker the packet's body is read whole first (amqtt reads all of it anyway; the size
    was checked on the fixed header) and then decoded from memory. amqtt raises on a topic
    holding ``+`` or ``#`` after its topic and packet id, leaving the payload in the
    stream to be read as packets (the connection then never got a telemetry message
    through again); such a PUBLISH is refused here as any topic outside the device's own
    (dead letter ``topic_not_allowed``, QoS 1 and 2 acknowledged) and all of it consumed.

    Before the body is read, the connection waits while its messages not yet handled come
    to :data:`CONNECTION_BACKLOG_BYTES` or more (:meth:`_PacketLimit.backlog_room`): what
    the device sends meanwhile stays in the socket, so a stalled store holds the devices
    back instead of filling the gateway's memory."""
    if (not isinstance(reader, _PacketLimit) or fixed_header is None
            or variable_header is not None):
        return await _read_packet(cls, reader, fixed_header, variable_header)
    await reader.backlog_room()
    body = await reader.read_exactly(fixed_header.remaining_length)
    if len(body) < fixed_header.remaining_length:
        raise NoDataError("the connection ended in the middle of a PUBLISH")
    if await reader.refuse_topic(body, fixed_header.flags):
        raise MQTTError("PUBLISH topic holds a wildcard; refused and dead-lettered")
    reader.pending = body
    try:
        return await _read_packet(cls, reader, fixed_header, None)
    finally:
        reader.pending = b""  # whatever amqtt did not read of it


_publish_read_whole.__wrapped__ = _read_packet  # type: ignore[attr-defined]

_handle_pubrel = getattr(BrokerProtocolHandler.handle_pubrel, "__wrapped__",
                         BrokerProtocolHandler.handle_pubrel)


async def _pubrel_always_answered(self: BrokerProtocolHandler, pubrel: PubrelPacket) -> None:
    """amqtt's ``handle_pubrel``, except that on a connection of the embedded broker (a
    :class:`_PacketLimit` reader) a PUBREL for a packet id with no QoS 2 message pending is
    answered with PUBCOMP (MQTT 3.1.1 4.3.3: the receiver MUST answer every PUBREL) where
    amqtt only logs it: a QoS 2 PUBLISH refused before amqtt stored it (a wildcard topic,
    acknowledged with PUBREC by :meth:`_PacketLimit.refuse_topic`), or one completed whose
    PUBCOMP was lost. Unanswered, a compliant client keeps the message in flight for ever
    and resends the PUBREL on every reconnect.

    A QoS 2 message held for its PUBREL (:func:`_qos2_held_bounded`: in its session's
    ``inflight_in``, no task waiting for it) is released here as amqtt's flow released it:
    queued for the message loop, dropped from ``inflight_in``, then PUBCOMP."""
    mid = pubrel.packet_id
    if mid in self._pubrel_waiters or not isinstance(self.reader, _PacketLimit):
        await _handle_pubrel(self, pubrel)
        return
    session = self.session
    message = session.inflight_in.pop(mid, None) if session is not None else None
    if message is not None:
        message.pubrel_packet = pubrel
        await session.delivered_message_queue.put(message)  # type: ignore[union-attr]
    pubcomp = PubcompPacket.build(mid)
    await self._send_packet(pubcomp)
    if message is not None:
        message.pubcomp_packet = pubcomp


_pubrel_always_answered.__wrapped__ = _handle_pubrel  # type: ignore[attr-defined]

_handle_read_timeout = getattr(BrokerProtocolHandler.handle_read_timeout, "__wrapped__",
                               BrokerProtocolHandler.handle_read_timeout)


def _keepalive_expired(self: BrokerProtocolHandler) -> None:
    """amqtt's ``handle_read_timeout``, which does nothing, except that a connection of the
    embedded broker (a :class:`_PacketLimit` reader) is dropped
    (:meth:`_PacketLimit.keepalive_expired`). amqtt's reader waits for each packet at most
    the session's ``keep_alive``, which :meth:`_GuardedBroker._initialize_client_session`
    sets to :data:`KEEPALIVE_FACTOR` times what the CONNECT declared (0: no limit), and
    calls this when that wait ends with nothing read; a wait while the broker itself holds
    the connection back (:meth:`_PacketLimit.backlog_room`) is not counted."""
    if isinstance(self.reader, _PacketLimit):
        self.reader.keepalive_expired()
    else:
        _handle_read_timeout(self)


_keepalive_expired.__wrapped__ = _handle_read_timeout  # type: ignore[attr-defined]
# the handle_pubrel the embedded broker runs: its late-PUBREL error is the same noise
_LATE_ACK_HANDLERS = _LATE_ACK_HANDLERS | {_pubrel_always_answered.__code__}

_handle_qos1 = ProtocolHandler._handle_qos1_message_flow


async def _qos1_acked_when_queued(self: BrokerProtocolHandler,
                                  app_message: ApplicationMessage) -> None:
    """amqtt's ``_handle_qos1_message_flow``, except that on a connection of the embedded
    broker (a :class:`_PacketLimit` reader) a QoS 1 PUBLISH received is not acknowledged
    here, as soon as it is in the session's memory, but marked :class:`_PubackDue`: the
    broker's message loop sends its PUBACK once it has queued the message for the store
    (or refused it), :meth:`_GuardedBroker._handle_message_delivery`. While the store's
    queue is full nothing is acknowledged, and a connection that ends first acknowledged
    nothing it had not queued."""
    reader = self.reader
    if (not isinstance(reader, _PacketLimit) or self.session is None
            or not isinstance(app_message, IncomingApplicationMessage)
            or app_message.direction != INCOMING or app_message.packet_id is None
            or app_message.puback_packet is not None):
        await _handle_qos1(self, app_message)
        return
    app_message.puback_packet = _PubackDue(reader)
    await self.session.delivered_message_queue.put(app_message)


_qos1_acked_when_queued.__wrapped__ = _handle_qos1  # type: ignore[attr-defined]

_handle_qos2 = ProtocolHandler._handle_qos2_message_flow


async def _qos2_held_bounded(self: BrokerProtocolHandler,
                             app_message: ApplicationMessage) -> None:
    """amqtt's ``_handle_qos2_message_flow``, except that on a connection of the embedded
    broker (a :class:`_PacketLimit` reader) a QoS 2 PUBLISH received is held for its
    PUBREL within a bound, and without a task waiting for it.

    amqtt stored each in the session's ``inflight_in``, sent PUBREC and kept a task waiting
    for the PUBREL, without bound: a device sending QoS 2 PUBLISHes (up to 65,535 packet
    ids, each up to ``max_packet_bytes``) and never a PUBREL grew the broker's memory
    without limit, and while one such task waited amqtt's reader kept every later packet's
    finished task too. Here the message is stored (one of the same packet id, a resend, is
    replaced) only where :meth:`_PacketLimit.qos2_room` finds room, else the connection is
    dropped (``reason="qos2_backlog"``); then PUBREC is sent, and
    :func:`_pubrel_always_answered` releases it. A persistent session keeps what is held
    across a reconnect (amqtt resends each one's PUBREC then, through this flow), counted
    against the same bound."""
    reader = self.reader
    if (not isinstance(reader, _PacketLimit) or self.session is None
            or not isinstance(app_message, IncomingApplicationMessage)
            or app_message.direction != INCOMING or app_message.packet_id is None):
        await _handle_qos2(self, app_message)
        return
    held = self.session.inflight_in
    if not reader.qos2_room(held, app_message):
        return
    held[app_message.packet_id] = app_message
    pubrec = PubrecPacket.build(app_message.packet_id)
    await self._send_packet(pubrec)
    app_message.pubrec_packet = pubrec


_qos2_held_bounded.__wrapped__ = _handle_qos2  # type: ignore[attr-defined]


def _install_packet_limit() -> None:
    """Make amqtt's fixed-header reader check :class:`_PacketLimit` readers (and time the
    body that follows), and its PUBLISH reader read their body whole first, and the
    broker's PUBREL handler answer every PUBREL, and its QoS 1 flow leave the PUBACK of a
    received message to the message loop, and its QoS 2 flow hold a received message
    within a bound (:func:`_qos2_held_bounded`), and its read timeout drop a connection
    silent past its keep-alive (:func:`_keepalive_expired`) (idempotent).

    The two changes to amqtt's classes: every packet, CONNECT included, has its fixed header
    read by the first classmethod (the connection's read loop and ``MQTTPacket.from_stream``),
    the last point before the body is read; every PUBLISH is decoded by the second
    (:func:`_publish_read_whole`). The wrappers do nothing for other readers.
    """
    MQTTFixedHeader.from_stream = classmethod(_fixed_header_within_limit)  # type: ignore[assignment,method-assign,arg-type]
    PublishPacket.from_stream = classmethod(_publish_read_whole)  # type: ignore[assignment,method-assign,arg-type]
    BrokerProtocolHandler.handle_pubrel = _pubrel_always_answered  # type: ignore[method-assign]
    BrokerProtocolHandler.handle_read_timeout = _keepalive_expired  # type: ignore[method-assign]
    BrokerProtocolHandler._handle_qos1_message_flow = _qos1_acked_when_queued  # type: ignore[method-assign]
    BrokerProtocolHandler._handle_qos2_message_flow = _qos2_held_bounded  # type: ignore[method-assign]


def _owner(context: Any) -> EmbeddedBroker:
    return _INSTANCES[context.config.instance]


class DeviceAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: every client must be a registered device with its secret."""

    @dataclass
    class Config:
        instance: str = ""

    async def authenticate(self, *, session: Session) -> bool | None:
        owner = _owner(self.context)
        user, secret = session.username, session.password
        if isinstance(secret, bytes):
            secret = secret.decode("utf-8", "replace")
        if not user:
            owner.count("edgewise_auth_failures_total", reason="anonymous")
            return False
        if user == INTERNAL_USER:
            ok = owner.internal_secret is not None and isinstance(secret, str) and \
                hmac.compare_digest(secret.encode(), owner.internal_secret.encode())
            if not ok:
                owner.count("edgewise_auth_failures_total", reason="bad_secret")
            return ok and owner.admit(session)
        if not secret:
            owner.count("edgewise_auth_failures_total", reason="empty_password")
            return False
        try:
            tag = await asyncio.to_thread(owner.check_credentials, user, secret,
                                          session.remote_address)
        except ThrottledError:
            owner.count("edgewise_auth_failures_total", reason="throttled")
            return False
        except AuthError:
            owner.count("edgewise_auth_failures_total", reason="bad_secret")
            return False
        if not owner.admit(session):
            return False
        setattr(session, _TAG, tag)
        if tag is not None:
            owner.note_credential(user, tag)
        return True


class DeviceTopicPlugin(BaseTopicPlugin):
    """amqtt topic plugin: a device publishes and subscribes only under its own id."""

    @dataclass
    class Config:
        instance: str = ""

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        owner = _owner(self.context)
        user = session.username if session else None
        if not user or not topic:
            return False
        if session is not None and owner.stale(session):
            owner.close_soon(session.client_id)
            return False
        if user == INTERNAL_USER and owner.internal_secret is not None:
            parts = topic.split("/")
            kind = parts[2] if len(parts) == 3 and parts[0] == "edgewise" else ""
            if action == Action.PUBLISH:
                return kind in ("ack", "deadletter")
            return kind == "telemetry"  # subscribe to and receive every device's telemetry
        if action == Action.PUBLISH:
            if topic == owner.telemetry_topic(user):
                # plugin mode: taken by DeviceIngestPlugin, no fan-out to anyone;
                # subscriber mode: fanned out to the gateway's internal subscriber only,
                # once the connection's credential tag is found still the device's.
                if owner.consumer != "subscriber" or session is None:
                    return False
                return await owner.publish_allowed(session)
            # not reached for a message: _GuardedBroker._handle_message_delivery refuses
            # (and dead-letters) a device's PUBLISH to any other topic first, payload at hand
            return False
        return topic in (f"edgewise/{user}/ack", f"edgewise/{user}/deadletter")


class DeviceIngestPlugin(BasePlugin):  # type: ignore[type-arg]
    """amqtt event plugin: sends a device its ack when it subscribes to it. (Its telemetry
    is queued for the gateway by :meth:`_GuardedBroker._handle_message_delivery`, which
    waits for room in the queue before the message is acknowledged; an event plugin's
    call is not waited for.)"""

    @dataclass
    class Config:
        instance: str = ""

    async def on_broker_client_subscribed(self, *, client_id: str, topic: str, qos: int) -> None:
        owner = _owner(self.context)
        session = self.context.get_session(client_id)
        user = session.username if session else None
        if user and topic == f"edgewise/{user}/ack":
            # the gateway passes its store's recheck_seq_watermark: checked against the
            # tables, a device deleted through another gateway and registered again is
            # not told the old device's watermark (it dropped seqs it never sent); one
            # lookup per device at a time, however many filters name the topic
            await owner.ack_subscriber(user, topic)


class _GuardedBroker(Broker):
    """amqtt's broker, with a CONNECT authenticated before it touches any session.

    amqtt 0.11 looks the CONNECT's client id up first: with clean session set it deletes
    the session of that id (a live one included, leaving its connection without a session,
    whose messages are then PUBACKed and dropped), else it writes the CONNECT's username
    and password into that session; only then does it authenticate. Here the CONNECT is
    authenticated (and admitted: no Will) as it came, and a refused one is closed without
    looking at any session; an admitted one's session is its device's own
    (:func:`_session_key`). A live connection whose session a clean
    CONNECT of its own device replaces is closed first, so the device reconnects; a
    connection found without its session, or with revoked credentials, is closed too.
    """

    owner: EmbeddedBroker

    async def _create_server_instance(self, listener_name: str, listener_type: ListenerType,
                                      address: str | None, port: int,
                                      ssl_context: ssl.SSLContext | None) -> Any:
        """amqtt's, except that a TCP listener accepts plain TCP and hands each connection
        to :meth:`_accepted`, which counts it among those not logged in (refusing it at
        once over a cap) before its TLS handshake, if any, begins."""
        if listener_type != ListenerType.TCP:
            return await super()._create_server_instance(listener_name, listener_type,
                                                          address, port, ssl_context)
        return await asyncio.start_server(
            functools.partial(self._accepted, listener_name=listener_name,
                              ssl_context=ssl_context),
            address, port, reuse_address=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                        listener_name: str, ssl_context: ssl.SSLContext | None) -> None:
        """A new TCP connection: closed at once when too many have not logged in (see the
        module docstring), else given ``connect_timeout_s`` from now to finish its TLS
        handshake (on a TLS listener) and its CONNECT. Nothing is awaited before the
        TLS handshake starts, so no byte of it can be read as MQTT."""
        owner = self.owner
        place = owner.pending.enter(writer.transport, owner.connect_timeout_s)
        if place is None:
            writer.transport.abort()
            return
        try:
            if ssl_context is not None:
                try:
                    await writer.start_tls(ssl_context,
                                           ssl_handshake_timeout=max(place.remaining(), 0.01))
                except Exception as exc:  # timed out, not TLS, or gone: nothing to answer
                    writer.transport.abort()
                    if place.remaining() <= 0:
                        owner.count("edgewise_mqtt_connections_closed_total",
                                    reason="connect_timeout")
                        log.info("MQTT client %s finished no TLS handshake within %g s; "
                                 "connection closed", place.source, owner.connect_timeout_s)
                    else:
                        log.debug("MQTT client %s: TLS handshake failed: %s", place.source, exc)
                    return
            # amqtt's writer, except that a client taking nothing of what is written to it
            # (a zero TCP window) cannot hold a write, nor its connection's close, for ever
            await self._client_connected(
                listener_name, StreamReaderAdapter(reader),
                BoundedWriter(writer, owner.WRITE_STALL_S, owner.CLOSE_GRACE_S), place)
        finally:
            place.release()

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter,
                                writer: WriterAdapter, place: _Pending | None = None) -> None:
        """amqtt's, with the connection read through a :class:`_PacketLimit` (packets over
        ``owner.max_packet_bytes``, or ``owner.max_control_packet_bytes`` for one other than
        PUBLISH, close it before their body is read) that holds its ``place`` among the
        connections not logged in, then its place among its device's logged-in ones
        (:meth:`EmbeddedBroker.admit`), given back when the connection ends."""
        limited = _PacketLimit(reader, writer, self.owner.max_packet_bytes, self.owner, place,
                               control_limit=self.owner.max_control_packet_bytes)
        if isinstance(writer, BoundedWriter):
            writer.on_stall = limited.write_stalled
        try:
            await super()._client_connected(listener_name, limited, writer)
        finally:
            self.owner.logged_out(limited)

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        timeout = self.owner.connect_timeout_s
        place = reader.place if isinstance(reader, _PacketLimit) else None
        try:
            handler, session = await asyncio.wait_for(
                BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager),
                timeout if place is None else max(place.remaining(), 0.0))
        except TimeoutError as exc:
            # a socket that never completes its CONNECT is not held (nor buffered) for ever
            # before it has even authenticated
            if isinstance(reader, _PacketLimit):
                reader.refused = True  # any later read answers "no data"
            _abort(writer)
            self.owner.count("edgewise_mqtt_connections_closed_total", reason="connect_timeout")
            log.info("MQTT client %s:%s sent no complete CONNECT within %g s; connection "
                     "closed", remote_address, remote_port, timeout)
            raise AMQTTError(f"no complete CONNECT within {timeout} s") from exc
        except AMQTTError as exc:
            log.debug("MQTT client %s:%s: first packet is not a CONNECT: %s",
                      remote_address, remote_port, exc)
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            log.info("MQTT client %s:%s: invalid CONNECT: %s", remote_address, remote_port, exc)
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc
        if isinstance(reader, _PacketLimit):
            setattr(session, _CONN, reader)  # admit() counts it among its device's
        try:
            ok = await super()._authenticate(session, None)  # type: ignore[arg-type]
        finally:
            with contextlib.suppress(AttributeError):
                delattr(session, _CONN)
        setattr(session, _VERDICT, ok)
        if place is not None:
            place.release()  # answered: no longer a connection logging in
        if ok and isinstance(reader, _PacketLimit):
            reader.user, reader.tag = session.username, getattr(session, _TAG, None)
        if not ok:  # refused: closed by _handle_client_session, no session touched
            # CONNACK 0x05 (not authorized) first, as MQTT 3.1.1 asks: a client then knows
            # its credentials were refused, not the network, and paho reports it so; 0x03
            # (server unavailable) for a device over its connection cap, to try again later
            code = getattr(session, _REFUSAL, NOT_AUTHORIZED)
            with contextlib.suppress(Exception):
                await ConnackPacket.build(0, code).to_stream(writer)
                await writer.drain()
            return handler, session
        # the device's own session of that client id (amqtt made up an empty one)
        client_id = session.client_id = _session_key(session.username or "",
                                                     session.client_id or gen_client_id())
        existing = self._entry(client_id)
        if session.clean_session:
            if existing is not None and await self.close_connection(client_id, forget=True):
                self.owner.count("edgewise_mqtt_connections_closed_total",
                                 reason="taken_over")
                log.info("MQTT client %r connected again with a clean session; its "
                         "previous connection was closed", client_id)
            session.parent = 0
        elif existing is not None:  # the device's own session
            old = existing[0]
            if old.transitions.state == "connected" or _running(existing[1]):
                await self._end_superseded(client_id, old, existing[1])
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive",
                         "username", "password", _TAG, _VERDICT):
                setattr(old, name, getattr(session, name, None))
            session = old
            session.parent = 1
        else:
            session.parent = 0
        declared = session.keep_alive
        delay = self.config.get("timeout-disconnect-delay", 0)
        if declared > 0:
            # amqtt's reader waits this long for each packet, then calls handle_read_timeout
            # (_keepalive_expired: the connection is dropped)
            session.keep_alive = KEEPALIVE_FACTOR * declared + (  # type: ignore[assignment]
                delay if isinstance(delay, int) else 0)
        if isinstance(reader, _PacketLimit):
            reader.keep_alive = declared
            reader.deliveries = _count_deliveries(session)
            reader.outbox = Outbox(functools.partial(_publish_on, handler),
                                   self.owner.OUTBOX_WINDOW, self.owner.OUTBOX_BYTES,
                                   self.owner.track_delivery)
        return handler, session

    def _entry(self, client_id: str | None) -> tuple[Session, BrokerProtocolHandler] | None:
        """The (session, handler) amqtt holds for ``client_id``; ``None`` for none or no id."""
        return self._sessions.get(client_id) if client_id else None

    def in_use(self, client_id: str) -> bool:
        """Whether a connection is open on the session of ``client_id``."""
        entry = self._entry(client_id)
        return entry is not None and (entry[0].transitions.state == "connected"
                                      or _running(entry[1]))

    def drop_session(self, client_id: str) -> None:
        """Forget the (offline) session of ``client_id`` at once, with its subscriptions and
        queued messages: synchronous, so no CONNECT can find it once this returns.

        Unlike amqtt's ``_delete_session`` it finds the subscriptions by the session object,
        not by client id (a new session of the same id keeps its own), and it replaces each
        list rather than shrinking it or deleting topics, so amqtt's broadcast loop, which may
        be iterating them across awaits, neither skips a subscriber nor sees the dict change.
        """
        entry = self._sessions.pop(client_id, None)
        if entry is None:
            return
        session = entry[0]
        for name, subs in list(self._subscriptions.items()):
            if any(s is session for s, _ in subs):
                self._subscriptions[name] = [(s, q) for s, q in subs if s is not session]
        session.clear_queues()

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """amqtt's, except that a subscription is kept only for the session its client id
        has now, and found by the session itself rather than by its client id.

        amqtt skips a SUBSCRIBE of a client id already listed under the filter. A
        connection taken over by a clean CONNECT of the same client id goes on handling the
        SUBSCRIBE it was in (amqtt awaits a topic check per filter), so its filters were
        listed again after its session was deleted, and the new connection's SUBSCRIBE
        was then skipped: once the old connection ended, the new one got no ack nor dead
        letter. Now the old session's are dropped (and refused, 0x80), and a new session
        replaces an entry of its client id that is not its own."""
        qos = await super().add_subscription(subscription, session)
        if qos == 0x80:
            return qos
        topic_filter = subscription[0]
        subs = self._subscriptions.get(topic_filter, [])
        entry = self._entry(session.client_id)
        if entry is None or entry[0] is not session:  # taken over meanwhile
            self._subscriptions[topic_filter] = [(s, q) for s, q in subs if s is not session]
            return 0x80
        if not any(s is session for s, _ in subs):  # a stale session held its place
            self._subscriptions[topic_filter] = [
                *((s, q) for s, q in subs if s.client_id != session.client_id), (session, qos)]
        return qos

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        """amqtt's, except that ``session``'s own subscription to ``a_filter`` is removed,
        found by the session itself (amqtt took the first of its client id: an UNSUBSCRIBE
        handled on a connection taken over removed the new connection's subscription).
        The list is replaced, not shrunk (see :meth:`drop_session`)."""
        subs = self._subscriptions.get(a_filter)
        if not subs:
            return 0
        kept = [(s, q) for s, q in subs if s is not session]
        if len(kept) == len(subs):
            return 0
        self._subscriptions[a_filter] = kept
        return len(subs) - len(kept)

    async def _end_superseded(self, client_id: str, session: Session,
                              handler: BrokerProtocolHandler, timeout: float = 5.0) -> None:
        """Close the live connection of a persistent ``session`` that a CONNECT of its own
        device is about to take over, and wait (up to ``timeout`` s) until its message
        loop has ended the session. Without this amqtt takes the session over in place,
        and the old loop, ending later, marks the shared session "disconnected": the live
        connection then never got an ack again and revocation skipped it."""
        self.owner.count("edgewise_mqtt_connections_closed_total", reason="taken_over")
        log.info("MQTT client %r connected again with its persistent session; closing its "
                 "previous connection first", client_id)
        _abort(handler.writer)  # no wait for a client that reads nothing (a half-open one)
        with contextlib.suppress(Exception):
            await handler.handle_connection_closed()
        await handler.stop()
        deadline = time.monotonic() + timeout
        while session.transitions.state == "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _handle_disconnect(
        self, client_session: Session, handler: BrokerProtocolHandler,
        disconnect_waiter: asyncio.Future[Any],
    ) -> None:
        """amqtt's, except for a connection whose session another connection (of the same
        device) has taken over: that one only stops its handler and leaves the session,
        which is the live connection's now, as it is."""
        entry = self._entry(client_session.client_id)
        if entry is not None and entry[0] is client_session and entry[1] is not handler:
            await self._stop_handler(handler)
            return
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def _authenticate(self, session: Session, _: ListenerConfig) -> bool:
        """The verdict :meth:`_initialize_client_session` reached (used once)."""
        ok = bool(getattr(session, _VERDICT, False))
        setattr(session, _VERDICT, False)
        return ok

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler,
        wait_deliver: asyncio.Future[Any],
    ) -> bool:
        client_id = client_session.client_id
        entry = self._entry(client_id)
        if entry is None or entry[0] is not client_session:
            self.owner.count("edgewise_mqtt_connections_closed_total", reason="no_session")
            log.info("MQTT client %r: its session is gone; closing the connection so the "
                     "device reconnects (the message is not acknowledged)", client_id)
            _abort(handler.writer)
            await handler.stop()
            return False
        if self.owner.stale(client_session):
            await self.close_connection(client_id, forget=True)
            return False
        message = wait_deliver.result() if wait_deliver.done() else None
        name = getattr(message, "topic", None) if message is not None else None
        problem = None if message is None else _publish_topic_problem(name)
        user = client_session.username
        if problem is not None or (message is not None and user and user != INTERNAL_USER
                                   and name != self.owner.telemetry_topic(user)):
            # a topic MQTT forbids: amqtt would end this connection's message loop here and
            # leave its socket open (PUBACKs and keep-alives still answered, telemetry never
            # read again). It is refused like any topic outside the device's own (refused
            # here rather than by the topic plugin, which never sees the payload, so its
            # seqs count as handled), and the loop goes on.
            await self.owner.refuse_publish(
                user, name, problem, payload=bytes(getattr(message, "data", b"") or b""),
                tag=getattr(client_session, _TAG, None))
            await _send_puback_due(handler, message)
            return True
        owner = self.owner
        if (message is not None and owner.consumer == "plugin" and user
                and user != INTERNAL_USER and name == owner.telemetry_topic(user)):
            # queued for the gateway here, waiting for room in the queue (the store may be
            # stalled), and only then acknowledged; meanwhile this connection's reader
            # stops at CONNECTION_BACKLOG_BYTES. The token is the credential tag it came
            # with, checked again at the commit
            if not await owner.batcher.put_wait(Message(
                    user, bytes(message.data), time.time_ns(),
                    token=getattr(client_session, _TAG, None))):
                return True  # the broker stops: neither stored nor acknowledged
        if await super()._handle_message_delivery(client_session, handler, wait_deliver):
            await _send_puback_due(handler, message)
            return True
        # amqtt ends the message loop: close the connection too (its session marked
        # disconnected), so the device reconnects and resends, rather than a socket that
        # is answered but never read for messages again
        self.owner.count("edgewise_mqtt_connections_closed_total", reason="protocol_error")
        log.info("MQTT client %r: a PUBLISH ended amqtt's message loop; closing the "
                 "connection so the device reconnects", client_id)
        ended = asyncio.get_running_loop().create_future()
        ended.set_result(None)
        await self._handle_disconnect(client_session, handler, ended)
        return False

    def drop_connections(self) -> int:
        """Stop listening and abort every open connection at once (no drain, no wait for
        its client); return how many were aborted. amqtt's ``shutdown`` stops each
        connection's handler, which waits for its reader, and a reader reads on for as long
        as its client keeps sending: without this, devices publishing flat out held the
        shutdown for ever. An aborted connection's reader ends at the end of what it has
        buffered."""
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()  # no new connections; amqtt's shutdown waits for it
        aborted = self.owner.pending.abort_all()  # and none logging in
        for _, handler in list(self._sessions.values()):
            if handler is not None and handler.writer is not None:
                _abort(handler.writer)
                aborted += 1
        return aborted

    async def close_connection(self, client_id: str | None, *, forget: bool = False) -> bool:
        """Close the live connection of ``client_id`` (the device sees it drop); with
        ``forget`` also delete its session (subscriptions, queued messages). Returns
        whether a connection was closed. The socket is aborted, not drained: amqtt's own
        close waited for its client to read what was left, for ever when it read nothing,
        leaving the socket open after the connection had left its device's count."""
        entry = self._entry(client_id)
        if entry is None:
            return False
        session, handler = entry
        live = session.transitions.state == "connected" or _running(handler)
        if live:
            _abort(handler.writer)  # the socket closes now, whatever its client does
            await handler.handle_connection_closed()  # its message loop ends the session
            await handler.stop()
        if forget and client_id is not None and self._sessions.get(client_id) is entry:
            await self._delete_session(client_id)
        return live


async def _publish_on(handler: BrokerProtocolHandler, topic_name: str, data: bytes,
                     qos: int) -> None:
    """Send ``data`` on ``topic_name`` to ``handler``'s client (QoS ``qos``, not retained;
    for QoS 1, return once it answered PUBACK): an :class:`Outbox`'s send."""
    await handler.mqtt_publish(topic_name, data, qos, retain=False)


def _quote_topic(name: str | None) -> tuple[str | None, str]:
    """A refused PUBLISH topic as its dead letter quotes it: its first
    :data:`QUOTED_TOPIC_CHARS` characters (a topic may hold 65,535 bytes, and each refused
    PUBLISH sends one dead letter), and as its detail and the log describe it.

    >>> _quote_topic("edgewise/d2/telemetry")
    ('edgewise/d2/telemetry', "'edgewise/d2/telemetry'")
    >>> _quote_topic("x" * 500)[1]
    "a topic of 500 characters starting 'xxxxxxxxxx...' (200 shown in 'value')"
    """
    if name is None or len(name) <= QUOTED_TOPIC_CHARS:
        return name, repr(name)
    got = (f"a topic of {len(name)} characters starting {name[:10] + '...'!r} "
           f"({QUOTED_TOPIC_CHARS} shown in 'value')")
    return name[:QUOTED_TOPIC_CHARS], got


def _running(handler: BrokerProtocolHandler) -> bool:
    """Whether ``handler``'s connection is still being read (decided from the handler,
    not from its session's state, which a superseded handler may have changed)."""
    task = getattr(handler, "_reader_task", None)
    return task is not None and not task.done()


class EmbeddedBroker:
    """An amqtt broker in this process, feeding device telemetry to ``handler``.

    Parameters
    ----------
    handler
        Commits a batch of messages (see :mod:`edgewise.transport.base`).
    authenticate
        ``authenticate(device_id, secret[, source=peer address])``; raises
        ``AuthError``/``ThrottledError``. What it returns, when ``bytes``, is the
        connection's credential tag (:meth:`Security.device_credential`).
    credential_tags
        ``credential_tags(device_ids) -> {device_id: tag}`` of the registered ones
        (:meth:`Security.credential_tags`): telemetry of a connection whose tag is no
        longer its device's is refused, and the connection closed (see the module
        docstring); polled every ``revocation_poll_s`` for connected devices.
    host, port
        Where to listen.
    tls_cert, tls_key
        PEM files; when given the listener speaks MQTT over TLS only.
    count
        ``count(metric_name, **labels)`` for auth failures and dead letters.
    watermark
        ``watermark(device_id) -> int``, used to ack a device that subscribes before any
        ack is retained (e.g. after a restart).
    consumer
        ``"plugin"`` (default): a broker plugin hands telemetry to the gateway, no second
        hop. ``"subscriber"``: telemetry fans out to an internal MQTT subscriber of the
        gateway (a paho client with a persistent session and manual acks), kept to
        measure the two against each other (``edgewise bench ingest --consumer``).
    max_payload_bytes
        The gateway's telemetry payload limit (``Settings.max_payload_bytes``; ``None``:
        ``EDGEWISE_MAX_PAYLOAD_BYTES`` from the environment, else its default). A packet
        announcing more than :func:`max_packet_bytes` of it closes its connection before
        its body is read (:attr:`max_packet_bytes`).
    client_ids_per_device
        How many client ids stay bound to one device (see the module docstring): one more
        releases its least recently used one that no connection is using, with its
        offline session.
    connect_timeout_s
        Seconds a new connection has from its accept to send its whole CONNECT, a TLS
        handshake included (default :data:`CONNECT_TIMEOUT_S`); one that has not is closed
        before authentication
        (``edgewise_mqtt_connections_closed_total{reason="connect_timeout"}``).
    max_pending_per_source, max_pending
        How many connections may be open without having finished their CONNECT, from one
        source address (an IPv6 one by its /64; ``None``: :data:`MAX_PENDING_PER_SOURCE`,
        or half the total where that is less, so one address cannot fill the total and
        lock every other device out) and in all (``None``: :func:`default_max_pending`,
        from the open-file limit); a new
        one over either is closed at once (``reason="pending_per_source"`` or
        ``"pending_total"``).
    max_connections_per_device
        How many logged-in connections one device may hold open at once (``None``:
        ``EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE``, else :data:`MAX_CONNECTIONS_PER_DEVICE`);
        a CONNECT over it is answered CONNACK 3 (server unavailable) and closed
        (``reason="per_device"``). A CONNECT with the client id of one of them still counts
        in, as it closes that one.
    max_control_packet_bytes
        The largest packet other than PUBLISH (its remaining length; default
        :data:`MAX_CONTROL_PACKET_BYTES`); one announcing more closes its connection before
        its body is read (``reason="too_large"``).
    max_queued_bytes, max_device_queued_bytes
        Telemetry payload bytes that may wait for the store, in all (``None``:
        ``EDGEWISE_MQTT_MAX_QUEUED_BYTES``, else :data:`MAX_QUEUED_BYTES`) and per device
        (``None``: a quarter of the first). Past either, the message is not acknowledged
        (no PUBACK) until there is room, and its connection reads no more messages once it
        holds :data:`CONNECTION_BACKLOG_BYTES` not yet queued, so TCP holds its device back.

    >>> EmbeddedBroker(lambda ms: [], lambda d, s: None, max_payload_bytes=1024
    ...                ).max_packet_bytes
    81923
    """

    def __init__(
        self,
        handler: Handler,
        authenticate: Callable[[str, str], None],
        *,
        host: str = "127.0.0.1",
        port: int = 1884,
        tls_cert: str = "",
        tls_key: str = "",
        count: Callable[..., None] | None = None,
        watermark: Callable[[str], int] | None = None,
        max_batch: int = 4000,
        consumer: str = "plugin",
        credential_tags: Callable[[Iterable[str]], dict[str, bytes]] | None = None,
        revocation_poll_s: float = 1.0,
        max_payload_bytes: int | None = None,
        client_ids_per_device: int = 16,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        max_pending_per_source: int | None = None,
        max_pending: int | None = None,
        max_connections_per_device: int | None = None,
        max_control_packet_bytes: int = MAX_CONTROL_PACKET_BYTES,
        max_queued_bytes: int | None = None,
        max_device_queued_bytes: int | None = None,
    ) -> None:
        if consumer not in ("plugin", "subscriber"):
            raise ValueError(f"consumer must be 'plugin' or 'subscriber'; got {consumer!r}")
        for name, value in (("max_payload_bytes", max_payload_bytes),
                            ("client_ids_per_device", client_ids_per_device),
                            ("max_pending_per_source", max_pending_per_source),
                            ("max_pending", max_pending),
                            ("max_connections_per_device", max_connections_per_device),
                            ("max_control_packet_bytes", max_control_packet_bytes),
                            ("max_queued_bytes", max_queued_bytes),
                            ("max_device_queued_bytes", max_device_queued_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"The {name!r} parameter of EmbeddedBroker must be an int "
                                 f"in the range [1, inf). Got {value!r} instead.")
        if (isinstance(connect_timeout_s, bool) or not isinstance(connect_timeout_s, int | float)
                or not connect_timeout_s > 0):
            raise ValueError("The 'connect_timeout_s' parameter of EmbeddedBroker must be a "
                             f"number of seconds in (0, inf). Got {connect_timeout_s!r} "
                             "instead.")
        #: seconds a new connection has to complete its CONNECT before it is closed
        self.connect_timeout_s = float(connect_timeout_s)
        if max_payload_bytes is None:
            max_payload_bytes = _payload_limit_setting()
        #: the largest packet (remaining length) a connection may announce
        self.max_packet_bytes = max_packet_bytes(max_payload_bytes)
        #: the largest packet other than PUBLISH a connection may announce
        self.max_control_packet_bytes = max_control_packet_bytes
        self.client_ids_per_device = client_ids_per_device
        #: logged-in connections one device may hold at once, and each device's open ones
        #: (its connection's reader -> the session key of its CONNECT; None: no client id)
        self.max_connections_per_device = (
            _env_limit("EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE", MAX_CONNECTIONS_PER_DEVICE)
            if max_connections_per_device is None else max_connections_per_device)
        self._logged_in: dict[str, dict[_PacketLimit, str | None]] = {}
        self._cap_log: dict[str, tuple[float, int]] = {}  # device -> (logged at, refused)
        if max_queued_bytes is None:
            max_queued_bytes = _env_limit("EDGEWISE_MQTT_MAX_QUEUED_BYTES", MAX_QUEUED_BYTES)
        if max_device_queued_bytes is None:
            max_device_queued_bytes = max(1, max_queued_bytes // 4)
        #: the connections open without a finished CONNECT, and their caps
        total = default_max_pending() if max_pending is None else max_pending
        if max_pending_per_source is None:
            max_pending_per_source = max(1, min(MAX_PENDING_PER_SOURCE, total // 2))
        self.pending = _PendingGate(self, max_pending_per_source, total)
        self.consumer = consumer
        self.internal_secret = secrets.token_urlsafe(32) if consumer == "subscriber" else None
        self._subscriber: Any = None
        self.handler = handler
        self.authenticate = authenticate
        self.host = host
        self.port = port
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self._count = count
        self.watermark = watermark
        self.credential_tags = credential_tags
        self.revocation_poll_s = revocation_poll_s
        try:
            self._takes_source = "source" in inspect.signature(authenticate).parameters
        except (TypeError, ValueError):
            self._takes_source = False
        # device id -> its newest credential tag known here (_REVOKED once revoked)
        self._current: dict[str, bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._poke: asyncio.Event | None = None
        self.batcher = Batcher(self._commit_checked, self._after_commit, self._commit_failed,
                               max_batch=max_batch, max_queued_bytes=max_queued_bytes,
                               max_device_bytes=max_device_queued_bytes)
        self.instance = uuid.uuid4().hex
        self._broker: _GuardedBroker | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        # session key (device/client id) -> its device (or internal user)
        self._client_owner: dict[str, str] = {}
        # device -> its client ids in _client_owner, least recently admitted first
        self._client_ids: dict[str, dict[str, None]] = {}
        # subscriber mode: device id -> credential tag of the connection whose telemetry
        # PUBLISH was last let through (checked afresh at that PUBLISH)
        self._published: dict[str, bytes] = {}
        # device -> whether another watermark lookup is due once the one running ends
        # (ack_subscriber: at most one per device at a time)
        self._acking: dict[str, bool] = {}
        self._drop_log: dict[str, tuple[float, int]] = {}  # device -> (logged at, dropped)
        # "<reason>:<device>" -> (logged at, connections dropped since): dropped_for
        self._reason_log: dict[str, tuple[float, int]] = {}
        # session key -> when its short-lived connections were taken over, within
        # TAKEOVER_LOOP_WINDOW_S (_takeover_loop); dropped with the key (_unbind)
        self._takeovers: dict[str, collections.deque[float]] = {}

    @staticmethod
    def telemetry_topic(device_id: str) -> str:
        return topic(device_id, "telemetry")

    #: at most one log line of a device's CONNECTs refused over its cap this often (and
    #: of its dead letters dropped for a full outbox)
    CAP_LOG_EVERY_S = 10.0
    #: seconds a client may take nothing written to it before its connection is dropped
    WRITE_STALL_S = WRITE_STALL_S
    #: seconds a connection being closed has to take what is left before it is dropped
    CLOSE_GRACE_S = CLOSE_GRACE_S
    #: acks and dead letters in flight to one connection at once, and the bytes of them
    #: queued or in flight past which a new dead letter is dropped
    OUTBOX_WINDOW = OUTBOX_WINDOW
    OUTBOX_BYTES = OUTBOX_BYTES
    #: QoS 2 messages one session may hold waiting for their PUBREL, and the bytes of
    #: them, past which its connection is dropped (one message alone is always taken)
    QOS2_WINDOW = QOS2_WINDOW
    QOS2_BYTES = QOS2_BYTES
    #: a logged-in connection's packet body must come within the larger of PACKET_BODY_S
    #: and 1.5 keep-alives, plus a second per PACKET_BODY_RATE bytes
    #: (:meth:`packet_body_timeout`)
    PACKET_BODY_S = PACKET_BODY_S
    PACKET_BODY_RATE = PACKET_BODY_RATE
    #: a CONNECT taking over a live connection of its client id is refused (CONNACK 2)
    #: once that client id's connections were taken over TAKEOVER_LOOP_COUNT times in
    #: TAKEOVER_LOOP_WINDOW_S, each within TAKEOVER_SHORT_S of being admitted
    TAKEOVER_LOOP_COUNT = TAKEOVER_LOOP_COUNT
    TAKEOVER_LOOP_WINDOW_S = TAKEOVER_LOOP_WINDOW_S
    TAKEOVER_SHORT_S = TAKEOVER_SHORT_S

    def packet_body_timeout(self, size: int, keep_alive: int) -> float:
        """Seconds a logged-in connection declaring ``keep_alive`` (s; 0: none) has to send
        a packet body of ``size`` bytes once the broker starts reading it: the larger of
        :attr:`PACKET_BODY_S` and :data:`KEEPALIVE_FACTOR` keep-alives (the silence it
        declared it may keep), plus one second per :attr:`PACKET_BODY_RATE` bytes (a slow
        link's time to carry it). Past it the connection is dropped
        (``reason="slow_packet"``).

        >>> b = EmbeddedBroker(lambda ms: [], lambda d, s: None, max_payload_bytes=1024)
        >>> b.packet_body_timeout(2, 60), b.packet_body_timeout(256 * 1024, 0)
        (90.0, 94.0)
        """
        return (max(self.PACKET_BODY_S, KEEPALIVE_FACTOR * keep_alive)
                + size / self.PACKET_BODY_RATE)

    def dropped_for(self, reason: str, user: str | None, peer: str, why: str) -> None:
        """Count a connection of ``user`` (from ``peer``) dropped for ``reason`` (``why``
        says what it did) and log it, at most every :attr:`CAP_LOG_EVERY_S` per device and
        reason."""
        self.count("edgewise_mqtt_connections_closed_total", reason=reason)
        key = f"{reason}:{user}"
        logged_at, dropped = self._reason_log.get(key, (-self.CAP_LOG_EVERY_S, 0))
        now = time.monotonic()
        if now - logged_at < self.CAP_LOG_EVERY_S:
            self._reason_log[key] = (logged_at, dropped + 1)
            return
        self._reason_log[key] = (now, 0)
        log.warning("MQTT client %r (%s) dropped (%s): %s%s", user, peer, reason, why,
                    f"; {dropped} more of its connections dropped so since the last such "
                    "line" if dropped else "")

    def admit(self, session: Session) -> bool:
        """Whether an authenticated CONNECT may go on: not with a Will message, nor when
        its device holds ``max_connections_per_device`` logged-in connections already
        (one more where one of them has this CONNECT's client id: it is closed when this
        one takes its session over). An admitted one's connection counts among its
        device's from now until it ends (:meth:`logged_out`), and its client id, in its
        device's own namespace (:func:`_session_key`; see the module docstring), becomes
        the device's most recently used one. Synchronous: no other CONNECT can be admitted
        between the count and its update."""
        user, client_id = session.username, session.client_id
        if session.will_flag:
            self.count("edgewise_auth_failures_total", reason="will")
            log.info("MQTT CONNECT of %r refused: it carries a Will message (on %r), which "
                     "the broker would publish past the topic ACL", user, session.will_topic)
            return False
        conn = getattr(session, _CONN, None)
        if user and user != INTERNAL_USER and isinstance(conn, _PacketLimit):
            key = _session_key(user, client_id) if client_id else None
            held = self._logged_in.setdefault(user, {})
            cap = self.max_connections_per_device
            if len(held) >= cap + (key is not None and key in held.values()):
                if not held:
                    del self._logged_in[user]
                self._refuse_over_cap(user, len(held))
                setattr(session, _REFUSAL, SERVER_UNAVAILABLE)
                return False
            if key is not None and self._takeover_loop(session, conn, held, key):
                return False
            held[conn] = key
            conn.counted_for = user
            conn.admitted_at = time.monotonic()
        if client_id and user:
            self._bind(_session_key(user, client_id), user)
        return True

    def _takeover_loop(self, session: Session, conn: _PacketLimit,
                       held: dict[_PacketLimit, str | None], key: str) -> bool:
        """Whether the CONNECT of ``session`` (on ``conn``), whose session key ``key`` its
        device's logged-in connections ``held`` may already use, is refused as one turn of
        a take-over loop (then counted, ``reason="takeover_loop"``, logged at most every
        :attr:`CAP_LOG_EVERY_S` per device, and answered CONNACK 2, identifier rejected).

        Two clients of one device with one client id (a copied config, two copies of a
        simulator) take the session from each other each time one reconnects, for ever:
        every connection is closed within a second or so of its login. So a take-over of a
        connection admitted less than :attr:`TAKEOVER_SHORT_S` before is recorded, and
        once ``key`` has :attr:`TAKEOVER_LOOP_COUNT` of them in the last
        :attr:`TAKEOVER_LOOP_WINDOW_S`, a CONNECT that would take over again is refused
        and the live connection keeps the session; refusals record nothing, so the window
        empties and one more CONNECT may take it over. A device reconnecting past its own
        half-open connection takes over one that has lasted (not recorded) or, once that
        one is dropped (keep-alive), none."""
        now = time.monotonic()
        times = self._takeovers.get(key)
        if times is not None:
            while times and now - times[0] > self.TAKEOVER_LOOP_WINDOW_S:
                times.popleft()
            if not times:
                del self._takeovers[key]
                times = None
        live = [c for c, k in held.items() if k == key and not c.refused]
        if not live:
            return False
        newest = max(live, key=lambda c: c.admitted_at)
        if times is not None and len(times) >= self.TAKEOVER_LOOP_COUNT:
            setattr(session, _REFUSAL, IDENTIFIER_REJECTED)
            client_id = key.partition("/")[2]
            self.dropped_for(
                "takeover_loop", session.username, conn.peer,
                f"CONNECT with client id {client_id!r} refused (CONNACK 2, identifier "
                f"rejected): its connections with that client id were taken over "
                f"{len(times)} times in the last {self.TAKEOVER_LOOP_WINDOW_S:g} s, each "
                f"within {self.TAKEOVER_SHORT_S:g} s of its login, so two clients most "
                f"likely use it and take the session from each other. The connection from "
                f"{newest.peer} keeps it; give each client a client id of its own")
            return True
        if now - newest.admitted_at < self.TAKEOVER_SHORT_S:
            self._takeovers.setdefault(key, collections.deque()).append(now)
        return False

    def _refuse_over_cap(self, user: str, held: int) -> None:
        """Count and (at most every :attr:`CAP_LOG_EVERY_S` per device) log a CONNECT of
        ``user`` refused for its connection cap."""
        self.count("edgewise_mqtt_connections_closed_total", reason="per_device")
        logged_at, refused = self._cap_log.get(user, (-self.CAP_LOG_EVERY_S, 0))
        now = time.monotonic()
        if now - logged_at < self.CAP_LOG_EVERY_S:
            self._cap_log[user] = (logged_at, refused + 1)
            return
        self._cap_log[user] = (now, 0)
        log.warning("MQTT CONNECT of device %r refused (CONNACK 3, server unavailable): it "
                    "has %d logged-in connections open, at most %d per device "
                    "(EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE)%s", user, held,
                    self.max_connections_per_device,
                    f"; {refused} more refused since the last such line" if refused else "")

    def logged_out(self, conn: _PacketLimit) -> None:
        """``conn``'s connection ended: it no longer counts among its device's, and what
        was on its way to it is dropped."""
        conn.packet_ended()
        if conn.outbox is not None:
            conn.outbox.close()
        user, conn.counted_for = conn.counted_for, None
        held = self._logged_in.get(user) if user is not None else None
        if held is not None:
            held.pop(conn, None)
            if not held:
                del self._logged_in[user]  # type: ignore[arg-type]

    def connections_of(self, device_id: str) -> int:
        """Logged-in connections ``device_id`` holds open (counted by :meth:`admit`)."""
        return len(self._logged_in.get(device_id, ()))

    def _bind(self, client_id: str, user: str) -> None:
        """Bind session key ``client_id`` (:func:`_session_key`) to ``user`` as its most
        recently used one; past ``client_ids_per_device``, release ``user``'s least
        recently used ones on which no connection is open, with their offline sessions.
        Synchronous (no await between a release and its session's removal, so no CONNECT
        can slip in). A CONNECT still on its way (admitted, its session not yet registered)
        holds its device's most recent client id, released only if that same device has
        other CONNECTs admitted with as many new ids meanwhile."""
        self._client_owner[client_id] = user
        ids = self._client_ids.setdefault(user, {})
        ids.pop(client_id, None)
        ids[client_id] = None
        excess = len(ids) - self.client_ids_per_device
        for old in list(ids)[:-1]:  # oldest first; never the one just bound
            if excess <= 0:
                break
            if self._broker is not None and self._broker.in_use(old):
                continue  # open ones are bounded by max_connections_per_device
            self._release(old)
            self.count("edgewise_mqtt_client_ids_released_total")
            excess -= 1

    def _unbind(self, client_id: str) -> None:
        self._takeovers.pop(client_id, None)
        user = self._client_owner.pop(client_id, None)
        ids = self._client_ids.get(user) if user is not None else None
        if ids is not None:
            ids.pop(client_id, None)
            if not ids:
                del self._client_ids[user]  # type: ignore[arg-type]

    def _release(self, client_id: str) -> None:
        """Unbind ``client_id`` and forget its session at once (anyone may use it next,
        and finds nothing of the session it named)."""
        self._unbind(client_id)
        if self._broker is not None:
            self._broker.drop_session(client_id)

    # -- credentials of live connections -----------------------------------------------
    def check_credentials(self, user: str, secret: str, source: str | None) -> bytes | None:
        """Authenticate a CONNECT (blocking); its credential tag, or ``None`` if untracked."""
        if self._takes_source:
            tag = self.authenticate(user, secret, source=source)  # type: ignore[call-arg]
        else:
            tag = self.authenticate(user, secret)
        return tag if isinstance(tag, bytes) else None  # type: ignore[redundant-expr]

    def note_credential(self, device_id: str, tag: bytes) -> None:
        """Record the credential tag a CONNECT of ``device_id`` just authenticated with."""
        self._current[device_id] = tag

    def stale(self, session: Session) -> bool:
        """Whether ``session`` authenticated with credentials known to be revoked."""
        tag = getattr(session, _TAG, None)
        if tag is None:
            return False
        current = self._current.get(session.username or "")
        return current is not None and current != tag

    async def publish_allowed(self, session: Session) -> bool:
        """Subscriber mode, at a telemetry PUBLISH: whether the connection's credential
        tag is still its device's, read afresh from the credential store (one indexed
        read, off the loop). A revoked connection's PUBLISH is refused (no ack, nothing
        fans out to the internal subscriber) and the connection is closed."""
        user, tag = session.username or "", getattr(session, _TAG, None)
        if tag is None or self.credential_tags is None:
            return True
        try:
            current = (await asyncio.to_thread(self.credential_tags, [user])).get(
                user, _REVOKED)
        except Exception:  # a busy store: refuse (no ack; the device sends it again)
            log.debug("could not read the credentials of %r", user, exc_info=True)
            return False
        self._current[user] = current
        if current != tag:
            self.count("edgewise_messages_refused_total", reason="revoked")
            self.close_soon(session.client_id)
            return False
        self._published[user] = tag
        return True

    def _commit_subscribed(self, messages: list[Message]) -> list[Outcome]:
        """Subscriber mode's handler: each message carries the credential tag its
        device's telemetry was last let through with (:meth:`publish_allowed`), and
        :meth:`_commit_checked` stores and acks only those whose tag is still their
        device's (a device whose connections are untracked has no tag: not checked).
        The messages the subscriber passed in keep its own token (the MQTT message to
        PUBACK to the broker); the handler sees copies."""
        tagged = [Message(m.device_id, m.payload, m.received_ns,
                          token=self._published.get(m.device_id))
                  for m in messages]
        return self._commit_checked(tagged)

    def close_soon(self, client_id: str | None) -> None:
        """Close (and forget) the connection of ``client_id`` from the loop, soon."""
        if self._broker is None or not client_id:
            return
        self._spawn(self._close_revoked(client_id))

    async def _close_revoked(self, client_id: str) -> None:
        if self._broker is None:
            return
        entry = self._broker._sessions.get(client_id)
        user = entry[0].username if entry else None
        if await self._broker.close_connection(client_id, forget=True):
            self.count("edgewise_mqtt_connections_closed_total", reason="revoked")
            log.info("MQTT connection of %r (client id %r) closed: its credentials were "
                     "revoked", user, client_id)

    async def disconnect_device(self, device_id: str) -> int:
        """Close every connection of ``device_id`` and drop its sessions at once (its
        credentials are gone); return how many connections were closed."""
        self._current[device_id] = _REVOKED
        if self._broker is None:
            return 0
        closed = 0
        for client_id, (session, _) in list(self._broker._sessions.items()):
            if session.username == device_id:
                closed += await self._broker.close_connection(client_id, forget=True)
        for client_id in list(self._client_ids.get(device_id, ())):
            self._release(client_id)  # its sessions are gone; so are its client ids
        if closed:
            self.count("edgewise_mqtt_connections_closed_total", float(closed),
                       reason="revoked")
            log.info("closed %d MQTT connection(s) of revoked device %r", closed, device_id)
        return closed

    def forget_device(self, device_id: str, timeout: float = 10.0) -> int:
        """Close ``device_id``'s connections now; callable from any thread (the HTTP
        routes run on a thread pool). Returns how many were closed (0 when called on the
        broker's own loop: the closing is then scheduled)."""
        loop = self._loop
        if loop is None or self._broker is None:
            self._current[device_id] = _REVOKED
            return 0
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._spawn(self.disconnect_device(device_id))
            return 0
        return asyncio.run_coroutine_threadsafe(
            self.disconnect_device(device_id), loop).result(timeout)

    def _commit_checked(self, messages: list[Message]) -> list[Outcome]:
        """The handler, for the messages whose connection's credentials are still their
        device's (one read per batch); the others get no ack and their connections are
        closed. A refused PUBLISH (:class:`_Refused`) is handed on as its seqs only
        (:func:`_seqs_only`; one with none is not handed on, and gets no ack). Runs on the
        batcher's worker thread."""
        scan = self.max_packet_bytes - _PUBLISH_HEADER_MAX
        handed = [_seqs_only(m, scan) if isinstance(m, _Refused) else m for m in messages]
        kept = [m for m in handed if m is not None]
        done = iter(self._commit_tagged(kept) if kept else [])
        return [Outcome(m.device_id) if h is None else next(done)
                for m, h in zip(messages, handed, strict=True)]

    def _commit_tagged(self, messages: list[Message]) -> list[Outcome]:
        """:meth:`_commit_checked`'s credential check and commit."""
        tagged = {m.device_id for m in messages if isinstance(m.token, bytes)}
        if not tagged or self.credential_tags is None:
            return self.handler(messages)
        current = self.credential_tags(tagged)
        revoked = [isinstance(m.token, bytes) and current.get(m.device_id) != m.token
                   for m in messages]
        if not any(revoked):
            return self.handler(messages)
        for dev in {m.device_id for m, r in zip(messages, revoked, strict=True) if r}:
            self._current[dev] = current.get(dev, _REVOKED)
        self.count("edgewise_messages_refused_total", float(sum(revoked)), reason="revoked")
        if self._loop is not None and self._poke is not None:
            self._loop.call_soon_threadsafe(self._poke.set)  # close them now
        kept = [m for m, r in zip(messages, revoked, strict=True) if not r]
        done = iter(self.handler(kept) if kept else [])
        return [Outcome(m.device_id) if r else next(done)
                for m, r in zip(messages, revoked, strict=True)]

    async def _watch_credentials(self) -> None:
        """Close connections whose credentials were revoked by another process (the CLI),
        checking the connected devices every ``revocation_poll_s`` (or when poked)."""
        assert self._poke is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.revocation_poll_s)
            self._poke.clear()
            broker = self._broker
            if broker is None or self.credential_tags is None:
                continue
            live = [(cid, s) for cid, (s, _) in list(broker._sessions.items())
                    if getattr(s, _TAG, None) is not None]
            if not live:
                continue
            try:
                current = await asyncio.to_thread(
                    self.credential_tags, {s.username for _, s in live if s.username})
            except Exception:  # a busy store: try again at the next poll
                log.debug("could not read the device credentials", exc_info=True)
                continue
            for _, s in live:
                if s.username:
                    self._current[s.username] = current.get(s.username, _REVOKED)
            for cid, s in live:
                if self.stale(s):
                    await self._close_revoked(cid)

    async def _no_retain(self, source_session: Any, topic_name: str | None,
                         data: bytes | bytearray | None, qos: int | None = None) -> None:
        """Stands in for amqtt's ``retain_message``: nothing is retained (see the module
        docstring); a retained message is delivered once, like any other."""
        if data and topic_name is not None:
            self.count("edgewise_mqtt_retain_ignored_total")

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        if self._count is not None:
            self._count(name, value, **labels)

    def config(self) -> dict[str, Any]:
        """The amqtt broker configuration this instance runs with."""
        listener: dict[str, Any] = {"type": "tcp", "bind": f"{self.host}:{self.port}"}
        if self.tls_cert or self.tls_key:
            listener.update(ssl=True, certfile=self.tls_cert, keyfile=self.tls_key)
        cfg = {"instance": self.instance}
        return {
            "listeners": {"default": listener},
            "plugins": {
                f"{__name__}.DeviceAuthPlugin": cfg,
                f"{__name__}.DeviceTopicPlugin": cfg,
                f"{__name__}.DeviceIngestPlugin": cfg,
            },
        }

    async def start(self) -> None:
        """Start listening; messages flow to the handler from now on."""
        _INSTANCES[self.instance] = self
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._loop = asyncio.get_running_loop()
        _quiet_amqtt(self._loop)
        _install_packet_limit()
        await self.batcher.start()
        self._broker = _GuardedBroker(self.config())
        self._broker.owner = self
        self._broker.retain_message = self._no_retain  # type: ignore[method-assign]
        await self._broker.start()
        self._poke = asyncio.Event()
        self._watch_task = asyncio.create_task(self._watch_credentials())
        if self.consumer == "subscriber":
            from edgewise.transport.client import ExternalBroker

            scheme = "mqtts" if self.tls_cert else "mqtt"
            self._subscriber = ExternalBroker(
                self._commit_subscribed,
                f"{scheme}://{INTERNAL_USER}:{self.internal_secret}@127.0.0.1:{self.port}"
                f"?client_id={INTERNAL_USER}-{self.instance[:8]}"
                + (f"&ca={self.tls_cert}" if self.tls_cert else ""),
                count=self._count,
                # amqtt retains nothing here (_no_retain), but sends what it queued for
                # the subscriber's session while it was away with the retain flag set
                drop_retained=False)
            if self.tls_cert:  # the certificate names the public host, we dial 127.0.0.1
                self._subscriber.client.tls_insecure_set(True)
            await self._subscriber.start()

    #: Seconds :meth:`stop` gives the acks of the last commits to reach their devices
    #: before it drops the connections.
    ACK_GRACE_S = 1.0
    #: Seconds :meth:`stop` gives amqtt's own shutdown once the connections are dropped.
    SHUTDOWN_TIMEOUT_S = 10.0

    async def stop(self) -> None:
        """Commit what has arrived, send its acks, drop every connection and shut the
        broker down, in bounded time however fast devices keep publishing.

        What arrives after the last commit is neither stored nor acknowledged (its
        device sends it again); every acknowledged message was committed before its ack.
        amqtt's shutdown waits for each connection's reader, which reads on while its
        client sends, so the connections are aborted first
        (:meth:`_GuardedBroker.drop_connections`) and the shutdown is given
        :attr:`SHUTDOWN_TIMEOUT_S` at most (a warning names one that took longer).
        """
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self._subscriber is not None:
            await self._subscriber.stop()
            self._subscriber = None
        await self.batcher.stop()
        if self._broker is not None:
            broker, self._broker = self._broker, None
            # the last commits' acks, on their way (the devices then drop those); each
            # connection's outbox starts the next of its queued ones as one ends
            deadline = time.monotonic() + self.ACK_GRACE_S
            while (acks := [t for t in self._pending if not t.done()]) and (
                    left := deadline - time.monotonic()) > 0:
                await asyncio.wait(acks, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            broker.drop_connections()
            try:
                await asyncio.wait_for(broker.shutdown(), self.SHUTDOWN_TIMEOUT_S)
            except TimeoutError:
                log.warning("the embedded MQTT broker's shutdown did not end within %g s "
                            "of its connections being closed; stopping without waiting "
                            "for it", self.SHUTDOWN_TIMEOUT_S)
            except (asyncio.CancelledError, Exception):  # in-flight publishes to gone clients
                log.debug("broker shutdown interrupted in-flight deliveries", exc_info=True)
        _INSTANCES.pop(self.instance, None)

    # -- acks and dead letters ---------------------------------------------------------
    async def publish_ack(self, device_id: str, seq: int) -> None:
        """Send ``{"seq": seq}`` on the device's ack topic (QoS 1), to its own sessions only
        (not retained: see the module docstring)."""
        if self._broker is None:
            return
        self._deliver(topic(device_id, "ack"), json.dumps({"seq": int(seq)}).encode(),
                      ack=True)

    async def ack_subscriber(self, device_id: str, topic_name: str) -> None:
        """Send ``device_id`` its ack (its seq watermark, checked against the store: see
        ``watermark``) because a connection of it subscribed to ``topic_name``, its ack
        topic. At most one lookup per device runs at a time: a SUBSCRIBE naming the ack
        topic thousands of times (amqtt fires the subscribed event once per filter,
        duplicates included) ran one store lookup on the shared thread pool for each,
        stalling every device's logins for seconds. One subscribing while a lookup runs
        gets the ack of one more lookup, made once that one ends (one for all of them)."""
        if self.watermark is None:
            return
        if device_id in self._acking:
            self._acking[device_id] = True
            return
        self._acking[device_id] = False
        try:
            while True:
                try:
                    w = await asyncio.to_thread(self.watermark, device_id)
                except StoreError as exc:  # no ack now: it gets one after its next message
                    log.warning("device %r subscribed to %s: no ack sent, its seq watermark "
                                "could not be checked: %s", device_id, topic_name, exc)
                    return
                await self.publish_ack(device_id, w)
                if not self._acking.get(device_id):
                    return
                self._acking[device_id] = False
        finally:
            self._acking.pop(device_id, None)

    async def publish_deadletter(self, device_id: str, problem: dict[str, Any]) -> None:
        """Send a dead-letter problem to the device and count it by reason."""
        self.count("edgewise_messages_deadlettered_total", reason=str(problem.get("reason")))
        if self._broker is None:
            return
        self._deliver(topic(device_id, "deadletter"), json.dumps(problem, default=str).encode())

    def _deliver(self, topic_name: str, data: bytes, *, ack: bool = False) -> None:
        """Send to the sessions subscribed to exactly ``topic_name`` (QoS 1), through each
        connection's outbox (:class:`~edgewise.transport._outgoing.Outbox`): at most
        :attr:`OUTBOX_WINDOW` in flight, the rest queued up to :attr:`OUTBOX_BYTES`, past
        which a dead letter is dropped (``edgewise_mqtt_deliveries_dropped_total``) and an
        ``ack`` replaces the one still queued. amqtt started a task per message, each
        holding its message until its client answered, without bound for a client that
        read nothing.

        The ACL lets only the device itself subscribe to its ack and dead-letter topics,
        and only by their exact names, so the subscribers are found by one dict lookup.
        This skips amqtt's broadcast loop, which iterates every subscription for every
        message and, in amqtt 0.11.4, drops the message when a client subscribes while
        it iterates ("dictionary changed size during iteration"): an ack lost that way
        would leave a device waiting for its resend timer.
        """
        assert self._broker is not None
        sessions = self._broker.sessions
        for session, qos in list(self._broker.subscriptions.get(topic_name, ())):
            if session.transitions.state != "connected":
                continue
            entry = sessions.get(session.client_id)
            if entry is None:
                continue
            handler = entry[1]
            conn = handler.reader
            if isinstance(conn, _PacketLimit) and conn.outbox is not None:
                if conn.outbox.closed:
                    # the connection is ending (its session still reads connected): what
                    # was queued to it is dropped with it (Outbox.close), and so is this;
                    # not a full outbox nor a slow client
                    log.debug("MQTT device %r (%s): %s not sent, its connection is closing",
                              session.username, conn.peer, topic_name)
                    continue
                if not conn.outbox.put(topic_name, data, min(qos, 1), ack=ack):
                    self._dropped(session.username or "", conn, topic_name)
                continue
            self.track_delivery(asyncio.ensure_future(
                handler.mqtt_publish(topic_name, data, min(qos, 1), retain=False)))

    def _dropped(self, user: str, conn: _PacketLimit, topic_name: str) -> None:
        """Count and (at most every :attr:`CAP_LOG_EVERY_S` per device) log a message to
        ``conn`` dropped for its full outbox (not for a closed one: :meth:`_deliver`)."""
        self.count("edgewise_mqtt_deliveries_dropped_total", reason="outbox_full")
        logged_at, dropped = self._drop_log.get(user, (-self.CAP_LOG_EVERY_S, 0))
        now = time.monotonic()
        if now - logged_at < self.CAP_LOG_EVERY_S:
            self._drop_log[user] = (logged_at, dropped + 1)
            return
        self._drop_log[user] = (now, 0)
        outbox = conn.outbox
        log.warning("MQTT device %r (%s): a message on %s dropped: %d acks and dead letters "
                    "(%d bytes) are queued or in flight to this connection, which answers "
                    "too slowly (at most %d bytes)%s", user, conn.peer, topic_name,
                    len(outbox) if outbox else 0, outbox.charged if outbox else 0,
                    self.OUTBOX_BYTES,
                    f"; {dropped} more dropped since the last such line" if dropped else "")

    def track_delivery(self, task: asyncio.Future[Any]) -> None:
        """Hold ``task`` (an ack's or dead letter's publish) until it ends: :meth:`stop`
        gives those on their way :attr:`ACK_GRACE_S` to arrive."""
        self._pending.add(task)
        task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)  # type: ignore[arg-type]
        if not task.cancelled() and task.exception() is not None:
            log.debug("ack/dead-letter delivery failed: %s", task.exception())

    async def refuse_publish(self, user: str | None, name: str | None,
                             problem: str | None = None, *, payload: bytes = b"",
                             tag: bytes | None = None) -> None:
        """Refuse a PUBLISH of device ``user`` to ``name``, a topic other than its own
        telemetry topic (``problem``: why MQTT forbids it, if it does): dead letter
        ``topic_not_allowed`` at once, and ``payload``'s seqs queued to count as handled
        for ``user`` (see :func:`_seqs_only`), so its ack moves past them; the connection
        that sent it authenticated with credential tag ``tag`` (checked at the commit as
        for telemetry). The internal subscriber gets neither. Waits for room in the queue
        (see ``max_queued_bytes``), so the caller acknowledges it only once it is queued."""
        quoted, got = _quote_topic(name)
        log.info("MQTT device %r: PUBLISH to %s refused: %s", user, got,
                 problem or "not its own telemetry topic")
        if not user or user == INTERNAL_USER:
            return
        why = f" ({problem})" if problem else ""
        self.deadletter_soon(user, {
            "reason": "topic_not_allowed", "field": "topic", "value": quoted, "index": None,
            "detail": f"Device {user!r} may publish only to {self.telemetry_topic(user)!r}; "
                      f"got {got}{why}. The message is not stored; its seqs, where "
                      "they can be read, count as handled (acknowledged).",
        })
        if payload:
            await self.batcher.put_wait(_Refused(user, payload, time.time_ns(), token=tag))

    def deadletter_soon(self, device_id: str, problem: dict[str, Any]) -> None:
        self._spawn(self.publish_deadletter(device_id, problem))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` on the running loop, held in ``_pending`` until it is done (a task
        nothing refers to may be collected before it ends)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _commit_failed(self, messages: list[Message], exc: BaseException) -> None:
        """A message whose commit failed alone: tell its device on the dead-letter topic
        that it was neither stored nor acknowledged (so it is to be sent again), with the
        reason; the batcher has logged it. Its ack does not move: nothing was stored."""
        store = isinstance(exc, StoreError)
        for m in messages:
            if isinstance(m, _Refused):  # told topic_not_allowed; it resends, by seq
                continue
            await self.publish_deadletter(m.device_id, {
                "reason": "store_error" if store else "internal",
                "field": "payload", "value": None, "index": None,
                "detail": f"The gateway could not commit this message ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); nothing of it was stored or acknowledged. "
                          "Send it again later.",
            })

    async def _after_commit(self, messages: list[Message], outcomes: list[Outcome]) -> None:
        best: dict[str, int] = {}
        for m, o in zip(messages, outcomes, strict=True):
            # a refused PUBLISH was dead-lettered (topic_not_allowed) when it came; what the
            # handler said of its seq-only records (no ts) is not the device's to read
            for p in () if isinstance(m, _Refused) else o.deadletters:
                await self.publish_deadletter(o.device_id, p)
            if o.ack_seq is not None:
                best[o.device_id] = max(best.get(o.device_id, 0), o.ack_seq)
        for device, w in best.items():
            await self.publish_ack(device, w)
