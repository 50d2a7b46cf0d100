"""The edge agent: read sensors, detect locally, store-and-forward, install signed models.

Three parts, each usable alone:

* :class:`Outbox`: the on-disk buffer (SQLite, WAL, ``synchronous=FULL``) that survives
  ``kill -9`` and power loss. Each accepted message gets the device's next ``seq`` (from 1) in
  the same transaction that stores it, so the counter and the data never disagree. The buffer
  is bounded in bytes; the policy when full is **drop newest**: a message that does not fit is
  counted (``dropped``, exact) and never gets a seq. Dropping the oldest instead would leave a
  hole below the gateway's ack watermark (every seq 1..w stored), which would stall acks.
  What the gateway rejects for good is counted (``rejected``) and kept aside (the newest,
  within ``_REJECTED_BYTES``: each message's first ``_REJECTED_BODY_KEEP`` bytes and its
  size); a gateway that forgot the device gets the pending messages renumbered after its
  ack; a file SQLite cannot read is moved aside (``outbox.sqlite.corrupt-<UTC time>``,
  ``-2`` ... added when that name is taken) and a fresh outbox started. A
  full disk drops (and counts) new messages as the byte bound does. The outbox records the
  device it belongs to (another device is refused it) and one resume position per source.
  On disk it takes at most about ``max_bytes`` plus a fixed margin (:data:`OUTBOX_MARGIN`,
  which holds the ``rejected`` table too): the database's pages in use are bounded as well
  as the messages' counted bytes (SQLite stores by page: a 2 KB message takes a 4 KB page),
  the WAL is checkpointed before it outgrows ``_WAL_LIMIT`` bytes (:func:`_wal_pages`) and
  cut back to it, a put the full disk refuses gives the WAL's room back and tries once more,
  and a ``-reserve`` file (:func:`reserve_bytes`: 512 KB, less for a small outbox) is kept
  beside it and given up when an ack
  finds the disk full, so an ack can always go through and free room. Damage SQLite notices later
  (``database disk image is malformed``) is handled as at open: the file is moved aside, the
  rows and counters that can still be read are copied into a fresh outbox, and it is logged.
* :class:`ModelSlot`: verified, atomic install (write a fresh temp that never follows a link,
  fsync, rename, fsync dir; the ``current.json`` pointer is replaced the same way), so
  ``kill -9`` at any point leaves the old or the new model, never a partial one. The pointer
  records the device; the anti-rollback floor is the newest release of the pointer and the
  install history, so a damaged pointer does not lower it. Each release's manifest is kept
  with its signature, checked again against the agent's trusted keys at each start: one
  signed by a key no longer trusted neither runs nor holds the floor. A download goes to a
  temporary file in the slot as it arrives (hashed as it comes, never held whole), is read
  back once, hash-checked, loaded and renamed into place; an install the disk refuses after
  that rename is undone (old pointer back, new file removed), and the agent, which holds
  the state dir's lock, removes at start what a killed install left (temporary files, a
  model file nothing names) and adds a pointer's release the history missed.
* :class:`Agent`: the loop. The main thread reads the source, cleans, scores and buffers; a
  sender thread drains the outbox in seq order over ``POST /v1/telemetry`` (headers as in
  INTERFACES.md) and deletes what the gateway's ``ack_seq`` covers; an update thread, with
  its own HTTP client, polls for model updates, so a long download never holds up
  telemetry. A model that raises on a reading is refused and the previous one runs (never
  one a later signed rollback order replaced: then the built-in detector, if none is kept).
  One detector per metric name, for at most the gateway's default number of names; what
  they learned is saved in the state dir (``detectors.pickle``) and taken up at start.

>>> import tempfile
>>> box = Outbox(tempfile.mkdtemp() + "/outbox.sqlite", max_bytes=200)
>>> box.put({"ts": 1700000000, "metrics": {"t": 1.0}}), box.put({"ts": 1700000001, "metrics": {"t": 2.0}})
(1, 2)
>>> box.put({"ts": 1700000002, "metrics": {"t": 3.0}}) is None, box.dropped   # full: counted
(True, 1)
>>> [m["seq"] for m in box.pending()]
[1, 2]
>>> box.ack(1), [m["seq"] for m in box.pending()]
(1, [2])
"""  # noqa: E501

from __future__ import annotations

import base64
import contextlib
import csv
import datetime
import email.utils
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import pickle
import re
import sqlite3
import stat
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgewise._private import replace_atomically, sync_folder, write_private
from edgewise._sqlite import write_transaction
from edgewise.detect.zscore import EWZScore
from edgewise.errors import ConfigError, InvalidParameterError, PayloadError, SignatureError
from edgewise.gateway.metric_cap import DEFAULT_MAX_METRICS
from edgewise.registry import (  # a release over MAX_MODEL_BYTES: refused, never fetched
    MAX_MODEL_BYTES,
    Manifest,
    key_id_of,
    verify,
)
from edgewise.telemetry import METRIC_NAME_RE, parse_time_text

__all__ = ["DEFAULT_MAX_BYTES", "Agent", "ModelSlot", "Outbox", "alert_metric", "check_source",
           "load_detector",
           "load_trusted_key", "sim_value"]

log = logging.getLogger("edgewise.agent")
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_ROW_OVERHEAD = 40  # bytes counted per message beyond its JSON (seq, size, page slack)
_DROP_LOG_EVERY_S = 60.0  # an outbox that keeps dropping is said again at most this often
_FINAL_REFUSALS = ("unsupported_format", "bad_model")  # what the signed release itself is
AGENT_FORMATS = ("pickle",)  # the model formats this agent runs (asked of the gateway)
_STAND_IN_METRIC = "agent.too_large"  # sent under the seq of a message the gateway refuses
_CLOCK_REASONS = ("future_ts", "ancient_ts")  # the gateway's reasons for a reading's time
_REJECTED_KEEP = 1000  # rejected messages kept in the outbox's ``rejected`` table, at most
_REJECTED_BODY_KEEP = 4096  # bytes of each rejected message's body kept (its size is recorded)
_REJECTED_DETAIL_KEEP = 2048  # characters of a rejection's detail kept (longer: clipped)
_REJECTED_BYTES = 128 * 1024  # the rejected table's rows, newest first, kept within this
_REJECTED_ROW_OVERHEAD = 64  # bytes counted per rejected row beyond its body and detail
_STALL_FIRST_S, _STALL_MAX_S = 1.0, 30.0  # pause when a 200 answer does not advance the ack
# pause after a post the gateway answers with an error (not 413, 429): doubled each time
_ERROR_FIRST_S, _ERROR_MAX_S = 1.0, 30.0
# posts taken in a row after a 413 before one may go past the smallest refused size (a probe:
# has the gateway's limit been raised?); doubled after each probe it refuses, up to the max
_PROBE_FIRST, _PROBE_MAX = 8, 1024
_PROBE_AFTER_S = 300.0  # and a probe is due at the latest this long after the last 413
_CLOCK_REFUSALS = ("expired",)  # refused by this device's clock: checked again on every offer
# metric names a release's detector is probed with before it is installed: the stdin
# source's and another (a device names its metrics as it likes)
_PROBE_METRICS = ("value", "probe.temp_c")
_MODELS_TRIED = 4  # models one reading is scored with, at most, as each that raises falls back
_RETRY_MAX_S = 3600.0  # a release that failed to download or install is tried at most this late
_WAL_LIMIT = 256 * 1024  # the outbox's WAL is cut back to this many bytes when checkpointed
DETECTORS_FILE = "detectors.pickle"  # in the state dir: the local detectors' learned state
_DETECTORS_MAGIC = b"edgewise-agent-detectors 1\n"  # then its HMAC-SHA256, then the pickle
_DETECTORS_SAVE_S = 300.0  # the local detectors' state is saved at least this often
# pages one put may add to the WAL past the checkpoint point (its leaf, a split, the counters)
_WAL_PUT_PAGES = 8


