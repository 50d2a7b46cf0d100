"""Tests of per-metric alarm levels (``per-metric-residual``): levels, faults, contract bits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgewise.detect import (
    DEFAULT_THRESHOLD,
    Detector,
    DriftResidual,
    PerMetricResidual,
    get_detector,
)
from edgewise.errors import InvalidParameterError

COLS = ["flow", "temp"]


def plant(seed: int = 0, shift: float = 3.0, n: int = 1000) -> np.ndarray:
    """Flow is white noise; temp is quiet but bumps up for 40 readings in the span and again
    after it (normal behaviour); the flow drops by ``shift`` sd over rows 600-750 (a fault)."""
    rng = np.random.default_rng(seed)
    flow = 30 + rng.standard_normal(n)
    temp = 60 + 0.1 * rng.standard_normal(n)
    temp[100:140] += 1.0
    temp[450:490] += 1.0
    flow[600:750] -= shift
    return np.c_[flow, temp]


def test_each_metric_gets_its_own_level_from_the_span():
    """Check a metric that moved within the span gets a higher level than a steady one
    (with sample deviations: the long-run scale would widen temp's instead)."""
    det = PerMetricResidual(train_rows=300, scale="sample")
    det.score_many(plant()[:300], columns=COLS)
    flow, temp = det.levels_[det.metrics_["flow"]], det.levels_[det.metrics_["temp"]]
    assert temp > 2 * flow
    assert det.level_ == 1.0


def test_a_quiet_metrics_fault_is_flagged_more_often_than_with_one_pooled_level():
    """Check the flow's modest drop is flagged more per metric than with a pooled level, and
    the repeat of the span's normal temp bump raises no alarm (levels compared on sample
    deviations, the scale the levels were designed on)."""
    hit = {DriftResidual: [], PerMetricResidual: []}
    for seed in range(5):
        X = plant(seed)
        for cls in hit:
            s = cls(train_rows=300, scale="sample").score_many(X, columns=COLS)
            hit[cls].append((s[600:750] >= DEFAULT_THRESHOLD).mean())
            if cls is PerMetricResidual:
                assert not (s[300:600] >= DEFAULT_THRESHOLD).any()
    assert np.mean(hit[PerMetricResidual]) > np.mean(hit[DriftResidual]) + 0.15


def test_an_outlying_first_reading_does_not_set_the_level():
    """Check the smoothing starts at the span's mean square (1), not at the first reading."""
    X = plant()
    X[0, 0] += 8.0
    det = PerMetricResidual(train_rows=300)
    det.score_many(X[:300], columns=COLS)
    assert det.levels_[det.metrics_["flow"]] < 10.0  # about 100 if started at r0²


def test_explain_names_the_faulty_metric_and_state_round_trips():
    """Check attribution during the fault, and a restored detector continues identically."""
    X = plant(shift=6.0)
    det = PerMetricResidual(train_rows=300)
    det.score_many(X[:650], columns=COLS)
    shares = det.explain_one(dict(zip(COLS, X[650], strict=True)))
    assert max(shares, key=shares.get) == "flow"
    assert sum(shares.values()) == pytest.approx(1.0)
    twin = Detector.loads(det.dumps())
    np.testing.assert_array_equal(
        det.score_many(X[650:], columns=COLS), twin.score_many(X[650:], columns=COLS)
    )


def test_score_many_equals_the_loop_with_missing_values():
    """Check the vectorised path equals score_one + learn_one, NaNs included."""
    X = plant(shift=5.0)
    X[::37, 1] = np.nan
    fast = PerMetricResidual(train_rows=300).score_many(X, columns=COLS)
    det = PerMetricResidual(train_rows=300)
    slow = []
    for row in X:
        x = {c: float(v) for c, v in zip(COLS, row, strict=True) if math.isfinite(v)}
        slow.append(det.score_one(x))
        det.learn_one(x)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    assert (fast[600:750] >= DEFAULT_THRESHOLD).mean() > 0.5


def test_registered_with_its_defaults_and_bad_levels_are_named():
    """Check the registry name, the defaults and the error for an unknown ``levels``."""
    det = get_detector("per-metric-residual", train_rows=10)
    assert isinstance(det, PerMetricResidual)
    assert (det.levels, det.margin, det.cap) == ("per-metric", 2.0, 2.0)
    assert DriftResidual().levels == "pooled"
    with pytest.raises(InvalidParameterError, match="levels"):
        DriftResidual(levels="each")
