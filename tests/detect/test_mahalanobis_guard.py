"""Mahalanobis's guard against absurd readings (GUARD_SD, GUARD_RUN): a finite glitch such as
1e150 (a no-data sentinel, a garbled reading) passed the overflow guard (about 1e154) and was
learned, its metric's variance about 1e297 and the detector blind to it for some 1e5
readings; now a reading of a warm metric more than GUARD_SD deviations off is scored but not
learned, up to GUARD_RUN readings in a row, so a genuine level shift is still learned. The
loop, the compiled replay and the C export agree."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from edgewise.detect.mahalanobis import GUARD_RUN, GUARD_SD, Mahalanobis
from edgewise.edge.export_detectors import export_mahalanobis_c

NAMES = ["flow", "pressure", "temp"]


def _device(n: int, seed: int = 1) -> np.ndarray:
    """Flow, pressure (2 flow plus noise of 0.1) and an independent temp (45 +- 0.5)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    return np.c_[20 + a, 10 + 2 * a + 0.1 * rng.normal(size=n), 45 + 0.5 * rng.normal(size=n)]


def _glitched() -> np.ndarray:
    """A warm device whose temp sent 1e150 twice, then (last row) a break of the temp by 100
    of its deviations."""
    X = _device(900)
    X[400, 2] = X[450, 2] = 1e150
    X[-1, 2] += 50.0
    return X


def _x(row: np.ndarray) -> dict[str, float]:
    """A row as a reading of its first ``len(row)`` metrics."""
    return dict(zip(NAMES[:len(row)], map(float, row), strict=True))


