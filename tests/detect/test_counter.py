"""Cumulative counters (energy meters, pulse counts) under the default detector.

A meter's reading only grows, so its level is always new: scored as a level it raises
alarm after alarm. The default tells a counter from its warm-up and scores its
increments; these tests fail on a detector that scores the level (``counter="never"``).
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from edgewise.detect import ContextART, ContextLikelihood
from edgewise.errors import InvalidParameterError
from tests.conftest import score_one_by_one

DAY = 1440  # readings a day at one a minute


def _load(days: int = 7, seed: int = 0) -> np.ndarray:
    """kWh used per minute by a building: a daily cycle with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    return np.clip(1 + 0.5 * np.sin(2 * np.pi * t / DAY) + 0.05 * rng.standard_normal(len(t)),
                   0, None) * 0.01


def _meter(load: np.ndarray, start: float = 1234.0) -> np.ndarray:
    """A cumulative energy meter read to 0.01 kWh."""
    return np.round(start + np.cumsum(load), 2)


def _alarms(det, x) -> np.ndarray:
    return np.flatnonzero(det.score_many(x) >= 0.9)




def test_an_energy_meter_raises_few_alarms_and_its_fault_is_found():
    """Check that a week of a cumulative meter raises a handful of alarms (as a level it
    raises dozens) and that two hours of tripled consumption on day 5 alarm inside them."""
    load = _load()
    fault = slice(5 * DAY + 600, 5 * DAY + 720)
    load[fault] *= 3
    x = _meter(load)
    det = ContextLikelihood()
    alarms = _alarms(det, x)
    assert det.counter_[0] == 2.0  # told a counter from its warm-up
    assert len(alarms) <= 6, alarms
    assert any(fault.start <= a < fault.stop for a in alarms), alarms
    assert len(_alarms(ContextLikelihood(counter="never"), x)) >= 30  # the level: novelty


@pytest.mark.parametrize("start", [0, DAY - 100])  # the first midnight after / in the probe
def test_a_daily_counter_restarting_at_midnight_is_not_an_alarm(start):
    """Check that a counter that restarts from zero every midnight ('energy today') is told
    a counter even when a midnight falls in its warm-up, and raises no alarm at its
    restarts and few at all."""
    load = _load(days=8)
    x = np.round(np.concatenate([np.cumsum(load[d * DAY:(d + 1) * DAY]) for d in range(8)]), 2)
    x = x[start:start + 7 * DAY]
    det = ContextLikelihood()
    alarms = _alarms(det, x)
    assert det.counter_[0] == 2.0
    assert len(alarms) <= 6, alarms
    restarts = np.arange(1, 8) * DAY - start
    assert not np.isin(alarms, restarts).any(), alarms


def test_a_meter_idle_during_the_warm_up_is_told_a_counter_once_it_runs():
    """Check that a meter that did not move during the warm-up (a gas meter at night) is
    probed again until it runs, then scored by its increments."""
    load = _load()
    load[:600] = 0.0
    det = ContextLikelihood()
    alarms = _alarms(det, _meter(load))
    assert det.counter_[0] == 2.0
    assert len(alarms) <= 8, alarms


def test_spikes_that_fall_back_are_a_level():
    """Check that a flat stream with spikes (each falls back by more than half) is not a
    counter: only the first such drop of a probe may be a restart."""
    x = np.full(3000, 20.0)
    x[[50, 120, 200, 1500]] = 80.0
    det = ContextLikelihood()
    s = det.score_many(x)
    assert det.counter_[0] == 1.0
    assert s[1500] >= 0.9


def test_a_counter_running_backwards_alarms_and_stays_a_counter():
    """Check that a meter wound back by 3 kWh (tampering, a replaced device) alarms at the
    reading it happened, and increments go on being scored after it."""
    x = _meter(_load())
    x[6000:] -= 3.0
    det = ContextLikelihood()
    s = det.score_many(x)
    assert s[6000] >= 0.9
    assert det.counter_[0] == 2.0
    assert (s[6001:] >= 0.9).sum() <= 3


