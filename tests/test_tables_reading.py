"""``edgewise.tables`` on the files spreadsheets and loggers really write: one column of
decimal commas, quoted headers, Windows-1252 text, and time columns with gaps or mixed
offsets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from edgewise.errors import QualityError
from edgewise.tables import read_table, read_tables, separator, time_ns


def test_one_column_of_decimal_commas_is_a_semicolon_file(tmp_path: Path) -> None:
    """Check a one-column export (``druck`` / ``20,35``) reads as decimal numbers, not as
    an index of integer parts beside the decimals."""
    f = tmp_path / "druck.csv"
    f.write_text("druck\n20,35\n21,5\n19\n")
    df = read_table(f)
    assert list(df.columns) == ["druck"]
    assert df["druck"].tolist() == [20.35, 21.5, 19.0]
    assert list(df.index) == [0, 1, 2]


@pytest.mark.parametrize(("lines", "sep"), [
    (["1", "2.5", "-3"], ","),  # a plain one-column comma file stays one
    (['"1,5"', '"2,5"'], ","),  # commas inside quotes do not split
    (["20,35", "21"], ";"),
    (["hello, world"], ";"),  # one text column with a comma in it
])
def test_a_one_column_header_leaves_the_separator_to_the_data(lines: list[str],
                                                             sep: str) -> None:
    """Check the first data lines decide when the header has no separator."""
    assert separator("v\n", [line + "\n" for line in lines]) == sep


def test_separators_inside_a_quoted_header_do_not_count(tmp_path: Path) -> None:
    """Check ``zeit;"Temp, °C"`` is a semicolon header whose second column keeps its
    comma, and its decimal commas read as numbers."""
    f = tmp_path / "t.csv"
    f.write_text('zeit;"Temp, °C"\n2024-01-01T00:00:00Z;20,35\n2024-01-01T00:01:00Z;21,5\n',
                 encoding="utf-8")
    assert separator('zeit;"Temp, °C"\n') == ";"
    df = read_table(f)
    assert list(df.columns) == ["zeit", "Temp, °C"]
    assert df["Temp, °C"].tolist() == [20.35, 21.5]


def test_a_windows_1252_export_is_read(tmp_path: Path) -> None:
    """Check a header with a Latin-1 byte (``Temp°``), which is no UTF-8, reads as text."""
    f = tmp_path / "w.csv"
    f.write_bytes("zeit;Temp°;Ort\n1700000000;20,5;Köln\n1700000060;21,0;Köln\n"
                  .encode("cp1252"))
    df = read_table(f)
    assert list(df.columns) == ["zeit", "Temp°", "Ort"]
    assert df["Temp°"].tolist() == [20.5, 21.0]
    assert df["Ort"].tolist() == ["Köln", "Köln"]


def test_naive_times_beside_offsets_read_as_utc() -> None:
    """Check a column mixing naive times and ``Z`` times reads, naive ones as UTC."""
    col = pd.Series(["2024-01-01T00:00:00", "2024-01-01T00:01:00Z",
                     "2024-01-01T00:02:00", "2024-01-01T01:03:00+01:00"], name="timestamp")
    start = 1_704_067_200 * 10**9
    assert time_ns(col).tolist() == [start + k * 60 * 10**9 for k in range(4)]


@pytest.mark.parametrize(("values", "needle"), [
    (["2024-01-01T00:00:00Z", None, "2024-01-01T00:02:00Z"], "empty cell in row 2"),
    (["2024-01-01T00:00:00Z", " ", "2024-01-01T00:02:00Z"], "empty cell in row 2"),
    ([1.7e9, float("nan")], "empty cell in row 2"),
    (["2024-01-01T00:00:00", "2024-01-01T00:01:00Z", "soon"], "row 3 has 'soon'"),
])
def test_a_cell_without_a_time_is_named(values: list[object], needle: str) -> None:
    """Check an empty or unreadable time cell gets one error naming column, row, value."""
    with pytest.raises(QualityError, match=f"Time column 'ts' .*{needle}") as info:
        time_ns(pd.Series(values, name="ts"))
    assert "\n" not in str(info.value)


def test_integer_epoch_times_stay_exact_to_the_nanosecond():
    """Check one reader serves detect and quality alike: an integer ns column is kept exact
    (a float product rounded it to 256 ns), seconds and ms scale exactly too."""
    import pandas as pd

    from edgewise.tables import time_ns

    assert time_ns(pd.Series([1_706_702_400_123_456_789])).tolist() == [1_706_702_400_123_456_789]
    assert time_ns(pd.Series([1_706_702_400_123])).tolist() == [1_706_702_400_123_000_000]


def test_what_is_not_a_csv_file_is_named_once_in_the_shared_reader(tmp_path: Path) -> None:
    """Check read_table and read_text refuse a directory, binary data, a workbook, a .gz that
    is not gzip and UTF-16 text with one line naming the path and what is wrong (a directory
    'did not exist'; binary data became a tokenizer error or a codec error naming no file)."""
    from edgewise.tables import read_text

    folder = tmp_path / "d.csv"
    folder.mkdir()
    cases = {
        folder: "is a directory, expected a CSV file",
        tmp_path / "nul.csv": "is not text (UTF-8/CP1252) CSV: it holds a NUL byte at offset 3",
        tmp_path / "book.csv": "ZIP archive (an .xlsx or .ods workbook?)",
        tmp_path / "plain.csv.gz": "is not gzip data, as its .gz suffix says",
        tmp_path / "wide.csv": "UTF-16 text; save it as UTF-8",
        tmp_path / "noise.csv": "control characters (binary data)",
    }
    (tmp_path / "nul.csv").write_bytes(b"ts,\x00\x01")
    (tmp_path / "book.csv").write_bytes(b"PK\x03\x04" + b"x" * 100)
    (tmp_path / "plain.csv.gz").write_text("ts,v\n1,2\n")
    (tmp_path / "wide.csv").write_bytes("ts,v\n1,2\n".encode("utf-16"))
    (tmp_path / "noise.csv").write_bytes(bytes([1, 2, 3, 4, 5, 6, 7, 14, 15, 16]) * 10)
    for path, why in cases.items():
        for read in (read_table, read_text):
            with pytest.raises(QualityError) as e:
                read(path, "--thing")
            assert str(e.value).startswith(f"--thing {str(path)!r} ") and why in str(e.value)
            assert "\n" not in str(e.value)


def test_text_that_only_looks_odd_is_still_read(tmp_path: Path) -> None:
    """Check a UTF-8 character cut by the end of the 64 KiB sniffed, a few control characters
    in a field, Windows-1252 text and gzipped text all pass the text check."""
    import gzip

    from edgewise.tables import check_csv_file, read_text

    long = tmp_path / "long.csv"
    body = "ts,notes\n" + "1,x\n" * 16381 + "1,ä\n2,y\n"  # 'ä' is bytes 65535 and 65536
    long.write_text(body, encoding="utf-8")
    assert long.read_bytes()[65535:65537] == "ä".encode()
    check_csv_file(long)
    bell = tmp_path / "bell.csv"
    bell.write_text("ts,note\n1,ding\x07\n2,tab\there\n")
    assert read_text(bell).count("\n") == 3
    win = tmp_path / "win.csv"
    win.write_bytes("zeit;Temp°\n1;2\n".encode("cp1252"))
    assert read_text(win).startswith("zeit;Temp°")
    gz = tmp_path / "h.csv.gz"
    with gzip.open(gz, "wt") as g:
        g.write("ts,v\n1,2\n")
    assert read_table(gz)["v"].tolist() == [2] and read_text(gz) == "ts,v\n1,2\n"


def test_day_first_dates_are_read_in_one_layout_for_the_whole_column() -> None:
    """Check dd/mm/yyyy dates are all read day-first: cell by cell, 01/03 to 12/03 were read
    month-first (January 3 to December 3) and 13/03 on day-first, so a sorted daily file
    came out of order and with months-long gaps."""
    days = [f"{d:02d}/03/2024" for d in range(1, 21)]
    ns = time_ns(pd.Series(days, name="date"))
    assert pd.to_datetime(ns).strftime("%Y-%m-%d").tolist() == [
        f"2024-03-{d:02d}" for d in range(1, 21)]


@pytest.mark.parametrize(("values", "needle"), [
    (["01/03/2024", "02/03/2024"],
     "reads '01/03/2024' (row 1) both day-first and month-first"),
    (["01/13/2024", "01/14/2024", "15/01/2024"],
     "row 3 has '15/01/2024', which does not fit the layout of row 1 ('01/13/2024')"),
])
def test_dates_that_are_no_one_layout_are_refused(values: list[str], needle: str) -> None:
    """Check an ambiguous day/month layout, and a column switching layouts, are refused in
    one line asking for ISO 8601 / RFC 3339 or epoch numbers (they were guessed per cell)."""
    with pytest.raises(QualityError) as info:
        time_ns(pd.Series(values, name="date"))
    message = str(info.value)
    assert message.startswith("Time column 'date' ") and needle in message
    assert "ISO 8601 / RFC 3339" in message and "epoch numbers" in message
    assert "\n" not in message


def test_iso_layouts_loggers_write_are_read() -> None:
    """Check the layouts ISO 8601 allows that loggers write: a space for the T (SKAB's
    'YYYY-MM-DD HH:MM:SS'), a decimal comma in the seconds, a date alone, and epoch
    numbers held as text."""
    start = 1_704_067_200 * 10**9
    assert time_ns(pd.Series(["2024-01-01 00:00:00", "2024-01-01 00:00:01"])).tolist() == [
        start, start + 10**9]
    assert time_ns(pd.Series(["2024-01-01 00:00:00,250"])).tolist() == [start + 250 * 10**6]
    assert time_ns(pd.Series(["2024-01-01", "2024-01-02"])).tolist() == [
        start, start + 86_400 * 10**9]
    assert time_ns(pd.Series(["1704067200", "1704067201"])).tolist() == [start, start + 10**9]


@pytest.mark.parametrize("values", [[1.7e9, 1e10], [1_700_000_000, 10_000_000_000],
                                    [1.7e12, 9.3e12], [1.7e9, -1e10]],
                         ids=["float-s", "int-s", "ms", "negative-s"])
def test_epoch_numbers_past_what_int64_ns_hold_are_refused(values: list[float]) -> None:
    """Check an epoch number outside 1677..2262 (int64 nanoseconds) is named in one line,
    not wrapped round to a time in the wrong century."""
    with pytest.raises(QualityError, match=r"^Time column 'ts' row 2 has .*lies outside "
                                           r"1677-09-21 \.\. 2262-04-11") as info:
        time_ns(pd.Series(values, name="ts"))
    assert "np." not in str(info.value)


def test_text_read_keeps_every_cell_as_written(tmp_path: Path) -> None:
    """Check ``text=True`` keeps 007, NA, None, TRUE, 1.50 and 17-digit ids with a blank
    beside them as written, and gives a semicolon file's decimal commas (only) a point."""
    f = tmp_path / "t.csv"
    f.write_text("ts;v;id;flag;code;note\n"
                 "1700000000;1,50;12345678901234567;TRUE;007;NA\n"
                 "1700000060;NA;;False;010;None\n"
                 "1700000120;3;12345678901234568;true;1;\n")
    df = read_table(f, text=True)
    assert df.to_dict("list") == {
        "ts": ["1700000000", "1700000060", "1700000120"], "v": ["1.50", "NA", "3"],
        "id": ["12345678901234567", "", "12345678901234568"],
        "flag": ["TRUE", "False", "true"], "code": ["007", "010", "1"],
        "note": ["NA", "None", ""]}
    assert read_table(f)["v"].fillna(0).tolist() == [1.5, 0.0, 3.0]


