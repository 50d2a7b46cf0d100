"""A device's behaviour profile: a few numbers per metric that say how it behaves.

:func:`behaviour_profile` reads one device's history (a DataFrame indexed by time, one
column per metric; irregular times, gaps and NaN are fine) and returns, per metric:

``level``
    the median reading;
``spread``
    the interquartile range (the standard deviation where that is 0);
``trend``
    the least-squares slope, in units per day;
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

import numpy as np
import pandas as pd

from edgewise.models.history import wide_readings

__all__ = [
    "FEATURE_KINDS",
    "MAX_GRID_POINTS",
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
_DAY_NS = 86_400 * 10**9


def device_history(rows: Sequence[tuple[str, int, float]]) -> pd.DataFrame:
    """A device's stored ``(metric, ts_ns, value)`` rows as a history: a UTC time index
    and one column per metric, each metric holding values only at its own times (NaN
    between them, never carried forward: a repeated value would look like a calm metric).

    >>> device_history([("a", 0, 1.0), ("b", 60 * 10**9, 2.0)]).to_dict("list")
    {'a': [1.0, nan], 'b': [nan, 2.0]}
    """
    by_metric: dict[str, list[tuple[str, int, float]]] = {}
    for row in rows:
        by_metric.setdefault(str(row[0]), []).append(row)
    if not by_metric:
        return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))
    # one metric at a time, so no metric is carried over another's times
    frame = pd.concat([wide_readings(r, "mean") for _, r in sorted(by_metric.items())], axis=1)
    frame.index = pd.to_datetime(frame.index.to_numpy(dtype=np.int64), unit="ns", utc=True)
    return frame


def finite_metrics(frame: pd.DataFrame) -> list[str]:
    """The numeric columns of ``frame`` holding at least one finite reading.

    >>> finite_metrics(pd.DataFrame({"a": [1.0, np.nan], "b": [np.inf, np.nan], "c": ["x", "y"]}))
    ['a']
    """
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


def _daily(s: pd.Series) -> tuple[float, float, float]:
    """Daily-cycle strength in [0, 1], and its peak as strength * (cos, sin) of the phase."""
    if s.index[-1] - s.index[0] < pd.Timedelta(days=2):
        return math.nan, math.nan, math.nan
    hourly = s.resample("1h").mean().dropna()
    rest = hourly - hourly.groupby(hourly.index.floor("D")).transform("mean")
    total = float(np.var(rest.to_numpy()))
    if len(rest) < 48 or total == 0:
        return math.nan, math.nan, math.nan
    shape = rest.groupby(rest.index.hour).mean()
    weights = rest.groupby(rest.index.hour).size()
    share = float(min(1.0, np.average(shape.to_numpy() ** 2, weights=weights) / total))
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
) -> dict[str, float]:
    """One device's profile (see the module doc) over ``metrics`` (default: every column
    with a finite reading); a metric the device lacks gives NaN features.

    >>> idx = pd.date_range("2024-01-01", periods=200, freq="1min", tz="UTC")
    >>> rpm = np.linspace(1000, 3000, 200)
    >>> frame = pd.DataFrame({"rpm": rpm, "vib": 0.001 * rpm}, index=idx)
    >>> p = behaviour_profile(frame, 60 * 10**9, reference="rpm", reference_value=2500.0)
    >>> round(p["at_ref:vib"], 2), round(p["corr:rpm~vib"], 2)
    (2.5, 1.0)
    """
    metrics = list(metrics) if metrics is not None else finite_metrics(frame)
    out: dict[str, float] = {}
    grids: dict[str, pd.Series] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice reads as NaN
        for m in metrics:
            s = _series(frame, m) if m in frame.columns else pd.Series(dtype=float)
            if s.empty:
                out.update({f"{k}:{m}": math.nan for k in FEATURE_KINDS})
                continue
            x = s.to_numpy()
            q25, q75 = np.percentile(x, [25, 75])
            spread = float(q75 - q25) or float(np.std(x))
            g = _grid(s, step_ns)
            grids[m] = g
            daily, dcos, dsin = _daily(s)
            out.update({f"level:{m}": float(np.median(x)), f"spread:{m}": spread,
                        f"trend:{m}": _trend(s), f"acf1:{m}": _acf1(g), f"daily:{m}": daily,
                        f"daily_cos:{m}": dcos, f"daily_sin:{m}": dsin})
        if relations:
            for i, a in enumerate(metrics):
                for b in metrics[i + 1:]:
                    out[f"corr:{a}~{b}"] = _pair_corr(grids.get(a), grids.get(b))
        if reference is not None and reference_value is not None:
            ref = grids.get(reference)
            for m in metrics:
                if m != reference:
                    out[f"at_ref:{m}"] = _at(grids.get(m), ref, reference_value)
    return out


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