def _wal_pages(page_size: int) -> int:
    """Pages the outbox's WAL is checkpointed at (SQLite: 1000): so few that the WAL, with
    one put's pages past them, stays within ``_WAL_LIMIT`` (each page a frame of 24 bytes
    more, the WAL a 32-byte header). A WAL cut back to ``_WAL_LIMIT`` then never has to grow
    to reach its checkpoint, which after a full disk it could not: every put failed, though
    the database held free pages (64 pages of 4 KB needed 263,712 bytes of a 262,144 limit).

    >>> _wal_pages(4096), _wal_pages(4096) * (4096 + 24) + 32 <= _WAL_LIMIT
    (55, True)
    """
    return max(1, (_WAL_LIMIT - 32) // (page_size + 24) - _WAL_PUT_PAGES)


_WAL_PAGES = _wal_pages(4096)  # of the default page size; _open uses the file's own
_RESERVE_BYTES = 512 * 1024  # kept on disk for an ack to use when the disk is full
_RESERVE_MIN_BYTES = 192 * 1024  # the reserve of a small outbox (reserve_bytes), at least


def reserve_bytes(max_bytes: int) -> int:
    """Bytes of the ``-reserve`` file kept beside an outbox of ``max_bytes``: what one ack
    of it may write to the WAL when the disk is full (each chunk's messages' pages four
    times over, and a batch of rejections), within ``_RESERVE_BYTES``. A small outbox keeps a
    small one, so a disk with less than ``_RESERVE_BYTES`` free still takes its messages
    (all were dropped there, the reserve never made).

    >>> reserve_bytes(256 * 1024 * 1024), reserve_bytes(10_000)
    (524288, 196608)
    """
    need = 4 * min(max_bytes, _ACK_CHUNK_BYTES) + _REJECTED_BYTES
    return min(_RESERVE_BYTES, max(_RESERVE_MIN_BYTES, -(-need // 65536) * 65536))
_ACK_CHUNK_BYTES = 128 * 1024  # an ack deletes at most about this many counted bytes at a time
_ACK_CHUNK_ROWS = 4096  # and at most this many messages
# the database's pages in use are kept within max_bytes and this: its small tables (schema,
# counters, source positions) and the rejected table (:meth:`Outbox.put` refuses beyond it)
_DB_EXTRA_BYTES = 2 * _REJECTED_BYTES
# beyond max_bytes: the WAL, one ack's pages, the shm, and the database's pages beside the
# messages (the rejected table's rows, and their pages in the WAL of the transaction that
# stores them)
OUTBOX_MARGIN = _WAL_LIMIT + 64 * 4096 + 64 * 1024 + _DB_EXTRA_BYTES


_F = TypeVar("_F", bound=Callable[..., Any])
LOCK_NAME = "agent.lock"  # in the state dir: flock-ed by the agent using that dir


class _StateDirLock:
    """An exclusive ``flock`` on ``<state dir>/agent.lock``, holding the holder's pid.

    Two agents on one state dir would share one outbox and give out the same seqs from two
    readers; nothing refused a second one. The lock is the kernel's, so it goes with the
    process however it ends (``kill -9`` included) and a stale file never blocks a start.
    Agents of one process share it (counted), as tests and embedders open one dir again.
    """

    # by (st_dev, st_ino) of the lock file
    _held: ClassVar[dict[tuple[int, int], _StateDirLock]] = {}
    _guard = threading.RLock()  # a finalizer may release one while this thread takes one

    def __init__(self, key: tuple[int, int], fd: int, flocked: bool = True) -> None:
        self.key, self.fd, self.users = key, fd, 1
        self.flocked = flocked  # False: no flock here (some NFS), the dir runs unguarded

    @classmethod
    def take(cls, state_dir: Path) -> _StateDirLock:
        """Lock ``state_dir`` for this process (again: counted); ConfigError if another
        process holds it."""
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            with cls._guard:
                held = cls._held.get(key)
                if held is not None:
                    held.users += 1
                    os.close(fd)
                    return held
                flocked = False
                try:
                    import fcntl  # POSIX; elsewhere (ImportError) the dir runs unguarded

                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                    raise ConfigError(
                        f"State dir {str(state_dir)!r} is in use by another agent (pid "
                        f"{holder or 'unknown'}, holding {str(path)!r}): two agents on one "
                        "state dir would share its outbox and send the same seqs; stop that "
                        "one, or give this one its own --state-dir.") from None
                except (OSError, ImportError) as exc:  # no flock here (some NFS): unguarded
                    log.warning(json.dumps({
                        "event": "state_dir_unlocked", "path": str(path),
                        "detail": f"no lock taken ({exc}): nothing keeps a second agent off "
                        "this state dir; run one agent per --state-dir"}))
                else:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                    flocked = True
                lock = cls._held[key] = cls(key, fd, flocked)
                return lock
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise

    def release(self) -> None:
        """One user fewer; the last one unlocks (closes the file)."""
        with self._guard:
            self.users -= 1
            if self.users > 0 or self._held.get(self.key) is not self:
                return
            del self._held[self.key]
            with contextlib.suppress(OSError):
                os.close(self.fd)


def _heals(method: _F) -> _F:
    """Run an :class:`Outbox` method; if SQLite finds the file damaged, heal the outbox
    (:meth:`Outbox._heal`: moved aside, what can be read copied to a fresh one) and run it
    once more, on the fresh outbox."""
    @functools.wraps(method)
    def wrapper(self: Outbox, *args: Any, **kwargs: Any) -> Any:
        generation = self._generation
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            self._heal(exc, seen=generation)
        return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class Outbox:
    """Store-and-forward buffer: per-device seq, byte bound, exact drop counter.

    ``device_id``, if given, is recorded in the outbox the first time; an outbox that records
    another device raises :class:`~edgewise.errors.ConfigError` (its seqs, acks, source
    positions and pending readings are that device's, never to be sent as this one's).
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES, *,
                 device_id: str | None = None) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise InvalidParameterError(
                f"The 'max_bytes' parameter of Outbox must be an int in the range [1, inf). "
                f"Got {max_bytes!r} instead."
            )
        self.path = str(path)
        self.max_bytes = max_bytes
        self.disk_full = False  # whether the last put was dropped because the disk is full
        self._lock = threading.Lock()
        self._source: str | None = None  # the source whose position put stores (use_source)
        self._unsaved_drops = 0  # drops the full disk did not let us count in the file yet
        self._reserve = self.path + "-reserve"  # room an ack may use when the disk is full
        self.reserve_bytes = reserve_bytes(max_bytes)  # the reserve's size
        self._reserved = False  # whether the reserve file is there (as far as we know)
        self._reserve_tried_at = -math.inf  # monotonic time of the last failed try to make it
        self._generation = 0  # counts heals, so two threads meeting one damage heal it once
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            self._db = None  # type: ignore[assignment]
            self._heal(exc, locked=True)
        self._count_rows()
        self._make_reserve()
        if device_id is not None:
            try:
                self._claim(device_id)
            except BaseException:
                self._db.close()
                raise

    @_heals
    def _count_rows(self) -> None:
        """Convert the csv sources' positions an older agent kept, counted in lines (before
        a quoted cell could hold a newline), to rows, once (the ``positions`` info says
        which): each by the file it was kept for (the one at its path, or where logrotate
        put it), counting its rows up to the line's byte offset. Taken as rows, a position
        in a file with multi-line cells skipped rows after an upgrade; a file not found
        keeps its position as it is."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT value FROM info WHERE key='positions'").fetchone()
            if row is None or row[0] != "lines":
                return
            for spec, pos in self._db.execute(
                    "SELECT spec, pos FROM sources WHERE spec LIKE 'csv:%' AND pos > 1"
                    ).fetchall():
                found = self._db.execute("SELECT ident FROM source_files WHERE spec=?",
                                         (spec,)).fetchone()
                rows = _rows_for_lines(spec[4:], int(pos),
                                       None if found is None else found[0])
                if rows is None:
                    log.warning(json.dumps({
                        "event": "source_position_kept", "source": spec, "position": pos,
                        "detail": "an older agent counted this position in lines; the file "
                        "it was kept for is not found, so it is kept as it is (a quoted cell "
                        "holding newlines in it would make it skip rows)"}))
                elif rows != pos:
                    self._db.execute("UPDATE sources SET pos = ? WHERE spec=?", (rows, spec))
                    log.info(json.dumps({
                        "event": "source_position_converted", "source": spec,
                        "lines": pos, "rows": rows, "detail": "an older agent counted this "
                        "position in lines; quoted cells holding newlines make fewer rows"}))
            self._db.execute("UPDATE info SET value = 'rows' WHERE key='positions'")

    @_heals
    def _claim(self, device_id: str) -> None:
        """Record ``device_id`` as the owner, or raise ConfigError if another device is."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT value FROM info WHERE key='device_id'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO info VALUES ('device_id', ?)", (device_id,))
        if row is not None and row[0] != device_id:
            pending = len(self)
            raise ConfigError(
                f"Outbox {self.path!r} belongs to device {row[0]!r}, not {device_id!r} "
                f"({pending} of its messages not yet sent, which must not be sent as "
                f"{device_id!r}): each device needs its own state dir (--state-dir).")

    @property
    @_heals
    def device_id(self) -> str | None:
        """The device this outbox belongs to (None: not recorded, an older agent's outbox)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM info WHERE key='device_id'").fetchone()
        return None if row is None else str(row[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; on any error roll back, unless SQLite already
        did (it does on a full disk), so the error raised is SQLite's own."""
        with write_transaction(self._db):
            yield

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
            self._page_size = int(page_size)  # the file's, fixed once it is in WAL mode
            db.execute(f"PRAGMA wal_autocheckpoint={_wal_pages(self._page_size)}")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            db.executescript(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, body BLOB NOT NULL,"
                " size INTEGER NOT NULL);"
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                "CREATE TABLE IF NOT EXISTS rejected (id INTEGER PRIMARY KEY, seq INTEGER,"
                " reason TEXT NOT NULL, detail TEXT NOT NULL, body BLOB, at_ns INTEGER NOT NULL,"
                " body_bytes INTEGER);"
                "CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                "CREATE TABLE IF NOT EXISTS sources (spec TEXT PRIMARY KEY, pos INTEGER NOT NULL);"
                "CREATE TABLE IF NOT EXISTS source_files (spec TEXT PRIMARY KEY,"
                " ident TEXT NOT NULL);"
                "INSERT OR IGNORE INTO meta VALUES ('next_seq', 1), ('acked', 0), ('dropped', 0),"
                " ('bytes', 0), ('source_pos', 1), ('rejected', 0), ('dropped_said', 0);"
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(rejected)")}
            if "body_bytes" not in columns:  # an older agent's outbox: its bodies are whole
                db.execute("ALTER TABLE rejected ADD COLUMN body_bytes INTEGER")
            # what a csv source's position counts: an outbox that does not say is an older
            # agent's, whose positions counted lines (converted by _count_rows)
            db.execute("INSERT OR IGNORE INTO info VALUES ('positions', CASE WHEN EXISTS "
                       "(SELECT 1 FROM sources WHERE spec LIKE 'csv:%' AND pos > 1) "
                       "THEN 'lines' ELSE 'rows' END)")
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: Exception) -> str:
        """Rename the unreadable database (and its WAL files) to ``*.corrupt-<UTC time>``,
        ``-2``, ``-3`` ... added when that name is taken (damaged again within the second:
        the earlier file is evidence too, never replaced)."""
        aside = _claim_name(f"{self.path}.corrupt-"
                            f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        moved = False
        for suffix in ("-wal", "-shm", ""):  # the database last: a crash leaves no stray WAL
            try:
                os.replace(self.path + suffix, aside + suffix)
            except FileNotFoundError:
                continue
            moved = moved or not suffix
        if not moved:  # no database to move: the name claimed for it is not needed
            with contextlib.suppress(OSError):
                os.remove(aside)
        return aside

    def _heal(self, exc: sqlite3.DatabaseError, *, locked: bool = False,
              seen: int | None = None) -> None:
        """The database is damaged (``exc``): move it aside, start a fresh one and copy into
        it the counters, owner, source positions and pending rows that can still be read.
        ``seen``: the heal count when the damage was met (already healed since: nothing)."""
        with contextlib.nullcontext() if locked else self._lock:
            if seen is not None and seen != self._generation:
                return
            self._generation += 1
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
            aside = self._move_aside(exc)
            self._db = self._open()
            try:
                saved, lost, what = _salvage(aside, self._db)
            except Exception as failure:  # said below, never raised: the fresh outbox runs
                saved, lost = 0, None
                what = (f"nothing else (copying failed: {type(failure).__name__}: "
                        f"{str(failure)[:200]}; the damaged file keeps what it holds)")
        unread = ("an unknown number could not: its counters cannot be read"
                  if lost is None else f"{lost} could not")
        log.error(json.dumps({
            "event": "outbox_corrupt", "path": self.path, "moved_to": aside,
            "salvaged": saved, "lost": lost, "detail": f"{exc}; a fresh outbox is used, with "
            f"{saved} pending messages that could still be read ({unread}), and "
            f"{what} from the damaged one"}))

    def _make_reserve(self) -> bool:
        """Make sure the ``-reserve`` file is there, full size; False if the disk has no room
        for it (the partial file is removed again)."""
        with contextlib.suppress(OSError):
            if os.path.getsize(self._reserve) >= self.reserve_bytes:
                self._reserved = True
                return True
        try:
            with open(self._reserve, "wb") as f:
                chunk = b"\0" * 65536
                for _ in range(0, self.reserve_bytes, len(chunk)):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(self._reserve)
            self._reserved = False
            self._reserve_tried_at = time.monotonic()
            return False
        self._reserved = True
        return True

    def _release_reserve(self) -> bool:
        """Give the ``-reserve`` file's room back to the disk; False if there was none."""
        self._reserved = False
        try:
            os.remove(self._reserve)
        except FileNotFoundError:
            return False
        return True

    def bytes_on_disk(self) -> int:
        """Bytes the outbox's files take (database, WAL, shm; not the fixed ``-reserve``).

        >>> import tempfile
        >>> box = Outbox(tempfile.mkdtemp() + "/outbox.sqlite", max_bytes=10_000)
        >>> box.bytes_on_disk() <= box.max_bytes + OUTBOX_MARGIN
        True
        """
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(self.path + suffix)
        return total

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    @property
    @_heals
    def next_seq(self) -> int:
        """The seq the next accepted message will get."""
        with self._lock:
            return self._meta("next_seq")

    @property
    @_heals
    def acked(self) -> int:
        """Highest seq the gateway acknowledged."""
        with self._lock:
            return self._meta("acked")

    @property
    @_heals
    def dropped(self) -> int:
        """Messages refused because the buffer or the disk was full (exact)."""
        with self._lock:
            return self._meta("dropped") + self._unsaved_drops

    @property
    @_heals
    def dropped_said(self) -> int:
        """The :attr:`dropped` count last buffered for the gateway (``agent.dropped``)."""
        with self._lock:
            return self._meta("dropped_said")

    @_heals
    def say_dropped(self, total: int) -> None:
        """Record that the drop count ``total`` was buffered for the gateway."""
        with self._lock, self._transaction():
            self._db.execute("UPDATE meta SET value = MAX(value, ?) WHERE key='dropped_said'",
                             (total,))

    @property
    @_heals
    def rejected(self) -> int:
        """Records or metrics the gateway rejected for good (its ``rejected`` list; exact)."""
        with self._lock:
            return self._meta("rejected")

    @property
    @_heals
    def bytes_used(self) -> int:
        """Bytes counted against ``max_bytes`` (message JSON plus a fixed per-row overhead;
        the pages SQLite stores them in are bounded too: :attr:`bytes_in_pages`)."""
        with self._lock:
            return self._meta("bytes")

    @property
    @_heals
    def source_pos(self) -> int:
        """Position (from 1) of the next reading of the source chosen with :meth:`use_source`
        (none chosen: of the source read last); persisted with each message."""
        with self._lock:
            if self._source is not None:
                row = self._db.execute("SELECT pos FROM sources WHERE spec=?",
                                       (self._source,)).fetchone()
                if row is not None:
                    return int(row[0])
                if self._db.execute("SELECT COUNT(*) FROM sources").fetchone()[0]:
                    return 1
            return self._meta("source_pos")

    @_heals
    def use_source(self, spec: str, identity: Mapping[str, Any] | None = None
                   ) -> tuple[int, str]:
        """Make ``spec`` the source whose position :meth:`put` stores; return its position
        (from 1) and how it was found: ``"resume"`` (read here before), ``"new"`` (never
        read here: from its start), ``"adopted"`` (the one position an older agent kept
        without naming its source, taken as this one's) or ``"rotated"`` (a file read here
        before, but ``identity`` says the file at that path is another one now: from its
        start).

        Positions are kept per source (``csv:PATH`` by its absolute path), so another
        source in the same state dir starts from its own beginning, not from where the
        last one stopped. ``identity`` (a file's :func:`_file_identity`) is kept with the
        position: a file whose first row differs from the one read before, or that is
        shorter than it was (replaced by logrotate, or truncated), is read from its first
        row again, in the same transaction that records its identity.

        >>> import tempfile
        >>> box = Outbox(tempfile.mkdtemp() + "/outbox.sqlite")
        >>> box.use_source("sim"), box.put({"ts": 1, "metrics": {"t": 1.0}}, source_pos=2)
        ((1, 'new'), 1)
        >>> box.use_source("csv:/data/b.csv"), box.use_source("sim")
        ((1, 'new'), (2, 'resume'))
        >>> old, new = {"size": 90, "first": "ab"}, {"size": 40, "first": "cd"}
        >>> _ = box.use_source("csv:/data/c.csv", old), box.put({"ts": 1}, source_pos=5)
        >>> box.use_source("csv:/data/c.csv", old), box.use_source("csv:/data/c.csv", new)
        ((5, 'resume'), (1, 'rotated'))
        """
        key = _source_key(spec)
        with self._lock, self._transaction():
            self._source = key
            row = self._db.execute("SELECT pos FROM sources WHERE spec=?", (key,)).fetchone()
            if identity is not None:
                known = self._db.execute("SELECT ident FROM source_files WHERE spec=?",
                                         (key,)).fetchone()
                self._db.execute("INSERT OR REPLACE INTO source_files VALUES (?, ?)",
                                 (key, json.dumps(dict(identity), sort_keys=True)))
                if (row is not None and int(row[0]) > 1 and known is not None
                        and _replaced(json.loads(known[0]), identity)):
                    self._db.execute("UPDATE sources SET pos = 1 WHERE spec=?", (key,))
                    return 1, "rotated"
            if row is not None:
                return int(row[0]), "resume"
            legacy = self._meta("source_pos")
            if legacy > 1 and not self._db.execute("SELECT COUNT(*) FROM sources").fetchone()[0]:
                return legacy, "adopted"
            return 1, "new"

    @_heals
    def source_identity(self, spec: str) -> dict[str, Any] | None:
        """The file identity (:func:`_file_identity`) kept for source ``spec`` when it was
        last chosen with :meth:`use_source`; None if none was kept."""
        with self._lock:
            row = self._db.execute("SELECT ident FROM source_files WHERE spec=?",
                                   (_source_key(spec),)).fetchone()
        if row is None:
            return None
        try:
            known = json.loads(row[0])
        except ValueError:
            return None
        return known if isinstance(known, dict) else None

    @_heals
    def __len__(self) -> int:
        """Messages pending (stored, not yet acknowledged), read from the ends of the table,
        never by counting it: the pending seqs are always one run with no gap (:meth:`put`
        numbers on from the last, :meth:`ack` deletes a prefix, :meth:`renumber` shifts them
        all, a heal's salvage numbers them on from the ack; no agent ever deleted one row
        alone), so ``MAX(seq) - MIN(seq) + 1`` is the count, and each is one b-tree seek. It
        is asked after every batch sent and by the flush loop every 50 ms; ``COUNT(*)`` read
        the whole table, a tenth of a second or more on a full outbox of millions."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT (SELECT MAX(seq) FROM outbox) - (SELECT MIN(seq) FROM outbox) + 1"
            ).fetchone()
        return 0 if n is None else int(n)

    @_heals
    def put(self, message: Mapping[str, Any], *, source_pos: int | None = None,
            hold: bool = False) -> int | None:
        """Store ``message`` with the next seq; return it, or None if dropped (buffer full).

        ``source_pos``, if given, is stored in the same transaction: where the source resumes.
        ``hold``: a message that does not fit (the bound, or a full disk) is neither counted
        dropped nor moves the source position: the caller reads it again later (a file's
        row, still in the file); None then means held.

        The bound is ``max_bytes`` of counted bytes (:attr:`bytes_used`: each message's
        JSON and ``_ROW_OVERHEAD``) and of pages: the database's pages in use
        (:attr:`bytes_in_pages`) stay within ``max_bytes`` and a fixed allowance for its
        other tables, as SQLite stores a message by page (a 2 KB one takes a 4 KB page).

        When the disk is full (SQLite's "database or disk is full") the WAL is checkpointed
        and cut to nothing, giving its room back, and the put tried once more; if that fails
        too the message is dropped and counted like one over ``max_bytes`` (:attr:`disk_full`
        is then True); the count is kept in memory until the file can take it.
        """
        with self._lock:
            unsaved = self._unsaved_drops
            if not self._reserved and (time.monotonic() - self._reserve_tried_at < 1.0
                                       or not self._make_reserve()):
                self._drop_on_full_disk(source_pos, hold)  # the ack's room comes first
                return None
            for attempt in (1, 2):
                try:
                    seq = self._store(message, source_pos, unsaved, hold)
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_full(exc):
                        raise
                    # the WAL's own file may hold the room (after a full disk nothing else
                    # gives it back: with nothing pending no ack comes): give it back, once
                    if attempt == 2 or not self._truncate_wal():
                        self._drop_on_full_disk(source_pos, hold)
                        return None
            self._unsaved_drops = 0
            self.disk_full = False
            return seq

    def _store(self, message: Mapping[str, Any], source_pos: int | None,
               unsaved: int, hold: bool = False) -> int | None:
        """:meth:`put`'s transaction: the message stored with the next seq, or None if it does
        not fit the bound (counted in ``dropped`` with the ``unsaved`` drops before it;
        with ``hold`` neither counted nor its ``source_pos`` stored)."""
        with self._transaction():
            seq: int | None = self._meta("next_seq")
            body = json.dumps({**message, "seq": seq}, separators=(",", ":")).encode()
            size = len(body) + _ROW_OVERHEAD
            if self._meta("bytes") + size > self.max_bytes:
                seq = None
            else:
                # SQLite stores by page (a 2 KB message takes a 4 KB page of its own), so the
                # pages in use are bounded too, not the counted bytes alone; near the bound
                # the row is tried and taken back if its pages go past it
                page = self._page_size
                room = self.max_bytes + _DB_EXTRA_BYTES - self._bytes_in_pages()
                near = room < (len(body) // (page - 35) + 4) * page  # its pages, at most
                if near:
                    self._db.execute("SAVEPOINT row")
                self._db.execute("INSERT INTO outbox VALUES (?, ?, ?)", (seq, body, size))
                if near and self._bytes_in_pages() > self.max_bytes + _DB_EXTRA_BYTES:
                    self._db.execute("ROLLBACK TO row")
                    seq = None
                else:
                    self._db.execute("UPDATE meta SET value = ? WHERE key='next_seq'",
                                     (seq + 1,))
                    self._db.execute("UPDATE meta SET value = value + ? WHERE key='bytes'",
                                     (size,))
                if near:
                    self._db.execute("RELEASE row")
            if seq is not None or not hold:  # a held message: its source is read again
                self._save_position(source_pos)
                unsaved += seq is None
            if unsaved:
                self._db.execute("UPDATE meta SET value = value + ? WHERE key='dropped'",
                                 (unsaved,))
        return seq

    def _bytes_in_pages(self) -> int:
        """Bytes of the database's pages in use (not free), as the current transaction sees
        them; read from the file's header, no table scan."""
        (used,) = self._db.execute("SELECT c.page_count - f.freelist_count FROM "
                                   "pragma_page_count() c, pragma_freelist_count() f").fetchone()
        return int(used) * self._page_size

    @property
    @_heals
    def bytes_in_pages(self) -> int:
        """Bytes of the outbox database's pages in use: its messages as SQLite stores them
        (by page), the ``rejected`` table and the small ones; kept within ``max_bytes`` plus
        a fixed allowance for what is not messages (:meth:`put` drops beyond it)."""
        with self._lock:
            return self._bytes_in_pages()

    def _truncate_wal(self) -> bool:
        """Checkpoint the WAL and cut its file to nothing (the caller holds the lock); False
        if there was no WAL to give back or the checkpoint could not finish."""
        try:
            if os.path.getsize(self.path + "-wal") == 0:
                return False
        except OSError:
            return False
        try:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:
            return False
        return not busy

    @_heals
    def save_position(self, source_pos: int) -> None:
        """Store ``source_pos`` as where the source resumes, with no message: the rows read
        after the last one buffered gave no reading (skipped for their time, or empty). A
        full disk leaves the position where it was (those rows are read again)."""
        with self._lock:
            try:
                with self._transaction():
                    self._save_position(source_pos)
            except sqlite3.OperationalError as exc:
                if not _is_full(exc):
                    raise

    def _save_position(self, source_pos: int | None) -> None:
        if source_pos is None:
            return
        self._db.execute("UPDATE meta SET value = ? WHERE key='source_pos'", (source_pos,))
        if self._source is not None:
            self._db.execute("INSERT OR REPLACE INTO sources VALUES (?, ?)",
                             (self._source, source_pos))

    def _drop_on_full_disk(self, source_pos: int | None, hold: bool = False) -> None:
        """Count a message the full disk refused: in the file if it still takes that small
        update (it reuses pages), else in memory until a later put succeeds. ``hold``: not
        counted, nor its ``source_pos`` stored (see :meth:`put`)."""
        self.disk_full = True
        if hold:
            return
        self._unsaved_drops += 1
        try:
            with self._transaction():
                self._save_position(source_pos)
                self._db.execute("UPDATE meta SET value = value + ? WHERE key='dropped'",
                                 (self._unsaved_drops,))
        except sqlite3.OperationalError as exc:
            if not _is_full(exc):
                raise
            return
        self._unsaved_drops = 0

    @_heals
    def pending(self, limit: int = 500) -> list[dict[str, Any]]:
        """The oldest unacknowledged messages, in seq order (the seq column is the truth:
        :meth:`renumber` changes it, not the stored body)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM outbox ORDER BY seq LIMIT ?",
                                    (limit,)).fetchall()
        return [{**json.loads(body), "seq": seq} for seq, body in rows]

    @_heals
    def set_aside(self, seq: int, reason: str, detail: str, stand_in: Mapping[str, Any]
                  ) -> bool:
        """Reject pending message ``seq`` for good: keep it in the ``rejected`` table (counted
        in :attr:`rejected`, as ``reason``) and put ``stand_in`` in its place under the same
        seq, in one transaction; False if ``seq`` is not pending.

        For a message the gateway will never take (too large even alone): the small stand-in
        is sent instead, so the gateway's ack still moves over ``seq`` and what follows is
        not held up, and no seq is numbered again.

        >>> import tempfile
        >>> box = Outbox(tempfile.mkdtemp() + "/outbox.sqlite")
        >>> box.put({"ts": 1, "metrics": {"big": 1.0}})
        1
        >>> box.set_aside(1, "too_large", "{}", {"ts": 1, "metrics": {"agent.too_large": 9.0}})
        True
        >>> box.pending()[0]["metrics"], box.rejected
        ({'agent.too_large': 9.0}, 1)
        """
        with self._lock, self._transaction():
            row = self._db.execute("SELECT size FROM outbox WHERE seq=?", (seq,)).fetchone()
            if row is None:
                return False
            self._store_rejected([(seq, reason, detail)])
            body = json.dumps({**stand_in, "seq": seq}, separators=(",", ":")).encode()
            size = len(body) + _ROW_OVERHEAD
            self._db.execute("UPDATE outbox SET body = ?, size = ? WHERE seq = ?",
                             (body, size, seq))
            self._db.execute("UPDATE meta SET value = value + ? WHERE key='bytes'",
                             (size - int(row[0]),))
        return True

    @_heals
    def ack(self, ack_seq: int, rejected: Sequence[tuple[int | None, str, str]] = (),
            unlisted: int = 0) -> int:
        """Forget every message with seq <= ``ack_seq``; return how many were removed.

        ``rejected``: ``(seq, reason, detail)`` for what the gateway refused in the answer
        carrying this ack; counted in :attr:`rejected` and kept (with the start of the
        message and its size, when its seq is known) in the ``rejected`` table, in the same
        transaction (the table's bound: :meth:`_store_rejected`). ``unlisted``: further
        rejections the gateway counted but did not list, counted only.

        When the disk is full the ``-reserve`` file is given up for this ack (the WAL is
        checkpointed into the room it leaves and cut back), and made again when there is room.
        """
        progress = [0, 0]  # messages removed so far, whether ``rejected`` is stored
        try:
            return self._ack(ack_seq, rejected, unlisted, progress)
        except sqlite3.OperationalError as exc:
            if not _is_full(exc) or not self._release_reserve():
                raise
            log.warning(json.dumps({
                "event": "outbox_reserve_used", "path": self.path, "detail": f"{exc}: the "
                f"{self.reserve_bytes}-byte reserve beside the outbox is given up so the ack can "
                "free room; it is made again once the disk has room"}))
        self._checkpoint()
        n = self._ack(ack_seq, rejected, unlisted, progress)
        self._checkpoint()
        with self._lock:
            self._make_reserve()
        return n

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and cut it to nothing (no error if it cannot)."""
        with self._lock, contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _ack(self, ack_seq: int, rejected: Sequence[tuple[int | None, str, str]],
             unlisted: int, progress: list[int]) -> int:
        """Delete up to ``ack_seq`` in transactions of about ``_ACK_CHUNK_BYTES`` each, so one
        ack never needs more WAL than a chunk (deleting rows rewrites their pages in the WAL:
        one transaction for a whole full outbox needed as much disk again as the outbox)."""
        while True:
            with self._lock, self._transaction():
                if (rejected or unlisted) and not progress[1]:
                    self._store_rejected(rejected, unlisted)
                cut = ack_seq
                rows = self._db.execute(
                    "SELECT seq, size FROM outbox WHERE seq <= ? ORDER BY seq LIMIT ?",
                    (ack_seq, _ACK_CHUNK_ROWS)).fetchall()
                total = 0
                for i, (seq, size) in enumerate(rows):
                    total += size
                    if total >= _ACK_CHUNK_BYTES or i == _ACK_CHUNK_ROWS - 1:
                        cut = int(seq)
                        break
                (n, size) = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE seq <= ?",
                    (cut,)).fetchone()
                self._db.execute("DELETE FROM outbox WHERE seq <= ?", (cut,))
                self._db.execute("UPDATE meta SET value = value - ? WHERE key='bytes'", (size,))
                self._db.execute("UPDATE meta SET value = MAX(value, ?) WHERE key='acked'",
                                 (cut,))
            progress[0] += int(n)
            progress[1] = 1
            if cut >= ack_seq:
                return progress[0]

    def _store_rejected(self, rejected: Sequence[tuple[int | None, str, str]],
                        unlisted: int = 0) -> None:
        """Count ``rejected`` and keep it in the ``rejected`` table: reason, detail (clipped
        past ``_REJECTED_DETAIL_KEEP`` characters) and the first ``_REJECTED_BODY_KEEP``
        bytes of its message with the message's size (``body_bytes``).

        The table keeps its newest rows only, at most ``_REJECTED_KEEP`` of them and
        ``_REJECTED_BYTES`` (body kept, detail and ``_REJECTED_ROW_OVERHEAD`` a row), so the
        outbox's files stay within ``max_bytes`` plus :data:`OUTBOX_MARGIN`; of a batch
        over that room, the newest are kept and all are counted."""
        now = time.time_ns()
        rows: list[tuple[Any, ...]] = []
        room = _REJECTED_BYTES
        for seq, reason, detail in reversed(rejected):  # newest first: those are kept
            detail = _clip_detail(detail)
            found = None if seq is None else self._db.execute(
                "SELECT substr(body, 1, ?), length(body) FROM outbox WHERE seq = ?",
                (_REJECTED_BODY_KEEP, seq)).fetchone()
            body, size = (None, None) if found is None else (bytes(found[0]), int(found[1]))
            room -= len(body or b"") + len(detail.encode()) + _REJECTED_ROW_OVERHEAD
            if room < 0:
                break
            rows.append((seq, reason, detail, body, size, now))
        self._db.executemany("INSERT INTO rejected (seq, reason, detail, body, body_bytes, "
                             "at_ns) VALUES (?, ?, ?, ?, ?, ?)", rows[::-1])
        self._db.execute("DELETE FROM rejected WHERE id <= "
                         "(SELECT MAX(id) FROM rejected) - ?", (_REJECTED_KEEP,))
        # the oldest rows past the byte room (an older agent's whole bodies count in full)
        self._db.execute(
            "DELETE FROM rejected WHERE id < COALESCE((SELECT MIN(id) FROM "
            "(SELECT id, SUM(COALESCE(length(body), 0) + length(CAST(detail AS BLOB)) + ?) "
            "OVER (ORDER BY id DESC) AS used FROM rejected) WHERE used <= ?), "
            "(SELECT MAX(id) + 1 FROM rejected))",
            (_REJECTED_ROW_OVERHEAD, _REJECTED_BYTES))
        self._db.execute("UPDATE meta SET value = value + ? WHERE key='rejected'",
                         (len(rejected) + unlisted,))

    @_heals
    def renumber(self, ack_seq: int) -> int:
        """The gateway forgot this device (its ack fell below :attr:`acked`): number the
        pending messages, which it never acknowledged, from ``ack_seq + 1`` on and make
        ``ack_seq`` the ack, in one transaction; return the shift (0: nothing to do).

        >>> import tempfile
        >>> box = Outbox(tempfile.mkdtemp() + "/outbox.sqlite")
        >>> for i in range(3): _ = box.put({"ts": 1700000000 + i, "metrics": {"t": 1.0}})
        >>> box.ack(2), box.renumber(0), [m["seq"] for m in box.pending()], box.next_seq
        (2, 2, [1], 2)
        """
        with self._lock, self._transaction():
            acked = self._meta("acked")
            if ack_seq >= acked:
                return 0
            first = self._db.execute("SELECT MIN(seq) FROM outbox").fetchone()[0]
            shift = (acked if first is None else first - 1) - ack_seq
            # through negatives, so no new seq meets an old one on the way
            self._db.execute("UPDATE outbox SET seq = -seq")
            self._db.execute("UPDATE outbox SET seq = -seq - ?", (shift,))
            self._db.execute("UPDATE meta SET value = value - ? WHERE key='next_seq'",
                             (shift,))
            self._db.execute("UPDATE meta SET value = ? WHERE key='acked'", (ack_seq,))
        return int(shift)

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _is_full(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the disk (or the database's page limit) is full."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "is full" in str(exc)


def _claim_name(base: str) -> str:
    """A name no file has yet (nor its ``-wal`` or ``-shm``): ``base``, else ``base-2``,
    ``base-3`` ...; made at once, empty and exclusively (``O_EXCL``), so no other caller
    gets it too.

    >>> import tempfile
    >>> base = tempfile.mkdtemp() + "/x"
    >>> [_claim_name(base)[len(base):] for _ in range(3)]
    ['', '-2', '-3']
    """
    n = 1
    while True:
        name = base if n == 1 else f"{base}-{n}"
        n += 1
        if any(os.path.lexists(name + suffix) for suffix in ("-wal", "-shm")):
            continue
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except FileExistsError:
            continue
        return name


def _clip_detail(detail: str) -> str:
    """A rejection's detail (JSON) as kept in the ``rejected`` table: as it is up to
    ``_REJECTED_DETAIL_KEEP`` characters, else a JSON object of its length and its start.

    >>> _clip_detail('{"field": "ts"}')
    '{"field": "ts"}'
    >>> json.loads(_clip_detail("x" * 9000))["chars"]
    9000
    """
    if len(detail) <= _REJECTED_DETAIL_KEEP:
        return detail
    return json.dumps({"clipped": True, "chars": len(detail),
                       "start": detail[:_REJECTED_DETAIL_KEEP // 8]})


def _source_key(spec: str) -> str:
    """The name a source's position is kept under: ``csv:PATH`` by its absolute path.

    >>> _source_key("sim"), _source_key("csv:/data/a.csv")
    ('sim', 'csv:/data/a.csv')
    """
    return f"csv:{os.path.abspath(spec[4:])}" if spec.startswith("csv:") else spec


def _open_regular(path: str | os.PathLike[str]) -> Any:
    """``path`` opened to read bytes; OSError if it is no regular file. A FIFO put where
    the file was is opened without waiting (a plain open waited for a writer: the agent
    hung for good) and refused, as a directory is.

    >>> _open_regular("/")
    Traceback (most recent call last):
    ...
    OSError: '/' is no regular file (a directory, FIFO, device or socket); csv:PATH needs a CSV file
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{os.fspath(path)!r} is no regular file (a directory, FIFO, "
                          "device or socket); csv:PATH needs a CSV file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What tells one ``csv:PATH`` file from the next at that path: its inode, size and the
    sha256 of its header and first (whole) row; OSError if it cannot be read.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.csv"
    >>> _ = p.write_text("time,t\\n1700000000,1.5\\n")
    >>> sorted(_file_identity(p)), _file_identity(p)["size"]
    (['first', 'inode', 'size'], 22)
    """
    with _open_regular(path) as f:
        st = os.fstat(f.fileno())
        head = f.readline(1 << 20) + b"\0" + f.readline(1 << 20)
    if not head.endswith(b"\n"):  # a first row still being written is no row yet
        head = head[:head.index(b"\0") + 1]
    return {"inode": st.st_ino, "size": st.st_size,
            "first": hashlib.sha256(head).hexdigest()}


def _replaced(before: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """Why the file ``now`` describes is not the one read before (None: it is, grown or not).

    Another first row means another file (logrotate's new file, or an old one put back);
    a shorter file was truncated or replaced. Another inode alone is not enough: a file an
    editor or ``cp`` wrote again keeps its rows.

    >>> _replaced({"size": 10, "first": "a"}, {"size": 20, "first": "a"}) is None
    True
    >>> _replaced({"size": 10, "first": "a"}, {"size": 5, "first": "a"})
    'it is shorter (5 bytes) than when it was read before (10 bytes)'
    """
    if before.get("first") != now.get("first"):
        return "its header or first row is not the one read before"
    if int(now.get("size", 0)) < int(before.get("size", 0)):
        return (f"it is shorter ({now.get('size')} bytes) than when it was read before "
                f"({before.get('size')} bytes)")
    return None


_ROTATED_LOOK_AT = 32  # files of the folder whose first rows are compared, at most


def _rotated_file(path: str, known: Mapping[str, Any]) -> str | None:
    """Where logrotate put the file that ``known`` (its :func:`_file_identity` when it was
    last read at ``path``) describes: a file of the same folder with the same header and
    first row, as long as it was then or longer; looked for by its inode (moved: ``PATH.1``,
    ``PATH-20240131``), then among the names that start with PATH's (``copytruncate``'s
    copy), ``PATH.1`` first, newest first. None if none is found (compressed, deleted)."""
    path = os.path.abspath(path)
    folder, base = os.path.split(path)
    same_inode: list[str] = []
    named: list[tuple[bool, float, str]] = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name == base:
                    continue
                try:
                    if not e.is_file():
                        continue
                    if e.inode() == known.get("inode"):
                        same_inode.append(e.path)
                    elif e.name.startswith(base):
                        named.append((e.name != base + ".1", -e.stat().st_mtime, e.path))
                except OSError:
                    continue
    except OSError:
        return None
    for candidate in (same_inode + [p for *_, p in sorted(named)])[:_ROTATED_LOOK_AT]:
        try:
            ident = _file_identity(candidate)
        except OSError:
            continue
        if (ident["first"] == known.get("first")
                and ident["size"] >= int(known.get("size", 0))):
            return candidate
    return None


def _rows_for_lines(path: str, pos: int, ident: str | None) -> int | None:
    """The position (from 1, counting rows: :func:`_csv_records`) of the CSV file at
    ``path``, or where logrotate put it, that an older agent's position ``pos`` (counting
    lines after the header line) stood for: the rows that end by that line's byte offset,
    plus one (a row it read only the first lines of is read again, whole). ``ident``: the
    file's :func:`_file_identity` kept with the position (JSON), if any. None if the file
    is not found.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.csv"
    >>> _ = p.write_bytes(b'time,note\\n1,"a\\nb\\nc"\\n2,d\\n3,e\\n')
    >>> _rows_for_lines(str(p), 5, None), _rows_for_lines(str(p), 3, None)
    (3, 1)
    """
    try:
        known = json.loads(ident) if ident is not None else None
    except ValueError:
        known = None
    if isinstance(known, dict):
        try:
            now = _file_identity(path)
        except OSError:
            now = None
        try:
            replaced = now is None or _replaced(known, now) is not None
            moved = _rotated_file(path, known) if replaced else path
        except (TypeError, ValueError):  # a damaged identity: the file at the path, if any
            replaced, moved = False, path
        if replaced:
            if moved is None:
                return None
            path = moved
    try:
        with _open_regular(path) as f:
            offset = len(f.readline())  # the header line, as the older agent read it
            for _ in range(pos - 1):
                line = f.readline()
                if not line:
                    break
                offset += len(line)
            f.seek(0)
            records = _csv_records(f, f"csv:{path}")
            end = len(next(records, (1, b"", True))[1])
            rows = 0
            for _, raw, whole in records:
                end += len(raw)
                if not whole or end > offset:
                    break
                rows += 1
    except OSError:
        return None
    return rows + 1


def _rotated_after(path: str, old: str) -> list[str]:
    """The files logrotate made of ``path`` after ``old`` (one of them, found by
    :func:`_rotated_file`), oldest first: the files of its folder named as logrotate names
    them (``PATH.1``, ``PATH.2``, ... or ``PATH-20240131``), written to after ``old`` was,
    other than ``old`` and ``path``. Two rotations between two reads leave one such file
    (``PATH.1`` when ``old`` is ``PATH.2``), whose rows were never read.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for i, name in enumerate(["a.csv.2", "a.csv.1", "a.csv", "a.csv.bak"]):
    ...     _ = (d / name).write_text("time,t\\n"); os.utime(d / name, ns=(i, i))
    >>> [Path(f).name for f in _rotated_after(str(d / "a.csv"), str(d / "a.csv.2"))]
    ['a.csv.1']
    """
    path, old = os.path.abspath(path), os.path.abspath(old)
    folder, base = os.path.split(path)
    named = re.compile(re.escape(base) + r"[.-]([0-9][0-9_-]*)")
    try:
        old_st = os.stat(old)
    except OSError:
        return []
    found: list[tuple[int, int, str, str]] = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                m = named.fullmatch(e.name)
                if m is None or e.path in (path, old):
                    continue
                try:
                    st = e.stat()
                    if (not e.is_file() or e.inode() == old_st.st_ino
                            or st.st_mtime_ns < old_st.st_mtime_ns):
                        continue
                except OSError:
                    continue
                number = -int(m[1]) if m[1].isdigit() and e.name[len(base)] == "." else 0
                found.append((st.st_mtime_ns, number, e.name, e.path))
    except OSError:
        return []
    return [p for *_, p in sorted(found)][:_ROTATED_LOOK_AT]


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is no database or a damaged one (not, e.g., locked)."""
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def _salvage(aside: str, db: sqlite3.Connection) -> tuple[int, int | None, str]:
    """Copy what can still be read of the damaged outbox ``aside`` into the fresh ``db``:
    counters, owner, source positions and pending rows, the rows numbered on from the ack with
    no gap (a gap would stall the gateway's ack); return (rows copied, rows lost, what else
    was copied). Rows lost is None when the damaged counters do not say how many were
    pending. Unreadable parts are left out, never raised: a damaged page may read as rows
    whose columns are NULL or of another type (zeroed bytes), and those are left out too.

    A truncated file (shorter than its header says) SQLite refuses whole; it is read from
    a copy whose header says the pages it holds (:func:`_mended_copy`), removed after."""
    mended = _mended_copy(aside)
    try:
        saved, lost, what = _salvage_from(mended or aside, db)
    finally:
        if mended is not None:
            for suffix in ("-wal", "-shm", ""):
                with contextlib.suppress(OSError):
                    os.remove(mended + suffix)
    if mended is not None:
        what += " (the file is truncated: read as far as it goes; its WAL is not read)"
    return saved, lost, what


def _mended_copy(aside: str) -> str | None:
    """If the SQLite file ``aside`` is shorter than its header's page count (truncated), a
    copy of the pages it holds whose header says that many, which SQLite reads; else (or if
    the copy cannot be made: the disk is full) None. ``aside`` itself is left as it is."""
    try:
        with open(aside, "rb") as f:
            head = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        return None
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1):
        return None
    pages = size // page
    if pages < 1 or int.from_bytes(head[28:32], "big") <= pages:
        return None
    copy = None
    try:
        copy = _claim_name(aside + "-readable")
        with open(aside, "rb") as src, open(copy, "r+b") as dst:
            left = pages * page
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    break
                dst.write(chunk)
                left -= len(chunk)
            dst.seek(28)
            dst.write(pages.to_bytes(4, "big"))
    except OSError:
        if copy is not None:
            with contextlib.suppress(OSError):
                os.remove(copy)
        return None
    return copy


def _salvage_from(aside: str, db: sqlite3.Connection) -> tuple[int, int | None, str]:
    """:func:`_salvage`, reading the file ``aside``."""
    try:
        src = sqlite3.connect(aside, isolation_level=None)
    except sqlite3.Error:
        return 0, None, "nothing else"
    try:
        meta: dict[str, int] = {}
        copied = []
        with contextlib.suppress(sqlite3.Error):
            for k, v in src.execute("SELECT key, value FROM meta"):
                if isinstance(k, str) and isinstance(v, int) and v >= 0:
                    meta[k] = v
        if meta:
            copied.append("its counters")
        extra: dict[str, list[tuple[Any, ...]]] = {}
        for table, kinds in _SALVAGED_TABLES.items():
            found: list[tuple[Any, ...]] = []
            with contextlib.suppress(sqlite3.Error):
                for row in src.execute(f"SELECT * FROM {table}"):
                    if len(row) == 2 and all(isinstance(c, t) for c, t in zip(row, kinds,
                                                                               strict=True)):
                        found.append(tuple(row))
            if found:
                extra[table] = found
                copied.append(f"its {table}")
        if not any(k == "positions" for k, _ in extra.get("info", [])) and any(
                k.startswith("csv:") and v > 1 for k, v in extra.get("sources", [])):
            extra.setdefault("info", []).append(("positions", "lines"))  # an older agent's
        rows = _readable_rows(src, meta.get("acked", 0))
    finally:
        src.close()
    acked = meta.get("acked", rows[0][0] - 1 if rows else 0)
    expected: int | None = None
    if "next_seq" in meta and "acked" in meta and meta["next_seq"] > meta["acked"]:
        expected = meta["next_seq"] - 1 - acked
    db.execute("BEGIN IMMEDIATE")
    try:
        for key in ("dropped", "rejected", "source_pos", "dropped_said"):
            if key in meta:
                db.execute("UPDATE meta SET value = ? WHERE key = ?", (meta[key], key))
        for table, found in extra.items():
            db.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", found)
        db.executemany("INSERT INTO outbox VALUES (?, ?, ?)",
                       [(acked + 1 + i, body, size) for i, (_, body, size) in enumerate(rows)])
        db.execute("UPDATE meta SET value = ? WHERE key='bytes'",
                   (sum(size for _, _, size in rows),))
        db.execute("UPDATE meta SET value = ? WHERE key='acked'", (acked,))
        db.execute("UPDATE meta SET value = ? WHERE key='next_seq'", (acked + 1 + len(rows),))
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    lost = None if expected is None else max(expected - len(rows), 0)
    return len(rows), lost, ", ".join(copied) or "nothing else"


#: the outbox's small tables a heal copies, with the types of their two columns (a row of
#: other types, read from a damaged page, is left out: the fresh table refuses NULLs)
_SALVAGED_TABLES: dict[str, tuple[type, type]] = {
    "info": (str, str), "sources": (str, int), "source_files": (str, str)}


def _salvaged_row(row: Any) -> tuple[int, bytes, int] | None:
    """``(seq, body, size)`` of an outbox row read from a damaged file, or None when it is
    no message: a damaged page may read as a row whose body or size is NULL or of another
    type, or whose body is no JSON object (it could never be sent). The size is counted
    again from the body, as :meth:`Outbox.put` counts it.

    >>> _salvaged_row((3, b'{"ts": 1, "metrics": {}}', 64))
    (3, b'{"ts": 1, "metrics": {}}', 64)
    >>> _salvaged_row((3, None, None)), _salvaged_row((4, b"\\0\\0", 42))
    (None, None)
    """
    seq, body = row[0], row[1]
    if not isinstance(seq, int) or not isinstance(body, bytes):
        return None
    try:
        doc = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if not isinstance(doc, dict):
        return None
    return seq, body, len(body) + _ROW_OVERHEAD


def _readable_rows(src: sqlite3.Connection, after: int) -> list[tuple[int, bytes, int]]:
    """The outbox rows of ``src`` with seq > ``after`` that can be read, in seq order: read
    on until a damaged page, then skip it (the smallest start past it, by doubling and
    halving) and read on. Rows that read but hold no message (:func:`_salvaged_row`) are
    left out."""
    out: list[tuple[int, bytes, int]] = []
    sql = "SELECT seq, body, size FROM outbox WHERE seq > ? ORDER BY seq"

    def readable(pos: int) -> bool:
        try:
            src.execute(sql + " LIMIT 1", (pos,)).fetchall()
        except sqlite3.DatabaseError:
            return False
        return True

    pos = after
    while True:
        try:
            for row in src.execute(sql, (pos,)):
                if not isinstance(row[0], int):
                    continue
                pos = row[0]
                found = _salvaged_row(row)
                if found is not None:
                    out.append(found)
            return out
        except sqlite3.DatabaseError:
            pass
        bad, step = pos, 1
        while not readable(bad + step):
            if step > 1 << 62:
                return out
            step *= 2
        good = bad + step  # readable(good); every start in (pos, bad] is not
        bad = good - step // 2 if step > 1 else pos
        while good - bad > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if readable(mid) else (good, mid)
        pos = good


@dataclass(frozen=True)
class Installed:
    """An installed model (the one the slot points at, or its fallback): ``manifest_bytes``
    as signed, and the ``signature`` kept with it (None: kept by an agent from before
    signatures were kept, or installed without one)."""

    release: int
    sha256: str
    manifest: Manifest
    payload: bytes
    manifest_bytes: bytes = b""  # b"": the manifest's canonical bytes (Manifest.to_bytes)
    signature: bytes | None = None


@dataclass(frozen=True)
class _Record:
    """One installed release as the slot keeps it (``current.json`` or an entry of
    ``history.json``): its manifest as signed, that manifest read, and its signature (None:
    not kept, as by an agent from before signatures were kept)."""

    manifest_bytes: bytes
    manifest: Manifest
    signature: bytes | None = None

    @classmethod
    def parse(cls, manifest: Any, signature: Any = None) -> _Record:
        """The record of a base64 ``manifest`` and ``signature`` (None: none) as kept;
        ValueError, TypeError or SignatureError if it cannot be read.

        >>> m = Manifest("ewz", "1", 1, "0" * 64, 1, "pickle", "device:d", 0, "k")
        >>> r = _Record.parse(base64.b64encode(m.to_bytes()).decode(), "AAAA")
        >>> r.manifest.release, r.signature
        (1, b'\\x00\\x00\\x00')
        """
        for name, value in (("manifest", manifest), ("signature", signature)):
            if not isinstance(value, str) and not (name == "signature" and value is None):
                raise TypeError(f"its {name} is a JSON {type(value).__name__}, not base64 text")
        mb = base64.b64decode(manifest)
        return cls(mb, Manifest.from_bytes(mb),
                   None if signature is None else base64.b64decode(signature))

    def entry(self) -> dict[str, str]:
        """The record as ``history.json`` keeps it: base64 ``manifest`` and ``signature``."""
        out = {"manifest": base64.b64encode(self.manifest_bytes).decode()}
        if self.signature is not None:
            out["signature"] = base64.b64encode(self.signature).decode()
        return out


def _history_record(entry: Any) -> _Record:
    """A ``history.json`` entry read: ``{"manifest", "signature"}`` (base64), or, as an agent
    from before signatures were kept wrote it, the base64 manifest alone."""
    if isinstance(entry, dict):
        return _Record.parse(entry.get("manifest"), entry.get("signature"))
    return _Record.parse(entry)


class _UntrustedModel(SignatureError):
    """An installed release that does not pass the check of its kept signature, key and
    target made at each start (``reason``: ``unknown_key``, ``wrong_device``, ``tampered``,
    ``unsigned``); ``record`` is it."""

    def __init__(self, record: _Record, reason: str, detail: str) -> None:
        m = record.manifest
        super().__init__(f"Installed release {m.release} ({m.name} {m.version}) is not run: "
                         f"{detail}.", reason)
        self.record = record


class _Staged:
    """A release's model being downloaded into the slot: a temporary file of its own beside
    the model's name (``.model-<release>-<sha16>.bin.<pid>.<thread>.<hex>.tmp``, as
    :func:`~edgewise._private.replace_atomically` names it, so one a power loss leaves is
    removed when the slot is opened; made with ``O_EXCL | O_NOFOLLOW``), written as the bytes
    arrive, read back once and hash-checked (:meth:`verified`), then renamed into place
    (:meth:`commit`) or removed (:meth:`discard`).

    >>> import tempfile
    >>> dest = Path(tempfile.mkdtemp()) / "model-1-abc.bin"
    >>> st = _Staged(dest); st.write(b"abc")
    >>> st.verified(hashlib.sha256(b"abc").hexdigest(), 3)
    b'abc'
    >>> st.commit(); dest.read_bytes(), len(list(dest.parent.iterdir()))
    (b'abc', 1)
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.path = dest.with_name(f".{dest.name[:150]}.{os.getpid()}."
                                   f"{threading.get_ident()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        self._file: Any = os.fdopen(fd, "w+b")
        self.done = False

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; OSError if the disk refuses it."""
        self._file.write(chunk)

    def verified(self, sha256: str, size: int) -> bytes:
        """The file's bytes, synced to disk and read back once, if they are ``size`` bytes
        of sha256 ``sha256`` (what was verified while they were written), else
        :class:`SignatureError` (``tampered``): the bytes loaded and installed are those."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.seek(0)
        data: bytes = self._file.read(size + 1)
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
            raise SignatureError(f"The downloaded model {str(self.path)!r} changed on disk "
                                 "after it was verified; it is not installed.", "tampered")
        return data

    def commit(self) -> None:
        """Rename the file over its model's name (it was synced by :meth:`verified`) and
        sync the folder."""
        self._file.close()
        os.replace(self.path, self.dest)
        self.done = True
        sync_folder(self.dest.parent)

    def discard(self) -> None:
        """Close and remove the file, unless :meth:`commit` renamed it; never raises."""
        with contextlib.suppress(OSError):
            self._file.close()
        if not self.done:
            self.done = True
            with contextlib.suppress(OSError):
                self.path.unlink()


#: The temporary files :func:`~edgewise._private.replace_atomically` writes for a slot's
#: model, pointer and history: ``.<name>.<pid>.<thread id>.<8 hex>.tmp``.
_SLOT_TEMP = re.compile(r"\.(?:model-\d+-[0-9a-f]{16}\.bin|current\.json|history\.json"
                        r"|failed\.json)"
                        r"\.(?P<pid>\d+)\.\d+\.[0-9a-f]{8}\.tmp")


#: The temporary files of :meth:`Agent.save_detectors` (``write_private``'s names).
_DETECTORS_TEMP = re.compile(r"\.detectors\.pickle\.\d+\.\d+\.[0-9a-f]{8}\.tmp")

#: A model file of the slot: ``model-<release>-<16 hex of its sha256>.bin``.
_SLOT_MODEL = re.compile(r"model-\d+-[0-9a-f]{16}\.bin")


def _model_file(m: Manifest) -> str:
    """The name of release ``m``'s model file in the slot.

    >>> _model_file(Manifest("ewz", "1", 3, "ab" * 32, 1, "pickle", "device:d", 0, "k"))
    'model-3-abababababababab.bin'
    """
    return f"model-{m.release}-{str(m.sha256)[:16]}.bin"


def _same_release(a: _Record, b: _Record) -> bool:
    """Whether two kept records are of one release (its number and model)."""
    return (a.manifest.release, a.manifest.sha256) == (b.manifest.release, b.manifest.sha256)


def _writer_alive(pid: int) -> bool:
    """Whether process ``pid`` may still be writing a temp file: another process that is
    alive (this one is not: a slot being opened has no write of its own in flight)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def _remove_regular_files(folder: os.PathLike[str] | str, wanted: Callable[[str], object],
                          ) -> list[tuple[str, str, int]]:
    """Remove the regular files in ``folder`` whose names ``wanted`` accepts (a link is
    neither followed nor removed; one that cannot be removed is skipped); return each
    one's name, path and size. A folder that cannot be listed removes nothing.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "a.tmp"), "w").write("xy")
    >>> [(name, size) for name, _, size in _remove_regular_files(d, lambda n: n.endswith(".tmp"))]
    [('a.tmp', 2)]
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed: list[tuple[str, str, int]] = []
    for entry in entries:
        if not wanted(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            size = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)  # the name itself: a link put there since is not followed
        except OSError:
            continue
        removed.append((entry.name, entry.path, size))
    return removed


class ModelSlot:
    """Verified models on disk and an atomically replaced pointer to the current one.

    ``device_id``, if given, is recorded in the pointer at each install; a slot whose model
    was installed for another device (by that record, or, for a slot an older agent filled,
    by a ``device:`` target of its manifests) raises :class:`~edgewise.errors.ConfigError`.

    Each installed release's manifest is kept with its signature (``current.json`` and
    ``history.json``). A slot given ``trusted_keys`` (the agent's, none included) checks them
    again at every read: a release may run (:meth:`current`, :meth:`previous`) only if its
    kept signature verifies with a key it trusts now and its target is ``device_id`` or one
    of ``groups``; it counts toward the anti-rollback floor (:meth:`installed_release`,
    :meth:`superseded`) only if its key is trusted now and its kept signature verifies. So a
    release signed by a key the operator stopped trusting neither runs nor holds the floor,
    while one for a group the device left holds it without running. A release an agent from
    before signatures were kept installed has none: it counts toward the floor where its
    key is trusted (refusing more is the safe side), and runs only once a signature for it
    verifies (:meth:`keep_signature`). Without ``trusted_keys`` the slot is read as it is
    (to look at it; nothing is checked but the hashes).

    Opening a slot removes the temporary files an install cut short (a power loss or a kill
    mid-write) left in it: a payload-sized ``.model-….bin.<pid>.<tid>.<hex>.tmp`` that
    nothing else would ever remove (:meth:`remove_stale_temps`).

    ``exclusive``: the caller holds the state dir's ``agent.lock`` (the :class:`Agent`
    does), so no other process writes the slot. Opening it then also removes every such
    temporary file whatever process its name gives (the pid of a killed agent may be
    another live process's after a reboot), adds the pointer's release to the install
    history where a power loss between the two writes of an install left it out (it would
    be nobody's fallback once the next release installs), and removes the model files that
    neither the pointer nor the history names (an install cut short, or refused by a full
    disk, after its model was renamed into place: a model-sized file that blocked every
    retry of that install on a full disk).
    """

    def __init__(self, root: str | os.PathLike[str], device_id: str | None = None, *,
                 trusted_keys: Mapping[str, bytes] | None = None,
                 groups: Sequence[str] = (), exclusive: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.exclusive = exclusive
        self.remove_stale_temps()
        self.pointer = self.root / "current.json"
        self.device_id = device_id
        self.trusted_keys = None if trusted_keys is None else dict(trusted_keys)
        self.groups = tuple(groups)
        self._checked: dict[tuple[bytes, bytes | None], tuple[str, str] | None] = {}
        if device_id is not None:
            owner = self.owner()
            if owner is not None and owner != device_id:
                raise ConfigError(
                    f"Model slot {str(self.root)!r} holds models installed for device "
                    f"{owner!r}, not {device_id!r} (its release would be run, and its "
                    "anti-rollback floor kept, as this device's): each device needs its own "
                    "state dir (--state-dir).")
        if exclusive:
            self._record_pointer()
            self.remove_orphans()

    def remove_stale_temps(self) -> list[str]:
        """Remove the temporary files of the slot's writes that never finished (named as
        :func:`~edgewise._private.replace_atomically` names them for the model, pointer and
        history files, and regular files: a link is never followed nor removed), unless the
        process named in them is another one still alive (it may be writing) and the slot
        is not ``exclusive`` (its agent.lock held: nobody else writes here, so a live pid
        is a reused one); return their names. Each removal is logged
        (``model_temp_removed``).

        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / f".model-3-{'ab' * 8}.bin.999999999.7.0badcafe.tmp").write_bytes(b"x")
        >>> _ = (root / ".notes.tmp").write_bytes(b"mine")
        >>> _ = ModelSlot(root)  # opening the slot removes it
        >>> sorted(p.name for p in root.iterdir())
        ['.notes.tmp']
        """
        def stale(name: str) -> bool:
            m = _SLOT_TEMP.fullmatch(name)
            return m is not None and (self.exclusive or not _writer_alive(int(m["pid"])))

        removed = _remove_regular_files(self.root, stale)
        for _, path, size in removed:
            log.info(json.dumps({"event": "model_temp_removed", "path": path,
                                 "bytes": size, "detail": "left by a model install that did "
                                 "not finish (a power loss or a kill mid-write)"}))
        return [name for name, _, _ in removed]

    def _record_pointer(self) -> bool:
        """Add the pointer's release to the install history where it is not there (a power
        loss between an install's pointer and history writes), if it counts toward the
        floor (:meth:`_counts`) and the history reads whole (a damaged one is written again
        by the next install); whether it was added. Logged (``model_history_mended``);
        never raises (a disk that refuses it is logged, and the next install adds it)."""
        ptr = self._pointer_record()
        if ptr is None or not self._counts(ptr):
            return False
        records, damage = self._history_records()
        if damage is not None or any(_same_release(r, ptr) for r in records):
            return False
        path = self.root / "history.json"
        event = {"event": "model_history_mended", "path": str(path),
                 "release": ptr.manifest.release,
                 "detail": f"release {ptr.manifest.release}, which the pointer names, was "
                 "missing from the install history (a power loss between the two writes of "
                 "its install); it is added"}
        try:
            replace_atomically(path, json.dumps([*(r.entry() for r in records),
                                                 ptr.entry()][-20:]).encode(), mode=0o644)
        except OSError as exc:
            event["detail"] += f", but the disk refused it ({exc}); the next install adds it"
            log.warning(json.dumps(event, default=str))
            return False
        log.warning(json.dumps(event, default=str))
        return True

    def remove_orphans(self) -> list[str]:
        """Remove the model files (``model-<release>-<sha16>.bin``, regular files: a link
        is left alone) that neither the pointer nor the install history names: an install
        cut short (or refused by the disk) after its model was renamed into place; return
        their names. Nothing is removed while the pointer or the history cannot be read
        whole (what they name is then unknown). Each removal is logged
        (``model_orphan_removed``). Only for a slot no other process writes (``exclusive``:
        another agent's install may be between its rename and its pointer write).

        >>> import tempfile
        >>> slot = ModelSlot(tempfile.mkdtemp())
        >>> _ = (slot.root / f"model-4-{'cd' * 8}.bin").write_bytes(b"half an install")
        >>> slot.remove_orphans()
        ['model-4-cdcdcdcdcdcdcdcd.bin']
        """
        try:
            ptr = self._pointer()
        except (OSError, ValueError):
            return []
        records, damage = self._history_records()
        if damage is not None:
            return []
        named = {_model_file(r.manifest) for r in records}
        if ptr is not None:
            named.add(ptr["file"])
        removed = _remove_regular_files(self.root,
            lambda name: bool(_SLOT_MODEL.fullmatch(name)) and name not in named)
        for _, path, size in removed:
            log.warning(json.dumps({
                "event": "model_orphan_removed", "path": path, "bytes": size,
                "detail": "neither the model pointer nor the install history names it (an "
                "install cut short, or refused by a full disk, after its model was put in "
                "place)"}))
        return [name for name, _, _ in removed]

    def _pointer(self) -> dict[str, Any] | None:
        """The pointer's fields, None if there is none; ValueError if it is damaged."""
        try:
            raw = self.pointer.read_bytes()
        except FileNotFoundError:
            return None
        try:
            ptr = json.loads(raw)
            if not (isinstance(ptr, dict) and isinstance(ptr.get("release"), int)
                    and all(isinstance(ptr.get(k), str) for k in ("sha256", "file", "manifest"))
                    and isinstance(ptr.get("signature", ""), str)):
                raise ValueError("a field is missing or of the wrong type")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"Model pointer {str(self.pointer)!r} is damaged ({exc}).") from None
        return ptr

    def owner(self) -> str | None:
        """The device this slot's models were installed for, or None if it does not say.

        >>> import tempfile
        >>> ModelSlot(tempfile.mkdtemp()).owner() is None
        True
        """
        targets: list[str] = []
        try:
            ptr = self._pointer()
        except (OSError, ValueError):
            ptr = None
        if ptr is not None:
            if isinstance(ptr.get("device"), str):
                return str(ptr["device"])
            with contextlib.suppress(SignatureError, ValueError):
                targets.append(Manifest.from_bytes(base64.b64decode(ptr["manifest"])).target)
        targets += [m.target for m in reversed(self.readable_history()[0])]
        # verify() refuses a release for another device, so a device: target names the owner
        return next((t[len("device:"):] for t in targets if t.startswith("device:")), None)

    def _pointer_record(self) -> _Record | None:
        """The pointer's record (manifest and kept signature); None if there is none or it
        cannot be read. Never raises."""
        try:
            ptr = self._pointer()
            return None if ptr is None else _Record.parse(ptr["manifest"], ptr.get("signature"))
        except (OSError, ValueError, TypeError, SignatureError):
            return None

    def _distrust(self, record: _Record) -> tuple[str, str] | None:
        """Why ``record`` may not run, as (reason, detail); None: it may (its kept signature
        verifies with a trusted key, for this device or one of its groups; a slot without
        ``trusted_keys`` checks nothing). Reasons: ``unknown_key``, ``tampered`` (neither
        counts toward the floor), ``wrong_device``, ``unsigned`` (kept without a signature;
        both still count toward it, :meth:`_counts`).

        >>> import tempfile
        >>> from edgewise.registry import Artifact, load_or_create_key, sign
        >>> k, old = load_or_create_key(tempfile.mkdtemp()), load_or_create_key(tempfile.mkdtemp())
        >>> slot = ModelSlot(tempfile.mkdtemp(), "d", trusted_keys={k.key_id: k.public_key_bytes})
        >>> s = sign(Artifact(b"m", "ewz", "1.0", 1, "device:d"), k)
        >>> slot._distrust(_Record(s.manifest_bytes, s.manifest, s.signature)) is None
        True
        >>> s = sign(Artifact(b"m", "ewz", "1.0", 1, "device:d"), old)
        >>> slot._distrust(_Record(s.manifest_bytes, s.manifest, s.signature))[0]
        'unknown_key'
        """
        if self.trusted_keys is None:
            return None
        seen = (record.manifest_bytes, record.signature)
        if seen not in self._checked:
            self._checked[seen] = self._why_untrusted(record)
        return self._checked[seen]

    def _why_untrusted(self, record: _Record) -> tuple[str, str] | None:
        assert self.trusted_keys is not None
        m = record.manifest
        if not (isinstance(m.key_id, str) and isinstance(m.target, str)
                and isinstance(m.release, int) and not isinstance(m.release, bool)
                and isinstance(m.sha256, str)):
            return "tampered", "its manifest's fields are not of their types"
        if m.key_id not in self.trusted_keys:
            return "unknown_key", (f"it is signed by key {m.key_id!r}, which this device does "
                                   f"not trust (trusted: "
                                   f"{', '.join(sorted(self.trusted_keys)) or 'none'})")
        if record.signature is not None:
            try:
                Ed25519PublicKey.from_public_bytes(self.trusted_keys[m.key_id]).verify(
                    record.signature, record.manifest_bytes)
            except (InvalidSignature, ValueError):
                return "tampered", (f"its kept signature does not verify with key "
                                    f"{m.key_id!r} (the manifest or the signature was altered)")
        mine = {f"group:{g}" for g in self.groups}
        if self.device_id is not None:
            mine.add(f"device:{self.device_id}")
        if m.target not in mine:
            return "wrong_device", (f"it targets {m.target!r}, not this device "
                                    f"({', '.join(sorted(mine)) or 'none'}); signed by a "
                                    "trusted key, it still holds the anti-rollback floor")
        if record.signature is None:
            return "unsigned", ("its signature was not kept (an agent from before signatures "
                                "were kept installed it), so it cannot be checked again; it "
                                "holds the anti-rollback floor, as its key is trusted, and "
                                "runs again once the gateway offers it and its signature "
                                "verifies")
        return None

    def _counts(self, record: _Record) -> bool:
        """Whether ``record`` counts toward the anti-rollback floor: it passes
        (:meth:`_distrust`), or only its target is no longer this device's (a group the
        device left: a release signed for it by a trusted key is no attacker's number), or
        it was kept unsigned by an older agent with a trusted key. Counting refuses more,
        never runs anything; a release of a key not trusted now, or whose kept signature
        does not verify, does not count (a leaked key's release 10**15 would refuse every
        real release as a rollback)."""
        why = self._distrust(record)
        return why is None or why[0] in ("wrong_device", "unsigned")

    def _counted(self) -> list[_Record]:
        """The records that count toward the floor: the pointer's, then the install
        history's, newest first (all that can be read, for a slot without trusted keys)."""
        ptr = self._pointer_record()
        records = ([] if ptr is None else [ptr]) + self._history_records()[0][::-1]
        return [r for r in records if self._counts(r)]

    def current(self) -> Installed | None:
        """The installed model (hash re-checked; for a slot with trusted keys, its kept
        signature, key and target too: :class:`_UntrustedModel` if they do not pass), or
        None; ValueError if the pointer is damaged."""
        ptr = self._pointer()
        if ptr is None:
            return None
        record = _Record.parse(ptr["manifest"], ptr.get("signature"))
        why = self._distrust(record)
        if why is not None:
            raise _UntrustedModel(record, *why)
        m = record.manifest
        payload = (self.root / ptr["file"]).read_bytes()
        digest = hashlib.sha256(payload).hexdigest()
        if digest != ptr["sha256"] or digest != m.sha256:
            raise SignatureError(f"Installed model {ptr['file']!r} does not match its hash.",
                                 "tampered")
        return Installed(ptr["release"], ptr["sha256"], m, payload, record.manifest_bytes,
                         record.signature)

    def _pointed_release(self) -> int | None:
        try:
            ptr = self._pointer()
        except (OSError, ValueError):
            return None
        return None if ptr is None else int(ptr["release"])

    def installed_release(self) -> int:
        """The anti-rollback floor: the newest release the pointer or the install history
        names (0 if none), so a damaged pointer does not lower it; for a slot with trusted
        keys, of the releases that count (:meth:`_counts`): one signed by a key no longer
        trusted, or for a group the device left, does not hold it."""
        if self.trusted_keys is None:
            releases = [self._pointed_release() or 0]
            releases += [m.release for m in self.readable_history()[0]]
            return max(releases)
        return max([0] + [r.manifest.release for r in self._counted()])

    def previous(self) -> Installed | None:
        """The newest release older than the current one whose file is still here, intact
        (the pointer damaged: the newest such release), and that no later rollback order
        replaced (:meth:`superseded`): the version a device was rolled back from is never
        its fallback. For a slot with trusted keys, only a release whose kept signature,
        key and target pass (:meth:`_distrust`)."""
        floor = self._pointed_release() or None
        superseded = self.superseded()
        for r in reversed(self._history_records()[0]):
            m = r.manifest
            if ((floor is not None and m.release >= floor) or m.release in superseded
                    or self._distrust(r) is not None):
                continue
            path = self.root / f"model-{m.release}-{m.sha256[:16]}.bin"
            try:
                payload = path.read_bytes()
            except OSError:
                continue
            if hashlib.sha256(payload).hexdigest() == m.sha256:
                return Installed(m.release, m.sha256, m, payload, r.manifest_bytes,
                                 r.signature)
        return None

    def superseded(self) -> dict[int, Manifest]:
        """The installed releases a later rollback order replaced: release to that order.

        A rollback order (``kind="rollback"``) to version V of model N, signed as release R,
        sends the device back to V: every release of N below R of another version is
        replaced by it (the version rolled back from, and whatever else ran before it: which
        versions are older than V is the registry's publish order, which the device does not
        know). A release above R (signed after the order) is not. The orders are read from
        the install history and the pointer (which an install writes first), for a slot with
        trusted keys those that count (:meth:`_counts`); never raises.

        >>> import tempfile
        >>> from edgewise.registry import Artifact, load_or_create_key, sign
        >>> slot, key = ModelSlot(tempfile.mkdtemp()), load_or_create_key(tempfile.mkdtemp())
        >>> for rel, ver, kind in ((1, "1.0.0", "release"), (2, "2.0.0", "release"),
        ...                        (3, "1.0.0", "rollback")):
        ...     s = sign(Artifact(ver.encode(), "ewz", ver, rel, "device:d", kind=kind), key)
        ...     slot.install(s.manifest_bytes, s.payload, signature=s.signature)
        >>> {r: (o.release, o.version) for r, o in slot.superseded().items()}
        {2: (3, '1.0.0')}
        """
        manifests = [r.manifest for r in self._counted()]
        orders = sorted((m for m in manifests if m.kind == "rollback"), key=lambda m: m.release)
        out: dict[int, Manifest] = {}
        for m in manifests:
            order = next((o for o in orders if o.release > m.release and o.name == m.name
                          and o.version != m.version), None)
            if order is not None:
                out[m.release] = order
        return out

    def history(self) -> list[Manifest]:
        """Manifests of every release installed so far (for mix-and-match detection);
        ValueError or SignatureError if the file is damaged (see :meth:`readable_history`)."""
        path = self.root / "history.json"
        if not path.exists():
            return []
        try:
            return [_history_record(e).manifest for e in json.loads(path.read_bytes())]
        except TypeError as exc:
            raise ValueError(f"History {str(path)!r} is damaged: {exc}.") from None

    def readable_history(self) -> tuple[list[Manifest], str | None]:
        """The manifests of the install history that can still be read, and what is damaged
        in it (None: nothing); never raises, so a damaged history cannot block an update
        (:meth:`install` replaces it).

        >>> import tempfile
        >>> slot = ModelSlot(tempfile.mkdtemp())
        >>> _ = (slot.root / "history.json").write_text('["bm90IGEgbWFuaWZlc3Q="]')
        >>> slot.readable_history()
        ([], 'entry 1 of 1 is not a manifest (Manifest is not valid manifest JSON: ...)')
        """
        records, damage = self._history_records()
        return [r.manifest for r in records], damage

    def _history_records(self) -> tuple[list[_Record], str | None]:
        """The install history's readable records (manifest and kept signature), oldest
        first, and what is damaged in it, as :meth:`readable_history`; never raises."""
        path = self.root / "history.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return [], None
        except OSError as exc:
            return [], f"it cannot be read ({exc.strerror or exc})"
        try:
            entries = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return [], f"it is not JSON ({exc})"
        if not isinstance(entries, list):
            return [], f"it is a JSON {type(entries).__name__}, not a list of manifests"
        out: list[_Record] = []
        bad: list[str] = []
        for i, entry in enumerate(entries, start=1):
            try:
                out.append(_history_record(entry))
            except (ValueError, TypeError, SignatureError) as exc:
                bad.append(f"entry {i} of {len(entries)} is not a manifest ({exc})")
        return out, "; ".join(bad[:3]) or None

    def failed(self) -> dict[str, str]:
        """The models that failed on this device's readings (:meth:`mark_failed`): sha256 to
        what happened; never raises (a damaged ``failed.json`` is read as far as it goes).

        >>> import tempfile
        >>> slot = ModelSlot(tempfile.mkdtemp())
        >>> slot.mark_failed(3, "ab" * 32, "KeyError: 'value'")
        >>> slot.failed()
        {'abababababababababababababababababababababababababababababababab': "KeyError: 'value'"}
        """
        try:
            entries = json.loads((self.root / "failed.json").read_bytes())
        except (OSError, ValueError):
            return {}
        out: dict[str, str] = {}
        for e in entries if isinstance(entries, list) else []:
            if isinstance(e, dict) and isinstance(e.get("sha256"), str):
                out[e["sha256"]] = str(e.get("detail", ""))
        return out

    def mark_failed(self, release: int, sha256: str, detail: str) -> None:
        """Record that the model ``sha256`` (installed as ``release``) failed on a reading,
        so it is not run again at the next start (``models/failed.json``, the newest 20,
        replaced atomically); OSError if it cannot be written."""
        path = self.root / "failed.json"
        try:
            entries = json.loads(path.read_bytes())
        except (OSError, ValueError):
            entries = []
        if not isinstance(entries, list):
            entries = []
        entries = [e for e in entries if isinstance(e, dict) and e.get("sha256") != sha256]
        entries.append({"release": release, "sha256": sha256, "detail": detail[:500]})
        replace_atomically(path, json.dumps(entries[-20:]).encode(), mode=0o644)

    def point_to(self, installed: Installed) -> None:
        """Make the pointer name ``installed`` (a release whose file is here), atomically."""
        self._write_pointer(installed.manifest_bytes or installed.manifest.to_bytes(),
                            installed.manifest, installed.signature)

    def _write_pointer(self, manifest_bytes: bytes, m: Manifest,
                       signature: bytes | None = None) -> None:
        ptr: dict[str, Any] = {"release": m.release, "sha256": m.sha256,
                               "file": f"model-{m.release}-{m.sha256[:16]}.bin",
                               "manifest": base64.b64encode(manifest_bytes).decode()}
        if signature is not None:
            ptr["signature"] = base64.b64encode(signature).decode()
        if self.device_id is not None:
            ptr["device"] = self.device_id
        replace_atomically(self.pointer, json.dumps(ptr).encode(), mode=0o644)

    def stage(self, manifest: Manifest) -> _Staged:
        """A temporary file in the slot to download ``manifest``'s model into
        (:class:`_Staged`; :meth:`install` renames it into place); OSError if it cannot be
        made."""
        return _Staged(self.root / f"model-{manifest.release}-{manifest.sha256[:16]}.bin")

    def keep_signature(self, manifest_bytes: bytes, signature: bytes) -> bool:
        """Keep ``signature`` (verified by the caller) with the installed release whose
        manifest is ``manifest_bytes`` where it was kept without one (the pointer and the
        history, as an agent from before signatures were kept wrote them), each replaced
        atomically; whether anything was written. OSError if the disk refuses it."""
        wrote = False
        with contextlib.suppress(ValueError):
            ptr = self._pointer()
            if (ptr is not None and "signature" not in ptr
                    and base64.b64decode(ptr["manifest"]) == manifest_bytes):
                ptr["signature"] = base64.b64encode(signature).decode()
                replace_atomically(self.pointer, json.dumps(ptr).encode(), mode=0o644)
                wrote = True
        records, damage = self._history_records()
        if damage is None and any(r.manifest_bytes == manifest_bytes and r.signature is None
                                  for r in records):
            entries = [(_Record(r.manifest_bytes, r.manifest, signature)
                        if r.manifest_bytes == manifest_bytes and r.signature is None
                        else r).entry() for r in records]
            replace_atomically(self.root / "history.json", json.dumps(entries).encode(),
                               mode=0o644)
            wrote = True
        return wrote

    def install(self, manifest_bytes: bytes, payload: bytes | _Staged, *,
                signature: bytes | None = None,
                running: tuple[int, str] | None = None) -> None:
        """Write the payload (or rename the verified download :meth:`stage` made into
        place), flip the pointer, then add the release, with its ``signature``, to the
        history; each step is crash-atomic. A damaged pointer or history is replaced (and
        logged), never a reason to refuse the install. A release installed without a
        signature is kept as an older agent kept it: a slot with trusted keys does not run
        it (:meth:`current`). An install whose pointer or history write fails (OSError: a
        full disk) is undone as far as it went: the old pointer is put back and the new
        model file removed, so a retry finds the room the first try had; the old pointer's
        release, if the history lacks it, is added to it.

        The model files kept are the new release's and the fallback's: ``running`` (release,
        sha256: the model the device runs, which may be older than the pointer's after a
        fallback), else the pointer's release unless it failed on this device's readings
        (:meth:`failed`; then the release that runs in its place, :meth:`previous`). The
        pointer's file alone was kept, so after a fallback from a failed release the working
        model was deleted and the failed one kept: a new release failing fell back to the
        built-in detector."""
        m = Manifest.from_bytes(manifest_bytes)
        fname = _model_file(m)
        # what is there before the model is put in place: a failure reading it leaves no
        # model file behind
        try:
            old_raw: bytes | None = self.pointer.read_bytes()
        except FileNotFoundError:
            old_raw = None
        try:
            ptr = self._pointer()
            old = None if ptr is None else ptr["file"]
        except ValueError as exc:
            ptr = old = None
            log.warning(json.dumps({"event": "model_pointer_damaged", "path": str(self.pointer),
                                    "detail": f"{exc} It is replaced by this install."}))
        fallback = old
        if running is not None:
            fallback = f"model-{running[0]}-{running[1][:16]}.bin"
        elif ptr is not None and ptr.get("sha256") in self.failed():
            prev = self.previous()  # of the old pointer: what runs in its place
            fallback = None if prev is None else _model_file(prev.manifest)
        known, damage = self._history_records()
        if signature is not None:  # an entry kept unsigned (an older agent's) gets it
            known = [_Record(r.manifest_bytes, r.manifest, signature)
                     if r.manifest_bytes == manifest_bytes and r.signature is None else r
                     for r in known]
        # the old pointer's release, where a power loss between its install's pointer and
        # history writes left it out of the history: it stays the fallback and the floor
        readable = len(known)
        old_record = self._pointer_record()
        if (old_record is not None and self._counts(old_record)
                and not any(_same_release(r, old_record) for r in known)):
            known.append(old_record)
        hist = [r.entry() for r in known]
        if damage is not None:
            also = " and the release the pointer named" if len(known) > readable else ""
            log.warning(json.dumps({"event": "model_history_damaged",
                                    "path": str(self.root / "history.json"),
                                    "detail": f"{damage}; it is written again with the "
                                    f"{readable} readable entries{also} and this release."}))
        again = old == fname  # the running release installed again (a damaged copy mended)
        if not (again and any(r.manifest.release == m.release
                              and r.manifest.sha256 == m.sha256 for r in known)):
            hist.append(_Record(manifest_bytes, m, signature).entry())
        existed = (self.root / fname).exists()
        if isinstance(payload, _Staged):
            payload.commit()
        else:
            replace_atomically(self.root / fname, payload, mode=0o644)
        # the pointer before the history: a crash between them must not leave the history
        # naming a release (the anti-rollback floor) that the pointer does not run
        try:
            self._write_pointer(manifest_bytes, m, signature)
        except OSError:
            if not existed:  # a full disk: the model file would block every retry
                self._remove_model(fname)
            raise
        try:
            replace_atomically(self.root / "history.json", json.dumps(hist[-20:]).encode(),
                               mode=0o644)
        except OSError:
            self._undo_pointer(old_raw, fname, remove_model=not existed)
            raise
        if again:  # the previous release's file stays the fallback it was
            return
        for p in self.root.glob("model-*.bin"):  # keep the current and the fallback only
            if p.name not in (fname, fallback):
                p.unlink(missing_ok=True)

    def _remove_model(self, fname: str) -> None:
        """Remove the model file ``fname`` an install put in place and could not finish;
        never raises (one left is removed when the slot is next opened exclusively)."""
        with contextlib.suppress(OSError):
            (self.root / fname).unlink(missing_ok=True)
            sync_folder(self.root)

    def _undo_pointer(self, old_raw: bytes | None, fname: str, *, remove_model: bool) -> None:
        """An install whose history write failed after its pointer write: put the old
        pointer back (``old_raw``: its bytes, None: there was none), then remove the new
        model file ``fname`` if ``remove_model``; a pointer that cannot be put back stays
        on the new release, whose file is kept (the next exclusive open adds it to the
        history). Never raises."""
        try:
            if old_raw is None:
                self.pointer.unlink(missing_ok=True)
                sync_folder(self.root)
            else:
                replace_atomically(self.pointer, old_raw, mode=0o644)
        except OSError:
            return
        if remove_model:
            self._remove_model(fname)


def load_detector(payload: bytes) -> Any:
    """Unpickle a release's payload and check it works as the agent uses it; the detector.

    The agent runs one detector per metric, fresh (``clone()``) or a copy of the published
    model with what it learned (see :meth:`Agent._new_detector`), and calls ``score_one`` /
    ``learn_one`` with one metric, named as the device names it. Both kinds are probed with
    a reading of metric ``value`` and one of another name; a payload that does not unpickle,
    or whose object cannot do that, raises ``ValueError`` naming what failed (the release is
    then refused, never installed).

    >>> import pickle
    >>> type(load_detector(pickle.dumps(EWZScore()))).__name__
    'EWZScore'
    >>> load_detector(pickle.dumps([1, 2]))
    Traceback (most recent call last):
    ...
    ValueError: The model is a list, not a detector: it has no clone(), score_one(), learn_one().
    """
    try:
        model = pickle.loads(payload)  # signed: verified before this is called
    except Exception as exc:  # any unpickling failure means the same thing
        raise ValueError(f"The model does not unpickle: {type(exc).__name__}: "
                         f"{str(exc)[:200]}.") from None
    missing = [f"{a}()" for a in ("clone", "score_one", "learn_one")
               if not callable(getattr(model, a, None))]
    if missing:
        raise ValueError(f"The model is a {type(model).__name__}, not a detector: it has no "
                         f"{', '.join(missing)}.")
    cls = type(model).__name__
    probe: Any = None
    for kind in ("fresh (clone())", "trained (a copy)"):
        for name in _PROBE_METRICS:
            try:
                if kind.startswith("fresh"):
                    probe = model.clone()
                else:  # one copy of the model at a time beside its pickle (a model of
                    # N MiB held 3 N MiB here): it is unpickled again once probed
                    model = None
                    probe = pickle.loads(payload)
                score = float(probe.score_one({name: 0.0}))
                probe.learn_one({name: 0.0})
            except Exception as exc:  # whatever it raises, it cannot run here
                raise ValueError(
                    f"The model ({cls}), {kind}, fails on a one-metric "
                    f"reading of metric {name!r}: {type(exc).__name__}: {str(exc)[:200]}."
                ) from None
            probe = None  # let it go before the next copy is made
            if math.isnan(score):
                raise ValueError(f"The model ({cls}), {kind}, scores a "
                                 f"reading of metric {name!r} as NaN.")
    try:
        return pickle.loads(payload)  # as it was published: the copies above were probed
    except Exception as exc:  # unpickled three times already; a fourth may still fail
        raise ValueError(f"The model does not unpickle: {type(exc).__name__}: "
                         f"{str(exc)[:200]}.") from None


def load_trusted_key(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read a ``signing_key.pub`` (base64 of the raw Ed25519 key) into ``{key_id: key}``.

    The ``KEY_ID BASE64`` line that ``edgewise registry pubkey`` prints is read too (its key id
    must match). Anything else raises ``ValueError`` naming the file and what it should hold.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "k.pub"
    >>> _ = p.write_text(base64.b64encode(bytes(32)).decode())
    >>> list(load_trusted_key(p))
    ['66687aadf862bd77']
    >>> _ = p.write_text("hello")
    >>> load_trusted_key(p)
    Traceback (most recent call last):
    ...
    ValueError: Trust key file '...k.pub' is not a registry public key: it must hold the base64 of a raw 32-byte Ed25519 key (the gateway's registry/signing_key.pub, or what 'edgewise registry pubkey' prints).
    """  # noqa: E501
    where = f"Trust key file {str(path)!r}"
    allowed = ("it must hold the base64 of a raw 32-byte Ed25519 key (the gateway's "
               "registry/signing_key.pub, or what 'edgewise registry pubkey' prints)")
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist; {allowed}.") from None
    except OSError as exc:
        raise ValueError(f"{where} cannot be read ({exc.strerror}); {allowed}.") from None
    if "PRIVATE KEY" in text:
        raise ValueError(f"{where} holds a private key, which must never leave the gateway; "
                         f"give the public half: {allowed}.")
    words = text.split()
    raw = b""
    if 1 <= len(words) <= 2:
        try:
            raw = base64.b64decode(words[-1], validate=True)
        except ValueError:
            raw = b""
    if len(raw) != 32:
        raise ValueError(f"{where} is not a registry public key: {allowed}.")
    kid = key_id_of(raw)
    if len(words) == 2 and words[0] != kid:
        raise ValueError(f"{where} names key id {words[0]!r}, but its key's id is {kid!r}; "
                         f"{allowed}.")
    return {kid: raw}


def check_source(spec: str) -> None:
    """Raise ``ValueError`` (one line) unless ``spec`` is a source the agent can read.

    >>> check_source("sim"), check_source("stdin")
    (None, None)
    >>> check_source("bogus")
    Traceback (most recent call last):
    ...
    ValueError: --source must be sim, csv:PATH or stdin. Got 'bogus' instead.
    """
    if spec in ("sim", "stdin"):
        return
    if not spec.startswith("csv:"):
        raise ValueError(f"--source must be sim, csv:PATH or stdin. Got {spec!r} instead.")
    path = Path(spec[4:])
    if not spec[4:] or not path.is_file():
        raise ValueError(f"--source {spec!r}: {str(path)!r} is not a file; csv:PATH needs a "
                         "CSV file with a header row, the time in its first column.")
    if not os.access(path, os.R_OK):
        raise ValueError(f"--source {spec!r}: {str(path)!r} cannot be read (permission).")


def sim_value(seq: int) -> float:
    """The simulated sensor's reading number ``seq``: a slow wave, noise, a spike every 500.

    >>> round(sim_value(1), 6) == round(sim_value(1), 6)
    True
    """
    noise = (int(hashlib.sha256(str(seq).encode()).hexdigest()[:8], 16) / 2**32 - 0.5) * 0.4
    spike = 15.0 if seq % 500 == 0 else 0.0
    return round(20.0 + 2.0 * math.sin(seq / 50.0) + noise + spike, 6)


def stdin_reading(line: str, lineno: int = 0) -> dict[str, float]:
    """One line of the ``stdin`` source: a number (metric ``value``) or a JSON object of
    metric to number or boolean (stored as 1 / 0, as the gateway does).

    A sensor process may print anything, and one bad line must not stop the agent: a line
    that is neither is skipped, and a field that is no finite number or boolean is left out
    while the others are kept; each is logged, naming the line, the field and the value.

    >>> stdin_reading('{"temp_c": 21.5, "running": true, "mode": "auto"}')
    {'temp_c': 21.5, 'running': 1.0}
    >>> stdin_reading("21.5"), stdin_reading("oops"), stdin_reading("")
    ({'value': 21.5}, {}, {})
    """
    text = line.strip()
    if not text:
        return {}
    try:
        doc = json.loads(text) if text.startswith("{") else {"value": float(text)}
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        log.warning(json.dumps({"event": "bad_input", "line": lineno, "value": text[:200],
                                "allowed": "a number or a JSON object of metric to number"}))
        return {}
    out = {}
    for name, v in doc.items():
        number = _finite(v)
        if number is not None:
            out[str(name)] = number
        else:
            log.warning(json.dumps({"event": "bad_input", "line": lineno, "field": name,
                                    "value": repr(v)[:200],
                                    "allowed": "a finite number or a boolean"}))
    return out


def _finite(v: Any) -> float | None:
    """``v`` as a finite float, or None: not a number (a boolean is one: 1 / 0), NaN,
    infinite, or an int too large for a float (``math.isfinite`` raised OverflowError).

    >>> _finite(True), _finite(2), _finite(float("inf")), _finite(10**400), _finite("1")
    (1.0, 2.0, None, None, None)
    """
    if not isinstance(v, int | float):
        return None
    try:
        number = float(v)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def csv_time(cell: str, lineno: int, cells: _CellLog | None = None) -> int | None:
    """The time of a ``csv:PATH`` row (its first cell), in UTC nanoseconds, or None (logged;
    told to ``cells``, the file's ``_CellLog``, where given: said at once for each kind of
    bad time, then at most once a minute).

    RFC 3339 or an epoch number (s, ms, us or ns), by :func:`edgewise.telemetry.parse_time`'s
    rules, from 2000-01-01 (a file of history may be old; earlier is a logger's clock that
    was never set). A row before that, or no time, is logged with its line number and
    skipped. No bound ahead of this device's clock is applied here: that clock may be the
    wrong one (restored at boot to the time it shut down, until NTP steps it) while the
    logger's is right, and a row skipped here is lost for good (the source position moves
    past it). A time the gateway finds too far ahead it refuses, and that refusal is counted
    and kept in the outbox's ``rejected`` table like any other.

    >>> csv_time("2024-01-31T12:00:00Z", 2), csv_time("1706702400.5", 3)
    (1706702400000000000, 1706702400500000000)
    >>> csv_time("1999-12-31T23:59:59Z", 4) is None
    True
    >>> csv_time(str(time.time_ns() + 3600 * 10**9), 5) is not None  # ahead of this clock
    True
    """
    try:
        return parse_time_text(cell, field_name="time", max_future_s=math.inf)
    except PayloadError as exc:
        if cells is not None:
            cells.row_skipped(cell, lineno, exc)
        else:
            log.warning(json.dumps({"event": "bad_input", "line": lineno, "field": "time",
                                    "value": cell[:200], "allowed": exc.allowed,
                                    "detail": "row skipped"}))
        return None


def _decoded(raw: bytes | str, lineno: int) -> str | None:
    """One line of a source as text, or None (logged) if it is not UTF-8: one bad byte
    (a glitch, or a logger writing Latin-1) skips its line, never stops the agent.

    >>> _decoded(b"21.5\\n", 2), _decoded(b"2\\xb01.5\\n", 3)
    ('21.5\\n', None)
    """
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        log.warning(json.dumps({
            "event": "bad_input", "line": lineno,
            "value": raw.decode("utf-8", "backslashreplace").strip()[:200],
            "allowed": "UTF-8 text", "detail": f"row skipped: {exc.reason} at byte "
            f"{exc.start}"}))
        return None


def _cells(line: str) -> list[str]:
    """The cells of one CSV line (RFC 4180: quoted cells, quotes doubled inside), stripped.

    >>> _cells('"2024-01-31T12:00:00Z","21.5", 7\\r\\n'), _cells("")
    (['2024-01-31T12:00:00Z', '21.5', '7'], [])
    """
    try:
        return [c.strip() for c in next(csv.reader([line.rstrip("\r\n")]), [])]
    except csv.Error:
        return [c.strip() for c in line.strip().split(",")]


def csv_header(raw: bytes) -> list[str]:
    """The column names of a ``csv:PATH`` file's header line (RFC 4180 quoting, a UTF-8
    byte order mark dropped); a header that is not UTF-8 is read as Latin-1, as a
    Windows logger writes ``°C``, and logged. Each column after the first whose name the
    gateway would refuse as a metric name is logged once and left out ('').

    >>> csv_header(b'"time","temp_c",flow\\n')
    ['time', 'temp_c', 'flow']
    >>> csv_header(b"time,temp_\\xb0C,rpm\\n")
    ['time', '', 'rpm']
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        log.warning(json.dumps({"event": "bad_input", "line": 1, "value": text.strip()[:200],
                                "allowed": "UTF-8 text", "detail": "header read as Latin-1"}))
    names = _cells(text)
    for i, name in enumerate(names[1:], start=1):
        if not METRIC_NAME_RE.fullmatch(name):
            log.warning(json.dumps({
                "event": "bad_input", "line": 1, "field": name[:200], "column": i + 1,
                "allowed": "a metric name of 1-64 letters, digits, '_', '.', ':', '/', '-' "
                "(what the gateway takes)", "detail": "column left out"}))
            names[i] = ""
    return names


class _CellLog:
    """Says a ``csv:PATH`` cell that is no number (``bad_input``, naming its column, line
    and value) at once the first time in its column, then at most once a minute a column,
    with the count left out since: a logger writing decimal commas (``21,0``) is told at
    start, not hidden, and not said once per row.

    A row skipped for its time (:func:`csv_time`) is said the same way, at once for each
    kind of bad time (``bad_ts``: no time, or one without a UTC offset; ``ancient_ts``:
    before 2000), then at most once a minute with the count skipped since: a logger that
    writes its local time without an offset (``2024-01-31 12:00:00``) logged a warning for
    every row, one a second for ever.

    >>> cells = _CellLog()
    >>> cells.left_out(2, "temp_c", "21,0", 2), cells.left_out(2, "temp_c", "21,1", 3)
    (True, False)
    """

    def __init__(self) -> None:
        # a column (int) or ("time", reason): (monotonic time said, count since)
        self._said: dict[Any, tuple[float, int]] = {}

    def _due(self, key: Any) -> tuple[bool, int | None]:
        """Whether ``key`` is to be said now (counted if not), and the count since it was
        said last (None: never said)."""
        now = time.monotonic()
        said = self._said.get(key)
        if said is not None and now - said[0] < _DROP_LOG_EVERY_S:
            self._said[key] = (said[0], said[1] + 1)
            return False, said[1] + 1
        self._said[key] = (now, 0)
        return True, None if said is None else said[1]

    def row_skipped(self, cell: str, lineno: int, exc: PayloadError) -> bool:
        """Count the row on line ``lineno`` skipped for its time ``cell`` (``exc``: why);
        return whether it was logged now."""
        due, since = self._due(("time", exc.reason))
        if not due:
            return False
        event: dict[str, Any] = {
            "event": "bad_input", "line": lineno, "field": "time", "value": cell[:200],
            "allowed": exc.allowed, "detail": "row skipped; said at once for each kind of "
            "bad time, then at most once a minute with the count"}
        if since is not None:
            event["skipped_since"] = since
        log.warning(json.dumps(event))
        return True

    def left_out(self, column: int, name: str, cell: str, lineno: int) -> bool:
        """Count the cell of ``column`` (from 1) on line ``lineno`` left out; return whether
        it was logged now."""
        due, since = self._due(column)
        if not due:
            return False
        hint = ""
        if "," in cell and "." not in cell:
            with contextlib.suppress(ValueError):
                float(cell.replace(",", "."))
                hint = " (a decimal comma: the file must use a decimal point, e.g. 21.5)"
        event: dict[str, Any] = {
            "event": "bad_input", "line": lineno, "field": name[:200], "column": column,
            "value": cell[:200], "allowed": "a finite number", "detail": f"cell left out{hint}; "
            "said at once for each column, then at most once a minute with the count"}
        if since is not None:
            event["left_out_since"] = since
        log.warning(json.dumps(event))
        return True


def csv_row(header: Sequence[str], raw: bytes, lineno: int, cells: _CellLog | None = None
            ) -> tuple[dict[str, float], int | None]:
    """``(reading, time)`` of one data line of a ``csv:PATH`` file (line ``lineno``): its
    first cell is the time (:func:`csv_time`), the others numbers under the header's names.
    A line that is not UTF-8, or whose time is unusable, is logged and gives ``({}, None)``.
    A cell that is no finite number (``21,0``; ``NaN``, ``inf``, ``1e999``) is left out and
    told to ``cells`` (a ``_CellLog`` kept
    for the whole file; None: a fresh one, which logs it); an empty cell is a reading not
    taken, left out silently.

    >>> csv_row(["time", "temp_c"], b'"2024-01-31T12:00:00Z","21.5"\\n', 2)
    ({'temp_c': 21.5}, 1706702400000000000)
    """
    line = _decoded(raw, lineno)
    if line is None or not line.strip():
        return {}, None
    row = _cells(line)
    ts = csv_time(row[0], lineno, cells) if row else None
    if ts is None:
        return {}, None
    out = {}
    for column, (name, cell) in enumerate(zip(header[1:], row[1:], strict=False), start=2):
        if not name or not cell:
            continue
        try:
            number = float(cell)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            out[name] = number
        else:  # no number, or NaN, inf, 1e999 (which handle() left out without a word)
            (cells if cells is not None else _CellLog()).left_out(column, name, cell, lineno)
    return out, ts


_CSV_RECORD_MAX_LINES = 1000  # a quoted cell open longer than this is a stray quote
_CSV_RECORD_MAX_BYTES = 1 << 20
_QUOTE, _COMMA = ord('"'), ord(",")


def _quote_open(line: bytes, quoted: bool) -> bool:
    """Whether a quoted cell is open at the end of the CSV line ``line`` (``quoted``: one was
    open at its start), as :mod:`csv` reads it (RFC 4180; a quote opens a cell only as its
    first character, ``""`` inside one is a quote). ASCII quote and comma bytes are never
    part of a UTF-8 (or Latin-1) character, so bytes are scanned as they are.

    >>> _quote_open(b'1,"a\\n', False), _quote_open(b'b"",c"\\n', True)
    (True, False)
    >>> _quote_open(b'1,a"\\n', False), _quote_open(b'1,"a""b\\n', False)
    (False, True)
    """
    if _QUOTE not in line:
        return quoted
    state = 2 if quoted else 0  # 0 start of a cell, 1 in a cell, 2 quoted, 3 quote in quoted
    for c in line:
        if state == 2:
            if c == _QUOTE:
                state = 3
        elif c == _COMMA:
            state = 0
        elif state == 0:
            state = 2 if c == _QUOTE else 1
        elif state == 3:
            state = 2 if c == _QUOTE else 1
    return state == 2


def _csv_records(f: Any, spec: str) -> Iterator[tuple[int, bytes, bool]]:
    """``(line, record, whole)`` of the CSV file ``f`` (binary, at its start): each record
    (a row: one line, or more while a quoted cell holds newlines) and the line it starts on.
    A last record without its newline, or whose quoted cell is still open at the end of the
    file (a logger mid-write), comes with ``whole`` False and ends the records. A quoted
    cell still open after ``_CSV_RECORD_MAX_LINES`` lines or ``_CSV_RECORD_MAX_BYTES``
    (a stray quote) is logged and its first line is a record alone: the next starts on the
    line after it. Where records start depends on the file's bytes only, so a position
    counted in records resumes at the start of one.
    """
    lines = iter(f)
    pending: list[bytes] = []  # lines read past a stray quote, to read again (reversed)
    lineno = 0
    while True:
        first = pending.pop() if pending else next(lines, b"")
        if not first:
            return
        parts, size = [first], len(first)
        quoted = _quote_open(first, False)
        while quoted and parts[-1].endswith(b"\n"):
            if len(parts) >= _CSV_RECORD_MAX_LINES or size > _CSV_RECORD_MAX_BYTES:
                break
            more = pending.pop() if pending else next(lines, b"")
            if not more:
                break
            parts.append(more)
            size += len(more)
            quoted = _quote_open(more, True)
        start = lineno + 1
        if not parts[-1].endswith(b"\n") or (quoted and len(parts) < _CSV_RECORD_MAX_LINES
                                             and size <= _CSV_RECORD_MAX_BYTES):
            yield start, b"".join(parts), False
            return
        if quoted:  # a stray quote: its line alone, the lines after it read again
            log.warning(json.dumps({
                "event": "bad_input", "source": spec, "line": start,
                "allowed": f"a quoted cell closed within {_CSV_RECORD_MAX_LINES} lines and "
                f"{_CSV_RECORD_MAX_BYTES} bytes", "detail": "a quoted cell opened on this "
                "line is not closed: the line is read alone (the cell to its end) and the "
                "rows from the next line on are read as rows"}))
            pending.extend(reversed(parts[1:]))
            parts = parts[:1]
        lineno += len(parts)
        yield start, b"".join(parts), True


def _source(spec: str, start: int, rate_hz: float
            ) -> Iterator[tuple[dict[str, float], int | None]]:
    """``(reading, time)`` from position ``start`` (1-based) of the source.

    ``time`` is the row's own time in UTC nanoseconds for ``csv:PATH`` (its first column), or
    None where the reading is stamped when it is read (``sim``, ``stdin``). A CSV row whose
    time is unusable is logged and yields an empty reading, so positions stay in step.
    """
    if spec == "sim":
        i = start
        while True:
            yield {"temp_c": sim_value(i)}, None
            i += 1
            if rate_hz > 0:
                time.sleep(1.0 / rate_hz)
    elif spec.startswith("csv:"):
        with _open_regular(spec[4:]) as f:
            records = _csv_records(f, spec)
            head = next(records, (1, b"", True))[1]
            if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # each row's bytes: no UTF-8
                raise ValueError(
                    f"--source {spec!r} is UTF-16 text (its byte order mark); csv:PATH needs "
                    "UTF-8 (or Latin-1): convert it, e.g. iconv -f UTF-16 -t UTF-8. No row of "
                    "it is read, so none is skipped for good")
            header = csv_header(head)
            cells = _CellLog()
            for pos, (lineno, raw, whole) in enumerate(records, start=1):
                if pos < start:
                    continue
                if not whole:  # still being written: read once it is whole
                    log.info(json.dumps({
                        "event": "source_partial_row", "source": spec, "line": lineno,
                        "detail": "the last row has no newline yet, or a quoted cell of it "
                        "is not closed yet (a logger still writing it?): it is left for the "
                        "next run, which reads it once it ends"}))
                    return
                yield csv_row(header, raw, lineno, cells)
                if rate_hz > 0:
                    time.sleep(1.0 / rate_hz)
    elif spec == "stdin":
        lines = getattr(sys.stdin, "buffer", sys.stdin)  # bytes: decoded line by line
        for lineno, raw in enumerate(lines, start=1):
            line = _decoded(raw, lineno)
            reading = stdin_reading(line, lineno) if line is not None else {}
            if reading:
                yield reading, None
    else:
        raise ValueError(f"--source must be sim, csv:PATH or stdin. Got {spec!r} instead.")



def alert_metric(name: str) -> str:
    """The metric that carries a local alert's score of metric ``name``: ``alert:<name>``,
    shortened where that would pass the gateway's 64 characters (the whole message, the
    alerting reading with it, was refused as ``bad_metric``) to a prefix of ``name`` and 8
    hex digits of its SHA-256, so two long names still get two metrics.

    >>> alert_metric("temp_c")
    'alert:temp_c'
    >>> m = alert_metric("x" * 64); len(m), m[:12], m == alert_metric("x" * 63 + "y")
    (64, 'alert:xxxxxx', False)
    """
    full = f"alert:{name}"
    if len(full) <= 64:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"alert:{name[:64 - 6 - 9]}-{digest}"


class Agent:
    """Runs on the device: source -> clean -> local detector -> outbox -> gateway.

    Parameters
    ----------
    gateway
        Base URL, e.g. ``http://127.0.0.1:8080``.
    device_id, secret
        The device's credentials (from enrolment).
    data_dir
        Where the outbox, the models and the agent state live; one agent at a time
        (``agent.lock`` there, flock-ed for the agent's life: an agent of another process
        on the same dir raises :class:`~edgewise.errors.ConfigError` naming its pid).
    trusted_keys
        Registry key id to raw public key; empty disables model updates. The installed
        models are checked against them again at each start (:class:`ModelSlot`): one signed
        by a key not given here (a leaked key the operator removed) neither runs nor holds
        the anti-rollback floor, so with none given the built-in detector runs.
    groups
        Groups whose ``group:<name>`` releases this device accepts (its own check; which
        group releases the gateway offers it is set there: ``edgewise device add ID --group``).
    verify
        How an ``https://`` gateway's certificate is checked (httpx's ``verify``): True for
        the system's CAs, or an ``ssl.SSLContext`` holding the CA of a self-signed gateway
        (``edgewise agent --ca-file``).
    save_every_s
        How often, at most, the local detectors' learned state is saved (as a reading
        comes; also when :meth:`run` ends and at :meth:`close`).

    The local detectors (one per metric name, at most :attr:`max_metrics`: the gateway's
    default cap of a device's metric names, ``max_metrics_per_device``; readings of names
    past it are forwarded unscored, and the gateway takes or refuses them by its own cap)
    keep what they learned across a restart: their state is saved to
    ``<data_dir>/detectors.pickle`` (:meth:`save_detectors`; atomic, owner-only, with an
    HMAC of the device secret, as the file is unpickled) and restored at start when it was
    saved under the release that runs now; one saved under another release, or that
    cannot be read or authenticated, is logged and the detectors start fresh.
    """

    #: The most metric names given a local detector (the gateway's default cap).
    max_metrics: int = DEFAULT_MAX_METRICS

    def __init__(self, gateway: str, device_id: str, secret: str, data_dir: str | Path, *,
                 trusted_keys: Mapping[str, bytes] | None = None, groups: tuple[str, ...] = (),
                 max_bytes: int = DEFAULT_MAX_BYTES, batch: int = 200,
                 update_interval_s: float = 2.0, threshold: float = 0.9,
                 verify: Any = True, save_every_s: float = _DETECTORS_SAVE_S) -> None:
        self.gateway = gateway.rstrip("/")
        self.verify = verify
        self.device_id = device_id
        self.secret = secret
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # one agent per state dir: held (flock) for this agent's life; another process's
        # agent on the same dir is refused (ConfigError naming the holder's pid)
        self._dir_lock = _StateDirLock.take(self.dir)
        self._unlock = weakref.finalize(self, self._dir_lock.release)
        # both check the state dir is this device's (ConfigError if not); the slot first, as
        # it only reads, while the outbox records the device when it records none
        self.trusted_keys = dict(trusted_keys or {})
        self.groups = groups
        # the slot is this agent's alone while it holds the lock (flock-ed, and no other
        # agent of this process on the dir): what a killed agent left there is tidied
        self.slot = ModelSlot(self.dir / "models", device_id=device_id,
                              trusted_keys=self.trusted_keys, groups=groups,
                              exclusive=self._dir_lock.flocked and self._dir_lock.users == 1)
        self.outbox = Outbox(self.dir / "outbox.sqlite", max_bytes=max_bytes, device_id=device_id)
        self.batch = batch
        self.update_interval_s = update_interval_s
        self.threshold = threshold
        self.detectors: dict[str, Any] = {}
        self.template: Any = EWZScore()
        self.release = 0  # the anti-rollback floor: the newest release installed here
        # the release whose model runs (0: the built-in detector); below the floor when the
        # installed model could not be used and an older one (or the built-in) took its place
        self.running_release = 0
        # the floor release whose installed copy failed its hash check (or is gone): the
        # gateway's offer of that same signed release is fetched again to mend it
        self._damaged_release: int | None = None
        # the installed release kept unsigned by an agent from before signatures were kept:
        # it runs once the gateway offers that same manifest and its signature verifies
        self._unverified: _Record | None = None
        self._untrusted_logged: set[tuple[bytes, bytes | None]] = set()
        self.local_alerts = 0
        # whether the last reading handled with ``hold`` was held: the outbox full, a
        # csv row is left in its file, not dropped (handle, _read_source)
        self.held = False
        self.refused: list[tuple[int, str]] = []
        self._manifest_refused: dict[str, str] = {}  # sha256 of manifest + signature: reason
        # sha256 of manifest + signature: (monotonic time of the next try, failures, outcome)
        self._retry: dict[str, tuple[float, int, str]] = {}
        self._current_logged: str | None = None  # the offer last logged as already installed
        self._current_outcome = "current"  # and what it was: "current" or "conflict"
        self._drop_logged_at: float | None = None
        self._drop_logged_reason: str | None = None
        # readings dropped (outbox or disk full) that the gateway was not told of yet: the
        # count is buffered as metric agent.dropped by the next put that is taken
        self._drops_unsaid = self.outbox.dropped > self.outbox.dropped_said
        self._reject_logged_at: float | None = None
        self._rejected_unlogged: list[tuple[int | None, str, str]] = []
        self._unlisted_unlogged: Counter[str] = Counter()  # counted by the gateway, unlisted
        self._stall_s = 0.0
        # the gateway's error answers to posts in a row, the wait after the last (doubled
        # each time), and the status last logged and when (send_failed: once a minute)
        self._send_failures = 0
        self._error_s = 0.0
        self._send_failed_logged: tuple[int, float] | None = None
        # what the gateway's body limit is known to be: the largest post it took, the
        # smallest it refused (413); posts are kept under the midpoint once one is refused,
        # and probe past it after _probe_every posts taken in a row (or _PROBE_AFTER_S)
        self._post_ok = 0
        self._post_refused: int | None = None
        self._post_streak = 0
        self._probe_every = _PROBE_FIRST
        self._refused_at = 0.0  # monotonic time of the last 413
        self._history_logged = False  # a damaged install history is said once
        self._tls_logged_at: dict[str, float] = {}  # per loop: "sender", "updates"
        # the update check's last error status and when it was logged (None: it answered)
        self._check_failed_logged: tuple[int, float] | None = None
        self._stop = threading.Event()
        # handle() scores under it; a model swap (an update installed by the update thread,
        # a fallback) takes it, so a reading never meets half of one
        self._model_lock = threading.RLock()
        self._running_sha256: str | None = None  # the running release's model (None: built-in)
        # the running release's pickle, when its model learned something: each metric named by
        # the release (``_trained_for``; None: every metric) starts from a copy of it
        self._payload: bytes | None = None
        self._trained_for: frozenset[str] | None = None
        self._trained_given: set[str] = set()  # metrics given the trained state so far
        # models that failed on a reading (sha256: what happened), also in models/failed.json
        self._failed: dict[str, str] = {}
        self._unscored_logged: set[str] = set()  # metrics the built-in detector failed on
        self._past_cap_logged = False  # a metric name past max_metrics is said once
        self.save_every_s = save_every_s
        self._saved_at = time.monotonic()
        self._save_failed_logged = False
        self._closed = False
        self._load_model()
        if self.slot.exclusive:  # nobody else writes here: every such temp is a leftover
            self._remove_detector_temps()
        self._restore_detectors()

    # -- models --------------------------------------------------------------------------------
    def _use(self, model: Any, release: int, version: str, *, sha256: str | None = None,
             payload: bytes | None = None, manifest: Manifest | None = None) -> None:
        """Run ``model`` from now on (each metric's detector made anew from it, under the
        model lock); ``payload`` is its pickle, copied for each metric its training is for
        (:meth:`_new_detector`). The very model that runs (its sha256), for the same
        metrics, keeps the detectors and what they learned: a release signed again before
        it expires (the same rollout run again, a new release number) is no new model, and
        made every metric start its warm-up again, blind to a fault until it ended."""
        trained = payload is not None and _learned(model)
        trained_for = _trained_metrics(manifest) if trained else None
        with self._model_lock:
            same = (sha256 is not None and sha256 == self._running_sha256
                    and (self._payload is not None) == trained
                    and trained_for == self._trained_for)
            self.template = model
            if not same:
                self.detectors = {}
                self._trained_given = set()
            self.running_release = release
            self._running_sha256 = sha256
            self._payload = payload if trained else None
            self._trained_for = trained_for
        event: dict[str, Any] = {"event": "model_loaded", "release": release,
                                 "version": version}
        if same:
            event["detectors"] = "kept (the model that ran: same sha256)"
        if trained:
            event["trained_for"] = (sorted(self._trained_for) if self._trained_for is not None
                                    else "every metric")
        log.info(json.dumps(event))

    def _use_installed(self, inst: Installed) -> None:
        """Run the installed release ``inst`` (ValueError if its model cannot run, or failed
        on this device's readings before)."""
        failed = self._failed_models().get(inst.sha256)
        if failed is not None:
            raise ValueError(f"Release {inst.release} failed on this device's readings before "
                             f"({failed}); it is not run again.")
        self._use(load_detector(inst.payload), inst.release, inst.manifest.version,
                  sha256=inst.sha256, payload=inst.payload, manifest=inst.manifest)

    def _use_builtin(self) -> None:
        """Run the built-in detector (no release), quietly: the caller logs why."""
        with self._model_lock:
            self.template = EWZScore()
            self.detectors = {}
            self.running_release = 0
            self._running_sha256 = self._payload = self._trained_for = None
            self._trained_given = set()

    def _failed_models(self) -> dict[str, str]:
        """The models that failed on this device's readings: sha256 to what happened."""
        return {**self.slot.failed(), **self._failed}

    def _new_detector(self, metric: str) -> Any:
        """The detector for a metric seen for the first time under the running model.

        A release whose model learned something (its state differs from its ``clone()``)
        gives a copy of that state to the metrics its ``trained_on`` names (``metric=NAME``,
        comma-separated or repeated), and to every metric when it names none (warned once
        when a second metric gets it: the model learned one stream's values); any other
        metric, and every metric of an untrained model or the built-in, starts fresh
        (``clone()``) and learns on the device."""
        if self._payload is None or (self._trained_for is not None
                                     and metric not in self._trained_for):
            return self.template.clone()
        det = pickle.loads(self._payload)  # signed, and unpickled already at load
        if self._trained_for is None:
            self._trained_given.add(metric)
            if len(self._trained_given) == 2:
                log.warning(json.dumps({
                    "event": "model_trained_state_shared", "release": self.running_release,
                    "metrics": sorted(self._trained_given),
                    "detail": f"release {self.running_release} does not say which metric "
                    "it was trained on, so every metric starts from its trained state; "
                    "publish it with --trained-on 'metric=NAME ...' to give that state to "
                    "NAME only (other metrics then start fresh)"}))
        return det

    def _score(self, name: str, value: float) -> float | None:
        """Score one metric's reading with its detector, then learn it; None if it cannot
        be scored. A model that raises is refused (:meth:`_model_failed`) and the reading
        scored by what runs instead; the caller holds the model lock."""
        x = {name: value}
        for _ in range(_MODELS_TRIED):
            release = self.running_release
            try:
                det = self.detectors.get(name)
                if det is None:
                    if len(self.detectors) >= self.max_metrics:
                        self._log_past_cap(name)
                        return None
                    det = self.detectors[name] = self._new_detector(name)
                score = float(det.score_one(x))
                det.learn_one(x)
                return score
            except Exception as exc:  # a model may raise anything; the agent must go on
                self.detectors.pop(name, None)
                if release == 0:  # the built-in: nothing to fall back to
                    if name not in self._unscored_logged:
                        self._unscored_logged.add(name)
                        log.error(json.dumps({
                            "event": "model_failed", "release": 0, "metric": name,
                            "detail": f"the built-in detector raised {type(exc).__name__}: "
                            f"{str(exc)[:200]}; readings of {name!r} are buffered unscored"}))
                    return None
                self._model_failed(release, name, exc)
        return None  # every model tried for this reading failed: it is buffered unscored

    def _log_past_cap(self, name: str) -> None:
        """Say, once per agent, that metric ``name`` gets no local detector: the agent has
        :attr:`max_metrics` already (one each, without bound, grew its memory for ever)."""
        if self._past_cap_logged:
            return
        self._past_cap_logged = True
        log.warning(json.dumps({
            "event": "metric_unscored", "metric": name[:200], "max_metrics": self.max_metrics,
            "detail": f"this agent scores at most {self.max_metrics} metric names (the "
            "gateway's default cap of a device's names, max_metrics_per_device); readings "
            "of this and any later new name are forwarded unscored (the gateway refuses "
            "names past its own cap as too_many_metrics). Said once."}))

    # -- the local detectors' state ------------------------------------------------------------
    def save_detectors(self) -> bool:
        """Save the local detectors' learned state to ``<data_dir>/detectors.pickle``
        (atomic and owner-only, :func:`~edgewise._private.write_private`, as the gateway
        saves its own; the pickle with an HMAC-SHA256 of the device secret, checked before
        it is unpickled at start), tied to the running release's sha256; whether it was
        written. A failure (a full disk, a detector that does not pickle) is logged
        (``detector_state_unsaved``, at the first and after a save that worked) and the
        agent goes on.

        >>> import tempfile
        >>> a = Agent("http://127.0.0.1:9", "pump-7", "s", tempfile.mkdtemp())
        >>> _ = [a.handle({"temp_c": 20.0 + i % 3}) for i in range(50)]
        >>> a.save_detectors(), sorted(a.detectors)
        (True, ['temp_c'])
        >>> a.close()
        """
        self._saved_at = time.monotonic()
        path = self.dir / DETECTORS_FILE
        try:
            with self._model_lock:  # no reading scored half-way through the pickle
                body = pickle.dumps({"release": self.running_release,
                                     "sha256": self._running_sha256,
                                     "detectors": self.detectors},
                                    protocol=pickle.HIGHEST_PROTOCOL)
            mac = hmac.new(self.secret.encode(), body, hashlib.sha256).digest()
            write_private(path, _DETECTORS_MAGIC + mac + body)
        except Exception as exc:  # OSError (a full disk), or a model's detector that
            if not self._save_failed_logged:  # does not pickle: the agent goes on
                self._save_failed_logged = True
                log.warning(json.dumps({
                    "event": "detector_state_unsaved", "path": str(path),
                    "detail": f"{type(exc).__name__}: {str(exc)[:200]}; a restart starts "
                    "the local detectors from the state saved last (or fresh)"}))
            return False
        self._save_failed_logged = False
        return True

    def _remove_detector_temps(self) -> None:
        """Remove the temporary files of detector saves that never finished (a kill or a
        power loss mid-write: ``.detectors.pickle.<pid>.<tid>.<hex>.tmp``, the size of the
        state, which nothing else removes, one more at each such crash); logged
        (``detector_temp_removed``). Regular files only: a link is neither followed nor
        removed."""
        for _, path, size in _remove_regular_files(self.dir, _DETECTORS_TEMP.fullmatch):
            log.info(json.dumps({"event": "detector_temp_removed", "path": path,
                                 "bytes": size, "detail": "left by a detector save that did "
                                 "not finish (a power loss or a kill mid-write)"}))

    def _restore_detectors(self) -> None:
        """Take up the local detectors' state :meth:`save_detectors` saved, where it was
        saved under the release that runs now (its sha256; the built-in detector: none);
        else they start fresh. A file that cannot be read, is not one this agent wrote
        under this device's secret, or does not unpickle, is logged
        (``detector_state_unreadable``) and left to be replaced at the next save."""
        path = self.dir / DETECTORS_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raw, why = b"", f"it cannot be read ({exc})"
        else:
            why = ""
        head = len(_DETECTORS_MAGIC)
        mac, body = raw[head:head + 32], raw[head + 32:]
        state: Any = None
        if why:
            pass
        elif not raw.startswith(_DETECTORS_MAGIC):
            why = "it is not a detector state this agent saved"
        elif not hmac.compare_digest(
                mac, hmac.new(self.secret.encode(), body, hashlib.sha256).digest()):
            why = ("its HMAC does not match this device's secret (altered, or saved under "
                   "another secret)")
        else:
            try:
                state = pickle.loads(body)  # authenticated: written by this device's agent
            except Exception as exc:
                why = f"it does not unpickle ({type(exc).__name__}: {str(exc)[:200]})"
            else:
                if not (isinstance(state, dict) and isinstance(state.get("detectors"), dict)):
                    why = "it holds no detectors"
        if why:
            log.warning(json.dumps({
                "event": "detector_state_unreadable", "path": str(path),
                "detail": f"{why}; the local detectors start fresh"}))
            return
        if state.get("sha256") != self._running_sha256:
            log.info(json.dumps({
                "event": "detector_state_stale", "path": str(path),
                "saved_release": state.get("release"), "release": self.running_release,
                "detail": "saved while another model ran; the local detectors start fresh"},
                default=str))
            return
        kind = type(self.template)
        kept = [(k, d) for k, d in state["detectors"].items()
                if isinstance(k, str) and type(d) is kind]
        with self._model_lock:
            self.detectors = dict(kept[:self.max_metrics])
            if self._payload is not None and self._trained_for is None:
                self._trained_given = set(self.detectors)
        log.info(json.dumps({"event": "detector_state_restored", "path": str(path),
                             "release": self.running_release, "metrics": len(self.detectors)}))

    def close(self) -> None:
        """Save the local detectors' state (:meth:`save_detectors`), close the outbox and
        release the state dir; once (a second call does nothing). :meth:`run` saves the
        state when it ends; an embedder that calls :meth:`handle` itself calls this."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        try:
            self.save_detectors()
        finally:
            try:
                self.outbox.close()
            finally:
                self._unlock()

    def _model_failed(self, release: int, metric: str, exc: Exception) -> None:
        """The running release's model raised on a reading of ``metric``: log it
        (``model_failed``), refuse the release (``bad_model``, recorded in
        ``models/failed.json`` so the next start does not run it either) and fall back as at
        start: the previous release, else the built-in detector."""
        detail = (f"Release {release} ({type(self.template).__name__}) raised "
                  f"{type(exc).__name__}: {str(exc)[:200]} on a reading of metric {metric!r}; "
                  "it is not run again on this device")
        log.error(json.dumps({"event": "model_failed", "release": release, "metric": metric,
                              "detail": detail}))
        sha = self._running_sha256
        if sha is not None:
            self._failed[sha] = detail
            try:
                self.slot.mark_failed(release, sha, detail)
            except OSError as err:
                log.warning(json.dumps({
                    "event": "model_failed_unrecorded", "release": release,
                    "path": str(self.slot.root / "failed.json"),
                    "detail": f"{err}; the release is run again at the next start"}))
        self._refuse(release, "bad_model", detail)
        self._load_model()

    def _load_model(self) -> None:
        """Load the installed model; if it cannot load, fall back (with a logged reason) to the
        previous release, else the built-in detector. The newest installed release (by the
        pointer or the install history) stays the anti-rollback floor either way, so the
        broken release is not fetched again. A damaged pointer is pointed again at the
        newest intact release of the history. An installed model file that fails its hash
        check (bit rot, a damaged SD card) or is gone is no broken release but a damaged
        copy: it is remembered (``_damaged_release``) and the same signed release, offered
        again by the gateway, is fetched, verified and installed again (:meth:`check_update`).

        Each installed release's kept signature, key and target are checked again against
        this agent's trusted keys and groups (:class:`ModelSlot`); one that does not pass is
        logged (``installed_model_untrusted``, naming its release and key id) and does not
        run: a release signed by a key the operator removed gives way to the previous
        release that passes, else the built-in detector, and holds no floor, so the next
        release the trusted key signs is installed. One for a group the device left, or one
        an older agent kept unsigned (its key trusted), holds the floor; the latter runs
        again once the gateway's offer of it verifies."""
        self._log_untrusted()
        self.release = self.slot.installed_release()
        self._use_builtin()  # until a model loads (one that failed on a reading: not kept)
        self._damaged_release = None
        self._unverified = None
        try:
            cur = self.slot.current()
            if cur is not None:
                self._use_installed(cur)
                return
            if not self.release:
                return  # nothing installed
            damaged = True
            reason = (f"Model pointer {str(self.slot.pointer)!r} is missing, though the history "
                      f"shows release {self.release} installed.")
        except _UntrustedModel as exc:
            reason, damaged = str(exc), False
            if exc.reason == "unsigned":  # its offer by the gateway is checked and adopted
                self._unverified = exc.record
                if exc.record.manifest.release == self.release:
                    self._damaged_release = self.release  # else: fetched again (_mends)
        except (SignatureError, OSError, ValueError, KeyError, TypeError) as exc:
            reason = str(exc)
            try:
                self.slot._pointer()
                damaged = False
            except (OSError, ValueError):
                damaged = True
            if not damaged and isinstance(exc, SignatureError | FileNotFoundError):
                # the pointer reads but its model file is damaged or gone: a copy to mend
                self._damaged_release = self.slot._pointed_release()
                if self._damaged_release == self.release:
                    reason += (f" Release {self.release} is fetched again when the gateway "
                               "offers it.")
        prev = self.slot.previous()
        reason += self._passed_over(prev)
        using = "built-in EWZScore"
        failed = None if prev is None else self._failed_models().get(prev.sha256)
        if failed is not None:
            reason += f" Previous release {prev.release} failed on readings too ({failed})."
        elif prev is not None:
            try:
                self._use_installed(prev)
                using = f"release {prev.release} ({prev.manifest.version})"
            except ValueError as exc:
                reason += f" Previous release {prev.release} fails too: {exc}"
            else:
                if damaged:
                    self._repoint(prev)
        log.warning(json.dumps({"event": "model_fallback", "release": self.release,
                                "reason": reason, "using": using}))
        self._report({"agent.model_fallback": float(self.release)})

    def _log_untrusted(self) -> None:
        """Log, once per agent, each installed release (the pointer's, then the install
        history's) whose kept signature, key or target does not pass now
        (``installed_model_untrusted``, a warning naming its release, key id and reason;
        ``counted``: whether it still holds the anti-rollback floor, as one kept unsigned by
        an older agent does)."""
        ptr = self.slot._pointer_record()
        records = ([] if ptr is None else [(ptr, "current")])
        records += [(r, "history") for r in self.slot._history_records()[0]]
        for record, where in records:
            why = self.slot._distrust(record)
            seen = (record.manifest_bytes, record.signature)
            if why is None or seen in self._untrusted_logged:
                continue
            self._untrusted_logged.add(seen)
            m = record.manifest
            log.warning(json.dumps({
                "event": "installed_model_untrusted", "release": m.release,
                "version": str(m.version)[:64], "key_id": str(m.key_id)[:64],
                "reason": why[0], "where": where, "counted": self.slot._counts(record),
                "detail": f"installed release {m.release} ({where}) is not run: {why[1]}"},
                default=str))

    def _adopt(self, seen: str, manifest_bytes: bytes, signature: bytes, release: int) -> str:
        """The gateway offers the installed release an older agent kept unsigned, with the
        same manifest: if its signature verifies with a trusted key for this device, keep it
        with the release (:meth:`ModelSlot.keep_signature`) and run the release again, with
        no download (``verified``, logged ``installed_model_verified``); else refuse it."""
        record = _Record(manifest_bytes, Manifest.from_bytes(manifest_bytes), signature)
        why = self.slot._distrust(record)
        if why is not None:
            self._manifest_refused[seen] = why[0]
            return self._refuse(release, why[0], f"Installed release {release}, offered "
                                f"again, is not run: {why[1]}.")
        with self._model_lock:
            try:
                self.slot.keep_signature(manifest_bytes, signature)
            except OSError as exc:
                return self._retry_later(seen, release, "install_failed", f"Release {release}'s "
                                         f"signature verified but was not kept: {exc}.")
            log.warning(json.dumps({
                "event": "installed_model_verified", "release": release,
                "key_id": record.manifest.key_id,
                "detail": f"the gateway offered installed release {release}, which an older "
                "agent kept without its signature; the signature verifies and is kept, and "
                "the release runs again"}))
            self._load_model()
        return "verified"

    def _passed_over(self, prev: Installed | None) -> str:
        """What the fallback left out as replaced by a later rollback order (the releases
        between ``prev`` and the floor whose model file the slot still keeps), said in the
        ``model_fallback`` reason; "" if none."""
        notes = []
        above = 0 if prev is None else prev.release
        for rel, order in sorted(self.slot.superseded().items(), reverse=True):
            if not above < rel < self.release or not any(
                    self.slot.root.glob(f"model-{rel}-*.bin")):
                continue
            notes.append(f" Release {rel} is not run either: rollback order release "
                         f"{order.release} sent this device back from it to "
                         f"{order.name} {order.version}.")
        return "".join(notes)

    def _repoint(self, installed: Installed) -> None:
        """Replace a damaged pointer by one naming ``installed`` (logged either way)."""
        event: dict[str, Any] = {"event": "model_pointer_repaired",
                                 "path": str(self.slot.pointer), "release": installed.release}
        try:
            self.slot.point_to(installed)
        except OSError as exc:
            event = {**event, "event": "model_pointer_damaged",
                     "detail": f"not rewritten: {exc}; the history keeps the floor"}
        log.warning(json.dumps(event))

    def _refuse(self, release: int, reason: str, detail: str) -> str:
        """Log and report a refused release once per (release, reason); return the outcome."""
        if (release, reason) not in self.refused:
            self.refused.append((release, reason))
            log.warning(json.dumps({"event": "update_refused", "release": release,
                                    "reason": reason, "detail": detail}))
            self._report({"agent.update_refused": float(release)})
        return f"refused:{reason}"

    def check_update(self, client: Any) -> str:
        """Fetch, verify, load and install the gateway's current release; return what happened.

        Nothing of the payload is fetched before the manifest's signature, key, target,
        expiry and release order are verified, nor when the signed size is over
        ``MAX_MODEL_BYTES`` (refused as ``too_large``); a manifest refused on its own is not
        looked at again, except as ``expired``, which this device's clock decides and which
        is checked again on the next offer. A release is installed only once its payload
        loads as a working detector; otherwise it is refused (``unsupported_format``,
        ``bad_model``) and the running model is kept; so is a release whose model failed on
        this device's readings before (``models/failed.json``), without a download. A
        download the gateway answers with an error (``fetch_failed``) or an install the disk
        refuses (``install_failed``) is logged as such and tried again after 2, 4, 8 ...
        update intervals (at most an hour; ``<outcome>:retry_later`` until then); so is a
        download whose bytes are not the signed ones (``tampered``, ``endless_data``,
        ``mix_and_match``: refused, logged once, and ``refused:<reason>:retry_later``). The
        installed release offered again is ``current``, logged once per offer; but where its
        installed copy failed its hash check at start (an older model or the built-in runs
        instead), the same signed release is fetched, verified and installed again
        (``repaired``). An offer whose envelope or manifest cannot be read is refused as
        ``bad_manifest`` (logged once, naming the field), never raised. The installed release
        an older agent kept unsigned, offered with the same manifest, is ``verified``: its
        signature checked and kept, and it runs (:meth:`_adopt`). An error status answered to
        the check itself (a 401: this device's secret refused) is logged as such,
        ``update_check_failed`` with the status, and ``check_failed:<status>`` returned.

        The payload is written to a temporary file in the slot as it arrives (hashed as it
        is written, never held whole in memory), read back once and hash-checked again after
        it verified, loaded from those bytes and renamed into place: a model of N MiB takes
        about 2 N MiB (its bytes and the detector made of them), not 5 N MiB.
        """
        if not self.trusted_keys:
            return "disabled"
        # what this agent can install: a newer release in another format, or to a group it
        # does not take, must not hide the newest one it can (a gateway before this ignores it)
        query = urlencode({"formats": ",".join(AGENT_FORMATS), "groups": ",".join(self.groups)})
        r = client.get(f"{self.gateway}/v1/devices/{self.device_id}/model?{query}",
                       headers=self._headers())
        if r.status_code in (204, 404):
            self._check_failed_logged = None
            return "none"
        if not 200 <= r.status_code < 300:
            return self._check_failed(r)
        self._check_failed_logged = None
        try:
            mb, sig, head, seen = _parse_offer(r)
        except _BadOffer as exc:
            return self._refuse_offer(exc)
        if seen in self._manifest_refused:  # refused on the manifest alone: it still is
            return f"refused:{self._manifest_refused[seen]}"
        retry = self._retry.get(seen)
        if retry is not None and time.monotonic() < retry[0]:
            return f"{retry[2]}:retry_later"  # failed before: not fetched again before then
        offered: int = head["release"]
        if self._unverified is not None and mb == self._unverified.manifest_bytes:
            return self._adopt(seen, mb, sig, offered)
        failed = self._failed_models().get(str(head.get("sha256")))
        if failed is not None and offered > self.release:
            return self._refuse(offered, "bad_model", f"Release {offered}'s model failed on "
                                f"this device's readings before ({failed}); not fetched.")
        repair = offered == self.release and self._mends(head)
        twin = self._floor_twin(head)
        if twin is not None and offered == self.running_release:
            return self._log_twin_current(seen, offered)
        download = _Download(client, self.gateway, self._headers(), mb, self.slot,
                             stop=self._stop)
        try:
            return self._take(download, seen, mb, sig, head, repair, twin)
        finally:
            download.close()  # the stream, and the downloaded copy unless it was installed

    def _floor_twin(self, head: Mapping[str, Any]) -> Manifest | None:
        """The floor release's manifest where the offer (``head``, not yet verified) is an
        older release number of the very same model: same name, version, format and
        sha256 as the floor release, which does not run here because it targets a group
        the device left (``wrong_device``) and never failed on its readings. A device moved
        to a group that runs the same version (signed for that group first, so with a lower
        number) ran the built-in detector until a newer release came: the floor release
        was another group's and the group's own release was refused as a rollback. Taking
        it downgrades nothing: the model is byte for byte the floor's (the verified payload
        must match the sha256). None: not such an offer."""
        offered = head.get("release")
        if not isinstance(offered, int) or offered >= self.release:
            return None
        same = (head.get("name"), head.get("version"), head.get("format"), head.get("sha256"))
        for record in self.slot._counted():
            m = record.manifest
            why = self.slot._distrust(record)
            if (m.release == self.release and why is not None and why[0] == "wrong_device"
                    and (m.name, m.version, m.format, m.sha256) == same
                    and m.sha256 not in self._failed_models()):
                return m
        return None

    def _log_twin_current(self, seen: str, offered: int) -> str:
        """The offer is the floor release's twin (:meth:`_floor_twin`) that runs already:
        logged once per offer (``update_current``); ``"current"``."""
        if self._current_logged != seen:
            self._current_logged = seen
            log.info(json.dumps({
                "event": "update_current", "release": offered,
                "detail": f"the gateway offers the installed release {offered} (the same "
                f"model as release {self.release}, the anti-rollback floor); nothing to do"}))
        return "current"

    def _take(self, download: _Download, seen: str, mb: bytes, sig: bytes,
              head: Mapping[str, Any], repair: bool, twin: Manifest | None = None) -> str:
        """The rest of :meth:`check_update`, once the offer was read: verify, download,
        load and install it (or say why not). ``twin``: the floor release whose model the
        offer, an older release number, is (:meth:`_floor_twin`): it passes as not yet
        installed, once verified as that same model."""
        offered: int = head["release"]
        try:
            if offered == self.release and not repair:
                if self._current_logged != seen:  # said once per offer, not on every poll
                    self._current_logged = seen
                    self._current_outcome = self._log_current(head)
                return self._current_outcome  # nothing new; skip downloading
            for rel, reason in self.refused:  # refused for what it is: no need to fetch again
                if rel == offered and reason in _FINAL_REFUSALS:
                    return f"refused:{reason}"
            # mending the floor release's damaged copy: that release (and only that one, the
            # manifest's release being signed) passes as not yet installed; older still fail
            floor = self.release - 1 if repair else self.release
            if twin is not None:  # every check of verify but the counter's, which is below
                floor = offered - 1
            m = verify(mb, sig, download, trusted_keys=self.trusted_keys,
                       device_id=self.device_id, groups=self.groups,
                       installed_release=floor, known=self._known())
            if twin is not None and (m.name, m.version, m.format, m.sha256) != (
                    twin.name, twin.version, twin.format, twin.sha256):  # cannot be: same bytes
                raise _Refusal(f"Release {m.release} of {m.name!r} is older than the "
                               f"installed release {self.release} and not its model.",
                               "rollback")
            data = download.verified(m)
        except (SignatureError, _Refusal) as exc:
            if exc.reason == "replay":
                log.info(json.dumps({"event": "update_replay", "detail": str(exc)}))
                return "replay"
            if not download.opened and exc.reason not in _CLOCK_REFUSALS:
                self._manifest_refused[seen] = exc.reason  # the device's clock may be wrong
            outcome = self._refuse(offered, exc.reason, str(exc))
            if download.opened:  # the bytes were wrong (tampered, endless, another model's):
                # fetched again only after 2, 4, 8 ... intervals, not on every check
                failures, wait = self._back_off(seen, outcome)
                log.info(json.dumps({"event": "update_backoff", "release": offered,
                                     "reason": exc.reason, "failures": failures,
                                     "retry_in_s": round(wait, 3)}))
            return outcome
        except _FetchError as exc:
            return self._retry_later(seen, offered, "fetch_failed", str(exc))
        except _DiskError as exc:
            return self._retry_later(seen, offered, "install_failed", str(exc))
        finally:
            download.close_stream()
        try:
            model = load_detector(data)
        except ValueError as exc:
            return self._refuse(m.release, "bad_model", f"Release {m.release}: {exc}")
        with self._model_lock:  # the swap waits for a reading being scored, and vice versa
            try:
                self.slot.install(mb, download.staged or data, signature=sig,
                                  running=None if self._running_sha256 is None
                                  else (self.running_release, self._running_sha256))
            except OSError as exc:
                return self._retry_later(seen, m.release, "install_failed",
                                         f"Release {m.release} verified but not installed: "
                                         f"{exc}; the running model is kept.")
            self._retry.pop(seen, None)
            self.release = max(self.release, m.release)  # a twin leaves the floor where it is
            self._damaged_release = None
            self._use(model, m.release, m.version, sha256=m.sha256, payload=data, manifest=m)
        if repair:
            log.warning(json.dumps({
                "event": "model_repaired", "release": m.release, "version": m.version,
                "detail": f"the installed copy of release {m.release} failed its hash check "
                f"(or was gone); the gateway's signed release {m.release} was fetched, "
                "verified and installed again, and runs"}))
            self._report({"agent.model_release": float(m.release)})
            return "repaired"
        event: dict[str, Any] = {"event": "update_installed", "release": m.release,
                                 "version": m.version, "kind": m.kind}
        if twin is not None:
            event["detail"] = (f"the same model as installed release {twin.release} "
                               f"({twin.name} {twin.version}), which targets a group this "
                               f"device left; release {twin.release} stays the "
                               "anti-rollback floor")
        log.info(json.dumps(event))
        self._report({"agent.model_release": float(m.release)})
        return "installed"

    def _check_failed(self, r: Any) -> str:
        """Log an update check the gateway answered with an error status
        (``update_check_failed``, a warning with the status and the gateway's detail: a 401
        is this device's secret refused, not an unreachable gateway) at the first answer of
        that status, then at most once a minute while it lasts; return
        ``check_failed:<status>``."""
        status = int(r.status_code)
        now = time.monotonic()
        last = self._check_failed_logged
        if last is None or last[0] != status or now - last[1] >= _DROP_LOG_EVERY_S:
            self._check_failed_logged = (status, now)
            log.warning(json.dumps({
                "event": "update_check_failed", "status": status,
                "detail": _answer_detail(r), "loop": "updates"}))
        return f"check_failed:{status}"

    def _mends(self, head: Mapping[str, Any]) -> bool:
        """Whether the offer (of the floor release) mends a damaged installed copy: the floor
        release's model failed its hash check (or is gone), an older model (or the built-in)
        runs instead, and the offer names the sha256 installed under that release (another
        one is a reused release number: :meth:`_log_current`'s conflict)."""
        return (self._damaged_release is not None and self._damaged_release == self.release
                and self.running_release < self.release
                and head.get("sha256") == self._installed_sha256(self.release))

    def _refuse_offer(self, exc: _BadOffer) -> str:
        """Refuse a model offer whose envelope or manifest cannot be read: logged (naming
        the field) and reported once per offer, then ``refused:bad_manifest`` each time it
        is offered again; the update check returns, so the sender still drains."""
        if exc.key not in self._manifest_refused:
            self._manifest_refused[exc.key] = "bad_manifest"
            log.warning(json.dumps({"event": "update_refused", "release": exc.release,
                                    "reason": "bad_manifest", "field": exc.field,
                                    "detail": str(exc)}))
            self._report({"agent.update_refused": float(exc.release)})
        return "refused:bad_manifest"

    def _log_current(self, head: Mapping[str, Any]) -> str:
        """Log the offer of the installed release number; return ``"current"``, or
        ``"conflict"`` (a warning) when the offered manifest's sha256 is not the one
        installed under that number: a registry restored from an older backup hands out
        release numbers again, and this device, which refuses anything not newer than what
        it runs, installs nothing until a newer release comes."""
        installed = self._installed_sha256(self.release)
        offered = head.get("sha256")
        if installed is None or offered == installed:
            log.info(json.dumps({
                "event": "update_current", "release": self.release,
                "detail": "the gateway offers the installed release; nothing to do"}))
            return "current"
        log.warning(json.dumps({
            "event": "update_conflict", "release": self.release,
            "offered_sha256": str(offered)[:64], "installed_sha256": installed,
            "detail": f"the gateway offers release {self.release} with another model than "
            f"the release {self.release} installed here: its registry handed the number "
            "out again (restored from an older backup?). Nothing is installed; roll out "
            "a new release to this device to move it (the new one gets a higher number)."}))
        return "conflict"

    def _installed_sha256(self, release: int) -> str | None:
        """The sha256 of the model installed here as ``release`` (pointer, else history; of
        the releases that count toward the floor)."""
        for record in self.slot._counted():
            if record.manifest.release == release:
                return str(record.manifest.sha256)
        return None

    def _known(self) -> list[Manifest]:
        """The install history's readable manifests (for mix-and-match detection); a damaged
        history is logged once (``model_history_damaged``) and never blocks an update: the
        next install replaces it."""
        known, damage = self.slot.readable_history()
        if damage is not None and not self._history_logged:
            self._history_logged = True
            log.warning(json.dumps({
                "event": "model_history_damaged", "path": str(self.slot.root / "history.json"),
                "readable": len(known), "detail": f"{damage}; updates are checked against "
                "the readable entries and the next install replaces the file"}))
        return known

    def _retry_later(self, seen: str, release: int, outcome: str, detail: str) -> str:
        """Log a release that failed to download or install (``update_<outcome>``) and leave
        it until the next update check after ``2**failures`` intervals (at most an hour),
        instead of downloading it again on every check; return ``outcome``."""
        failures, wait = self._back_off(seen, outcome)
        log.warning(json.dumps({"event": f"update_{outcome}", "release": release,
                                "failures": failures, "retry_in_s": round(wait, 3),
                                "detail": detail}))
        return outcome

    def _back_off(self, seen: str, outcome: str) -> tuple[int, float]:
        """Leave the offer ``seen`` until the next update check after ``2**failures``
        intervals (at most an hour), answered ``<outcome>:retry_later`` until then; return
        (failures, wait in seconds)."""
        failures = self._retry.get(seen, (0.0, 0, ""))[1] + 1
        wait = min(self.update_interval_s * 2 ** min(failures, 20), _RETRY_MAX_S)
        self._retry[seen] = (time.monotonic() + wait, failures, outcome)
        return failures, wait

    # -- data path -----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}", "X-Device-Id": self.device_id}

    def _report(self, metrics: dict[str, float]) -> None:
        self._put({"ts": time.time(), "metrics": metrics})

    def _put(self, message: Mapping[str, Any], source_pos: int | None = None,
             hold: bool = False) -> int | None:
        """Buffer ``message``; when the outbox is full, warn at the first drop and then at
        most once a minute (with the exact count), never once per reading. ``hold``: one
        that does not fit is held, not dropped (:meth:`Outbox.put`; :attr:`held` says so)."""
        seq = self.outbox.put(message, source_pos=source_pos, hold=hold)
        if hold and seq is None:  # set here only: the other threads' reports never clear it
            self.held = True
            return None
        if seq is None:
            now = time.monotonic()
            why = "disk_full" if self.outbox.disk_full else "max_bytes"
            if (self._drop_logged_at is None or now - self._drop_logged_at >= _DROP_LOG_EVERY_S
                    or why != self._drop_logged_reason):
                self._drop_logged_at, self._drop_logged_reason = now, why
                detail = ("new readings are dropped (and counted) until the gateway "
                          "acknowledges buffered ones; raise --max-mb to keep more")
                if why == "disk_full":
                    detail = (f"the disk holding {self.outbox.path} is full (SQLite: database "
                              "or disk is full), or has less room free than the outbox's "
                              f"{self.outbox.reserve_bytes}-byte reserve for acks: new "
                              "readings are dropped (and counted) until space is freed or "
                              "the gateway acknowledges buffered ones")
                log.warning(json.dumps({
                    "event": "outbox_full", "reason": why, "dropped": self.outbox.dropped,
                    "bytes_used": self.outbox.bytes_used,
                    "bytes_in_pages": self.outbox.bytes_in_pages,
                    "max_bytes": self.outbox.max_bytes, "detail": detail}))
            self._drops_unsaid = True
        elif self._drops_unsaid:  # room again: tell the gateway how many were dropped
            self._drops_unsaid = False
            total = self.outbox.dropped
            if self._put({"ts": time.time(), "metrics": {"agent.dropped": float(total)}}
                         ) is not None:
                self.outbox.say_dropped(total)
        return seq

    def handle(self, reading: Mapping[str, float], source_pos: int | None = None,
               ts_ns: int | None = None, *, hold: bool = False) -> int | None:
        """Clean, score and buffer one reading; return its seq (None if the buffer dropped it).

        ``ts_ns`` is the reading's own time (UTC nanoseconds); None stamps it now. ``hold``
        (a file's row, which can be read again): a reading the full outbox does not take is
        not dropped but held (:attr:`held` True), its ``source_pos`` not stored.
        """
        self.held = False
        clean = {k: number for k, v in reading.items() if (number := _finite(v)) is not None}
        metrics = dict(clean)
        with self._model_lock:  # an update installed meanwhile waits for this reading
            for name, v in clean.items():
                score = self._score(name, v)
                if score is not None and score >= self.threshold:
                    self.local_alerts += 1
                    # +inf (a model's "certainly anomalous", e.g. a z-score over a zero
                    # deviation) is sent as the largest finite float: the gateway takes
                    # finite numbers only and refused the alert as not_finite
                    score = min(round(score, 6), sys.float_info.max)
                    metrics[alert_metric(name)] = score
                    log.warning(json.dumps({"event": "local_alert", "metric": name,
                                            "value": v, "score": score}))
        if clean and time.monotonic() - self._saved_at >= self.save_every_s:
            self.save_detectors()
        if not metrics:
            return None
        ts: float | int = time.time() if ts_ns is None else ts_ns
        return self._put({"ts": ts, "metrics": metrics}, source_pos=source_pos, hold=hold)

    def drain_once(self, client: Any) -> int:
        """Send one batch of pending messages; return the gateway's ack (or -1 if none).

        What the gateway rejected (its answer's ``rejected`` list) it refuses for good: it
        is logged, counted in ``outbox.rejected`` and kept in the outbox's ``rejected``
        table, not sent again. An ack below what this outbox had acknowledged means the
        gateway forgot the device (deleted and added again, or a new gateway): the pending
        messages are numbered from its ack on (:meth:`Outbox.renumber`). A 200 answer that
        does not advance the ack pauses (1 s, doubling up to 30 s) before the next post;
        so does an error answer (a 503: the gateway's store is down), warned about
        (``send_failed``) at the first and then at most once a minute while it lasts, and
        said (``send_recovered``) when a post is taken again. A 429 waits its Retry-After.
        A 413 (too large) keeps later posts under :attr:`post_budget`; a message refused
        alone is set aside as rejected (``too_large``) and a stand-in sent in its place
        (:meth:`_too_large`), so nothing behind it waits.
        """
        msgs = self.outbox.pending(self.batch)
        if not msgs:
            return -1
        body, msgs = self._fit(msgs)
        r = client.post(f"{self.gateway}/v1/telemetry",
                        headers={**self._headers(), "Content-Type": "application/json"},
                        content=body)
        if r.status_code != 200:
            status = int(r.status_code)
            if status == 413:  # payload too large: smaller posts, or set it aside
                log.warning(json.dumps({"event": "send_failed", "status": status,
                                        "messages": len(msgs), "bytes": len(body),
                                        "detail": _answer_detail(r)}))
                self._too_large(msgs, len(body), r)
            elif status == 429:  # rate limited: wait as told (capped), keep order
                wait = _retry_after_s(r.headers.get("Retry-After"))
                self._send_failed(status, msgs, body, r, wait)
                self._stop.wait(wait)
            else:  # an error (a 503: its store is down): 1, 2, 4 ... s, at most 30 s
                self._error_s = min(max(2 * self._error_s, _ERROR_FIRST_S), _ERROR_MAX_S)
                self._send_failed(status, msgs, body, r, self._error_s)
                self._stop.wait(self._error_s)
            return -1
        if self._send_failures:
            log.info(json.dumps({"event": "send_recovered", "failures": self._send_failures,
                                 "detail": "the gateway takes posts again after "
                                 f"{self._send_failures} failed"}))
        self._error_s, self._send_failures, self._send_failed_logged = 0.0, 0, None
        self._post_taken(len(body))
        answer = r.json()
        ack = int(answer["ack_seq"])
        before = self.outbox.acked
        if ack < before:  # the gateway forgot the device: what is pending it never acked
            shift = self.outbox.renumber(ack)
            log.warning(json.dumps({
                "event": "gateway_forgot_device", "ack_seq": ack, "acked": before,
                "pending": len(self.outbox), "renumbered_from": ack + 1, "shift": shift,
                "detail": "the gateway's ack fell below what it had acknowledged (device "
                "deleted and added again, or a new gateway); pending messages are numbered "
                "from its ack on and sent again"}))
            self._stall_s = 0.0
            return ack
        last = int(msgs[-1]["seq"])
        done = min(ack, last)  # never drop what was not in this batch, whatever the ack says
        problems = answer.get("rejected") or []
        rejected = _rejections(msgs, problems, done)
        unlisted = _unlisted(msgs, problems, done, answer.get("rejected_by_reason"))
        self.outbox.ack(done, rejected, sum(unlisted.values()))
        if rejected or unlisted:
            self._log_rejected(rejected, unlisted)
        if ack > before or ack >= last:
            self._stall_s = 0.0
        else:  # stored nothing we could drop: wait instead of posting the same batch again
            self._stall_s = min(max(2 * self._stall_s, _STALL_FIRST_S), _STALL_MAX_S)
            log.warning(json.dumps({"event": "ack_stalled", "ack_seq": ack,
                                    "pending_from": msgs[0]["seq"], "retry_in_s": self._stall_s}))
            self._stop.wait(self._stall_s)
        return ack

    def _send_failed(self, status: int, msgs: Sequence[Mapping[str, Any]], body: bytes,
                     r: Any, wait: float) -> None:
        """Log a post the gateway answered with error ``status`` (not 413, logged each
        time by :meth:`drain_once`, as each teaches the body limit): ``send_failed``, a
        warning with its detail, the failures in a row and the wait before the next post,
        at the first failure of that status, then at most once a minute while it lasts. A
        gateway whose store was down for an hour was said 3,600 times."""
        self._send_failures += 1
        now = time.monotonic()
        last = self._send_failed_logged
        if last is not None and last[0] == status and now - last[1] < _DROP_LOG_EVERY_S:
            return
        self._send_failed_logged = (status, now)
        event: dict[str, Any] = {"event": "send_failed", "status": status,
                                 "messages": len(msgs), "bytes": len(body),
                                 "failures": self._send_failures,
                                 "retry_in_s": round(wait, 3), "detail": _answer_detail(r)}
        log.warning(json.dumps(event))

    @property
    def post_budget(self) -> int | None:
        """The most bytes one telemetry post may take now (None: no 413 seen, no limit).

        Once the gateway refused a post as too large (413), posts are kept under the
        midpoint of the largest body it took and the smallest it refused (a post that would
        teach nothing, being no bigger than one taken, may grow by one message while it
        stays under the refused size), so the budget settles just under the gateway's
        limit in a few posts. After ``_PROBE_FIRST`` posts taken in a row (doubling, up to
        ``_PROBE_MAX``, each time a probe is refused) or ``_PROBE_AFTER_S`` seconds since
        the last 413, the budget is twice the refused size: a probe. A probe taken means
        the gateway's limit was raised: the refused size is forgotten (no limit again).

        Example:
            >>> agent.post_budget is None  # doctest: +SKIP
            True
        """
        if self._post_refused is None:
            return None
        if self._probe_due():
            return 2 * self._post_refused
        return max((self._post_ok + self._post_refused) // 2, 1)

    def _probe_due(self) -> bool:
        """Whether the next post may go past the smallest refused size (see post_budget)."""
        return self._post_refused is not None and (
            self._post_streak >= self._probe_every
            or time.monotonic() - self._refused_at >= _PROBE_AFTER_S)

    def _post_taken(self, size: int) -> None:
        """The gateway took a post of ``size`` bytes: raise what is known to fit, and forget
        the refused size when this post was at least as big (its limit was raised)."""
        self._post_ok = max(self._post_ok, size)
        if self._post_refused is None:
            return
        if size >= self._post_refused:
            log.info(json.dumps({
                "event": "post_limit_raised", "bytes": size, "refused": self._post_refused,
                "detail": "the gateway took a post at least as big as one it refused as too "
                "large (413): its limit was raised, posts are no longer kept under it"}))
            self._post_refused, self._post_streak = None, 0
            self._probe_every = _PROBE_FIRST
            return
        self._post_streak += 1

    def _fit(self, msgs: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
        """The body of the next post (a JSON array) and the messages in it: the oldest of
        ``msgs`` that fit :attr:`post_budget`, at least one; one more when the body would be
        no bigger than a post already taken and stays under the smallest refused size."""
        parts = [json.dumps(m, separators=(",", ":")).encode() for m in msgs]
        budget = self.post_budget
        if budget is not None:
            n, size = 0, 1  # "[" and "]", and one "," between two messages
            for part in parts:
                if n and size + len(part) + 1 > budget:
                    break
                size += len(part) + 1
                n += 1
            refused = self._post_refused
            if (refused is not None and n < len(parts) and size <= self._post_ok
                    and size + len(parts[n]) + 1 < refused):
                n += 1  # the midpoint lies between two sizes of post: try the bigger one
            parts, msgs = parts[:n], msgs[:n]
        return b"[" + b",".join(parts) + b"]", msgs

    def _too_large(self, msgs: Sequence[Mapping[str, Any]], size: int, r: Any) -> None:
        """The gateway refused a post of ``size`` bytes as too large (413): remember it, so
        later posts are smaller; a message refused alone can never be taken and is set
        aside as rejected (``too_large``: counted, logged and kept in the outbox's
        ``rejected`` table, like the gateway's other rejections), and a small stand-in
        (metric ``agent.too_large``, its size) is sent in its place, so the ack moves on
        and what follows is delivered."""
        if self._post_refused is not None and size >= self._post_refused:
            self._probe_every = min(2 * self._probe_every, _PROBE_MAX)  # a probe refused
        else:
            if size <= self._post_ok:  # the limit fell below a post it took before
                self._post_ok = 0
            self._post_refused = size
            self._post_ok = min(self._post_ok, size - 1)
        self._post_streak = 0
        self._refused_at = time.monotonic()
        if len(msgs) > 1:
            return
        msg = msgs[0]
        if set(msg.get("metrics") or ()) == {_STAND_IN_METRIC}:  # a stand-in refused too:
            self._stop.wait(1.0)  # the gateway's limit is absurdly small; keep trying
            return
        try:
            said = r.json().get("detail")
        except (ValueError, AttributeError):
            said = None
        detail = json.dumps({
            "field": "payload", "value": f"{size} bytes",
            "detail": f"the gateway refuses this message alone as too large (HTTP 413"
                      f"{': ' + str(said)[:200] if said else ''}); a stand-in with metric "
                      f"{_STAND_IN_METRIC} = {size} is sent under its seq"})
        seq = int(msg["seq"])
        ts = msg.get("ts")
        stand_in = {"ts": ts if isinstance(ts, int | float) else time.time(),
                    "metrics": {_STAND_IN_METRIC: float(size)}}
        if self.outbox.set_aside(seq, "too_large", detail, stand_in):
            self._log_rejected([(seq, "too_large", detail)])

    def _log_rejected(self, rejected: Sequence[tuple[int | None, str, str]],
                      unlisted: Mapping[str, int] | None = None) -> None:
        """Log what the gateway rejected (``unlisted``: those it counted by reason but did
        not list): at once, then at most once a minute with the exact count since; say so
        when most were refused for the reading's time (clock not set)."""
        self._rejected_unlogged.extend(rejected)
        self._unlisted_unlogged.update(unlisted or {})
        now = time.monotonic()
        if self._reject_logged_at is not None and now - self._reject_logged_at < _DROP_LOG_EVERY_S:
            return
        self._reject_logged_at = now
        batch, self._rejected_unlogged = self._rejected_unlogged, []
        reasons = Counter(reason for _, reason, _ in batch) + self._unlisted_unlogged
        self._unlisted_unlogged = Counter()
        count = sum(reasons.values())
        clock = sum(reasons.get(r, 0) for r in _CLOCK_REASONS) * 2 > count
        detail = ("most were refused for the reading's time being too far from the gateway's "
                  "clock: is this device's clock set (NTP, RTC)? " if clock else "")
        detail += ("the gateway refuses them for good, so they are not sent again; they are kept "
                   f"in the rejected table of {self.outbox.path}")
        total = self.outbox.rejected
        log.warning(json.dumps({
            "event": "readings_rejected", "count": count, "total": total,
            "reasons": dict(reasons), "rejections": [
                {"seq": seq, "reason": reason, **json.loads(info)}
                for seq, reason, info in batch[:20]],
            "detail": detail}))
        if not clock:  # a report stamped by a clock the gateway refuses would be refused too
            self._report({"agent.rejected": float(total)})

    def sender_loop(self) -> None:
        """Drain until stopped; back off while the gateway is away. Model updates are
        checked in a thread of their own (:meth:`update_loop`, with its own HTTP client,
        started here when trusted keys are given), so a long model download never holds up
        telemetry."""
        import httpx

        backoff = 0.05
        with contextlib.ExitStack() as stack:
            client = _entered(stack, httpx.Client(timeout=5.0, verify=self.verify))
            updater = None
            if self.trusted_keys:  # after the sender's client is open: it closes last
                updater = threading.Thread(target=self.update_loop, name="edgewise-updates",
                                           daemon=True)
                updater.start()
            try:
                while not self._stop.is_set():
                    try:
                        sent = self.drain_once(client)
                        backoff = 0.05
                        if sent < 0 or not len(self.outbox):
                            self._stop.wait(0.05)
                    except Exception as exc:  # the sender must outlive any one answer
                        self._log_loop_error(exc, "sender")
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, 2.0)
            finally:
                if updater is not None:
                    self._stop.set()  # the sender's end is the updates' end too
                    updater.join(timeout=10)

    def update_loop(self) -> None:
        """Check for a model update every ``update_interval_s`` until stopped, over an HTTP
        client of its own (a download takes as long as it takes; telemetry goes on)."""
        import httpx

        with contextlib.ExitStack() as stack:
            client = _entered(stack, httpx.Client(timeout=5.0, verify=self.verify))
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self.check_update(client)
                except Exception as exc:  # the updates must outlive any one answer
                    self._log_loop_error(exc, "updates")
                self._stop.wait(max(self.update_interval_s - (time.monotonic() - started),
                                    0.05))

    def _log_loop_error(self, exc: Exception, loop: str = "sender") -> None:
        """Log what the sender or the update loop (``loop``: ``"sender"``, ``"updates"``,
        said in the event) met: an unreachable gateway (or a certificate that does not
        verify), else the error itself; never raise. An error status the gateway answered
        is not an unreachable gateway (the sender logs ``send_failed``, the update check
        ``update_check_failed``, each with the status)."""
        import httpx

        if isinstance(exc, httpx.HTTPStatusError) and exc.response is not None:
            log.warning(json.dumps({"event": "update_check_failed" if loop == "updates"
                                    else "send_failed", "status": exc.response.status_code,
                                    "detail": _answer_detail(exc.response), "loop": loop}))
            return
        if isinstance(exc, httpx.HTTPError | OSError | ValueError | KeyError):
            if not self._log_certificate(exc, loop):
                log.info(json.dumps({"event": "gateway_unreachable", "loop": loop,
                                     "detail": str(exc)[:200], "buffered": self._buffered()}))
            return
        log.error(json.dumps({"event": "sender_error", "loop": loop, "detail":
                              f"{type(exc).__name__}: {str(exc)[:200]}",
                              "buffered": self._buffered()}))

    def _log_certificate(self, exc: BaseException, loop: str = "sender") -> bool:
        """If ``exc`` is the gateway's TLS certificate failing verification, warn (at once,
        then at most once a minute for each loop) naming the fix, and return True."""
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" not in text and "certificate verify failed" not in text:
            return False
        now = time.monotonic()
        last = self._tls_logged_at.get(loop)
        if last is None or now - last >= _DROP_LOG_EVERY_S:
            self._tls_logged_at[loop] = now
            log.warning(json.dumps({
                "event": "gateway_certificate_unverified", "loop": loop, "gateway": self.gateway,
                "detail": f"{text[:200]}; nothing is sent until it verifies: for a "
                "self-signed gateway ('edgewise serve --tls-cert') pass its certificate "
                "(or the CA that signed it) with --ca-file, and use the host name or "
                "address the certificate names in --gateway",
                "buffered": self._buffered()}))
        return True

    def _buffered(self) -> int | None:
        """Messages in the outbox, for a log line; None if the outbox cannot say (a log
        line must never raise in the handler that writes it)."""
        try:
            return len(self.outbox)
        except Exception:
            return None

    def run(self, source: str = "sim", rate_hz: float = 10.0, limit: int | None = None,
            flush_timeout_s: float = 60.0) -> None:
        """Read ``source`` and buffer readings; a thread forwards them. Stops at ``limit``.

        When the source ends (or ``limit`` is reached) the agent keeps sending for up to
        ``flush_timeout_s``; anything still unacknowledged stays in the outbox for the next run.
        """
        identity = None
        if source.startswith("csv:"):
            with contextlib.suppress(OSError):  # unreadable: reading it says so
                identity = _file_identity(source[4:])
        sender = threading.Thread(target=self.sender_loop, name="edgewise-sender", daemon=True)
        sender.start()
        n = 0
        self.held = False
        try:
            try:
                if identity is not None:  # rows left in the file logrotate moved away first
                    n = self._finish_rotated(source, identity, rate_hz, limit)
                if (limit is None or n < limit) and not self.held:
                    pos, how = self.outbox.use_source(source, identity)
            except sqlite3.OperationalError as exc:
                # a full disk refused the file's identity and position (it raised out of
                # run: the sender, whose acks free room, stopped too): nothing of the file
                # is read this run, its rows wait in it for the next
                if not _is_full(exc):
                    raise
                self.held = True
                log.warning(json.dumps({
                    "event": "source_held", "source": source, "row": None,
                    "buffered": self._buffered(), "detail": f"the disk is full ({exc}): "
                    "this file's position cannot be recorded, so none of it is read this "
                    "run; its rows stay in the file and the next run reads them, while "
                    "what is buffered is sent"}))
            if (limit is None or n < limit) and not self.held:
                if source != "stdin":
                    log.info(json.dumps({"event": "source_start", "source": source,
                                         "position": pos, "how": how,
                                         "detail": _SOURCE_START[how]}))
                n0 = n
                pos, n = self._read_source(source, pos, rate_hz, limit, n)
                if n == n0 and source.startswith("csv:") and pos > 1 and not self.held:
                    log.info(json.dumps({
                        "event": "source_done", "source": source, "position": pos,
                        "detail": f"nothing after row {pos - 1} of this file, which this "
                        "state dir has read before"}))
            deadline = time.monotonic() + flush_timeout_s
            while self._buffered() != 0 and sender.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            self._stop.set()
            sender.join(timeout=10)
            self.save_detectors()

    def _read_source(self, spec: str, pos: int, rate_hz: float, limit: int | None,
                     n: int) -> tuple[int, int]:
        """Buffer the readings of ``spec`` from position ``pos``, kept as the position of the
        source chosen with ``use_source``, until it ends or ``n`` readings in all reach
        ``limit``; return the position and ``n`` then.

        A ``csv:`` file's row is never dropped: when the outbox is full (``--max-mb``, or the
        disk) the reading stops at it (:attr:`held`, logged ``source_held``), its position
        kept there, so the next run reads on from it; a source that cannot be read again
        (sim, stdin) drops and counts the reading (:meth:`Outbox.put`)."""
        hold = spec.startswith("csv:")
        for reading, ts_ns in _source(spec, pos, rate_hz):
            self.handle(reading, source_pos=pos + 1, ts_ns=ts_ns, hold=hold)
            if self.held:
                why = "the disk is full" if self.outbox.disk_full else (
                    f"the outbox holds its --max-mb ({self.outbox.max_bytes} bytes)")
                log.warning(json.dumps({
                    "event": "source_held", "source": spec, "row": pos,
                    "buffered": self._buffered(), "detail": f"{why}: row {pos} of this file "
                    "and those after it are left in the file, not dropped; the next run "
                    "reads on from it once the gateway has acknowledged buffered readings"}))
                break
            pos += 1
            n += 1
            if limit is not None and n >= limit:
                break
        if pos > self.outbox.source_pos:  # rows read since the last put gave no reading:
            self.outbox.save_position(pos)  # a restart does not read them again
        return pos, n

    def _finish_rotated(self, source: str, identity: Mapping[str, Any], rate_hz: float,
                        limit: int | None) -> int:
        """If the ``csv:PATH`` file read here before is no longer at PATH (``identity``,
        the file there now, is another one: logrotate), read the rows written to the old
        one after it was last read, from where logrotate put it (:func:`_rotated_file`),
        before the new file is read; if it cannot be found, say what may be lost. Return
        the readings buffered. Until the old file is read to its end its identity stays
        kept, so a restart goes on in it."""
        pos, _ = self.outbox.use_source(source)
        known = self.outbox.source_identity(source)
        if known is None or pos <= 1 or _replaced(known, identity) is None:
            return 0
        old = _rotated_file(source[4:], known)
        if old is None:
            log.warning(json.dumps({
                "event": "source_rotated_away", "source": source, "rows_read": pos - 1,
                "size_when_read": known.get("size"), "inode": known.get("inode"),
                "detail": f"the file read before at this path ({pos - 1} rows read of it, "
                f"{known.get('size')} bytes when it was last opened) is not found in its "
                "folder under another name (compressed or deleted?): rows written to it "
                "after that, before it was rotated, are lost; keep the newest rotated file "
                "uncompressed (logrotate's delaycompress) to have them read"}))
            return 0
        try:
            old_identity = _file_identity(old)
        except OSError:
            return 0
        pos, _ = self.outbox.use_source(source, old_identity)
        start = pos
        pos, n = self._read_source(f"csv:{old}", pos, rate_hz, limit, 0)
        log.info(json.dumps({
            "event": "source_rotated_read", "source": source, "file": old,
            "rows": pos - start, "detail": "the rows written to the file read before, after "
            "it was last read and before it was rotated, read from where it was moved"}))
        # rotated more than once since: the files made after it were never read at all
        for later in _rotated_after(source[4:], old):
            if (limit is not None and n >= limit) or self.held:
                break
            try:
                later_identity = _file_identity(later)
            except OSError:
                continue
            if _replaced(old_identity, later_identity) is None:
                continue  # the same rows as the file just read (a copy): read once
            pos, _ = self.outbox.use_source(source, later_identity)
            start = pos
            pos, n = self._read_source(f"csv:{later}", pos, rate_hz, limit, n)
            log.info(json.dumps({
                "event": "source_rotated_read", "source": source, "file": later,
                "rows": pos - start, "detail": "a file logrotate made after the one read "
                "before (rotated again before the agent read it), read whole"}))
            old, old_identity = later, later_identity
        return n

    def stop(self) -> None:
        """Ask the loops to end."""
        self._stop.set()


_SOURCE_START = {
    "new": "not read from this state dir before: from its first reading",
    "resume": "resumed where this state dir stopped reading it",
    "adopted": "resumed at the position an older agent kept, without naming its source",
    "rotated": "the file at this path is not the one read before (another first row, or "
               "shorter: rotated or truncated): from its first reading",
}


def _entered(stack: contextlib.ExitStack[Any], client: Any) -> Any:
    """``client`` (an HTTP client) entered on ``stack``, so it is closed when the stack
    ends; one already open (an embedder's client, shared by both loops) is used as it is."""
    try:
        return stack.enter_context(client)
    except RuntimeError:  # httpx: "Cannot open a client instance more than once."
        return client


def _answer_detail(r: Any) -> str:
    """What a gateway's error answer says: its problem JSON's ``detail`` (else ``title``),
    else the start of its body. The body itself, clipped, was no JSON any more and hid the
    detail behind the problem's other fields.

    >>> class R:
    ...     text = json.dumps({"type": "urn:x", "title": "Authentication required",
    ...                        "status": 401, "detail": "Device 'pump-8' is unknown."})
    ...     def json(self): return json.loads(self.text)
    >>> _answer_detail(R())
    "Device 'pump-8' is unknown."
    """
    try:
        problem = r.json()
    except Exception:  # no JSON (a proxy's page), or an answer that cannot say
        problem = None
    if isinstance(problem, dict):
        said = problem.get("detail") or problem.get("title")
        if isinstance(said, str) and said.strip():
            return said.strip()[:500]
    return str(getattr(r, "text", ""))[:200]


def _learned(model: Any) -> bool:
    """Whether a release's detector learned something: its state (pickled) is not its
    fresh ``clone()``'s. One that cannot tell (a clone that does not pickle) counts as
    learned.

    >>> m = EWZScore()
    >>> _learned(m), m.learn_one({"t": 1.0}), _learned(m)
    (False, None, True)
    """
    try:
        return _pickle_digest(model) != _pickle_digest(model.clone())
    except Exception:
        return True


class _HashSink:
    """A file to pickle into that keeps only the sha256 of what is written."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def _pickle_digest(obj: Any) -> bytes:
    """The sha256 of ``obj`` pickled (protocol 4), never held whole: a model of N MiB
    pickled to compare it took another N MiB.

    >>> _pickle_digest([1, 2]) == _pickle_digest([1, 2]) != _pickle_digest([2, 1])
    True
    """
    sink = _HashSink()
    pickle.Pickler(sink, protocol=4).dump(obj)
    return sink.hash.digest()


def _trained_metrics(manifest: Manifest | None) -> frozenset[str] | None:
    """The metrics a release says its model was trained on: the ``metric=NAME`` words of
    its ``trained_on`` (``edgewise registry publish --trained-on``; comma-separated or
    repeated); None when it names none.

    >>> m = Manifest("ewz", "1", 1, "0" * 64, 1, "pickle", "device:d", 0, "k",
    ...              metadata={"trained_on": "NAB metric=temp_c,flow; metric=rpm"})
    >>> sorted(_trained_metrics(m))
    ['flow', 'rpm', 'temp_c']
    >>> _trained_metrics(None)
    """
    text = None if manifest is None else manifest.metadata.get("trained_on")
    if not isinstance(text, str):
        return None
    names: set[str] = set()
    for word in text.replace(";", " ").split():
        if word.startswith("metric="):
            names.update(n for n in word[len("metric="):].split(",") if n)
    return frozenset(names) or None


def _unlisted(msgs: Sequence[Mapping[str, Any]], problems: Sequence[Any], done: int,
              by_reason: Any) -> dict[str, int]:
    """The rejections the gateway counted by reason (``rejected_by_reason``) but did not
    list (it lists a post's first 100), by reason, when the ack covers the whole batch
    (else ``{}``: what is still pending is counted if it is rejected when sent again).

    >>> msgs = [{"seq": 7}, {"seq": 8}]
    >>> _unlisted(msgs, [{"index": 0, "reason": "future_ts"}], 8, {"future_ts": 2})
    {'future_ts': 1}
    >>> _unlisted(msgs, [], 7, {"future_ts": 2})
    {}
    """
    if not isinstance(by_reason, Mapping) or done < int(msgs[-1]["seq"]):
        return {}
    listed = Counter(str(p.get("reason") or "rejected") for p in problems
                     if isinstance(p, Mapping))
    out = {}
    for reason, n in by_reason.items():
        if isinstance(n, int) and not isinstance(n, bool) and n > listed[str(reason)]:
            out[str(reason)] = n - listed[str(reason)]
    return out


def _rejections(msgs: Sequence[Mapping[str, Any]], problems: Sequence[Any], done: int
                ) -> list[tuple[int | None, str, str]]:
    """``(seq, reason, detail JSON)`` for each of the gateway's ``rejected`` problems whose
    message the ack covers (``seq <= done``); one that names no message is kept only when
    the whole batch is covered (those it counted but did not list: :func:`_unlisted`).

    >>> msgs = [{"seq": 7}, {"seq": 8}]
    >>> _rejections(msgs, [{"index": 1, "reason": "future_ts", "field": "ts", "value": 9}], 8)
    [(8, 'future_ts', '{"field": "ts", "value": 9}')]
    >>> _rejections(msgs, [{"index": 1, "reason": "future_ts"}], 7)
    []
    """
    out: list[tuple[int | None, str, str]] = []
    for p in problems:
        if not isinstance(p, Mapping):
            continue
        idx = p.get("index")
        if idx is None and len(msgs) == 1:
            idx = 0
        seq = (int(msgs[idx]["seq"]) if isinstance(idx, int) and 0 <= idx < len(msgs)
               else None)
        if (seq if seq is not None else int(msgs[-1]["seq"])) > done:
            continue  # still pending: counted if it is rejected when sent again
        info = {k: p[k][:300] if isinstance(p[k], str) else p[k]
                for k in ("field", "value", "allowed", "detail") if k in p}
        out.append((seq, str(p.get("reason") or "rejected"), json.dumps(info, default=str)))
    return out


class _Refusal(Exception):
    """A verified release this agent will not fetch (``reason`` as in ``update_refused``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _FetchError(Exception):
    """The gateway answered a model download with an error status (e.g. 404), or the
    connection failed during it (cut mid-body, a read timed out)."""


def _transport_errors() -> tuple[type[Exception], ...]:
    """What an HTTP client raises when the connection fails during a model download
    (httpx's ``TransportError``: ``RemoteProtocolError``, ``ReadTimeout``, ``ReadError``
    ...; imported here as the agent imports httpx only where it talks to the gateway)."""
    import httpx

    return (httpx.TransportError,)


def _retry_after_s(value: str | None, now: float | None = None) -> float:
    """Seconds to wait for a 429's ``Retry-After`` (RFC 9110: seconds or an HTTP date),
    within 0 to 30; 1 when there is none or it cannot be read (NaN, negative, no number nor
    date: a date raised ValueError, logged as the gateway being unreachable), or when it is
    a date already past. ``now``: the
    time (Unix seconds) a date is counted from; None: the clock.

    >>> _retry_after_s("5"), _retry_after_s("3600"), _retry_after_s(None), _retry_after_s("soon")
    (5.0, 30.0, 1.0, 1.0)
    >>> _retry_after_s("nan"), _retry_after_s("-3")
    (1.0, 1.0)
    >>> _retry_after_s("Wed, 21 Oct 2037 07:28:00 GMT", now=2139722870.0)
    10.0
    >>> _retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT")  # past: this clock may be ahead
    1.0
    """
    text = (value or "").strip()
    if not text:
        return 1.0
    try:
        wait = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return 1.0
        if when.tzinfo is None:  # an HTTP date is GMT; one without a zone is read as such
            when = when.replace(tzinfo=datetime.UTC)
        # a date already past (this device's clock ahead of the gateway's) waits as a 429
        # without one does: 0 s posted again at once, some 20 times a second
        wait = when.timestamp() - (time.time() if now is None else now)
        if wait <= 0:
            return 1.0
    if math.isnan(wait) or wait < 0:
        return 1.0
    return min(wait, 30.0)


class _BadOffer(Exception):
    """A model offer (``GET /v1/devices/ID/model``) whose envelope or manifest cannot be
    read: ``field`` names what is wrong, ``key`` tells this offer from another (for refusing
    it once), ``release`` is the manifest's release where it says one (else -1)."""

    def __init__(self, field: str, message: str, key: str, release: int = -1) -> None:
        super().__init__(message)
        self.field, self.key, self.release = field, key, release


def _parse_offer(r: Any) -> tuple[bytes, bytes, dict[str, Any], str]:
    """The manifest bytes, signature, manifest fields (not verified: only read) and the
    offer's key (sha256 of manifest and signature) of a model offer; :class:`_BadOffer` if
    it is not a JSON object of base64 ``manifest`` and ``signature`` whose manifest is a
    JSON object with an integer ``release`` >= 0 and, if it has one, a string ``key_id`` (it
    raised TypeError, KeyError or a JSON error out of the update check, logged as the
    gateway being unreachable every time).

    >>> class R:
    ...     def __init__(self, body): self.body = body
    ...     def json(self): return json.loads(self.body)
    >>> _parse_offer(R('{"manifest": "eyJyZWxlYXNlIjogMn0=", "signature": "AA=="}'))[2]
    {'release': 2}
    >>> _parse_offer(R("[]"))
    Traceback (most recent call last):
    ...
    edgewise.edge.agent._BadOffer: The model offer is a JSON list, not an object of base64 'manifest' and 'signature'.
    """  # noqa: E501
    def bad(field: str, message: str, key: str, release: int = -1) -> _BadOffer:
        return _BadOffer(field, message, hashlib.sha256(key.encode()).hexdigest(), release)

    try:
        env = r.json()
    except ValueError as exc:
        raise bad("body", f"The model offer is not JSON ({exc}).", f"body:{exc}") from None
    if not isinstance(env, dict):
        raise bad("body", f"The model offer is a JSON {type(env).__name__}, not an object of "
                  "base64 'manifest' and 'signature'.", f"body:{type(env).__name__}")
    parts: list[bytes] = []
    for name in ("manifest", "signature"):
        value = env.get(name)
        try:
            if not isinstance(value, str):
                raise ValueError(f"a JSON {type(value).__name__}")
            parts.append(base64.b64decode(value, validate=True))
        except ValueError as exc:
            shown = json.dumps(value)[:80] if isinstance(value, str) else "its value"
            raise bad(name, f"The model offer's {name!r} is not base64 text ({shown}: {exc}).",
                      f"{name}:{json.dumps(value, default=str)[:4096]}") from None
    mb, sig = parts
    seen = hashlib.sha256(mb + b"\0" + sig).hexdigest()
    try:
        head = json.loads(mb)
    except ValueError as exc:
        raise _BadOffer("manifest", f"The offered manifest is not JSON ({exc}).", seen) from None
    if not isinstance(head, dict):
        raise _BadOffer("manifest", f"The offered manifest is a JSON {type(head).__name__}, "
                        "not an object.", seen)
    release = head.get("release")
    if isinstance(release, bool) or not isinstance(release, int) or release < 0:
        raise _BadOffer("manifest.release", f"The offered manifest's release is "
                        f"{json.dumps(release)[:40]}; it must be an integer >= 0.", seen)
    if "key_id" in head and not isinstance(head["key_id"], str):  # raised TypeError in verify
        raise _BadOffer("manifest.key_id", f"The offered manifest's key_id is "
                        f"{json.dumps(head['key_id'])[:40]}; it must be a key id string.", seen,
                        release)
    return mb, sig, head, seen


class _DiskError(Exception):
    """A verified download that the slot's disk would not take (the temporary file could not
    be made, written or read back): logged as ``update_install_failed`` and tried again."""


class _Download:
    """A release's payload as a binary stream that :func:`edgewise.registry.verify` reads.

    ``verify`` reads only once the manifest passed its checks, so the HTTP stream is opened
    on the first ``read``, after the (then verified) manifest's size and format are checked
    against what this agent takes. What is read is written, as it comes, to a temporary
    file in the slot (:meth:`ModelSlot.stage`) and nothing of it is kept in memory;
    :meth:`verified` reads it back once, hash-checked, for the model to be loaded from
    and :meth:`ModelSlot.install` renames it into place. ``close`` ends the stream and
    removes the file unless it was installed. Once ``stop`` is set the next ``read`` ends
    the download (:class:`_FetchError`): an agent asked to stop does not wait for the rest
    of a slow download (it is fetched again at the next check).
    """

    def __init__(self, client: Any, gateway: str, headers: Mapping[str, str],
                 manifest_bytes: bytes, slot: ModelSlot,
                 stop: threading.Event | None = None) -> None:
        self.client, self.gateway, self.headers = client, gateway, dict(headers)
        self.manifest_bytes = manifest_bytes
        self.slot = slot
        self.stop = stop
        self.opened = False
        self.staged: _Staged | None = None
        self._ctx: Any = None
        self._chunks: Iterator[bytes] | None = None
        self._buf = b""
        self._manifest: Manifest | None = None
        self._got = 0  # bytes of the body received so far

    def _cut(self, exc: Exception) -> _FetchError:
        """The download cut by the connection (``exc``, an httpx transport error: the peer
        closed it mid-body, a read timed out) as a :class:`_FetchError`, so the release is
        fetched again after the update back-off, not on every check."""
        m = self._manifest
        what = "the model download" if m is None else (
            f"Release {m.release}: the model download (GET /v1/models/{m.sha256[:16]}…)")
        size = "" if m is None else f" of {m.size}"
        return _FetchError(f"{what} was cut after {self._got}{size} bytes "
                           f"({type(exc).__name__}: {str(exc)[:200]}); it is downloaded "
                           "again after the back-off.")

    def _open(self) -> None:
        m = Manifest.from_bytes(self.manifest_bytes)  # verified: verify reads only after that
        if m.size > MAX_MODEL_BYTES:
            raise _Refusal(f"Release {m.release} is {m.size} bytes; this agent takes models of "
                           f"at most {MAX_MODEL_BYTES} bytes (MAX_MODEL_BYTES), so it was not "
                           "downloaded.", "too_large")
        if m.format not in AGENT_FORMATS:
            raise _Refusal(f"Release {m.release} is in format {m.format!r}; this agent runs "
                           "'pickle' (publish with --format pickle or a .pkl file).",
                           "unsupported_format")
        self.opened = True
        self._manifest = m
        ctx = self.client.stream("GET", f"{self.gateway}/v1/models/{m.sha256}",
                                 headers=self.headers)
        try:
            resp = ctx.__enter__()
        except _transport_errors() as exc:  # the link dropped before the answer came
            raise self._cut(exc) from None
        self._ctx = ctx
        if not 200 <= resp.status_code < 300:
            raise _FetchError(f"Release {m.release}: the gateway answered the model download "
                              f"(GET /v1/models/{m.sha256[:16]}…) with HTTP {resp.status_code}.")
        try:
            self.staged = self.slot.stage(m)
        except OSError as exc:
            raise _DiskError(f"Release {m.release} cannot be downloaded into "
                             f"{str(self.slot.root)!r}: {exc}; the running model is "
                             "kept.") from None
        self._chunks = resp.iter_bytes()

    def read(self, n: int = -1) -> bytes:
        if self._chunks is None:
            self._open()
        assert self._chunks is not None and self.staged is not None
        while n < 0 or len(self._buf) < n:
            if self.stop is not None and self.stop.is_set():
                raise _FetchError("The agent was asked to stop during the model download; "
                                  "it is downloaded again at the next update check.")
            try:
                chunk = next(self._chunks, b"")
            except _transport_errors() as exc:  # cut mid-body: retried after a back-off
                raise self._cut(exc) from None
            if not chunk:
                break
            self._got += len(chunk)
            self._buf += chunk
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        try:
            self.staged.write(out)  # what verify hashes is what is written, byte for byte
        except OSError as exc:
            raise _DiskError(f"The model download cannot be written to "
                             f"{str(self.staged.path)!r}: {exc}; the running model is "
                             "kept.") from None
        return out

    def verified(self, manifest: Manifest) -> bytes:
        """The downloaded payload, once ``verify`` returned ``manifest``: read back from
        its file, which must still hold the ``manifest.size`` bytes of ``manifest.sha256``
        (:meth:`_Staged.verified`)."""
        if self.staged is None:  # verify returned without reading: cannot be
            raise _FetchError(f"Release {manifest.release} was not downloaded.")
        try:
            return self.staged.verified(manifest.sha256, manifest.size)
        except OSError as exc:
            raise _DiskError(f"The model download {str(self.staged.path)!r} cannot be read "
                             f"back: {exc}; the running model is kept.") from None

    def close_stream(self) -> None:
        """End the HTTP stream (the downloaded file stays, for install)."""
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)

    def close(self) -> None:
        """End the stream and remove the downloaded file unless it was installed."""
        self.close_stream()
        if self.staged is not None:
            self.staged.discard()
