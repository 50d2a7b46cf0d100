"""The gateway's stream cleaner judges a reading by the noise its sensor shows, along the
window's trend, with its first readings unjudged, and counts a re-delivered time as the
batch report does.

Before: a window of one value (a sensor polled more often than it refreshes, the readings
after a freeze) had a floor of 1e-9 of its median, so a held sensor's every move was a
spike (20 % of the readings read ten times each) and so were the 7 live readings after a
freeze; pure noise had 7 to 15 spikes in 20,000 readings; a dropout among a stream's
first five readings, never judged, made its steps the valve's resolution and hid every
later one; a glitch by 4 of a sensor whose readings move less, the same each time, became
its resolution; a re-delivered batch was 'out_of_order'; the trailing window missed
glitches of 2 C on a ramp and flagged a clean cycle at its turns (NAB nyc_taxi: 583
spikes, the batch report 1).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgewise.quality.report import metric_issues
from edgewise.quality.spikes import RESOLUTION_SHARE, resolution
from edgewise.quality.stream import STATE_VERSION, StreamCleaner
from edgewise.telemetry import Reading

S = 10**9
#: The fields a stream's state gained with these fixes: a state saved before lacks them.
NEW_FIELDS = ("times", "marks", "finest", "noise_bins", "noise_n", "noise", "slope")


def _flags(values: np.ndarray | list[float], c: StreamCleaner | None = None,
           ts: np.ndarray | None = None, start: int = 0) -> list[int]:
    """The positions the stream cleaner flags as spikes."""
    c = c if c is not None else StreamCleaner()
    t = np.arange(start, start + len(values)) * S if ts is None else ts
    out = []
    for i, (x, at) in enumerate(zip(values, t, strict=True)):
        n = c.flagged["spike"]
        c.clean_one(Reading("d", "m", int(at), float(x)))
        if c.flagged["spike"] != n:
            out.append(start + i)
    return out


def _held(k: int, n: int = 3000, seed: int = 0) -> np.ndarray:
    """A noisy sensor (20 +- 0.5) polled each second, refreshed every ``k`` seconds."""
    rng = np.random.default_rng(seed)
    return np.repeat(20 + rng.normal(0, 0.5, n // k + 1), k)[:n]


# -- a floor from the noise the sensor shows ---------------------------------------------


@pytest.mark.parametrize("k", [2, 4, 10])
def test_a_sample_and_hold_sensor_is_not_spiky(k: int) -> None:
    """Check a noisy sensor whose every value is read k times has almost no spike (at most
    its first moves, before it has shown its noise; before: 2.8 %, 8.4 % and 20 % of its
    readings), as in the batch report (none)."""
    v = _held(k)
    assert len(_flags(v)) <= 12


def test_the_readings_after_a_freeze_are_judged_by_the_sensors_noise() -> None:
    """Check a noisy sensor frozen for 30 readings, then live again, has no spike (its
    first 7 live readings were, 19.85 against the frozen 19.841 among them): its freeze is
    still 30 stuck readings."""
    rng = np.random.default_rng(3)
    v = 20 + rng.normal(0, 0.5, 300)
    v[100:130] = v[100]
    c = StreamCleaner()
    assert _flags(v, c) == []
    assert c.flagged["stuck"] == 30


def test_pure_noise_has_no_spikes() -> None:
    """Check 20,000 Gaussian readings have no spike at 5 sigmas once the stream has seen
    50 of them (15 before, all through), and a glitch of 10 sigmas among them is one."""
    rng = np.random.default_rng(1)
    v = 20 + rng.normal(0, 0.5, 20_000)
    assert [i for i in _flags(v) if i >= 50] == []
    v[12_345] += 5.0
    assert [i for i in _flags(v) if i >= 50] == [12_345]


def test_planted_glitches_are_found_on_noise_trends_and_holds() -> None:
    """Check glitches of 12 sd every 97 readings are all found, with at most 4 other
    readings flagged, on noise, a ramp, a noisy cycle and a sensor read twice (before: a
    third of them missed on the cycle, 157 false flags on the held sensor)."""
    rng = np.random.default_rng(11)
    n = 3000
    at = np.arange(100, n - 10, 97)
    for base in (20 + rng.normal(0, 0.5, n),
                 20 + 0.05 * np.arange(n) + rng.normal(0, 0.5, n),
                 20 + 10 * np.sin(2 * np.pi * np.arange(n) / 100) + rng.normal(0, 0.5, n),
                 _held(2, n, 11)):
        v = base.copy()
        v[at] += np.where(np.arange(len(at)) % 2 == 0, 6.0, -6.0)
        found = set(_flags(v))
        assert set(at.tolist()) <= found
        assert len(found) - len(at) <= 4


# -- the first readings are not judged, and set no resolution ---------------------------


@pytest.mark.parametrize("first", [2, 3, 4])
def test_a_dropout_among_the_first_readings_hides_no_later_one(first: int) -> None:
    """Check a valve at 100.0 with 20 dropouts to 0.0, the first at reading 2, 3 or 4
    (before the window could judge it), has its 19 later ones flagged (none before: the
    first one's way down and up counted as the valve's resolution); the batch report, which
    sees both sides of the first, flags all 20."""
    v = np.full(1000, 100.0)
    where = [first, *range(50, 1000, 50)]
    v[where] = 0.0
    assert _flags(v) == where[1:]
    assert np.flatnonzero(metric_issues(np.arange(1000) * S, v)["flags"]["spike"]
                          ).tolist() == where


@given(st.sampled_from([1.0, 0.1, 0.25, 3e-7, 5e6]),
       st.lists(st.integers(-8, 8), min_size=2, max_size=120))
@settings(max_examples=200, deadline=None)
def test_the_stream_takes_the_batch_resolution_with_its_outliers(quantum: float,
                                                                 ks: list[int]) -> None:
    """Check the resolution the stream learns is spikes.resolution of its kept readings
    with its outliers for the outliers: the readings that stood out from the window
    before the resolution floor (level shifts aside) and the first readings, not judged.
    Where a small step into or out of an outlier came before the series' finest move
    between readings that are no outliers, the stream counted it and the report, which
    sees that move, does not: such series are left out."""
    values = [20.0 + k * quantum for k in ks]
    c = StreamCleaner()
    out = []
    for i, v in enumerate(values):
        assert c.clean_one(Reading("d", "t", i, v)) is not None
        out.append(c._state[("d", "t")].last_flagged)
    tol = 1e-9 * max(abs(v) for v in values)
    steps = [(abs(b - a), not (p or q), min(abs(a), abs(b)))
             for a, b, p, q in zip(values, values[1:], out, out[1:], strict=False)]
    moves = [d for d, clean, _ in steps if clean and d > tol]
    if moves:
        finest = min(moves)
        first = next(i for i, (d, clean, _) in enumerate(steps) if clean and d == finest)
        assume(not any(not clean and finest + tol < d < RESOLUTION_SHARE * low
                       for d, clean, low in steps[:first]))
    s = c._state[("d", "t")]
    got = s.step if s.step < math.inf else 0.0
    assert got == pytest.approx(resolution(values, outliers=out), rel=1e-9, abs=0.0)


# -- a glitch that recurs is no step of a sensor that moves less --------------------------


def test_a_recurring_glitch_of_a_held_sensor_is_a_spike_each_time() -> None:
    """Check a sensor read twice (20 +- 0.5) with the same glitch of +4 (under 25 % of its
    level) on one reading of a pair, six times, has those six flagged and nothing else
    (before: 160 readings flagged; the glitch's exact step of 4.0 back to the held value,
    small beside the level, counted towards the resolution)."""
    v = _held(2, 6000)
    where = [1000, 1800, 2600, 3400, 4200, 5000]
    v[where] += 4.0
    assert _flags(v) == where


# -- a re-delivered time is a duplicate or a conflict ------------------------------------


def test_a_redelivered_batch_is_duplicates_and_conflicts() -> None:
    """Check the last 10 of 30 readings sent again are 10 duplicates (they were 9
    'out_of_order' and 1 duplicate), sent again with other values 10 conflicts; a late
    reading at a time never kept, or older than the window's, is out of order."""
    rows = [Reading("d", "m", i * S, 20.0 + (i % 3) / 10) for i in range(30)]
    c = StreamCleaner()
    assert len(c.clean(rows)) == 30
    assert c.clean(rows[-10:]) == [] and dict(c.removed) == {"duplicate": 10}
    c.clean([Reading("d", "m", r.ts_ns, r.value + 1.0) for r in rows[-10:]])
    assert dict(c.removed) == {"duplicate": 10, "conflict": 10}
    c.clean([Reading("d", "m", 25 * S + 1, 20.0), rows[0]])
    assert dict(c.removed) == {"duplicate": 10, "conflict": 10, "out_of_order": 2}


