"""Find gaps in a series (intervals much longer than usual) and measure completeness.

>>> ts = np.array([0, 1, 2, 3, 10, 11]) * 10**9
>>> [(int(a // 10**9), int(b // 10**9)) for a, b in find_gaps(ts)]
[(3, 10)]
>>> round(completeness(ts), 2)
0.5

Without ``span`` a series is judged between its own first and last reading, so a sensor
that went silent looks whole. ``span=(start, end)``, the range ``[start, end)`` the series
should cover (a query's range; a file's first and last time of the device, the end plus
one), judges it there: the silence before its first and after its last reading is a gap
where it is longer than ``factor`` spacings, and the readings it should have sent there
count as missing.

>>> S = 10**9
>>> ts = np.arange(10) * 60 * S                 # 10 one-minute readings of a 1-hour range
>>> round(completeness(ts, span=(0, 3600 * S)), 3), find_gaps(ts, span=(0, 3600 * S))
(0.167, [(540000000000, 3599999999999)])

With ``span`` but one reading (or one time) and no ``every_ns``, nothing tells how often
readings were due: the silence around it in the span is no evidence of a whole series, so
it is one gap each side, and the series is judged incomplete and late (0.0), as one
silent over the span is (a lone reading of an hour had completeness 1.0, and two a minute
apart 0.033); where the reading fills the span (a span of one instant) it is whole. Give
``every_ns`` (e.g. the device's interval, of its other metrics) to judge it by that.

>>> completeness([1800 * S], span=(0, 3600 * S)), find_gaps([0], span=(0, 60 * S))
(0.0, [(0, 59999999999)])
>>> round(completeness([1800 * S], every_ns=60 * S, span=(0, 3600 * S)), 3)
0.017

``prev_ns``, the time of the series' last reading before the span (read apart, e.g. from
a store), is where the silence before its first reading in the span began: that silence
is a gap (reported from the span's start) where, counted from ``prev_ns``, it is longer
than ``factor`` spacings, though its part in the span is shorter; and with ``every_ns``
a span with no reading is judged so too, not as one silent gap whatever the spacing. An
hourly reading silent over the hour after it is on time; silent for the 3 hours since,
it is a gap:

>>> H = 3600 * S
>>> find_gaps([], every_ns=H, span=(0, H), prev_ns=-H // 2), completeness(
...     [], every_ns=H, span=(0, H), prev_ns=-H // 2)
([], 1.0)
>>> find_gaps([], every_ns=H, span=(0, H), prev_ns=-2 * H), timeliness(
...     [], every_ns=H, span=(0, H), prev_ns=-2 * H)
([(0, 3599999999999)], 0.0)

Not every device sends at one spacing (:func:`cadence`). One that sends its readings in
bursts (k readings close together, the bursts at a regular cadence: a pair 1 s apart once
a minute) is judged by its bursts: each burst counts as one reading at the cadence, so
with no burst missing it is whole (the lower median of its intervals, 1 s, made a gap of
every minute and completeness 0.03), a missing burst is missing (and late), and a
silence longer than ``factor`` cadences is a gap, as for single readings.

>>> M = 60 * S
>>> pairs = np.sort(np.r_[np.arange(60) * M, np.arange(60) * M + S])
>>> cadence(pairs), completeness(pairs), find_gaps(pairs)
(('bursts', 60000000000.0), 1.0, [])
>>> lost = pairs[(pairs < 20 * M) | (pairs >= 23 * M)]     # 3 bursts missing
>>> round(completeness(lost), 3), find_gaps(lost), round(timeliness(lost), 3)
(0.95, [(1141000000000, 1380000000000)], 0.982)

"""

from __future__ import annotations

import math
import numbers

import numpy as np

from edgewise.errors import QualityError

__all__ = ["GAP_FACTOR", "MIN_BURSTS", "cadence", "completeness", "expected_interval",
           "find_gaps", "intervals", "timeliness", "usual_interval"]

#: An interval longer than this many expected spacings is a gap (:func:`find_gaps`).
GAP_FACTOR = 2.5

#: The fewest bursts that show a cadence of bursts (:func:`cadence`): fewer were met by
#: chance in short jittered regular series (5: 4 of 79,808 seeded cases).
MIN_BURSTS = 10

#: The share of bursts that must keep to the cadence, and to a span of at most
#: 1 / GAP_FACTOR of it, for a series to be judged by bursts (:func:`cadence`).
BURST_SHARE = 0.75


