"""Times more than 2**63 ns apart (a mistyped year 1724 among readings of 2024; both fit
int64) overflowed np.diff: the report failed with a false 'deduplicate needs times sorted
ascending', find_gaps found no gap and completeness was negative."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.quality.duplicates import deduplicate
from edgewise.quality.gaps import completeness, expected_interval, find_gaps, timeliness
from edgewise.quality.report import device_report

load_commands()

T1724 = int(np.datetime64("1724-01-01T00:00:00", "ns").astype(np.int64))
T2024 = int(np.datetime64("2024-01-01T00:00:00", "ns").astype(np.int64))
TS = np.array([T1724] + [T2024 + i * 10**9 for i in range(20)], dtype=np.int64)


def test_gaps_and_completeness_over_three_centuries() -> None:
    assert find_gaps(TS) == [(T1724, T2024)]
    assert 0 < completeness(TS) < 1e-8
    assert expected_interval(TS) == 1e9
    assert timeliness(TS) == 19 / 20


def test_deduplicate_and_the_report_take_sorted_times_that_far_apart() -> None:
    r = deduplicate(TS, np.ones(len(TS)))
    assert r.ts.tolist() == TS.tolist()
    m = device_report([{"device_id": "d", "metric": "m", "ts_ns": int(t), "value": 1.0 + i % 2}
                       for i, t in enumerate(TS)])["metrics"]["m"]
    assert (m["gaps"], m["distinct_times"], m["out_of_order"]) == (1, 21, 0)
    assert 0 <= m["completeness"] <= 1


def test_cli_reports_a_mistyped_year(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_text("ts,temp\n1724-01-01T00:00:00Z,1\n" + "".join(
        f"2024-01-01T00:00:{i:02d}Z,{i % 2}\n" for i in range(20)))
    res = CliRunner(mix_stderr=False).invoke(app, ["quality", str(f)])
    assert res.exit_code == 0, res.stderr
    assert "temp" in res.stdout


def test_rate_limit_over_three_centuries_is_no_false_rate() -> None:
    from edgewise.quality.limits import Limits, check_limits

    # 1724 then 2024 wrapped to a negative interval: 1 unit over "-292 years" read as a
    # huge rate, so the 2024 reading was flagged
    with np.errstate(over="raise"):
        out = check_limits(TS[:2], [1.0, 2.0], Limits(max_rate=1.0))
    assert out == {"out_of_range": [], "rate": []}
