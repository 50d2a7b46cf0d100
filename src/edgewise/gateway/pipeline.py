"""The ingest pipeline: decode and validate, rate limit, commit, then clean, detect and alert.

Every transport (MQTT, HTTP) hands payloads to one :class:`Pipeline`. The order is the
durability contract: a payload is acknowledged (``IngestResult.ack_seq``) only after
``store.append`` has committed it. Detection runs afterwards on a worker thread, so a
slow detector delays alerts, never acknowledgements; ``edgewise_detection_backlog``
shows how far behind it is.

Data quality (:class:`~edgewise.quality.stream.StreamCleaner`) sits *after* the commit, in
front of detection: the store keeps the raw readings exactly once (its own seq and
(device, metric, time) dedup and conflict rules decide what is stored, and the ack depends
on nothing else), while the cleaner decides what the detectors see. Readings it removes as
``duplicate`` (a re-delivered reading), ``conflict``, ``invalid``, ``out_of_range`` or
``rate`` are stored but not scored; readings ``out_of_order`` for the cleaner (older than
their stream's newest kept reading) are still scored under the pipeline's own
``late_horizon_s`` rule, unless the store did not store them (``AppendResult.
stored_positions``: a re-delivery, or a conflict with the value it holds; only what the
store holds is scored);
``spike`` and ``stuck`` readings are flagged and counted but scored as they are (a spike
is what the detectors are for); a spike is not learned while its level detector is in the
warm-up that fixes its range for good (one glitch there would blind it), and after it is
learned held to one width beyond the range seen (``learnable``: one 65535 error code
made every later spike below it unremarkable); nor is it learned by the
fast-stream gate's running mean and deviation, nor by the cross-sensor gate
(:mod:`edgewise.gateway.cross_sensor`), which caps the alarms of a fast device's
operating changes that its sensors agree on, nor by the device's multivariate detector
(T²: one glitch would widen its covariance and blind it for a thousand readings or more).
Every decision is counted in ``edgewise_quality_removed_total{reason}`` /
``edgewise_quality_flagged_total{reason}`` and per device in :meth:`Pipeline.quality_counts`.

The device's multivariate detector scores a row: its metrics of one reading time. A device
that sends each metric in its own message (a temperature, then a vibration a few ms later)
has one metric per reading time; its rows are put together again
(:mod:`edgewise.gateway.split_rows`): a one-metric reading joins the device's open row
when it is within half the device's sampling interval (the median step between readings
of one metric) of the row's first reading and its metric is not in the row yet, and the
row is scored, and learned, once: when it holds every metric the device sent within the
last three intervals (with the reading that completed it), else when the next sample
closes it. A device that sends its metrics together is scored on its rows as they are.

>>> from edgewise.config import Settings
>>> from edgewise.store import open_store
>>> store = open_store("duckdb://:memory:")
>>> p = Pipeline(store, Settings())
>>> body = b'{"ts": 1700000000, "metrics": {"rpm": 1450}, "seq": 1}'
>>> r = p.ingest("pump-1", body)
>>> r.accepted, r.ack_seq
(1, 1)
>>> p.close(); store.close()
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import pickle
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise._private import write_private
from edgewise.alerts import AlertManager
from edgewise.config import Settings
from edgewise.detect.base import Detector
from edgewise.errors import ConfigError, PayloadError, RateLimitError, StoreError
from edgewise.gateway.cross_sensor import STATE_VERSION, CrossSensorGate
from edgewise.gateway.fast_streams import FastStreamGate
from edgewise.gateway.label_sync import LabelSync
from edgewise.gateway.metric_cap import MetricCap
from edgewise.gateway.metrics import Metrics
from edgewise.gateway.split_rows import RowAssembler
from edgewise.quality.stream import STATE_VERSION as CLEANER_STATE_VERSION
from edgewise.quality.stream import StreamCleaner
from edgewise.security.credentials import Security
from edgewise.security.ratelimit import RateLimiter
from edgewise.store.base import Alert, AppendResult, Store
from edgewise.telemetry import (
    SEQ_SCAN_FACTOR,
    Decoded,
    Reading,
    _undecodable,
    decode,
    payload_seqs,
)

__all__ = ["IngestResult", "Pipeline", "default_detector_factory", "default_multivariate_factory",
           "drop_device_state"]

log = logging.getLogger(__name__)

#: One-metric reading times (of several metrics) after which a device whose metrics never
#: share a timestamp is logged once: its multivariate detector never runs.
SINGLE_ROWS_WARN = 200

#: A fast counter's readings further apart than this many of its typical intervals
#: (readings lost between them) are gated on their rise per typical interval (see _detect).
COUNTER_GAP_FACTOR = 1.5

#: A device's anomalous readings at most this many typical intervals apart (of the metrics
#: driving them, :meth:`FastStreamGate.interval_s`) join one alert where that is longer
#: than ``merge_gap_s``: a device read every 5 minutes had each anomalous reading of a
#: lasting fault raise an alert of its own (see :meth:`Pipeline._merge_gap_s`).
MERGE_GAP_INTERVALS = 2.5

#: A device's seq_gap alerts are read this many at a time when a gateway takes them up
#: (:meth:`Pipeline._adopt_gaps`), page after page until all are read.
ADOPT_PAGE = 1000

#: A stream of a device silent (device time: behind the device's newest scored reading)
#: for longer than this many of its typical intervals (:meth:`FastStreamGate.interval_s`),
#: and at least :data:`FLOOR_SILENT_MIN_S`, no longer holds the device's scoring floor
#: back (see :meth:`Pipeline._scoring_floor`): a removed sensor, or a metric sent once,
#: had every alert of its device since then held by the alert manager (up to its cap)
#: and taken up again from the store at each restart.
FLOOR_SILENT_INTERVALS = 100

#: The shortest silence after which a stream no longer holds the scoring floor back
#: (also for a stream whose typical interval is not known yet): a sensor that uploads
#: its readings hourly holds it back between its uploads.
FLOOR_SILENT_MIN_S = 3600.0


@dataclass
class IngestResult:
    """What happened to one payload; ``ack_seq`` is the device's seq watermark after commit.

    In a batch (``ingest_many``) ``accepted`` counts the payload's valid readings, and
    ``duplicates``/``conflicts`` are counted for the whole batch on the metrics only.
    """

    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: list[PayloadError] = field(default_factory=list)
    ack_seq: int = 0
    device_id: str = ""
    seqs: list[int] = field(default_factory=list)
    #: Every rejection by reason: ``rejected`` lists only the first
    #: :data:`~edgewise.telemetry.MAX_LISTED_REJECTIONS` (empty: those listed are all).
    rejected_counts: dict[str, int] = field(default_factory=dict)


def default_detector_factory() -> Detector:
    """The per-(device, metric) detector: :class:`~edgewise.detect.StateAware` over the
    default level detector (:func:`edgewise.detect.default_detector`), so a door contact
    or an on/off flag is scored on how long its states last and how often it switches,
    not on every switch as a jump.

    >>> det = default_detector_factory()
    >>> type(det).__name__, det.base
    ('StateAware', 'context-likelihood')
    """
    from edgewise.detect import DEFAULT_DETECTOR, StateAware

    return StateAware(base=DEFAULT_DETECTOR)


def per_metric_factory(detector: str) -> Callable[[], Detector]:
    """The per-(device, metric) factory for a gateway whose setting ``detector``
    (``EDGEWISE_DETECTOR``, ``--detector``) names the level detector: each metric is
    :class:`~edgewise.detect.StateAware` over it, so two-state streams stay states.

    >>> per_metric_factory("ewzscore")().base
    'ewzscore'
    >>> per_metric_factory("mahalanobis")
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: Setting 'detector' (EDGEWISE_DETECTOR, --detector) has value 'mahalanobis'. Use one of the one-metric level detectors: context-art, context-likelihood, ewzscore, river-hst.
    """  # noqa: E501
    from edgewise.detect import DEFAULT_DETECTOR, LEVEL_DETECTORS, StateAware

    if detector not in LEVEL_DETECTORS:
        raise ConfigError(
            f"Setting 'detector' (EDGEWISE_DETECTOR, --detector) has value {detector!r}. "
            f"Use one of the one-metric level detectors: {', '.join(LEVEL_DETECTORS)}.")
    factory: Callable[[], Detector] = (default_detector_factory if detector == DEFAULT_DETECTOR
                                       else functools.partial(StateAware, base=detector))
    try:  # one built now: a package it needs that is missing fails here, before any start
        factory()
    except ImportError as exc:
        others = ", ".join(d for d in LEVEL_DETECTORS if d != detector)
        raise ConfigError(
            f"Setting 'detector' (EDGEWISE_DETECTOR, --detector) has value {detector!r}, "
            f"which cannot be built here ({exc}); or use another one-metric level "
            f"detector: {others}.") from None
    return factory


def default_multivariate_factory() -> Detector:
    """The per-device detector: :func:`edgewise.detect.default_multivariate` (Hotelling T²
    with per-metric attribution through ``explain_one``, which fills alerts' drivers).

    >>> type(default_multivariate_factory()).__name__
    'Mahalanobis'
    """
    from edgewise.detect import default_multivariate

    return default_multivariate()


class Pipeline:
    """Decode → validate → rate limit → commit → detect → alert, for every transport.

    Parameters
    ----------
    store
        Where readings, seqs and alerts go.
    settings
        Limits (payload size, future skew, rate) and the alert threshold.
    security
        Kept for transports that authenticate through the pipeline; not used to ingest.
    detector_factory
        Builds one streaming detector per (device, metric).
    multivariate_factory
        Builds one detector per device, fed all of its metrics at once.
    late_horizon_s
        A reading older than its stream's last scored time by more than this is stored
        but not scored (counted in ``edgewise_readings_late_unscored_total``), so a
        backlog arriving late cannot set off a storm of alerts. An anomalous reading
        within it joins the device's alert it falls inside or next to (the alert manager
        keeps the device's alerts of this horizon extendable), so a fault whose readings
        are resent late stays one alert. A stream's last scored time counts as at most
        its last arrival (this gateway's wall clock), so a reading stamped ahead (as far
        as ``max_future_s`` lets it) leaves the readings after it in real time scored.
    gap_grace_s
        A seq gap still missing after this long is reported (metric and alert).
    detect_async
        Run detection on a worker thread (default) instead of inside ``ingest``.
    merge_gap_s
        A device's anomalous readings at most this far apart join one alert; or at most
        :data:`MERGE_GAP_INTERVALS` typical intervals of the metrics driving them, where
        that is longer (a device read every 5 minutes: 750 s; see :meth:`_merge_gap_s`).
    cleaner
        The streaming data-quality cleaner in front of detection (default: a
        :class:`~edgewise.quality.stream.StreamCleaner` with no per-metric limits); ``None``
        scores every committed reading as it is.
    fast_gate
        What fast streams (read more than once a minute) need to alarm: a magnitude, or a
        stuck run (default: a :class:`~edgewise.gateway.fast_streams.FastStreamGate` at the
        alert threshold and ``settings.fast_stream_z``, none where that is 0); ``None``
        alerts on the per-metric detectors' scores as they are.
    cross_gate
        What a fast device's alarms need beyond that: a break from what its other sensors
        say (default: a :class:`~edgewise.gateway.cross_sensor.CrossSensorGate` at the
        same ``settings.fast_stream_z``, none where that is 0 or there is no fast gate);
        ``None`` leaves the scores as the fast gate passed them.
    redelivery_window_s
        How long after a message whose times were stamped on arrival (SenML with no or
        relative times) the same message, delivered again, is still known as a
        re-delivery and not stored twice (see :meth:`_redelivered`).
    state_path
        Where the detectors' learned state is saved on :meth:`close` and restored from
        at start, so a clean restart does not warm every stream up again. After a crash
        the file as last written is loaded: that of the last clean stop, or of the last
        device deletion since (:meth:`forget_device` writes it again, the state of that
        moment without the device): the streams go on from what they had learned then,
        and what they learned after it is lost (their readings stay stored, and are not
        scored again). That beats warming every stream up from scratch, which leaves a fleet
        without alerts for its warm-up; nothing else depends on this file. Streams of
        metrics the store no longer holds (retention took their readings) are dropped
        from it at start. The alerts being extended are taken up again from the store
        either way, so a fault that spans a restart stays one alert; the file only adds
        how many readings each had.
    assemble_split_rows
        Give the multivariate detector the rows of a device that sends each metric in its
        own message (one metric per reading time), put together by a
        :class:`~edgewise.gateway.split_rows.RowAssembler` (the rule: see
        :mod:`edgewise.gateway.split_rows`); ``None`` (default) takes the setting
        ``assemble_split_rows`` (``EDGEWISE_ASSEMBLE_SPLIT_ROWS``, on). Off, such a device
        is judged by its per-metric detectors only. A device that sends its metrics
        together is scored the same either way. The cross-sensor gate takes each assembled
        row as a row of one time: it learns it, caps its T² and the per-metric alarms of
        its readings where the device's sensors agree on the move (an alarming reading is
        held until its row is scored, when that is in the same detection batch; else it
        alarms as it is). 4 simulated pumps with no fault, their metrics sent 3 ms apart,
        raised 4 alerts in an hour assembled (1 at setpoint changes), as many as sent
        together (before the gate judged assembled rows: 10, 6 at setpoint changes).
    max_backlog_readings
        The most committed readings waiting for detection (``detect_async``): a batch
        that would pass it (a queue holding some already) is stored and acknowledged as
        any, but not scored (counted in ``edgewise_readings_late_unscored_total`` and
        logged), so ingest faster than detection neither blocks nor grows memory
        without end (about 200 bytes a reading: 100 MB; some 20 s of detection on one
        core, within what :meth:`close` waits for it).
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        security: object | None = None,
        *,
        detector_factory: Callable[[], Detector] | None = None,
        multivariate_factory: Callable[[], Detector] | None = default_multivariate_factory,
        late_horizon_s: float = 300.0,
        gap_grace_s: float = 30.0,
        detect_async: bool = True,
        merge_gap_s: float = 60.0,
        state_path: Path | None = None,
        cleaner: StreamCleaner | bool | None = True,
        fast_gate: FastStreamGate | bool | None = True,
        cross_gate: CrossSensorGate | bool | None = True,
        redelivery_window_s: float = 600.0,
        max_backlog_readings: int = 500_000,
        assemble_split_rows: bool | None = None,
    ) -> None:
        if isinstance(max_backlog_readings, bool) or not isinstance(
                max_backlog_readings, int) or max_backlog_readings < 1:
            raise ConfigError(
                f"Pipeline max_backlog_readings has value {max_backlog_readings!r}. Use a "
                f"whole number of readings >= 1 (default 500000).")
        self.store = store
        self.settings = settings
        self.security = security
        self.metrics = Metrics()
        #: why the last telemetry commit failed, while no commit has succeeded since (None:
        #: the last one succeeded); ``/healthz`` answers 503 with it
        self.commit_failing: str | None = None
        self.detector_factory = detector_factory or per_metric_factory(settings.detector)
        self.multivariate_factory = multivariate_factory
        self.late_horizon_ns = int(late_horizon_s * 1e9)
        self.gap_grace_s = gap_grace_s
        self.redelivery_window_s = redelivery_window_s
        self.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        # a labelled alert that grows (or takes over a merged alert's verdict) gets its
        # window label rewritten over its span as stored, off the detection path: the
        # alert manager only queues it (see edgewise.gateway.label_sync)
        self.label_sync = LabelSync(
            store, settings.data_dir, security if isinstance(security, Security) else None)
        self.alerts = AlertManager(
            store, threshold=settings.alert_threshold, merge_gap_s=merge_gap_s,
            on_alert=lambda a: self.metrics.inc("edgewise_alerts_total", kind=a.kind),
            late_horizon_s=late_horizon_s, feedback=settings.alert_feedback,
            on_suppressed=lambda *_: self.metrics.inc("edgewise_alerts_suppressed_total"),
            on_span=self.label_sync.note,
        )
        self.cleaner: StreamCleaner | None = (
            StreamCleaner() if cleaner is True else (cleaner or None))
        self.fast_gate: FastStreamGate | None = (
            (FastStreamGate(min_z=settings.fast_stream_z, threshold=settings.alert_threshold)
             if settings.fast_stream_z > 0 else None) if fast_gate is True
            else (fast_gate or None))
        self.cross_gate: CrossSensorGate | None = (
            (CrossSensorGate(min_z=settings.fast_stream_z, threshold=settings.alert_threshold,
                             fleet_prior=settings.fleet_prior)
             if settings.fast_stream_z > 0 and self.fast_gate is not None else None)
            if cross_gate is True else (cross_gate or None))
        self._quality: dict[str, dict[str, dict[str, int]]] = {}
        self._detectors: dict[tuple[str, str], Detector] = {}
        self._mv: dict[str, Detector] = {}
        # the rows of devices that send one metric per message, for their multivariate
        # detector (None: not assembled); a device is in it while its detector has no
        # row of several metrics of one time (see _detect)
        if assemble_split_rows is None:
            assemble_split_rows = settings.assemble_split_rows
        self.mv_rows: RowAssembler | None = RowAssembler() if assemble_split_rows else None
        # device -> metric -> (eligible, stuck, spike) of the newest reading of each metric
        # of a device whose rows are assembled: how the cross-sensor gate takes each
        # reading of an assembled row (see _score_assembled); not saved (after a restart
        # a metric is eligible while its stream is fast, see _split_marks_of)
        self._split_marks: dict[str, dict[str, tuple[bool, bool, bool]]] = {}
        self._last_scored: dict[tuple[str, str], int] = {}
        # (device, metric) -> (time, value) of its finite reading scored last (in scoring
        # order, whatever its time): a counter's increment is scored against it (see _detect)
        self._counter_last: dict[tuple[str, str], tuple[int, float]] = {}
        # device -> (metrics seen, [one-metric reading times]) while it has no multivariate
        # detector; the count is -1 once logged (see _note_single_rows)
        self._single_rows: dict[str, tuple[set[str], list[int]]] = {}
        self.state_path = state_path
        # each device's metric names the store holds (None: it could not list them): the
        # metric cap's seed, and what the saved per-metric state is kept for (see below)
        try:
            held: dict[str, frozenset[str]] | None = {
                d.device_id: frozenset(d.metrics) for d in store.devices()}
        except Exception:  # a store without devices() support still ingests
            log.exception("could not list devices for seq-gap checks")
            held = None
        if state_path is not None and state_path.exists():
            self._load_state(state_path, held)
        self._max_seq: dict[str, int] = {}
        self._gap_since: dict[str, float] = {}
        self._gap_check_lock = threading.Lock()
        self._gaps_reported: dict[str, set[tuple[int, int]]] = {}
        # device -> its open seq_gap alerts not filled yet:
        # id -> (first, last, first message, message now)
        self._gaps_open: dict[str, dict[str, tuple[int, int, str, str]]] = {}
        self._gap_touched: set[str] = set()  # devices with a commit since the last check
        # device -> (its gaps, its open seq_gap alert ids) when they were last settled: the
        # same again settle the same way, so a device whose gaps never fill is not
        # re-settled every second, each of its alerts (acknowledged ones too) every time
        self._gaps_settled: dict[str, tuple[tuple[tuple[int, int], ...], frozenset[str]]] = {}
        self._commit_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._detect_lock = threading.Lock()
        self._listeners: list[Callable[[str, int], None]] = []
        self._alert_listeners: list[Callable[[Alert], None]] = []
        self.detect_async = detect_async
        self._queue: queue.Queue[_Committed | None] = queue.Queue(maxsize=100_000)
        # the readings of the batches queued for detection, at most max_backlog_readings
        # (the queue's own bound counts batches, of up to thousands of messages each)
        self.max_backlog_readings = max_backlog_readings
        self._queued_readings = 0
        self._unscored_logged = 0.0  # time.monotonic() of the last backlog-full warning
        self._unscored_since = 0  # readings left unscored for a full backlog since it
        # committed batches not yet scored (or dropped); counted from their commit, under
        # the commit lock, so flush() and forget_device() see a batch before it is queued
        self._busy = 0
        self._commits = 0  # commits so far: the generation of the last committed batch
        # device -> the generation of the last commit that recorded seqs of it (see
        # _recheck_redelivered)
        self._seqs_committed: dict[str, int] = {}
        # forgotten device -> the generation of the last batch committed before it was
        # forgotten: its readings in batches up to that one are dropped, not scored (they
        # may still be queued); emptied whenever no committed batch is left to score
        self._forgotten: dict[str, int] = {}
        # device -> time.time_ns() when a message of it carrying readings was last
        # committed: when it was last heard from, by this gateway's clock (see arrivals())
        self._arrived: dict[str, int] = {}
        # Of each device that sent messages with relative times (which _redelivered may
        # take for copies): its seq watermark just before the last commit that took a
        # message of it with readings for new (what it had been acknowledged when it sent
        # it), and the newest time of its readings stored under a seq it had been
        # acknowledged already (a counter restarted). See _went_on.
        self._told_new: dict[str, int] = {}
        self._reused_ts: dict[str, int] = {}
        self._closed = False
        self._worker: threading.Thread | None = None
        self._gap_worker: threading.Thread | None = None
        self._stop_gaps = threading.Event()
        self._stop_detect = threading.Event()  # close(): stop after the batch being scored
        now = time.monotonic()
        # each device's metric names, at most settings.max_metrics_per_device new ones: every
        # name holds a detector (128 KB of tables) and its saved state, so a device inventing
        # names without end grew memory and detectors.pickle without end
        self.metric_cap = MetricCap(settings.max_metrics_per_device)
        # device -> name -> how many batches in flight hold a slot for it (a name new to the
        # device, not committed yet): see _hold_names
        self._names_held: dict[str, dict[str, int]] = {}
        self._names_lock = threading.Lock()
        for device_id, names in (held or {}).items():
            self._gap_since[device_id] = now
            self.metric_cap.seed(device_id, names)
        # the names of the streams restored from the saved state count too (those the store
        # holds, and all of a device it lists none of): else each restart after retention
        # emptied some names let a device add as many new ones, detectors and all
        self._seed_cap_from_state()
        if detect_async:
            self._worker = threading.Thread(target=self._run, name="edgewise-detect", daemon=True)
            self._worker.start()
            # seq-gap checks on their own thread: one device's many gaps (store reads and
            # alert writes) must never hold up the scoring of the others
            self._gap_worker = threading.Thread(target=self._run_gaps, name="edgewise-gaps",
                                                daemon=True)
            self._gap_worker.start()
            self.label_sync.start()  # and the window labels of grown alerts on theirs

    # -- ingest ------------------------------------------------------------------------
    def ingest(self, device_id: str, payload: bytes, *, via: str = "http",
               received_ns: int | None = None,
               credential: bytes | None = None) -> IngestResult:
        """Ingest one payload; return after commit. Raises PayloadError / RateLimitError.
        ``received_ns``: when it arrived; ``credential``: the credential tag the sender
        authenticated with (see :meth:`ingest_many`)."""
        (res,) = self.ingest_many(
            [(device_id, payload, received_ns or 0)], via=via,
            credentials={device_id: credential} if credential is not None else None)
        if isinstance(res, Exception):
            raise res
        return res

    def ingest_many(
        self, items: Sequence[tuple[str, bytes] | tuple[str, bytes, int]], *,
        via: str = "mqtt", credentials: Mapping[str, bytes] | None = None,
    ) -> list[IngestResult | PayloadError | RateLimitError]:
        """Ingest many payloads in one store commit; one result or error per payload.

        Each item is ``(device_id, payload)`` or ``(device_id, payload, received_ns)``:
        ``received_ns`` (``time.time_ns()`` when the transport received it; 0: unknown) is
        the "now" of SenML with no time or relative times (RFC 8428), and of the bound on
        times ahead, so a message that waited for a commit keeps the time it arrived at.
        Without it, the time it is decoded here stands in.

        ``credentials`` maps a device to the credential tag its sender authenticated with
        (:meth:`Security.authenticate_device <edgewise.security.credentials.Security.
        authenticate_device>`): under the commit lock each is compared with the device's
        tag now, so a message authenticated before the device's secret was replaced (or the
        device deleted) is refused as ``unknown_device``, stored nowhere and never acked.
        Every device is checked to be still registered either way.

        Raises :class:`~edgewise.errors.StoreError` when the commit fails: then nothing
        of the batch is stored, and nothing may be acknowledged.

        A metric name new to a device takes one of its ``max_metrics_per_device`` only
        once a reading of it is committed: the names of messages refused (the rate limit,
        a deleted device) or never committed are given back.
        """
        names: dict[str, set[str]] = {}  # device -> new names this batch holds a slot for
        try:
            return self._ingest_many(items, via, names, credentials or {})
        finally:
            if names:
                self._release_names(names)

    def _ingest_many(
        self, items: Sequence[tuple[str, bytes] | tuple[str, bytes, int]], via: str,
        names: dict[str, set[str]], credentials: Mapping[str, bytes],
    ) -> list[IngestResult | PayloadError | RateLimitError]:
        """:meth:`ingest_many`; ``names`` gathers the new metric names the batch holds a
        slot for (:meth:`_hold_names`), which the caller gives back."""
        out: list[IngestResult | PayloadError | RateLimitError] = []
        readings: list[Reading] = []
        seqs: dict[str, list[int]] = {}
        seen: dict[tuple[str, int], bytes] = {}  # (device, seq) -> the payload it came in
        # Readings are counted, and rate-limit tokens kept, only once the commit is made:
        # a failed commit (the device resends; the transport may retry the batch in
        # halves) leaves the device's rate limit and these counters as they were.
        counts: list[tuple[str, int, str | None]] = []  # (counter, n, reason)
        taken: dict[str, int] = {}  # device -> rate-limit tokens this batch took
        # First each message is decoded and rate-limited (neither reads the store), in
        # order; then the seqs of those that may be re-deliveries are looked up in one
        # question for the whole batch, and only then is each message settled, in order.
        todo: list[tuple[str, bytes, Decoded] | PayloadError | RateLimitError] = []
        # the commit generation of each device's seqs, as of the re-delivery look-up below
        # (see _recheck_redelivered)
        looked_up = self._commits
        for item in items:
            device_id, payload = item[0], item[1]
            received_ns = item[2] if len(item) > 2 else 0
            try:
                dec = decode(
                    payload, device_id,
                    max_bytes=self.settings.max_payload_bytes,
                    max_future_s=self.settings.max_future_s,
                    now_ns=received_ns or None,
                    retention_days=self.settings.retention_days,
                )
            except PayloadError as exc:
                counts.append(("edgewise_readings_rejected_total", 1, exc.reason))
                # Over MQTT a refused message whose seqs can still be read (too large,
                # say) counts towards the ack, as a refused record does: the device would
                # otherwise keep it, and everything after it, and resend them for ever.
                # Over HTTP the refusal is the answer to the request itself.
                scan = SEQ_SCAN_FACTOR * self.settings.max_payload_bytes
                handled = payload_seqs(payload, scan) if via == "mqtt" and len(payload) <= (
                    scan) else []
                if not handled:
                    # a payload refused whole (not JSON, too large) costs one token as a
                    # refused record does: else it is answered at length without end
                    try:
                        self.rate_limiter.take(device_id, 1)
                    except RateLimitError as limited:
                        todo.append(limited)
                        continue
                    taken[device_id] = taken.get(device_id, 0) + 1
                    todo.append(exc)
                    continue
                dec = Decoded(rejected=[exc], seqs=handled)
            except Exception as exc:  # a decoder bug: reject this message, not the batch
                log.exception("decoding a message from %r failed", device_id)
                # handled (rejected with a reason), so its seq counts towards the ack as
                # any rejected message's does, and the device does not resend it for ever
                dec = Decoded(rejected=[_undecodable(exc, device_id, None, "payload", "payload")],
                              seqs=payload_seqs(payload, SEQ_SCAN_FACTOR
                                            * self.settings.max_payload_bytes))
            if dec.readings:  # a name new past the device's cap: refused (too_many_metrics)
                self._hold_names(dec, device_id, names)
            for reason, n in dec.rejected_counts().items():
                counts.append(("edgewise_readings_rejected_total", n, reason))
            # A rejected record or metric costs a token as a reading does: else a device
            # could send bad records without end, each answered at length. One that sends
            # only valid readings pays what it always did.
            cost = len(dec.readings) + dec.rejected_total
            if cost:
                try:
                    self.rate_limiter.take(device_id, cost)
                except RateLimitError as exc:
                    if dec.readings:
                        counts.append(("edgewise_readings_rejected_total", len(dec.readings),
                                       "rate_limited"))
                    todo.append(exc)
                    continue
                taken[device_id] = taken.get(device_id, 0) + cost
            todo.append((device_id, payload, dec))
        # messages taken for new that may be re-deliveries: (their index in out and in
        # counts, their readings' slice of readings, device, decoded)
        maybe: list[tuple[int, int, int, int, str, Decoded]] = []
        # each message's index in out -> the index in counts of its readings' count
        # (ingested, or duplicate): a deleted device's are counted rejected instead
        counted: dict[int, int] = {}
        try:
            stored = self._stored_seqs_of(todo)
            for entry in todo:
                if not isinstance(entry, tuple):
                    out.append(entry)
                    continue
                device_id, payload, dec = entry
                counted[len(out)] = len(counts)
                if dec.readings and (
                        # the same message delivered twice in this batch (a QoS 1 resend
                        # while the first copy waited for its commit): a re-delivery too
                        (dec.seqs and all(seen.get((device_id, s)) == payload
                                          for s in dec.seqs))
                        or self._redelivered(device_id, dec, stored.get(device_id, set()))):
                    counts.append(("edgewise_readings_duplicate_total", len(dec.readings),
                                   None))
                    out.append(self._duplicate_result(device_id, dec))
                    continue
                # a seq reused for other readings: the store tells duplicates, conflicts
                fresh = [s for s in dec.seqs if (device_id, s) not in seen]
                for s in dec.seqs:
                    seen.setdefault((device_id, s), payload)
                if self._may_be_redelivered(dec):
                    maybe.append((len(out), len(counts), len(readings),
                                  len(readings) + len(dec.readings), device_id, dec))
                readings.extend(dec.readings)
                if dec.seqs:
                    seqs.setdefault(device_id, []).extend(fresh)
                counts.append(("edgewise_readings_ingested_total", len(dec.readings), None))
                out.append(IngestResult(accepted=len(dec.readings), rejected=dec.rejected,
                                        device_id=device_id, seqs=dec.seqs,
                                        rejected_counts=dec.rejected_counts()))
        except BaseException:  # a look-up failed: nothing is committed, the tokens go back
            for device_id, n in taken.items():
                self.rate_limiter.refund(device_id, n)
            raise
        devices = {r.device_id for r in out if isinstance(r, IngestResult)}
        if not devices:
            self._count(counts, len(items), via)
            return out
        t0 = time.perf_counter()
        with self._commit_lock:
            try:
                gone, replaced = self._deleted(devices, credentials)
                if maybe:  # first: maybe indexes readings before a deleted device's go
                    readings = self._recheck_redelivered(maybe, looked_up, readings, out,
                                                         counts, gone)
                if gone:  # deleted since it connected: a live MQTT session outlives its secret
                    readings = [r for r in readings if r.device_id not in gone]
                    seqs = {d: ss for d, ss in seqs.items() if d not in gone}
                    out = [self._unknown(r, counts, counted.get(i), r.device_id in replaced)
                           if isinstance(r, IngestResult) and r.device_id in gone else r
                           for i, r in enumerate(out)]
                    devices -= gone
                    if not devices:
                        self._count(counts, len(items), via)
                        return out
                told = self._told_before(maybe, out)
                try:
                    res = self.store.append(readings, seqs or None)
                except StoreError as exc:  # /healthz says so until a commit succeeds
                    self.commit_failing = f"{type(exc).__name__}: {str(exc)[:300]}"
                    raise
                self.commit_failing = None
            except BaseException:  # nothing committed: the device's tokens go back
                for device_id, n in taken.items():
                    self.rate_limiter.refund(device_id, n)
                raise
            for d in res.reset:  # deleted through another gateway sharing the store:
                # what this one kept of it was the deleted device's (this batch is the new's)
                log.info("device %r was deleted through another gateway; its state here "
                         "is dropped", d)
                self._forget(d, self._commits)
            if told:
                self._note_told(told, maybe, out, res.reset)
            if names:  # the new names of committed readings are the devices' now
                self._admit_names(readings, names)
            self._count(counts, len(items), via)
            self._commits += 1
            for d, ss in seqs.items():
                if ss:
                    self._seqs_committed[d] = self._commits
            arrived = time.time_ns()
            batch = _Committed(readings, self._commits, res.stored_positions, arrived)
            with self._state_lock:
                self._busy += 1  # _submit() (or the finally below) counts it off
                self._arrived.update((r.device_id, arrived) for r in out if isinstance(
                    r, IngestResult) and (r.accepted or r.duplicates))
        try:
            return self._after_commit(items, out, devices, seqs, res, batch, t0)
        finally:
            if not batch.submitted:  # no readings, or something failed before detection
                self._done()

    def _after_commit(
        self, items: Sequence[tuple[str, bytes]],
        out: list[IngestResult | PayloadError | RateLimitError], devices: set[str],
        seqs: dict[str, list[int]], res: AppendResult, batch: _Committed, t0: float,
    ) -> list[IngestResult | PayloadError | RateLimitError]:
        """Count a commit, update the seq bookkeeping, fill in the acks, tell the
        listeners, and hand the committed readings to detection."""
        m = self.metrics
        m.inc("edgewise_commit_seconds_sum", time.perf_counter() - t0)
        m.inc("edgewise_commit_seconds_count")
        m.inc("edgewise_readings_stored_total", res.stored)
        m.inc("edgewise_readings_duplicate_total", res.duplicates)
        m.inc("edgewise_readings_conflict_total", res.conflicts)
        marks = dict(res.watermarks)
        for d in devices - marks.keys():
            marks[d] = self.store.seq_watermark(d)
        now = time.monotonic()
        with self._state_lock:
            # a device forgotten since this commit: its seq bookkeeping is not made again
            live = {d for d in devices if self._forgotten.get(d, 0) < batch.gen}
            for d, ss in seqs.items():
                if ss and d in live:
                    self._max_seq[d] = max(self._max_seq.get(d, 0), max(ss))
            self._gap_touched |= live  # a reported gap may be filled now: check_gaps looks
            for d in live:
                if self._max_seq.get(d, 0) > marks[d]:
                    self._gap_since.setdefault(d, now)
                else:
                    self._gap_since.pop(d, None)
        single = len(items) == 1
        for r in out:
            if isinstance(r, IngestResult):
                r.ack_seq = marks[r.device_id]
                if single:
                    # a re-delivery found before the commit counts its duplicates too
                    r.accepted, r.duplicates = res.stored, r.duplicates + res.duplicates
                    r.conflicts = res.conflicts
        for d in devices:
            for cb in self._listeners:
                cb(d, marks[d])
        if batch:
            self._submit(batch)
        return out

    def _hold_names(self, dec: Decoded, device_id: str, names: dict[str, set[str]]) -> None:
        """Refuse the readings of ``dec`` whose metric name is new to ``device_id`` past
        its cap (moved to ``dec``'s rejections, reason ``too_many_metrics``, as
        :meth:`MetricCap.refuse_past_cap <edgewise.gateway.metric_cap.MetricCap.
        refuse_past_cap>` does), and hold a slot for each new name it keeps (in ``names``,
        the batch's): a name held by a batch not committed yet counts towards the cap as
        the device's names do, so batches in flight together never pass it. The names of
        the readings committed are the device's then (:meth:`_admit_names`); the others
        are given back (:meth:`_release_names`) whatever happens to the batch."""
        cap = self.metric_cap
        if {r.metric for r in dec.readings} <= cap.known(device_id):
            return  # names the device has: nothing to hold (a name is never dropped but
            # with the device, by forget_device)
        with self._names_lock:
            known = cap.known(device_id)
            held = self._names_held.setdefault(device_id, {})
            trial = MetricCap(cap.max_metrics)  # the cap as it would be with those held
            trial.seed(device_id, known | held.keys())
            trial.refuse_past_cap(dec, device_id)
            mine = names.setdefault(device_id, set())
            for name in {r.metric for r in dec.readings} - known - mine:
                held[name] = held.get(name, 0) + 1
                mine.add(name)

    def _admit_names(self, readings: Sequence[Reading], names: dict[str, set[str]]) -> None:
        """Make the new names held by a batch (``names``) that its committed ``readings``
        carry the devices' own (under the commit lock, once the commit is made)."""
        used: dict[str, set[str]] = {}
        for r in readings:
            mine = names.get(r.device_id)
            if mine is not None and r.metric in mine:
                used.setdefault(r.device_id, set()).add(r.metric)
        with self._names_lock:
            for device_id, ms in used.items():
                self.metric_cap.seed(device_id, ms)

    def _release_names(self, names: dict[str, set[str]]) -> None:
        """Give back the slots a batch held for new names (``names``): those committed
        are the devices' by now, the others (refused, not committed) free again."""
        with self._names_lock:
            for device_id, mine in names.items():
                held = self._names_held.get(device_id)
                if held is None:
                    continue
                for name in mine:
                    n = held.get(name, 0) - 1
                    if n > 0:
                        held[name] = n
                    else:
                        held.pop(name, None)
                if not held:
                    del self._names_held[device_id]

    def _deleted(self, devices: set[str],
                 credentials: Mapping[str, bytes]) -> tuple[set[str], set[str]]:
        """Devices of ``devices`` the security store no longer knows, or whose credential
        tag is no longer the one in ``credentials`` (checked under the commit lock, which a
        device's deletion takes too: see :attr:`commit_lock`); and those of them still
        registered (their secret was replaced)."""
        tagged = {d for d in devices if d in credentials}
        tags = getattr(self.security, "credential_tags", None)
        if tagged and tags is None:
            raise TypeError(  # never commit what cannot be checked
                f"Pipeline.ingest was given the credential tags of {sorted(tagged)!r}, but "
                f"its security ({type(self.security).__name__}) has no credential_tags() "
                f"to check them against; give it an edgewise.security.Security.")
        current: dict[str, bytes] = tags(tagged) if tagged else {}
        replaced = {d for d in tagged if d in current and current[d] != credentials[d]}
        gone = {d for d in tagged if d not in current} | replaced
        has = getattr(self.security, "has_device", None)
        if has is not None:
            gone |= {d for d in devices - tagged if not has(d)}
        return gone, replaced

    @staticmethod
    def _unknown(res: IngestResult, counts: list[tuple[str, int, str | None]],
                 at: int | None, replaced: bool = False) -> PayloadError:
        """The refusal of a message of a device deleted since it connected (``res``, as
        it was taken), or whose secret was replaced since the message was authenticated
        (``replaced``): its readings' count (``counts[at]``, ingested or duplicate) becomes
        ``rejected{reason="unknown_device"}``, per reading as every rejection of readings
        is (a message with no readings at all, none rejected either, counts as one)."""
        device_id = res.device_id
        if at is not None:
            n = counts[at][1] or (0 if res.rejected_counts else 1)
            counts[at] = ("edgewise_readings_rejected_total", n, "unknown_device")
        why = ("its secret was replaced after this message was authenticated: send it "
               "again with the new secret" if replaced else "this one was deleted")
        return PayloadError(
            device_id=device_id, field="device", value=device_id,
            allowed=f"a registered device ('edgewise device add'); {why}",
            reason="unknown_device",
        )

    def _count(self, counts: list[tuple[str, int, str | None]], messages: int,
               via: str) -> None:
        """Add a batch's ``messages`` (by transport ``via``) and reading counts to the
        metrics, once it is committed: a batch whose commit failed is retried (the
        transport may retry it in halves) and must not count twice."""
        self.metrics.inc("edgewise_messages_total", messages, via=via)
        for name, n, reason in counts:
            if reason is None:
                self.metrics.inc(name, n)
            else:
                self.metrics.inc(name, n, reason=reason)

    def _recheck_redelivered(
        self, maybe: Sequence[tuple[int, int, int, int, str, Decoded]], looked_up: int,
        readings: list[Reading], out: list[IngestResult | PayloadError | RateLimitError],
        counts: list[tuple[str, int, str | None]], gone: Collection[str],
    ) -> list[Reading]:
        """Under the commit lock: check again whether the messages of a batch taken for new
        that may be re-deliveries (``maybe``: see :meth:`ingest_many`) are, for each
        device whose seqs a commit recorded since the batch's look-up (commit generation
        ``looked_up``). A copy delivered again while the first waited for its commit (a
        slow commit, a purge; the device's HTTP client timed out and sent it again) found
        its seqs not stored yet, and with its times stamped anew the store's dedup would
        store it twice. Such a message is made a duplicate (``out`` and ``counts`` updated)
        and its readings left out; returns the batch's readings to commit. Nothing is
        asked of the store when no such device had a commit meanwhile.

        Only this process's commits are seen: with several gateways on one PostgreSQL
        store, a copy that goes through another gateway than the first, and is looked up
        before the first commits, is stored a second time (README: a device with relative
        times sends to one gateway, or sends absolute times)."""
        later = [m for m in maybe if m[4] not in gone
                 and self._seqs_committed.get(m[4], 0) > looked_up]
        if not later:
            return readings
        asked: dict[str, set[int]] = {}
        for m in later:
            asked.setdefault(m[4], set()).update(m[5].seqs)
        stored = self.store.stored_seqs_many(asked)
        dropped: list[tuple[int, int]] = []
        for i, c, lo, hi, device_id, dec in later:
            if not self._redelivered(device_id, dec, stored.get(device_id, set())):
                continue
            n = len(dec.readings)
            counts[c] = ("edgewise_readings_duplicate_total", n, None)
            out[i] = self._duplicate_result(device_id, dec)
            dropped.append((lo, hi))
        if not dropped:
            return readings
        keep = [True] * len(readings)
        for lo, hi in dropped:
            keep[lo:hi] = [False] * (hi - lo)
        return [r for r, k in zip(readings, keep, strict=True) if k]

    def _told_before(
        self, maybe: Sequence[tuple[int, int, int, int, str, Decoded]],
        out: Sequence[IngestResult | PayloadError | RateLimitError],
    ) -> dict[str, int]:
        """Under the commit lock, before the commit: the seq watermark now (what the
        device has been acknowledged at most) of each device the commit takes a message
        with readings of for new, of those with messages that may be re-deliveries
        (``maybe``: stamped on arrival) in it or before (see :meth:`_went_on`)."""
        if not maybe and not self._told_new:
            return {}
        new = {r.device_id for r in out if isinstance(r, IngestResult) and r.accepted}
        if not new:
            return {}
        mine = {m[4] for m in maybe} | (new & self._told_new.keys())
        return {d: self.store.seq_watermark(d) for d in new & mine}

    def _note_told(
        self, told: Mapping[str, int], maybe: Sequence[tuple[int, int, int, int, str, Decoded]],
        out: Sequence[IngestResult | PayloadError | RateLimitError], reset: Collection[str],
    ) -> None:
        """Once a commit is made: note for :meth:`_went_on` each device's watermark before
        it (``told``, :meth:`_told_before`) and the newest time of the readings it stored
        under seqs the device had been acknowledged before (a counter restarted: such
        a seq is never resent). ``maybe`` indexes ``out`` as :meth:`ingest_many` made it
        (a message found a copy under the commit lock is one there now); ``reset``
        devices (deleted elsewhere) are left out."""
        for d, mark in told.items():
            if d not in reset:
                self._told_new[d] = mark
        for i, _c, _lo, _hi, d, dec in maybe:
            res = out[i]
            if (d in told and d not in reset and isinstance(res, IngestResult)
                    and res.accepted and min(dec.seqs) <= told[d]):
                newest = max(r.ts_ns for r in dec.readings)
                self._reused_ts[d] = max(self._reused_ts.get(d, newest), newest)

    @staticmethod
    def _duplicate_result(device_id: str, dec: Decoded) -> IngestResult:
        """The result of a message found to be a re-delivery: its readings counted as
        duplicates (none stored), its rejected ones as decoded."""
        return IngestResult(duplicates=len(dec.readings), rejected=dec.rejected,
                            device_id=device_id, seqs=dec.seqs,
                            rejected_counts=dec.rejected_counts())

    @staticmethod
    def _may_be_redelivered(dec: Decoded) -> bool:
        """Whether the decoder's flags leave ``dec`` a possible re-delivery (see
        :meth:`_redelivered`): readings, all of relative times, and seqs all >= 1."""
        return bool(dec.relative_times and dec.readings and dec.seqs and min(dec.seqs) >= 1)

    def _stored_seqs_of(
        self, todo: Sequence[tuple[str, bytes, Decoded] | PayloadError | RateLimitError],
    ) -> dict[str, set[int]]:
        """Per device, which seqs of a batch's possible re-deliveries (the decoded messages
        of ``todo`` that :meth:`_may_be_redelivered`) are stored: one
        :meth:`Store.stored_seqs_many <edgewise.store.base.Store.stored_seqs_many>`
        question for the whole batch (on PostgreSQL one round trip, not one per message);
        nothing is asked when no message may be one."""
        asked: dict[str, set[int]] = {}
        for item in todo:
            if isinstance(item, tuple) and self._may_be_redelivered(item[2]):
                asked.setdefault(item[0], set()).update(item[2].seqs)
        return self.store.stored_seqs_many(asked) if asked else {}

    def _redelivered(self, device_id: str, dec: Decoded,
                     stored: Collection[int] | None = None) -> bool:
        """Whether ``dec`` (a decoded message) is a message already stored, delivered
        again, whose readings' times were stamped on arrival. ``stored``: the device's
        seqs known to be stored, of those asked for the batch (at least ``dec.seqs``;
        see :meth:`_stored_seqs_of`); ``None`` asks the store.

        A SenML message with no time, or with times relative to now (RFC 8428: below
        2**28 s), gets a new time at each delivery, so the store's (device, metric, time)
        dedup cannot tell a re-delivery (a lost acknowledgement, MQTT's DUP) from new
        readings. It is taken for a re-delivery, acknowledged and not stored again, only
        when all of these hold:

        - every record's time is relative (``dec.relative_times``, as the decoder found
          it: a message with an absolute time is left to the store's dedup, as any other);
        - every seq of the message (all >= 1) is recorded as stored for the device, and
          every reading carries one;
        - the readings stored under the message's seqs (of its metrics) are the message
          itself, all shifted back by one and the same interval ``d`` of at most
          ``redelivery_window_s`` (the gap between the two deliveries' arrivals): each
          reading has its twin (same metric, value and seq) at its time less ``d``, and
          no other reading of those seqs lies in that earlier span;
        - the device stored no other reading of the message's metrics in the later half
          of that gap (after the earlier copy's end plus ``d / 2``): a device still
          waiting for the acknowledgement resends the message before it goes on (a burst
          of messages in flight when a connection dropped is resent as a burst), while one
          that went on sending had its acknowledgement. Not so for a device that had not
          been acknowledged the message when it sent the last one stored (after a message
          refused or lost its acknowledgement stops at the hole, and it resends the stored
          messages after it too): only a reading it stored since under a seq it had been
          acknowledged (its counter restarted) tells it went on then (:meth:`_went_on`).

        A device whose seq counter restarted (a reboot: README, its seqs start at 1) reuses
        stored seqs, and its readings are still stored: a seq it used over
        ``redelivery_window_s`` ago is no copy, and one used since is followed by its other
        messages (older seqs before the restart, newer ones after it). Only a restarted
        device that sends exactly the message it sent under the same seq within the window
        before, and nothing in between, is taken for a re-delivery: nothing tells the two
        apart then (a device that sends seq 1 at every wake-up must give its readings a
        time).

        >>> from edgewise.config import Settings
        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> p = Pipeline(store, Settings(), detect_async=False)
        >>> body = b'[{"n": "temp", "v": 21.5, "seq": 1}]'
        >>> p.ingest("pump-1", body).accepted, p.ingest("pump-1", body).duplicates
        (1, 1)
        >>> store.count_readings()
        1
        >>> p.close(); store.close()

        The checks run cheapest first: the decoder's flags, then the seqs (answered for
        the whole batch at once by :meth:`Store.stored_seqs_many
        <edgewise.store.base.Store.stored_seqs_many>`: the store's in-memory tracker, and
        on PostgreSQL one indexed look-up of the seqs it does not hold, which another
        gateway sharing the store may have stored; neither waits for a commit in flight),
        and only then the stored readings (:meth:`Store.seq_readings
        <edgewise.store.base.Store.seq_readings>`: those of the message's seqs in the
        window, one statement, for the few messages whose seqs are all stored), and last,
        for a shift that matched, whether anything else came in between (a look-up of at
        most one row per metric).
        """
        if not self._may_be_redelivered(dec):
            return False
        if stored is None:
            stored = self.store.stored_seqs(device_id, dec.seqs)
        if not all(s in stored for s in dec.seqs):
            return False
        rs = dec.readings
        if any(r.seq is None for r in rs):  # a reading before the pack's first seq
            return False
        window = int(self.redelivery_window_s * 1e9)
        lo, hi = min(r.ts_ns for r in rs), max(r.ts_ns for r in rs)
        metrics = sorted({r.metric for r in rs})
        earlier = {(m, ts): (v, q) for m, ts, v, q in self.store.seq_readings(
            device_id, metrics, set(dec.seqs), lo - window, hi)}
        r0 = rs[0]
        shifts = sorted({r0.ts_ns - ts for (m, ts), vq in earlier.items()
                         if m == r0.metric and vq == (r0.value, r0.seq)
                         and 0 < r0.ts_ns - ts <= window})
        for d in shifts:
            copy = {(r.metric, r.ts_ns - d): (r.value, r.seq) for r in rs}
            if copy != {k: vq for k, vq in earlier.items() if lo - d <= k[1] <= hi - d}:
                continue
            if self._went_on(device_id, dec, metrics, lo, hi, d):
                continue
            return True
        return False

    def _went_on(self, device_id: str, dec: Decoded, metrics: Sequence[str], lo: int,
                 hi: int, d: int) -> bool:
        """Whether the device went on since the earlier copy of ``dec`` (stored at times
        ``lo - d`` to ``hi - d``; ``dec``'s own span ``lo`` to ``hi``): then ``dec`` is a
        new message under a seq reused (a counter restarted), not a copy.

        As a rule, it went on when it stored another reading of ``metrics`` in the later
        half of the gap, ``(hi - d/2, lo)``: a device that lost an acknowledgement resends
        the message before it goes on. But when the device had not been acknowledged
        ``dec``'s seqs when it sent the last message stored for new (its watermark then,
        :attr:`_told_new`, lies below them: after a message refused or lost the
        acknowledgement stops at the hole, and everything the device sent since, new
        messages and resent ones, went out before it could know ``dec`` was stored), its
        messages since say nothing of that: it resends every message not acknowledged,
        stored ones after the hole too. Then only a reading stored since the earlier
        copy under a seq it had been acknowledged already (one a device never resends: its
        counter restarted) tells that it went on."""
        told = self._told_new.get(device_id)
        if told is not None and max(dec.seqs) > told:
            reused = self._reused_ts.get(device_id)
            return reused is not None and reused > hi - d
        start = hi - d // 2 + 1
        return start < lo and any(self.store.query(device_id, m, start, lo, limit=1)
                                  for m in metrics)

    @property
    def commit_lock(self) -> threading.Lock:
        """Held while a batch is checked and committed; hold it to delete a device's stored
        data, so no commit already under way for the device lands after the deletion."""
        return self._commit_lock

    def arrivals(self) -> dict[str, int]:
        """Each device's last arrival: this gateway's wall clock (``time.time_ns()``) when a
        message of it carrying readings (stored, or known duplicates) was last committed,
        over any transport, since this pipeline started; the devices' own reading times
        play no part. A device forgotten (:meth:`forget_device`) has none.

        >>> import time
        >>> from edgewise.config import Settings
        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> p = Pipeline(store, Settings(), detect_async=False)
        >>> _ = p.ingest("pump-1", b'{"ts": 1000000000, "metrics": {"a": 1}, "seq": 1}')
        >>> time.time_ns() - p.arrivals()["pump-1"] < 60 * 10**9  # now, not in 2001
        True
        >>> p.close(); store.close()
        """
        with self._state_lock:
            return dict(self._arrived)

    def on_commit(self, callback: Callable[[str, int], None]) -> None:
        """Call ``callback(device_id, watermark)`` after each commit touching the device."""
        self._listeners.append(callback)

    # -- detection ---------------------------------------------------------------------
    def _submit(self, batch: _Committed) -> None:
        """Score a committed batch (counted in ``_busy`` at its commit) now or on the
        worker; either way it is counted off once it is scored or dropped."""
        batch.submitted = True
        if not self.detect_async:
            try:
                self.detect(batch)
            finally:
                self._done()
            return
        n = len(batch)
        with self._state_lock:  # a batch is let in whole, or not at all
            room = (self._queued_readings == 0
                    or self._queued_readings + n <= self.max_backlog_readings)
            if room:
                self._queued_readings += n
        if room:
            try:
                self._queue.put_nowait(batch)
            except queue.Full:
                with self._state_lock:
                    self._queued_readings -= n
                room = False
        if not room:  # stored and acknowledged, never scored: counted and logged
            self._backlog_full(batch)
        self.metrics.set("edgewise_detection_backlog", self._queue.qsize())

    #: Seconds between two warnings that the detection backlog is full (the readings left
    #: unscored meanwhile are summed in the next).
    backlog_warn_every_s: float = 60.0

    def _backlog_full(self, batch: _Committed) -> None:
        """Leave a committed batch unscored: detection's backlog holds
        :attr:`max_backlog_readings` readings (or its batch limit) already. Counted in
        ``edgewise_readings_late_unscored_total``, and logged at most once every
        :attr:`backlog_warn_every_s`."""
        n = self._unscored(batch)
        self._done()
        self.metrics.inc("edgewise_readings_late_unscored_total", n)
        now = time.monotonic()
        with self._state_lock:
            self._unscored_since += n
            if self._unscored_logged and now - self._unscored_logged < self.backlog_warn_every_s:
                return
            self._unscored_logged, total, self._unscored_since = now, self._unscored_since, 0
            queued = self._queued_readings
        log.warning("detection backlog full (%d readings queued, at most %d): %d stored "
                    "reading(s) left unscored since the last warning", queued,
                    self.max_backlog_readings, total)

    def _done(self) -> None:
        """Count off one committed batch; with none left to score, no queued reading of a
        forgotten device is left to drop."""
        with self._state_lock:
            self._busy -= 1
            if self._busy == 0:
                self._forgotten.clear()

    def _run(self) -> None:
        next_flush = time.monotonic() + 1.0
        while not self._stop_detect.is_set():
            try:
                batch = self._queue.get(timeout=0.5)
            except queue.Empty:
                batch = []
            if batch is None:
                return
            if batch:
                try:
                    self.detect(batch)
                except Exception:
                    log.exception("detection failed for a batch of %d readings", len(batch))
                finally:
                    with self._state_lock:
                        self._queued_readings -= len(batch)
                    self._done()
                self.metrics.set("edgewise_detection_backlog", self._queue.qsize())
            if time.monotonic() >= next_flush:
                try:  # an alert's last growth, held back, is written though no batch follows
                    self.alerts.flush()
                except Exception:
                    log.exception("writing held-back alert updates failed")
                next_flush = time.monotonic() + 1.0

    def _run_gaps(self) -> None:
        """Check seq gaps every second, apart from detection (see :meth:`check_gaps`)."""
        while not self._stop_gaps.wait(1.0):
            try:
                self.check_gaps()
            except Exception:
                log.exception("seq-gap check failed")

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every committed reading has been scored (or, of a forgotten device,
        dropped) and its alerts written, and the window labels of labelled alerts that grew
        rewritten (:attr:`label_sync`; a label file held by another writer leaves them
        queued); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._state_lock:
                idle = self._busy == 0
            if idle:
                self.alerts.flush(force=True)
                self.label_sync.sync()
                return True
            time.sleep(0.01)
        return False

    def detect(self, readings: Sequence[Reading]) -> list[Alert]:
        """Score committed readings in arrival order and raise alerts; return new/extended ones.

        Readings of a device forgotten (:meth:`forget_device`) after the commit that
        stored them are dropped: the device and its data are being deleted."""
        with self._detect_lock:
            return self._detect(readings)

    def _detect(self, readings: Sequence[Reading]) -> list[Alert]:
        t0 = time.perf_counter()
        gen = getattr(readings, "gen", None)  # a committed batch's; None: score them all
        # a stream's last scored time is marked no later than the batch's arrival (this
        # gateway's wall clock): one reading stamped ahead (EDGEWISE_MAX_FUTURE_S lets it in,
        # up to a year or more) would make every reading in real time after it "late", and
        # unscored, until real time caught up with it
        ahead = getattr(readings, "arrived_ns", 0) or time.time_ns()
        # readings the store did not store (a duplicate, a conflict) are not scored: the
        # cleaner still sees and counts them; with no cleaner they go here
        stored_at: frozenset[int] | None = getattr(readings, "stored", None)
        unstored: list[bool] | None = None
        if stored_at is not None:
            if self.cleaner is None:
                readings = [r for i, r in enumerate(readings) if i in stored_at]
            else:
                unstored = [i not in stored_at for i in range(len(readings))]
        if gen is not None and self._forgotten:
            gone = self._forgotten
            keep = [gone.get(r.device_id, 0) < gen for r in readings]
            readings = [r for r, k in zip(readings, keep, strict=True) if k]
            if unstored is not None:
                unstored = [u for u, k in zip(unstored, keep, strict=True) if k]
        rows: dict[tuple[str, int], dict[str, float]] = {}
        scores: dict[tuple[str, int], dict[str, float]] = {}
        eligible: dict[tuple[str, int], set[str]] = {}
        stuck: dict[tuple[str, int], set[str]] = {}
        spiked: dict[tuple[str, int], set[str]] = {}
        scored = late = 0
        horizon = self.late_horizon_ns
        spikes: set[int] = set()
        if self.cleaner is not None:
            readings, spikes = self._clean(readings, unstored)
        for i, r in enumerate(readings):
            key = (r.device_id, r.metric)
            last = self._last_scored.get(key)
            if last is not None and last > ahead:  # marked ahead (a wall clock set back)
                last = self._last_scored[key] = ahead
            if last is not None and r.ts_ns < last - horizon:
                late += 1
                continue
            det = self._detectors.get(key)
            if det is None:
                det = self._detectors[key] = self.detector_factory()
            x = {r.metric: r.value}
            s = det.score_one(x)
            spike = i in spikes
            # a spike in the warm-up would fix the level detector's range (and its symbol
            # grid) for good and blind it to later faults inside that range: scored (0 in
            # the warm-up), stored, counted, not learned. After it, a spike is learned held
            # to one width beyond the seen range (learnable): one 65535 glitch no longer
            # widens what is normal to 65535. A two-valued stream's switch is not for the
            # cleaner to call a spike.
            if not spike or getattr(det, "two_valued_", False):
                det.learn_one(x)
            elif not getattr(det, "warming_up", False):
                held = getattr(det, "learnable", None)
                det.learn_one(x if held is None else {r.metric: held(r.value)})
            counter = getattr(det, "is_counter", False)
            prev = self._counter_last.get(key)
            if prev is None and counter and self.fast_gate is not None:
                # after a restart: its last reading as the gate saved it, so the first
                # increment is gated too (readings lost while the gateway was down made
                # it a false alarm at every restart)
                prev = self.fast_gate.last_reading(key)
            if math.isfinite(r.value):
                # the reading scored last, not the newest stamped: a clock set ahead and
                # then right again left every increment after it ungated until real time
                # caught up, and then took one from the reading stamped ahead (an alarm)
                self._counter_last[key] = (r.ts_ns, r.value)
            if self.fast_gate is not None:
                # states are not levels: their detector judges. A counter's increments
                # are a level (a fast meter's increment noise passes its detector's novelty
                # signals as a level's noise does): gated on a stream of their own
                # (_counter_key), except a fall (running backwards, or a restart), which
                # its detector judges as it is. The rise over a gap (readings lost, a
                # dropout) is taken per typical interval, not learned: 20 s of a 1 Hz
                # meter's normal use is no 20x increment
                level = _level_stream(det)
                if (counter and prev is not None and r.ts_ns > prev[0]
                        and r.value >= prev[1]):
                    step, gap = r.value - prev[1], False
                    every = self.fast_gate.interval_s(key)
                    dt = (r.ts_ns - prev[0]) / 1e9
                    if every is not None and dt > COUNTER_GAP_FACTOR * every:
                        step, gap = step * every / dt, True
                    s = self.fast_gate.observe(_counter_key(key), r.ts_ns, step, s,
                                               learn=not (spike or gap))
                    self.fast_gate.observe(key, r.ts_ns, r.value, s, level=False,
                                           learn=not spike)  # its interval
                else:
                    s = self.fast_gate.observe(key, r.ts_ns, r.value, s, level=level,
                                               learn=not spike)
                if level and self.fast_gate.is_fast(key):
                    eligible.setdefault((r.device_id, r.ts_ns), set()).add(r.metric)
                    if self.fast_gate.stuck_fired:  # a stuck run is not a level to explain
                        stuck.setdefault((r.device_id, r.ts_ns), set()).add(r.metric)
            if spike:
                spiked.setdefault((r.device_id, r.ts_ns), set()).add(r.metric)
            scored += 1
            if last is None or r.ts_ns > last:
                self._last_scored[key] = min(r.ts_ns, ahead)
            rk = (r.device_id, r.ts_ns)
            rows.setdefault(rk, {})[r.metric] = r.value
            scores.setdefault(rk, {})[r.metric] = s
        raised: list[Alert] = []
        thr = self.alerts.threshold
        # each device's anomalous readings go to the alert manager as one batch, so a late
        # backlog joins the alert it runs into, in whatever order the batch lists it
        anomalous: dict[str, list[tuple[int, float, dict[str, float]]]] = {}
        # device -> metric -> (time, score) of the alarming readings in the open row of a
        # device whose rows are assembled: held until the row is scored in this batch,
        # when the cross-sensor gate judges them in it (an operating change its sensors
        # agree on is no alarm, as in a row sent in one message); at the batch's end,
        # those still held alarm as they are
        held: dict[str, dict[str, tuple[int, float]]] = {}
        for (device, ts_ns), row in rows.items():
            rk = (device, ts_ns)
            per = scores[rk]
            # a one-metric reading of a device whose rows are assembled: the rows it closes
            # or completes are scored (T² and the cross-sensor gate) before it is judged
            split = (self.mv_rows is not None and self.multivariate_factory is not None
                     and len(row) == 1 and (device not in self._mv or device in self.mv_rows))
            completed = False  # this reading completed a row: the gate took it in that row
            in_row = False  # it is in its device's open row: the gate takes it in that row
            split_alarms: list[tuple[int, float, dict[str, float]]] = []
            if split:
                assert self.mv_rows is not None
                if device not in self._mv:
                    self._note_single_rows(device, ts_ns, row)
                ((metric, value),) = row.items()
                mark = (rk in eligible, rk in stuck, rk in spiked)
                hold = held.get(device, {})
                for row_ns, whole, glitch in self.mv_rows.add(device, metric, ts_ns, value,
                                                              spike=rk in spiked):
                    now = row_ns == ts_ns  # completed by this reading: scored with it
                    marks = self._split_marks_of(device, whole, metric if now else None, mark)
                    mine = {m: hold.pop(m) for m in list(hold) if m in whole}
                    ms, mv_drivers, got = self._score_assembled(
                        device, whole, glitch,
                        {m: v for m, (_, v) in mine.items()} | (per if now else {}), marks)
                    for m, (t, _) in mine.items():  # the row's earlier readings, judged in it
                        v = got.pop(m)
                        if v >= thr:
                            anomalous.setdefault(device, []).append((t, v, {m: v}))
                    if now:
                        completed, per = True, got
                    else:  # closed by a later reading: scored at its own time
                        ms = max([ms, *got.values()])
                        for k, v in got.items():
                            if v >= thr * 0.5:
                                mv_drivers[k] = max(mv_drivers.get(k, 0.0), v)
                    if ms >= thr:
                        split_alarms.append((row_ns, ms, mv_drivers))
                if device in self.mv_rows:
                    self._split_marks.setdefault(device, {})[metric] = mark
                # held readings whose row closed unscored (a row of one metric): as they are
                open_row = self.mv_rows.devices_[device].row if device in self.mv_rows else {}
                for m in [m for m in hold if m == metric or m not in open_row]:
                    t, v = hold.pop(m)
                    anomalous.setdefault(device, []).append((t, v, {m: v}))
                in_row = not completed and metric in open_row
            if self.cross_gate is not None and rk in eligible and not (completed or in_row):
                per = self.cross_gate.observe(device, row, per, eligible[rk],
                                              keep=stuck.get(rk, ()), skip=spiked.get(rk, ()))
            score = max(per.values())
            drivers = {k: v for k, v in per.items() if v >= thr * 0.5}
            if self.multivariate_factory is not None and len(row) > 1:
                mv = self._mv.get(device)
                if mv is None:
                    mv = self._mv[device] = self.multivariate_factory()
                    if self.mv_rows is not None:  # its metrics come together: as always
                        self.mv_rows.forget(device)
                        self._split_marks.pop(device, None)
                ms, mv_drivers = self._device_t2(device, mv, row, (device, ts_ns) in eligible)
                for k, v in mv_drivers.items():
                    drivers[k] = max(drivers.get(k, 0.0), v)
                if (device, ts_ns) not in spiked:  # a glitch would blind it for long
                    mv.learn_one(row)
                score = max(score, ms)
            elif split:  # its assembled rows, scored above
                for row_ns, ms, mv_drivers in split_alarms:
                    if row_ns == ts_ns:  # completed by this reading: scored with it
                        score = max(score, ms)
                        for k, v in mv_drivers.items():
                            drivers[k] = max(drivers.get(k, 0.0), v)
                    else:  # closed by a later reading: scored at its own time
                        anomalous.setdefault(device, []).append((row_ns, ms, mv_drivers))
            elif self.multivariate_factory is not None and device not in self._mv:
                self._note_single_rows(device, ts_ns, row)
            # (a reading in an assembled row is learned, or not, with its row: see above)
            if (self.cross_gate is not None and (device, ts_ns) in eligible
                    and (device, ts_ns) not in spiked and not (completed or in_row)):
                self.cross_gate.learn(device)
            if score < thr:
                continue
            if in_row and rk in eligible:
                # its row is open: judged with the row's other readings when it is scored
                held.setdefault(device, {})[metric] = (ts_ns, per[metric])
                continue
            anomalous.setdefault(device, []).append((ts_ns, score, drivers))
        for device, hold in held.items():  # rows still open at the batch's end: as they are
            anomalous.setdefault(device, []).extend(
                (t, v, {m: v}) for m, (t, v) in hold.items())
        # each device's alerting on its own: one device's store error (the alert manager
        # holds a new alert the store did not take, and tries again) must not cost the
        # devices after it in the batch their alerts, nor the batch its counts
        for device, scored_readings in anomalous.items():
            try:
                raised.extend(self.alerts.observe_many(
                    device, scored_readings, floor_ns=self._scoring_floor(device),
                    gap_s=self._merge_gap_s(device, scored_readings)))
            except Exception:
                log.exception("raising the alerts of %r for %d anomalous reading(s) failed",
                              device, len(scored_readings))
        try:
            self.alerts.flush()
        except Exception:
            log.exception("writing held-back alert updates failed")
        self.metrics.inc("edgewise_readings_scored_total", scored)
        if late:
            self.metrics.inc("edgewise_readings_late_unscored_total", late)
        self.metrics.inc("edgewise_detect_seconds_sum", time.perf_counter() - t0)
        return raised

    def _split_marks_of(self, device_id: str, row: dict[str, float], metric: str | None,
                        mark: tuple[bool, bool, bool]
                        ) -> dict[str, tuple[bool, bool, bool]]:
        """Each metric of an assembled ``row`` of ``device_id``: (eligible for the
        cross-sensor gate, a stuck run, a flagged spike) as its reading was judged;
        ``mark`` for ``metric`` (the reading that completed the row). A metric whose
        reading's marks are not kept (read before a restart) is eligible while its stream
        is a fast level stream, as :meth:`_detect` decides for a reading."""
        kept = self._split_marks.get(device_id, {})
        out: dict[str, tuple[bool, bool, bool]] = {}
        for m in row:
            if m == metric:
                out[m] = mark
            elif m in kept:
                out[m] = kept[m]
            else:
                det = self._detectors.get((device_id, m))
                level = det is not None and _level_stream(det)
                fast = self.fast_gate is not None and self.fast_gate.is_fast((device_id, m))
                out[m] = (level and fast, False, False)
        return out

    def _device_t2(self, device_id: str, mv: Detector, row: dict[str, float],
                   gated: bool) -> tuple[float, dict[str, float]]:
        """The device T² score of ``row`` by its multivariate detector ``mv`` and, where it
        reaches the alert threshold, each metric's driver score (score times share: which
        sensor broke away). With ``gated`` (the row holds metrics the cross-sensor gate
        judges) the score is capped where the move is an operating change the device's
        sensors agree on (not a fault), weighed by what the score rests on (T² terms where
        the detector has them), not by the culprit ranking."""
        thr = self.alerts.threshold
        ms = mv.score_one(row)
        if ms < thr:
            return ms, {}
        shares = mv.explain_one(row)
        if gated and self.cross_gate is not None:
            t2_shares = getattr(mv, "t2_shares", None)
            weights = shares if t2_shares is None else t2_shares(row)
            ms = self.cross_gate.cap_device_score(device_id, ms, weights)
        return ms, ({k: ms * share for k, share in shares.items()} if ms >= thr else {})

    def _score_assembled(self, device_id: str, row: dict[str, float], spiked: bool,
                         scores: dict[str, float],
                         marks: Mapping[str, tuple[bool, bool, bool]]
                         ) -> tuple[float, dict[str, float], dict[str, float]]:
        """Score an assembled row (:class:`~edgewise.gateway.split_rows.RowAssembler`) of
        ``device_id`` with its multivariate detector (made on its first row), learn it
        unless ``spiked`` (a reading in it was a spike); return the score, where it
        reaches the alert threshold each metric's driver score (score times share), and
        ``scores`` as the cross-sensor gate leaves them.

        The cross-sensor gate takes the row as a row of one time (``marks``: each
        metric's (eligible, stuck, spike), see :meth:`_split_marks_of`): it learns it
        (unless ``spiked``), caps the T² score where the row's move is one its sensors
        agree on (an operating change), and caps or raises ``scores`` (the per-metric
        scores of the reading that completed the row; none for a row closed by a later
        reading, whose readings were judged already), as for a row sent in one message."""
        assert self.multivariate_factory is not None
        mv = self._mv.get(device_id)
        if mv is None:
            mv = self._mv[device_id] = self.multivariate_factory()
        gate = self.cross_gate
        fit = {m for m, (ok, _, _) in marks.items() if ok}
        if gate is not None and fit:
            scores = gate.observe(device_id, row, scores, fit,
                                  keep={m for m, (_, st, _) in marks.items() if st},
                                  skip={m for m, (_, _, sp) in marks.items() if sp})
        ms, drivers = self._device_t2(device_id, mv, row, bool(fit))  # as a row of one time
        if not spiked:
            mv.learn_one(row)
            if gate is not None and fit:
                gate.learn(device_id)
        return ms, drivers, scores

    def _note_single_rows(self, device_id: str, ts_ns: int, row: dict[str, float]) -> None:
        """Count a one-metric reading time (``ts_ns``) of a device with no multivariate
        detector; log once (a warning) when :data:`SINGLE_ROWS_WARN` of them came from
        several metrics: the multivariate detector never runs. It sees the metrics of one
        time together only when they are committed in one batch, so the warning says
        which it is: metrics stamped apart, or metrics of one time that came one at a time
        (one message each, each committed alone: over HTTP, or over MQTT when it is not
        busy), as two one-metric readings at one time tell."""
        seen = self._single_rows.get(device_id)
        if seen is None:  # (metrics, [count, last time, times seen twice])
            seen = self._single_rows[device_id] = (set(), [0, -1, 0])
        counts = seen[1]
        if counts[0] < 0:  # logged already
            return
        seen[0].update(row)
        counts[0] += 1
        if ts_ns == counts[1]:
            counts[2] += 1
        counts[1] = ts_ns
        if counts[0] >= SINGLE_ROWS_WARN and len(seen[0]) > 1:
            counts[0] = -1
            seen[0].clear()
            names = sorted(self.metric_cap.known(device_id))[:8]
            if counts[2]:
                log.warning(
                    "device %r: %d times one of its metrics %s came to detection alone: "
                    "its metrics of one time come in separate messages, each committed in "
                    "a batch of its own, and its multivariate detector (T²) sees only "
                    "metrics of one time committed together, so it does not run; only its "
                    "per-metric detectors judge it (send a device's metrics of one reading "
                    "in one message)", device_id, SINGLE_ROWS_WARN, names)
            else:
                log.warning(
                    "device %r: %d reading times of its metrics %s each held one metric, "
                    "none two: its metrics are stamped separately, so its multivariate "
                    "detector (T²) does not run; only its per-metric detectors judge it "
                    "(send a device's metrics of one reading at one timestamp)", device_id,
                    SINGLE_ROWS_WARN, names)

    def _merge_gap_s(self, device_id: str,
                     readings: Sequence[tuple[int, float, Mapping[str, float]]]
                     ) -> float | None:
        """The gap that joins ``device_id``'s anomalous ``readings`` into one alert:
        :data:`MERGE_GAP_INTERVALS` typical intervals (:meth:`FastStreamGate.interval_s`)
        of the slowest metric driving them (a driver at half the threshold or more; each
        reading's top one at least), where that is longer than ``merge_gap_s``; ``None``
        (``merge_gap_s``) where no driving metric's interval is known yet, or there is no
        fast gate. A device read every second or every 10 s keeps ``merge_gap_s``; one read
        every 5 minutes gets 750 s, so a lasting fault's readings join one alert."""
        gate = self.fast_gate
        if gate is None:
            return None
        half = self.alerts.threshold * 0.5
        metrics: set[str] = set()
        for _, _, drivers in readings:
            driving = {m for m, v in drivers.items() if v >= half}
            if not driving and drivers:
                driving = {max(drivers, key=lambda m: drivers[m])}
            metrics |= driving
        every = [i for m in metrics if (i := gate.interval_s((device_id, m))) is not None]
        if not every:
            return None
        gap = MERGE_GAP_INTERVALS * max(every)
        return gap if gap > self.alerts.merge_gap_s else None

    def _scoring_floor(self, device_id: str) -> int | None:
        """The oldest reading time of ``device_id`` that may still be scored: its streams'
        oldest last-scored time less the late horizon (each stream's own rule, see
        ``late_horizon_s``); ``None`` where none of its streams was scored yet. The alert
        manager keeps the device's alerts near it extendable, so a sensor that uploads in
        buffers joins its own alert while another sensor of the device alarms.

        A stream silent for longer than :data:`FLOOR_SILENT_INTERVALS` of its typical
        intervals, and at least :data:`FLOOR_SILENT_MIN_S` (behind the device's newest
        scored reading), is left out: a sensor removed, or a metric sent once, pinned the
        floor at its last reading for good, and the alert manager held every alert of the
        device since then (and took them up from the store at each restart)."""
        last = self._last_scored
        times = {m: t for m in self.metric_cap.known(device_id)
                 if (t := last.get((device_id, m))) is not None}
        if not times:
            return None
        newest = max(times.values())
        gate = self.fast_gate
        live = []
        for m, t in times.items():
            every = gate.interval_s((device_id, m)) if gate is not None else None
            silent_s = max(FLOOR_SILENT_MIN_S, FLOOR_SILENT_INTERVALS * (every or 0.0))
            if newest - t <= silent_s * 1e9:
                live.append(t)
        return min(live) - self.late_horizon_ns

    def forget_device(self, device_id: str) -> int:
        """Drop everything the pipeline keeps about a device; return how many streams it had.

        Called when a device is deleted (``DELETE /v1/devices/{id}``): its detectors and
        multivariate state, last-scored times, seq high-water mark and gap bookkeeping,
        and the open alert being extended all go, so a device registered
        again under the same id starts from scratch (its seq may restart at 1 without a
        false gap, and no alert update is written for an alert that was deleted). Readings
        of the device committed before this call and not yet scored (a detection backlog,
        or a commit whose readings are on their way to the queue) are dropped when their
        turn comes, so none of them brings back detectors, alerts or seq bookkeeping; the
        call does not wait for the backlog. Readings committed after it (the id registered
        again) are scored as a new device's. Call it after the device's credentials are
        revoked and before its stored data is deleted.

        >>> from edgewise.config import Settings
        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> p = Pipeline(store, Settings(), detect_async=False)
        >>> _ = p.ingest("pump-1", b'{"ts": 1700000000, "metrics": {"a": 1, "b": 2}, "seq": 1}')
        >>> p.forget_device("pump-1"), p.forget_device("pump-1")
        (2, 0)
        >>> p.close(); store.close()
        """
        with self._commit_lock:  # every batch up to this one holds readings of before
            last = self._commits
        try:
            return self._forget(device_id, last)
        finally:
            self.label_sync.forget(device_id)  # no window label rewritten for its alerts

    def _forget(self, device_id: str, last: int) -> int:
        """:meth:`forget_device`, the device's readings in batches up to generation
        ``last`` dropped unscored; return how many streams it had."""
        with self._gap_check_lock, self._detect_lock, self._state_lock:
            if self._busy:  # some of them are not scored yet: drop the device's
                self._forgotten[device_id] = last
            keys = [k for k in self._detectors if k[0] == device_id]
            for k in keys:
                del self._detectors[k]
            for k in [k for k in self._last_scored if k[0] == device_id]:
                del self._last_scored[k]
            for k in [k for k in self._counter_last if k[0] == device_id]:
                del self._counter_last[k]
            self._single_rows.pop(device_id, None)
            had_mv = self._mv.pop(device_id, None) is not None
            if self.mv_rows is not None and device_id in self.mv_rows:
                self.mv_rows.forget(device_id)
                had_mv = True
            self._split_marks.pop(device_id, None)
            self._max_seq.pop(device_id, None)
            self._seqs_committed.pop(device_id, None)
            self._gap_since.pop(device_id, None)
            self._gaps_reported.pop(device_id, None)
            self._gaps_open.pop(device_id, None)
            self._gaps_settled.pop(device_id, None)
            self._gap_touched.discard(device_id)
            self._arrived.pop(device_id, None)
            self._told_new.pop(device_id, None)
            self._reused_ts.pop(device_id, None)
            self._quality.pop(device_id, None)
            if self.cleaner is not None:
                self.cleaner.forget(device_id)
            if self.fast_gate is not None:
                self.fast_gate.forget(device_id)
            if self.cross_gate is not None:
                self.cross_gate.forget(device_id)
            self.rate_limiter.forget(device_id)  # re-added, it starts on a full bucket
            self.metric_cap.forget(device_id)
            # its held alert (id, span, metric shares) goes before the state is written
            self.alerts.forget(device_id)
            # the saved state (written at the last clean stop) still holds the device: write
            # it again now, or a crash before the next clean stop brings the device back
            if (keys or had_mv) and self.state_path is not None and self.state_path.exists():
                self.save_state(self.state_path)
        return len(keys)

    def _clean(
        self, readings: Sequence[Reading], unstored: Sequence[bool] | None = None,
    ) -> tuple[list[Reading], set[int]]:
        """The readings detection should score, and the positions among them of those
        flagged as spikes; count every cleaner decision. A reading ``unstored`` (the store
        refused it as a duplicate or a conflict) is cleaned and counted, never scored."""
        c = self.cleaner
        assert c is not None
        out: list[Reading] = []
        spikes: set[int] = set()
        m = self.metrics
        seen_removed = dict(c.removed)
        seen_flagged = dict(c.flagged)
        n_flagged = sum(seen_flagged.values())
        for j, r in enumerate(readings):
            kept = c.clean_one(r) is not None
            scorable = unstored is None or not unstored[j]
            q = self._quality.get(r.device_id)
            if q is None:
                q = self._quality[r.device_id] = {"removed": {}, "flagged": {}, "seen": {},
                                                  "kept": {}}
            q["seen"][r.metric] = q["seen"].get(r.metric, 0) + 1
            # (kind, reason, by how much): a stuck run counts whole once it qualifies, so
            # one reading may move the cleaner's count by the run's length
            changed: list[tuple[str, str, int]] = []
            if not kept:  # rare: find the reason by comparing the counters
                changed += [("removed", k, n - seen_removed.get(k, 0))
                            for k, n in c.removed.items() if n != seen_removed.get(k, 0)]
                seen_removed = dict(c.removed)
            total = sum(c.flagged.values())
            if total != n_flagged:
                changed += [("flagged", k, n - seen_flagged.get(k, 0))
                            for k, n in c.flagged.items() if n != seen_flagged.get(k, 0)]
                seen_flagged, n_flagged = dict(c.flagged), total
            for kind, reason, by in changed:
                key = f"{r.metric}:{reason}"
                q[kind][key] = q[kind].get(key, 0) + by
                m.inc(f"edgewise_quality_{kind}_total", value=by, reason=reason)
            if kept:
                q["kept"][r.metric] = q["kept"].get(r.metric, 0) + 1
                if scorable:
                    if any(kind == "flagged" and k == "spike" for kind, k, _ in changed):
                        spikes.add(len(out))
                    out.append(r)
            elif scorable and all(k in _SCORED_ANYWAY for kind, k, _ in changed
                                  if kind == "removed"):
                out.append(r)
        return out, spikes

    def quality_counts(self, device_id: str) -> dict[str, object]:
        """What the cleaner did to a device's readings since start: per metric seen, kept,
        removed by reason and flagged by reason.

        >>> from edgewise.config import Settings
        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> p = Pipeline(store, Settings(), detect_async=False)
        >>> body = b'{"ts": 1700000000, "metrics": {"rpm": 1450}, "seq": 1}'
        >>> _ = p.ingest("pump-1", body); _ = p.ingest("pump-1", body)  # re-delivered
        >>> p.quality_counts("pump-1")["metrics"]["rpm"]
        {'seen': 2, 'kept': 1, 'removed': {'duplicate': 1}, 'flagged': {}}
        >>> p.close(); store.close()
        """
        with self._detect_lock:
            q = self._quality.get(device_id, {"removed": {}, "flagged": {}, "seen": {},
                                              "kept": {}})
            per: dict[str, dict[str, object]] = {}
            for metric, n in sorted(q["seen"].items()):
                per[metric] = {"seen": n, "kept": q["kept"].get(metric, 0),
                               "removed": {}, "flagged": {}}
            for kind in ("removed", "flagged"):
                for key, n in q[kind].items():
                    metric, reason = key.rsplit(":", 1)
                    per[metric][kind][reason] = n  # type: ignore[index]
        return {"device_id": device_id, "metrics": per}

    # -- seq gaps ----------------------------------------------------------------------
    def check_gaps(self, now: float | None = None) -> list[Alert]:
        """Report seq gaps missing for longer than the grace period; return their alerts.

        A device gets at most one new ``seq_gap`` alert per check, whatever number of
        holes it has: its message names the span, how many seqs are missing, in how many
        ranges, and the first few ranges (a message with seqs 2, 4, 6, ... is one alert,
        not one per hole). The gap thread calls this every second, apart from detection;
        callers may too. One lock around the whole check keeps two callers from reporting
        the same gap twice.
        """
        with self._gap_check_lock:
            return self._check_gaps(now)

    def _check_gaps(self, now: float | None) -> list[Alert]:
        now = time.monotonic() if now is None else now
        with self._state_lock:
            due = [d for d, t in self._gap_since.items() if now - t >= self.gap_grace_s]
            touched, self._gap_touched = self._gap_touched, set()
        # a device with reported gaps still open that sent since: some may be filled now;
        # so may one not looked at since start (its gaps reported before a restart are
        # not known yet: a resend filling them all before its first check took it off
        # _gap_since, and nothing else would ever settle their alerts)
        refill = {d for d in touched
                  if self._gaps_open.get(d) or d not in self._gaps_reported} - set(due)
        out: list[Alert] = []
        for device in [*due, *refill]:
            try:
                alert = self._check_device_gaps(device, device in refill)
            except Exception:
                # one device's store error: the others are checked all the same, and this
                # one again (a due device after the grace period, a refill at the next check)
                log.exception("seq-gap check of %r failed; it is checked again", device)
                with self._state_lock:
                    if device in refill:
                        self._gap_touched.add(device)
                    else:
                        self._gap_since.setdefault(device, now)
                continue
            if alert is not None:
                out.append(alert)
        return out

    def _check_device_gaps(self, device: str, refill: bool) -> Alert | None:
        """One device of :meth:`check_gaps`: settle its reported gaps against its gaps now
        and, unless ``refill`` (only its reported gaps may have filled), report its gaps no
        report covered yet in one new alert; return that alert."""
        gaps = self.store.seq_gaps(device)
        if gaps:  # seqs this gateway misses may have come through another one
            gaps = self.store.recheck_seq_gaps(device)
        reported = self._gaps_reported.get(device)
        if reported is None:  # kept once all are taken up (a store error: again next time)
            reported = set()
            self._adopt_gaps(device, reported)
            self._gaps_reported[device] = reported
        self._settle_gaps(device, gaps)
        if refill:
            return None
        with self._state_lock:
            self._gap_since.pop(device, None)
        # A gap partly filled since it was reported (seq 2..10, then 3 arrives: 2..2 and
        # 4..10) is still the same gap: only seqs no report covered yet are new.
        spans = _merged(reported)
        new = [part for gap in gaps for part in _uncovered(gap, spans)]
        if not new:
            return None
        # another gateway sharing the store may have reported them since: one alert
        self._adopt_gaps(device, reported)
        spans = _merged(reported)
        new = [part for gap in gaps for part in _uncovered(gap, spans)]
        if not new:
            return None
        first, last = new[0][0], new[-1][1]
        head = _gap_head(new)
        now_ns = time.time_ns()
        # stored first: a store error leaves the gap unreported, to be reported again
        alert = self.alerts.raise_alert(Alert(
            device_id=device, start_ns=now_ns, end_ns=now_ns, score=1.0,
            kind="seq_gap", drivers={}, message=head,
        ))
        # every seq of first..last not missing now is stored: the span is reported
        reported.add((first, last))
        self.metrics.inc("edgewise_seq_gaps_total", len(new))
        self.metrics.inc("edgewise_seq_missing_total", sum(b - a + 1 for a, b in new))
        self._gaps_open.setdefault(device, {})[alert.id] = (first, last, head, head)
        return alert

    def _adopt_gaps(self, device: str, reported: set[tuple[int, int]]) -> None:
        """Take up the device's seq_gap alerts in the store (this gateway's before a
        restart, or another's sharing the store): their gaps count as reported, and the
        open ones are settled as this gateway's own (:meth:`_settle_gaps`, against gaps
        looked up in the tables)."""
        still_open = self._gaps_open.setdefault(device, {})
        after: tuple[int, int, str] | None = None
        while True:  # every one of them, a page at a time: an old gap is not reported again
            page = self.store.list_alerts(device_id=device, kind="seq_gap",
                                          limit=ADOPT_PAGE, after=after)
            for a in page:
                gap = _gap_from_message(a.message)
                reported.add(gap)
                if a.status == "open" and gap[0] >= 0 and a.id not in still_open:
                    still_open[a.id] = (*gap, _gap_head(a.message), a.message)
            if len(page) < ADOPT_PAGE:
                return
            last = page[-1]
            after = (last.start_ns, last.created_ns, last.id)

    def _settle_gaps(self, device: str, gaps: list[tuple[int, int]]) -> None:
        """Revisit the device's open seq_gap alerts against its ``gaps`` now: one whose
        messages have all arrived since is acknowledged by ``gateway`` (audited as
        ``alert.ack`` where the pipeline has an audit log), its message ending in "all
        arrived later"; one partly filled stays open and its message says which seqs are
        still missing."""
        still_open = self._gaps_open.get(device)
        if not still_open:
            self._gaps_settled.pop(device, None)
            return
        seen = (tuple(map(tuple, gaps)), frozenset(still_open))
        if self._gaps_settled.get(device) == seen:  # settled against these gaps already
            return
        for alert_id, (first, last, head, message) in list(still_open.items()):
            # gaps are sorted and disjoint: their ends ascend too
            lo = bisect.bisect_left(gaps, first, key=lambda g: g[1])
            hi = bisect.bisect_right(gaps, last, key=lambda g: g[0])
            still = [(max(a, first), min(b, last)) for a, b in gaps[lo:hi]]
            text = _gap_message(head, still)
            try:
                if text != message:
                    self.store.update_alert(alert_id, message=text)
                if still:
                    still_open[alert_id] = (first, last, head, text)
                    continue
                _, applied = self.alerts.acknowledge_applied(alert_id, by="gateway")
            except KeyError:  # deleted meanwhile, with the device's data
                del still_open[alert_id]
                continue
            except Exception:  # let go of it, rather than fail every gap check from now on
                log.exception("could not settle seq_gap alert %s", alert_id)
                del still_open[alert_id]
                continue
            del still_open[alert_id]
            audit = getattr(self.security, "audit", None)
            # only an acknowledgement this call made: one given before (by a person, whatever
            # their token's name) is theirs, and audited as theirs already
            if callable(audit) and applied:
                try:
                    audit("gateway", "alert.ack", alert_id,
                          {"device": device, "reason": "seq gap filled"})
                except Exception:
                    log.exception("could not audit the acknowledgement of alert %s", alert_id)
        self._gaps_settled[device] = (seen[0], frozenset(still_open))

    def _seed_cap_from_state(self) -> None:
        """Count the metric names of the per-metric state restored (detectors, last-scored
        times, the cleaner's and the fast-stream gate's streams) towards each device's
        metric cap, as the names the store holds are (:meth:`MetricCap.seed
        <edgewise.gateway.metric_cap.MetricCap.seed>`)."""
        keys: list[Iterable[tuple[str, str]]] = [self._detectors, self._last_scored]
        if self.fast_gate is not None:
            keys.append(self.fast_gate.streams_)
        if self.cleaner is not None:
            keys.append(self.cleaner.export_state())
        names: dict[str, set[str]] = {}
        for part in keys:
            for k in part:
                if isinstance(k, tuple) and len(k) == 2:
                    names.setdefault(k[0], set()).add(_stream_metric(k[1]))
        for device_id, ms in names.items():
            self.metric_cap.seed(device_id, ms)

    def _drop_emptied(self, state: dict[str, Any], held: Mapping[str, Collection[str]],
                      path: Path) -> None:
        """Drop from a loaded state the per-metric entries (``_STREAM_STATE``: detector,
        last-scored time, the fast-stream gate's and the cleaner's stream) of the metrics a
        device the store lists (``held``: device -> its metric names) no longer has:
        retention took all their readings. Of a device the store lists no readings of,
        all of them where retention took some of its readings (:meth:`Store.trimmed_before
        <edgewise.store.base.Store.trimmed_before>`); else (a store that never held its
        readings: another store, readings scored without one) its state is kept."""
        saved = {k[0] for part in _STREAM_STATE if isinstance(state.get(part), dict)
                 for k in state[part] if isinstance(k, tuple) and len(k) == 2}
        held = dict(held)
        for d in sorted(saved - held.keys()):
            try:
                trimmed = self.store.trimmed_before(d) is not None
            except Exception:  # a store that cannot tell: the state is kept
                log.exception("could not ask the store whether retention took readings "
                              "of %r; its saved detector state is kept", d)
                trimmed = False
            if trimmed:
                held[d] = ()
        dropped = 0
        devices: set[str] = set()
        for part in _STREAM_STATE:
            table = state.get(part)
            if not isinstance(table, dict):
                continue
            gone = [k for k in table if isinstance(k, tuple) and len(k) == 2
                    and k[0] in held and _stream_metric(k[1]) not in held[k[0]]]
            for k in gone:
                del table[k]
                devices.add(k[0])
            dropped += len(gone)
        if dropped:
            log.info("detector state at %s: %d stream state entries of %d device(s) dropped: "
                     "the store holds no readings of their metrics any more", path, dropped,
                     len(devices))

    def _load_state(self, path: Path,
                    held: Mapping[str, Collection[str]] | None = None) -> None:
        """Restore the saved state at ``path``; ``held``, each device's metric names the
        store holds (``None``: unknown), drops the streams of the others
        (:meth:`_drop_emptied`)."""
        try:
            with open(path, "rb") as f:
                state = pickle.load(f)  # our own file in the data directory
            self._drop_unregistered(state, path)
            if held is not None:
                self._drop_emptied(state, held, path)
            self._detectors, self._mv, self._last_scored = (
                state["detectors"], state["multivariate"], state["last_scored"])
            # a mark saved ahead of the wall clock (a reading stamped ahead, before marks
            # were bounded by arrival) would keep its stream unscored: marked now instead
            now_ns = time.time_ns()
            self._last_scored = {k: min(t, now_ns) for k, t in self._last_scored.items()}
            # files written before the gate existed have no "fast_streams": it learns afresh
            if self.fast_gate is not None and state.get("fast_streams") is not None:
                self.fast_gate.streams_ = state["fast_streams"]
            # ... nor, from another layout of the cross-sensor gate's state, "cross_sensor" at
            # its STATE_VERSION: it learns afresh rather than read fields that are not there
            if (self.cross_gate is not None and state.get("cross_sensor") is not None
                    and state.get("cross_sensor_version") == STATE_VERSION):
                self.cross_gate.devices_ = state["cross_sensor"]
            # the open rows of devices sending one metric per message (files before: none;
            # they assemble again from their next readings)
            if self.mv_rows is not None and isinstance(state.get("mv_rows"), dict):
                self.mv_rows.devices_ = state["mv_rows"]
            # the cleaner's per-stream history (files before: none, or another layout):
            # without it a re-sent last message is scored again and the spike test is off
            if self.cleaner is not None and state.get("cleaner") is not None:
                self.cleaner.import_state(state["cleaner"], state.get("cleaner_version"))
            # how many readings each alert being extended had (files before: none; the
            # alert manager then counts the stored readings over each alert's span)
            self.alerts.restore_held(state.get("alerts_held") or {})
        except Exception:
            log.exception("detector state at %s unreadable; streams warm up again", path)
            return
        # a restart with another --detector: the saved per-metric state is the old
        # detector's, so those streams warm up again under the new one
        fresh = self.detector_factory()
        kind = (type(fresh), getattr(fresh, "base", None))
        stale = [k for k, d in self._detectors.items()
                 if (type(d), getattr(d, "base", None)) != kind]
        if stale:
            log.warning("detector state at %s holds %d stream(s) scored by another detector; "
                        "they warm up again under %s", path, len(stale),
                        getattr(fresh, "base", type(fresh).__name__))
            for k in stale:
                del self._detectors[k]

    def _registered(self) -> dict[str, int] | None:
        """Each registered device's registration time (``created_ns``), or None where the
        pipeline has no :class:`~edgewise.security.Security` to ask."""
        listing = getattr(self.security, "list_devices", None)
        if listing is None:
            return None
        return {str(r.id): int(r.created_ns) for r in listing()}

    def _drop_unregistered(self, state: dict[str, Any], path: Path) -> None:
        """Drop from a loaded state every device that is no longer registered, or was
        registered again since the state was saved (another ``created_ns``): another
        gateway on the data dir may have saved it last, after a deletion this one did not
        see, and a new device under the id would be scored with the old one's detectors
        and cleaned against its readings."""
        now = self._registered()
        if now is None:
            return
        saved = state.get("devices_created")
        saved = saved if isinstance(saved, dict) else {}
        devices = {k for part in _DEVICE_STATE if isinstance(state.get(part), dict)
                   for k in state[part]}
        devices |= {k[0] for part in _STREAM_STATE if isinstance(state.get(part), dict)
                    for k in state[part] if isinstance(k, tuple) and k}
        gone = sorted(d for d in devices
                      if d not in now or (d in saved and saved[d] != now[d]))
        for d in gone:
            drop_device_state(state, d)
        if gone:
            log.info("detector state at %s: %d device(s) deleted or registered again since "
                     "it was saved start afresh: %s", path, len(gone),
                     ", ".join(map(repr, gone[:10])) + (" ..." if len(gone) > 10 else ""))

    def save_state(self, path: Path) -> None:
        """Write the detectors' learned state, owner-only and atomically (synced temp file,
        then rename: :func:`~edgewise._private.write_private`, as ``device delete`` writes
        the same file)."""
        fast = self.fast_gate.streams_ if self.fast_gate is not None else None
        cross = self.cross_gate.devices_ if self.cross_gate is not None else None
        cleaner = self.cleaner.export_state() if self.cleaner is not None else None
        write_private(path, pickle.dumps(
            {"detectors": self._detectors, "multivariate": self._mv,
             "last_scored": self._last_scored, "fast_streams": fast,
             "cross_sensor": cross, "cross_sensor_version": STATE_VERSION,
             "mv_rows": self.mv_rows.devices_ if self.mv_rows is not None else None,
             "cleaner": cleaner, "cleaner_version": CLEANER_STATE_VERSION,
             "alerts_held": self.alerts.held_state(),
             "devices_created": self._registered()}, protocol=pickle.HIGHEST_PROTOCOL))

    #: Seconds :meth:`close` gives detection to score what is queued before it stops it.
    close_wait_s: float = 30.0

    def close(self) -> None:
        """Finish scoring what is queued (for :attr:`close_wait_s` at most), stop the
        worker and save the detector state; safe to call twice.

        Detection still behind by then stops after the batch it is scoring, before the
        state is saved (so the file holds what the detectors learned, no more, no less).
        The readings left queued stay stored but are never scored, a restart included:
        logged, and counted in ``edgewise_readings_unscored_at_stop_total``."""
        if self._closed:
            return
        self._closed = True
        self._stop_gaps.set()
        if self._gap_worker is not None:
            self._gap_worker.join(timeout=30)
        save = True
        if self._worker is not None:
            save = self._stop_worker()
        try:
            self.alerts.flush(force=True)
        except Exception:
            log.exception("writing the last alert updates failed")
        self.label_sync.close()  # the window labels of the alerts that grew, last
        if self.state_path is None:
            return
        if not save:  # pickling while the worker changes the detectors: no consistent file
            log.error("detector state not saved to %s: detection was still scoring a batch "
                      "%g s after it was told to stop (the file keeps the state of the "
                      "last clean stop)", self.state_path, _STOP_BATCH_S)
            return
        try:
            self.save_state(self.state_path)
        except OSError:
            log.exception("could not save detector state to %s", self.state_path)

    def _stop_worker(self) -> bool:
        """Let detection score the queue for :attr:`close_wait_s`, then stop it between
        two batches and drop what is left, counted and logged; return whether the worker
        has ended (it may be stuck in one batch)."""
        assert self._worker is not None
        deadline = time.monotonic() + self.close_wait_s
        try:  # the queue may be full: the worker takes batches off it meanwhile
            self._queue.put(None, timeout=self.close_wait_s)
        except queue.Full:
            pass
        self._worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if not self._worker.is_alive():
            return True
        self._stop_detect.set()
        self._worker.join(timeout=_STOP_BATCH_S)
        batches = readings = 0
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            if batch is not None:
                batches += 1
                readings += self._unscored(batch)
                with self._state_lock:
                    self._queued_readings -= len(batch)
                self._done()
        self.metrics.set("edgewise_detection_backlog", 0)
        if readings:
            self.metrics.inc("edgewise_readings_unscored_at_stop_total", readings)
        if batches:
            log.warning("detection had not caught up after waiting %g s at stop: %d stored "
                        "reading(s) of %d committed batch(es) left unscored (a restart "
                        "does not score them)", self.close_wait_s, readings, batches)
        return not self._worker.is_alive()

    def _unscored(self, batch: _Committed) -> int:
        """How many readings of ``batch`` detection would have scored: those the store
        stored, of devices not forgotten since."""
        at = range(len(batch)) if batch.stored is None else batch.stored
        gone = self._forgotten
        return sum(1 for i in at if gone.get(batch[i].device_id, 0) < batch.gen)



