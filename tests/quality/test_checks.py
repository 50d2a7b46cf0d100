"""Quality checks on crafted series with known faults."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import QualityError
from edgewise.quality.drift import drift_score, has_drift
from edgewise.quality.duplicates import deduplicate
from edgewise.quality.gaps import completeness, find_gaps
from edgewise.quality.limits import Limits, check_limits
from edgewise.quality.order import sort_by_time
from edgewise.quality.resample import resample
from edgewise.quality.spikes import despike, hampel_mask
from edgewise.quality.stuck import stuck_mask
from edgewise.quality.units import check_unit

S = 10**9


def noisy(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 20 + np.sin(np.arange(n) / 20) + rng.normal(0, 0.1, n)


def test_hampel_finds_exactly_the_planted_spikes() -> None:
    """Check that planted spikes are found, and nothing else on a smooth noisy series."""
    v = noisy()
    planted = [50, 200, 201, 420]
    v[planted] += [8.0, -9.0, -9.5, 12.0]
    found = np.flatnonzero(hampel_mask(v, half_window=5, n_sigmas=5.0))
    assert found.tolist() == planted
    assert np.abs(despike(v, half_window=5, n_sigmas=5.0)[planted] - 20).max() < 2


def test_stuck_run_is_found_and_bounded() -> None:
    """Check that a flat line in a live series is flagged over its exact extent."""
    v = noisy()
    v[100:140] = v[100]
    mask = stuck_mask(v, min_run=10)
    assert np.flatnonzero(mask).tolist() == list(range(100, 140))


def test_drift_is_seen_and_steady_is_not() -> None:
    """Check that a slow ramp of 3 noise widths is drift and a steady series is not."""
    rng = np.random.default_rng(1)
    steady = rng.normal(0, 1, 2000)
    assert not has_drift(steady)
    assert drift_score(steady + np.linspace(0, 8, 2000)) > 3


def test_gaps_and_completeness() -> None:
    """Check that a 10-minute outage in a 1 s series is one gap and lowers completeness."""
    ts = np.r_[np.arange(0, 600), np.arange(1200, 1800)] * S
    assert find_gaps(ts) == [(599 * S, 1200 * S)]
    assert completeness(ts) == pytest.approx(1200 / 1800, abs=1e-3)


def test_duplicate_and_conflict_policies() -> None:
    """Check each conflict policy, and that 'error' names the values."""
    ts, v = [1, 2, 2, 3, 3], [1.0, 2.0, 2.0, 3.0, 5.0]
    assert deduplicate(ts, v, "first").values.tolist() == [1.0, 2.0, 3.0]
    assert deduplicate(ts, v, "last").values.tolist() == [1.0, 2.0, 5.0]
    assert deduplicate(ts, v, "mean").values.tolist() == [1.0, 2.0, 4.0]
    with pytest.raises(QualityError, match=r"Conflicting values \[3.0, 5.0\] at time 3"):
        deduplicate(ts, v, "error")
    with pytest.raises(QualityError, match="'policy' parameter of deduplicate"):
        deduplicate(ts, v, "newest")
    with pytest.raises(QualityError, match="sorted ascending"):
        deduplicate([2, 1], [1.0, 1.0])


def test_sort_counts_late_arrivals() -> None:
    """Check that sorting restores order and counts the readings that arrived late."""
    t, v, late = sort_by_time([1, 3, 2, 5, 4], [1.0, 3.0, 2.0, 5.0, 4.0])
    assert t.tolist() == [1, 2, 3, 4, 5] and v.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert late == 2


def test_resample_mean_last_and_gap_limit() -> None:
    """Check mean/last binning and that interpolation does not bridge a long gap."""
    ts = np.array([0, 2, 4, 11, 40]) * S
    v = [1.0, 3.0, 5.0, 7.0, 9.0]
    grid, mean = resample(ts, v, 5 * S, "mean")
    assert (grid // S).tolist() == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    assert mean[0] == 3.0 and np.isnan(mean[1]) and mean[2] == 7.0
    _, last = resample(ts, v, 5 * S, "last")
    assert last[0] == 5.0
    _, interp = resample(ts, v, 5 * S, "interpolate", max_gap_ns=10 * S)
    assert np.isnan(interp[3:8]).all() and interp[-1] == 9.0
    with pytest.raises(QualityError, match="'how' parameter of resample"):
        resample(ts, v, 5 * S, "median")


def test_limits_range_and_rate() -> None:
    """Check range and rate violations, judged against the last good reading."""
    ts = np.arange(6) * S
    got = check_limits(ts, [10.0, 11.0, -99.0, 12.0, 30.0, 13.0], Limits(0.0, 100.0, 5.0))
    assert got == {"out_of_range": [2], "rate": [4]}
    with pytest.raises(QualityError, match=r"'low' .* must not exceed 'high'"):
        Limits(low=5.0, high=1.0)


def test_unit_sanity() -> None:
    """Check that impossible values for a SenML unit and unknown units are reported."""
    assert check_unit("%RH", [50.0, 101.0, -1.0])["impossible"] == [1, 2]
    assert check_unit("K", [-1.0])["impossible"] == [0]
    assert check_unit("degrees-ish", [1.0])["known"] is False


def test_drift_of_a_quantised_sensor_is_counted_in_its_resolution() -> None:
    """Check that a sensor reporting tenths whose median moves by one tenth has no drift
    (its reference window repeats one value, so its spread is 0: the score was 5e9), and
    one that moves by six tenths has."""
    rng = np.random.default_rng(0)
    base = np.round(20 + 0.03 * rng.standard_normal(4000), 1)
    one = base.copy()
    one[3000:] = np.round(20.06 + 0.03 * rng.standard_normal(1000), 1)
    six = base.copy()
    six[3000:] = np.round(20.6 + 0.03 * rng.standard_normal(1000), 1)
    assert np.median(one[3000:]) - np.median(one[:1000]) > 0.05  # it did move one tenth
    assert drift_score(one) < 3 and not has_drift(one)
    assert has_drift(six) and drift_score(six) < 10


def test_an_anomaly_s_own_step_is_no_resolution() -> None:
    """Check one spike on a flat series is found and a flat series that shifts drifts: the
    resolution was the smallest step, here the anomaly's own, so the spike (80 above a
    flat 20) was within 5 'resolutions' and the shift scored 1.00."""
    from edgewise.quality.spikes import resolution

    flat = np.full(201, 20.0)
    flat[100] = 100.0
    assert resolution(flat) == 0.0
    assert np.flatnonzero(hampel_mask(flat, n_sigmas=5.0)).tolist() == [100]
    shift = np.r_[np.full(300, 20.0), np.full(100, 25.0)]
    assert has_drift(shift)
    tenths = np.round(20 + 0.1 * np.random.default_rng(0).integers(-2, 3, 500), 1)
    assert resolution(tenths) == pytest.approx(0.1)


def test_resample_never_blanks_a_bin_that_holds_readings() -> None:
    """Check max_gap_ns leaves mean/last bins with readings as they are (the 20 s bin of
    two readings between long gaps was NaN)."""
    ts = np.array([0, 25, 26, 60]) * S
    for how, middle in (("mean", 2.5), ("last", 3.0)):
        _, v = resample(ts, [1.0, 2.0, 3.0, 4.0], 10 * S, how, max_gap_ns=15 * S)
        assert v[[0, 2, 6]].tolist() == [1.0, middle, 4.0] and np.isnan(v[[1, 3, 4, 5]]).all()


def test_resample_keeps_the_last_step_of_a_long_epoch_grid() -> None:
    """Check a long grid of epoch nanoseconds keeps its last step, and every reading its own:
    np.arange counted the grid in float64 and dropped the last of 10,320 half-hours, so the
    grid was a step shorter than its values and each value sat a step early."""
    step = 1800 * 10**9
    t = 1_404_172_800 * 10**9 + step * np.arange(10_320, dtype=np.int64)
    for how in ("mean", "last", "interpolate"):
        grid, values = resample(t, np.arange(10_320.0), every_ns=step, how=how)
        assert len(grid) == len(values) == 10_320, how
        assert grid[-1] == t[-1] and values[-1] == 10_319.0, how
