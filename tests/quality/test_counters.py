"""Cumulative counters in the data-quality report: told from levels, restarts and
backward steps counted, no level drift claimed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgewise.quality.counters import counter_steps, is_counter
from edgewise.quality.report import device_report

DAY = 1440


def _meter(days: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    load = np.clip(1 + 0.5 * np.sin(2 * np.pi * t / DAY) + 0.05 * rng.standard_normal(len(t)),
                   0, None) * 0.01
    load[(t % DAY) < 300] = 0.0  # idle every night
    return np.round(1234.0 + np.cumsum(load), 2)


def _rows(metric: str, values: np.ndarray) -> list[dict]:
    return [{"device_id": "m1", "metric": metric, "ts_ns": (1_700_000_000 + 60 * i) * 10**9,
             "value": float(v)} for i, v in enumerate(values)]


def test_a_meter_is_a_counter_with_its_restarts_and_backward_steps():
    """Check the counts on a meter restarted once (a new meter) and wound back once."""
    x = _meter()
    x[2000:] -= 1.5                  # wound back
    x[3000:] = x[3000:] - x[3000] + 0.2  # a new meter, from zero
    steps = counter_steps(x)
    assert steps["counter"] and (steps["restarts"], steps["backwards"]) == (1, 1)
    m = device_report(_rows("kwh", x))["metrics"]["kwh"]
    assert m["counter"] and (m["restarts"], m["backwards"]) == (1, 1)
    assert m["drift"] is None  # a level drift would only say that it counted
    assert m["stuck"] > 0      # idle nights: stretches where it did not count


def test_levels_are_not_counters(shared_data):
    """Check that a noisy level, a flat line with spikes falling back and every NAB
    series are levels, and keep their drift score."""
    rng = np.random.default_rng(1)
    temp = 20 + rng.standard_normal(2000)
    spiky = np.full(2000, 20.0)
    spiky[::50] = 80.0
    assert not is_counter(temp) and not is_counter(spiky)
    assert isinstance(device_report(_rows("temp", temp))["metrics"]["temp"]["drift"], float)
    files = sorted((shared_data / "nab" / "data").glob("*/*.csv"))
    assert len(files) == 58, f"NAB's 58 data files, found {len(files)}"  # none: no check
    for f in files:
        assert not is_counter(pd.read_csv(f)["value"]), f.name


def test_a_daily_counter_restarts_every_midnight():
    """Check that an 'energy today' counter is a counter with one restart a day."""
    x = _meter(days=4)
    daily = np.concatenate([x[d * DAY:(d + 1) * DAY] - x[d * DAY] for d in range(4)])
    steps = counter_steps(daily)
    assert steps["counter"] and steps["restarts"] == 3 and steps["backwards"] == 0
