"""Tests of the Mahalanobis (Hotelling T²) detector that the shared contract does not cover."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgewise.detect import DEFAULT_THRESHOLD, Mahalanobis


def readings(n: int = 1500, seed: int = 0) -> np.ndarray:
    """Two coupled metrics around 0 whose coupling breaks over 1000-1100."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n)
    b = a + 0.1 * rng.standard_normal(n)
    b[1000:1100] = -a[1000:1100]  # each value stays in range; only their relation is new
    return np.c_[a, b]


@pytest.mark.parametrize("unit", [1e-9, 1e-6, 1e6])
def test_the_units_of_the_readings_do_not_matter(unit):
    """Check readings in small units (nA, microstrain) are judged on their own scale: no
    absolute ridge on the covariance swamps them."""
    X = readings()
    ref = Mahalanobis().score_many(X, columns=["a", "b"]) >= DEFAULT_THRESHOLD
    assert ref[1000]  # the break is flagged at once (then partly learned: EW covariance)
    got = Mahalanobis().score_many(X * unit, columns=["a", "b"]) >= DEFAULT_THRESHOLD
    np.testing.assert_array_equal(got, ref)


def test_a_small_metric_beside_a_large_one_keeps_its_own_scale():
    """Check the ridge is per metric: a break in a metric read in micro-units is found
    beside a metric read in mega-units."""
    X = readings()
    ref = Mahalanobis().score_many(X, columns=["a", "b"]) >= DEFAULT_THRESHOLD
    got = Mahalanobis().score_many(X * [1e6, 1e-6], columns=["a", "b"]) >= DEFAULT_THRESHOLD
    np.testing.assert_array_equal(got, ref)


def test_a_metric_constant_at_zero_that_moves_is_named():
    """Check a metric constant at 0 (a valve state) that moves scores 1 and alone explains
    it, without overflow warnings (its variance is 0: no ridge of any size is right)."""
    det = Mahalanobis(warmup=10)
    for i in range(50):
        det.learn_one({"flow": float(np.sin(i)), "valve": 0.0})
    x = {"flow": 0.1, "valve": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert det.score_one(x) == 1.0
        shares = det.explain_one(x)
    assert shares["valve"] == pytest.approx(1.0)


@pytest.mark.parametrize("offset", [1e5, 1e7])
def test_an_offset_does_not_hide_a_metric(offset):
    """Check metrics read with a large offset (absolute pressure in Pa: 101325 +- 1) alarm
    where the same metrics around 0 do: the ridge follows the variance, not the level."""
    X = readings()
    ref = Mahalanobis().score_many(X, columns=["a", "b"]) >= DEFAULT_THRESHOLD
    got = Mahalanobis().score_many(X + offset, columns=["a", "b"]) >= DEFAULT_THRESHOLD
    np.testing.assert_array_equal(got, ref)
