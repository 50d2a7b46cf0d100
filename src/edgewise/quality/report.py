"""A per-device data-quality report: what the dashboard and ``edgewise quality`` show.

For each metric of one device: how complete and timely its series is, how much of it is
valid, how many duplicates, conflicts and out-of-order readings arrived, how many
readings sit in stuck runs or are spikes (a series of one value throughout, 20 readings or
more, is stuck in whole, as the stream cleaner flags it: ``unchanged`` says it never
changed, so a setpoint that held can be told from a frozen sensor by its name), the gaps,
and a drift score (``None``, unknown,
where its valid readings are too few to measure one: fewer than
:data:`~edgewise.quality.drift.MIN_READINGS`); whether it is a cumulative counter, and then
its restarts and backward steps (:mod:`~edgewise.quality.counters`: no drift score, a
stuck run is a stretch where it did not count; a series in a level's unit, ``Cel``,
``%RH``, ``Pa`` ..., is never one); whether it is two-state (a boolean stored as 1/0, or
a series that switches between two values, a heater's 0 and 1500 W:
:mod:`~edgewise.quality.states`; no stuck runs, spikes or drift, but its switches and its
share of the higher value). ``rows`` are
:class:`~edgewise.telemetry.Reading` objects or mappings with ``device_id``, ``metric``,
``ts_ns`` (int nanoseconds; or ``ts``, read as a compact payload's: epoch s, ms, us or
ns told apart by size, or RFC 3339 text) and ``value`` (and optionally ``unit``). The
limit and unit checks judge the finite readings only: a NaN is invalid, never out of
range, and the rate is judged across it; a reading out of its limits and impossible for
its unit is out of range once.

>>> rows = [{"device_id": "p1", "metric": "temp", "ts_ns": i * 10**9, "value": 20.0 + i % 3}
...         for i in range(60)]
>>> rows.append(dict(rows[5]))           # a re-delivery
>>> rows[30]["value"] = 500.0            # a spike
>>> rep = device_report(rows)
>>> m = rep["metrics"]["temp"]
>>> m["readings"], m["duplicates"], m["spikes"], m["completeness"]
(61, 1, 1, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edgewise.errors import PayloadError, QualityError
from edgewise.quality.base import as_series
from edgewise.quality.counters import counter_steps
from edgewise.quality.drift import drift_measurable, drift_score
from edgewise.quality.duplicates import deduplicate
from edgewise.quality.gaps import completeness, expected_interval, find_gaps, timeliness
from edgewise.quality.limits import Limits, changes_too_fast, check_limits
from edgewise.quality.order import count_out_of_order
from edgewise.quality.spikes import hampel_mask
from edgewise.quality.states import two_state
from edgewise.quality.stuck import stuck_mask
from edgewise.quality.units import SENML_UNITS, check_unit
from edgewise.telemetry import Reading, parse_time

__all__ = ["device_report", "fleet_report", "metric_issues"]


def _as_row(row: Reading | Mapping[str, Any]) -> tuple[str, str, int, float, str | None]:
    if isinstance(row, Reading):
        return row.device_id, row.metric, row.ts_ns, row.value, row.unit
    if not isinstance(row, Mapping):
        raise QualityError(
            f"A quality row must be a Reading or a mapping. Got {type(row).__name__} instead."
        )
    try:
        ts = int(row["ts_ns"]) if "ts_ns" in row else _ts_time(row.get("ts"))
        if not -(2**63) <= ts < 2**63:
            raise OverflowError(f"time {ts} does not fit in int64 nanoseconds")
        unit = row.get("unit")
        return (str(row["device_id"]), str(row["metric"]), ts, float(row["value"]),
                unit if isinstance(unit, str) else None)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise QualityError(
            "A quality row needs 'device_id', 'metric', 'ts_ns' (int ns; or 'ts', an epoch "
            "time in s, ms, us or ns told apart by size, or RFC 3339 text) and a numeric "
            f"'value'. Got {dict(row)!r:.200} ({type(exc).__name__}: {exc})."
        ) from None


def _ts_time(value: object) -> int:
    """Nanoseconds of a row's ``ts``, read as telemetry reads a compact payload's ``ts``
    (:func:`~edgewise.telemetry.parse_time`, any time: RFC 3339 text, or an epoch number
    in s, ms, us or ns told apart by size); a row with integer nanoseconds gives ``ts_ns``.

    >>> _ts_time(1700000000) == _ts_time(1700000000000) == _ts_time("2023-11-14T22:13:20Z")
    True
    >>> _ts_time(np.int64(1700000000)) == _ts_time(np.float32(1.7e9)) == 1700000000 * 10**9
    True
    >>> _ts_time("soon")
    Traceback (most recent call last):
    ...
    ValueError: 'ts' must be an RFC 3339 timestamp with a UTC offset, e.g. '2024-01-31T12:00:00Z', or give int nanoseconds as 'ts_ns'
    """  # noqa: E501
    if value is None:
        raise KeyError("ts_ns")
    if isinstance(value, np.integer | np.floating):  # a numpy array's epoch (np.int64) was
        value = value.item()  # refused as no time: telemetry reads Python numbers
    try:
        return parse_time(value, now_ns=0, max_future_s=math.inf, earliest_ns=-(2**63))
    except PayloadError as exc:
        raise ValueError(
            f"'ts' must be {exc.allowed}, or give int nanoseconds as 'ts_ns'") from None


def _units(unit: str | Sequence[str | None] | None, n: int) -> np.ndarray:
    """Each reading's unit (an object array of ``n``): ``unit`` for all, or one each.

    >>> _units("Cel", 2).tolist(), _units(["K", None], 2).tolist()
    (['Cel', 'Cel'], ['K', None])
    """
    if unit is None or isinstance(unit, str):
        return np.full(n, unit or None, dtype=object)
    units = np.array([u if isinstance(u, str) and u else None for u in unit], dtype=object)
    if len(units) != n:
        raise QualityError(f"metric_issues got {len(units)} units for {n} readings; give "
                           "one unit, or one per reading.")
    return units


def _impossible(v: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Which finite readings are impossible for their own unit (check_unit per unit)."""
    out = np.zeros(len(v), dtype=bool)
    for u in dict.fromkeys(units.tolist()):
        if u is not None:
            at = np.flatnonzero(units == u)
            out[at[check_unit(u, v[at])["impossible"]]] = True
    return out & np.isfinite(v)