def _level_stream(det: Detector) -> bool:
    """Whether ``det`` judges a level stream, which the fast-stream and cross-sensor gates
    take: not two-valued (states are not levels) nor a cumulative counter (its increments
    are gated on a stream of their own)."""
    return not (getattr(det, "two_valued_", False) or getattr(det, "is_counter", False))

#: The parts of the saved detector state (:meth:`Pipeline.save_state`) keyed by
#: ``(device, metric)``, and those keyed by device. ``alerts_held`` is keyed by alert id
#: (each held alert's span, readings and driver shares): :func:`drop_device_state` removes
#: the ids it is given, those of the device's alerts (``device delete`` reads them from the
#: store before it deletes them).
_STREAM_STATE = ("detectors", "last_scored", "fast_streams", "cleaner")
_DEVICE_STATE = ("multivariate", "cross_sensor", "mv_rows", "devices_created")
_ALERT_STATE = ("alerts_held",)


def drop_device_state(state: dict[str, object], device_id: str,
                      alert_ids: Iterable[str] = ()) -> int:
    """Remove ``device_id``'s entries from a saved detector state in place (what
    :meth:`Pipeline.save_state` writes: ``device delete`` edits a stopped gateway's file;
    every other device's, and every detector kind's, stay); return how many were removed.

    The held alerts are saved by alert id, which does not name the device: ``alert_ids``
    are the device's alerts, whose entries are removed too.

    >>> st = {"detectors": {("p1", "t"): 1, ("p2", "t"): 2}, "multivariate": {"p1": 3},
    ...       "last_scored": {("p1", "t"): 4}, "fast_streams": None,
    ...       "alerts_held": {"a1": (1, 2, 1, {"t": 1.0}), "a2": (1, 2, 1, {"t": 1.0})}}
    >>> drop_device_state(st, "p1", ["a1"]), st["detectors"], st["alerts_held"].keys()
    (4, {('p2', 't'): 2}, dict_keys(['a2']))
    """
    dropped = 0
    ids = {str(a) for a in alert_ids}
    for part in (*_STREAM_STATE, *_DEVICE_STATE, *_ALERT_STATE):
        table = state.get(part)
        if not isinstance(table, dict):
            continue  # absent, None (a gate turned off) or another layout: nothing to drop
        keys = [k for k in table
                if (k in ids if part in _ALERT_STATE
                    else k == device_id if part in _DEVICE_STATE
                    else isinstance(k, tuple) and k[:1] == (device_id,))]
        for k in keys:
            del table[k]
        dropped += len(keys)
    return dropped


