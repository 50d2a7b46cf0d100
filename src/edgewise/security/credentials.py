"""Device credentials, API tokens with roles, and the audit log.

Everything lives in one SQLite file (``<data dir>/security.sqlite``, WAL mode, file mode
0600), so the CLI can add a device while ``edgewise serve`` runs in another process.

* A device gets a random 256-bit secret, shown once; only a salted SHA-256 of it is
  kept (a slow hash buys nothing for secrets of this entropy). Secrets are compared in
  constant time and never logged. After ``throttle_after`` consecutive wrong secrets from
  one source (peer address) that source's further wrong secrets are refused for a growing
  pause (:class:`ThrottledError`), and counted; the right secret always passes, so no one
  can lock a device out, and an unknown id is answered as a wrong secret.
* People and scripts get API tokens with a role (:data:`ROLES_DOC`): ``viewer`` reads,
  ``operator`` also acknowledges and labels alerts and rolls model releases out or back
  (chooses which published, signed version a device or group runs), ``admin`` also manages
  devices and tokens. Publishing a model version takes no token: it is done on the
  gateway's machine (``edgewise registry publish``). Device secrets are not tokens: they
  can only send telemetry (and fetch their signed models).
* A device's secret can be replaced (:meth:`Security.rotate_device_secret`, ``edgewise
  device rotate-secret``, ``POST /v1/devices/{id}/secret``): the old one stops working at
  once, the device's data and groups stay.
* A device may be put in groups (``add_device(name, groups=[...])``,
  :meth:`Security.set_device_groups`); the gateway serves a ``group:<name>`` model release
  only to the devices an admin put in that group, never to one that merely claims it.
* There is no default password: the first admin token is made at the data dir's first
  start by :meth:`Security.ensure_admin_token` and printed once. Never again: once any
  API token was issued there (recorded in ``audit_meta``), revoking the last admin token
  is not undone by a restart; an admin makes a new one with ``edgewise token create``.
* Tokens are listed (:meth:`Security.list_tokens`: id, name, role, created; never the
  secret, which is not kept) and revoked (:meth:`Security.revoke_token`, by name or id).
  A token's name is at most :data:`MAX_TOKEN_NAME` characters, holds no control or
  invisible format characters (a newline would print a fake row in a listing), is not
  blank or only dashes, and never
  has a token id's form (8 hex digits), and no id is issued equal to a name, so a name
  never passes for another token's id.
  Every request looks its token up afresh, so a revoked token is refused at once, also by a
  gateway running in another process; an answer streamed for longer (a CSV export) checks
  it again before each chunk (:meth:`Security.check_token_active`) and stops there.
* The audit log is a hash chain: each entry stores the SHA-256 of the one before and its
  own (:meth:`Security.audit`), so :meth:`Security.verify_audit` finds an entry that was
  edited, deleted or inserted in the file afterwards, unless whoever did it also rewrote
  every hash after it (compare the head with a copy kept elsewhere to catch that, or
  forward each entry off the box as it is written: :mod:`edgewise.security.audit_syslog`,
  which hears of this process's entries from :attr:`Security.audit_listeners`).

>>> import tempfile, pathlib
>>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
>>> device_id, secret = sec.add_device("pump-1")
>>> tag = sec.authenticate_device("pump-1", secret)
>>> sec.set_device_groups("pump-1", ["line-a"])
['line-a']
>>> sec.device_groups("pump-1")
['line-a']
>>> sec.authenticate_device("pump-1", "wrong")
Traceback (most recent call last):
...
edgewise.errors.AuthError: Device 'pump-1' is unknown or the secret is wrong.
>>> token = sec.create_token("viewer", "grafana")
>>> sec.authenticate_token(token).role
'viewer'
>>> [(t.name, t.role) for t in sec.list_tokens()]
[('grafana', 'viewer')]
>>> sec.revoke_token("grafana").name
'grafana'
>>> sec.authenticate_token(token)
Traceback (most recent call last):
...
edgewise.errors.AuthError: API token not recognised.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgewise._sqlite import FileBusyError, is_busy, write_transaction
from edgewise.errors import (
    AuthError,
    ConfigError,
    InvalidParameterError,
    PayloadError,
    ThrottledError,
    folder_not_made,
)
from edgewise.telemetry import validate_device_id

if TYPE_CHECKING:  # imported where used: edgewise.registry imports edgewise.security
    from edgewise.registry import Registry

__all__ = ["AUDIT_GENESIS", "MAX_TOKEN_NAME", "RESERVED_TOKEN_NAMES", "ROLES_DOC", "ROLE_RANK",
           "AuditEntry",
           "AuditVerification", "DeviceRecord", "Principal", "Security", "SecurityBusyError",
           "TokenRecord", "audit_hash", "cannot_write"]

log = logging.getLogger(__name__)

ROLE_RANK = {"viewer": 1, "operator": 2, "admin": 3}
#: What each role may do, as every description of the roles says it (the API's token
#: schema, ``edgewise token create --help``).
ROLES_DOC = (
    "viewer reads; operator also acknowledges and labels alerts and rolls model releases "
    "out or back (chooses which published, signed version a device or group runs: POST "
    "/v1/registry/rollouts); admin also manages devices and tokens. Publishing a model "
    "version takes no token: it is done on the gateway's machine (edgewise registry "
    "publish).")
#: The most characters an API token's name may have (CLI and HTTP alike).
MAX_TOKEN_NAME = 64
#: Names the gateway's own parts act under in the audit log and on alerts (``acked_by``):
#: refused as API token names (in any case), so no token passes for one of them.
RESERVED_TOKEN_NAMES = ("cli", "demo", "edgewise", "federated", "first-start", "gateway",
                        "retention")
#: A token id's form (``secrets.token_hex(4)``); a name of this form is refused.
_TOKEN_ID_RE = re.compile(r"[0-9A-Fa-f]{8}")
_TOKEN_PREFIX = "ew_"
_MAX_PAUSE_S = 300.0
_MAX_SOURCES = 10_000
#: how long wrong-secret counts of known devices wait in memory before they are written
_FLUSH_AFTER_S = 1.0
#: the ``prev_hash`` of the first entry of the audit chain
AUDIT_GENESIS = "0" * 64
#: the action of the entry that marks where a database made before the chain was chained
_CHAIN_START = "audit.chain_start"
#: the action of the entry that names entries an older version wrote without a hash
_UNCHAINED = "audit.unchained_taken_in"
#: the ``audit_meta`` key set once an API token was issued in this data dir: from then on
#: :meth:`Security.ensure_admin_token` makes none
_TOKENS_ISSUED = "tokens_issued"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    salt BLOB NOT NULL,
    secret_hash BLOB NOT NULL,
    created_ns INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    throttled_until_ns INTEGER NOT NULL DEFAULT 0,
    throttled_attempts INTEGER NOT NULL DEFAULT 0,
    wrong_secrets INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash BLOB PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS device_groups (
    device_id TEXT NOT NULL,
    grp TEXT NOT NULL,
    PRIMARY KEY (device_id, grp)
);
CREATE TABLE IF NOT EXISTS kept_data (
    device_id TEXT PRIMARY KEY,
    ts_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT,
    hash TEXT
);
CREATE TABLE IF NOT EXISTS audit_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device (never its secret)."""

    id: str
    name: str
    created_ns: int
    #: wrong secrets sent in this device's name since it was registered (never reset;
    #: counted for display only, nothing is locked out; :meth:`Security.list_devices`)
    failures: int
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an API token belongs to, and what it may do."""

    name: str
    role: str
    token_id: str

    def can(self, role: str) -> bool:
        """Whether this principal's role is at least ``role``."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    @property
    def actor(self) -> str:
        """How the audit log names this principal: ``token:<id>:<name>``. The id is unique
        (names are free text and need not be), so two tokens named alike stay apart.

        >>> Principal("ops", "admin", "1f2e3d4c").actor
        'token:1f2e3d4c:ops'
        """
        return f"token:{self.token_id}:{self.name}"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as listed: its id, name, role and creation time (never the secret)."""

    id: str
    name: str
    role: str
    created_ns: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited action, with its place in the hash chain (:func:`audit_hash`)."""

    id: int
    ts_ns: int
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    #: the hash of the entry before (:data:`AUDIT_GENESIS` for the first); "" if missing
    prev_hash: str = ""
    #: this entry's hash (hex SHA-256); "" if missing (a row written outside the chain)
    hash: str = ""


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What :meth:`Security.verify_audit` found.

    ``problem`` is ``None`` when ``ok``, else ``"edited"`` (an entry's content does not
    match its hash), ``"deleted"`` (ids are missing, or the first entry does not chain from
    the genesis value), ``"inserted"`` (an entry does not chain from the one before it, or
    has no hash) or ``"rewritten"`` (the ``expect`` head given no longer matches).
    ``bad_id`` is the first entry where that shows.
    """

    ok: bool
    #: entries walked (all of them when ``ok``; up to and including ``bad_id`` otherwise)
    checked: int
    #: id and hash of the newest entry (``None`` and :data:`AUDIT_GENESIS` when empty):
    #: record ``f"{head_id}:{head_hash}"`` elsewhere and pass it back as ``expect``
    head_id: int | None
    head_hash: str
    bad_id: int | None = None
    problem: str | None = None
    reason: str = ""
    #: entries written without a hash (by an older Edgewise during an upgrade, or forged
    #: into the file) that a later entry took into the chain, as its
    #: ``audit.unchained_taken_in`` entry names them: the chain vouches for them only from
    #: then on, so look at them
    unchecked: tuple[int, ...] = ()

    @property
    def head(self) -> str:
        """The head as ``ID:HASH`` (``"0:<genesis>"`` when the log is empty)."""
        return f"{self.head_id or 0}:{self.head_hash}"


def audit_hash(prev_hash: str, entry_id: int, ts_ns: int, actor: str, action: str,
               target: str, detail: Any) -> str:
    """The hash of one audit entry: hex SHA-256 of ``prev_hash`` (64 hex characters, ASCII)
    followed by the canonical JSON (sorted keys, no spaces, ASCII, UTF-8) of
    ``[id, ts_ns, actor, action, target, detail]``, ``detail`` as the object stored (what
    ``GET /v1/audit`` returns), so anyone can recompute a chain from that answer.

    >>> h = audit_hash(AUDIT_GENESIS, 1, 5, "cli", "device.add", "pump-1", {"a": 1})
    >>> h == hashlib.sha256(("0" * 64 + '[1,5,"cli","device.add","pump-1",{"a":1}]')
    ...                     .encode()).hexdigest()
    True
    """
    body = json.dumps([entry_id, ts_ns, actor, action, target, detail], sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(prev_hash.encode("ascii") + body.encode("ascii")).hexdigest()


def check_device_name(name: str) -> str:
    """``name`` as a device id, else :class:`InvalidParameterError` saying what one is.

    >>> check_device_name("pump-7")
    'pump-7'
    """
    try:
        return validate_device_id(name)
    except PayloadError as exc:
        raise InvalidParameterError(
            f"Device name {name!r} is not a valid device id: it must be {exc.allowed}.",
            field="name", value=name,
        ) from None


def check_groups(groups: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated group names; each must look like a device id, else
    :class:`InvalidParameterError` naming it.

    >>> check_groups(["line-b", "line-a", "line-b"])
    ['line-a', 'line-b']
    """
    if isinstance(groups, str):
        groups = [groups]
    out = set()
    for g in groups:
        try:
            out.add(validate_device_id(g))
        except PayloadError as exc:
            raise InvalidParameterError(
                f"Group name {g!r} is not valid: it must be {exc.allowed}.",
                field="groups", value=g,
            ) from None
    return sorted(out)


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8", "surrogatepass")).digest()


