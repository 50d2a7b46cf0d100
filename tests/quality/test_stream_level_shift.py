"""A level shift is no spike for the gateway's stream cleaner, and a stuck run counts as the
batch report counts it.

Before, a reading dropped as a spike never entered the spike window, so with
``drop_spikes=True`` everything after a real step was dropped for ever (a setpoint moved
from 20.0 to 25.0 kept 30 of 1030 readings); flagging only, the new level was flagged until
half the window held it (8 readings of a 20 -> 30 step, where the batch report flags none),
and the gateway, which keeps flagged readings from its detectors' learning
(``Pipeline._clean``'s spikes), did not learn the new level. A run of 25 identical
readings counted 6 stuck in the stream and 25 in the batch report.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from edgewise.quality.report import metric_issues
from edgewise.quality.stream import LEVEL_SHIFT_RUN, STATE_VERSION, StreamCleaner
from edgewise.telemetry import Reading

S = 60 * 10**9


def _readings(values: np.ndarray | list[float]) -> list[Reading]:
    return [Reading("d", "m", i * S, float(x)) for i, x in enumerate(values)]


def _spikes(values: np.ndarray | list[float], drop_spikes: bool = False) -> list[int]:
    """The positions the stream cleaner flags (or drops) as spikes."""
    c = StreamCleaner(drop_spikes=drop_spikes)
    found = []
    for i, r in enumerate(_readings(values)):
        before = c.flagged["spike"] + c.removed["spike"]
        c.clean_one(r)
        if c.flagged["spike"] + c.removed["spike"] > before:
            found.append(i)
    return found


def _noisy_step(low: float, high: float) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.r_[low + rng.normal(0, 0.1, 40), high + rng.normal(0, 0.1, 40)]


def test_dropping_spikes_keeps_a_setpoints_new_level() -> None:
    """Check a setpoint at 20.0 for 30 readings, then at 25.0 for 1000, loses only the
    first LEVEL_SHIFT_RUN - 1 readings of the new level (it kept none of them)."""
    vals = [20.0] * 30 + [25.0] * 1000
    c = StreamCleaner(drop_spikes=True)
    kept = c.clean(_readings(vals))
    assert dict(c.removed) == {"spike": LEVEL_SHIFT_RUN - 1}
    assert [r.ts_ns // S for r in kept] == list(range(30)) + list(
        range(30 + LEVEL_SHIFT_RUN - 1, 1030))


@pytest.mark.parametrize(("low", "high"), [(20.0, 30.0), (30.0, 20.0)])
def test_dropping_spikes_keeps_a_noisy_step(low: float, high: float) -> None:
    """Check a noisy 20 -> 30 step (and 30 -> 20) keeps every reading of the new level from
    its third on (39 of 80 were kept, nothing after the step)."""
    c = StreamCleaner(drop_spikes=True)
    kept = {r.ts_ns // S for r in c.clean(_readings(_noisy_step(low, high)))}
    assert set(range(42, 80)) <= kept
    assert c.removed["spike"] <= 3  # the step's first two, one noise reading before it


@pytest.mark.parametrize("drop_spikes", [False, True])
def test_a_step_is_flagged_only_while_it_is_ambiguous(drop_spikes: bool) -> None:
    """Check the stream flags at most the first two readings of a 20 -> 30 step (it flagged
    40..47), and a spike at the new level afterwards is still one."""
    v = _noisy_step(20.0, 30.0)
    assert metric_issues(np.arange(80) * S, v)["figures"]["spikes"] == 0
    at_step = [i for i in _spikes(v, drop_spikes) if i >= 40]
    assert at_step == [40, 41]
    v[60] = 50.0
    assert [i for i in _spikes(v, drop_spikes) if i >= 40] == [40, 41, 60]


@pytest.mark.parametrize("drop_spikes", [False, True])
@pytest.mark.parametrize(("glitch", "flagged"), [
    ([100.0], [30]),                        # one spike
    ([100.0, 100.0], [30, 31]),             # two in a row, then back
    ([60.0, 80.0, 100.0], [30, 31, 32]),    # further apart than from the level: a burst
    ([5.0, 100.0, 5.0], [30, 31, 32]),      # on both sides
])
def test_spikes_that_are_no_level_stay_spikes(drop_spikes: bool, glitch: list[float],
                                              flagged: list[int]) -> None:
    """Check isolated spikes and short or scattered bursts on a flat 20.0 are flagged (or
    dropped) each, and the level after them is not."""
    assert _spikes([20.0] * 30 + glitch + [20.0] * 30, drop_spikes) == flagged


@pytest.mark.parametrize("drop_spikes", [False, True])
def test_a_stuck_run_counts_as_in_the_batch_report(drop_spikes: bool) -> None:
    """Check a run of 25 identical readings after a live stretch counts 25 stuck readings
    in the stream, as in the batch report (the stream counted 6), and one of 19 none."""
    rng = np.random.default_rng(3)
    live = np.round(20 + rng.normal(0, 0.5, 50), 2)
    for run, want in [(25, 25), (19, 0)]:
        v = np.r_[live, np.full(run, 21.0), live]
        c = StreamCleaner(drop_spikes=drop_spikes)
        c.clean(_readings(v))
        batch = metric_issues(np.arange(len(v)) * S, v)["figures"]["stuck"]
        assert c.flagged["stuck"] == batch == want


def test_a_state_saved_without_the_shift_fields_still_cleans() -> None:
    """Check a stream state pickled before the level-shift fields existed (same
    STATE_VERSION) loads, and the stream still takes a later step as its new level."""
    c = StreamCleaner(drop_spikes=True)
    c.clean(_readings([20.0] * 30))
    state = c.export_state()
    for st in state.values():
        for name in ("shift_n", "shift_side", "shift_lo", "shift_hi"):
            vars(st).pop(name, None)
    c2 = StreamCleaner(drop_spikes=True)
    assert c2.import_state(pickle.loads(pickle.dumps(state)), STATE_VERSION)
    kept = c2.clean([Reading("d", "m", (30 + i) * S, 25.0) for i in range(20)])
    assert len(kept) == 20 - (LEVEL_SHIFT_RUN - 1)
