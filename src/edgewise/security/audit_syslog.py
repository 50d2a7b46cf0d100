"""The audit log forwarded off the box as syslog, and checked against what a collector kept.

The audit log's hash chain (:meth:`Security.verify_audit
<edgewise.security.credentials.Security.verify_audit>`) has no secret: whoever can write
``security.sqlite`` can edit an entry and recompute every hash after it, or delete the
newest entries, and the chain still verifies. :class:`AuditForwarder` sends each entry, as
it is committed, to a syslog collector (rsyslog, syslog-ng, a SIEM) on another machine;
:func:`compare_forwarded` (``edgewise audit verify --against FILE``) then checks the local
log against the lines the collector wrote, which the tamperer cannot reach.

One entry is one RFC 5424 message, its body one line of ASCII JSON holding the entry as
:func:`~edgewise.security.credentials.audit_hash` covers it, and the log's id (several
gateways may share a collector's file)::

    <85>1 2026-01-01T00:00:00.000001Z gw-1 edgewise 4242 device.add - {"log":"…","id":7,…}

PRI 85 is facility authpriv (10) with severity notice (5): the entries are security and
authorisation events, which collectors keep apart (``auth.log``, ``secure``: root only)
and SIEMs collect as such; ``?facility=local0`` (… ``local7``, ``auth``) on the URL picks
another. MSGID is the action; there is no structured data (``-``): the JSON body is what
collectors and SIEMs parse without a schema. Over ``tcp://`` and ``tls://`` each message is
framed by octet counting (RFC 6587 3.4.1, RFC 5425), over ``udp://`` it is one datagram
(RFC 5426). The standard library's ``SysLogHandler`` writes the older BSD format, frames
TCP with a NUL or nothing and has no TLS, so the few lines here do it instead.

Nothing waits for the collector: :meth:`AuditForwarder.notify` (a
:attr:`Security.audit_listeners <edgewise.security.credentials.Security.audit_listeners>`
entry, told of each entry just after its commit) only queues the entry in memory (at most
``queue_max``, 10,000; one that does not fit is counted and later read from the file), and
one thread sends, reconnecting with backoff while the collector is away. The file is read
too, every ``poll_s``, for entries other processes wrote (``edgewise device add`` beside the
gateway) or the queue had no room for. The id of the last entry handed to the socket is kept
in ``<data dir>/audit-syslog.json`` with the collector it went to, so a restart sends what
was committed but not sent, and a new collector gets the whole log. Syslog over TCP has no
acknowledgement: an entry counts as delivered (the cursor moves past it) only once the
connection it went to stayed healthy ``confirm_s`` (30 s) after it, and never the newest 64;
on Linux also only once the collector's kernel acknowledged its bytes (``SIOCOUTQ``: a
collector gone silent, no FIN or RST, leaves them unacknowledged however long the kernel
keeps retrying), and a connection whose data stays unacknowledged ``confirm_s / 2`` breaks
(``TCP_USER_TIMEOUT``; idle ones are probed with keepalives). A connection the collector
closed or reset (it restarted while the gateway was idle) is found before the next send
and at a clean stop, which then confirms nothing of it. After a connection breaks,
everything after the last delivered entry is sent again (a collector may keep an entry
twice; the check takes duplicates that agree). Over UDP a datagram lost on the way is
lost: nothing says so, but a refusal (ICMP) is seen, and the next of the host's addresses
is tried (``localhost`` may be ``::1`` first, a collector on 127.0.0.1 only).

>>> import tempfile, pathlib
>>> from edgewise.security.credentials import Security
>>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
>>> sec.audit("cli", "device.add", "pump-1")
>>> line = format_message(sec.audit_log(1)[0], sec.audit_log_id, hostname="gw-1").decode()
>>> line.split(" ")[:6] == ["<85>1", line.split(" ")[1], "gw-1", "edgewise", "-",
...                         "device.add"]
True
>>> parse_forwarded(line)["target"]
'pump-1'
"""

from __future__ import annotations

import collections
import contextlib
import errno
import gzip
import json
import logging
import os
import re
import socket
import sqlite3
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgewise._private import write_private
from edgewise.config import SyslogTarget, parse_syslog_url
from edgewise.errors import ConfigError, InvalidParameterError
from edgewise.security.credentials import (
    AuditEntry,
    Security,
    _audit_text,
    _load_detail,
    _shown_text,
    audit_hash,
)

try:  # Linux: the bytes a TCP socket was handed that its peer has not acknowledged
    import fcntl
    import termios
    _SIOCOUTQ: int | None = termios.TIOCOUTQ if sys.platform.startswith("linux") else None
except ImportError:  # Windows
    _SIOCOUTQ = None

__all__ = ["CURSOR_FILE", "AuditForwarder", "ForwardedCheck", "check_log_id",
           "compare_forwarded", "format_message", "frame", "parse_forwarded"]

log = logging.getLogger(__name__)

#: the file under the data dir that holds the id of the last entry handed to the collector
CURSOR_FILE = "audit-syslog.json"
#: severity notice (RFC 5424): normal but significant
_NOTICE = 5
#: entries sent again on a new connection after one broke (TCP has no acknowledgement):
#: at least this many, and every entry handed to the broken connection less than
#: ``confirm_s`` seconds before it broke (see :class:`AuditForwarder`)
RESEND = 64
#: the largest UDP payload (IPv4); a message longer than this cannot be sent over udp://
_UDP_MAX = 65_507
#: entries read from the file at once
_PAGE = 500
#: the fields of a forwarded entry's JSON body
_KEYS = ("log", "id", "ts_ns", "actor", "action", "target", "detail", "prev_hash", "hash")
_HEX = frozenset("0123456789abcdef")
#: the APP-NAME (syslog tag) :func:`format_message` sends entries under
APP_NAME = "edgewise"
#: what a collector writes before an entry's body, ending where the body starts: the
#: traditional tag (``edgewise[PID]:``, as rsyslog's and syslog-ng's file formats and
#: journald write it; the MSGID and ``-`` may follow it), or the RFC 5424 header from its
#: version on (``<PRI>1 TIMESTAMP HOSTNAME edgewise PROCID MSGID -``, rsyslog's RFC 5424
#: file format)
_TAGGED = re.compile(
    rf"(?:^|\s)(?:{APP_NAME}(?:\[[^\]\s]*\])?:(?: \S+ -)?"
    rf"|(?:<\d{{1,3}}>)?1 \S+ \S+ {APP_NAME} \S+ \S+ -)\s*$")