def source_key(source: str | None) -> str:
    """The key wrong secrets are counted under for a peer address: an IPv6 address by
    its /64 (one host usually holds a whole /64), an IPv4-mapped one as IPv4, anything
    else (a name, a test client) as given.

    >>> source_key("2001:db8:1:2:aaaa::1"), source_key("::ffff:10.0.0.7"), source_key("10.0.0.7")
    ('2001:db8:1:2::/64', '10.0.0.7', '10.0.0.7')
    """
    if not source:
        return ""
    try:
        addr = ipaddress.ip_address(source.strip("[]").split("%", 1)[0])
    except ValueError:
        return source
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def _tag(salt: bytes, stored: bytes) -> bytes:
    """A device credential's tag: changes with the salt or hash (not the secret itself)."""
    return hashlib.sha256(b"edgewise-credential\0" + salt + stored).digest()[:16]


def _load_detail(text: str) -> Any:
    """An audit entry's stored detail as an object; text that is not JSON stays text (so
    an entry whose detail was mangled still lists, and fails :meth:`Security.verify_audit`)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _audit_text(raw: bytes) -> str:
    """A text value of the audit table as the connections that read the log whole take it
    (their ``text_factory``): UTF-8, each byte that is not (Edgewise writes none: an edit
    in the file) kept as a lone surrogate (``surrogateescape``), so the row still reads,
    fails :meth:`Security.verify_audit` at its entry and is forwarded as the file has it,
    where SQLite's "Could not decode to UTF-8" ended the whole read.

    >>> _audit_text(b"cli"), _audit_text(b"\\xffA")
    ('cli', '\\udcffA')
    """
    return raw.decode("utf-8", "surrogateescape")


#: an audit row as :meth:`Security.audit_log` lists it: the text columns as their bytes,
#: decoded by :func:`_listed` (its connection is the device code's too: no text_factory)
_LISTED = ("id, ts_ns, CAST(actor AS BLOB), CAST(action AS BLOB), CAST(target AS BLOB), "
           "CAST(detail AS BLOB), CAST(prev_hash AS BLOB), CAST(hash AS BLOB)")


def _listed(row: tuple[Any, ...]) -> AuditEntry:
    """The entry of a row read with :data:`_LISTED`: bytes that are not UTF-8 (an edit in
    the file, which verify reports) shown as U+FFFD, so the listing, and its JSON answer,
    holds (SQLite's "Could not decode to UTF-8" failed every page that held the row)."""
    i, t, a, act, tg, d, p, h = (v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                                 for v in row)
    return AuditEntry(i, t, a, act, tg, _load_detail(d), p or "", h or "")


def parse_audit_head(expect: str) -> tuple[int, str]:
    """``"ID:HASH"`` (a head :meth:`Security.verify_audit` answered) as ``(id, hash)``;
    :class:`InvalidParameterError` naming ``expect`` if it is not one, or names an entry id
    no entry can have.

    >>> parse_audit_head("7:" + "a" * 64)[0]
    7
    >>> parse_audit_head("9" * 20 + ":" + "a" * 64)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The expected audit head's entry id must be ...
    """
    entry_id, _, digest = expect.strip().partition(":")
    if not (entry_id.isascii() and entry_id.isdigit() and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)):
        raise InvalidParameterError(
            f"The expected audit head must be 'ID:HASH' (an entry id, a colon, 64 lowercase "
            f"hex characters), as verify prints it. Got {expect!r} instead.",
            field="expect", value=expect,
        )
    # no entry id is past SQLite's 2**63 - 1: one past it was reported as a log whose newest
    # entries were deleted, and one of over 4300 digits was int()'s ValueError (a traceback)
    entry_id = entry_id.lstrip("0") or "0"
    if len(entry_id) > 19 or int(entry_id) > 2**63 - 1:
        raise InvalidParameterError(
            f"The expected audit head's entry id must be 0 to {2**63 - 1} (SQLite's largest "
            f"id), as verify prints it; got {entry_id[:24]}{'...' if len(entry_id) > 24 else ''}"
            f" ({len(entry_id)} digits).",
            field="expect", value=expect[:100],
        )
    return int(entry_id), digest


