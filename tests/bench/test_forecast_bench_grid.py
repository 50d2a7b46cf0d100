"""``edgewise.bench.forecast.run`` scores every method at the times the forecaster forecasts,
on the grid it puts the readings on (its phase can move with the readings seen), and the
peers take the forecaster's season as is (season 1: the last value; Holt-Winters without
a season)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from edgewise.bench import forecast as bench
from edgewise.models.forecast import reading_phase, regular_series

H = 3600 * 10**9
NAME = "synthetic/clock_moved.csv"


def _readings(moved: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """30 days of hourly readings (15% missing). ``moved``: their clock moves by 20 min after
    45% of them and a quarter are jittered by up to 25 min, so the phase of a prefix differs
    from the whole series' (0 against 1200 s at the first origins); else on the hour."""
    rng = np.random.default_rng(seed)
    k = np.arange(24 * 30)
    off = np.where(k < len(k) * 0.45, 0, 1200) + np.where(
        rng.random(len(k)) < 0.25, rng.uniform(-1500, 1500, len(k)), 0)
    off = off if moved else np.zeros(len(k))
    keep = rng.random(len(k)) > 0.15
    ts = ((1_700_000_000 // 3600 * 3600 + k * 3600 + off).astype(np.int64) * 10**9)[keep]
    values = (10 * np.sin(2 * np.pi * k / 24) + rng.normal(size=len(k)))[keep]
    return ts, values


def _nab(tmp_path: Path, ts: np.ndarray, values: np.ndarray) -> Path:
    path = tmp_path / "data" / NAME
    path.parent.mkdir(parents=True)
    stamps = pd.to_datetime(ts, utc=True).strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(path, index=False)
    return tmp_path


class _Oracle:
    """A stand-in forecaster that knows the future: at each of its forecast times (the steps
    after its own grid, at the phase of the readings it was fitted on) it gives the mean of
    the readings within half a step of that time. Scored at those times it is exact."""

    ts: ClassVar[np.ndarray] = np.zeros(0, dtype=np.int64)
    values: ClassVar[np.ndarray] = np.zeros(0)
    season: ClassVar[int] = 1
    fitted: ClassVar[list[np.ndarray]] = []

    def __init__(self, horizon: int, step: int, **_: Any) -> None:
        self.horizon, self.step = horizon, step

    def fit(self, ts: np.ndarray, values: np.ndarray) -> _Oracle:
        self.phase_ns_ = reading_phase(ts, self.step)
        self.season_ = self.season
        self.grid_, series = regular_series(ts, values, self.step, self.phase_ns_)
        _Oracle.fitted.append(series)
        return self

    def predict(self) -> pd.DataFrame:
        times = self.grid_[-1] + self.step * np.arange(1, self.horizon + 1)
        lo = times - self.step // 2
        # an empty step (no truth, so not scored) forecast as 0
        point = np.array([np.mean(self.values[(self.ts >= a) & (self.ts < a + self.step)])
                          if ((self.ts >= a) & (self.ts < a + self.step)).any() else 0.0
                          for a in lo])
        return pd.DataFrame({"time": pd.to_datetime(times, utc=True), "forecast": point,
                             "low": point - 1.0, "high": point + 1.0})


@pytest.fixture(params=[True, False], ids=["clock_moved", "on_the_hour"])
def oracle(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Path:
    ts, values = _readings(request.param)
    monkeypatch.setattr(_Oracle, "ts", ts)
    monkeypatch.setattr(_Oracle, "values", values)
    monkeypatch.setattr(_Oracle, "fitted", [])
    monkeypatch.setattr(bench, "Forecaster", _Oracle)
    return _nab(tmp_path, ts, values)


def test_the_data_moves_the_forecasters_grid_off_the_whole_series_grid() -> None:
    """Check the premise: at the first origins the phase of the readings seen is not the
    whole series' (so a truth read off the whole series' grid is at other times)."""
    ts, _ = _readings()
    seen = ts < ts[int(len(ts) * 0.7)]
    assert reading_phase(ts, H) == 1200 * 10**9
    assert reading_phase(ts[seen], H) == 0


def test_each_method_is_scored_at_the_times_the_forecaster_forecasts(
        oracle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a forecaster exact at its own forecast times scores MASE 0, sMAPE 0 and full
    coverage. Scored on the whole series' grid from the origin's step it scored MASE 0.51
    where the clock moved, and 0.35 on the hour: an origin whose own step is empty (584
    here) has the forecaster forecast from its last reading's step, one step earlier."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "statsmodels" else real(name, *a))
    result = bench.run(oracle, (NAME,), origins=8, tail=0.3).to_json()
    ours = result["series"][0]["methods"]["forecaster"]
    assert result["series"][0]["origins"] == 8
    assert ours["mase"] == 0.0 and ours["smape"] == 0.0 and ours["coverage"] == 1.0
    assert result["series"][0]["methods"]["seasonal_naive"]["mase"] > 0.5


def test_peers_forecast_from_the_forecasters_grid_with_its_season(
        oracle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the seasonal naive and Holt-Winters peers get the very steps the forecaster fit
    on (they got the whole series' grid where the clock moved) and its season as is:
    season 1 forecasts the last value (not the last two steps alternated, as season 2 did),
    and Holt-Winters fits no season."""
    pytest.importorskip("statsmodels")
    naive_calls: list[tuple[np.ndarray, int, np.ndarray]] = []
    hw_calls: list[tuple[np.ndarray, int, np.ndarray]] = []
    real_naive, real_hw = bench.seasonal_naive, bench._holt_winters

    def naive(y: np.ndarray, season: int, horizon: int) -> np.ndarray:
        out = real_naive(y, season, horizon)
        naive_calls.append((np.array(y), season, out))
        return out

    def hw(y: np.ndarray, season: int, *args: Any) -> tuple[np.ndarray, ...]:
        out = real_hw(y, season, *args)
        hw_calls.append((np.array(y), season, out[0]))
        return out

    monkeypatch.setattr(bench, "seasonal_naive", naive)
    monkeypatch.setattr(bench, "_holt_winters", hw)
    result = bench.run(oracle, (NAME,), origins=3, tail=0.3, hw_days=7).to_json()
    assert result["series"][0]["season"] == 1 and len(naive_calls) == len(hw_calls) == 3
    for (history, season, out), fitted in zip(naive_calls, _Oracle.fitted, strict=True):
        np.testing.assert_array_equal(history, fitted)  # same steps, NaN where empty
        assert season == 1
        last = history[~np.isnan(history)][-1]
        assert np.all(out == last), (out[:3], last)
    for (window, season, point), fitted in zip(hw_calls, _Oracle.fitted, strict=True):
        np.testing.assert_array_equal(window, fitted[-7 * 24:])
        assert season == 1
        assert np.ptp(point) < 1e-9  # simple exponential smoothing: a flat forecast
    assert np.isfinite(result["series"][0]["methods"]["holt_winters"]["mase"])


def test_holt_winters_without_a_season_is_simple_exponential_smoothing() -> None:
    """Check season 1 fits a non-seasonal model (statsmodels refuses seasonal_periods 1):
    a flat forecast near the recent level, inside a finite interval."""
    pytest.importorskip("statsmodels")
    y = np.r_[np.full(100, 5.0), np.full(100, 9.0)] + np.random.default_rng(1).normal(
        0, 0.1, 200)
    point, low, high = bench._holt_winters(y, 1, 12, 0.1, 0)
    assert point.shape == low.shape == high.shape == (12,)
    assert np.ptp(point) < 1e-9 and abs(point[0] - 9.0) < 0.2
    assert np.all(np.isfinite(low) & np.isfinite(high) & (low < point) & (point < high))
