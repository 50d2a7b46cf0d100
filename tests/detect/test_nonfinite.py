"""Detectors on hostile numbers: readings near the double's range give valid scores, the same
on every path (score_many and score_one/learn_one), and ordinary readings are untouched."""

from __future__ import annotations

import math

import numpy as np

from edgewise.detect import default_detector
from edgewise.detect.mahalanobis import Mahalanobis
from edgewise.detect.zscore import EWZScore
from tests.conftest import score_one_by_one


def _ewz_old(xs, alpha=0.02, z0=3.0, warmup=30):
    """EWZScore as it was: the reference for ordinary readings."""
    n, mean, var, out = 0, 0.0, 0.0, []
    for v in xs:
        if n < warmup:
            out.append(0.0)
        else:
            z = abs(v - mean) / (math.sqrt(var) + 1e-9 * abs(mean) + 1e-300)
            out.append(0.0 if z <= z0 else 1.0 - math.exp(-(z - z0)))
        n += 1
        if n == 1:
            mean = v
            continue
        a = max(alpha, 1.0 / n)
        d = v - mean
        mean += a * d
        var = (1 - a) * (var + a * d * d)
    return np.array(out)


def test_ewzscore_ordinary_readings_score_exactly_as_before():
    """Check the overflow guard changes nothing on ordinary readings, on either path."""
    rng = np.random.default_rng(0)
    x = np.r_[np.sin(np.arange(3000) / 30) * 1e6 + rng.standard_normal(3000), 5e7, 1.0]
    ref = _ewz_old(x)
    assert np.array_equal(EWZScore().score_many(x), ref)
    assert np.array_equal(score_one_by_one(EWZScore(), x), ref)


def test_ewzscore_extreme_readings_give_valid_scores_on_both_paths():
    """Check a warm-up of +-1e308 (NaN scores before) and readings that overflow the state
    give scores in [0, 1], the same on both paths, and a finite state."""
    rng = np.random.default_rng(1)
    x = np.r_[np.full(50, 1e308), np.full(50, -1e308), rng.standard_normal(300), 3e38,
              -3e38, 1e30, rng.standard_normal(100)]
    det = EWZScore()
    many = det.score_many(x)
    one = score_one_by_one(EWZScore(), x)
    assert np.array_equal(many, one)
    assert ((many >= 0) & (many <= 1)).all() and math.isfinite(det.var_)
    assert many[400] == many[401] == many[402] == 1.0  # far out: alarms, not learned
    assert (many[403:] >= 0.9).sum() <= 2


def test_mahalanobis_sentinel_reading_is_not_learned():
    """Check a reading at 1e308 scores 1 and leaves the state as it was (it made an infinite
    covariance that scored every later reading 1)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(400)
    rows = [{"a": u, "b": 2 * u + 0.1 * rng.standard_normal()} for u in a]
    det = Mahalanobis()
    score_one_by_one(det, rows[:300])
    mean, cov, n = det.mean_.copy(), det.cov_.copy(), det.n_
    assert score_one_by_one(det, [{"a": 1e308, "b": 0.0}])[0] == 1.0
    assert det.n_ == n and np.array_equal(det.mean_, mean) and np.array_equal(det.cov_, cov)
    assert (score_one_by_one(det, rows[300:]) >= 0.9).sum() < 3


def test_default_detector_counter_increment_overflow_is_the_same_on_both_paths():
    """Check a counter whose increment overflows to inf scores alike on score_many and
    score_one/learn_one (the per-reading path learned the inf)."""
    x = -1.7e308 + np.arange(1000) * 1e300
    x[700] = 1.7e308
    det = default_detector()
    many = det.score_many(x)
    assert det.is_counter
    assert np.array_equal(score_one_by_one(default_detector(), x), many)
