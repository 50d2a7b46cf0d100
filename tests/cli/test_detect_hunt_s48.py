"""Hunt s48 on `edgewise detect FILE`: a spreadsheet's ``sep=;`` first line, decimal-comma
numbers with thousands grouped (``1.013,25``), --help naming every detector, and a file
with no time column said to be scored in file order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.detect import DETECTORS
from tests.in_process import edgewise_here


def excel_export(path: Path, n: int = 120) -> Path:
    """A German Excel export: BOM, ``sep=;`` line, CRLF, decimal commas, a quoted cell."""
    rng = np.random.default_rng(4)
    temp = 20 + rng.standard_normal(n)
    press = 1013 + rng.standard_normal(n)
    times = pd.date_range("2024-01-01", periods=n, freq="min")
    rows = ["sep=;", "timestamp;Temperatur °C;Druck hPa"] + [
        f"{t:%Y-%m-%dT%H:%M:%S};{a:.2f};\"{q:.2f}\"".replace(".", ",")
        for t, a, q in zip(times, temp, press, strict=True)]
    path.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    return path


def test_a_sep_line_before_the_header_names_the_separator(tmp_path: Path) -> None:
    """Old: Excel's first line ``sep=;`` was read as the header (columns 'sep=' and ''), so
    the run failed with 'row 1 has 3 fields, more than the 2 columns of its header'."""
    src = excel_export(tmp_path / "export.csv")
    out = tmp_path / "o.csv"
    p = edgewise_here("detect", str(src), "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "on Temperatur °C, Druck hPa" in p.stdout
    got = pd.read_csv(out)
    assert list(got.columns) == ["timestamp", "Temperatur °C", "Druck hPa", "anomaly_score",
                                 "is_anomaly", "top_column"]
    assert len(got) == 120
    assert got["Druck hPa"].between(1000, 1030).all()  # decimal commas read as numbers


def test_a_sep_line_naming_another_separator_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "pipe.csv"
    src.write_text("sep=|\nts|v\n1|2\n")
    p = edgewise_here("detect", str(src))
    assert p.returncode == 2
    assert p.stderr.strip() == (
        f"error: File {str(src)!r} line 1, 'sep=|', names the field separator '|'; only "
        "comma- or semicolon-separated files are read: save it with ',' or ';' (or remove "
        "the sep= line).")


@pytest.mark.parametrize("group", [".", "\u202f", "\u00a0", " "])
def test_thousands_grouped_before_a_decimal_comma_are_read(tmp_path: Path, group: str) -> None:
    """Old: a pressure column written ``1.013,25`` (number format ``#.##0,00``; French
    Excel groups by a narrow no-break space) was 'no number' and left out of the run; now
    it is scored and written as 1013.25."""
    rows = ["Zeit;Druck;Leistung"] + [
        f"{i};1{group}013,{i % 10}5;{i % 7},5" for i in range(100)]
    src = tmp_path / "grouped.csv"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "o.csv"
    p = edgewise_here("detect", str(src), "--time-column", "Zeit", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "on Druck, Leistung" in p.stdout
    assert "Druck: left out" not in p.stdout
    got = pd.read_csv(out)
    assert got["Druck"].iloc[:3].tolist() == [1013.05, 1013.15, 1013.25]


def test_help_names_every_detector() -> None:
    """Old: --help said 'Detector name' and named none; a wrong guess was the only way to
    learn them."""
    for command in (("detect",), ("bench", "csv")):
        shown = edgewise_here(*command, "--help").stdout.replace("│", " ")
        text = " ".join(shown.split())
        missing = [name for name in DETECTORS if name not in text]
        assert not missing, (command, missing)


def test_a_file_with_no_time_column_is_said_to_be_scored_in_file_order(tmp_path: Path) -> None:
    """Old: a file whose time column has another name (``Zeit``) was scored in file order,
    unsorted or not, and the run said nothing of it; a named or found one gets no note."""
    rows = [f"{t};{v},5" for t, v in (("2024-01-02 00:00", 3), ("2024-01-01 00:00", 4))]
    src = tmp_path / "zeit.csv"
    src.write_text("Zeit;Wert\n" + "\n".join(rows) + "\n")
    p = edgewise_here("detect", str(src))
    assert p.returncode == 0, p.stderr
    assert ("note: no time column found (none is named timestamp, time, ts, datetime, date): "
            "rows are scored in file order, not checked to be sorted or unique; name the time "
            "column with --time-column") in p.stdout.splitlines()
    p = edgewise_here("detect", str(src), "--time-column", "Zeit")
    assert p.returncode == 2 and "must be sorted" in p.stderr
    src.write_text("time;Wert\n" + "\n".join(rows[::-1]) + "\n")
    p = edgewise_here("detect", str(src))
    assert p.returncode == 0 and "no time column" not in p.stdout
