"""Label hunt, session 47: a spreadsheet's ``sep=;`` line and rows short of fields in a
label CSV, and cutting an empty history into windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.label.store import read_labels_csv, read_labels_csv_lines
from edgewise.label.windows import windows_from_series

A, B = 1704067200, 1704067800  # 2024-01-01 00:00 and 00:10 UTC, epoch s


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "labels.csv"
    p.write_bytes(text.encode("utf-8"))
    return p


def test_a_spreadsheets_sep_line_names_the_separator(tmp_path: Path) -> None:
    """Old: Excel's first line ``sep=;`` was read as the header ('sep=', ''), and the file
    refused for lacking every column. Now it names the separator, and the lines after it
    keep their numbers in messages."""
    p = _csv(tmp_path, f"\ufeffsep=;\r\ndevice_id;start;end;label;note\r\n"
                       f"p1;{A};{B};anomaly;seal, left\r\n")
    assert read_labels_csv_lines(p) == [
        (3, ("p1", A * 10**9, B * 10**9, "anomaly", "seal, left"))]
    p = _csv(tmp_path, f"SEP=,\ndevice_id,start,end,label\np1,{A},{B},anomaly\n"
                       f"p1,{B},{A},anomaly\n")
    with pytest.raises(InvalidParameterError, match="Label CSV line 4: the window"):
        read_labels_csv(p)


def test_a_sep_line_naming_no_separator_is_refused(tmp_path: Path) -> None:
    p = _csv(tmp_path, f"sep=x\ndevice_id,start,end,label\np1,{A},{B},anomaly\n")
    with pytest.raises(InvalidParameterError, match=r"'sep=x', must name the field sep"):
        read_labels_csv(p)


def test_a_row_short_of_fields_says_so_and_names_the_other_separator(tmp_path: Path) -> None:
    """Old: a row written with commas under a header of semicolons was one field, and the
    error said field 'start' must be a timestamp, "Got '' instead" (its start was there,
    after a comma). A row that lacks fields now says how many it has and which it lacks."""
    p = _csv(tmp_path, f"device_id;start;end;label\np1,{A},{B},anomaly\n")
    with pytest.raises(InvalidParameterError,
                       match=r"line 2 has 1 field separated by ';'.*lacks end, label, start"
                             r"\. It holds ','") as err:
        read_labels_csv(p)
    assert err.value.field == "end"
    p = _csv(tmp_path, f"device_id,start,end,label,note\np1,{A},{B},anomaly\np1,{A}\n")
    with pytest.raises(InvalidParameterError,
                       match=r"line 3 has 2 fields separated by ','.*lacks end, label\.$"):
        read_labels_csv(p)
    # the note stays optional: a row without it is whole
    p = _csv(tmp_path, f"device_id,start,end,label,note\np1,{A},{B},anomaly\n")
    assert read_labels_csv(p)[0][4] == ""


def test_an_empty_history_is_refused_by_name_not_an_index_error() -> None:
    """Old: IndexError 'index 0 is out of bounds for axis 0 with size 0' (ts[-1])."""
    with pytest.raises(InvalidParameterError, match="'pump-1' has no readings") as err:
        windows_from_series(np.zeros(0), np.zeros(0, dtype=np.int64), "pump-1", length=10)
    assert err.value.field == "values"
    one = windows_from_series(np.array([1.0]), np.array([5]), "pump-1", length=10)
    assert (one.start_ns.tolist(), one.end_ns.tolist()) == ([5], [6])
