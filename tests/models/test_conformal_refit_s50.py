"""A ConformalBands refitted without a cap after a fit with one gives the bounds a fresh
one gives: the lower bounds' neighbourhoods of the capped fit were kept, and indexed
into the new calibration set (28.8 % of exchangeable truths below a 90 % band's lower
bound, not 5 %)."""

from __future__ import annotations

import numpy as np

from edgewise.models.conformal import ConformalBands


def test_refit_without_cap_forgets_the_capped_lower_neighbours() -> None:
    """Check a refit without a cap equals a fresh fit, and its lower bound misses about
    alpha/2 of exchangeable truths."""
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 100, 2000)
    y = pred + rng.normal(0, 1 + pred / 10, 2000)
    bands = ConformalBands(alpha=0.1)
    bands.fit(np.full(30, 50.0), np.minimum(y[:30], 50.0), cap=50.0)
    bands.fit(pred[:1000], y[:1000])
    low, high = bands.interval(pred[1000:])
    fresh_low, fresh_high = ConformalBands(alpha=0.1).fit(pred[:1000], y[:1000]).interval(
        pred[1000:])
    assert np.array_equal(low, fresh_low)
    assert np.array_equal(high, fresh_high)
    assert np.mean(y[1000:] < low) < 0.08
