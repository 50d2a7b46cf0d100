"""Stuck runs that hide each other, outages that count as holding, and the README's
sentence on a one-tenth shift in the stream cleaner.

Before, a run's typical hold was the time-weighted median over every other run, stuck ones
too: a sensor live a day, stuck three, live one, stuck three had each freeze judge the
other as normal (the batch report flagged 0 of 8640 stuck readings), and the stream, whose
hold bins keep every run, flagged the first freeze only. A 2-day outage inside a slow
sensor's ordinary hold of a tenth made that hold two days long: 24 readings stuck in both.
The README said the stream flags a one-tenth shift off a flat start 8 times; it flags 2.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edgewise.quality.report import metric_issues
from edgewise.quality.stream import LEVEL_SHIFT_RUN, STATE_VERSION, StreamCleaner
from edgewise.quality.stuck import stuck_runs
from edgewise.telemetry import Reading

S = 10**9
M = 60 * S  # a reading a minute
README = Path(__file__).resolve().parents[2] / "README.md"


def _readings(ts: np.ndarray, values: np.ndarray) -> list[Reading]:
    return [Reading("d", "m", int(t), float(v)) for t, v in zip(ts, values, strict=True)]


def _stream_stuck(ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The readings the stream flags stuck: a run's, from its start, once it qualifies."""
    c = StreamCleaner()
    flagged = np.zeros(len(values), dtype=bool)
    for i, r in enumerate(_readings(ts, values)):
        c.clean_one(r)
        st = c._state[("d", "m")]
        if st.run_stuck:
            flagged[i - st.run + 1: i + 1] = True
    return flagged


def _live(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.round(20 + rng.normal(0, 0.3, n), 2)


def test_two_long_freezes_are_both_stuck_in_batch_and_stream() -> None:
    """Check a sensor live 1 part, stuck 3, live 1, stuck 3 (one reading each 10 minutes:
    a part is a day) has both freezes stuck, in the report and in the stream: more time
    stuck than live no longer makes a freeze the typical hold."""
    rng = np.random.default_rng(0)
    day = 144
    v = np.r_[_live(rng, day), np.full(3 * day, 21.37), _live(rng, day),
              np.full(3 * day, 19.84)]
    ts = np.arange(len(v)) * 10 * M
    truth = np.zeros(len(v), dtype=bool)
    truth[day:4 * day] = truth[5 * day:] = True
    assert metric_issues(ts, v)["figures"]["stuck"] == int(truth.sum()) == 6 * day
    assert stuck_runs(v, min_run=20, ts=ts) == [(day, 4 * day), (5 * day, 8 * day)]
    assert (_stream_stuck(ts, v) == truth).all()


def test_after_a_long_freeze_an_ordinary_one_is_still_stuck() -> None:
    """Check after a freeze four times as long as the sensor was live before it, a later
    freeze of 40 readings (20 times a live hold, as always) is stuck in both: the long
    freeze counts towards the typical hold as 20 of its readings, not 2000."""
    rng = np.random.default_rng(1)
    v = np.r_[_live(rng, 500), np.full(2000, 21.23), _live(rng, 500), np.full(40, 19.87),
              _live(rng, 100)]
    ts = np.arange(len(v)) * M
    assert stuck_runs(v, min_run=20, ts=ts) == [(500, 2500), (3000, 3040)]
    stream = _stream_stuck(ts, v)
    assert stream[500:2500].all() and stream[3000:3040].all()
    assert int(stream.sum()) == 2040


def test_a_sensor_that_holds_long_runs_by_nature_still_makes_them_typical() -> None:
    """Check the typical hold still follows a sensor whose holds lengthened for good (noisy
    for an hour, then reporting tenths that it holds 30 readings each): the report calls
    none of its 150 holds stuck, and the stream, with no look-ahead, only its first few
    before they outweigh the noisy hour (a freeze left out of the typical hold altogether
    would have kept every later hold stuck)."""
    rng = np.random.default_rng(2)
    slow = np.repeat(np.round(21.0 + 0.1 * (np.arange(150) % 40), 1), 30)
    v = np.r_[_live(rng, 60), slow]
    ts = np.arange(len(v)) * M
    assert stuck_runs(v, min_run=20, ts=ts) == []
    stream = _stream_stuck(ts, v)
    assert 0 < int(stream.sum()) <= 5 * 30 and not stream[60 + 10 * 30:].any()


def _tenths(outage_at: int | None, outage_s: int = 2 * 86400) -> tuple[np.ndarray, np.ndarray]:
    """A slow room sensor in tenths, a reading a minute, each tenth held 12 readings (the
    turning point's 24), with an outage before reading ``outage_at``."""
    levels = np.round(21.0 + 0.1 * np.r_[np.arange(10), np.arange(10)[::-1]], 1)
    v = np.repeat(levels, 12)
    ts = np.arange(len(v)) * M
    if outage_at is not None:
        ts[outage_at:] += outage_s * S
    return ts, v


def test_an_outage_inside_a_hold_does_not_make_it_stuck() -> None:
    """Check a 2-day outage inside the sensor's 24-reading hold at its turning point leaves
    it unflagged in the report and the stream (it was 24 readings stuck in both): the
    outage counts as GAP_FACTOR expected spacings, still a gap in the report."""
    for at in (None, 126, 110, 130):
        ts, v = _tenths(at)
        f = metric_issues(ts, v)["figures"]
        assert f["stuck"] == 0 and f["gaps"] == (0 if at is None else 1), at
        c = StreamCleaner()
        c.clean(_readings(ts, v))
        assert c.flagged["stuck"] == 0, (at, dict(c.flagged))


def test_a_freeze_across_an_outage_is_still_stuck() -> None:
    """Check a real freeze of the same sensor, 300 readings (over 20 times its 12-reading
    hold) with a 2-day outage inside, is stuck in both: the outage only stops counting."""
    ts, v = _tenths(None)
    v = np.r_[v[:120], np.full(300, v[120]), v[120:]]
    ts = np.arange(len(v)) * M
    ts[250:] += 2 * 86400 * S
    # the freeze joins the turning point's 24 readings of 21.9 on either side
    assert stuck_runs(v, min_run=20, ts=ts) == [(108, 432)]
    assert metric_issues(ts, v)["figures"]["stuck"] == 324
    stream = _stream_stuck(ts, v)
    assert stream[108:432].all() and int(stream.sum()) == 324


def _in_batch_stuck(ts: np.ndarray, v: np.ndarray) -> bool:
    runs = stuck_runs(v, min_run=20, ts=ts)
    return bool(runs) and runs[-1][1] == len(v)


@pytest.mark.parametrize("seed", [3, 4])
def test_the_stream_takes_stuck_runs_as_the_batch_does_with_freezes_and_outages(
    seed: int,
) -> None:
    """Check for random series of runs (a reading to 600 readings, 40 levels, a reading a
    minute with a silence of a minute to two days now and then, after the first ten: the
    stream goes by the spacing seen so far) the stream counts the run under way as stuck
    exactly when the batch rule on the readings so far calls it stuck."""
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 3, 5, 8, 13, 25, 40, 100, 600]
    checked = {True: 0, False: 0}
    across = 0
    for _ in range(6):
        runs = rng.choice(lengths, 16, p=[.3, .2, .1, .1, .05, .05, .05, .05, .05, .05])
        levels = [int(rng.integers(40))]
        for _ in runs[1:]:
            levels.append(int(rng.choice([x for x in range(40) if x != levels[-1]])))
        v = np.repeat(20.0 + 0.5 * np.array(levels, dtype=float), runs)
        dt = np.full(len(v), M)
        out = rng.random(len(v)) < 0.01
        out[:10] = False  # the stream can tell a gap once it has a spacing to go by
        dt[out] = rng.integers(60, 2 * 86400, int(out.sum())) * S
        dt[0] = 0
        ts = np.cumsum(dt)
        c = StreamCleaner()
        for i, r in enumerate(_readings(ts, v)):
            c.clean_one(r)
            st = c._state[("d", "m")]
            if st.run >= 20 and len(np.unique(v[: i + 1])) > 1:
                want = _in_batch_stuck(ts[: i + 1], v[: i + 1])
                assert st.run_stuck == want, (seed, runs.tolist(), i)
                checked[want] += 1
                across += bool((dt[i - st.run + 2: i + 1] > 2.5 * M).any())
    assert checked[True] >= 100 and checked[False] >= 20, checked
    assert across >= 500, across  # judged in runs held across an outage


