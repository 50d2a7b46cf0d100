"""Hunt s38b: Mahalanobis attribution of a reading near the float limit, and alpha = 1."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect import Detector, Mahalanobis
from edgewise.detect.mahalanobis import unit_deviation
from edgewise.errors import InvalidParameterError
from edgewise.explain.linear import conditional_shares

NAMES = ["x", "y", "z"]
#: sentinel-size readings telemetry accepts (some devices send 1.797e308 for no data)
HUGE = [1e306, 1e307, 1e308, -1e308, 1.7e308, 1.797e308]


def _pair() -> np.ndarray:
    """200 rows: y follows 2x closely, z apart."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal(200)
    return np.c_[a, 2 * a + 0.1 * rng.standard_normal(200), rng.standard_normal(200)]


@pytest.fixture(scope="module")
def fitted() -> Mahalanobis:
    det = Mahalanobis(warmup=10)
    det.score_many(_pair()[:199], NAMES)
    return det


def _reading(k: str, big: float) -> dict[str, float]:
    r = {"x": 0.1, "y": 0.2, "z": -0.3}
    r[k] = big
    return r


def test_alpha_one_is_refused() -> None:
    """alpha = 1 keeps the covariance at 0 (each update forgets all but the newest reading),
    so every reading alarmed; it is refused, naming the parameter, value and range."""
    with pytest.raises(InvalidParameterError, match=r"'alpha'.*\(0, 1\).*Got 1\.0"):
        Mahalanobis(alpha=1.0)
    Mahalanobis(alpha=0.999)  # just below 1 is still a detector


def test_conditional_shares_blame_the_sensor_at_a_sentinel() -> None:
    """M d overflowed first in a correlated partner's entry (its precision coefficient is
    larger), and 'an infinite term takes the blame' named the partner: y at 1e306 gave
    x share 1. The shares of a deviation do not depend on its size."""
    cov = np.array([[1.0, 1.998, 0.0], [1.998, 4.0, 0.0], [0.0, 0.0, 1.0]])
    prec = np.linalg.inv(cov)
    want = conditional_shares([0.0, 1.0, 0.0], np.zeros(3), prec, names=NAMES)
    assert max(want, key=want.get) == "y"
    for big in HUGE:
        got = conditional_shares([0.0, big, 0.0], np.zeros(3), prec, names=NAMES)
        assert got == pytest.approx(want, abs=1e-9), big


def test_explain_one_names_the_sensor_at_a_sentinel(fitted: Mahalanobis) -> None:
    """explain_one solved S⁻¹ d on the raw deviation: y at 1e307 gave {'x': 1.0}, x or y
    at 1e308 split 0.5/0.5, z at 1.7e308 blamed y. Its shares now equal those of the same
    reading at 1e300 (where nothing overflows); t2_shares puts the T² on the sensor too."""
    for k in NAMES:
        want = fitted.explain_one(_reading(k, 1e300))
        assert max(want, key=want.get) == k
        for big in (1e307, 1e308, 1.7e308, 1.797e308):
            r = _reading(k, big)
            got = fitted.explain_one(r)
            assert got == pytest.approx(want, abs=1e-9), (k, big)
            t2 = fitted.t2_shares(r)
            assert t2[k] == pytest.approx(1.0), (k, big, t2)
            assert fitted.score_one(r) == 1.0


def test_score_explain_many_compiled_and_loop_agree_at_a_sentinel() -> None:
    """The compiled replay and the loop named different sensors for a row near 1e308 (x at
    1e308: compiled 'y', loop 'x'; y at 1e307: both 'x'); both now name the sensor."""
    X = _pair()
    for j, k in enumerate(NAMES):
        for big in (1e307, -1e308, 1.7e308):
            Y = X.copy()
            Y[-1, j] = big
            s1, t1 = Mahalanobis(warmup=10).score_explain_many(Y, NAMES)
            s2, t2 = Detector.score_explain_many(Mahalanobis(warmup=10), Y, NAMES)
            assert (t1[-1], t2[-1]) == (k, k), (k, big)
            assert s1[-1] == s2[-1] == 1.0


def test_replay_kernel_itself_scales_the_sentinel_row(fitted: Mahalanobis) -> None:
    """The row at 1e307 is done by the compiled kernel (not handed to the loop), and its
    share matches explain_one's."""
    import copy

    det = copy.deepcopy(fitted)
    row = np.array([[0.1, 1e307, -0.3]])
    scores, top = np.zeros(1), [""]
    done = det._compiled(row, np.arange(3, dtype=np.int64), np.array([True]), scores, top, 0)
    assert done == 1 and top == ["y"] and scores[0] == 1.0


def test_unit_deviation_is_exact_and_ordinary_shares_unchanged() -> None:
    """The rescale is by a power of two, so it changes no rounding: shares of a deviation
    and of the same deviation times 2**600 are bit-identical (a guard, passes on old too)."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 4))
    prec = np.linalg.inv(a @ a.T + np.eye(4))
    d = rng.standard_normal(4)
    assert conditional_shares(d * 2.0**600, np.zeros(4), prec) == conditional_shares(
        d, np.zeros(4), prec)
    u = unit_deviation(d * 2.0**600)
    assert np.abs(u).max() < 1.0 <= 2 * np.abs(u).max()
    assert u.tolist() == unit_deviation(d).tolist()
    assert unit_deviation(np.array([np.inf, 1.0, -np.inf])).tolist() == [1.0, 0.0, -1.0]
    assert np.isnan(unit_deviation(np.array([np.nan, 1e308]))).any()
    assert unit_deviation(np.zeros(2)).tolist() == [0.0, 0.0]
