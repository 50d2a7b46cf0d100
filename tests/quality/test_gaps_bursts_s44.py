"""Quality hunt s44: a device that sends its readings in bursts is judged by its bursts.

A device sending a pair of readings 1 s apart once a minute was judged by the lower median
of its intervals, 1 s: a gap every minute, completeness 0.034 and timeliness 0.50 over an
hour of readings that were all there. Each burst now counts as one reading at the bursts'
cadence (``edgewise.quality.gaps.cadence``); regular senders are judged exactly as before.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.quality.gaps import (
    cadence,
    completeness,
    expected_interval,
    find_gaps,
    intervals,
    timeliness,
    usual_interval,
)
from edgewise.quality.report import metric_issues

S = 10**9
M = 60 * S


def _bursts(n: int, size: int, every: int = M, apart: int = S) -> np.ndarray:
    return np.sort(np.concatenate([np.arange(n) * every + i * apart for i in range(size)]))


@pytest.mark.parametrize("size", [2, 3, 5])
def test_a_whole_hour_of_bursts_is_whole(size: int) -> None:
    t = _bursts(60, size)
    assert cadence(t) == ("bursts", float(M))
    assert expected_interval(t) == M
    assert (completeness(t), timeliness(t), find_gaps(t)) == (1.0, 1.0, [])
    f = metric_issues(t, np.ones(len(t)))["figures"]
    assert (f["completeness"], f["timeliness"], f["gaps"], f["interval_s"]) == (1.0, 1.0, 0, 60.0)


def test_missing_bursts_are_missing_and_a_long_silence_is_a_gap_from_the_burst_before() -> None:
    t = _bursts(60, 2)
    lost = t[(t < 20 * M) | (t >= 26 * M)]  # bursts 20-25 missing: a silence of 7 minutes
    assert completeness(lost) == pytest.approx(54 / 60)
    assert find_gaps(lost) == [(19 * M + S, 26 * M)]  # from the last reading of burst 19
    assert timeliness(lost) < 1.0
    f = metric_issues(lost, np.ones(len(lost)))["figures"]
    assert (f["gaps"], f["interval_s"]) == (1, 60.0)
    assert f["completeness"] == pytest.approx(54 / 60, abs=1e-3)


def test_regular_senders_with_jitter_and_gaps_are_never_taken_for_bursts() -> None:
    """Jitter up to +-50 % of the spacing, runs dropped, random drops: always regular, so
    judged by the lower median of the intervals as before (79,808 cases of such series
    compared with the old code gave no difference; this keeps the classification)."""
    rng = np.random.default_rng(44)
    for _ in range(2000):
        step = int(rng.choice([1, 10, 60, 3600])) * S
        n = int(rng.integers(2, 400))
        jit = rng.choice([0, 0.2, 0.5])
        t = np.arange(n, dtype=np.int64) * step + (rng.uniform(-jit, jit, n) * step).astype(
            np.int64)
        keep = np.ones(n, bool)
        for _ in range(int(rng.integers(0, 6))):
            a = int(rng.integers(0, n))
            keep[a:a + int(rng.integers(1, max(2, n // 4)))] = False
        t = np.unique(t[keep])
        if len(t) < 2:
            continue
        kind, step_seen = cadence(t)
        assert kind == "regular", (n, jit, t[:20])
        assert step_seen == usual_interval(intervals(t))


def test_fewer_than_ten_bursts_are_judged_as_single_readings() -> None:
    t = _bursts(9, 2)
    assert cadence(t) == ("regular", float(S))
    assert expected_interval(t) == S
