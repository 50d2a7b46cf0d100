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

Queries from other threads use their own cursors, so a slow dashboard query does not hold
up ingestion.

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

import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from edgewise._private import make_private
from edgewise.errors import StoreCorruptError, StoreError
from edgewise.store._batch import Columns, Prepared, SeqTracker, classify_batch
from edgewise.store._sql import (
    DEVICE_TABLES,
    SQLStoreMixin,
    _marks_to_move,
    acknowledge_alert_query,
    before_where,
    insert_alert,
    insert_conflicts,
    mark_merged,
    merge_changes,
    update_alert_query,
)
from edgewise.store.base import Alert, AppendResult, Conflict, DeviceSummary
from edgewise.telemetry import Reading

__all__ = ["DuckDBStore", "RepairReport", "repair"]

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
    """CREATE TABLE IF NOT EXISTS conflicts (
        device_id VARCHAR NOT NULL, metric VARCHAR NOT NULL, ts_ns BIGINT NOT NULL,
        stored_value DOUBLE NOT NULL, new_value DOUBLE NOT NULL, seq BIGINT,
        received_ns BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alerts (
        id VARCHAR NOT NULL, device_id VARCHAR NOT NULL, start_ns BIGINT NOT NULL,
        end_ns BIGINT NOT NULL, score DOUBLE NOT NULL, kind VARCHAR NOT NULL,
        drivers VARCHAR NOT NULL, message VARCHAR NOT NULL, created_ns BIGINT NOT NULL,
        status VARCHAR NOT NULL, label VARCHAR, acked_by VARCHAR, labelled_by VARCHAR,
        note VARCHAR, merged_into VARCHAR)""",
    # stores made before alerts could be merged: the column is added (NULL: every alert
    # live), at the end, where new tables have it too
    """ALTER TABLE alerts ADD COLUMN IF NOT EXISTS merged_into VARCHAR""",
]

_STATS_SQL = "SELECT device_id, count(*), min(ts_ns), max(ts_ns), list(DISTINCT metric) "

_LOCK_RE = re.compile(r"PID (\d+)")

