"""``edgewise.bench.forecast`` on a real NAB series, with statsmodels hidden: the run says
the Holt-Winters peer is missing and still reports the others."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from edgewise.bench import forecast as bench
from tests.models.test_forecast import FAST


def test_run_without_statsmodels_reports_the_other_methods(shared_data: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a run where statsmodels cannot be imported leaves Holt-Winters out by name and
    gives finite MASE, sMAPE and a coverage for the forecaster on real hourly data."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "statsmodels" else real(name, *a))
    result = bench.run(shared_data / "nab",
                       ("realKnownCause/ambient_temperature_system_failure.csv",),
                       origins=2, tail=0.05, forecaster=FAST).to_json()
    assert result["statsmodels"] is None
    assert result["methods"] == ["forecaster", "seasonal_naive"]
    row = result["series"][0]
    assert row["horizon"] == 24 and row["season"] == 24 and row["origins"] == 2
    ours, naive = row["methods"]["forecaster"], row["methods"]["seasonal_naive"]
    assert all(math.isfinite(f[k]) for f in (ours, naive) for k in ("mase", "smape"))
    assert 0.0 <= ours["coverage"] <= 1.0 and naive["coverage"] is None
    assert result["median"]["forecaster"]["mase"] == ours["mase"]
