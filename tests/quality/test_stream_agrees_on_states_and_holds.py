"""The gateway's stream cleaner means by two-state and stuck what the batch report means
(:mod:`edgewise.quality.states`, :mod:`edgewise.quality.stuck`), judged on the readings
it has seen so far.

Before, the stream took only a 0/1 series for two-state and any 20 identical readings
for stuck. The dashboard shows the report's figures beside the cleaner's, and they did
not agree. A heater's 0/1500 W pulses were 20 spikes in 120 readings where the report
saw a two-state series (dropping spikes lost every pulse and then called 100 readings
stuck). A setpoint that held 55 for an hour was 60 readings stuck, and a sensor that
reports tenths and warms slowly was 491 of 600 readings stuck. The report flags none of
these.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.quality.report import device_report
from edgewise.quality.states import two_state
from edgewise.quality.stream import STATE_VERSION, StreamCleaner
from edgewise.quality.stuck import FEW_LEVELS, stuck_runs
from edgewise.telemetry import Reading

M = 60 * 10**9  # a reading a minute
HEATER = np.tile(np.r_[np.zeros(10), np.full(2, 1500.0)], 10)  # 2 minutes on in 12


def _readings(values: np.ndarray | list[float], metric: str = "m") -> list[Reading]:
    return [Reading("d", metric, i * M, float(v)) for i, v in enumerate(values)]


def _both(values: np.ndarray | list[float], drop_spikes: bool = False,
          ) -> tuple[dict, StreamCleaner, list[int]]:
    """The batch report's spikes, stuck and two-state figures, the stream cleaner after
    the same readings, and the positions it flagged (or dropped) as spikes."""
    rs = _readings(values)
    m = device_report(rs)["metrics"]["m"]
    c = StreamCleaner(drop_spikes=drop_spikes)
    spikes = []
    for i, r in enumerate(rs):
        before = c.flagged["spike"] + c.removed["spike"]
        c.clean_one(r)
        if c.flagged["spike"] + c.removed["spike"] > before:
            spikes.append(i)
    return {k: m[k] for k in ("spikes", "stuck", "binary")}, c, spikes


def test_a_heaters_pulses_are_no_spikes_once_it_is_two_state() -> None:
    """Check the stream flags only the first pulse (its two readings, before the batch
    rule can hold on what was seen: it flagged every pulse, 20) and none once the rule
    holds; a heater seen from a pulse on is two-state from its next pulse, as in the report."""
    batch, c, spikes = _both(HEATER)
    assert batch == {"spikes": 0, "stuck": 0, "binary": True}
    assert spikes == [10, 11] and dict(c.flagged) == {"spike": 2}
    assert not two_state(HEATER[:12])["binary"] and two_state(HEATER[:23])["binary"]
    batch, c, spikes = _both(np.r_[1500.0, 1500.0, HEATER])
    assert batch == {"spikes": 0, "stuck": 0, "binary": True}
    assert spikes == [] and dict(c.flagged) == {}


def test_dropping_spikes_keeps_a_heaters_pulses() -> None:
    """Check dropping spikes loses only the first pulse (it dropped all 20 pulse readings
    and then called the 100 readings of 0 W that were left stuck)."""
    _, c, spikes = _both(HEATER, drop_spikes=True)
    assert spikes == [10, 11]
    assert (c.kept, dict(c.removed), dict(c.flagged)) == (118, {"spike": 2}, {})


def test_a_setpoint_holding_for_an_hour_is_not_stuck() -> None:
    """Check a setpoint that moves 50, 52, holds 55 for an hour, then 52 and 50 has no
    stuck reading in the stream (it had 60) nor in the report: it holds its few values
    by nature."""
    v = np.r_[np.full(10, 50.0), np.full(10, 52.0), np.full(60, 55.0), np.full(10, 52.0),
              np.full(10, 50.0)]
    batch, c, _ = _both(v)
    assert batch["stuck"] == 0 and c.flagged["stuck"] == 0


def _warming() -> np.ndarray:
    """A sensor that reports tenths, warming 0.1 every 50 minutes with a little noise."""
    rng = np.random.default_rng(4)
    return np.round(20.05 + 0.002 * np.arange(600) + rng.normal(0, 0.01, 600), 1)


def test_a_quantised_sensor_warming_slowly_is_not_stuck_but_stuck_it_is() -> None:
    """Check a sensor that reports tenths and holds each for its usual minutes has no
    stuck reading in the stream (491 of 600 were) nor in the report; held 1500 minutes
    at the next tenth (far past 20 times its usual hold) it has 1500 in both (1991)."""
    warm = _warming()
    assert len(np.unique(warm)) > FEW_LEVELS
    batch, c, _ = _both(warm)
    assert batch["stuck"] == 0 and c.flagged["stuck"] == 0
    batch, c, _ = _both(np.r_[warm, np.full(1500, warm[-1] + 0.1)])
    assert batch["stuck"] == c.flagged["stuck"] == 1500


def test_the_stream_takes_two_state_as_the_batch_does_on_what_it_has_seen() -> None:
    """Check after every reading of random series of two to three levels (0/1, a heater,
    a valve with dropouts) the stream calls the series two-state, and few-level, exactly
    when the batch rules hold on the readings so far."""
    rng = np.random.default_rng(11)
    pairs = [(0.0, 1.0), (0.0, 1500.0), (100.0, 0.0), (20.0, 25.0)]
    judged = {True: 0, False: 0}
    for trial in range(120):
        a, b = pairs[trial % len(pairs)]
        n = int(rng.integers(5, 60))
        rare = float(rng.choice([0.02, 0.1, 0.3]))
        v = np.where(rng.random(n) < rare, b, a)
        if trial % 5 == 0:
            v[rng.integers(0, n)] = 7.0  # a third level
        c = StreamCleaner()
        for i, r in enumerate(_readings(v)):
            c.clean_one(r)
            st = c._state[("d", "m")]
            want = bool(two_state(v[: i + 1])["binary"])
            assert st.two_state() == want, (v[: i + 1].tolist(),)
            assert st.few_levels() == (2 <= len(np.unique(v[: i + 1])) <= FEW_LEVELS)
            judged[want] += 1
    assert min(judged.values()) >= 500


def _in_batch_stuck(v: np.ndarray) -> bool:
    """Whether the batch calls the last run of ``v`` (readings a minute apart) stuck."""
    runs = stuck_runs(v, min_run=20, ts=np.arange(len(v)) * M)
    return bool(runs) and runs[-1][1] == len(v)


@pytest.mark.parametrize("n_levels", [3, 40])
def test_the_stream_takes_stuck_runs_as_the_batch_does_on_what_it_has_seen(
    n_levels: int,
) -> None:
    """Check for random series of runs (lengths a reading to 100, values from 3 or from
    40 levels) the stream counts the run under way as stuck exactly when the batch rule,
    on the readings so far, calls it stuck (20 readings, 20 times the typical hold of
    the runs before, more than FEW_LEVELS values). A series that has held one value all
    along is left out: the stream, with no hold to compare, goes by the run's length."""
    rng = np.random.default_rng(n_levels)
    lengths = [1, 2, 3, 5, 8, 13, 25, 40, 60, 100]
    checked = {True: 0, False: 0}
    for _ in range(12):
        runs = rng.choice(lengths, 14, p=[.3, .2, .1, .1, .05, .05, .05, .05, .05, .05])
        levels = rng.permutation(n_levels)[:1].tolist()
        for _ in runs[1:]:
            levels.append(int(rng.choice([x for x in range(n_levels) if x != levels[-1]])))
        v = np.repeat(20.0 + 0.5 * np.array(levels, dtype=float), runs)
        c = StreamCleaner()
        for i, r in enumerate(_readings(v)):
            c.clean_one(r)
            st = c._state[("d", "m")]
            if st.run >= 20 and len(np.unique(v[: i + 1])) > 1:
                want = _in_batch_stuck(v[: i + 1])
                assert st.run_stuck == want, (runs.tolist(), levels, i)
                checked[want] += 1
    assert checked[False] >= 50
    if n_levels > FEW_LEVELS:
        assert checked[True] >= 50


