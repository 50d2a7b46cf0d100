"""Readings sent in bursts (5 a minute apart at the top of every hour): their median
spacing is a minute, and the forecaster's 1 min grid was 92% empty, so the lag four and
five steps back was missing in every training row and scikit-learn failed binning it (a raw
``ValueError: window shape cannot be larger than input array shape`` from ``fit``, the
CLI and a 500 from the gateway). The step is now coarsened to the finest common step the
readings fill, a given step that sparse is refused naming one that fills, a feature empty
in every row is not binned, and the gateway answers any history it cannot fit as a 422."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.models.forecast import Forecaster, regular_series
from edgewise.server.problems import Problem
from edgewise.server.routes.forecast import _fit

load_commands()
HOUR, MINUTE = 3600 * 10**9, 60 * 10**9
T0 = 1_700_006_400 * 10**9  # 2023-11-15T00:00Z
FAST = {"n_estimators": 30, "learning_rate": 0.3, "max_rows": 3000, "calibration_origins": 8}


def _burst(days: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """5 readings a minute apart at the top of every hour, a daily cycle."""
    ts = np.array([T0 + h * HOUR + k * MINUTE for h in range(24 * days) for k in range(5)])
    hours = (ts - T0) / HOUR
    y = 10 + 5 * np.sin(2 * np.pi * hours / 24)
    y += np.random.default_rng(0).normal(0, 0.1, len(ts))
    return ts, y


def test_step_fill_counts_bursts_as_empty_steps_but_not_outages() -> None:
    """Check the share of filled steps: a minute grid over hourly bursts is 5 in 60 full,
    an hourly one all full, and a week without readings is an outage, not empty steps."""
    from edgewise.models.forecast import filled_step, step_fill

    ts, _ = _burst(3)
    assert step_fill(ts, MINUTE) == pytest.approx(5 / 60, abs=0.01)
    assert step_fill(ts, HOUR) == 1.0
    hourly = np.arange(24 * 10) * HOUR
    gap = np.concatenate([hourly[:120], hourly[120:] + 7 * 24 * HOUR])
    assert step_fill(gap, HOUR) == 1.0
    assert filled_step(ts, MINUTE) == HOUR and filled_step(hourly, HOUR) == HOUR


def test_bursty_readings_fit_on_the_step_they_fill() -> None:
    """Check bursts fit on an hourly grid (was: ValueError from scikit-learn), find the
    daily cycle, and forecast it."""
    ts, y = _burst()
    model = Forecaster(horizon=6, **FAST).fit(ts, y)
    assert model.step_ns_ == HOUR and model.season_ == 24
    out = model.predict()
    hours = (out["time"].astype("int64").to_numpy() - T0) / HOUR
    truth = 10 + 5 * np.sin(2 * np.pi * hours / 24)
    assert np.abs(out["forecast"].to_numpy() - truth).max() < 0.5


@pytest.mark.parametrize("step", ["1min", "30min"])
def test_a_given_step_the_bursts_leave_mostly_empty_is_refused(step: str) -> None:
    """Check a step near the median spacing but mostly empty is refused naming the step,
    the empty share and a step that fills (was: ValueError from scikit-learn)."""
    ts, y = _burst()
    with pytest.raises(InvalidParameterError, match=rf"step '{step}' .* leaves \d+% of its "
                       r"steps without a reading .* e\.g\. '1h'") as err:
        Forecaster(step=step, horizon=6, **FAST).fit(ts, y)
    assert err.value.field == "step"
    assert Forecaster(step="1h", horizon=6, **FAST).fit(ts, y).step_ns_ == HOUR


def test_a_feature_missing_in_every_training_row_is_not_given_to_the_trees() -> None:
    """Check the trees fit where a lag always falls between readings (known only at 5
    steps in 60, so the value 4 or 5 steps before any known target's origin is empty);
    scikit-learn failed binning the all-missing column."""
    ts = T0 + np.arange(24 * 30) * HOUR
    y = 10 + 5 * np.sin(2 * np.pi * np.arange(len(ts)) / 24)
    model = Forecaster(horizon=6, **FAST).fit(ts, y)
    sparse = y.copy()
    sparse[np.arange(len(y)) % 60 >= 5] = np.nan
    grid, _ = regular_series(ts, y, HOUR, 0)
    trees = model._fit_trees(sparse, grid, len(sparse) - 1, 0)
    point = model._forecast(trees, sparse, grid, np.array([len(sparse) - 1]))
    assert point.shape == (1, 6) and np.isfinite(point).all()


def test_the_cli_trains_on_bursty_readings(tmp_path: Path) -> None:
    """Check ``train forecast`` on the bursts saves an hourly model (was: a traceback)."""
    ts, y = _burst()
    csv = tmp_path / "burst.csv"
    pd.DataFrame({"timestamp": ts // 10**9, "value": y}).to_csv(csv, index=False)
    out = tmp_path / "b.forecast"
    done = CliRunner(mix_stderr=False).invoke(app, [
        "train", "forecast", "--csv", str(csv), "--column", "value", "--out", str(out),
        "--horizon", "6", "--json"])
    assert done.exit_code == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["step_ns"] == HOUR and summary["season"] == 24 and out.is_file()


def test_the_gateway_fits_bursty_readings_and_answers_an_unfit_history_as_422() -> None:
    """Check the forecast route fits the bursts (was: a 500 from scikit-learn's ValueError)
    and answers a history the trees cannot take (values whose spread overflows a float) as
    a 422 'unfit_history' naming the error, not a 500."""
    ts, y = _burst()
    rows = [("temp", int(t), float(v)) for t, v in zip(ts, y, strict=True)]
    answer = _fit("pump-1", "temp", 6, rows, None).answer
    assert answer["step_s"] == 3600 and answer["season"] == 24
    huge = [("temp", int(T0 + i * HOUR), (-1) ** i * 1.7e308) for i in range(24 * 12)]
    with np.errstate(all="ignore"), pytest.raises(Problem) as err:
        _fit("pump-1", "temp", 6, huge, None)
    body = err.value.body()
    assert (body["status"], body["reason"], body["field"]) == (422, "unfit_history", "metric")
    assert "'temp' of device 'pump-1'" in body["detail"] and "within +-1e+150" in body["detail"]


def test_values_too_large_for_their_squares_are_refused_by_name() -> None:
    """A history near the float limit made numpy overflow and scikit-learn fail with
    'Input y contains NaN.'; it is refused naming the values and the bound."""
    from edgewise.errors import QualityError
    from edgewise.models.forecast import Forecaster

    t = np.arange(24 * 30, dtype=np.int64) * 3600 * 10**9 + 1_700_000_000 * 10**9
    v = np.sin(np.arange(24 * 30) / 24 * 2 * np.pi) * 1.7e308
    with pytest.raises(QualityError, match=r"within \+-1e\+150.*1\.7e\+308"):
        Forecaster(horizon=6).fit(t, v)
    Forecaster(horizon=6).fit(t, v / 1e200)  # the same shape, in other units, fits
