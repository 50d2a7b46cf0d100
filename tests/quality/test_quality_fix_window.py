"""Completeness, timeliness and gaps judged over the range a series should cover; fixes of
a hunt:

* A metric was judged between its own first and last reading: one that sent ten of an
  hour's sixty readings and went silent was complete, timely and without a gap (the
  server's range, and ``edgewise quality`` on a wide file whose column stopped early).
* Of three times, the expected spacing was the mean of the two intervals: ``[0, 1, 100]``
  had no gap.
* A late re-delivery of a time already seen counted as a duplicate and out of order.
* A device of a wide file whose metric cells were all empty left the report unsaid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import QualityError
from edgewise.quality.gaps import completeness, expected_interval, find_gaps, timeliness
from edgewise.quality.report import device_report, metric_issues

load_commands()

S = 10**9
M = 60 * S


def _quality(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, ["quality", *args])


def test_the_silence_after_the_last_reading_in_the_span_is_a_gap() -> None:
    """Check 10 one-minute readings of an hour's span are 1/6 complete, with the 51
    minutes after them a gap and a late interval; the silence before the first too."""
    ts = np.arange(10) * M
    span = (0, 60 * M)
    assert round(completeness(ts, span=span), 4) == 0.1667
    assert find_gaps(ts, span=span) == [(9 * M, 60 * M - 1)]
    assert timeliness(ts, span=span) == 0.9
    late = ts + 50 * M  # the first 50 minutes silent
    assert round(completeness(late, span=span), 4) == 0.1667
    assert find_gaps(late, span=span) == [(0, 50 * M)]
    # 3 spacings before, 4 after (to 12:59.999): 3 and 3 readings missed there
    assert find_gaps(ts, span=(-3 * M, 13 * M)) == [(-3 * M, 0), (9 * M, 13 * M - 1)]
    assert completeness(ts, span=(-3 * M, 13 * M)) == 10 / 16
    # a silence of 2.5 spacings or less is none (the readings' phase, or the next one's
    # latency at a live window's end); a reading outside widens the span
    near = (-5 * M // 2, 9 * M + 5 * M // 2 + 1)
    assert find_gaps(ts, span=near) == []
    assert completeness(ts, span=near) == 1.0
    assert timeliness(ts, span=near) == 9 / 11  # both late: over 1.5 spacings
    assert completeness(ts, span=(5 * M, 6 * M)) == 1.0


def test_a_span_of_the_series_own_range_changes_nothing() -> None:
    """Check 200 random series judged over [first, last + 1 ns) keep the figures they had
    without a span."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        t = np.sort(rng.integers(0, 10**6, int(rng.integers(2, 40)))) * 1000
        span = (int(t.min()), int(t.max()) + 1)
        assert completeness(t, span=span) == completeness(t)
        assert timeliness(t, span=span) == timeliness(t)
        assert find_gaps(t, span=span) == find_gaps(t)


def test_a_span_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(QualityError, match=r"end after start.*Got \(5, 5\)"):
        completeness([1, 2, 3], span=(5, 5))


def test_a_device_report_judges_each_metric_over_the_device_readings() -> None:
    """Check a metric that stopped after 10 of the 60 minutes another went on is 1/6
    complete with a 50-minute gap, in the device report (and the summary)."""
    rows = [{"device_id": "p", "metric": m, "ts_ns": i * M, "value": 20.0 + i % 3}
            for i in range(60) for m in ("temp", "hum") if m == "temp" or i < 10]
    rep = device_report(rows)
    hum, temp = rep["metrics"]["hum"], rep["metrics"]["temp"]
    assert (hum["completeness"], hum["gaps"], hum["longest_gap_s"]) == (0.1667, 1, 3000.0)
    assert (temp["completeness"], temp["gaps"]) == (1.0, 0)
    assert rep["summary"]["completeness"] == 0.5834 and rep["summary"]["gaps"] == 1
    # a span of a query: an hour of which the device sent the first half
    rep = device_report(rows, span=(0, 120 * M))
    assert rep["metrics"]["temp"]["completeness"] == 0.5