def test_epoch_seconds_then_milliseconds_in_one_column_are_refused() -> None:
    """Check a logger that switched from seconds to milliseconds is named, not read as 1970
    (the unit was told by the largest number, so the seconds became milliseconds)."""
    ts = pd.Series([1_704_067_200 + 60 * i for i in range(3)]
                   + [1_704_067_380_000 + 60_000 * i for i in range(3)], name="ts")
    with pytest.raises(QualityError, match=r"mixes epoch units: row 1 has 1704067200 \(seconds\)"):
        time_ns(ts)
    small = pd.Series([0, 60, 1_704_067_200_000], name="ts")  # 0 and 60: no epoch in any unit
    assert time_ns(small)[-1] == 1_704_067_200_000 * 10**6


def test_a_separator_ending_every_data_row_keeps_the_columns(tmp_path: Path) -> None:
    """Check data rows that end in a separator the header lacks (a meter's export:
    ``2024-01-01T00:00:00Z,1000.084,5.03,``) keep their columns: pandas took the time for
    the index, shifted every name one column on and left the last column empty, so the
    times were lost and the wrong column was scored."""
    f = tmp_path / "meter.csv"
    f.write_text("timestamp,energy_kwh,power_kw\n2024-01-01T00:00:00Z,1000.084,5.03,\n"
                 "2024-01-01T00:01:00Z,1000.167,4.97,\n")
    numbers, cells = read_tables(f)
    assert numbers.to_dict("list") == {
        "timestamp": ["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"],
        "energy_kwh": [1000.084, 1000.167], "power_kw": [5.03, 4.97]}
    assert list(cells.index) == [0, 1] and cells["power_kw"].tolist() == ["5.03", "4.97"]


