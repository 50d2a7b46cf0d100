"""``edgewise groups --clock-column``: a date column and a time-of-day column make one time,
as ``edgewise detect`` reads them (without it a Datum;Zeit fleet was refused: 24 readings
at each of its 4 dates)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.in_process import edgewise_here as edgewise


def _fleet(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        lines = ["Datum;Zeit;temp;vib"]
        for i in range(24 * 4):
            day, hour = divmod(i, 24)
            lines.append(f"2024-03-{day + 1:02d};{hour:02d}:00:00;"
                         f"{(40 if k < 3 else 60) + rng.normal():.3f};"
                         f"{2 + rng.normal(0, 0.1):.3f}")
        (folder / f"pump-{k}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_groups_reads_a_date_and_a_time_of_day_column(tmp_path: Path) -> None:
    """Check that --clock-column Zeit groups the hot and the cool pumps apart, and that a
    clock column not in the files, or given beside --data, is one error line naming it."""
    fleet = _fleet(tmp_path / "fleet")
    done = edgewise("groups", "--csv", str(fleet), "--time-column", "Datum",
                    "--clock-column", "Zeit", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["n_groups"] == 2 and answer["metrics"] == ["temp", "vib"]
    assert sorted(sorted(g["members"]) for g in answer["groups"]) == [
        ["pump-0", "pump-1", "pump-2"], ["pump-3", "pump-4", "pump-5"]]
    done = edgewise("groups", "--csv", str(fleet), "--time-column", "Datum",
                    "--clock-column", "Uhrzeit")
    assert done.returncode == 2 and "--clock-column 'Uhrzeit' is not a column of" in done.stderr
    (tmp_path / "store").mkdir()
    done = edgewise("groups", "--data", str(tmp_path / "store"), "--clock-column", "Zeit")
    assert done.returncode == 2, done.stderr
    assert "--clock-column 'Zeit' applies to CSV data (--csv) only" in done.stderr