#: Seconds :meth:`Pipeline.close` waits for detection to end the batch it is scoring, once
#: told to stop, before it gives up saving the detector state.
_STOP_BATCH_S = 60.0


class _Committed(list[Reading]):
    """The readings of one commit, in order, with the commit's generation ``gen`` (the
    pipeline's count of commits when it was made): :meth:`Pipeline.forget_device` drops a
    forgotten device's readings from batches of its generation or older.

    ``arrived_ns``: when it was committed, by this gateway's wall clock (``time.time_ns()``;
    0: unknown): how far ahead a stream's last scored time may be marked (see
    :meth:`Pipeline._detect`).

    >>> b = _Committed([Reading("pump-1", "t", 0, 1.0)], 7)
    >>> len(b), b.gen, b.submitted, b.stored, b.arrived_ns
    (1, 7, False, None, 0)
    >>> _Committed([Reading("p", "t", 0, 1.0), Reading("p", "t", 0, 1.0)], 8, [0]).stored
    frozenset({0})
    """

    def __init__(self, readings: Sequence[Reading], gen: int,
                 stored: Collection[int] | None = None, arrived_ns: int = 0) -> None:
        super().__init__(readings)
        self.gen = gen
        self.arrived_ns = arrived_ns
        self.submitted = False  # handed to detection (which then counts it off)
        # the positions of the readings the store stored (None: all of them); the others
        # (a duplicate, a conflict) are never scored, as the store does not hold them
        self.stored: frozenset[int] | None = (
            None if stored is None or len(stored) == len(self) else frozenset(stored))


