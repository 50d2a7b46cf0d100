"""Outgoing alert webhooks: each new alert, and each acknowledgement, label and merge of
one, POSTed, signed, to the operators' tools.

The store is the outbox. Each configured URL has a thread of its own (never the ingest or
detection threads) that sends every *new* alert of the store once (``alert.raised``), and
every event of the store's ``alert_events`` outbox (``alert.acknowledged``,
``alert.labelled``, ``alert.merged``: :meth:`~edgewise.store.base.Store.alert_events`,
written in the transaction of the acknowledgement, label or merge), each as one JSON
object, and records how far
it got in ``<data dir>/webhooks/<id>.json`` only after the receiver answered 2xx:
delivery is at-least-once, and a gateway stopped or crashed resumes from that file,
sending the alerts raised and events written meanwhile and none it sent before. Event
ids are the store's own, so the file names the store (its id, ``Store.store_id``): a
gateway moved to another store (or a backup) sends that store's events from its newest
on. The thread learns of a new alert at once from the gateway's alert manager
(:meth:`AlertWebhooks.notify` only records its id and wakes the thread) and finds any it
was not told of (another gateway's, on a shared store) at start and every ``poll_s`` by
the store's raise numbers (:meth:`~edgewise.store.base.Store.raised_alerts`: given in
commit order, whatever the writers' clocks say), reading the alerts numbered above the
highest it read; the cursor file keeps that number (``alerts_after``), so a restart
resends nothing and misses nothing, also after a clock was stepped. Only alerts the store
has no number for (written by an older Edgewise: before the upgrade, or one running
beside it) are found by creation time
(:meth:`~edgewise.store.base.Store.unnumbered_alerts`, which reads only those): those
created after a floor trailing this gateway's clock by :data:`CREATION_SLACK_NS`. It reads
the events written since the last one it sent every :data:`EVENT_POLL_S` (at most), and
again before it sends an alert raised after its last read (once for that alert).

The order, exactly: events go one after another in id (commit) order; an event goes only
once the alert it names was handled (its ``alert.raised`` first; an ``alert.merged`` also
after the surviving alert's): an event whose alert is still to be sent sends that alert
first. Otherwise new alerts and events go out interleaved, in the order they happened
(an alert's creation time, an event's ``at_ns``): a steady stream of new alerts holds an
acknowledgement back only behind those raised before it, and an event committed before
an alert was raised goes before it. One exception, as pages matter most: an event that
failed (no answer, 5xx, 408, 429) waits for its retry (its own backoff) without holding
any alert back: the pending alerts, whenever raised, go meanwhile, and the events after
it wait for it. An alert that fails is retried (its backoff) ahead of every alert raised
after it and every event written after it was raised. The outbox is pruned by the store's retention
(:meth:`~edgewise.store.base.Store.prune_alert_events`): a receiver down for longer than
``EDGEWISE_RETENTION_DAYS`` misses the events older than that.

Every POST is signed: ``X-Edgewise-Signature: sha256=<hex>`` is the HMAC-SHA256, under
the webhook secret, of ``X-Edgewise-Timestamp`` (Unix seconds), a ``.`` and the body, so
a receiver can tell the gateway sent it and refuse a replay (an old timestamp).

>>> sign(b"my-secret", 1767225600, b'{"event":"alert.raised"}')
'sha256=4fdd1d2569bf090dba6587767f8b22ecce9a13b52bdbf52c2474fe80321bf397'
>>> from edgewise.store.base import Alert
>>> p = alert_payload(Alert("pump-1", 1767225600 * 10**9, 1767225660 * 10**9, 0.97,
...                         drivers={"temp_c": 1.0}, message="Anomalous temp_c (100%).",
...                         id="a1", created_ns=1767225601 * 10**9))
>>> p["event"], p["alert"]["start"], p["alert"]["path"]
('alert.raised', '2026-01-01T00:00:00.000000000Z', '/v1/alerts/a1')
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
import json
import logging
import math
import os
import random
import secrets
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from edgewise._private import write_private
from edgewise.config import Settings, is_loopback
from edgewise.errors import ConfigError
from edgewise.gateway.metrics import Metrics
from edgewise.store.base import (
    EVENT_ACKNOWLEDGED,
    EVENT_LABELLED,
    EVENT_MERGED,
    Alert,
    AlertEvent,
    Store,
)

__all__ = ["EVENT_ACKNOWLEDGED", "EVENT_LABELLED", "EVENT_MERGED", "EVENT_RAISED", "SECRET_FILE",
           "AlertWebhooks", "Webhook", "alert_payload", "event_payload", "sign",
           "webhook_id", "webhook_secret"]

log = logging.getLogger(__name__)

#: The event a new alert is sent as (its acknowledgement, label and merge into another
#: follow as :data:`EVENT_ACKNOWLEDGED`, :data:`EVENT_LABELLED` and :data:`EVENT_MERGED`:
#: see the README).
EVENT_RAISED = "alert.raised"
#: The longest wait between reads of the store's alert events (``poll_s`` when shorter):
#: an acknowledgement reaches the receivers about this soon.
EVENT_POLL_S = 1.0
#: Alert events read from the store at once.
EVENT_PAGE = 100
#: The file under the data dir that holds the made secret, when none is configured.
SECRET_FILE = "alert_webhook_secret"
#: How far back (wall-clock time of creation) the store's list is searched for an alert
#: not yet sent that has no raise number (one an older Edgewise wrote), behind the last read
#: of the list: an alert's creation time is taken before its write waits for the store, so
#: one may be listed after a newer one. Alerts with a raise number are found by it, however
#: far behind their writer's clock is.
CREATION_SLACK_NS = 300 * 10**9
#: Shortest secret taken from EDGEWISE_ALERT_WEBHOOK_SECRET.
MIN_SECRET_CHARS = 16
_COUNTER = "edgewise_alert_webhook_deliveries_total"
#: the environment variables httpx takes a proxy from (in either case)
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")
_PENDING = "edgewise_alert_webhook_pending"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Edgewise-Signature`` of ``body`` sent at ``timestamp`` (Unix seconds):
    ``sha256=`` and the hex HMAC-SHA256 of ``b"<timestamp>." + body`` under ``secret``.

    >>> sign(b"k" * 16, 0, b"{}")[:7]
    'sha256='
    """
    mac = hmac.new(secret, str(int(timestamp)).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _rfc3339(ts_ns: int) -> str | None:
    """RFC 3339 UTC text of nanoseconds, all nine digits kept (``None`` out of range).

    >>> _rfc3339(1706702400_000_000_001)
    '2024-01-31T12:00:00.000000001Z'
    """
    try:
        dt = datetime.fromtimestamp(ts_ns // 10**9, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_ns % 10**9:09d}Z"


def _json_number(value: Any) -> float | None:
    """``value`` as a float, or None where it is no finite number (JSON has no NaN or
    infinity).

    >>> _json_number(0.5), _json_number(float("nan")), _json_number(float("-inf"))
    (0.5, None, None)
    """
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def alert_payload(alert: Alert, event: str = EVENT_RAISED) -> dict[str, Any]:
    """The JSON object a webhook is sent for ``alert``: ``event`` and the alert's id,
    device, kind, status, span (RFC 3339 and ns), score, drivers, message and the
    gateway's path for it.

    >>> alert_payload(Alert("pump-1", 0, 0, 1.0, kind="seq_gap", id="x"))["alert"]["kind"]
    'seq_gap'
    """
    return {
        "event": event,
        "alert": {
            "id": alert.id,
            "device_id": alert.device_id,
            "kind": alert.kind,
            "status": alert.status,
            "start": _rfc3339(alert.start_ns),
            "end": _rfc3339(alert.end_ns),
            "start_ns": alert.start_ns,
            "end_ns": alert.end_ns,
            "created": _rfc3339(alert.created_ns),
            "created_ns": alert.created_ns,
            # null for a number JSON cannot carry (an alert stored before the stores
            # refused NaN and infinity), as the API shows it: a body with NaN is no JSON
            "score": _json_number(alert.score),
            "drivers": {k: _json_number(v) for k, v in alert.drivers.items()},
            "message": alert.message,
            "path": f"/v1/alerts/{quote(alert.id, safe='')}",
        },
    }


def event_payload(event: AlertEvent, alert: Alert, into: Alert | None = None) -> dict[str, Any]:
    """The JSON object a webhook is sent for ``event`` (an acknowledgement, label or merge
    of ``alert``): the event's name and id, when it happened (RFC 3339 and ns), who did it
    and what (``acked_by``; or ``label``, ``labelled_by`` and ``note``; or, merged,
    ``merged_into`` and ``also_merged``), the alert as :func:`alert_payload` gives it (as
    it stands when sent) and, for a merge, the surviving alert ``into`` the same way.

    >>> e = AlertEvent(7, "a1", "pump-1", EVENT_LABELLED, "ops", 1767225600 * 10**9,
    ...                {"label": "false_alarm", "labelled_by": "ops", "note": "cleaned"})
    >>> p = event_payload(e, Alert("pump-1", 0, 0, 1.0, id="a1", status="acknowledged"))
    >>> p["event"], p["event_id"], p["at"], p["labelled_by"], p["note"], p["alert"]["status"]
    ('alert.labelled', 7, '2026-01-01T00:00:00.000000000Z', 'ops', 'cleaned', 'acknowledged')
    >>> m = AlertEvent(8, "a2", "pump-1", EVENT_MERGED, "gateway", 1767225600 * 10**9,
    ...                {"merged_into": "a1", "also_merged": []})
    >>> p = event_payload(m, Alert("pump-1", 5, 9, 1.0, id="a2", merged_into="a1"),
    ...                   Alert("pump-1", 0, 9, 1.0, id="a1"))
    >>> p["event"], p["merged_into"], p["alert"]["id"], p["into"]["id"], p["into"]["end_ns"]
    ('alert.merged', 'a1', 'a2', 'a1', 9)
    """
    out: dict[str, Any] = {"event": event.event, "event_id": event.id,
                           "at": _rfc3339(event.at_ns), "at_ns": event.at_ns}
    out.update((k, v) for k, v in event.detail.items()
               if k not in out and k not in ("alert", "into"))
    out["alert"] = alert_payload(alert, event.event)["alert"]
    if into is not None:
        out["into"] = alert_payload(into, event.event)["alert"]
    return out


def webhook_id(url: str) -> str:
    """A short name of webhook ``url`` for logs, metrics and its cursor file (the URL
    itself may hold a token): the first 8 hex digits of its SHA-256.

    >>> webhook_id("https://ops.example.org/hook")
    '3b59a701'
    """
    return hashlib.sha256(url.encode()).hexdigest()[:8]


def _shown(url: str) -> str:
    """Webhook ``url`` as logs show it: scheme, host and port (its path and query may
    hold a token).

    >>> _shown("https://hooks.example.org/services/T0/B0/XyZ?x=1")
    'https://hooks.example.org/…'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _shown_location(location: str) -> str:
    """A redirect's ``Location`` as logs show it (its host only, as :func:`_shown`).

    >>> _shown_location("https://new.example.org/h?token=x"), _shown_location("/elsewhere")
    ('https://new.example.org/…', 'a path on the same host')
    """
    if urlsplit(location).hostname:
        return _shown(location)
    return "a path on the same host" if location else "nowhere"


def webhook_secret(data_dir: Path, configured: str = "") -> tuple[bytes, Path | None]:
    """The key webhooks are signed with, and the file it was just made in (else ``None``).

    ``configured`` (``EDGEWISE_ALERT_WEBHOOK_SECRET``) when given (at least
    :data:`MIN_SECRET_CHARS` characters); else the one kept in ``data_dir /`` :data:`SECRET_FILE`,
    made there (random, mode 0600) the first time.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> key, made = webhook_secret(d)
    >>> made == d / SECRET_FILE, webhook_secret(d) == (key, None), len(key)
    (True, True, 43)
    """
    if configured:
        if len(configured) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"Setting 'alert_webhook_secret' (EDGEWISE_ALERT_WEBHOOK_SECRET) has "
                f"{len(configured)} characters. Use at least {MIN_SECRET_CHARS} random ones "
                f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'), or "
                f"leave it unset to have one made in {data_dir / SECRET_FILE}.")
        return configured.encode(), None
    path = data_dir / SECRET_FILE
    if path.exists():
        try:
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"The alert webhook secret file {path} cannot be read ({exc}). "
                              "Make it readable, or remove it to have a new one made (give "
                              "the new one to the receivers).") from None
        if len(text) < MIN_SECRET_CHARS:
            raise ConfigError(f"The alert webhook secret file {path} holds {len(text)} "
                              f"characters; it needs at least {MIN_SECRET_CHARS}. Remove it "
                              "to have a new one made (give the new one to the receivers).")
        return text.encode(), None
    made = secrets.token_urlsafe(32)
    write_private(path, made.encode())
    return made.encode(), path


class _HiddenUrls(logging.Filter):
    """On the ``httpx`` logger: each record that names a webhook's URL (httpx logs every
    request at INFO, ``HTTP Request: POST <url> "HTTP/1.1 200 OK"``, its URL whole) names it
    as :func:`_shown` does, with the webhook's id. A gateway whose logging was set to INFO
    wrote the user, password, path and query of every webhook URL at every POST, which its
    own messages never show (a Slack or Teams URL's path is its secret).

    >>> f = _HiddenUrls()
    >>> f.hide("https://u:pw@hooks.example.org/T0/XyZ?k=s", "082822e8")
    >>> r = logging.LogRecord("httpx", logging.INFO, "", 0, "HTTP Request: %s %s", (
    ...     "POST", httpx.URL("https://u:pw@hooks.example.org/T0/XyZ?k=s")), None)
    >>> f.filter(r), r.getMessage()
    (True, 'HTTP Request: POST https://hooks.example.org/… (webhook 082822e8)')
    """

    def __init__(self) -> None:
        super().__init__()
        self._urls: dict[str, str] = {}  # the URL (as given and as httpx writes it): shown

    def hide(self, url: str, wid: str) -> None:
        shown = f"{_shown(url)} (webhook {wid})"
        self._urls[url] = shown
        with contextlib.suppress(httpx.InvalidURL, ValueError):
            self._urls[str(httpx.URL(url))] = shown

    def filter(self, record: logging.LogRecord) -> bool:
        urls = self._urls
        if urls and isinstance(record.args, tuple):
            record.args = tuple(urls.get(str(a), a) if isinstance(a, str | httpx.URL) else a
                                for a in record.args)
        return True


_HIDDEN_URLS = _HiddenUrls()
logging.getLogger("httpx").addFilter(_HIDDEN_URLS)


def _check_sendable(url: str, wid: str) -> None:
    """Raise :class:`ConfigError` when the HTTP client cannot send to ``url`` at all (a
    host that is no IP address nor DNS name: ``999.1.1.1``, ``01.02.03.04``, ``xn--``),
    naming it as the settings do (scheme, host, port and id, never its path):
    such a URL passed the settings' check, and the webhook then failed every alert in
    its thread for ever, counted nowhere.

    >>> _check_sendable("https://relay.example.org/h", "x")
    >>> _check_sendable("https://999.1.1.1/hook/T0k3n", "5930ed85")
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: Setting 'alert_webhooks' (EDGEWISE_ALERT_WEBHOOKS, --alert-webhook) has value https://999.1.1.1/… (webhook 5930ed85; its path is not shown), which cannot be sent to: Invalid IPv4 address: '999.1.1.1'. Use an https://HOST[:PORT]/PATH URL whose host is a DNS name or an IP address (e.g. https://relay.example.org/edgewise).
    """  # noqa: E501
    try:  # as a POST builds it (its Host header decodes an xn-- label too)
        httpx.Request("POST", url)
    except (httpx.InvalidURL, ValueError) as exc:  # idna's errors are ValueErrors
        why = str(exc)
        parts = urlsplit(url)
        hidden = [x for x in (parts.path, parts.query, parts.username, parts.password)
                  if x and len(x) > 1]
        if any(x in why for x in hidden):  # never the path, query or user part
            why = type(exc).__name__
        raise ConfigError(
            f"Setting 'alert_webhooks' (EDGEWISE_ALERT_WEBHOOKS, --alert-webhook) has value "
            f"{_shown(url)} (webhook {wid}; its path is not shown), which cannot be sent "
            f"to: {why}. Use an https://HOST[:PORT]/PATH URL whose host is a DNS name or an "
            f"IP address (e.g. https://relay.example.org/edgewise).") from None


class _Pending:
    """The alerts known new and not yet handled, as ``(created_ns, id)``: a set that also
    gives its oldest (:meth:`first`, the order alerts are sent in) and whether it holds an
    id, each in O(log n), so that a backlog of n alerts is sent in O(n log n), not O(n²).

    >>> p = _Pending()
    >>> p.update([(5, "b"), (3, "c"), (5, "a")])
    >>> p.first(), len(p), p.has_id("c")
    ((3, 'c'), 3, True)
    >>> p.discard((3, "c")); p.first(), p.has_id("c")
    ((5, 'a'), False)
    """

    __slots__ = ("_heap", "_ids", "_items")

    def __init__(self) -> None:
        self._items: set[tuple[int, str]] = set()
        self._heap: list[tuple[int, str]] = []  # a superset of _items (stale ones popped)
        self._ids: dict[str, int] = {}  # how many items have the id

    def add(self, item: tuple[int, str]) -> bool:
        """Add ``item``; whether it was not held."""
        if item in self._items:
            return False
        self._items.add(item)
        self._ids[item[1]] = self._ids.get(item[1], 0) + 1
        heapq.heappush(self._heap, item)
        if len(self._heap) > 2 * len(self._items) + 64:  # stale ones never at the top
            self._heap = list(self._items)
            heapq.heapify(self._heap)
        return True

    def update(self, items: Iterable[tuple[int, str]]) -> None:
        for item in items:
            self.add(item)

    def discard(self, item: tuple[int, str]) -> None:
        if item not in self._items:
            return
        self._items.discard(item)
        left = self._ids[item[1]] - 1
        if left:
            self._ids[item[1]] = left
        else:
            del self._ids[item[1]]
        heap = self._heap
        while heap and heap[0] not in self._items:
            heapq.heappop(heap)

    def first(self) -> tuple[int, str]:
        """The oldest item (by creation, then id); raises ``ValueError`` when empty."""
        if not self._items:
            raise ValueError("no alert is pending")
        return self._heap[0]  # discard keeps a held item at the top

    def has_id(self, alert_id: str) -> bool:
        return alert_id in self._ids

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class Webhook:
    """One receiver: the thread that sends it each new alert of ``store`` once, and each
    alert event (acknowledgement, label, merge) of the store's outbox once, after its
    alert.

    Parameters
    ----------
    url
        Where alerts are POSTed (checked by :attr:`Settings.alert_webhook_urls`).
    store
        The outbox: alerts are read from it by id (:meth:`notify`) and by listing.
    secret
        The HMAC key of ``X-Edgewise-Signature``.
    metrics
        Counts ``edgewise_alert_webhook_deliveries_total{webhook, outcome}``.
    state_dir
        Where the cursor file ``<id>.json`` is kept.
    timeout_s, poll_s, retry_s, max_retry_s
        Per POST; between reads of the store's alert list; the first wait after a failed
        POST, doubled after each further failure up to ``max_retry_s`` (each wait drawn
        between half of it and all of it).
    verify
        TLS verification of ``httpx`` (``True``: the system's CAs; or an SSL context).

    Alerts are sent oldest first (by creation): while the receiver is down, later ones
    wait behind the one being retried. A 2xx delivers an alert; no answer, a timeout, a
    5xx, 408 or 429 is retried (a ``Retry-After`` in seconds is kept to, up to
    ``max_retry_s``); any other answer (a redirect, which is never followed, or another
    4xx) refuses that alert for good: it is logged, counted and passed over. Events go
    the same way, in the order of their ids, interleaved with the new alerts by time:
    the next event goes before the oldest pending alert when it was written
    (``at_ns``) before that alert was created, so new alerts never hold an event back
    for longer than it takes to send those raised before it. An event whose alert (for
    ``alert.merged``: either alert) this webhook has not handled yet (sent, refused or
    skipped) waits for it: that alert is sent first, oldest pending alert first.

    >>> from edgewise.store import open_store
    >>> import tempfile
    >>> store = open_store("duckdb://:memory:")
    >>> w = Webhook("http://127.0.0.1:9/", store, b"k" * 16, Metrics(), Path(tempfile.mkdtemp()))
    >>> w.id, w.pending()
    ('0aaac992', 0)
    >>> w.close(); store.close()
    """

    def __init__(self, url: str, store: Store, secret: bytes, metrics: Metrics,
                 state_dir: Path, *, timeout_s: float = 5.0, poll_s: float = 60.0,
                 retry_s: float = 1.0, max_retry_s: float = 300.0,
                 verify: bool | ssl.SSLContext = True) -> None:
        self.url, self.store, self.secret, self.metrics = url, store, secret, metrics
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self.retry_s, self.max_retry_s = retry_s, max_retry_s
        self.id = webhook_id(url)
        self.shown = f"{self.id} ({_shown(url)})"
        _check_sendable(url, self.id)
        _HIDDEN_URLS.hide(url, self.id)  # httpx's own log line of each POST names it whole
        self._verify = verify
        self._client = self._first_client()  # before any state is read or written
        self.path = state_dir / f"{self.id}.json"
        # the last alert event handled (None: to be read from the store, the newest then),
        # and the id of the store it counts in (None: not known yet)
        self._events_after: int | None = None
        self._events_store: str | None = None
        # whether the event cursor was checked against the store (:meth:`_place_events`):
        # until it is, nothing is sent and the cursor file is not written
        self._placed = False
        self._unsaved, self._saved_at = False, 0.0
        # the alert cursor by raise number (Store.raised_alerts): every alert numbered at or
        # below it was handled or is older than the webhook (None: to be placed from the
        # store, as the event cursor); the highest number read; the numbers known of the
        # alerts pending or done; the done ones whose number is not known yet (told of,
        # or listed, before a read by number covered them: kept until one does)
        self._raised_after: int | None = None
        self._read_upto = 0
        self._seq_of: dict[str, int] = {}
        self._unseen: set[str] = set()
        # a cursor file of an Edgewise before raise numbers: the first read by number
        # (from 0) takes the alerts created at or before its floor as handled
        self._old_file = False
        self._by_floor = False
        # (created_ns, id) of alerts known new and not yet handled
        self._pending = _Pending()
        # (number, id) of the pending alerts whose raise number is known, lowest first
        # (stale ones, of alerts handled since, are dropped when at the top): the cursor
        # by number stays below the lowest (:meth:`_raised_cursor`)
        self._pending_seqs: list[tuple[int, str]] = []
        self._floor_ns, self._done = self._load()
        self._unseen.update(self._done)
        # what :meth:`_prune` knows of ``done``, so that it looks at each entry a bounded
        # number of times, not all of them at every alert: the ids to look at again (added
        # or taken from ``unseen`` since); and for the others, what keeps each: its
        # creation time above the floor (0) or its raise number above the cursor (1), in
        # a heap each (stale entries skipped: ``_kept[id]`` names the one that counts).
        # Those kept only as ``unseen`` are looked at again when a read by number covers
        # them.
        self._recheck: list[str] = list(self._done)
        self._kept: dict[str, tuple[int, int]] = {}
        self._kept_heaps: tuple[list[tuple[int, str]], list[tuple[int, str]]] = ([], [])
        try:
            changed = self._place_events()
        except Exception as exc:  # a webhook is no reason to stop the start
            log.warning("alert webhook %s: could not read the store's id and newest alert "
                        "number and event (%s: %s); reading them again from the webhook's "
                        "thread, which sends nothing before", self.shown,
                        type(exc).__name__, exc)
        else:
            if changed:  # written at once: a new webhook starts now, also after a restart
                self._save(self._floor_ns, self._done)
                self._unsaved = False
        self._hints: list[tuple[int, str]] = []
        self._hint_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._body: tuple[str, bytes] | None = None  # the alert being sent, as JSON
        self._next_sweep = 0.0  # monotonic time of the next read of the store's list
        # wall-clock time (ns) the last whole read of the store's list began (None: none
        # yet): the cursor's floor (for alerts without a raise number) stays
        # CREATION_SLACK_NS behind it (:meth:`_handled`)
        self._swept_ns: int | None = None
        self._events: list[AlertEvent] = []  # read from the store, not handled yet
        self._event_body: tuple[int, bytes] | None = None  # the event being sent, as JSON
        self._event_poll_s = min(poll_s, EVENT_POLL_S)
        self._next_events = 0.0  # monotonic time of the next read of the store's events
        self._events_read_ns = 0  # wall-clock time (ns) the last read of the events began
        # the oldest queued event's failures in a row, and the monotonic time before which
        # it is not tried again (pending alerts go meanwhile)
        self._event_failures, self._event_retry_at = 0, 0.0

    # -- the cursor --------------------------------------------------------------------
    def _load(self) -> tuple[int, dict[str, int]]:
        """``(floor_ns, done)`` from the cursor file: every alert without a raise number
        created at or before ``floor_ns`` was handled (or is older than the webhook), and
        ``done`` maps the ids handled since (and those whose raise number is above the
        cursor's) to their creation time; :attr:`_raised_after` is set to the alert
        cursor by raise number, :attr:`_events_after` to the last alert event handled and
        :attr:`_events_store` to the id of the store both count in (``None`` where the
        file has none: :meth:`_place_events` then places them).
        A new webhook starts now, its file written once the store answers
        (:meth:`_place_events`): the alerts numbered and the events written up to then
        are not sent (an alert the gateway tells it of meanwhile is; so is one without a
        raise number created after the webhook was made); those after are.

        A damaged file (not the JSON written here: hand-edited, ``NaN``, ``Infinity``,
        ``1e400``, cut short) is moved aside to ``<id>.json.damaged`` with a warning, and
        the webhook starts now as a new one: a webhook is no reason to stop ingest, and
        what it then misses (alerts not yet sent when the file was last written) stays
        in the store and the API."""
        if self.path.exists():
            try:
                data = self.path.read_bytes()
            except OSError as exc:  # not damaged: unreadable (permissions): say so, stop
                raise ConfigError(
                    f"The cursor file {self.path} of alert webhook {self.shown} cannot be "
                    f"read ({exc}). Make it readable, or remove it to send alerts from now "
                    f"on (those not yet sent are then not sent).") from None
            try:
                floor, done, events_after, store, raised_after = _parse_cursor(data)
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
                aside = self.path.with_name(self.path.name + ".damaged")
                try:
                    self.path.replace(aside)
                except OSError as move:
                    raise ConfigError(
                        f"The cursor file {self.path} of alert webhook {self.shown} cannot "
                        f"be read ({type(exc).__name__}: {exc}) nor moved aside ({move}). "
                        f"Remove it to send alerts from now on (those not yet sent are "
                        f"then not sent).") from None
                log.warning("alert webhook %s: its cursor file %s cannot be read (%s: %s); "
                            "moved aside to %s and sending the alerts raised from now on "
                            "(those not yet sent when it was last written are not sent: "
                            "see GET /v1/alerts)", self.shown, self.path,
                            type(exc).__name__, exc, aside)
            else:
                self._events_after, self._events_store = events_after, store
                self._raised_after = raised_after
                self._old_file = raised_after is None
                return floor, done
        return time.time_ns(), {}

    def _place_events(self) -> bool:
        """Check the event cursor and the alert cursor (by raise number) against the
        store, once, before anything is sent; whether they changed (the file is then to be
        written). Raises what the store raises (the thread tries again).

        Event ids are the store's own: a cursor kept for another store (the gateway
        moved to PostgreSQL, to a fresh file: another store id) or past this store's
        newest event (a backup restored) would skip this store's events up to it, so it
        starts again at the store's newest event, with a warning; so does a new webhook,
        or a file written before alert events were sent (no ``events_after``): the
        events the store holds then are not sent, those written after are. A file
        written before store ids were kept takes this store's.

        Raise numbers are the store's own too, and go the same way: a new webhook, one
        moved to another store, or one past the store's newest number starts at the
        newest (the alerts raised from then on are sent). A file of an Edgewise before
        raise numbers starts at 0, its floor deciding once which alerts were handled
        (:attr:`_by_floor`)."""
        store_id = str(self.store.store_id())
        newest = int(self.store.last_alert_event_id())
        newest_raised = int(self.store.last_alert_seq())
        moved = self._events_store is not None and self._events_store != store_id
        raised = self._raised_after
        if raised is None:
            raised, self._by_floor = (0, True) if self._old_file else (newest_raised, False)
        elif moved:
            raised = newest_raised
        elif raised > newest_raised:
            log.warning("alert webhook %s: its cursor %s is at alert number %d, past this "
                        "store's newest (%d: a backup restored?); sending the alerts "
                        "raised from that one on", self.shown, self.path, raised,
                        newest_raised)
            raised = newest_raised
        after = self._events_after
        if after is None:
            after = newest
        elif self._events_store is not None and self._events_store != store_id:
            log.warning("alert webhook %s: its cursor %s counts the alert events of another "
                        "store (id %s; this store's is %s: the gateway was moved to another "
                        "store?); sending alerts, acknowledgements and labels from this "
                        "store's newest on (alert number %d, event id %d), those of the "
                        "other store not yet sent are not sent", self.shown, self.path,
                        self._events_store, store_id, newest_raised, newest)
            after = newest
        elif after > newest:
            log.warning("alert webhook %s: its cursor %s is at alert event %d, past this "
                        "store's newest (id %d: a backup restored?); sending "
                        "acknowledgements and labels from that one on", self.shown,
                        self.path, after, newest)
            after = newest
        changed = ((after, store_id, raised)
                   != (self._events_after, self._events_store, self._raised_after))
        self._events_after, self._events_store, self._placed = after, store_id, True
        self._raised_after = self._read_upto = raised
        return changed

    def _save(self, floor_ns: int, done: dict[str, int]) -> None:
        """Write the cursor file (only once the event cursor is placed: a file without
        ``events_after`` reads as one written before alert events were sent)."""
        if not self._placed or self._events_after is None or self._events_store is None:
            raise RuntimeError(f"alert webhook {self.shown}: its event cursor is not placed")
        data: dict[str, Any] = {"webhook": _shown(self.url), "floor_ns": floor_ns,
                                "done": done, "events_after": self._events_after,
                                "store": self._events_store}
        if not self._by_floor:  # else a restart takes the floor's word again, as this one
            data["alerts_after"] = self._raised_cursor()
        write_private(self.path, json.dumps(data, sort_keys=True).encode())

    def _raised_cursor(self) -> int:
        """The alert cursor by raise number to keep: the highest number read, held below
        the pending alerts' (an alert found by number and not yet handled is read again
        after a restart; those handled above it are in ``done``)."""
        heap = self._pending_seqs
        while heap and not (self._pending.has_id(heap[0][1])
                            and self._seq_of.get(heap[0][1]) == heap[0][0]):
            heapq.heappop(heap)
        if len(heap) > 2 * len(self._pending) + 64:  # stale ones below the top
            heap[:] = [(self._seq_of[i], i) for i in {i for _, i in self._pending}
                       if i in self._seq_of]
            heapq.heapify(heap)
        return min(self._read_upto, heap[0][0] - 1) if heap else self._read_upto

    def _add_pending(self, items: Iterable[tuple[int, str]]) -> None:
        """Add ``(created_ns, id)`` items to the pending alerts."""
        for item in items:
            if self._pending.add(item) and item[1] in self._seq_of:
                heapq.heappush(self._pending_seqs, (self._seq_of[item[1]], item[1]))

    def _handled(self, created_ns: int, alert_id: str) -> None:
        """Record that an alert is done with (sent, refused or gone) and persist it."""
        self._pending.discard((created_ns, alert_id))
        self._done[alert_id] = created_ns
        if alert_id not in self._seq_of:  # told of or listed: not read by number yet
            self._unseen.add(alert_id)
        # an alert another process wrote is found by the next read of the list only (every
        # poll_s, which may be far more than the slack): every alert not yet listed was
        # committed after the last read began, so created at most the slack before it
        if self._swept_ns is None:  # no read of the list done yet: none is known listed
            floor = self._floor_ns
        else:
            floor = min(time.time_ns(), self._swept_ns) - CREATION_SLACK_NS
        if self._pending:
            floor = min(floor, self._pending.first()[0] - 1)
        self._floor_ns = max(self._floor_ns, floor)
        self._recheck.append(alert_id)
        self._prune()
        self._unsaved = True
        # written once the backlog is sent, else at most every SAVE_EVERY_S: a storm of
        # alerts does not rewrite the file for each (a crash may send those again)
        if not self._pending or time.monotonic() - self._saved_at >= self.SAVE_EVERY_S:
            self._flush()

    def _prune(self) -> None:
        """Drop from ``done`` the alerts no read can find again, with their raise numbers:
        an alert is kept while the floor or the cursor by number is below it (a read by
        number would find it again), or its number is not known yet (``unseen``).

        The floor only rises, and so does the cursor by number once placed: an entry is
        looked at when added, when a read by number covers it, and when the floor or the
        cursor passes what kept it (:attr:`_kept`), so a handled alert costs O(log n),
        not a pass over every entry; what is kept is what such a pass would keep."""
        floor, after = self._floor_ns, self._raised_cursor()
        by_created, by_seq = self._kept_heaps
        recheck, self._recheck = self._recheck, []
        for k in recheck:
            self._settle(k, floor, after)
        for which, heap, upto in ((0, by_created, floor), (1, by_seq, after)):
            while heap and heap[0][0] <= upto:
                key, k = heapq.heappop(heap)
                if self._kept.get(k) == (which, key):
                    del self._kept[k]
                    self._settle(k, floor, after)
            if len(heap) > 2 * len(self._kept) + 64:  # entries superseded: rebuilt
                heap[:] = [(key, k) for k, (w, key) in self._kept.items() if w == which]
                heapq.heapify(heap)

    def _settle(self, alert_id: str, floor: int, after: int) -> None:
        """Keep ``done``'s entry of ``alert_id`` (noting what keeps it), or drop it."""
        created_ns = self._done.get(alert_id)
        if created_ns is None:
            return
        seq = self._seq_of.get(alert_id, 0)
        if created_ns > floor:
            kept: tuple[int, int] | None = (0, created_ns)
        elif seq > after:
            kept = (1, seq)
        elif alert_id in self._unseen:  # looked at again once a read by number covers it
            kept = None
        else:
            del self._done[alert_id]
            self._kept.pop(alert_id, None)
            if not self._pending.has_id(alert_id):
                self._seq_of.pop(alert_id, None)
            return
        if kept is None:
            self._kept.pop(alert_id, None)
        elif self._kept.get(alert_id) != kept:
            self._kept[alert_id] = kept
            heapq.heappush(self._kept_heaps[kept[0]], (kept[1], alert_id))

    #: While alerts are waiting, the cursor file is written at most this often.
    SAVE_EVERY_S = 1.0

    def _flush(self) -> None:
        """Write the cursor if something was handled since it was last written (and its
        event cursor is placed)."""
        if not self._unsaved or not self._placed:
            return
        try:
            self._save(self._floor_ns, self._done)
            self._unsaved = False
        except OSError as exc:  # sent still: a restart may send them again (at-least-once)
            log.warning("alert webhook %s: could not save its cursor %s: %s",
                        self.shown, self.path, exc)
        self._saved_at = time.monotonic()

    # -- what is new --------------------------------------------------------------------
    def notify(self, alert: Alert) -> None:
        """Note that ``alert`` was just stored (it is sent from this webhook's thread; the
        caller never waits for the receiver)."""
        with self._hint_lock:
            self._hints.append((int(alert.created_ns), str(alert.id)))
        self._wake.set()

    def _take_hints(self) -> None:
        with self._hint_lock:
            hints, self._hints = self._hints, []
        # an alert the gateway just raised is new whatever its creation time says
        self._add_pending(h for h in hints if h[1] and h[1] not in self._done)

    def _sweep(self, page: int = 1000) -> None:
        """Add the alerts not handled to the pending ones: those without a raise number
        created after the floor (:meth:`Store.unnumbered_alerts`: only those are read,
        not every live alert), then every one numbered above the highest number read
        (:meth:`_read_raised`, whatever its creation time)."""
        began = time.time_ns()  # every alert committed before then is in this read
        after: tuple[int, str] | None = None
        while True:
            alerts = self.store.unnumbered_alerts(self._floor_ns, limit=page, after=after)
            self._add_pending((a.created_ns, a.id) for a in alerts if a.id not in self._done)
            if len(alerts) < page:
                break
            after = (alerts[-1].created_ns, alerts[-1].id)
        self._read_raised(page)
        self._swept_ns = began

    def _read_raised(self, page: int = 1000) -> None:
        """Read the live alerts numbered above the highest number read (in number, that
        is commit, order: an alert committed later has a higher number, whatever its
        writer's clock said) and add those not handled to the pending ones. In the first
        read of a cursor file of an Edgewise before raise numbers (:attr:`_by_floor`),
        an alert created at or before its floor was handled (the floor's word)."""
        covered = set(self._unseen)  # committed before this read: read now if numbered
        while True:
            rows = self.store.raised_alerts(self._read_upto, limit=page)
            for seq, a in rows:
                if (self._by_floor and a.created_ns <= self._floor_ns
                        and a.id not in self._done):
                    self._done[a.id] = a.created_ns
                self._seq_of[a.id] = seq
                if a.id in self._done:
                    self._recheck.append(a.id)  # kept now by its number, maybe
                else:
                    self._pending.add((a.created_ns, a.id))
                if self._pending.has_id(a.id):
                    heapq.heappush(self._pending_seqs, (seq, a.id))
                self._read_upto = seq
            if len(rows) < page:
                break
        self._unseen -= covered
        self._recheck.extend(k for k in covered if k in self._done)
        if self._by_floor:  # the floor has spoken: the file keeps the number from now on
            self._by_floor = False
            self._unsaved = True
            self._flush()

    def pending(self) -> int:
        """How many alerts known new are not sent yet."""
        return len(self._pending)

    def _read_events(self, *, now_too: bool = False) -> None:
        """Read the next alert events (above the last one handled) when none is queued and
        it is time to (every ``EVENT_POLL_S`` at most; at once after a full page), or,
        with ``now_too``, whenever none is queued; :attr:`_events_read_ns` is when the
        read began (every event committed before then is read)."""
        now = time.monotonic()
        if self._events or (now < self._next_events and not now_too):
            return
        self._next_events = now + self._event_poll_s
        read_ns = time.time_ns()  # before the read: what was committed by then is in it
        self._events = self.store.alert_events(self._events_after or 0, limit=EVENT_PAGE)
        self._events_read_ns = read_ns
        if len(self._events) == EVENT_PAGE:
            self._next_events = 0.0  # more wait: the next page after these

    def _raised_handled(self, alert: Alert) -> bool:
        """Whether this webhook is done with ``alert``'s ``alert.raised`` (sent, refused,
        skipped, or the alert is older than the webhook), so its events may follow.

        One created at or before the floor may still be new (numbered above the highest
        number read: its writer's clock behind): the alerts numbered since are read first."""
        if self._pending.has_id(alert.id):
            return False
        if alert.id in self._done:
            return True
        if alert.created_ns > self._floor_ns:
            return False
        self._read_raised()
        return not self._pending.has_id(alert.id)

    # -- sending ------------------------------------------------------------------------
    def _count(self, outcome: str) -> None:
        self.metrics.inc(_COUNTER, webhook=self.id, outcome=outcome)

    def _delay(self, failures: int, retry_after: str | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        wait = min(self.retry_s * 2 ** min(failures - 1, 60), self.max_retry_s)
        wait *= random.uniform(0.5, 1.0)
        seconds = (retry_after or "").strip()
        # delay-seconds is ASCII digits (RFC 9110 10.2.3): str.isdigit() also takes "²";
        # anything else (an HTTP-date, a malformed value) is left out, as is no header
        if seconds.isascii() and seconds.isdigit():
            wait = max(wait, min(float(seconds), self.max_retry_s))
        return wait

    def _send(self, alert_id: str) -> tuple[str, str | None]:
        """Send the alert once; ``(outcome, Retry-After)``: ``"delivered"``, ``"refused"``,
        ``"skipped"`` (merged or deleted before it was sent) or ``"failed"`` (retry).

        The store is read again before every try: an alert whose device was deleted, or
        that was merged into another, while the receiver was down is not sent."""
        try:
            alert = self.store.get_alert(alert_id)
        except KeyError:  # the device was deleted, its alerts with it
            self._body = None
            return "skipped", None
        if alert.merged_into is not None:  # the alert that covers it is (or was) sent
            self._body = None
            return "skipped", None
        if self._body is None or self._body[0] != alert_id:  # a retry sends the same bytes
            self._body = (alert_id, json.dumps(alert_payload(alert), allow_nan=False,
                                               separators=(",", ":")).encode())
        return self._deliver(self._body[1], EVENT_RAISED, alert_id, f"alert {alert_id}")

    def _send_event(self, event: AlertEvent, alert: Alert,
                    into: Alert | None = None) -> tuple[str, str | None]:
        """Send an alert event once (as :meth:`_send` an alert, with its rules; ``into``
        is the surviving alert of an ``alert.merged``); ``(outcome, Retry-After)``. Its
        ``X-Edgewise-Delivery`` is ``<alert id>:<event id>``."""
        if self._event_body is None or self._event_body[0] != event.id:  # retry: same bytes
            self._event_body = (event.id, json.dumps(event_payload(event, alert, into),
                                                     allow_nan=False,
                                                     separators=(",", ":")).encode())
        return self._deliver(self._event_body[1], event.event, f"{event.alert_id}:{event.id}",
                             f"event {event.id} ({event.event} of alert {event.alert_id})")

    def _deliver(self, body: bytes, event: str, delivery: str,
                 what: str) -> tuple[str, str | None]:
        """POST ``body`` signed, as ``event`` with delivery id ``delivery`` (``what`` names
        it in logs); ``(outcome, Retry-After)``: ``"delivered"`` (2xx), ``"failed"`` (no
        answer, a timeout, 5xx, 408, 429: retry) or ``"refused"`` (any other answer)."""
        ts = int(time.time())
        headers = {"Content-Type": "application/json", "X-Edgewise-Event": event,
                   "X-Edgewise-Delivery": delivery, "X-Edgewise-Timestamp": str(ts),
                   "X-Edgewise-Signature": sign(self.secret, ts, body)}
        try:
            status, retry_after, location = self._post(body, headers)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("alert webhook %s: %s not delivered: %s: %s; retrying",
                        self.shown, what, type(exc).__name__, exc or "no answer")
            return "failed", None
        if 200 <= status < 300:
            return "delivered", None
        if status >= 500 or status in (408, 429):
            log.warning("alert webhook %s: %s not delivered: HTTP %d; retrying",
                        self.shown, what, status)
            return "failed", retry_after
        if 300 <= status < 400:
            log.warning("alert webhook %s: %s answered with HTTP %d, a redirect to %s, "
                        "which is never followed (configure the URL it names): not sent "
                        "again", self.shown, what, status, _shown_location(location))
        else:
            log.warning("alert webhook %s: %s refused with HTTP %d: not sent again "
                        "(only no answer, 5xx, 408 and 429 are retried)",
                        self.shown, what, status)
        return "refused", None

    def _first_client(self) -> httpx.Client:
        """:meth:`_new_client`, or :class:`ConfigError` naming the proxy variables set
        when the environment's proxy cannot be used (a ``socks5://`` one without
        ``socksio``, a scheme or port httpx does not take): that was a traceback at start."""
        try:
            return self._new_client()
        except (ImportError, ValueError, httpx.InvalidURL) as exc:
            names = sorted(k for k in os.environ if k.lower() in _PROXY_VARS) or [
                "HTTPS_PROXY", "ALL_PROXY"]
            raise ConfigError(
                f"Alert webhook {self.shown} cannot be sent through the proxy the environment "
                f"names ({', '.join(names)}): {str(exc).rstrip('.')}. Fix or unset that "
                f"variable (a receiver in NO_PROXY still needs it to be usable).") from None

    def _new_client(self) -> httpx.Client:
        host = urlsplit(self.url).hostname or ""
        # a proxy from the environment is used for remote receivers only: a loopback one
        # taken through a proxy would cross the network in plain text
        return httpx.Client(
            timeout=httpx.Timeout(self.timeout_s), follow_redirects=False,
            verify=self._verify, trust_env=not is_loopback(host),
            headers={"User-Agent": "edgewise-alert-webhook/1"})

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None, str]:
        """POST ``body``: ``(status, Retry-After, Location)`` of the answer, whole within
        ``timeout_s`` (httpx's timeout bounds each read only: a receiver trickling its
        answer a byte at a time would hold the webhook for ever).

        The request runs on a thread of its own; one not answered by the deadline is
        abandoned and its client closed (which ends that thread at its next read), and
        :class:`TimeoutError` raised; no answer raises :class:`httpx.HTTPError`."""
        client = self._client
        result: list[tuple[int, str | None, str] | BaseException] = []

        def post() -> None:
            try:  # streamed: the receiver's answer body is never read
                with client.stream("POST", self.url, content=body, headers=headers) as r:
                    result.append((r.status_code, r.headers.get("retry-after"),
                                   r.headers.get("location") or ""))
            except BaseException as exc:  # handed to the webhook's thread
                result.append(exc)

        worker = threading.Thread(target=post, daemon=True, name=f"alert-webhook-{self.id}-post")
        worker.start()
        worker.join(self.timeout_s)
        if not result:  # still in flight: abandon it, with its connection
            self._client = self._new_client()
            with contextlib.suppress(Exception):
                client.close()
            raise TimeoutError(f"no whole answer within {self.timeout_s:g} s")
        out = result[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def run_once(self, failures: int = 0) -> int:
        """One step of the thread: read what is new, then send what happened first of the
        oldest pending alert (by creation) and the next alert event (by ``at_ns``, its
        alert first when that is not handled yet); return the alerts' failures in a row
        since (0 after a delivery, refusal or skip).

        An event that failed waits for its retry (its own backoff) without holding the
        pending alerts back: they go meanwhile, whenever raised; the events after it wait
        for it (they go in id order). Before an alert raised after the last read of the
        events is sent, they are read again (once for that step), so that an event
        committed before the alert was raised goes first, whatever ``EVENT_POLL_S``."""
        self._wake.clear()
        if not self._placed:  # the store did not answer at start: nothing before this
            if self._place_events():
                self._unsaved = True
                self._flush()
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.poll_s
            self._sweep()
        self._take_hints()
        # read while alerts wait too: else a stream of new alerts held every event back
        self._read_events()
        if (self._pending and not self._events
                and self._pending.first()[0] > self._events_read_ns):
            # the oldest alert was raised after the last read: an event committed between
            # that read and the alert's creation goes first (one read per step at most:
            # after it, that alert is older than the read)
            self._read_events(now_too=True)
        self.metrics.set(_PENDING, len(self._pending), webhook=self.id)
        event_due = bool(self._events) and time.monotonic() >= self._event_retry_at
        if event_due and (not self._pending
                          or self._events[0].at_ns < self._pending.first()[0]):
            return self._event_step(failures)
        if self._pending:  # also ahead of an event waiting for its retry
            return self._alert_step(failures)
        # nothing to send before the next read, or the queued event's retry
        due = self._event_retry_at if self._events else self._next_events
        self._wake.wait(max(0.0, min(self._next_sweep, due) - time.monotonic()))
        return failures

    def _alert_step(self, failures: int) -> int:
        """Send the oldest pending alert; the failures in a row since."""
        created_ns, alert_id = self._pending.first()
        outcome, retry_after = self._send(alert_id)
        self._count(outcome)
        if outcome == "failed":
            failures += 1
            self._stop.wait(self._delay(failures, retry_after))
            return failures
        self._body = None
        self._handled(created_ns, alert_id)
        self.metrics.set(_PENDING, len(self._pending), webhook=self.id)
        return 0

    def _event_step(self, failures: int) -> int:
        """Send the oldest queued alert event (when this webhook has not handled its
        alert's ``alert.raised`` yet, or for ``alert.merged`` the surviving alert's, the
        oldest pending alert instead: that one goes first); the alerts' failures in a row
        since. An event that fails is not waited for here: its retry is due after its own
        backoff (:attr:`_event_retry_at`), and :meth:`run_once` sends the pending alerts
        meanwhile."""
        event = self._events[0]
        try:
            alert = self.store.get_alert(event.alert_id)
            merged_into = event.detail.get("merged_into")
            into = (self.store.get_alert(str(merged_into))
                    if event.event == EVENT_MERGED and merged_into else None)
        except KeyError:  # its device was deleted, its alerts and events with it
            outcome, retry_after = "skipped", None
        else:
            waiting = [a for a in (alert, into) if a is not None and not self._raised_handled(a)]
            if waiting:  # the receiver hears of the alert first (oldest pending first)
                self._add_pending((int(a.created_ns), a.id) for a in waiting)
                return self._alert_step(failures)
            outcome, retry_after = self._send_event(event, alert, into)
        self._count(outcome)
        if outcome == "failed":  # retried after its backoff; alerts are not held back
            self._event_failures += 1
            self._event_retry_at = (time.monotonic()
                                    + self._delay(self._event_failures, retry_after))
            return failures
        self._events.pop(0)
        self._event_body = None
        self._event_failures, self._event_retry_at = 0, 0.0
        self._events_after = max(self._events_after or 0, event.id)
        self._unsaved = True
        # written once the queue is sent, else at most every SAVE_EVERY_S (as for alerts)
        if not self._events or time.monotonic() - self._saved_at >= self.SAVE_EVERY_S:
            self._flush()
        return 0

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                failures = self.run_once(failures)
            except Exception as exc:  # the store unavailable, a bug: log, wait, go on
                failures += 1
                self._next_sweep = 0.0  # read the list again once it answers
                self._next_events = 0.0
                log.warning("alert webhook %s: %s: %s; trying again", self.shown,
                            type(exc).__name__, exc)
                self._stop.wait(self._delay(failures))

    def start(self) -> None:
        """Start the thread (its first step reads the store's list: alerts missed while
        the gateway was down)."""
        if self._thread is None:
            self._stop.clear()
            self._next_sweep = self._next_events = 0.0
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"alert-webhook-{self.id}")
            self._thread.start()

    def _signal_stop(self) -> None:
        """Ask the thread to stop (it ends after the POST in flight, if any)."""
        self._stop.set()
        self._wake.set()

    def _join(self, deadline: float) -> None:
        """Wait for the thread until ``deadline`` (monotonic), then close the client."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("alert webhook %s: still busy at stop (the store not "
                            "answering?); left behind", self.shown)
                return
        self._flush()
        self._client.close()

    def close(self) -> None:
        """Stop the thread (a POST in flight is waited for: it ends within ``timeout_s``)
        and the client; what is not sent yet is sent after the next start."""
        self._signal_stop()
        self._join(time.monotonic() + self.timeout_s + 2.0)


def _parse_cursor(
        data: bytes) -> tuple[int, dict[str, int], int | None, str | None, int | None]:
    """``(floor_ns, done, events_after, store, alerts_after)`` of a cursor file's bytes
    (``events_after`` is ``None`` in a file written before alert events were sent,
    ``store``, the id of the store it counts in, in one written before store ids were
    kept, ``alerts_after``, the alert cursor by raise number, in one written before
    alerts were numbered); raises ``ValueError`` (and the like) on anything else, ``NaN``,
    ``Infinity`` and numbers out of range included.

    >>> _parse_cursor(b'{"floor_ns": 5, "done": {"a1": 7}, "events_after": 3, "store": "s",'
    ...               b' "alerts_after": 4}')
    (5, {'a1': 7}, 3, 's', 4)
    >>> _parse_cursor(b'{"floor_ns": 5, "done": {}}')
    (5, {}, None, None, None)
    >>> _parse_cursor(b'{"floor_ns": 1e400, "done": {}}')
    Traceback (most recent call last):
    ...
    ValueError: not a finite number: 1e400
    """
    def no_constant(name: str) -> Any:
        raise ValueError(f"not a number: {name}")

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {text}")
        return value

    state = json.loads(data, parse_constant=no_constant, parse_float=finite)
    events_after = state.get("events_after")
    if events_after is not None:
        events_after = int(events_after)
        if events_after < 0:
            raise ValueError(f"events_after must be 0 or more, not {events_after}")
    store = state.get("store")
    if store is not None and not isinstance(store, str):
        raise ValueError(f"store must be a store id (text), not {store!r}")
    alerts_after = state.get("alerts_after")
    if alerts_after is not None:
        alerts_after = int(alerts_after)
        if alerts_after < 0:
            raise ValueError(f"alerts_after must be 0 or more, not {alerts_after}")
    return (int(state["floor_ns"]), {str(k): int(v) for k, v in state["done"].items()},
            events_after, store, alerts_after)


class AlertWebhooks:
    """Every alert webhook of ``settings``, sending the new alerts of ``store`` and their
    acknowledgements and labels (the store's alert events).

    Hand :meth:`notify` each new alert (the gateway does, from its alert manager); call
    :meth:`start` and :meth:`close`. Built only when ``settings.alert_webhook_urls`` names
    one or more: a bad URL, CA file or secret raises :class:`ConfigError` here, before
    anything is sent. :attr:`secret_made` is the secret file made by this start (``None``
    when the secret is configured or was made before).

    >>> import tempfile
    >>> from edgewise.store import open_store
    >>> d = Path(tempfile.mkdtemp())
    >>> store = open_store("duckdb://:memory:")
    >>> hooks = AlertWebhooks(Settings(data_dir=d, alert_webhooks="https://ops.example.org/h"),
    ...                       store, Metrics())
    >>> [w.id for w in hooks.webhooks], hooks.secret_made == d / SECRET_FILE
    (['ff455924'], True)
    >>> hooks.close(); store.close()
    """

    def __init__(self, settings: Settings, store: Store, metrics: Metrics) -> None:
        urls = _unique(settings.alert_webhook_urls)
        verify: bool | ssl.SSLContext = True
        if settings.alert_webhook_ca_file:
            try:
                verify = ssl.create_default_context(cafile=settings.alert_webhook_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"Setting 'alert_webhook_ca_file' (EDGEWISE_ALERT_WEBHOOK_CA_FILE, "
                    f"--alert-webhook-ca-file) has value {settings.alert_webhook_ca_file!r}, "
                    f"which cannot be loaded as PEM CA certificates: "
                    f"{getattr(exc, 'strerror', None) or exc}") from None
        self.secret, self.secret_made = webhook_secret(settings.data_dir,
                                                       settings.alert_webhook_secret)
        state_dir = settings.data_dir / "webhooks"
        self.webhooks: list[Webhook] = []
        try:
            for url in urls:
                self.webhooks.append(Webhook(
                    url, store, self.secret, metrics, state_dir,
                    timeout_s=settings.alert_webhook_timeout_s,
                    poll_s=settings.alert_webhook_poll_s,
                    retry_s=settings.alert_webhook_retry_s,
                    max_retry_s=settings.alert_webhook_max_retry_s, verify=verify))
        except BaseException:
            self.close()
            if self.secret_made is not None:  # made for a start that did not happen: else
                # the next start found it and never said where it was (once, at making)
                with contextlib.suppress(OSError):
                    self.secret_made.unlink()
            raise

    def notify(self, alert: Alert) -> None:
        """Hand a just-stored alert to every webhook (returns at once)."""
        for w in self.webhooks:
            w.notify(alert)

    def start(self) -> None:
        """Start every webhook's thread."""
        for w in self.webhooks:
            w.start()

    def close(self) -> None:
        """Stop every webhook's thread, all at once (each is told first, then all are
        waited for until one deadline); safe to call twice."""
        for w in self.webhooks:
            w._signal_stop()
        deadline = time.monotonic() + max((w.timeout_s for w in self.webhooks),
                                          default=0.0) + 2.0
        for w in self.webhooks:
            with contextlib.suppress(Exception):
                w._join(deadline)


def _unique(urls: Iterable[str]) -> list[str]:
    """``urls`` without repeats, in order (one URL given twice is one webhook)."""
    out: list[str] = []
    for u in urls:
        if u not in out:
            out.append(u)
    return out
