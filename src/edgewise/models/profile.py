"""A device's behaviour profile: a few numbers per metric that say how it behaves.

:func:`behaviour_profile` reads one device's history (a DataFrame indexed by time, one
column per metric; irregular times, gaps and NaN are fine) and returns, per metric:

``level``
    the median reading;
``spread``
    the interquartile range (the standard deviation where that is 0); NaN from fewer than
    :data:`MIN_SPREAD_READINGS` readings (a handful of readings' range is mostly chance);
``trend``
    the least-squares slope, in units per day; with ``trend_over_ns`` (the time a trend
    is read over: a fleet's typical history length), NaN where the change it makes over
    that time would have a standard error above the metric's spread were the readings
    white noise (the square root of the readings' summed squared time from their mean time
    under ``trend_over_ns``): a slope fitted to a short stretch of a few readings is mostly
    noise, and read over a longer history that noise is blown up;
``acf1``
    the lag-1 autocorrelation on a regular grid of ``step_ns`` (mean per step; a step
    with no reading stays empty, it is not filled);
``daily``, ``daily_cos``, ``daily_sin``
    the daily cycle: the share of the (day-mean-removed) hourly variance that the hour of
    day explains, adjusted for the 24 means fitted (as an adjusted R², so noise alone
    scores about 0), in [0, 1], and that share times the cosine / sine of the hour of the
    cycle's peak (so a weak cycle's peak hour weighs little). Empty for histories shorter
    than two days;

and for each pair of metrics ``corr`` (their correlation on the grid) and, with a
``reference`` metric, ``at_ref`` (a metric's level at the reference metric's value
``reference_value``, from a straight-line fit on the grid: "vibration at the same
speed"). A feature that cannot be computed (too few readings, a constant metric) is NaN.
Feature names read ``kind:metric`` (``corr:a~b`` for a pair).

>>> idx = pd.date_range("2024-01-01", periods=96 * 3, freq="15min", tz="UTC")
>>> hour = idx.hour.to_numpy() + idx.minute.to_numpy() / 60
>>> temp = 20 + 5 * np.sin(2 * np.pi * (hour - 9) / 24)  # peaks at 15:00
>>> p = behaviour_profile(pd.DataFrame({"temp": temp}, index=idx), step_ns=900 * 10**9)
>>> round(p["level:temp"], 1), round(p["daily:temp"], 2), round(peak_hour(p, "temp"))
(20.0, 1.0, 15)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from edgewise.models.history import wide_readings

__all__ = [
    "FEATURE_KINDS",
    "MAX_GRID_POINTS",
    "MIN_SPREAD_READINGS",
    "behaviour_profile",
    "device_history",
    "finite_metrics",
    "median_step_ns",
    "peak_hour",
]

#: per-metric feature kinds, in the order a profile lists them
FEATURE_KINDS = ("level", "spread", "trend", "acf1", "daily", "daily_cos", "daily_sin")
#: a history longer than this many grid steps is profiled on its most recent part
MAX_GRID_POINTS = 50_000
#: a metric's spread from fewer readings than this is unknown (NaN)
MIN_SPREAD_READINGS = 10
_DAY_NS = 86_400 * 10**9


def device_history(rows: Sequence[tuple[str, int, float]]) -> pd.DataFrame:
    """A device's stored ``(metric, ts_ns, value)`` rows as a history: a UTC time index,
    sorted, and one column per metric, each metric holding values only at its own times
    (NaN between them, never carried forward: a repeated value would look like a calm
    metric).

    >>> device_history([("a", 0, 1.0), ("b", 60 * 10**9, 2.0)]).to_dict("list")
    {'a': [1.0, nan], 'b': [nan, 2.0]}
    """
    fast = _history_of_sorted_rows(rows)
    if fast is not None:
        return fast
    by_metric: dict[str, list[tuple[str, int, float]]] = {}
    for row in rows:
        by_metric.setdefault(str(row[0]), []).append(row)
    if not by_metric:
        return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
    # one metric at a time, so no metric is carried over another's times
    frame = pd.concat([wide_readings(r, "mean") for _, r in sorted(by_metric.items())], axis=1)
    frame.index = pd.to_datetime(frame.index.to_numpy(dtype=np.int64), unit="ns", utc=True)
    # sorted: the outer join keeps each time where it first appears, metric by metric, and
    # readers take a history's first and last times as its start and end
    return frame.sort_index(kind="stable")


def _history_of_sorted_rows(rows: Sequence[tuple[str, int, float]]) -> pd.DataFrame | None:
    """:func:`device_history` of rows as a store gives them (sorted by metric, then time,
    one row per metric and time, no NaN), built in numpy, the same frame; None for any
    other rows (the general path builds those)."""
    if not len(rows):
        return None
    try:
        metric = np.array([str(r[0]) for r in rows])
        ts = np.array([r[1] for r in rows], dtype=np.int64)
        value = np.array([r[2] for r in rows], dtype=float)
    except (TypeError, ValueError, OverflowError):
        return None
    if np.isnan(value).any():
        return None
    cuts = np.flatnonzero(metric[1:] != metric[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(rows)]))
    names = metric[starts]
    if len(np.unique(names)) != len(names) or (len(names) > 1 and not np.all(
            names[1:] > names[:-1])):
        return None
    for a, b in zip(starts, ends, strict=True):
        if b - a > 1 and not np.all(np.diff(ts[a:b]) > 0):
            return None
    # every time any metric has, sorted (where metrics' times differ, the metric-by-metric
    # order of the rows is not the order of the times)
    times = np.unique(ts)
    grid = np.full((len(times), len(names)), np.nan)
    for j, (a, b) in enumerate(zip(starts, ends, strict=True)):
        grid[np.searchsorted(times, ts[a:b]), j] = value[a:b]
    index = pd.to_datetime(times, unit="ns", utc=True)
    return pd.DataFrame(grid, index=index, columns=[str(n) for n in names])


def finite_metrics(frame: pd.DataFrame) -> list[str]:
    """The numeric columns of ``frame`` holding at least one finite reading.

    >>> finite_metrics(pd.DataFrame({"a": [1.0, np.nan], "b": [np.inf, np.nan], "c": ["x", "y"]}))
    ['a']
    """
    if len(frame.columns) and frame.columns.is_unique and all(
            dt == np.float64 for dt in frame.dtypes):  # all float: one look at all columns
        finite = np.isfinite(frame.to_numpy(dtype=float)).any(axis=0)
        return [str(c) for c, ok in zip(frame.columns, finite, strict=True) if ok]
    out = []
    for c in frame.columns:
        col = frame[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            if np.isfinite(col.to_numpy(dtype=float)).any():
                out.append(str(c))
    return out


def median_step_ns(frame: pd.DataFrame) -> int | None:
    """The median time between a device's successive readings (any metric), in ns.

    >>> idx = pd.to_datetime([0, 10, 20, 50], unit="s", utc=True)
    >>> median_step_ns(pd.DataFrame({"a": [1.0, 2, 3, 4]}, index=idx)) // 10**9
    10
    """
    times = np.unique(_ns(frame.index))
    if len(times) < 2:
        return None
    return int(np.median(np.diff(times)))


def _ns(index: pd.Index) -> np.ndarray:
    """A time index as int64 nanoseconds, whatever its resolution."""
    return pd.DatetimeIndex(index).as_unit("ns").asi8


def _series(frame: pd.DataFrame, metric: str) -> pd.Series:
    """One metric's finite readings (a time with several readings: their mean)."""
    s = frame[metric].astype(float)
    s = s[np.isfinite(s.to_numpy())]
    return s.groupby(level=0).mean().sort_index()