def test_a_gap_in_a_counter_is_not_an_alarm():
    """Check that missing readings (NaN) do not turn the increment across them into an
    alarm: the next reading re-anchors the counter."""
    x = _meter(_load())
    x[3000:3030] = np.nan
    s = ContextLikelihood().score_many(x)
    assert (s[3000:3060] < 0.9).all()
    assert (s >= 0.9).sum() <= 6


def test_a_tank_that_filled_during_the_warm_up_is_a_level_once_it_drains():
    """Check that a level that only rose during the warm-up (a tank filling), then falls,
    is scored as a level again after two falls in a row, with at most one alarm for the
    first fall."""
    tank = np.round(np.concatenate([np.linspace(0, 50, 400), 50 - np.arange(1, 601) * 0.05]), 1)
    det = ContextLikelihood()
    s = det.score_many(tank)
    assert det.counter_[0] == 1.0
    assert (s[400:680] >= 0.9).sum() <= 1  # the first fall; then a fresh warm-up on the level


@pytest.mark.parametrize("cls", [ContextLikelihood, ContextART])
def test_score_many_matches_the_loop_through_every_counter_event(cls):
    """Check that replay and one-at-a-time agree score for score and state for state
    through a probe, a restart, a gap, a counter running backwards and a revert."""
    x = _meter(_load(days=3))
    x[1500] = 5.0                        # restart from (near) zero
    x[1500:] = 5.0 + np.cumsum(_load(days=3)[1500:])
    x[2000:2004] = np.nan                # a gap
    x[2500:] -= 0.5                      # wound back once
    x[3500:] = x[3500] - np.arange(len(x) - 3500) * 0.001  # then falls: not a counter
    a, b = cls(), cls()
    np.testing.assert_array_equal(a.score_many(x), score_one_by_one(b, x, "kwh"))
    np.testing.assert_array_equal(a.state_, b.state_)
    np.testing.assert_array_equal(a.counter_, b.counter_)
    assert a.counter_[0] == 1.0


def test_declared_counter_and_level_modes():
    """Check 'always' scores increments from the first reading and never reverts, and
    'never' scores the level of a counter; a bad mode names the allowed ones."""
    x = _meter(_load(days=2))
    det = ContextLikelihood(counter="always")
    s = det.score_many(x)
    assert det.counter_[0] == 3.0 and s[0] == 0.0 and (s >= 0.9).sum() <= 4
    falling = 100 - np.arange(2000) * 0.01
    det = ContextLikelihood(counter="always")
    det.score_many(falling)
    assert det.counter_[0] == 3.0  # declared: a fall alarms, never reverts
    assert ContextLikelihood(counter="never").counter_[0] == 1.0
    with pytest.raises(InvalidParameterError, match=r"'counter' parameter .*'auto', 'never'"):
        ContextLikelihood(counter="yes")


def test_nab_is_scored_as_levels(shared_data):
    """Check that no NAB stream is taken for a counter: the default's NAB scores are
    those of the level detector, bit for bit."""
    for f in sorted((shared_data / "nab" / "data").glob("*/*.csv")):
        x = pd.read_csv(f)["value"].to_numpy(float)
        det = ContextLikelihood()
        np.testing.assert_array_equal(det.score_many(x),
                                      ContextLikelihood(counter="never").score_many(x))
        assert det.counter_[0] in (0.0, 1.0), f.name  # a level, or still probing


def test_a_pickle_from_before_the_counter_probe_scores_levels():
    """Check that a detector saved before the probe existed resumes scoring levels."""
    x = _meter(_load(days=2))
    old = ContextLikelihood()
    old.score_many(x[:100])
    del old.__dict__["counter_"], old.__dict__["counter"]
    restored = pickle.loads(pickle.dumps(old))
    assert restored.counter == "never" and restored.counter_[0] == 1.0
    ref = ContextLikelihood(counter="never")
    ref.score_many(x[:100])
    np.testing.assert_array_equal(restored.score_many(x[100:]), ref.score_many(x[100:]))
