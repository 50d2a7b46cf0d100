"""Tests of the Mahalanobis (Hotelling T²) detector that the shared contract does not cover."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgewise.detect import DEFAULT_THRESHOLD, Mahalanobis
from edgewise.detect.mahalanobis import GUARD_RUN, GUARD_SD


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


def _device(n: int = 2500, seed: int = 7) -> np.ndarray:
    """Three metrics, two of them coupled, the third an offset one."""
    rng = np.random.default_rng(seed)
    load = rng.standard_normal(n)
    return np.c_[load + 0.3 * rng.standard_normal(n), 2 * load + 0.3 * rng.standard_normal(n),
                 5 + rng.standard_normal(n)]


def _cases() -> dict[str, tuple[np.ndarray, dict]]:
    X = _device()
    rng = np.random.default_rng(1)
    holes = X.copy()
    holes[rng.random(X.shape) < 0.2] = np.nan
    late = X.copy()
    late[:700, 2] = np.nan
    frozen = X.copy()
    frozen[:, 1] = 0.0
    frozen[2000, 1] = 1.0
    huge = X.copy()
    huge[1500, 0], huge[1600, 1], huge[1700] = 1e300, 1e160, np.nan
    return {
        "full": (X, {}),
        "missing": (holes, {}),
        "late metric": (late, {}),
        "units": (X * [1e6, 1e-6, 1.0], {}),
        "constant at 0": (frozen, {"warmup": 10}),
        "overflow": (huge, {}),
        "collinear, no shrinkage": (np.c_[X, 2 * X[:, 0]], {"shrinkage": 0.0}),
        "max_metrics": (X, {"max_metrics": 2}),
        "leading gaps": (np.r_[np.full((300, 3), np.nan), X], {"alpha": 0.02}),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_score_explain_many_equals_the_loop(case):
    """Check the compiled score_explain_many gives the loop of score_one, explain_one and
    learn_one: scores to 1e-12, the same top metric in every row, the same learned state
    bit for bit, in two calls; including rows that go through the loop (a metric added,
    an overflowing reading, a singular correlation)."""
    from edgewise.detect.base import Detector

    X, params = _cases()[case]
    names = [f"m{j}" for j in range(X.shape[1])]
    loop, fast = Mahalanobis(**params), Mahalanobis(**params)
    s_loop, t_loop = Detector.score_explain_many(loop, X, names)
    s1, t1 = fast.score_explain_many(X[:1234], names)
    s2, t2 = fast.score_explain_many(X[1234:], names)
    np.testing.assert_allclose(np.r_[s1, s2], s_loop, rtol=0, atol=1e-12)
    assert t1 + t2 == t_loop
    assert s_loop.max() > 0 and sum(map(bool, t_loop)) > len(X) / 2
    assert loop.n_ == fast.n_ and loop.metrics_ == fast.metrics_
    for a in ("mean_", "cov_", "counts_"):
        assert np.array_equal(getattr(loop, a), getattr(fast, a)), a


def test_the_compiled_shares_equal_explain_one():
    """Check the kernel's largest share per row (one Cholesky of the masked correlation)
    is explain_one's (a pseudo-inverse) to 1e-12, and names the same metric."""
    from edgewise.detect._mahalanobis_replay import replay

    X = _device(1500)
    X[np.random.default_rng(3).random(X.shape) < 0.1] = np.nan
    X[0] = [0.1, 0.2, 5.0]
    names = ["a", "b", "c"]
    loop, fast = Mahalanobis(), Mahalanobis()
    for det in (loop, fast):
        det.learn_one(dict(zip(names, X[0], strict=True)))
    n = len(X) - 1
    t2, dof, least, share = np.full(n, np.nan), np.zeros(n), np.zeros(n), np.zeros(n)
    best = np.full(n, -1, dtype=np.int64)
    p = np.array([fast.alpha, fast.shrinkage, fast.warmup, fast._warm_count(), GUARD_SD,
                  GUARD_RUN])
    done = replay(X[1:], np.arange(3), np.isfinite(X[1:]).any(axis=1), fast.mean_.copy(),
                   fast.cov_.copy(), fast.counts_.copy(), fast.refused_.copy(), np.array([1.0]),
                   p, t2, dof, least, best, share)
    assert done == n
    named = 0
    for r, row in enumerate(X[1:]):
        x = {k: float(v) for k, v in zip(names, row, strict=True) if np.isfinite(v)}
        shares = loop.explain_one(x) if x else {}
        if best[r] < 0:
            assert not any(shares.values()), r
        else:
            named += 1
            assert names[best[r]] == max(shares, key=shares.__getitem__), r
            assert share[r] == pytest.approx(max(shares.values()), rel=1e-12, abs=0), r
        loop.learn_one(x)
    assert named > n / 2


#: A device whose temp sent a 1e150 sentinel twice while warming up (finite, so learned):
#: temp's variance is then about 1e299, its covariance with mode a rounding residue (1e133,
#: correlation 3e-17) larger than mode's own variance.
_GLITCHED = [(2, 0.49, -0.15), (1, 0.46, 1.7), (1, -0.3, 0.85), (1, 0.97, 0.28),
             (0, -2.15, 1e150), (2, -1.55, -0.46), (0, -0.4, -0.61), (0, 0.09, -0.59),
             (2, -0.72, 1e150)]


@pytest.mark.parametrize("x, culprit", [
    ({"mode": 2.0, "temp": -0.35}, "mode"),
    ({"mode": 0.0, "flow": 3.0, "temp": 0.0}, "flow"),
])
def test_score_one_beside_a_huge_variance_is_the_compiled_score(x, culprit):
    """Check score_one and explain_one, after a metric learned a reading of 1e150, give the
    T² of the reading (solved in correlation units) and name the metric that moved, as the
    compiled score_explain_many does: solved on the raw covariance (variances 1 and 1e299)
    score_one scored the first reading 0.053 for 0.025 (T² 4.2 for 1.8), and explain_one
    blamed mode (0.59) for flow's move of 3."""
    names = ["mode", "flow", "temp"]
    params = {"alpha": 0.1, "shrinkage": 0.5, "warmup": 2}
    det = Mahalanobis(**params)
    for row in _GLITCHED:
        det.learn_one(dict(zip(names, map(float, row), strict=True)))
    used = det._used(x)
    s = det.shrunk_covariance()[np.ix_(used, used)]
    sd = np.sqrt(np.diag(s))
    y = (det._vector(x, grow=False) - det.mean_)[used] / sd
    t2 = float(y @ np.linalg.solve(s / np.outer(sd, sd), y))
    want = det._tail_one(t2, float(used.sum()), float(det.counts_[used].min()))
    assert det.score_one(x) == pytest.approx(want, rel=1e-9)
    shares = det.explain_one(x)
    assert max(shares, key=shares.__getitem__) == culprit, shares
    X = np.array([*_GLITCHED, [x.get(k, np.nan) for k in names]], dtype=float)
    scores, top = Mahalanobis(**params).score_explain_many(X, names)
    assert scores[-1] == pytest.approx(want, rel=1e-9)
    assert top[-1] == culprit
