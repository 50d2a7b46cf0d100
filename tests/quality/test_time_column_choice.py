"""Which column holds the times, when none is named: a full timestamp, not a date.

``find_time_column`` took the first time-named column in file order, so in
``date,timestamp,temp`` the date-only ``date`` won: ``edgewise quality`` counted a day's
readings as one time in conflict, and ``edgewise detect`` refused a duplicate timestamp,
pointing to --clock-column where ``--time-column timestamp`` was meant.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from edgewise.tables import clock_column, find_time_column
from tests.in_process import edgewise_here


@pytest.mark.parametrize(("columns", "found"), [
    (["date", "timestamp", "temp"], "timestamp"),
    (["Date", "ts", "temp"], "ts"),
    (["date", "datetime", "v"], "datetime"),
    (["date", "time", "v"], "date"),  # a date and its time of day: joined
    (["time", "date", "v"], "date"),
    (["date", "time", "timestamp", "v"], "timestamp"),
    (["date", "v"], "date"),  # the only one
    (["ts", "time", "v"], "time"),  # by the order of TIME_NAMES, not of the file
    (["device_id", "Timestamp", "ts"], "Timestamp"),
    (["v"], None),
])
def test_a_full_timestamp_is_preferred_to_a_date(columns: list[str], found: str | None) -> None:
    """Check the column found for each header."""
    assert find_time_column(pd.DataFrame(columns=columns)) == found


def test_a_date_beside_a_time_of_day_still_makes_the_time_with_it() -> None:
    """Check date,time,value is still read as a date joined to its time of day."""
    df = pd.DataFrame(columns=["date", "time", "value"])
    assert clock_column(df, find_time_column(df)) == "time"


def _file(tmp_path: Path) -> Path:
    rows = [f"2024-01-0{1 + h // 24},2024-01-0{1 + h // 24}T{h % 24:02d}:00:00Z,{20 + h % 3}"
            for h in range(48)]
    f = tmp_path / "dts.csv"
    f.write_text("date,timestamp,temp\n" + "\n".join(rows) + "\n")
    return f


def _run(*args: str) -> tuple[int, str, str]:
    res = edgewise_here(*args)
    return res.returncode, res.stdout, res.stderr


def test_quality_reads_the_timestamp_column_not_the_dates(tmp_path: Path) -> None:
    """Check 48 hourly readings are 48 times with no conflicts (they were 2 days, 46
    conflicts)."""
    code, out, err = _run("quality", str(_file(tmp_path)), "--json")
    assert code == 0, err
    temp = json.loads(out)["devices"]["device"]["metrics"]["temp"]
    assert (temp["readings"], temp["distinct_times"], temp["conflicts"]) == (48, 48, 0)


def test_detect_reads_the_timestamp_and_names_it_for_a_date_column(tmp_path: Path) -> None:
    """Check detect runs on the file, and that --time-column date is refused pointing to
    --time-column timestamp, not --clock-column."""
    f = _file(tmp_path)
    code, out, err = _run("detect", str(f), "--out", str(tmp_path / "o.csv"))
    assert code == 0, err
    assert out.startswith("48 rows")
    code, out, err = _run("detect", str(f), "--time-column", "date", "--out",
                          str(tmp_path / "o.csv"))
    assert code != 0
    assert err == ("error: Time column 'date' has a duplicate timestamp '2024-01-01' (rows 1 "
                   "and 2). Remove or merge duplicates first, or, as it holds dates only, read "
                   "the times from column 'timestamp' with --time-column timestamp.\n")
