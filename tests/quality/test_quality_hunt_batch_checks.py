"""The batch checks judge ordinary behaviour as such: a step at either end of a series is
no spike (its window mirrored the readings at the ends), a sensor that holds its value as
it should is not stuck (a quantised sensor warming slowly, a setpoint), a signal of two
levels other than 0 and 1 is two-state (each heater pulse was a spike), and an
interpolated grid has no value before the first reading (the first reading was repeated
back to the grid's first point)."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import QualityError
from edgewise.quality.report import metric_issues
from edgewise.quality.resample import resample
from edgewise.quality.spikes import despike, hampel_mask
from edgewise.quality.states import two_state
from edgewise.quality.stuck import stuck_runs

S = 10**9
MIN = 60 * S


def _figures(values: np.ndarray | list[float], every: int = MIN) -> dict:
    return metric_issues(np.arange(len(values)) * every, np.asarray(values, float))["figures"]


# --- spikes at the ends ------------------------------------------------------------------

@pytest.mark.parametrize("before", [1, 2, 3, 58, 59])
def test_a_step_near_either_end_is_no_spike(before: int) -> None:
    """Check a setpoint moved from 20 to 30 (noise 0.1) leaves no spike, wherever the step
    falls: two readings before the end were [58, 59], after the first two [0, 1]."""
    rng = np.random.default_rng(1)
    v = np.r_[20 + rng.normal(0, 0.1, before), 30 + rng.normal(0, 0.1, 60 - before)]
    assert np.flatnonzero(hampel_mask(v, 3, 5.0)).tolist() == []
    assert _figures(v)["spikes"] == 0


def test_a_rolling_window_shows_no_spike_at_a_setpoint_change() -> None:
    """Check the dashboard's rolling hour, re-judged at each new reading after a setpoint
    change, never shows its new level as spikes (it showed 2 until a third arrived)."""
    rng = np.random.default_rng(4)
    v = np.r_[20 + rng.normal(0, 0.1, 100), 25 + rng.normal(0, 0.1, 20)]
    shown = [_figures(v[end - 60:end])["spikes"] for end in range(95, 121)]
    assert shown == [0] * len(shown)


def test_a_glitch_next_to_either_end_is_still_a_spike() -> None:
    """Check a glitch with a reading at the level after it (before it) is flagged next to
    the end (the start); only a reading with nothing on one side waits for the next."""
    rng = np.random.default_rng(2)
    v = 20 + rng.normal(0, 0.1, 60)
    v[[1, 58]] = [35.0, 5.0]
    assert np.flatnonzero(hampel_mask(v, 3, 5.0)).tolist() == [1, 58]
    assert _figures(v)["spikes"] == 2
    v[59] = 5.0                                   # the last two at 5.0: a new level?
    assert np.flatnonzero(hampel_mask(v, 3, 5.0)).tolist() == [1]
    assert np.flatnonzero(hampel_mask(np.r_[v, 20.0], 3, 5.0)).tolist() == [1, 58, 59]


@pytest.mark.parametrize(("glitch", "spike"), [
    (500.0, True), (-127.0, True),        # a wild reading, a sensor's error code
    (0.0, False), (45.0, False),          # a pump switched off, a setpoint moved
])
def test_an_end_reading_is_a_spike_only_when_clearly_beyond(glitch: float,
                                                           spike: bool) -> None:
    """Check a first or last reading far beyond the level is a spike with nothing on its
    other side (despiked to the level), while one a step could explain waits for the next."""
    rng = np.random.default_rng(5)
    level = 20 + rng.normal(0, 0.1, 59)
    for v, at in ((np.r_[glitch, level], 0), (np.r_[level, glitch], 59)):
        assert np.flatnonzero(hampel_mask(v, 3, 5.0)).tolist() == ([at] if spike else [])
        assert _figures(v)["spikes"] == int(spike)
        if spike:
            assert abs(despike(v, 3, 5.0)[at] - 20) < 0.5


# --- stuck -------------------------------------------------------------------------------

def test_a_quantised_sensor_warming_slowly_is_not_stuck() -> None:
    """Check a 1 Hz sensor reporting tenths, warming 0.5 in ten minutes, has no stuck
    readings (237 of 600 were), and sitting at one tenth 20 times as long as it holds one
    elsewhere is stuck."""
    rng = np.random.default_rng(2)
    v = np.round(20 + np.linspace(0, 0.5, 600) + rng.normal(0, 0.02, 600), 1)
    assert _figures(v, every=S)["stuck"] == 0
    live = np.round(20 + 0.5 * np.sin(np.arange(300) / 5) + rng.normal(0, 0.05, 300), 1)
    held = np.r_[live, np.full(400, 21.7), live]
    assert stuck_runs(held, min_run=20, ts=np.arange(len(held)) * S) == [(300, 700)]


@pytest.mark.parametrize("v", [
    np.r_[np.full(60, 55.0), np.full(60, 60.0)],                     # a setpoint, 1 h each
    np.r_[np.full(30, 20.0), np.full(30, 25.0)],                     # one step
    np.r_[np.full(600, 55.0), np.full(60, 60.0), np.full(60, 58.0)],  # held all night
    np.repeat([20.0, 21.0, 22.0, 23.0, 24.0, 25.0, 26.0], 60),       # a staircase
])
def test_a_setpoint_is_not_stuck_for_holding_its_value(v: np.ndarray) -> None:
    """Check series that hold their values by nature (120 of 120, 60 of 60 were stuck)."""
    assert _figures(v)["stuck"] == 0


def test_a_noisy_sensor_that_goes_flat_is_still_stuck() -> None:
    """Check a flat run of 100 in a noisy series is stuck over its exact extent, and a run
    of 20 readings is stuck while one of 19 is not, as before."""
    rng = np.random.default_rng(0)
    v = 40 + rng.normal(0, 0.3, 600)
    v[300:400] = 41.0
    stuck = metric_issues(np.arange(600) * MIN, v)["flags"]["stuck"]
    assert np.flatnonzero(stuck).tolist() == list(range(300, 400))
    for run, want in ((20, 20), (19, 0)):
        w = np.r_[v[:100], np.full(run, 41.0), v[100:200]]
        assert _figures(w)["stuck"] == want


def test_a_run_is_judged_by_how_long_it_held() -> None:
    """Check five identical readings re-sent a second apart, in a series that changes at
    every reading sent each 10 s, held 10 s (to the next change): no stuck run, though
    five readings in a row make one when only their count is known; 50 s is stuck."""
    v = np.r_[np.arange(10.0), [3.5] * 5, np.arange(10.0)]
    ts = np.r_[np.arange(10) * 10, 100 + np.arange(5), 110 + np.arange(10) * 10] * S
    assert stuck_runs(v, min_run=5) == [(10, 15)]
    assert stuck_runs(v, min_run=5, ts=ts) == []
    assert stuck_runs(v, min_run=5, ts=np.arange(len(v)) * 10 * S) == [(10, 15)]


def test_stuck_refuses_times_that_do_not_fit() -> None:
    with pytest.raises(QualityError, match=r"'ts' of stuck must give one time per value: "
                                           r"2 times for 3 values"):
        stuck_runs([1.0, 2.0, 3.0], min_run=2, ts=[0, 1])
    with pytest.raises(QualityError, match=r"ascending order; time 0 at index 2 comes "
                                           r"after 5\. Sort"):
        stuck_runs([1.0, 2.0, 3.0], min_run=2, ts=[1, 5, 0])


# --- two levels --------------------------------------------------------------------------

@pytest.mark.parametrize(("v", "on"), [
    (([0.0] * 10 + [1500.0] * 2) * 10, 0.1667),    # a heater, W: 20 spikes before
    (([0.0] * 5 + [7.5]) * 20, 0.1667),             # a pump's current, A: 20
    (([0.0] * 7 + [0.2]) * 10, 0.125),              # a rain gauge's tips, mm: 10
])
def test_two_levels_other_than_0_and_1_are_two_state(v: list[float], on: float) -> None:
    """Check two-level signals are two-state: no spikes, stuck runs nor drift."""
    assert two_state(v)["binary"] and two_state(v)["on_fraction"] == on
    f = _figures(v)
    assert (f["binary"], f["spikes"], f["stuck"], f["drift"]) == (True, 0, 0, None)
    assert f["transitions"] == int(np.sum(np.diff(v) != 0))


def test_rare_dropouts_and_one_step_are_no_two_state() -> None:
    """Check a valve's three dropouts to 0 stay spikes, and one step keeps its drift."""
    valve = np.full(500, 100.0)
    valve[[100, 250, 400]] = 0.0
    f = _figures(valve)
    assert (f["binary"], f["spikes"]) == (False, 3)
    assert not two_state([20.0] * 30 + [25.0] * 30)["binary"]
    assert not two_state([0.0] * 40 + [1500.0] * 2)["binary"]  # seen twice: no state yet


# --- resample ----------------------------------------------------------------------------

@pytest.mark.parametrize("max_gap_ns", [None, 90 * S])
def test_interpolation_has_no_value_before_the_first_reading(max_gap_ns: int | None) -> None:
    """Check readings at 59, 119 and 179 s on a 60 s grid: 0 s is NaN (it was 1.0, the
    first reading), 60 and 120 s interpolated; a reading on the grid keeps its value."""
    grid, v = resample(np.array([59, 119, 179]) * S, [1.0, 2.0, 3.0], 60 * S,
                       "interpolate", max_gap_ns=max_gap_ns)
    assert (grid // S).tolist() == [0, 60, 120]
    assert np.isnan(v[0]) and v[1:] == pytest.approx([1 + 1 / 60, 2 + 1 / 60])
    _, v = resample(np.array([0, 120]) * S, [1.0, 2.0], 60 * S, "interpolate",
                    max_gap_ns=None if max_gap_ns is None else 120 * S)
    assert v.tolist() == [1.0, 1.5, 2.0]
