"""External broker mode: the gateway subscribes to a broker such as Mosquitto.

``mqtt://[user:pass@]HOST:PORT[?prefix=edgewise&client_id=NAME]`` (``mqtts://`` for TLS,
``&ca=/path/ca.pem`` for the CA of the broker's certificate: the system's when left out).
The gateway connects with a **persistent session** (``clean_session=False``, a stable
client id) and subscribes to ``<prefix>/+/telemetry`` at QoS 1 with paho's
``manual_ack``: each message is acknowledged to the broker (PUBACK) only after the store
committed it, so a gateway that dies before the commit gets the message again from the
broker when it reconnects. After the commit the gateway publishes the retained QoS 1
``{"seq": w}`` on ``<prefix>/<device>/ack``. The broker keeps that ack after the device is
deleted, so deleting a device clears it (:meth:`ExternalBroker.forget_device`, or
:func:`clear_retained_ack` from another process: a zero-length retained message); else a
device registered again under the same id would be told the old watermark and drop readings
it never delivered. Acks are not published for a device no longer registered.

What the broker does is the broker's: authentication and the per-device topic ACL must
be configured there, and must let the gateway's own user read ``<prefix>/+/telemetry`` and
write ``<prefix>/+/ack`` and ``<prefix>/+/deadletter``, and each device write its telemetry
and read its ack and dead letters (Mosquitto, with user name = device id: ``pattern write
edgewise/%u/telemetry``, ``pattern read edgewise/%u/ack``, ``pattern read
edgewise/%u/deadletter``; for the gateway's user ``topic read edgewise/+/telemetry``,
``topic write edgewise/+/ack``, ``topic write edgewise/+/deadletter``: the README's recipe).
Mosquitto grants a subscription its ACL then never serves, so with less the gateway
receives nothing and cannot tell. The gateway refuses telemetry of devices it does not
know (dead letter ``unknown_device``). A publish
the broker's ACL refuses (another device's topic, say) never reaches the gateway, which
cannot tell who sent it: unlike the embedded broker it sends no ``topic_not_allowed`` dead
letter and cannot count the message's seqs, so that device's ack stays below them (it
keeps resending them, and a ``seq_gap`` alert shows it): the broker's ACL and the devices'
topics must agree.
A broker that instead closes the gateway's connection on a publish its ACL refuses (HiveMQ,
EMQX with ``deny_action = disconnect``, AWS IoT) would be closed on the same ack again at
every reconnect (paho sends it again): after ``ACL_CUT_COUNT`` such closes in a row the
gateway publishes no more of that kind (acks, or dead letters) to it for ``WITHHOLD_S``
(10 minutes), logged as an error, so that ingest goes on; then it tries again. One that
closes the connection on the gateway's subscription is named as that; one that refuses it
(SUBACK 0x80) to a running gateway is asked again every ``RESUBSCRIBE_S`` (60 s).
Mosquitto drops messages silently when a client's queue is full (1,000 by default) and
writes its persistence file only now and then: the seq watermark and the gap alerts
make such a loss visible, and devices resend what is not acked.

**Retained telemetry is dropped.** The gateway subscribes again at every connect, and a
broker replays the retained message of each matching topic at every subscribe, with the
retain flag set (MQTT 3.1.1 3.3.1.3; a live publish is forwarded with the flag cleared,
retained or not). Stored, such a replay would be a new reading at every gateway restart
or reconnect (SenML with no time is stamped anew), and a deleted device's retained
message would come back as the telemetry of a device registered again under its id. So
a message with the retain flag is acknowledged and dropped
(``edgewise_messages_refused_total{reason="retained"}``, logged once per device): a
device's telemetry published with retain is stored when it is forwarded live, and one
published while the gateway had no session is not, and is resent as its ack did not
move. Devices must not publish telemetry with retain.

**A commit that fails** (the store is down, or refuses one message) must not leave the
message unacknowledged for ever: each unacked message holds one of the broker's in-flight
slots of the gateway's session (Mosquitto: 20), and once they are all held the broker
sends the gateway nothing more, for every device, until it restarts. So a message whose
commit failed alone is tried again after ``retry_delays`` (0.5, 1, 2, 4 and 8 s: a store
outage of about 15 s loses nothing and needs nothing of the device); if it still cannot
be stored it is PUBACKed to the broker and its device gets a dead letter (reason
``store_error``, or ``internal`` for any other error) saying it was not stored, as the
embedded broker does, and resends it by seq (its ack did not move). Holding it longer
would stall every device's ingest behind one message (one the store refuses stays
refused), and a reconnect would have the broker send it again and again; what the
gateway gives up on is only what the device still holds, since only a commit moves its
ack.

**PUBACKs belong to a connection.** A message's id (mid) is the broker's number on the
connection it came on; a PUBACK sent on a later connection with the id of a message of an
earlier one acknowledges whatever the broker numbered so there: a different message, not
yet committed, if the broker lost the session (a restart without persistence numbers
from 1 again). So a message is PUBACKed only on the connection it arrived on; one
committed after its connection dropped is not, and the broker, if it kept the session,
sends it again and that copy is acked (the store keeps one).

**The client id is the gateway's own** (:func:`gateway_client_id`): a random
``edgewise-gateway-<12 hex>`` made at the first start and kept in
``<data-dir>/mqtt_client_id`` (mode 0600), unless the URL gives ``client_id=``. The broker
keeps one session per client id; a second client connecting with it takes the session
over, and two gateways with one id take it from each other on every reconnect, each then
receiving what the other subscribed to (and dead-lettering it as ``unknown_device``, so
the other never stores it). Earlier versions derived the id from the data dir's path
alone, the same on two hosts or containers with the same path; a data dir an earlier
gateway ran on keeps that derived id (recorded in the file at the upgrade), since its
broker session holds what was queued while the gateway was down. A broker taking the
session over shows in the log (:meth:`ExternalBroker._note_cut`). So a gateway holds an
exclusive ``flock`` on that file while it runs, and a second gateway on the data dir
(several gateways sharing one ``--data-dir``, as on one PostgreSQL store) is refused at
start, before it connects: with an external broker, one gateway per broker and prefix (MQTT
shared subscriptions would spread each device's messages over the gateways, whose
detectors, seq watermarks and alerts are each their own, and a stopped gateway's session
would keep taking its share).

**Nothing a message holds stops ingest.** A topic whose device level no device id can be
(``edgewise/<65,516 characters>/telemetry``, whose dead-letter topic MQTT cannot hold) is
acknowledged and dropped (``edgewise_messages_refused_total{reason="bad_device"}``), with
no dead letter; any other error while a message is handled is caught there, the message
acknowledged, dead-lettered ``internal`` and counted (``reason="internal"``): an exception
out of paho's ``on_message`` ended its network thread, the gateway up and receiving
nothing, and the message, never acknowledged, came back at every start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import secrets
import ssl
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from edgewise._private import create_private_once, make_private
from edgewise.errors import BrokerUnavailableError, ConfigError, PayloadError, StoreError
from edgewise.store import shown_url
from edgewise.telemetry import DEVICE_ID_RE, SEQ_SCAN_FACTOR
from edgewise.transport.base import Handler, Message, Outcome
from edgewise.transport.batcher import Batcher

__all__ = ["CLIENT_ID_FILE", "MQTT_URL_KEYS", "ExternalBroker", "clear_retained_ack",
           "gateway_client_id", "legacy_client_id", "parse_mqtt_url"]

log = logging.getLogger(__name__)


#: The query keys an ``mqtt://`` URL may give (:func:`parse_mqtt_url`).
MQTT_URL_KEYS = ("prefix", "client_id", "ca")


def parse_mqtt_url(url: str, *, load_ca: bool = True) -> dict[str, Any]:
    """Split an ``mqtt://`` URL into host, port, credentials, TLS, prefix and client id.

    ``mqtt[s]://[USER:PASSWORD@]HOST[:PORT][?prefix=P&client_id=ID&ca=PATH]``: anything
    else is refused as a :class:`~edgewise.errors.ConfigError` rather than dropped
    without a word: a path (``/plant7``: the prefix is ``?prefix=``), a fragment, a query
    key other than those of :data:`MQTT_URL_KEYS` (``topic_prefix``, ``Prefix``,
    ``clientid``), one given twice or with no value, ``ca=`` on ``mqtt://`` (which would
    connect in clear, password and all: TLS is ``mqtts://``), a prefix holding an MQTT
    wildcard ``+`` / ``#`` or a NUL, a client id that is not 1-128 printable ASCII
    characters without spaces. Query values are percent-decoded; a ``+`` stays a ``+``.

    A URL whose user info holds an unencoded ``/``, ``?`` or ``#`` (which end the host
    part early, so that the password's rest would be read as the port or path) is refused
    without quoting any of it. With ``load_ca`` (the default) the ``ca=`` file of an
    ``mqtts://`` URL is loaded, so that a missing or unreadable one, or one that is no PEM
    CA certificate, is a :class:`~edgewise.errors.ConfigError` here rather than an error
    of the TLS setup later.

    >>> p = parse_mqtt_url("mqtt://gw:pw@broker.local:1883?prefix=plant7")
    >>> p["host"], p["port"], p["username"], p["prefix"], p["tls"]
    ('broker.local', 1883, 'gw', 'plant7', False)
    >>> parse_mqtt_url("mqtt://broker?client_id=gw+plant7")["client_id"]
    'gw+plant7'
    >>> parse_mqtt_url("mqtt://broker?topic_prefix=plant7")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: Setting 'mqtt' has value 'mqtt://broker?topic_prefix=plant7': its query key 'topic_prefix' is not one it takes (did you mean 'prefix'?)...
    """  # noqa: E501
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            f"Setting 'mqtt' has value {shown_url(url)!r}. Use 'embedded' or mqtt://HOST:PORT "
            "(mqtts:// for TLS)."
        )
    # an '@' past the host part: the user info held a '/', '?' or '#', which ended the host
    # part there (what urllib took for the host's port is the password's start: not shown)
    query_keys = [field.partition("=")[0] for field in parts.query.split("&")]
    if "@" in parts.path or "@" in parts.fragment or any("@" in k for k in query_keys):
        raise ConfigError(
            f"Setting 'mqtt' has value {shown_url(url)!r}: its user name or password holds "
            "an unencoded '/', '?' or '#', which ends the URL's host part there. Percent-"
            "encode them in the user name and password ('/' as %2F, '?' as %3F, '#' as "
            "%23, '@' as %40, '%' as %25): mqtt://USER:PASSWORD@HOST:PORT."
        )
    form = ("mqtt[s]://[USER:PASSWORD@]HOST[:PORT][?prefix=PREFIX&client_id=ID&ca=PATH] "
            "(ca= with mqtts:// only)")
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"Setting 'mqtt' has value {shown_url(url)!r}: its path {parts.path!r} is not "
            "used by anything (the topic prefix is given as ?prefix=NAME, e.g. "
            f"mqtt://HOST:PORT?prefix={parts.path.strip('/') or 'edgewise'}). Use {form}.")
    if "#" in url:  # a raw '#' in the user info ended the host part: refused above
        raise ConfigError(
            f"Setting 'mqtt' has value {shown_url(url)!r}: it holds a '#', which starts a URL "
            "fragment that nothing would read (a prefix may not hold '#', an MQTT wildcard; "
            f"in a client_id= or ca= value write it %23). Use {form}.")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of 0-65535
        port = 0
    if port == 0 or (port is None and parts.netloc.rpartition("@")[2].endswith(":")):
        shown = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ConfigError(
            f"Setting 'mqtt' has value {shown_url(url)!r}: its port {shown!r} is not a port. "
            "Use a number from 1 to 65535 (mqtt://HOST:PORT), or leave it out for 1883 "
            "(8883 with mqtts://)."
        )
    q = _mqtt_url_query(url, parts.query, form)
    tls = parts.scheme == "mqtts"
    if "ca" in q and not tls:
        raise ConfigError(
            f"Setting 'mqtt' has value {shown_url(url)!r}: ca= is the CA that TLS checks the "
            "broker's certificate with, and mqtt:// connects without TLS (the user name, "
            "password and readings would go in clear). Use mqtts://HOST[:PORT]?ca=PATH "
            "(port 8883 when left out) for TLS, or leave ca= out.")
    if tls and load_ca and "ca" in q:
        try:
            ssl.create_default_context(cafile=q["ca"])
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"Setting 'mqtt' has value {shown_url(url)!r}: its ca= {q['ca']!r} cannot be "
                f"loaded as PEM CA certificates ({getattr(exc, 'strerror', None) or exc}). "
                "Give the path of a readable PEM file of the CA certificates the broker's "
                "certificate is checked with, or leave ca= out for the system's."
            ) from None
    return {
        "host": parts.hostname,
        "port": port or (8883 if tls else 1883),
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "tls": tls,
        "prefix": q.get("prefix", "edgewise"),
        "client_id": q.get("client_id"),
        "ca": q.get("ca"),
    }


def _mqtt_url_query(url: str, query: str, form: str) -> dict[str, str]:
    """The ``key=value`` pairs of an ``mqtt://`` URL's query, percent-decoded (a ``+``
    kept: ``parse_qs`` made ``client_id=gw+plant7`` ``'gw plant7'``), each key one of
    :data:`MQTT_URL_KEYS`, once, with a value; the prefix without ``/`` at its ends and
    free of MQTT wildcards, the client id what the broker session's id may be. Else a
    :class:`~edgewise.errors.ConfigError` naming the key (never the URL's password)."""
    import difflib

    where = f"Setting 'mqtt' has value {shown_url(url)!r}"
    q: dict[str, str] = {}
    for field in query.split("&"):
        if not field:
            continue
        raw_key, _, raw_value = field.partition("=")
        key = unquote(raw_key)
        if key not in MQTT_URL_KEYS:
            near = difflib.get_close_matches(key.lower(), MQTT_URL_KEYS, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(
                f"{where}: its query key {key[:40]!r} is not one it takes{hint}. The keys "
                f"are {', '.join(k + '=' for k in MQTT_URL_KEYS)} (lower case): {form}.")
        if key in q:
            raise ConfigError(f"{where}: it gives {key}= twice. Give it once: {form}.")
        try:
            value = unquote(raw_value, errors="strict")
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: its {key}= holds a %XX escape that is no UTF-8 text. "
                              "Percent-encode the value's UTF-8 bytes.") from None
        if not value:
            raise ConfigError(f"{where}: its {key}= has no value. Give one, or leave {key}= "
                              f"out: {form}.")
        q[key] = value
    if "prefix" in q:
        prefix = q["prefix"].strip("/")
        bad = sorted({c for c in prefix if c in "+#\x00"})
        if bad or not prefix:
            why = (f"holds {' and '.join(map(repr, bad))}, which no MQTT topic name may hold "
                   "('+' and '#' are wildcards)" if bad else "is only '/'")
            raise ConfigError(
                f"{where}: its prefix= {q['prefix'][:80]!r} {why}. Give the first topic "
                "level(s) of the devices' topics, e.g. prefix=plant7 for "
                "plant7/<device>/telemetry.")
        q["prefix"] = prefix
    cid = q.get("client_id")
    if cid is not None and not (len(cid) <= _MAX_ID and cid.isascii() and cid.isprintable()
                                and " " not in cid):
        raise ConfigError(
            f"{where}: its client_id= {cid[:80]!r} is not a client id. Give 1-{_MAX_ID} "
            "printable ASCII characters without spaces (a space written %20, or as '+' by "
            "a form encoder, is not taken).")
    return q


#: The file in the data dir that keeps the gateway's MQTT client id (mode 0600).
CLIENT_ID_FILE = "mqtt_client_id"

#: Files only a gateway start or run makes in its data dir (not ``edgewise device add``,
#: which makes ``security.sqlite`` before a first start): the default DuckDB store, the
#: detector state saved at each stop, the presence lock, the labels, the registry's.
_GATEWAY_FILES = ("edgewise.duckdb", "detectors.pickle", "gateway.lock", "labels.sqlite",
                  "registry/registry.sqlite", "registry/signing_key.pem")

#: What a kept client id may be: printable ASCII, no spaces, 1-128 characters.
_MAX_ID = 128


def legacy_client_id(data_dir: Path | str) -> str:
    """The client id earlier versions derived from the data dir's path alone (the same on
    every host whose data dir has that path).

    >>> legacy_client_id("/var/lib/edgewise")
    'edgewise-gateway-358aed56642f'
    """
    return f"edgewise-gateway-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]}"


def _process_started() -> float | None:
    """This process's start as a Unix time (Linux ``/proc``), or ``None`` if unknown."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(x.split()[1]) for x in f if x.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _ran_before(data_dir: Path) -> bool:
    """Whether a gateway ran on ``data_dir`` before this process: one of the files only a
    gateway makes there is older than this process (2 s of slack for the clock's
    rounding). Where the start is unknown, any of them counts (the safe side: an old
    session is kept rather than lost)."""
    started = _process_started()
    for name in _GATEWAY_FILES:
        try:
            mtime = (data_dir / name).stat().st_mtime
        except OSError:
            continue
        if started is None or mtime < started - 2.0:
            return True
    return False


def _read_client_id(path: Path) -> str | None:
    """The client id kept in ``path``; ``None`` if there is no such file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"The gateway's MQTT client id file {path} cannot be read ({exc}); "
                          "make it readable by the gateway's user.") from None
    text = raw.decode("ascii", errors="replace").strip()
    if not (0 < len(text) <= _MAX_ID and text.isprintable() and " " not in text):
        raise ConfigError(
            f"The gateway's MQTT client id file {path} holds {raw[:200]!r}, not a client id. "
            f"Write one line of 1-{_MAX_ID} printable ASCII characters without spaces (the "
            "id the broker keeps this gateway's session under), or give one with "
            "--mqtt mqtt://HOST:PORT?client_id=NAME.")
    make_private(path)
    return text


