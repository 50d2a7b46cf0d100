"""The gateway's multivariate baseline keeps the Detector contract and catches broken relations."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect.base import Detector
from edgewise.errors import InvalidParameterError
from edgewise.gateway.multivariate import EWMahalanobis


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.normal(100, 5, n)
    return np.column_stack([q, 0.3 * q + rng.normal(0, 0.2, n), rng.normal(50, 0.5, n)])


def test_scores_in_unit_interval_and_score_many_equals_the_loop() -> None:
    X = _rows(400)
    X[300] = [100, 60, 50]  # current far off its relation to flow
    det = EWMahalanobis()
    many = det.score_many(X, columns=["flow", "current", "temp"])
    loop = EWMahalanobis()
    ref = []
    for row in X:
        x = dict(zip(["flow", "current", "temp"], row.tolist(), strict=True))
        ref.append(loop.score_one(x))
        loop.learn_one(x)
    np.testing.assert_allclose(many, ref)
    assert ((many >= 0) & (many <= 1)).all()
    assert many[300] > 0.9
    assert (many[60:300] > 0.9).mean() < 0.01  # few false alarms on normal data


def test_relation_break_is_caught_although_each_value_is_in_range() -> None:
    det = EWMahalanobis()
    for row in _rows(500):
        det.learn_one({"flow": row[0], "current": row[1], "temp": row[2]})
    normal = {"flow": 105.0, "current": 31.5, "temp": 50.0}
    broken = {"flow": 105.0, "current": 28.5, "temp": 50.0}  # within +-2 sd of current alone
    assert det.score_one(normal) < 0.1
    assert det.score_one(broken) > 0.9
    drivers = det.explain_one(broken)
    assert max(drivers, key=drivers.get) in ("current", "flow")
    assert sum(drivers.values()) == pytest.approx(1.0)


def test_missing_metrics_state_roundtrip_clone_and_params() -> None:
    det = EWMahalanobis(warmup=10)
    for row in _rows(100):
        det.learn_one({"flow": row[0], "current": row[1], "temp": row[2]})
    assert 0.0 <= det.score_one({"flow": 100.0}) <= 1.0  # others imputed at their mean
    assert det.score_one({"unknown": 1.0}) == 0.0
    copy = Detector.loads(det.dumps())
    x = {"flow": 130.0, "current": 20.0, "temp": 55.0}
    assert copy.score_one(x) == det.score_one(x)
    fresh = det.clone()
    assert fresh.score_one(x) == 0.0 and fresh.warmup == 10
    with pytest.raises(InvalidParameterError, match="alpha"):
        EWMahalanobis(alpha=1.5)
