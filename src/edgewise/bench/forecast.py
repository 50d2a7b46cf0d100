"""Forecasting benchmark on NAB's real, seasonal series: rolling origins, MASE and sMAPE.

The series (:data:`SERIES`) were chosen *before* any forecast was made, for a clear daily
(and mostly weekly) cycle: the lag-one-day autocorrelation of the series on its median
step is at least 0.5, and the series is at least two weeks long. Why each one is in is
written beside it.

Protocol, per series: the readings are put on their median step (the mean per step, as
:class:`~edgewise.models.forecast.Forecaster` does; a series fewer than 60% of whose steps
hold a reading is refused by name before any forecast, and the forecaster keeps that step
at every origin, however much of it the history up to that origin fills); the horizon is
one day of steps; ``origins`` forecast origins are spread evenly over the last ``tail``
share of the series (each leaving a full horizon after it). At each origin every method
sees only the readings up to it (a fresh fit: nothing from after the origin reaches a
method), and forecasts the next day. Every method works on the grid the forecaster puts
those readings on: its steps sit at the readings' phase
(:func:`~edgewise.models.forecast.reading_phase`), which can move with the readings seen,
so the peers forecast from the same steps and all three are scored against the truth at
the times the forecaster forecasts (the mean of the readings within half a step of each).
Figures per method, over every origin and step whose truth has readings:

- **MASE**: mean absolute error over the in-sample MAE of the one-day seasonal naive on the
  history before the *first* origin, on the whole series' grid (one scale per series, so
  methods compare on it);
- **sMAPE** in %, ``200 * mean(|y - f| / (|y| + |f|))`` (a step where both are 0 skipped);
- **coverage** of the 90% interval (the forecaster's conformal interval; Holt-Winters'
  from simulated paths, statsmodels' own).

Peers, in the same run, both on the period the forecaster's own detection picks (the
day; the week where the weekly cycle is the stronger; none, season 1, where it finds no
cycle): **seasonal naive** (the last season repeated; without a season the last value)
and **Holt-Winters** (statsmodels' ``ExponentialSmoothing``, additive season, no trend,
fitted on the last ``hw_days`` days, at least four seasons, before each origin; empty
steps interpolated; without a season simple exponential smoothing, as statsmodels takes a
season of 2 steps at least). Without statsmodels the run says so and reports the others.

>>> smape(np.array([100.0, 0.0]), np.array([110.0, 0.0]))
9.523809523809524
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgewise.bench._machine import machine_fields
from edgewise.errors import InvalidParameterError
from edgewise.models.forecast import (
    Forecaster,
    regular_series,
    seasonal_naive,
    step_fill,
    to_ns,
)

__all__ = ["SERIES", "ForecastBench", "load_series", "mase_scale", "origin_steps", "run",
           "smape"]

#: Share of a series' median steps that must hold a reading (the forecaster's own floor for
#: a given step, checked here once per series, not at every origin).
_MIN_FILL = 0.6

#: (NAB file, why it is in): chosen before any forecast was made (see the module doc).
SERIES: tuple[tuple[str, str], ...] = (
    ("realKnownCause/nyc_taxi.csv",
     ("NYC taxi passengers per 30 min, 7 months: the classic demand series, daily and weekly "
      "cycles (lag-1-day ACF 0.80, lag-1-week 0.92)")),
    ("realKnownCause/ambient_temperature_system_failure.csv",
     ("office temperature per hour, 11 months with gaps: the HVAC day and the working week "
      "(ACF 0.85 / 0.83)")),
    ("realKnownCause/cpu_utilization_asg_misconfiguration.csv",
     ("CPU use of an autoscaling group per 5 min, 9 weeks: daily load (ACF 0.77 / 0.67)")),
    ("realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv",
     ("database CPU per 5 min, 2 weeks: daily batch load (ACF 0.78)")),
    ("realAWSCloudwatch/grok_asg_anomaly.csv",
     ("autoscaling group metric per 5 min, 16 days: daily cycle (ACF 0.77)")),
    ("realTraffic/occupancy_6005.csv",
     ("freeway lane occupancy, irregular (median 5 min, a quarter of the steps empty), "
      "16 days: rush hours (ACF 0.53 / 0.52)")),
    ("realTraffic/occupancy_t4013.csv",
     ("a second freeway sensor, irregular the same way, 16 days (ACF 0.56 / 0.56)")),
    ("realAdExchange/exchange-2_cpc_results.csv",
     ("ad exchange cost per click per hour, 10 weeks: daily and weekly cycles (ACF 0.84 / "
      "0.72)")),
)


def smape(y: np.ndarray, f: np.ndarray) -> float:
    """Symmetric MAPE in % over the pairs whose ``|y| + |f|`` is not 0."""
    den = np.abs(y) + np.abs(f)
    ok = den > 0
    return float(200.0 * np.mean(np.abs(y - f)[ok] / den[ok])) if ok.any() else float("nan")


def mase_scale(y: np.ndarray, season: int) -> float:
    """In-sample MAE of the seasonal naive (``y[t] - y[t - season]``) over known pairs.

    >>> mase_scale(np.array([1.0, 2.0, 4.0, np.nan, 8.0]), 2)  # |4 - 1| and |8 - 4|
    3.5
    """
    d = np.abs(y[season:] - y[:-season])
    d = d[~np.isnan(d)]
    return float(np.mean(d)) if len(d) else float("nan")


def load_series(nab: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One NAB file's times (ns UTC; NAB's times are read as UTC) and values."""
    path = nab / "data" / name
    if not path.is_file():
        raise InvalidParameterError(
            f"NAB file {name!r} not found under {str(nab / 'data')!r}; give --nab the NAB root "
            "(the folder holding data/realKnownCause/nyc_taxi.csv).", field="nab",
            value=str(nab))
    df = pd.read_csv(path)
    # two NAB traffic files give a few times twice: one reading per time, their mean
    df = df.assign(ts=to_ns(pd.to_datetime(df["timestamp"], utc=True)))
    df = df.groupby("ts", sort=True)["value"].mean()
    return df.index.to_numpy(np.int64), df.to_numpy(float)


