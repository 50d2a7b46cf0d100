"""The embedded default store: one DuckDB file.

Each :meth:`DuckDBStore.append` is one transaction: the readings, the conflicts and the
message seqs commit together (DuckDB writes and syncs its write-ahead log on commit), so a
crash either keeps the whole call or none of it. The schema is created once, at open; the
hot path only inserts.

Deduplication does not use a primary-key index: the store looks up the batch's keys in
the batch's own time range (DuckDB skips row groups by their min/max, so this touches only
recent data when readings arrive roughly in time order) and decides in Python which rows
are new. That is exact because DuckDB lets one process at a time open the file read-write
and, inside the process, one lock serialises writers.

The process that opens the file holds an exclusive ``flock`` on ``<file>.lock`` beside it
(mode 0600, the holder's pid in it, removed at close) from open to close, purges included:
a purge closes the file and reopens the purged copy, and DuckDB's own lock is not held in
between, so without it another process (a CLI command, a second gateway) could open the
file in that gap and take the store from the gateway. :func:`repair` holds it likewise, from
before its first open to after its last, while it moves the log aside and replays its intact
part. Another process is refused at once (:class:`~edgewise.errors.StoreLockedError`,
naming the holder's pid).

Queries from other threads use their own cursors, so a slow dashboard query does not hold
up ingestion.

Deleting a device purges the file (:meth:`DuckDBStore.purge`): DuckDB keeps a deleted
row's bytes in the file, so the live rows are copied to a new file that atomically
replaces it, and neither the device's id nor its values are left on the store's files.

>>> from edgewise.telemetry import Reading
>>> store = DuckDBStore(":memory:")
>>> r = store.append([Reading("pump-1", "temp_c", 10**18, 21.5, seq=1)], {"pump-1": [1]})
>>> r.stored, r.watermarks
(1, {'pump-1': 1})
>>> store.append([Reading("pump-1", "temp_c", 10**18, 21.5, seq=1)], {"pump-1": [1]}).duplicates
1
>>> store.query("pump-1")
[('temp_c', 1000000000000000000, 21.5)]
>>> store.close()
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import shlex
import shutil
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from edgewise._private import PRIVATE_UMASK, make_private, sync_folder
from edgewise.errors import StoreCorruptError, StoreError, StoreLockedError
from edgewise.store._batch import Columns, Prepared, SeqTracker, check_text_args, classify_batch
from edgewise.store._sql import (
    DEVICE_TABLES,
    EVENT_COUNTER,
    RAISED_COUNTER,
    STORE_ID,
    TRIMMED,
    SQLStoreMixin,
    _marks_to_move,
    acknowledge_alert_query,
    before_where,
    duplicate_alert_error,
    insert_alert,
    insert_conflicts,
    mark_merged,
    mean_plan,
    merge_changes,
    new_store_id,
    one_device_id,
    prune_events_where,
    record_trims,
    update_alert_query,
)
from edgewise.store.base import Alert, AppendResult, Conflict, DeviceSummary
from edgewise.telemetry import Reading

__all__ = ["DuckDBStore", "RepairReport", "broken_logs", "repair"]

SCHEMA_VERSION = "1"

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS ew_meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS readings (
        device_id VARCHAR NOT NULL, metric VARCHAR NOT NULL, ts_ns BIGINT NOT NULL,
        value DOUBLE NOT NULL, seq BIGINT)""",
    """CREATE TABLE IF NOT EXISTS seqs (device_id VARCHAR NOT NULL, seq BIGINT NOT NULL)""",
    # seqs 1..watermark folded into one row per device (see _compact_seqs)
    """CREATE TABLE IF NOT EXISTS seq_marks (
        device_id VARCHAR NOT NULL, watermark BIGINT NOT NULL)""",
    # the stored seqs above the watermark folded into their runs lo..hi (inclusive), one
    # row per run (see _compact_seqs); made empty in older stores, whose seqs rows the
    # first open folds
    """CREATE TABLE IF NOT EXISTS seq_runs (
        device_id VARCHAR NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS conflicts (
        device_id VARCHAR NOT NULL, metric VARCHAR NOT NULL, ts_ns BIGINT NOT NULL,
        stored_value DOUBLE NOT NULL, new_value DOUBLE NOT NULL, seq BIGINT,
        received_ns BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alerts (
        id VARCHAR NOT NULL, device_id VARCHAR NOT NULL, start_ns BIGINT NOT NULL,
        end_ns BIGINT NOT NULL, score DOUBLE NOT NULL, kind VARCHAR NOT NULL,
        drivers VARCHAR NOT NULL, message VARCHAR NOT NULL, created_ns BIGINT NOT NULL,
        status VARCHAR NOT NULL, label VARCHAR, acked_by VARCHAR, labelled_by VARCHAR,
        note VARCHAR, merged_into VARCHAR, raised_seq BIGINT)""",
    # stores made before alerts could be merged: the column is added (NULL: every alert
    # live), at the end, where new tables have it too
    """ALTER TABLE alerts ADD COLUMN IF NOT EXISTS merged_into VARCHAR""",
    # stores made before alerts were numbered as raised (RAISED_COUNTER, made at open when
    # missing): added after merged_into (NULL: an alert written before, by creation time)
    """ALTER TABLE alerts ADD COLUMN IF NOT EXISTS raised_seq BIGINT""",
    # the outbox of acknowledgements and labels (Store.alert_events), written with them;
    # ids come from ew_meta's EVENT_COUNTER (made at open when missing: older stores too)
    """CREATE TABLE IF NOT EXISTS alert_events (
        id BIGINT NOT NULL, alert_id VARCHAR NOT NULL, device_id VARCHAR NOT NULL,
        event VARCHAR NOT NULL, actor VARCHAR NOT NULL, at_ns BIGINT NOT NULL,
        detail VARCHAR NOT NULL)""",
    # the devices whose old readings delete_before took, with its latest cut (see
    # Store.trimmed_before); made empty in older stores: what they deleted before is unknown
    """CREATE TABLE IF NOT EXISTS trimmed (
        device_id VARCHAR NOT NULL, before_ns BIGINT NOT NULL)""",
]

# per device and metric: readings, first and last ts_ns, smallest nonzero and largest size
_STATS_SQL = ("SELECT device_id, metric, count(*), min(ts_ns), max(ts_ns), "
              "min(abs(value)) FILTER (WHERE value <> 0), max(abs(value)) ")


def _fold_stats(stats: dict[str, list[Any]], rows: Iterable[Sequence[Any]]) -> None:
    """Add rows of ``_STATS_SQL`` to ``stats``: per device ``[readings, first_ns, last_ns,
    {metric: [readings, smallest nonzero size or None, largest size]}]``.

    >>> stats = {}
    >>> _fold_stats(stats, [("d", "t", 2, 5, 9, None, 0.0), ("d", "t", 1, 3, 3, 0.5, 2.0)])
    >>> stats
    {'d': [3, 3, 9, {'t': [3, 0.5, 2.0]}]}
    """
    for d, m, n, lo, hi, small, top in rows:
        st = stats.setdefault(d, [0, int(lo), int(hi), {}])
        st[0] += int(n)
        st[1], st[2] = min(st[1], int(lo)), max(st[2], int(hi))
        key = st[3].setdefault(m, [0, None, 0.0])
        key[0] += int(n)
        if small is not None:
            key[1] = float(small) if key[1] is None else min(key[1], float(small))
        key[2] = max(key[2], float(top))


_LOCK_RE = re.compile(r"PID (\d+)")

log = logging.getLogger(__name__)

# Files open in this process: a second DuckDBStore on one file would dedup against its own
# cache and lock only, so two of them could store one key twice. One instance per file.
_OPEN_FILES: set[str] = set()
_OPEN_LOCK = threading.Lock()


class _PrivateUmask:
    """This process's umask, made at least :data:`~edgewise._private.PRIVATE_UMASK` while
    any file store of this process writes, and given back after the last of them.

    DuckDB makes the store's write-ahead log (``<file>.wal``, which holds every reading
    committed since the last checkpoint) with the process's umask, at the first commit
    after each checkpoint (it deletes the log at every checkpoint, and an empty one at
    open), so a log made beforehand or ``chmod`` after the commit does not keep it private
    (the latter leaves a moment in which another user may open it and read the log through
    that descriptor until the next checkpoint). The umask is the only way to have DuckDB
    make it 0600: it is held by every writer (the store's write lock, :class:`_WriteLock`)
    and by the open (which makes the file itself). The umask is one per process: a file
    another thread makes while a store writes is private too (0600, not 0644). A gateway
    runs with umask 077 all along (``restrict_umask``), so there this changes nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._before = 0

    def enter(self) -> None:
        with self._lock:
            if self._users == 0:
                before = os.umask(PRIVATE_UMASK)
                os.umask(before | PRIVATE_UMASK)
                self._before = before
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                os.umask(self._before)

    @contextmanager
    def held(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()


_UMASK = _PrivateUmask()


class _WriteLock:
    """The lock that serialises a store's writers, re-entrant like :class:`threading.RLock`;
    for a file store its holder also runs with the private umask (:class:`_PrivateUmask`),
    so the write-ahead log DuckDB makes at a commit is 0600, not 0644 (umask 022).

    >>> lock = _WriteLock(private=True)
    >>> with lock, lock:
    ...     mask = os.umask(0o022); _ = os.umask(mask)
    >>> oct(mask & 0o077)
    '0o77'
    """

    def __init__(self, *, private: bool) -> None:
        self._lock = threading.RLock()
        self._private = private
        self._depth = 0  # how deep the holder is in (it is re-entrant): 0 when free

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        if self._depth == 0 and self._private:
            try:
                _UMASK.enter()
            except BaseException:
                self._lock.release()
                raise
        self._depth += 1
        return True

    def release(self) -> None:
        if not self._lock._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot release un-acquired lock")
        self._depth -= 1
        if self._depth == 0 and self._private:
            _UMASK.leave()
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _spill_path(path: Path) -> Path:
    """The folder DuckDB writes what does not fit in memory to (a big sort's rows, the
    readings themselves) for the store file ``path``: DuckDB's own default, beside it."""
    return path.with_name(path.name + ".tmp")


