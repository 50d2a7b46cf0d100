"""C and ONNX of Mahalanobis match Python on streams with missing and late metrics."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect.mahalanobis import Mahalanobis, t2_tail
from edgewise.edge import export
from edgewise.edge.export_detectors import export_mahalanobis_c, export_mahalanobis_onnx
from tests.detect.test_mahalanobis_counts import PUMP, pump_rows

NAMES = ["vib", "current", "temp"]


def _rows(n=1500, seed=0, sparse=True):
    """vib and current every row; temp every 10th row to 600, absent 600-900 (offline), then
    every row (``sparse``; else every row); a fault on current at 1300-1310."""
    rng = np.random.default_rng(seed)
    load = np.sin(np.arange(n) / 100.0) + 0.3 * rng.standard_normal(n)
    X = np.c_[5 + load + 0.2 * rng.standard_normal(n), 30 + 3 * load + 0.6 * rng.standard_normal(n),
              60 + 2 * load + 0.4 * rng.standard_normal(n)]
    if sparse:
        X[np.arange(n) % 10 != 0, 2] = np.nan
        X[600:900, 2] = np.nan
    X[1300:1310, 1] += 15.0
    return X


def _py(det, X, names=NAMES):
    out = []
    for row in X:
        x = {k: float(v) for k, v in zip(names, row, strict=True) if np.isfinite(v)}
        out.append(det.score_one(x))
        det.learn_one(x)
    return np.array(out)


def _score(t2, dof, n_eff, digits):
    """The score from the ONNX outputs, as their docstring says: 0 where no metric counts
    or there are too few readings for them (``n_eff`` 0)."""
    on = (dof > 0) & (n_eff > 0)
    p = t2_tail(np.maximum(t2, 0), np.maximum(dof, 1), np.where(on, n_eff, 1e9))
    return np.where(on, np.clip(-np.log10(p + 1e-300) / digits, 0, 1), 0.0)


def test_c_matches_python_with_missing_and_late_metrics():
    """Check that the C scores a stream with a sparse, offline metric and with a metric that
    appears late (from row 400) as Python does, fresh and from a learned state."""
    X = _rows()
    py = _py(Mahalanobis(), X)
    c = export_mahalanobis_c(Mahalanobis(), name="maha_sparse", metrics=NAMES)
    assert np.abs(c.score_many(X) - py).max() < 1e-9 and (py >= 0.9).sum() > 0
    late = _rows(sparse=False)
    late[:400, 2] = np.nan
    py_late = _py(Mahalanobis(), late)
    c_late = export_mahalanobis_c(Mahalanobis(), name="maha_late", metrics=NAMES)
    assert np.abs(c_late.score_many(late) - py_late).max() < 1e-9
    det = Mahalanobis()
    _py(det, late[:420])  # temp has 20 readings: not warm in the carried state
    assert det.counts_.tolist() == [420.0, 420.0, 20.0]
    c2 = export(det, format="c", name="maha_late_cal")
    assert np.abs(c2.score_many(late[420:]) - py_late[420:]).max() < 1e-9


def test_onnx_masks_a_metric_not_yet_warm():
    """Check that the frozen ONNX T^2 of a snapshot whose late metric is not warm leaves it
    out (as Python), and the score with one degree per warm metric equals Python's."""
    late = _rows(sparse=False)
    late[:400, 2] = np.nan
    det = Mahalanobis()
    _py(det, late[:420])
    g = export(det, format="onnx", name="maha_late")
    rest = late[420:600]
    t2, dof, n_eff = g.run({"x": rest})
    assert det._warm().tolist() == [True, True, False] and (dof == 2).all()
    py = np.array([det.score_one({m: float(v) for m, v in zip(NAMES, r, strict=True)
                                  if np.isfinite(v)}) for r in rest])
    assert np.abs(_score(t2, dof, n_eff, det.tail_digits) - py).max() < 1e-9
    far = rest.copy()
    far[:, 2] = 1e6  # temp far off: not warm, so it adds nothing
    assert np.allclose(g.run({"x": far})[0], t2, rtol=1e-12, atol=0)


