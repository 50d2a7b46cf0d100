"""GET /v1/devices/{id}/forecast, hunt session 39: small-unit metrics rounded to nothing, and
every refusal of a history answered as too little history with a wrong step count."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgewise.server.problems import Problem
from edgewise.server.routes.forecast import _fit

HOUR = 3600 * 10**9
SEC = 10**9


def _rows(ts: np.ndarray, values: np.ndarray) -> list[tuple[str, int, float]]:
    return [("m", int(t), float(v)) for t, v in zip(ts, values, strict=True)]


def test_a_metric_in_small_units_keeps_its_digits() -> None:
    """Check the forecast and band of a displacement of a few micrometres (in metres) keep
    their digits: 6 decimals made the forecast 4e-06, 3e-06... and low equal to high."""
    rng = np.random.default_rng(0)
    t = np.arange(24 * 10)
    values = 5e-6 + 2e-6 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 5e-8, len(t))
    answer = _fit("d", "disp_m", 6, _rows(t * HOUR, values), None).answer
    body = json.loads(json.dumps(answer, allow_nan=False))["forecast"]
    assert all(lo < hi for lo, hi in zip(body["low"], body["high"], strict=True)), body
    assert all(lo <= f <= hi for lo, f, hi in zip(body["low"], body["forecast"], body["high"],
                                                 strict=True))
    assert all(2e-6 < f < 8e-6 and f != round(f, 6) for f in body["forecast"]), body


def _problem(rows: list[tuple[str, int, float]], horizon: int = 12) -> Problem:
    with pytest.raises(Problem) as err:
        _fit("d", "m", horizon, rows, None)
    assert err.value.status == 422
    return err.value


def test_too_little_history_names_the_steps_it_has() -> None:
    """Check a history too short for the horizon is ``too_little_history`` with the steps
    it has on the grid (not a reading count, nor a time)."""
    t = np.arange(30)
    p = _problem(_rows(t * HOUR, np.sin(t)), horizon=48)
    assert p.reason == "too_little_history", p.detail
    assert p.body()["history_steps"] == 30 and "got 30 steps" in p.detail


def test_a_grid_too_large_is_unfit_not_too_little_history() -> None:
    """Check 3,000 one-second readings ten days before 3,000 more (a grid of 864,000 steps)
    are ``unfit_history`` without a step count: they were ``too_little_history`` with
    ``history_steps`` the first reading's time in ns."""
    first = 1_790_000_000 * SEC + SEC * np.arange(3000)
    ts = np.concatenate([first, first + 10 * 86_400 * SEC])
    p = _problem(_rows(ts, 20 + np.sin(np.arange(6000) / 60)))
    assert p.reason == "unfit_history", p.detail
    assert "history_steps" not in p.body() and "would build a grid" in p.detail


def test_too_few_training_rows_in_a_gappy_history_is_unfit() -> None:
    """Check a history long enough in steps but mostly empty, too few training rows, is
    ``unfit_history`` (it was ``too_little_history`` with the training-row count as
    ``history_steps``)."""
    # 3 hourly readings every 4 days for 4 weeks: the runs between are outages (a day or
    # more), so the hourly step is kept, and only the bursts' 3 steps are known targets
    t = (np.arange(8)[:, None] * 96 + np.arange(3)).ravel()
    p = _problem(_rows(t * HOUR, np.sin(t / 3.0)), horizon=1)
    assert p.reason == "unfit_history", p.detail
    assert "training rows" in p.detail and "history_steps" not in p.body()
