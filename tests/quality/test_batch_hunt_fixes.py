"""The batch quality report (``edgewise quality``, REST /quality) on a sensor read more often
than it refreshes, on a recurring glitch off a noisy sensor, on readings sent in pairs,
and on a drift with one reading near the largest float."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.quality.drift import drift_score
from edgewise.quality.gaps import expected_interval
from edgewise.quality.report import metric_issues
from edgewise.quality.spikes import hampel_mask, resolution
from edgewise.quality.stuck import stuck_runs

S = 10**9


def _held(times: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` readings of 20 +- 0.5, each value read ``times`` times (sample and hold)."""
    rng = np.random.default_rng(seed)
    return np.repeat(20.0 + rng.normal(0, 0.5, n // times + 1), times)[:n]


@pytest.mark.parametrize("times", [1, 2, 3, 4])
def test_a_sensor_read_more_often_than_it_refreshes_has_no_spikes(times: int) -> None:
    """Check a noisy sensor with no spike, each value read two or three times, has no
    spikes in the report, as when each value is read once. Before, half or more of its
    steps were 0, its noise level 0, and 7 % of its readings spikes (156 and 144 of
    2000)."""
    v = _held(times, 2000)
    assert metric_issues(np.arange(len(v)) * S, v)["figures"]["spikes"] == 0


def test_a_held_sensor_still_has_its_spikes() -> None:
    """Check the repeats left out of the noise hide no real spike: glitches of 8 sd on one
    reading of a held pair (+4 off 20 +- 0.5) are spikes, and nothing else is."""
    v = _held(2, 1200)
    v[[201, 601, 1001]] += 4.0
    assert np.flatnonzero(hampel_mask(v, n_sigmas=5.0)).tolist() == [201, 601, 1001]


def test_a_recurring_glitch_off_a_noisy_sensor_is_a_spike() -> None:
    """Check a noisy sensor (40 +- 0.5, read once) that reads 6.0 above its last reading
    three times has three spikes. Before, the glitch's way up (6.0, under a quarter of the
    level) recurred and was taken for the sensor's resolution, hiding all three, though
    the sensor's other readings move by less."""
    rng = np.random.default_rng(0)
    v = 40.0 + rng.normal(0, 0.5, 1000)
    where = [200, 500, 800]
    v[where] = v[[w - 1 for w in where]] + 6.0
    flags = metric_issues(np.arange(len(v)) * S, v)["flags"]["spike"]
    assert np.flatnonzero(flags).tolist() == where
    marks = np.zeros(len(v), dtype=bool)
    marks[where] = True
    assert resolution(v, outliers=marks) == 0.0


def test_a_quiet_sensor_still_shows_its_step_by_lone_readings() -> None:
    """Check a sensor that reports tenths and leaves 20.0 only for a lone 20.1 (each an
    outlier of its flat window) still shows its resolution: no reading moves by less."""
    v = np.full(300, 20.0)
    v[[50, 120, 200, 260]] = 20.1
    assert resolution(v) == pytest.approx(0.1)
    assert not hampel_mask(v, n_sigmas=5.0).any()


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` readings of a device sending two readings 1 s apart once a minute
    (20 +- 0.5), frozen at one value for readings 60 to 89."""
    t = np.sort(np.r_[np.arange(101) * 60 * S, np.arange(101) * 60 * S + S])
    v = 20 + np.random.default_rng(0).normal(0, 0.5, len(t))
    v[60:90] = v[60]
    return t[:n], v[:n]


def test_readings_in_pairs_are_judged_alike_whatever_their_count() -> None:
    """Check a device that sends its readings in pairs has the same spacing, gaps and
    stuck readings with 199, 200, 201 or 202 readings. Before, an even count of intervals
    averaged the two middle ones into 30 s, a spacing the readings never had: with 199
    readings completeness was 1.0, no gap and no stuck reading; with 200, 0.034, 99 gaps
    and 30. Its stuck readings are timed by the lower median of the intervals (1 s), as
    the stream cleaner times them; since session 44 its completeness and gaps are judged
    by its bursts (one a minute: whole, no gap), not by that 1 s (a gap every minute,
    completeness 0.03), and a series with fewer than 10 bursts is judged as before."""
    got = set()
    for n in (199, 200, 201, 202):
        t, v = _pairs(n)
        f = metric_issues(t, v)["figures"]
        got.add((f["interval_s"], f["gaps"] >= 99, round(f["completeness"], 2), f["stuck"]))
        assert stuck_runs(v, min_run=20, ts=t) == [(60, 90)]
    assert got == {(60.0, False, 1.0, 30)}
    assert expected_interval([0, 1, 100, 101, 200]) == expected_interval(
        [0, 1, 100, 101, 200, 201]) == 1.0


@pytest.mark.parametrize("glitch", [1e300, 1.7e308, -1.7e308])
def test_one_huge_reading_leaves_the_drift_score(glitch: float) -> None:
    """Check a drift of 6 sd over 400 readings scores the same with one reading near the
    largest float in the middle. Before, every reading was scaled by the largest one and
    the spread fell below an absolute floor of 1e-300: 4.07 became 1.66 (1e300) or 1e-8."""
    rng = np.random.default_rng(0)
    v = 20 + rng.normal(0, 0.5, 400) + np.linspace(0, 3, 400)
    clean = drift_score(v)
    v[200] = glitch
    assert clean > 3
    assert drift_score(v) == pytest.approx(clean, rel=1e-12)
    f = metric_issues(np.arange(len(v)) * S, v)["figures"]
    assert f["drift"] == round(clean, 3)


def test_the_drift_score_stays_finite_at_the_ends_of_the_floats() -> None:
    """Check the score of a shift between readings near -+1.7e308, or from 0 to them, is a
    large finite number, and that of a series at 0 throughout is 0."""
    big = 1.7e308
    for a, b in ((-big, big), (0.0, big), (0.0, 5e-324)):
        score = drift_score(np.r_[np.full(20, a), np.full(20, b)])
        assert np.isfinite(score) and score > 1e9
    assert drift_score(np.zeros(40)) == 0.0