def _with_holes(X, seed):
    """``X`` with rows missing 0, 1, 2, ... metrics (NaN, +inf or -inf), in turn."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    for i in range(len(X)):
        gone = rng.choice(X.shape[1], size=i % (X.shape[1] + 1), replace=False)
        X[i, gone] = rng.choice([np.nan, np.inf, -np.inf], size=len(gone))
    return X


def test_c_leaves_a_missing_metric_out_as_python():
    """Check that the C scores pump rows missing a metric (a fifth of them; some rows miss
    several or all, as NaN or +-inf) as Python, fresh and from a learned state, with no
    alarm on normal rows (it imputed the metric at its mean: 9 false alarms) and the
    readings whose pressure broke from flow, current and speed caught."""
    X = pump_rows(3000, 5)
    X[2000:2200] = _with_holes(X[2000:2200], 5)
    broken = np.arange(2300, 3000, 100)
    broken = broken[np.isfinite(X[broken, 1])]  # pressure read
    X[broken, 1] += 1.5  # +1.5 bar while the others are flat
    X[broken[::2], 0] = np.nan  # half of them without flow
    py = _py(Mahalanobis(), X, PUMP)
    c = export_mahalanobis_c(Mahalanobis(), name="maha_holes", metrics=PUMP)
    out = c.score_many(X)
    assert np.abs(out - py).max() < 1e-9
    alarms = np.flatnonzero(out >= 0.9)
    assert np.array_equal(alarms, broken), alarms
    det = Mahalanobis()
    _py(det, X[:2000], PUMP)
    c2 = export(det, format="c", name="maha_holes_cal")
    assert np.abs(c2.score_many(X[2000:]) - py[2000:]).max() < 1e-9


@pytest.mark.parametrize(("d", "cold"), [(3, 0), (5, 1), (8, 2)])
def test_onnx_scores_each_row_on_the_metrics_it_holds(d, cold):
    """Check that the ONNX ``t2`` and ``dof`` of rows missing 0, 1, several or all metrics
    (NaN or +-inf) give Python's marginal T² (to 1e-9 relative), its metric count and its
    score, for a random detector in mixed units, ``cold`` of its metrics not yet warm (the
    graph had one output, from a frozen precision that imputed a missing metric)."""
    rng = np.random.default_rng(d)
    names = [f"m{i}" for i in range(d)]
    mix = rng.normal(size=(d, d)) * (rng.random((d, d)) < 0.6)
    scale, level = 10.0 ** rng.uniform(-3, 4, d), rng.normal(size=d) * 1e3

    def rows(n):
        return (rng.normal(size=(n, d)) @ mix.T + 0.3 * rng.normal(size=(n, d))) * scale + level

    det = Mahalanobis(warmup=20)
    train = rows(300)
    train[:-10, d - cold:] = np.nan  # the last ``cold`` metrics: 10 readings, not warm
    _py(det, train, names)
    assert int((~det._warm()).sum()) == cold
    X = _with_holes(rows(4 * (d + 1)), d)
    X[::3] += 10.0 * scale * rng.choice([-1.0, 1.0], size=X[::3].shape)  # some far off
    t2, dof, n_eff = export_mahalanobis_onnx(det).run({"x": X})
    want, used = [], []
    for r in X:
        x = {k: float(v) for k, v in zip(names, r, strict=True)}
        dz, w = det._solve(det._vector(x, grow=False), used=det._used(x))
        want.append(float(dz @ w))
        used.append(int(det._used(x).sum()))
    want = np.array(want)
    assert np.max(np.abs(t2 - want) / np.maximum(1.0, np.abs(want))) < 1e-9
    assert dof.tolist() == used and min(used) == 0 and max(used) == d - cold
    py = np.array([det.score_one(dict(zip(names, r, strict=True))) for r in X])
    assert np.abs(_score(t2, dof, n_eff, det.tail_digits) - py).max() < 1e-9 and py.max() == 1.0