def _grid(s: pd.Series, step_ns: int) -> pd.Series:
    """``s`` as the mean per grid step (empty steps stay NaN), at most the last
    :data:`MAX_GRID_POINTS` steps."""
    start = s.index[-1] - pd.Timedelta(step_ns * (MAX_GRID_POINTS - 1), unit="ns")
    s = s[s.index >= start]
    return s.resample(pd.Timedelta(step_ns, unit="ns")).mean()


def _trend(s: pd.Series) -> float:
    if len(s) < 3:
        return math.nan
    t = _ns(s.index)
    days = (t - t[0]) / _DAY_NS
    if np.ptp(days) == 0:
        return math.nan
    return float(np.polyfit(days, s.to_numpy(), 1)[0])


def _acf1(g: pd.Series) -> float:
    x = g.to_numpy()
    a, b = x[:-1], x[1:]
    ok = np.isfinite(a) & np.isfinite(b)
    return _corr(a[ok], b[ok])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN for fewer than 3 pairs or a constant side."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.clip(np.corrcoef(a, b)[0, 1], -1.0, 1.0))


#: Above this magnitude squares can overflow (about 1e154 and beyond): the daily cycle's
#: variances are then read from the values scaled by a power of two (exact), see _tamed.
_BIG = 2.0**500