def _private_spill_dir(path: Path) -> Path:
    """Make the spill folder of the store file ``path`` (:func:`_spill_path`) a folder of
    mode 0700, and return it. DuckDB makes the folder only when it first spills, with the
    process's umask (0755, its files 0644), and that may be a reader's query, which runs
    without the private umask; made here first, it keeps them private whatever their own
    modes. One that is there already (left by a crash, or an older version) is made 0700
    if it is this user's folder; anything else there (a link, a file) is left, with a
    warning (DuckDB then spills nowhere but there, or fails to)."""
    spill = _spill_path(path)
    try:
        os.mkdir(spill, 0o700)
    except FileExistsError:
        try:
            st = os.lstat(spill)
            if not stat.S_ISDIR(st.st_mode):
                log.warning("DuckDB's spill folder %s is not a folder; remove it so that "
                            "spilled rows go to a private one", spill)
            elif st.st_uid == os.geteuid() and st.st_mode & 0o077:
                os.chmod(spill, 0o700)
        except OSError as exc:
            log.warning("could not make %s private (mode 0700): %s", spill, exc)
    except OSError as exc:  # a folder this user may not write: DuckDB cannot write there either
        log.debug("could not make DuckDB's spill folder %s: %s", spill, exc)
    return spill


def _remove_spill_dir(spill: Path) -> None:
    """Remove the spill folder at close if DuckDB left it empty (else it stays)."""
    try:
        spill.rmdir()
    except OSError:
        pass


def _is_wal_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "wal" in text and ("replay" in text or "checkpoint" in text)


def _lock_path(path: Path) -> Path:
    """The file whose ``flock`` the process that has the store open holds."""
    return path.with_name(path.name + ".lock")


def _gateway_on(folder: Path) -> bool:
    """Whether a gateway runs on ``folder`` as its data dir (its presence lock is held)."""
    from edgewise.gateway.presence import gateway_running

    try:
        return gateway_running(folder)
    except OSError:
        return False


def _in_use(path: Path | str, pid: str, *, gateway: bool = True) -> StoreLockedError:
    """The error for a store file another process (``pid``) holds: one that names the
    gateway when one runs on the file's folder (the data dir's ``edgewise.duckdb``), with
    what to do while it runs (``gateway=False``: not asked, the holder is known to be no
    Edgewise store of this version, which would hold the lock file)."""
    path = Path(path)
    if gateway and _gateway_on(path.parent):
        message = (
            f"DuckDB store {str(path)!r} is in use: a gateway (pid {pid}) runs on data dir "
            f"{str(path.parent)!r} and holds it (a DuckDB store is opened by one process at "
            "a time). Stop the gateway to run this on the store; or, while it runs, read its "
            "readings through it (edgewise readings export DEVICE --out FILE.csv, or GET "
            "/v1/devices/DEVICE/readings.csv) and pass that file with --csv where the "
            "command takes one."
        )
    else:
        message = (
            f"DuckDB store {str(path)!r} is in use by another process (pid {pid}); stop it "
            "or use --store postgresql://… for a store that several processes can share."
        )
    return StoreLockedError(message, pid=pid, path=str(path))


def _holder_pid(fd: int) -> str:
    """The pid the lock file's holder wrote in it, ``"unknown"`` if none (yet)."""
    for _ in range(10):  # the holder writes it just after taking the lock
        try:
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        except OSError:
            break
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