#: the end of a program's tag (``sshd[777]:`` then a space, or the header's end)
_TAG_END = re.compile(r":(?:\s|$)")


class _Counts(Protocol):
    """What the forwarder counts with (:class:`edgewise.gateway.metrics.Metrics`)."""

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None: ...

    def set(self, name: str, value: float, **labels: str) -> None: ...


def _printusascii(text: object, limit: int) -> str:
    """``text`` as an RFC 5424 header field: printable ASCII without spaces (others become
    ``_``), at most ``limit`` characters, ``-`` when empty. A value that is no text (a
    column changed in the file to a blob) is taken as its ``str()``."""
    text = text if isinstance(text, str) else str(text)
    out = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return out or "-"


def _timestamp(ts_ns: object) -> str:
    """RFC 5424 TIMESTAMP (RFC 3339, UTC, microseconds) of ``ts_ns``; the NILVALUE ``-``
    when it is no time of years 1..9999 (a column changed in the file: the entry is still
    sent, its body as the file has it, and one that raised here stopped forwarding).

    >>> _timestamp(1_767_225_600_000_001_999), _timestamp("later"), _timestamp(10**30)
    ('2026-01-01T00:00:00.000001Z', '-', '-')
    """
    try:
        secs, ns = divmod(int(ts_ns), 10**9)
        when = time.gmtime(secs)
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"
    if not 1 <= when.tm_year <= 9999:  # RFC 3339's 4-digit year
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", when) + f".{ns // 1000:06d}Z"


def format_message(entry: AuditEntry, log_id: str, *, hostname: str = "-",
                   facility: int = 10, procid: str = "-") -> bytes:
    """``entry`` of audit log ``log_id`` as one RFC 5424 message (ASCII, no newline, no
    framing): PRI ``facility * 8 + 5`` (notice), the entry's time, ``hostname``, APP-NAME
    ``edgewise``, ``procid``, MSGID the action (at most 32 characters), no structured data,
    and a JSON body with the log id and the entry's fields as
    :func:`~edgewise.security.credentials.audit_hash` covers them.

    >>> e = AuditEntry(7, 0, "cli", "token.create", "ab12cd34", {"role": "viewer"},
    ...                "0" * 64, "f" * 64)
    >>> format_message(e, "0123456789abcdef", hostname="gw-1", procid="42")[:70]
    b'<85>1 1970-01-01T00:00:00.000000Z gw-1 edgewise 42 token.create - {"lo'
    """
    body = json.dumps({"log": log_id, "id": entry.id, "ts_ns": entry.ts_ns,
                       "actor": entry.actor, "action": entry.action, "target": entry.target,
                       "detail": entry.detail, "prev_hash": entry.prev_hash,
                       "hash": entry.hash}, separators=(",", ":"), ensure_ascii=True,
                      default=str)
    header = (f"<{facility * 8 + _NOTICE}>1 {_timestamp(entry.ts_ns)} "
              f"{_printusascii(hostname, 255)} {APP_NAME} {_printusascii(procid, 128)} "
              f"{_printusascii(entry.action, 32)} -")
    return f"{header} {body}".encode("ascii")


def frame(message: bytes, scheme: str) -> bytes:
    """``message`` as it goes on the wire: octet counting (``LEN SP MSG``, RFC 6587) over
    ``tcp`` and ``tls``, as it is over ``udp`` (one datagram).

    >>> frame(b"<85>1 -", "tcp"), frame(b"<85>1 -", "udp")
    (b'7 <85>1 -', b'<85>1 -')
    """
    return message if scheme == "udp" else b"%d %s" % (len(message), message)


_DECODER = json.JSONDecoder()


def parse_forwarded(line: str) -> dict[str, Any] | None:
    """The forwarded audit entry in one line a collector wrote (an RFC 5424 line, the
    traditional ``Mon DD HH:MM:SS host edgewise[pid]: {…}`` one, or the message alone),
    as the JSON body's object; ``None`` for a line that holds none (a damaged one, or
    another program's: one whose tag, or RFC 5424 APP-NAME, is not ``edgewise``, as
    :func:`format_message` sends, even when its message holds an entry's JSON: any local
    user writes such a line with ``logger -t sshd``, and anyone reaching a udp://
    collector sends one, which was taken for a forged entry of this log).

    >>> body = ('{"log":"a","id":1,"ts_ns":0,"actor":"cli","action":"x","target":"",'
    ...         '"detail":{},"prev_hash":"","hash":""}')
    >>> parse_forwarded(f"Jan  1 00:00:00 gw edgewise[4]: {body}")["id"]
    1
    >>> parse_forwarded(f"<85>1 1970-01-01T00:00:00Z gw edgewise 4 x - {body}")["id"]
    1
    >>> parse_forwarded(f"Jan  1 00:00:00 gw sshd[777]: {body}") is None
    True
    >>> parse_forwarded(f"Jan  1 00:00:00 gw sshd[777]: edgewise[4]: {body}") is None
    True
    >>> parse_forwarded("sshd[12]: Accepted publickey for root") is None
    True
    >>> parse_forwarded("edgewise[4]: " + '{"a":' * 100_000 + "1" + "}" * 100_000) is None
    True
    """
    start = line.find("{")
    for _ in range(8):  # the body is the first object of a line Edgewise sent
        if start < 0:
            return None
        if _sent_by_edgewise(line[:start]):
            try:
                obj, _end = _DECODER.raw_decode(line, start)
            except (ValueError, RecursionError):  # damaged, or nested past Python's stack
                obj = None
            if isinstance(obj, dict) and all(k in obj for k in _KEYS):
                return obj
        start = line.find("{", start + 1)
    return None


def _sent_by_edgewise(head: str) -> bool:
    """Whether ``head``, what a line holds before a JSON body, says Edgewise sent the
    body: nothing but space (a collector writing the message alone: the tag is not there
    to check, the collector's filter chose the lines), or a header ending in the
    ``edgewise`` tag (:data:`_TAGGED`) with no program's tag (``NAME[PID]: ``) before it, so that
    another program's message holding ``edgewise[1]: {…}`` is still that program's.

    >>> _sent_by_edgewise("Jan  1 00:00:00 gw-1 edgewise[42]: "), _sent_by_edgewise("  ")
    (True, True)
    >>> _sent_by_edgewise("Jan  1 00:00:00 gw-1 sshd[777]: ")
    False
    """
    if not head.strip():
        return True
    tag = _TAGGED.search(head)
    return tag is not None and _TAG_END.search(head, 0, tag.start()) is None


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _valid(obj: dict[str, Any]) -> bool:
    """Whether a parsed body has the types of a forwarded entry."""
    return (isinstance(obj["id"], int) and not isinstance(obj["id"], bool) and obj["id"] > 0
            and isinstance(obj["ts_ns"], int) and not isinstance(obj["ts_ns"], bool)
            and all(isinstance(obj[k], str) for k in ("log", "actor", "action", "target"))
            and _is_hash(obj["prev_hash"]) and _is_hash(obj["hash"]))


class AuditForwarder:
    """Send ``security``'s audit log to the syslog collector at ``url`` (``udp://``,
    ``tcp://`` or ``tls://HOST[:PORT][?facility=NAME]``, :func:`~edgewise.config.parse_syslog_url`),
    from a thread of its own, as the module says; never blocking, never failing an
    audited action.

    ``ca_file``: PEM CA certificates a ``tls://`` collector's certificate is checked with
    (default: the system's); its host name is checked too. ``metrics`` (the gateway's)
    counts ``edgewise_audit_syslog_sent_total``, ``…_dropped_total`` (by reason:
    ``queue_full``, sent later from the file; ``too_large`` for udp://, never sent),
    ``…_errors_total`` and the gauges ``…_pending`` and ``…_sent_id``.
    :class:`ConfigError` for a bad URL or CA file.

    >>> import tempfile, pathlib
    >>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
    >>> collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    >>> collector.bind(("127.0.0.1", 0))
    >>> fwd = AuditForwarder(sec, f"udp://127.0.0.1:{collector.getsockname()[1]}")
    >>> fwd.start(); sec.audit("cli", "example.action")
    >>> fwd.close(); fwd.sent_id
    1
    >>> collector.recv(65_536).startswith(b"<85>1 "); collector.close()
    True
    """

    def __init__(self, security: Security, url: str, *, ca_file: str = "",
                 metrics: _Counts | None = None, queue_max: int = 10_000,
                 poll_s: float = 1.0, retry_s: float = 1.0, max_retry_s: float = 60.0,
                 timeout_s: float = 5.0, hostname: str | None = None,
                 confirm_s: float = 30.0) -> None:
        self.security = security
        self.target: SyslogTarget = parse_syslog_url(url)
        self._ssl: ssl.SSLContext | None = None
        if self.target.scheme == "tls":
            try:
                self._ssl = ssl.create_default_context(cafile=ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"Setting 'audit_syslog_ca_file' (EDGEWISE_AUDIT_SYSLOG_CA_FILE, "
                    f"--audit-syslog-ca-file) has value {ca_file!r}, which cannot be loaded "
                    f"as PEM CA certificates: {getattr(exc, 'strerror', None) or exc}"
                    ) from None
        elif ca_file:
            raise ConfigError(f"Setting 'audit_syslog_ca_file' has value {ca_file!r}, but "
                              f"the collector {self.target.shown} is not tls://.")
        self.metrics = metrics
        self.queue_max = queue_max
        self.poll_s, self.retry_s, self.max_retry_s = poll_s, retry_s, max_retry_s
        self.timeout_s = timeout_s
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.cursor_path = security.data_dir / CURSOR_FILE
        self.log_id = security.audit_log_id
        self._queue: collections.deque[AuditEntry] = collections.deque()
        self._qlock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        #: (monotonic time, id, bytes handed to the connection up to its end) of entries
        #: handed to the current connection, not confirmed
        self._inflight: collections.deque[tuple[float, int, int]] = collections.deque()
        self._wire = 0  # bytes handed to the current connection (TLS: before encryption)
        #: what broke the current connection (an errno; 0: the collector closed it), None
        #: while it stands (:meth:`_healthy`)
        self._broken: int | None = None
        self._addr = 0  # which of the host's addresses udp:// sends to (the next on errors)
        self.confirm_s = confirm_s
        self._db: sqlite3.Connection | None = None
        self._failing = False
        self._checked = False  # whether the cursor was checked against the log
        self._flush_until = 0.0
        #: the id of the last entry handed to the collector's socket
        self.sent_id = self._load_cursor()
        #: the id of the last entry taken as delivered: handed to a connection that then
        #: stayed healthy for ``confirm_s`` (or was closed cleanly); a broken connection
        #: sends again from the next one; the cursor file holds it (udp://: ``sent_id``)
        self.confirmed_id = self.sent_id
        self._saved_id = self.sent_id
        self._high = self.sent_id  # the newest id ever handed (resends are not counted)
        #: entries handed to the socket since this object was made (resends not counted)
        self.sent = 0
        #: entries the memory queue had no room for (read from the file later instead)
        self.dropped = 0

    # -- the cursor ----------------------------------------------------------------------
    def _load_cursor(self) -> int:
        """The last id sent to this collector from this log; 0 (send everything) when the
        file is missing, unreadable, or names another collector or log. Its entry's hash,
        when the file has one, is kept for :meth:`_check_cursor`."""
        self._cursor_hash: str | None = None
        try:
            state = json.loads(self.cursor_path.read_text())
            if (state.get("collector") == self.target.shown and state.get("log") == self.log_id
                    and isinstance(state.get("sent_id"), int)):
                if isinstance(state.get("sent_hash"), str):
                    self._cursor_hash = state["sent_hash"]
                return max(0, int(state["sent_id"]))
        except (OSError, ValueError, AttributeError):
            pass
        return 0

    def _log_db(self) -> sqlite3.Connection:
        """The forwarder's read-only connection to the audit log (opened once)."""
        if self._db is None:
            self._db = sqlite3.connect(self.security.read_uri, uri=True, timeout=10.0,
                                       isolation_level=None)
            # an entry whose text is not UTF-8 (edited in the file) is sent as the file has
            # it: reading it raised, and nothing after it was ever sent
            self._db.text_factory = _audit_text
        return self._db

    def _hash_of(self, entry_id: int) -> str | None:
        row = self._log_db().execute("SELECT hash FROM audit WHERE id = ?",
                                     (entry_id,)).fetchone()
        return None if row is None else row[0]

    def _save_cursor(self) -> None:
        cursor = self.sent_id if self.target.scheme == "udp" else self.confirmed_id
        if cursor == self._saved_id:
            return
        self._saved_id = cursor
        try:
            sent_hash = self._hash_of(cursor) if cursor else None
        except sqlite3.Error:
            sent_hash = None
        try:
            write_private(self.cursor_path, json.dumps({
                "collector": self.target.shown, "log": self.log_id,
                "sent_id": cursor, "sent_hash": sent_hash}).encode())
        except OSError as exc:  # a restart then sends some entries again: harmless
            log.warning("audit syslog: could not write %s: %s", self.cursor_path, exc)

    # -- taking entries ------------------------------------------------------------------
    def notify(self, entry: AuditEntry) -> None:
        """Queue a just-committed entry (returns at once; one that does not fit is counted
        and read from the file later)."""
        with self._qlock:
            full = len(self._queue) >= self.queue_max
            if not full:
                self._queue.append(entry)
        if full:
            self.dropped += 1
            self._count("edgewise_audit_syslog_dropped_total", reason="queue_full")
        self._wake.set()

    def start(self) -> None:
        """Listen to the log and start the sending thread (once)."""
        if self._thread is not None:
            return
        self.security.audit_listeners.append(self.notify)
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
        self._thread.start()

    def close(self, flush_s: float = 2.0) -> None:
        """Stop listening; send what is pending for up to ``flush_s`` seconds (what is
        not sent goes after the next start), then stop the thread; safe to call twice."""
        with contextlib.suppress(ValueError):
            self.security.audit_listeners.remove(self.notify)
        self._flush_until = time.monotonic() + flush_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(flush_s + self.timeout_s + 1.0)

    def _count(self, name: str, value: float = 1.0, **labels: str) -> None:
        if self.metrics is not None:
            self.metrics.inc(name, value, **labels)

    def _gauge(self, name: str, value: float) -> None:
        if self.metrics is not None:
            self.metrics.set(name, value)

    def _read_file(self, after: int) -> list[AuditEntry]:
        """Up to :data:`_PAGE` entries with ids after ``after`` from the file, stopping
        before one without a hash that no entry with a hash follows (written by an older
        Edgewise: sent once the next entry chains it). One that an entry with a hash does
        follow was never chained, and never will be (its hash was removed in the file): it
        is sent as the file has it, or nothing after it would ever be sent."""
        # one statement, one snapshot: a row read without its hash is not taken for a
        # never-chained one because a writer chained it (and wrote after it) meanwhile
        rows = self._log_db().execute(
            "SELECT id, ts_ns, actor, action, target, detail, prev_hash, hash, "
            "CASE WHEN hash IS NULL OR hash = '' THEN EXISTS (SELECT 1 FROM audit AS b "
            "WHERE b.id > a.id AND b.hash IS NOT NULL AND b.hash != '') END "
            "FROM audit AS a WHERE id > ? ORDER BY id LIMIT ?", (after, _PAGE)).fetchall()
        out = []
        for i, t, a, act, tg, d, p, h, followed in rows:
            if not h and not followed:
                break
            out.append(AuditEntry(i, t, a, act, tg, _load_detail(d), p or "", h or ""))
        return out

    def _next_batch(self) -> list[AuditEntry]:
        """The entries after :attr:`sent_id`, in id order: the queue's when it goes on from
        there, else the file's (the queue's copy of an entry preferred: it is the entry as
        committed, whatever the file says since)."""
        with self._qlock:
            while self._queue and self._queue[0].id <= self.sent_id:
                self._queue.popleft()
            queued = list(self._queue)
        self._gauge("edgewise_audit_syslog_pending", len(queued))
        if queued and queued[0].id == self.sent_id + 1:
            run = [queued[0]]
            for e in queued[1:]:
                if e.id != run[-1].id + 1:
                    break
                run.append(e)
            return run
        mine = {e.id: e for e in queued}
        try:
            return [mine.get(e.id, e) for e in self._read_file(self.sent_id)]
        except sqlite3.Error as exc:  # busy or gone: the next poll tries again
            log.warning("audit syslog: could not read the audit log: %s", exc)
            return []

    # -- sending -------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        t = self.target
        if t.scheme == "udp":
            # each error moves on to the next address: create_connection's trying them in
            # turn cannot be had, a refusal only shows once a datagram went
            addrs = socket.getaddrinfo(t.host, t.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, addr = addrs[self._addr % len(addrs)]
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.timeout_s)
                sock.connect(addr)  # a refusal (ICMP) then shows on a later send
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((t.host, t.port), timeout=self.timeout_s)
        self._tune(sock)
        if self._ssl is not None:
            try:
                sock = self._ssl.wrap_socket(sock, server_hostname=t.host)
            except BaseException:
                sock.close()
                raise
        return sock

    def _tune(self, sock: socket.socket) -> None:
        """Make a TCP connection to a collector that went silent (no FIN, no RST: a cut
        network, a powered-off host) fail in ``confirm_s / 2`` of unacknowledged data
        (``TCP_USER_TIMEOUT``) instead of after the kernel's ~15 minutes of retries, and probe
        an idle one (keepalive); options a platform lacks are left out."""
        secs = max(1, int(self.confirm_s / 2))
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_USER_TIMEOUT", secs * 1000), ("TCP_KEEPIDLE", secs),
                            ("TCP_KEEPINTVL", max(1, secs // 3)), ("TCP_KEEPCNT", 3)):
            opt = getattr(socket, name, None)
            if opt is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, opt, value)

    def _healthy(self) -> bool:
        """Whether the current connection still stands: the collector has not closed or
        reset it (it restarted: a send would succeed and the entry be lost), no error is
        pending (an ICMP refusal over udp://, ``TCP_USER_TIMEOUT``). Once found broken it
        stays so until the next connection (:attr:`_broken` says how)."""
        sock = self._sock
        if sock is None or self._broken is not None:
            return False
        data = b""
        try:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if not error and self.target.scheme == "udp":
                return True
            if not error:
                sock.setblocking(False)
                try:  # a collector sends nothing: b"" is its FIN, an error its RST
                    data = (sock.recv(1) if isinstance(sock, ssl.SSLSocket)  # no MSG_PEEK
                            else sock.recv(1, socket.MSG_PEEK))
                finally:
                    sock.settimeout(self.timeout_s)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True  # nothing to read: open
        except OSError as exc:
            error = exc.errno or errno.ECONNRESET
        if data:
            return True
        self._broken = error
        return False

    def _acked(self) -> int | None:
        """How many of the bytes handed to the current TCP connection its collector's kernel
        acknowledged (Linux's ``SIOCOUTQ``; over TLS all when none is left, else none: its
        records are longer than what was handed); ``None`` where that cannot be asked
        (udp://, another platform)."""
        if self._sock is None or _SIOCOUTQ is None or self.target.scheme == "udp":
            return None
        try:
            left = struct.unpack("i", fcntl.ioctl(self._sock.fileno(), _SIOCOUTQ,
                                                  b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            return None
        if self.target.scheme == "tls":
            return self._wire if left == 0 else 0
        return self._wire - left

    def _settle(self) -> None:
        """Wait, at most ``timeout_s``, until the collector's kernel acknowledged everything
        the current connection was handed, or the connection broke (a clean stop)."""
        end = time.monotonic() + self.timeout_s
        while self._healthy():
            acked = self._acked()
            if acked is None or acked >= self._wire or time.monotonic() >= end:
                return
            time.sleep(0.01)

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _confirm(self, every: bool = False) -> None:
        """Take as delivered the entries handed to the current connection at least
        ``confirm_s`` ago (``every``: all of them, the connection closing cleanly), but
        never the newest :data:`RESEND` of them unless ``every``, never one whose bytes
        the collector's kernel has not acknowledged (where that can be asked,
        :meth:`_acked`), and none while the connection is found broken (:meth:`_healthy`:
        the next step sends them again)."""
        inflight = self._inflight
        if not inflight:
            return
        if self.target.scheme != "udp" and not self._healthy():
            return
        acked = self._acked()
        now = time.monotonic()
        while inflight and (every or (len(inflight) > RESEND
                                      and now - inflight[0][0] >= self.confirm_s)) \
                and (acked is None or inflight[0][2] <= acked):
            self.confirmed_id = inflight.popleft()[1]

    def _rewind(self) -> None:
        """The connection broke: what it was handed since :attr:`confirmed_id` may be lost
        (in its kernel buffers or the collector's), so it is sent again from there (over
        udp://, to the host's next address)."""
        self._inflight.clear()
        self._addr += 1
        if self.sent_id > self.confirmed_id:
            log.info("audit syslog: connection to %s broke; entries after %d are sent again",
                     self.target.shown, self.confirmed_id)
            self.sent_id = self.confirmed_id
            self._gauge("edgewise_audit_syslog_sent_id", self.sent_id)

    def _send(self, batch: list[AuditEntry]) -> None:
        """Hand ``batch`` to the collector's socket, advancing :attr:`sent_id`; ``OSError``
        when the collector cannot be reached (the caller then rewinds, :meth:`_rewind`)."""
        if self._sock is None:
            self._sock = self._connect()
            self._wire, self._broken = 0, None
        scheme = self.target.scheme
        try:
            for entry in batch:
                data = frame(format_message(entry, self.log_id, hostname=self.hostname,
                                            facility=self.target.facility,
                                            procid=str(os.getpid())), scheme)
                if scheme == "udp" and len(data) > _UDP_MAX:
                    log.warning("audit syslog: entry %d is %d bytes, more than a UDP datagram "
                                "holds: not sent (use tcp:// or tls://)", entry.id, len(data))
                    self._count("edgewise_audit_syslog_dropped_total", reason="too_large")
                else:
                    self._sock.sendall(data)
                    self._wire += len(data)
                    if entry.id > self._high:
                        self.sent += 1
                        self._count("edgewise_audit_syslog_sent_total")
                self._high = max(self._high, entry.id)
                self.sent_id = entry.id
                self._inflight.append((time.monotonic(), entry.id, self._wire))
        finally:
            self._confirm()
            self._gauge("edgewise_audit_syslog_sent_id", self.sent_id)
            self._save_cursor()

    def _check_cursor(self) -> None:
        """Go back to the log's newest entry when the cursor is past it: the newest entries
        were deleted (and SQLite's sequence rewound, or ids would not be reused), so the
        entries that take their ids are sent too, and the collector's file shows two
        different entries of one id."""
        newest = self._log_db().execute("SELECT MAX(id) FROM audit").fetchone()[0] or 0
        if newest >= self.sent_id > 0 and self._cursor_hash is not None \
                and self._hash_of(self.sent_id) != self._cursor_hash:
            # the entry the cursor names is not the one sent: the log was rewritten at or
            # before it (each hash covers the one before), so all of it is sent again; the
            # entries that agree are duplicates, the others two entries of one id (forged)
            log.warning("audit syslog: entry %d of the audit log is not the entry %d sent to "
                        "%s: the log was rewritten; all of it is sent again",
                        self.sent_id, self.sent_id, self.target.shown)
            self.sent_id = self.confirmed_id = 0
            self._save_cursor()
        elif newest < self.sent_id:
            log.warning("audit syslog: entries up to %d were sent to %s, but the audit log ends "
                        "at entry %d: entries were deleted; the ids taken again are sent too",
                        self.sent_id, self.target.shown, newest)
            self.sent_id = newest
            self.confirmed_id = min(self.confirmed_id, newest)
            self._save_cursor()

    def _run(self) -> None:
        """The sending thread: send, rewind and back off on errors, until stopped. An
        error that is not the network's (the audit file unreadable, a malformed row) is
        logged and counted and retried with backoff too: it never ends forwarding."""
        delay = self.retry_s
        clean = False  # all sent and the thread ending on its own: the connection is healthy
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and time.monotonic() >= self._flush_until:
                    return
                try:
                    if self._step(stopping):
                        clean = True
                        return
                except OSError as exc:  # ssl.SSLError and socket.timeout among them
                    self._count("edgewise_audit_syslog_errors_total")
                    self._disconnect()
                    self._rewind()
                    if not self._failing:
                        log.warning("audit syslog: collector %s unreachable (%s); entries "
                                    "wait and are sent when it answers", self.target.shown,
                                    exc)
                    self._failing = True
                except Exception:
                    self._count("edgewise_audit_syslog_errors_total")
                    log.exception("audit syslog: forwarding to %s failed; trying again in "
                                  "%.1f s", self.target.shown, delay)
                    self._disconnect()
                    self._rewind()
                    if self._db is not None:
                        with contextlib.suppress(sqlite3.Error):
                            self._db.close()
                        self._db = None
                    self._checked = False
                else:
                    if self._failing:
                        log.warning("audit syslog: collector %s reached again; sent up to "
                                    "entry %d", self.target.shown, self.sent_id)
                    self._failing = False
                    delay = self.retry_s
                    continue
                if stopping:
                    return
                self._stop.wait(delay)
                delay = min(self.max_retry_s, delay * 2)
        finally:
            if clean and self._sock is not None:
                # a clean close: what the connection was handed went out, once the
                # collector's kernel acknowledged it, unless the collector closed it
                # (restarted: what was sent since went nowhere; the next start sends it)
                self._settle()
                self._confirm(every=True)
            self._disconnect()
            self._save_cursor()
            if self._db is not None:
                self._db.close()
                self._db = None

    def _step(self, stopping: bool) -> bool:
        """Send the next batch (or wait for one); True when the thread is done."""
        if not self._checked:
            self._check_cursor()
            self._checked = True
        if self._sock is not None and not self._healthy():
            # a send on it would be lost; what it was handed and not confirmed goes on a new
            # connection: at once when the collector closed it (restarted), after the usual
            # backoff, counted and told, on an error (refused, reset, timed out)
            if self._broken:
                raise OSError(self._broken, os.strerror(self._broken))
            self._disconnect()
            self._rewind()
        batch = self._next_batch()
        if not batch:
            self._confirm()
            self._save_cursor()
            if stopping:
                return True
            self._wake.wait(self.poll_s)
            self._wake.clear()
            return False
        self._send(batch)
        return False


# -- checking a collector's copy -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ForwardedCheck:
    """What :func:`compare_forwarded` found.

    ``problem`` is ``None`` when ``ok``; else the local chain's own (``edited``,
    ``deleted``, ``inserted``: :class:`~edgewise.security.credentials.AuditVerification`),
    ``differs`` (a local entry is not what was forwarded), ``missing`` (a forwarded entry
    is not in the local log), ``forged`` (the files hold two different entries of one id,
    or a line that does not match its own hash) or ``unforwarded`` (the local log has
    entries and the files none of its). ``bad_id`` is the first entry where that shows.
    """

    ok: bool
    #: entries in the local log, and its head ``ID:HASH``
    local_entries: int
    head: str
    #: distinct entries of this log found in the files, and the newest of them
    forwarded: int
    forwarded_head_id: int | None
    #: local entries up to the forwarded head that the files lack (UDP loss, a collector
    #: that lost them): the forwarded head still vouches for them, the chain links them
    missing_below: int = 0
    #: local entries after the forwarded head: nothing vouches for them
    newer: int = 0
    #: lines of other audit logs (other gateways) in the files, ignored
    other_lines: int = 0
    bad_id: int | None = None
    problem: str | None = None
    reason: str = ""
    #: the local log's id (``audit_meta``), as its forwarded lines carry it
    log_id: str = ""
    #: other log ids whose lines were checked as this log's: named by the caller
    #: (``--log``), or holding entries of this log (its id was changed since they were sent)
    taken_logs: tuple[str, ...] = ()
    #: the ids of the other logs whose lines were skipped, sorted
    other_logs: tuple[str, ...] = ()


def _lines(paths: Iterable[Path]) -> Iterator[tuple[str, int, str]]:
    """``(path, line number, line)`` of each file in turn (``.gz`` ones unpacked)."""
    for path in paths:
        opener: Any = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                yield str(path), n, line


#: how :func:`compare_forwarded` keeps a forwarded entry: its hash (32 bytes), then the
#: number of the file and of the line that hold it; not its body, read again for the one
#: message that needs it (a body kept for each of 200,000 lines took 465 MiB)
_KEPT = struct.Struct("<32sIQ")


def _kept_hash(kept: bytes) -> str:
    """The hash (hex) of a forwarded entry as :data:`_KEPT` holds it."""
    return kept[:32].hex()


class _Found:
    """A forwarded entry's line found again (``paths``: the files, in the order their
    lines were read): called with what :data:`_KEPT` holds of it, where it is (as
    :meth:`at` says it, for a message) and its body (``None`` when the line no longer
    holds that entry: the file changed since)."""

    def __init__(self, paths: list[Path], log_id: str) -> None:
        self.paths, self.log_id = paths, log_id

    def at(self, path: str, n: int, obj: dict[str, Any]) -> str:
        """Where a line is, and its log id when that is not this log's."""
        return f"{path}:{n}" + ("" if obj["log"] == self.log_id else
                                f" [log {_shown_text(obj['log'])}]")

    def __call__(self, kept: bytes) -> tuple[str, dict[str, Any] | None]:
        digest, file_no, line_no = _KEPT.unpack(kept)
        path = self.paths[file_no]
        for _path, n, line in _lines([path]):
            if n == line_no:
                obj = parse_forwarded(line)
                if obj is not None and obj["hash"] == digest.hex():
                    return self.at(str(path), n, obj), obj
                break
        return f"{path}:{line_no}", None


def _differences(local: AuditEntry, fwd: dict[str, Any]) -> list[str]:
    """The fields of ``local`` that the forwarded copy ``fwd`` has otherwise."""
    return [k for k in ("ts_ns", "actor", "action", "target", "detail", "prev_hash")
            if getattr(local, k) != fwd[k]]


def _own_hash_ok(obj: dict[str, Any]) -> bool:
    """Whether a forwarded body has the types of an entry and matches its own hash."""
    try:
        return _valid(obj) and obj["hash"] == audit_hash(
            obj["prev_hash"], obj["id"], obj["ts_ns"], obj["actor"], obj["action"],
            obj["target"], obj["detail"])
    except (TypeError, ValueError):
        return False


#: what a log id is (:attr:`Security.audit_log_id`): 16 lowercase hex digits
_LOG_ID_DIGITS = 16


def check_log_id(log_id: str) -> str:
    """``log_id`` if it has an audit log id's form (16 lowercase hex digits, as forwarded
    lines carry it), else :class:`~edgewise.errors.InvalidParameterError` naming it.

    >>> check_log_id("9c0e5d1a7b3f2e48")
    '9c0e5d1a7b3f2e48'
    >>> check_log_id("gw-1")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: An audit log id is 16 lowercase hex digits, the "log" of a forwarded line (or 'audit verify --json' shows it as log_id). Got 'gw-1' instead.
    """  # noqa: E501
    if len(log_id) != _LOG_ID_DIGITS or not set(log_id) <= _HEX:
        raise InvalidParameterError(
            f"An audit log id is {_LOG_ID_DIGITS} lowercase hex digits, the \"log\" of a "
            f"forwarded line (or 'audit verify --json' shows it as log_id). Got {log_id!r} "
            "instead.", field="log_ids", value=log_id)
    return log_id


def compare_forwarded(security: Security, paths: Iterable[Path], *,
                      log_ids: Iterable[str] = ()) -> ForwardedCheck:
    """Check ``security``'s audit log against the forwarded entries in ``paths`` (lines a
    collector wrote, :func:`parse_forwarded`; those of other logs are skipped).

    The local chain must verify (:meth:`~edgewise.security.credentials.Security.verify_audit`);
    each forwarded line must match its own hash, and one id must not have two different
    forwarded entries; every forwarded entry must be in the local log with the same hash,
    so the local log's head is not behind the forwarded head; a local log with entries must
    have some in the files. The first entry where one fails is reported. A forwarded entry
    that matches vouches for every local entry up to it (each hash covers the one before),
    also those the files lack; entries after the newest forwarded one are vouched for by
    nothing (``newer``): they were not sent yet, were lost (UDP), or were written by whoever
    held the box while the collector could not be reached.

    This log's lines are those with its id, those with an id of ``log_ids`` (the id it had
    when its entries were forwarded, kept elsewhere: ``--log``), and those of any other
    log id that holds one of its entries (a line matching its own hash whose hash, or
    ``prev_hash``, is a local entry's): each hash covers every entry before it, so such a
    log is this one sent under another id, the id in ``audit_meta`` having been changed
    (``taken_logs`` names them). A log rewritten from its first entry and given a new id
    shares no hash with what was sent before: pin the old id with ``log_ids``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> sec = Security(d)
    >>> sec.audit("cli", "device.add", "pump-1")
    >>> _ = (d / "fwd.log").write_bytes(format_message(sec.audit_log(1)[0], sec.audit_log_id))
    >>> r = compare_forwarded(sec, [d / "fwd.log"])
    >>> r.ok, r.forwarded, r.forwarded_head_id
    (True, 1, 1)
    """
    paths = list(paths)  # read twice when lines of another id turn out to be this log's
    chain = security.verify_audit()
    log_id = security.audit_log_id
    mine = {log_id, *(check_log_id(i) for i in log_ids)}
    forwarded: dict[int, bytes] = {}  # id -> hash and line (_KEPT)
    other: collections.Counter[str] = collections.Counter()  # other log id -> lines
    taken: set[str] = set()  # other logs found to hold this log's entries
    found = _Found(paths, log_id)

    def result(ok: bool, n: int, **kw: Any) -> ForwardedCheck:
        skipped = [k for k in other if k not in taken]
        # log ids are the files' text (a line anyone sent a udp:// collector): escaped
        return ForwardedCheck(ok, n, chain.head, len(forwarded),
                              max(forwarded, default=None),
                              other_lines=sum(other[k] for k in skipped), log_id=log_id,
                              taken_logs=tuple(sorted(map(_shown_text,
                                                          (mine | taken) - {log_id}))),
                              other_logs=tuple(sorted(map(_shown_text, skipped))), **kw)

    if not chain.ok:
        return result(False, chain.checked, bad_id=chain.bad_id, problem=chain.problem,
                      reason=chain.reason)

    def take(obj: dict[str, Any], file_no: int, path: str, n: int) -> ForwardedCheck | None:
        """Add one line of this log to ``forwarded``; the failed check if it is forged."""
        entry_id = obj["id"]
        if not _own_hash_ok(obj):
            return result(False, chain.checked, bad_id=entry_id if isinstance(
                entry_id, int) else None, problem="forged", reason=(
                f"{found.at(path, n, obj)} holds entry {entry_id!r} of this log, which does "
                "not match its own hash: the line was damaged or forged."))
        seen = forwarded.get(entry_id)
        if seen is not None and _kept_hash(seen) != obj["hash"]:
            return result(False, chain.checked, bad_id=entry_id, problem="forged", reason=(
                f"{found(seen)[0]} and {found.at(path, n, obj)} hold two different entries "
                f"{entry_id} (hashes {_kept_hash(seen)[:12]}… and {obj['hash'][:12]}…): one "
                "was sent to the collector after the log was rewritten (or security.sqlite "
                "was restored from a backup)."))
        if seen is None:
            forwarded[entry_id] = _KEPT.pack(bytes.fromhex(obj["hash"]), file_no, n)
        return None

    def numbered() -> Iterator[tuple[int, str, int, str]]:
        """:func:`_lines` of ``paths``, each with its file's number in ``paths``."""
        for file_no, path in enumerate(paths):
            for p, n, line in _lines([path]):
                yield file_no, p, n, line

    db = sqlite3.connect(security.read_uri, uri=True,
                         timeout=10.0, isolation_level=None)
    db.text_factory = _audit_text  # as verify_audit reads the log
    try:
        for file_no, path, n, line in numbered():
            obj = parse_forwarded(line)
            if obj is None:
                continue
            key = str(obj["log"])  # a log that is no string is never this one (_valid)
            if key in mine:
                if (failed := take(obj, file_no, path, n)) is not None:
                    return failed
                continue
            other[key] += 1
            if key not in taken and _holds_local(db, obj):
                taken.add(key)
        if taken:  # their lines, before as after the one that matched
            for file_no, path, n, line in numbered():
                obj = parse_forwarded(line)
                if obj is not None and str(obj["log"]) in taken and \
                        (failed := take(obj, file_no, path, n)) is not None:
                    return failed
        local = _LocalWalk(db, forwarded, found)
    finally:
        db.close()
    gone = sorted(set(forwarded) - local.matched)
    if gone and (local.first_bad is None or gone[0] < local.first_bad[0]):
        g = gone[0]
        where, body = found(forwarded[g])
        if g > local.head:
            reason = (f"Entries {g}..{gone[-1]} were forwarded ({where} first) but "
                      f"the local log ends at entry {local.head or 'none'}: the newest "
                      f"entries were deleted.")
        else:
            what = (f" ({_shown_text(body['action'])} by {_shown_text(body['actor'])})"
                    if body is not None else "")
            reason = (f"Entry {g}{what} was forwarded to {where} but is not in the local "
                      "log: it was deleted.")
        return result(False, local.n, bad_id=g, problem="missing", reason=reason)
    if local.first_bad is not None:
        return result(False, local.n, bad_id=local.first_bad[0], problem="differs",
                      reason=local.first_bad[1])
    if local.n and not forwarded:
        skipped = sorted(map(_shown_text, other))
        others = (f"; they hold {other.total()} lines of other audit logs "
                  f"({', '.join(skipped[:3])}{', …' if len(skipped) > 3 else ''}): another "
                  f"gateway's, or this log was replaced (give its earlier id with --log)"
                  if other else "")
        return result(False, local.n, bad_id=None, problem="unforwarded", reason=(
            f"None of the {local.n} local entries is in the files (this log's id is "
            f"{log_id}{others}): nothing vouches for them. Check that the collector "
            f"receives this gateway's entries and that the files are its."))
    return result(True, local.n, missing_below=local.missing_below, newer=local.newer)


#: the largest id SQLite holds: a forwarded id past it names no local entry
_MAX_ID = 2**63 - 1


def _holds_local(db: sqlite3.Connection, obj: dict[str, Any]) -> bool:
    """Whether the forwarded body ``obj`` (of another log id) matches its own hash and is
    an entry of the local log ``db``, or chains from one (its ``prev_hash`` is the local
    hash of the entry before): each hash covers every entry before it, so its log is the
    local one, sent under another id."""
    if not _own_hash_ok(obj) or obj["id"] > _MAX_ID:
        return False
    rows = dict(db.execute("SELECT id, hash FROM audit WHERE id IN (?, ?)",
                           (obj["id"], obj["id"] - 1)).fetchall())
    return rows.get(obj["id"]) == obj["hash"] or rows.get(obj["id"] - 1) == obj["prev_hash"]


class _LocalWalk:
    """The local entries (``db``, one read snapshot, in id order, streamed) each against
    its copy in ``forwarded`` (id -> hash and line, :data:`_KEPT`; ``found`` reads the
    line again), as :func:`compare_forwarded` reads them: how many (``n``), the newest id
    (``head``), the ids that have a copy (``matched``), those without one up to the newest
    copy and after it, and the first entry that is not its copy (``first_bad``: id,
    reason)."""

    def __init__(self, db: sqlite3.Connection, forwarded: dict[int, bytes],
                 found: _Found) -> None:
        self.n = self.head = self.missing_below = self.newer = 0
        self.matched: set[int] = set()
        self.first_bad: tuple[int, str] | None = None
        fwd_head = max(forwarded, default=0)
        db.execute("BEGIN")
        for row in db.execute("SELECT id, ts_ns, actor, action, target, detail, prev_hash, "
                              "hash FROM audit ORDER BY id"):
            i, t, a, act, tg, d, p, h = row
            self.n += 1
            self.head = i
            copy = forwarded.get(i)
            if copy is None:
                self.missing_below += i <= fwd_head
                self.newer += i > fwd_head
                continue
            self.matched.add(i)
            if self.first_bad is None and _kept_hash(copy) != h:
                entry = AuditEntry(i, t, a, act, tg, _load_detail(d), p or "", h or "")
                where, body = found(copy)
                diff = _differences(entry, body) if body is not None else []
                if diff == ["prev_hash"]:
                    what = (f"it reads as forwarded but chains from another entry {i - 1}: "
                            f"an entry before it that the file lacks was rewritten")
                elif diff:
                    what = f"its {', '.join(diff)} {'differs' if len(diff) == 1 else 'differ'}"
                else:  # the line changed since it was read
                    what = "its hash differs"
                self.first_bad = (i, (
                    f"Entry {i} ({_shown_text(act)} by {_shown_text(a)}) is not what was "
                    f"forwarded to {where}: {what} (local hash {(h or '')[:12]}…, forwarded "
                    f"{_kept_hash(copy)[:12]}…): the local log was rewritten, its hashes "
                    f"recomputed."))