def _too_fast(t: np.ndarray, v: np.ndarray, fit: np.ndarray, max_rate: float) -> np.ndarray:
    """Which ``fit`` readings (sorted by time) change by more than ``max_rate`` per second
    from the reading kept before their time, judged as the stream cleaner judges them: at
    each time the first fit reading that is not too fast is kept, the fit ones before it
    are too fast, and those after it are that time's duplicates or conflicts.

    >>> S = 10**9
    >>> _too_fast(np.array([0, S, S, S, 2 * S]), np.array([0.0, 100.0, 0.5, 50.0, 1.0]),
    ...           np.ones(5, dtype=bool), 1.0).tolist()
    [False, True, False, False, False]
    """
    fast = np.zeros(len(v), dtype=bool)
    last_t: int | None = None
    last_v = 0.0
    for i in np.flatnonzero(fit).tolist():
        ti, vi = int(t[i]), float(v[i])
        if ti == last_t:
            continue  # the time already has its reading
        if last_t is not None and changes_too_fast(last_t, last_v, ti, vi, max_rate):
            fast[i] = True
            continue
        last_t, last_v = ti, vi
    return fast


def metric_issues(
    ts: np.ndarray,
    values: np.ndarray,
    unit: str | Sequence[str | None] | None = None,
    limits: Limits | None = None,
    span: tuple[int, int] | None = None,
    before: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Checks of one metric's series: figures plus the flagged times (for plots).

    ``span``, the range ``[start, end)`` (int ns) the series should cover, is where its
    completeness, timeliness and gaps are judged (:mod:`~edgewise.quality.gaps`): the
    silence before its first and after its last reading there counts; without it, the
    series' own first to last reading.

    ``before``, with ``span``, is the metric's history: the times of its newest readings
    before the span's start (a few, read apart; ``[]``: it has none), where the caller
    read it. A series with fewer than two times in the span is then judged by the
    spacing of its history with them (``interval_s``), not as incomplete for lack of a
    spacing (a sensor read hourly had one reading in any hour and was 0 % complete), and
    the silence before its first reading by the last of them (a gap where it is longer
    than :data:`~edgewise.quality.gaps.GAP_FACTOR` spacings, counted from there). A series
    with no history (``[]``) started in the span: the time before its first reading there
    is no silence (a sensor added to a device is judged from its first reading, not as
    missing the readings before it). Where neither gives a spacing (one reading ever),
    ``completeness`` and ``timeliness`` are ``None`` (unknown) and no silence is a gap.

    >>> H = 3600 * 10**9                     # one hourly reading in an hour
    >>> f = metric_issues([H + 60], [1.0], span=(H, 2 * H))["figures"]
    >>> f["completeness"], f["gaps"]
    (0.0, 2)
    >>> f = metric_issues([H + 60], [1.0], span=(H, 2 * H), before=[-H + 60, 60])["figures"]
    >>> f["completeness"], f["timeliness"], f["gaps"], f["interval_s"]
    (1.0, 1.0, 0, 3600.0)
    >>> f = metric_issues([H + 60], [1.0], span=(H, 2 * H), before=[])["figures"]
    >>> f["completeness"], f["timeliness"], f["gaps"]
    (None, None, 0)
    >>> M = 60 * 10**9                       # a new sensor's first reading at half past
    >>> t = H + 30 * M + np.arange(30) * M
    >>> f = metric_issues(t, np.ones(30), span=(H, 2 * H), before=[])["figures"]
    >>> f["completeness"], f["gaps"]
    (1.0, 0)

    ``unit`` is the unit of every reading, or one per reading: each reading is judged in
    its own unit, and ``units`` lists those seen (``unit`` the first). As the stream
    cleaner keeps it, a reading that is no number, out of range (its unit's or its
    limits') or too fast (more than ``max_rate`` from the reading kept before its time)
    gives way to a valid reading at the same time, and counts as invalid (``out_of_range``
    or ``rate`` too) but as no conflict; among valid ones the first at a time wins. Where
    none at a time is valid the first is kept (as an invalid reading), and each other
    counts by its own fault too, as the stream cleaner counts it, no duplicate or conflict
    (two NaN at one time were one invalid reading and a duplicate, the stream's two
    invalid ones).

    >>> nan = float("nan")
    >>> f = metric_issues([0, 10, 10, 20], [20.0, nan, 21.0, 22.0])["figures"]
    >>> f["distinct_times"], f["conflicts"], f["invalid"], f["validity"]
    (3, 0, 1, 1.0)
    >>> f = metric_issues([0, 1], [300.0, -5.0], ["K", "Cel"])["figures"]
    >>> f["out_of_range"], f["unit"], f["units"]
    (0, 'K', ['K', 'Cel'])
    >>> S = 10**9                            # 100 at 1 s is too fast: 0.5 there is kept
    >>> r = metric_issues([0, S, S, 2 * S], [0.0, 100.0, 0.5, 1.0], limits=Limits(max_rate=1))
    >>> r["values"].tolist(), r["figures"]["rate"], r["figures"]["conflicts"]
    ([0.0, 0.5, 1.0], 1, 0)
    """
    t, v = as_series(ts, values)
    n = len(v)
    units = _units(unit, n)
    seen = [u for u in dict.fromkeys(units.tolist()) if u is not None]
    out_of_order = count_out_of_order(t)
    order = np.argsort(t, kind="stable")
    t, v, units = t[order], v[order], units[order]
    finite = np.isfinite(v)
    # a reading fit to keep: a number, possible in its unit, inside the limits, and no
    # faster than max_rate from the reading kept before its time
    fit = finite & ~_impossible(v, units)
    if limits:  # Limits.in_range, for the whole array
        with np.errstate(invalid="ignore"):
            if limits.low is not None:
                fit &= v >= limits.low
            if limits.high is not None:
                fit &= v <= limits.high
    fast = np.zeros(n, dtype=bool)
    if limits and limits.max_rate is not None:
        fast = _too_fast(t, v, fit, limits.max_rate)
        fit &= ~fast
    new_time = np.r_[True, t[1:] != t[:-1]] if n else np.zeros(0, dtype=bool)
    group = np.cumsum(new_time) - 1
    has_fit = np.bincount(group, weights=fit, minlength=int(new_time.sum())) > 0
    # an unfit reading where a fit one shares its time goes, as does each unfit one after
    # the first at a time with none fit: each is removed for its own fault, as the stream's
    keep = fit | (~has_fit[group] & new_time)
    gone_invalid = int((~keep).sum())
    gone_rate = int((~keep & fast).sum())
    gone_range = int((~keep & finite & ~fast).sum())
    t, v, units = t[keep], v[keep], units[keep]
    dd = deduplicate(t, v, policy="first")
    units = units[np.flatnonzero(np.r_[True, t[1:] != t[:-1]])] if len(t) else units
    t, v = dd.ts, dd.values
    finite = np.isfinite(v)
    # the checks see finite readings only (a NaN read as 0.0 was out of range, and the
    # next reading too fast); as in the stream cleaner, the range (limits or unit) first,
    # then the rate from the last reading in range
    out_of_range = _impossible(v, units)
    at = np.flatnonzero(finite & ~out_of_range)
    rate = np.zeros(len(v), dtype=bool)
    if limits:
        lim = check_limits(t[at], v[at], limits)
        out_of_range[at[lim["out_of_range"]]] = True
        rate[at[lim["rate"]]] = True
    bad = ~finite | out_of_range | rate
    good = ~bad
    spikes = np.zeros(len(v), dtype=bool)
    stuck = np.zeros(len(v), dtype=bool)
    states = two_state(v[good])
    if good.sum() >= 3 and not states["binary"]:
        spikes[good] = hampel_mask(v[good], half_window=3, n_sigmas=5.0)
        with np.errstate(over="ignore"):  # a step past the largest float is inf: no run
            stuck[good] = stuck_mask(v[good], min_run=20, ts=t[good])
    step, prev, known = _spacing(t, span, before)
    if span is not None and before is not None and prev is None and len(t):
        span = _from_first(span, int(t[0]))  # no history: it started in the span
    every = step if step > 0 else None
    gaps = find_gaps(t, every, span=span, prev_ns=prev) if known else []
    steps = counter_steps(v[good], seen)  # a level's unit (Cel, %RH ...): never a counter
    counter = steps["counter"] and not states["binary"]
    figures = {
        "readings": n,
        "distinct_times": len(t),
        "duplicates": dd.removed["duplicate"],
        "conflicts": dd.removed["conflict"],
        "out_of_order": out_of_order,
        "completeness": (round(completeness(t, every, span=span, prev_ns=prev), 4)
                         if known else None),
        "timeliness": (round(timeliness(t, every, span=span, prev_ns=prev), 4)
                       if known else None),
        # unknown (None) with no reading: a silent metric's 1.0 read as all valid, and
        # raised its device's summary (0.5 valid and a silent metric: 0.75)
        "validity": round(float(good.mean()), 4) if len(v) else None,
        "invalid": int(bad.sum()) + gone_invalid,
        "out_of_range": int(out_of_range.sum()) + gone_range,
        "rate": int(rate.sum()) + gone_rate,
        "spikes": int(spikes.sum()),
        "stuck": int(stuck.sum()),
        # its valid readings (two or more) are all one value: a frozen sensor or a setpoint
        "unchanged": bool(good.sum() >= 2 and np.all(v[good] == v[good][0])),
        "gaps": len(gaps),
        "longest_gap_s": round(max((b - a for a, b in gaps), default=0) / 1e9, 3),
        "interval_s": round(step / 1e9, 6),
        # unknown (None) where too few valid readings measure it: 0.0 read as no drift
        "drift": (None if counter or states["binary"] or not drift_measurable(v[good])
                  else round(drift_score(v[good]), 3)),
        "counter": counter,
        "restarts": steps["restarts"] if counter else 0,
        "backwards": steps["backwards"] if counter else 0,
        **states,
        "unit": seen[0] if seen else None,
        "units": seen,
        "unit_known": all(u in SENML_UNITS for u in seen),
    }
    return {"figures": figures, "ts": t, "values": v, "flags": {
        "invalid": bad, "spike": spikes, "stuck": stuck}, "gaps": gaps}


def _from_first(span: tuple[int, int], first: int) -> tuple[int, int]:
    """``span`` from the series' ``first`` reading where that came later (a series with no
    history began there: no reading was missing before it), never empty.

    >>> _from_first((0, 100), 30), _from_first((50, 100), 30), _from_first((0, 100), 200)
    ((30, 100), (50, 100), (200, 201))
    """
    start, end = int(span[0]), int(span[1])
    start = max(start, first)
    return start, max(end, start + 1)


def _spacing(t: np.ndarray, span: tuple[int, int] | None, before: Sequence[int] | None,
             ) -> tuple[float, int | None, bool]:
    """``(step, prev, known)`` of a series ``t`` (distinct, ascending) over ``span`` with
    the history ``before`` (:func:`metric_issues`): the spacing to judge it by (its own;
    with fewer than two times, that of the history with them), the history's last time
    before the span, and whether a spacing is known where one is needed (``False`` only
    where a history was read and gives none).

    >>> _spacing(np.array([10, 20]), (0, 30), None), _spacing(np.array([10]), (5, 30), [-8, 0])
    ((10.0, None, True), (8.0, 0, True))
    >>> _spacing(np.array([10]), (5, 30), None), _spacing(np.array([10]), (5, 30), [7])
    ((0.0, None, True), (0.0, None, False))
    """
    step = expected_interval(t)
    if before is None or span is None:
        return step, None, True
    hist = np.unique(np.asarray(before, dtype=np.int64))
    hist = hist[hist < min(int(span[0]), int(t[0]) if len(t) else int(span[0]))]
    prev = int(hist[-1]) if len(hist) else None
    if len(t) < 2:
        step = expected_interval(np.r_[hist, t])
    return step, prev, step > 0


def fleet_report(
    rows: Iterable[Reading | Mapping[str, Any]], limits: Mapping[str, Limits] | None = None,
    spans: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`device_report` for every device in ``rows``, keyed by device id; ``spans``
    the ``span`` of each device (one left out: that of its readings)."""
    by_device: dict[str, list[tuple[str, str, int, float, str | None]]] = {}
    for row in rows:
        r = _as_row(row)
        by_device.setdefault(r[0], []).append(r)
    spans = spans or {}
    return {d: _report(d, rs, limits or {}, spans.get(d))
            for d, rs in sorted(by_device.items())}


def device_report(
    rows: Iterable[Reading | Mapping[str, Any]], limits: Mapping[str, Limits] | None = None,
    span: tuple[int, int] | None = None, metrics: Iterable[str] = (),
    before: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Data-quality figures of one device, per metric and in summary (a JSON-ready dict).

    Each metric is judged over ``span`` (:func:`metric_issues`), by default the range of
    the device's readings of every metric: a metric that stopped while another went on
    has the gap and the missing readings at its end. ``metrics`` names those the device
    sends (e.g. as the store knows them): one with no reading in ``span`` is reported
    silent (:func:`silent_figures`), not left out, where a span is given. ``before``, with
    ``span``, maps each metric to its history before the span (:func:`metric_issues`; a
    metric left out has none): a metric silent over the span is then judged by it too
    (no gap where its spacing is longer than the span; unknown where none is known).
    A summary's mean leaves out the metrics whose figure is unknown (``None``).

    >>> rows = [{"device_id": "p", "metric": m, "ts_ns": i * 10**9, "value": 1.0 + i % 2}
    ...         for i in range(60) for m in ("temp", "hum") if m == "temp" or i < 10]
    >>> hum = device_report(rows)["metrics"]["hum"]
    >>> hum["completeness"], hum["gaps"]
    (0.1667, 1)
    """
    rows = [_as_row(r) for r in rows]
    devices = sorted({r[0] for r in rows})
    if len(devices) > 1:
        raise QualityError(
            f"device_report covers one device; rows hold {len(devices)} ({devices[:5]}). "
            "Use fleet_report for several."
        )
    return _report(devices[0] if devices else "", rows, limits or {}, span, metrics, before)


def silent_figures(span: tuple[int, int]) -> dict[str, Any]:
    """The figures of a metric that sent no reading in ``span`` (one the device sends,
    silent there): nothing complete or on time, the whole span one gap, and no validity
    (``None``: no reading to judge; the summary's mean leaves it out).

    >>> f = silent_figures((0, 3600 * 10**9))
    >>> f["readings"], f["completeness"], f["timeliness"], f["gaps"], f["longest_gap_s"]
    (0, 0.0, 0.0, 1, 3600.0)
    >>> f["validity"] is None
    True
    """
    figures = metric_issues(np.zeros(0, dtype=np.int64), np.zeros(0), span=span)["figures"]
    figures.update(completeness=0.0, timeliness=0.0, gaps=1,
                   longest_gap_s=round((span[1] - span[0]) / 1e9, 3))
    return figures


def _report(device: str, rows: list, limits: Mapping[str, Limits],
            span: tuple[int, int] | None = None, expected: Iterable[str] = (),
            before: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    if span is None and rows:  # the device's readings, of every metric
        span = (min(r[2] for r in rows), max(r[2] for r in rows) + 1)
    by_metric: dict[str, list] = {}
    for r in rows:
        by_metric.setdefault(r[1], []).append(r)
    metrics = {}
    for name in sorted({*by_metric, *(expected if span is not None else ())}):
        hist = None if before is None or span is None else before.get(name, ())
        if name not in by_metric:  # a metric the device sends, silent over the span
            metrics[name] = (silent_figures(span) if hist is None  # type: ignore[arg-type]
                             else metric_issues(np.zeros(0, dtype=np.int64), np.zeros(0),
                                                span=span, before=hist)["figures"])
            continue
        rs = by_metric[name]
        ts = np.array([r[2] for r in rs], dtype=np.int64)
        vals = np.array([r[3] for r in rs], dtype=float)
        units = [r[4] for r in rs]  # each reading judged in its own unit
        metrics[name] = metric_issues(ts, vals, units, limits.get(name), span,
                                      hist)["figures"]
    figs = list(metrics.values())

    def mean(key: str) -> float | None:
        known = [f[key] for f in figs if f[key] is not None]
        return round(float(np.mean(known)), 4) if known else None

    return {
        "device_id": device,
        "readings": len(rows),
        "metrics": metrics,
        "summary": {
            "completeness": mean("completeness"),
            "timeliness": mean("timeliness"),
            "validity": mean("validity"),
            **{k: sum(f[k] for f in figs) for k in
               ("duplicates", "conflicts", "out_of_order", "spikes", "stuck", "gaps",
                "unchanged")},
        },
    }