def _tamed(rest: np.ndarray) -> np.ndarray | None:
    """Day-mean-removed hourly means ready for variances: ``None`` when one is not finite
    (hourly means that overflowed: no share can be read from them), scaled by a power of
    two (exact, so the shares are unchanged) when their squares could overflow, else as
    they are. Unscaled, white noise at 1e160 had an ``inf`` variance, a NaN share, and
    ``min(1.0, nan)`` reported it as a perfect daily cycle (1.0).

    >>> _tamed(np.array([2.0**600, -2.0**599])).tolist(), _tamed(np.array([1.0, np.inf]))
    ([0.5, -0.25], None)
    """
    if not np.isfinite(rest).all():
        return None
    big = float(np.max(np.abs(rest), initial=0.0))
    return np.ldexp(rest, -int(np.frexp(big)[1])) if big > _BIG else rest


def _share(shape: np.ndarray, weights: Any, total: float) -> float:
    """The hour-of-day means' share of the variance ``total``, at most 1; NaN when it
    cannot be read (never 1.0 for a NaN ratio, as ``min(1.0, nan)`` gives)."""
    ratio = float(np.average(shape**2, weights=weights) / total)
    return min(1.0, ratio) if math.isfinite(ratio) else math.nan


def _daily(s: pd.Series) -> tuple[float, float, float]:
    """Daily-cycle strength in [0, 1], and its peak as strength * (cos, sin) of the phase."""
    if s.index[-1] - s.index[0] < pd.Timedelta(days=2):
        return math.nan, math.nan, math.nan
    hourly = s.resample("1h").mean().dropna()
    rest = hourly - hourly.groupby(hourly.index.floor("D")).transform("mean")
    tamed = _tamed(rest.to_numpy())
    if tamed is None:
        return math.nan, math.nan, math.nan
    rest = pd.Series(tamed, index=rest.index)
    total = float(np.var(rest.to_numpy()))
    if len(rest) < 48 or total == 0:
        return math.nan, math.nan, math.nan
    shape = rest.groupby(rest.index.hour).mean()
    weights = rest.groupby(rest.index.hour).size()
    share = _share(shape.to_numpy(), weights, total)
    if math.isnan(share):
        return math.nan, math.nan, math.nan
    # adjusted for the 24 hour means fitted (as an adjusted R²): noise alone gives ~0
    n = len(rest)
    strength = max(0.0, 1.0 - (1.0 - share) * (n - 1) / max(n - len(shape), 1))
    angle = 2 * np.pi * (shape.index.to_numpy() + 0.5) / 24  # an hour's mean: its middle
    phase = math.atan2(float(np.sum(shape * np.sin(angle))), float(np.sum(shape * np.cos(angle))))
    return strength, strength * math.cos(phase), strength * math.sin(phase)