def _open_lock(path: Path, lock: Path) -> tuple[int, bool]:
    """Open (make, mode 0600) the lock file ``lock`` of the store ``path``: its descriptor,
    and whether it is open for writing."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | flags, 0o600), True
    except PermissionError:  # made by another user: a read-only descriptor takes a flock too
        try:
            return os.open(lock, os.O_RDONLY | flags), False
        except OSError as exc:
            raise StoreError(
                f"Cannot open DuckDB store {str(path)!r}: its lock file {str(lock)!r} cannot "
                f"be opened ({exc}); it must belong to the user the store's processes run as "
                "(chown it, or remove it while no process has the store open).") from exc
    except OSError as exc:
        raise StoreError(
            f"Cannot open DuckDB store {str(path)!r}: cannot make its lock file "
            f"{str(lock)!r} ({exc}).") from exc


def _take_lock(path: Path) -> int:
    """Take the exclusive ``flock`` on ``<path>.lock`` (made mode 0600; when this process
    is root, given the store's owner) without waiting; its descriptor. The pid of this
    process is written in it (unless the file is another user's, opened read-only).
    Another holder: :class:`StoreLockedError` naming its pid.

    The holder removes the file before it lets go (:func:`_drop_lock`), so a lock taken on
    a file that is no longer at ``<path>.lock`` (removed between this open and this lock)
    is let go and taken again on the file there now."""
    lock = _lock_path(path)
    for _ in range(20):
        fd, writable = _open_lock(path, lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(fd)
            os.close(fd)
            raise _in_use(path, pid) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(
                f"Cannot open DuckDB store {str(path)!r}: cannot lock its lock file "
                f"{str(lock)!r} ({exc}).") from exc
        try:
            here = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            here = False
        if here:
            break
        os.close(fd)  # its holder removed it meanwhile: lock the one there now
    else:  # pragma: no cover - 20 holders in a row opened and closed the store meanwhile
        raise _in_use(path, "unknown")
    if writable:
        try:
            _own_lock_file(fd, path)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as exc:  # the lock is held all the same; only the pid is not told
            log.warning("could not write this process's pid to %s: %s", lock, exc)
    return fd


def _own_lock_file(fd: int, path: Path) -> None:
    """Make the lock file 0600, and (when this process is root and made it) give it the
    owner of the store file, else of its folder, so that the gateway's user can open it."""
    st = os.fstat(fd)
    euid = os.geteuid()
    if st.st_uid == euid and st.st_mode & 0o077:
        os.fchmod(fd, 0o600)
    if euid == 0 and st.st_uid == 0:
        ref = path.stat() if path.exists() else path.parent.stat()
        if ref.st_uid != 0:
            os.fchown(fd, ref.st_uid, ref.st_gid)


def _drop_lock(fd: int, path: Path) -> None:
    """Let go of the lock :func:`_take_lock` took, removing the lock file first (while
    it is held, so no other process holds it then; one that opened it meanwhile sees it
    gone and locks a new one), so a closed store leaves no file beside it."""
    lock = _lock_path(path)
    try:
        if os.path.samestat(os.fstat(fd), os.stat(lock)):
            lock.unlink()
    except OSError:
        pass  # already gone, or a folder this process may not change: left in place
    os.close(fd)  # closing the descriptor drops its flock


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back the transaction ``con`` has open, if it still has one: a failed COMMIT
    has ended it already, and the error to tell is the first one, never the rollback's
    ("cannot rollback - no transaction is active")."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def not_a_duckdb_file(path: Path | str) -> str | None:
    """Why the existing file ``path`` is no DuckDB database (``None``: it is one, or it is
    empty or missing). DuckDB opens a CSV file as a read-only view of it, without an
    error, so a store "opened" there held nothing and what was written to it was lost: a
    purge replaced the file with an empty store, and
    :func:`_connect` refuses it. A DuckDB file has ``DUCK`` at byte 8.

    >>> import tempfile
    >>> csv = Path(tempfile.mkdtemp()) / "pump.csv"
    >>> _ = csv.write_text("time,temp_c")
    >>> not_a_duckdb_file(csv).endswith("is no DuckDB database file: it starts with "
    ...     "'time,temp_c', not DuckDB's header (a CSV or another file given as the store?)")
    True
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None  # missing or unreadable: opening it says why
    if not head or head[8:12] == b"DUCK":
        return None
    return (f"{str(path)!r} is no DuckDB database file: it starts with "
            f"{head.decode('utf-8', 'replace')!r}, not DuckDB's header (a CSV or another "
            "file given as the store?)")


def _connect(path: Path | str, spill: Path | None = None) -> duckdb.DuckDBPyConnection:
    """Open the file, spilling to the private folder ``spill`` (default: the file's own,
    :func:`_private_spill_dir`), turning DuckDB's lock and WAL errors into Edgewise errors."""
    if str(path) != ":memory:" and (why := not_a_duckdb_file(path)):
        raise StoreError(f"Cannot open DuckDB store {str(path)!r}: {why}; it is left as it "
                         "is. Give the store's own file (duckdb:///<data dir>/edgewise.duckdb).")
    if spill is None:
        spill = _private_spill_dir(Path(path))
    try:
        return duckdb.connect(str(path), config={"temp_directory": str(spill)})
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            m = _LOCK_RE.search(text)  # DuckDB's lock, not the lock file's: no gateway's
            raise _in_use(path, m.group(1) if m else "unknown", gateway=False) from exc
        if _is_wal_failure(exc):
            raise _corrupt(path, exc) from exc
        raise StoreError(f"Cannot open DuckDB store {str(path)!r}: {text}") from exc
    except duckdb.Error as exc:
        if _is_wal_failure(exc):
            raise _corrupt(path, exc) from exc
        raise StoreError(f"Cannot open DuckDB store {str(path)!r}: {exc}") from exc


#: ew_meta key written in the transaction that deletes (and at the start of a purge), and
#: absent from the purged copy: a store that opens with it had a purge cut short, and
#: purges at open.
_PURGE_PENDING = "purge_pending"
#: ew_meta key written in the transaction of a retention delete that left its purge for
#: later (``delete_before(purge=False)``), absent from the purged copy. Unlike
#: ``_PURGE_PENDING`` it does not make the open purge: the gateway's hourly retention
#: keeps it set most of the time, so every start (and every CLI command that opens a
#: stopped gateway's store) would rewrite the whole file. It makes
#: :attr:`DuckDBStore.purge_pending` True instead, which the gateway reads at start, so
#: its first retention pass (run at start, in the background) purges.
_RETENTION_UNPURGED = "retention_unpurged"


def _purge_dir_prefix(path: Path) -> str:
    """Prefix of the private folders (next to the file) that a purge writes its copy in."""
    return f".{path.name}.purge-"


def _ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (a store file named ``we"ird.duckdb``).

    >>> _ident('we"ird')
    '"we""ird"'
    """
    return '"' + name.replace('"', '""') + '"'


def _user(uid: int) -> str:
    """A user for a message: name and uid (the uid alone where it has no name)."""
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _owner_of(path: Path) -> os.stat_result:
    """The stat of the store file ``path``, whose owner a purged copy must get; a
    StoreError, before anything is written, when this process cannot give it (it is not
    root and not the file's owner: the copy, made by this process, would take the store
    from its owner, e.g. the gateway's user)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise StoreError(f"Purge of {str(path)!r} failed: cannot stat the file ({exc}).") from exc
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    if euid not in (None, 0, st.st_uid):
        raise StoreError(
            f"Purge of {str(path)!r} refused: the file belongs to {_user(st.st_uid)}, and "
            f"this process runs as {_user(euid)} (not root), so the purged copy could not be "
            "given the file's owner. Run the purge as the file's owner (the gateway's user) "
            "or as root. Nothing was changed."
        )
    return st


def _give_owner(fresh: Path, owner: os.stat_result, url: str) -> None:
    """Give the purged copy ``fresh`` the owner, group and mode of the store file
    (``owner``, its stat), before it replaces it. A group this process may not give
    (it is the owner but not in the group) is left, and the copy gets no group access."""
    mode = stat.S_IMODE(owner.st_mode)
    now = fresh.stat()
    if (now.st_uid, now.st_gid) != (owner.st_uid, owner.st_gid):
        try:
            os.chown(fresh, owner.st_uid, owner.st_gid)
        except OSError as exc:
            if now.st_uid != owner.st_uid:
                raise StoreError(
                    f"Purge of {url!r} failed: the purged copy {str(fresh)!r} cannot be given "
                    f"the store file's owner, {_user(owner.st_uid)} ({exc}); the store file "
                    "was not replaced. Run the purge as that user."
                ) from exc
            mode &= ~0o070
            log.warning("Purge of %s: the purged file keeps group %d, not the store file's "
                        "%d (%s); it gets no group access", url, now.st_gid, owner.st_gid, exc)
    os.chmod(fresh, mode)


class _SwapGate:
    """Readers share it; a purge takes it alone, to swap the database file under them.

    Re-entrant for a reader (a read inside a read does not wait for a purge that waits
    for it). A waiting purge holds new readers back, so a busy dashboard cannot starve it.

    >>> g = _SwapGate()
    >>> with g.shared(), g.shared():
    ...     g._readers
    1
    >>> with g.exclusive():
    ...     g._swapping
    True
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._swapping = False
        self._local = threading.local()

    @contextmanager
    def shared(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._cond:
                while self._swapping:
                    self._cond.wait()
                self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cond:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:  # pragma: no cover - purges run under the write lock
                self._cond.wait()
            self._swapping = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


def _corrupt(path: Path | str, exc: BaseException) -> StoreCorruptError:
    path = Path(path)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = (f"--data-dir {path.parent}" if path.name == "edgewise.duckdb"
             else f"--store duckdb://{path}")
    err = StoreCorruptError(
        f"DuckDB store {str(path)!r} cannot be opened: its write-ahead log "
        f"{str(_wal_path(path))!r} does not replay ({first}). Nothing was deleted. Run "
        f"'edgewise repair {where}': it keeps the log under a new name, replays its intact "
        "part and opens the store; readings only in the damaged part are lost."
    )
    err.path = str(path)  # type: ignore[attr-defined]
    return err


def _make_parent(path: Path) -> None:
    """Make the folder ``path`` goes in (and the folders above it) where missing.

    Raises
    ------
    StoreError
        Naming the path and what is wrong: a part of it is a file, not a folder, or the
        folder cannot be made (no permission, a read-only file system).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((a for a in reversed(path.parents) if a.exists() and not a.is_dir()),
                       path.parent)
        raise StoreError(
            f"DuckDB store {str(path)!r}: {str(blocker)!r} is a file, not a folder, so the "
            "store's folder cannot be made there; give a path under a folder (or one that "
            "can be created)."
        ) from None
    except OSError as exc:
        raise StoreError(
            f"DuckDB store {str(path)!r}: cannot create its folder {str(path.parent)!r}: "
            f"{exc.strerror or exc}; give a path in a folder this user may write to."
        ) from None


#: The most time spans the duplicate check of an append reads (:func:`_time_spans`).
_MAX_SPANS = 8


def _time_spans(ts_ns: np.ndarray, most: int = _MAX_SPANS) -> list[tuple[int, int]]:
    """A batch's times ``ts_ns`` as at most ``most`` disjoint inclusive spans, sorted,
    covering every one of them: split at the widest gaps between them. An append looks
    up which of its keys are stored already in the readings of these spans only, which
    DuckDB's per-row-group min/max of ``ts_ns`` lets it skip the rest of (an OR of
    ranges is pushed down alike): one span from the batch's earliest to its latest time
    read the whole table where one reading was old (a device whose clock reset to
    2000-01-01 among current readings: 10 ms per append became 68-152 ms at 9 million
    rows).

    >>> _time_spans(np.array([50, 5, 51, 10**18, 6]), most=3)
    [(5, 6), (50, 51), (1000000000000000000, 1000000000000000000)]
    >>> _time_spans(np.array([3, 1, 2]))
    [(1, 3)]
    """
    t = np.unique(ts_ns)  # sorted
    gaps = np.diff(t).view(np.uint64)  # exact: a gap of int64 times may pass 2**63
    if len(t) <= 1 or not np.any(gaps > 1):
        return [(int(t[0]), int(t[-1]))]
    # the (at most most - 1) widest gaps between neighbouring times, wider than 1 ns
    wide = np.flatnonzero(gaps > 1)
    if len(wide) >= most:
        wide = wide[np.argsort(gaps[wide], kind="stable")[len(wide) - (most - 1):]]
    ends = np.sort(wide)
    starts = np.concatenate(([0], ends + 1))
    ends = np.concatenate((ends, [len(t) - 1]))
    return [(int(t[a]), int(t[b])) for a, b in zip(starts, ends, strict=True)]


class DuckDBStore(SQLStoreMixin):
    """A :class:`~edgewise.store.base.Store` in one DuckDB file (or in memory).

    Parameters
    ----------
    path
        The database file, or ``":memory:"``. The parent folder is created if missing.

    Raises
    ------
    StoreError
        When another process holds the file open.
    StoreCorruptError
        When DuckDB cannot replay the write-ahead log; run ``edgewise repair``.

    Examples
    --------
    >>> store = DuckDBStore(":memory:")
    >>> store.url
    'duckdb://:memory:'
    >>> store.close()
    """

    #: A device's deletion, and the gateway's retention (at most daily), purge the deleted
    #: rows from the file by default: a rewrite of one file, about 1.5 s per million
    #: readings, during which writers wait (readers only for the swap).
    PURGES_BY_DEFAULT = True

    _ph = "?"
    _db_error = duckdb.Error
    # DuckDB's // on integers truncates toward zero: before 1970 (negative ts_ns) a reading
    # would land in the bucket above its own. Step down one where the remainder is negative,
    # so a bucket is [k*step, (k+1)*step) on both sides of 1970, as in Postgres (exact
    # integers: a float floor would lose nanoseconds at today's ts_ns).
    _quotient = "(ts_ns // {step} - CASE WHEN ts_ns % {step} < 0 THEN 1 ELSE 0 END)"
    # A bucket's mean, exact (see SQLStoreMixin._step_sql): w, a multiple of 8 at or below a
    # reading's binary exponent (log2 may be one off near a power of two: the -1 keeps w
    # at or below it), so value * 2**(52 - w) is an integer below 2**62, exact in a double
    # (a power-of-two scaling of a normal or subnormal double; two factors where one would
    # pass 2**1023) and in BIGINT. DuckDB's pow(2.0, n) is exact for every n in -1074..1023.
    _word = ("CASE WHEN value = 0 THEN 0 "
             "ELSE CAST(floor((floor(log2(abs(value))) - 1) / 8) * 8 AS INTEGER) END")
    _unit = "w - 52"
    _term = ("CAST(CASE WHEN w < -900 THEN value * pow(2.0, 600) * pow(2.0, -548 - w) "
             "ELSE value * pow(2.0, 52 - w) END AS BIGINT)")
    _list_agg = "list"
    # the fast path of a bucket's mean (SQLStoreMixin._scaled_step_sql): readings scaled by
    # one power of two, summed as 128-bit integers (a double's cast to HUGEINT is exact)
    _scaled_int = "HUGEINT"

    #: How long a purge keeps trying to reopen the store's file after the swap (another
    #: program, not an Edgewise one, may have opened it meanwhile) before the store is
    #: left failed: every later call then raises a StoreError that says why.
    REOPEN_TIMEOUT_S = 5.0

    def __init__(self, path: str | os.PathLike[str], *, _held_lock: int | None = None) -> None:
        self.path = str(path)
        self._lock_fd: int | None = None  # the flock on <file>.lock, held until close()
        # _held_lock: that flock, taken already by the caller (repair), who keeps it past
        # this store's close; else the store takes it at open and drops it at close
        self._owns_lock = _held_lock is None
        self._failed: str | None = None  # why the store is unusable (a purge's reopen failed)
        # serialises writers (held for a whole transaction); guards _marks. _seqs (a
        # SeqTracker) guards itself, so seq_gaps/seq_watermark never wait for a commit. For
        # a file, its holder runs with umask 077: the write-ahead log DuckDB makes is 0600
        self._wlock = _WriteLock(private=self.path != ":memory:")
        if self.path == ":memory:":
            self.url = "duckdb://:memory:"
            # no file to spill beside: DuckDB would spill to ./.tmp, 0644 (the folder made
            # here, 0700, is removed at close, or when the store is collected)
            self._spill = Path(tempfile.mkdtemp(prefix="edgewise-duckdb-spill-"))
            weakref.finalize(self, shutil.rmtree, self._spill, ignore_errors=True)
            self._con = _connect(":memory:", self._spill)
            self._setup()
            return
        p = Path(self.path).expanduser().resolve()
        _make_parent(p)
        with _UMASK.held():  # the file and what DuckDB makes while it opens it: 0600
            self.path = str(p)
            self.url = f"duckdb://{p}"
            self._spill = _spill_path(p)
            with _OPEN_LOCK:
                if self.path in _OPEN_FILES:
                    raise StoreError(
                        f"DuckDB store {self.path!r} is already open in this process; share "
                        "that DuckDBStore instead of opening the file twice."
                    )
                _OPEN_FILES.add(self.path)
            locked = False
            try:  # the lock before DuckDB's: held through every purge too
                self._lock_fd = _take_lock(p) if _held_lock is None else _held_lock
                locked = True
                new = not p.exists()
                self._con = _connect(p)
            except BaseException:
                if locked:  # the spill folder is no other store's while the lock is held
                    _remove_spill_dir(self._spill)
                self._release()
                raise
            _remove_purge_leftovers(p)  # the file is ours now: no other process purges it
            if new:  # the fleet's readings: the owner's only (0600 by the umask already)
                make_private(p)
            self._setup()

    def _setup(self) -> None:
        """Set up the store on its open connection ``_con``: schema, caches, a purge an
        earlier crash cut short; on failure the connection is closed and the error says
        which file."""
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cur_lock = threading.Lock()  # guards _cursors (readers take it, not _wlock)
        self._gate = _SwapGate()  # readers share it; purge() swaps the file under it alone
        self._gen = 0  # which connection the cursors belong to: purge() opens a new one
        self._closed = False
        self._seqs = SeqTracker()
        self._marks: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._appends = 0
        # per-device [readings, first_ns, last_ns, {metric: [readings, smallest nonzero
        # size, largest size]}] (_fold_stats): devices() and _mean_plan read it, not the table
        self._stats: dict[str, list[Any]] = {}
        self._stats_lock = threading.Lock()
        self._pending_stats: list[tuple[Any, ...]] = []
        try:
            self._create_schema()
            self._load_stats()
            self._load_watermarks(self._con)
            self._compact_seqs()
            if self._purge_pending():  # a purge was cut short (crash): finish it now
                try:
                    self.purge()
                except StoreError as exc:  # e.g. a full disk: open all the same, and say so
                    if self._failed is not None:  # ... unless the file could not be reopened
                        raise
                    log.warning("%s", exc)
        except BaseException as exc:
            try:
                self._con.close()
            except duckdb.Error:
                pass
            self._drop_spill()  # before the lock goes: the folder is no other store's
            self._release()
            if isinstance(exc, duckdb.Error):  # e.g. a COMMIT refused: what, and which file
                if _is_wal_failure(exc):
                    raise _corrupt(self.path, exc) from exc
                raise StoreError(
                    f"Cannot open DuckDB store {self.path!r}: "
                    f"{str(exc).strip() or type(exc).__name__}") from exc
            raise

    def _release(self) -> None:
        """Forget the file in this process's registry and drop its lock (unless the caller
        that opened the store holds it: that caller drops it)."""
        with _OPEN_LOCK:
            _OPEN_FILES.discard(self.path)
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None and self._owns_lock:
            _drop_lock(fd, Path(self.path))

    def _check_open(self) -> None:
        if self._failed is not None and not self._closed:
            raise StoreError(self._failed)
        super()._check_open()

    # -- setup ------------------------------------------------------------------------------

    def _create_schema(self) -> None:
        con = self._con
        con.execute("BEGIN")
        for stmt in _SCHEMA:
            con.execute(stmt)
        row = con.execute("SELECT value FROM ew_meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            con.execute("INSERT INTO ew_meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        elif row[0] != SCHEMA_VERSION:
            _rollback(con)
            raise StoreError(
                f"DuckDB store {self.path!r} has schema version {row[0]!r}; this Edgewise "
                f"reads version {SCHEMA_VERSION!r}."
            )
        has_counter = con.execute("SELECT count(*) FROM ew_meta WHERE key = ?",
                                  [EVENT_COUNTER]).fetchall()[0][0]
        if not has_counter:  # a new store, or one made before alert events
            con.execute("INSERT INTO ew_meta VALUES (?, '0')", [EVENT_COUNTER])
        has_raised = con.execute("SELECT count(*) FROM ew_meta WHERE key = ?",
                                 [RAISED_COUNTER]).fetchall()[0][0]
        if not has_raised:  # a new store, or one made before alerts were numbered
            con.execute("INSERT INTO ew_meta VALUES (?, '0')", [RAISED_COUNTER])
        has_id = con.execute("SELECT count(*) FROM ew_meta WHERE key = ?",
                             [STORE_ID]).fetchall()[0][0]
        if not has_id:  # a new store, or one made before store ids
            con.execute("INSERT INTO ew_meta VALUES (?, ?)", [STORE_ID, new_store_id()])
        con.execute("COMMIT")

    def _load_stats(self, devices: list[str] | None = None) -> None:
        """(Re)compute per-device totals from the table, for all or some devices."""
        if devices is None:
            fresh: dict[str, list[Any]] = {}
            _fold_stats(fresh, self._con.execute(
                _STATS_SQL + "FROM readings GROUP BY ALL").fetchall())
            with self._stats_lock:
                self._stats = fresh
            return
        rows = self._con.execute(
            _STATS_SQL + "FROM readings WHERE list_contains(?, device_id) GROUP BY ALL",
            [devices],
        ).fetchall()
        with self._stats_lock:
            for d in devices:
                self._stats.pop(d, None)
            _fold_stats(self._stats, rows)

    def _merge_stats(self, rows: list[tuple[Any, ...]]) -> None:
        with self._stats_lock:
            _fold_stats(self._stats, rows)

    def _mean_plan(self, device_ids: Sequence[str], metric: str | None,
                   start_ns: int | None, end_ns: int | None) -> tuple[str, ...]:
        """The statements a bucket-mean query tries (:func:`mean_plan`), from the sizes
        of each key's readings kept in memory: exact where ``[start_ns, end_ns)`` holds
        every reading of the devices, so a query whose one scale is bound to fail (a
        metric of values from 1e-200 to 1e200 among others) skips that statement."""
        with self._stats_lock:
            stats = [st for st in map(self._stats.get, device_ids) if st is not None]
            keys = [(n, small, top) for st in stats for m, (n, small, top) in st[3].items()
                    if metric in (None, m)]
            exact = all((start_ns is None or start_ns <= st[1])
                        and (end_ns is None or st[2] < end_ns) for st in stats)
        return mean_plan(keys, one_key=metric is not None, exact=exact)

    def _compact_seqs(self) -> None:
        """Fold the seqs rows (one per message) of each device that has some into its
        seq_marks row (1..watermark) and its seq_runs rows (the runs above the watermark,
        as the tracker holds them), in one transaction.

        Keeps the seqs table from growing without bound, also for a device that lost a
        message for good (every later seq lies above its watermark: folded into one run,
        not kept one row each); runs at open (which folds a store's rows from before
        runs), at close and every ``COMPACT_EVERY`` appends (the caller holds ``_wlock``,
        which guards ``_marks`` and ``_dirty``, or is opening the store). This process is
        the file's only writer, so its tracker holds every stored seq. A crash in the
        middle rolls it back.
        """
        folded = sorted(self._dirty | set(_marks_to_move(self._seqs, self._marks)))
        if not folded:
            return
        states = {d: self._seqs.state(d) for d in folded}
        con = self._con
        devices = pd.DataFrame({"device_id": folded,
                                "watermark": np.array([states[d][0] for d in folded],
                                                      dtype=np.int64)})
        runs = [(d, lo, hi) for d in folded for lo, hi in states[d][1]]
        spans = pd.DataFrame({"device_id": [d for d, _, _ in runs],
                              "lo": np.array([lo for _, lo, _ in runs], dtype=np.int64),
                              "hi": np.array([hi for _, _, hi in runs], dtype=np.int64)})
        con.register("_ew_marks", devices)
        con.register("_ew_runs", spans)
        try:
            con.execute("BEGIN")
            try:
                con.execute("DELETE FROM seq_marks WHERE device_id IN "
                            "(SELECT device_id FROM _ew_marks)")
                con.execute("INSERT INTO seq_marks SELECT device_id, watermark FROM _ew_marks "
                            "WHERE watermark > 0")
                con.execute("DELETE FROM seq_runs WHERE device_id IN "
                            "(SELECT device_id FROM _ew_marks)")
                con.execute("INSERT INTO seq_runs SELECT device_id, lo, hi FROM _ew_runs")
                con.execute("DELETE FROM seqs USING _ew_marks m WHERE seqs.device_id = "
                            "m.device_id")
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)  # a failed COMMIT ended it: its error is the one raised
                raise
        finally:
            con.unregister("_ew_marks")
            con.unregister("_ew_runs")
        self._marks.update((d, states[d][0]) for d in folded)
        self._dirty.difference_update(folded)

    # -- connections ------------------------------------------------------------------------

    def _reader(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor for queries (DuckDB connections are not shared by threads).

        Use it inside ``with self._gate.shared():`` (as :meth:`_read` does): a purge
        swaps the connection, and the cursors with it, only while no reader holds the gate.
        """
        self._check_open()
        held = getattr(self._local, "cursor", None)
        if held is None or held[0] != self._gen:  # none yet, or one from before a purge
            with self._cur_lock:
                self._check_open()
                cur = self._con.cursor()
                self._cursors.append(cur)
            held = (self._gen, cur)
            self._local.cursor = held
        return held[1]

    # -- writes -----------------------------------------------------------------------------

    def _append_tx(self, p: Prepared) -> tuple[AppendResult, dict[str, set[int]]]:
        """Run one append (``append`` holds ``_wlock``) between BEGIN and COMMIT on the one
        connection, rolling back on any error; then merge the in-memory device stats."""
        self._check_open()
        con = self._con
        con.execute("BEGIN")
        try:
            self._pending_stats = []
            out = self._append_locked(con, p.readings, p.cols, p.seq_sets, p.received_ns)
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        self._merge_stats(self._pending_stats)
        return out

    def _append_locked(
        self,
        con: duckdb.DuckDBPyConnection,
        readings: list[Reading],
        cols: Columns,
        seq_sets: dict[str, set[int]],
        received_ns: int,
    ) -> tuple[AppendResult, dict[str, set[int]]]:
        result = AppendResult()
        if readings:
            n = len(readings)
            batch = pd.DataFrame(
                {
                    "device_id": cols.device_id,
                    "metric": cols.metric,
                    "ts_ns": np.array(cols.ts_ns, dtype=np.int64),
                    "value": np.array(cols.value, dtype=np.float64),
                    "seq": np.array([-1 if q is None else q for q in cols.seq], dtype=np.int64),
                }
            )
            spans = _time_spans(batch["ts_ns"].to_numpy())
            within = " OR ".join(["r.ts_ns BETWEEN ? AND ?"] * len(spans))
            con.register("_ew_batch", batch)
            try:
                rows = con.execute(
                    f"""
                    SELECT r.device_id, r.metric, r.ts_ns, r.value FROM readings r
                    JOIN (SELECT DISTINCT device_id, metric, ts_ns FROM _ew_batch) b
                      ON r.device_id = b.device_id AND r.metric = b.metric
                     AND r.ts_ns = b.ts_ns
                    WHERE {within}
                    """,
                    [t for span in spans for t in span],
                ).fetchall()
            finally:
                con.unregister("_ew_batch")
            existing = {(d, m, t): v for d, m, t, v in rows}
            lookup = partial(self._known_conflicts, con)
            c = classify_batch(readings, existing, received_ns, cols.unique_keys, lookup)
            if c.new:
                new = batch if len(c.new) == n else batch.iloc[c.new]
                con.register("_ew_new", new)
                try:
                    con.execute(
                        "INSERT INTO readings SELECT device_id, metric, ts_ns, value, "
                        "nullif(seq, -1) FROM _ew_new"
                    )
                    self._pending_stats = con.execute(
                        _STATS_SQL + "FROM _ew_new GROUP BY ALL"
                    ).fetchall()
                finally:
                    con.unregister("_ew_new")
            if c.conflicts:
                con.executemany(*insert_conflicts(c.conflicts, "?"))
            result.stored = len(c.new)
            result.stored_positions = list(c.new)
            result.duplicates = c.duplicates
            result.conflicts = len(c.conflicts)
        new_seqs = self._seqs.fresh(seq_sets)
        if new_seqs:
            frame = pd.DataFrame(
                {
                    "device_id": [d for d, s in new_seqs.items() for _ in s],
                    "seq": np.fromiter(
                        (x for s in new_seqs.values() for x in s), dtype=np.int64
                    ),
                }
            )
            con.register("_ew_seqs", frame)
            try:
                con.execute("INSERT INTO seqs SELECT device_id, seq FROM _ew_seqs")
            finally:
                con.unregister("_ew_seqs")
        return result, new_seqs

    @staticmethod
    def _known_conflicts(
        con: duckdb.DuckDBPyConnection, conflicts: list[Conflict]
    ) -> set[tuple[str, str, int, float]]:
        keys = pd.DataFrame(
            {
                "device_id": [x.device_id for x in conflicts],
                "metric": [x.metric for x in conflicts],
                "ts_ns": np.array([x.ts_ns for x in conflicts], dtype=np.int64),
            }
        )
        con.register("_ew_ckeys", keys)
        try:
            rows = con.execute(
                """SELECT c.device_id, c.metric, c.ts_ns, c.new_value FROM conflicts c
                   SEMI JOIN _ew_ckeys k ON c.device_id = k.device_id AND c.metric = k.metric
                   AND c.ts_ns = k.ts_ns"""
            ).fetchall()
        finally:
            con.unregister("_ew_ckeys")
        return {(d, m, t, v) for d, m, t, v in rows}

    def delete_device(self, device_id: str, *, purge: bool = True) -> int:
        """Delete all of a device's readings, seqs, conflicts and alerts; return rows deleted.

        The deleted rows are then purged from the file (:meth:`purge`): when this returns,
        neither the device's id nor its values are left in the database file or its
        write-ahead log. A crash before the purge is done leaves the rows deleted and a
        mark that makes the next open finish the purge. ``purge=False`` leaves the purge
        to one :meth:`purge` call after several deletions (the mark is written all the
        same, so a crash before that call is covered too). A purge that fails (e.g. no
        free disk for the copy) does not undo or fail the committed deletion: a warning
        is logged, :attr:`purge_pending` stays True and the next open or :meth:`purge`
        finishes it.

        >>> from edgewise.telemetry import Reading
        >>> s = DuckDBStore(":memory:")
        >>> _ = s.append([Reading("a", "t", 1, 1.0), Reading("b", "t", 1, 1.0)])
        >>> s.delete_device("a"), s.count_readings()
        (1, 1)
        >>> s.close()
        """
        check_text_args("delete_device", device_id=device_id)
        with self._wlock:
            self._check_open()
            con = self._con
            total = 0
            try:
                con.execute("BEGIN")
                for table in DEVICE_TABLES:
                    row = con.execute(
                        f"DELETE FROM {table} WHERE device_id = ?", [device_id]
                    ).fetchone()
                    if table != TRIMMED:  # a note of a retention cut, no stored row
                        total += int(row[0]) if row else 0
                if total:
                    self._mark_purge_pending(con)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                raise StoreError(f"Deleting device {device_id!r} failed: {exc}") from exc
            self._seqs.forget(device_id)
            self._marks.pop(device_id, None)
            self._dirty.discard(device_id)
            with self._stats_lock:
                self._stats.pop(device_id, None)
            if total and purge:
                try:
                    self.purge()
                except StoreError as exc:  # committed: the caller finishes the deletion
                    log.warning("Device %r was deleted from %s, but its rows' bytes stay "
                                "in the file until a purge succeeds (the next open or "
                                "purge() tries again): %s", device_id, self.url, exc)
            return total

    def delete_before(
        self, ts_ns: int, device_id: str | None = None, *, purge: bool = False
    ) -> int:
        """Retention: delete readings (and conflicts) older than ``ts_ns``, and the alert
        events written before it (:meth:`prune_alert_events`); return readings deleted.

        Seqs and alerts are kept, so a device's watermark does not move back. Each device
        that loses readings gets ``ts_ns`` recorded, in the same transaction, as the cut
        its history was trimmed at (:meth:`trimmed_before`, until :meth:`delete_device`).

        The deleted rows' bytes stay in the file (DuckDB only marks them deleted) until
        :meth:`purge`, which rewrites the whole file: pass ``purge=True`` to do it now, or
        call :meth:`purge` once after several retention passes (the gateway does so once a
        day). Rows deleted and not purged are noted in the file, in the delete's
        transaction: :attr:`purge_pending` says so after a restart too, until a purge
        succeeds.

        >>> from edgewise.telemetry import Reading
        >>> s = DuckDBStore(":memory:")
        >>> _ = s.append([Reading("a", "t", 1, 1.0), Reading("a", "t", 5, 2.0)])
        >>> s.delete_before(3, purge=True), s.count_readings()
        (1, 1)
        >>> s.close()
        """
        where, params = before_where(ts_ns, device_id, "?")
        events, event_params = prune_events_where(ts_ns, device_id, "?")
        with self._wlock:
            self._check_open()
            con = self._con
            try:
                con.execute("BEGIN")
                for sql, trim_params in record_trims(ts_ns, device_id, "?"):
                    con.execute(sql, trim_params)
                row = con.execute(f"DELETE FROM readings WHERE {where}", params).fetchone()
                con.execute(f"DELETE FROM conflicts WHERE {where}", params)
                pruned = con.execute(f"DELETE FROM alert_events WHERE {events}",
                                     event_params).fetchone()
                n = int(row[0]) if row else 0
                gone = n + (int(pruned[0]) if pruned else 0)
                if gone and purge:
                    self._mark_purge_pending(con)
                elif gone and self.PURGES_BY_DEFAULT:  # a later retention pass purges them
                    self._mark_purge_pending(con, _RETENTION_UNPURGED)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                raise StoreError(f"Retention delete in {self.url!r} failed: {exc}") from exc
            if n:
                with self._stats_lock:
                    hit = [d for d, st in self._stats.items()
                           if st[1] < ts_ns and device_id in (None, d)]
                self._load_stats(hit)
            if gone and purge:
                self.purge()
            return n

    def prune_alert_events(self, before_ns: int, device_id: str | None = None) -> int:
        """Delete the alert events written before ``before_ns`` (of ``device_id`` only,
        when given); return how many (see ``Store.prune_alert_events``; retention,
        :meth:`delete_before`, does it with its cut). Their bytes stay in the file until
        the next :meth:`purge`.

        >>> s = DuckDBStore(":memory:")
        >>> a = s.add_alert(Alert("d", 0, 9, 0.9))
        >>> _ = s.acknowledge_alert(a.id, "ops")
        >>> s.prune_alert_events(0), s.prune_alert_events(2**62), s.last_alert_event_id()
        (0, 1, 1)
        >>> s.close()
        """
        where, params = prune_events_where(before_ns, device_id, "?")
        with self._wlock:
            self._check_open()
            con = self._con
            try:
                con.execute("BEGIN")
                row = con.execute(f"DELETE FROM alert_events WHERE {where}", params).fetchone()
                n = int(row[0]) if row else 0
                if n and self.PURGES_BY_DEFAULT:  # a later retention pass purges them
                    self._mark_purge_pending(con, _RETENTION_UNPURGED)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                raise StoreError(
                    f"Pruning the alert events before {before_ns} in {self.url!r} failed: "
                    f"{exc}") from exc
            return n

    # -- purge ------------------------------------------------------------------------------

    def _mark_purge_pending(
        self, con: duckdb.DuckDBPyConnection, key: str = _PURGE_PENDING
    ) -> None:
        """Write a purge mark (in the caller's transaction; not for in-memory stores)."""
        if self.path == ":memory:":
            return
        con.execute("DELETE FROM ew_meta WHERE key = ?", [key])
        con.execute("INSERT INTO ew_meta VALUES (?, '1')", [key])

    def _purge_pending(self, *keys: str) -> bool:
        """Whether one of the marks ``keys`` (default: the one that makes the open purge)
        is in the file."""
        rows = self._con.execute(  # read to the end: a streamed result keeps its transaction
            "SELECT count(*) FROM ew_meta WHERE list_contains(?, key)",
            [list(keys or (_PURGE_PENDING,))]).fetchall()
        return bool(rows and rows[0][0])

    @property
    def purge_pending(self) -> bool:
        """True while rows deleted from this store keep their bytes in its file: a
        device deletion whose purge failed or was left for later (``purge=False``), or a
        retention delete not purged yet; also after a restart, until a purge succeeds.

        >>> import tempfile, pathlib
        >>> from edgewise.telemetry import Reading
        >>> s = DuckDBStore(pathlib.Path(tempfile.mkdtemp()) / "ew.duckdb")
        >>> _ = s.append([Reading("a", "t", 1, 1.0), Reading("a", "t", 5, 2.0)])
        >>> s.delete_before(3), s.purge_pending
        (1, True)
        >>> s.purge(), s.purge_pending
        (True, False)
        >>> s.close()
        """
        if self.path == ":memory:":
            return False
        with self._wlock:
            if self._failed is not None and not self._closed:
                return True  # the purge whose reopen failed is still due
            self._check_open()
            try:
                return self._purge_pending(_PURGE_PENDING, _RETENTION_UNPURGED)
            except duckdb.Error:  # a connection a failed swap left closed: cannot tell
                return True

    def set_aside_logs(self) -> list[Path]:
        """The write-ahead logs :func:`repair` moved aside beside this store (see
        :func:`broken_logs`); ``[]`` for ``:memory:``."""
        return [] if self.path == ":memory:" else broken_logs(self.path)

    def purge(self) -> bool:
        """Rewrite the database file so that deleted rows are gone from the disk; return True.

        DuckDB only marks a deleted row as deleted: its bytes stay in the file (and a
        checkpoint, ``VACUUM`` or ``FORCE CHECKPOINT`` of DuckDB 1.x/2.0 rewrites neither
        the row group nor the blocks it frees). So the live rows are copied into a fresh
        file (``COPY FROM DATABASE``) in a private folder beside the store, which then
        replaces the store's file by one atomic rename, and the store reopens it.

        Writers wait for the whole purge (it holds the write lock); readers in other
        threads go on reading the old file during the copy and wait only for the swap
        (checkpoint, close, rename, reopen: about 0.2 s on a million readings), then read
        the new one. A crash at any point leaves either the old file or the new one: a
        mark written before the copy (and absent from it) makes the next open purge
        again, and leftover copies are removed at open. The cost is a full rewrite (1.0 to
        1.5 s per million readings on a busy 2-core machine) and free disk space for one
        copy of the store, which is why :meth:`delete_device` purges every time but
        retention (:meth:`delete_before`) only when asked.

        Not covered: file-system copies outside the store (backups, snapshots) and the
        disk blocks the old file leaves free (the file system may keep them until reused;
        only full-disk encryption or a secure erase of the device covers those). An
        in-memory store has no file: purge returns True at once.

        >>> import tempfile, pathlib
        >>> from edgewise.telemetry import Reading
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "ew.duckdb"
        >>> s = DuckDBStore(p)
        >>> _ = s.append([Reading("gone", "t", 1, 1.0), Reading("kept", "t", 1, 2.0)])
        >>> s.delete_device("gone")  # purges too
        1
        >>> s.purge(), s.query("kept")
        (True, [('t', 1, 2.0)])
        >>> s.close()
        >>> b"gone" in p.read_bytes()
        False
        """
        with self._wlock:
            self._check_open()
            if self.path == ":memory:":
                return True
            path = Path(self.path)
            owner = _owner_of(path)  # one this process cannot give the copy: refused here
            con = self._con
            try:
                con.execute("BEGIN")
                self._mark_purge_pending(con)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                raise StoreError(f"Purge of {self.url!r} failed: {exc}") from exc
            try:
                work = Path(tempfile.mkdtemp(prefix=_purge_dir_prefix(path), dir=path.parent))
            except OSError as exc:
                raise StoreError(
                    f"Purge of {self.url!r} failed: cannot make a folder for the copy in "
                    f"{str(path.parent)!r} ({exc}). Deleted rows stay deleted, but their "
                    "bytes stay in the file until a purge succeeds; the next open tries "
                    "again, or call purge()."
                ) from exc
            try:
                fresh = work / path.name
                self._copy_live_rows(fresh, owner)
                with self._gate.exclusive():
                    self._swap_in(fresh)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            return True

    def _copy_live_rows(self, fresh: Path, owner: os.stat_result) -> None:
        """Copy every table's live rows into the new file ``fresh``, give it the store
        file's owner, group and mode (``owner``, its stat) and sync it."""
        con = self._con
        (db,) = con.execute("SELECT current_database()").fetchone()  # type: ignore[misc]
        target = str(fresh).replace("'", "''")
        alias = f"ew_purge_{secrets.token_hex(8)}"  # never the store's own name
        try:
            con.execute(f"ATTACH '{target}' AS {alias}")
            try:
                con.execute(f"COPY FROM DATABASE {_ident(db)} TO {alias}")
                con.execute(f"DELETE FROM {alias}.ew_meta WHERE key IN (?, ?)",
                            [_PURGE_PENDING, _RETENTION_UNPURGED])
                con.execute(f"CHECKPOINT {alias}")
            finally:
                con.execute(f"DETACH {alias}")
            if _wal_path(fresh).exists() and _wal_path(fresh).stat().st_size > 0:
                raise duckdb.IOException(f"its log {str(_wal_path(fresh))!r} was not folded in")
        except duckdb.Error as exc:
            # only a failed write may be for want of space; other errors say what they are
            space = (f" (it needs free space for a copy of the store, "
                     f"{owner.st_size / 2**20:.1f} MiB)"
                     if isinstance(exc, duckdb.IOException) else "")
            raise StoreError(
                f"Purge of {self.url!r} failed while copying the live rows to {str(fresh)!r}"
                f"{space}: {exc}. Deleted rows stay deleted, but their bytes stay in the file "
                "until a purge succeeds; the next open tries again, or call purge()."
            ) from exc
        _give_owner(fresh, owner, self.url)
        with open(fresh, "rb+") as fh:
            os.fsync(fh.fileno())

    def _swap_in(self, fresh: Path) -> None:
        """Close every connection, rename ``fresh`` over the store's file and reopen it
        (with ``_wlock`` and the gate held alone; the file's lock, ``<file>.lock``, stays
        held, so no other process opens the file while it is closed)."""
        path = Path(self.path)
        # closed before the checkpoint, not after: no reader is in a query (the gate is
        # ours), but a cursor can still hold a transaction (a result not read to its end),
        # and an UPDATE committed after that transaction began keeps the checkpoint lock
        # until it ends, so the checkpoint failed ("other write transactions active")
        self._close_cursors()
        self._gen += 1  # every thread's cursor is stale now
        try:
            self._con.execute("CHECKPOINT")  # the log folds into the old file, then goes
        except duckdb.Error as exc:
            raise StoreError(f"Purge of {self.url!r} failed at its checkpoint: {exc}") from exc
        self._con.close()
        try:
            wal = _wal_path(path)
            if wal.exists() and wal.stat().st_size > 0:
                # replayed over the new file, it would corrupt it: keep the old file
                raise StoreError(
                    f"Purge of {self.url!r} stopped before the swap: the write-ahead log "
                    f"{str(wal)!r} was not folded in at close. Deleted rows stay deleted, "
                    "but their bytes stay in the file until a purge succeeds; the next open "
                    "tries again."
                )
            try:
                wal.unlink(missing_ok=True)
                os.replace(fresh, path)
            except OSError as exc:
                raise StoreError(
                    f"Purge of {self.url!r} failed: the purged copy {str(fresh)!r} could not "
                    f"replace the store file {str(path)!r} ({exc}). The store keeps its file: "
                    "deleted rows stay deleted, but their bytes stay in it until a purge "
                    "succeeds; the next open tries again."
                ) from exc
            sync_folder(path.parent)
        except BaseException:
            self._reopen(path)  # the old file, the swap not done
            raise
        self._reopen(path)
        if self._purge_pending():
            raise StoreError(
                f"Purge of {self.url!r} reopened the old file instead of the purged copy "
                "(another connection to it was still open); its deleted rows are purged at "
                "the next open."
            )

    def _reopen(self, path: Path) -> None:
        """Open the store's file again after a swap, trying for ``REOPEN_TIMEOUT_S`` (a
        program that ignores the lock file may hold it a moment); failing that, leave the
        store failed: this and every later call raise a StoreError saying why."""
        deadline = time.monotonic() + self.REOPEN_TIMEOUT_S
        delay = 0.02
        while True:
            try:
                self._con = _connect(path)
                return
            except StoreError as exc:
                if time.monotonic() + delay > deadline:
                    self._failed = (
                        f"DuckDB store {self.url!r} is unusable: a purge closed its file "
                        f"{str(path)!r} and could not open it again within "
                        f"{self.REOPEN_TIMEOUT_S:g} s ({exc}). What was committed is in the "
                        "file; restart this process (a gateway: stop and start it) to open "
                        "it again.")
                    log.error("%s", self._failed)
                    raise StoreError(self._failed) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    # -- reads ------------------------------------------------------------------------------

    def _read(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._gate.shared():
            cur = self._reader()
            try:
                return cur.execute(sql, params or []).fetchall()
            except duckdb.Error as exc:
                raise StoreError(f"Query on {self.url!r} failed: {exc}") from exc

    def devices(self) -> list[DeviceSummary]:
        """Summaries of every device that has readings, sorted by id."""
        self._check_open()
        with self._stats_lock:
            items = sorted((d, st[0], st[1], st[2], sorted(st[3]))
                           for d, st in self._stats.items() if st[0] > 0)
        return [DeviceSummary(*item) for item in items]

    def device(self, device_id: str) -> DeviceSummary | None:
        """One device's summary, its entry in :meth:`devices` (``None`` for none), from
        the totals kept in memory for it alone.

        >>> from edgewise.telemetry import Reading
        >>> s = DuckDBStore(":memory:")
        >>> _ = s.append([Reading("a", "t", 5, 1.0), Reading("a", "p", 7, 2.0)])
        >>> s.device("a"), s.device("b")
        (DeviceSummary(device_id='a', readings=2, first_ns=5, last_ns=7, metrics=['p', 't']), None)
        >>> s.close()
        """
        self._check_open()
        if not one_device_id("device", device_id):
            return None
        with self._stats_lock:
            st = self._stats.get(device_id)
            if st is None or st[0] <= 0:
                return None
            return DeviceSummary(device_id, st[0], st[1], st[2], sorted(st[3]))

    def count_readings(self) -> int:
        """Total readings stored."""
        return int(self._read("SELECT count(*) FROM readings")[0][0])

    # -- alerts -----------------------------------------------------------------------------

    def add_alert(self, alert: Alert) -> Alert:
        """Store a new alert; fills ``id`` (when empty) and ``created_ns`` and returns it.
        It takes the next raise number (``raised_seq``) in its transaction.

        An id stored already (a merged alert's too) is refused with a
        :class:`~edgewise.errors.StoreError` naming it, nothing written, as PostgreSQL's
        key refuses it: the table has no key (older stores neither), so it is looked up
        under the write lock, which every writer of this file holds.

        >>> s = DuckDBStore(":memory:")
        >>> _ = s.add_alert(Alert("d", 0, 9, 0.9, id="a1"))
        >>> s.add_alert(Alert("d", 20, 29, 0.9, id="a1"))
        Traceback (most recent call last):
        ...
        edgewise.errors.StoreError: Storing alert for device 'd': an alert with id 'a1' is stored already in 'duckdb://:memory:'; ids are unique. To store a new alert, leave id empty (a new one is made) or give an unused one; to change alert 'a1', use update_alert('a1', ...).
        >>> len(s.list_alerts())
        1
        >>> s.close()
        """  # noqa: E501
        sql, row = insert_alert(alert, "?", raised=True)
        with self._wlock:
            self._check_open()
            con = self._con
            con.execute("BEGIN")
            try:
                if con.execute("SELECT 1 FROM alerts WHERE id = ? LIMIT 1",
                               [alert.id]).fetchone():
                    raise duplicate_alert_error(alert, repr(self.url))
                con.execute(sql, [*row, self._take_raised_seq(con)])
                con.execute("COMMIT")
            except BaseException as exc:
                _rollback(con)  # a failed COMMIT ended the transaction already
                if isinstance(exc, duckdb.Error):
                    raise StoreError(
                        f"Storing alert for {alert.device_id!r} failed: {exc}") from exc
                raise
        return alert

    def update_alert(self, alert_id: str, **changes: Any) -> Alert:
        """Change an alert's ``status``/``label``/``acked_by``/``labelled_by``/``note``/…

        Raises ``KeyError`` for an unknown id.
        """
        update = update_alert_query(alert_id, changes, "?")
        with self._wlock:
            self._check_open()
            con = self._con
            try:
                if update is not None:
                    row = con.execute(*update).fetchone()
                    if not row or int(row[0]) == 0:
                        raise KeyError(alert_id)
                return self._alert_on(con, alert_id)
            except duckdb.Error as exc:  # a StoreError, as every other write's (and PG's)
                raise StoreError(
                    f"Updating alert {alert_id!r} in {self.url!r} failed: {exc}") from exc

    def acknowledge_alert(self, alert_id: str, by: str, **changes: Any) -> tuple[Alert, bool]:
        """Acknowledge a live alert by ``by`` unless it is acknowledged already, with
        ``changes``, in one conditional write; the alert as stored and whether the write
        applied (see ``Store.acknowledge_alert``).

        >>> s = DuckDBStore(":memory:")
        >>> a = s.add_alert(Alert("d", 0, 9, 0.9))
        >>> [(x.acked_by, done) for x, done in (s.acknowledge_alert(a.id, by=n) for n in "ab")]
        [('a', True), ('a', False)]
        >>> s.close()
        """
        sql, params = acknowledge_alert_query(alert_id, by, changes, "?")
        with self._wlock:
            self._check_open()
            con = self._con
            con.execute("BEGIN")
            try:
                before = self._alert_on(con, alert_id)  # KeyError for an unknown id
                row = con.execute(sql, params).fetchall()
                applied = bool(row and int(row[0][0]))
                # read under the write lock: the alert as this write left it
                after = self._alert_on(con, alert_id)
                if applied:  # its events commit with it (the webhooks' outbox)
                    self._write_alert_events(con, before, after, by, changes)
                con.execute("COMMIT")
            except BaseException as exc:
                _rollback(con)  # a failed COMMIT ended the transaction already
                if isinstance(exc, duckdb.Error):
                    raise StoreError(f"Acknowledging alert {alert_id!r} failed: {exc}") from exc
                raise
            return after, applied

    def merge_alert(self, alert_id: str, into: str, **changes: Any) -> Alert:
        """Mark alert ``alert_id`` as part of alert ``into`` and apply ``changes`` to
        ``into``, in one transaction; return ``into`` (see ``Store.merge_alert``).

        >>> s = DuckDBStore(":memory:")
        >>> a = s.add_alert(Alert("d", 0, 9, 0.9))
        >>> b = s.add_alert(Alert("d", 20, 29, 0.9, status="acknowledged", acked_by="ops"))
        >>> m = s.merge_alert(b.id, a.id, end_ns=29)
        >>> (m.end_ns, m.status, m.acked_by), [x.id for x in s.list_alerts()] == [a.id]
        ((29, 'acknowledged', 'ops'), True)
        >>> s.get_alert(b.id).merged_into == a.id
        True
        >>> s.close()
        """
        check_text_args("merge_alert", alert_id=alert_id, into=into)
        with self._wlock:
            self._check_open()
            con = self._con
            con.execute("BEGIN")
            try:
                survivor = self._alert_on(con, into)
                absorbed = self._alert_on(con, alert_id)
                update = update_alert_query(
                    into, merge_changes(survivor, absorbed, changes), "?")
                if update is not None:
                    con.execute(*update)
                # its event commits with it (the webhooks' outbox), read before the mark
                self._write_merge_event(con, absorbed, into)
                con.execute(*mark_merged(alert_id, into, "?"))
                con.execute("COMMIT")
            except BaseException as exc:
                _rollback(con)
                if isinstance(exc, duckdb.Error):
                    raise StoreError(
                        f"Merging alert {alert_id!r} into {into!r} failed: {exc}") from exc
                raise
            return self._alert_on(con, into)

    def get_alert(self, alert_id: str) -> Alert:
        """One alert by id (a merged one too); ``KeyError`` if unknown."""
        check_text_args("get_alert", alert_id=alert_id)
        with self._gate.shared():
            try:
                return self._alert_on(self._reader(), alert_id)
            except duckdb.Error as exc:
                raise StoreError(
                    f"Reading alert {alert_id!r} from {self.url!r} failed: {exc}") from exc

    # -- lifecycle --------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file."""
        with self._wlock:
            self._check_open()
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as exc:
                raise StoreError(f"Checkpoint of {self.url!r} failed: {exc}") from exc

    def _close_cursors(self) -> None:
        """Close every reader thread's cursor (they belong to the connection going away)."""
        with self._cur_lock:
            for cur in self._cursors:
                try:
                    cur.close()
                except duckdb.Error:
                    pass
            self._cursors.clear()

    def close(self) -> None:
        """Checkpoint and close; safe to call twice."""
        with self._wlock:
            if self._closed:
                return
            self._closed = True
            self._close_cursors()
            try:
                if self._failed is None:  # else its connection is closed already
                    self._compact_seqs()
                    self._con.execute("CHECKPOINT")
            except duckdb.Error:
                pass
            finally:
                self._con.close()
                self._drop_spill()  # before the lock goes: the folder is no other store's
                self._release()

    def _drop_spill(self) -> None:
        """Remove the spill folder once the store's connection is closed: an in-memory
        store's own, a file's if DuckDB left it empty."""
        if self.path == ":memory:":
            shutil.rmtree(self._spill, ignore_errors=True)
        else:
            _remove_spill_dir(self._spill)

    def __repr__(self) -> str:
        return f"DuckDBStore({self.path!r})"


def _remove_purge_leftovers(path: Path) -> None:
    """Remove the copy folders of purges that a crash cut short (the store's own file was
    never touched by them)."""
    prefix = _purge_dir_prefix(path)
    try:
        leftovers = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)


# -- repair -----------------------------------------------------------------------------------


@dataclass(slots=True)
class RepairReport:
    """What ``repair`` did to a store.

    ``lost_rows`` is the number of readings that were only in the moved-aside log, or
    ``None`` when that cannot be known (DuckDB cannot read a log it cannot replay).
    """

    path: str
    ok_before: bool
    wal_moved_to: str | None
    wal_bytes: int
    readings_after: int
    lost_rows: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


def broken_logs(path: str | os.PathLike[str]) -> list[Path]:
    """The write-ahead logs :func:`repair` moved aside beside the store at ``path``
    (``<file>.wal.broken-<UTC time>``), oldest first.

    Each holds what the store logged before its crash, readings of devices deleted since
    included: a device's deletion and :meth:`DuckDBStore.purge` do not touch them (only the
    operator knows when one is no longer needed), so ``edgewise device delete`` and
    ``edgewise store purge`` name them.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "ew.duckdb.wal.broken-20260101T000000Z").write_bytes(b"x")
    >>> [p.name for p in broken_logs(d / "ew.duckdb")]
    ['ew.duckdb.wal.broken-20260101T000000Z']
    """
    p = Path(path).expanduser().resolve()  # where repair moved it (it resolves the path)
    prefix = f"{_wal_path(p).name}.broken-"
    try:
        return sorted(f for f in p.parent.iterdir() if f.name.startswith(prefix))
    except OSError:
        return []


def repair(path: str | os.PathLike[str]) -> RepairReport:
    """Make a DuckDB store openable again, keeping its write-ahead log aside.

    If the store opens as it is, nothing changes. Otherwise the log ``<file>.wal`` is renamed
    to ``<file>.wal.broken-<UTC time>`` (never deleted). When DuckDB names the byte where the
    log is corrupt, the intact part before it is replayed (DuckDB keeps only the complete,
    committed transactions of a cut log), so the readings committed before the damage are
    kept. What came after the damage is lost; DuckDB cannot read it, so ``lost_rows`` is
    ``None`` and the message says the number is unknown. The intact part replaces the log
    by one rename, written and synced first: a repair that cannot write it (a full disk)
    changes nothing and raises a StoreError saying so, and one killed midway leaves the
    log whole (run it again), never a copy cut short.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ew.duckdb"
    >>> DuckDBStore(p).close()
    >>> repair(p).ok_before
    True
    """
    p = Path(path).expanduser().resolve()
    wal = _wal_path(p)
    if not p.exists() and not wal.exists():
        raise StoreError(f"No DuckDB store at {str(p)!r} to repair.")
    with _OPEN_LOCK:
        if str(p) in _OPEN_FILES:
            raise StoreError(
                f"DuckDB store {str(p)!r} is open in this process; close that DuckDBStore "
                "before repairing the file (a store that opened needs no repair).")
    # The store's lock, held from before the first open to after the last close: no other
    # process opens the file while its log is moved aside and the intact part replayed
    try:
        fd = _take_lock(p)
    except StoreLockedError as exc:
        raise _repair_in_use(p, exc.pid) from None
    try:
        return _repair_held(p, fd)
    except StoreLockedError as exc:  # DuckDB's own lock: a program that ignores the lock file
        raise _repair_in_use(p, exc.pid, gateway=False) from None
    finally:
        _drop_lock(fd, p)


def _put_intact_part(p: Path, wal: Path, moved: Path, cut: int) -> None:
    """Replace the log ``wal`` of the store ``p`` by its first ``cut`` bytes, keeping the
    whole log as ``moved``; on failure nothing is changed and a StoreError says why."""
    part = wal.with_name(f"{wal.name}.repair-part")
    whole = wal.with_name(f"{wal.name}.repair-whole")
    try:
        out = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(wal, "rb") as src, os.fdopen(out, "wb") as dst:
            left = cut
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise OSError(f"the log ended at {cut - left} bytes, before {cut}")
                dst.write(chunk)
                left -= len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        whole.unlink(missing_ok=True)  # one a crash left
        try:
            os.link(wal, whole)  # the whole log, kept without copying a byte
        except OSError:  # a file system without hard links: a copy
            shutil.copyfile(wal, whole)
            with open(whole, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(whole, moved)
        os.replace(part, wal)
    except OSError as exc:
        part.unlink(missing_ok=True)
        whole.unlink(missing_ok=True)
        if wal.exists() and wal.stat().st_size > cut:  # the log is still whole in its place
            moved.unlink(missing_ok=True)
        raise StoreError(
            f"Repair of {p} could not put the intact part of its write-ahead log "
            f"({cut} bytes) in place of the log {str(wal)!r}: "
            f"{exc.strerror or exc} ({getattr(exc, 'filename', None) or part}). Nothing was "
            f"changed; free disk space in {str(p.parent)!r} and run the repair again."
        ) from exc
    sync_folder(p.parent)


def _repair_in_use(path: Path, pid: str, *, gateway: bool = True) -> StoreLockedError:
    """The refusal of ``repair`` on a store another process (``pid``) holds: stop it and
    repair then (the general refusal's advice, reading through a gateway and --csv or a
    PostgreSQL store, does not help a repair)."""
    if gateway and _gateway_on(path.parent):
        message = (
            f"DuckDB store {str(path)!r} is in use: a gateway (pid {pid}) runs on data dir "
            f"{str(path.parent)!r} and holds it, so the store opened (its write-ahead log "
            "replayed) and needs no repair while it runs. Stop the gateway to repair the "
            "store, e.g. when the gateway does not start again on it."
        )
    else:
        message = (
            f"DuckDB store {str(path)!r} is in use by another process (pid {pid}); repair "
            "needs the store to itself: stop that process, then run the repair again."
        )
    return StoreLockedError(message, pid=pid, path=str(path))


def _repair_held(p: Path, fd: int) -> RepairReport:
    """:func:`repair` of the store at ``p`` while this process holds its lock (``fd``)."""
    wal = _wal_path(p)
    try:
        store = DuckDBStore(p, _held_lock=fd)
    except StoreCorruptError as exc:
        cause = str(exc.__cause__ or exc)
    else:
        n = store.count_readings()
        store.close()
        return RepairReport(str(p), True, None, 0, n, 0,
                            f"{p} opens cleanly ({n} readings); nothing to repair.")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved = wal.with_name(f"{wal.name}.broken-{stamp}")
    size = wal.stat().st_size if wal.exists() else 0
    m = re.search(r"byte position (\d+)", cause)
    cut = int(m.group(1)) if m else None
    replay = wal.exists() and cut is not None and 0 < cut < size
    if replay and cut is not None:
        # The log stays whole in its place until its intact part, written and synced
        # beside it, replaces it by one rename (the whole log kept by a second link):
        # a crash or a full disk midway leaves the log as it was, never a copy cut short,
        # whose tail DuckDB would drop without a word at the next open
        _put_intact_part(p, wal, moved, cut)
    elif wal.exists():
        os.replace(wal, moved)
        sync_folder(p.parent)
    if moved.exists():
        make_private(moved)  # a log an older version made 0644: it holds readings
    kept_note = "nothing of it could be replayed"
    store = None
    if replay:
        try:
            store = DuckDBStore(p, _held_lock=fd)
            kept_note = (f"its first {cut} bytes (the transactions committed before the damage) "
                         "were replayed")
        except StoreLockedError:
            raise
        except StoreError:
            wal.unlink(missing_ok=True)
            store = None
    if store is None:
        store = DuckDBStore(p, _held_lock=fd)
    n = store.count_readings()
    store.close()
    return RepairReport(
        str(p), False, str(moved), size, n, None,
        f"The write-ahead log of {p} did not replay ({cause.splitlines()[0][:300]}). It is kept "
        f"as {moved} ({size} bytes); {kept_note}. The store opens with {n} readings. How many "
        "readings were only in the unreadable part of the log is unknown (DuckDB cannot read "
        "it); devices that keep unacknowledged messages resend the ones above the recomputed "
        f"seq watermark. The kept log holds the readings it logged until it is removed (rm -- "
        f"{shlex.quote(str(moved))}): deleting a device or purging the store does not reach it.",
    )