def test_a_state_saved_with_the_old_hold_bins_still_loads() -> None:
    """Check a stream state saved before the time each run counts with (hold bins of three:
    bin, runs, total hold) loads, counts those holds as they were, and goes on."""
    rng = np.random.default_rng(5)
    v = np.r_[_live(rng, 200), np.full(30, 19.5), _live(rng, 20)]
    rs = _readings(np.arange(len(v)) * M, v)
    first = StreamCleaner()
    first.clean(rs[:200])
    state = first.export_state()
    st = state[("d", "m")]
    st.hold_bins = [b[:3] for b in st.hold_bins]  # type: ignore[attr-defined]
    for name in ("run_excess", "gap_bins", "gap_every", "gap_max", "gap_bin"):
        vars(st).pop(name, None)
    c = StreamCleaner()
    assert c.import_state(state, STATE_VERSION)
    c.clean(rs[200:])
    assert c.flagged["stuck"] == 30
    assert all(len(b) == 4 for b in c._state[("d", "m")].hold_bins or [])


def test_readme_says_how_many_readings_of_a_one_tenth_shift_the_stream_flags() -> None:
    """Check the README's count of the flagged readings of a one-tenth shift off a flat
    start is the stream's: the first LEVEL_SHIFT_RUN - 1 (it said 8, one per reading until
    the window's median follows)."""
    text = " ".join(README.read_text().split())
    said = re.search(r"\(a shift by one tenth: ([^)]*)\)", text)
    assert said is not None
    assert "its first two readings" in said.group(1) and "8 of them" not in said.group(1)
    for flat in (5, 20, 60):
        v = np.r_[np.full(flat, 20.0), np.full(30, 20.1)]
        c = StreamCleaner()
        flagged = []
        for i, r in enumerate(_readings(np.arange(len(v)) * M, v)):
            before = c.flagged["spike"]
            c.clean_one(r)
            if c.flagged["spike"] > before:
                flagged.append(i)
        assert flagged == list(range(flat, flat + LEVEL_SHIFT_RUN - 1)) == [flat, flat + 1]
