"""The step detector of the window ensemble (``_Diff``) scores a history at once, through
EWZScore's compiled loop, with exactly the scores of its reading-by-reading loop (with
it, ``windows_from_series`` took 0.137 s a 3000 x 4 history, now 0.053 s; the active
bench's 12-pump fleet 0.8-1.1 s, now 0.24-0.37 s)."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect.base import Detector
from edgewise.detect.zscore import EWZScore
from edgewise.label.windows import _Diff, default_ensemble, windows_from_series


def _history(n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(4)
    x = 20 + rng.normal(0, 0.5, n) + np.repeat(rng.normal(0, 3, n // 100), 100)[:n]
    x[700:705] += 8
    x[[10, 11, 300, 1500]] = np.nan  # missing: no step into or out of them
    x[[900, 2500]] = [np.inf, -np.inf]
    x[1200:1203] = [1e308, -1e308, 1e308]  # steps of inf: missing to EWZScore
    x[1800] = 1e39  # beyond float32
    return x


def _loop(det: _Diff, x: np.ndarray) -> np.ndarray:
    return Detector.score_many(det, x[:, None])


@pytest.mark.parametrize("make", [lambda: _Diff(), lambda: _Diff(EWZScore(alpha=0.2, warmup=3))])
def test_the_steps_scored_at_once_are_the_loops_scores(make) -> None:
    x = _history()
    fast, slow = make(), make()
    got = np.r_[fast.score_many(x[:1000, None]), fast.score_many(x[1000:, None])]
    want = np.r_[_loop(slow, x[:1000]), _loop(slow, x[1000:])]
    assert np.array_equal(got, want), np.flatnonzero(got != want)[:10]
    assert (got > 0.9).any()  # it does alarm on the jumps
    assert fast._last == slow._last and vars(fast.detector) == vars(slow.detector)
    # a history ending on a missing reading leaves nothing to step from, as the loop does
    fast.score_many(np.array([[1.0], [np.nan]]))
    _loop(slow, np.array([1.0, np.nan]))
    assert fast._last == slow._last == {}
    assert fast.score_many(np.empty((0, 1))).shape == (0,)


def test_windows_from_series_steps_without_the_per_reading_loop(monkeypatch) -> None:
    """Check windows_from_series scores the steps without calling EWZScore.score_one once
    a reading (before: 3 calls a reading of the history), and gives the windows the loop
    gives."""
    x = _history()
    ts = np.arange(len(x)) * 10**9
    slow = [lambda: EWZScore(alpha=0.02), lambda: EWZScore(alpha=0.2, warmup=10),
            lambda: _Looped(EWZScore(alpha=0.02))]
    want = windows_from_series(x, ts, "p", length=50, ensemble=slow)

    def refused(self, x):  # type: ignore[no-untyped-def]
        raise AssertionError("EWZScore.score_one called once a reading")

    monkeypatch.setattr(EWZScore, "score_one", refused)
    got = windows_from_series(x, ts, "p", length=50, ensemble=default_ensemble())
    assert np.array_equal(got.scores, want.scores)
    assert np.array_equal(got.features, want.features, equal_nan=True)


class _Looped(_Diff):
    """The step detector as it was: the plain score-then-learn loop."""

    def score_many(self, X, columns=None):  # type: ignore[no-untyped-def]
        return Detector.score_many(self, X, columns)
