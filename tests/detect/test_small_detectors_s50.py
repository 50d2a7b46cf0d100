"""The small streaming detectors (EWZScore, Threshold, TwoState, RiverDetector,
RiverHalfSpaceTrees, DriftResidual): parameters given as NumPy scalars (read from an array
or a NumPy-typed config) behave as the same Python numbers; ``score_many`` equals the loop
with a metric named twice; a River "model" that is none is refused at once.

NumPy 2 computes ``np.float32 op float`` in float32, so a float32 parameter leaked into
the state: EWZScore's loop went float32 (NaN scores, a loop unlike ``score_many``), and
DriftResidual's energy was cut to float32 between calls. ``np.bool_`` and ``np.int64``
were refused where ``bool`` and ``int`` were taken.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgewise.detect.context_likelihood import ContextLikelihood
from edgewise.detect.drift_residual import DriftResidual
from edgewise.detect.river_adapter import RiverHalfSpaceTrees
from edgewise.detect.threshold import Threshold
from edgewise.detect.zscore import EWZScore


def _loop(det, X: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = []
    for v in X:
        x = {"x": float(v)} if math.isfinite(v) else {}
        out.append(det.score_one(x))
        det.learn_one(x)
    return np.array(out)


def test_ewzscore_float32_params_loop_equals_score_many() -> None:
    """A float32 ``alpha``/``z0``: the loop and ``score_many`` agree and the state stays
    a Python float (it went float32: 999.8064 for 999.8064523...)."""
    x = np.random.default_rng(0).normal(1000.0, 1.0, 300)
    params = {"alpha": np.float32(0.1), "z0": np.float32(1.0), "warmup": np.int64(5)}
    loop_det, many_det = EWZScore(**params), EWZScore(**params)
    np.testing.assert_array_equal(_loop(loop_det, x), many_det.score_many(x))
    assert type(loop_det.mean_) is float and loop_det.mean_ == many_det.mean_
    assert loop_det.var_ == many_det.var_


def test_ewzscore_float32_alpha_scores_a_flat_stream_finite() -> None:
    """A stream of zeros (or of readings below float32's range, 1e-86) scored NaN after the
    warm-up with a float32 ``alpha``: ``0 / 1e-300`` in float32. NaN never alarms."""
    for level in (0.0, 1e-86):
        det = EWZScore(alpha=np.float32(0.1), warmup=5)
        scores = _loop(det, np.full(20, level))
        assert np.all((scores >= 0.0) & (scores <= 1.0)), (level, scores)
        assert det.score_one({"x": 1.0}) > 0.9  # far from a flat stream: flagged


def test_drift_residual_float32_params_split_score_many_equals_one_call() -> None:
    """Float32 ``margin`` and ``smooth`` left the energy and level float32: ``_run`` built
    a float32 state array and cut the energy to float32 at the end of each call, so
    ``score_many`` in two calls differed from one call (and from the loop)."""
    X = np.random.default_rng(1).normal(size=(80, 2))
    params = {"train_rows": 20, "margin": np.float32(1.25), "smooth": np.float32(0.1)}
    whole = DriftResidual(**params).score_many(X, ["a", "b"])
    det = DriftResidual(**params)
    split = np.r_[det.score_many(X[:25], ["a", "b"]), det.score_many(X[25:], ["a", "b"])]
    np.testing.assert_array_equal(split, whole)


def test_threshold_takes_numpy_bool_protect() -> None:
    """``protect=np.bool_(False)`` was refused ("must be an instance of bool. Got
    np.False_"); it is taken as ``False``: a flagged reading is learned."""
    det = Threshold(EWZScore(warmup=5), protect=np.bool_(False))
    assert det.protect is False and det.clone().protect is False
    for v in [20.0, 20.2, 19.9] * 20:
        det.learn_one({"t": v})
    n = det.detector.n_
    assert det.is_anomaly({"t": 35.0})
    det.learn_one({"t": 35.0})
    assert det.detector.n_ == n + 1


def test_river_half_space_trees_takes_numpy_int_seed() -> None:
    """``seed=np.int64(3)`` was refused; it scores as ``seed=3`` (River's ``random.Random``
    takes no NumPy integer, so it is handed on as an int)."""
    x = np.random.default_rng(2).normal(size=60)
    kw = {"n_trees": 3, "height": 3, "window_size": 10}
    det = RiverHalfSpaceTrees(seed=np.int64(3), **kw)
    np.testing.assert_array_equal(
        det.score_many(x), RiverHalfSpaceTrees(seed=3, **kw).score_many(x))
    np.testing.assert_array_equal(
        det.clone().score_many(x), RiverHalfSpaceTrees(seed=3, **kw).score_many(x))


@pytest.mark.parametrize("make", [lambda: EWZScore(warmup=5), ContextLikelihood],
                         ids=["ewzscore", "context-likelihood"])
def test_score_many_equals_loop_with_a_metric_named_twice(make) -> None:
    """Columns ``["a", "b", "a"]``: the loop's reading (:func:`reading`) holds the last
    finite ``a``, but ``score_many`` read the first column (EWZScore: 0.34 apart on this
    stream; ContextLikelihood did not pass its columns on)."""
    from edgewise.detect.base import reading

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 3))  # past ContextLikelihood's warm-up
    X[rng.random(X.shape) < 0.3] = np.nan
    X[2500:2510, 2] = 50.0  # a level the first column never reads
    names = ["a", "b", "a"]
    fast = make().score_many(X, names)
    det, slow = make(), []
    for row in X:
        x = reading(names, row)
        slow.append(det.score_one(x))
        det.learn_one(x)
    np.testing.assert_array_equal(fast, slow)


