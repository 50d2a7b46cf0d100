"""Drift between readings whose difference is past the largest float is a finite score,
computed without numpy warnings (the suite turns warnings into errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgewise.quality.drift import drift_score, has_drift
from edgewise.quality.report import device_report


def test_drift_between_huge_readings_is_finite() -> None:
    """Check 20 readings of -1.5e308 then 20 of 1.5e308 drift, by a finite score: their
    medians and steps overflowed to inf / inf, a NaN score (and RuntimeWarnings)."""
    v = np.r_[np.full(20, -1.5e308), np.full(20, 1.5e308)]
    score = drift_score(v)
    assert math.isfinite(score) and score > 1e9 and has_drift(v)
    rows = [{"device_id": "d", "metric": "m", "ts_ns": i * 10**9, "value": float(x)}
            for i, x in enumerate(v)]
    assert device_report(rows)["metrics"]["m"]["drift"] == round(score, 3)


@pytest.mark.parametrize("scale", [2.0**-1000, 2.0**1014])
def test_drift_scores_the_same_in_any_units(scale: float) -> None:
    """Check a drifting series read in units 2**1014 larger or 2**1000 smaller scores as it
    does in its own (powers of two scale exactly): readings near 1.76e308 overflowed in
    their median (a NaN score), and readings near 1e-298 met the absolute 1e-300 floor."""
    rng = np.random.default_rng(0)
    v = 1e3 + rng.normal(0, 1, 400) + np.linspace(0, 6, 400)
    assert np.isfinite(v * scale).all()
    assert drift_score(v * scale) == drift_score(v)