def _loop(det: Mahalanobis, X: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """score_one, explain_one (its top metric) and learn_one of each row, in order."""
    scores, top = [], []
    for row in X:
        x = {k: float(v) for k, v in zip(NAMES, row, strict=True) if math.isfinite(v)}
        scores.append(det.score_one(x))
        shares = det.explain_one(x)
        top.append(max(shares, key=shares.__getitem__) if any(shares.values()) else "")
        det.learn_one(x)
    return np.array(scores), top


def test_two_finite_glitches_do_not_blind_the_detector() -> None:
    """Check two readings of 1e150 (scored 1) are not learned: the temp's variance stays
    that of its noise, and a later break of 100 deviations scores 1, put on the temp. They
    were learned: variance 9e296, the break scored 0.01 and was put on the pressure."""
    X = _glitched()
    det = Mahalanobis()
    scores, top = _loop(det, X[:-1])
    assert scores[400] == scores[450] == 1.0
    assert 0.1 < det.cov_[2, 2] < 0.5, det.cov_[2, 2]
    last, end = _loop(det, X[-1:])
    scores, top = np.r_[scores, last], top + end
    assert scores[-1] == 1.0 and top[-1] == "temp"
    assert (scores[451:-1] >= 0.9).sum() <= 2
    ref, _ = _loop(Mahalanobis(), np.delete(X, [400, 450], axis=0))
    assert np.array_equal(np.delete(scores, [400, 450]), ref)  # as if they had not come


def test_a_glitch_of_the_metric_that_breaks_later() -> None:
    """Check the two-metric case: glitches of 1e150 in the pressure, then a break of the
    pressure by 100 of its deviations from the flow's prediction, scores 1 (it scored 4e-5:
    the pressure's learned variance was 9e296)."""
    X = _device(900)[:, :2]
    X[400, 1] = X[450, 1] = 1e150
    X[-1, 1] += 10.0
    det = Mahalanobis()
    for row in X[:-1]:
        det.learn_one(_x(row))
    assert det.score_one(_x(X[-1])) == 1.0
    assert det.cov_[1, 1] < 10.0


def _shifted(shift: float = 1e6) -> np.ndarray:
    """A warm device whose temp moves for good by ``shift`` (2e6 of its deviations) at row
    600 (a range switched), then (last row) a break of the pressure."""
    X = _device(1600, seed=2)
    X[600:, 2] += shift
    X[-1, 1] += 10.0
    return X


def test_a_level_shift_is_learned_after_guard_run_readings() -> None:
    """Check a genuine level shift far beyond GUARD_SD is left out GUARD_RUN readings in a
    row (the temp's mean and variance as before it, its count of refusals rising), then
    learned as before the guard (mean and count moving), and that the detector settles on
    the new level: quiet on its ordinary readings, alarming at a later pressure break."""
    X = _shifted()
    assert 1e6 / 0.5 > 10 * GUARD_SD  # the temp's shift, in its deviations
    det = Mahalanobis()
    for row in X[:600]:
        det.learn_one(_x(row))
    mean, var, count = det.mean_[2], det.cov_[2, 2], det.counts_[2]
    for i in range(GUARD_RUN):
        det.learn_one(_x(X[600 + i]))
        assert (det.mean_[2], det.cov_[2, 2], det.counts_[2]) == (mean, var, count)
        assert det.refused_.tolist() == [0.0, 0.0, i + 1.0]
    det.learn_one(_x(X[600 + GUARD_RUN]))
    assert det.counts_[2] == count + 1 and det.mean_[2] > mean + 4000.0
    assert det.refused_.tolist() == [0.0, 0.0, 0.0]
    scores, _ = _loop(det, X[601 + GUARD_RUN:])
    assert (scores[400:-1] >= 0.9).sum() <= 2 and scores[-1] == 1.0


def test_the_guard_holds_only_warm_metrics_that_have_varied() -> None:
    """Check a metric constant so far (variance 0: any move is infinitely many deviations
    off) learns its first move, and a metric not warm yet learns anything: the guard judges
    a reading only against a variance it has."""
    det = Mahalanobis(warmup=10)
    for _ in range(100):
        det.learn_one({"a": 5.0, "b": 1.0})
    det.learn_one({"a": 6.0, "b": 1.0})
    assert det.mean_[0] > 5.0 and det.cov_[0, 0] > 0.0 and not det.refused_.any()
    det.learn_one({"a": 6.0, "b": 1.0, "c": 0.0})  # c: a new metric
    det.learn_one({"a": 6.0, "b": 1.0, "c": 1.0})
    det.learn_one({"a": 6.0, "b": 1.0, "c": 1e150})  # not warm: learned as before
    assert det.counts_[2] == 3 and det.mean_[2] > 1e149


def test_a_real_anomaly_nearer_than_the_guard_is_learned_as_before() -> None:
    """Check a spike 5e3 deviations off (as far as the farthest real anomaly of the NAB
    corpus) is learned, as before the guard: the NAB behaviour rests on it."""
    det = Mahalanobis()
    for row in _device(600):
        det.learn_one(_x(row))
    var = det.cov_[2, 2]
    det.learn_one({"flow": 20.0, "pressure": 50.0, "temp": 45.0 + 5e3 * math.sqrt(var)})
    assert det.cov_[2, 2] > 1e4 * var and not det.refused_.any()


@pytest.mark.parametrize("stream", ["glitched", "shifted"])
def test_many_equals_the_loop_with_the_guard(stream: str) -> None:
    """Check score_many and score_explain_many (the compiled replay, with its own copy of
    learn_one's guard) give the loop's scores, culprits and state, with missing values and
    a glitch of 1.7e308 besides; and that the glitched stream's break alarms there too."""
    X = _glitched() if stream == "glitched" else _shifted()
    rng = np.random.default_rng(5)
    X[rng.random(X.shape) < 0.05] = np.nan
    X[-1] = (_glitched() if stream == "glitched" else _shifted())[-1]
    X[700, 0] = 1.7e308
    X[420:423, 1] = -1e120  # a short burst in a partner
    loop = Mahalanobis()
    scores, top = _loop(loop, X)
    many = Mahalanobis()
    fast, fast_top = Mahalanobis().score_explain_many(X, NAMES)
    got = many.score_many(X, NAMES)
    assert np.abs(got - scores).max() < 1e-12
    assert np.abs(fast - scores).max() < 1e-9
    assert fast_top == top
    for k in ("mean_", "cov_", "counts_", "refused_"):
        assert np.array_equal(getattr(many, k), getattr(loop, k)), k
    assert many.n_ == loop.n_
    assert scores[-1] == 1.0


@pytest.mark.parametrize("stream", ["glitched", "shifted"])
def test_c_guards_as_python(stream: str) -> None:
    """Check the C export's learning step leaves out what Python does (it learned the
    glitches and scored the break as the old Python did), from a fresh detector and from
    one exported in the middle of a run of refusals (its refused_ carried over)."""
    X = _glitched() if stream == "glitched" else _shifted()
    py, _ = _loop(Mahalanobis(), X)
    c = export_mahalanobis_c(Mahalanobis(), name=f"maha_guard_{stream}", metrics=NAMES)
    got = c.score_many(X)
    assert np.abs(got - py).max() < 1e-9
    assert got[-1] == 1.0
    cut = 454 if stream == "glitched" else 604
    X[450:454, 2] = 1e150  # glitched: a run of 5; shifted: inside the run of refusals
    det = Mahalanobis()
    _loop(det, X[:cut])
    assert det.refused_[2] > 0
    rest, _ = _loop(pickle.loads(pickle.dumps(det)), X[cut:])
    c = export_mahalanobis_c(det, name=f"maha_guard_mid_{stream}", metrics=NAMES)
    assert np.abs(c.score_many(X[cut:]) - rest).max() < 1e-9


def test_a_pickle_from_before_the_guard_loads_with_no_refusal() -> None:
    """Check a detector pickled before the guard (no refused_) loads and learns."""
    det = Mahalanobis()
    for row in _device(100):
        det.learn_one(_x(row))
    state = det.__dict__.copy()
    del state["refused_"]
    old = Mahalanobis.__new__(Mahalanobis)
    old.__setstate__(state)
    assert old.refused_.tolist() == [0.0, 0.0, 0.0]
    old.learn_one({"flow": 20.0, "pressure": 10.0, "temp": 1e150})
    assert old.refused_.tolist() == [0.0, 0.0, 1.0]
