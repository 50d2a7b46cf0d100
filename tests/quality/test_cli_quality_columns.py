"""``edgewise quality FILE.csv`` finds the time column and leaves label columns out by the
rules of ``edgewise detect``, so the README's ``edgewise quality readings.csv --plots
plots/`` reads the file detect reads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.in_process import edgewise_here


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``edgewise quality ARGS`` through the real entry point, in this process (what is
    checked is what it reads and prints, not the process: a new interpreter cost each call
    a second or two of imports)."""
    return edgewise_here("quality", *args)


def _readings(path: Path, time_name: str = "timestamp") -> Path:
    rng = np.random.default_rng(0)
    n = 300
    label = np.zeros(n, dtype=int)
    label[100:110] = 1
    pd.DataFrame({
        time_name: pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC").strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "temp": 20 + rng.normal(0, 0.2, n), "pressure": 5 + rng.normal(0, 0.1, n),
        "label": label,
    }).to_csv(path, index=False)
    return path


def test_the_readme_command_reads_a_timestamp_column_and_leaves_the_label_out(
        tmp_path: Path) -> None:
    """Check ``edgewise quality readings.csv --plots plots/`` on a file with a ``timestamp``
    column (``edgewise detect`` reads it; quality said it had no time column 'ts') reports
    its sensors, and says the ``label`` column is left out (it was a two-state metric)."""
    f = _readings(tmp_path / "readings.csv")
    done = run(str(f), "--plots", str(tmp_path / "plots"), "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["devices"]["device"]["metrics"]
    assert sorted(metrics) == ["pressure", "temp"]
    assert "note: column 'label' left out of the report: it is named like a label" in done.stderr


@pytest.mark.parametrize("name", ["Time", "datetime"])
def test_the_time_column_is_found_by_detects_names(tmp_path: Path, name: str) -> None:
    f = _readings(tmp_path / "r.csv", name)
    done = run(str(f), "--json")
    assert done.returncode == 0, done.stderr
    m = json.loads(done.stdout)["devices"]["device"]["metrics"]["temp"]
    assert m["readings"] == 300 and m["duplicates"] == 0


def test_detects_outputs_are_left_out(tmp_path: Path) -> None:
    """Check a file scored by ``edgewise detect`` reports its readings, not its scores."""
    f = tmp_path / "s.csv"
    f.write_text("ts,temp,anomaly_score,is_anomaly,top_column\n"
                 "1704067200,20.1,0.0,False,\n1704067201,20.2,0.9,True,temp\n")
    done = run(str(f), "--json")
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)["devices"]["device"]["metrics"]) == ["temp"]
    assert "'anomaly_score' left out of the report: it is one of edgewise detect's" \
        in done.stderr


def test_no_time_column_names_the_names_looked_for(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_text("when,temp\n1,2\n")
    done = run(str(f))
    assert done.returncode == 2
    assert ("no time column 'ts', 'timestamp', 'time', 'datetime' or 'date'"
            in done.stderr and "--time-column" in done.stderr), done.stderr


def test_a_label_column_is_no_two_state_metric(tmp_path: Path) -> None:
    """Check a ``label`` column is left out with ``--time-column`` named too (it was reported
    as a two-state metric with its switches)."""
    f = _readings(tmp_path / "readings.csv")
    done = run(str(f), "--time-column", "timestamp")
    assert done.returncode == 0, done.stderr
    assert "two-state" not in done.stdout and " label " not in done.stdout, done.stdout
    assert "note: column 'label' left out of the report" in done.stderr
