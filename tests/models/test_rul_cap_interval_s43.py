"""Intervals of RUL predictions at (or near) the cap: their lower bounds are calibrated on
truths below the cap only, so the many healthy early-life calibration cuts (truth =
prediction = cap, residual 0) no longer pin them to the cap (``[cap, cap]``, zero width,
which missed the truths below the cap)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.conformal import ConformalBands
from edgewise.models.rul import RULModel

CAP = 60.0


def _fleet(n_units: int, seed: int, cut: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """Run-to-failure histories of 200-300 steps whose wear shows in the last ~60 (a long
    healthy early life, as C-MAPSS: most calibration cuts have truth at the cap); with
    ``cut``, each history stops 20-99 steps before failure, and the true RUL is returned."""
    rng = np.random.default_rng(seed)
    rows, truths = [], []
    for unit in range(n_units):
        life = int(rng.integers(200, 300))
        end = life - int(rng.integers(20, 100)) if cut else life
        for t in range(end):
            wear = np.exp((t - life) / 20.0)
            rows.append((unit, t, 1.0 + wear + rng.normal(0, 0.1), rng.normal()))
        truths.append(float(life - end))
    return pd.DataFrame(rows, columns=["unit", "cycle", "temp", "noise"]), np.array(truths)


@pytest.fixture(scope="module")
def scored() -> tuple[RULModel, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train, _ = _fleet(40, 0, cut=False)
    model = RULModel(models=("gbm",), n_estimators=150, learning_rate=0.1, cap=CAP,
                     window=10).fit(train)
    test, truth = _fleet(300, 1, cut=True)
    point, low, high = model.predict_interval(test)
    return model, point, low, high, np.minimum(truth, CAP)


def test_no_interval_has_zero_width(scored) -> None:
    """Check every interval, at the cap too, is wider than 1 step. Before, 40 of the 300
    units were predicted at the cap and got exactly [60, 60] (92 narrower than 1)."""
    model, point, low, high, _ = scored
    at = model.open_above(point)
    assert at.sum() >= 20  # the case this is about: many predictions at the cap
    assert np.min(high - low) > 1.0, (high - low).min()
    assert np.all(low[at] < CAP - 1.0), np.unique(low[at])


def test_near_the_cap_truths_below_it_are_covered(scored) -> None:
    """Check units predicted within 10 steps of the cap whose true RUL is below the cap
    are inside their 90% interval at least 0.9 of the time (0.81 before: 42 of 52), and
    every one of those predicted at the cap (all 4 missed before)."""
    model, point, low, high, y = scored
    cover = (y >= low) & (y <= high)
    below = y < CAP
    near = (point > CAP - 10) & below
    assert near.sum() >= 30
    assert cover[near].mean() >= 0.9, cover[near].mean()
    at = model.open_above(point) & below
    assert at.sum() >= 3 and cover[at].all(), (y[at], low[at])


def test_bands_take_lower_bounds_from_truths_below_the_cap() -> None:
    """Check ConformalBands(cap=...) calibrates the lower bound of a prediction at the cap
    on the truths below it (-2 here), the upper one on every residual, and without a cap
    keeps the old bands (lower bound pinned at the cap by the tie of zero residuals)."""
    pred = np.r_[np.full(300, 10.0), np.linspace(0.0, 10.0, 200)]
    truth = np.r_[np.full(300, 10.0), np.linspace(0.0, 10.0, 200) - 2.0]
    low, high = ConformalBands().fit(pred, truth).interval(np.array([10.0, 5.0]))
    assert low.tolist() == [10.0, 3.0] and high.tolist() == [10.0, 3.0]
    capped = ConformalBands().fit(pred, truth, cap=10.0)
    low, high = capped.interval(np.array([10.0, 5.0]))
    assert low.tolist() == [8.0, 3.0] and high.tolist() == [10.0, 3.0]
    assert capped.k_low_ == 50 and len(capped.pred_low_) == 200


def test_bands_with_every_truth_at_the_cap_have_no_lower_bound() -> None:
    """Check no truth below the cap leaves the lower bound unbounded (-inf), not the cap,
    and a cap that is not a finite number is refused by name."""
    low, high = ConformalBands().fit(np.full(100, 5.0), np.full(100, 5.0), cap=5.0).interval(
        np.array([5.0]))
    assert low[0] == -math.inf and high[0] == 5.0
    with pytest.raises(InvalidParameterError, match="cap as a finite number"):
        ConformalBands().fit(np.zeros(30), np.zeros(30), cap=math.nan)