def peak_hour(profile: Mapping[str, float], metric: str) -> float:
    """The hour of day (UTC, 0 to 24) at which ``metric``'s daily cycle peaks, from its
    profile's ``daily_cos`` and ``daily_sin``; NaN when there is no cycle.

    >>> peak_hour({"daily_cos:t": 0.0, "daily_sin:t": 0.5}, "t")
    6.0
    """
    c = profile.get(f"daily_cos:{metric}", math.nan)
    s = profile.get(f"daily_sin:{metric}", math.nan)
    if not (np.isfinite(c) and np.isfinite(s)) or (c == 0 and s == 0):
        return math.nan
    return (math.atan2(s, c) * 24 / (2 * np.pi)) % 24


def behaviour_profile(
    frame: pd.DataFrame,
    step_ns: int,
    metrics: Sequence[str] | None = None,
    reference: str | None = None,
    reference_value: float | None = None,
    relations: bool = True,
    trend_over_ns: float | None = None,
) -> dict[str, float]:
    """One device's profile (see the module doc) over ``metrics`` (default: every column
    with a finite reading); a metric the device lacks gives NaN features.
    ``trend_over_ns``: the time a trend is read over (see the module doc).

    >>> idx = pd.date_range("2024-01-01", periods=200, freq="1min", tz="UTC")
    >>> rpm = np.linspace(1000, 3000, 200)
    >>> frame = pd.DataFrame({"rpm": rpm, "vib": 0.001 * rpm}, index=idx)
    >>> p = behaviour_profile(frame, 60 * 10**9, reference="rpm", reference_value=2500.0)
    >>> round(p["at_ref:vib"], 2), round(p["corr:rpm~vib"], 2)
    (2.5, 1.0)
    """
    metrics = list(metrics) if metrics is not None else finite_metrics(frame)
    out: dict[str, float] = {}
    grids: dict[str, _Grid] = {}
    times = _ns(frame.index) if len(frame.columns) else np.empty(0, np.int64)
    # a sorted index of distinct times (a store's history): each metric's finite readings
    # are its series as they are, and the work is plain numpy (pandas per metric and pair
    # was most of a fleet fit's time); else pandas merges a time's readings first
    plain = frame.columns.is_unique and (len(times) < 2 or bool(np.all(np.diff(times) > 0)))
    present = [m for m in metrics if m in frame.columns]
    values = frame[present].to_numpy(dtype=float).T if plain and present else None
    # every metric finite at every time: quantiles, medians and trends for all at once
    # (row by row they are the same numbers)
    full = values is not None and len(times) > 0 and bool(np.isfinite(values).all())
    if full:
        quart = np.percentile(values, [25, 75], axis=1)
        medians = np.median(values, axis=1)
        trends = _trends(times, values)
        shared = _grid_many(times, values, step_ns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice reads as NaN
        for m in metrics:
            j = present.index(m) if values is not None and m in present else -1
            if m not in frame.columns:
                t, x = np.empty(0, np.int64), np.empty(0)
            elif values is not None:
                x = values[j]
                ok = np.isfinite(x)
                t, x = (times, x) if full else (times[ok], x[ok])
            else:
                s = _series(frame, m)
                t, x = _ns(s.index), s.to_numpy(dtype=float)
            if len(x) == 0:
                out.update({f"{k}:{m}": math.nan for k in FEATURE_KINDS})
                continue
            q25, q75 = (quart[0, j], quart[1, j]) if full else np.percentile(x, [25, 75])
            spread = (float(q75 - q25) or float(np.std(x)) if len(x) >= MIN_SPREAD_READINGS
                      else math.nan)
            short = trend_over_ns is not None and _trend_too_noisy(t, trend_over_ns)
            g = (shared[0], shared[1][j]) if full else _grid_np(t, x, step_ns)
            grids[m] = g
            daily, dcos, dsin = _daily_np(t, x)
            out.update({f"level:{m}": float(medians[j] if full else np.median(x)),
                        f"spread:{m}": spread,
                        f"trend:{m}": (math.nan if short else float(trends[j]) if full
                                       else _trend_np(t, x)),
                        f"acf1:{m}": math.nan, f"daily:{m}": daily, f"daily_cos:{m}": dcos,
                        f"daily_sin:{m}": dsin})
        whole = _one_full_grid(grids, metrics)
        acf1 = (_acf1_all(whole) if whole is not None
                else [_acf1_np(g[1]) for g in grids.values()])
        for m, c in zip(grids, acf1, strict=True):
            out[f"acf1:{m}"] = c
        if relations:
            corr = _corr_all(whole) if whole is not None else None
            for i, a in enumerate(metrics):
                for j, b in enumerate(metrics[i + 1:], i + 1):
                    out[f"corr:{a}~{b}"] = (float(corr[i, j]) if corr is not None else
                                            _corr(*_aligned_np(grids.get(a), grids.get(b))))
        if reference is not None and reference_value is not None:
            ref = grids.get(reference)
            for m in metrics:
                if m != reference:
                    out[f"at_ref:{m}"] = _at_np(grids.get(m), ref, reference_value)
    return out


#: a metric on its regular grid: the grid times (ns) and the mean per step (NaN: empty)
_Grid = tuple[np.ndarray, np.ndarray]


def _one_full_grid(grids: dict[str, _Grid], metrics: list[str]) -> np.ndarray | None:
    """Every metric's grid values as the rows of one array (metrics in order), when every
    metric has a grid, all on the same times, and no step is empty; else None."""
    if len(grids) != len(metrics) or not metrics:
        return None
    t0 = grids[metrics[0]][0]
    if any(len(grids[m][0]) != len(t0) or grids[m][0][0] != t0[0] for m in metrics):
        return None
    v = np.vstack([grids[m][1] for m in metrics])
    return v if bool(np.isfinite(v).all()) else None


def _corr_all(v: np.ndarray) -> np.ndarray:
    """:func:`_corr` of every pair of rows of ``v`` (finite) at once: the same numbers
    (``np.corrcoef`` computes each pair alike in a bigger matrix), NaN where a row is
    constant or there are fewer than 3 columns."""
    if v.shape[1] < 3:
        return np.full((len(v), len(v)), np.nan)
    c = np.clip(np.corrcoef(v), -1.0, 1.0).reshape(len(v), len(v))
    flat = np.ptp(v, axis=1) == 0
    c[flat, :] = np.nan
    c[:, flat] = np.nan
    return c


def _acf1_all(v: np.ndarray) -> list[float]:
    """:func:`_acf1_np` of every row of ``v`` (finite) at once."""
    m = len(v)
    lagged = _corr_all(np.vstack([v[:, :-1], v[:, 1:]]))
    return [float(lagged[i, m + i]) for i in range(m)]


def _group_mean(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of each run ``values[starts[i]:starts[i] + counts[i]]`` (every count at
    least 1), summed as pandas sums a group's mean (Kahan-compensated, in order), so the
    means are pandas' to the last bit.

    >>> _group_mean(np.array([0.1, 0.2, 0.3, 5.0]), np.array([0, 3]), np.array([3, 1]))
    array([0.2, 5. ])
    """
    total = np.zeros(len(starts))
    comp = np.zeros(len(starts))
    for j in range(int(counts.max()) if len(counts) else 0):
        live = counts > j
        val = values[starts[live] + j]
        y = val - comp[live]
        t = total[live] + y
        comp[live] = t - total[live] - y
        total[live] = t
    return total / counts


def _run_mean(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of each run ``values[starts[i]:starts[i] + counts[i]]`` of sorted groups
    without NaN, summed as pandas does there (``np.add.reduceat``), to the last bit.

    >>> _run_mean(np.array([0.1, 0.2, 0.3, 5.0]), np.array([0, 3]), np.array([3, 1]))
    array([0.2, 5. ])
    """
    return np.add.reduceat(values, starts) / counts.astype(np.float64)


def _binned_mean(t: np.ndarray, x: np.ndarray, first: int, step: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``x`` (at sorted times ``t``, ns) per bin ``[first + k step,
    first + (k + 1) step)`` from the first bin to the last with a reading: the bins' start
    times and means (NaN for an empty bin), as pandas' ``resample(...).mean()`` gives."""
    k = (t - first) // step
    n = int(k[-1]) + 1
    out = np.full(n, np.nan)
    cuts = np.flatnonzero(np.diff(k)) + 1
    starts = np.concatenate(([0], cuts))
    counts = np.diff(np.concatenate((starts, [len(k)])))
    out[k[starts]] = x[starts] if counts.max() == 1 else _run_mean(x, starts, counts)
    return first + np.arange(n, dtype=np.int64) * step, out


def _origin_floor(t0: int, step: int) -> int:
    """The start of the bin holding ``t0`` for bins of ``step`` ns counted from the
    midnight (UTC) of ``t0``'s day: pandas' ``resample`` origin ``"start_day"``."""
    day = t0 - t0 % _DAY_NS
    return t0 - (t0 - day) % step


def _grid_np(t: np.ndarray, x: np.ndarray, step_ns: int) -> _Grid:
    """:func:`_grid` on a series' times ``t`` (ns, sorted, distinct) and values ``x``."""
    start = int(t[-1]) - int(step_ns) * (MAX_GRID_POINTS - 1)
    if t[0] < start:
        keep = t >= start
        t, x = t[keep], x[keep]
    return _binned_mean(t, x, _origin_floor(int(t[0]), int(step_ns)), int(step_ns))


def _grid_many(t: np.ndarray, values: np.ndarray, step_ns: int) -> tuple[np.ndarray, Any]:
    """:func:`_grid_np` of every row of ``values`` (finite, at times ``t``): the grid
    times, and the rows' grid values as one array (a step holds at most one reading) or
    as a list of arrays, one per row."""
    start = int(t[-1]) - int(step_ns) * (MAX_GRID_POINTS - 1)
    if t[0] < start:
        keep = t >= start
        t, values = t[keep], values[:, keep]
    step = int(step_ns)
    first = _origin_floor(int(t[0]), step)
    k = (t - first) // step
    if len(k) > 1 and not np.all(np.diff(k) > 0):  # a step with several readings
        grids = [_binned_mean(t, row, first, step) for row in values]
        return grids[0][0], [g[1] for g in grids]
    n = int(k[-1]) + 1
    out = np.full((len(values), n), np.nan)
    out[:, k] = values
    return first + np.arange(n, dtype=np.int64) * step, out


def _trend_too_noisy(t: np.ndarray, over_ns: float) -> bool:
    """Whether a slope fitted at times ``t`` (ns) changes by more than a spread over
    ``over_ns``, by chance, on white noise: its standard error is the spread over the
    square root of the summed squared times from their mean, so the change's is at most
    a spread where that root is at least ``over_ns``.

    >>> day = 86_400 * 10**9
    >>> t = np.arange(300) * 600 * 10**9  # 300 readings 10 min apart: about 2 days
    >>> _trend_too_noisy(t, 2 * day), _trend_too_noisy(t[-40:], 2 * day)
    (False, True)
    """
    d = (t - t[0]).astype(float)
    return bool(math.sqrt(float(np.sum((d - d.mean()) ** 2))) < over_ns)


def _trend_np(t: np.ndarray, x: np.ndarray) -> float:
    """:func:`_trend` on a series' times (ns) and values."""
    if len(x) < 3:
        return math.nan
    days = (t - t[0]) / _DAY_NS
    if np.ptp(days) == 0:
        return math.nan
    return float(np.polyfit(days, x, 1)[0])


def _trends(t: np.ndarray, values: np.ndarray) -> np.ndarray:
    """:func:`_trend_np` of each row of ``values`` (finite) at times ``t``: the slope of
    ``np.polyfit(days, row, 1)``, its steps taken once for all rows (its one-row least
    squares kept row by row, so each slope is polyfit's to the last bit)."""
    if len(t) < 3:
        return np.full(len(values), np.nan)
    days = (t - t[0]) / _DAY_NS
    if np.ptp(days) == 0:
        return np.full(len(values), np.nan)
    lhs = np.vander(days + 0.0, 2)
    scale = np.sqrt((lhs * lhs).sum(axis=0))
    lhs /= scale
    rcond = len(days) * np.finfo(days.dtype).eps
    return np.array([np.linalg.lstsq(lhs, row + 0.0, rcond)[0][0] / scale[0]
                     for row in values])


def _acf1_np(x: np.ndarray) -> float:
    a, b = x[:-1], x[1:]
    ok = np.isfinite(a) & np.isfinite(b)
    return _corr(a[ok], b[ok])


def _aligned_np(a: _Grid | None, b: _Grid | None) -> tuple[np.ndarray, np.ndarray]:
    """The values of two grids at the times both have, where both are finite."""
    if a is None or b is None:
        return np.empty(0), np.empty(0)
    if len(a[0]) == len(b[0]) and a[0][0] == b[0][0]:  # one grid (equal steps): no search
        va, vb = a[1], b[1]
    else:
        _, ia, ib = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
        va, vb = a[1][ia], b[1][ib]
    ok = np.isfinite(va) & np.isfinite(vb)
    return va[ok], vb[ok]


def _at_np(m: _Grid | None, ref: _Grid | None, value: float) -> float:
    """:func:`_at` on grids."""
    y, x = _aligned_np(m, ref)
    if len(x) < 10 or np.ptp(x) == 0:
        return math.nan
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope * value + intercept)


def _daily_np(t: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """:func:`_daily` on a series' times (ns, sorted, distinct) and values."""
    if t[-1] - t[0] < 2 * _DAY_NS:
        return math.nan, math.nan, math.nan
    hour_ns = _DAY_NS // 24
    ht, hv = _binned_mean(t, x, int(t[0]) - int(t[0]) % hour_ns, hour_ns)
    ok = ~np.isnan(hv)
    ht, hv = ht[ok], hv[ok]
    day = ht // _DAY_NS  # the hourly means are sorted: each day's are one run
    cuts = np.flatnonzero(np.diff(day)) + 1
    starts = np.concatenate(([0], cuts))
    counts = np.diff(np.concatenate((starts, [len(day)])))
    rest = _tamed(hv - np.repeat(_run_mean(hv, starts, counts), counts))
    if rest is None:
        return math.nan, math.nan, math.nan
    total = float(np.var(rest))
    if len(rest) < 48 or total == 0:
        return math.nan, math.nan, math.nan
    hour = (ht % _DAY_NS) // hour_ns
    order = np.argsort(hour, kind="stable")  # each hour's means in time order, as pandas
    sh = hour[order]
    hcuts = np.flatnonzero(np.diff(sh)) + 1
    hstarts = np.concatenate(([0], hcuts))
    weights = np.diff(np.concatenate((hstarts, [len(sh)])))
    shape = _group_mean(rest[order], hstarts, weights)
    share = _share(shape, weights, total)
    if math.isnan(share):
        return math.nan, math.nan, math.nan
    n = len(rest)
    strength = max(0.0, 1.0 - (1.0 - share) * (n - 1) / max(n - len(shape), 1))
    angle = 2 * np.pi * (sh[hstarts] + 0.5) / 24
    phase = math.atan2(float(np.sum(shape * np.sin(angle))), float(np.sum(shape * np.cos(angle))))
    return strength, strength * math.cos(phase), strength * math.sin(phase)


def _aligned(a: pd.Series | None, b: pd.Series | None) -> tuple[np.ndarray, np.ndarray]:
    if a is None or b is None:
        return np.empty(0), np.empty(0)
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    return both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()


def _pair_corr(a: pd.Series | None, b: pd.Series | None) -> float:
    return _corr(*_aligned(a, b))


def _at(m: pd.Series | None, ref: pd.Series | None, value: float) -> float:
    """``m``'s straight-line fit on ``ref``, read at ``ref == value``; NaN with fewer than
    10 pairs or a reference that does not move."""
    y, x = _aligned(m, ref)
    if len(x) < 10 or np.ptp(x) == 0:
        return math.nan
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope * value + intercept)
