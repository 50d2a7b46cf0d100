"""``edgewise quality`` refuses one column named for two roles (time, device, metric,
value), given or taken by default: the rename that followed lost one of them and the
command died with a pandas traceback (KeyError, AttributeError), or, for the time column
as device or value, read times as device ids or values without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands

load_commands()

LONG = ["ts", "device_id", "metric", "value"]


def _quality(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, ["quality", *args])


def _long(path: Path) -> Path:
    path.write_text("ts,device_id,metric,value\n1700000000,a,t,1\n1700000001,a,t,2\n")
    return path


def _sensor(path: Path) -> Path:
    path.write_text("ts,sensor,reading\n1700000000,t1,1\n1700000001,t2,2\n")
    return path


@pytest.mark.parametrize(("make", "args", "column", "first", "second"), [
    (_long, ["--metric-column", "metric", "--value-column", "metric"], "metric",
     "--metric-column", "--value-column"),
    (_long, ["--device-column", "value"], "value",
     "--device-column", "--value-column (by default)"),
    (_long, ["--value-column", "ts"], "ts",
     "the time column (found by its name)", "--value-column"),
    (_long, ["--metric-column", "device_id"], "device_id",
     "--device-column (by default)", "--metric-column"),
    (_long, ["--time-column", "value"], "value",
     "--time-column", "--value-column (by default)"),
    (_long, ["--device-column", "ts"], "ts",
     "the time column (found by its name)", "--device-column"),
    (_sensor, ["--device-column", "sensor", "--metric-column", "sensor",
               "--value-column", "reading"], "sensor", "--device-column", "--metric-column"),
])
def test_a_column_given_two_roles_is_refused_in_one_line(
        tmp_path: Path, make, args: list[str], column: str, first: str, second: str) -> None:
    """Check the refusal (exit 2, no traceback, no report) names the column, both roles
    and the file's columns."""
    f = make(tmp_path / "r.csv")
    res = _quality(str(f), *args)
    assert res.exit_code == 2 and res.stdout == "", (res.stdout, res.exception)
    assert res.stderr == (
        f"error: column {column!r} is given two roles, {first} and {second}; a column can "
        "be only one of the time, device, metric and value columns: name another for one "
        f"of them. Columns: {f.read_text().splitlines()[0].split(',')}\n")


def test_a_time_of_day_column_as_device_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_text("date,time,v\n2024-01-01,00:00:00,1\n2024-01-01,00:00:01,2\n")
    res = _quality(str(f), "--device-column", "time")
    said = ("column 'time' is given two roles, the time of day beside --time-column 'date' "
            "and --device-column")
    assert res.exit_code == 2 and said in res.stderr, res.stderr


def test_columns_named_like_other_roles_still_read(tmp_path: Path) -> None:
    """Check distinct roles named like each other's defaults (devices in 'metric', metric
    names in 'device_id') are read as said: the rename gave two columns one name."""
    f = _long(tmp_path / "r.csv")
    res = _quality(str(f), "--device-column", "metric", "--metric-column", "device_id",
                   "--json")
    assert res.exit_code == 0, res.stderr
    devices = json.loads(res.stdout)["devices"]
    assert list(devices) == ["t"] and list(devices["t"]["metrics"]) == ["a"]
    assert devices["t"]["metrics"]["a"]["readings"] == 2
