"""Alert lifecycle: raise, merge into spans, acknowledge, label.

Consecutive anomalous readings of one device become *one* open alert whose span grows
while the anomaly lasts (readings closer than ``merge_gap_s`` apart join it; the gateway
widens that to about 2.5 typical intervals for a device read less often, see ``gap_s`` of
:meth:`AlertManager.observe_many`), so a fault that lasts ten minutes is one alert, not six
hundred. A reading that arrives late joins
the alert it falls inside or next to (its start moves earlier, in the store too), so a
fault whose readings are resent late stays one alert; a late run that bridges two of the
device's alerts merges them into one (the other is marked ``merged_into`` it in the store
and no longer listed). Each alert carries the metrics that
drove it with their mean share over its readings (each reading's drivers are normalised to
shares first, so every reading weighs the same), and its message names them; a metric
whose share rounds to 0% is never named. The alerts a reading may still extend are held in
memory; after a restart (clean or not) a device's recent alerts are taken up again from the
store the first time it raises one, so a fault that spans the restart stays one alert.

With ``feedback`` on, verdicts act live: an alert labelled a false alarm raises the bar
for the next anomaly of its device led by the same metric to its peak score (plus a
margin, capped below 1 so an extreme score always alerts), decaying back to the threshold
on the device's clock; a true alarm removes the bar (:meth:`AlertManager.note_verdict`).

>>> from edgewise.store import open_store
>>> store = open_store("duckdb://:memory:")
>>> am = AlertManager(store)
>>> a = am.observe("pump-1", 10**18, 0.97, {"temp_c": 0.8, "rpm": 0.2})
>>> b = am.observe("pump-1", 10**18 + 10**9, 0.99, {"temp_c": 1.0})   # same fault: merged
>>> a is b, a.drivers
(True, {'temp_c': 0.9, 'rpm': 0.1})
>>> am.acknowledge(a.id, by="ops@example.org").status
'acknowledged'
>>> am.label(a.id, "true_alarm", by="ops@example.org").label
'true_alarm'
>>> store.close()
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from edgewise.detect.base import DEFAULT_THRESHOLD
from edgewise.errors import InvalidParameterError
from edgewise.store.base import Alert, Store

__all__ = [
    "KINDS", "LABELS", "AlertManager", "ScoredReading", "merge_drivers", "reading_shares",
]

#: Labels a person can give an alert.
LABELS = ("true_alarm", "false_alarm")
#: The kinds of alert raised: ``anomaly`` (:meth:`AlertManager.observe`) and ``seq_gap``
#: (missing messages, :meth:`AlertManager.raise_alert` from the gateway's gap check).
KINDS = ("anomaly", "seq_gap")

log = logging.getLogger(__name__)


def _positive(drivers: Mapping[str, float]) -> dict[str, float]:
    """The entries of a driver map that can drive an alert: finite and above 0."""
    return {str(k): float(v) for k, v in drivers.items() if math.isfinite(v) and v > 0}


def reading_shares(drivers: Mapping[str, float]) -> dict[str, float]:
    """One reading's drivers as shares that sum to 1 (entries at or below 0, or not finite,
    left out), so every reading of an alert weighs the same whatever its drivers' scale.

    >>> reading_shares({"temp": 0.9, "rpm": 0.3, "flow": 0.0})
    {'temp': 0.75, 'rpm': 0.25}
    """
    pos = _positive(drivers)
    total = math.fsum(pos.values())
    return {k: v / total for k, v in pos.items()} if total > 0 else {}


def merge_drivers(
    old: Mapping[str, float], new: Mapping[str, float], keep: int = 5
) -> dict[str, float]:
    """Add two driver maps, keep the ``keep`` largest, each as its share of the whole (of
    every entry, kept or not), so a device with more metrics than ``keep`` shows each
    metric's true share and the kept ones sum to less than 1 (renormalising the top five
    made a 30 % share of a 100-metric device read 91 %).

    Shares are rounded to 4 decimals. Entries at or below 0 (a metric that did not drive
    the reading), non-finite ones and ones whose share rounds to 0 are left out, so they
    are never named.

    >>> merge_drivers({"a": 1.0}, {"a": 0.5, "b": 0.5})
    {'a': 0.75, 'b': 0.25}
    >>> merge_drivers({}, {"temp": 0.99, "rpm": 0.0})
    {'temp': 1.0}
    >>> merge_drivers({}, {"temp": 0.99, "rpm": 0.00003})
    {'temp': 1.0}
    >>> merge_drivers({}, {"a": 0.3, "b": 0.2, "c": 0.2, "d": 0.1, "e": 0.1, "f": 0.1})
    {'a': 0.3, 'b': 0.2, 'c': 0.2, 'd': 0.1, 'e': 0.1}
    """
    old, new = _positive(old), _positive(new)
    both = {n: old.get(n, 0.0) + new.get(n, 0.0) for n in set(old) | set(new)}
    top = sorted(both.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    total = math.fsum(both.values())
    if not total > 0:
        return {}
    shares = {n: round(v / total, 4) for n, v in top}
    return {n: v for n, v in shares.items() if v > 0}


@dataclass
class _Open:
    """An alert that readings may still extend (the device's newest, or a recent one a
    late reading may still reach), with what is held back from the store."""

    alert: Alert
    readings: int = 1
    dirty: dict[str, object] | None = None
    written: float = 0.0
    # each metric's summed share over the alert's readings (all metrics, not only the top)
    shares: dict[str, float] = field(default_factory=dict)
    # time.monotonic() when storing the new alert first failed; None: it is stored
    unstored_since: float | None = None
    lost: bool = False  # given up unstored after ADD_RETRY_S: to be let go of
    # held alerts absorbed into this one in memory whose merge the store has not taken
    # yet (a store error): merged first at the next write, which carries the widened span
    merging: list[_Open] = field(default_factory=list)
    merge_tried: bool = False  # a merge of this one into another was tried (and failed)

    def pending(self) -> bool:
        """Whether something of it is still to be written (the alert, changes, merges)."""
        return bool(self.dirty) or self.unstored_since is not None or bool(self.merging)


@dataclass
class _Quiet:
    """A run of a device's anomalous readings not raised: below the bar a false-alarm
    verdict set for its top driver. Later readings join it; past the bar it is raised."""

    start_ns: int
    end_ns: int
    peak: float
    readings: int
    shares: dict[str, float]
    bar: float = 0.0

    @classmethod
    def of(cls, run: list[tuple[int, float, Mapping[str, float]]],
           before: Iterable[_Quiet] = ()) -> _Quiet:
        """The episode of ``run`` and the held-back runs it continues."""
        q = cls(run[0][0], run[-1][0], max(s for _, s, _ in run), len(run), {})
        for _, _, drivers in run:
            for k, v in reading_shares(drivers).items():
                q.shares[k] = q.shares.get(k, 0.0) + v
        for b in before:
            q.start_ns, q.end_ns = min(q.start_ns, b.start_ns), max(q.end_ns, b.end_ns)
            q.peak, q.readings = max(q.peak, b.peak), q.readings + b.readings
            for k, v in b.shares.items():
                q.shares[k] = q.shares.get(k, 0.0) + v
        return q

    def top(self) -> str:
        return _top(self.shares) if self.shares else ""


def _top(drivers: Mapping[str, float]) -> str:
    """The top driver (largest share; of equal ones, the first by name).

    >>> _top({"rpm": 0.4, "temp": 0.6})
    'temp'
    """
    return min(drivers.items(), key=lambda kv: (-kv[1], kv[0]))[0]


#: At most this many of a device's alerts are held extendable (its newest): a metric that
#: stopped reporting would otherwise keep every later alert of the device held.
MAX_HELD = 100
#: A false-alarm bar is forgotten this many half-lives after its alert (1/16 of its rise
#: is left then).
FEEDBACK_HALF_LIVES = 4
#: Seconds a new alert the store could not take (a dropped connection, a restarting
#: database) is held and tried again (at each flush, at most every ``write_every_s``)
#: before it is given up, logged as an error.
ADD_RETRY_S = 600.0


def _top_shares(shares: dict[str, float], keep: int = 5) -> dict[str, float]:
    """The ``keep`` largest of summed shares, each as its mean share (of the sum of all)."""
    return merge_drivers(shares, {}, keep)


#: One scored reading for :meth:`AlertManager.observe_many`: ``(ts_ns, score, drivers)``.
ScoredReading = tuple[int, float, Mapping[str, float]]



def _check_gap(value: object, what: str, field: str, or_else: str = "") -> None:
    """Refuse a merge gap that is not a finite number of seconds above 0 (a bool
    neither), naming ``what`` and the value."""
    if not (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0.0):
        raise InvalidParameterError(
            f"{what} must be a finite float in the range (0, inf){or_else}. Got {value!r} "
            "instead.", field=field, value=value)

class AlertManager:
    """Raises and merges anomaly alerts of every device into ``store``.

    Parameters
    ----------
    store
        Where alerts are kept (``add_alert``/``update_alert``/``merge_alert``).
    threshold
        Score at or above which a reading is anomalous.
    merge_gap_s
        Anomalous readings of one device closer than this (device time) join one alert;
        finite and above 0. A batch may pass a longer gap (``gap_s`` of
        :meth:`observe_many`: the gateway's for a device read less often than every 24 s).
    on_alert
        Called with each *new* alert (e.g. to count it).
    write_every_s
        A growing alert's span and score are written to the store at most this often
        (and by :meth:`flush`), so a long fault costs a few writes, not one per reading.
    late_horizon_s
        How late (device time, behind the newest alert a batch raised or extended) a
        reading may still arrive and join an earlier alert: the device's alerts that end
        within this (plus ``merge_gap_s``) of that alert stay extendable; finite, 0 or
        more. The gateway passes its own lateness horizon (readings later than that are
        not scored).
    feedback
        Live false-alarm feedback (:meth:`note_verdict`): a false-alarm verdict raises
        the bar for the next anomaly of its device led by the same metric, a true-alarm
        verdict removes it; the verdicts still in effect are read back from the store at
        start. The gateway passes ``EDGEWISE_ALERT_FEEDBACK``.
    feedback_margin
        The bar is the false alarm's peak score plus this (finite, 0 or more), ...
    feedback_cap
        ... at most this (in ``(threshold, 1]``), so a score above it always alerts.
    feedback_half_life_s
        The bar's rise above ``threshold`` halves every this many seconds of the device's
        time after the false alarm's end; it is forgotten after four half-lives.
    on_suppressed
        Called with ``(device_id, metric)`` for each anomaly held back by a bar (once per
        episode, however long it grows).
    on_span
        Called with each alert carrying a verdict (``label``) whose span as stored moved
        (a write of a moved start or end, at most every ``write_every_s``), or that a merge
        widened or gave a verdict to, after the write and outside the manager's lock; also
        by :meth:`note_written` when the alert held in memory spans more than the verdict
        saw. It must not block (the gateway queues it: the alert's window label is
        rewritten over its new span off the detection path,
        :mod:`edgewise.gateway.label_sync`).

    A reading that arrives late joins the alert it falls inside or within ``merge_gap_s``
    of, moving its start earlier when it is older (the moved start is stored too); a late
    reading that touches none raises an alert of its own and leaves the device's open alert
    as it is. :meth:`observe_many` takes a batch (a resent backlog) as a whole: readings
    less than ``merge_gap_s`` apart form one run, and a run that touches an alert joins it,
    whichever order its readings came in. A run that bridges two held alerts makes them
    one: the store lists only the alert that covers both (the other is kept, marked
    ``merged_into`` it), so no two listed alerts of a device overlap or lie closer than
    ``merge_gap_s`` while both are held.

    What is held lives in memory. The first time a device raises or extends an alert after
    the manager starts, its live anomaly alerts that end within ``late_horizon_s`` plus
    ``merge_gap_s`` of the batch are taken up again from the store (see :meth:`_seed`), so
    a gateway restarted in the middle of a fault, after a crash too, extends the stored
    alert instead of raising a second one beside or over it.

    >>> from edgewise.store import open_store
    >>> store = open_store("duckdb://:memory:")
    >>> am, t, s = AlertManager(store, write_every_s=0.0), 10**18, 10**9
    >>> a = am.observe("pump-1", t + 200 * s, 0.99, {"temp": 1.0})
    >>> late = [(t + k * s, 0.98, {"temp": 1.0}) for k in range(100, 200, 10)]  # resent
    >>> am.observe_many("pump-1", late) == [a], (store.get_alert(a.id).start_ns - t) // s
    (True, 100)
    >>> store.close()
    """

    def __init__(
        self,
        store: Store,
        threshold: float = DEFAULT_THRESHOLD,
        merge_gap_s: float = 60.0,
        on_alert: object = None,
        write_every_s: float = 1.0,
        late_horizon_s: float = 300.0,
        feedback: bool = False,
        feedback_margin: float = 0.01,
        feedback_cap: float = 0.999,
        feedback_half_life_s: float = 7 * 86400.0,
        on_suppressed: object = None,
        on_span: object = None,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise InvalidParameterError(
                f"The 'threshold' parameter of AlertManager must be a float in the range "
                f"(0, 1]. Got {threshold!r} instead."
            )
        if not (isinstance(late_horizon_s, int | float) and not isinstance(late_horizon_s, bool)
                and math.isfinite(late_horizon_s) and late_horizon_s >= 0.0):
            raise InvalidParameterError(
                f"The 'late_horizon_s' parameter of AlertManager must be a finite float in "
                f"the range [0, inf). Got {late_horizon_s!r} instead.",
                field="late_horizon_s", value=late_horizon_s,
            )
        _check_gap(merge_gap_s, "The 'merge_gap_s' parameter of AlertManager", "merge_gap_s")
        for name, value, low in (("feedback_margin", feedback_margin, 0.0),
                                 ("feedback_half_life_s", feedback_half_life_s, None)):
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value) and (value > 0.0 if low is None else value >= low)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of AlertManager must be a finite float in the "
                    f"range {'(0' if low is None else '[0'}, inf). Got {value!r} instead.",
                    field=name, value=value,
                )
        if not (isinstance(feedback_cap, int | float) and threshold < feedback_cap <= 1.0):
            raise InvalidParameterError(
                f"The 'feedback_cap' parameter of AlertManager must be a float in the range "
                f"(threshold, 1] = ({threshold}, 1]. Got {feedback_cap!r} instead.",
                field="feedback_cap", value=feedback_cap,
            )
        self.store = store
        self.threshold = threshold
        self.feedback = bool(feedback)
        self.feedback_margin = float(feedback_margin)
        self.feedback_cap = float(feedback_cap)
        self.feedback_half_life_s = float(feedback_half_life_s)
        self.on_suppressed = on_suppressed
        self.on_span = on_span
        # labelled alerts whose stored span moved since on_span was last told (see _write)
        self._spans_moved: list[Alert] = []
        # (device, metric) -> (raised bar, device time of the false alarm's end, alert id)
        self._bars: dict[tuple[str, str], tuple[float, int, str]] = {}
        # each device's runs held back by a bar, that later readings may still join
        self._quiet: dict[str, list[_Quiet]] = {}
        self.merge_gap_s = float(merge_gap_s)
        self.merge_gap_ns = int(merge_gap_s * 1e9)
        self.late_horizon_ns = int(late_horizon_s * 1e9)
        self.on_alert = on_alert
        self.write_every_s = write_every_s
        # each device's extendable alerts: its newest (the open one) and recent ones
        self._held: dict[str, list[_Open]] = {}
        # alert id -> (start_ns, end_ns, readings, summed shares) saved at a clean stop
        # (held_state), used when the alert is taken up again from the store
        self._restored: dict[str, tuple[int, int, int, dict[str, float]]] = {}
        self._started_ns = time.time_ns()  # alerts created before are a previous run's
        self._lock = threading.Lock()
        # held alerts the store took on a later try (see _write), for on_alert
        self._stored_late: list[Alert] = []
        if self.feedback:
            self._load_verdicts()

    def observe(
        self, device_id: str, ts_ns: int, score: float, drivers: Mapping[str, float]
    ) -> Alert | None:
        """Feed one scored reading; return the alert it raised or extended, else ``None``."""
        out = self.observe_many(device_id, [(ts_ns, score, drivers)])
        return out[0] if out else None

    def observe_many(
        self, device_id: str, readings: Iterable[ScoredReading], floor_ns: int | None = None,
        gap_s: float | None = None,
    ) -> list[Alert]:
        """Feed a batch of one device's scored ``(ts_ns, score, drivers)`` readings, in any
        order; return the alerts they raised or extended (one per run of readings less than
        ``merge_gap_s`` apart, oldest first).

        Entries of the batch at one ``ts_ns`` are one reading (a resent duplicate counts
        once): its score is their highest and each driver its highest. A run that touches
        (lies inside or within ``merge_gap_s`` of) one of the device's alerts still held
        extends it; when it touches several, they become one alert (the one that starts
        first, widened over all of them; the others are marked merged into it in the store,
        see :meth:`~edgewise.store.base.Store.merge_alert`, and keep their id for lookup).
        Otherwise the run raises a new alert. Each alert is returned once. A merge the
        store does not take (a store error) is held and tried again by a later
        :meth:`flush`: until it is stored, the survivor's widened span is held back too, so
        the store never lists two alerts over one span, and the absorbed alerts' readings
        are counted once.

        ``floor_ns``: the oldest reading time of the device that may still be scored (the
        pipeline passes its streams' oldest last-scored time less the late horizon). The
        device's alerts ending up to ``merge_gap_s`` before it stay extendable, however new
        the alerts of its other metrics are: a sensor that uploads in buffers, whose late
        anomalous readings must still join its alert while another sensor alarms. ``None``:
        measured from the newest alert the batch raised or extended, as if the device
        had one stream.

        ``gap_s``: the merge gap for this batch of the device, in place of ``merge_gap_s``
        where it is longer (finite and above 0; ``None``: ``merge_gap_s``). The pipeline
        passes about 2.5 typical intervals of the metrics driving the readings, so a
        device read every 5 minutes, whose anomalous readings can never be closer than
        that, has a lasting fault joined into one alert (with 60 s, each reading raised its
        own); it is used for everything ``merge_gap_s`` decides of the batch (runs, which
        held alerts it touches, which stay held).

        A new alert the store does not take (a store error) is held and returned all the
        same, extended in memory by later readings, and stored whole by a later
        :meth:`flush`; :attr:`on_alert` is told of it once it is stored.
        """
        by_ts: dict[int, tuple[float, dict[str, float]]] = {}
        for ts, score, drivers in readings:
            score = float(score)
            if not score >= self.threshold:
                continue
            ts = int(ts)
            seen = by_ts.get(ts)
            if seen is None:
                by_ts[ts] = (score, dict(drivers))
            else:  # the same reading time again: one reading
                both = dict(seen[1])
                for name, v in drivers.items():
                    both[name] = max(both[name], v) if name in both else v
                by_ts[ts] = (max(seen[0], score), both)
        gap = self.merge_gap_ns
        if gap_s is not None:
            _check_gap(gap_s, "The 'gap_s' parameter of AlertManager.observe_many", "gap_s",
                       " or None")
            gap = max(gap, int(gap_s * 1e9))
        if not by_ts:
            return []
        items = [(ts, sc, dr) for ts, (sc, dr) in sorted(by_ts.items())]
        runs: list[list[tuple[int, float, Mapping[str, float]]]] = [[items[0]]]
        for item in items[1:]:
            if item[0] - runs[-1][-1][0] <= gap:
                runs[-1].append(item)
            else:
                runs.append([item])
        out: list[_Open] = []
        new: list[Alert] = []
        hushed: list[_Quiet] = []
        with self._lock:
            held = self._held.get(device_id)
            if held is None:  # first seen since start: take up its recent stored alerts
                held = self._held[device_id] = self._seed(device_id, items[0][0], floor_ns,
                                                          gap)
            quiet = self._quiet.setdefault(device_id, [])
            for run in runs:
                lo, hi = run[0][0], run[-1][0]
                # runs held back by a bar that this one continues: one episode with it
                near = [q for q in quiet if lo <= q.end_ns + gap and hi >= q.start_ns - gap]
                if near:
                    quiet[:] = [q for q in quiet if all(q is not n for n in near)]
                touching = [h for h in held
                            if lo <= h.alert.end_ns + gap and hi >= h.alert.start_ns - gap]
                if touching:
                    # the one that starts first survives; a stored one before one the
                    # store has not taken yet (that has nothing stored to merge)
                    touching.sort(key=lambda h: (h.unstored_since is not None,
                                                 h.alert.start_ns, h.alert.created_ns))
                    cur, absorbed = touching[0], touching[1:]
                    for other in absorbed:
                        self._absorb(cur, other)
                    for ts_ns, score, drivers in run:
                        self._extend(cur, ts_ns, score, drivers)
                    for q in near:  # what was held back is part of this alert
                        self._widen(cur, q.start_ns, q.end_ns, q.peak, q.shares, q.readings)
                    if absorbed:  # one alert from now on, in the store too
                        # absorbed once: they are no longer held apart, and the merge (and
                        # the widened span) is written now or, on a store error, retried
                        # by a later flush, never absorbed again
                        cur.merging += absorbed
                        held[:] = [h for h in held if all(h is not o for o in absorbed)]
                        out = [cur if any(o is x for x in absorbed) else o for o in out]
                        self._try_write(cur)
                    elif cur.pending() and time.monotonic() - cur.written >= self.write_every_s:
                        self._try_write(cur)
                    out.append(cur)
                    continue
                if self._bars:  # a like false alarm was labelled: is this one above its bar?
                    episode = _Quiet.of(run, near)
                    bar = self._bar(device_id, episode.top(), hi)
                    if bar is not None and episode.peak < bar:
                        episode.bar = bar
                        quiet.append(episode)
                        if not near:  # a new episode (one that grows is counted once)
                            hushed.append(episode)
                        continue
                if held and lo > max(h.alert.end_ns for h in held):
                    for h in held:  # the device's previous alert is over: write what is held
                        if h.pending():
                            self._try_write(h)
                cur = self._start(device_id, run, near)
                held.append(cur)
                out.append(cur)
                if cur.unstored_since is None:  # else counted once the store takes it
                    new.append(cur.alert)
            self._prune(held, out, floor_ns, gap)
            cutoff = items[-1][0] - self.late_horizon_ns - gap
            if floor_ns is not None:
                cutoff = min(cutoff, int(floor_ns) - gap)
            quiet[:] = [q for q in quiet if q.end_ns >= cutoff]
            if not quiet:
                del self._quiet[device_id]
        for q in hushed:
            log.info("anomaly of %r (top driver %r, peak score %.4f) not raised: below the "
                     "bar %.4f a false-alarm verdict on alert %s set", device_id, q.top(),
                     q.peak, q.bar, self._bars.get((device_id, q.top()), (0, 0, "?"))[2])
            if callable(self.on_suppressed):
                self.on_suppressed(device_id, q.top())
        self._tell_new(new)
        once: list[Alert] = []
        for o in out:
            if all(o.alert is not a for a in once):
                once.append(o.alert)
        return once

    def _start(
        self, device_id: str, run: list[tuple[int, float, Mapping[str, float]]],
        quiet: Iterable[_Quiet] = (),
    ) -> _Open:
        """Store a new alert for a run of readings (its first reading opens it), over the
        runs of the same episode held back by a bar before (``quiet``)."""
        ts_ns, score, drivers = run[0]
        alert = Alert(
            device_id=device_id, start_ns=ts_ns, end_ns=ts_ns, score=score,
            kind="anomaly", drivers=merge_drivers({}, drivers),
        )
        alert.message = _describe(alert.drivers)
        cur = _Open(alert, shares=reading_shares(drivers))
        for item in run[1:]:
            self._extend(cur, *item)
        for q in quiet:
            self._widen(cur, q.start_ns, q.end_ns, q.peak, q.shares, q.readings)
        cur.dirty = None  # the alert is stored as it stands now
        try:
            self.store.add_alert(alert)
        except Exception:
            # held all the same (later readings extend it in memory) and stored by a
            # later flush: the detectors have learned these readings, nothing resends them
            cur.unstored_since = time.monotonic()
            log.warning("could not store the new alert of %r (%s, from %d ns); it is held "
                        "and tried again at each flush for %g s", device_id, alert.message,
                        alert.start_ns, ADD_RETRY_S, exc_info=True)
        cur.written = time.monotonic()
        return cur

    def _seed(self, device_id: str, first_ns: int, floor_ns: int | None = None,
              gap_ns: int | None = None) -> list[_Open]:
        """The device's live anomaly alerts in the store that a batch whose oldest reading
        is at ``first_ns`` may still extend (those ending at most ``late_horizon_s`` plus
        ``merge_gap_s`` before it, or ``merge_gap_s`` before ``floor_ns``, the oldest
        reading time the device may still have scored, where that is earlier), held again:
        what a previous run held (only alerts created before this manager started; one
        stored since by someone else is theirs).

        Each weighs in its drivers' means as the readings it had: as saved at a clean stop
        (:meth:`restore_held`, when the stored span is still the saved one), else (after a
        crash) as the reading times stored over its span, at least 1.

        ``gap_ns``: the batch's merge gap (see ``gap_s`` of :meth:`observe_many`), in
        place of ``merge_gap_s``.
        """
        gap = self.merge_gap_ns if gap_ns is None else gap_ns
        since = first_ns - self.late_horizon_ns - gap
        if floor_ns is not None:
            since = min(since, int(floor_ns) - gap)
        try:
            stored = self.store.list_alerts(device_id, None, "anomaly", since, 100)
        except Exception:  # a store that cannot list: the device's next alert is a new one
            log.exception("could not read the stored alerts of %r", device_id)
            return []
        held: list[_Open] = []
        for a in sorted(stored, key=lambda a: (a.start_ns, a.created_ns)):
            if a.created_ns >= self._started_ns:
                continue
            saved = self._restored.pop(a.id, None)
            if saved is not None and saved[:2] == (a.start_ns, a.end_ns):
                readings, shares = saved[2], dict(saved[3])
            else:
                readings = self._stored_readings(a)
                shares = {k: v * readings for k, v in a.drivers.items()}
            held.append(_Open(a, readings=readings, shares=shares, written=time.monotonic()))
        return held

    def _stored_readings(self, alert: Alert) -> int:
        """How many reading times the store holds over ``alert``'s span (at least 1; at
        most 10,000 rows are read): the weight of an alert taken up after a crash."""
        try:
            rows = self.store.query(alert.device_id, None, alert.start_ns, alert.end_ns + 1,
                                    limit=10_000)
        except Exception:
            log.exception("could not count the readings of alert %s", alert.id)
            return 1
        return max(1, len({ts for _, ts, _ in rows}))

    def _extend(
        self, cur: _Open, ts_ns: int, score: float, drivers: Mapping[str, float]
    ) -> None:
        """Add one reading to a held alert in memory; mark what changed for the store."""
        # every reading of the alert weighs the same: the drivers are each metric's mean
        # share over the span (each reading's drivers normalised first), and the message
        # names the same ones
        self._widen(cur, ts_ns, ts_ns, score, reading_shares(drivers), 1)

    def _absorb(self, cur: _Open, other: _Open) -> None:
        """Widen held alert ``cur`` over held alert ``other`` in memory (span, score,
        readings and shares added up); mark what changed for the store."""
        b = other.alert
        self._widen(cur, b.start_ns, b.end_ns, b.score, other.shares, other.readings)

    @staticmethod
    def _widen(cur: _Open, start_ns: int, end_ns: int, score: float,
               shares: Mapping[str, float], readings: int) -> None:
        """Add ``readings`` readings spanning ``[start_ns, end_ns]`` (their top ``score``,
        their summed driver ``shares``) to held alert ``cur`` in memory; mark what changed
        for the store."""
        a = cur.alert
        changes: dict[str, object] = {}
        if start_ns < a.start_ns:  # a late reading moves the start earlier
            a.start_ns = changes["start_ns"] = start_ns
        if end_ns > a.end_ns:
            a.end_ns = changes["end_ns"] = end_ns
        if score > a.score:
            a.score = changes["score"] = score
        for name, v in shares.items():
            cur.shares[name] = cur.shares.get(name, 0.0) + v
        cur.readings += readings
        merged = _top_shares(cur.shares)
        if merged != a.drivers:
            a.drivers = changes["drivers"] = merged
            message = _describe(merged)
            if message != a.message:
                a.message = changes["message"] = message
        if changes:
            cur.dirty = {**(cur.dirty or {}), **changes}

    def _merge(self, cur: _Open) -> None:
        """Store that the alerts ``cur`` absorbed (``cur.merging``) are part of it now: each
        is written as it stands, then marked merged into ``cur`` (one store transaction per
        alert, which widens ``cur`` over it; the last also gives ``cur`` what is held back of
        it, the widened span, score and drivers, so the store never lists ``cur`` over an
        alert not yet merged into it), taking over their acknowledgement and label where
        ``cur`` has none. Raises what the store raised; the merges not
        stored stay in ``cur.merging``, with the widened span, for a later write."""
        while cur.merging:
            other = cur.merging[0]
            if other.unstored_since is not None or cur.unstored_since is not None:
                # never stored (``cur`` is then one as well: a stored one is kept first):
                # nothing of it to merge in the store, the memory holds it all
                other.alert.merged_into = cur.alert.id
                cur.merging.pop(0)
                continue
            self._write(other)
            last = len(cur.merging) == 1
            changes = (cur.dirty or {}) if last else {}
            stored: Alert | None = None
            if other.merge_tried:
                # a failed try may have committed all the same (the error came after it)
                try:
                    done = self.store.get_alert(other.alert.id)
                except KeyError:
                    done = None
                if done is not None and done.merged_into == cur.alert.id:
                    stored = self.store.update_alert(cur.alert.id, **changes) if changes \
                        else self.store.get_alert(cur.alert.id)
            if stored is None:
                other.merge_tried = True
                stored = self.store.merge_alert(other.alert.id, cur.alert.id, **changes)
            if last:
                cur.dirty = None
            other.alert.merged_into = cur.alert.id
            cur.merging.pop(0)
            a = cur.alert
            a.status, a.label, a.acked_by = stored.status, stored.label, stored.acked_by
            a.labelled_by, a.note = stored.labelled_by, stored.note
            if a.label in LABELS:  # widened over the other, or given its verdict
                self._spans_moved.append(a)
        cur.written = time.monotonic()

    def _prune(self, held: list[_Open], touched: list[_Open], floor_ns: int | None = None,
               gap_ns: int | None = None) -> None:
        """Let go of the device's alerts no late reading can reach any more (written first).

        The cutoff is measured from the newest end among the alerts this batch raised or
        extended (``touched``), never from the device's newest alert: one reading stamped
        far ahead must not make every alert in time look too old to extend. Where
        ``floor_ns`` (the oldest reading time the device may still have scored, see
        :meth:`observe_many`) is earlier, from that: the newest alert of one metric says
        nothing of how late another metric's readings still come. The alerts of
        ``touched`` are always kept, and at most :data:`MAX_HELD` alerts in all (the
        newest: a metric silent for less than the pipeline's ``FLOOR_SILENT_INTERVALS`` of its
        intervals, and at least an hour, holds the floor back).
        ``gap_ns``: the batch's merge gap (see ``gap_s`` of :meth:`observe_many`), in place
        of ``merge_gap_s``.
        """
        if not touched:
            held[:] = [h for h in held if not h.lost]
            return
        gap = self.merge_gap_ns if gap_ns is None else gap_ns
        newest = max(h.alert.end_ns for h in touched)
        cutoff = newest - self.late_horizon_ns - gap
        if floor_ns is not None:
            cutoff = min(cutoff, int(floor_ns) - gap)
        # one whose write fails stays held, to be written by a later flush
        keep: list[_Open] = []
        for h in held:
            if (h.alert.end_ns >= cutoff or any(h is t for t in touched)
                    or not self._try_write(h)):
                keep.append(h)
        if len(keep) > MAX_HELD:
            keep.sort(key=lambda h: h.alert.end_ns)
            drop = [h for h in keep[:len(keep) - MAX_HELD] if all(h is not t for t in touched)
                    and self._try_write(h)]
            keep = [h for h in keep if all(h is not d for d in drop)]
        held[:] = [h for h in keep if not h.lost]

    def _write(self, cur: _Open) -> None:
        """Write what is held back of ``cur``: the whole alert as it stands where the store
        has not taken it yet (see :meth:`_start`), else its changed fields. Raises what
        the store raised; what is held back stays held then. Merges held back
        (``cur.merging``) are stored first (:meth:`_merge`): they carry the widened span."""
        if cur.merging:
            self._merge(cur)
        if cur.unstored_since is not None:
            a = cur.alert
            # a failed try may have committed all the same (the error came after it):
            # then the stored alert is brought up to date, not stored a second time
            if self._stored(a.id):
                self.store.update_alert(a.id, start_ns=a.start_ns, end_ns=a.end_ns,
                                        score=a.score, drivers=a.drivers, message=a.message)
            else:
                self.store.add_alert(a)
            cur.unstored_since = None
            self._stored_late.append(a)
        elif cur.dirty:
            self.store.update_alert(cur.alert.id, **cur.dirty)
            if cur.alert.label in LABELS and ("start_ns" in cur.dirty or "end_ns" in cur.dirty):
                self._spans_moved.append(cur.alert)  # its window label is to follow it
        cur.dirty = None
        cur.written = time.monotonic()

    def _stored(self, alert_id: str) -> bool:
        """Whether the store holds alert ``alert_id`` (False where it cannot say)."""
        if not alert_id:  # never given one: the store has not seen it
            return False
        try:
            self.store.get_alert(alert_id)
        except Exception:
            return False
        return True

    def _try_write(self, cur: _Open) -> bool:
        """:meth:`_write`, a failure logged, not raised: ``cur`` keeps what is held back
        for a later flush. A new alert the store has not taken within :data:`ADD_RETRY_S`
        of its first try is given up (logged as an error, marked ``lost``: let go of).
        Return whether it was written."""
        try:
            self._write(cur)
            return True
        except Exception:
            now = cur.written = time.monotonic()
            a = cur.alert
            if cur.unstored_since is not None and now - cur.unstored_since >= ADD_RETRY_S:
                cur.lost = True
                log.error("gave up storing the alert of %r (%s, %d..%d ns): the store did "
                          "not take it in %g s of tries", a.device_id, a.message,
                          a.start_ns, a.end_ns, ADD_RETRY_S, exc_info=True)
            else:
                log.warning("could not write alert %s of %r to the store; tried again at the "
                            "next flush", a.id, a.device_id, exc_info=True)
            return False

    def _tell_new(self, new: list[Alert]) -> None:
        """Call :attr:`on_alert` with each alert of ``new`` and each held alert the store
        took since on a later try, and :attr:`on_span` with each labelled alert whose
        stored span moved since (once each; outside the lock)."""
        with self._lock:
            late, self._stored_late = self._stored_late, []
            moved, self._spans_moved = self._spans_moved, []
        if callable(self.on_alert):
            for alert in [*new, *late]:
                self.on_alert(alert)
        if callable(self.on_span):
            for alert in {a.id: a for a in moved}.values():
                self.on_span(alert)

    def flush(self, force: bool = False) -> None:
        """Write span changes held back (each open alert is written at most every
        ``write_every_s`` while it grows), and the new alerts the store did not take when
        they were raised; ``force`` writes all of them now. A write that fails is logged
        and tried again at the next flush (a new alert for at most :data:`ADD_RETRY_S`),
        and the others are written all the same."""
        now = time.monotonic()
        with self._lock:
            for held in self._held.values():
                for cur in held:
                    if cur.pending() and (force or now - cur.written >= self.write_every_s):
                        self._try_write(cur)
                if any(h.lost for h in held):
                    held[:] = [h for h in held if not h.lost]
        self._tell_new([])

    def held_state(self) -> dict[str, tuple[int, int, int, dict[str, float]]]:
        """Each held alert's ``(start_ns, end_ns, readings, summed shares)`` by id: saved
        beside the detectors at a clean stop and handed to :meth:`restore_held` at the next
        start, so an alert taken up again weighs its readings as before."""
        with self._lock:
            return {h.alert.id: (h.alert.start_ns, h.alert.end_ns, h.readings, dict(h.shares))
                    for held in self._held.values() for h in held}

    def restore_held(self, state: Mapping[str, tuple[int, int, int, Mapping[str, float]]]
                     ) -> None:
        """Take what :meth:`held_state` saved; used when those alerts are taken up again
        from the store (a saved span that no longer matches the stored one is ignored)."""
        with self._lock:
            for alert_id, (start_ns, end_ns, readings, shares) in state.items():
                self._restored[str(alert_id)] = (
                    int(start_ns), int(end_ns), max(1, int(readings)),
                    {str(k): float(v) for k, v in shares.items()})

    def forget(self, device_id: str) -> None:
        """Stop extending the device's alerts (their held-back updates are dropped: the
        device and its alerts are being deleted) and drop the bars its false alarms set."""
        with self._lock:
            self._held.pop(device_id, None)
            self._quiet.pop(device_id, None)
            for key in [k for k in self._bars if k[0] == device_id]:
                del self._bars[key]

    # -- live feedback: false-alarm verdicts raise a bar for the next alert like them --

    def bar(self, device_id: str, metric: str, ts_ns: int) -> float | None:
        """The score a new anomaly of ``device_id`` whose top driver is ``metric``, at
        device time ``ts_ns``, must reach to be raised, where a false-alarm verdict raised
        it above :attr:`threshold`; ``None`` where none did (or it has lapsed).

        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> am, t, day = AlertManager(store, feedback=True), 10**18, 86400 * 10**9
        >>> a = am.observe("pump-1", t, 0.95, {"temp": 1.0})
        >>> _ = am.label(a.id, "false_alarm", by="ops")
        >>> am.bar("pump-1", "temp", t), round(am.bar("pump-1", "temp", t + 7 * day), 3)
        (0.96, 0.93)
        >>> store.close()
        """
        with self._lock:
            return self._bar(device_id, metric, ts_ns)

    def _bar(self, device_id: str, metric: str, ts_ns: int) -> float | None:
        entry = self._bars.get((device_id, metric))
        if entry is None:
            return None
        bar, ref_ns, _ = entry
        age_s = max(0, ts_ns - ref_ns) / 1e9
        if age_s > FEEDBACK_HALF_LIVES * self.feedback_half_life_s:
            del self._bars[(device_id, metric)]  # lapsed
            return None
        return self.threshold + (bar - self.threshold) * 0.5 ** (age_s / self.feedback_half_life_s)

    def note_verdict(self, alert: Alert) -> None:
        """Let a person's verdict on ``alert`` (as stored, with its ``label``) act on the
        live alerting, where :attr:`feedback` is on (else nothing happens).

        A ``false_alarm`` on an anomaly alert sets a bar for its device and its top driver:
        the alert's peak score plus ``feedback_margin``, at most ``feedback_cap`` (so a
        score above the cap always alerts), decaying back to the threshold with
        ``feedback_half_life_s`` of the device's time after the alert's end, forgotten after
        four half-lives. A new anomaly of that device whose top driver is that metric and
        whose peak stays below the bar is not raised (:attr:`on_suppressed` is told); if it
        grows past the bar it is raised then, over all its readings. A ``true_alarm`` on
        an alert of the same device and top driver removes the bar. Seq-gap alerts and
        alerts merged into another change nothing. A new verdict on an alert first drops
        the bars its earlier one set. :meth:`label` calls this; the HTTP API, which writes
        the verdict itself, calls it on the gateway's manager. The alert held in memory
        takes up the verdict too (:meth:`note_written`), with feedback off as well.
        """
        self.note_written(alert)
        if (not self.feedback or alert.kind != "anomaly" or alert.merged_into is not None
                or alert.label not in LABELS):
            return
        with self._lock:
            self._verdict(alert)

    def note_written(self, alert: Alert) -> None:
        """Take up what was written to ``alert`` (as stored: its ``status``, ``label``,
        ``acked_by``, ``labelled_by`` and ``note``) into the copy held in memory, if any,
        so :meth:`observe` never returns an acknowledged or labelled alert as it was
        before. :meth:`acknowledge` and :meth:`label` call this; the HTTP API, which
        writes them itself, calls it on the gateway's manager.

        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> am, t = AlertManager(store), 10**18
        >>> a = am.observe("pump-1", t, 0.97, {"temp": 1.0})
        >>> b, _ = store.acknowledge_alert(a.id, "ops")   # written beside the manager
        >>> am.note_written(b)
        >>> am.observe("pump-1", t + 10**9, 0.98, {"temp": 1.0}).status
        'acknowledged'
        >>> store.close()
        """
        moved = None
        with self._lock:
            for h in self._held.get(alert.device_id, ()):
                if h.alert.id == alert.id:
                    a = h.alert
                    a.status, a.label, a.acked_by = alert.status, alert.label, alert.acked_by
                    a.labelled_by, a.note = alert.labelled_by, alert.note
                    if a.label in LABELS and (a.start_ns, a.end_ns) != (alert.start_ns,
                                                                       alert.end_ns):
                        moved = a  # grown since the verdict read it (or to be written)
        if moved is not None and callable(self.on_span):
            self.on_span(moved)

    def _verdict(self, alert: Alert) -> None:
        # a new verdict replaces the alert's earlier one: the bars that one set go first
        # (its top driver may have changed since, so they are found by their source), as
        # after a restart, where only the newest verdict is read back (_load_verdicts)
        for key in [k for k, (_, _, source) in self._bars.items() if source == alert.id]:
            del self._bars[key]
        # the held alert is newer than the store's copy (its span and score are written
        # at most every write_every_s)
        live = next((h.alert for h in self._held.get(alert.device_id, ())
                     if h.alert.id == alert.id), alert)
        score = max(alert.score, live.score)
        drivers = live.drivers or alert.drivers
        end_ns = max(alert.end_ns, live.end_ns)
        if not drivers:
            return
        top = _top(drivers)
        key = (alert.device_id, top)
        if alert.label == "true_alarm":
            if self._bars.pop(key, None) is not None:
                log.info("true-alarm verdict on alert %s: the bar on %r of %r is removed",
                         alert.id, top, alert.device_id)
            return
        bar = min(self.feedback_cap, score + self.feedback_margin)
        now = self._bar(*key, end_ns)
        if bar <= self.threshold or (now is not None and now >= bar):
            return  # a bar as high is in effect already
        self._bars[key] = (bar, end_ns, alert.id)
        log.info("false-alarm verdict on alert %s: a new anomaly of %r led by %r needs a "
                 "score of %.4f (decaying to %.4f, half-life %g s)", alert.id,
                 alert.device_id, top, bar, self.threshold, self.feedback_half_life_s)

    def _load_verdicts(self) -> None:
        """Take up the verdicts still in effect from the store (anomaly alerts ending
        within four half-lives before now, labelled), in the order they were given (their
        ``alert.labelled`` events' ids; a label a merge carried over counts as given when
        the merged alert's was), so the newest verdict on a device and metric counts, as it
        did live. Verdicts whose events retention pruned were given before the others: they
        come first, oldest alert first. A store that cannot list is logged."""
        since = time.time_ns() - int(FEEDBACK_HALF_LIVES * self.feedback_half_life_s * 1e9)
        labelled: list[Alert] = []
        paging: dict[str, tuple[int, int, str]] = {}
        try:
            while True:
                page = self.store.list_alerts(None, None, "anomaly", since, 1000, **paging)
                labelled += [a for a in page if a.label in LABELS]
                if len(page) < 1000:
                    break
                last = page[-1]
                paging = {"after": (last.start_ns, last.created_ns, last.id)}
        except Exception:
            log.exception("could not read the alert verdicts from the store; false alarms "
                          "labelled before this start raise no bar")
            return
        given = self._verdict_order() if labelled else {}
        with self._lock:
            for a in sorted(labelled, key=lambda a: (a.id in given, given.get(a.id, 0),
                                                     a.end_ns, a.created_ns)):
                self._verdict(a)

    def _verdict_order(self) -> dict[str, int]:
        """Each alert's newest ``alert.labelled`` event id, by alert id; an alert that has
        none of its own takes the newest of the alerts merged into it (whose label it took
        over). Empty where the store cannot list its events (logged)."""
        own: dict[str, int] = {}
        into: dict[str, str] = {}
        after = 0
        try:
            while True:
                page = self.store.alert_events(after, 1000)
                for e in page:
                    if e.event == "alert.labelled":
                        own[e.alert_id] = max(own.get(e.alert_id, 0), e.id)
                    elif e.event == "alert.merged" and e.detail.get("merged_into"):
                        into[e.alert_id] = str(e.detail["merged_into"])
                if len(page) < 1000:
                    break
                after = page[-1].id
        except Exception:
            log.exception("could not read the alert events from the store; verdicts are "
                          "taken up in the order of their alerts' ends")
            return {}
        order = dict(own)
        for alert_id, event_id in own.items():
            live, hops = alert_id, 0
            while live in into and hops <= len(into):  # the alert that covers it now
                live, hops = into[live], hops + 1
            if live != alert_id and live not in own:
                order[live] = max(order.get(live, 0), event_id)
        return order

    def raise_alert(self, alert: Alert) -> Alert:
        """Store a non-anomaly alert (e.g. ``kind="seq_gap"``) as it is."""
        stored = self.store.add_alert(alert)
        if callable(self.on_alert):
            self.on_alert(stored)
        return stored

    def acknowledge(self, alert_id: str, by: str) -> Alert:
        """Mark an alert acknowledged by ``by``; ``KeyError`` if unknown.

        Acknowledging twice keeps the first acknowledgement (and who gave it), as the
        HTTP API does, also when two acknowledge at once (one conditional write,
        ``Store.acknowledge_alert``). An alert merged into another is refused
        (:class:`~edgewise.errors.InvalidParameterError` naming that one), as the HTTP API
        refuses it: its acknowledgement would be on an alert no longer listed.
        """
        return self.acknowledge_applied(alert_id, by)[0]

    def acknowledge_applied(self, alert_id: str, by: str) -> tuple[Alert, bool]:
        """As :meth:`acknowledge`, and whether this call acknowledged it (``False`` when it
        was acknowledged before, by ``by`` or anyone else): tell one's own acknowledgement
        by this, never by ``acked_by``, which holds a free-text name.

        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> am = AlertManager(store)
        >>> a = am.observe("pump-1", 10**18, 0.97, {"temp_c": 1.0})
        >>> [am.acknowledge_applied(a.id, by="ops")[1] for _ in range(2)]
        [True, False]
        >>> store.close()
        """
        alert, applied = self.store.acknowledge_alert(alert_id, by)
        if not applied and alert.merged_into is not None:
            raise InvalidParameterError(
                f"Alert {alert_id!r} was merged into alert {alert.merged_into!r}, which covers "
                f"its span now; acknowledge {alert.merged_into!r} instead."
            )
        self.note_written(alert)
        return alert, applied

    def label(self, alert_id: str, label: str, by: str, note: str | None = None) -> Alert:
        """Label an alert ``"true_alarm"`` or ``"false_alarm"``; ``KeyError`` if unknown.

        As ``POST /v1/alerts/{id}/label`` does: one conditional write
        (``Store.acknowledge_alert``) that also acknowledges an open alert and writes the
        ``alert.acknowledged`` and ``alert.labelled`` events the alert webhooks send; an
        alert merged into another is refused (:class:`~edgewise.errors.
        InvalidParameterError` naming that one). Without a ``note`` the alert keeps the
        one it has. The alert held in memory takes up the verdict, and with
        :attr:`feedback` on, the verdict acts at once (:meth:`note_verdict`).

        >>> from edgewise.store import open_store
        >>> store = open_store("duckdb://:memory:")
        >>> am = AlertManager(store)
        >>> a = am.observe("pump-1", 10**18, 0.97, {"temp_c": 1.0})
        >>> b = am.label(a.id, "false_alarm", by="ops", note="cleaning")
        >>> b.status, b.label, [e.event for e in store.alert_events()]
        ('acknowledged', 'false_alarm', ['alert.acknowledged', 'alert.labelled'])
        >>> store.close()
        """
        if label not in LABELS:
            raise InvalidParameterError(
                f"The 'label' of an alert must be one of {', '.join(map(repr, LABELS))}. "
                f"Got {label!r} instead."
            )
        changes: dict[str, object] = {"label": label, "labelled_by": by}
        if note is not None:
            changes["note"] = note
        alert, applied = self.store.acknowledge_alert(alert_id, by, **changes)
        if not applied and alert.merged_into is not None:
            raise InvalidParameterError(
                f"Alert {alert_id!r} was merged into alert {alert.merged_into!r}, which covers "
                f"its span now; label {alert.merged_into!r} instead."
            )
        self.note_verdict(alert)
        return alert


def _describe(drivers: Mapping[str, float]) -> str:
    """The alert's message: its top three drivers with their shares (``drivers`` as
    :func:`merge_drivers` gives them: shares of the whole, not renormalised again); a
    driver whose share rounds to 0% is not named (the top one always is).

    >>> _describe({"temp_c": 0.9811, "rpm": 0.0142, "vib": 0.0047})
    'Anomalous temp_c (98%), rpm (1%).'
    >>> _describe({"m000": 0.3, "m001": 0.05})
    'Anomalous m000 (30%), m001 (5%).'
    """
    top = sorted(_positive(drivers).items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    if not top:
        return "Anomalous reading."
    named = [f"{n} ({s:.0%})" for n, s in top]
    named = named[:1] + [t for t in named[1:] if not t.endswith(" (0%)")]
    return "Anomalous " + ", ".join(named) + "."
