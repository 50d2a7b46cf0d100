"""Slow drifts (a draining battery, a temperature creeping up): a new low or high that
follows the stream's own trend is not range novelty; a fault out of step with it is."""

from __future__ import annotations

import pickle

import numpy as np

from edgewise.detect import get_detector
from edgewise.detect.context_likelihood import ContextLikelihood

DAY = 144  # readings a day, one each 10 minutes


def _battery(days: int = 30, seed: int = 0) -> np.ndarray:
    """A cell draining from 4.2 V to 3.3 V in a month, with noise and a daily swing
    (temperature), read to the millivolt."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    v = 4.2 - 0.9 * t / len(t) + 0.01 * rng.standard_normal(len(t))
    return np.round(v + 0.02 * np.sin(2 * np.pi * t / DAY), 3)


def _alarms(x: np.ndarray, **kw: object) -> np.ndarray:
    return np.flatnonzero(ContextLikelihood(**kw).score_many(x) >= 0.9)


def test_a_draining_battery_stops_alarming_once_its_trend_is_known():
    """Check the month of drain: 28 alarms with the old rule (a new low each day), 9 now,
    none after day 12; a stationary cell is untouched (same alarms either way)."""
    x = _battery()
    old, new = _alarms(x, creep_min=0), _alarms(x)
    assert len(old) >= 25 and len(new) <= 10, (len(old), len(new))
    assert new.max() < 30 * DAY and (new > 12 * DAY).sum() <= 1
    rng = np.random.default_rng(1)
    t = np.arange(30 * DAY)
    flat = np.round(4.0 + 0.01 * rng.standard_normal(len(t)) + 0.02 * np.sin(2 * np.pi * t / DAY),
                    3)
    np.testing.assert_array_equal(_alarms(flat), _alarms(flat, creep_min=0))


def test_a_fault_out_of_step_with_the_trend_is_still_found():
    """Check a cell that drops 0.15 V in one reading (a short, a failing cell) or jumps
    1 V against the drain (a swapped battery), planted at 24 times from day 13 to 29: the
    rule finds more of them at their first reading than the old one (12 of 24 against 3:
    the old rule's daily alarms kept the repeat suppression busy). The rest fall in the
    suppression after an earlier detection, for both. (Without escalations, as they were
    measured; escalations find the 1 V jumps beyond the range in the old rule's busy
    suppression too, 6 of 24 there, and change nothing under the creep rule.)"""
    base = _battery()
    for delta in (-0.15, 1.0):
        found = {0: 0, 20: 0}
        for fault in range(13 * DAY, 29 * DAY, 97):
            x = base.copy()
            x[fault:] += delta
            for c_min in found:
                found[c_min] += ContextLikelihood(creep_min=c_min, escalate=0).score_many(
                    x)[fault] >= 0.9
        assert found[20] >= 12 and found[0] <= 3, (delta, found)


def test_creep_replay_equals_one_at_a_time_and_survives_a_pickle():
    """Check score_many = the score_one/learn_one loop through the creep counts, and a
    detector pickled mid-month resumes with the same scores."""
    x = _battery(days=15)
    loop = ContextLikelihood()
    one = np.array([(loop.score_one({"v": v}), loop.learn_one({"v": v}))[0] for v in x])
    np.testing.assert_array_equal(ContextLikelihood().score_many(x), one)
    det = ContextLikelihood()
    det.score_many(x[:1000])
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.score_many(x[1000:]), det.score_many(x[1000:]))
    assert det.state_[0, 22] >= 20  # the low side moved 20 times or more: it creeps


def test_context_art_follows():
    """Check the ART variant takes the same rule (it shares the members)."""
    x = _battery()
    assert len(np.flatnonzero(get_detector("context-art").score_many(x) >= 0.9)) <= 10