def test_the_cli_judges_a_wide_column_over_the_device_rows(tmp_path: Path) -> None:
    """Check ``hum`` that stops after 10 of 60 rows is 0.167 complete with a gap in the
    text and in --json, alike; rows whose cells are all empty still count as the file's
    time of the device."""
    lines = ["time,temp,hum"]
    lines += [f"2024-01-01T00:{i:02d}:00Z,{20 + i % 3},{50 + i % 2 if i < 10 else ''}"
              for i in range(60)]
    lines += [f"2024-01-01T01:{i:02d}:00Z,," for i in range(5)]  # the logger went on
    f = tmp_path / "wide.csv"
    f.write_text("\n".join(lines) + "\n")
    res = _quality(str(f))
    assert res.exit_code == 0, res.output
    row = {ln.split()[0]: ln.split() for ln in res.stdout.splitlines()[2:]}
    assert (row["hum"][2], row["hum"][9]) == ("0.154", "1")  # 10 of 65
    assert (row["temp"][2], row["temp"][9]) == ("0.923", "1")  # 60 of 65
    js = json.loads(_quality(str(f), "--json").stdout)["devices"]["device"]["metrics"]
    assert (js["hum"]["completeness"], js["hum"]["gaps"]) == (0.1538, 1)
    assert (js["temp"]["completeness"], js["temp"]["gaps"]) == (0.9231, 1)


def test_the_cli_plots_the_gap_at_the_end(tmp_path: Path) -> None:
    """Check --plots draws the metric whose only fault is that it stopped early, as its
    report counts a gap."""
    lines = ["time,temp,hum"]
    lines += [f"{i * 60},{20 + i % 3},{50 + i % 2 if i < 10 else ''}" for i in range(60)]
    f = tmp_path / "wide.csv"
    f.write_text("\n".join(lines) + "\n")
    res = _quality(str(f), "--plots", str(tmp_path / "plots"))
    assert res.exit_code == 0, res.output
    assert [Path(p).name for p in res.stdout.split("plot: ")[1:]] == ["device__hum.png\n"]


def test_three_times_with_one_long_interval_have_a_gap() -> None:
    """Check [0, 1, 100] s has the gap 1..100 s (the median of two intervals was their
    mean, 49.5 s, and no interval was longer than 2.5 of it)."""
    ts = np.array([0, 1, 100]) * S
    assert expected_interval(ts) == S
    assert find_gaps(ts) == [(S, 100 * S)]
    assert metric_issues(ts, [1.0, 2.0, 3.0])["figures"]["gaps"] == 1
    assert find_gaps(np.array([0, 1]) * S) == []


def test_a_late_re_delivery_is_one_fault() -> None:
    """Check t=2 s re-sent after t=4 s is a duplicate only (it was out of order too); a late
    reading at a new time is out of order."""
    ts = np.array([0, 1, 2, 3, 4, 2, 5]) * S
    vs = [1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 6.0]
    f = metric_issues(ts, vs)["figures"]
    assert (f["duplicates"], f["conflicts"], f["out_of_order"]) == (1, 0, 0)
    f = metric_issues(ts, [*vs[:5], 9.0, 6.0])["figures"]  # re-sent with another value
    assert (f["duplicates"], f["conflicts"], f["out_of_order"]) == (0, 1, 0)
    f = metric_issues(np.array([0, 1, 2, 3, 4, 1.5, 5]) * S, vs)["figures"]
    assert (f["duplicates"], f["out_of_order"], f["distinct_times"]) == (0, 1, 7)


def test_a_device_with_every_metric_cell_empty_is_named(tmp_path: Path) -> None:
    """Check a wide file's device whose metric cells are all empty is named in a note on
    stderr (text and --json), as an all-empty column is; it is in no report."""
    f = tmp_path / "widedev.csv"
    f.write_text("device_id,ts,temp\nd1,2024-01-01T00:00:00Z,20\nd2,2024-01-01T00:00:00Z,\n"
                 "d1,2024-01-01T00:01:00Z,21\nd2,2024-01-01T00:01:00Z,\n")
    note = ("note: device 'd2' left out of the report: every cell of its metric columns "
            "is empty (2 rows)\n")
    res = _quality(str(f))
    assert res.exit_code == 0 and res.stderr == note
    assert res.stdout.startswith("device d1:") and "d2" not in res.stdout
    res = _quality(str(f), "--json")
    assert res.exit_code == 0 and res.stderr == note
    assert list(json.loads(res.stdout)["devices"]) == ["d1"]
