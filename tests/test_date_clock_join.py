"""A date column and a time-of-day column make the time together in every command.

``edgewise train forecast --time-column date`` read the date alone (the time of day was
joined only when ``date`` was found by name) and failed with 'strictly increasing ...
position 1'; ``edgewise groups`` never joined them, so a logger's ``date,time`` file read
as 6 readings of a metric at each day and was refused. Both now join them
(``clock_column`` / ``date_and_clock``), as ``detect`` and ``quality`` do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.in_process import edgewise_here


def _run(*args: str) -> tuple[int, str, str]:
    res = edgewise_here(*args)
    return res.returncode, res.stdout, res.stderr


def _day_hours(h: int) -> tuple[str, str]:
    return f"2024-01-{1 + h // 24:02d}", f"{h % 24:02d}:00:00"


def test_train_forecast_joins_a_named_date_column_to_its_time_of_day(tmp_path: Path) -> None:
    """Check --time-column date trains on 480 hourly steps, as the date found by name does."""
    rows = [",".join([*_day_hours(h), f"{10 + 3 * np.sin(2 * np.pi * h / 24):.3f}"])
            for h in range(480)]
    f = tmp_path / "dt.csv"
    f.write_text("date,time,value\n" + "\n".join(rows) + "\n")
    for named in ([], ["--time-column", "date"]):
        code, out, err = _run("train", "forecast", "--csv", str(f), *named, "--column",
                              "value", "--out", str(tmp_path / "m.forecast"))
        assert code == 0, (named, err)
        assert "480 steps of 3600 s" in out, out


def test_groups_joins_date_and_time_of_day_columns(tmp_path: Path) -> None:
    """Check a fleet file of date,time columns is grouped (hot and cool devices), with the
    time of day no metric, where it was refused as many readings at one time."""
    lines = ["device_id,date,time,temp"]
    for d in range(6):
        for h in range(48):
            lines.append(",".join([f"p{d}", *_day_hours(h), f"{20 + 5 * (d % 2) + h % 3}"]))
    f = tmp_path / "g.csv"
    f.write_text("\n".join(lines) + "\n")
    for named in ([], ["--time-column", "date"]):
        code, out, err = _run("groups", "--csv", str(f), *named, "--groups", "2", "--json")
        assert code == 0, (named, err)
        got = json.loads(out)
        assert (got["n_devices"], got["metrics"], got["left_out"]) == (6, ["temp"], {})
        assert sorted(sorted(g["members"]) for g in got["groups"]) == [
            ["p0", "p2", "p4"], ["p1", "p3", "p5"]]