def intervals(t: np.ndarray) -> np.ndarray:
    """The intervals between neighbours of ascending int64 times ``t``, exact as uint64:
    ``np.diff`` of int64 overflows where two times lie more than 2**63 ns (292 years)
    apart, a mistyped year among good readings, and gave negative intervals.

    >>> t = np.array([np.datetime64("1724-01-01", "ns"), np.datetime64("2024-01-01", "ns")])
    >>> int(intervals(t.astype(np.int64))[0]) // (365 * 86400 * 10**9)
    300
    """
    t = np.asarray(t, dtype=np.int64)
    return t[1:].astype(np.uint64) - t[:-1].astype(np.uint64)  # modulo 2**64: exact here


def usual_interval(d: np.ndarray) -> float:
    """The usual one of the positive intervals ``d``: their lower median (0 with none), as
    the stream cleaner takes it. The median of an even count, the mean of the two middle
    intervals, is a spacing the readings need not have: the readings of a device that sends
    them in pairs, 1 s apart once a minute, were 30 s apart with an even count and 1 s with
    an odd one, so one reading more flipped the report (completeness 1.0 or 0.03, no gap or
    one each minute).

    >>> usual_interval(np.array([1, 59, 1, 59])), usual_interval(np.array([1, 99]))
    (1.0, 1.0)
    """
    d = np.asarray(d)
    if not len(d):
        return 0.0
    mid = (len(d) - 1) // 2
    return float(np.partition(d, mid)[mid])


def expected_interval(ts: object) -> float:
    """The usual spacing, the one the distinct times ``ts`` are judged by
    (:func:`cadence`): that of their bursts where they come in bursts, else
    :func:`usual_interval` of their positive intervals (0 when there are none).

    >>> expected_interval([0, 1, 100]), expected_interval([0, 1, 2, 100])
    (1.0, 1.0)
    >>> expected_interval([b + i for b in range(0, 1000, 100) for i in (0, 1)])
    100.0
    """
    return _shape(np.unique(np.asarray(ts, dtype=np.int64)))[1]


def cadence(ts: object) -> tuple[str, float]:
    """``(kind, step)``: how the distinct times ``ts`` are spaced, and the spacing they are
    judged by. ``"bursts"``: at least :data:`MIN_BURSTS` groups of readings, split where an
    interval is longer than :data:`GAP_FACTOR` times the lower median of the intervals,
    most (:data:`BURST_SHARE`) of them of one size (count of readings), starting within
    1.5 times the lower median of their start-to-start intervals (``step``, the cadence)
    after the one before (at least 1 / 1.5 of it) and spanning at most 1 /
    :data:`GAP_FACTOR` of it. ``"regular"``: every other series (``step`` the lower median
    of its intervals, as always).

    >>> cadence([0, 10, 20, 30]), cadence([b + i for b in range(0, 600, 60) for i in (0, 1)])
    (('regular', 10.0), ('bursts', 60.0))
    """
    kind, step, _ = _shape(np.unique(np.asarray(ts, dtype=np.int64)))
    return kind, step


def _shape(t: np.ndarray) -> tuple[str, float, np.ndarray | None]:
    """``(kind, step, starts)`` of distinct ascending times ``t`` (:func:`cadence`);
    ``starts`` the index of each burst's first reading (bursts only, else ``None``)."""
    d = intervals(t)
    m = usual_interval(d)
    if len(d) < MIN_BURSTS or m <= 0:
        return "regular", m, None
    long = np.flatnonzero(d > GAP_FACTOR * m)
    if len(long) >= MIN_BURSTS - 1:
        starts = np.r_[0, long + 1]
        ends = np.r_[long, len(t) - 1]
        ds = intervals(t[starts])
        p = usual_interval(ds)
        kept = np.mean((ds >= p / 1.5) & (ds <= 1.5 * p))
        compact = np.mean((t[ends] - t[starts]).astype(np.uint64) <= p / GAP_FACTOR)
        sizes = ends - starts + 1
        alike = np.mean(sizes == usual_interval(sizes))
        if min(kept, compact, alike) >= BURST_SHARE:
            return "bursts", p, starts
    return "regular", m, None


