"""Labels on time windows of a device: versioned, audit-logged, snapshot-able.

A label says what a person (or a rule) decided about one window ``[start_ns, end_ns)``
of one device: ``"normal"``, ``"anomaly"`` or a fault class such as ``"bearing_wear"``.
Labels live in one SQLite file, ``<data dir>/labels.sqlite`` (WAL mode), so the CLI can
import labels while ``edgewise serve`` runs in another process.

* Nothing is overwritten. Labelling the same window again adds a new *version* and marks
  the old one superseded; :meth:`LabelStore.history` shows every version.
* A label may name its ``source``, e.g. ``"alert:<id>"`` for the verdict on an alert. A
  new label from a source supersedes that source's current label even when its window
  differs (an alert's span grows while it stays open), so only the newest verdict counts.
* Every write is audit-logged through :meth:`edgewise.security.Security.audit` when the
  store is given a ``Security``: who labelled which window how, and of the note only its
  length (:func:`note_digest`), since the log outlives a device's deletion.
* A device's deletion (:meth:`LabelStore.delete_device`) is counted
  (:meth:`LabelStore.deletions`): work on its data begun before passes the count it noted
  as ``since`` to its writes, which then leave nothing for an id whose data is gone
  (labels and model files are refused with :class:`DeviceDeletedError`; the query mix's
  state is not saved).
* :meth:`LabelStore.snapshot_id` names the current label set. A model records it, and
  :meth:`LabelStore.labels_at` gives back exactly the labels it was trained with.

>>> import tempfile, pathlib
>>> store = LabelStore(pathlib.Path(tempfile.mkdtemp()))
>>> a = store.add("pump-1", 0, 60_000_000_000, "anomaly", who="ana")
>>> b = store.add("pump-1", 0, 60_000_000_000, "normal", who="ben", note="was a test run")
>>> (b.version, b.label, len(store.labels()), len(store.history("pump-1")))
(2, 'normal', 1, 2)
>>> snap = store.snapshot_id()
>>> [lab.label for lab in store.labels_at(snap)]
['normal']
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgewise._private import make_private, replace_atomically
from edgewise._sqlite import FileBusyError, is_busy
from edgewise.errors import InvalidParameterError, PayloadError
from edgewise.tables import read_text, separator
from edgewise.telemetry import DEFAULT_MAX_FUTURE_S, parse_time_text, validate_device_id

if TYPE_CHECKING:
    from edgewise.security import Security

__all__ = ["LABEL_RE", "VERDICT_LABELS", "Deletions", "DeviceDeletedError", "DeviceDeletion",
           "HeldLabels", "Label", "LabelStore", "LabelsBusyError", "check_label",
           "deleted_devices", "is_anomalous", "labels_csv", "note_digest", "read_labels_csv",
           "read_labels_csv_lines"]

_ANY = object()  # save_mix_state: no state expected, write whatever is stored

#: Allowed label values: ``normal``, ``anomaly`` or a fault class name. ``\Z``, not ``$``:
#: ``$`` also matches before a trailing newline, and ``"normal\n"`` is not ``"normal"``.
LABEL_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}\Z")
_LABEL_ALLOWED = (
    "'normal', 'anomaly' or a fault class: 1-64 lowercase letters, digits, '_', '.', '-', "
    "starting with a letter"
)

#: An alert's verdicts (``POST /v1/alerts/{id}/label``), which are no window labels: the
#: alert route writes ``normal`` for a false alarm and ``anomaly`` for a true one over the
#: alert's span (source ``alert:<id>``), as the gateway does again when the span grows
#: (:mod:`edgewise.gateway.label_sync`); a ``false_alarm`` taken as a fault class would
#: teach the model that the window is faulty.
VERDICT_LABELS = {"false_alarm": "normal", "true_alarm": "anomaly"}
_VERDICTS = VERDICT_LABELS

#: The query mix's state per device, beside ``labels.sqlite`` (see ``save_mix_state``).
_MIX_FILE = "label-mix.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    label TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    who TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    version INTEGER NOT NULL,
    current INTEGER NOT NULL DEFAULT 1,
    source TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS labels_window ON labels (device_id, start_ns, end_ns, current);
CREATE TABLE IF NOT EXISTS snapshots (
    snapshot_id TEXT PRIMARY KEY,
    created_ns INTEGER NOT NULL,
    label_ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deletions (
    device_digest TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
"""


def check_label(label: object, what: str = "The 'label' of a label") -> None:
    """Raise :class:`InvalidParameterError` unless ``label`` is a window label value
    (:data:`LABEL_RE`: ``normal``, ``anomaly`` or a fault class) and no alert verdict
    (``false_alarm``, ``true_alarm``, which a fault class would misread). ``what`` names
    the value in the message.

    >>> check_label("bearing_wear")
    >>> try:
    ...     check_label("Normal")
    ... except InvalidParameterError as exc:
    ...     print(exc.field, exc.value)
    label Normal
    """
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise InvalidParameterError(
            f"{what} must be {_LABEL_ALLOWED}. Got {label!r} instead.",
            field="label", value=label,
        )
    if label in _VERDICTS:
        raise InvalidParameterError(
            f"{what} must be {_LABEL_ALLOWED}, not an alert's verdict: use 'normal' for a "
            f"false alarm, 'anomaly' for a true one. Got {label!r} instead (it would be "
            "taken as a fault class).", field="label", value=label,
        )


def is_anomalous(label: str) -> bool:
    """Whether a label value marks the window as not normal (``anomaly`` or a fault class).

    >>> is_anomalous("normal"), is_anomalous("anomaly"), is_anomalous("cavitation")
    (False, True, True)
    """
    return label != "normal"


@dataclass(frozen=True, slots=True)
class Label:
    """One version of a label on the window ``[start_ns, end_ns)`` of a device.

    ``source`` is what wrote it when that was not a person's own window (``"alert:<id>"``:
    the verdict on that alert), else ``""``.
    """

    id: int
    device_id: str
    start_ns: int
    end_ns: int
    label: str
    note: str
    who: str
    created_ns: int
    version: int
    current: bool
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _row(r: Sequence[Any]) -> Label:
    # a verdict word stored before they were refused (``label add ... false_alarm``) is read
    # as the window label it means: taken as a fault class, ``false_alarm`` taught "faulty"
    return Label(int(r[0]), r[1], int(r[2]), int(r[3]), _VERDICTS.get(r[4], r[4]), r[5], r[6],
                 int(r[7]), int(r[8]), bool(r[9]), r[10])


_COLS = ("id, device_id, start_ns, end_ns, label, note, who, created_ns, version, current, "
         "source")
#: How the alert route wrote its verdicts' notes before labels had a ``source``.
_ALERT_NOTE_RE = re.compile(r"alert (\S+) labelled (?:true_alarm|false_alarm)(?::|\Z)")


