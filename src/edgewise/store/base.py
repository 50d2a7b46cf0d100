"""The Store protocol: what every storage backend promises.

A store keeps readings, the per-device message sequence numbers that make delivery
exactly-once, conflicts, and alerts. Every backend (``duckdb.py``, ``postgres.py``)
passes the one contract suite in :mod:`edgewise.checks` (``check_store``).

Promises:

* ``append`` is atomic and durable: when it returns, the readings *and* the seqs are
  committed; when it raises :class:`~edgewise.errors.StoreError`, nothing of the call is.
* It is idempotent: a reading whose (device, metric, ts) is already stored with the same
  value is counted as a duplicate and not stored again; with a *different* value it is
  kept in the conflicts table and never overwrites the first.
* ``seq_watermark(device)`` is the highest seq ``w`` such that every seq in ``1..w`` is
  stored (devices number their messages from 1). This is what the gateway acknowledges.
* ``stored_seqs(device, seqs)`` says exactly which of ``seqs`` are recorded as stored for
  the device, also those another process sharing the store stored.
  ``stored_seqs_many({device: seqs})`` answers it for many devices at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edgewise.telemetry import Reading

__all__ = ["EVENT_ACKNOWLEDGED", "EVENT_LABELLED", "EVENT_MERGED", "Alert", "AlertEvent",
           "AppendResult", "Conflict", "DeviceSummary", "Store"]

#: The alert event an acknowledgement of an open alert writes (:meth:`Store.alert_events`).
EVENT_ACKNOWLEDGED = "alert.acknowledged"
#: The alert event a label (a person's verdict) on an alert writes.
EVENT_LABELLED = "alert.labelled"
#: The alert event a merge writes (:meth:`Store.merge_alert`): the alert it names is part
#: of another one now (``detail["merged_into"]``).
EVENT_MERGED = "alert.merged"


@dataclass(slots=True)
class AppendResult:
    """What one ``append`` did; ``watermarks`` maps each touched device to its seq watermark.

    ``stored_positions`` are the positions, ascending, in the readings given to ``append``
    of those it stored (not a duplicate, not a conflict); ``None`` where a store does not
    say (then take every reading as stored).
    """

    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    watermarks: dict[str, int] = field(default_factory=dict)
    stored_positions: list[int] | None = None
    #: Devices whose seq state this process held belonged to a device deleted since (by
    #: another process sharing the store) and was loaded again: the caller drops what
    #: else it keeps of them (detectors, seq bookkeeping), as after its own deletion.
    reset: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Conflict:
    """A reading that arrived with a different value for an already stored (device, metric, ts)."""

    device_id: str
    metric: str
    ts_ns: int
    stored_value: float
    new_value: float
    seq: int | None
    received_ns: int


@dataclass(slots=True)
class DeviceSummary:
    """Per-device totals for the fleet overview."""

    device_id: str
    readings: int
    first_ns: int | None
    last_ns: int | None
    metrics: list[str]


@dataclass(slots=True)
class Alert:
    """An alert: a span of a device's time that a detector (or the gateway) flagged.

    ``kind`` is ``"anomaly"`` for detector alerts and ``"seq_gap"`` for missing messages.
    ``drivers`` maps metric name to its contribution (sums to about 1 for anomalies).
    ``status`` is ``"open"`` or ``"acknowledged"``; ``label`` is ``None``, ``"true_alarm"``
    or ``"false_alarm"``. ``merged_into`` is ``None`` for a live alert and, for an alert
    that a later reading showed to be part of another one (see ``Store.merge_alert``),
    the id of the alert that now covers it: such an alert is no longer listed, but can
    still be read by its id.
    """

    device_id: str
    start_ns: int
    end_ns: int
    score: float
    kind: str = "anomaly"
    drivers: dict[str, float] = field(default_factory=dict)
    message: str = ""
    id: str = ""
    created_ns: int = 0
    status: str = "open"
    label: str | None = None
    acked_by: str | None = None
    labelled_by: str | None = None
    note: str | None = None
    merged_into: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]


@dataclass(slots=True)
class AlertEvent:
    """What was done to an alert, kept in the store's outbox (``alert_events``) by the
    write that did it: ``event`` is ``"alert.acknowledged"`` or ``"alert.labelled"`` (a
    person's), or ``"alert.merged"`` (the gateway's: the alert is part of another now).

    ``id`` numbers the events of a store in the order they were committed (never reused,
    also after a device's events were deleted or retention pruned them); ``actor`` is who
    did it (``"gateway"`` for a merge), ``at_ns`` when (wall clock, ns); ``detail`` holds
    ``acked_by`` (acknowledged) or ``label``, ``labelled_by`` and ``note`` (labelled), as
    the alert had them after the write, or ``merged_into`` (the surviving alert's id) and
    ``also_merged`` (the ids of the alerts merged into this one before, which name the
    survivor now too) for a merge.

    >>> e = AlertEvent(1, "a1", "pump-1", "alert.acknowledged", "ops", 5, {"acked_by": "ops"})
    >>> e.event, e.detail["acked_by"]
    ('alert.acknowledged', 'ops')
    """

    id: int
    alert_id: str
    device_id: str
    event: str
    actor: str
    at_ns: int
    detail: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Store(Protocol):
    """Storage backend protocol. See the module docstring for the promises."""

    url: str

    def append(
        self, readings: Sequence[Reading], seqs: Mapping[str, Iterable[int]] | None = None
    ) -> AppendResult:
        """Store readings and the message seqs they came with, atomically and idempotently."""
        ...

    def query(
        self,
        device_id: str,
        metric: str | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        step_ns: int | None = None,
        limit: int | None = None,
    ) -> list[tuple[str, int, float]]:
        """Rows ``(metric, ts_ns, value)`` in ``[start_ns, end_ns)``, sorted by metric then time
        (the first ``limit`` of them when given: the backend reads no more).

        With ``step_ns`` the values are averaged per bucket; the bucket's start is its time.
        """
        ...

    def query_many(
        self,
        device_ids: Sequence[str],
        start_ns: int | None = None,
        end_ns: int | None = None,
        step_ns: int | None = None,
        limit: int | None = None,
    ) -> dict[str, list[tuple[str, int, float]]]:
        """Each of ``device_ids`` mapped to the rows ``query(device_id, None, start_ns,
        end_ns, step_ns, limit)`` gives (``limit`` counts per device), read in one scan of
        the readings for the whole list; every asked device is a key (none stored: ``[]``).
        """
        ...

    def times_before(self, device_id: str, metric: str, before_ns: int,
                     limit: int | None = 5) -> list[int]:
        """The times of the newest ``limit`` readings of the device's ``metric`` before
        ``before_ns`` (``[]`` for none), oldest first, reading only those: the history a
        quality report of a range starting at ``before_ns`` judges a slow metric by."""
        ...

    def count_metric(self, device_id: str, metric: str, start_ns: int | None = None,
                     end_ns: int | None = None) -> int:
        """How many readings of the device's ``metric`` are stored in ``[start_ns,
        end_ns)``, read from the index alone."""
        ...

    def seq_watermark(self, device_id: str) -> int:
        """Highest ``w`` with every seq in ``1..w`` stored (0 when none)."""
        ...

    def seq_gaps(self, device_id: str) -> list[tuple[int, int]]:
        """Missing seq ranges ``(first, last)`` inclusive, between 1 and the highest seen."""
        ...

    def recheck_seq_gaps(self, device_id: str) -> list[tuple[int, int]]:
        """:meth:`seq_gaps`, after looking its missing seqs up in storage, where another
        process sharing the store may have stored them (the same as :meth:`seq_gaps`
        where one process owns the store)."""
        ...

    def recheck_seq_watermark(self, device_id: str) -> int:
        """:meth:`seq_watermark`, after checking the device's seq state against storage,
        where another process sharing the store may have deleted the device since (then
        the watermark storage holds, not the deleted device's); what a broker acks to a
        device that subscribes before its first message (the same as
        :meth:`seq_watermark` where one process owns the store)."""
        ...

    def stored_seqs(self, device_id: str, seqs: Iterable[int]) -> set[int]:
        """The seqs of ``seqs`` recorded as stored for the device, exactly (a seq above
        the last of :meth:`seq_gaps` may be stored or not), also those stored by another
        process sharing the store. Seq 0 never is; an empty ``seqs`` gives ``set()``; a
        seq that is not an int in ``[0, 2**62)`` raises
        :class:`~edgewise.errors.StoreError`. Never waits for a commit in flight (its seqs
        count once it is committed).

        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> _ = store.append([], seqs={"pump-1": [1, 2, 5, 9]})
        >>> store.seq_gaps("pump-1")
        [(3, 4), (6, 8)]
        >>> sorted(store.stored_seqs("pump-1", {2, 4, 9, 10}))
        [2, 9]
        >>> store.close()
        """
        ...

    def stored_seqs_many(self, seqs: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
        """:meth:`stored_seqs` for many devices in one question (on PostgreSQL one round
        trip): each device asked maps to the seqs of its ``seqs`` recorded as stored,
        ``set()`` where none is. The answers are exactly those of :meth:`stored_seqs`, one
        device at a time. ``seqs`` that is not a mapping, a device id that is not a
        non-empty str, or a bad seq raises :class:`~edgewise.errors.StoreError`.

        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> _ = store.append([], seqs={"pump-1": [1, 2, 5], "pump-2": [3]})
        >>> got = store.stored_seqs_many({"pump-1": [2, 4, 5], "pump-2": [1, 3]})
        >>> sorted(got["pump-1"]), sorted(got["pump-2"])
        ([2, 5], [3])
        >>> store.close()
        """
        ...

    def seq_readings(
        self, device_id: str, metrics: Iterable[str], seqs: Iterable[int], start_ns: int,
        end_ns: int,
    ) -> list[tuple[str, int, float, int]]:
        """Rows ``(metric, ts_ns, value, seq)`` of the device's readings of ``metrics``
        stored under one of ``seqs`` (the seq of the message each came in), in
        ``[start_ns, end_ns)``, sorted by metric then time: what tells a copy of a message
        whose times were stamped on arrival from a new one under a reused seq (see
        :meth:`Pipeline._redelivered <edgewise.gateway.pipeline.Pipeline._redelivered>`).
        Readings stored with no seq, and seq 0, are never among them; a bad seq raises
        :class:`~edgewise.errors.StoreError`.

        >>> from edgewise.store import open_store
        >>> from edgewise.telemetry import Reading
        >>> store = open_store("duckdb://:memory:")
        >>> _ = store.append([Reading("p", "t", i, float(i), seq=i) for i in range(1, 5)])
        >>> store.seq_readings("p", ["t"], {2, 4}, 0, 4)
        [('t', 2, 2.0, 2)]
        >>> store.close()
        """
        ...

    def conflicts(self, device_id: str | None = None, limit: int = 1000) -> list[Conflict]:
        """Conflicting readings, newest first."""
        ...

    def devices(self) -> list[DeviceSummary]:
        """Summaries of every device that has readings."""
        ...

    def device(self, device_id: str) -> DeviceSummary | None:
        """The summary of one device, equal to its entry in :meth:`devices`; ``None``
        where that has none (no readings: unknown, deleted, or retention took them all;
        also text no store can hold, a NUL character or a lone surrogate). Reads that
        device's summary only, not every device's: what a request about one device asks.
        A ``device_id`` that is not a str raises :class:`~edgewise.errors.StoreError`."""
        ...

    def has_device_data(self, device_id: str) -> bool:
        """Whether the store holds any row of the device (readings, seqs, alerts...)."""
        ...

    def held_device_ids(self) -> set[str]:
        """Ids of the devices of which the store holds rows other than readings (seqs,
        alerts, conflicts...): with :meth:`devices`, every device it holds data of."""
        ...

    #: Whether :meth:`delete_device` purges by default and the gateway's retention purges
    #: (at most daily): True where a purge is cheap enough to run unasked (DuckDB).
    PURGES_BY_DEFAULT: bool

    def delete_device(self, device_id: str, *, purge: bool = ...) -> int:
        """Delete all of a device's readings, seqs, conflicts and alerts (and its record of
        trimmed history, :meth:`trimmed_before`: an id added again starts whole), and purge
        them from the disk (:meth:`purge`) when ``purge`` (default:
        :attr:`PURGES_BY_DEFAULT`); return rows deleted."""
        ...

    def delete_before(
        self, ts_ns: int, device_id: str | None = None, *, purge: bool = False
    ) -> int:
        """Retention: delete readings older than ``ts_ns``, and, in the same transaction,
        the alert events written before it (:meth:`prune_alert_events`) and, for each
        device it took readings of, ``ts_ns`` as the cut its history was trimmed at
        (:meth:`trimmed_before`); return how many readings. With ``purge=True`` they are
        then purged from the disk (:meth:`purge`)."""
        ...

    def trimmed_before(self, device_id: str) -> int | None:
        """The latest cut (ns) of a :meth:`delete_before` that took readings of the device:
        its readings before it were deleted, so its stored history no longer starts at its
        beginning (what a RUL model, which reads a unit's age from its whole history, must
        know); ``None`` when none did, or since :meth:`delete_device`. A store made before
        this record has none of the deletions done before its upgrade."""
        ...

    def purge(self) -> bool:
        """Rewrite the storage so that deleted rows' bytes are gone from the store's files;
        True when done, False when this backend or role cannot (it then says why)."""
        ...

    def set_aside_logs(self) -> list[Path]:
        """Files beside the store that still hold deleted data and that neither a deletion
        nor :meth:`purge` touches (DuckDB: the write-ahead logs ``edgewise repair`` moved
        aside), oldest first; ``[]`` where there are none. Deletions name them."""
        ...

    def add_alert(self, alert: Alert) -> Alert:
        """Store a new alert; fills ``id`` and ``created_ns`` and returns it. In the same
        transaction it takes the store's next raise number for it (see
        :meth:`raised_alerts`)."""
        ...

    def raised_alerts(self, after_seq: int = 0,
                      limit: int | None = 1000) -> list[tuple[int, Alert]]:
        """The live alerts whose raise number is above ``after_seq``, as ``(number,
        alert)``, lowest number first, at most ``limit``.

        :meth:`add_alert` numbers each alert from a counter kept in the store, in its
        transaction, whose row stays locked until the commit: numbers grow in commit
        order, whichever process (sharing a PostgreSQL store) wrote the alert and whatever
        its clock says, and are never reused. A reader that keeps the highest number it
        read therefore finds every alert committed since, and none twice (an alert
        webhook finds the alerts other gateways raise so). Alerts written before the
        store kept numbers, or by an older Edgewise beside this one, have none (they are
        found by :meth:`list_alerts`).

        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> a = store.add_alert(Alert("pump-1", 0, 9, 0.9, created_ns=5))
        >>> b = store.add_alert(Alert("pump-1", 20, 29, 0.9, created_ns=1))  # a clock behind
        >>> [(n, x.id == b.id) for n, x in store.raised_alerts(after_seq=1)]
        [(2, True)]
        >>> store.last_alert_seq()
        2
        >>> store.close()
        """
        ...

    def unnumbered_alerts(self, created_after_ns: int, limit: int | None = 1000, *,
                          after: tuple[int, str] | None = None) -> list[Alert]:
        """The live alerts without a raise number (written before the store kept
        numbers, or by an older Edgewise beside this one) created after
        ``created_after_ns``, oldest first (by ``created_ns``, then id), at most
        ``limit``; with ``after``, the ``(created_ns, id)`` of the last alert of a page,
        the next page. An alert webhook reads these by creation time, and the numbered
        ones by :meth:`raised_alerts`, instead of the whole :meth:`list_alerts` at each
        poll.

        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> _ = store.add_alert(Alert("pump-1", 0, 9, 0.9))
        >>> store.unnumbered_alerts(0)  # add_alert numbers every alert it writes
        []
        >>> store.close()
        """
        ...

    def last_alert_seq(self) -> int:
        """The highest raise number given so far (0 when none was): the alerts written
        from now on are numbered above it. Deleting alerts does not move it back."""
        ...

    def update_alert(self, alert_id: str, **changes: Any) -> Alert:
        """Change ``status``/``label``/``acked_by``/``labelled_by``/``note``/``start_ns``/
        ``end_ns``/``score``/``message``/``drivers`` (a late reading moves a start earlier).

        Raises ``KeyError`` for an unknown id.
        """
        ...

    def acknowledge_alert(self, alert_id: str, by: str, **changes: Any) -> tuple[Alert, bool]:
        """Acknowledge alert ``alert_id`` by ``by`` if it is open, keeping an earlier
        acknowledgement (and who gave it), and apply ``changes`` (the fields
        ``update_alert`` takes but ``status`` and ``acked_by``: a label, who gave it, a
        note) with it, in one atomic conditional write that touches live alerts only.

        Returns the alert as stored after the call and whether the write applied. It did
        not (nothing was written) when the alert was merged into another, or, without
        ``changes``, when it was acknowledged already: of callers racing to acknowledge
        one open alert, exactly one is told ``True`` and every one gets the same
        ``acked_by``; none writes onto an alert a merge took out of the list.

        Raises ``KeyError`` for an unknown id and ``StoreError`` for ``status`` or
        ``acked_by`` among ``changes``.

        A write that applied also writes, in its transaction, the events it makes (see
        :meth:`alert_events`): ``alert.acknowledged`` when the alert was open, and
        ``alert.labelled`` when ``changes`` hold a ``label`` and the write changed the
        label, who gave it or its note, or acknowledged the alert with it (a repeated
        identical verdict writes none), in that order.
        """
        ...

    def alert_events(self, after_id: int = 0, limit: int | None = 1000) -> list[AlertEvent]:
        """The alert events (acknowledgements and labels, written by
        :meth:`acknowledge_alert`; merges, written by :meth:`merge_alert`) numbered above
        ``after_id``, oldest first, at most ``limit``: the outbox the alert webhooks send
        from.

        Ids grow in commit order: once an event is listed, every event with a lower id
        that will ever be listed is listed too (a reader that remembers the last id it
        handled misses none). A device's deletion deletes its events; retention
        (:meth:`delete_before`) deletes the events written before its cut
        (:meth:`prune_alert_events`), not the alerts.

        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> a = store.add_alert(Alert("pump-1", 0, 9, 0.9))
        >>> _ = store.acknowledge_alert(a.id, "ops", label="true_alarm", labelled_by="ops")
        >>> [(e.id, e.event, e.actor) for e in store.alert_events()]
        [(1, 'alert.acknowledged', 'ops'), (2, 'alert.labelled', 'ops')]
        >>> store.alert_events(after_id=2), store.last_alert_event_id()
        ([], 2)
        >>> store.close()
        """
        ...

    def alert_events_for(self, alert_id: str, after_id: int = 0,
                         limit: int | None = 1000) -> list[AlertEvent]:
        """The alert events of alert ``alert_id`` only (as :meth:`alert_events` lists them)
        numbered above ``after_id``, oldest first, at most ``limit``: what one alert's
        writes made, read without listing every other alert's events (an API request
        asking whether its verdict acknowledged the alert)."""
        ...

    def last_alert_event_id(self) -> int:
        """The highest id an alert event of this store was given (0 when none was): the
        events written from now on are numbered above it. Deleting or pruning events
        does not move it back."""
        ...

    def prune_alert_events(self, before_ns: int, device_id: str | None = None) -> int:
        """Delete the alert events written (``at_ns``, wall clock) before ``before_ns``
        (of ``device_id`` only, when given); return how many. :meth:`delete_before` (the
        gateway's retention) does it with its cut, in its transaction, so the outbox
        keeps the events of the retention window and no older ones.

        Ids are not reused and :meth:`last_alert_event_id` does not move back: a reader
        whose cursor is below a pruned event goes on from the next one kept (an alert
        webhook whose receiver was down for longer than the retention misses the
        acknowledgements, labels and merges older than it; the alerts themselves stay).
        """
        ...

    def store_id(self) -> str:
        """This store's own id: random, made the first time the store is opened (an older
        store gets one at its next open) and kept in it, so a copy of the store (a purge's
        rewrite, a backup restored) has it too, and another store (a fresh file, a move
        to PostgreSQL) has another. A position kept outside the store (an alert
        webhook's last event sent) is of this store only: event ids start over in another.

        >>> from edgewise.store import open_store
        >>> a, b = open_store("duckdb://:memory:"), open_store("duckdb://:memory:")
        >>> a.store_id() == a.store_id(), a.store_id() == b.store_id()
        (True, False)
        >>> a.close(); b.close()
        """
        ...

    def merge_alert(self, alert_id: str, into: str, **changes: Any) -> Alert:
        """Mark alert ``alert_id`` as part of alert ``into`` of the same device, in one
        transaction, and return ``into`` as stored.

        ``changes`` (the fields ``update_alert`` takes: the widened span, score, drivers)
        are applied to ``into``. ``alert_id`` gets ``merged_into = into`` (as do alerts
        merged into it before) and drops out of ``list_alerts``; ``get_alert`` still
        returns it, with its own span, acknowledgement and label. Its acknowledgement
        (``status``, ``acked_by``) carries over to ``into`` when ``into`` is not
        acknowledged, and its label (``label``, ``labelled_by``, ``note``) when ``into``
        has none; a label ``into`` already has is kept.

        In the same transaction it writes an ``alert.merged`` event of ``alert_id`` (see
        :meth:`alert_events`; actor ``"gateway"``), whose detail names ``into``
        (``merged_into``) and the alerts merged into ``alert_id`` before, which now name
        ``into`` too (``also_merged``): the alert webhooks tell the receivers.

        Raises ``KeyError`` for an unknown id and ``StoreError`` when the two are the
        same alert, belong to different devices, or either was merged already.
        """
        ...

    def get_alert(self, alert_id: str) -> Alert:
        """One alert by id (a merged one too); ``KeyError`` if unknown."""
        ...

    def absorbed(self, alert_id: str) -> list[str]:
        """Ids of the alerts merged into ``alert_id``, directly or transitively."""
        ...

    def list_alerts(
        self,
        device_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        since_ns: int | None = None,
        limit: int = 100,
        *,
        after: tuple[int, int, str] | None = None,
    ) -> list[Alert]:
        """Live alerts (none merged into another), newest first, filtered.

        Newest first is by ``start_ns``, then ``created_ns``, then ``id``, all descending:
        one order, even for alerts alike in both times. ``after`` is the
        ``(start_ns, created_ns, id)`` of the last alert of a page; the next page is the
        alerts that follow it in that order (keyset paging: filters hold on every page,
        and an alert added or merged meanwhile shifts no other).
        """
        ...

    def open_alert_counts(self) -> dict[str, int]:
        """How many open live alerts each device has, by device id: the alerts
        ``list_alerts(device_id, status="open")`` lists (none merged into another), all of
        them, counted in the store (no alert is loaded). A device with none is left
        out."""
        ...

    def count_readings(self) -> int:
        """Total readings stored."""
        ...

    def close(self) -> None:
        """Flush and release the backend; safe to call twice."""
        ...
