"""Isolated spikes in a Forecaster's history are missing readings (session 46).

Three glitches to 200 in ten days of hourly readings about 20 made the forecast 11.7, 11.7,
61.2 with the interval's low 0 (to 1e6: 0 and 211342). The forecaster now leaves out the
readings the data-quality report calls spikes, less those that recur a day or a week away.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgewise.models.forecast import Forecaster, spike_mask
from edgewise.quality.spikes import hampel_mask
from tests.server import conftest as server_conftest
from tests.server.conftest import Env

env = server_conftest.env  # the real server and store fixture, for the route test
N = 240
H = 3600 * 10**9


def _daily(seed: int = 0, n: int = N) -> tuple[pd.DatetimeIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC")
    return t, 20 + np.sin(np.arange(n) * 2 * np.pi / 24) + rng.normal(0, 0.2, n)


@pytest.mark.parametrize("glitch", [200.0, 1e6, -127.0])
@pytest.mark.parametrize("where", [[50, 100, 170], [200, 215, 225]])  # 2nd: in the tail
def test_glitches_leave_forecast_and_interval_as_without_them(glitch: float,
                                                              where: list[int]) -> None:
    """Check that three glitches (before, or in, the held-out tail the interval is
    calibrated on) are counted and leave the forecast and interval near the clean ones."""
    t, y = _daily()
    clean = Forecaster(horizon=12).fit(t, y)
    want = clean.predict()
    y[where] = glitch
    model = Forecaster(horizon=12).fit(t, y)
    got = model.predict()
    assert clean.n_spikes_ == 0 and model.n_spikes_ == 3
    assert model.header()["spikes_left_out"] == 3  # in train forecast's JSON summary too
    assert np.abs(got["forecast"] - want["forecast"]).max() < 0.5, got
    assert got["low"].min() > 18.0 and got["high"].max() < 23.0, got
    assert np.abs((got["high"] - got["low"]) - (want["high"] - want["low"])).max() < 1.0


def test_a_sharp_daily_peak_is_forecast_not_left_out() -> None:
    """Check that a one-reading peak at 14:00 every day (each one a spike by the Hampel rule
    alone) is kept and forecast, and glitches on top of it are still left out."""
    rng = np.random.default_rng(1)
    n = 24 * 14
    t = pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC")
    y = 20 + rng.normal(0, 0.2, n)
    peak = np.arange(n) % 24 == 14
    y[peak] = 30 + rng.normal(0, 2, peak.sum())
    assert hampel_mask(y, half_window=3, n_sigmas=5.0)[peak].all()  # the rule alone
    for glitches in ([], [30, 150, 250]):
        v = y.copy()
        v[glitches] = 300.0
        model = Forecaster(horizon=24).fit(t, v)
        out = model.predict()
        assert model.n_spikes_ == len(glitches)
        at_peak = out["time"].dt.hour == 14
        assert out["forecast"][at_peak].min() > 25.0, out
        assert out["forecast"][~at_peak].max() < 21.0, out
        assert out["high"].max() < 40.0, out


def test_a_level_shift_is_kept() -> None:
    """Check that a series that moves from 20 to 30 and stays there has no spike and is
    forecast at its new level."""
    t, y = _daily()
    y[200:] += 10
    model = Forecaster(horizon=12).fit(t, y)
    assert model.n_spikes_ == 0
    assert np.abs(model.predict()["forecast"] - 30).max() < 2.0


def test_spike_mask_is_the_quality_reports_rule() -> None:
    """Check that without a recurring cycle the mask is the report's Hampel rule
    (half_window 3, 5 sigmas), that a reading at one of the series' levels is none, and
    that NaN values are never spikes."""
    t, y = _daily(3)
    y[[20, 90, 91, 160]] = [55.0, np.nan, 200.0, -3.0]
    ts = t.asi8
    got = spike_mask(ts, y, H)
    fin = np.isfinite(y)
    want = np.zeros(N, dtype=bool)
    want[fin] = hampel_mask(y[fin], half_window=3, n_sigmas=5.0)
    assert got.tolist() == want.tolist() and got.nonzero()[0].tolist() == [20, 91, 160]
    valve = np.full(N, 100.0)
    valve[::12] = 0.0  # 0 in 1 reading of 12: a level the valve reads, no spike
    assert not spike_mask(ts, valve, H).any()


def test_route_says_how_many_readings_were_left_out(env: Env) -> None:
    """Check that GET /v1/devices/{id}/forecast names the spikes left out in its history,
    through a real server and store."""
    end = (int(pd.Timestamp.now(tz="UTC").timestamp()) // 3600 - 24) * 3600
    ts = end - 3600 * np.arange(N)[::-1]
    _, y = _daily()
    y[[50, 100, 170]] = 200.0
    batch = [{"ts": int(s), "seq": 1 + i, "metrics": {"temp": float(v)}}
             for i, (s, v) in enumerate(zip(ts, y, strict=True))]
    assert env.send(batch).status_code == 200
    r = env.client.get(f"/v1/devices/{env.device}/forecast",
                       params={"metric": "temp", "horizon": 12}, headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["history"]["spikes_left_out"] == 3
    assert max(body["forecast"]["high"]) < 23.0 and min(body["forecast"]["low"]) > 18.0