def test_two_state_float32_params_give_float_scores_and_state() -> None:
    """Float32 ``tail_digits``, ``rate_alpha``, ``sd_min``, ``alpha``: scores came back as
    ``np.float32`` (the contract says float) and the entry rate went float32."""
    from edgewise.detect.two_state import TwoState

    f = np.float32
    det = TwoState(warmup_runs=1, alpha=f(0.05), rate_alpha=f(1e-3), sd_min=f(0.2),
                   tail_digits=f(4.5))
    rng = np.random.default_rng(0)
    x = np.zeros(3000)
    for s in rng.choice(2900, 40, replace=False):
        x[s:s + rng.integers(1, 10)] = 1.0
    x[2950:] = 1.0  # left open: scores above 0
    scores = []
    for v in x:
        scores.append(det.score_one({"door": float(v)}))
        det.learn_one({"door": float(v)})
    assert max(scores) > 0.5
    assert {type(s) for s in scores} == {float}
    assert type(det.rate_) is float and type(det.mu_[0]) is float


def test_river_detector_refuses_what_is_no_river_model_at_construction() -> None:
    """``RiverDetector(anomaly.HalfSpaceTrees)`` (the class), a name or None was taken and
    failed at the first reading (an AttributeError, or a "missing argument" TypeError)."""
    import pytest
    from river import anomaly

    from edgewise.detect.river_adapter import RiverDetector
    from edgewise.errors import InvalidParameterError

    for bad in (anomaly.HalfSpaceTrees, "hst", None):
        with pytest.raises(InvalidParameterError, match="'model' parameter of RiverDetector"):
            RiverDetector(bad)
    det = RiverDetector(anomaly.HalfSpaceTrees(seed=1))
    det.learn_one({"x": 0.5})
    assert 0.0 <= det.score_one({"x": 0.5}) <= 1.0


class _Forgetful(EWZScore):
    """Its ``score_many`` scores from a fresh state every call and keeps nothing learned:
    right on one call to a fresh detector, wrong from the second call on."""

    def score_many(self, X, columns=None):  # type: ignore[no-untyped-def]
        return EWZScore(**self.get_params()).score_many(X, columns)


def test_score_many_contract_check_sees_state_lost_between_calls() -> None:
    """``check_score_many_equals_loop`` made one call on a fresh clone, on clean readings:
    a ``score_many`` that loses the state between calls passed it."""
    import pytest

    from edgewise.detect.checks import check_score_many_equals_loop

    with pytest.raises(AssertionError):
        check_score_many_equals_loop(_Forgetful(warmup=5))
    check_score_many_equals_loop(EWZScore(warmup=5))


def test_threshold_of_zero_is_refused() -> None:
    """Check a threshold of 0 is refused, naming it: every score is at least 0, so every
    reading was an anomaly and, protected, none was ever learned."""
    from edgewise.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="threshold"):
        Threshold(EWZScore(), threshold=0.0)
    assert Threshold(EWZScore(), threshold=1.0).threshold == 1.0
