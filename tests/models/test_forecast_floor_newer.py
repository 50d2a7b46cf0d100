"""The floor at 0 a :class:`Forecaster` learns from a never-negative history holds only
while the history it forecasts from agrees: a newer history below it is not clipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.models.forecast import Forecaster

load_commands()
H = 3600 * 10**9
N = 24 * 30  # a month of hourly readings per season


def _autumn_then_winter(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hourly temperatures: a month around 12 °C (never below 0), then a month around -8."""
    rng = np.random.default_rng(seed)
    t = np.arange(2 * N)
    level = np.r_[np.full(N, 12.0), np.full(N, -8.0)]
    return t * H, level + 4 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.5, 2 * N)


@pytest.fixture(scope="module")
def autumn_model() -> Forecaster:
    ts, y = _autumn_then_winter()
    return Forecaster(horizon=12, n_estimators=30, learning_rate=0.3).fit(ts[:N], y[:N])


def test_a_newer_history_below_the_floor_is_not_clipped(autumn_model: Forecaster) -> None:
    """Check a model fitted on readings all above 0, forecasting from a newer history below
    0, forecasts below 0 with an interval that holds most of the truth (it answered 0 with
    the interval [0, 0] at every step, the truth -8 to -12 outside it)."""
    ts, y = _autumn_then_winter()
    assert autumn_model.floor_ == 0.0
    out = autumn_model.predict(ts[:-12], y[:-12])
    truth = y[-12:]
    assert (out["forecast"] < -2).all(), out
    assert (out["low"] < out["high"]).all(), out
    assert np.mean((truth >= out["low"]) & (truth <= out["high"])) >= 0.5, out
    assert autumn_model.floor_ == 0.0  # the model keeps its floor for the next history


def test_a_newer_history_above_the_floor_is_still_clipped(autumn_model: Forecaster) -> None:
    """Check the floor still holds for a history that respects it: one that drops toward 0
    but never below gets no forecast or bound below 0."""
    ts, y = _autumn_then_winter()
    cooler = np.abs(y[:N] - 13.0)  # near 0 each night, never below it
    out = autumn_model.predict(ts[:N], cooler)
    assert (out[["forecast", "low", "high"]] >= 0).all().all(), out
    assert (out["low"] == 0).any(), out  # the clamp is what kept them there


def test_predict_forecast_cli_from_a_newer_csv_below_the_floor(tmp_path: Path) -> None:
    """Check ``edgewise predict forecast --csv`` with a winter history forecasts below 0
    from a model trained on an autumn above it."""
    ts, y = _autumn_then_winter()
    times = pd.to_datetime(ts, utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    autumn, winter = tmp_path / "autumn.csv", tmp_path / "winter.csv"
    pd.DataFrame({"time": times[:N], "temp_c": y[:N]}).to_csv(autumn, index=False)
    pd.DataFrame({"time": times, "temp_c": y}).to_csv(winter, index=False)
    model = tmp_path / "temp.forecast"
    runner = CliRunner(mix_stderr=False)
    done = runner.invoke(app, ["train", "forecast", "--csv", str(autumn), "--column", "temp_c",
                               "--horizon", "6", "--out", str(model), "--json"])
    assert done.exit_code == 0, done.stderr
    done = runner.invoke(app, ["predict", "forecast", "--model", str(model), "--csv",
                               str(winter), "--column", "temp_c", "--json"])
    assert done.exit_code == 0, done.stderr
    rows = json.loads(done.stdout)["forecast"]
    assert len(rows) == 6 and all(r["forecast"] < 0 and r["low"] < 0 for r in rows), rows
