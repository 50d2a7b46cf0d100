"""``edgewise quality --clock-column``: a date column and a time-of-day column read as one
time, as ``edgewise detect`` reads them (quality had no such option, and ``--time-column
Datum`` read 600 one-a-minute readings as one time, duplicates and conflicts, exit 0)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.in_process import edgewise_here as edgewise


def _file(path: Path) -> Path:
    lines = ["Datum;Zeit;Temp, °C;Druck, bar"]
    for i in range(600):
        temp = 40.0 if i == 500 else 20.0 + 0.1 * (i % 7)
        lines.append(f"2024-03-01;{i // 60:02d}:{i % 60:02d}:00;{temp:.1f}".replace(".", ",")
                     + ";1,50")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_date_and_a_time_of_day_column_make_one_time(tmp_path: Path) -> None:
    """Check that with --clock-column Zeit the 600 readings are 600 times (no duplicate or
    conflict) and the spike at reading 501 is flagged; that a clock column not in the file,
    or the time column itself, is one error line naming it."""
    csv = _file(tmp_path / "eu.csv")
    done = edgewise("quality", str(csv), "--time-column", "Datum", "--clock-column", "Zeit",
                    "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["devices"]["device"]["metrics"]
    temp = metrics["Temp, °C"]
    assert (temp["duplicates"], temp["conflicts"]) == (0, 0), temp
    assert temp["spikes"] >= 1, temp
    for bad in ("Uhrzeit", "Datum"):
        done = edgewise("quality", str(csv), "--time-column", "Datum", "--clock-column", bad)
        assert done.returncode == 2
        said = "is not a column of" if bad == "Uhrzeit" else "is --time-column itself"
        assert done.stderr.startswith(f"error: --clock-column {bad!r} {said}"), done.stderr
