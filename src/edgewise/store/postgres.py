"""The scale-out store: PostgreSQL through psycopg 3.

Same promises as the DuckDB store (see :mod:`edgewise.store.base`). Each ``append`` is one
transaction: the batch is copied (``COPY``) into a per-connection temporary staging table,
the keys already stored are looked up through the primary key, and new rows go in with
``INSERT … ON CONFLICT DO NOTHING``, so two gateway processes writing the same device can
never store a key twice; a conflict (a key's new value) is recorded once the same way, on a
unique index, and counted by the writer that recorded it. A connection that breaks (server
restart) is reopened on the next call; the call that hit the break raises
:class:`~edgewise.errors.StoreError` and none of it is committed.

The URL may carry ``?schema=name``: the tables then live in that schema (created if
missing), which lets tests and several deployments share one database.

Opening a store issues only the DDL it is missing (the schema, a table, an index, a
migration of an older store), after looking in the catalogue, so a least-privilege role
runs it: one that owns only its schema (the tables are made there at the first open), or
one with only ``SELECT, INSERT, UPDATE, DELETE`` on tables an admin made (by opening the
store once). DDL refused for want of a privilege fails with the statement, the privilege
it needs and how to do it once as an admin.

The seq watermark is kept in memory per process, loaded at open and advanced by this
process's commits. Several gateway processes may serve one device in turn: an append
whose seqs do not follow what this process's tracker holds (a seq whose predecessor it
has not seen), or that repeats a seq it holds, or of a device it has not seen, first looks
that device up in the tables (:meth:`~PostgresStore._sync_seqs`: one statement, only on
such a miss), so the watermark it answers counts the seqs the other processes stored. A
seq still missing after two such look-ups counts as lost: the appends do not look it up
again (but once after a deletion), :meth:`~PostgresStore.recheck_seq_gaps` at most every
:attr:`~PostgresStore.RECHECK_EVERY_S`, so a device with lost seqs costs no more per
message than one without.
:meth:`~PostgresStore.stored_seqs` is exact all the same: the seqs this process's tracker
does not hold are looked up in the tables. Every device deletion adds one to the store's
deletion generation (``ew_meta``, :data:`DELETIONS`; no device id is kept, so a purge
leaves none in the files): a process whose seq state of a device predates the
generation checks, on that look-up, that the tables still hold its watermark; where they
do not, the device was deleted since, and its state is loaded again from the tables (and
named in :attr:`~edgewise.store.base.AppendResult.reset`), and it is never folded into
``seq_marks`` (which would acknowledge the old watermark to the device registered again).
The watermark acked to a device that subscribes before its first message is checked so
too (:meth:`~PostgresStore.recheck_seq_watermark`). Each process folds the ``seqs`` rows
it stored (one per message) into ``seq_marks`` and ``seq_runs`` (one row per run of seqs
above a gap) from what the tables hold (:meth:`~PostgresStore._compact_seqs`), under the
devices' advisory locks, which a deletion takes too, :data:`COMPACT_CHUNK` devices per
transaction; a store opened with ``create=False`` (a command's), or by a role that may not
write the seq tables (SELECT only), folds none.

A device's ``device_stats`` row is the lock that orders the writers of its rows. A
deletion (after the device's advisory lock) and retention (of the devices whose first
reading is older than its cut) lock it before they delete any row of the device, several
devices' in id order, as an append locks the rows of every device of its batch, in its
statement inserting the readings and before it stores a conflict or a seq (a device none
of whose readings it stores, only seqs, a conflict or duplicates, gets a row of 0
readings, which :meth:`~PostgresStore.devices` leaves out); :meth:`~PostgresStore.add_alert`
locks it (made so where missing) before it inserts the alert. So a deletion waits for an
append or an alert of the device in flight and deletes what it committed, whatever that
stored, and a deletion and retention of one device never wait for each other's rows (each
deleted its readings in its own order, by the primary key or by the table's pages, and
they deadlocked).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from edgewise.config import scrubbed
from edgewise.errors import StoreError
from edgewise.store import shown_url, userinfo_end
from edgewise.store._batch import Columns, Prepared, SeqTracker, check_text_args, classify_batch
from edgewise.store._sql import (
    _ALERT_COLUMNS,
    DEVICE_TABLES,
    EVENT_COUNTER,
    RAISED_COUNTER,
    STORE_ID,
    TRIMMED,
    SQLStoreMixin,
    _alert_from_row,
    _before,
    _marks_to_move,
    _with_times,
    acknowledge_alert_query,
    alert_by_id,
    before_where,
    duplicate_alert_error,
    insert_alert,
    mark_merged,
    merge_changes,
    new_store_id,
    one_device_id,
    prune_events_where,
    recorded_cut,
    update_alert_query,
)
from edgewise.store._sql import one_line as _one_line
from edgewise.store.base import Alert, AppendResult, Conflict, DeviceSummary
from edgewise.telemetry import Reading

__all__ = ["PostgresStore"]

#: The ``ew_meta`` key of the store's deletion generation: :meth:`PostgresStore.delete_device`
#: adds one to it in its transaction (none: 0), so a gateway process sharing the store
#: checks the seq state it loaded before (:meth:`PostgresStore._sync_seqs`) once more.
DELETIONS = "devices_deleted"

#: Takes a device's advisory lock (the store's schema, the device id) until the
#: transaction ends: a deletion of the device and the compactions of its seqs
#: (:meth:`PostgresStore._compact_seqs`) of every process take it, so they never overlap.
_DEVICE_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema()), hashtext(%s))"

#: Locks the ``device_stats`` rows of the devices given (``%s``: text[] of ids), in id order,
#: each made with 0 readings where it has none: a deletion's and an alert's first row lock,
#: and an append's that stores no reading. The upsert waits for an append in flight that
#: wrote a row, and for one that made it (a device's first append), which a ``SELECT …
#: FOR UPDATE`` does not see and would not wait for.
_HOLD_STATS = ('INSERT INTO device_stats SELECT d, 0, NULL, NULL FROM unnest(%s::text[]) '
               'AS u(d) ORDER BY d COLLATE "C" ON CONFLICT (device_id) DO UPDATE SET '
               "readings = device_stats.readings")

#: Folds the seqs of the devices given (``%s``: text[]) that the tables hold, in one
#: statement (one snapshot): each device's mark, runs and seqs rows are joined into
#: disjoint runs (an interval union: a run starts where it is more than one past every
#: earlier run's end); the run from 1 becomes its mark (never lowered), the others its
#: ``seq_runs`` rows, and the rows read are deleted. Answers each device's mark.
_FOLD = (
    "WITH d AS (SELECT DISTINCT u.d FROM unnest(%s::text[]) AS u(d)), "
    "r AS (SELECT m.device_id AS d, 1::bigint AS lo, m.watermark AS hi FROM seq_marks m "
    "JOIN d ON m.device_id = d.d WHERE m.watermark >= 1 "
    "UNION ALL SELECT x.device_id, x.lo, x.hi FROM seq_runs x JOIN d ON x.device_id = d.d "
    "UNION ALL SELECT s.device_id, s.seq, s.seq FROM seqs s JOIN d ON s.device_id = d.d "
    "WHERE s.seq >= 1), "
    "o AS (SELECT d, lo, hi, max(hi) OVER (PARTITION BY d ORDER BY lo, hi "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach FROM r), "
    "g AS (SELECT d, lo, hi, sum(CASE WHEN reach IS NULL OR lo > reach + 1 THEN 1 ELSE 0 END) "
    "OVER (PARTITION BY d ORDER BY lo, hi ROWS UNBOUNDED PRECEDING) AS run FROM o), "
    "i AS (SELECT d, min(lo) AS lo, max(hi) AS hi FROM g GROUP BY d, run), "
    "marks AS (INSERT INTO seq_marks SELECT i.d, i.hi FROM i WHERE i.lo = 1 "
    "ON CONFLICT (device_id) DO UPDATE "
    "SET watermark = greatest(seq_marks.watermark, excluded.watermark)), "
    "gone AS (DELETE FROM seq_runs x USING d WHERE x.device_id = d.d), "
    "runs AS (INSERT INTO seq_runs SELECT i.d, i.lo, i.hi FROM i WHERE i.lo > 1), "
    "folded AS (DELETE FROM seqs s USING d WHERE s.device_id = d.d) "
    "SELECT d.d, coalesce((SELECT i.hi FROM i WHERE i.d = d.d AND i.lo = 1), 0) FROM d"
)

#: Devices one transaction of :meth:`PostgresStore._compact_seqs` folds at most: it takes
#: one advisory lock per device, and PostgreSQL's lock table holds some
#: ``max_locks_per_transaction`` × ``max_connections`` (6,400 by default) for the whole
#: server, so a fleet's fold in one transaction (15,000 devices at a gateway's restart)
#: failed with "out of shared memory".
COMPACT_CHUNK = 1_000

#: Readings one transaction of :meth:`PostgresStore.delete_before` (retention) trims at
#: most, counted by the devices' ``device_stats`` (all their readings: the most it may
#: delete of them), whole devices at a time; a device with more is a transaction alone.
RETENTION_CHUNK = 50_000


def _retention_chunks(found: Sequence[tuple[str, int]]) -> list[list[str]]:
    """``found`` (device, readings; in id order) cut into the chunks retention trims one
    transaction each: whole devices, in order, some :data:`RETENTION_CHUNK` readings and at
    most :data:`COMPACT_CHUNK` devices each; a device with more readings than that is a
    chunk alone (:meth:`PostgresStore._trim_oldest` trims it in batches first: joined to
    the devices before it, it was deleted in one transaction).

    >>> _retention_chunks([("a", 30_000), ("b", 30_000), ("c", 10), ("d", 90_000)])
    [['a', 'b'], ['c'], ['d']]
    """
    chunks: list[list[str]] = []
    size = 0
    limit = max(1, int(RETENTION_CHUNK))
    for device_id, n in found:
        if not chunks or size >= limit or n > limit or len(chunks[-1]) >= max(
                1, int(COMPACT_CHUNK)):
            chunks.append([])
            size = 0
        chunks[-1].append(device_id)
        size += max(int(n), 1)
    return chunks

#: The columns of a store's ``readings`` table that show a schema's ``readings`` to be
#: an Edgewise store's (:meth:`PostgresStore._refuse_foreign`).
_STORE_COLUMNS = ("device_id", "metric", "ts_ns", "value", "seq")

#: ``metric`` is one of the device's (``%s``, twice: its id) metrics, found by one probe
#: of the primary key per metric (a loose index scan): with it a query of every metric
#: in a time window reads one index range per metric, not the device's whole history.
_EVERY_METRIC = (
    "metric = ANY(ARRAY(WITH RECURSIVE m(x) AS (SELECT min(r.metric) FROM readings r "
    "WHERE r.device_id = %s UNION ALL SELECT (SELECT min(r.metric) FROM readings r "
    "WHERE r.device_id = %s AND r.metric > m.x) FROM m WHERE m.x IS NOT NULL) "
    "SELECT x FROM m WHERE x IS NOT NULL))"
)

#: The (device ``d``, metric ``x``) pairs of the devices given (``%s``: text[]) that hold
#: readings, each device's metrics found by one probe of the primary key per metric (as
#: :data:`_EVERY_METRIC` does, but from the last: each probe meets a metric's newest
#: readings, not the index entries of the oldest that retention deleted before, which it
#: would walk): retention deletes each pair's readings before its cut as one range of the
#: primary key. Asked by device and time alone, PostgreSQL read every reading of the
#: table (a sequential scan: 364 ms to delete 380 of 4 million readings, each hourly
#: pass) or of the devices.
_EACH_METRIC = (
    "(SELECT h.d, m.x FROM unnest(%s::text[]) AS h(d), LATERAL unnest(ARRAY("
    "WITH RECURSIVE m(x) AS (SELECT max(r.metric) FROM readings r WHERE r.device_id = h.d "
    "UNION ALL SELECT (SELECT max(r.metric) FROM readings r WHERE r.device_id = h.d "
    "AND r.metric < m.x) FROM m WHERE m.x IS NOT NULL) "
    "SELECT x FROM m WHERE x IS NOT NULL)) AS m(x))"
)

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

log = logging.getLogger(__name__)

#: The tables :meth:`PostgresStore.purge` rewrites: every one that holds a device's rows.
_PURGED_TABLES = (*DEVICE_TABLES, "device_stats", "device_metrics")

_TABLES = [
    """CREATE TABLE IF NOT EXISTS ew_meta (key text PRIMARY KEY, value text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS readings (
        device_id text COLLATE "C" NOT NULL, metric text COLLATE "C" NOT NULL,
        ts_ns bigint NOT NULL, value double precision NOT NULL, seq bigint,
        PRIMARY KEY (device_id, metric, ts_ns))""",
    """CREATE TABLE IF NOT EXISTS seqs (
        device_id text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (device_id, seq))""",
    """CREATE TABLE IF NOT EXISTS seq_marks (
        device_id text PRIMARY KEY, watermark bigint NOT NULL)""",
    # the stored seqs above a device's mark folded into their runs lo..hi (inclusive), one
    # row per run (PostgresStore._compact_seqs); made empty in older stores, whose seqs
    # rows the first open folds
    """CREATE TABLE IF NOT EXISTS seq_runs (
        device_id text NOT NULL, lo bigint NOT NULL, hi bigint NOT NULL)""",
    # per-device totals kept up to date by append and the deletes, so that devices() does
    # not aggregate the whole readings table on every dashboard request
    """CREATE TABLE IF NOT EXISTS device_stats (
        device_id text COLLATE "C" PRIMARY KEY, readings bigint NOT NULL,
        first_ns bigint, last_ns bigint)""",
    """CREATE TABLE IF NOT EXISTS device_metrics (
        device_id text COLLATE "C" NOT NULL, metric text COLLATE "C" NOT NULL,
        PRIMARY KEY (device_id, metric))""",
    """CREATE TABLE IF NOT EXISTS conflicts (
        device_id text NOT NULL, metric text NOT NULL, ts_ns bigint NOT NULL,
        stored_value double precision NOT NULL, new_value double precision NOT NULL,
        seq bigint, received_ns bigint NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alerts (
        id text PRIMARY KEY, device_id text NOT NULL, start_ns bigint NOT NULL,
        end_ns bigint NOT NULL, score double precision NOT NULL, kind text NOT NULL,
        drivers text NOT NULL, message text NOT NULL, created_ns bigint NOT NULL,
        status text NOT NULL, label text, acked_by text, labelled_by text, note text,
        merged_into text, raised_seq bigint)""",
    # the outbox of acknowledgements and labels (Store.alert_events), written with them;
    # ids come from ew_meta's EVENT_COUNTER (no sequence: a role with only SELECT, INSERT,
    # UPDATE, DELETE on the tables writes them, and its row lock orders them by commit)
    """CREATE TABLE IF NOT EXISTS alert_events (
        id bigint PRIMARY KEY, alert_id text NOT NULL, device_id text NOT NULL,
        event text NOT NULL, actor text NOT NULL, at_ns bigint NOT NULL,
        detail text NOT NULL)""",
    # the devices whose old readings delete_before took, with its latest cut (see
    # Store.trimmed_before); made empty in older stores: what they deleted before is unknown
    """CREATE TABLE IF NOT EXISTS trimmed (
        device_id text PRIMARY KEY, before_ns bigint NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS alert_events_device ON alert_events (device_id)""",
    """CREATE INDEX IF NOT EXISTS seq_runs_device ON seq_runs (device_id, lo)""",
    """CREATE INDEX IF NOT EXISTS alerts_device ON alerts (device_id, start_ns)""",
    # list_alerts' order and keyset (start_ns, created_ns, id): a page deep in the list is
    # an index range read, not a sort of every alert
    """CREATE INDEX IF NOT EXISTS alerts_listing ON alerts (start_ns, created_ns, id)""",
    # the alerts raised after a number (Store.raised_alerts: the alert webhooks' reads) by
    # an index range read; in a store made before raise numbers the column is added first
    # (:meth:`PostgresStore._set_up`)
    """CREATE INDEX IF NOT EXISTS alerts_raised ON alerts (raised_seq)""",
    # the alerts merged into one (Store.absorbed, a merge's moves, merged_into IS NULL of
    # the listing's live alerts) by an index read, not a scan of every alert; in a store
    # made before merges the column is added first (:meth:`PostgresStore._set_up`)
    """CREATE INDEX IF NOT EXISTS alerts_merged ON alerts (merged_into)""",
]

#: One conflict (a key's new value) is recorded once, whichever of several writers sees it
#: first: stores made before this index get their repeated rows removed (the earliest
#: received kept) when the index is made, once, at open.
_CONFLICTS_UNIQUE = [
    """DELETE FROM conflicts a USING conflicts b
       WHERE a.device_id = b.device_id AND a.metric = b.metric AND a.ts_ns = b.ts_ns
         AND a.new_value = b.new_value
         AND (a.received_ns, a.ctid) > (b.received_ns, b.ctid)""",
    """CREATE UNIQUE INDEX IF NOT EXISTS conflicts_unique
       ON conflicts (device_id, metric, ts_ns, new_value)""",
    """DROP INDEX IF EXISTS conflicts_key""",  # the unique index serves its lookups
    """INSERT INTO ew_meta VALUES ('conflicts_unique', '1')""",
]

#: The meta keys of the migrations an older store gets once (all present in a new one).
_MIGRATED = ("schema_version", "device_stats", "alerts_merged_into", "conflicts_unique",
             EVENT_COUNTER, STORE_ID, RAISED_COUNTER)

#: What a role needs on every table of the store (the README's least-privilege set-up);
#: checked at open (:meth:`PostgresStore._check_rights`).
_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE")

_CREATES = re.compile(r"CREATE (?:UNIQUE )?(TABLE|INDEX) IF NOT EXISTS (\w+)(?: ON (\w+))?")


def _made(stmt: str) -> tuple[str, str, str | None]:
    """(kind, name, table indexed) of a ``CREATE … IF NOT EXISTS`` statement.

    >>> _made(_TABLES[0])
    ('table', 'ew_meta', None)
    >>> _made(_TABLES[-1])
    ('index', 'alerts_merged', 'alerts')
    """
    m = _CREATES.match(stmt)
    assert m is not None, stmt
    return m.group(1).lower(), m.group(2), m.group(3)


_STAGE = """CREATE TEMP TABLE IF NOT EXISTS ew_stage (
    device_id text COLLATE "C", metric text COLLATE "C", ts_ns bigint,
    value double precision, seq bigint
) ON COMMIT DELETE ROWS"""


#: a '%' libpq refuses in a URL part: one that starts no %XX escape, or %00
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})|%00")

#: characters a URL's password must carry escaped (see :func:`_split_url`)
_RAW_IN_PASSWORD = {"#": "%23", "/": "%2F", "?": "%3F", "@": "%40"}


def _split_url(url: str) -> tuple[str, str | None, str]:
    """(libpq URL without ``schema``, schema, URL safe to print).

    >>> _split_url("postgresql://ew:pw@db/ew?schema=a")
    ('postgresql://ew:pw@db/ew', 'a', 'postgresql://ew:***@db/ew?schema=a')
    >>> _split_url("postgresql:///ew?host=/run/pg&application_name=edge%20gw&schema=a")[0]
    'postgresql:///ew?host=%2Frun%2Fpg&application_name=edge%20gw'
    >>> _split_url("postgresql://postgres@[::1/db")
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Store URL 'postgresql://postgres@[::1/db' is malformed: Invalid IPv6 URL. Expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME], with an IPv6 host in brackets ([::1]).
    >>> _split_url("postgresql://ew:ab%zz99@db/ew")
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Store URL 'postgresql://ew:***@db/ew': its password holds a '%' that starts no %XX escape (or %00). Write a '%' in the password as %25 (and '@', ':', '/' as %40, %3A, %2F).
    >>> _split_url("postgresql://ew:Se#cr3t@db/ew")
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Store URL 'postgresql://ew:***@db/ew': its password holds a raw '#', which ends the URL's user info early. Write it escaped: '#' as %23 (and '%' as %25).
    """  # noqa: E501
    shown = shown_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise StoreError(
            f"Store URL {shown!r} is malformed: {exc}. Expected "
            "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME], with an IPv6 host in "
            "brackets ([::1])."
        ) from None
    # libpq decodes %XX in the URL's parts and, on a '%' that starts none (or %00), prints
    # the part as is: the password would reach the message whole (one in ?password= is
    # passed on re-encoded, below, so never refused). A raw '#', '?', '/' or '@' in it
    # ends the user info early for urlsplit (or libpq), which then takes the rest of the
    # password for the host, path, query or fragment: refused too, before either parses it
    rest = url.partition("://")[2]
    password = rest[:max(userinfo_end(rest), 0)].partition(":")[2]
    raw = sorted({c for c in password if c in _RAW_IN_PASSWORD})
    if raw:
        raise StoreError(
            f"Store URL {shown!r}: its password holds a raw {' '.join(map(repr, raw))}, "
            "which ends the URL's user info early. Write it escaped: "
            f"{', '.join(f'{c!r} as {_RAW_IN_PASSWORD[c]}' for c in raw)} (and '%' as %25)."
        )
    if _BAD_ESCAPE.search(password):
        raise StoreError(
            f"Store URL {shown!r}: its password holds a '%' that starts no %XX escape (or "
            "%00). Write a '%' in the password as %25 (and '@', ':', '/' as %40, %3A, %2F)."
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    rest = []
    for k, v in query:
        if k == "schema":
            schema = v
        else:
            rest.append((k, v))
    # rebuilt by hand: urlunsplit drops the '//' of an empty host (postgresql:///db, a Unix
    # socket) and urlencode writes a space as '+', which libpq does not decode
    conninfo = f"postgresql://{parts.netloc}{parts.path}"
    if rest:
        conninfo += "?" + urlencode(rest, quote_via=quote)
    if parts.fragment:
        conninfo += "#" + parts.fragment
    if schema is not None and not _SCHEMA_RE.match(schema):
        raise StoreError(
            f"Store URL {shown!r}: schema must be 1-63 letters, digits or '_', not starting "
            f"with a digit. Got {schema!r} instead."
        )
    return conninfo, schema, shown


def _quoted(name: str) -> str:
    """``name`` as a PostgreSQL identifier, double-quoted.

    >>> _quoted('ew'), _quoted('a"b')
    ('"ew"', '"a""b"')
    """
    return '"' + name.replace('"', '""') + '"'


def _refresh_device_stats(con: Any, devices: list[str] | None) -> None:
    """Recompute device_stats and device_metrics from readings (all devices when None).

    The devices' rows are locked first in id order, the order an append locks them in
    (device_stats, then device_metrics): deleted in the order of the table's pages, a
    retention pass locked them in another order than two appends did and PostgreSQL
    failed one side as a deadlock (27 of 200 passes beside two writers)."""
    if devices is None:
        con.execute("DELETE FROM device_stats")
        con.execute("DELETE FROM device_metrics")
        con.execute("INSERT INTO device_stats SELECT device_id, count(*), min(ts_ns), "
                    "max(ts_ns) FROM readings GROUP BY device_id")
        con.execute("INSERT INTO device_metrics SELECT DISTINCT device_id, metric FROM readings")
        return
    con.execute("SELECT 1 FROM device_stats WHERE device_id = ANY(%s) ORDER BY device_id "
                "FOR UPDATE", [devices])
    con.execute("SELECT 1 FROM device_metrics WHERE device_id = ANY(%s) "
                "ORDER BY device_id, metric FOR UPDATE", [devices])
    con.execute("DELETE FROM device_stats WHERE device_id = ANY(%s)", [devices])
    con.execute("DELETE FROM device_metrics WHERE device_id = ANY(%s)", [devices])
    con.execute("INSERT INTO device_stats SELECT device_id, count(*), min(ts_ns), max(ts_ns) "
                "FROM readings WHERE device_id = ANY(%s) GROUP BY device_id", [devices])
    con.execute("INSERT INTO device_metrics SELECT DISTINCT device_id, metric FROM readings "
                "WHERE device_id = ANY(%s)", [devices])


def _trimmed_stats(con: Any, got: Sequence[tuple[str, int]], cut: int) -> None:
    """Set device_stats and device_metrics of the devices retention just deleted readings
    of (``got``: device, readings deleted) in the transaction that deleted every reading of
    theirs before ``cut`` (their ``device_stats`` rows locked): the readings counted down,
    the metrics left none dropped, ``first_ns`` each metric's first reading from ``cut``
    on (one probe of the primary key per metric), the rows of a device left none dropped.

    Recounted instead (:func:`_refresh_device_stats`), every pass counted all readings of
    every device it trimmed: 1 s, ingest held meanwhile, to delete the 199 oldest of a
    device's 2 million readings (2 s to find none left after deleting them all), and each
    hourly pass read the whole table. A device whose count and metrics disagree on
    whether any reading is left is recounted."""
    devices = sorted(d for d, _ in got)
    if not devices:
        return
    # locked in the order appends lock them (see _refresh_device_stats)
    con.execute("SELECT 1 FROM device_stats WHERE device_id = ANY(%s) ORDER BY device_id "
                "FOR UPDATE", [devices])
    con.execute("SELECT 1 FROM device_metrics WHERE device_id = ANY(%s) "
                "ORDER BY device_id, metric FOR UPDATE", [devices])
    con.execute("DELETE FROM device_metrics m WHERE m.device_id = ANY(%s) AND NOT EXISTS "
                "(SELECT 1 FROM readings r WHERE r.device_id = m.device_id "
                "AND r.metric = m.metric AND r.ts_ns >= %s)", [devices, cut])
    con.execute(
        "UPDATE device_stats s SET readings = s.readings - g.n, first_ns = (SELECT min(f) "
        "FROM (SELECT (SELECT min(r.ts_ns) FROM readings r WHERE r.device_id = m.device_id "
        "AND r.metric = m.metric AND r.ts_ns >= %s) AS f FROM device_metrics m "
        "WHERE m.device_id = s.device_id) x) "
        "FROM unnest(%s::text[], %s::bigint[]) AS g(d, n) WHERE s.device_id = g.d",
        [cut, [d for d, _ in got], [int(n) for _, n in got]])
    # left none by both counts: the rows go (as a recount leaves them: none); a device the
    # two disagree on (totals off before) is recounted
    odd = con.execute(
        "SELECT device_id, readings = 0 AND first_ns IS NULL FROM device_stats WHERE "
        "device_id = ANY(%s) AND (first_ns IS NULL OR readings <= 0) ORDER BY device_id",
        [devices]).fetchall()
    empty = [d for d, none in odd if none]
    if empty:
        con.execute("DELETE FROM device_stats WHERE device_id = ANY(%s)", [empty])
        con.execute("DELETE FROM device_metrics WHERE device_id = ANY(%s)", [empty])
    if len(empty) < len(odd):
        _refresh_device_stats(con, [d for d, none in odd if not none])


class PostgresStore(SQLStoreMixin):
    """A :class:`~edgewise.store.base.Store` in PostgreSQL.

    Parameters
    ----------
    url
        ``postgresql://user[:password]@host:port/db[?schema=name]``.
    create
        Make the schema and tables when missing (the gateway); ``False`` refuses, before
        any DDL, a schema with no ``readings`` table (a command reading or deleting from
        the store, where a mistyped ``?schema=`` must not make an empty one), and folds
        no gateway's seqs. Either way a schema whose ``readings`` table is not a store's
        (another application's) is refused before any DDL.

    Examples
    --------
    >>> store = PostgresStore("postgresql://postgres@localhost/test?schema=ew")  # doctest: +SKIP
    >>> store.append([Reading("pump-1", "temp_c", 10**18, 21.5)]).stored  # doctest: +SKIP
    1
    """

    _ph = "%s"
    # bigint / bigint truncates toward zero; floor over numeric keeps buckets
    # [k*step, (k+1)*step) for negative ts_ns too
    # integer floor division, as DuckDB's: numeric division rounded the quotient before
    # floor, so a reading 1 ns before midnight went to the next day's bucket (and a step
    # near 2**62 overflowed bigint); '%%' is psycopg's escape of the modulo operator
    _quotient = "(ts_ns / {step} - CASE WHEN ts_ns %% {step} < 0 THEN 1 ELSE 0 END)"
    # A bucket's mean, exact (see SQLStoreMixin._step_sql), from the reading's bits
    # (float8send): w. Its biased exponent e (1 for subnormals) picks the unit,
    # 2**(8*(e // 8) - 1075), and the term is the signed 53-bit mantissa shifted by e % 8
    # (below 2**61); sum(bigint) is numeric, exact. The numeric mean this took before
    # (through text: the shortest decimal, not the double's exact value, and a quotient of
    # some 16 digits) was wrong in the last bit for one bucket in five.
    _word = "('x' || encode(float8send(value), 'hex'))::bit(64)::bigint"
    _unit = "(greatest((w >> 52) & 2047, 1) >> 3) * 8 - 1075"
    _term = ("(CASE WHEN w < 0 THEN -1 ELSE 1 END) * ((w & 4503599627370495 "
             "| CASE WHEN (w >> 52) & 2047 = 0 THEN 0 ELSE 4503599627370496 END) "
             "<< (greatest((w >> 52) & 2047, 1) & 7)::int)")
    _list_agg = "array_agg"

    def __init__(self, url: str, create: bool = True) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StoreError(
                "The PostgreSQL store needs psycopg 3: pip install 'edgewise[postgres]'"
            ) from exc
        self._psycopg = psycopg
        self._db_error = psycopg.Error
        self._conninfo, self.schema, self.url = _split_url(url)
        # serialises writers (held for a whole transaction); guards _marks. _seqs (a
        # SeqTracker) guards itself, so seq_gaps/seq_watermark never wait for a commit
        self._wlock = threading.RLock()
        self._rlock = threading.RLock()
        self._writer: Any = None
        self._reader: Any = None
        # stored_seqs' look-ups, on the ingest path: a connection of their own, so they wait
        # neither for a commit in flight (_wlock) nor for a long dashboard query (_rlock)
        self._seq_reader: Any = None
        self._seq_lock = threading.Lock()
        self._closed = False
        self._seqs = SeqTracker()
        self._marks: dict[str, int] = {}
        self._dirty: set[str] = set()
        # device -> the deletion generation (DELETIONS) its seq state in _seqs was last
        # checked at; a device missing has none here yet, and is looked up in the tables at
        # its first append (_sync_seqs). Guarded by _wlock, as _top is.
        self._gens: dict[str, int] = {}
        # device -> the highest seq this process knows stored (its tracker's top)
        self._top: dict[str, int] = {}
        # devices whose state a gap re-check found deleted since: the next append says so
        self._reset_pending: set[str] = set()
        # device -> (deletion generation, twice, once): at that generation, every seq up to
        # `twice` the tracker misses was looked up in the tables twice by appends, every
        # seq up to `once` at least once (_sync_wanted); guarded by _wlock
        self._looked: dict[str, tuple[int, int, int]] = {}
        # the same, of the append in flight: (generation before its look-up, or None for
        # a device new here, twice, once), kept once it commits (_committed)
        self._looking: dict[str, tuple[int | None, int, int]] = {}
        # device -> (deletion generation, monotonic time of the last look-up of all its
        # gaps, highest seq of a gap recheck_seq_gaps looked up); guarded by _wlock
        self._rechecked: dict[str, tuple[int, float, int]] = {}
        self._appends = 0
        self._unpurged = False  # rows deleted here since the last purge (purge_pending)
        # whether this process folds seqs (_compact_seqs): not a command's store opened
        # with create=False, nor a role that may not write the seq tables
        self._folds = False
        self._writer = self._connect(create=True, new=create)
        try:
            self._load_seq_state(self._writer)
            self._folds = create and self._may_fold(self._writer)
        except psycopg.Error as exc:
            self._writer.close()
            self._writer = None
            raise StoreError(
                f"Cannot open PostgreSQL store {self.url!r}: reading its message seqs "
                f"failed: {_one_line(exc)}. The role needs at least SELECT on every table "
                "of the store's schema (GRANT SELECT ON ALL TABLES IN SCHEMA … TO the role)."
            ) from exc
        try:
            self._compact_seqs()
        except (psycopg.Error, StoreError) as exc:  # housekeeping: the store is open
            log.warning("PostgreSQL store %s: folding the message seqs at open failed; they "
                        "are folded at the next compaction: %s", self.url, _one_line(exc))

    @staticmethod
    def _may_fold(con: Any) -> bool:
        """Whether the role may fold seqs (:meth:`_compact_seqs`): delete from ``seqs``,
        write ``seq_marks`` and ``seq_runs``. A role granted SELECT alone (an analyst
        reading histories) opens the store without folding."""
        needs = [("seqs", "DELETE"), ("seq_marks", "INSERT"), ("seq_marks", "UPDATE"),
                 ("seq_runs", "INSERT"), ("seq_runs", "DELETE")]
        return bool(con.execute(
            "SELECT bool_and(has_table_privilege(format('%%I.%%I', current_schema(), t), p)) "
            "FROM unnest(%s::text[], %s::text[]) AS x(t, p)",
            [[t for t, _ in needs], [p for _, p in needs]]).fetchone()[0])

    @staticmethod
    def _deletions(con: Any) -> int:
        """The store's deletion generation (:data:`DELETIONS`), through ``con``."""
        row = con.execute("SELECT value FROM ew_meta WHERE key = %s", [DELETIONS]).fetchone()
        return int(row[0]) if row else 0

    def _load_seq_state(self, con: Any) -> None:
        """Load the seq tracker, each device's top seq and deletion generation at open,
        from one snapshot (a deletion meanwhile is seen whole or not at all)."""
        with con.transaction():
            con.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            self._load_watermarks(con)
            gen = self._deletions(con)
        for d, w in self._seqs.watermarks().items():
            self._gens[d] = gen
            self._top[d] = max(self._seqs.top(d), self._marks.get(d, 0), w)

    # -- connections ------------------------------------------------------------------------

    def _connect(self, create: bool = False, new: bool = True) -> Any:
        """A connection in the store's schema; ``create`` issues the DDL the store lacks,
        and ``new=False`` first refuses a schema that holds no store."""
        psycopg = self._psycopg
        try:
            con = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(
                f"Cannot connect to PostgreSQL store {self.url!r}: "
                f"{scrubbed(_one_line(exc), self._conninfo)}"
            ) from exc
        try:
            con.execute("SET extra_float_digits = 3")  # float8 as text: its shortest exact form
            if not new:
                self._refuse_no_store(con)
            if self.schema:
                if create:
                    self._ensure_schema(con)
                con.execute(f'SET search_path TO "{self.schema}"')
            if create:
                self._refuse_foreign(con)
                self._check_rights(con)
            if create and self._missing(con):
                with con.transaction():
                    # two processes starting at once must not race on CREATE TABLE; what
                    # is missing is looked up again under the lock
                    con.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema()))")
                    self._set_up(con)
            con.execute(_STAGE)
        except StoreError:
            con.close()
            raise
        except psycopg.Error as exc:
            con.close()
            raise StoreError(
                f"Cannot set up PostgreSQL store {self.url!r}: {_one_line(exc)}"
            ) from exc
        return con

    def _refuse_no_store(self, con: Any) -> None:
        """Raise :class:`StoreError` where the URL's schema (else the first of the search
        path) has no ``readings`` table: nothing is made, so a mistyped ``?schema=`` ends
        in one line instead of an empty store."""
        if self.schema:
            schema = self.schema
        else:
            schema = con.execute("SELECT current_schema()").fetchone()[0]
        if schema is not None and con.execute(
                "SELECT to_regclass(format('%%I.readings', %s::text))",
                [schema]).fetchone()[0] is not None:
            return
        db = con.execute("SELECT current_database()").fetchone()[0]
        raise StoreError(
            f"No Edgewise store at {self.url!r}: schema {schema!r} of database {db!r} has no "
            "readings table (nothing was created). Check the URL's ?schema= (give the URL "
            "the gateway runs with); a new store is made by 'edgewise serve --store URL'."
        )

    def _refuse_foreign(self, con: Any) -> None:
        """Raise :class:`StoreError`, before any DDL, where the store's schema holds a
        ``readings`` table that is not an Edgewise store's (another application's, in a
        shared schema such as ``public``): opening it would make the store's other tables
        beside it and then fail on its columns."""
        row = con.execute(
            "SELECT current_schema(), (SELECT array_agg(a.attname::text ORDER BY a.attnum) "
            "FROM pg_attribute a WHERE a.attrelid = to_regclass(format('%%I.%%I', "
            "current_schema(), %s::text)) AND a.attnum > 0 AND NOT a.attisdropped)",
            ["readings"]).fetchone()
        schema, columns = row[0], list(row[1] or ())
        if not columns or set(_STORE_COLUMNS) <= set(columns):
            return
        shown = ", ".join(columns[:8]) + (", …" if len(columns) > 8 else "")
        raise StoreError(
            f"Cannot open PostgreSQL store {self.url!r}: schema {schema!r} holds a table "
            f"'readings' that is not an Edgewise store's (its columns: {shown}; a store's "
            f"are {', '.join(_STORE_COLUMNS)}), another application's most likely; nothing "
            "was changed. Give the store a schema of its own: ?schema=NAME in the URL, a "
            "schema no other application uses (the gateway makes it at its first open)."
        )

    def _ensure_schema(self, con: Any) -> None:
        """Create the URL's schema if it does not exist (only then: ``CREATE SCHEMA IF NOT
        EXISTS`` needs CREATE on the database even when the schema is there)."""
        if con.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                       [self.schema]).fetchone():
            return
        role, db = con.execute("SELECT current_user, current_database()").fetchone()
        try:
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        except self._psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"Cannot set up PostgreSQL store {self.url!r}: schema {self.schema!r} does not "
                f"exist, and role {role!r} may not create it: CREATE SCHEMA needs CREATE on "
                f"database {db!r} ({_one_line(exc)}). Create it once as an admin: CREATE "
                f'SCHEMA "{self.schema}" AUTHORIZATION "{role}" (the role then makes the '
                f"store's tables in it), or name an existing schema in the URL."
            ) from exc
        except self._psycopg.errors.UniqueViolation:  # made by another process meanwhile
            pass

    def _check_rights(self, con: Any) -> None:
        """Refuse to open, in one line naming the ``GRANT`` to run, where the role lacks
        one of :data:`_RIGHTS` on a table of the store that exists (the ones missing are
        made by this role, which then owns them). A role granted its rights table by
        table, or ``ON ALL TABLES`` (which covers the tables of that moment only), before
        an upgrade made a new table (``alert_events``) opened the store and then failed
        every acknowledgement, label and device deletion ("permission denied"). Only a
        right the role holds on another table of the store counts as missing: a role
        granted SELECT alone (an analyst reading histories) opens as before."""
        tables = [name for kind, name, _ in map(_made, _TABLES) if kind == "table"]
        held = con.execute(
            "SELECT t.name, r.priv, has_table_privilege(format('%%I.%%I', current_schema(), "
            "t.name), r.priv) FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, i) "
            "CROSS JOIN unnest(%s::text[]) WITH ORDINALITY AS r(priv, j) "
            "WHERE to_regclass(format('%%I.%%I', current_schema(), t.name)) IS NOT NULL "
            "ORDER BY t.i, r.j", [tables, list(_RIGHTS)]).fetchall()
        # a right the role holds on some tables and lacks on others: a grant that missed a
        # table (a read-only role, SELECT everywhere and nothing else, reads as before)
        some = {str(right) for _, right, has in held if has}
        rows = [(table, right) for table, right, has in held if not has and right in some]
        if not rows:
            return
        role, schema = con.execute("SELECT current_user, current_schema()").fetchone()
        lacking: dict[str, list[str]] = {}
        for table, right in rows:
            lacking.setdefault(str(table), []).append(str(right))
        said = "; ".join(f"{', '.join(rights)} on table {table!r}"
                         for table, rights in lacking.items())
        on = ", ".join(f"{_quoted(schema)}.{_quoted(t)}" for t in lacking)
        raise StoreError(
            f"Cannot open PostgreSQL store {self.url!r}: role {role!r} lacks {said}, which "
            f"the store needs (a table an upgrade made after the role was granted its "
            f"rights is not covered by that grant). Grant them once as an admin or the "
            f"tables' owner: GRANT {', '.join(_RIGHTS)} ON {on} TO {_quoted(role)};"
        )

    def _missing(self, con: Any) -> list[str]:
        """What opening must still do, from the catalogue: the relations (tables, indexes)
        of :data:`_TABLES` not in the current schema, and the migrations not recorded in
        ``ew_meta``."""
        have = {r[0] for r in con.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema()").fetchall()}
        out = [name for _, name, _ in map(_made, _TABLES) if name not in have]
        done: set[str] = set()
        if "ew_meta" in have:
            done = {r[0] for r in con.execute("SELECT key FROM ew_meta").fetchall()}
        return out + [f"ew_meta:{k}" for k in _MIGRATED if k not in done]

    def _set_up(self, con: Any) -> None:
        """Issue the DDL and migrations :meth:`_missing` finds (in the open transaction,
        under the advisory lock); each refused one names the privilege it needs."""
        missing = set(self._missing(con))
        if not missing:
            return
        role, schema = con.execute("SELECT current_user, current_schema()").fetchone()
        if f"ew_meta:{RAISED_COUNTER}" in missing and "alerts" not in missing:
            # alerts made before they were numbered as raised: the column (NULL: written
            # before, found by creation time) before its index (made below)
            self._add_alerts_column(con, role, "raised_seq", "bigint")
        if "ew_meta:alerts_merged_into" in missing and "alerts" not in missing:
            # alerts made before they could merge: the column before its index
            self._add_alerts_column(con, role, "merged_into", "text")
        made: set[str] = set()
        for stmt in _TABLES:
            kind, name, table = _made(stmt)
            if name not in missing:
                continue
            if kind == "table":
                right = f"CREATE on schema {schema!r}"
            elif table in made:  # an index of a table made just now: its maker owns it
                right = f"CREATE on schema {schema!r}"
            else:
                right = f"ownership of table {table!r}"
            self._ddl(con, stmt, role, right, f"create {kind} {name!r}")
            made.add(name)
        if "ew_meta:schema_version" in missing:
            con.execute("INSERT INTO ew_meta VALUES ('schema_version', '1') "
                        "ON CONFLICT (key) DO NOTHING")
        if "ew_meta:device_stats" in missing:  # stores made before device_stats: fill it
            _refresh_device_stats(con, None)
            con.execute("INSERT INTO ew_meta VALUES ('device_stats', '1')")
        if "ew_meta:alerts_merged_into" in missing:  # alerts made before they could merge
            self._add_alerts_column(con, role, "merged_into", "text")
            con.execute("INSERT INTO ew_meta VALUES ('alerts_merged_into', '1')")
        if f"ew_meta:{EVENT_COUNTER}" in missing:  # made before alert events: none yet
            con.execute("INSERT INTO ew_meta VALUES (%s, '0') ON CONFLICT (key) DO NOTHING",
                        [EVENT_COUNTER])
        if f"ew_meta:{RAISED_COUNTER}" in missing:  # none numbered yet
            con.execute("INSERT INTO ew_meta VALUES (%s, '0') ON CONFLICT (key) DO NOTHING",
                        [RAISED_COUNTER])
        if f"ew_meta:{STORE_ID}" in missing:  # a new store, or one made before store ids
            con.execute("INSERT INTO ew_meta VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                        [STORE_ID, new_store_id()])
        if "ew_meta:conflicts_unique" in missing:  # conflicts made before their unique key
            for stmt in _CONFLICTS_UNIQUE:
                self._ddl(con, stmt, role, "ownership of table 'conflicts'",
                          "give table 'conflicts' its unique index")

    def _add_alerts_column(self, con: Any, role: str, column: str, sql_type: str) -> None:
        """Add ``column`` to a store's ``alerts`` table made before it (an upgrade), unless
        it is there; refused DDL names the statement and the ownership it needs."""
        has = con.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = 'alerts'::regclass "
            "AND attname = %s AND NOT attisdropped", [column]).fetchone()
        if not has:
            self._ddl(con, f"ALTER TABLE alerts ADD COLUMN IF NOT EXISTS {column} {sql_type}",
                      role, "ownership of table 'alerts'", f"add column alerts.{column}")

    def _ddl(self, con: Any, stmt: str, role: str, right: str, what: str) -> None:
        """Run one set-up statement; refused for want of a privilege, raise a
        :class:`StoreError` naming it, the privilege and the way out."""
        try:
            con.execute(stmt)
        except self._psycopg.errors.InsufficientPrivilege as exc:
            flat = " ".join(stmt.split())
            shown = flat if len(flat) <= 80 else flat[:79] + "…"
            raise StoreError(
                f"Cannot set up PostgreSQL store {self.url!r}: role {role!r} needs {right} "
                f"to {what} ({shown}: {_one_line(exc)}). Set the store up once as an admin "
                f"or the tables' owner (open it once with that role, e.g. 'edgewise serve "
                f"--store' with its URL); role {role!r} then needs only SELECT, INSERT, "
                f"UPDATE and DELETE on the store's tables."
            ) from exc

    def _live(self, attr: str) -> Any:
        """The connection in ``self.<attr>``, reopened first if it is missing, closed or broken."""
        self._check_open()
        con = getattr(self, attr)
        if con is None or con.closed or con.broken:
            if con is not None:
                con.close()
            setattr(self, attr, None)  # stays None if reconnecting fails
            setattr(self, attr, self._connect())
        return getattr(self, attr)

    def _write_con(self) -> Any:
        return self._live("_writer")

    def _read_con(self) -> Any:
        return self._live("_reader")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._rlock:
            con = self._read_con()
            try:
                return con.execute(sql, params).fetchall()
            except self._psycopg.Error as exc:
                raise StoreError(f"Query on {self.url!r} failed: {_one_line(exc)}") from exc

    def _stored_elsewhere(self, seqs: dict[str, set[int]]) -> dict[str, set[int]]:
        """Of ``seqs`` (per device, none held by this process's tracker), those the tables
        record as stored (devices with none left out): another gateway process sharing the
        store stored them (or this one, since it was opened, in a commit whose seqs the
        tracker gets just after). One statement for every device, so one round trip and
        one snapshot: a compaction moving seqs into ``seq_marks`` and ``seq_runs``
        meanwhile is seen whole or not at all."""
        devices = [d for d, qs in seqs.items() for _ in qs]
        wanted = [q for qs in seqs.values() for q in qs]
        with self._seq_lock:
            con = self._live("_seq_reader")
            try:
                # the LATERAL ... LIMIT 1 keeps one index probe per pair asked: an
                # EXISTS may be planned as a hash of the whole seqs table instead
                rows = con.execute(
                    "SELECT q.d, q.s FROM unnest(%s::text[], %s::bigint[]) AS q(d, s) "
                    "LEFT JOIN seq_marks m ON m.device_id = q.d "
                    "LEFT JOIN LATERAL (SELECT true AS hit FROM seqs WHERE seqs.device_id "
                    "= q.d AND seqs.seq = q.s LIMIT 1) x ON true "
                    "LEFT JOIN LATERAL (SELECT true AS hit FROM seq_runs r WHERE r.device_id "
                    "= q.d AND r.lo <= q.s AND r.hi >= q.s LIMIT 1) y ON true "
                    "WHERE q.s <= coalesce(m.watermark, 0) OR x.hit OR y.hit",
                    [devices, wanted],
                ).fetchall()
            except self._psycopg.Error as exc:
                shown = sorted(seqs)
                what = (f"device {shown[0]!r}" if len(shown) == 1 else
                        f"{len(shown)} devices ({', '.join(map(repr, shown[:3]))}"
                        f"{', ...' if len(shown) > 3 else ''})")
                raise StoreError(
                    f"Looking up seqs of {what} in {self.url!r} failed: {_one_line(exc)}"
                ) from exc
        out: dict[str, set[int]] = {}
        for device_id, seq in rows:
            out.setdefault(device_id, set()).add(int(seq))
        return out

    def _compact_seqs(self) -> None:
        """Fold the seqs rows (one per message) of the devices this process stored seqs
        of since the last compaction (at open: of every device the table holds rows of)
        into their ``seq_marks`` row (1..watermark) and ``seq_runs`` rows (the runs above
        it), so that a device that lost a message for good keeps one row per run, not one
        per message it sent since.

        What is folded is what the tables hold (:data:`_FOLD`), not this process's
        tracker, which may lack what another process stored, or be the state of a device
        deleted since (whose mark would be acknowledged to the device registered again).
        The devices' advisory locks (:data:`_DEVICE_LOCK`), taken first, in one order,
        serialise it with the other processes' compactions and deletions of them, so
        each device's runs stay disjoint; seqs an append commits meanwhile stay in
        ``seqs`` for the next one. The devices are folded :data:`COMPACT_CHUNK` to a
        transaction (one advisory lock each: the server's lock table is finite), and not
        at all by a store that may not (``create=False``, a SELECT-only role)."""
        with self._wlock:  # guards _marks and _dirty (_seqs guards itself)
            if not self._folds:
                return
            folded = sorted(self._dirty | set(_marks_to_move(self._seqs, self._marks)))
            if not folded:
                return
            con = self._write_con()
            # in chunks, one transaction each (COMPACT_CHUNK): what a chunk folded stays
            # folded if a later one fails
            step = max(1, int(COMPACT_CHUNK))
            for i in range(0, len(folded), step):
                chunk = folded[i:i + step]
                seen = {d: self._seqs.watermark(d) for d in chunk}
                with con.transaction():
                    con.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(current_schema()), k) FROM "
                        "(SELECT DISTINCT hashtext(d) AS k FROM unnest(%s::text[]) AS u(d) "
                        "ORDER BY 1) AS o", [chunk])
                    rows = con.execute(_FOLD, [chunk]).fetchall()
                for d, mark in rows:  # (a mark below the tracker's: deleted; read again)
                    self._marks[d] = max(self._marks.get(d, 0), int(mark), seen[d])
                self._dirty.difference_update(chunk)

    def _sync_seqs(self, con: Any, want: Mapping[str, list[tuple[int, int]]]) -> set[str]:
        """Bring the seq state of the devices of ``want`` up to date with the tables, in
        one statement (one snapshot), through ``con``; return the devices whose state here
        was of a device deleted since, which is loaded again whole from the tables.

        Of a device this process has not seen, everything is read. Of the others, the
        seqs in its ranges of ``want`` (inclusive) and its folded mark: another process
        sharing the store stored them. Where a device was deleted since its state here was
        last checked (the store's deletion generation moved), the tables must also still
        hold its seqs up to this process's watermark; where they do not, the device was
        deleted (and maybe registered again): its state here is the deleted device's. The
        caller holds ``_wlock``."""
        devs: list[str] = []
        los: list[int] = []
        his: list[int] = []
        gs: list[int] = []
        ws: list[int] = []
        for d, ranges in want.items():
            for lo, hi in ranges or [(1, 0)]:  # (1, 0): no seq; the generation only
                devs.append(d)
                los.append(lo)
                his.append(hi)
                gs.append(self._gens.get(d, -1))
                ws.append(self._seqs.watermark(d))
        rows = con.execute(
            "WITH q AS (SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], "
            "%s::bigint[], %s::bigint[]) AS q(d, lo, hi, g, w)), "
            "c AS (SELECT coalesce((SELECT value::bigint FROM ew_meta WHERE key = %s), 0) "
            "AS gen), "
            "v AS (SELECT d, min(g) AS g, min(w) AS w, coalesce((SELECT max(watermark) "
            "FROM seq_marks m WHERE m.device_id = q.d), 0) AS mark FROM q GROUP BY d), "
            # the seqs mark+1..w the tables hold: those of its runs (disjoint), and of its
            # seqs rows those in no run (an append may store a seq a run holds already)
            "x AS (SELECT v.*, c.gen, v.g < 0 OR (v.g <> c.gen AND v.mark < v.w AND "
            "coalesce((SELECT sum(least(r.hi, v.w) - greatest(r.lo, v.mark + 1) + 1) "
            "FROM seq_runs r WHERE r.device_id = v.d AND r.lo <= v.w AND r.hi > v.mark), 0) "
            "+ (SELECT count(*) FROM seqs s WHERE s.device_id = v.d AND s.seq > v.mark "
            "AND s.seq <= v.w AND NOT EXISTS (SELECT 1 FROM seq_runs r WHERE r.device_id "
            "= v.d AND r.lo <= s.seq AND r.hi >= s.seq)) < v.w - v.mark) AS whole FROM v, c) "
            "SELECT x.d, x.gen, x.mark, x.whole, CASE WHEN x.whole "
            "THEN array(SELECT seq FROM seqs WHERE seqs.device_id = x.d) "
            "ELSE array(SELECT s.seq FROM q JOIN seqs s ON s.device_id = q.d "
            "AND s.seq BETWEEN q.lo AND q.hi WHERE q.d = x.d) END, CASE WHEN x.whole "
            "THEN array(SELECT ARRAY[r.lo, r.hi] FROM seq_runs r WHERE r.device_id = x.d) "
            "ELSE array(SELECT ARRAY[greatest(r.lo, q.lo), least(r.hi, q.hi)] FROM q "
            "JOIN seq_runs r ON r.device_id = q.d AND r.lo <= q.hi AND r.hi >= q.lo "
            "WHERE q.d = x.d) END FROM x",
            [devs, los, his, gs, ws, DELETIONS],
        ).fetchall()
        reset: set[str] = set()
        for d, gen, mark, whole, found, spans in rows:
            gen, mark = int(gen), int(mark)
            seqs = [int(x) for x in found or ()]
            runs = [(int(a), int(b)) for a, b in spans or ()]
            seqs_top = max([*seqs, *(b for _, b in runs)], default=0)
            wm = self._seqs.watermark(d)
            top = self._top.get(d, wm)
            self._gens[d] = gen
            if whole or mark >= top:
                # read whole, or all this process knew of it is folded into the mark: exact
                if whole and d in self._top:
                    reset.add(d)
                if whole:  # what was looked up of it is of the state replaced
                    self._looked.pop(d, None)
                    self._rechecked.pop(d, None)
                self._seqs.load(d, mark, seqs, runs)
                self._marks[d] = mark
                self._top[d] = max(mark, seqs_top)
                continue
            covered = [(lo, min(hi, mark)) for lo, hi in want[d] if lo <= mark]
            self._seqs.add(d, seqs, [*runs, *covered])
            self._marks[d] = max(self._marks.get(d, 0), mark)
            self._top[d] = max(top, mark, seqs_top)
        return reset

    def _sync_wanted(
        self, seq_sets: Mapping[str, Iterable[int]],
    ) -> dict[str, list[tuple[int, int]]]:
        """The devices of a batch's ``seq_sets`` whose seq state must be looked up in the
        tables before the batch is stored (:meth:`_sync_seqs`), with the seq ranges to
        read: a device this process has not seen (read whole); one missing seqs below the
        batch's highest that no two appends looked up yet (which another process may have
        stored: a gap new to the tracker, and those between the highest seq it knows and
        the batch's); one with a seq the tracker holds already (a re-delivery, or a device
        deleted and registered again elsewhere: its deletion generation is read).

        A missing seq is looked up by two appends of its device: the one that finds it
        missing, and the next one (which sees it stored by another process whose commit
        raced the first look-up). After that it counts as lost: only
        :meth:`recheck_seq_gaps` looks for it again (at most every
        :attr:`RECHECK_EVERY_S`), and the appends once more after the store's deletion
        generation moved. So a device sending its seqs in order to this process alone
        needs no look-up, gap or not (one that lost a seq for good costs one more
        look-up, not one per message with every gap it ever had). Sets ``_looking`` for
        :meth:`_committed`. The caller holds ``_wlock``."""
        want: dict[str, list[tuple[int, int]]] = {}
        self._looking = {}
        for d, given in seq_sets.items():
            qs = {q for q in given if q >= 1}
            if not qs:
                continue
            hi = max(qs)
            gen = self._gens.get(d)
            if gen is None:
                want[d] = []
                self._looking[d] = (None, 0, hi)  # read whole: each missing seq looked up once
                continue
            twice, once = 0, 0
            if d in self._looked:
                g, twice, once = self._looked[d]
                if g != gen:  # the generation moved: each missing seq looked up once more
                    twice, once = 0, twice
            top = self._top.get(d, self._seqs.watermark(d))
            ranges = [] if twice >= top else [  # the tracker misses no seq above its top
                (max(a, twice + 1), min(b, hi - 1))
                for a, b in self._seqs.gaps(d) if b > twice and a < hi]
            lo = top + 1
            for q in sorted(q for q in qs if q > top):
                if lo < q:
                    ranges.append((lo, q - 1))
                lo = q + 1
            if ranges or self._seqs.stored(d, qs):
                want[d] = ranges
                # those up to `once` now twice, and every one below hi at least once
                self._looking[d] = (gen, max(twice, min(once, hi)), max(once, hi))
            else:  # none missing in twice+1..hi-1
                self._looking[d] = (gen, max(twice, hi), max(once, hi))
        return want

    # -- writes -----------------------------------------------------------------------------

    def _append_tx(self, p: Prepared) -> tuple[AppendResult, dict[str, set[int]]]:
        """Run one append (``append`` holds ``_wlock``) in a transaction on the writer
        connection, which is reopened first if it broke.

        A connection that breaks while the COMMIT is under way leaves the outcome unknown
        (the server may have committed it): that is said, where "rolled back; nothing of
        it is stored" was, which was false when the server had committed it."""
        con = self._write_con()
        sent = False
        try:
            with con.transaction():
                out = self._append_locked(con, p.readings, p.cols, p.seq_sets, p.received_ns)
                sent = True  # the block is done: leaving it sends the COMMIT
        except self._psycopg.OperationalError as exc:
            if not (sent and (con.broken or con.closed)):
                raise
            raise StoreError(
                f"Append of {len(p.readings)} readings to {self.url!r}: the connection broke "
                f"while it was committing, so whether it is stored is unknown (the server may "
                f"have committed it): {_one_line(exc)}. Send it again: what it stored is "
                f"counted as duplicates."
            ) from exc
        return out

    def _append_locked(
        self, con: Any, readings: list[Reading], cols: Columns,
        seq_sets: dict[str, set[int]], received_ns: int,
    ) -> tuple[AppendResult, dict[str, set[int]]]:
        result = AppendResult()
        cur = con.cursor()
        # every device of the batch (its readings', and those it may store seqs of) has
        # its device_stats row locked (made with 0 readings where missing), in one id
        # order, before any conflict or seq of it is stored, so that a deletion of the
        # device waits for this append: one that stored no reading of a device (its seqs
        # only, or a conflict, or duplicates) locked none, and what it stored outlived the
        # deletion
        devices = sorted({*cols.device_id,
                          *(d for d, qs in seq_sets.items() if any(q >= 1 for q in qs))})
        if not readings and devices:
            cur.execute(_HOLD_STATS, [devices])
        if readings:
            rows_in = zip(cols.device_id, cols.metric, cols.ts_ns, cols.value, cols.seq,
                          strict=True)
            if cols.unique_keys:
                first = list(zip(cols.device_id, cols.metric, cols.ts_ns, strict=True))
                unique_rows = list(rows_in)
            else:
                seen: dict[tuple[str, str, int], tuple[Any, ...]] = {}
                for row in rows_in:
                    seen.setdefault(row[:3], row)
                first = list(seen)
                unique_rows = list(seen.values())
            with cur.copy("COPY ew_stage (device_id, metric, ts_ns, value, seq) FROM STDIN") as cp:
                for row in unique_rows:
                    cp.write_row(row)
            # rows are inserted (and their keys locked) in key order, not the batch's: two
            # gateways appending the same keys in opposite orders (a device's re-delivery
            # through the other one) each waited on a key the other held, and PostgreSQL
            # failed one whole append as a deadlock (4 of 5 such rounds of 6,000 readings)
            inserted = cur.execute(
                """WITH ins AS (
                     INSERT INTO readings (device_id, metric, ts_ns, value, seq)
                     SELECT device_id, metric, ts_ns, value, seq FROM ew_stage
                     ORDER BY device_id, metric, ts_ns
                     ON CONFLICT DO NOTHING RETURNING device_id, metric, ts_ns),
                   st AS (
                     INSERT INTO device_stats
                     SELECT device_id, sum(n)::bigint, min(ts_ns), max(ts_ns) FROM (
                       SELECT device_id, 1 AS n, ts_ns FROM ins
                       UNION ALL SELECT d COLLATE "C", 0, NULL::bigint
                       FROM unnest(%s::text[]) AS u(d)) AS a
                     GROUP BY device_id ORDER BY device_id
                     ON CONFLICT (device_id) DO UPDATE SET
                       readings = device_stats.readings + excluded.readings,
                       first_ns = least(device_stats.first_ns, excluded.first_ns),
                       last_ns = greatest(device_stats.last_ns, excluded.last_ns)),
                   dm AS (
                     INSERT INTO device_metrics SELECT DISTINCT device_id, metric FROM ins
                     ORDER BY device_id, metric ON CONFLICT DO NOTHING)
                   SELECT device_id, metric, ts_ns FROM ins""", [devices]
            ).fetchall()
            existing: dict[tuple[str, str, int], float] = {}
            if len(inserted) < len(first):
                # keys stored before this call: fetch their values through the primary key
                missing = set(first) - {(d, m, int(t)) for d, m, t in inserted}
                existing = self._values(cur, list(missing))
                # a key neither inserted nor found was deleted concurrently; count it stored
            lookup = partial(self._known_conflicts, cur)
            c = classify_batch(readings, existing, received_ns, cols.unique_keys, lookup)
            recorded = self._record_conflicts(cur, c.conflicts)
            result.stored = len(inserted)
            done = {(d, m, int(t)) for d, m, t in inserted}
            result.stored_positions = [
                i for i in c.new
                if (readings[i].device_id, readings[i].metric, readings[i].ts_ns) in done]
            # a conflict another writer recorded first is a re-delivery here, as for a
            # conflict recorded before this call
            result.duplicates = (c.duplicates + (len(c.new) - len(inserted))
                                 + (len(c.conflicts) - recorded))
            result.conflicts = recorded
        want = self._sync_wanted(seq_sets)
        if want:  # a miss: the tables first, so that the ack counts what others stored
            self._reset_pending |= self._sync_seqs(cur, want)
        new_seqs = self._seqs.fresh(seq_sets)
        if new_seqs:
            devs = [d for d, s in new_seqs.items() for _ in s]
            nums = [x for s in new_seqs.values() for x in s]
            cur.execute(
                "INSERT INTO seqs SELECT * FROM unnest(%s::text[], %s::bigint[]) AS q(d, s) "
                "ORDER BY d, s ON CONFLICT DO NOTHING",
                [devs, nums],
            )
        return result, new_seqs

    def _committed(
        self, result: AppendResult, new_seqs: Mapping[str, set[int]], p: Prepared
    ) -> AppendResult:
        """As the base's, and then each device's top seq goes up, what the append looked
        up is kept (:meth:`_sync_wanted`), and the devices found deleted since by another
        process (:meth:`_sync_seqs`) are named in ``result.reset``."""
        for d, new in new_seqs.items():
            self._top[d] = max(self._top.get(d, 0), max(new))
        for d, (before, twice, once) in self._looking.items():
            # a generation that moved in this look-up makes the next append look again
            self._looked[d] = (self._gens.get(d, 0) if before is None else before,
                               twice, once)
        self._looking = {}
        result.reset, self._reset_pending = self._reset_pending, set()
        return super()._committed(result, new_seqs, p)

    #: Seconds between two look-ups of all of a device's gaps by :meth:`recheck_seq_gaps`
    #: (the pipeline's gap check asks every second while a device's gap alert is open).
    RECHECK_EVERY_S = 10.0

    def recheck_seq_gaps(self, device_id: str) -> list[tuple[int, int]]:
        """:meth:`seq_gaps`, after looking up its missing seqs in the tables (another
        gateway process sharing the store may have stored them), with the device's
        deletion generation: one statement, and none when this process knows no gap of
        the device. All its gaps are looked up at the first call, then at most every
        :attr:`RECHECK_EVERY_S` seconds, and again once the deletion generation moved;
        in between only the gaps opened above those looked up before (none: no
        statement), so a device that lost thousands of seqs for good is not read again
        at every gap check. Waits for a commit in flight (it takes the write lock)."""
        self._check_open()
        check_text_args("recheck_seq_gaps", device_id=device_id)
        gaps = self._seqs.gaps(device_id)
        if not gaps:
            return gaps
        with self._wlock:
            gaps = self._seqs.gaps(device_id)
            if not gaps:
                return gaps
            gen, now = self._gens.get(device_id, -1), time.monotonic()
            last = self._rechecked.get(device_id)
            if last is None or last[0] != gen or now - last[1] >= self.RECHECK_EVERY_S:
                send, at, upto = gaps, now, 0
            else:
                _, at, upto = last
                send = [(max(a, upto + 1), b) for a, b in gaps if b > upto]
            if send:
                try:
                    self._reset_pending |= self._sync_seqs(self._write_con(),
                                                           {device_id: send})
                except self._psycopg.Error as exc:
                    raise StoreError(f"Looking up the missing seqs of device {device_id!r} in "
                                     f"{self.url!r} failed: {_one_line(exc)}") from exc
            # (read whole meanwhile, a device deleted: the generation moved, all next time)
            self._rechecked[device_id] = (gen, at, max(upto, gaps[-1][1]))
            return self._seqs.gaps(device_id) if send else gaps

    def recheck_seq_watermark(self, device_id: str) -> int:
        """:meth:`seq_watermark`, after checking the device's seq state against the
        tables, as an append of a seq this process holds does: one statement, which reads
        the store's deletion generation (where it moved since this process last checked
        the device, whether the tables still hold its seqs up to the watermark: where they
        do not, the device was deleted through another gateway process and its state is
        read again) and reads a device this process has not seen whole. What the
        embedded broker acks to a device subscribing to its ack topic, before its first
        message: the deleted device's watermark would make a device registered again
        under its id drop seqs it never sent. Waits for a commit in flight (it takes the
        write lock)."""
        self._check_open()
        check_text_args("recheck_seq_watermark", device_id=device_id)
        with self._wlock:
            try:
                self._reset_pending |= self._sync_seqs(self._write_con(), {device_id: []})
            except self._psycopg.Error as exc:
                raise StoreError(f"Checking the seq watermark of device {device_id!r} in "
                                 f"{self.url!r} failed: {_one_line(exc)}") from exc
            return self._seqs.watermark(device_id)

    @staticmethod
    def _values(cur: Any, keys: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], float]:
        if not keys:
            return {}
        rows = cur.execute(
            """SELECT r.device_id, r.metric, r.ts_ns, r.value FROM readings r
               JOIN unnest(%s::text[], %s::text[], %s::bigint[]) AS k(d, m, t)
                 ON r.device_id = k.d AND r.metric = k.m AND r.ts_ns = k.t""",
            [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
        ).fetchall()
        return {(d, m, int(t)): float(v) for d, m, t, v in rows}

    @staticmethod
    def _record_conflicts(cur: Any, conflicts: list[Conflict]) -> int:
        """Insert new conflicts, each once (the unique index waits for a concurrent writer
        of the same one, then skips it); return how many this call recorded."""
        if not conflicts:
            return 0
        columns = list(zip(*(
            (x.device_id, x.metric, x.ts_ns, x.stored_value, x.new_value, x.seq, x.received_ns)
            for x in conflicts), strict=True))
        rows = cur.execute(
            "INSERT INTO conflicts SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], "
            "%s::float8[], %s::float8[], %s::bigint[], %s::bigint[]) AS c(d, m, t, o, n, q, r) "
            "ORDER BY d, m, t, n ON CONFLICT DO NOTHING RETURNING 1",
            [list(col) for col in columns],
        ).fetchall()
        return len(rows)

    @staticmethod
    def _known_conflicts(cur: Any, conflicts: list[Conflict]) -> set[tuple[str, str, int, float]]:
        keys = {(x.device_id, x.metric, x.ts_ns) for x in conflicts}
        rows = cur.execute(
            """SELECT c.device_id, c.metric, c.ts_ns, c.new_value FROM conflicts c
               JOIN unnest(%s::text[], %s::text[], %s::bigint[]) AS k(d, m, t)
                 ON c.device_id = k.d AND c.metric = k.m AND c.ts_ns = k.t""",
            [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
        ).fetchall()
        return {(d, m, int(t), float(v)) for d, m, t, v in rows}

    def _write(self, what: str, statements: list[tuple[str, Sequence[Any]]]) -> list[int]:
        with self._wlock:
            con = self._write_con()
            counts = []
            try:
                with con.transaction():
                    for sql, params in statements:
                        cur = con.execute(sql, params)
                        counts.append(max(cur.rowcount, 0))
            except self._psycopg.Error as exc:
                raise StoreError(f"{what} in {self.url!r} failed: {_one_line(exc)}") from exc
            return counts

    #: Whether a device's deletion (and the gateway's retention) purges by default: not
    #: here, as ``VACUUM FULL`` locks every table of the store against every process for as
    #: long as it rewrites them (about 9 s per million readings measured; minutes for a
    #: large fleet's tables): the operator runs :meth:`purge` in a maintenance window.
    PURGES_BY_DEFAULT = False

    def delete_device(self, device_id: str, *, purge: bool = False) -> int:
        """Delete all of a device's readings, seqs, conflicts and alerts; return rows deleted.

        An append of the device in flight (another process's: its readings, or only its
        seqs) is waited for, and what it stored is deleted too.

        With ``purge=True`` the deleted rows are then purged from the tables' files
        (:meth:`purge`, a ``VACUUM FULL`` that locks the tables meanwhile) when the role
        owns the tables; otherwise a warning says so. By default the rows' bytes stay in
        the files (as dead tuples) until :meth:`purge` runs (:attr:`PURGES_BY_DEFAULT`).
        """
        check_text_args("delete_device", device_id=device_id)
        n = len(DEVICE_TABLES)
        done = self._write(
            f"Deleting device {device_id!r}",
            [
                # first: a compaction of the device (another process's too) is done, or
                # waits for this deletion and then finds none of its rows
                (_DEVICE_LOCK, [device_id]),
                # then its device_stats row, before any other of its rows, as appends and
                # retention lock it: an append of the device in flight (its readings, or
                # only seqs) holds it until it commits and is waited for, and what it
                # committed is deleted below (its seqs outlived the deletion); locked after
                # the rows, it deadlocked with retention deleting the readings in another
                # order, and with an append storing a seq the deletion had deleted
                (_HOLD_STATS, [[device_id]]),
                *((f"DELETE FROM {t} WHERE device_id = %s", [device_id])
                  for t in (*DEVICE_TABLES, "device_stats", "device_metrics")),
                # the next generation: other processes check their seq state again
                (("INSERT INTO ew_meta VALUES (%s, '1') ON CONFLICT (key) DO UPDATE "
                  "SET value = (ew_meta.value::bigint + 1)::text"), [DELETIONS]),
            ],
        )
        # the rows of each table; the device_stats rows are not stored rows, nor is the
        # note of a retention cut
        counts = [c for t, c in zip(DEVICE_TABLES, done[2:2 + n], strict=True) if t != TRIMMED]
        with self._wlock:
            self._seqs.forget(device_id)
            self._marks.pop(device_id, None)
            self._dirty.discard(device_id)
            self._gens.pop(device_id, None)  # looked up again at its next append
            self._looked.pop(device_id, None)
            self._rechecked.pop(device_id, None)
            self._top.pop(device_id, None)
            self._reset_pending.discard(device_id)
            self._unpurged = self._unpurged or bool(sum(counts))
        if sum(counts) and purge:
            self.purge()
        return sum(counts)

    def set_aside_logs(self) -> list[Path]:
        """None: PostgreSQL keeps no files of its own beside the store."""
        return []

    def purge(self) -> bool:
        """Rewrite the tables that hold devices' rows (``VACUUM FULL``) so that deleted
        rows are gone from their files; False (with a warning) when this role may not.

        A deleted row stays in PostgreSQL's table and index files as a dead tuple, and a
        plain ``VACUUM`` leaves most of its bytes in the page; ``VACUUM FULL`` writes each
        table and its indexes to new files and removes the old ones. It locks each table
        (ACCESS EXCLUSIVE) while it runs: readers and writers, of every process, wait
        for it, none fails (about 9 s for a table of a million readings on a busy 2-core
        machine, and free space for a copy of the tables). Only the tables' owner (or a
        superuser) may run it: a least-privilege role gets False and the log says which
        tables and what to run as their owner.

        Not covered: the server's write-ahead log (``pg_wal``, kept until recycled, and
        any WAL archive or replica), backups, and disk blocks the old files leave free.

        >>> store.delete_device("pump-1"); store.purge()  # doctest: +SKIP
        True
        """
        with self._wlock:
            con = self._write_con()
            try:
                not_owned = [r[0] for r in con.execute(
                    "SELECT c.relname FROM pg_class c WHERE c.oid = ANY(%s::regclass[]) "
                    "AND NOT pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY 1",
                    [list(_PURGED_TABLES)]).fetchall()]
                if not_owned:
                    role, schema = con.execute(
                        "SELECT current_user, current_schema()").fetchone()
                    log.warning(
                        "PostgreSQL store %s: deleted rows stay in the files of tables %s "
                        "until VACUUM FULL: role %r does not own them. Run as their owner: "
                        "VACUUM (FULL) %s", self.url, ", ".join(not_owned), role,
                        ", ".join(f'"{schema}".{t}' for t in _PURGED_TABLES))
                    return False
                con.execute(f"VACUUM (FULL) {', '.join(_PURGED_TABLES)}")
                self._unpurged = False  # under _wlock: no deletion of this store came since
            except self._psycopg.Error as exc:
                raise StoreError(
                    f"Purge (VACUUM FULL) of {self.url!r} failed; the deleted rows stay "
                    f"deleted but their bytes remain: {_one_line(exc)}"
                ) from exc
        return True

    def delete_before(
        self, ts_ns: int, device_id: str | None = None, *, purge: bool = False
    ) -> int:
        """Retention: delete readings (and conflicts) older than ``ts_ns``, and the alert
        events written before it (:meth:`prune_alert_events`); return readings.

        Each device that loses readings gets ``ts_ns`` recorded, in the same statement, as
        the cut its history was trimmed at (the latest one kept; :meth:`trimmed_before`,
        until :meth:`delete_device`). With ``purge=True`` the deleted rows are then purged
        from the files (:meth:`purge`).

        The devices are trimmed a chunk at a time (:func:`_retention_chunks`: whole
        devices, some :data:`RETENTION_CHUNK` readings a transaction), each chunk's
        ``device_stats`` rows locked first (see the module's notes): an append of one of its
        devices, by any process, waits for that chunk's commit only, and this process's
        appends go on between chunks. In one transaction, the whole pass held every such
        row (and this process's write lock) until it committed: ingest of the trimmed
        devices waited for all of it (2.9 s for 500,000 readings of 20 devices). A chunk
        that fails leaves the chunks before it committed (their cuts recorded). A device
        with more readings than a chunk is trimmed oldest first, a batch a transaction
        (:meth:`_trim_oldest`), each batch leaving it trimmed at a cut of its own (its
        ``trimmed_before`` until the pass ends). Each chunk reads the readings it deletes
        (one range of the primary key per device and metric) and sets the devices'
        totals without counting their histories (:func:`_trimmed_stats`).
        """
        where, params = before_where(ts_ns, device_id, "%s")
        first, cut = _before("first_ns", ts_ns, "%s")
        cond = _before("ts_ns", ts_ns, "%s")[0]
        first_params: list[Any] = [cut]
        if device_id is not None:
            first += " AND device_id = %s"
            first_params.append(device_id)
        events, event_params = prune_events_where(ts_ns, device_id, "%s")
        with self._wlock:
            try:  # the devices to trim (nothing locked: each chunk locks its own below)
                found = [(d, int(k)) for d, k in self._write_con().execute(
                    f"SELECT device_id, readings FROM device_stats WHERE {first} "
                    "ORDER BY device_id", first_params).fetchall()]
            except self._psycopg.Error as exc:
                raise StoreError(
                    f"Retention delete in {self.url!r} failed: {_one_line(exc)}") from exc
        rows: list[tuple[str, int]] = []
        sizes = dict(found)
        for chunk in _retention_chunks(found):
            if len(chunk) == 1 and sizes[chunk[0]] > max(1, int(RETENTION_CHUNK)):
                # a device with more readings than a chunk: its oldest first, some
                # RETENTION_CHUNK a transaction, then the rest below
                self._trim_oldest(chunk[0], ts_ns, rows)
            with self._wlock:  # released between chunks: this process's appends go on
                con = self._write_con()
                try:
                    with con.transaction():
                        # the chunk's device_stats rows of devices (still) with readings
                        # older than the cut, locked first, in id order, as appends and
                        # deletions lock them; only their readings are deleted (an older
                        # reading of another device committed since is the next pass's).
                        # Locked after the readings, a deletion of one of the devices,
                        # which deleted them in another order (the primary key's), failed
                        # one side as a deadlock.
                        held = [r[0] for r in con.execute(
                            f"SELECT device_id FROM device_stats WHERE {first} AND "
                            "device_id = ANY(%s::text[]) ORDER BY device_id FOR UPDATE",
                            [*first_params, chunk]).fetchall()]
                        got = [(d, int(k)) for d, k in con.execute(
                            # each (device, metric)'s old readings: one range of the
                            # primary key (_EACH_METRIC), not the devices' whole histories
                            f"WITH d AS (DELETE FROM readings r USING {_EACH_METRIC} k "
                            "WHERE r.device_id = k.d AND r.metric = k.x AND "
                            f"r.{cond} RETURNING r.device_id), "
                            f"t AS (INSERT INTO {TRIMMED} (device_id, before_ns) SELECT "
                            "DISTINCT device_id, %s::bigint FROM d ON CONFLICT (device_id) DO "
                            f"UPDATE SET before_ns = greatest({TRIMMED}.before_ns, "
                            "EXCLUDED.before_ns)) SELECT device_id, count(*) FROM d "
                            "GROUP BY device_id",
                            [held, cut, recorded_cut(ts_ns)],
                        ).fetchall()] if held else []
                        if held:
                            con.execute(f"DELETE FROM conflicts WHERE {where} AND device_id "
                                        "= ANY(%s::text[])", [*params, held])
                        _trimmed_stats(con, got, cut)
                except self._psycopg.Error as exc:
                    done = sum(k for _, k in rows)
                    raise StoreError(
                        f"Retention delete in {self.url!r} failed: {_one_line(exc)}. Of this "
                        f"pass {done:,} readings (of {len({d for d, _ in rows}):,} devices, "
                        f"the first in id order) were deleted; the other devices' older "
                        f"readings stay for the next pass."
                    ) from exc
                self._unpurged = self._unpurged or bool(got)
            rows += got
        with self._wlock:
            con = self._write_con()
            try:
                with con.transaction():
                    # the conflicts of the devices no chunk took (their readings were all
                    # newer than the cut), and the old alert events
                    con.execute(f"DELETE FROM conflicts WHERE {where}", params)
                    pruned = max(con.execute(f"DELETE FROM alert_events WHERE {events}",
                                             event_params).rowcount, 0)
            except self._psycopg.Error as exc:
                raise StoreError(
                    f"Retention delete in {self.url!r} failed: {_one_line(exc)}"
                ) from exc
            self._unpurged = self._unpurged or bool(pruned)
        n = sum(int(n) for _, n in rows)
        if (n or pruned) and purge:
            self.purge()
        return n

    def _trim_oldest(self, device_id: str, ts_ns: int, rows: list[tuple[str, int]]) -> None:
        """Retention of one device with a long history before the cut ``ts_ns``: its
        oldest readings deleted in transactions of some :data:`RETENTION_CHUNK` readings,
        each to a cut of its own below ``ts_ns`` (the earliest of the metrics' ``k+1``-th
        oldest reading times, ``k`` the chunk over the device's metrics, so that no metric
        loses more than ``k`` readings), until no metric has more than ``k`` left before
        ``ts_ns`` (the caller's chunk takes them); each batch's (device, readings) is added
        to ``rows``.

        Each batch locks the device's ``device_stats`` row first, as appends and
        deletions do, records its cut in :data:`TRIMMED` and sets the device's totals, so
        between two batches the device is as a retention at that earlier cut leaves it:
        every metric's readings before it deleted, none after, ``trimmed_before`` the cut.
        ``_wlock`` is released between batches: in one transaction, the gateway's ingest
        of every device waited for all of it (5.2 s for 2 million readings of one device).
        Each batch's look-up reads each metric's index from its start, over the entries
        the batch before deleted, which marks them dead for every later scan: left
        unmarked (the look-up started at the batch before's cut), the caller's last
        statement met all of them at once (1 s for 2 million, all deleted).
        """
        cond, cut = _before("ts_ns", ts_ns, "%s")
        while True:
            with self._wlock:
                con = self._write_con()
                try:
                    with con.transaction():
                        con.execute("SELECT 1 FROM device_stats WHERE device_id = %s "
                                    "FOR UPDATE", [device_id])
                        metrics = [r[0] for r in con.execute(
                            "SELECT metric FROM device_metrics WHERE device_id = %s "
                            "ORDER BY metric", [device_id]).fetchall()]
                        k = max(1, int(RETENTION_CHUNK) // max(1, len(metrics)))
                        # each metric's (k+1)-th oldest time before the cut (none: fewer)
                        (upto,) = con.execute(
                            "SELECT min(b) FROM (SELECT (SELECT r.ts_ns FROM readings r "
                            f"WHERE r.device_id = %s AND r.metric = m AND r.{cond} "
                            "ORDER BY r.ts_ns OFFSET %s LIMIT 1) AS b "
                            "FROM unnest(%s::text[]) AS u(m)) x",
                            [device_id, cut, k, metrics]).fetchone()
                        if upto is None:
                            return
                        (n,) = con.execute(
                            "WITH d AS (DELETE FROM readings WHERE device_id = %s AND metric "
                            "= ANY(%s::text[]) AND ts_ns < %s RETURNING 1), "
                            f"t AS (INSERT INTO {TRIMMED} (device_id, before_ns) SELECT %s, "
                            "%s::bigint WHERE EXISTS (SELECT 1 FROM d) ON CONFLICT (device_id) "
                            f"DO UPDATE SET before_ns = greatest({TRIMMED}.before_ns, "
                            "EXCLUDED.before_ns)) SELECT count(*) FROM d",
                            [device_id, metrics, upto, device_id, upto]).fetchone()
                        con.execute("DELETE FROM conflicts WHERE device_id = %s AND ts_ns < %s",
                                    [device_id, upto])
                        _trimmed_stats(con, [(device_id, int(n))], int(upto))
                except self._psycopg.Error as exc:
                    done = sum(k for _, k in rows)
                    raise StoreError(
                        f"Retention delete in {self.url!r} failed: {_one_line(exc)}. Of this "
                        f"pass {done:,} readings (of {len({d for d, _ in rows}):,} devices, "
                        f"the first in id order) were deleted; device {device_id!r} keeps "
                        "its readings from the cut recorded for it (trimmed_before) on, and "
                        "the other devices' older readings stay for the next pass."
                    ) from exc
                self._unpurged = self._unpurged or bool(n)
            rows.append((device_id, int(n)))
            if not n:
                return

    @property
    def purge_pending(self) -> bool:
        """True while rows this store object deleted (a device's, retention's, pruned alert
        events) may keep their bytes in the table files: no :meth:`purge` (``VACUUM FULL``)
        of it has succeeded since. PostgreSQL never purges unasked (:attr:`PURGES_BY_DEFAULT`;
        a plain or auto ``VACUUM`` marks the space free without overwriting it), so after a
        deletion this is True until ``edgewise store purge`` or :meth:`purge`. It knows only
        this object's deletions: another process's, or an earlier run's, it cannot tell."""
        with self._wlock:
            return self._unpurged

    def prune_alert_events(self, before_ns: int, device_id: str | None = None) -> int:
        """Delete the alert events written before ``before_ns`` (of ``device_id`` only,
        when given); return how many (see ``Store.prune_alert_events``; retention,
        :meth:`delete_before`, does it with its cut)."""
        where, params = prune_events_where(before_ns, device_id, "%s")
        (n,) = self._write(f"Pruning the alert events before {int(before_ns)}",
                           [(f"DELETE FROM alert_events WHERE {where}", params)])
        if n:
            with self._wlock:
                self._unpurged = True
        return n

    # -- reads ------------------------------------------------------------------------------

    def _device_where(self, device_id: str, metric: str | None, start_ns: int | None,
                      end_ns: int | None) -> tuple[str, list[Any]]:
        """As the mixin's, and a query of every metric in a time window names the device's
        metrics (:data:`_EVERY_METRIC`), so that each metric's window is one range of the
        primary key (device_id, metric, ts_ns): 1 ms, not the 18 ms of a scan of the
        device's whole history (50,000 readings of each of 4 metrics, its last minute)."""
        if metric is not None or (start_ns is None and end_ns is None):
            return super()._device_where(device_id, metric, start_ns, end_ns)
        return _with_times(["device_id = %s", _EVERY_METRIC], [device_id] * 3,
                           start_ns, end_ns, "%s")

    def devices(self) -> list[DeviceSummary]:
        """Summaries of every device that has readings, sorted by id."""
        rows = self._read(
            "SELECT s.device_id, s.readings, s.first_ns, s.last_ns, "
            "array_remove(array_agg(m.metric), NULL) FROM device_stats s "
            "LEFT JOIN device_metrics m USING (device_id) WHERE s.readings > 0 "
            "GROUP BY s.device_id, s.readings, s.first_ns, s.last_ns ORDER BY s.device_id"
        )
        return [
            DeviceSummary(d, int(n), int(lo), int(hi), sorted(ms)) for d, n, lo, hi, ms in rows
        ]

    def device(self, device_id: str) -> DeviceSummary | None:
        """One device's summary, its entry in :meth:`devices` (``None`` for none): one
        look-up of its rows by their primary keys, not every device's."""
        self._check_open()
        if not one_device_id("device", device_id):
            return None
        rows = self._read(
            "SELECT s.readings, s.first_ns, s.last_ns, array_remove(array_agg(m.metric), NULL) "
            "FROM device_stats s LEFT JOIN device_metrics m USING (device_id) "
            "WHERE s.device_id = %s AND s.readings > 0 "
            "GROUP BY s.readings, s.first_ns, s.last_ns", [device_id])
        if not rows:
            return None
        n, lo, hi, ms = rows[0]
        return DeviceSummary(device_id, int(n), int(lo), int(hi), sorted(ms))

    def count_readings(self) -> int:
        """Total readings stored."""
        return int(self._read("SELECT coalesce(sum(readings), 0) FROM device_stats")[0][0])

    # -- alerts -----------------------------------------------------------------------------

    def add_alert(self, alert: Alert) -> Alert:
        """Store a new alert; fills ``id`` (when empty) and ``created_ns`` and returns it.
        It takes the next raise number (``raised_seq``) in its transaction: the counter's
        row stays locked until the commit, so numbers grow in commit order across every
        process sharing the store.

        The device's ``device_stats`` row is locked first (:data:`_HOLD_STATS`), as a
        deletion locks it before it deletes the device's alerts: an alert raised while the
        device is deleted is waited for and deleted with it, or (raised after) waits for the
        deletion and is stored after it. Without the lock the deletion did not see the
        alert in flight, which committed after it and outlived the device."""
        sql, row = insert_alert(alert, "%s", raised=True)
        with self._wlock:
            con = self._write_con()
            try:
                with con.transaction():
                    con.execute(_HOLD_STATS, [[alert.device_id]])  # before the counter's row
                    con.execute(sql, [*row, self._take_raised_seq(con)])
            except self._psycopg.errors.UniqueViolation as exc:
                # the alerts' key (the only unique one this insert can meet): an id stored
                # already, refused as DuckDB refuses it, nothing written (rolled back)
                if getattr(exc.diag, "table_name", None) not in (None, "alerts"):
                    raise StoreError(f"Storing alert for {alert.device_id!r} in {self.url!r} "
                                     f"failed: {_one_line(exc)}") from exc
                raise duplicate_alert_error(alert, repr(self.url)) from None
            except self._psycopg.Error as exc:
                raise StoreError(f"Storing alert for {alert.device_id!r} in {self.url!r} "
                                 f"failed: {_one_line(exc)}") from exc
        return alert

    def update_alert(self, alert_id: str, **changes: Any) -> Alert:
        """Change an alert's ``status``/``label``/``acked_by``/…; ``KeyError`` if unknown."""
        update = update_alert_query(alert_id, changes, "%s")
        if update is not None:
            (n,) = self._write(f"Updating alert {alert_id!r}", [update])
            if n == 0:
                raise KeyError(alert_id)
        with self._wlock:
            return self._alert_on(self._write_con(), alert_id)

    def acknowledge_alert(self, alert_id: str, by: str, **changes: Any) -> tuple[Alert, bool]:
        """Acknowledge a live alert by ``by`` unless it is acknowledged already, with
        ``changes``, in one conditional UPDATE (a merge holding the row is waited for and
        then seen); the alert as stored and whether the write applied (see
        ``Store.acknowledge_alert``)."""
        sql, params = acknowledge_alert_query(alert_id, by, changes, "%s")
        with self._wlock:
            con = self._write_con()
            try:
                with con.transaction():
                    # locked first: its status before the write decides the events (a
                    # merge holding the row is waited for, then its row read)
                    held = con.execute(f"{alert_by_id('%s')} FOR UPDATE",
                                       [alert_id]).fetchall()
                    if not held:
                        raise KeyError(alert_id)
                    before = _alert_from_row(held[0])
                    row = con.execute(
                        f"{sql} RETURNING {', '.join(_ALERT_COLUMNS)}", params).fetchone()
                    if row is None:  # nothing written: the alert as it stands
                        return before, False
                    after = _alert_from_row(row)
                    # its events commit with it (the webhooks' outbox)
                    self._write_alert_events(con, before, after, by, changes)
            except self._psycopg.Error as exc:
                raise StoreError(
                    f"Acknowledging alert {alert_id!r} in {self.url!r} failed: {_one_line(exc)}"
                ) from exc
            return after, True

    def merge_alert(self, alert_id: str, into: str, **changes: Any) -> Alert:
        """Mark alert ``alert_id`` as part of alert ``into`` and apply ``changes`` to
        ``into``, in one transaction (both rows locked); return ``into`` (see
        ``Store.merge_alert``)."""
        check_text_args("merge_alert", alert_id=alert_id, into=into)
        with self._wlock:
            con = self._write_con()
            try:
                with con.transaction():
                    rows = con.execute(
                        f"{alert_by_id('%s')} OR id = %s FOR UPDATE", [into, alert_id]
                    ).fetchall()
                    found = {r[0]: _alert_from_row(r) for r in rows}
                    for key in (into, alert_id):
                        if key not in found:
                            raise KeyError(key)
                    update = update_alert_query(
                        into, merge_changes(found[into], found[alert_id], changes), "%s")
                    if update is not None:
                        con.execute(*update)
                    # its event commits with it (the webhooks' outbox), read before the mark
                    self._write_merge_event(con, found[alert_id], into)
                    con.execute(*mark_merged(alert_id, into, "%s"))
            except self._psycopg.Error as exc:
                raise StoreError(
                    f"Merging alert {alert_id!r} into {into!r} in {self.url!r} failed: "
                    f"{_one_line(exc)}"
                ) from exc
            return self._alert_on(con, into)

    def get_alert(self, alert_id: str) -> Alert:
        """One alert by id (a merged one too); ``KeyError`` if unknown."""
        check_text_args("get_alert", alert_id=alert_id)
        rows = self._read(alert_by_id("%s"), [alert_id])
        if not rows:
            raise KeyError(alert_id)
        return _alert_from_row(rows[0])

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close both connections; safe to call twice."""
        with self._wlock, self._rlock, self._seq_lock:
            if self._closed:
                return
            try:
                self._compact_seqs()
            except (self._psycopg.Error, StoreError) as exc:  # housekeeping only
                log.warning("PostgreSQL store %s: folding the message seqs at close failed; "
                            "they are folded when a gateway opens the store: %s", self.url,
                            _one_line(exc))
            self._closed = True
            for con in (self._writer, self._reader, self._seq_reader):
                if con is not None:
                    con.close()
            self._writer = self._reader = self._seq_reader = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"
