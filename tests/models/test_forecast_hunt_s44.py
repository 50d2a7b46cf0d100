"""Forecast intervals calibrated on a short tail (session 44's hunt)."""

from __future__ import annotations

import numpy as np

from edgewise.models.forecast import Forecaster

HOUR = 3600 * 10**9
START = 1_700_000_000 * 10**9


def _noisy_day(days: int, horizon: int, seed: int) -> np.ndarray:
    """A daily sine of amplitude 3 around 10 with i.i.d. noise of sd 1, hourly."""
    rng = np.random.default_rng(seed)
    k = np.arange(24 * days + horizon)
    return 10 + 3 * np.sin(2 * np.pi * k / 24) + rng.normal(0, 1, len(k))


def test_each_tail_step_counts_once_per_quarter() -> None:
    """Check a band learns one residual per step of the tail: 10 days of hourly readings at
    horizon 48 calibrate on 20 consecutive origins, whose 12-step quarters reach 31 steps;
    each step was counted once per origin that forecast it (240 residuals per quarter,
    the noise of 31 steps)."""
    y = _noisy_day(10, 0, 0)
    m = Forecaster(horizon=48, n_estimators=20).fit(START + np.arange(len(y)) * HOUR, y)
    assert [len(hs) for hs, _, _ in m.bands_] == [12, 12, 12, 12]
    assert [len(local.pred_) for _, local, _ in m.bands_] == [31] * 4
    assert [len(everywhere.pred_) for _, _, everywhere in m.bands_] == [31] * 4


def test_short_history_interval_holds_the_truth_about_90_percent() -> None:
    """Check the 90% interval on a noisy daily cycle of 10 days (horizon 48) holds the truth
    close to 90% of the time: it held it 0.83 of the time over these 12 seeds (0.67-0.98
    by seed; 0.82 over 80 seeds) when each step of the short tail counted as often as it
    was forecast, 0.93 now."""
    covers = []
    for seed in range(12):
        y = _noisy_day(10, 48, seed)
        ts = START + np.arange(len(y)) * HOUR
        out = Forecaster(horizon=48, random_state=seed).fit(ts[:-48], y[:-48]).predict()
        covers.append(np.mean((y[-48:] >= out["low"]) & (y[-48:] <= out["high"])))
    assert np.mean(covers) >= 0.88, np.round(covers, 2)
