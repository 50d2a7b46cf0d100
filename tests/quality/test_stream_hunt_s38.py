"""The gateway's stream cleaner follows the batch report's levels, usual step and rest value
(commit 5a29763, :mod:`edgewise.quality.spikes`, :mod:`edgewise.quality.stuck`), judged on
the readings seen so far.

Before, the stream kept its own rules: a value a series takes in 5 % or more of its
readings (a CPU idling at 0.066 % that reads 0.134 %) was a spike each time it stood out
from the window, jitter of 0.002 was the step an AWS CPU reading moved in (so a move by one
0.067 % step was a spike), and a disk idle (0 bytes written) most of the time was stuck at 0
every night. NAB's ec2_cpu_utilization_24ae8d and _c6585a had 479 and 785 spikes in the
stream where the report has 16 and 14, and ec2_disk_write_bytes_1ef3de 2007 stuck readings
where the report has none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.quality.report import metric_issues
from edgewise.quality.spikes import hampel_mask, levels
from edgewise.quality.stream import StreamCleaner
from edgewise.quality.stuck import stuck_runs
from edgewise.telemetry import Reading
from tests.quality.test_quality_hunt_s38a import _disk  # the same idle disk as the report's

M = 60 * 10**9
NAB_AWS = ("nab", "data", "realAWSCloudwatch")


def _flags(values: np.ndarray, ts: np.ndarray | None = None,
           ) -> tuple[list[int], StreamCleaner]:
    """The positions the stream cleaner flags as spikes, and the cleaner after them (NAB's
    disk series repeats a time: one reading removed as a duplicate)."""
    t = np.arange(len(values)) * M if ts is None else ts
    c = StreamCleaner()
    out = []
    for i, (x, at) in enumerate(zip(values, t, strict=True)):
        n = c.flagged["spike"]
        c.clean_one(Reading("d", "m", int(at), float(x)))
        if c.flagged["spike"] != n:
            out.append(i)
    return out, c


def _nab(shared_data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(shared_data.joinpath(*NAB_AWS, f"{name}.csv"))
    ts = pd.to_datetime(df.timestamp).astype("datetime64[ns]").astype("int64").to_numpy()
    return ts, df.value.to_numpy(float)


# -- (a) a value the series takes in 5 % of its readings is a level ---------------------


def test_a_mode_in_one_reading_of_ten_is_a_level_once_seen_three_times() -> None:
    """Check a sensor reporting tenths (20.0, 20.1) that reads 35.0 in one reading of ten
    has its first two 35.0s flagged (not yet a level: the stream cannot look ahead) and
    none after (before: all 30); the report calls none a spike; a glitch to 500 is one."""
    rng = np.random.default_rng(1)
    v = np.round(20.0 + 0.1 * rng.integers(0, 2, 300), 1)
    v[5::10] = 35.0
    v[252] = 500.0
    assert levels(v)[5] and not levels(v)[252]
    assert np.flatnonzero(hampel_mask(v, n_sigmas=5.0)).tolist() == [252]
    assert _flags(v)[0] == [5, 15, 252]


def test_a_rare_dropout_is_still_a_spike() -> None:
    """Check the same dropout of a valve (100.0 to 0.0) in 3 readings of 100 is a spike
    each time: 3 of 91 readings so far is under 5 %, no level."""
    v = np.full(100, 100.0)
    v[::2] += 0.5  # a live sensor, two values: not a setpoint's few levels
    v[[10, 50, 90]] = 0.0
    assert _flags(v)[0] == [10, 50, 90]


def test_a_dropout_common_early_is_a_level_in_the_stream_only() -> None:
    """Check the documented difference: a dropout in 3 of the first 51 readings (3 of 100
    in all) is a level in the stream from its third (5.9 % so far), where the report, which
    sees all 100, flags all three."""
    v = np.full(100, 100.0)
    v[::2] += 0.5
    v[[10, 30, 50]] = 0.0
    assert np.flatnonzero(hampel_mask(v, n_sigmas=5.0)).tolist() == [10, 30, 50]
    assert _flags(v)[0] == [10, 30]


# -- (b) jitter below the step the sensor moves in is no floor --------------------------


def _cpu(seed: int = 2, n: int = 1400) -> np.ndarray:
    """AWS-like CPU %: busy at 0.132/0.134/0.136 (jitter of 0.002), idle at 0.066/0.068 one
    reading in seven (levels), one step up to 0.2 one reading in 50 (no level), one glitch
    to 0.9."""
    rng = np.random.default_rng(seed)
    v = rng.choice([0.132, 0.134, 0.136], n, p=[0.3, 0.6, 0.1])
    idle = rng.random(n) < 1 / 7
    v[idle] = rng.choice([0.066, 0.068], int(idle.sum()), p=[0.8, 0.2])
    v[np.arange(50, n, 50)] = 0.2
    v[700] = 0.9
    return v


def test_a_move_by_one_usual_step_above_the_jitter_is_no_spike() -> None:
    """Check a CPU series that jitters by 0.002 and moves between its levels by 0.066
    flags no one-step move to 0.2 (27 of them, each under 5 %: no level; before: all but
    one of them, 209 spikes in all; with the levels alone 44), only the glitch to 0.9
    and 3 readings of its first 40; the report flags the glitch only."""
    v = _cpu()
    assert not levels(v)[50]
    assert np.flatnonzero(metric_issues(np.arange(len(v)) * M, v)["flags"]["spike"]
                          ).tolist() == [700]
    flagged = _flags(v)[0]
    assert [i for i in flagged if i >= 40] == [700], flagged
    assert len(flagged) <= 4


@pytest.mark.parametrize("name", ["ec2_cpu_utilization_24ae8d", "ec2_cpu_utilization_c6585a"])
def test_nab_cpu_spikes_are_the_reports_after_the_first_window(shared_data: Path,
                                                                name: str) -> None:
    """Check NAB's two quantised AWS CPU series: from reading 15 (one spike window) on,
    the stream flags exactly the readings the report does (16 and 14, jumps to 0.6 % and
    over; before: 479 and 785)."""
    ts, v = _nab(shared_data, name)
    flagged, _ = _flags(v, ts)
    batch = np.flatnonzero(metric_issues(ts, v)["flags"]["spike"]).tolist()
    assert [i for i in flagged if i >= 15] == [i for i in batch if i >= 15]
    assert len(flagged) <= 0.01 * len(v)


# -- (c) a run at the value the series rests at is not stuck ----------------------------


def _stuck(v: np.ndarray, every: int = 5 * M) -> int:
    c = StreamCleaner()
    c.clean([Reading("d", "m", i * every, float(x)) for i, x in enumerate(v)])
    return c.flagged["stuck"]


def test_an_idle_disk_is_not_stuck_at_zero_but_a_freeze_is() -> None:
    """Check a disk idle in 88 % of its readings has no stuck reading (before: 2425, each
    night's 300 zeros), as in the report; frozen at one write size for 400 readings, those
    400 are stuck."""
    v = _disk(0)
    assert stuck_runs(v, min_run=20) == []
    assert _stuck(v) == 0
    v[1000:1400] = 123456.0
    assert _stuck(v) == 400


def test_freezes_at_one_value_are_still_stuck() -> None:
    """Check a sensor frozen at one value for most of the window, or twice, is still stuck:
    a freeze counts 20 of its readings towards its value's time."""
    rng = np.random.default_rng(5)
    live = np.round(20 + rng.normal(0, 0.3, 200), 2)
    assert _stuck(np.r_[live, np.full(600, 21.37)]) == 600
    assert _stuck(np.r_[live[:100], np.full(300, 21.37), live[100:],
                        np.full(300, 21.37)]) == 600


def test_nab_idle_disk_is_stuck_only_in_its_first_run(shared_data: Path) -> None:
    """Check NAB's ec2_disk_write_bytes_1ef3de (0 bytes in 90 % of readings) has only its
    first run stuck in the stream (461 zeros from the first reading: nothing before it to
    tell a rest from a freeze; the report, seeing what follows, has none), where before
    2007 readings were."""
    ts, v = _nab(shared_data, "ec2_disk_write_bytes_1ef3de")
    first = int(np.flatnonzero(v != 0)[0])
    assert first == 461
    _, c = _flags(v, ts)
    assert c.flagged["stuck"] == first
    assert metric_issues(ts, v)["figures"]["stuck"] == 0
