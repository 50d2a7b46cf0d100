"""Times int64 nanoseconds cannot hold (before 1677-09-21, after 2262-04-11) are refused,
naming the row and the value, never wrapped round to another date; the epoch limit is
checked exactly; a true/false column is no time.

A time hunt found ``1500-01-01T00:00:00Z`` read as 2084-07-20, ``0001-01-01`` as 1754 and
``9999-12-31`` (in ISO 8601, in a one-layout file, and as a date joined to a time of day)
as 1816: pandas parses text at microseconds, and ``.to_numpy(dtype="datetime64[ns]")``
wrapped round. ``edgewise quality``, ``load_history_csv`` and ``edgewise detect`` took
those dates silently. The epoch check (``big * per >= 2.0**63`` in floats) refused
9223372036854775806, which int64 holds, and named row 1 when row 2 was out of range.
``edgewise quality`` read a true/false column as epoch 1 and 0, where ``detect`` refused it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import EdgewiseError, QualityError
from edgewise.label.workflow import load_history_csv
from edgewise.tables import date_and_clock, time_ns

load_commands()

OUTSIDE = "lies outside 1677-09-21 .. 2262-04-11, the times int64 nanoseconds hold"


@pytest.mark.parametrize(("cells", "row"), [
    (["1500-01-01T00:00:00Z", "1600-01-01T00:00:00Z"], 1),
    (["0001-01-01T00:00:00Z"], 1),
    (["2024-01-01", "9999-12-31"], 2),  # a date, read at seconds
    (["2024-01-01 00:00:00", "2300-01-01 00:00:00"], 2),
    (["01.01.2024 00:00", "31.12.9999 00:00"], 2),  # the one-layout path
    (["2024-01-01T00:00:00Z", "2262-04-11T23:47:16.854775808Z"], 2),  # 1 ns past the end
    (["1500-01-01T00:00:00.123456789Z"], 1),  # to the ns: pandas gives no time at all
])
def test_text_times_outside_int64_ns_are_refused_naming_row_and_value(
        cells: list[str], row: int) -> None:
    """Check each is refused naming its row and cell, where it used to become another date."""
    with pytest.raises(QualityError) as exc:
        time_ns(pd.Series(cells, name="time"))
    assert str(exc.value) == (
        f"Time column 'time' row {row} has {cells[row - 1]!r}, which {OUTSIDE}; expected "
        "times within them.")


def test_the_last_and_first_times_int64_ns_hold_are_read() -> None:
    """Check the bounds themselves are kept, to the nanosecond."""
    got = time_ns(pd.Series(["1677-09-21T00:12:43.145224193Z", "2262-04-11T23:47:16.854775807Z"]))
    assert got.tolist() == [-(2**63 - 1), 2**63 - 1]


def test_a_date_joined_to_a_time_of_day_outside_the_range_is_refused() -> None:
    """Check the date + time-of-day path: 9999-12-31 with 00:00:00 was read as 1816."""
    df = pd.DataFrame({"date": ["2024-01-01", "9999-12-31"], "time": ["00:00:00", "00:00:00"]})
    with pytest.raises(QualityError, match=re.escape(
            f"row 2 has '9999-12-31 00:00:00', which {OUTSIDE}")):
        time_ns(date_and_clock(df, "date", "time"))


class _Done:
    """A command's exit code, stdout and stderr, a refusal written as ``edgewise.cli.main``
    writes it (``error: ...``)."""

    def __init__(self, *args: str) -> None:
        res = CliRunner(mix_stderr=False).invoke(app, list(args))
        self.exit_code, self.stdout, self.stderr = res.exit_code, res.stdout, res.stderr
        if isinstance(res.exception, EdgewiseError):
            self.stderr += f"error: {res.exception}\n"


_run = _Done


@pytest.mark.parametrize("cell", ["1500-01-01T00:00:00Z", "9999-12-31"])
def test_quality_history_and_detect_refuse_a_time_outside_the_range(
        tmp_path: Path, cell: str) -> None:
    """Check the three readers refuse the file, naming row 3 and its cell, where quality
    reported the readings at a wrapped date and detect scored them."""
    f = tmp_path / "r.csv"
    f.write_text(f"time,v\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,2\n{cell},3\n")
    said = f"Time column 'time' row 3 has {cell!r}, which {OUTSIDE}"
    res = _run("quality", str(f))
    assert res.exit_code != 0 and said in res.stderr, (res.stdout, res.stderr)
    with pytest.raises(QualityError, match=re.escape(said)):
        load_history_csv(f)
    res = _run("detect", str(f), "--out", str(tmp_path / "o.csv"))
    assert res.exit_code != 0 and said in res.stderr, (res.stdout, res.stderr)


def test_the_largest_epoch_ns_int64_holds_is_read_exactly() -> None:
    """Check 2**63 - 2 and 2**63 - 1, which floats round to 2**63, are read, not refused."""
    got = time_ns(pd.Series([9223372036854775806, 9223372036854775807], name="ts"))
    assert got.tolist() == [9223372036854775806, 9223372036854775807]


@pytest.mark.parametrize("cells", [
    [9223372036854775806, 9223372036854775808],
    ["9223372036854775806", "9223372036854775808"],
])
def test_the_epoch_out_of_range_names_its_own_row(cells: list) -> None:
    """Check row 2 (2**63, past int64) is named, not row 1, which holds a valid time."""
    with pytest.raises(QualityError) as exc:
        time_ns(pd.Series(cells, name="ts"))
    assert str(exc.value).startswith(
        "Time column 'ts' row 2 has 9223372036854775808, which as epoch nanoseconds lies outside")


def test_quality_refuses_a_true_false_time_column_as_detect_does(tmp_path: Path) -> None:
    """Check quality names the cell in detect's words, where it read true as epoch 1."""
    f = tmp_path / "b.csv"
    f.write_text("time,v\ntrue,1\nfalse,2\n")
    said = ("error: Time column 'time' must hold timestamps: epoch numbers or ISO 8601 / RFC "
            "3339 times (a time without an offset is read as UTC); row 1 has 'True'.\n")
    res = _run("quality", str(f))
    assert res.exit_code != 0 and res.stdout == "" and res.stderr == said
    res = _run("detect", str(f), "--out", str(tmp_path / "o.csv"))
    assert res.exit_code != 0 and res.stderr == said