#: Cleaner removals that detection scores anyway: the pipeline's late-horizon rule judges
#: order, so a reading older than its stream's last one is not dropped for that alone
#: (a reading the store did not store, a re-delivery or a conflict, is never scored).
_SCORED_ANYWAY = frozenset({"out_of_order"})


def _stream_metric(name: str) -> str:
    """The metric a per-metric state's key names: a counter's increments stream
    (:func:`_counter_key`) is its counter's.

    >>> _stream_metric("kwh"), _stream_metric(_counter_key(("p", "kwh"))[1])
    ('kwh', 'kwh')
    """
    return name.split("\x00", 1)[0]


def _counter_key(key: tuple[str, str]) -> tuple[str, str]:
    """The fast-stream gate's key for the increments of counter ``key`` (a name no metric
    has: it holds a NUL), beside the counter's own (which keeps its reading interval)."""
    return (key[0], key[1] + "\x00increments")


def _merged(ranges: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges as sorted, disjoint ranges covering the same seqs.

    >>> _merged({(4, 10), (2, 10), (12, 14), (15, 15)})
    [(2, 10), (12, 15)]
    """
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _uncovered(gap: tuple[int, int], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of the seq range ``gap`` (inclusive) that none of ``spans`` (sorted and
    disjoint, as :func:`_merged` makes them) covers.

    >>> _uncovered((4, 10), [(2, 10)])
    []
    >>> _uncovered((2, 20), [(5, 8), (12, 30)])
    [(2, 4), (9, 11)]
    """
    first, last = gap
    hi = bisect.bisect_right(spans, last, key=lambda r: r[0])  # spans[:hi] start <= last
    lo = hi
    while lo > 0 and spans[lo - 1][1] >= first:  # disjoint and sorted: ends ascend too
        lo -= 1
    parts = []
    for a, b in spans[lo:hi]:
        if a > first:
            parts.append((first, a - 1))
        first = max(first, b + 1)
        if first > last:
            return parts
    parts.append((first, last))
    return parts


#: At most this many seq ranges are spelled out in a seq_gap alert's message.
_GAP_RANGES_SHOWN = 5


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    """The first :data:`_GAP_RANGES_SHOWN` of ``ranges``, then "..." if there are more.

    >>> _ranges_text([(1, 1), (3, 4)]), _ranges_text([(k, k) for k in range(7)])
    ('1..1, 3..4', '0..0, 1..1, 2..2, 3..3, 4..4, ...')
    """
    shown = ", ".join(f"{a}..{b}" for a, b in ranges[:_GAP_RANGES_SHOWN])
    return shown + (", ..." if len(ranges) > _GAP_RANGES_SHOWN else "")


def _gap_head(gap: list[tuple[int, int]] | str) -> str:
    """A seq_gap alert's first message for the missing seq ranges ``gap`` (sorted,
    inclusive), of bounded length however many ranges there are; given an alert's
    message (``str``), the first message it grew from.

    >>> _gap_head([(3, 5)])
    'messages seq 3..5 missing (3)'
    >>> _gap_head([(3, 3), (5, 5), (7, 9)])
    'messages seq 3..9 missing (5) in 3 ranges: 3..3, 5..5, 7..9'
    >>> _gap_head('messages seq 2..10 missing (9); 4..5 still missing (2)')
    'messages seq 2..10 missing (9)'
    """
    if isinstance(gap, str):
        return gap.removesuffix(", all arrived later").split("; ", 1)[0]
    first, last = gap[0][0], gap[-1][1]
    n = sum(b - a + 1 for a, b in gap)
    base = f"messages seq {first}..{last} missing ({n})"
    return base if len(gap) == 1 else f"{base} in {len(gap)} ranges: {_ranges_text(gap)}"


def _gap_message(head: str, still: list[tuple[int, int]] | None) -> str:
    """A seq_gap alert's message, first ``head`` (:func:`_gap_head`), whose seqs ``still``
    (sorted inclusive ranges; ``None``: all of them) are missing now.

    >>> _gap_message("messages seq 3..5 missing (3)", None)
    'messages seq 3..5 missing (3)'
    >>> _gap_message("messages seq 2..10 missing (9)", [(4, 5), (7, 10)])
    'messages seq 2..10 missing (9); 4..5, 7..10 still missing (6)'
    >>> _gap_message("messages seq 3..5 missing (3)", [])
    'messages seq 3..5 missing (3), all arrived later'
    """
    if still is None:
        return head
    if not still:
        return f"{head}, all arrived later"
    try:
        n = int(head.split(" missing (", 1)[1].split(")", 1)[0])
    except (IndexError, ValueError):
        n = -1
    k = sum(b - a + 1 for a, b in still)
    if k >= n:
        return head
    return f"{head}; {_ranges_text(still)} still missing ({k})"


def _gap_from_message(message: str) -> tuple[int, int]:
    try:
        span = message.split("seq ", 1)[1].split(" ", 1)[0]
        a, b = span.split("..")
        return int(a), int(b)
    except (IndexError, ValueError):
        return (-1, -1)