def gateway_client_id(data_dir: Path) -> str:
    """The MQTT client id of the gateway of ``data_dir``, kept in ``<data_dir>/mqtt_client_id``.

    Made at the first start and the same at every later one, so the broker keeps the
    gateway's persistent session across restarts: a random ``edgewise-gateway-<12 hex>``
    for a new data dir, so that two gateways never share a session because their data
    dirs have the same path (two hosts or containers). A data dir an earlier version ran
    on (one of the files only a gateway makes there predates this process) keeps the id
    that version derived from the path, :func:`legacy_client_id`: its session on the broker
    holds what was queued for the gateway while it was down.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> cid = gateway_client_id(d)
    >>> cid.startswith("edgewise-gateway-"), cid == gateway_client_id(d), len(cid)
    (True, True, 29)
    >>> (d / CLIENT_ID_FILE).read_text() == cid + "\\n"
    True
    """
    path = Path(data_dir) / CLIENT_ID_FILE
    kept = _read_client_id(path)
    if kept is not None:
        return kept
    if _ran_before(Path(data_dir)):
        made = legacy_client_id(data_dir)
        log.info("MQTT client id %r kept from the data dir's path (a gateway ran on %s "
                 "before: its broker session may hold messages queued meanwhile); recorded "
                 "in %s", made, data_dir, path)
    else:
        made = f"edgewise-gateway-{secrets.token_hex(6)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # of two gateways starting at once on one data dir, the first one's id is kept
        # (the other's read back below); written whole, 0600, where links are missing too
        create_private_once(path, made.encode("ascii") + b"\n", replace_without_links=True)
    except OSError as exc:
        raise ConfigError(
            f"The gateway's MQTT client id cannot be kept in {path} ({exc}). Make the data "
            "dir writable by the gateway's user, or give the id with "
            "--mqtt mqtt://HOST:PORT?client_id=NAME.") from None
    kept = _read_client_id(path)
    assert kept is not None
    return kept


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
        Where the client id is kept (:func:`gateway_client_id`; made there even when the
        URL gives ``client_id=``, which wins), so that the broker keeps the gateway's
        session across restarts. Without it (and without ``client_id=``) the id is random
        for this instance only.
    known_device
        ``known_device(id) -> bool``; telemetry of unknown devices is dead-lettered.
    max_batch
        Most messages per commit.
    retry_delays
        Seconds to wait before each new try of a message whose commit failed; after the
        last, it is PUBACKed and dead-lettered (see the module docstring).
    max_payload_bytes
        The gateway's telemetry limit (``EDGEWISE_MAX_PAYLOAD_BYTES``). A message over
        :data:`~edgewise.telemetry.SEQ_SCAN_FACTOR` times it, which the pipeline would
        refuse whole without reading its seqs, is dead-lettered ``too_large`` and
        acknowledged here, never queued for a commit (the queue held every such message
        whole until then: 8 of 100 MB took the gateway from 241 MB to 1.2 GB). ``None``:
        every message is queued. paho reads each message whole all the same: only the
        broker can bound that (Mosquitto's ``max_packet_size``).
    drop_retained
        Acknowledge and drop telemetry the broker sends with the retain flag (its
        retained copy replayed at a subscribe; see the module docstring). ``False`` for
        a broker that sets the flag on what it queued for the session (amqtt: the
        embedded broker's internal subscriber, whose broker retains nothing).
    max_queued_bytes
        The payload bytes of received messages the gateway may hold until their commit
        (``None``: 64 MiB), a quarter of it per device. QoS 1 messages are bounded by the
        broker, which sends no more than it queued for the gateway's session before their
        PUBACKs (Mosquitto: ``max_queued_messages``, 1,000; it sends them all at once when
        its in-flight window frees), and are never dropped here; QoS 0 ones are not
        bounded there, so a QoS 0 message of a device holding its quarter (or once all
        devices hold it all) is dropped on arrival, counted in
        ``edgewise_messages_refused_total{reason="overloaded"}``; its device's ack does not
        move, and it resends. Before, a device publishing at QoS 0 faster than the store
        committed (or while it was stalled) grew the gateway's memory without end.

    Examples
    --------
    >>> b = ExternalBroker(lambda msgs: [], "mqtt://127.0.0.1:1883?client_id=gw-doc")
    >>> b.client_id, b.retry_delays
    ('gw-doc', (0.5, 1.0, 2.0, 4.0, 8.0))
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
        retry_delays: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0),
        max_payload_bytes: int | None = None,
        drop_retained: bool = True,
        max_queued_bytes: int | None = None,
    ) -> None:
        if max_queued_bytes is not None and (isinstance(max_queued_bytes, bool) or not
                                             isinstance(max_queued_bytes, int)
                                             or max_queued_bytes < 4):
            raise ValueError("The 'max_queued_bytes' parameter of ExternalBroker must be an "
                             f"int in the range [4, inf) or None. Got {max_queued_bytes!r} "
                             "instead.")
        if any(not (isinstance(d, int | float) and d >= 0) for d in retry_delays):
            raise ValueError("The 'retry_delays' parameter of ExternalBroker must be a "
                             f"sequence of seconds >= 0. Got {retry_delays!r} instead.")
        # the data dir's id is settled first, a bad URL or client_id= notwithstanding: a
        # first start that fails on the URL leaves gateway files, and the start after it
        # would take them for an earlier version's (see gateway_client_id)
        kept_id = gateway_client_id(Path(data_dir)) if data_dir is not None else None
        self.cfg = parse_mqtt_url(url)
        self.prefix = self.cfg["prefix"]
        self.handler = handler
        self._count = count
        self.known_device = known_device
        self.retry_delays = tuple(float(d) for d in retry_delays)
        self.max_payload_bytes = max_payload_bytes
        self.drop_retained = drop_retained
        self.max_queued_bytes = max_queued_bytes or self.MAX_QUEUED_BYTES
        self.max_device_bytes = self.max_queued_bytes // 4
        # payload bytes received and not yet committed or given up on, in all and per
        # device (paho's thread adds, the loop takes away: under _held_lock)
        self._held_lock = threading.Lock()
        self._held = 0
        self._held_by: dict[str, int] = {}
        self._id_lock: int | None = None  # the flock on the client id file (start to stop)
        # when each kind of failure (_log_failure's key) was last logged
        self._logged_at: dict[str, float] = {}
        self._retain_warned: set[str] = set()  # devices whose retained message was logged
        self.batcher = Batcher(handler, self._after_commit, self._commit_failed,
                               max_batch=max_batch, max_batch_bytes=self.MAX_BATCH_BYTES)
        # the connection a message came on: bumped at each connect and each disconnect,
        # under _ack_lock, so no PUBACK of an earlier connection's message goes out later
        self._epoch = 0
        self._ack_lock = threading.RLock()  # paho may call on_disconnect inside ack()
        self._gone = threading.Event()  # set once the connection closed at stop()
        # scheduled retries and resubscribes: each with the message it tries again (None
        # for a resubscribe), so that a stop cancelling them can count what it drops
        self._retries: dict[asyncio.TimerHandle, Message | None] = {}
        self.client_id: str = (self.cfg["client_id"] or kept_id
                               or f"edgewise-gateway-{secrets.token_hex(6)}")
        self._id_file = Path(data_dir) / CLIENT_ID_FILE if data_dir is not None else None
        # when the current connection was accepted, and when recent ones were closed by
        # the broker soon after (a session taken over: see _on_disconnect)
        self._connected_at: float | None = None
        self._cut_short: deque[float] = deque()
        self._takeover_warned = -1e9
        # the latest acks and dead letters published, and closes of a connection while one
        # of them was unconfirmed (see _cut_on_publish)
        self._sent_out: deque[tuple[str, mqtt.MQTTMessageInfo]] = deque(maxlen=self.SENT_KEPT)
        self._cut_on_info: mqtt.MQTTMessageInfo | None = None  # unconfirmed at the last close
        self._cut_on_out = 0  # closes in a row with that one unconfirmed
        self._sent_lock = threading.Lock()  # _sent_out: appended on two threads, pruned
        # the kinds of publish ("ack", "deadletter") the broker closed the connection on,
        # and until when (time.monotonic()) they are withheld (see _withhold)
        self._withheld: dict[str, float] = {}
        self._stopping = False
        self._closing = False  # set as stop() begins: messages are no longer taken
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._sub_mid: int | None = None
        self._subscribed = False  # the current connection's subscription was granted
        self._sub_cuts = 0  # connections closed in a row before their SUBACK
        self._sub_refused = False  # the broker refused the running gateway's subscription
        self._sub_lock = threading.Lock()  # _sub_mid, set on the loop by _resubscribe_later
        self._refused: str | None = None  # why the last connection attempt failed
        # a connection lost while running (see _on_disconnect): since when, whether its
        # loss was logged, and the reasons logged since, each at once the first time
        self._lost_at: float | None = None
        self._lost_logged = False
        self._lost_whys: dict[str, float] = {}  # each reason of a failed connect: logged when
        # MQTT 3.1.1: a broker sets the retain flag only on what it replays to a new
        # subscription (see _drop_retained), as MQTT 5 does unless a subscription asks for
        # retain-as-published, which this one would have to be changed to do
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=False, manual_ack=True, protocol=mqtt.MQTTv311)
        if self.cfg["username"]:
            c.username_pw_set(self.cfg["username"], self.cfg["password"])
        if self.cfg["tls"]:
            try:
                c.tls_set(ca_certs=self.cfg["ca"], cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:  # changed since it was parsed
                raise ConfigError(
                    f"Setting 'mqtt' has value {shown_url(url)!r}: TLS to the broker cannot "
                    f"be set up ({getattr(exc, 'strerror', None) or exc}). Give ca= the path "
                    "of a readable PEM file of CA certificates, or leave it out for the "
                    "system's.") from None
        # an exception out of a callback would end paho's network thread: the process up,
        # nothing received any more (_on_message handles its own; this is the backstop)
        c.suppress_exceptions = True
        c.on_log = _log_callback_errors
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.1, 2.0)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    #: The default of ``max_queued_bytes`` (the embedded broker's, too).
    MAX_QUEUED_BYTES = 64 * 1024 * 1024

    #: Payload bytes past which a commit takes no more messages: :meth:`stop` waits for
    #: the commit under way, which took every message queued behind the one before
    #: (Mosquitto sends its whole queue for the gateway at once when the gateway's PUBACKs
    #: free its in-flight window: 980 messages of 250 readings, a 27 s commit and stop).
    MAX_BATCH_BYTES = 1024 * 1024

    def _hold(self, device: str, size: int, qos: int) -> bool:
        """Count ``size`` payload bytes of ``device`` as held until their commit; a QoS 0
        message is refused (``False``) while its device holds ``max_device_bytes`` or all
        devices ``max_queued_bytes`` (one over the bound alone goes through)."""
        with self._held_lock:
            if not qos and (self._held >= self.max_queued_bytes
                            or self._held_by.get(device, 0) >= self.max_device_bytes):
                return False
            self._held += size
            self._held_by[device] = self._held_by.get(device, 0) + size
            return True

    def _let_go(self, device: str, size: int) -> None:
        """``size`` bytes of ``device`` are committed or given up on: no longer held."""
        with self._held_lock:
            self._held = max(0, self._held - size)
            left = self._held_by.get(device, 0) - size
            if left > 0:
                self._held_by[device] = left
            else:
                self._held_by.pop(device, None)

    def held_bytes(self, device_id: str | None = None) -> int:
        """Payload bytes received and not yet committed, in all or of ``device_id``."""
        with self._held_lock:
            return self._held if device_id is None else self._held_by.get(device_id, 0)

    def _send(self, topic: str, payload: str | bytes, *, retain: bool = False
              ) -> mqtt.MQTTMessageInfo | None:
        """Publish an ack or dead letter at QoS 1, kept (the last ``SENT_KEPT``) so that a
        broker closing the connection on it can be told apart (:meth:`_cut_on_publish`).
        ``None`` (nothing published) while its kind is withheld (:meth:`_withhold`)."""
        kind = topic.rpartition("/")[2]
        until = self._withheld.get(kind)
        if until is not None:
            if time.monotonic() < until:
                return None
            self._withheld.pop(kind, None)
            log.warning("MQTT broker %s: publishing the gateway's %s messages again (withheld "
                        "for %g s after the broker closed the connection on them)",
                        self._where(), kind, self.WITHHOLD_S)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._sent_lock:
            self._sent_out.append((topic, info))
        return info

    #: Closes in a row on one unconfirmed ack or dead letter after which its kind is
    #: withheld (:meth:`_withhold`), and for how many seconds; then it is tried again.
    ACL_CUT_COUNT = 5
    WITHHOLD_S = 600.0

    #: How many of the latest acks and dead letters are kept for :meth:`_cut_on_publish`.
    SENT_KEPT = 64

    def _cut_on_publish(self) -> bool:
        """The connection was closed by the broker (not at stop): whether an ack or dead
        letter the gateway published was unconfirmed at this close and the one before (paho
        sends it again at each reconnect): then it is no session takeover (``True``), and
        at the ``ACL_CUT_COUNT``-th such close in a row its kind is withheld
        (:meth:`_withhold`, which logs it).

        Brokers that close a connection on a publish its ACL refuses (HiveMQ, EMQX with
        ``deny_action = disconnect``, AWS IoT; Mosquitto drops it without a word) did so on
        the gateway's first ack, and on the same ack again, which paho sends anew at every
        reconnect, at once: the gateway reconnected for ever (76 times in 8 s), received
        nothing more for any device, committed the same message again at each connection,
        and logged a session takeover or a TLS port spoken to in clear."""
        with self._sent_lock:
            sent = list(self._sent_out)
        pending = next(((t, info) for t, info in sent if not _confirmed(info)), None)
        if pending is None or pending[1] is not self._cut_on_info:
            # a new one: counted from here (a takeover loop, or a broker restarting, lets
            # the gateway's publishes through between closes)
            self._cut_on_info = None if pending is None else pending[1]
            self._cut_on_out = 1 if pending is not None else 0
            return False
        self._cut_on_out += 1  # the same one unconfirmed at two closes: not a takeover
        if self._cut_on_out >= self.ACL_CUT_COUNT:
            self._withhold(pending[0])
        return True

    def _withhold(self, topic: str) -> None:
        """The broker closed the connection ``ACL_CUT_COUNT`` times in a row on the
        gateway's publish on ``topic``: withhold the gateway's publishes of its kind (acks,
        or dead letters) for ``WITHHOLD_S`` seconds, those unconfirmed dropped from paho's
        queue (which sent them again at each reconnect), so that the connection stays up
        and ingest goes on; logged as an error naming the topic and the broker's ACL.

        Before, each reconnect sent the refused ack again and was closed on it: nothing
        more was received for any device until the broker's ACL was changed."""
        kind = topic.rpartition("/")[2]
        self._withheld[kind] = time.monotonic() + self.WITHHOLD_S
        with self._sent_lock:
            held = sum(1 for t, i in self._sent_out
                       if t.rpartition("/")[2] == kind and not _confirmed(i))
        # those unconfirmed are dropped from paho's queue at the next CONNACK
        # (_drop_withheld), before paho sends that queue again: not here, in on_disconnect,
        # which paho may call while it iterates over that queue (sending failed), and whose
        # network thread then died of the change
        self._cut_on_info, self._cut_on_out = None, 0
        log.error(
            "MQTT broker %s closed the gateway's connection %d times in a row, each time with "
            "the gateway's publish on %s unconfirmed: the broker most likely refuses the "
            "gateway's user to write %s (its ACL), and closes the connection on it rather "
            "than dropping the message. So that ingest goes on for every device, the gateway "
            "publishes no %s messages to this broker for %g s (%d unconfirmed ones dropped), "
            "then tries again: devices get none meanwhile (telemetry is still stored; what "
            "they resend is stored once). Let the gateway's user write %s and %s (Mosquitto: "
            "'topic write %s'; see the README).",
            self._where(), self.ACL_CUT_COUNT, _shown_topic(topic),
            self._topic("+", kind), kind, self.WITHHOLD_S, held,
            self._topic("+", "ack"), self._topic("+", "deadletter"), self._topic("+", kind))

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        if self._count is not None:
            self._count(name, value, **labels)

    def _topic(self, device_id: str, kind: str) -> str:
        return f"{self.prefix}/{device_id}/{kind}"

    async def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe, retrying for up to ``timeout`` seconds; raises
        :class:`~edgewise.errors.BrokerUnavailableError` (a ``ConnectionError``) if the
        broker does not accept the gateway by then."""
        self._lock_id_file()  # before connecting: a second gateway must not take the session
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._closing = False
        self._refused, self._lost_at, self._lost_whys = None, None, {}
        self._withheld = {}
        with self._held_lock:  # what a stop left uncommitted the broker sends again
            self._held, self._held_by = 0, {}
        await self.batcher.start()
        self.client.connect_async(self.cfg["host"], self.cfg["port"], keepalive=30)
        self.client.loop_start()
        ok = await asyncio.to_thread(self._connected.wait, timeout)
        if not ok:
            await self.stop()
            host, port = self.cfg["host"], self.cfg["port"]
            raise BrokerUnavailableError(
                f"MQTT broker {host}:{port} did not accept the gateway within {timeout:g} s "
                f"({self._refused or 'no answer'}).", host=host, port=port)

    async def stop(self) -> None:
        """Finish the commit under way, ack it, disconnect. What arrived and waits behind
        that commit is left uncommitted and unacknowledged, as is what arrives meanwhile:
        the broker keeps the session and sends again what was not acked (messages waiting
        for a new try included), and a QoS 0 message's device resends it, its ack not
        having moved. Committing that backlog first held the stop for as long as its
        commits took, and then their detection (1,000 messages of 250 readings sent at
        once, SIGINT 3 s later: 706 more messages committed, a 19-27 s stop, past ``docker
        stop``'s 10 s and its SIGKILL; now 0.7 s for this part, ``MAX_BATCH_BYTES``).
        What is dropped so is no longer held (:meth:`held_bytes`), and a QoS 0 one is
        counted as :meth:`_drop_stopping` says."""
        self._closing = True  # _on_message takes nothing more (nor _retry_later)
        waiting = [m for m in self._retries.values() if m is not None]
        for handle in self._retries:
            handle.cancel()
        self._retries.clear()
        dropped = waiting + await self.batcher.stop(drop_queued=True)
        if dropped:
            log.info("gateway stopping: %d MQTT messages received but not yet committed "
                     "are left unacknowledged (the broker sends them again at the next "
                     "start; QoS 0 ones are resent by their devices)", len(dropped))
        for m in dropped:  # no longer held; a QoS 0 one is lost here: counted
            self._give_up_stopping(m)
        self._stopping = True
        self._gone.clear()
        connected = self.client.is_connected()
        self.client.disconnect()
        if connected:  # the PUBACKs queued before the DISCONNECT go out first: wait for
            # them (a loop stopped at once left them unsent, and the broker sent those
            # messages again to the next session)
            await asyncio.to_thread(self._gone.wait, self.STOP_FLUSH_S)
        self.client.loop_stop()
        if self._id_lock is not None:
            os.close(self._id_lock)  # closing the descriptor drops its flock
            self._id_lock = None

    def _lock_id_file(self) -> None:
        """Hold an exclusive ``flock`` on the data dir's client id file until :meth:`stop`,
        when the client id is the one kept there (no ``client_id=`` in the URL); a
        :class:`~edgewise.errors.ConfigError` if another gateway holds it.

        Two gateways on one data dir (the README's several gateways on one store, with
        an external broker) took the kept id both, and the broker handed the session from
        one to the other at every reconnect (168 times in 15 s), each receiving what the
        other subscribed to. Where ``flock`` is missing (some NFS) nothing is held, with a
        warning."""
        if self._id_file is None or self.cfg["client_id"] or self._id_lock is not None:
            return
        fd: int | None = None
        try:
            import fcntl  # POSIX; elsewhere (ImportError) unguarded

            fd = os.open(self._id_file, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # type: ignore[arg-type]  # only flock blocks: fd is open
            raise ConfigError(
                f"Another gateway on data dir {str(self._id_file.parent)!r} is connected to an "
                f"external MQTT broker with this data dir's client id {self.client_id!r} "
                f"(it holds {str(self._id_file)!r}): two gateways with one client id take the "
                "broker session from each other, and with two ids each would receive every "
                f"device's telemetry ({self._topic('+', 'telemetry')}). Run one gateway per "
                "external broker (stop that one first); several gateways on one store need "
                "--mqtt embedded, each device sending to one of them.") from None
        except (OSError, ImportError) as exc:
            if fd is not None:
                os.close(fd)
            log.warning("the MQTT client id file %s cannot be locked (%s): nothing keeps a "
                        "second gateway on this data dir off the broker session; run one "
                        "gateway per external broker", self._id_file, exc)
            return
        self._id_lock = fd

    #: A broker that keeps refusing the gateway (or cannot be reached after the gateway
    #: lost it) is logged at most this often for one reason (at once for a new one).
    RECONNECT_LOG_EVERY_S = 60.0

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            self._refused = f"it refused the connection: {rc}"
            self._cut_short.clear()  # no takeover: see _on_connect_fail
            self._log_connect_failure(
                f"MQTT broker {self._where()} refused the gateway: {rc}" + (
                    " (check the user name and password of --mqtt, and the broker's password "
                    "file and ACL)" if getattr(rc, "value", None) in (4, 5, 134, 135) else ""))
            return
        with self._ack_lock:
            self._epoch += 1
        self._connected_at = time.monotonic()
        self._subscribed = False
        self._drop_withheld()
        if self._lost_at is not None:
            if self._lost_logged:
                kept = getattr(flags, "session_present", True)
                log.warning(
                    "MQTT broker %s: reconnected after %.1f s%s", self._where(),
                    time.monotonic() - self._lost_at,
                    "" if kept else (" with a new session (the broker had not kept the "
                                     "gateway's: telemetry published meanwhile was not queued "
                                     "for it, and devices resend what is not acked)"))
            self._lost_at, self._lost_logged = None, False
        # start() returns once the broker has granted the subscription (SUBACK), not when
        # it was sent: a new session holds no subscription until then, and telemetry
        # published in between would be dropped by the broker
        _, self._sub_mid = client.subscribe(self._topic("+", "telemetry"), qos=1)

    def _drop_withheld(self) -> None:
        """Drop the publishes :meth:`_withhold` gave up on from paho's queue of unconfirmed
        ones, which paho sends again once ``on_connect`` returns (paho 2: its
        ``_out_messages``; where it is missing, nothing is dropped and the broker closes the
        connection on them once more)."""
        now = time.monotonic()
        kinds = {k for k, until in list(self._withheld.items()) if now < until}
        out = getattr(self.client, "_out_messages", None)
        lock = getattr(self.client, "_out_message_mutex", None)
        if not kinds or out is None or lock is None:
            return
        with self._sent_lock:
            drop = [(t, i) for t, i in self._sent_out
                    if t.rpartition("/")[2] in kinds and not _confirmed(i)]
            self._sent_out = deque((x for x in self._sent_out if x not in drop),
                                   maxlen=self.SENT_KEPT)
        with lock:
            for _, info in drop:
                queued = out.get(info.mid)
                if queued is not None and queued.info is info:
                    del out[info.mid]

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: Any, props: Any = None) -> None:
        with self._sub_lock:
            if mid != self._sub_mid:
                return
        refused = [rc for rc in reason_codes if getattr(rc, "is_failure", False)]
        topic = self._topic("+", "telemetry")
        if refused:
            self._refused = f"it refused the subscription to {topic}: {refused[0]}"
            loop = self._loop
            if not self._connected.is_set() or loop is None or self._closing:
                log.warning("MQTT broker refused the gateway's subscription to %s: %s",
                            topic, refused[0])
                return  # at start(): named in its error
            self._sub_refused = True
            self._log_connect_failure(
                f"MQTT broker {self._where()} refused the gateway's subscription to {topic} "
                f"({refused[0]}): nothing is received for any device until it grants it (its "
                f"ACL must let the gateway's user read {topic}); asked again every "
                f"{self.RESUBSCRIBE_S:g} s")
            with contextlib.suppress(RuntimeError):  # the loop closed: stopping
                loop.call_soon_threadsafe(self._resubscribe_later, self._epoch)
            return
        if self._sub_refused:
            self._sub_refused = False
            log.warning("MQTT broker %s granted the gateway's subscription to %s: telemetry "
                        "is received again", self._where(), topic)
        self._subscribed = True
        self._sub_cuts = 0
        self._connected.set()

    #: Seconds between two SUBSCRIBEs of a running gateway whose subscription the broker
    #: refused (its ACL changed): before, it was asked once per connection, and the gateway
    #: stayed connected receiving nothing until a restart, whatever the ACL became.
    RESUBSCRIBE_S = 60.0

    def _resubscribe_later(self, epoch: int) -> None:
        """On the loop: subscribe again in ``RESUBSCRIBE_S`` on connection ``epoch``."""
        assert self._loop is not None

        def again() -> None:
            self._retries.pop(handle, None)
            if self._closing or epoch != self._epoch or not self.client.is_connected():
                return  # a new connection subscribes at its connect
            with self._sub_lock:  # its SUBACK is matched on paho's thread
                _, self._sub_mid = self.client.subscribe(self._topic("+", "telemetry"), qos=1)

        handle = self._loop.call_later(self.RESUBSCRIBE_S, again)
        self._retries[handle] = None

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` around the connect: the exception
        # being handled is the reason (DNS, a refused port, a certificate that fails)
        why = _connect_error(sys.exc_info()[1], self.cfg)
        # no connection could be made: the broker is down or restarting, so the closes
        # before this were none of a session takeover, where the broker is up and
        # accepts every reconnect (a broker restarting in a loop was warned of as one)
        self._cut_short.clear()
        self._refused = f"no connection could be made to it: {why}"
        if self._lost_at is not None:  # at start() the reason goes into its error
            self._log_connect_failure(f"MQTT broker {self._where()}: the gateway cannot "
                                      f"reconnect: {why}")

    def _where(self) -> str:
        return f"{self.cfg['host']}:{self.cfg['port']}"

    def _log_connect_failure(self, what: str) -> None:
        """Log a failed (re)connection at once the first time for its reason, then at most
        every ``RECONNECT_LOG_EVERY_S`` for that reason (paho tries again every 2 s, for
        ever), across reconnects: a broker that comes back and goes again (restarting in a
        loop) had the same line logged at every outage, the limit starting afresh at each
        reconnect (8 lines in 12 s)."""
        now = time.monotonic()
        every = self.RECONNECT_LOG_EVERY_S
        if now - self._lost_whys.get(what, -1e9) < every:
            return
        if len(self._lost_whys) >= 100:  # reasons with a changing part: bounded
            self._lost_whys.clear()
        self._lost_whys[what] = now
        log.warning("%s; more such within %g s are not logged", what, every)

    #: Seconds :meth:`stop` waits for the DISCONNECT (and the PUBACKs queued before it)
    #: to be written before it stops the network thread.
    STOP_FLUSH_S = 5.0

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        # paho calls this before it reconnects (and clears the PUBACKs not yet sent)
        with self._ack_lock:
            self._epoch += 1
        if self._stopping:
            self._gone.set()
        since, self._connected_at = self._connected_at, None
        if self._stopping:
            return
        if since is not None and self._cut_on_publish():  # logged there: not a takeover
            return
        # closed before the SUBACK, with nothing of the gateway's unconfirmed: a refused
        # subscription once it is so ACL_CUT_COUNT times in a row (a takeover's close lands
        # there now and then, a refusal every time); not counted as a takeover meanwhile
        before_suback = (since is not None and not self._subscribed
                         and self._cut_on_info is None)
        if before_suback:
            self._sub_cuts += 1
            if self._sub_cuts >= self.ACL_CUT_COUNT:
                self._cut_on_subscribe(rc)
                return
        if since is None:  # closed before the CONNACK: a TLS port spoken to in clear, say
            self._cut_short.clear()  # no takeover: see _on_connect_fail
            if not (self._refused or "").startswith("it refused"):  # no CONNACK came
                self._refused = ("it closed the connection without answering the MQTT "
                                 f"CONNECT ({rc})" + (_CLIENT_CERT_HINT if self.cfg["tls"] else
                                                      "; if the port is a TLS listener, "
                                                      "use mqtts://"))
                if self._lost_at is not None:
                    self._log_connect_failure(f"MQTT broker {self._where()}: the gateway "
                                              f"cannot reconnect: {self._refused}")
            return
        now = time.monotonic()
        if self._lost_at is None:
            self._lost_at = now
            self._lost_logged = self._log_failure(
                f"MQTT broker {self._where()}: the gateway's connection was lost after "
                f"{now - since:.1f} s ({rc}); reconnecting every 2 s at most, nothing is "
                "received meanwhile (devices keep and resend what is not acked)",
                key="lost", every=self.RECONNECT_LOG_EVERY_S)
        if getattr(rc, "is_failure", False) and not before_suback:
            self._note_cut(rc, now - since)

    def _cut_on_subscribe(self, rc: Any) -> None:
        """The broker closed the connection before it granted the gateway's SUBSCRIBE, with
        none of the gateway's publishes unconfirmed: what brokers that close the connection
        on a subscription their ACL refuses (AWS IoT, HiveMQ, EMQX with ``deny_action =
        disconnect``) do. Named as that (in :meth:`start`'s error, or logged at most every
        ``RECONNECT_LOG_EVERY_S`` while running) rather than as a session takeover or a lost
        connection."""
        topic = self._topic("+", "telemetry")
        self._refused = (f"it closed the connection on the gateway's subscription to {topic!r} "
                         f"before granting it ({rc}): the broker most likely refuses the "
                         f"gateway's user to read {topic!r} (its ACL); let it (Mosquitto: "
                         f"'topic read {topic}'; see the README)")
        if not self._connected.is_set():  # start() names it in its error
            return
        self._log_connect_failure(f"MQTT broker {self._where()}: nothing is received for any "
                                  f"device: {self._refused}")

    #: A connection the broker closes within this many seconds of accepting it counts
    #: towards :meth:`_note_cut`; this many such in ``TAKEOVER_WINDOW_S`` are warned of.
    TAKEOVER_CONNECTION_S = 10.0
    TAKEOVER_COUNT = 3
    TAKEOVER_WINDOW_S = 60.0
    #: At most one such warning this often.
    TAKEOVER_WARN_EVERY_S = 600.0

    def _note_cut(self, rc: Any, lasted: float) -> None:
        """Warn when the broker takes the session over: another client connected with
        this gateway's client id. MQTT 5 names it (reason 0x8E, "Session taken over");
        MQTT 3.1.1, which the gateway speaks, does not: the broker only closes the older
        connection (paho: "Unspecified error"), and as both clients reconnect at once
        they take it from each other, so connections closed by the broker soon after it
        accepted them, ``TAKEOVER_COUNT`` times in ``TAKEOVER_WINDOW_S``, are taken as
        that."""
        now = time.monotonic()
        named = getattr(rc, "value", None) == 0x8E
        if not named:
            if lasted > self.TAKEOVER_CONNECTION_S:
                return
            self._cut_short.append(now)
            while self._cut_short and now - self._cut_short[0] > self.TAKEOVER_WINDOW_S:
                self._cut_short.popleft()
            if len(self._cut_short) < self.TAKEOVER_COUNT:
                return
        if now - self._takeover_warned < self.TAKEOVER_WARN_EVERY_S:
            return
        self._takeover_warned = now
        what = ("took the session over (MQTT reason 'Session taken over')" if named else
                f"closed the gateway's connection {len(self._cut_short)} times in "
                f"{self.TAKEOVER_WINDOW_S:g} s, each within {self.TAKEOVER_CONNECTION_S:g} s "
                "of accepting it")
        kept = (str(self._id_file) if self._id_file is not None and
                not self.cfg["client_id"] else "client_id= in the --mqtt URL")
        log.warning(
            "MQTT broker %s:%s %s: another client is most likely connected with this "
            "gateway's client id %r, and the broker hands the session to whichever connected "
            "last, so the two take it from each other and telemetry meant for one reaches "
            "the other (dead-lettered there as unknown_device, never stored). Check that no "
            "other gateway uses that id (a copy of this data dir keeps it in its %s file; the "
            "same client_id= given to two gateways) and give each its own (it comes from %s); "
            "else see the broker's log for why it closes the connection.",
            self.cfg["host"], self.cfg["port"], what, self.client_id, CLIENT_ID_FILE, kept)

    def _puback(self, message: Message) -> None:
        """PUBACK ``message`` to the broker if the connection it came on is still the
        current one (see the module docstring)."""
        mid, qos, epoch, _ = message.token
        if not qos:
            return
        with self._ack_lock:
            if epoch == self._epoch:
                self.client.ack(mid, qos)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """Queue a telemetry message for a commit, or refuse it (acknowledged, so the broker
        does not send it again). Nothing raised here reaches paho: an exception out of this
        callback ended paho's network thread (the gateway up, nothing received any more),
        and the message, never acknowledged, came back at every start. A message that
        cannot be handled is acknowledged, counted (``edgewise_messages_refused_total{
        reason="internal"}``) and logged; its device, its ack not having moved, resends
        it."""
        if self._closing:  # not acknowledged: the broker sends it again at the next start
            try:
                topic_name = msg.topic
            except UnicodeDecodeError:  # nothing raised here may reach paho
                topic_name = repr(msg._topic)
            self._drop_stopping(msg.qos, topic_name)
            return
        try:
            received_ns = time.time_ns()
            device = self._refused_here(client, msg)
            if device is None:
                return
            if not self._hold(device, len(msg.payload), msg.qos):
                self._drop_overloaded(msg, device)
                return
        except Exception as exc:
            self._not_handled(client, msg, exc)
            return
        try:
            # token: the mid, its QoS, the connection it came on, and the tries so far
            m = Message(device, bytes(msg.payload), received_ns,
                        token=(msg.mid, msg.qos, self._epoch, 0))
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._queue, m)
        except Exception as exc:  # not acknowledged: the broker sends it again
            self._let_go(device, len(msg.payload))
            self._log_failure("an MQTT message could not be queued for its commit (not "
                              "acknowledged: the broker sends it again at the next connect)",
                              exc)

    def _queue(self, message: Message) -> None:
        """Hand ``message`` to the batcher (on the loop). One that comes after the stop
        began (it passed :meth:`_on_message` just before) is refused by the batcher: it is
        no longer held, and is dropped as :meth:`_drop_stopping` says."""
        if not self.batcher.put(message):
            self._give_up_stopping(message)

    def _give_up_stopping(self, message: Message) -> None:
        """``message``, received but not to be committed now the gateway stops: no longer
        held, and dropped as :meth:`_drop_stopping` says (counted where QoS 0)."""
        self._let_go(message.device_id, len(message.payload))
        self._drop_stopping(message.token[1], self._topic(message.device_id, "telemetry"))

    def _drop_stopping(self, qos: int, topic_name: str) -> None:
        """A message that came while the gateway stops is dropped, not acknowledged: the
        broker sends a QoS 1 or 2 one again at the next start; a QoS 0 one is lost here
        (its device, its ack not having moved, resends it), so it is counted
        (``edgewise_messages_refused_total{reason="stopping"}``) and logged at most every
        10 s."""
        if qos:
            return
        self.count("edgewise_messages_refused_total", reason="stopping")
        self._log_failure(f"MQTT QoS 0 message on {_shown_topic(topic_name)} dropped: the "
                          "gateway is stopping; its device resends it, its ack not having "
                          "moved (edgewise_messages_refused_total{reason=\"stopping\"})",
                          key="stopping")

    def _drop_overloaded(self, msg: mqtt.MQTTMessage, device: str) -> None:
        """Drop a QoS 0 message that came while its device (or all) held their bound of
        uncommitted bytes (see ``max_queued_bytes``): counted, logged at most every 10 s."""
        self.count("edgewise_messages_refused_total", reason="overloaded")
        self._log_failure(
            f"MQTT QoS 0 message of {device!r} ({len(msg.payload)} bytes) dropped: the "
            f"gateway holds {self.held_bytes(device)} bytes of that device's messages "
            f"({self.held_bytes()} in all) not yet committed, its bound being "
            f"{self.max_device_bytes} per device and {self.max_queued_bytes} in all (the "
            "store is slower than what is sent); its ack does not move and the device "
            "resends it (edgewise_messages_refused_total{reason=\"overloaded\"}). Publish "
            "telemetry at QoS 1, which the broker holds back instead", key="overloaded")

    def _refused_here(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> str | None:
        """Refuse ``msg`` (acknowledged last, after all else) if it is to be: a topic whose
        device level no device id can be, retained telemetry, an unregistered device, a
        payload over what the pipeline would read; ``None`` then, else its device id, to
        have it committed."""
        parts = msg.topic.split("/")
        device = parts[-2] if len(parts) >= 3 else ""
        if not DEVICE_ID_RE.fullmatch(device):
            # no device can have this id, so no dead letter: none could read it, and its
            # topic may be one the broker refuses (65,535 bytes long, say)
            self.count("edgewise_messages_refused_total", reason="bad_device")
            self._log_failure(f"MQTT message on {_shown_topic(msg.topic)} refused: its device "
                              "level is no device id (1-64 letters, digits, '_', '.', '-'); "
                              "acknowledged and dropped "
                              "(edgewise_messages_refused_total{reason=\"bad_device\"})")
            client.ack(msg.mid, msg.qos)
            return None
        if msg.retain and self.drop_retained:
            self._drop_retained(client, msg, device)
            return None
        if self.known_device is not None and not self.known_device(device):
            self.count("edgewise_messages_deadlettered_total", reason="unknown_device")
            self._send(self._topic(device, "deadletter"), json.dumps({
                "reason": "unknown_device", "field": "device", "value": device, "index": None,
                "detail": f"Device {device!r} is not registered; run 'edgewise device add'.",
            }))
            client.ack(msg.mid, msg.qos)
            return None
        limit = self.max_payload_bytes
        if limit is not None and len(msg.payload) > SEQ_SCAN_FACTOR * limit:
            # refused whole by the pipeline too (its seqs are not read past this size):
            # refused here, so that it is not held in the commit queue until then
            problem = PayloadError(device_id=device, field="payload",
                                   value=f"{len(msg.payload)} bytes",
                                   allowed=f"at most {limit} bytes",
                                   reason="too_large").to_problem()
            self.count("edgewise_readings_rejected_total", reason="too_large")
            self.count("edgewise_messages_deadlettered_total", reason="too_large")
            self._send(self._topic(device, "deadletter"), json.dumps(problem))
            client.ack(msg.mid, msg.qos)
            return None
        return device

    def _not_handled(self, client: mqtt.Client, msg: mqtt.MQTTMessage,
                     exc: BaseException) -> None:
        """``msg`` could not be handled (``exc``): count and log it, tell its device (a
        dead letter ``internal``, where its topic names a device id) and acknowledge it,
        so that it is not sent again and again, each time failing the same way."""
        self.count("edgewise_messages_refused_total", reason="internal")
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = repr(msg._topic)
        self._log_failure(f"an MQTT message on {_shown_topic(topic)} could not be handled; "
                          "acknowledged and dropped (edgewise_messages_refused_total{reason="
                          "\"internal\"}): its device resends it, its ack not having moved",
                          exc)
        try:
            parts = topic.split("/")
            device = parts[-2] if len(parts) >= 3 else ""
            if DEVICE_ID_RE.fullmatch(device):
                self._send(self._topic(device, "deadletter"), json.dumps({
                    "reason": "internal", "field": "payload", "value": None, "index": None,
                    "detail": f"The gateway could not handle this message ({type(exc).__name__}"
                              f": {str(exc)[:200]}); nothing of it was stored and its ack did "
                              "not move. Send it again later.",
                }))
        except Exception as again:
            self._log_failure("its dead letter could not be sent", again)
        try:
            client.ack(msg.mid, msg.qos)
        except Exception as again:
            self._log_failure("it could not be acknowledged", again)

    #: At most one log line about a message that could not be handled this often.
    FAILURE_LOG_EVERY_S = 10.0

    def _log_failure(self, what: str, exc: BaseException | None = None, *,
                     key: str = "message", every: float | None = None) -> bool:
        """Log ``what`` (with ``exc``'s traceback) at most every ``every`` seconds
        (``FAILURE_LOG_EVERY_S`` by default) for ``key``: a flood of such messages must not
        flood the log. Returns whether it was logged."""
        every = self.FAILURE_LOG_EVERY_S if every is None else every
        now = time.monotonic()
        if now - self._logged_at.get(key, -1e9) < every:
            return False
        self._logged_at[key] = now
        if exc is None:
            log.warning("%s; more such within %g s are not logged", what, every)
        else:
            log.error("%s (%s: %s); more such within %g s are not logged", what,
                      type(exc).__name__, exc, every, exc_info=exc)
        return True

    #: At most this many devices are remembered as warned of a retained message; past it
    #: the record starts afresh (a warning may then come again).
    RETAIN_WARNED_MAX = 10_000

    def _drop_retained(self, client: mqtt.Client, msg: mqtt.MQTTMessage, device: str) -> None:
        """Acknowledge and drop a telemetry message the broker sent with the retain flag:
        its retained copy replayed to the gateway's subscription (made again at every
        connect), not a live publish, which the broker forwards with the flag cleared (see
        the module docstring). Counted in ``edgewise_messages_refused_total{reason=
        "retained"}``; logged once per device."""
        self.count("edgewise_messages_refused_total", reason="retained")
        if device not in self._retain_warned:
            self._warn_retained(msg, device)
        client.ack(msg.mid, msg.qos)  # last: see _refused_here

    def _warn_retained(self, msg: mqtt.MQTTMessage, device: str) -> None:
        if len(self._retain_warned) >= self.RETAIN_WARNED_MAX:
            self._retain_warned.clear()
        self._retain_warned.add(device)
        log.warning(
            "MQTT broker %s:%s replayed a retained telemetry message on %r (%d bytes) to the "
            "gateway's subscription: dropped, not stored (it was stored when it was published "
            "live, or its device resends it, its ack not having moved). Devices must publish "
            "telemetry without the retain flag; clear this one on the broker with a "
            "zero-length retained message on that topic (mosquitto_pub -r -n -t %r). Further "
            "ones of this device are dropped without a word (edgewise_messages_refused_total"
            "{reason=\"retained\"}).",
            self.cfg["host"], self.cfg["port"], msg.topic, len(msg.payload), msg.topic)

    async def _after_commit(self, messages: list[Message], outcomes: list[Outcome]) -> None:
        """Send the committed batch's dead letters and acks, then PUBACK its messages to
        the broker, whatever failed before: a committed message left unacknowledged (the
        device registry's lookup raising, say) held one of the broker's in-flight slots of
        the gateway's session until a reconnect (Mosquitto: 20, then nothing more was sent
        for any device), and came again at the next connect."""
        for m in messages:  # committed: first, so that nothing below can leave them held
            self._let_go(m.device_id, len(m.payload))
        try:
            best: dict[str, int] = {}
            for o in outcomes:
                for p in o.deadletters:
                    self.count("edgewise_messages_deadlettered_total",
                               reason=str(p.get("reason")))
                    self._send(self._topic(o.device_id, "deadletter"),
                               json.dumps(p, default=str))
                if o.ack_seq is not None:
                    best[o.device_id] = max(best.get(o.device_id, 0), o.ack_seq)
            for device, w in best.items():
                if self.known_device is not None and not self.known_device(device):
                    continue  # deleted meanwhile: a retained ack would outlive it
                self._send(self._topic(device, "ack"), json.dumps({"seq": w}), retain=True)
        finally:
            for m in messages:  # PUBACK to the broker only now that the batch is committed
                self._puback(m)

    async def _commit_failed(self, messages: list[Message], exc: BaseException) -> None:
        """A message whose commit failed alone: try it again after the next of
        ``retry_delays``; after the last, PUBACK it and tell its device on the dead-letter
        topic that it was not stored, to be sent again (see the module docstring)."""
        assert self._loop is not None
        for m in messages:
            mid, qos, epoch, tries = m.token
            if tries < len(self.retry_delays):
                again = Message(m.device_id, m.payload, m.received_ns,
                                token=(mid, qos, epoch, tries + 1))
                self._retry_later(self.retry_delays[tries], again)
                continue
            reason = "store_error" if isinstance(exc, StoreError) else "internal"
            log.error("giving up on a message from %r after %d tries (%s); acknowledged to "
                      "the broker and dead-lettered (%s): its device resends it",
                      m.device_id, tries + 1, exc, reason)
            self.count("edgewise_messages_deadlettered_total", reason=reason)
            waited = sum(self.retry_delays)
            self._send(self._topic(m.device_id, "deadletter"), json.dumps({
                "reason": reason, "field": "payload", "value": None, "index": None,
                "detail": f"The gateway could not commit this message in {tries + 1} tries "
                          f"over {waited:g} s ({type(exc).__name__}: {str(exc)[:200]}); "
                          "nothing of it was stored and its ack did not move. Send it again "
                          "later.",
            }))
            self._let_go(m.device_id, len(m.payload))
            self._puback(m)

    def _retry_later(self, delay: float, message: Message) -> None:
        """Queue ``message`` for a commit again in ``delay`` seconds; once the stop began
        (the commit that stop() waits for failed) it is dropped now as :meth:`_queue` would
        drop it then (a retry scheduled after stop() cancelled the others outlived it)."""
        assert self._loop is not None
        if self._closing:
            self._give_up_stopping(message)
            return

        def put() -> None:
            self._retries.pop(handle, None)
            self._queue(message)

        handle = self._loop.call_later(delay, put)
        self._retries[handle] = message

    def forget_device(self, device_id: str, timeout: float = 10.0) -> bool:
        """Clear the device's retained ack on the broker: publish a zero-length retained
        message (QoS 1) on ``<prefix>/<device>/ack``. Call it when the device is deleted,
        after its credentials are revoked; a device registered again under the same id then
        starts from no ack instead of the old watermark.

        Runs the publish on the gateway's event loop, in order with the acks of commits, and
        waits up to ``timeout`` seconds for the broker's PUBACK. Returns whether the broker
        confirmed; if it is unreachable, the message stays queued (persistent session) and
        is sent when the gateway reconnects.
        """
        topic = self._topic(device_id, "ack")
        loop = self._loop
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        # through _send, as the acks: a broker closing the connection on it is told apart,
        # and it is withheld with them (else sent again at every reconnect and closed on)
        sent: mqtt.MQTTMessageInfo | None
        if loop is None or on_loop or loop.is_closed() or not loop.is_running():
            sent = self._send(topic, b"", retain=True)
            if on_loop and sent is not None:  # the loop must not block: it goes out anyway
                # (paho's is_published raises for one queued while the broker is away)
                return _confirmed(sent)
        else:
            done: concurrent.futures.Future[mqtt.MQTTMessageInfo | None] = (
                concurrent.futures.Future())

            def publish() -> None:
                try:
                    done.set_result(self._send(topic, b"", retain=True))
                except BaseException as exc:  # handed to the waiting thread
                    done.set_exception(exc)

            loop.call_soon_threadsafe(publish)
            try:
                sent = done.result(timeout)
            except TimeoutError:
                log.warning("clearing the retained ack on %r of deleted device %r: the gateway's "
                            "event loop did not run it within %g s", topic, device_id, timeout)
                return False
        if sent is None:
            log.warning("clearing the retained ack on %r of deleted device %r: not sent, the "
                        "broker having closed the connection on the gateway's acks (see the "
                        "error logged then); clear it with a zero-length retained message "
                        "(mosquitto_pub -r -n -t %r) once the broker lets the gateway write "
                        "acks", topic, device_id, topic)
            return False
        info = sent
        why = _unconfirmed(info, timeout)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            why = f"{why} (queued: it goes out when the gateway reconnects)"
        if why is not None:
            log.warning("clearing the retained ack on %r of deleted device %r: %s", topic,
                        device_id, why)
        return why is None


def _shown_topic(topic: str) -> str:
    """``topic`` quoted for a log line, cut to 200 characters (one may be 65,535 long).

    >>> _shown_topic("edgewise/" + "x" * 300 + "/telemetry")[-40:]
    "xx'... (319 characters in all; cut here)"
    """
    if len(topic) <= 200:
        return repr(topic)
    return f"{topic[:200]!r}... ({len(topic)} characters in all; cut here)"


#: Said of a TLS connection the broker closed before its CONNACK: what a broker requiring a
#: client certificate does once TLS 1.3's handshake is over (the gateway presents none), and
#: the log only said it closed the connection without answering.
_CLIENT_CERT_HINT = ("; if the broker requires a client certificate (Mosquitto: "
                     "require_certificate true), the gateway has none to present: let it in "
                     "by user name and password on that listener, or on another one")


def _connect_error(exc: BaseException | None, cfg: dict[str, Any]) -> str:
    """Why a connection to the broker of ``cfg`` (:func:`parse_mqtt_url`) could not be
    made, from the exception paho's connect raised (``None``: unknown), with what to check.

    >>> cfg = {"host": "broker.local", "port": 8883, "tls": True, "ca": None}
    >>> _connect_error(ConnectionRefusedError(111, "Connection refused"), cfg)
    'Connection refused (is a broker listening on broker.local:8883?)'
    >>> import socket
    >>> _connect_error(socket.gaierror(-2, "Name or service not known"), cfg)
    "host name 'broker.local' cannot be resolved (Name or service not known)"
    """
    import socket

    host, port = cfg["host"], cfg["port"]
    ca = f"ca= {cfg['ca']!r}" if cfg.get("ca") else "the system's CA certificates (no ca=)"
    if exc is None:
        return "no reason given"
    plain_port = (f" (is {host}:{port} a TLS listener? mqtts:// needs one; use mqtt:// for "
                  "a plain port)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = (exc.verify_message or str(exc)).rstrip(".")
        if "hostname" in text.lower() or "ip address mismatch" in text.lower():
            return (f"TLS: the broker's certificate does not name {host!r} ({text}): connect "
                    "by a name the certificate holds")
        return (f"TLS: the broker's certificate does not verify against {ca} ({text}): give "
                "ca= the PEM file of the CA that signed it")
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}{plain_port}"
    if isinstance(exc, socket.gaierror):
        return f"host name {host!r} cannot be resolved ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return f"{exc.strerror or exc} (is a broker listening on {host}:{port}?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer from {host}:{port} (timed out)"
    why = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
    if cfg["tls"] and isinstance(exc, ConnectionResetError):  # a plain port, in OpenSSL 3
        why += plain_port
    return why


def _log_callback_errors(client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
    """paho's log: only what ``suppress_exceptions`` swallowed (an exception out of one of
    the client's callbacks) is logged, as an error."""
    if level == mqtt.MQTT_LOG_ERR and buf.startswith("Caught exception"):
        log.error("MQTT client: %s (the client goes on)", buf)


def _confirmed(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether the broker confirmed the QoS 1 publish of ``info`` (PUBACK). paho's
    ``is_published`` raises for one made while the connection was down (``rc`` no
    connection), which paho sends all the same once it reconnects: read its flag then."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return bool(getattr(info, "_published", False))


def _unconfirmed(info: mqtt.MQTTMessageInfo, timeout: float) -> str | None:
    """Wait for the broker's PUBACK of ``info``; ``None`` once it came, else why not."""
    if info.rc == mqtt.MQTT_ERR_NO_CONN:
        return "the broker is not connected"
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError) as exc:
        return str(exc)
    return None if info.is_published() else f"no PUBACK from the broker within {timeout:g} s"


def clear_retained_ack(url: str, device_id: str, *, timeout: float = 5.0) -> str:
    """Clear ``device_id``'s retained ack on the external broker at ``url`` from a process
    other than the gateway (``edgewise device delete``); return the topic cleared.

    Connects with its own client id and a clean session (never the gateway's: that would
    take over the gateway's persistent session), publishes a zero-length retained message
    on ``<prefix>/<device>/ack`` at QoS 1 and waits for the PUBACK. Raises
    ``ConnectionError`` naming the broker and the topic if TLS cannot be set up (a bad
    ``ca=``), or the broker does not answer or confirm within ``timeout`` seconds.
    """
    cfg = parse_mqtt_url(url, load_ca=False)  # a bad ca= is the ConnectionError below
    topic = f"{cfg['prefix']}/{device_id}/ack"
    where = f"MQTT broker {cfg['host']}:{cfg['port']}"
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=f"edgewise-admin-{uuid.uuid4().hex[:12]}", clean_session=True)
    if cfg["username"]:
        c.username_pw_set(cfg["username"], cfg["password"])
    if cfg["tls"]:
        try:
            c.tls_set(ca_certs=cfg["ca"], cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConnectionError(
                f"{where}: TLS cannot be set up ({getattr(exc, 'strerror', None) or exc}: "
                f"ca={cfg['ca']!r} must be a readable PEM file of CA certificates); the "
                f"retained ack on {topic!r} was not cleared.") from None
    answered = threading.Event()  # the broker's CONNACK: accepted, or refused (why)
    refused: list[str] = []

    def on_connect(cl: mqtt.Client, u: Any, f: Any, rc: Any, p: Any = None) -> None:
        if rc.is_failure:
            refused.append(f"it refused the connection: {rc}")
        answered.set()

    c.on_connect = on_connect
    try:
        c.connect(cfg["host"], cfg["port"], keepalive=30)
    except OSError as exc:
        raise ConnectionError(f"{where} could not be connected to ({_connect_error(exc, cfg)}); "
                              f"the retained ack on {topic!r} was not cleared.") from None
    c.loop_start()
    try:
        if not answered.wait(timeout) or refused:
            what = refused[0] if refused else f"did not accept the connection within {timeout:g} s"
            raise ConnectionError(f"{where}: {what}; the retained ack on {topic!r} was not "
                                  "cleared.")
        why = _unconfirmed(c.publish(topic, b"", qos=1, retain=True), timeout)
        if why is not None:
            raise ConnectionError(f"{where}: the retained ack on {topic!r} was not cleared "
                                  f"({why}).")
    finally:
        c.disconnect()
        c.loop_stop()
    return topic
