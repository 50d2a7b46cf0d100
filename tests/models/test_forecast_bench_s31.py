"""The forecasting benchmark runs again on its gappy series: the README's ``edgewise bench
forecast`` stopped at realTraffic/occupancy_6005.csv, whose history up to the early origins
fills 58-59.5% of its median 5-min step (the forecaster refuses a given step under 60%),
with a message naming ``--step``, which the user never gave. The bench checks the fill once
per series, by name, and the forecaster takes the series' step at every origin
(``Forecaster(min_fill=0.0)``); a user's sparse ``step`` is still refused."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.bench import forecast as bench
from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.models.forecast import Forecaster, step_fill
from tests.models.test_forecast import FAST

OCCUPANCY = "realTraffic/occupancy_6005.csv"
BURSTS = "synthetic/bursts.csv"
M = 60 * 10**9


def _no_statsmodels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide statsmodels from the bench (Holt-Winters on 288-step seasons is the slow peer)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "statsmodels" else real(name, *a))


def _bursts(tmp_path: Path) -> Path:
    """A NAB root holding one series read in bursts: 5 readings a minute apart every hour
    for 30 days (median spacing 1 min, 8% of its 1-min steps hold a reading)."""
    ts = np.array([1_700_000_000 * 10**9 + h * 60 * M + k * M
                   for h in range(24 * 30) for k in range(5)])
    values = np.sin(2 * np.pi * ts / (86_400 * 10**9)) + 10
    path = tmp_path / "data" / BURSTS
    path.parent.mkdir(parents=True)
    stamps = pd.to_datetime(ts, utc=True).strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(path, index=False)
    return tmp_path


def test_bench_forecasts_occupancy_at_its_sparsest_origin(
        shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the bench forecasts occupancy_6005 at its first origin of the last 20% (its
    history there fills under 60% of the 5-min step) and at its last, with finite figures."""
    nab = shared_data / "nab"
    ts, _ = bench.load_series(nab, OCCUPANCY)
    step = int(np.median(np.diff(ts)))
    assert step == 5 * M and step_fill(ts, step) >= 0.6  # the whole series passes
    _no_statsmodels(monkeypatch)
    result = bench.run(nab, (OCCUPANCY,), origins=2, tail=0.2, forecaster=FAST).to_json()
    row = result["series"][0]
    assert row["step_s"] == 300.0 and row["origins"] == 2 and row["horizon"] == 288
    ours = row["methods"]["forecaster"]
    assert math.isfinite(ours["mase"]) and math.isfinite(ours["smape"])


def test_a_bursty_series_is_refused_by_name_not_by_step_option(tmp_path: Path) -> None:
    """Check a series whose median step is mostly empty is refused before any forecast,
    naming the series, and the message names no option the user did not give (--step)."""
    nab = _bursts(tmp_path)
    with pytest.raises(InvalidParameterError) as caught:
        bench.run(nab, (BURSTS,), origins=2, tail=0.2, forecaster=FAST)
    assert caught.value.field == "series" and caught.value.value == BURSTS
    message = str(caught.value)
    assert BURSTS in message and "8%" in message and "60%" in message
    assert "--step" not in message and "'step'" not in message


def test_bench_cli_refuses_a_bursty_series_in_one_line(tmp_path: Path) -> None:
    """Check ``edgewise bench forecast --series`` on a bursty series exits 2 with one
    ``error:`` line naming the series and not --step."""
    load_commands()
    got = CliRunner(mix_stderr=False).invoke(app, [
        "bench", "forecast", "--nab", str(_bursts(tmp_path)), "--series", BURSTS,
        "--origins", "2", "--json"])
    assert got.exit_code == 2, got.output
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Series synthetic/bursts.csv")
    assert "--step" not in got.stderr


def test_forecaster_min_fill_takes_a_sparse_given_step() -> None:
    """Check ``min_fill=0`` takes a given step that most steps of are empty (the default
    still refuses it, naming the step) and an inferred one stays the median spacing."""
    ts = np.array([h * 60 * M + k * M for h in range(24 * 10) for k in range(5)])
    values = np.sin(2 * np.pi * ts / (86_400 * 10**9))
    with pytest.raises(InvalidParameterError, match="leaves 91% of its steps") as caught:
        Forecaster(horizon=4, step="1min", season=1, **FAST).fit(ts, values)
    assert caught.value.field == "step"
    assert Forecaster(horizon=4, season=1, **FAST).fit(ts, values).step_ns_ == 60 * M
    sparse = Forecaster(horizon=4, step="1min", season=1, min_fill=0.0, **FAST)
    assert sparse.fit(ts, values).step_ns_ == M
    assert Forecaster(horizon=4, season=1, min_fill=0.0, **FAST).fit(ts, values).step_ns_ == M
    with pytest.raises(InvalidParameterError, match="'min_fill' parameter of Forecaster"):
        Forecaster(min_fill=1.5).fit(ts, values)
