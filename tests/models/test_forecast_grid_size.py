"""Forecaster defects of a hunt: fit built every (origin, steps ahead) pair before sampling
them down to ``max_rows`` (a reading of a clock never set, in 1970, made that 8 GiB), a
grid reaching back to such a reading was built at all, and predict took a history far
sparser than the model's step without a word (and a worse forecast)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.forecast import Forecaster

MIN = 60 * 10**9
HOUR = 60 * MIN
YEAR = 365 * 24 * HOUR
FAST = {"n_estimators": 10, "learning_rate": 0.3, "max_rows": 1000, "calibration_origins": 8}


def _daily(n: int, step: int = HOUR) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    k = np.arange(n)
    return k * step + 10**15, 10 + 5 * np.sin(2 * np.pi * k / 24) + rng.normal(0, 0.2, n)


def test_training_pairs_take_memory_of_the_rows_kept() -> None:
    """Check that fit's memory does not grow with steps times horizon: 60,000 steps at
    horizon 48 are 2.9 million pairs (about 100 MB as they were built: origins, steps
    ahead, a mask and the kept copies) of which 1,000 are used."""
    Forecaster(horizon=48, season=1, **FAST).fit(*_daily(500, MIN))  # imports, untraced
    ts, y = _daily(60_000, MIN)
    model = Forecaster(horizon=48, season=1, **FAST)
    tracemalloc.start()
    try:
        model.fit(ts, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30 * 2**20, f"fit peaked at {peak / 2**20:.0f} MiB"


def test_pairs_are_a_uniform_draw_of_the_valid_ones() -> None:
    """Check that the pairs drawn are all valid (target within the history), distinct, and
    all of them where there are no more than max_rows."""
    model = Forecaster(horizon=5, max_rows=100)
    o, h = model._pairs(3, 20, np.random.default_rng(0))
    assert len(o) == 5 * 13 + 4 + 3 + 2 + 1
    assert ((h >= 1) & (h <= 5) & (o >= 3) & (o + h <= 20)).all()
    assert len(set(zip(o.tolist(), h.tolist(), strict=True))) == len(o)
    o, h = model._pairs(3, 1000, np.random.default_rng(0))
    assert len(o) == 100 and ((o + h <= 1000) & (h >= 1) & (h <= 5)).all()
    assert len(set(zip(o.tolist(), h.tolist(), strict=True))) == 100


@pytest.mark.parametrize("side", ["before", "after"])
def test_fit_refuses_a_reading_years_from_the_rest(side: str) -> None:
    """Check that a lone reading a year before (or after) two thousand minutely ones is
    refused in one message naming it, the gap and what to drop, before a grid of half a
    million steps is built (it was built, and the training rows were then almost all
    empty, or, a reading of 1970, 8 GiB of pairs were asked for)."""
    ts, y = _daily(2000, MIN)
    lone = ts[0] - YEAR if side == "before" else ts[-1] + YEAR
    ts = np.sort(np.append(ts, lone))
    y = np.append(y, 10.0)
    with pytest.raises(InvalidParameterError) as err:
        Forecaster(horizon=2, season=1, **FAST).fit(ts, y)
    text = str(err.value)
    when = pd.Timestamp(lone, tz="UTC").isoformat()
    assert f"the reading at {when} lies 365d (about 1 year) {side} the other 2,000" in text
    assert f"Drop the readings {side} " in text
    assert "2,001 readings" in text


def test_fit_takes_an_outage_of_a_few_days() -> None:
    """Check that readings either side of a 3-day outage (a sensor off) are not refused as
    a grid too large."""
    ts, y = _daily(24 * 20)
    ts = np.where(np.arange(len(ts)) >= 240, ts + 3 * 24 * HOUR, ts)
    model = Forecaster(horizon=6, **FAST).fit(ts, y)
    assert model.n_steps_ == 24 * 23


def _model(**kw: float) -> tuple[Forecaster, np.ndarray, np.ndarray]:
    ts, y = _daily(24 * 20)
    return Forecaster(horizon=6, season=24, **FAST, **kw).fit(ts, y), ts, y


def test_predict_refuses_a_history_sparser_than_the_step() -> None:
    """Check that an hourly model refuses a history of one reading in three hours (two
    thirds of its steps empty; fit refuses that too) instead of forecasting from it."""
    model, ts, y = _model()
    thin = np.arange(len(ts)) % 3 == 0
    with pytest.raises(InvalidParameterError) as err:
        model.predict(ts[thin], y[thin])
    text = str(err.value)
    assert "% of the model's 1h steps" in text and "3h apart" in text
    assert "at least 60%" in text


def test_predict_takes_a_full_history_and_a_model_fitted_without_min_fill() -> None:
    """Check that the fill check leaves alone a history at the model's rate, with a few
    readings missing, and a model fitted with min_fill=0 (as the benchmark fits them)."""
    model, ts, y = _model()
    some = np.arange(len(ts)) % 7 != 3
    assert len(model.predict(ts[some], y[some])) == 6
    loose, ts, y = _model(min_fill=0.0)
    thin = np.arange(len(ts)) % 3 == 0
    assert len(loose.predict(ts[thin], y[thin])) == 6


def test_predict_grids_only_the_steps_it_reads() -> None:
    """Check that a reading 30 years before the history (a clock never set) neither builds
    a grid back to it (a quarter million steps) nor changes the forecast, and that readings
    starting partway into the lookback forecast as the whole history's grid does."""
    model, ts, y = _model()
    plain = model.predict(ts, y)  # imports done, untraced
    tracemalloc.start()
    try:
        stray = model.predict(np.append(ts[0] - 30 * YEAR, ts), np.append(5.0, y))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"predict peaked at {peak / 2**20:.1f} MiB"
    assert np.allclose(stray["forecast"], plain["forecast"], rtol=1e-6)
    assert (stray["time"] == plain["time"]).all()
    # the lookback's first 20 steps empty: the history's grid holds them as empty steps
    need = model.lookback()
    keep = np.r_[0:len(ts) - need, len(ts) - need + 20:len(ts)]
    gappy = model.predict(ts[keep], y[keep])
    assert len(gappy) == 6 and np.isfinite(gappy["forecast"]).all()