# Files open in this process: a second DuckDBStore on one file would dedup against its own
# cache and lock only, so two of them could store one key twice. One instance per file.
_OPEN_FILES: set[str] = set()
_OPEN_LOCK = threading.Lock()


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _is_wal_failure(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "wal" in text and ("replay" in text or "checkpoint" in text)


def _connect(path: Path | str) -> duckdb.DuckDBPyConnection:
    """Open the file, turning DuckDB's lock and WAL errors into Edgewise errors."""
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            m = _LOCK_RE.search(text)
            pid = m.group(1) if m else "unknown"
            raise StoreError(
                f"DuckDB store {str(path)!r} is in use by another process (pid {pid}); stop it "
                "or use --store postgresql://… for a store that several processes can share."
            ) from exc
        if _is_wal_failure(exc):
            raise _corrupt(path, exc) from exc
        raise StoreError(f"Cannot open DuckDB store {str(path)!r}: {text}") from exc
    except duckdb.Error as exc:
        if _is_wal_failure(exc):
            raise _corrupt(path, exc) from exc
        raise StoreError(f"Cannot open DuckDB store {str(path)!r}: {exc}") from exc


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

    _ph = "?"
    _db_error = duckdb.Error
    # DuckDB's // on integers truncates toward zero: before 1970 (negative ts_ns) a reading
    # would land in the bucket above its own. Step down one where the remainder is negative,
    # so a bucket is [k*step, (k+1)*step) on both sides of 1970, as in Postgres (exact
    # integers: a float floor would lose nanoseconds at today's ts_ns).
    _bucket = "(ts_ns // {step} - CASE WHEN ts_ns % {step} < 0 THEN 1 ELSE 0 END) * {step}"
    # summed at 2**-64 scale and scaled back: exact (a power of two) for every reading above
    # 1e-289 in size, and no overflow where the plain sum would pass 1.8e308
    _mean = f"sum(value * {2.0**-64!r}) / count(value) * {2.0**64!r}"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if self.path == ":memory:":
            self.url = "duckdb://:memory:"
            target: str | Path = ":memory:"
        else:
            p = Path(self.path).expanduser().resolve()
            p.parent.mkdir(parents=True, exist_ok=True)
            self.path = str(p)
            self.url = f"duckdb://{p}"
            target = p
            with _OPEN_LOCK:
                if self.path in _OPEN_FILES:
                    raise StoreError(
                        f"DuckDB store {self.path!r} is already open in this process; share "
                        "that DuckDBStore instead of opening the file twice."
                    )
                _OPEN_FILES.add(self.path)
        new = target != ":memory:" and not Path(target).exists()
        try:
            self._con = _connect(target)
        except BaseException:
            self._release()
            raise
        if new:  # the fleet's readings: the owner's only, whatever the directory's mode
            make_private(target)
        self._wlock = threading.RLock()  # serialises writers; guards _seqs and the cursors list
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._closed = False
        self._seqs = SeqTracker()
        self._marks: dict[str, int] = {}
        self._appends = 0
        # per-device [readings, first_ns, last_ns, metrics]: devices() reads this, not the table
        self._stats: dict[str, list[Any]] = {}
        self._stats_lock = threading.Lock()
        self._pending_stats: list[tuple[Any, ...]] = []
        try:
            self._create_schema()
            self._load_stats()
            self._load_watermarks(self._con)
            self._compact_seqs()
        except BaseException:
            self._con.close()
            self._release()
            raise

    def _release(self) -> None:
        with _OPEN_LOCK:
            _OPEN_FILES.discard(self.path)

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
            con.execute("ROLLBACK")
            raise StoreError(
                f"DuckDB store {self.path!r} has schema version {row[0]!r}; this Edgewise "
                f"reads version {SCHEMA_VERSION!r}."
            )
        con.execute("COMMIT")

    def _load_stats(self, devices: list[str] | None = None) -> None:
        """(Re)compute per-device totals from the table, for all or some devices."""
        if devices is None:
            rows = self._con.execute(_STATS_SQL + "FROM readings GROUP BY ALL").fetchall()
            fresh = {d: [int(n), int(lo), int(hi), set(ms)] for d, n, lo, hi, ms in rows}
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
            for d, n, lo, hi, ms in rows:
                self._stats[d] = [int(n), int(lo), int(hi), set(ms)]

    def _merge_stats(self, rows: list[tuple[Any, ...]]) -> None:
        with self._stats_lock:
            for d, n, lo, hi, ms in rows:
                st = self._stats.get(d)
                if st is None:
                    self._stats[d] = [int(n), int(lo), int(hi), set(ms)]
                else:
                    st[0] += int(n)
                    st[1] = min(st[1], int(lo))
                    st[2] = max(st[2], int(hi))
                    st[3].update(ms)

    def _compact_seqs(self) -> None:
        """Fold each device's stored seqs 1..watermark into one seq_marks row (one transaction).

        Keeps the seqs table (one row per message) from growing without bound; runs at open,
        at close and every ``COMPACT_EVERY`` appends. A crash in the middle rolls it back.
        """
        moved = _marks_to_move(self._seqs, self._marks)
        if not moved:
            return
        con = self._con
        frame = pd.DataFrame({"device_id": list(moved),
                              "watermark": np.array(list(moved.values()), dtype=np.int64)})
        con.register("_ew_marks", frame)
        try:
            con.execute("BEGIN")
            try:
                con.execute("DELETE FROM seq_marks WHERE device_id IN "
                            "(SELECT device_id FROM _ew_marks)")
                con.execute("INSERT INTO seq_marks SELECT device_id, watermark FROM _ew_marks")
                con.execute("DELETE FROM seqs USING _ew_marks m WHERE seqs.device_id = "
                            "m.device_id AND seqs.seq <= m.watermark")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.unregister("_ew_marks")
        self._marks.update(moved)

    # -- connections ------------------------------------------------------------------------

    def _reader(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor for queries (DuckDB connections are not shared by threads)."""
        self._check_open()
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._wlock:
                self._check_open()
                cur = self._con.cursor()
                self._cursors.append(cur)
            self._local.cursor = cur
        return cur

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
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:
                pass
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
            lo, hi = int(batch["ts_ns"].min()), int(batch["ts_ns"].max())
            con.register("_ew_batch", batch)
            try:
                rows = con.execute(
                    """
                    SELECT r.device_id, r.metric, r.ts_ns, r.value FROM readings r
                    JOIN (SELECT DISTINCT device_id, metric, ts_ns FROM _ew_batch) b
                      ON r.device_id = b.device_id AND r.metric = b.metric
                     AND r.ts_ns = b.ts_ns
                    WHERE r.ts_ns BETWEEN ? AND ?
                    """,
                    [lo, hi],
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

    def delete_device(self, device_id: str) -> int:
        """Delete all of a device's readings, seqs, conflicts and alerts; return rows deleted.

        >>> from edgewise.telemetry import Reading
        >>> s = DuckDBStore(":memory:")
        >>> _ = s.append([Reading("a", "t", 1, 1.0), Reading("b", "t", 1, 1.0)])
        >>> s.delete_device("a"), s.count_readings()
        (1, 1)
        >>> s.close()
        """
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
                    total += int(row[0]) if row else 0
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise StoreError(f"Deleting device {device_id!r} failed: {exc}") from exc
            self._seqs.forget(device_id)
            self._marks.pop(device_id, None)
            with self._stats_lock:
                self._stats.pop(device_id, None)
            return total

    def delete_before(self, ts_ns: int, device_id: str | None = None) -> int:
        """Retention: delete readings (and conflicts) older than ``ts_ns``; return readings deleted.

        Seqs are kept, so a device's watermark does not move back.
        """
        where, params = before_where(ts_ns, device_id, "?")
        with self._wlock:
            self._check_open()
            con = self._con
            try:
                con.execute("BEGIN")
                row = con.execute(f"DELETE FROM readings WHERE {where}", params).fetchone()
                con.execute(f"DELETE FROM conflicts WHERE {where}", params)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise StoreError(f"Retention delete in {self.url!r} failed: {exc}") from exc
            n = int(row[0]) if row else 0
            if n:
                with self._stats_lock:
                    hit = [d for d, st in self._stats.items()
                           if st[1] < ts_ns and device_id in (None, d)]
                self._load_stats(hit)
            return n

    # -- reads ------------------------------------------------------------------------------

    def _read(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
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

    def count_readings(self) -> int:
        """Total readings stored."""
        return int(self._read("SELECT count(*) FROM readings")[0][0])

    # -- alerts -----------------------------------------------------------------------------

    def add_alert(self, alert: Alert) -> Alert:
        """Store a new alert; fills ``id`` (when empty) and ``created_ns`` and returns it."""
        sql, row = insert_alert(alert, "?")
        with self._wlock:
            self._check_open()
            try:
                self._con.execute(sql, row)
            except duckdb.Error as exc:
                raise StoreError(f"Storing alert for {alert.device_id!r} failed: {exc}") from exc
        return alert

    def update_alert(self, alert_id: str, **changes: Any) -> Alert:
        """Change an alert's ``status``/``label``/``acked_by``/``labelled_by``/``note``/…

        Raises ``KeyError`` for an unknown id.
        """
        update = update_alert_query(alert_id, changes, "?")
        with self._wlock:
            self._check_open()
            con = self._con
            if update is not None:
                row = con.execute(*update).fetchone()
                if not row or int(row[0]) == 0:
                    raise KeyError(alert_id)
            return self._alert_on(con, alert_id)

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
            try:
                row = con.execute(sql, params).fetchone()
            except duckdb.Error as exc:
                raise StoreError(f"Acknowledging alert {alert_id!r} failed: {exc}") from exc
            # read under the write lock: the alert as this write left it
            return self._alert_on(con, alert_id), bool(row and int(row[0]))

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
                con.execute(*mark_merged(alert_id, into, "?"))
                con.execute("COMMIT")
            except BaseException as exc:
                con.execute("ROLLBACK")
                if isinstance(exc, duckdb.Error):
                    raise StoreError(
                        f"Merging alert {alert_id!r} into {into!r} failed: {exc}") from exc
                raise
            return self._alert_on(con, into)

    def get_alert(self, alert_id: str) -> Alert:
        """One alert by id (a merged one too); ``KeyError`` if unknown."""
        return self._alert_on(self._reader(), alert_id)

    # -- lifecycle --------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file."""
        with self._wlock:
            self._check_open()
            self._con.execute("CHECKPOINT")

    def close(self) -> None:
        """Checkpoint and close; safe to call twice."""
        with self._wlock:
            if self._closed:
                return
            self._closed = True
            for cur in self._cursors:
                try:
                    cur.close()
                except duckdb.Error:
                    pass
            self._cursors.clear()
            try:
                self._compact_seqs()
                self._con.execute("CHECKPOINT")
            except duckdb.Error:
                pass
            finally:
                self._con.close()
                self._release()

    def __repr__(self) -> str:
        return f"DuckDBStore({self.path!r})"


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


def repair(path: str | os.PathLike[str]) -> RepairReport:
    """Make a DuckDB store openable again, keeping its write-ahead log aside.

    If the store opens as it is, nothing changes. Otherwise the log ``<file>.wal`` is renamed
    to ``<file>.wal.broken-<UTC time>`` (never deleted). When DuckDB names the byte where the
    log is corrupt, the intact part before it is replayed (DuckDB keeps only the complete,
    committed transactions of a cut log), so the readings committed before the damage are
    kept. What came after the damage is lost; DuckDB cannot read it, so ``lost_rows`` is
    ``None`` and the message says the number is unknown.

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
    try:
        store = DuckDBStore(p)
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
    if wal.exists():
        os.replace(wal, moved)
    m = re.search(r"byte position (\d+)", cause)
    cut = int(m.group(1)) if m else None
    kept_note = "nothing of it could be replayed"
    store = None
    if cut is not None and 0 < cut < size:
        with open(moved, "rb") as src, open(wal, "wb") as dst:
            dst.write(src.read(cut))
            dst.flush()
            os.fsync(dst.fileno())
        try:
            store = DuckDBStore(p)
            kept_note = (f"its first {cut} bytes (the transactions committed before the damage) "
                         "were replayed")
        except StoreError:
            wal.unlink(missing_ok=True)
            store = None
    if store is None:
        store = DuckDBStore(p)
    n = store.count_readings()
    store.close()
    return RepairReport(
        str(p), False, str(moved), size, n, None,
        f"The write-ahead log of {p} did not replay ({cause.splitlines()[0][:300]}). It is kept "
        f"as {moved} ({size} bytes); {kept_note}. The store opens with {n} readings. How many "
        "readings were only in the unreadable part of the log is unknown (DuckDB cannot read "
        "it); devices that keep unacknowledged messages resend the ones above the recomputed "
        "seq watermark.",
    )
