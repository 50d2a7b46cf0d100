"""``edgewise quality --device-column NAME`` refuses a NAME the file does not have: a typo
(``devce_id``) merged every device of a fleet file into one report, their readings at
one time counted as conflicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands

load_commands()


def _fleet(path: Path, device_column: str = "device_id") -> Path:
    lines = [f"ts,{device_column},temp"]
    lines += [f"{i},{d},{20 + i % 3 + (5 if d == 'p2' else 0)}"
              for i in range(40) for d in ("p1", "p2")]
    path.write_text("\n".join(lines) + "\n")
    return path


def _quality(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, ["quality", *args])


def test_a_device_column_the_file_lacks_is_refused_in_one_line(tmp_path: Path) -> None:
    """Check the refusal names the option, the value and the file's columns, exit 2, and no
    report is printed."""
    f = _fleet(tmp_path / "fleet.csv")
    res = _quality(str(f), "--device-column", "devce_id")
    assert res.exit_code == 2, res.stdout
    assert res.stdout == ""
    assert res.stderr == (f"error: --device-column 'devce_id' is not a column of {str(f)!r}; "
                          "columns: ['ts', 'device_id', 'temp']\n")


@pytest.mark.parametrize("args", [[], ["--device-column", "device_id"]], ids=["default", "named"])
def test_the_device_column_splits_the_report(tmp_path: Path, args: list[str]) -> None:
    """Check the default and a named device column give one report per device."""
    res = _quality(str(_fleet(tmp_path / "fleet.csv")), *args, "--json")
    assert res.exit_code == 0, res.stderr
    devices = json.loads(res.stdout)["devices"]
    assert sorted(devices) == ["p1", "p2"]
    assert devices["p1"]["metrics"]["temp"]["conflicts"] == 0


def test_another_named_device_column_is_used(tmp_path: Path) -> None:
    res = _quality(str(_fleet(tmp_path / "fleet.csv", "pump")), "--device-column", "pump",
                   "--json")
    assert res.exit_code == 0, res.stderr
    assert sorted(json.loads(res.stdout)["devices"]) == ["p1", "p2"]


def test_a_file_without_device_column_is_one_device(tmp_path: Path) -> None:
    """Check a file with no device_id column, the option left out, is still the --device's."""
    f = tmp_path / "one.csv"
    f.write_text("ts,temp\n0,1\n1,2\n2,3\n")
    res = _quality(str(f), "--device", "p9", "--json")
    assert res.exit_code == 0, res.stderr
    assert list(json.loads(res.stdout)["devices"]) == ["p9"]
