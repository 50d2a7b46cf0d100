"""Reading the tables users hand to the command line: CSV files of readings, histories and
labels, as spreadsheets and data loggers write them.

One reader for every command (``detect``, ``quality``, ``train rul``, ``label suggest``),
so each accepts the same files: comma or semicolon separated, a UTF-8 byte-order mark,
gzip, decimal commas in semicolon files, and UTF-8 or Windows-1252 text. The small tables
read line by line (``label import``, ``--failures``) come through :func:`read_text`. Both
first pass :func:`check_csv_file`, so a directory, a binary file or a spreadsheet workbook
is refused in one line naming the path and what is wrong.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import re
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from edgewise.errors import InvalidParameterError, QualityError
from edgewise.telemetry import epoch_unit_ns

__all__ = ["LABEL_NAMES", "SCORE_COLUMNS", "TIME_NAMES", "check_csv_file", "clock_column",
           "date_and_clock", "find_time_column", "header_as_written", "is_unnamed",
           "named_clock", "not_a_metric", "number_column", "plain", "read_table", "read_tables",
           "read_text", "separator", "text_cells", "time_cells", "time_ns"]

#: Names a table's time column is found by when none is named, in this order of preference:
#: a column whose name, in any case, is the first of them the table has
#: (:func:`find_time_column`: ``detect``, ``quality``, ``label suggest --csv``).
TIME_NAMES = ("timestamp", "time", "ts", "datetime", "date")
#: Columns that hold labels, not readings: never taken as metrics (lower case; the last
#: three are ground truth ``edgewise detect`` kept beside its own outputs).
LABEL_NAMES = ("anomaly", "anomalies", "label", "labels", "is_anomaly", "changepoint", "target",
               "is_anomaly_label", "anomaly_score_label", "top_column_label")
#: The columns ``edgewise detect`` writes: no metrics of a scored file read again.
SCORE_COLUMNS = ("anomaly_score", "is_anomaly", "top_column")
#: How pandas names a column whose header cell is empty: ``Unnamed: 0`` for the index that
#: ``DataFrame.to_csv()`` writes first, ``Unnamed: 3`` for a separator ending the header.
_UNNAMED = re.compile(r"Unnamed: \d+")
#: ``DataFrame.attrs`` key under which :func:`read_table` keeps the columns it named
#: ``Unnamed: N`` for an empty header cell (:func:`header_as_written`).
_BLANK_HEADER = "edgewise_blank_header"


def is_unnamed(column: object) -> bool:
    """Whether ``column`` has the name pandas gives an empty header cell (``Unnamed: 0``): a
    saved pandas index, or a separator ending the header. Such a column is no metric
    (:func:`not_a_metric`); ``edgewise train rul`` drops it.

    >>> is_unnamed("Unnamed: 0"), is_unnamed("Unnamed: 12"), is_unnamed("Unnamed: x")
    (True, True, False)
    """
    return _UNNAMED.fullmatch(str(column)) is not None


def not_a_metric(column: str) -> str:
    """Why ``column`` is no metric by its name alone, ``""`` for one: it is named like a
    label (:data:`LABEL_NAMES`, any case), is one of ``edgewise detect``'s outputs
    (:data:`SCORE_COLUMNS`) or has no name (:func:`is_unnamed`: a saved pandas index counts
    0, 1, 2, ..., no reading). The one rule of ``detect``, ``quality`` and ``label``.

    >>> not_a_metric("Label"), not_a_metric("anomaly_score"), not_a_metric("temp")
    ('it is named like a label (labels are not readings)', "it is one of edgewise detect's outputs", '')
    >>> not_a_metric("Unnamed: 0")
    'its header cell is empty: a saved pandas index, or a separator ending the header'
    """  # noqa: E501
    if str(column).strip().lower() in LABEL_NAMES:
        return "it is named like a label (labels are not readings)"
    if column in SCORE_COLUMNS:
        return "it is one of edgewise detect's outputs"
    if is_unnamed(column):
        return "its header cell is empty: a saved pandas index, or a separator ending the header"
    return ""


def header_as_written(df: pd.DataFrame) -> list[str]:
    """The names of ``df``'s columns as the header row of its file wrote them, for writing
    the table back: a column that :func:`read_table` named ``Unnamed: N`` for an empty header
    cell gets its empty name back; every other name is as read (a file whose header says
    ``Unnamed: 0`` keeps it).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = Path(d) / "saved.csv"
    ...     _ = f.write_text(",ts,temp\\n0,1,20.5\\n")
    ...     df = read_table(f)
    ...     list(df.columns), header_as_written(df)
    (['Unnamed: 0', 'ts', 'temp'], ['', 'ts', 'temp'])
    """
    blank = set(df.attrs.get(_BLANK_HEADER, ()))
    return ["" if c in blank else str(c) for c in df.columns]


def find_time_column(df: pd.DataFrame) -> str | None:
    """The column named like a time (:data:`TIME_NAMES`, any case) that holds the times, or
    ``None``: the first of :data:`TIME_NAMES` the file has (of two names alike in any case,
    the first in the file), so a ``date`` column, which holds no time of day, comes last. A
    ``date`` column with a ``time`` column beside it (``date,time,value``) is the date of
    a pair that together make the time (:func:`clock_column`); that ``time`` column, a time
    of day, is then no time of its own. So ``date,timestamp,temp`` is read by its
    ``timestamp``, never as a day's readings all at one time.

    >>> find_time_column(pd.DataFrame(columns=["device_id", "Timestamp", "ts"]))
    'Timestamp'
    >>> find_time_column(pd.DataFrame(columns=["date", "timestamp", "temp"]))
    'timestamp'
    >>> find_time_column(pd.DataFrame(columns=["Date", "Time", "v"]))
    'Date'
    >>> find_time_column(pd.DataFrame(columns=["date", "v"]))
    'date'
    """
    named: dict[str, str] = {}
    for c in df.columns:
        named.setdefault(str(c).lower(), c)
    order = list(TIME_NAMES)
    if "date" in named and "time" in named:  # date,time: a date and its time of day
        order = [n for n in order if n not in ("time", "date")] + ["date"]
    return next((named[n] for n in order if n in named), None)


def clock_column(df: pd.DataFrame, time_column: str | None) -> str | None:
    """The time-of-day column beside a found ``date`` column (``date,time,value``, as data
    loggers and spreadsheets export it), which together make the time; else ``None``.
    ``edgewise detect`` and ``edgewise quality`` read such a pair as one time
    (:func:`date_and_clock`), and the time-of-day column is no metric.

    >>> clock_column(pd.DataFrame(columns=["Date", "Time", "v"]), "Date")
    'Time'
    >>> clock_column(pd.DataFrame(columns=["date", "v"]), "date") is None
    True
    """
    if time_column is None or str(time_column).lower() != "date":
        return None
    return next((c for c in df.columns if str(c).lower() == "time"), None)


def named_clock(df: pd.DataFrame, time_column: str | None, clock: str | None,
                where: str) -> str | None:
    """The time-of-day column joined to the date in ``time_column``: ``clock`` as a user
    named it (``--clock-column``), checked to be another column of ``df``, else the one
    found beside a ``date`` column (:func:`clock_column`), or ``None``. ``quality``,
    ``forecast``, ``groups``, ``detect`` and ``bench csv`` all check it here, so one
    mistake reads the same everywhere; ``where`` names the file.

    >>> df = pd.DataFrame(columns=["Datum", "Zeit", "v"])
    >>> named_clock(df, "Datum", "Zeit", "'eu.csv'")
    'Zeit'
    >>> named_clock(df, "Datum", "Uhrzeit", "'eu.csv'")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --clock-column 'Uhrzeit' is not a column of 'eu.csv'; its
    columns are ['Datum', 'Zeit', 'v']. Name the time-of-day column joined to the date in ...
    >>> named_clock(df, "Datum", "Datum", "'eu.csv'")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --clock-column 'Datum' is --time-column itself; name the
    date column with --time-column and its time of day with --clock-column, e.g. ...
    """
    if clock is None:
        return clock_column(df, time_column)
    example = "e.g. --time-column Datum --clock-column Zeit."
    if clock not in df.columns:
        raise InvalidParameterError(
            f"--clock-column {clock!r} is not a column of {where}; its columns are "
            f"{[str(c) for c in df.columns][:20]}. Name the time-of-day column joined to the "
            f"date in --time-column, {example}")
    if time_column is None or clock == time_column:
        said = ("is --time-column itself" if time_column is not None else
                "joins no date column: none is named with --time-column or found")
        raise InvalidParameterError(
            f"--clock-column {clock!r} {said}; name the date column with --time-column and "
            f"its time of day with --clock-column, {example}")
    return clock


def time_cells(df: pd.DataFrame, cells: pd.DataFrame | None, column: str) -> pd.Series:
    """Column ``column`` of ``df`` (:func:`read_tables`' numbers) to hand :func:`time_ns`;
    where it holds floats, every cell a number, its cells as written (``cells``, the text
    view), which :func:`time_ns` reads digit by digit: epoch seconds to the nanosecond
    (``1700000000.000000005``, as ``readings.csv?time_format=epoch_s`` writes them) are
    more digits than a float64 holds, and two such times would read as one.

    >>> df = pd.DataFrame({"ts": [1.7e9, 1.7e9]})
    >>> cells = pd.DataFrame({"ts": ["1700000000.000000005", "1700000000.000000006"]})
    >>> time_ns(time_cells(df, cells, "ts")).tolist()
    [1700000000000000005, 1700000000000000006]
    """
    col = df[column]
    if cells is None or column not in cells.columns or col.dtype.kind != "f" or col.isna().any():
        return col
    return cells[column].set_axis(col.index).rename(col.name)


def date_and_clock(df: pd.DataFrame, date: str, clock: str) -> pd.Series:
    """The ``date`` and ``clock`` (time-of-day) columns of ``df`` as one column of times,
    named ``"DATE CLOCK"``, for :func:`time_ns`. A row with either cell empty is empty
    (NaN), so that :func:`time_ns` names it, never reads a time of day alone as today's.

    >>> df = pd.DataFrame({"date": ["2024-01-01", "2024-01-01", None],
    ...                    "time": ["00:00:00", " 00:01:00", "00:02:00"]})
    >>> date_and_clock(df, "date", "time").tolist()
    ['2024-01-01 00:00:00', '2024-01-01 00:01:00', nan]
    >>> time_ns(date_and_clock(df.iloc[:2], "date", "time")).tolist()
    [1704067200000000000, 1704067260000000000]
    """
    a, b = (df[c].astype(object).where(df[c].notna(), "").astype(str).str.strip()
            for c in (date, clock))
    both = (a + " " + b).where((a != "") & (b != ""))
    return both.rename(f"{date} {clock}")


def plain(value: object) -> object:
    """A numpy scalar as its Python value, so messages show ``19.87``, not ``np.float64(…)``.

    >>> plain(np.float64(19.87)), plain("x")
    (19.87, 'x')
    """
    return value.item() if isinstance(value, np.generic) else value


def text_cells(raw: pd.Series, values: pd.Series) -> np.ndarray:
    """Where ``raw`` (a column as read) holds text that ``values`` (it read as numbers) has
    no number for: a cell neither empty nor one pandas reads as missing (``nan``, ``NA``).

    >>> text_cells(pd.Series(["1", None, " ", "abc"]), pd.Series([1.0, None, None, None]))
    array([False, False, False,  True])
    """
    text = raw.astype(str).str.strip()
    return (values.isna().to_numpy() & raw.notna().to_numpy()  # type: ignore[no-any-return]
            & (text != "").to_numpy())


def number_column(df: pd.DataFrame, col: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Column ``col`` of ``df`` as floats: an empty cell is NaN; a cell that is no number, or
    an infinite one (``inf``, ``-inf``: no reading a detector or model can weigh, and never
    taken for a missing one), is refused in one line naming the column, its row
    (``rows[i]``, the file's row numbers; default: the position from 1) and the value.

    >>> number_column(pd.DataFrame({"t": [1, None, 2.5]}), "t").tolist()
    [1.0, nan, 2.5]
    >>> number_column(pd.DataFrame({"t": ["1", "n/a?"]}), "t")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: Column 't' must hold numbers; row 2 has 'n/a?'.
    >>> number_column(pd.DataFrame({"t": [1.0, float("-inf")]}), "t")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: Column 't' must hold finite numbers; row 2 has -inf (leave the cell empty where there is no reading).
    """  # noqa: E501
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce")
    text = raw.astype(str).str.strip()
    bad = text_cells(raw, values)
    if bad.any():
        # name a value that is no number in either notation before a decimal comma
        comma = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
        junk = bad & comma.isna().to_numpy()
        i = int(np.flatnonzero(junk if junk.any() else bad)[0])
        hint = "" if junk.any() else (
            " Decimal commas are read in semicolon-separated files only; in a "
            "comma-separated file write a decimal point (2.5).")
        row = i + 1 if rows is None else int(rows[i])
        raise QualityError(
            f"Column {col!r} must hold numbers; row {row} has {plain(raw.iloc[i])!r}.{hint}")
    x = values.to_numpy(dtype=float)
    infinite = np.isinf(x)
    if infinite.any():
        i = int(np.flatnonzero(infinite)[0])
        row = i + 1 if rows is None else int(rows[i])
        raise QualityError(
            f"Column {col!r} must hold finite numbers; row {row} has {plain(raw.iloc[i])!r} "
            "(leave the cell empty where there is no reading).")
    return x


def time_ns(col: pd.Series) -> np.ndarray:
    """A time column as int64 UTC nanoseconds: epoch numbers in s, ms, us or ns (told by
    size, as :func:`edgewise.telemetry.epoch_unit_ns` does for telemetry), or ISO 8601 /
    RFC 3339 text.

    Text times may mix offsets; a time without one (``2024-01-01T00:00:00``) is read as
    UTC, as ``edgewise detect`` reads it. Text in another layout is read in the one format
    its first cell shows (``Jan 05 2024 10:00``), the same for every row; a layout that
    reads both day-first and month-first (``01/03/2024``) is refused, never guessed cell
    by cell.

    >>> time_ns(pd.Series([1.7e9, 1.7e9 + 60])).tolist() == time_ns(
    ...     pd.Series([1_700_000_000_000, 1_700_000_060_000])).tolist()
    True
    >>> int(time_ns(pd.Series(["2023-11-14T22:13:20Z"]))[0])
    1700000000000000000
    >>> time_ns(pd.Series(["2024-01-01T00:00:00", "2024-01-01T01:00:00+01:00"])).tolist()
    [1704067200000000000, 1704067200000000000]
    >>> pd.to_datetime(time_ns(pd.Series(["01/03/2024", "13/03/2024"]))).day.tolist()
    [1, 13]
    >>> time_ns(pd.Series(["01/03/2024", "02/03/2024"], name="day"))
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: Time column 'day' reads '01/03/2024' (row 1) both day-first and month-first; ...

    Raises :class:`~edgewise.errors.QualityError` naming the first row whose cell is empty
    or holds no time, or an epoch number past what int64 nanoseconds hold (the year 2262).
    """  # noqa: E501
    name = "time" if col.name is None else str(col.name)
    if pd.api.types.is_bool_dtype(col):  # true/false: no time, never epoch 1 and 0
        col = col.astype(str)
    empty = col.isna().to_numpy().copy()
    if not pd.api.types.is_numeric_dtype(col) and not empty.all():
        empty |= (col.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise QualityError(
            f"Time column {name!r} has an empty cell in row {i + 1}; every row needs a time "
            "(an epoch number or ISO 8601 / RFC 3339 text)."
        )
    if pd.api.types.is_numeric_dtype(col):
        x = col.astype(float).to_numpy()
        if not np.isfinite(x).all():
            i = int(np.flatnonzero(~np.isfinite(x))[0])
            raise _not_a_time(name, i, col.iloc[i])
        big = np.nanmax(np.abs(x)) if len(x) else 0.0
        per = epoch_unit_ns(big)
        _check_one_unit(name, col, x, per)
        # int64 ns span 1677-09-21 to 2262-04-11: an epoch number outside would wrap round.
        # Integers are checked exactly (as floats, 2**63 - 2 rounds to 2**63).
        if pd.api.types.is_integer_dtype(col):
            out = _outside(col.to_numpy(), per)
        else:
            out = np.abs(x) * float(per) >= 2.0**63
        if out.any():
            raise _out_of_range(name, int(np.flatnonzero(out)[0]), col, per)
        if pd.api.types.is_integer_dtype(col):  # exact to the ns, where floats are not
            return col.to_numpy(dtype=np.int64) * np.int64(per)
        return (x * float(per)).astype(np.int64)
    text = col.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():  # epoch numbers held as text
        decimals = text.str.fullmatch(_DECIMAL_EPOCH)
        if numbers.dtype.kind == "f" and decimals.all() and text.str.contains(".").any():
            return _decimal_ns(name, text, numbers.to_numpy(), col)
        return time_ns(numbers.rename(col.name))
    # ISO 8601 allows a decimal comma in the seconds (00:00:00,250), pandas only a point
    iso = text.str.replace(r"(?<=\d\d:\d\d:\d\d),(?=\d)", ".", regex=True)
    parsed = pd.to_datetime(iso, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if _beyond_ns(iso.iloc[i]):  # to the ns (pandas then parses at ns) and out of range
            raise _out_of_range(name, i, col, None)
        if i > 0:  # ISO 8601 times, and one cell that is none
            raise _not_a_time(name, i, col.iloc[i])
        parsed = _one_format(name, text, col)
    return _parsed_ns(name, parsed, col)


#: Nanoseconds per unit of a numpy datetime64 (the unit pandas parsed text at).
_NS_PER = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
#: An epoch number written as plain decimals (no exponent): read digit by digit, exact.
_DECIMAL_EPOCH = r"[+-]?(\d+\.?\d*|\.\d+)"


def _beyond_ns(cell: str) -> bool:
    """Whether ``cell`` is a time that int64 nanoseconds cannot hold.

    >>> _beyond_ns("1500-01-01T00:00:00.123456789Z"), _beyond_ns("2024-13-01")
    (True, False)
    """
    try:
        pd.Timestamp(cell)
    except pd.errors.OutOfBoundsDatetime:
        return True
    except (ValueError, TypeError, OverflowError):
        return False
    return False


def _outside(counts: np.ndarray, per: int) -> np.ndarray:
    """Which integer ``counts`` of a unit of ``per`` ns lie outside what int64 nanoseconds
    hold, -(2**63 - 1) .. 2**63 - 1 (-2**63 is NaT), checked exactly.

    >>> _outside(np.array([2**63 - 1, -(2**63 - 1), -(2**63)], dtype=np.int64), 1).tolist()
    [False, False, True]
    >>> _outside(np.array([9223372036, 9223372037]), 10**9).tolist()
    [False, True]
    """
    limit = (2**63 - 1) // per
    if counts.dtype.kind == "u":
        return counts > np.uint64(limit)
    return (counts > limit) | (counts < -limit)


def _out_of_range(name: str, i: int, col: pd.Series, per: int | None) -> QualityError:
    """The refusal of row ``i + 1``'s time, which int64 nanoseconds cannot hold: an epoch
    number in the unit of ``per`` ns, or (``per`` None) a time written as text."""
    what = "" if per is None else f" as epoch {_UNITS[per]}"
    expected = "times" if per is None else "epoch s, ms, us or ns"
    return QualityError(
        f"Time column {name!r} row {i + 1} has {_shown(col.iloc[i])}, which{what} lies outside "
        f"1677-09-21 .. 2262-04-11, the times int64 nanoseconds hold; expected {expected} "
        "within them."
    )


def _parsed_ns(name: str, parsed: pd.Series, col: pd.Series) -> np.ndarray:
    """Times pandas parsed from the text of ``col`` as int64 ns. Pandas parses text at a
    coarser unit (microseconds, seconds), which holds times int64 nanoseconds do not: such
    a time (``1500-01-01``, ``9999-12-31``) is refused naming its row, never wrapped round
    to another date.

    >>> t = pd.Series(["2024-01-01", "9999-12-31"], name="day")
    >>> _parsed_ns("day", pd.to_datetime(t, utc=True, format="ISO8601"), t)
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: Time column 'day' row 2 has '9999-12-31', which lies outside 1677-09-21 .. 2262-04-11, the times int64 nanoseconds hold; expected times within them.
    """  # noqa: E501
    values = parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    unit, count = np.datetime_data(values.dtype)
    per = _NS_PER[unit] * count
    counts = values.view(np.int64)
    out = _outside(counts, per)
    if out.any():
        raise _out_of_range(name, int(np.flatnonzero(out)[0]), col, None)
    return counts * np.int64(per)


def _decimal_ns(name: str, text: pd.Series, x: np.ndarray, col: pd.Series) -> np.ndarray:
    """Epoch numbers written with decimals (``text``; ``x``, the same as floats, tells the
    unit) as int64 ns, read from their digits: exact where a float is not
    (``1700000000.000000005`` s, as ``readings.csv?time_format=epoch_s`` writes it, is 5 ns
    past the second, which a float64 loses). Digits past the nanosecond are rounded, half
    away from zero.

    >>> t = pd.Series(["1700000000.000000005", "1700000000.000000006", "-1.5"])
    >>> _decimal_ns("ts", t, t.astype(float).to_numpy(), t).tolist()
    [1700000000000000005, 1700000000000000006, -1500000000]
    """
    per = epoch_unit_ns(np.abs(x).max())
    _check_one_unit(name, col, x, per)
    out = np.abs(x) * float(per) >= 2.0**63  # far out: its digits need not fit an int64
    if out.any():
        raise _out_of_range(name, int(np.flatnonzero(out)[0]), col, per)
    digits = len(str(per)) - 1  # of the fraction, those that are whole nanoseconds
    parts = text.str.extract(r"^([+-]?)(\d*)\.?(\d*)$")
    whole = pd.to_numeric(parts[1].where(parts[1] != "", "0")).to_numpy()
    out = _outside(whole, per)  # exact, where the float check above was not
    if out.any():
        raise _out_of_range(name, int(np.flatnonzero(out)[0]), col, per)
    frac = parts[2].str.ljust(digits + 1, "0")
    part = (pd.to_numeric(frac.str[:digits]).to_numpy(dtype=np.int64) if digits
            else np.zeros(len(text), dtype=np.int64))
    part = part + (frac.str[digits] >= "5").to_numpy()  # the digit past the ns rounds
    ns = whole.astype(np.int64) * np.int64(per)
    out = ns > np.int64(2**63 - 1) - part
    if out.any():
        raise _out_of_range(name, int(np.flatnonzero(out)[0]), col, per)
    return np.where((parts[0] == "-").to_numpy(), -(ns + part), ns + part)


_UNITS = {10**9: "seconds", 10**6: "milliseconds", 10**3: "microseconds", 1: "nanoseconds"}


def _check_one_unit(name: str, col: pd.Series, x: np.ndarray, per: int) -> None:
    """Refuse epoch numbers of two units in one column (a logger switched from seconds to
    milliseconds): told by the largest, the seconds would be read as 1970 milliseconds. Only
    numbers from 1e8 on count (1973 in seconds): smaller ones are no epoch in any unit.

    >>> _check_one_unit("ts", pd.Series([1.7e9, 1.7e12]), np.array([1.7e9, 1.7e12]), 10**6)
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: Time column 'ts' mixes epoch units: row 1 has 1700000000.0 (seconds), row 2 has 1700000000000.0 (milliseconds); write every time in one unit.
    """  # noqa: E501
    a = np.abs(x)
    epochs = np.flatnonzero(a >= 1e8)
    # the unit grows with the size (epoch_unit_ns): the smallest epoch tells a mix
    if len(epochs) and epoch_unit_ns(a[epochs].min()) != per:
        i = next(int(k) for k in epochs if epoch_unit_ns(a[k]) != per)
        j = int(np.argmax(a))
        raise QualityError(
            f"Time column {name!r} mixes epoch units: row {i + 1} has {_shown(col.iloc[i])} "
            f"({_UNITS[epoch_unit_ns(a[i])]}), row {j + 1} has {_shown(col.iloc[j])} "
            f"({_UNITS[per]}); write every time in one unit.")


def _one_format(name: str, text: pd.Series, col: pd.Series) -> pd.Series:
    """``text`` (not ISO 8601 from its first cell on) read in the one format its first cell
    shows; a format that reads it day-first and month-first alike is refused, as is a
    column some cell of which does not fit."""
    from pandas.tseries.api import guess_datetime_format

    first = text.iloc[0]
    with warnings.catch_warnings():  # pandas warns when it guesses day-first
        warnings.simplefilter("ignore")
        guesses = [guess_datetime_format(first), guess_datetime_format(first, dayfirst=True)]
    # year, day, month (what a day-first guess makes of 2024/01/03) is no one's layout
    formats = list(dict.fromkeys(f for f in guesses if f and not _year_day_month(f)))
    if not formats:
        raise _not_a_time(name, 0, col.iloc[0])
    tries = [pd.to_datetime(text, utc=True, format=f, errors="coerce") for f in formats]
    whole = [p for p in tries if not p.isna().any()]
    if len(whole) == 2 and not whole[0].equals(whole[1]):
        raise QualityError(
            f"Time column {name!r} reads {first!r} (row 1) both day-first and month-first; "
            "write times as ISO 8601 / RFC 3339 (2024-03-01T00:00:00Z) or epoch numbers."
        )
    if whole:
        return whole[0]
    # the format that reads furthest names the first row it does not fit
    i = max(int(np.flatnonzero(p.isna().to_numpy())[0]) for p in tries)
    raise QualityError(
        f"Time column {name!r} row {i + 1} has {_shown(col.iloc[i])}, which does not fit "
        f"the layout of row 1 ({first!r}); one layout for the whole column is read: "
        "ISO 8601 / RFC 3339 times (2024-03-01T00:00:00Z) or epoch numbers are expected."
    )


def _year_day_month(fmt: str) -> bool:
    """Whether a strftime format puts the year, then the day, then the month.

    >>> _year_day_month("%Y-%d-%m %H:%M"), _year_day_month("%d/%m/%Y")
    (True, False)
    """
    at = [fmt.find(d) for d in ("%Y", "%d", "%m")]
    return -1 not in at and at[0] < at[1] < at[2]


def _shown(value: object) -> str:
    """A cell as messages show it: ``19.87``, never ``np.float64(19.87)``."""
    return repr(plain(value))


def _not_a_time(name: str, i: int, value: object) -> QualityError:
    return QualityError(
        f"Time column {name!r} must hold timestamps: epoch numbers or ISO 8601 / RFC 3339 "
        f"times (a time without an offset is read as UTC); row {i + 1} has {_shown(value)}."
    )


def separator(header: str, lines: Iterable[str] = ()) -> str:
    """The field separator of a CSV file, told from its header line and, where that leaves
    it open, from the first data ``lines``. Separators inside quotes do not count.

    ``;`` where the header has more semicolons than commas (a European spreadsheet's
    export), ``,`` where it has more commas. On a tie the data lines decide: the separator
    of which every data line has as many as the header wins (a one-column file of decimal
    commas, ``20,35``, is a semicolon file). Where both or neither do and the header has
    some of each (``Zeit;Temp, °C;Druck, bar`` over ``2024-01-01 00:00:00;20,13;0,964``),
    the one that splits the lines into more numbers wins, ``;`` on a tie; a header of
    neither (one column) is a comma file.

    >>> separator("zeit;druck;temp"), separator("ts,value"), separator('zeit;"Temp, °C"')
    (';', ',', ';')
    >>> separator("druck", ["20,35", "21,5"]), separator("druck", ["20", "21.5"])
    (';', ',')
    >>> separator("Zeit;Temp, °C;Druck, bar", ["2024-01-01 00:00:00;20,13;0,964"])
    ';'
    >>> separator("ts,Temp; °C,p; bar", ["2024-01-01 00:00:00,20.1,3"])
    ','
    """
    heads = _counts(header)
    commas, semis = heads[0] if heads else (0, 0)
    if commas != semis:
        return ";" if semis > commas else ","
    sample = [line.rstrip("\r\n") for line in lines]
    rows = _counts("\n".join(sample))
    by_comma = all(c == commas for c, _ in rows)
    by_semi = all(s == semis for _, s in rows)
    if by_comma != by_semi:
        return "," if by_comma else ";"
    if not commas:
        return ","
    return "," if _numbers(sample, ",") > _numbers(sample, ";") else ";"


#: A number as a cell of a comma file writes it; in a semicolon file a decimal comma too.
_NUMBER = {",": re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"),
           ";": re.compile(r"[+-]?(\d+[.,]?\d*|[.,]\d+)([eE][+-]?\d+)?")}


def _numbers(lines: list[str], sep: str) -> int:
    """How many cells of ``lines`` split at ``sep`` (quotes kept together) are numbers.

    >>> _numbers(["2024-01-01;20,13;0,964"], ";"), _numbers(["2024-01-01;20,13;0,964"], ",")
    (2, 1)
    """
    cells = itertools.chain.from_iterable(
        csv.reader(io.StringIO("\n".join(lines), newline=""), delimiter=sep,
                   skipinitialspace=True))
    return sum(_NUMBER[sep].fullmatch(c.strip()) is not None for c in cells)


def _counts(text: str) -> list[tuple[int, int]]:
    """Commas and semicolons outside quoted fields in each non-blank record of ``text``.

    A field is quoted where it opens with ``"`` (after blanks); ``""`` inside it is a
    quote, and it may span lines. A ``"`` anywhere else is text, as the csv module and
    pandas read it.

    >>> _counts('a;"b, c";d\\n"x""y,z",1 "2,3"')
    [(0, 2), (2, 0)]
    """
    out: list[tuple[int, int]] = []
    commas = semis = 0
    quoted = closed = False
    start = blank = True
    for ch in text + "\n":
        if quoted:
            if ch == '"':
                quoted, closed = False, True
            continue
        if ch == '"' and (start or closed):
            quoted, closed, start, blank = True, False, False, False
            continue
        closed = False
        if ch == "\n":
            if not blank:
                out.append((commas, semis))
            commas = semis = 0
            start = blank = True
        elif ch in ",;":
            commas += ch == ","
            semis += ch == ";"
            start, blank = True, False
        elif not ch.isspace():
            start = blank = False
    return out


#: Data lines read, besides the header, to tell the separator.
_SAMPLE_LINES = 50
#: Tried in turn: UTF-8 (with or without a byte-order mark), then what spreadsheets in
#: Western Europe write (Windows-1252), then Latin-1, which decodes any byte.
_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")


#: Bytes read from the start of a file to tell text from binary data.
_SNIFF_BYTES = 64 * 1024
#: Files that are often handed over as "the CSV": what they are, and what to do instead.
_MAGIC = (
    (b"PK\x03\x04", "it is a ZIP archive (an .xlsx or .ods workbook?); export the sheet as CSV"),
    (b"\xd0\xcf\x11\xe0", "it is an Office document (an .xls workbook?); export it as CSV"),
    (b"\x1f\x8b", "it is gzip data; name it *.gz (gzipped CSV is read as such)"),
    (b"\xff\xfe", "it is UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff", "it is UTF-16 text; save it as UTF-8"),
    (b"PAR1", "it is a Parquet file"),
    (b"SQLite format 3\x00", "it is an SQLite database"),
)


def check_csv_file(path: str | Path, name: str = "File") -> Path:
    r"""Return ``path`` as a :class:`~pathlib.Path` if it is a file of CSV text, else raise
    :class:`~edgewise.errors.QualityError` with one line naming ``name``, the path and
    what is wrong: it does not exist, is a directory, cannot be read, or is not text
    (UTF-8 or Windows-1252; a ``*.gz`` file must be gzip of such text). The first 64 KiB
    are looked at: a NUL byte, a byte that neither encoding decodes, or mostly control
    characters make it binary.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> check_csv_file(d, "--failures")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: --failures '...' is a directory, expected a CSV file.
    >>> _ = (d / "x.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    >>> check_csv_file(d / "x.csv")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: File '.../x.csv' is not text (UTF-8/CP1252) CSV: it holds a NUL byte at offset 8 (binary data).
    """  # noqa: E501
    p = Path(path)
    where = f"{name} {str(p)!r}"
    if p.is_dir():
        raise QualityError(f"{where} is a directory, expected a CSV file.")
    if not p.exists():
        raise QualityError(f"{where} does not exist.")
    if not p.is_file():
        raise QualityError(f"{where} is not a regular file, expected a CSV file.")
    head = _read_bytes(p, where, gz=False, limit=_SNIFF_BYTES)
    if _gzipped(p):
        if not head.startswith(b"\x1f\x8b"):
            raise QualityError(f"{where} is not gzip data, as its .gz suffix says; "
                               "expected gzipped CSV text.")
        head = _read_bytes(p, where, gz=True, limit=_SNIFF_BYTES)
    why = _not_text(head, truncated=len(head) == _SNIFF_BYTES)
    if why:
        raise QualityError(f"{where} is not text (UTF-8/CP1252) CSV: {why}.")
    return p


def _not_text(data: bytes, truncated: bool = False) -> str | None:
    r"""Why ``data`` (the start of a file) is no CSV text, or ``None`` if it may be.

    >>> _not_text(b"ts,temp\n1,20.5\n"), _not_text("zeit;Temp°\n".encode("cp1252"))
    (None, None)
    >>> _not_text(b"PK\x03\x04rest")
    'it is a ZIP archive (an .xlsx or .ods workbook?); export the sheet as CSV'
    """
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return what
    nul = data.find(b"\x00")
    if nul >= 0:
        return f"it holds a NUL byte at offset {nul} (binary data)"
    try:  # a multi-byte character cut at the end of the sample is no fault
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=not truncated)
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as exc:
            return (f"byte 0x{data[exc.start]:02x} at offset {exc.start} is neither UTF-8 "
                    "nor CP1252 text (binary data)")
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v\x1a")
    if control > max(8, len(text) // 100):
        return f"{control} of its first {len(text)} characters are control characters (binary data)"
    return None


def read_text(path: str | Path, name: str = "File") -> str:
    r"""The whole text of a small CSV file (labels, failure times), for the ``csv`` module:
    UTF-8 (a byte-order mark skipped), else Windows-1252, gunzipped if it ends in ``.gz``.
    Line ends are kept (read it with ``io.StringIO(text, newline="")``).

    Raises :class:`~edgewise.errors.QualityError` naming ``name`` and the path when
    :func:`check_csv_file` refuses it, or when a byte further on decodes in neither.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "l.csv"
    >>> _ = f.write_bytes("device_id,note\npump-1,Lager 80°C\n".encode("cp1252"))
    >>> read_text(f).splitlines()[1]
    'pump-1,Lager 80°C'
    """
    p = check_csv_file(path, name)
    data = _without_bom(_read_bytes(p, f"{name} {str(p)!r}", gz=_gzipped(p)))
    for encoding in _ENCODINGS[:-1]:  # latin-1, the last, decodes anything: not a test
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            err = exc
    raise QualityError(
        f"{name} {str(p)!r} is not text (UTF-8/CP1252) CSV: byte 0x{data[err.start]:02x} at "
        f"offset {err.start} decodes in neither (binary data)."
    ) from None


def _gzipped(p: Path) -> bool:
    """Whether ``p`` is read as gzip: its name ends in ``.gz``, in any case (``X.CSV.GZ``).

    >>> _gzipped(Path("d/PUMP.CSV.GZ")), _gzipped(Path("pump.csv"))
    (True, False)
    """
    return p.suffix.lower() == ".gz"


def _without_bom(data: bytes) -> bytes:
    r"""``data`` without a leading UTF-8 byte-order mark: a file that falls back to
    Windows-1252 (one byte further on is no UTF-8) would read the mark as ``ï»¿``, glued to
    its first column's name.

    >>> _without_bom(b"\xef\xbb\xbftime,temp\n"), _without_bom(b"time\n")
    (b'time,temp\n', b'time\n')
    """
    return data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data


def _read_bytes(p: Path, where: str, *, gz: bool, limit: int = -1) -> bytes:
    """The first ``limit`` bytes of ``p`` (all with -1), gunzipped when ``gz``; a damaged gzip
    file or an OS error is a :class:`~edgewise.errors.QualityError` naming ``where``."""
    try:
        with (gzip.open if gz else open)(p, "rb") as f:
            return f.read(limit)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise QualityError(f"{where} is a damaged gzip file ({exc}).") from None
    except OSError as exc:
        raise QualityError(f"{where} cannot be read ({exc.strerror or exc}).") from None


def read_table(path: str | Path, name: str = "File", *, text: bool = False) -> pd.DataFrame:
    """Read a comma- or semicolon-separated file, optionally gzipped (the separator is
    detected; in a semicolon file, numbers may have a decimal comma, as European
    spreadsheets write them). A file that is not UTF-8 is read as Windows-1252, as
    spreadsheets in Western Europe write it.

    With ``text=True`` every cell is the string written in the file (an empty cell is
    ``""``; ``007``, ``NA``, ``TRUE``, ``1.50`` and 17-digit ids stay as they are), for
    writing the rows back as they were read; only a decimal-comma number of a semicolon
    file gets a decimal point (``1,50`` -> ``1.50``), as the number it is read as. Such
    numbers are read cell by cell: ``ERR`` among them stays ``ERR``, the rest are numbers.
    Two columns of one name (``ts,a,a``, which pandas would read as ``a`` and ``a.1``), or
    whose names differ only by spaces around them, are refused. A column whose header cell
    is empty (a saved pandas index) is named ``Unnamed: N``, as pandas names it;
    :func:`header_as_written` gives its empty name back.
    :func:`read_tables` gives both views from one read of the file.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = Path(d) / "pump.csv"
    ...     _ = f.write_text("zeit;druck;id\\n2024-01-01 00:00:00;1,50;007\\n")
    ...     read_table(f)["druck"].tolist(), read_table(f, text=True).iloc[0].tolist()
    ([1.5], ['2024-01-01 00:00:00', '1.50', '007'])

    Raises :class:`~edgewise.errors.QualityError`, naming ``name`` and the path, when the
    file is missing, a directory, not text (:func:`check_csv_file`), empty or has no data
    rows.
    """
    return _parse(*_load(path, name), text)


def read_tables(path: str | Path, name: str = "File") -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`read_table` and ``read_table(path, text=True)`` from one read of the file:
    the numbers to score and the cells as written, row for row the same rows even if the
    file changes on disk meanwhile (a logger still appending to it).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = Path(d) / "pump.csv"
    ...     _ = f.write_text("t,druck\\n1,007\\n")
    ...     numbers, cells = read_tables(f)
    ...     numbers["druck"].tolist(), cells["druck"].tolist()
    ([7], ['007'])
    """
    loaded = _load(path, name)
    numbers, header = _parse_header(*loaded, False)
    return numbers, _parse_header(*loaded, True, header)[0]


def _load(path: str | Path, name: str) -> tuple[bytes, str, str]:
    """The (gunzipped) bytes of the CSV file at ``path``, the separator they use and how
    errors name the file; refused in one line when it is no CSV text or is empty."""
    p = check_csv_file(path, name)
    where = f"{name} {str(p)!r}"
    data = _without_bom(_read_bytes(p, where, gz=_gzipped(p)))
    hinted, data = _separator_line(data, where)
    with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", errors="replace") as f:
        head = f.readline()
        sample = list(itertools.islice(f, _SAMPLE_LINES))
    if not head.strip():
        raise QualityError(f"{where} is empty; expected a header row and data rows.")
    return data, hinted or separator(head, sample), where


#: A spreadsheet's first line naming the field separator (``sep=;``), before the header.
_SEP_LINE = re.compile(rb"sep=(.?)\r?(\n|$)", re.IGNORECASE)


def _separator_line(data: bytes, where: str) -> tuple[str | None, bytes]:
    r"""The separator a first line ``sep=X`` of ``data`` names (as Excel writes it before the
    header, so that the file opens in columns), and ``data`` without that line; ``None`` and
    ``data`` as it is where there is no such line. Only ``,`` and ``;`` are read (one that
    names another is refused in one line naming ``where``), as the file would be without it.

    >>> _separator_line(b"sep=;\r\nzeit;temp\r\n", "File 'x.csv'")
    (';', b'zeit;temp\r\n')
    >>> _separator_line(b"zeit,temp\n", "File 'x.csv'")
    (None, b'zeit,temp\n')
    >>> _separator_line(b"sep=|\na|b\n", "File 'x.csv'")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: File 'x.csv' line 1, 'sep=|', names the field separator '|'; only comma- or semicolon-separated files are read: save it with ',' or ';' (or remove the sep= line).
    """  # noqa: E501
    hint = _SEP_LINE.match(data)
    if hint is None:
        return None, data
    sep = hint.group(1).decode("latin-1")
    if sep not in (",", ";"):
        raise QualityError(
            f"{where} line 1, 'sep={sep}', names the field separator {sep!r}; only comma- or "
            "semicolon-separated files are read: save it with ',' or ';' (or remove the sep= "
            "line).")
    return sep, data[hint.end():]


def _parse(data: bytes, sep: str, where: str, text: bool) -> pd.DataFrame:
    """The table in ``data`` (:func:`_load`), as numbers or (``text``) as written."""
    return _parse_header(data, sep, where, text)[0]


def _parse_header(data: bytes, sep: str, where: str, text: bool,
                  header: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """:func:`_parse`, and the header row as written (read unless given: an earlier
    parse of the same ``data`` read it)."""
    try:
        df, encoding = _read_csv(data, sep, text, where)
        if header is None:
            header = _header_row(data, sep, encoding)
    except pd.errors.EmptyDataError:
        raise QualityError(f"{where} is empty; expected a header row and data rows.") from None
    except pd.errors.ParserError as exc:
        raise QualityError(f"{where} is not a valid CSV: {exc}".splitlines()[0]) from None
    if df.empty:
        raise QualityError(f"{where} has a header but no data rows.")
    # the header as written: pandas renames a second 'a' to 'a.1', so that df.columns
    # cannot tell it from a column the file itself names 'a.1'
    _refuse_twice_named([c.strip() for c in header], header, where)
    names = [str(c).strip() for c in df.columns]
    df.columns = names
    df.attrs[_BLANK_HEADER] = [f"Unnamed: {j}" for j, c in enumerate(header)
                               if not c.strip() and f"Unnamed: {j}" in names]
    if sep == ";":
        _decimal_commas(df, text)
    return df, header


def _refuse_twice_named(names: list[str], raw: list[str], where: str) -> None:
    """Refuse two columns with one name (``names``: the header cells ``raw`` without the
    spaces around them), written alike (``a,a``) or not (``temp`` and ``temp ``): every
    reader would take one for the other, and pandas renames the second (``a.1``). Empty
    names are no name: each such column is told by its position.

    >>> _refuse_twice_named(["ts", "temp", "temp"], ["ts", "temp", "temp "], "File 'r.csv'")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: File 'r.csv' has two columns named 'temp' (columns 2 and 3 of the header: 'temp' and 'temp '; spaces around a name do not count); rename one so that every column name is unique.
    >>> _refuse_twice_named(["ts", "a", "a"], ["ts", "a", "a"], "File 'r.csv'")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: File 'r.csv' has two columns named 'a' (columns 2 and 3 of the header); rename one so that every column name is unique.
    >>> _refuse_twice_named(["", "a", "a.1", ""], ["", "a", "a.1", ""], "File 'r.csv'")
    """  # noqa: E501
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        if not name:
            continue
        if name in seen:
            i = seen[name]
            how = ("" if raw[i] == raw[j] else
                   f": {raw[i]!r} and {raw[j]!r}; spaces around a name do not count")
            raise QualityError(
                f"{where} has two columns named {name!r} (columns {i + 1} and {j + 1} of the "
                f"header{how}); rename one so that every column name is unique.")
        seen[name] = j


def _header_row(data: bytes, sep: str, encoding: str) -> list[str]:
    """The cells of the header row of ``data`` as written (``pd.read_csv`` renames a second
    ``a`` to ``a.1`` and an empty cell to ``Unnamed: N``): read as :func:`_read_csv` reads
    the file, in its ``encoding``.

    >>> _header_row(b" ts, a,a,,a.1\\n1,2,3,4,5\\n", ",", "utf-8-sig")
    ['ts', 'a', 'a', '', 'a.1']
    """
    row = pd.read_csv(io.BytesIO(data), sep=sep, encoding=encoding, skipinitialspace=True,
                      header=None, nrows=1, dtype=str, keep_default_na=False, index_col=False)
    return [str(c) for c in row.iloc[0]]


def _read_csv(data: bytes, sep: str, text: bool = False,
              where: str = "File") -> tuple[pd.DataFrame, str]:
    """``pd.read_csv`` of ``data`` in the first of :data:`_ENCODINGS` that decodes it all,
    and that encoding; with ``text``, every cell as its string, nothing taken for missing.

    No column is taken for the index (``index_col=False``): data rows that end in a
    separator the header lacks (``ts,a,b`` over ``2024-01-01T00:00:00Z,1.5,2,``) keep their
    columns, where pandas would make the time the index and shift every name one column
    on. A row whose extra fields hold something is refused (:func:`_refuse_extra_fields`).

    >>> _read_csv(b"ts,a\\n1,2.5,\\n2,3.5,\\n", ",")[0].to_dict("list")
    {'ts': [1, 2], 'a': [2.5, 3.5]}
    """
    kw: dict = {"dtype": str, "keep_default_na": False} if text else {}
    for encoding in _ENCODINGS:
        try:
            return _read_as(data, sep, encoding, where, kw), encoding
        except UnicodeDecodeError:
            if encoding == _ENCODINGS[-1]:
                raise
    raise AssertionError("unreachable: the last encoding decodes any byte")


def _read_as(data: bytes, sep: str, encoding: str, where: str, kw: dict) -> pd.DataFrame:
    """:func:`_read_csv` in one ``encoding``; pandas' warning that a row has more fields
    than the header (which it cuts off) becomes a check of what they hold."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = pd.read_csv(io.BytesIO(data), sep=sep, encoding=encoding, skipinitialspace=True,
                         index_col=False, **kw)
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning) and "index_col" in str(w.message):
            _refuse_extra_fields(data, sep, encoding, where)
        else:  # anyone else's warning, as if never caught
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return df


def _refuse_extra_fields(data: bytes, sep: str, encoding: str, where: str) -> None:
    """Refuse the first data row with more fields than the header where an extra one is not
    empty: it names no column, so its value would be dropped (or, read by pandas' default,
    shift the columns). Empty extra fields (a separator ending each row) are let through.

    >>> _refuse_extra_fields(b"ts,a\\n1,2,\\n2,3,x\\n", ",", "utf-8", "File 'm.csv'")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: File 'm.csv' row 2 has 3 fields, more than the 2 columns of its header: the extra field holds 'x'. Name every column in the header, or remove the extra fields (a separator ending each row is fine).
    """  # noqa: E501
    rows = csv.reader(io.StringIO(data.decode(encoding, errors="replace"), newline=""),
                      delimiter=sep, skipinitialspace=True)
    header = next((r for r in rows if r), [])
    k = 0
    for cells in rows:
        if not cells:  # a blank line, which pandas skips
            continue
        k += 1
        extra = [c for c in cells[len(header):] if c.strip()]
        if extra:
            raise QualityError(
                f"{where} row {k} has {len(cells)} fields, more than the {len(header)} "
                f"columns of its header: the extra field holds {extra[0]!r}. Name every "
                "column in the header, or remove the extra fields (a separator ending each "
                "row is fine).")


_DECIMAL_COMMA = r"^[+-]?(\d+,\d*|,\d+|\d+)([eE][+-]?\d+)?$"
#: A decimal-comma number with its thousands grouped (``1.013,25``), as a spreadsheet's
#: number format ``#.##0,00`` writes it: by points (German) or by spaces, plain, no-break
#: or narrow no-break (French), one kind throughout; unambiguous with its comma.
_GROUPED_COMMA = r"^[+-]?\d{1,3}(?P<g>[. \u00a0\u202f])\d{3}(?:(?P=g)\d{3})*,\d*$"
_GROUPING = r"[. \u00a0\u202f]"
#: The cells ``pd.read_csv`` reads as missing by default (its documented ``na_values``):
#: what a ``text=True`` read leaves as written and the numeric read takes for empty.
_NA_TEXT = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                      "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                      "nan", "null"})


def _decimal_commas(df: pd.DataFrame, text: bool = False) -> None:
    """Turn the cells of text columns written with a decimal comma (``0,125``: a semicolon
    file from a European spreadsheet) into numbers, in place (with ``text``, into the same
    text with a decimal point). A column is looked at when one of its cells is such a
    number with a comma; then each cell that is a number in that notation is converted,
    cell by cell, and any other cell (``ERR``, ``1,234.5``) is left as written, for the
    numeric check to name or the quality report to count as invalid. A column whose every
    non-empty cell is converted becomes a float column. A number whose thousands are
    grouped (:data:`_GROUPED_COMMA`) before its decimal comma (``1.013,25``) is read too,
    without them.

    >>> df = pd.DataFrame({"v": ["1,5", "ERR", "2", None], "t": ["a", "b", "c", "d"]})
    >>> _decimal_commas(df)
    >>> df["v"].tolist(), df["t"].tolist()
    ([1.5, 'ERR', 2.0, nan], ['a', 'b', 'c', 'd'])
    >>> df = pd.DataFrame({"p": ["1.013,25", "998,5", "-12.345.678,0", "1\u202f013,5"]})
    >>> _decimal_commas(df)
    >>> df["p"].tolist()
    [1013.25, 998.5, -12345678.0, 1013.5]
    """
    for col in df.columns:
        raw = df[col]
        if raw.dtype != object and not pd.api.types.is_string_dtype(raw):
            continue
        cells = raw.astype(object).where(raw.notna(), "").astype(str).str.strip()
        grouped = cells.str.fullmatch(_GROUPED_COMMA)
        number = cells.str.fullmatch(_DECIMAL_COMMA) | grouped
        if not (number & cells.str.contains(",", regex=False)).any():
            continue
        cells = cells.where(~grouped, cells.str.replace(_GROUPING, "", regex=True))
        points = cells.str.replace(",", ".", regex=False)
        if text:  # the numbers only; NA and any other text stay as written
            df[col] = points.where(number, raw)
            continue
        values = pd.to_numeric(points.where(number), errors="coerce")
        rest = raw.notna() & ~number & ~cells.isin(_NA_TEXT)
        if not rest.any():  # numbers throughout: a float column, as pandas reads one
            df[col] = values.where(raw.notna())
        else:  # a cell that is no number stays as written, beside the numbers
            df[col] = raw.astype(object).where(~number, values.astype(object))
