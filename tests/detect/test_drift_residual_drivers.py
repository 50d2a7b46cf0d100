"""Tests of the drift-residual family's drivers (``top_column``, ``explain_one``) and of
rows that hold no reading: the driver is ranked on the terms that set the score."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect import DEFAULT_THRESHOLD, Detector, get_detector

FAMILY = ["drift-residual", "per-metric-residual", "long-run-residual"]


def loop(det: Detector, X: np.ndarray, cols: list[str]) -> tuple[np.ndarray, list[str]]:
    """The one-at-a-time path: score_one, explain_one's largest share, learn_one."""
    scores, top = [], []
    for row in X:
        x = {c: float(v) for c, v in zip(cols, row, strict=True) if v == v}
        scores.append(det.score_one(x))
        shares = det.explain_one(x) if x else {}
        top.append(max(shares, key=shares.__getitem__) if any(shares.values()) else "")
        det.learn_one(x)
    return np.array(scores), top


def both_paths(name: str, X: np.ndarray, cols: list[str]) -> tuple[np.ndarray, list[str]]:
    """The compiled scores and drivers, checked equal to the one-at-a-time path's."""
    scores, top = get_detector(name, train_rows=400).score_explain_many(X, cols)
    want_s, want_t = loop(get_detector(name, train_rows=400), X, cols)
    np.testing.assert_array_equal(scores, want_s)
    assert top == want_t
    return scores, top


@pytest.mark.parametrize("name", ["drift-residual", "long-run-residual"])
def test_a_glitch_is_not_blamed_for_a_later_fault_in_another_metric(name):
    """Check one huge glitch in a does not stay the driver for hundreds of rows after its
    alarm ended: the later sustained fault in b is b's (the uncapped smoothed square of
    the glitch named a on all 51 fault rows)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((800, 2))
    X[500, 0] = 1000.0  # one bad reading in a
    X[600:651, 1] += 6.0  # b fails 100 rows later and stays off
    scores, top = both_paths(name, X, ["a", "b"])
    assert top[500] == "a" and scores[500] >= DEFAULT_THRESHOLD
    assert (scores[600:651] >= DEFAULT_THRESHOLD).sum() > 40
    assert set(top[600:651]) == {"b"}, top[600:651]


@pytest.mark.parametrize("name", FAMILY)
def test_a_row_flagged_by_the_spike_bound_names_the_spiking_metric(name):
    """Check a row that alarms only by b's one-reading spike names b, not the noisy a
    that leads the smoothed energy; explain_one's shares are of the spike ratios."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((700, 8))
    cols = list("abcdefgh")
    X[450:, 0] *= 1.7  # a: noisier, leads the smoothed energy, not alarming at row 600
    quiet = get_detector(name, train_rows=400).score_many(X, cols)
    assert quiet[600] < DEFAULT_THRESHOLD
    X[600, 1] = 8.0  # b: one reading past its spike bound
    scores, top = both_paths(name, X, cols)
    assert scores[600] >= DEFAULT_THRESHOLD
    assert top[600] == "b", top[598:602]
    det = get_detector(name, train_rows=400)
    det.score_many(X[:600], cols)
    shares = det.explain_one(dict(zip(cols, map(float, X[600]), strict=True)))
    assert max(shares, key=shares.__getitem__) == "b"
    assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", FAMILY)
def test_a_row_with_no_reading_scores_0_and_changes_nothing(name):
    """Check rows where every metric is empty (a logger's blank rows after a fault)
    score 0 with no driver, in both paths, and leave the state as it was: the rows
    after them score as if the blank rows were never there."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((800, 2))
    X[600:651, 0] += 6.0  # a fault, alarming when it ends
    X[651:656] = np.nan  # then blank rows
    scores, top = both_paths(name, X, ["a", "b"])
    assert scores[650] >= DEFAULT_THRESHOLD
    assert not scores[651:656].any()
    assert top[651:656] == [""] * 5
    keep = np.r_[0:651, 656:800]
    without = get_detector(name, train_rows=400).score_many(X[keep], ["a", "b"])
    np.testing.assert_array_equal(scores[keep], without)
    det = get_detector(name, train_rows=400)
    det.score_many(X[:651], ["a", "b"])
    state = det.dumps()
    assert det.score_one({}) == 0.0
    assert det.score_one({"a": float("nan"), "b": float("inf")}) == 0.0
    assert det.score_one({"unseen": 5.0}) == 0.0  # no reading of a trained metric
    assert det.explain_one({}) == {"a": 0.0, "b": 0.0}
    det.learn_one({})
    det.learn_one({"a": float("nan")})
    assert det.dumps() == state
