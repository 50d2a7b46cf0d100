"""Window labels that follow their alert: a labelled alert that grows is labelled over all of it.

An operator's verdict on an anomaly alert (``POST /v1/alerts/{id}/label``) writes a window
label over the alert's span as stored then (source ``alert:<id>``: ``anomaly`` for a true
alarm, ``normal`` for a false one, :data:`~edgewise.label.store.VERDICT_LABELS`). The
gateway's alert manager keeps extending the alert while its anomaly lasts, and merges
alerts (the survivor, widened, takes over an absorbed alert's verdict where it has none):
the window label then covered part of the alert, training saw the rest unlabelled, and
the labelling queue asked about it again.

:class:`LabelSync` mends that. The alert manager tells it (``on_span``) of each labelled
alert whose stored span moved; it rewrites the alert's window label over the span as
stored now, a new version under the same source (so it supersedes the old one, and the
window labels of alerts merged into it, as the route does), by ``gateway``, its note
saying the window followed the alert's span. Only where the alert, or one merged into it,
has a current window label (a verdict given without one, e.g. by
:meth:`~edgewise.alerts.AlertManager.label` alone, gets none), and only where the span
or verdict differ from it: a rewrite is no new version of the same window.

It never blocks detection: telling it only queues the alert's id; its own thread writes
the queue every ``every_s`` (one version per alert per pass, however often the alert grew
meanwhile), waiting at most ``timeout_s`` for the label file's write lock. Held by another
writer (an ``edgewise label import``), the queue is kept and tried again at the next
pass; it holds at most ``max_pending`` alerts (more are logged and left to the next
start). At start, the labelled anomaly alerts that ended within ``reconcile_s`` are
checked the same way, so a rewrite pending when the gateway stopped (or crashed) is not
lost. A device deleted with its data leaves nothing behind: its alerts are gone from the
store before its labels are deleted, an alert read in the label file's write lock is
still there, and the deletion count noted at the start of each pass
(:meth:`~edgewise.label.store.LabelStore.deletions`) refuses a write after one.

>>> import pathlib, tempfile
>>> from edgewise.label.store import LabelStore
>>> from edgewise.store import open_store
>>> from edgewise.store.base import Alert
>>> data, store = pathlib.Path(tempfile.mkdtemp()), open_store("duckdb://:memory:")
>>> a = store.add_alert(Alert("pump-1", 10, 20, 0.97))
>>> a = store.update_alert(a.id, label="true_alarm")
>>> labels = LabelStore(data)
>>> _ = labels.add("pump-1", 10, 21, "anomaly", source=f"alert:{a.id}")  # the verdict's
>>> a = store.update_alert(a.id, end_ns=50)   # the alert grew
>>> sync = LabelSync(store, data)
>>> sync.note(a); sync.sync()
1
>>> [(x.start_ns, x.end_ns, x.label, x.who, x.version) for x in labels.labels("pump-1")]
[(10, 51, 'anomaly', 'gateway', 2)]
>>> sync.close(); labels.close(); store.close()
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgewise.errors import InvalidParameterError
from edgewise.label.store import (
    VERDICT_LABELS,
    DeviceDeletedError,
    Label,
    LabelsBusyError,
    LabelStore,
)
from edgewise.store.base import Alert, Store

if TYPE_CHECKING:
    from edgewise.security import Security

__all__ = ["ACTOR", "LabelSync"]

log = logging.getLogger(__name__)

#: Who the rewritten window labels name (one of the gateway's reserved actor names).
ACTOR = "gateway"

#: Alerts read from the store per page at start (:meth:`LabelSync.reconcile`), and pages.
_PAGE, _PAGES = 1000, 10


class LabelSync:
    """Rewrites the window label of a labelled alert over its span when the span grows.

    Parameters
    ----------
    store
        The alert store (``get_alert``, ``absorbed``, ``list_alerts``).
    data_dir
        The data directory whose ``labels.sqlite`` holds the window labels; opened on
        first need, never made (no label file: no window label to follow).
    security
        Audits each label written (``label.add`` by ``gateway``), as every label write is.
    every_s
        How often the queue is written (and a busy label file tried again).
    timeout_s
        How long a pass waits for the label file's write lock before it leaves the queue
        for the next one.
    max_pending
        The most alerts queued; one more is logged and left to the next start's check.
    reconcile_s
        At start, labelled anomaly alerts that ended within this many seconds before now
        are checked (a rewrite pending at the last stop, or crash).
    """

    def __init__(
        self,
        store: Store,
        data_dir: Path | str,
        security: Security | None = None,
        *,
        every_s: float = 30.0,
        timeout_s: float = 1.0,
        max_pending: int = 10_000,
        reconcile_s: float = 7 * 86400.0,
    ) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.security = security
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.reconcile_s = reconcile_s
        self._labels: LabelStore | None = None
        self._pending: dict[str, str] = {}  # alert id -> device id, in the order told
        self._lock = threading.Lock()  # guards _pending
        self._sync_lock = threading.Lock()  # one pass at a time
        self._reconciled = False
        self._dropped = 0  # told while the queue was full, since last logged
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- told by the alert manager (the detection path: never blocks) ----------------------
    def note(self, alert: Alert) -> None:
        """Queue ``alert`` (a labelled alert whose stored span moved) for the next pass."""
        with self._lock:
            if alert.id in self._pending:
                return
            if len(self._pending) >= self.max_pending:
                self._dropped += 1
                return
            self._pending[alert.id] = alert.device_id

    def forget(self, device_id: str) -> None:
        """Drop the queued alerts of ``device_id`` (being deleted with its data)."""
        with self._lock:
            for alert_id in [k for k, d in self._pending.items() if d == device_id]:
                del self._pending[alert_id]

    def pending(self) -> int:
        """How many alerts are queued."""
        with self._lock:
            return len(self._pending)

    # -- the thread --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread that checks the recent labelled alerts, then writes the queue
        every :attr:`every_s`."""
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="edgewise-label-sync",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:
                log.exception("rewriting the window labels of grown alerts failed")
            if self._stop.wait(self.every_s):
                return

    def close(self) -> None:
        """Stop the thread, write what is queued (one last try) and close the label file;
        what is left is checked again at the next start. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.sync()
        except Exception:
            log.exception("rewriting the window labels of grown alerts failed at stop")
        left = self.pending()
        if left:
            log.warning("%d alert window label(s) not rewritten over their grown spans at "
                        "stop; the next start checks them again", left)
        with self._sync_lock:
            if self._labels is not None:
                self._labels.close()
                self._labels = None

    # -- a pass --------------------------------------------------------------------------
    def reconcile(self) -> int:
        """Queue the labelled anomaly alerts that ended within :attr:`reconcile_s` (at most
        ten thousand, newest first), to be checked by the next pass; how many were queued.
        The first :meth:`sync` does it."""
        since = time.time_ns() - int(self.reconcile_s * 1e9)
        paging: dict[str, tuple[int, int, str]] = {}
        queued = 0
        for _ in range(_PAGES):
            page = self.store.list_alerts(None, None, "anomaly", since, _PAGE, **paging)
            for a in page:
                if a.label in VERDICT_LABELS:
                    self.note(a)
                    queued += 1
            if len(page) < _PAGE:
                break
            paging = {"after": (page[-1].start_ns, page[-1].created_ns, page[-1].id)}
        return queued

    def sync(self) -> int:
        """Rewrite the window label of each queued alert whose span (or verdict) no longer
        matches it; how many were written. An alert whose label file is held by another
        writer past :attr:`timeout_s`, or whose store or audit log fails, stays queued."""
        with self._sync_lock:
            if not self._reconciled:
                if not (self.data_dir / "labels.sqlite").exists():
                    self._reconciled = True  # no window label to follow
                else:
                    try:
                        self.reconcile()
                        self._reconciled = True
                    except Exception:
                        log.exception("could not list the labelled alerts to check their "
                                      "window labels; tried again at the next pass")
            with self._lock:
                todo, self._pending = self._pending, {}
                dropped, self._dropped = self._dropped, 0
            if dropped:
                log.warning("%d grown alert(s) not queued for their window labels (%d "
                            "queued already); the next start checks them", dropped,
                            self.max_pending)
            if not todo:
                return 0
            try:
                return self._sync(todo)
            except Exception as exc:
                with self._lock:  # kept, before what was told meanwhile
                    self._pending = {**todo, **self._pending}
                if isinstance(exc, LabelsBusyError):
                    log.warning("%s: %d alert window label(s) not rewritten yet; tried "
                                "again in %g s", exc, len(todo), self.every_s)
                else:
                    log.exception("could not rewrite the window labels of %d grown "
                                  "alert(s); tried again in %g s", len(todo), self.every_s)
                return 0

    def _open(self) -> LabelStore | None:
        if self._labels is None:
            if not (self.data_dir / "labels.sqlite").exists():
                return None
            try:
                self._labels = LabelStore(self.data_dir, security=self.security,
                                          timeout_s=self.timeout_s)
            except sqlite3.OperationalError as exc:  # held while it set its file up
                raise LabelsBusyError(
                    f"The label file {str(self.data_dir / 'labels.sqlite')!r} could not be "
                    f"opened ({exc})", path=self.data_dir / "labels.sqlite") from exc
        return self._labels

    def _sync(self, todo: dict[str, str]) -> int:
        labels = self._open()
        if labels is None:
            return 0
        since = labels.deletions()
        # checked first without the lock (a start's check reads many), then each again
        # in it, with the alert read again: a verdict given meanwhile is not undone
        stale: list[str] = []
        for alert_id in todo:
            try:
                if self._plan(alert_id, labels.by_source) is not None:
                    stale.append(alert_id)
            except KeyError:  # deleted meanwhile (with its device's data)
                continue
        if not stale:
            return 0
        written = 0
        with labels.hold() as held:
            for alert_id in stale:
                try:
                    plan = self._plan(alert_id, held.by_source)
                except KeyError:
                    continue
                if plan is None:
                    continue
                alert, absorbed = plan
                label = VERDICT_LABELS[str(alert.label)]
                note = (f"alert {alert.id} labelled {alert.label}; the window follows the "
                        "alert's span as stored") + (f": {alert.note}" if alert.note else "")
                try:
                    held.check_not_deleted([alert.device_id], since,
                                           "the alert's window label was")
                    held.add(alert.device_id, alert.start_ns, alert.end_ns + 1, label,
                             who=ACTOR, note=note, source=f"alert:{alert.id}",
                             supersedes=absorbed)
                except DeviceDeletedError:
                    continue  # deleted with its data since the pass began: nothing of it
                except InvalidParameterError:  # checked before anything of it is written
                    log.exception("the window label of alert %s cannot follow its span",
                                  alert.id)
                    continue
                written += 1
        if written:
            log.info("%d alert window label(s) rewritten over their grown spans", written)
        return written

    def _plan(
        self, alert_id: str, current: Callable[[str, Sequence[str]], list[Label]],
    ) -> tuple[Alert, list[str]] | None:
        """The alert as stored and the sources of the alerts merged into it, where its
        window label is to be rewritten: it is a live anomaly alert with a verdict, it or
        one merged into it has a current window label (``current``: the label store's
        :meth:`~edgewise.label.store.LabelStore.by_source`), and that is not its own over
        its span with its verdict's label alone. ``None`` where not; ``KeyError`` for an
        unknown alert."""
        alert = self.store.get_alert(alert_id)
        if (alert.kind != "anomaly" or alert.merged_into is not None
                or alert.label not in VERDICT_LABELS):
            return None
        own = f"alert:{alert.id}"
        absorbed = [f"alert:{a}" for a in self.store.absorbed(alert.id)]
        now = current(alert.device_id, [own, *absorbed])
        if not now:
            return None  # no window label was written for its verdict: none to follow
        want = (own, alert.start_ns, alert.end_ns + 1, VERDICT_LABELS[alert.label])
        if all((lab.source, lab.start_ns, lab.end_ns, lab.label) == want for lab in now):
            return None
        return alert, absorbed