def _add_source_column(db: sqlite3.Connection) -> None:
    """Give a label file written before labels had a ``source`` its column, and name the
    alert of each verdict the alert route wrote then (its note begins ``alert <id>
    labelled``), so relabelling that alert supersedes it."""
    index = "CREATE INDEX IF NOT EXISTS labels_source ON labels (device_id, source, current)"
    if "source" in {r[1] for r in db.execute("PRAGMA table_info(labels)")}:
        db.execute(index)
        return
    cur = db.cursor()
    cur.execute("BEGIN IMMEDIATE")  # another process may be opening the same file
    try:
        if "source" not in {r[1] for r in cur.execute("PRAGMA table_info(labels)")}:
            cur.execute("ALTER TABLE labels ADD COLUMN source TEXT NOT NULL DEFAULT ''")
            rows = cur.execute("SELECT id, note FROM labels WHERE who LIKE 'token:%' "
                               "AND note LIKE 'alert %'").fetchall()
            for row_id, note in rows:
                m = _ALERT_NOTE_RE.match(note)
                if m:
                    cur.execute("UPDATE labels SET source=? WHERE id=?",
                                (f"alert:{m.group(1)}", row_id))
        cur.execute(index)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise


class LabelStore:
    """The labels of one Edgewise data directory.

    Parameters
    ----------
    data_dir
        Directory holding ``labels.sqlite``; created if missing.
    security
        When given, every write is recorded in its audit log (action ``label.add``; of
        the note, only its length: :func:`note_digest`).
    timeout_s
        How long a write waits for another writer of the file (another process: ``edgewise
        label import``) before it raises :class:`LabelsBusyError` naming the file.
    """

    def __init__(self, data_dir: Path | str, *, security: Security | None = None,
                 timeout_s: float = 10.0) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # as the gateway's
        self.path = self.data_dir / "labels.sqlite"
        self.security = security
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None
        )
        # 0600 before the WAL exists: SQLite gives it this mode; and the query mix's
        # state, which an older version wrote 0644
        make_private(self.path, self.data_dir / _MIX_FILE)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # a deleted label's bytes are overwritten with zeros, not left in a free page
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        _add_source_column(self._db)

    # -- writing ---------------------------------------------------------------------------
    @staticmethod
    def _check(device_id: str, start_ns: int, end_ns: int, label: str) -> None:
        try:
            validate_device_id(device_id)
        except ValueError:
            raise InvalidParameterError(
                f"The 'device_id' of a label must be 1-64 letters, digits, '_', '.', '-', "
                f"starting with a letter or digit. Got {device_id!r} instead.",
                field="device_id", value=device_id,
            ) from None
        for name, v in (("start_ns", start_ns), ("end_ns", end_ns)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
                raise InvalidParameterError(
                    f"The {name!r} of a label must be an int of UTC nanoseconds from 1970 to "
                    f"2262 (0 <= t < 2**63). Got {v!r} instead.", field=name, value=v,
                )
        if end_ns <= start_ns:
            raise InvalidParameterError(
                f"A label's window [start_ns, end_ns) must end after it starts (the end is "
                f"exclusive): the label of the single reading at t is [t, t + 1 ns), so "
                f"give end_ns = start_ns + 1 for it. Got start_ns={start_ns}, "
                f"end_ns={end_ns} instead.", field="end_ns", value=end_ns,
            )
        check_label(label)

    def add(
        self,
        device_id: str,
        start_ns: int,
        end_ns: int,
        label: str,
        *,
        who: str = "cli",
        note: str = "",
        created_ns: int | None = None,
        source: str = "",
        supersedes: Iterable[str] = (),
        check: Callable[[], None] | None = None,
        since: Deletions | None = None,
    ) -> Label:
        """Label a window; relabelling the same window adds a new version. The same label
        and note again (a CSV imported twice) add none: the current label is returned as it
        is, so the snapshot id does not move.

        A ``source`` (e.g. ``"alert:<id>"``) also supersedes the current label of the same
        device and source whatever its window, and continues its versions: the verdict on
        an alert whose span grew replaces the earlier verdict instead of standing beside it.
        ``supersedes`` names more sources whose current labels of the device the new one
        replaces, in the same transaction (the alerts merged into the one labelled now).
        The same answer again adds none here too once none of them has a current label
        (the alert route repeats a surviving alert's verdict with the alerts it absorbed).

        ``check``, when given, is called holding the file's write lock, just before the
        label is written: what must still be true when it is (the labels route: that the
        device still exists, as a device's deletion deletes its labels under the same lock,
        so a label checked, then written after the deletion, is not left for an id whose
        data is gone). What it raises propagates, and nothing is written.

        ``since``, the :meth:`deletions` noted when the caller began (before it checked the
        device), refuses the label, under the same lock, when the device was deleted
        (:meth:`delete_device`) after: :class:`DeviceDeletedError`, nothing written.

        Returns the stored :class:`Label`. Raises :class:`InvalidParameterError` for a bad
        device id, window or label value (nothing is written then).

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     _ = labels.add("pump-1", 0, 10, "anomaly", source="alert:a1")
        ...     lab = labels.add("pump-1", 0, 30, "normal", source="alert:a1")
        ...     [(x.end_ns, x.label, x.version) for x in labels.labels("pump-1")]
        [(30, 'normal', 2)]
        """
        return self._write([(device_id, start_ns, end_ns, label, note, source)], who=who,
                           created_ns=created_ns, supersedes=tuple(supersedes),
                           check=check, since=since)[0]

    def add_many(
        self,
        rows: Iterable[tuple[str, int, int, str, str]],
        *,
        who: str = "cli",
        created_ns: int | None = None,
        check: Callable[[], None] | None = None,
        since: Deletions | None = None,
    ) -> list[Label]:
        """Add ``(device_id, start_ns, end_ns, label, note)`` rows in one transaction.

        Every row is checked before anything is written: one bad row writes nothing. A row
        that repeats its window's current label and note is not written again (its current
        label is returned, with its own ``created_ns`` and version).

        ``check`` and ``since`` are :meth:`add`'s, for every row's device: ``check`` is
        called holding the file's write lock just before the rows are written (``edgewise
        label import``: that no device is being deleted), and ``since`` refuses them all
        (:class:`DeviceDeletedError` naming the first such device) when a device of a row
        was deleted after the caller noted :meth:`deletions`; nothing is written then.

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     a = labels.add_many([("p", 0, 10, "anomaly", ""), ("p", 20, 30, "normal", "")])
        ...     snap = labels.snapshot_id()
        ...     b = labels.add_many([("p", 0, 10, "anomaly", ""), ("p", 20, 30, "anomaly", "")])
        ...     [x.version for x in b], b[0] == a[0], labels.snapshot_id() == snap
        ([1, 2], True, False)
        """
        return self._write([(*row, "") for row in rows], who=who, created_ns=created_ns,
                           check=check, since=since)

    def _write(
        self,
        rows: Iterable[tuple[str, int, int, str, str, str]],
        *,
        who: str,
        created_ns: int | None,
        supersedes: tuple[str, ...] = (),
        check: Callable[[], None] | None = None,
        since: Deletions | None = None,
    ) -> list[Label]:
        rows = list(rows)
        self._check_rows(rows, who)
        now = time.time_ns() if created_ns is None else created_ns
        with self._lock, self._write_locked() as cur:
            # raising, either rolls the (empty) transaction back
            if since is not None:
                _refuse_deleted(cur, [row[0] for row in rows], since, "the labels were")
            if check is not None:
                check()
            out, fresh = self._insert(cur, rows, who, now, supersedes)
            # audited in the label file's write transaction, before it commits: an entry
            # that cannot be written (another writer holding security.sqlite past its busy
            # timeout) rolls the labels back, never leaves them standing unaudited. Lock
            # order: labels.sqlite, then security.sqlite, as the verdict route takes them
            self._audit_added(who, fresh)
        return out

    def _check_rows(self, rows: list[tuple[str, int, int, str, str, str]], who: str) -> None:
        """Raise :class:`InvalidParameterError` for the first bad row (or ``who``)."""
        if not isinstance(who, str) or not who.strip():
            raise InvalidParameterError(
                f"The 'who' of a label must name who gave it (the audit log keeps it). Got "
                f"{who!r} instead.", field="who", value=who,
            )
        for device_id, start_ns, end_ns, label, _note, source in rows:
            self._check(device_id, start_ns, end_ns, label)
            if not isinstance(source, str) or len(source) > 200:
                raise InvalidParameterError(
                    f"The 'source' of a label must be text of at most 200 characters. "
                    f"Got {source!r} instead.", field="source", value=source,
                )

    def _insert(
        self,
        cur: sqlite3.Cursor,
        rows: list[tuple[str, int, int, str, str, str]],
        who: str,
        now: int,
        supersedes: tuple[str, ...],
    ) -> tuple[list[Label], list[Label]]:
        """Write checked ``rows`` in the open write transaction ``cur``: the labels of the
        rows, and those of them written now (the rest repeated their current label)."""
        out: list[Label] = []
        fresh: list[Label] = []  # written now (out less the unchanged)
        # a label is the next version of, and supersedes, the labels of its window and
        # those of its source (when it has one): two lookups, one per index (labels_window,
        # labels_source). One WHERE with "window OR source" was planned as a walk of all
        # the device's labels per row: an import of 16,000 rows took 54 s, holding the
        # file's write lock throughout.
        window = "device_id=? AND start_ns=? AND end_ns=?"
        by_source = "device_id=? AND source=?"
        for device_id, start_ns, end_ns, label, note, source in rows:
            kept = cur.execute(
                "SELECT id, who, created_ns, version FROM labels WHERE device_id=? "
                "AND start_ns=? AND end_ns=? AND source=? AND label=? AND note=? "
                "AND current=1", (device_id, start_ns, end_ns, source, label,
                                  note or "")).fetchone()
            if kept is not None and supersedes and cur.execute(
                    "SELECT 1 FROM labels WHERE device_id=? AND current=1 AND source IN "
                    "(SELECT value FROM json_each(?)) LIMIT 1",
                    (device_id, json.dumps(list(supersedes)))).fetchone() is not None:
                # a source it supersedes (an alert merged in since) still has a current
                # label: a new version replaces it. When none has (the repeat of a verdict
                # that superseded them already), the same answer adds none, as elsewhere
                kept = None
            if kept is not None:  # the same answer again: no new version
                out.append(Label(int(kept[0]), device_id, start_ns, end_ns, label,
                                 note or "", kept[1], int(kept[2]), int(kept[3]),
                                 True, source))
                continue
            lookups = [(window, (device_id, start_ns, end_ns))]
            if source:
                lookups.append((by_source, (device_id, source)))
            versions = [cur.execute(f"SELECT MAX(version) FROM labels WHERE {where}",
                                    args).fetchone()[0] for where, args in lookups]
            version = 1 + max((int(v) for v in versions if v is not None), default=0)
            for where, args in lookups:
                cur.execute(f"UPDATE labels SET current=0 WHERE {where} AND current=1", args)
            for other in supersedes:
                cur.execute("UPDATE labels SET current=0 WHERE device_id=? AND "
                            "source=? AND current=1", (device_id, other))
            cur.execute(
                "INSERT INTO labels (device_id, start_ns, end_ns, label, note, who, "
                "created_ns, version, current, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
                (device_id, start_ns, end_ns, label, note or "", who, now, version, source),
            )
            out.append(Label(int(cur.lastrowid or 0), device_id, start_ns, end_ns,
                             label, note or "", who, now, version, True, source))
            fresh.append(out[-1])
        return out, fresh

    def _audit_added(self, who: str, fresh: list[Label]) -> None:
        """Audit-log labels written (``label.add``). Not the note's text, which may name
        people and places and would outlive a ``device delete`` in the append-only log:
        only its length (:func:`note_digest`). Called inside the label file's write
        transaction, before it commits: what this raises rolls the labels back."""
        if self.security is None or not fresh:
            return
        # one transaction of the audit log for them all: an import of many rows holds the
        # label file's write lock for one commit of the log, not one per row
        with self.security.transaction():
            for lab in fresh:
                self.security.audit(
                    who, "label.add", f"{lab.device_id}:{lab.start_ns}-{lab.end_ns}",
                    {"label": lab.label, "version": lab.version, "label_id": lab.id,
                     **note_digest(lab.note), **({"source": lab.source} if lab.source else {})},
                )

    @contextlib.contextmanager
    def hold(self) -> Iterator[HeldLabels]:
        """Take the write lock of ``labels.sqlite`` now and keep it for the ``with`` block:
        labels added through the :class:`HeldLabels` it yields are audited when the block
        ends, still under the lock, then committed; they are rolled back when the block
        raises (none is audited then) or when their audit entries cannot be written (the
        error propagates: no label stands unaudited).

        A caller that writes something elsewhere with a label (the alert route: the verdict,
        then its window label) takes the lock first, so another writer holding the file
        (``edgewise label import``) fails the request before anything is written, never
        between the two writes. Waiting for the lock past the busy timeout raises
        :class:`LabelsBusyError`.

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     with labels.hold() as held:
        ...         lab = held.add("pump-1", 0, 10, "anomaly")
        ...     try:
        ...         with labels.hold() as held:
        ...             _ = held.add("pump-1", 0, 10, "normal")
        ...             raise RuntimeError("the other write failed")
        ...     except RuntimeError:
        ...         pass
        ...     [x.label for x in labels.labels()]
        ['anomaly']
        """
        held = HeldLabels(self)
        with self._lock, self._write_locked() as cur:
            held._cur = cur
            try:
                yield held
            finally:
                held._cur = None
            # before the commit, under the lock (labels.sqlite first, then
            # security.sqlite): an audit that fails rolls the labels back
            for who, lab in held._fresh:
                self._audit_added(who, [lab])

    def delete_device(self, device_id: str, *, who: str = "cli") -> int:
        """Delete every label of ``device_id`` (all versions) and the query mix's state for
        it; the number of label rows deleted. Part of deleting a device and all its data.

        The deletion is counted (:meth:`deletions`) under the same write lock, so work on
        the device's data that began before it and writes after it (labels, a label or
        transfer model file, the mix's state: their ``since``) writes nothing of it
        instead of leaving what a device registered again under the id would inherit. The
        caller deletes the model files after this
        (:func:`~edgewise.label.workflow.delete_models`): a model written before it, under
        the lock, is there to be deleted then.

        Snapshots taken earlier keep their ids, but their labels of this device are gone,
        from the disk too (deleted pages are zeroed and the write-ahead log truncated).

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     _ = labels.add("pump-1", 0, 10, "anomaly")
        ...     labels.delete_device("pump-1"), labels.labels("pump-1")
        (1, [])
        """
        with self._lock:
            # the labels and the mix state go in one hold of the write lock: a 'label
            # suggest' of another device saving the mix state meanwhile (another process)
            # read the states before, or reads them after, never writes this one's back
            with self._write_locked() as cur:
                n = int(cur.execute("DELETE FROM labels WHERE device_id=?",
                                    (device_id,)).rowcount)
                self._put_mix_state(device_id, None)
                # counted in the same transaction: work on the device's data begun before
                # (noted deletions()) finds it under this lock and writes nothing for it
                cur.execute("INSERT INTO deletions (device_digest, count) VALUES (?, 1) "
                            "ON CONFLICT (device_digest) DO UPDATE SET count = count + 1",
                            (_device_digest(device_id),))
                # audited before the commit, under the lock: an entry that cannot be
                # written keeps the labels (the deletion is retried), never deletes them
                # unaudited
                if self.security is not None:
                    self.security.audit(who, "label.delete_device", device_id, {"rows": n})
            if n:  # gone from the disk too: zeroed pages into the file, the old WAL frames
                # (which hold the labels as written) truncated away
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    def deletions(self) -> Deletions:
        """How many times each device's labels were deleted (:meth:`delete_device`, part
        of deleting a device with its data), as of now.

        Work on a device's data notes this when it begins and passes it as ``since`` to
        what it writes at the end (:meth:`add_many`, :meth:`save_mix_state`,
        :meth:`HeldLabels.check_not_deleted`): a deletion landing meanwhile refuses the
        write.

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     seen = labels.deletions()
        ...     _ = labels.delete_device("pump-1")
        ...     seen.of("pump-1"), labels.deletions().of("pump-1")
        (0, 1)
        """
        with self._lock:
            return Deletions({d: int(c) for d, c in self._db.execute(
                "SELECT device_digest, count FROM deletions")})

    # -- the labelling queue's query-mix state, per device ---------------------------------
    def mix_state(self, device_id: str) -> dict[str, Any] | None:
        """What the query mix learned about ``device_id``'s questions and answers (see
        :meth:`edgewise.label.strategies.DefaultMix.get_state`), or None.

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     _ = labels.save_mix_state("pump-1", {"hits": [1.0]})
        ...     labels.mix_state("pump-1"), labels.mix_state("pump-2")
        ({'hits': [1.0]}, None)
        """
        return self._mix_states().get(device_id)

    def save_mix_state(self, device_id: str, state: dict[str, Any] | None, *,
                       expected: dict[str, Any] | object | None = _ANY,
                       since: Deletions | None = None) -> bool:
        """Keep ``state`` as ``device_id``'s query-mix state (None drops it) in
        ``label-mix.json`` beside the labels, mode 0600 like them (it holds what the
        fleet's answers taught the queue); True when written.

        ``expected``, the state as :meth:`mix_state` gave it before (None: there was
        none), makes the save a compare-and-swap: under the write lock, when the stored
        state is no longer ``expected`` (a :meth:`delete_device` dropped it, or another
        writer saved its own meanwhile) nothing is written and False is returned, so a
        slow reader (the label queue fitting and selecting) never writes back the state
        of a device deleted meanwhile. Left out, the save writes whatever is stored.
        A deletion that dropped the state before the reader read it (there was none, and
        none is stored) is no change to compare: ``since``, the :meth:`deletions` noted
        when the reader began, makes the save write nothing (False) when the device was
        deleted after, whatever ``expected`` says.

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     _ = labels.save_mix_state("pump-1", {"hits": [1.0]})
        ...     seen = labels.mix_state("pump-1")
        ...     _ = labels.delete_device("pump-1")
        ...     labels.save_mix_state("pump-1", {"hits": [2.0]}, expected=seen)
        ...     labels.mix_state("pump-1") is None
        False
        True

        The read-modify-write holds the write lock of ``labels.sqlite`` (an OS file lock,
        taken as every label write takes it, so across processes too: the gateway's queue
        and an ``edgewise label suggest`` of another device never undo each other's
        states, and :meth:`delete_device` drops a state under the same lock); the file is
        written to a temporary file per writer, made 0600 and renamed into place, so no
        reader sees half a file.
        """
        with self._lock, self._write_locked() as cur:
            if since is not None and _first_deleted(cur, [device_id], since) is not None:
                return False
            if expected is not _ANY and self._mix_states().get(device_id) != expected:
                return False
            self._put_mix_state(device_id, state)
        return True

    @contextlib.contextmanager
    def _write_locked(self) -> Iterator[sqlite3.Cursor]:
        """A transaction holding the write lock of ``labels.sqlite`` (``BEGIN IMMEDIATE``:
        other connections, of any process, wait for it up to the busy timeout), committed
        on leaving, rolled back on an error. Call it holding ``self._lock``.

        Raises :class:`LabelsBusyError` naming the file when another writer held it past
        the busy timeout (nothing was written)."""
        cur = self._db.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            raise LabelsBusyError(
                f"The label file {str(self.path)!r} is held by another writer (an "
                f"'edgewise label import' of many rows?) for longer than the busy timeout "
                f"of {self.timeout_s:g} s ({exc}); no label was written: retry once it is "
                "done.", path=self.path) from exc
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def _put_mix_state(self, device_id: str, state: dict[str, Any] | None) -> None:
        """:meth:`save_mix_state`'s read-modify-write; call it inside :meth:`_write_locked`."""
        states = self._mix_states()
        if state is not None:
            states[device_id] = state
        elif states.pop(device_id, None) is None:
            return
        path = self.data_dir / _MIX_FILE
        replace_atomically(path, json.dumps(states).encode())  # 0600, a temp file of its own

    @property
    def mix_path(self) -> Path:
        """The file keeping the query mix's state per device (``label-mix.json``)."""
        return self.data_dir / _MIX_FILE

    def mix_state_error(self, why: str) -> InvalidParameterError:
        """The error for a query-mix state file that cannot be read, naming it, ``why``
        and what to do: delete it (it holds only what the mix learned of which questions
        find the model's errors; the labels are in ``labels.sqlite``)."""
        return InvalidParameterError(
            f"The query mix's state file {str(self.mix_path)!r} cannot be read: {why}. "
            "Delete it to start the mix afresh (it holds only which kinds of question "
            "found the model's errors; the labels are kept apart).",
            field="mix_state", value=str(self.mix_path))

    def _mix_states(self) -> dict[str, Any]:
        path = self.mix_path
        if not path.exists():
            return {}
        try:
            states = json.loads(path.read_text())
        except ValueError as exc:  # a JSONDecodeError or UnicodeDecodeError
            raise self.mix_state_error(f"not JSON ({exc})") from None
        if not isinstance(states, dict):
            raise self.mix_state_error(
                f"it holds a JSON {type(states).__name__}, not an object of states by device")
        return states

    # -- reading ---------------------------------------------------------------------------
    def labels(
        self,
        device_id: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        *,
        limit: int | None = None,
        after: tuple[str, int, int, int] | None = None,
    ) -> list[Label]:
        """Current labels (newest version of each window), optionally of one device or
        overlapping ``[start_ns, end_ns)``, ordered by device then time (then id).

        A page: at most ``limit`` of them, those after ``after``, the key ``(device_id,
        start_ns, end_ns, id)`` of the last label of the page before
        (:meth:`page_key`).

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     _ = labels.add_many([("p", t, t + 1, "normal", "") for t in range(5)])
        ...     first = labels.labels(limit=2)
        ...     [x.start_ns for x in labels.labels(limit=2, after=labels.page_key(first[-1]))]
        [2, 3]
        """
        q = f"SELECT {_COLS} FROM labels WHERE current=1"
        args: list[Any] = []
        if device_id is not None:
            q += " AND device_id=?"
            args.append(device_id)
        if start_ns is not None:
            q += " AND end_ns>?"
            args.append(start_ns)
        if end_ns is not None:
            q += " AND start_ns<?"
            args.append(end_ns)
        if after is not None:
            q += " AND (device_id, start_ns, end_ns, id) > (?, ?, ?, ?)"
            args.extend(after)
        q += " ORDER BY device_id, start_ns, end_ns, id"
        if limit is not None:
            q += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [_row(r) for r in self._db.execute(q, args).fetchall()]

    def by_source(self, device_id: str, sources: Iterable[str]) -> list[Label]:
        """The current labels of ``device_id`` written by any of ``sources`` (e.g.
        ``"alert:<id>"``: the window label of the verdict on that alert), by id.

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     _ = labels.add("pump-1", 0, 10, "anomaly", source="alert:a1")
        ...     [x.end_ns for x in labels.by_source("pump-1", ["alert:a1", "alert:a2"])]
        [10]
        """
        with self._lock:
            return _by_source(self._db.cursor(), device_id, sources)

    @staticmethod
    def page_key(label: Label) -> tuple[str, int, int, int]:
        """Where :meth:`labels` orders ``label``: its ``after`` for the next page."""
        return (label.device_id, label.start_ns, label.end_ns, label.id)

    def history(self, device_id: str | None = None, *, limit: int | None = None,
                after: int | None = None) -> list[Label]:
        """Every version of every label (superseded ones too), oldest first; a page: at
        most ``limit`` of them, those with an id above ``after``."""
        q = f"SELECT {_COLS} FROM labels WHERE 1=1"
        args: list[Any] = []
        if device_id is not None:
            q += " AND device_id=?"
            args.append(device_id)
        if after is not None:
            q += " AND id>?"
            args.append(after)
        q += " ORDER BY id"
        if limit is not None:
            q += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [_row(r) for r in self._db.execute(q, args).fetchall()]

    def last_id(self) -> int:
        """The highest label id written so far (0 for an empty store): labels written
        later have higher ids, so a caller tells new versions from returned ones by it.

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     before = labels.last_id()
        ...     lab = labels.add("pump-1", 0, 10, "anomaly")
        ...     before, lab.id == labels.last_id()
        (0, True)
        """
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM labels")
                       .fetchone()[0])

    def devices(self) -> list[str]:
        """Devices that have at least one current label."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT device_id FROM labels WHERE current=1 ORDER BY device_id"
            ).fetchall()
        return [r[0] for r in rows]

    # -- snapshots -------------------------------------------------------------------------
    def snapshot_id(self, device_id: str | None = None, *, record: bool = True) -> str:
        """An id naming the current label set (of one device, or all); recorded for reuse.

        Equal label sets give equal ids (the id is a hash of the set, whoever asks); any
        add changes it. ``labels_at(id)`` returns the set later, even after relabelling,
        once the id was recorded: ``record=False`` names the set without writing anything
        (a reader: a viewer's ``GET /v1/label-queue``), and its id is the one a recording
        call (an operator's queue request, ``label import``, training) records for the same
        set. A set already recorded is not written again; recording takes the file's write
        lock as every label write does, so another writer holding it past the busy timeout
        raises :class:`LabelsBusyError` (nothing was written).

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     _ = labels.add("pump-1", 0, 10, "anomaly")
        ...     sid = labels.snapshot_id("pump-1", record=False)
        ...     try:
        ...         labels.labels_at(sid)
        ...     except KeyError:
        ...         print("not recorded")
        ...     sid == labels.snapshot_id("pump-1"), len(labels.labels_at(sid))
        not recorded
        (True, 1)
        """
        ids = [lab.id for lab in self.labels(device_id)]
        text = json.dumps({"device": device_id, "ids": ids})
        sid = "ls-" + hashlib.sha256(text.encode()).hexdigest()[:16]
        if not record:
            return sid
        with self._lock:
            if self._db.execute("SELECT 1 FROM snapshots WHERE snapshot_id=?",
                                (sid,)).fetchone() is not None:
                return sid  # recorded before: no write, so no wait for another writer
            with self._write_locked() as cur:
                cur.execute(
                    "INSERT OR IGNORE INTO snapshots (snapshot_id, created_ns, label_ids) "
                    "VALUES (?, ?, ?)", (sid, time.time_ns(), json.dumps(ids)),
                )
        return sid

    def labels_at(self, snapshot_id: str) -> list[Label]:
        """The labels of a recorded snapshot. Raises ``KeyError`` for an unknown id."""
        with self._lock:
            row = self._db.execute(
                "SELECT label_ids FROM snapshots WHERE snapshot_id=?", (snapshot_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"Label snapshot {snapshot_id!r} is not recorded in {self.path}.")
            # the ids as one JSON parameter, not one '?' each: a snapshot of more labels
            # than SQLite's variable limit (999 before 3.32, 32766 since) raised "too many
            # SQL variables", and training on it failed as if the file were bad
            rows = self._db.execute(
                f"SELECT {_COLS} FROM labels WHERE id IN (SELECT value FROM json_each(?)) "
                "ORDER BY device_id, start_ns, end_ns", (row[0],),
            ).fetchall()
        return [_row(r) for r in rows]

    def close(self) -> None:
        """Close the database; safe to call twice."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_time(value: str, field_name: str, line: int, max_future_s: float) -> int:
    try:  # history: from 1970; no later than now and the clock skew allowed readings
        return parse_time_text(value, field_name=field_name, earliest_ns=0,
                               max_future_s=max_future_s)
    except PayloadError as exc:
        why = (" (the clock skew EDGEWISE_MAX_FUTURE_S allows): a label on time not yet "
               "recorded would apply to readings that arrive later"
               if exc.reason == "future_ts" and "in the future" in exc.allowed else "")
        raise InvalidParameterError(
            f"Label CSV line {line}: field {field_name!r} must be {exc.allowed}{why}. "
            f"Got {exc.value!r} instead.", field=field_name, value=exc.value,
        ) from None
    except ValueError as exc:
        raise InvalidParameterError(f"Label CSV line {line}: {exc}") from None


def read_labels_csv(
    path: Path | str, *, max_future_s: float = DEFAULT_MAX_FUTURE_S
) -> list[tuple[str, int, int, str, str]]:
    r"""Read ``device_id,start,end,label[,note]`` rows (with a header line) from a CSV file.

    ``start`` and ``end`` are RFC 3339 timestamps with an offset or integer epoch times
    (seconds, milliseconds, microseconds or nanoseconds, told apart by size as in
    :func:`~edgewise.telemetry.epoch_ns`), from 1970 to no more than ``max_future_s``
    ahead of now (the gateway's ``EDGEWISE_MAX_FUTURE_S``): a label on time not yet
    recorded would apply to readings that arrive later. Commas or semicolons separate the
    fields, or the separator a first line ``sep=;`` names (as a spreadsheet writes it); a
    spreadsheet's byte-order mark is skipped; UTF-8 or Windows-1252 text.

    One window (device, start and end) is one row: two rows of one window that differ in
    label or note are refused, naming both lines (which is meant? and each import of both
    would write two new versions, where a file imported again should add none); a row
    repeated exactly is harmless (it is imported once). Raises
    :class:`InvalidParameterError` naming the line of the first bad row, and
    :class:`~edgewise.errors.QualityError` naming the file if it is missing, a directory or
    not text (:func:`edgewise.tables.read_text`).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "l.csv"
    >>> _ = p.write_text("device_id,start,end,label,note\n"
    ...                  "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,anomaly,seal\n")
    >>> read_labels_csv(p)[0][:4]
    ('pump-1', 1704067200000000000, 1704067800000000000, 'anomaly')
    """
    return [row for _line, row in read_labels_csv_lines(path, max_future_s=max_future_s)]


def read_labels_csv_lines(
    path: Path | str, *, max_future_s: float = DEFAULT_MAX_FUTURE_S
) -> list[tuple[int, tuple[str, int, int, str, str]]]:
    r"""The rows of :func:`read_labels_csv`, each with the line of the file it ends on (a
    blank line is skipped, a quoted note may span lines: a row's index is not its line).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "l.csv"
    >>> _ = p.write_text("device_id,start,end,label,note\n\n"
    ...                  "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,anomaly,seal\n")
    >>> [(line, row[0]) for line, row in read_labels_csv_lines(p)]
    [(3, 'pump-1')]
    """
    rows: list[tuple[int, tuple[str, int, int, str, str]]] = []
    with io.StringIO(read_text(path, "Label file"), newline="") as fh:
        head = fh.readline()
        hint = re.fullmatch(r"sep=(.?)", head.rstrip("\r\n"), flags=re.IGNORECASE)
        if hint:  # a spreadsheet's "sep=;" line names the separator; the header follows
            delimiter, skipped = _hinted_separator(path, hint.group(1)), 1
        else:
            fh.seek(0)
            delimiter, skipped = separator(head), 0
        raw = _RecordText(fh)
        reader = csv.DictReader(raw, delimiter=delimiter)
        # names as a spreadsheet writes them: "device_id, start" or "Label" name the columns
        # too (they were "missing")
        as_read = list(reader.fieldnames or [])
        raw.take()  # the header's lines
        reader.fieldnames = [name.strip().lower() for name in as_read]
        need = {"device_id", "start", "end", "label"}
        missing = need - set(reader.fieldnames)
        if missing:
            raise InvalidParameterError(
                f"Label CSV {str(path)!r} must have the columns device_id,start,end,label "
                f"(note optional). Missing: {', '.join(sorted(missing))}; the header names "
                f"{as_read!r}."
            )
        twice = sorted({n for n in reader.fieldnames if reader.fieldnames.count(n) > 1}
                       & (need | {"note"}))
        if twice:  # the last one would be read, silently
            raise InvalidParameterError(
                f"Label CSV {str(path)!r} names the column {twice[0]!r} more than once "
                f"(letter case and spaces aside): the header names {as_read!r}; keep one.")
        seen: dict[tuple[str, int, int], tuple[str, int]] = {}
        note_at = reader.fieldnames.index("note") if "note" in reader.fieldnames else None
        for rec in reader:
            line = reader.line_num + skipped
            text = raw.take()
            quoted = _quoted_fields(text, delimiter)
            short = [n for n in sorted(need) if rec.get(n) is None]
            if short:  # fewer fields than the header names: "Got ''" named no cause
                other = ";" if delimiter == "," else ","
                got = sum(v is not None for k, v in rec.items() if k is not None)
                raise InvalidParameterError(
                    f"Label CSV line {line} has {got} field{'s' * (got != 1)} "
                    f"separated by {delimiter!r}, as the header's; the header names "
                    f"{len(reader.fieldnames)} ({delimiter.join(reader.fieldnames)}), "
                    f"so it lacks {', '.join(short)}"
                    + (f". It holds {other!r}: separate its fields by {delimiter!r}, as "
                       "the header does." if other in text else "."),
                    field=short[0], value=None)
            if None in rec:  # more fields than the header names
                raise InvalidParameterError(
                    f"Label CSV line {line} has {len(reader.fieldnames or []) + len(rec[None])} "
                    f"fields; the header names {len(reader.fieldnames or [])} "
                    f"({','.join(reader.fieldnames or [])}). Quote a note that holds the "
                    "separator.")
            device = (rec.get("device_id") or "").strip()
            start = _csv_time(rec.get("start") or "", "start", line, max_future_s)
            end = _csv_time(rec.get("end") or "", "end", line, max_future_s)
            label = (rec.get("label") or "").strip()
            try:
                LabelStore._check(device, start, end, label)
            except InvalidParameterError as exc:
                if exc.field == "end_ns":  # in range (_csv_time saw to that): not after start
                    given = (rec["start"].strip(), rec["end"].strip())
                    ns = "" if given == (str(start), str(end)) else f" ({start} and {end} ns)"
                    raise InvalidParameterError(
                        f"Label CSV line {line}: the window of {device!r} must end after it "
                        f"starts ('end' is exclusive). Got start {given[0]!r} and end "
                        f"{given[1]!r}{ns} instead. To label the single reading at t, end "
                        "the window after t and before the next reading: t + 1 in integer "
                        f"epoch nanoseconds (here {start + 1}), or 1 nanosecond later in "
                        "RFC 3339, which is read to the nanosecond (nine digits of the "
                        "second: .000000001).", field="end", value=given[1],
                    ) from None
                raise InvalidParameterError(f"Label CSV line {line}: {exc}") from None
            except ValueError as exc:
                raise InvalidParameterError(f"Label CSV line {line}: {exc}") from None
            # a quoted note is read as it is (labels_csv quotes one that starts or ends
            # with spaces or holds a carriage return, so it comes back exactly); an
            # unquoted one loses the spaces around it, as after "anomaly, seal"
            note = rec.get("note") or ""
            if not (note_at is not None and note_at < len(quoted) and quoted[note_at]):
                note = note.strip()
            earlier = seen.setdefault((device, start, end), (label, note, line))
            if earlier[0] != label:  # which one is meant? the last would win silently
                raise InvalidParameterError(
                    f"Label CSV lines {earlier[2]} and {line} label the same window of "
                    f"{device!r} differently ({earlier[0]!r}, then {label!r}); keep the one "
                    "meant (a later import relabels it, keeping the history).")
            if earlier[1] != note:  # each import would write both again, as 2 new versions
                raise InvalidParameterError(
                    f"Label CSV lines {earlier[2]} and {line} label the same window of "
                    f"{device!r} {label!r} with different notes ({earlier[1]!r}, then "
                    f"{note!r}); keep one row per window, with the note meant (each import "
                    "of both would add two versions, one per note).")
            rows.append((line, (device, start, end, label, note)))
    return rows


def _hinted_separator(path: Path | str, sep: str) -> str:
    r"""The separator that a label CSV's first line ``sep=X`` names (as a spreadsheet
    writes it before the header): ``,``, ``;``, a tab or ``|``.

    >>> _hinted_separator("l.csv", ";"), _hinted_separator("l.csv", "\t")
    (';', '\t')
    >>> _hinted_separator("l.csv", "x")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: Label CSV 'l.csv' line 1, 'sep=x', must name the field separator: ',', ';', a tab or '|'. Got 'x' instead.
    """  # noqa: E501
    if sep not in (",", ";", "\t", "|"):
        raise InvalidParameterError(
            f"Label CSV {str(path)!r} line 1, 'sep={sep}', must name the field separator: "
            f"',', ';', a tab or '|'. Got {sep!r} instead.", field="sep", value=sep)
    return sep


class _RecordText:
    """The lines of ``fh`` as :mod:`csv` reads them, keeping those read since
    :meth:`take` was last called: the text of the record just read (after any blank
    lines before it), for :func:`_quoted_fields`."""

    def __init__(self, fh: io.StringIO) -> None:
        self._fh = fh
        self._lines: list[str] = []

    def __iter__(self) -> _RecordText:
        return self

    def __next__(self) -> str:
        line = next(self._fh)
        self._lines.append(line)
        return line

    def take(self) -> str:
        """The text read since the last call."""
        text = "".join(self._lines)
        self._lines.clear()
        return text


def _quoted_fields(record: str, delimiter: str) -> list[bool]:
    r"""Whether each field of the CSV ``record`` (its text, as :class:`_RecordText` keeps
    it) is one quoted string, read as :mod:`csv`'s default dialect reads it: a field
    starting with ``"`` and ending at its closing quote. ``"seal" x`` and `` "seal"``
    (a space before the quote) are not: csv reads them as text with the quotes or spaces
    in it.

    >>> _quoted_fields('p,1,2,anomaly," seal "\n', ",")
    [False, False, False, False, True]
    >>> _quoted_fields('\n"a\r\nb"";";x; "y"\r\n', ";")
    [True, False, False]
    >>> _quoted_fields('"a" b,"c"\n', ",")
    [False, True]
    """
    out: list[bool] = []
    i, n = 0, len(record)
    while i < n and record[i] in "\r\n":  # blank lines before the record
        i += 1
    ends = f"{delimiter}\r\n"
    while True:
        whole = False
        if i < n and record[i] == '"':
            i += 1
            while i < n:  # to the closing quote; "" is a quote in the text
                if record[i] == '"':
                    if i + 1 < n and record[i + 1] == '"':
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            whole = i >= n or record[i] in ends
        out.append(whole)
        while i < n and record[i] not in ends:
            i += 1
        if i >= n or record[i] != delimiter:
            return out
        i += 1


class LabelsBusyError(FileBusyError):
    """Another writer (another process: ``edgewise label import``) held ``labels.sqlite``
    past the busy timeout, so a write took not its lock and wrote nothing. ``path``: the
    file."""




class HeldLabels:
    """Adds labels inside :meth:`LabelStore.hold`, in its transaction (committed when the
    ``with`` block ends); of no use after it."""

    def __init__(self, store: LabelStore) -> None:
        self._store = store
        self._cur: sqlite3.Cursor | None = None
        self._fresh: list[tuple[str, Label]] = []  # (who, label) written, audited on commit

    def add(
        self,
        device_id: str,
        start_ns: int,
        end_ns: int,
        label: str,
        *,
        who: str = "cli",
        note: str = "",
        created_ns: int | None = None,
        source: str = "",
        supersedes: Iterable[str] = (),
    ) -> Label:
        """As :meth:`LabelStore.add`, in the held transaction."""
        if self._cur is None:
            raise RuntimeError("HeldLabels.add must be called inside its 'with "
                               "LabelStore.hold()' block, which commits it; it was called "
                               "after the block ended.")
        rows = [(device_id, start_ns, end_ns, label, note, source)]
        self._store._check_rows(rows, who)
        now = time.time_ns() if created_ns is None else created_ns
        out, fresh = self._store._insert(self._cur, rows, who, now, tuple(supersedes))
        self._fresh.extend((who, lab) for lab in fresh)
        return out[0]

    def by_source(self, device_id: str, sources: Iterable[str]) -> list[Label]:
        """As :meth:`LabelStore.by_source`, in the held transaction (what it reads cannot
        change before the block ends)."""
        if self._cur is None:
            raise RuntimeError("HeldLabels.by_source must be called inside its 'with "
                               "LabelStore.hold()' block; it was called after it.")
        return _by_source(self._cur, device_id, sources)

    def check_not_deleted(self, device_ids: Iterable[str], since: Deletions,
                          what: str) -> None:
        """Raise :class:`DeviceDeletedError` naming the first of ``device_ids`` deleted
        (:meth:`LabelStore.delete_device`) since ``since`` was noted
        (:meth:`LabelStore.deletions`); ``what`` says what is then not written (``"the
        label model was"``). Called in the held block before writing something of those
        devices' data elsewhere (a model file): the deletion, which deletes model files
        after their labels, either finds it or has refused it.

        >>> import tempfile
        >>> with LabelStore(tempfile.mkdtemp()) as labels:
        ...     seen = labels.deletions()
        ...     _ = labels.delete_device("pump-2")
        ...     try:
        ...         with labels.hold() as held:
        ...             held.check_not_deleted(["pump-1", "pump-2"], seen, "the model was")
        ...     except DeviceDeletedError as exc:
        ...         print(exc.device_id)
        pump-2
        """
        if self._cur is None:
            raise RuntimeError("HeldLabels.check_not_deleted must be called inside its "
                               "'with LabelStore.hold()' block; it was called after it.")
        _refuse_deleted(self._cur, device_ids, since, what)


class DeviceDeletedError(InvalidParameterError):
    """A device was deleted with its data (``DELETE /v1/devices/{id}``, ``edgewise device
    delete``) while work on its data ran: what that work would have written of it (labels,
    the query mix's state, a model file) was not written, as a device registered again
    under the id would have inherited it. ``device_id``: the device (also ``value``;
    ``field`` is ``"device_id"``)."""

    def __init__(self, device_id: str, what: str) -> None:
        super().__init__(
            f"Device {device_id!r} was deleted (its readings, labels and label models with "
            f"it) while this ran: {what} not written, as a device registered again under "
            f"the id would inherit it.", field="device_id", value=device_id)
        self.device_id = device_id


def _device_digest(device_id: str) -> str:
    """How the label file keys a deleted device's count: a SHA-256 of its id, not the id,
    as a deleted device's id leaves no trace in the label file (the audit log, not this,
    records deletions)."""
    return hashlib.sha256(f"edgewise.label.deletion:{device_id}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Deletions:
    """How many times each device was deleted, as :meth:`LabelStore.deletions` read them
    at one moment (``counts``: by a digest of the id, :func:`_device_digest`). Pass it as
    ``since``; :meth:`of` reads one device's count."""

    counts: Mapping[str, int]

    def of(self, device_id: str) -> int:
        """How many times ``device_id`` had been deleted then (0: never)."""
        return int(self.counts.get(_device_digest(device_id), 0))


def _by_source(cur: sqlite3.Cursor, device_id: str, sources: Iterable[str]) -> list[Label]:
    """The current labels of ``device_id`` from any of ``sources``, by id (the
    ``labels_source`` index)."""
    rows = cur.execute(
        f"SELECT {_COLS} FROM labels WHERE device_id=? AND current=1 AND source IN "
        "(SELECT value FROM json_each(?)) ORDER BY id",
        (device_id, json.dumps(list(sources)))).fetchall()
    return [_row(r) for r in rows]


def _first_deleted(cur: sqlite3.Cursor, device_ids: Iterable[str],
                   since: Deletions) -> str | None:
    """The first of ``device_ids`` whose deletion count in the open write transaction
    ``cur`` is not the one in ``since`` (deleted since), or ``None``."""
    wanted = {_device_digest(d): d for d in device_ids}
    now = dict(cur.execute(
        "SELECT device_digest, count FROM deletions WHERE device_digest IN "
        "(SELECT value FROM json_each(?))", (json.dumps(list(wanted)),)).fetchall())
    for digest, device_id in wanted.items():
        if int(now.get(digest, 0)) != int(since.counts.get(digest, 0)):
            return device_id
    return None


def _refuse_deleted(cur: sqlite3.Cursor, device_ids: Iterable[str], since: Deletions,
                    what: str) -> None:
    """Raise :class:`DeviceDeletedError` for the first of ``device_ids`` deleted since
    ``since`` (:func:`_first_deleted`); ``what`` says what is not written."""
    gone = _first_deleted(cur, device_ids, since)
    if gone is not None:
        raise DeviceDeletedError(gone, what)


def _check_note(note: str | None) -> None:
    """Refuse to write a note holding a NUL character to a label CSV file: the file would
    not be read back (:func:`~edgewise.tables.read_text` takes a NUL byte for binary
    data), where :func:`labels_csv` promises an exact round trip.

    >>> _check_note("seal\\x00")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'note' of a label must be text without NUL characters (a label CSV file holding one is not read back). Got 'seal\\x00' (a NUL at character 4) instead.
    """  # noqa: E501
    if isinstance(note, str) and "\x00" in note:
        shown = note if len(note) <= 60 else note[:60] + "…"
        raise InvalidParameterError(
            f"The 'note' of a label must be text without NUL characters (a label CSV file "
            f"holding one is not read back). Got {shown!r} (a NUL at character "
            f"{note.index(chr(0))}) instead.", field="note", value=shown)


def note_digest(note: str) -> dict[str, Any]:
    """What the audit log keeps of a label's note: its length in characters
    (``note_chars``), never the text nor a hash of it: a note may name people and places,
    and the append-only log outlives a device's deletion. An unsalted hash (this kept the
    first 16 hex digits of the note's SHA-256) gave a short note back to anyone trying a
    word list of names and phrases of that length against it, after the device's labels
    were deleted.

    >>> note_digest("seal leak"), note_digest("")
    ({'note_chars': 9}, {'note_chars': 0})
    """
    return {"note_chars": len(note)}


@dataclass(frozen=True, slots=True)
class DeviceDeletion:
    """A device's deletion with its data, as the audit log has it (``device.delete_data``)."""

    device_id: str
    #: when (UTC nanoseconds)
    ts_ns: int
    #: who deleted it: ``"cli"`` or the API token (``token:<id>:<name>``)
    actor: str
    #: the audit entry's id
    audit_id: int


def deleted_devices(security: Security, device_ids: Iterable[str]) -> dict[str, DeviceDeletion]:
    """The newest deletion of each of ``device_ids`` that was deleted with its data and not
    registered again since, by id (the audit log's ``device.delete_data`` entries).

    Such a device's readings, labels and label models went with it: a label on its history
    would label nothing (and a device added again under the id starts with none). A device
    registered now, or whose data a deletion kept (:meth:`~edgewise.security.credentials.
    Security.data_kept`: a gateway held it), is left out; so is every device when the
    audit log cannot be read (the caller then answers as for a device never seen).

    >>> import tempfile
    >>> from edgewise.security import Security
    >>> sec = Security(Path(tempfile.mkdtemp()))
    >>> _ = sec.add_device("pump-1"); sec.delete_device("pump-1")
    >>> sec.audit("cli", "device.delete_data", "pump-1", {"rows": 60, "labels": 2})
    >>> {d: g.actor for d, g in deleted_devices(sec, ["pump-1", "ghost"]).items()}
    {'pump-1': 'cli'}
    >>> _ = sec.add_device("pump-1"); deleted_devices(sec, ["pump-1"])
    {}
    >>> sec.close()
    """
    wanted = [d for d in device_ids if not security.has_device(d) and not security.data_kept(d)]
    if not wanted:
        return {}
    try:
        entries = security.newest_audit("device.delete_data", wanted)
    except sqlite3.Error:
        return {}
    return {d: DeviceDeletion(d, e.ts_ns, e.actor, e.id) for d, e in entries.items()}


def _csv_time_text(ts_ns: int, name: str) -> str:
    """``ts_ns`` as a label CSV cell that :func:`read_labels_csv` reads back exactly."""
    if ts_ns >= 10**17:  # integer epoch nanoseconds: told apart from other units by size
        return str(ts_ns)
    if ts_ns % 1000 == 0:  # before 1973-03-03: RFC 3339, read to the microsecond
        from datetime import UTC, datetime, timedelta

        dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_ns // 1000)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise InvalidParameterError(
        f"The {name!r} of a label written to CSV must be a whole microsecond when before "
        f"1973-03-03 (an integer epoch that small is read as seconds, RFC 3339 to the "
        f"microsecond). Got {ts_ns} ns instead.", field=name, value=ts_ns,
    )


def labels_csv(rows: Iterable[tuple[str, int, int, str, str]]) -> str:
    """``device_id,start,end,label,note`` CSV text of ``(device_id, start_ns, end_ns,
    label, note)`` rows, which ``edgewise label import`` (:func:`read_labels_csv`) reads
    back exactly: times as integer epoch nanoseconds (as RFC 3339 before 1973-03-03); a
    row whose note starts or ends with white space or holds a carriage return is quoted
    whole (unquoted, the reader strips the spaces a spreadsheet puts after a separator,
    and a lone carriage return would end the row).

    Windows are ``[start_ns, end_ns)``: the label of the single reading at ``t`` is
    ``(device, t, t + 1, label, note)``. Each row is checked as :meth:`LabelStore.add`
    checks it, and a note holding NUL (which no label file can carry) is refused; a bad
    row raises :class:`InvalidParameterError` and nothing is returned.

    >>> text = labels_csv([("pump-1", 1704067200000000000, 1704067200000000001, "spike",
    ...                     "one reading")])
    >>> print(text, end="")
    device_id,start,end,label,note
    pump-1,1704067200000000000,1704067200000000001,spike,one reading
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # csv quotes a field holding "\n" but not one holding only "\r" (not in the line
    # terminator), and never one for its spaces: such a row is quoted whole
    whole = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(["device_id", "start", "end", "label", "note"])
    for device_id, start_ns, end_ns, label, note in rows:
        LabelStore._check(device_id, start_ns, end_ns, label)
        _check_note(note)
        row = [device_id, _csv_time_text(start_ns, "start_ns"),
               _csv_time_text(end_ns, "end_ns"), label, note]
        (whole if note != note.strip() or "\r" in note else writer).writerow(row)
    return out.getvalue()