def test_nab_repeated_hour_is_conflicts_as_in_the_report(shared_data: Path) -> None:
    """Check NAB's machine_temperature_system_failure, whose hour from 02:00 of
    2014-01-07 comes twice with other values, has 12 conflicts in the stream as in the
    report (11 'out_of_order' and 1 conflict before)."""
    df = pd.read_csv(shared_data / "nab" / "data" / "realKnownCause"
                     / "machine_temperature_system_failure.csv")
    ts = pd.to_datetime(df.timestamp).astype("datetime64[ns]").astype("int64").to_numpy()
    v = df.value.to_numpy(float)
    c = StreamCleaner()
    c.clean([Reading("d", "m", int(t), float(x)) for t, x in zip(ts, v, strict=True)])
    f = metric_issues(ts, v)["figures"]
    assert dict(c.removed) == {"conflict": 12}
    assert (f["conflicts"], f["duplicates"], f["out_of_order"]) == (12, 0, 0)


# -- along the window's trend ------------------------------------------------------------


def test_glitches_on_a_ramp_are_found() -> None:
    """Check a tank heating 0.1 C a reading (noise 0.02) with glitches of 2 C up and down
    has exactly those flagged, as in the batch report (none was: the window's median lags
    the ramp by 0.7 C, and its spread is the ramp's)."""
    rng = np.random.default_rng(0)
    v = 20 + 0.1 * np.arange(500) + rng.normal(0, 0.02, 500)
    v[[100, 300]] += 2.0
    v[[200, 400]] -= 2.0
    assert _flags(v) == [100, 200, 300, 400]