def _bursts(t: np.ndarray, starts: np.ndarray,
            gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``gaps`` found between the bursts' first readings ``t[starts]``, each from the last
    reading of the burst it follows (the first reading of a burst: its burst's end)."""
    end = dict(zip(t[starts].tolist(), np.r_[t[starts[1:] - 1], t[-1]].tolist(), strict=True))
    return [(end.get(a, a), b) if b > end.get(a, a) else (a, b) for a, b in gaps]


def _check(name: str, every_ns: float | None, factor: float) -> None:
    """Raise naming the parameter where ``every_ns`` is no number >= 0 (0 or None: no
    spacing known) or ``factor`` no number > 0 (NaN made every interval on time and
    no gap, and a negative factor every instant a gap).

    >>> _check("find_gaps", float("nan"), 2.5)
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: The 'every_ns' parameter of find_gaps must be a finite number of ns >= 0 (0 or None: no spacing known). Got nan instead.
    """  # noqa: E501
    if every_ns is not None and not (isinstance(every_ns, numbers.Real)
                                     and 0 <= every_ns < math.inf):
        raise QualityError(
            f"The 'every_ns' parameter of {name} must be a finite number of ns >= 0 (0 or "
            f"None: no spacing known). Got {every_ns!r} instead.")
    if not (isinstance(factor, numbers.Real) and 0 < factor < math.inf):
        raise QualityError(
            f"The 'factor' parameter of {name} must be a finite number > 0 (spacings). "
            f"Got {factor!r} instead.")


def _span(span: tuple[int, int], t: np.ndarray) -> tuple[int, int]:
    """``span`` as Python ints ``(start, end)``, widened to hold the readings ``t``
    (ascending; none: the span as given): a reading outside its range still counts.

    >>> _span((10, 20), np.array([5, 30])), _span((10, 20), np.array([], dtype=np.int64))
    ((5, 31), (10, 20))
    """
    start, end = int(span[0]), int(span[1])
    if end <= start:
        raise QualityError(f"span must be (start, end) with end after start, the range "
                           f"[start, end) in int ns. Got {(start, end)!r} instead.")
    if not len(t):
        return start, end
    return min(start, int(t[0])), max(end, int(t[-1]) + 1)


def _edges(t: np.ndarray, span: tuple[int, int] | None) -> tuple[int, int]:
    """The silences (ns) before the first and after the last of the readings ``t`` in
    ``span``'s range, up to its last instant ``end - 1`` (both 0 without ``span``)."""
    if span is None:
        return 0, 0
    start, end = _span(span, t)
    return int(t[0]) - start, end - 1 - int(t[-1])


def _no_step(t: np.ndarray, step: float) -> bool:
    """Whether ``t`` (distinct, ascending) gives no spacing to judge a span by: fewer than
    two times and no positive ``step`` given."""
    return bool(len(t) < 2 and step <= 0)


def _lead(t: np.ndarray, span: tuple[int, int], prev_ns: int | None) -> int:
    """The silence (ns) before the first of the readings ``t`` in ``span``'s range (with
    none, up to its last instant ``end - 1``): from ``prev_ns``, the series' last reading
    before the range, where given and earlier than its start, else from its start.

    >>> _lead(np.array([5]), (2, 10), None), _lead(np.array([5]), (2, 10), -3)
    (3, 8)
    >>> _lead(np.array([], dtype=np.int64), (2, 10), 0)
    9
    """
    start, end = _span(span, t)
    first = int(t[0]) if len(t) else end - 1
    return first - (start if prev_ns is None else min(start, int(prev_ns)))


def _quiet_gap(t: np.ndarray, span: tuple[int, int], step: float, factor: float,
               prev_ns: int | None) -> list[tuple[int, int]]:
    """A span with no reading ``t`` but a spacing ``step`` to judge it by: the whole span
    one gap where its silence (from ``prev_ns`` where given: :func:`_lead`) is longer than
    ``factor`` spacings, else none (a slow series between two readings)."""
    start, end = _span(span, t)
    return [(start, end - 1)] if _lead(t, span, prev_ns) > factor * step else []


def _silences(t: np.ndarray, span: tuple[int, int]) -> list[tuple[int, int]]:
    """The silences of a span with no spacing to judge by (:func:`_no_step`): the whole
    span where it holds no reading, else those before and after its one reading.

    >>> _silences(np.array([], dtype=np.int64), (0, 10)), _silences(np.array([4]), (0, 10))
    ([(0, 9)], [(0, 4), (4, 9)])
    """
    start, end = _span(span, t)
    if not len(t):
        return [(start, end - 1)]
    before, after = _edges(t, span)
    first = int(t[0])
    return ([(first - before, first)] if before else []) + (
        [(first, first + after)] if after else [])


def find_gaps(
    ts: object, every_ns: float | None = None, factor: float = GAP_FACTOR,
    span: tuple[int, int] | None = None, prev_ns: int | None = None,
) -> list[tuple[int, int]]:
    """``(start, end)`` of each interval longer than ``factor`` times the expected spacing;
    with ``span``, also the silence from its start to the first reading (from ``prev_ns``,
    where given: see the module's text) and from the last reading to its last instant
    (``end - 1``) where longer than that.

    >>> find_gaps([0, 1, 2, 3], span=(-5, 4)), find_gaps([0, 1, 2, 3], span=(0, 8))
    ([(-5, 0)], [(3, 7)])
    >>> find_gaps([2, 3, 4], span=(1, 5)), find_gaps([2, 3, 4], span=(1, 5), prev_ns=-9)
    ([], [(1, 2)])
    """
    _check("find_gaps", every_ns, factor)
    t = np.unique(np.asarray(ts, dtype=np.int64))
    kind, own, starts = _shape(t)
    if kind == "bursts":  # judged by the bursts' first readings
        return _bursts(t, starts, find_gaps(  # type: ignore[arg-type]
            t[starts], every_ns or own, factor, span, prev_ns))
    step = every_ns or own  # 0, as None: no spacing given, the series' own
    if span is not None and _no_step(t, step):
        return _silences(t, span)
    if span is not None and not len(t):  # a spacing to judge the silent span by
        return _quiet_gap(t, span, step, factor, prev_ns)
    if step <= 0 or not len(t) or (len(t) < 2 and span is None):
        return []
    d = intervals(t)
    gaps = [(int(t[i]), int(t[i + 1])) for i in np.flatnonzero(d > factor * step)]
    before, after = _edges(t, span)
    if span is not None and before and _lead(t, span, prev_ns) > factor * step:
        gaps.insert(0, (int(t[0]) - before, int(t[0])))
    if after > factor * step:
        gaps.append((int(t[-1]), int(t[-1]) + after))
    return gaps


def completeness(
    ts: object, every_ns: float | None = None, span: tuple[int, int] | None = None,
    prev_ns: int | None = None,
) -> float:
    """Distinct readings over the readings the expected spacing implies (at most 1.0):
    from the first to the last reading, and with ``span`` also the whole spacings that
    fit in the silence before the first and after the last in its range where that is a
    gap (longer than :data:`GAP_FACTOR` spacings; a shorter one is the phase of the
    readings, or the latency of the next one at a live window's end). The silence before
    the first reading is judged from ``prev_ns`` where given (see the module's text); a
    span with no reading but a spacing is whole (1.0) unless its silence is a gap (0.0).

    >>> completeness([0, 1, 2, 3], span=(0, 8)), completeness([0, 1, 2, 3], span=(0, 6))
    (0.5, 1.0)
    """
    _check("completeness", every_ns, GAP_FACTOR)
    t = np.unique(np.asarray(ts, dtype=np.int64))
    kind, own, starts = _shape(t)
    if kind == "bursts":  # a burst is one reading of the cadence
        return completeness(t[starts], every_ns or own, span, prev_ns)
    step = every_ns or own  # 0, as None: no spacing given, the series' own
    if span is not None and _no_step(t, step):  # whole only where its reading fills the span
        return 0.0 if _silences(t, span) else 1.0
    if not len(t):
        if span is None:
            return 0.0
        return 0.0 if _quiet_gap(t, span, step, GAP_FACTOR, prev_ns) else 1.0
    if step <= 0 or (len(t) < 2 and span is None):
        return 1.0
    before, after = _edges(t, span)
    gap_before = (span is not None and before > 0
                  and _lead(t, span, prev_ns) > GAP_FACTOR * step)
    missed = sum(math.floor(s / step) for s, gap in (
        (before, gap_before), (after, after > GAP_FACTOR * step)) if gap)
    expected = (int(t[-1]) - int(t[0])) / step + 1 + missed  # Python ints: no overflow
    return float(min(1.0, len(t) / expected))


def timeliness(
    ts: object, every_ns: float | None = None, factor: float = 1.5,
    span: tuple[int, int] | None = None, prev_ns: int | None = None,
) -> float:
    """Share of intervals no longer than ``factor`` times the expected spacing; with
    ``span``, a silence before the first (from ``prev_ns`` where given: see the module's
    text) or after the last reading in its range that is longer than that is one late
    interval more; a span with no reading but a spacing is on time (1.0) unless its
    silence is that long (0.0).

    >>> timeliness(np.array([0, 1, 2, 5]))
    0.6666666666666666
    >>> timeliness([0, 1, 2, 3], span=(0, 10))
    0.75
    """
    _check("timeliness", every_ns, factor)
    t = np.unique(np.asarray(ts, dtype=np.int64))
    kind, own, starts = _shape(t)
    if kind == "bursts":  # on time where a burst follows the one before within factor
        return timeliness(t[starts], every_ns or own, factor, span,
                          prev_ns)
    step = every_ns or own  # 0, as None: no spacing given, the series' own
    if span is not None and _no_step(t, step):  # on time only where a reading fills it
        return 0.0 if _silences(t, span) else 1.0
    if span is not None and not len(t):
        return 0.0 if _lead(t, span, prev_ns) > factor * step else 1.0
    if (len(t) < 2 and span is None) or step <= 0:
        return 1.0
    d = intervals(t)
    before, after = _edges(t, span)
    late_before = (span is not None and before > 0
                   and _lead(t, span, prev_ns) > factor * step)
    late_edges = int(late_before) + int(after > factor * step)
    total = len(d) + late_edges
    return float(np.sum(d <= factor * step) / total) if total else 1.0

