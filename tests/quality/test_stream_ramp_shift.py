"""A level reached gradually (a ramp, a first-order approach to a new setpoint, a counter
that starts counting) is a level shift for the gateway's stream cleaner, as a step is.

Before, a run of outliers was a level shift only while its spread stayed within the spike
threshold or below its distance from the window's median: a ramp or a first-order lag (how
``edgewise.sim.pumps`` and real processes change operating point) outgrew that test, and
each time it did the next readings were flagged (dropped with ``drop_spikes=True``) as new
spikes: 5 readings of a 6-reading ramp, the first at the new level among them, where the
batch report flags none and the module says only the first ``LEVEL_SHIFT_RUN - 1`` of a
level change are; 104 readings of a simulated pump's speed in 3 hours.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from edgewise.quality.report import metric_issues
from edgewise.quality.stream import LEVEL_SHIFT_RUN, STATE_VERSION, StreamCleaner
from edgewise.telemetry import Reading

S = 10**9
#: The fields of a stream's state that follow how a run of outliers moves.
PATH_FIELDS = ("shift_near", "shift_entry", "shift_last", "shift_top", "shift_step",
               "shift_ratio", "shift_found", "shift_gap")


def _readings(values: np.ndarray | list[float], step_s: int = 1) -> list[Reading]:
    return [Reading("d", "m", i * step_s * S, float(x)) for i, x in enumerate(values)]


def _spikes(rows: list[Reading], c: StreamCleaner | None = None,
            drop_spikes: bool = False) -> list[int]:
    """The positions in ``rows`` the stream cleaner flags (or drops) as spikes."""
    c = c if c is not None else StreamCleaner(drop_spikes=drop_spikes)
    found = []
    for i, r in enumerate(rows):
        before = c.flagged["spike"] + c.removed["spike"]
        c.clean_one(r)
        if c.flagged["spike"] + c.removed["spike"] > before:
            found.append(i)
    return found


def _batch_spikes(values: np.ndarray | list[float]) -> int:
    v = np.asarray(values, dtype=float)
    return metric_issues(np.arange(len(v)) * S, v)["figures"]["spikes"]


def _level_change(shape: str) -> np.ndarray:
    """20 +- 0.1 for 40 readings, then 5 higher: at once, over 6 readings, or as a
    first-order lag that closes a fifth of the gap each reading."""
    rng = np.random.default_rng(0)
    v = 20 + rng.normal(0, 0.1, 80)
    k = np.arange(40) + 1
    v[40:] += {"step": np.full(40, 5.0), "ramp": 5 * np.minimum(1, k / 6),
               "lag": 5 * (1 - 0.8**k)}[shape]
    return v


@pytest.mark.parametrize("drop_spikes", [False, True])
@pytest.mark.parametrize("shape", ["step", "ramp", "lag"])
def test_a_gradual_level_change_is_flagged_only_while_it_is_ambiguous(
        shape: str, drop_spikes: bool) -> None:
    """Check a ramp and a first-order lag to a new level are flagged (or dropped) for
    their first LEVEL_SHIFT_RUN - 1 readings only, as a step is (a ramp flagged 40, 41,
    42, 44, 45, a lag 40, 41, 42, 46, 47), and none in the batch report."""
    v = _level_change(shape)
    assert _batch_spikes(v) == 0
    assert _spikes(_readings(v), drop_spikes=drop_spikes) == list(
        range(40, 40 + LEVEL_SHIFT_RUN - 1))


@pytest.mark.parametrize("drop_spikes", [False, True])
def test_a_pumps_setpoint_changes_flag_their_first_readings_only(drop_spikes: bool) -> None:
    """Check a pump whose speed follows its setpoint (0.80 -> 0.90 -> 0.80 of 2950 rpm)
    with a first-order lag, as the simulator's pumps do, 3 rpm noise at 1 s: the stream
    flags the first two readings of each change, the batch report none (it flagged 8,
    and dropped 10 with drop_spikes)."""
    rng = np.random.default_rng(0)
    s, sp, v = 0.80, 0.80, []
    for i in range(600):
        if i in (200, 400):
            sp = 0.90 if i == 200 else 0.80
        s += (sp - s) * 0.2
        v.append(round(2950 * s + rng.normal(0, 3.0), 4))
    assert _batch_spikes(v) == 0
    assert _spikes(_readings(v), drop_spikes=drop_spikes) == [200, 201, 400, 401]


def _energy_today(idle_at_night: bool) -> tuple[list[float], list[int]]:
    """Three days of an 'energy today' counter read each minute (0.01-0.03 kWh a minute,
    reset to 0 at midnight), idle from 22:00 to 07:00 or not; and the readings at which
    its level changes (a reset, the morning's first count)."""
    rng = np.random.default_rng(0)
    vals, changes = [], []
    for day in range(3):
        e = 0.0
        for m in range(1440):
            vals.append(round(e, 2))
            if not idle_at_night or 7 * 60 <= m < 22 * 60:
                e += rng.uniform(0.01, 0.03)
        changes += [day * 1440, day * 1440 + 7 * 60 + 1] if idle_at_night else [day * 1440]
    return vals, changes[1:]


@pytest.mark.parametrize("drop_spikes", [False, True])
@pytest.mark.parametrize("idle_at_night", [False, True])
def test_a_daily_counter_flags_only_the_first_readings_of_its_changes(
        idle_at_night: bool, drop_spikes: bool) -> None:
    """Check an 'energy today' counter: its midnight reset (a step) and, idle at night, its
    morning start from a flat 0 (a ramp with uneven steps) are flagged for at most their
    first LEVEL_SHIFT_RUN - 1 readings, and nothing else is (idle at night it flagged 17
    readings in 3 days, 3 of the first morning's, and 19 with drop_spikes)."""
    vals, changes = _energy_today(idle_at_night)
    assert _batch_spikes(vals) == 0
    flagged = _spikes(_readings(vals, 60), drop_spikes=drop_spikes)
    near = {i: [f for f in flagged if i <= f < i + 10] for i in changes}
    assert all(len(fs) <= LEVEL_SHIFT_RUN - 1 for fs in near.values()), near
    assert sorted(f for fs in near.values() for f in fs) == flagged


@pytest.mark.parametrize("drop_spikes", [False, True])
def test_a_spike_on_a_ramp_is_still_a_spike(drop_spikes: bool) -> None:
    """Check a ramp off a flat 20 (1.0 a reading, a step the stream learns as the sensor's
    resolution from its third on, so the grown threshold takes in a few of its readings) is
    flagged for its first two readings (it flagged 35 and 36 too, 30..34 dropping), and
    hides no spike on top of it: a jump of 40 beyond it is flagged, as in the batch report.
    A ramp that goes on after a dropped spike follows the window's trend: nothing more is
    dropped."""
    v = [20.0] * 30 + [21.0 + k for k in range(8)] + [68.0] + [29.0 + k for k in range(3)]
    v += [31.0] * 30
    assert np.flatnonzero(metric_issues(np.arange(len(v)) * S, np.array(v))["flags"]["spike"]
                          ).tolist() == [38]
    flagged = _spikes(_readings(v), drop_spikes=drop_spikes)
    assert flagged == [30, 31, 38]


def test_a_saved_state_goes_on_with_a_ramp_under_way() -> None:
    """Check a stream state saved in the middle of a ramp goes on as if never saved, and
    one saved before the fields that follow a run's path existed (same STATE_VERSION)
    loads and still takes a later ramp as a level shift."""
    rows = _readings(_level_change("ramp"))
    whole = _spikes(rows)
    c = StreamCleaner()
    first = _spikes(rows[:42], c)
    saved = pickle.loads(pickle.dumps(c.export_state()))
    c2 = StreamCleaner()
    assert c2.import_state(saved, STATE_VERSION)
    assert first + [42 + i for i in _spikes(rows[42:], c2)] == whole == [40, 41]

    for cut in (40, 42):  # before the ramp; in it, its path unknown: judged anew
        c = StreamCleaner()
        _spikes(rows[:cut], c)
        old = c.export_state()
        for st in old.values():
            for name in PATH_FIELDS:
                vars(st).pop(name, None)
        c3 = StreamCleaner()
        assert c3.import_state(pickle.loads(pickle.dumps(old)), STATE_VERSION)
        assert [cut + i for i in _spikes(rows[cut:], c3)] == [cut, cut + 1]
