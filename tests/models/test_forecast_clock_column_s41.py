"""``train forecast`` / ``predict forecast --clock-column``: a date column and a time-of-day
column make one time, as ``edgewise detect`` reads them (without the option such a file
was 10 times of 24 readings each, refused as several devices' readings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.in_process import edgewise_here as edgewise


def _file(path: Path) -> Path:
    lines = ["Datum;Zeit;v"]
    for i in range(24 * 10):
        day, hour = divmod(i, 24)
        lines.append(f"2024-03-{day + 1:02d};{hour:02d}:00:00;"
                     f"{10 + 5 * np.sin(2 * np.pi * hour / 24):.3f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_forecast_reads_a_date_and_a_time_of_day_column(tmp_path: Path) -> None:
    """Check that --clock-column Zeit gives 240 hourly steps with a daily season, that
    predict takes the same option, and that a clock column not in the file, the time column
    itself, or one given beside --data is one error line naming it."""
    csv = _file(tmp_path / "f.csv")
    done = edgewise("train", "forecast", "--csv", str(csv), "--time-column", "Datum",
                    "--clock-column", "Zeit", "--column", "v", "--horizon", "12",
                    "--out", str(tmp_path / "m.fc"), "--json")
    assert done.returncode == 0, done.stderr
    fitted = json.loads(done.stdout)
    assert (fitted["n_steps"], fitted["step_ns"], fitted["season"]) == (240, 3600 * 10**9, 24)
    done = edgewise("predict", "forecast", "--model", str(tmp_path / "m.fc"), "--csv", str(csv),
                    "--time-column", "Datum", "--clock-column", "Zeit", "--column", "v",
                    "--json")
    assert done.returncode == 0, done.stderr
    for bad, said in (("Uhrzeit", "--clock-column 'Uhrzeit' is not a column of --csv"),
                      ("Datum", "--clock-column 'Datum' is --time-column itself")):
        done = edgewise("train", "forecast", "--csv", str(csv), "--time-column", "Datum",
                        "--clock-column", bad, "--column", "v", "--out", str(tmp_path / "x"))
        assert done.returncode == 2 and done.stderr.startswith("error: " + said), done.stderr
    (tmp_path / "store").mkdir()
    done = edgewise("train", "forecast", "--data", str(tmp_path / "store"), "--device", "d",
                    "--metric", "m", "--clock-column", "Zeit", "--out", str(tmp_path / "y"))
    assert done.returncode == 2 and "--clock-column 'Zeit' applies to a CSV file" in done.stderr