@pytest.mark.parametrize("period", [60, 90, 240])
def test_a_clean_cycle_has_no_spikes_at_its_turns(period: int) -> None:
    """Check a sine of 5 units read period times a cycle has no spike in 30 cycles (2 to
    4 a cycle before, at its turns), as in the batch report."""
    v = 20 + 5 * np.sin(2 * np.pi * np.arange(30 * period) / period)
    assert _flags(v) == []


def test_nab_taxi_demand_is_not_spiky(shared_data: Path) -> None:
    """Check NAB's nyc_taxi (half-hourly passenger counts, a steep daily cycle) has at most
    10 spikes in the stream (583 before, 2 or 3 each morning and evening), against 1 in
    the report."""
    df = pd.read_csv(shared_data / "nab" / "data" / "realKnownCause" / "nyc_taxi.csv")
    ts = pd.to_datetime(df.timestamp).astype("datetime64[ns]").astype("int64").to_numpy()
    assert len(_flags(df.value.to_numpy(float), ts=ts)) <= 10


# -- a state saved before these fields ---------------------------------------------------


def test_a_state_saved_before_the_new_fields_loads_and_learns_them() -> None:
    """Check a stream state saved without the window's times, outlier marks, finest move,
    long-run noise and trend (same STATE_VERSION) loads, cleans on, counts re-deliveries
    once it has kept times again and judges a held sensor by its noise; a cleaner pickled
    mid-stream goes on exactly as one that was not."""
    v = _held(4, 2000)
    v[1500] += 6.0
    whole = StreamCleaner()
    want = _flags(v, whole)
    c = StreamCleaner()
    _flags(v[:1000], c)
    resumed = pickle.loads(pickle.dumps(c))
    assert _flags(v[1000:], resumed, start=1000) == [i for i in want if i >= 1000]
    assert resumed.counts() == whole.counts()

    old = c.export_state()
    for state in old.values():
        for name in NEW_FIELDS:
            vars(state).pop(name, None)
    c2 = StreamCleaner()
    assert c2.import_state(pickle.loads(pickle.dumps(old)), STATE_VERSION)
    assert c2.clean_one(Reading("d", "m", 998 * S, float(v[998]))) is None  # no times
    assert dict(c2.removed) == {"out_of_order": 1}
    later = _flags(v[1000:], c2, start=1000)
    assert 1500 in later and len(later) <= 6
    assert c2.clean_one(Reading("d", "m", 1998 * S, float(v[1998]))) is None
    assert dict(c2.removed) == {"out_of_order": 1, "duplicate": 1}