def test_an_extra_field_that_holds_something_is_refused_naming_its_row(
        tmp_path: Path) -> None:
    """Check a row with one field more than the header, not empty, is refused in one line
    naming the row and the value (read with ``index_col=False`` it would be dropped)."""
    f = tmp_path / "x.csv"
    f.write_text("ts,a\n1,2,\n\n2,3,x\n")
    with pytest.raises(QualityError, match=r"row 2 has 3 fields, more than the 2 columns "
                                           r"of its header: the extra field holds 'x'"):
        read_table(f)


def test_a_tied_header_is_told_by_its_data_rows(tmp_path: Path) -> None:
    """Check a German Excel export whose header has as many commas as semicolons
    (``Zeit;Temp, °C;Druck, bar``) and whose rows do too (``20,13;0,964``) is read as a
    semicolon file, as its rows split into numbers only so; a comma file with such a
    header stays a comma file."""
    f = tmp_path / "euro.csv"
    f.write_bytes("Zeit;Temp, °C;Druck, bar\n2024-01-01 00:00:00;20,13;0,964\n"
                  "2024-01-01 00:01:00;19,87;1,058\n".encode("cp1252"))
    df = read_table(f)
    assert list(df.columns) == ["Zeit", "Temp, °C", "Druck, bar"]
    assert df["Temp, °C"].tolist() == [20.13, 19.87] and df["Druck, bar"].tolist() == [0.964,
                                                                                          1.058]
    assert separator("a;b,c", ["x;y,z"]) == ";"  # no numbers either way: a tie, ';'
    assert separator("ts,Temp; °C,p; bar", ["2024-01-01 00:00:00,20.1,3"]) == ","
