"""``edgewise quality --metric-column/--value-column`` refuse a name the file lacks: a typo
read a long file as wide, so its metric names and values became two "metrics" (the
value column's numbers, the metric column's text left out) and the report was wrong
without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands

load_commands()


def _long(path: Path) -> Path:
    lines = ["ts,device_id,sensor,reading"]
    lines += [f"{i},p1,{m},{20 + i % 3 + (50 if m == 'flow' else 0)}"
              for i in range(30) for m in ("temp", "flow")]
    path.write_text("\n".join(lines) + "\n")
    return path


def _quality(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, ["quality", *args])


@pytest.mark.parametrize(("args", "named"), [
    (["--metric-column", "sensr", "--value-column", "reading"], "--metric-column 'sensr'"),
    (["--metric-column", "sensor", "--value-column", "readng"], "--value-column 'readng'"),
    (["--value-column", "reading"], "--metric-column 'metric'"),
])
def test_a_long_column_the_file_lacks_is_refused(tmp_path: Path, args: list[str],
                                                 named: str) -> None:
    """Check the refusal names the option and value and lists the columns; no report."""
    f = _long(tmp_path / "long.csv")
    res = _quality(str(f), *args)
    assert res.exit_code == 2 and res.stdout == "", res.stdout
    assert res.stderr == (f"error: {named}: not in {str(f)!r} (a long file needs both a "
                          "metric and a value column); columns: ['ts', 'device_id', "
                          "'sensor', 'reading']\n")


def test_named_long_columns_give_a_report_per_metric(tmp_path: Path) -> None:
    res = _quality(str(_long(tmp_path / "long.csv")), "--metric-column", "sensor",
                   "--value-column", "reading", "--json")
    assert res.exit_code == 0, res.stderr
    metrics = json.loads(res.stdout)["devices"]["p1"]["metrics"]
    assert sorted(metrics) == ["flow", "temp"]
    assert metrics["temp"]["readings"] == 30


def test_default_long_and_wide_files_still_read(tmp_path: Path) -> None:
    """Check the defaults: columns metric and value make a long file, else it is wide."""
    long = tmp_path / "l.csv"
    long.write_text("ts,metric,value\n0,t,1\n1,t,2\n2,t,3\n")
    wide = tmp_path / "w.csv"
    wide.write_text("ts,temp,flow\n0,1,5\n1,2,6\n2,3,7\n")
    got = [sorted(json.loads(_quality(str(f), "--json").stdout)["devices"]["device"]["metrics"])
           for f in (long, wide)]
    assert got == [["t"], ["flow", "temp"]]
