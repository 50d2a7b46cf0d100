"""Forecaster defect found by a bug hunt (session 35): an outage in the held-out last fifth of
a history made the 90% intervals about 3x too wide. The calibration origins were spread
evenly over the tail whether or not their step held a reading; origins in the outage (and
just after it) forecast without recent values, or without the values a season back, while
:meth:`Forecaster.predict` forecasts from a step that holds a reading."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.models.forecast import Forecaster, regular_series

HOUR = 3600 * 10**9
FAST = {"horizon": 24, "n_estimators": 50}


def _cycle(n: int = 24 * 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hourly readings of a daily cycle with noise of sd 0.7."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    return k * HOUR, 10 + 5 * np.sin(2 * np.pi * k / 24) + rng.normal(0, 0.7, n)


def _width(model: Forecaster, ts: np.ndarray, y: np.ndarray) -> float:
    """Mean width of the intervals forecast from a full (gapless) history."""
    out = model.predict(ts, y)
    return float(np.mean(out["high"] - out["low"]))


def test_an_outage_in_the_tail_does_not_widen_the_intervals() -> None:
    """Check a 2-day outage in the held-out tail of 30 days leaves the intervals about as
    wide as without it (before: 2.9x as wide, 10.4 against 3.6, and covering 99.9%)."""
    ts, y = _cycle(24 * 40)
    train = 24 * 30
    keep = np.ones(train, bool)
    keep[26 * 24:28 * 24] = False
    whole = Forecaster(**FAST).fit(ts[:train], y[:train])
    gappy = Forecaster(**FAST).fit(ts[:train][keep], y[:train][keep])
    plain, outage, covered = [], [], []
    for origin in range(train, len(ts) - 24, 48):
        hist = slice(origin - 400, origin)
        plain.append(_width(whole, ts[hist], y[hist]))
        outage.append(_width(gappy, ts[hist], y[hist]))
        out = gappy.predict(ts[hist], y[hist])
        truth = y[origin:origin + 24]
        covered.append(np.mean((truth >= out["low"]) & (truth <= out["high"])))
    assert np.mean(outage) < 1.3 * np.mean(plain), (np.mean(outage), np.mean(plain))
    assert 0.8 <= np.mean(covered) < 0.99


def test_calibration_origins_hold_a_reading_clear_of_the_outage() -> None:
    """Check every calibration origin holds a reading and its lookback reaches into no
    outage, and that 20 are still found where the tail has room (before: 8 of 20 were in
    the outage)."""
    ts, y = _cycle()
    keep = np.ones(len(ts), bool)
    keep[26 * 24:28 * 24] = False
    model = Forecaster(**FAST).fit(ts[keep], y[keep])
    _, series = regular_series(ts[keep], y[keep], model.step_ns_, model.phase_ns_)
    n = len(series)
    cut = n - max(model.horizon + model.calibration_origins, n // 5)
    origins = model._calibration_origins(series, cut)
    assert len(origins) == model.calibration_origins
    assert not np.isnan(series[origins]).any()
    for o in origins:  # the steps a forecast from o reads: o - lookback + 1 ... o
        assert o < 26 * 24 or o - model.lookback() + 1 >= 28 * 24, o


def _old_origins(model: Forecaster, series: np.ndarray, cut: int) -> np.ndarray:
    """The calibration origins as chosen before the fix: evenly over the tail's steps."""
    return np.unique(np.linspace(cut, len(series) - 1 - model.horizon,
                                 model.calibration_origins).astype(np.int64))


@pytest.mark.parametrize("params", [FAST, {"horizon": 6, "n_estimators": 30,
                                           "calibration_origins": 8}])
def test_a_gapless_history_forecasts_exactly_as_before(monkeypatch: pytest.MonkeyPatch,
                                                       params: dict) -> None:
    """Check a history without empty steps gives the very same forecast and interval as
    the old origin choice (a copy of it patched in)."""
    ts, y = _cycle()
    new = Forecaster(**params).fit(ts, y).predict()
    monkeypatch.setattr(Forecaster, "_calibration_origins", _old_origins)
    old = Forecaster(**params).fit(ts, y).predict()
    for column in ("forecast", "low", "high"):
        assert np.array_equal(new[column].to_numpy(), old[column].to_numpy()), column


def test_a_tail_without_any_reading_keeps_the_old_origins() -> None:
    """Check a tail holding no reading where origins can be falls back to the steps spread
    evenly over it (the old choice) rather than to no origin at all."""
    model = Forecaster(horizon=2, season=1, calibration_origins=4)
    model.seasons_, model.window_, model.step_ns_ = [], 2, HOUR
    y = np.arange(40.0)
    y[30:38] = np.nan
    assert model._calibration_origins(y, 30).tolist() == _old_origins(model, y, 30).tolist()