def test_a_state_saved_before_these_fields_still_loads() -> None:
    """Check a stream state saved by the version before (same STATE_VERSION: no levels,
    switches or holds; a boolean's count of 1s) loads. A stuck run under way goes on
    counting one a reading and is not counted twice. A boolean that had shown both values
    stays two-state. A heater's levels come from its spike window, so its later pulses
    are no spikes."""
    def feed(c: StreamCleaner, start: int, stop: int) -> None:
        c.clean(_readings([5.0] * 40, "s")[start:stop])
        c.clean(_readings([float(i >= 5) for i in range(60)], "f")[start:stop])
        c.clean(_readings(HEATER, "h")[start:stop])

    whole = StreamCleaner()
    feed(whole, 0, 120)
    first = StreamCleaner()
    feed(first, 0, 30)
    state = first.export_state()
    for key, st in state.items():
        old = vars(st)
        for name in ("levels", "many", "judged", "switches", "prev", "run_start",
                     "run_stuck", "typical", "hold_bins"):
            old.pop(name, None)
        old.update(kept=30, zero_one=key[1] == "f", ones=25 if key[1] == "f" else 0)
    c = StreamCleaner()
    assert c.import_state(state, STATE_VERSION)
    feed(c, 30, 120)
    assert dict(first.flagged) == {"stuck": 30, "spike": 2}
    assert dict(first.flagged + c.flagged) == dict(whole.flagged) == {"stuck": 40, "spike": 2}
