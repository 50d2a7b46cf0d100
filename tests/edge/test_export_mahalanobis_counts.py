"""C and ONNX of Mahalanobis match Python on streams with missing and late metrics."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaincc

from edgewise.detect.mahalanobis import Mahalanobis
from edgewise.edge import export
from edgewise.edge.export_detectors import export_mahalanobis_c

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


def _py(det, X):
    out = []
    for row in X:
        x = {k: float(v) for k, v in zip(NAMES, row, strict=True) if np.isfinite(v)}
        out.append(det.score_one(x))
        det.learn_one(x)
    return np.array(out)


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
    t2 = g.run({"x": rest})[0]
    k = int(det._warm().sum())
    assert k == 2
    score = np.clip(-np.log10(gammaincc(k / 2, np.maximum(t2, 0) / 2) + 1e-300)
                    / det.tail_digits, 0, 1)
    py = np.array([det.score_one({m: float(v) for m, v in zip(NAMES, r, strict=True)
                                  if np.isfinite(v)}) for r in rest])
    assert np.abs(score - py).max() < 1e-9
    far = rest.copy()
    far[:, 2] = 1e6  # temp far off: not warm, so it adds nothing
    assert np.allclose(g.run({"x": far})[0], t2, rtol=1e-12, atol=0)
