"""Spikes in short series, a quantised sensor's one-step moves, an idle metric's runs and
``repair``'s word on a non-DuckDB store.

Before: a spike in 3 to 5 readings was never found (its own two steps were half the steps
and set the noise floor: 20, 500, 20.1, 20 had no spike); AWS CPU readings in steps of
0.067 % that jitter by 0.002 had a quarter of their readings called spikes (the
resolution was the jitter, and the one-step blips from an idle 0.066 to 0.134, one
reading in seven, were one-way outliers that set no resolution); a disk that writes 0
bytes in nine readings of ten was 'stuck' at 0 (1600 of 4719 readings of NAB's
ec2_disk_write_bytes_1ef3de); ``edgewise repair --store sqlite:///x.db`` was told that
PostgreSQL recovers its own log.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.quality.report import device_report, metric_issues
from edgewise.quality.spikes import hampel_mask
from edgewise.quality.stuck import stuck_runs

load_commands()

S = 10**9
M = 60 * S
NO_ENV = {"EDGEWISE_STORE": None, "EDGEWISE_DATA_DIR": None, "EDGEWISE_DETECTOR": None}


def _report_spikes(values: list[float], every_s: int = 15 * 60) -> int:
    rows = [{"device_id": "d", "metric": "temp", "ts_ns": i * every_s * S, "value": x}
            for i, x in enumerate(values)]
    return device_report(rows)["metrics"]["temp"]["spikes"]


# -- 1. a spike in a short series ----------------------------------------------------------


@pytest.mark.parametrize(("values", "where"), [
    ([20.0, 500.0, 20.1, 20.0], [1]),
    ([20.0, 20.1, 500.0, 20.0, 20.1], [2]),
    ([20.0, 20.0, 500.0, 20.0], [2]),
    ([20.0, 20.1, 500.0, 20.0, 20.1, 20.0], [2]),  # found before too
])
def test_a_spike_in_four_or_five_readings_is_found(values: list[float], where: list[int]) -> None:
    """Check a glitch to 500 in 4 to 6 readings of a 15-minute sensor (a 1-hour report
    window) is one spike, in hampel_mask and in the report, and the 20.1 beside it none
    (before: no spike with 5 readings or fewer)."""
    assert np.flatnonzero(hampel_mask(values)).tolist() == where
    assert np.flatnonzero(hampel_mask(values, n_sigmas=5.0)).tolist() == where
    assert _report_spikes(values) == 1


def test_three_readings_still_show_no_noise_to_judge_by() -> None:
    """Check 20, 500, 20 stays unjudged (every step is the spike's own: no noise known)
    and a long series' noise is unchanged by the rule (its spike is one of many steps)."""
    assert not hampel_mask([20.0, 500.0, 20.0]).any()
    rng = np.random.default_rng(0)
    v = 20 + rng.normal(0, 0.3, 300)
    v[150] = 30.0
    assert np.flatnonzero(hampel_mask(v, n_sigmas=5.0)).tolist() == [150]


# -- 2. a quantised sensor's one-step moves -------------------------------------------------


def _cpu(seed: int, level: list[float], other: list[list[float]], share: list[float],
         n: int = 2000) -> np.ndarray:
    """A 5-minute CPU series at ``level`` (values picked with jitter), now and then at one
    of the ``other`` levels (its share of the readings each), and two glitches."""
    rng = np.random.default_rng(seed)
    where = rng.choice(len(other) + 1, n, p=[1 - sum(share), *share])
    v = np.array([rng.choice([level, *other][k]) for k in where])
    v[[500, 1500]] = [1.466, 1.534]
    return v


@pytest.mark.parametrize("v", [
    # idle at 0.066/0.068, one reading in five a step up (0.132..0.136)
    _cpu(0, [0.066, 0.066, 0.068], [[0.132, 0.134, 0.134, 0.136]], [0.2]),
    # busy at 0.132..0.136, a step down in 18 %, a step up in 3 % of the readings
    _cpu(1, [0.132, 0.134, 0.134, 0.136], [[0.066, 0.068], [0.198, 0.2, 0.202]],
         [0.18, 0.03]),
], ids=["idle", "busy"])
def test_one_step_moves_of_a_jittery_quantised_cpu_are_no_spikes(v: np.ndarray) -> None:
    """Check a CPU read in steps of 0.067 % with 0.002 jitter has only its two glitches
    (1.466, 1.534) for spikes (before: hundreds of its one-step moves too)."""
    from edgewise.quality.spikes import usual_step  # new here: the old code fails above

    issues = metric_issues(np.arange(len(v)) * 5 * M, v)
    assert np.flatnonzero(issues["flags"]["spike"]).tolist() == [500, 1500]
    assert round(usual_step(v, outliers=np.zeros(len(v), dtype=bool)), 3) >= 0.06


def test_nab_cpu_series_have_few_spikes(shared_data: Path) -> None:
    """Check NAB's two quantised AWS CPU series: at most 1 % of readings are spikes
    (before: 24 % and 23 %), jumps of many steps (to 0.6 % and over) only."""
    for name in ("ec2_cpu_utilization_24ae8d", "ec2_cpu_utilization_c6585a"):
        df = pd.read_csv(shared_data / "nab" / "data" / "realAWSCloudwatch" / f"{name}.csv")
        ts = pd.to_datetime(df.timestamp).astype("datetime64[ns]").astype("int64").to_numpy()
        spike = metric_issues(ts, df.value.to_numpy(float))["flags"]["spike"]
        assert 0 < spike.sum() <= 0.01 * len(spike), (name, int(spike.sum()))
        assert (df.value.to_numpy()[spike] > 0.5).all(), name


def test_rare_dropouts_and_rare_large_moves_still_leave_spikes() -> None:
    """Check the new rules do not hide glitches: three dropouts of a valve in 100 readings
    are spikes (a value in 3 % of readings is no level), and a flat 20.0 that blips by
    0.1 and whose setpoint moved by 5.0 three times keeps 0.1 as its step: a glitch to
    22.0 is a spike (with 5.0 for a step it would need to be 25 away)."""
    from edgewise.quality.spikes import usual_step

    valve = np.full(100, 100.0)
    valve[[10, 50, 90]] = 0.0
    assert np.flatnonzero(hampel_mask(valve, n_sigmas=5.0)).tolist() == [10, 50, 90]
    v = np.r_[[20.0, 20.0, 20.1] * 10, np.repeat([25.0, 20.0, 25.0, 20.0], 50)]
    v[200] = 22.0
    assert np.flatnonzero(hampel_mask(v, n_sigmas=5.0)).tolist() == [200]
    assert round(usual_step(v, outliers=np.zeros(len(v), dtype=bool)), 3) == 0.1


# -- 8. runs at an idle metric's usual value ------------------------------------------------


def _disk(seed: int, days: int = 8) -> np.ndarray:
    """Bytes written in 5-minute readings: by day 0 (idle) seven times in ten, else a write;
    idle all night (300 readings): 0 in 88 % of the readings."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(days):
        writes = rng.integers(10**5, 10**7, 200).astype(float)
        parts += [np.where(rng.random(200) < 0.7, 0.0, writes), np.zeros(300)]
    return np.concatenate(parts)


def test_an_idle_disk_is_not_stuck_at_zero() -> None:
    """Check a disk idle (0 bytes written) in 88 % of its readings, all night and between
    writes by day, has no stuck run (before: each night's 300 zeros), in stuck_runs and
    in the report; frozen at one write size for 400 readings, it is stuck."""
    v = _disk(0)
    ts = np.arange(len(v)) * 5 * M
    assert stuck_runs(v, min_run=20, ts=ts) == []
    assert metric_issues(ts, v)["figures"]["stuck"] == 0
    v[1000:1400] = 123456.0
    assert stuck_runs(v, min_run=20, ts=ts) == [(1000, 1400)]


def test_freezes_are_still_stuck_however_long_or_often() -> None:
    """Check a sensor frozen for most of the window at one value (live 200 readings,
    frozen 600), or frozen twice at one value, is still stuck: a freeze counts 20 of its
    readings and nothing towards its own value's share."""
    rng = np.random.default_rng(5)
    live = np.round(20 + rng.normal(0, 0.3, 200), 2)
    v = np.r_[live, np.full(600, 21.37)]
    assert stuck_runs(v, min_run=20) == [(200, 800)]
    v = np.r_[live[:100], np.full(300, 21.37), live[100:], np.full(300, 21.37)]
    assert stuck_runs(v, min_run=20) == [(100, 400), (500, 800)]


# -- 9. repair on a store that is not DuckDB -----------------------------------------------


def _repair(tmp_path: Path, url: str, *extra: str):
    return CliRunner(mix_stderr=False).invoke(
        app, ["repair", "--data-dir", str(tmp_path), "--store", url, *extra], env=NO_ENV)


def test_repair_names_an_unsupported_scheme_and_the_supported_ones(tmp_path: Path) -> None:
    """Check 'sqlite:///x.db' is refused naming its scheme and the supported URLs, with no
    word of PostgreSQL recovering its log (before: 'PostgreSQL recovers its own log on
    start' for any scheme); in JSON too."""
    res = _repair(tmp_path, "sqlite:///tmp/x.db")
    assert res.exit_code == 2, res.output + res.stderr
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error:")
    assert "'sqlite'" in line and "duckdb:///ABS/PATH" in line and "postgresql://" in line
    assert "recovers its own log" not in line
    res = _repair(tmp_path, "sqlite:///tmp/x.db", "--json")
    assert "'sqlite'" in json.loads(res.stdout)["error"]


@pytest.mark.parametrize("url", ["postgresql://ew:secret@db/ew", "postgres://ew@db/ew",
                                 "postgresql+psycopg://ew@db/ew"])
def test_repair_on_postgresql_says_it_recovers_its_own_log(tmp_path: Path, url: str) -> None:
    """Check a PostgreSQL URL gets the sentence that PostgreSQL recovers its own log, with
    its password masked."""
    res = _repair(tmp_path, url)
    assert res.exit_code == 2
    assert "PostgreSQL" in res.stderr and "recovers its own log" in res.stderr
    assert "secret" not in res.stderr
