"""Epoch numbers written with decimals are read from their digits, exactly.

``readings.csv?time_format=epoch_s`` writes times as exact decimal seconds
(``1700000000.000000005``); read back as float64 (17 significant digits) two readings
5 and 6 ns past one second became one time: ``edgewise quality`` counted conflicts and
``edgewise detect`` refused a duplicate timestamp that the file does not have.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import QualityError
from edgewise.label.workflow import load_history_csv
from edgewise.tables import time_ns

load_commands()

CELLS = ["1700000000.000000005", "1700000000.000000006", "1700000000.000000007"]
EXACT = [1700000000000000005, 1700000000000000006, 1700000000000000007]


def test_decimal_epoch_text_is_read_to_the_nanosecond() -> None:
    """Check text of decimal seconds, milliseconds and negative seconds, exactly."""
    assert time_ns(pd.Series(CELLS)).tolist() == EXACT
    assert time_ns(pd.Series(["-1.5", "+2.", ".25"])).tolist() == [
        -1500000000, 2000000000, 250000000]
    assert time_ns(pd.Series(["1700000000000.000005", "1.5"])).tolist() == [
        1700000000000000005, 1500000]  # the unit told by the largest: milliseconds


def test_digits_past_the_nanosecond_round_and_ordinary_floats_keep_their_reading() -> None:
    """Check a tenth of a ns rounds half away from zero, and a float column reads as before."""
    assert time_ns(pd.Series(["1.0000000004", "1.0000000005", "-1.0000000005"])).tolist() == [
        1000000000, 1000000001, -1000000001]
    floats = pd.Series([1706702400.5, 1706702401.25])
    assert time_ns(floats).tolist() == (floats.to_numpy() * 1e9).astype("int64").tolist()
    assert time_ns(pd.Series(["1.7e9", "1.7e9"])).tolist() == [1700000000 * 10**9] * 2


def test_decimal_epoch_text_past_int64_is_refused_naming_the_row() -> None:
    """Check the exact reading keeps the range check (and the mixed-unit one)."""
    with pytest.raises(QualityError, match=r"row 2 has '9300000000\.5', which as epoch seconds"):
        time_ns(pd.Series(["1700000000.5", "9300000000.5"], name="ts"))
    with pytest.raises(QualityError, match="mixes epoch units"):
        time_ns(pd.Series(["1700000000.5", "1700000000000.5"], name="ts"))


def _file(tmp_path: Path) -> Path:
    f = tmp_path / "readings.csv"
    f.write_text("time,temp\n" + "".join(f"{c},{20 + i}\n" for i, c in enumerate(CELLS)))
    return f


def test_quality_finds_no_conflicts_in_a_file_of_ns_decimal_seconds(tmp_path: Path) -> None:
    """Check three readings at three times are three, not one time in conflict."""
    res = CliRunner(mix_stderr=False).invoke(app, ["quality", str(_file(tmp_path)), "--json"])
    assert res.exit_code == 0, res.stderr
    temp = json.loads(res.stdout)["devices"]["device"]["metrics"]["temp"]
    assert (temp["readings"], temp["distinct_times"], temp["conflicts"]) == (3, 3, 0)


def test_detect_and_history_read_ns_decimal_seconds_as_distinct_times(tmp_path: Path) -> None:
    """Check detect scores the file (it refused a duplicate timestamp) and the history
    holds the times exactly."""
    f = _file(tmp_path)
    res = CliRunner(mix_stderr=False).invoke(app, ["detect", str(f), "--out",
                                                   str(tmp_path / "o.csv")])
    assert res.exit_code == 0, res.stderr
    assert load_history_csv(f)[0].tolist() == EXACT
