"""Mahalanobis learns only what was read, per-metric weights, late metrics left out until warm."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from edgewise.detect.mahalanobis import (
    Mahalanobis,
    effective_count,
    needed_count,
    shrink_covariance,
    t2_tail,
)


def _old_scores(rows, alpha=0.005, shrinkage=0.01, warmup=50, digits=10.0):
    """The formulas before per-metric counts (full rows only), copied: score, then learn."""
    n, mean, cov, out = 0, None, None, []
    for z in rows:
        if n >= warmup:
            dz = z - mean
            t2 = max(float(dz @ np.linalg.solve(shrink_covariance(cov, mean, shrinkage), dz)), 0)
            # the predictive tail with the effective count (every metric read n times)
            p = float(t2_tail(t2, len(dz), effective_count(n, alpha)))
            ok = effective_count(n, alpha) >= needed_count(len(dz), alpha)
            out.append(min(max(-math.log10(p + 1e-300) / digits, 0.0), 1.0) + 0.0 if ok else 0.0)
        else:
            out.append(0.0)
        if mean is None:
            mean, cov = z.copy(), np.zeros((len(z), len(z)))
        n += 1
        a = max(alpha, 1.0 / n)
        d = z - mean
        mean, cov = mean + a * d, (1.0 - a) * (cov + a * np.outer(d, d))
    return np.array(out)


def _skab_like(n, seed):
    rng = np.random.default_rng(seed)
    load = np.sin(np.arange(n) / 50.0) + 0.3 * rng.standard_normal(n)
    X = np.c_[5 + load + 0.2 * rng.standard_normal(n), 30 + 3 * load + 0.6 * rng.standard_normal(n),
              60 + 2 * load + 0.4 * rng.standard_normal(n), 1.0 + 0.01 * rng.standard_normal(n)]
    X[900:920, 1] += 4.0  # a fault, so some scores are high
    return X


def test_full_rows_score_as_the_old_formulas():
    """Check that with every metric in every row the scores equal the old ones to rounding.

    Not bit for bit: under numpy 2.4.6 the two paths differ in the last bit of 197 of 1,200
    scores (2.8e-17 at most); the formulas are the same, the rounding order inside a
    library call is not ours to pin."""
    X = _skab_like(1200, 4)
    names = ["vib", "current", "temp", "pressure"]
    det, new = Mahalanobis(), []
    for row in X:
        x = dict(zip(names, row, strict=True))
        new.append(det.score_one(x))
        det.learn_one(x)
    old = _old_scores(X)
    np.testing.assert_allclose(np.array(new), old, rtol=1e-12, atol=1e-15)
    assert old.max() > 0.3


def _mixed_rate(n, every, seed=0):
    rng = np.random.default_rng(seed)
    for t in range(n):
        load = rng.normal()
        row = {"vib": load + 0.3 * rng.normal(), "current": load + 0.3 * rng.normal()}
        if t % every == 0:
            row["temp"] = load + 0.3 * rng.normal()
        yield t, row


def test_a_metric_read_every_10th_row_keeps_its_variance_and_raises_no_alarm():
    """Check that temp sent every 10th row keeps its variance (the old update shrank it to
    0.1 of the true 1.09 on the rows it missed) and its normal noise raises no alarm."""
    det, alarms = Mahalanobis(), 0
    for t, row in _mixed_rate(5000, 10):
        if t > 2000:
            alarms += det.score_one(row) >= 0.9
        det.learn_one(row)
    assert 0.7 < det.cov_[2, 2] < 1.5, det.cov_[2, 2]
    assert det.counts_.tolist() == [5000.0, 5000.0, 500.0]
    assert alarms == 0
    assert np.all(np.linalg.eigvalsh(det.cov_) > 0)  # still a covariance


def test_a_metric_added_late_is_left_out_until_warm_and_raises_no_alarm():
    """Check that a sensor added after warm-up (temp, at row 600) scores nothing and gets no
    share until it has `warmup` readings, and raises no alarm after (it alarmed at its 2nd)."""
    rng = np.random.default_rng(2)
    det, hits, shares = Mahalanobis(), [], []
    for i in range(1000):
        load = np.sin(i / 300.0) + 0.3 * rng.normal()
        row = {"vib": 5 + load + 0.2 * rng.normal(), "current": 30 + 3 * load + 0.6 * rng.normal()}
        if i >= 600:
            row["temp"] = 60 + 2 * load + 0.4 * rng.normal()
            if det.score_one(row) >= 0.9:
                hits.append(i - 600)
            if i < 600 + det.warmup:
                shares.append(det.explain_one(row).get("temp", 0.0))
        det.learn_one(row)
    assert hits == []
    assert shares == [0.0] * det.warmup
    assert det.counts_.tolist() == [1000.0, 1000.0, 400.0]


def test_a_pickle_saved_before_counts_loads_with_every_count_n():
    """Check that a detector pickled before per-metric counts loads, its counts all n_."""
    det = Mahalanobis(warmup=5)
    for _t, row in _mixed_rate(50, 1):
        det.learn_one(row)
    state = dict(det.__dict__)
    del state["counts_"]
    old = Mahalanobis.__new__(Mahalanobis)
    old.__setstate__(state)
    assert old.counts_.tolist() == [50.0, 50.0, 50.0]
    back = pickle.loads(pickle.dumps(old))
    x = {"vib": 1.0, "current": 1.2, "temp": 0.9}
    assert back.score_one(x) == det.score_one(x)


# -- a metric missing from a reading is left out of its score, not imputed ------------------

PUMP = ["flow", "pressure", "current", "speed"]


def pump_rows(n: int, seed: int, p_miss: float = 0.2) -> np.ndarray:
    """A pump's flow (m3/h), pressure (bar), current (A) and speed (rpm), all following one
    load, with one metric, at random, missing (NaN) in about ``p_miss`` of the rows."""
    rng = np.random.default_rng(seed)
    load = np.sin(np.arange(n) / 200.0) + 0.5 * rng.standard_normal(n)
    level, gain, noise = [50.0, 3.0, 12.0, 1450.0], [10.0, 0.4, 2.0, 40.0], [1.0, 0.05, 0.3, 5.0]
    X = level + np.outer(load, gain) + noise * rng.standard_normal((n, 4))
    rows = np.flatnonzero(rng.random(n) < p_miss)
    X[rows, rng.integers(0, X.shape[1], len(rows))] = np.nan
    return X


def _reading(row: np.ndarray, names: list[str] = PUMP) -> dict[str, float]:
    return {k: float(v) for k, v in zip(names, row, strict=True) if np.isfinite(v)}


def test_a_metric_missing_in_a_fifth_of_rows_raises_no_false_alarm():
    """Check that normal pump readings, each fifth missing one metric, raise no alarm (it was
    imputed at its mean, so its correlated partners looked broken: 9 and 10 alarms in these
    two streams), while a broken relationship among the metrics read is still caught."""
    for seed in range(2):
        det, alarms = Mahalanobis(), 0
        for row in pump_rows(3000, seed):
            alarms += det.score_one(_reading(row)) >= 0.9
            det.learn_one(_reading(row))
        assert alarms == 0, (seed, alarms)
        normal = {"flow": 50.0, "pressure": 3.0, "current": 12.0, "speed": 1450.0}
        broken = {**normal, "pressure": 4.0}  # +1 bar while flow, current and speed are flat
        assert det.score_one(normal) < 0.5
        for gone in (None, "flow", "current"):
            assert det.score_one({k: v for k, v in broken.items() if k != gone}) >= 0.9, gone


def test_a_reading_missing_a_metric_scores_as_if_the_metric_never_existed():
    """Check that a reading missing a metric (absent, NaN or inf) scores, and is explained,
    as by a detector that never had it (the same rows, that metric dropped): the marginal T²
    of the rest with one degree of freedom per metric read; a reading of none scores 0."""
    X = pump_rows(1500, 3, p_miss=0.0)
    det = Mahalanobis()
    for row in X:
        det.learn_one(_reading(row))
    for gone in range(len(PUMP)):
        rest = [m for m in PUMP if m != PUMP[gone]]
        det3 = Mahalanobis()
        for row in np.delete(X, gone, axis=1):
            det3.learn_one(_reading(row, rest))
        for probe in (X[-1], X[-1] + [5.0, 0.0, 0.0, 0.0], X[-1] + [0.0, 0.5, 0.0, 0.0]):
            want = det3.score_one(_reading(np.delete(probe, gone), rest))
            for hole in (np.nan, np.inf, None):
                x = _reading(probe)
                if hole is None:
                    del x[PUMP[gone]]
                else:
                    x[PUMP[gone]] = hole
                assert math.isclose(det.score_one(x), want, rel_tol=1e-9, abs_tol=1e-12)
                shares = det.explain_one(x)
                assert shares[PUMP[gone]] == 0.0
                assert [shares[m] for m in rest] == pytest.approx(
                    list(det3.explain_one(_reading(np.delete(probe, gone), rest)).values()),
                    rel=1e-9, abs=1e-12)
    assert det.score_one({}) == det.score_one({m: math.nan for m in PUMP}) == 0.0
    assert det.score_one({"flow": math.inf, "vibration": 9.0}) == 0.0  # vibration: unknown
