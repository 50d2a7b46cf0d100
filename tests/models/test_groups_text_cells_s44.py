"""`edgewise groups --csv`: a value cell holding text ('abc') is refused in one line naming
the file, the row (and its line), the column and the cell, as `train forecast` refuses it;
it used to be read as a missing reading without a word."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands

load_commands()


def _wide_lines(devices: int = 6, times: int = 30) -> list[str]:
    rng = np.random.default_rng(0)
    lines = ["device_id,timestamp,temp,vib"]
    for d in range(devices):
        for t in range(times):
            lines.append(f"d{d},2024-01-01T00:{t:02d}:00Z,{20 + d % 2 * 10 + rng.normal():.3f},"
                         f"{1 + rng.normal() * 0.1:.3f}")
    return lines


def _long_lines() -> list[str]:
    lines = ["device_id,time,metric,value"]
    for row in _wide_lines()[1:]:
        d, t, a, b = row.split(",")
        lines += [f"{d},{t},temp,{a}", f"{d},{t},vib,{b}"]
    return lines


def _groups(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["groups", "--csv", str(path)])
    return result.exit_code, result.output


@pytest.mark.parametrize(("kind", "row", "column"), [("wide", 5, "vib"), ("wide", 40, "temp"),
                                                      ("long", 7, "value")])
def test_text_in_a_value_column_is_refused(tmp_path, kind: str, row: int,
                                           column: str) -> None:
    lines = _wide_lines() if kind == "wide" else _long_lines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = "abc"
    lines[row] = ",".join(cells)
    f = tmp_path / f"{kind}.csv"
    f.write_text("\n".join(lines) + "\n")
    code, out = _groups(f)
    assert code == 2, out
    err = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, out
    assert err[0] == (
        f"error: --csv {str(f)!r}: column {column!r} must hold numbers; row {row} (line "
        f"{row + 1} of the file) has 'abc'. Leave the cell empty where there is no reading, "
        "or write the number.")
    assert "Traceback" not in out


def test_missing_cells_and_words_only_columns_still_read(tmp_path) -> None:
    """An empty cell, nan/NA/null, true/false stay as before; a column of words alone (a
    site name) is no metric and is not refused."""
    lines = _wide_lines()
    lines[0] += ",site"
    lines[1:] = [ln + ",north" for ln in lines[1:]]
    for i, cell in ((3, ""), (4, "nan"), (5, "NA"), (6, "null")):
        parts = lines[i].split(",")
        parts[3] = cell
        lines[i] = ",".join(parts)
    f = tmp_path / "ok.csv"
    f.write_text("\n".join(lines) + "\n")
    code, out = _groups(f)
    assert code == 0, out
    assert "error:" not in out
