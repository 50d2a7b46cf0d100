"""``edgewise quality`` on a wide CSV counts a cell written ``NaN``, ``NA`` or ``null`` as
an invalid reading, as the same cell in a long CSV's value column: pandas read them as
missing, and the wide path took them for empty cells (no reading). A mixed column showed
5 readings and validity 0.8 where the long file showed 8 and 0.5; a column of NaN alone
was left out ("every cell is empty") and its device shown valid (1.000). Only a blank
cell is no reading."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgewise.cli import app, load_commands

load_commands()

T0 = 1_700_000_000


def _report(path: Path) -> tuple[dict, str]:
    res = CliRunner(mix_stderr=False).invoke(app, ["quality", str(path), "--json"])
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)["devices"]["device"], res.stderr


def _both(tmp_path: Path, columns: dict[str, list[str]]) -> tuple[dict, dict, str]:
    """The reports of the same cells as a wide and as a long file (a blank cell of the
    wide file is a row left out of the long one), and the wide run's notes."""
    n = len(next(iter(columns.values())))
    wide = tmp_path / "wide.csv"
    wide.write_text("ts," + ",".join(columns) + "\n" + "".join(
        f"{T0 + 60 * i}," + ",".join(v[i] for v in columns.values()) + "\n"
        for i in range(n)))
    long = tmp_path / "long.csv"
    long.write_text("ts,metric,value\n" + "".join(
        f"{T0 + 60 * i},{name},{v[i]}\n" for i in range(n)
        for name, v in columns.items() if v[i].strip()))
    (w, notes), (lo, _) = _report(wide), _report(long)
    return w, lo, notes


def _counts(rep: dict) -> dict:
    return {name: {k: m[k] for k in ("readings", "invalid", "validity")}
            for name, m in rep["metrics"].items()}


def test_cells_written_nan_na_null_are_invalid_readings_as_in_a_long_file(tmp_path: Path):
    """Check NaN/NA/null count as 3 invalid readings beside 'err', 8 readings in all."""
    w, lo, _ = _both(tmp_path, {"temp": ["20", "NaN", "21", "NA", "22", "null", "23",
                                         "err"]})
    assert _counts(w) == _counts(lo)
    assert _counts(w)["temp"] == {"readings": 8, "invalid": 4, "validity": 0.5}
    assert w["summary"]["validity"] == lo["summary"]["validity"] == 0.5


def test_a_blank_cell_is_still_no_reading(tmp_path: Path):
    """Check only a blank cell is no reading: 4 readings of which 1 (NaN) is invalid."""
    w, lo, _ = _both(tmp_path, {"temp": ["20", "", "21", "NaN", " ", "22"]})
    assert _counts(w) == _counts(lo)
    assert _counts(w)["temp"]["readings"] == 4 and _counts(w)["temp"]["invalid"] == 1


def test_a_column_of_nan_alone_is_reported_invalid_not_left_out_as_empty(tmp_path: Path):
    """Check a sensor that wrote NaN every time is a metric of validity 0, as in the long
    file, not left out with the false note that every cell is empty."""
    w, lo, notes = _both(tmp_path, {"temp": ["20", "21", "22", "23"],
                                    "hum": ["NaN", "NaN", "NaN", "NaN"]})
    assert "every cell is empty" not in notes
    assert _counts(w) == _counts(lo)
    assert _counts(w)["hum"] == {"readings": 4, "invalid": 4, "validity": 0.0}
    assert w["readings"] == lo["readings"] == 8
    assert w["summary"]["validity"] == lo["summary"]["validity"] == 0.5


def test_blank_and_word_columns_are_still_left_out(tmp_path: Path):
    """Check a column of blank cells alone is left out as empty, and one of words alone as
    no numbers (naming its first cell that holds something)."""
    path = tmp_path / "wide.csv"
    path.write_text("ts,temp,dead,site\n" + "".join(
        f"{T0 + 60 * i},{20 + i},,{'' if i == 0 else 'pump-a'}\n" for i in range(3)))
    rep, notes = _report(path)
    assert set(rep["metrics"]) == {"temp"}
    assert "column 'dead' left out of the report: every cell is empty" in notes
    assert "column 'site' left out of the report: it holds no numbers (row 2 has 'pump-a')" \
        in notes