def _shown_text(value: object) -> str:
    """``value`` (text read from the audit file, which whoever can write it chose) as a
    message may print it: each character that is not printable (a CR, a terminal escape,
    a bidi override) and each backslash written as its Python escape, so that a verify
    line cannot be overwritten or disguised by what it quotes; other text as it is.

    >>> _shown_text("device.add"), _shown_text("\\r\\x1b[2Kok"), _shown_text(b"cli")
    ('device.add', '\\\\r\\\\x1b[2Kok', "b'cli'")
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\"
                   else c.encode("unicode_escape").decode("ascii") for c in text)


def _walk_chain(rows: Iterable[tuple[Any, ...]], chain_start: int,
                anchor: tuple[int, str] | None,
                newest: tuple[int, str] | None) -> AuditVerification:
    """Check ``rows`` (id order, read as they come) as :meth:`Security.verify_audit` says;
    ids below ``chain_start`` (the migration's marker entry, 0 if none) may have gaps.
    ``newest`` is the newest entry's id and hash (``None`` for an empty log)."""
    prev_id: int | None = None
    expected = AUDIT_GENESIS
    anchored = False
    n = 0
    unchecked: list[int] = []

    def broken(n: int, bad: int, problem: str, reason: str) -> AuditVerification:
        head_id, head_hash = newest if newest is not None else (None, AUDIT_GENESIS)
        # the newest row's hash is the file's, unchecked when the break is before it
        return AuditVerification(False, n, head_id, _shown_text(head_hash or ""), bad,
                                 problem, reason)

    for n, row in enumerate(rows, 1):
        entry_id, ts_ns, actor, action, target, detail, prev_hash, digest = row
        after = "the start" if prev_id is None else f"entry {prev_id}"
        first = 1 if prev_id is None else prev_id + 1  # the id that should come next
        gap = entry_id - first
        if entry_id < 1:  # AUTOINCREMENT gives 1 first: an id below is no entry it wrote
            return broken(n, entry_id, "inserted", f"Entry {entry_id} has an id below 1, "
                          "which the audit log never gives: it was written into the file, "
                          "not through the audit log.")
        if not digest or not prev_hash:
            return broken(n, entry_id, "inserted", f"Entry {entry_id} has no hash: it was "
                          "written into the file, not through the audit log.")
        if prev_hash != expected:
            if gap > 0:
                return broken(n, entry_id, "deleted", f"Entry {entry_id} does not chain from "
                              f"{after}: entries {first}..{entry_id - 1} were deleted.")
            return broken(n, entry_id, "inserted", f"Entry {entry_id} does not chain from "
                          f"{after} (its prev_hash is {_shown_text(str(prev_hash)[:12])}…, the "
                          f"hash before it "
                          f"is {expected[:12]}…): an entry was inserted, or {after} was "
                          "rewritten with a new hash.")
        obj = _load_detail(detail)
        try:
            matches = digest == audit_hash(prev_hash, entry_id, ts_ns, actor, action, target,
                                           obj)
        except (TypeError, ValueError):  # a column's type changed in the file (text -> blob)
            matches = False
        if not matches:
            return broken(n, entry_id, "edited", f"Entry {entry_id} ({_shown_text(action)} "
                          f"by {_shown_text(actor)}) does not match its hash: it was edited "
                          "after it was written.")
        # ids are never reused: a gap is deleted entries (before the migration's marker, the
        # ids of a log kept before the chain may have gaps of their own)
        if gap > 0 and entry_id > chain_start:
            return broken(n, entry_id, "deleted", f"Entries {first}..{entry_id - 1} are "
                          f"missing before entry {entry_id}: they were deleted (the chain was "
                          "rewritten over the gap).")
        if anchor is not None and entry_id == anchor[0]:
            if digest != anchor[1]:
                return broken(n, entry_id, "rewritten", f"Entry {entry_id} has hash "
                              f"{digest[:12]}…, not the expected {anchor[1][:12]}…: the chain "
                              "was rewritten from there or before.")
            anchored = True
        if action == _UNCHAINED and isinstance(obj, dict):
            unchecked.extend(i for i in obj.get("ids", [])
                             if isinstance(i, int))
        expected, prev_id = digest, entry_id
    head_id = newest[0] if newest is not None else None
    if anchor is not None and anchor[0] == 0 and anchor[1] != AUDIT_GENESIS:
        return AuditVerification(
            False, n, head_id, expected, None, "rewritten",
            f"The expected head 0:{anchor[1][:12]}… is not the empty log's (0:{AUDIT_GENESIS[:12]}"
            "…): it was not printed by verify.")
    if anchor is not None and not anchored and anchor[0] != 0:
        now = "the log is empty" if head_id is None else f"the newest entry is {head_id}"
        return AuditVerification(
            False, n, head_id, expected, anchor[0], "deleted",
            f"The expected head, entry {anchor[0]}, is gone ({now}): entries up to it were "
            "deleted.")
    return AuditVerification(True, n, head_id, expected, unchecked=tuple(unchecked))


def _check_token_name(name: object) -> str:
    """``name`` if it can name an API token: text of at most :data:`MAX_TOKEN_NAME`
    characters, without control or invisible format characters (a tab or newline in a name
    would let it print a fake row in 'edgewise token list'), not blank or only dashes
    (``' '``, ``'--'``: an empty column in a listing, an option's end to 'token revoke'),
    not of a token id's form (8 hex
    digits), not one of :data:`RESERVED_TOKEN_NAMES` (in any case: the gateway's own actors,
    e.g. ``gateway``, which acknowledges seq_gap alerts once the gap fills); else
    :class:`InvalidParameterError`, ``field="name"``. ``""`` stands for the role.

    >>> _check_token_name("grafana")
    'grafana'
    >>> _check_token_name("x" * 65)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'name' of an API token must be at most 64 characters. Got 65 characters ('xxxxxxxxxxxxxxxxxxxx…') instead.
    >>> _check_token_name("ops\\nadmin")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'name' of an API token must not hold control or invisible format characters (tab, newline, …). Got 'ops\\nadmin' instead, with '\\n' at position 3; e.g. 'ops admin'.
    >>> _check_token_name("--")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'name' of an API token must not be blank or only dashes: it says who or what uses the token. Got '--' instead; e.g. 'grafana', or leave it out for the role.
    >>> _check_token_name("Gateway")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'name' of an API token must not be one the gateway acts under itself (cli, demo, edgewise, federated, first-start, gateway, retention; in any case): the audit log and alerts would show the token's acts as the gateway's. Got 'Gateway' instead; e.g. 'Gateway-ops'.
    """  # noqa: E501
    import unicodedata

    if not isinstance(name, str):
        raise InvalidParameterError(
            f"The 'name' of an API token must be text. Got {name!r} instead.",
            field="name", value=name)
    if len(name) > MAX_TOKEN_NAME:
        raise InvalidParameterError(
            f"The 'name' of an API token must be at most {MAX_TOKEN_NAME} characters. Got "
            f"{len(name)} characters ({name[:20] + '…'!r}) instead.", field="name", value=name)
    # Cc: C0/C1 controls (tab, newline, escape); Cf: invisible format characters such as
    # bidi overrides; Zl/Zp: line and paragraph separators; Cs: lone surrogates
    bad = [i for i, c in enumerate(name)
           if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    if bad:
        cleaned = " ".join("".join(" " if i in bad else c
                                   for i, c in enumerate(name)).split())
        hint = f"; e.g. {cleaned!r}" if cleaned else ""
        raise InvalidParameterError(
            "The 'name' of an API token must not hold control or invisible format characters "
            f"(tab, newline, …). Got {name!r} instead, with {name[bad[0]]!r} at position "
            f"{bad[0]}{hint}.", field="name", value=name)
    if name and not name.replace("-", "").strip():
        # ' ' lists as an empty column in 'edgewise token list', '--' reads as the end of
        # options to 'token revoke': neither says who or what uses the token
        raise InvalidParameterError(
            "The 'name' of an API token must not be blank or only dashes: it says who or "
            f"what uses the token. Got {name!r} instead; e.g. 'grafana', or leave it out "
            "for the role.", field="name", value=name)
    if _TOKEN_ID_RE.fullmatch(name):
        raise InvalidParameterError(
            "The 'name' of an API token must not look like a token id (8 hex digits, as "
            "'edgewise token list' shows ids): 'token revoke' takes a name or an id. Got "
            f"{name!r} instead; e.g. 'ci-{name}'.", field="name", value=name)
    if name.strip().casefold() in RESERVED_TOKEN_NAMES:
        raise InvalidParameterError(
            "The 'name' of an API token must not be one the gateway acts under itself ("
            f"{', '.join(RESERVED_TOKEN_NAMES)}; in any case): the audit log and alerts would "
            f"show the token's acts as the gateway's. Got {name!r} instead; e.g. "
            f"'{name.strip()}-ops'.", field="name", value=name)
    return name


def _kept_data_message(device_id: str) -> str:
    return (f"Device {device_id!r} was deleted, but its stored data was kept (a gateway was "
            f"running, or the deletion could not reach the store); delete it with DELETE "
            f"/v1/devices/{device_id} (admin token), or with edgewise device delete "
            f"{device_id} [--store URL] once the gateway is stopped, then add the device "
            f"again; or pick another name.")


def cannot_write(path: Path) -> str | None:
    """Why the SQLite file ``path`` cannot be written here, as ``[Errno N] text``: its file
    system is read-only (a mounted snapshot or backup: ``EROFS``), or this user may not
    write it or its directory, which holds its write-ahead log (``EACCES``); ``None`` when
    it can (or the directory does not exist: it is made then).

    >>> import tempfile, pathlib
    >>> cannot_write(pathlib.Path(tempfile.mkdtemp()) / "security.sqlite") is None
    True
    """
    import errno

    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        return None
    if all(os.access(p, os.W_OK) for p in (folder, path) if p.exists()):
        return None
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    code = errno.EROFS if read_only else errno.EACCES
    return f"[Errno {code}] {os.strerror(code)}"


def open_read_only(path: Path) -> tuple[sqlite3.Connection, str]:
    """A read-only connection to the existing SQLite file ``path`` (autocommit, a 10 s busy
    timeout, usable from any thread), and the URI it was opened by.

    ``mode=ro`` first (it reads what a write-ahead log beside the file holds); where the
    directory cannot hold the log's index (a read-only file system: "unable to open"; one
    this user may not write: SQLite 3.40 says "attempt to write a readonly database") and
    there is no ``-wal`` file, the file is opened ``immutable``: as it is, which is all of
    it. A non-empty ``-wal`` that cannot be read so is refused (:class:`ConfigError`): its
    changes are not in the file yet. Any other error is raised with the connection left
    open (the CLI names the file of a failed query by it).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "x.sqlite"
    >>> sqlite3.connect(f).execute("CREATE TABLE t (a)").connection.close()
    >>> db, uri = open_read_only(f)
    >>> uri.endswith("?mode=ro"), db.execute("SELECT COUNT(*) FROM t").fetchone()
    (True, (0,))
    >>> db.close()
    """
    path = Path(path)
    base = path.resolve().as_uri()
    wal = Path(f"{path}-wal")
    for query in ("mode=ro", "immutable=1"):
        db = sqlite3.connect(f"{base}?{query}", uri=True, timeout=10.0,
                             check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError as exc:
            blocked = "unable to open" in str(exc) or (
                "readonly database" in str(exc) and cannot_write(path) is not None)
            if not blocked or query != "mode=ro":
                raise  # left open: the CLI names the file of a failed query by it
            db.close()
            if wal.exists() and wal.stat().st_size > 0:
                raise ConfigError(
                    f"{str(path)!r} cannot be read here: its write-ahead log "
                    f"{str(wal)!r} holds changes not yet in it, which SQLite reads only "
                    f"where it may also write {path}-shm "
                    f"({cannot_write(path) or exc}); copy the data directory to "
                    f"a writable place and give the copy.") from None
            continue
        return db, f"{base}?{query}"
    raise AssertionError("unreachable")  # immutable=1 either returns or raises


#: seconds a caller refused by :class:`SecurityBusyError` is told to wait (the busy timeout)
SECURITY_RETRY_S = 10


class SecurityBusyError(FileBusyError):
    """Another connection (another process: ``edgewise token create``, ``device add``, a
    backup tool) held ``security.sqlite``'s write lock past the busy timeout (10 s), so a
    write transaction could not begin: nothing of it was done or committed, and it may be
    repeated as it is. ``path``: the file.

    >>> SecurityBusyError("held", path=Path("security.sqlite")).path.name
    'security.sqlite'
    """


class Security:
    """Credentials, tokens and audit log of one Edgewise data directory.

    ``read_only=True`` opens an existing ``security.sqlite`` for reading only, also where
    its directory cannot be written (a mounted snapshot or backup): listings and
    :meth:`verify_audit` work, every change is refused by SQLite. A file an older version
    made is brought up to date only by a writable open, so a read-only one refuses it
    (:class:`~edgewise.errors.ConfigError`). Opened writable (the default) where the file
    cannot be written, it is a :class:`~edgewise.errors.ConfigError` naming the file and
    why (``EROFS``, ``EACCES``).
    """

    def __init__(self, data_dir: Path, *, throttle_after: int = 100,
                 read_only: bool = False) -> None:
        if throttle_after < 1:
            raise InvalidParameterError(
                f"The 'throttle_after' parameter of Security must be an int in the range "
                f"[1, inf). Got {throttle_after!r} instead."
            )
        self.data_dir = Path(data_dir)
        self.throttle_after = throttle_after
        self.read_only = read_only
        self.path = self.data_dir / "security.sqlite"
        # re-entrant: a transaction() block may call this object's methods (has_device as a
        # registry's check, audit)
        self._lock = threading.RLock()
        # the entries of this thread's open write transaction, one list per nesting level
        # (:meth:`_write_tx`); touched only under the lock, so it is its holder's
        self._tx_levels: list[list[AuditEntry]] = []
        #: the URI a read-only connection to the file opens (:meth:`verify_audit`'s own one)
        self.read_uri = f"{self.path.resolve().as_uri()}?mode=ro"
        if read_only:
            self._db = self._open_read_only()
        else:
            try:
                self._db = self._open()
            except (sqlite3.OperationalError, OSError):
                why = cannot_write(self.path)
                if why is None:
                    raise
                db = self.__dict__.get("_db")
                if db is not None:
                    db.close()
                raise ConfigError(
                    f"{str(self.path)!r} cannot be written ({why}): this command changes "
                    f"it, so give a data directory this user may write (not a read-only "
                    f"snapshot or backup).") from None
        # A dummy hash so an unknown device costs the same as a known one.
        self._dummy_salt = secrets.token_bytes(16)
        self._dummy_hash = secrets.token_bytes(32)
        # source key -> (wrong secrets in its run, paused until (ns), attempts refused
        # while paused, the one device id all of the run's wrong secrets named, or "" when
        # they named several); least recently seen first
        self._sources: dict[str, tuple[int, int, int, str]] = {}
        # (known device id, its created_ns) -> wrong secrets not yet written to its
        # ``wrong_secrets`` column: written only to that registration of the id, never to a
        # device registered again under it meanwhile (here or by another process)
        self._wrong: dict[tuple[str, int], int] = {}
        self._flush_timer: threading.Timer | None = None
        #: called with each entry this object appends, just after its transaction commits,
        #: under this object's lock (in commit order), so each must return at once; one that
        #: raises is logged and never fails the audited action
        #: (:class:`~edgewise.security.audit_syslog.AuditForwarder` queues the entry)
        self.audit_listeners: list[Callable[[AuditEntry], None]] = []
        self._log_id: str | None = None
        # the registry group changes are checked against (_group_registry), opened once, and
        # the (device, inode) of the registry.sqlite it opened
        self._registry: Registry | None = None
        self._registry_file: tuple[int, int] | None = None

    def _open(self) -> sqlite3.Connection:
        """The writable connection to :attr:`path` (made, owner-only, if absent), prepared
        by :meth:`_prepare`."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:  # a file there or above, a parent this user may not write
            raise folder_not_made(
                "The data directory", self.data_dir, exc,
                "give a directory this user may write, or a path where one can be made.",
            ) from None
        new = not self.path.exists()
        self._db = sqlite3.connect(
            self.path, timeout=10.0, check_same_thread=False, isolation_level=None
        )
        # left open when this fails: the CLI names the file of a failed query by it
        if new:
            os.chmod(self.path, 0o600)
        self._db.execute("PRAGMA busy_timeout=10000")
        for attempt in range(50):
            began = time.monotonic()
            try:
                self._prepare()
                break
            except sqlite3.OperationalError as exc:
                # switching an old file to WAL, or its schema, while other connections open it
                # too can be refused at once ("database is locked") without the busy
                # handler (seen once in CI); every step is idempotent, so it is tried again.
                # Refused after the busy timeout (a writer holds the file): not again (50
                # waits of 10 s each)
                if "locked" not in str(exc) or attempt == 49 \
                        or time.monotonic() - began > 1.0:
                    raise
                time.sleep(0.05)
        return self._db

    def _open_read_only(self) -> sqlite3.Connection:
        """A read-only connection to the existing :attr:`path`; sets :attr:`read_uri`.

        Opened by :func:`open_read_only` (``mode=ro``, else ``immutable`` where the
        directory cannot hold the write-ahead log's index); refused when the file was made
        by an older version (its migrations are made only where it can be written)."""
        if not self.path.is_file():
            raise ConfigError(f"{str(self.path)!r} does not exist: there is nothing to read "
                              f"in {str(self.data_dir)!r}; give the data directory the "
                              f"gateway runs with.")
        db, self.read_uri = open_read_only(self.path)
        tables = {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        audit_columns = {r[1] for r in db.execute("PRAGMA table_info(audit)")}
        device_columns = {r[1] for r in db.execute("PRAGMA table_info(devices)")}
        current = ({"devices", "tokens", "device_groups", "kept_data", "audit",
                    "audit_meta"} <= tables and {"prev_hash", "hash"} <= audit_columns
                   and "wrong_secrets" in device_columns
                   and db.execute("SELECT 1 FROM audit_meta WHERE key = 'log_id'"
                                  ).fetchone() is not None)
        if not current:
            db.close()
            raise ConfigError(
                f"{str(self.path)!r} was made by an older Edgewise version (or is not an "
                f"Edgewise credentials file): it is brought up to date only where it can be "
                f"written; open it once so (e.g. 'edgewise device list' on a writable copy "
                f"of the data directory).")
        return db

    def _prepare(self) -> None:
        """WAL mode, the schema, and the migrations of older files (each idempotent). A file
        that is up to date is only read (each write is asked for first), so opening it
        never waits for another writer holding it (a gateway's transaction)."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(devices)")}
        if "wrong_secrets" not in columns:  # a database made before the column was
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                self._db.execute("ALTER TABLE devices ADD COLUMN wrong_secrets "
                                 "INTEGER NOT NULL DEFAULT 0")
        self._chain_old_audit()
        # the audit log's id, made once: forwarded entries carry it, so a collector's file
        # holding several gateways' entries can be checked against this one's
        if self._db.execute("SELECT 1 FROM audit_meta WHERE key = 'log_id'").fetchone() is None:
            self._db.execute("INSERT OR IGNORE INTO audit_meta VALUES ('log_id', ?)",
                             (secrets.token_hex(8),))
        self._mark_tokens_issued()

    def _mark_tokens_issued(self) -> None:
        """Record that API tokens were issued in a data dir an older version made, which has
        a token, or an audit entry of one made or revoked (a revoked token's row is gone),
        but not the ``audit_meta`` flag: its first start is over, whatever is left."""
        if self._db.execute("SELECT 1 FROM audit_meta WHERE key = ?",
                            (_TOKENS_ISSUED,)).fetchone() is not None:
            return
        issued = ("EXISTS (SELECT 1 FROM tokens) OR EXISTS (SELECT 1 FROM audit "
                  "WHERE action IN ('token.create', 'token.revoke'))")
        if not self._db.execute(f"SELECT {issued}").fetchone()[0]:
            return  # nothing to record: no write (none waits for another writer)
        self._db.execute(  # one statement: the check and the flag are one transaction
            f"INSERT OR IGNORE INTO audit_meta SELECT ?, 'before the flag' WHERE {issued}",
            (_TOKENS_ISSUED,))

    @property
    def audit_log_id(self) -> str:
        """This audit log's id: 16 random hex digits made when the file was first opened
        by a version that forwards entries, carried by every forwarded entry.

        >>> import tempfile, pathlib
        >>> len(Security(pathlib.Path(tempfile.mkdtemp())).audit_log_id)
        16
        """
        if self._log_id is None:
            with self._lock:
                self._log_id = str(self._db.execute(
                    "SELECT value FROM audit_meta WHERE key = 'log_id'").fetchone()[0])
        return self._log_id

    # -- devices -----------------------------------------------------------------------
    def add_device(self, name: str, *, groups: Iterable[str] = (),
                   actor: str = "cli") -> tuple[str, str]:
        """Register a device named ``name`` (also its id) in ``groups``; return ``(id, secret)``.

        The secret is shown only here; a second device with the same id is refused.
        """
        device_id = check_device_name(name)
        group_list = check_groups(groups)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        try:
            with self._write_tx() as written:
                if self._db.execute("SELECT 1 FROM kept_data WHERE device_id = ?",
                                    (device_id,)).fetchone() is not None:
                    raise InvalidParameterError(_kept_data_message(device_id),
                                                field="name", value=name)
                self._db.execute(
                    "INSERT INTO devices (id, name, salt, secret_hash, created_ns) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (device_id, name, salt, _hash(salt, secret), time.time_ns()),
                )
                self._db.execute("DELETE FROM device_groups WHERE device_id = ?", (device_id,))
                self._db.executemany("INSERT INTO device_groups VALUES (?, ?)",
                                     [(device_id, g) for g in group_list])
                written += self._append_audit(actor, "device.add", device_id,
                                              {"groups": group_list} if group_list else None)
        except sqlite3.IntegrityError:
            raise InvalidParameterError(
                f"Device {device_id!r} already exists; delete it first or pick "
                "another name.", field="name", value=name,
            ) from None
        return device_id, secret

    def set_device_groups(self, device_id: str, groups: Iterable[str], *,
                          actor: str = "cli") -> list[str]:
        """Make ``groups`` the device's groups (replacing the old ones); return them sorted.

        ``KeyError`` if the device is not registered. Refused
        (:class:`~edgewise.errors.InvalidParameterError`, field ``groups``) when the change
        would hand the device an older version of a model than the one it is offered now
        without a signed rollback order (joining a group that holds an older version, leaving
        the group whose newer version it runs): the message names the release and the
        rollout or rollback order to sign first
        (:meth:`edgewise.registry.Registry.check_group_change`, on the registry of this data
        directory, if it has one).

        >>> import tempfile
        >>> sec = Security(tempfile.mkdtemp())
        >>> _ = sec.add_device("pump-1")
        >>> sec.set_device_groups("pump-1", ["line-b", "line-a"])
        ['line-a', 'line-b']
        """
        group_list = check_groups(groups)
        # One unit of work under this file's write lock: the groups it has now are read, the
        # change checked against them and written, so two changes at once are checked one
        # after the other (each read its own "before" first: both got through). The registry
        # (its own file) only reads this file, which WAL lets it do meanwhile; the floors the
        # check leaves commit after the groups, and not at all if writing them fails.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                known = self._db.execute("SELECT 1 FROM devices WHERE id = ?",
                                         (device_id,)).fetchone() is not None
                if known:
                    before = [r[0] for r in self._db.execute(
                        "SELECT grp FROM device_groups WHERE device_id = ? ORDER BY grp",
                        (device_id,))]
                    with self._check_group_change(device_id, before, group_list):
                        self._db.execute("DELETE FROM device_groups WHERE device_id = ?",
                                         (device_id,))
                        self._db.executemany("INSERT INTO device_groups VALUES (?, ?)",
                                             [(device_id, g) for g in group_list])
                        # in the change's transaction: no change stands unaudited
                        written = self._append_audit(actor, "device.groups", device_id,
                                                     {"groups": group_list})
                        self._db.execute("COMMIT")
                else:
                    self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            if known:
                self._notify(written)
        if not known:
            raise KeyError(f"Device {device_id!r} is not registered.")
        return group_list

    @contextlib.contextmanager
    def _check_group_change(self, device_id: str, before: list[str],
                            after: list[str]) -> Iterator[None]:
        """The registry's :meth:`~edgewise.registry.Registry.group_change` for this data
        directory's registry (refused on entry; its floors committed when the block, which
        writes the groups, exits without an exception); nothing (and nothing made) where there
        is none."""
        reg = self._group_registry()
        if reg is None:
            yield
            return
        with reg.group_change(device_id, before, after):
            yield

    def _group_registry(self) -> Registry | None:
        """This data directory's registry, for group changes (under ``self._lock``): opened
        at the first change and kept, as opening one runs its schema script, migration
        probes and blob sweep; opened again only when ``registry.sqlite`` is another file
        than the one opened (replaced, or deleted and made again: while the kept connection
        holds the old file open, no new file can have its inode). ``None``, and nothing made,
        while there is no such file."""
        try:
            st = (self.data_dir / "registry" / "registry.sqlite").stat()
        except OSError:
            st = None
        seen = (st.st_dev, st.st_ino) if st is not None and stat.S_ISREG(st.st_mode) else None
        if self._registry is not None and seen != self._registry_file:
            self._registry.close()
            self._registry, self._registry_file = None, None
        if self._registry is None and seen is not None:
            from edgewise.registry import Registry

            self._registry, self._registry_file = Registry(self.data_dir), seen
        return self._registry

    def device_groups(self, device_id: str) -> list[str]:
        """The groups an admin put the device in, sorted (empty if none or not registered)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT grp FROM device_groups WHERE device_id = ? ORDER BY grp", (device_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def delete_device(self, device_id: str, *, actor: str = "cli") -> None:
        """Remove a device's credentials and groups, and its wrong secrets not yet written
        (a device registered again under the id starts from none). ``KeyError`` if it is
        not registered."""
        with self._write_tx() as written:
            cur = self._db.execute("DELETE FROM devices WHERE id = ?", (device_id,))
            self._db.execute("DELETE FROM device_groups WHERE device_id = ?", (device_id,))
            if cur.rowcount:
                written += self._append_audit(actor, "device.delete", device_id, None)
            for key in [k for k in self._wrong if k[0] == device_id]:
                del self._wrong[key]
        if cur.rowcount == 0:
            raise KeyError(f"Device {device_id!r} is not registered.")

    def rotate_device_secret(self, device_id: str, *, actor: str = "cli") -> str:
        """Give a registered device a new secret (a new salt and hash) and return it, shown
        only here. The old secret stops working at once: HTTP looks the secret up at every
        request, and checks again, before the commit, that a request authenticated with it
        still has the device's credential tag; a live MQTT connection made with it no longer carries the device's
        credential tag (:meth:`device_credential`), so the gateway refuses its messages and
        closes it (a gateway in another process within its revocation poll). The device's
        id, groups, data and count of wrong secrets stay. Audited as
        ``device.rotate_secret``, in the same transaction (if the entry cannot be written,
        the secret is not replaced).

        ``KeyError`` naming the device when it is not registered (never was, or was
        deleted: a deleted device gets a new secret only by being added again).

        >>> import tempfile
        >>> sec = Security(Path(tempfile.mkdtemp()))
        >>> _, old = sec.add_device("pump-1")
        >>> new = sec.rotate_device_secret("pump-1")
        >>> sec.authenticate_device("pump-1", new) == sec.credential_tags(["pump-1"])["pump-1"]
        True
        >>> sec.authenticate_device("pump-1", old)
        Traceback (most recent call last):
        ...
        edgewise.errors.AuthError: Device 'pump-1' is unknown or the secret is wrong.
        >>> sec.rotate_device_secret("pump-2")
        Traceback (most recent call last):
        ...
        KeyError: "Device 'pump-2' is not registered; its secret cannot be rotated (register it with: edgewise device add pump-2)."
        >>> sec.close()
        """  # noqa: E501
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._write_tx() as written:
            cur = self._db.execute(
                "UPDATE devices SET salt = ?, secret_hash = ? WHERE id = ?",
                (salt, _hash(salt, secret), device_id))
            kept = cur.rowcount == 0 and self._db.execute(
                "SELECT 1 FROM kept_data WHERE device_id = ?", (device_id,)).fetchone()
            if cur.rowcount:  # one transaction: never a new secret unaudited
                written += self._append_audit(actor, "device.rotate_secret", device_id, None)
        if cur.rowcount == 0:
            if kept:
                raise KeyError(
                    f"Device {device_id!r} was deleted (its credentials revoked, its stored "
                    f"data kept until it is deleted); a deleted device has no secret to "
                    f"rotate: delete its data, then register it again with: edgewise "
                    f"device add {device_id}.")
            raise KeyError(f"Device {device_id!r} is not registered; its secret cannot be "
                           f"rotated (register it with: edgewise device add {device_id}).")
        return secret

    def keep_data(self, device_id: str) -> None:
        """Note that ``device_id`` was deleted while a gateway held its data (``edgewise
        device delete`` beside a running gateway revokes only): :meth:`add_device` refuses
        the id until :meth:`data_deleted` says the data is gone. A new device under the old
        id would otherwise be acknowledged the old device's seq watermark and forget
        messages that were never stored.

        >>> import tempfile
        >>> sec = Security(Path(tempfile.mkdtemp()))
        >>> sec.keep_data("pump-9"); sec.data_kept("pump-9")
        True
        >>> sec.add_device("pump-9")
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: Device 'pump-9' was deleted, but its stored data was kept ...
        >>> sec.data_deleted("pump-9"); sec.add_device("pump-9")[0]
        'pump-9'
        >>> sec.close()
        """  # noqa: E501
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO kept_data VALUES (?, ?)",
                             (device_id, time.time_ns()))

    def data_kept(self, device_id: str) -> bool:
        """Whether :meth:`keep_data` noted the device and no deletion of its data followed."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM kept_data WHERE device_id = ?",
                                    (device_id,)).fetchone() is not None

    def data_deleted(self, device_id: str) -> None:
        """Note that the device's stored data was deleted (undoes :meth:`keep_data`)."""
        with self._lock:
            self._db.execute("DELETE FROM kept_data WHERE device_id = ?", (device_id,))

    def has_device(self, device_id: str) -> bool:
        """Whether ``device_id`` is registered."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone()
        return row is not None

    def list_devices(self) -> list[DeviceRecord]:
        """Every registered device, by id; ``failures`` is the wrong secrets sent in its
        name since it was registered (this process's counted at once, other processes'
        within about a second)."""
        self.flush_wrong_secrets()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, created_ns, wrong_secrets FROM devices ORDER BY id"
            ).fetchall()
            groups: dict[str, list[str]] = {}
            for dev, grp in self._db.execute(
                    "SELECT device_id, grp FROM device_groups ORDER BY grp"):
                groups.setdefault(dev, []).append(grp)
        return [DeviceRecord(*r, groups=tuple(groups.get(r[0], ()))) for r in rows]

    def authenticate_device(self, device_id: str, secret: str, *,
                            source: str | None = None) -> bytes:
        """Return the device's credential tag (:meth:`device_credential`) if ``secret`` is
        ``device_id``'s; raise :class:`AuthError` otherwise. Pass the tag on to what acts
        later on the request (:meth:`~edgewise.gateway.pipeline.Pipeline.ingest`), so a
        secret replaced meanwhile is refused there too.

        ``source`` is where the attempt comes from (the peer's address; an IPv6 one counts
        by its /64, :func:`source_key`). Wrong secrets are counted per source, not per
        device: after ``throttle_after`` in a run from one source its further wrong
        secrets get :class:`ThrottledError` (with a pause that doubles up to 300 s)
        instead of :class:`AuthError`. A right secret ends the source's run only when
        every wrong secret of the run named that same device (a device that got its own
        secret wrong, then right); a run that named other ids goes on, so a valid login
        of one's own device does not reset the count of guesses at others. The throttle
        counts and flags; it does not slow anyone down, and the right secret always
        passes, so nobody can lock a device out by sending wrong secrets in its name. An
        unknown device id and a wrong secret get the same answer at the same cost (a
        dummy hash, no write), so the answer never tells which ids are registered; a
        registered device's wrong secrets are also counted for display
        (:meth:`list_devices`), in memory first and written a second later.
        """
        return self.device_credential(device_id, secret, source=source)

    def device_credential(self, device_id: str, secret: str, *,
                          source: str | None = None) -> bytes:
        """As :meth:`authenticate_device`, and return the device's credential tag: it
        changes whenever the device's secret does (deleted, added again, replaced), so a
        connection opened with it can be checked later (:meth:`credential_tags`)."""
        if not device_id or not secret:
            raise AuthError("Device credentials missing: both a device id and a secret are needed.")
        tag, registered = self._check_secret(device_id, secret)
        key = source_key(source)
        # the monotonic clock: pauses are in memory only, and by the wall clock a step back
        # (NTP, a VM restored) lengthened every pause running by the step
        now = time.monotonic_ns()
        with self._lock:
            failures, until, attempts, sole = self._sources.pop(key, (0, 0, 0, device_id))
            if tag is not None:
                if failures and sole != device_id:  # the run named others: it goes on
                    self._remember(key, (failures, until, attempts, sole), now)
                return tag
            if registered is not None:  # same work for an unknown id but this dict write
                wrong = (device_id, registered)
                self._wrong[wrong] = self._wrong.get(wrong, 0) + 1
            self._flush_soon()
            sole = sole if sole == device_id else ""
            if until > now:
                self._remember(key, (failures, until, attempts + 1, sole), now)
                wait = (until - now) / 1e9
                raise ThrottledError(
                    f"{failures} wrong device secrets in a row from {source or 'this caller'}; "
                    f"wrong secrets are refused for {wait:.0f} s more (a right one passes).",
                    retry_after_s=wait,
                )
            failures += 1
            until = 0
            if failures >= self.throttle_after:
                pause = min(_MAX_PAUSE_S, 2.0 ** min(20, failures - self.throttle_after))
                until = now + int(pause * 1e9)
            self._remember(key, (failures, until, attempts, sole), now)
        raise AuthError(f"Device {device_id!r} is unknown or the secret is wrong.")

    def _remember(self, key: str, entry: tuple[int, int, int, str], now: int) -> None:
        """Put ``key``'s entry at the recent end of the source table (caller holds the
        lock); over the cap, forget the least recently seen source that is not paused
        (a paused one only when every source is)."""
        self._sources[key] = entry
        if len(self._sources) <= _MAX_SOURCES:
            return
        victim = next(iter(self._sources))
        for k, (_, until, _, _) in self._sources.items():
            if until <= now:
                victim = k
                break
        del self._sources[victim]

    def _flush_soon(self) -> None:
        """Write the pending wrong-secret counts in about a second, off the answering
        path (caller holds the lock)."""
        if self._flush_timer is None:
            self._flush_timer = threading.Timer(_FLUSH_AFTER_S, self.flush_wrong_secrets)
            self._flush_timer.daemon = True
            self._flush_timer.start()

    def flush_wrong_secrets(self) -> None:
        """Add the wrong secrets counted in memory to the devices' ``wrong_secrets``
        column, each to the registration of the id it was counted for (a device deleted
        meanwhile, also when registered again since, is skipped).

        Never waits for another writer of the file (the lock held meanwhile would hold up
        every authentication in this process): while one holds it, the counts wait for the
        next flush, a second later."""
        with self._lock:
            pending, self._wrong = self._wrong, {}
            self._flush_timer = None
            if not pending:
                return
            wait = None  # the busy timeout to put back
            try:
                if not self._tx_levels:  # (else in this thread's transaction: written in it)
                    wait = int(self._db.execute("PRAGMA busy_timeout").fetchone()[0])
                    self._db.execute("PRAGMA busy_timeout=0")
                self._db.executemany(
                    "UPDATE devices SET wrong_secrets = wrong_secrets + ? "
                    "WHERE id = ? AND created_ns = ?",
                    [(n, dev, created) for (dev, created), n in pending.items()])
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):  # another writer: next time
                    for k, n in pending.items():
                        self._wrong[k] = self._wrong.get(k, 0) + n
                    self._flush_soon()
                # else closed: the counts are for display only
            except sqlite3.Error:  # closed: the counts are for display only
                pass
            finally:
                if wait is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute(f"PRAGMA busy_timeout={wait}")

    def throttled_attempts(self, source: str | None = None) -> int:
        """Wrong secrets from ``source`` refused while it was paused (this process only)."""
        with self._lock:
            return self._sources.get(source_key(source), (0, 0, 0, ""))[2]

    def _check_secret(self, device_id: str, secret: str) -> tuple[bytes | None, int | None]:
        """The credential tag when ``secret`` is ``device_id``'s, else ``None``, and when
        ``device_id`` is registered, its registration's ``created_ns`` (else ``None``); the
        same work (one read, one hash, one comparison) whether the device exists or not."""
        with self._lock:
            row = self._db.execute(
                "SELECT salt, secret_hash, created_ns FROM devices WHERE id = ?", (device_id,)
            ).fetchone()
        salt, stored, created = row if row is not None else (
            self._dummy_salt, self._dummy_hash, None)
        ok = hmac.compare_digest(_hash(salt, secret), stored)
        return (_tag(salt, stored) if ok and row is not None else None), created

    def credential_tags(self, device_ids: Iterable[str]) -> dict[str, bytes]:
        """The credential tag of each registered device of ``device_ids`` (see
        :meth:`device_credential`); a device that is not registered is left out."""
        ids = sorted(set(device_ids))
        out: dict[str, bytes] = {}
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows = self._db.execute(
                    f"SELECT id, salt, secret_hash FROM devices WHERE id IN "
                    f"({', '.join('?' * len(chunk))})", chunk,
                ).fetchall()
                out.update((dev, _tag(salt, stored)) for dev, salt, stored in rows)
        return out

    # -- tokens ------------------------------------------------------------------------
    def create_token(self, role: str, name: str = "", *, actor: str = "cli") -> str:
        """Make an API token with ``role``; return it (shown once, only its hash is kept).

        ``name`` (by default the role) says who or what uses it: at most
        :data:`MAX_TOKEN_NAME` characters, no control or invisible format characters, not
        blank or only dashes, not of a token id's form (8 hex digits), so that :meth:`revoke_token` never takes it
        for another token's id, and none of :data:`RESERVED_TOKEN_NAMES` (the names the
        gateway acts under itself, in any case); else :class:`InvalidParameterError`
        (``field="name"``). The token and its ``token.create`` audit entry are written in
        one transaction: if the entry cannot be written, no token is made.

        >>> import tempfile, pathlib
        >>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
        >>> sec.create_token("viewer", "5b0205fc")
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: The 'name' of an API token must not look like a token id (8 hex digits, as 'edgewise token list' shows ids): 'token revoke' takes a name or an id. Got '5b0205fc' instead; e.g. 'ci-5b0205fc'.
        """  # noqa: E501
        if role not in ROLE_RANK:
            raise InvalidParameterError(
                f"The 'role' parameter must be one of 'admin', 'operator', 'viewer'. "
                f"Got {role!r} instead.", field="role", value=role,
            )
        _check_token_name(name)
        name = name or role
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write_tx() as written:  # one transaction: never a token unaudited
            token_id = self._insert_token(token, role, name)
            written += self._append_audit(actor, "token.create", token_id,
                                          {"role": role, "name": name})
        return token

    def _insert_token(self, token: str, role: str, name: str) -> str:
        """In a write transaction: store ``token`` with ``role`` and ``name`` (both checked
        already) under a new id, record that this data dir has issued a token (so
        :meth:`ensure_admin_token` never makes one again), and return the id."""
        if self._db.execute("SELECT 1 FROM tokens WHERE id = ?", (name,)).fetchone():
            raise InvalidParameterError(  # an id of another form, from an old database
                f"The 'name' of an API token must not be another token's id. Got "
                f"{name!r}, the id of an existing token, instead.",
                field="name", value=name)
        while True:  # never an id that is a token's name (one made before this rule)
            token_id = secrets.token_hex(4)
            if not self._db.execute("SELECT 1 FROM tokens WHERE id = ? OR name = ?",
                                    (token_id, token_id)).fetchone():
                break
        self._db.execute(
            "INSERT INTO tokens (token_hash, id, name, role, created_ns) VALUES (?, ?, ?, ?, ?)",
            (hashlib.sha256(token.encode()).digest(), token_id, name, role, time.time_ns()),
        )
        self._db.execute("INSERT OR IGNORE INTO audit_meta VALUES (?, ?)",
                         (_TOKENS_ISSUED, token_id))
        return token_id

    def authenticate_token(self, token: str) -> Principal:
        """The principal owning ``token``; :class:`AuthError` if none does."""
        if not token:
            raise AuthError("API token missing: send 'Authorization: Bearer <token>'.")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, id FROM tokens WHERE token_hash = ?", (digest,)
            ).fetchone()
        if row is None:
            raise AuthError("API token not recognised.")
        return Principal(*row)

    def check_token_active(self, who: Principal) -> None:
        """Raise :class:`AuthError` unless ``who``'s token is still issued (not revoked since
        it was authenticated): for answers that outlive their request's check, such as a
        streamed export, so that a revocation cuts them off at their next step.

        >>> import tempfile, pathlib
        >>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
        >>> who = sec.authenticate_token(sec.create_token("viewer", "grafana"))
        >>> sec.check_token_active(who)
        >>> _ = sec.revoke_token(who.token_id, by_id=True)
        >>> sec.check_token_active(who)
        Traceback (most recent call last):
        ...
        edgewise.errors.AuthError: API token 'grafana' (id ...) was revoked; ... new token.
        """
        with self._lock:
            row = self._db.execute("SELECT 1 FROM tokens WHERE id = ?",
                                   (who.token_id,)).fetchone()
        if row is None:
            raise AuthError(f"API token {who.name!r} (id {who.token_id}) was revoked; what "
                            f"it was reading stops here: ask an admin for a new token.")

    def list_tokens(self) -> list[TokenRecord]:
        """Every API token, oldest first: id, name, role, created (never the secret)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, role, created_ns FROM tokens ORDER BY created_ns, id"
            ).fetchall()
        return [TokenRecord(*r) for r in rows]

    def revoke_token(self, name_or_id: str, *, actor: str = "cli",
                     by_id: bool = False) -> TokenRecord:
        """Revoke the token with id ``name_or_id`` or, if no id is that, the one so named
        (with ``by_id``: only the one with that id); return it. Takes effect at once: tokens
        are looked up on every request.

        Refused (:class:`InvalidParameterError`, ``field="name_or_id"``) if no token has it,
        if several tokens have that name, or if it is one token's id and another's name (a
        name made before names of an id's form were refused): revoke by id, ``by_id=True``.

        >>> import tempfile, pathlib
        >>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
        >>> _ = sec.create_token("viewer", "grafana")
        >>> tok = sec.revoke_token(sec.list_tokens()[0].id, by_id=True)
        >>> (tok.name, sec.list_tokens())
        ('grafana', [])
        """
        cols = "SELECT id, name, role, created_ns FROM tokens"
        with self._write_tx() as written:
            by_ids = self._db.execute(f"{cols} WHERE id = ?", (name_or_id,)).fetchall()
            by_names = [] if by_id else [r for r in self._db.execute(
                f"{cols} WHERE name = ? ORDER BY created_ns, id", (name_or_id,)
            ).fetchall() if r not in by_ids]
            rows = by_ids + by_names
            if len(rows) == 1:
                self._db.execute("DELETE FROM tokens WHERE id = ?", (rows[0][0],))
                written += self._append_audit(actor, "token.revoke", rows[0][0],
                                              {"role": rows[0][2], "name": rows[0][1]})
                known = []
            else:
                known = [r[0] for r in self._db.execute(
                    "SELECT DISTINCT name FROM tokens ORDER BY name")]
        if not rows:
            what = "id" if by_id else "name or id"
            raise InvalidParameterError(
                f"No API token has the {what} {name_or_id!r}. Known names: "
                f"{', '.join(map(repr, known)) or 'none'} (ids: edgewise token list).",
                field="name_or_id", value=name_or_id,
            )
        if by_ids and by_names:
            named = ", ".join(f"token {r[0]} (role {r[2]})" for r in by_names)
            raise InvalidParameterError(
                f"{name_or_id!r} is both the id of token {by_ids[0][0]} (name "
                f"{by_ids[0][1]!r}, role {by_ids[0][2]}) and the name of {named}; nothing was "
                f"revoked. Revoke by id: edgewise token revoke --id "
                f"{' or --id '.join(r[0] for r in rows)}.",
                field="name_or_id", value=name_or_id,
            )
        if len(rows) > 1:
            raise InvalidParameterError(
                f"{len(rows)} API tokens are named {name_or_id!r} (ids "
                f"{', '.join(r[0] for r in rows)}); revoke one by its id.",
                field="name_or_id", value=name_or_id,
            )
        return TokenRecord(*rows[0])

    def ensure_admin_token(self) -> str | None:
        """At the data dir's first start (no API token was ever issued in it), make and
        return an admin token named ``first-admin``; else ``None``, also when every admin
        token was revoked since: a restart never undoes that (:meth:`has_admin_token` tells).

        >>> import tempfile, pathlib
        >>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
        >>> sec.ensure_admin_token().startswith("ew_")
        True
        >>> sec.revoke_token("first-admin").role
        'admin'
        >>> sec.ensure_admin_token() is None, sec.has_admin_token()
        (True, False)
        """
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        # the check, the token and its audit entry are one transaction: made once, audited
        with self._write_tx() as written:
            if self._db.execute("SELECT 1 FROM audit_meta WHERE key = ?",
                                (_TOKENS_ISSUED,)).fetchone() is not None:
                return None
            token_id = self._insert_token(token, "admin", "first-admin")
            written += self._append_audit("first-start", "token.create", token_id,
                                          {"role": "admin", "name": "first-admin"})
        return token

    def has_admin_token(self) -> bool:
        """Whether an admin token (not revoked) exists."""
        with self._lock:
            return self._db.execute(
                "SELECT 1 FROM tokens WHERE role = 'admin' LIMIT 1").fetchone() is not None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold ``security.sqlite``'s write transaction for the ``with`` block: what the block
        audits (:meth:`audit`), and every other change it makes through this object, commits
        when the block exits, and not at all when it raises.

        Audit an action on another database (the registry, the store) in it: take it
        first, do the action, then :meth:`audit` it. The entry then cannot fail for the
        file's write lock (taken on entry: another writer holding it past the busy timeout
        fails the block before the action is done), and an action that fails takes its
        entry back with it. Only the commit itself failing (a full disk, an I/O error) can
        still leave the action done and not audited. The lock is held to the end of the
        block, by this object in this process too (every authentication here waits for
        it), so keep the action short; a long one writes its entry first instead.

        >>> import tempfile, pathlib
        >>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
        >>> with sec.transaction():
        ...     done = "the action"  # e.g. a registry's rollout
        ...     sec.audit("cli", "example.action", "pump-1")
        >>> try:
        ...     with sec.transaction():
        ...         sec.audit("cli", "example.action", "pump-2")
        ...         raise RuntimeError("the action failed")
        ... except RuntimeError:
        ...     pass
        >>> [e.target for e in sec.audit_log()]
        ['pump-1']
        >>> sec.close()
        """
        with self._write_tx():
            yield

    @contextlib.contextmanager
    def _write_tx(self) -> Iterator[list[AuditEntry]]:
        """One write transaction of ``security.sqlite``: under this object's lock, a
        ``BEGIN IMMEDIATE`` committed when the block exits (also by ``return``), else rolled
        back, unless SQLite already did (a full disk), and the block's own error raised.
        Inside this thread's own open transaction (:meth:`transaction`) it is a savepoint
        of it: rolled back alone when its block raises, committed with the transaction.

        It yields a list for the audit entries the block appends (``written +=
        self._append_audit(...)``): an action and its entry commit together or not at all
        (an entry that cannot be written undoes the action), and the
        :attr:`audit_listeners` hear of the entries once the transaction has committed."""
        with self._lock:
            written: list[AuditEntry] = []
            if self._tx_levels:  # this thread's transaction is open (the lock is its)
                outer = self._tx_levels[-1]
                self._tx_levels.append(written)
                try:
                    self._db.execute("SAVEPOINT nested")
                    try:
                        yield written
                        self._db.execute("RELEASE nested")
                    except BaseException:
                        if self._db.in_transaction:
                            with contextlib.suppress(sqlite3.Error):
                                self._db.execute("ROLLBACK TO nested")
                                self._db.execute("RELEASE nested")
                        raise
                finally:
                    self._tx_levels.pop()
                outer += written  # heard of when the outermost transaction commits
                return
            self._tx_levels.append(written)
            began = False
            try:
                with write_transaction(self._db):
                    began = True
                    yield written
            except sqlite3.OperationalError as exc:
                # BEGIN IMMEDIATE refused (another writer held the lock past the busy
                # timeout): nothing was done, so the caller may say so and retry; an error of
                # the block itself (began) is raised as it is
                if began or isinstance(exc, SecurityBusyError) or not is_busy(exc):
                    raise
                raise SecurityBusyError(
                    f"Another writer held {str(self.path)!r} past the busy timeout "
                    f"({SECURITY_RETRY_S} s): {exc}; nothing was written.", path=self.path,
                ) from exc
            finally:
                self._tx_levels.pop()
            self._notify(written)

    def _notify(self, written: list[AuditEntry]) -> None:
        """Hand each entry of ``written`` (just committed) to every audit listener (the
        caller holds the lock, so they hear of entries in commit order); a listener that
        raises is logged, never failing what was audited."""
        for listener in list(self.audit_listeners):
            for entry in written:
                try:
                    listener(entry)
                except Exception:  # forwarding must never fail what was audited
                    log.exception("audit listener %r failed on entry %d", listener,
                                  entry.id)

    # -- audit -------------------------------------------------------------------------
    def _chain_old_audit(self) -> None:
        """Give an audit table made before the hash chain its ``prev_hash`` and ``hash``
        columns, chain its entries once in id order, and append an ``audit.chain_start``
        entry saying how many there were (once, also when several processes open the file
        together: the check and the change are one ``BEGIN IMMEDIATE`` transaction).

        Entries written before the chain existed are protected from this migration on
        only: what was done to them before it cannot be told. Gaps among their ids are
        not reported by :meth:`verify_audit` (ids missing before the chain existed).
        """
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(audit)")}
        if {"prev_hash", "hash"} <= columns:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(audit)")}
            if not {"prev_hash", "hash"} <= columns:  # not done by another process meanwhile
                for col in ("prev_hash", "hash"):
                    if col not in columns:
                        self._db.execute(f"ALTER TABLE audit ADD COLUMN {col} TEXT")
                rows = self._db.execute(
                    "SELECT id, ts_ns, actor, action, target, detail FROM audit ORDER BY id"
                ).fetchall()
                self._chain_rows(rows, AUDIT_GENESIS)
                # entries written and deleted before the chain leave ids behind: the marker
                # goes in then too, so the first chained id is not taken for a deletion
                try:
                    used = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = "
                                            "'audit'").fetchone()
                except sqlite3.OperationalError:  # no AUTOINCREMENT row was ever written
                    used = None
                if rows or (used is not None and used[0]):
                    self._append_audit("edgewise", _CHAIN_START, "audit", {
                        "entries": len(rows), "first_id": rows[0][0] if rows else None,
                        "last_id": rows[-1][0] if rows else None,
                        "note": "entries up to last_id were written before the hash chain "
                                "and are protected from this entry's time on only"})
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def audit(self, actor: str, action: str, target: str = "",
              detail: dict[str, Any] | None = None) -> None:
        """Append one entry to the audit log, chained to the newest one
        (:func:`audit_hash`).

        The newest entry's hash is read and the new entry written in one ``BEGIN IMMEDIATE``
        transaction, so writers in this process (the lock) and in others (the CLI beside a
        running gateway: SQLite's write lock) cannot fork the chain. Inside
        :meth:`transaction` (this thread's), the entry is written in that transaction and
        commits with it.

        >>> import tempfile, pathlib
        >>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
        >>> sec.audit("cli", "example.action", "pump-1", {"why": "doc"})
        >>> e = sec.audit_log(1)[0]
        >>> e.hash == audit_hash(e.prev_hash, e.id, e.ts_ns, e.actor, e.action, e.target,
        ...                      e.detail)
        True
        """
        with self._write_tx() as written:
            written += self._append_audit(actor, action, target, detail)

    def _chain_rows(self, rows: list[tuple[Any, ...]], prev: str) -> str:
        """Give ``rows`` (id, ts_ns, actor, action, target, detail; id order) their hashes,
        chained from ``prev``; return the last hash (the caller holds a write transaction)."""
        for entry_id, ts_ns, actor, action, target, detail in rows:
            h = audit_hash(prev, entry_id, ts_ns, actor, action, target, _load_detail(detail))
            self._db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?",
                             (prev, h, entry_id))
            prev = h
        return prev

    def _append_audit(self, actor: str, action: str, target: str,
                      detail: dict[str, Any] | None) -> list[AuditEntry]:
        """Insert one chained entry (the caller holds the lock and a write transaction);
        return the entries inserted (an ``audit.unchained_taken_in`` marker before it, if
        one was needed).

        The id comes from ``AUTOINCREMENT``: never reused, so newest entries deleted show as
        a gap once a later entry is written (unless ``sqlite_sequence`` was rewound too).
        """
        text = json.dumps(detail or {}, default=str)
        row = self._db.execute("SELECT id, hash FROM audit WHERE hash IS NOT NULL "
                               "ORDER BY id DESC LIMIT 1").fetchone()
        prev = row[1] if row is not None else AUDIT_GENESIS
        # entries after it without a hash were written by an older Edgewise still running
        # beside this one (during an upgrade): chained here and named in a marker entry, so
        # the chain goes on and the log says which entries it took in unchecked
        loose = self._db.execute(
            "SELECT id, ts_ns, actor, action, target, detail FROM audit WHERE hash IS NULL "
            "AND id > ? ORDER BY id", (row[0] if row is not None else 0,)).fetchall()
        prev = self._chain_rows(loose, prev)
        written: list[AuditEntry] = []
        if loose and action != _UNCHAINED:
            written += self._append_audit("edgewise", _UNCHAINED, "audit", {
                "ids": [r[0] for r in loose],
                "note": "written without a hash (an older Edgewise writing this file); "
                        "chained when the next entry was written"})
            prev = self._db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1"
                                    ).fetchone()[0]
        ts_ns = time.time_ns()
        entry_id = self._db.execute(
            "INSERT INTO audit (ts_ns, actor, action, target, detail, prev_hash) "
            "VALUES (?, ?, ?, ?, ?, ?)", (ts_ns, actor, action, target, text, prev),
        ).lastrowid
        stored = json.loads(text)
        digest = audit_hash(prev, entry_id, ts_ns, actor, action, target, stored)
        self._db.execute("UPDATE audit SET hash = ? WHERE id = ?", (digest, entry_id))
        written.append(AuditEntry(int(entry_id or 0), ts_ns, actor, action, target, stored,
                                  prev, digest))
        return written

    def audit_log(self, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
        """The newest ``limit`` audit entries with ids below ``before_id`` (all: ``None``),
        newest first, each with its hashes: pass the last one's id as the next
        ``before_id`` to page down to entry 1."""
        below, args = ("WHERE id < ? ", (before_id,)) if before_id is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_LISTED} FROM audit {below}ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_listed(row) for row in rows]

    def newest_audit(self, action: str, targets: Iterable[str]) -> dict[str, AuditEntry]:
        """The newest entry of ``action`` for each of ``targets`` that has one, by target, in
        one query (:meth:`audit_log` pages through every entry: seconds for a log of
        200,000 label writes).

        >>> import tempfile, pathlib
        >>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
        >>> sec.audit("cli", "device.delete_data", "pump-1", {"rows": 1})
        >>> sec.audit("token:7:ops", "device.delete_data", "pump-1", {"rows": 2})
        >>> {t: e.actor for t, e in sec.newest_audit("device.delete_data",
        ...                                          ["pump-1", "x"]).items()}
        {'pump-1': 'token:7:ops'}
        >>> sec.close()
        """
        wanted = sorted(set(targets))
        found: dict[str, AuditEntry] = {}
        for i in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            part = wanted[i:i + 500]
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {_LISTED} FROM audit "
                    f"WHERE action = ? AND target IN ({','.join('?' * len(part))}) "
                    "ORDER BY id DESC", (action, *part)).fetchall()
            for row in rows:
                entry = _listed(row)
                if entry.target not in found:
                    found[entry.target] = entry
        return found

    def verify_audit(self, expect: str | None = None) -> AuditVerification:
        """Walk the audit chain from its first entry; report the first break.

        Each entry's hash must match its content and its ``prev_hash`` (:func:`audit_hash`),
        each ``prev_hash`` must be the hash of the entry before (the genesis value for the
        first) and ids must follow each other without gaps (a database chained by the
        migration may have gaps before its ``audit.chain_start`` entry). So an entry edited,
        deleted or inserted in ``security.sqlite`` is found, unless whoever did it also
        recomputed every hash after it: the chain has no secret. A chain alone cannot
        show either that the newest entries were deleted (until a later entry is written:
        ids are never reused). Record the head (``result.head``, ``ID:HASH``) somewhere
        else and pass it back as ``expect``: the entry with that id must still have that
        hash, which catches both. Nothing here catches entries appended after the recorded
        head by someone who writes the file and hashes them right: the chain shows that
        what is up to a recorded head is unchanged, not who wrote what came after.

        One pass over every entry, streamed from a read-only snapshot of the file: writers
        are not held up, and memory does not grow with the log.

        ``InvalidParameterError`` if ``expect`` is not ``ID:HASH``.

        >>> import tempfile, pathlib
        >>> sec = Security(pathlib.Path(tempfile.mkdtemp()))
        >>> sec.audit("cli", "example.action")
        >>> result = sec.verify_audit()
        >>> result.ok, result.checked, result.head_id
        (True, 1, 1)
        >>> sec.verify_audit(expect=result.head).ok
        True
        """
        anchor = parse_audit_head(expect) if expect is not None else None
        # its own read-only connection, in one read transaction (a snapshot, WAL mode): the
        # rows are streamed, not held, and nobody waits for this object's lock meanwhile
        db = sqlite3.connect(self.read_uri, uri=True, timeout=10.0, isolation_level=None)
        db.text_factory = _audit_text  # text that is not UTF-8 is an edit, found at its entry
        try:
            db.execute("BEGIN")
            start = db.execute("SELECT MIN(id) FROM audit WHERE action = ?",
                               (_CHAIN_START,)).fetchone()[0]
            newest = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1"
                                ).fetchone()
            rows = db.execute("SELECT id, ts_ns, actor, action, target, detail, prev_hash, "
                              "hash FROM audit ORDER BY id")
            return _walk_chain(rows, start or 0, anchor, newest)
        finally:
            db.close()

    def close(self) -> None:
        """Write the pending wrong-secret counts and close the database; safe to call
        twice."""
        timer = self._flush_timer
        if timer is not None:
            timer.cancel()
        with contextlib.suppress(sqlite3.ProgrammingError):
            self.flush_wrong_secrets()
        with self._lock:
            if self._flush_timer is not None:  # armed again: another writer held the file
                self._flush_timer.cancel()
            if self._registry is not None:
                self._registry.close()
                self._registry = None
            self._db.close()