def _holt_winters(y: np.ndarray, season: int, horizon: int, alpha: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """statsmodels' Holt-Winters forecast (additive season, no trend: a damped trend
    forecast worse on these series) and its simulated ``1 - alpha`` interval. ``season``
    1 (no cycle found) fits no season: simple exponential smoothing, a flat forecast
    (statsmodels refuses a seasonal model of period 1; period 2 would invent a cycle)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    filled = pd.Series(y).interpolate(limit_direction="both").to_numpy()
    seasonal = {"seasonal": "add", "seasonal_periods": season} if season > 1 else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the optimiser
        fit = ExponentialSmoothing(filled, trend=None, **seasonal,
                                   initialization_method="estimated").fit()
        point = fit.forecast(horizon)
        paths = fit.simulate(horizon, repetitions=200, error="add", random_state=seed)
    low, high = np.quantile(np.asarray(paths), [alpha / 2, 1 - alpha / 2], axis=1)
    return np.asarray(point), low, high


def _history(ts: np.ndarray, values: np.ndarray, step: int, phase: int,
             horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The readings ``ts``/``values`` on the grid of ``step`` at ``phase`` (as the forecaster
    puts them) and the ``horizon`` step times after its last step (the forecast's times)."""
    grid, y = regular_series(ts, values, step, phase)
    return y, grid[-1] + step * np.arange(1, horizon + 1, dtype=np.int64)


def _at(grid: np.ndarray, y: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``y`` at the grid times ``times`` (NaN at a time off the grid or past its end).

    >>> _at(np.array([0, 10, 20]), np.array([1.0, 2.0, 3.0]), np.array([10, 15, 30])).tolist()
    [2.0, nan, nan]
    """
    i = np.clip(np.searchsorted(grid, times), 0, len(grid) - 1)
    return np.where(grid[i] == times, y[i], np.nan)


@dataclass
class _Tally:
    """Errors of one method on one series, over every origin."""

    truth: list[np.ndarray] = field(default_factory=list)
    point: list[np.ndarray] = field(default_factory=list)
    inside: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, truth: np.ndarray, point: np.ndarray, low: np.ndarray | None = None,
            high: np.ndarray | None = None) -> None:
        ok = ~np.isnan(truth)
        self.truth.append(truth[ok])
        self.point.append(point[ok])
        if low is not None and high is not None:
            self.inside.append((truth[ok] >= low[ok]) & (truth[ok] <= high[ok]))

    def figures(self, scale: float) -> dict[str, float | None]:
        """MASE, sMAPE and coverage; ``None`` for a figure that is not a number (JSON holds
        no NaN): MASE where the scale is 0 or unknown (a flat series' seasonal naive is
        exact in-sample), sMAPE where every truth and forecast is 0, and every one where no
        step's truth is known.

        >>> t = _Tally()
        >>> t.add(np.array([5.0, 5.0]), np.array([5.0, 6.0]), np.array([4.0, 4.0]),
        ...       np.array([6.0, 6.0]))
        >>> t.figures(0.0)
        {'mase': None, 'smape': 9.090909090909092, 'coverage': 1.0, 'seconds': 0.0}
        """
        y, f = np.concatenate(self.truth), np.concatenate(self.point)
        inside = np.concatenate(self.inside) if self.inside else np.array([])
        mase = float(np.mean(np.abs(y - f))) / scale if len(y) and scale > 0 else math.nan
        return {"mase": _number(mase), "smape": _number(smape(y, f) if len(y) else math.nan),
                "coverage": float(np.mean(inside)) if len(inside) else None,
                "seconds": round(self.seconds, 2)}


def _number(value: float) -> float | None:
    """``value``, or ``None`` where it is NaN or infinite (no JSON number)."""
    return float(value) if math.isfinite(value) else None


@dataclass
class ForecastBench:
    """Figures per series and method, and their medians; JSON-ready with :meth:`to_json`."""

    series: list[dict[str, Any]]
    methods: list[str]
    origins: int
    tail: float
    statsmodels: str | None
    params: dict[str, Any]

    def medians(self) -> dict[str, dict[str, float | None]]:
        """Median of each figure over the series, per method."""
        out: dict[str, dict[str, float | None]] = {}
        for m in self.methods:
            out[m] = {}
            for key in ("mase", "smape", "coverage"):
                # a figure that is not a number (None, or NaN from a caller's figures) is
                # left out: statistics.median with a NaN depends on the series' order
                vals = [s["methods"][m][key] for s in self.series if m in s["methods"]]
                vals = [v for v in vals if v is not None and math.isfinite(v)]
                out[m][key] = statistics.median(vals) if vals else None
        return out

    def to_json(self) -> dict[str, Any]:
        """Every figure, as one JSON-ready object, with the machine it ran on
        (:func:`~edgewise.bench._machine.machine_fields`)."""
        return {"benchmark": "forecast", "series": self.series, "median": self.medians(),
                "methods": self.methods, "origins": self.origins, "tail": self.tail,
                "statsmodels": self.statsmodels, "params": self.params, **machine_fields()}


def origin_steps(name: str, steps: int, horizon: int, tail: float, origins: int) -> np.ndarray:
    """The steps of up to ``origins`` forecast origins, spread evenly over the last ``tail``
    share of a series of ``steps`` steps, each with a full ``horizon`` of steps after it.
    A ``tail`` whose first step leaves less than that is refused
    (:class:`~edgewise.errors.InvalidParameterError`, naming the series ``name``).

    >>> origin_steps("s.csv", 1000, 100, 0.2, 3)
    array([800, 849, 899])
    >>> origin_steps("s.csv", 1000, 100, 0.05, 3)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --tail 0.05 puts the first origin of s.csv at step 950 of 1000, with 49 steps after it where a forecast needs its horizon of 100 (one day); give --tail 0.101 or more ((horizon + 1) / steps).
    """  # noqa: E501
    last = steps - 1 - horizon
    first = int(steps * (1 - tail))
    if first > last:
        need = (horizon + 1) / steps
        fix = (f"give --tail {np.ceil(need * 1000) / 1000:g} or more ((horizon + 1) / steps)"
               if need < 1 else "the series is shorter than one horizon and a step: leave it out")
        raise InvalidParameterError(
            f"--tail {tail:g} puts the first origin of {name} at step {first} of {steps}, with "
            f"{steps - 1 - first} steps after it where a forecast needs its horizon of "
            f"{horizon} (one day); {fix}.", field="tail", value=tail)
    # never more points than steps to place them on: --origins 10**12 asked numpy for 7 TiB
    # (the same origins as every step from first to last, which is what it gives)
    return np.unique(np.linspace(first, last, min(origins, last - first + 1)).astype(np.int64))


def _check_fill(name: str, ts: np.ndarray, step: int) -> None:
    """Refuse a series whose median step is mostly empty (readings in bursts: fewer than
    60% of its steps hold a reading, outages of a day or more not counted), naming the
    series; the benchmark forecasts every series on its median step.

    >>> M = 60 * 10**9
    >>> _check_fill("even.csv", np.arange(100) * M, M)
    >>> burst = np.array([h * 60 * M + k * M for h in range(48) for k in range(5)])
    >>> _check_fill("burst.csv", burst, M)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: Series burst.csv: only 8% of the steps of its median spacing (60 s) hold a reading (outages of a day or more not counted): its readings come in bursts, and the benchmark forecasts each series on its median spacing, which needs at least 60%. Leave it out of the series benchmarked.
    """  # noqa: E501
    fill = step_fill(ts, step)
    if fill < _MIN_FILL:
        raise InvalidParameterError(
            f"Series {name}: only {math.floor(100 * fill)}% of the steps of its median spacing "
            f"({step / 1e9:g} s) hold a reading (outages of a day or more not counted): its "
            "readings come in bursts, and the benchmark forecasts each series on its median "
            f"spacing, which needs at least {round(100 * _MIN_FILL)}%. Leave it out of the "
            "series benchmarked.", field="series", value=name)


def run(
    nab: Path,
    series: tuple[str, ...] | None = None,
    origins: int = 8,
    tail: float = 0.2,
    hw_days: int = 14,
    alpha: float = 0.1,
    forecaster: dict[str, Any] | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> ForecastBench:
    """Run the benchmark over ``series`` (default :data:`SERIES`) of the NAB root ``nab``."""
    names = series or tuple(name for name, _ in SERIES)
    why = dict(SERIES)
    params = dict(forecaster or {})
    have_sm = importlib.util.find_spec("statsmodels") is not None
    methods = ["forecaster", "seasonal_naive", *(["holt_winters"] if have_sm else [])]
    # every series is read and its origins placed before any is forecast: a --tail too short
    # for one of them is refused at once, not after the minutes spent on the others
    prepared = []
    for name in names:
        ts, values = load_series(nab, name)
        step = int(np.median(np.diff(ts)))
        _check_fill(name, ts, step)
        grid, y = regular_series(ts, values, step)
        horizon = int(86_400 * 10**9 // step)  # one day of steps
        prepared.append((name, ts, values, step, grid, y, horizon,
                         origin_steps(name, len(y), horizon, tail, origins)))
    results = []
    for name, ts, values, step, grid, y, horizon, starts in prepared:
        n = len(y)
        scale = mase_scale(y[:starts[0] + 1], horizon)
        tallies = {m: _Tally() for m in methods}
        season = None
        truths: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the series per grid phase
        for o in starts:
            # every reading in the origin's step (half a step either side of its time)
            seen = ts < grid[o] + step - step // 2
            t0 = time.perf_counter()
            # the series' own step, checked once for the whole series (_check_fill): the
            # history up to an early origin may fill a little less of it (occupancy_6005
            # 58%), which a user's --step is refused for, but the protocol keeps one step
            model = Forecaster(horizon=horizon, alpha=alpha, step=step, random_state=0,
                               **{"min_fill": 0.0, **params}).fit(ts[seen], values[seen])
            out = model.predict()
            tallies["forecaster"].seconds += time.perf_counter() - t0
            # the forecaster's grid (its phase follows the readings seen): the peers forecast
            # from its steps, and every method is scored at the times it forecasts
            history, times = _history(ts[seen], values[seen], step, model.phase_ns_, horizon)
            forecast_times = to_ns(out["time"])
            if not np.array_equal(forecast_times, times):
                raise RuntimeError(
                    f"{name}: the forecaster forecast from {forecast_times[0]} ns, not the step "
                    f"after its grid's last one ({times[0]} ns); the bench cannot score it.")
            if model.phase_ns_ not in truths:
                truths[model.phase_ns_] = regular_series(ts, values, step, model.phase_ns_)
            truth = _at(*truths[model.phase_ns_], times)
            tallies["forecaster"].add(truth, out["forecast"].to_numpy(), out["low"].to_numpy(),
                                      out["high"].to_numpy())
            season = int(model.season_)
            tallies["seasonal_naive"].add(truth, seasonal_naive(history, season, horizon))
            if have_sm:
                t0 = time.perf_counter()
                window = history[max(0, len(history) - max(hw_days * horizon, 4 * season)):]
                tallies["holt_winters"].add(truth, *_holt_winters(window, season, horizon,
                                                                  alpha, int(o)))
                tallies["holt_winters"].seconds += time.perf_counter() - t0
        row = {"series": name, "why": why.get(name, ""), "step_s": step / 1e9, "steps": n,
               "horizon": horizon, "origins": len(starts), "season": season,
               "mase_scale": _number(scale),
               "methods": {m: t.figures(scale) for m, t in tallies.items()}}
        results.append(row)
        if progress is not None:
            progress(name, row)
    sm = None
    if have_sm:
        import statsmodels

        sm = statsmodels.__version__
    return ForecastBench(results, methods, origins, tail, sm,
                         {**params, "alpha": alpha, "hw_days": hw_days})
