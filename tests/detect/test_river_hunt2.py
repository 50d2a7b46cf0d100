"""River's HalfSpaceTrees behind Edgewise's calibrated scale: its raw score (0.97-0.98 for
usual readings) flagged 500 of 800 readings of a steady stream at the shared threshold."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect import DEFAULT_THRESHOLD, Detector, RiverHalfSpaceTrees, get_detector


def sawtooth(n: int = 800) -> np.ndarray:
    """The bug hunt's stream: 20.0-20.6 in steps, one spike of 60 at reading 600."""
    x = 20.0 + 0.05 * (np.arange(n) * 2 % 13)
    x[600] = 60.0
    return x


def test_usual_readings_score_well_below_the_threshold() -> None:
    """Check that a steady stream raises no alarm at 0.9 and usually scores about 0.2 (a usual
    mass; 500 of 800 readings scored 0.97-0.98 and were flagged), on uniform and on
    Gaussian noise."""
    scores = get_detector("river-hst").score_many(sawtooth())
    assert np.flatnonzero(scores >= DEFAULT_THRESHOLD).tolist() == [600]  # the spike of 60
    assert np.median(scores[250:]) < 0.3
    noise = 20 + np.random.default_rng(1).normal(0, 0.2, 3000)
    scores = RiverHalfSpaceTrees().score_many(noise)
    assert np.median(scores[250:]) < 0.3
    assert (scores >= DEFAULT_THRESHOLD).mean() < 0.05  # HST's cells in the tails are empty


def test_a_reading_where_the_window_holds_nothing_scores_high() -> None:
    """Check that a reading the reference window holds nothing near (21.5 in 20 +- 0.2
    noise, 7 deviations out) scores at or above 0.9, while the median reading scores low."""
    x = 20 + np.random.default_rng(0).normal(0, 0.2, 1500)
    x[1400] = 21.5
    scores = RiverHalfSpaceTrees().score_many(x)
    assert scores[1400] >= DEFAULT_THRESHOLD
    assert np.median(scores[250:1400]) < 0.3


def test_score_many_state_and_clone_keep_the_contract() -> None:
    """Check that score_many equals the score/learn loop, that a detector saved mid-stream
    resumes exactly, and that a clone starts fresh."""
    x = sawtooth()
    whole = RiverHalfSpaceTrees().score_many(x)
    det, loop = RiverHalfSpaceTrees(), []
    for v in x:
        loop.append(det.score_one({"x0": float(v)}))
        det.learn_one({"x0": float(v)})
    np.testing.assert_array_equal(whole, loop)
    first = RiverHalfSpaceTrees()
    head = first.score_many(x[:400])
    resumed = Detector.loads(first.dumps())
    np.testing.assert_array_equal(np.r_[head, resumed.score_many(x[400:])], whole)
    fresh = first.clone()
    assert fresh.n_ == 0 and fresh.get_params() == first.get_params()
    np.testing.assert_array_equal(fresh.score_many(x), whole)


@pytest.mark.parametrize("reading", [{}, {"x0": float("nan")}])
def test_an_empty_reading_scores_zero_and_is_not_learned(reading: dict[str, float]) -> None:
    """Check that a reading with no finite value scores 0 and leaves the state alone."""
    det = RiverHalfSpaceTrees()
    det.score_many(sawtooth()[:300])
    n = det.n_
    assert det.score_one(reading) == 0.0
    det.learn_one(reading)
    assert det.n_ == n
