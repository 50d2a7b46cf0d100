"""Tests of `edgewise detect FILE.csv`: run in the test's process through the real entry
point (:func:`tests.in_process.edgewise_here`), and, where the process itself is
checked (its exit status and one stderr line, its files), as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.in_process import edgewise_here

REPO = Path(__file__).resolve().parents[2]
# numba compiles into the test process's own cache (its NUMBA_CACHE_DIR, if set): a cache of
# the processes' own (/tmp/nbc) compiled the detectors a second time after every change
# to them, 6 s a time (25-40 s in a loaded full run)
ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin",
       **{k: v for k, v in os.environ.items() if k == "NUMBA_CACHE_DIR"}}


def run_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m edgewise detect ARGS``, a real process."""
    return subprocess.run(
        [sys.executable, "-m", "edgewise", "detect", *args],
        capture_output=True, text=True, env=ENV, check=False, timeout=120,
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``edgewise detect ARGS`` in this process, answered as :func:`run_process` answers."""
    return edgewise_here("detect", *args)


def device_csv(path: Path, sep: str = ",", n: int = 1500) -> Path:
    """Two correlated metrics with two labelled breaks of their relationship."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n)
    df = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "flow": 20 + a,
        "pressure": 2 * a + 0.1 * rng.standard_normal(n),
        "label": 0,
    })
    df.loc[1000, "pressure"] = -6.0  # only the relationship is broken
    df.loc[1300, "pressure"] = -30.0  # out of range on its own too
    df.loc[[1000, 1300], "label"] = 1
    df.loc[500, "flow"] = np.nan  # a gap is handled, not fatal
    df.to_csv(path, sep=sep, index=False)
    return path


def test_multivariate_run_writes_rows_and_prints_metrics(tmp_path):
    """Check that a semicolon CSV is scored row by row and metrics are printed."""
    src = device_csv(tmp_path / "dev.csv", sep=";")
    out = tmp_path / "scored.csv"
    p = run_process(str(src), "--label-column", "label", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "recall 1.000" in p.stdout and "missed-alarm rate 0.000" in p.stdout
    assert "precision " in p.stdout and "F1 " in p.stdout and "false-alarm rate 0.00" in p.stdout
    df = pd.read_csv(out)
    assert len(df) == 1500
    assert list(df.columns[-3:]) == ["anomaly_score", "is_anomaly", "top_column"]
    assert df.loc[1000, "top_column"] == "pressure" and bool(df.loc[1000, "is_anomaly"])
    assert df["anomaly_score"].between(0, 1).all()


def test_univariate_with_train_rows_never_flags_training_rows(tmp_path):
    """Check --columns, --detector and --train-rows on one column."""
    src = device_csv(tmp_path / "dev.csv")
    out = tmp_path / "o.csv"
    p = run_cli(str(src), "--columns", "pressure", "--detector", "ewzscore",
                "--train-rows", "1100", "--label-column", "label", "--out", str(out))
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out)
    assert not df["is_anomaly"].iloc[:1100].any()
    assert bool(df.loc[1300, "is_anomaly"])
    assert "recall 1.000" in p.stdout


def test_a_meter_column_is_named_as_a_counter(tmp_path):
    """Check that a cumulative meter beside a level is said to be scored by its increments
    (and the level is not), and its surge is flagged at its first reading."""
    rng = np.random.default_rng(1)
    n = 3 * 1440
    t = np.arange(n)
    load = np.clip(1 + 0.5 * np.sin(2 * np.pi * t / 1440) + 0.05 * rng.standard_normal(n),
                   0, None) * 0.01
    load[2 * 1440 + 600:2 * 1440 + 720] *= 3
    df = pd.DataFrame({
        "time": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "kwh": np.round(1234 + np.cumsum(load), 2),
        "temp": 20 + rng.standard_normal(n),
    })
    src = tmp_path / "meter.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "o.csv"
    p = run_cli(str(src), "--time-column", "time", "--detector", "context-likelihood",
                "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "kwh: a cumulative counter" in p.stdout and "temp: a cumulative" not in p.stdout
    scored = pd.read_csv(out)
    first = 2 * 1440 + 600
    assert bool(scored.loc[first, "is_anomaly"]) and scored.loc[first, "top_column"] == "kwh"
    assert scored["is_anomaly"].sum() <= 12


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("", [], "is empty"),
        ("timestamp,v\n", [], "no data rows"),
        ("timestamp,v\n2024-01-01T00:00:00Z,1\n", ["--columns", "w"], "Column 'w' is not in"),
        ("timestamp,v\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,hot\n", [],
         "Column 'v' must hold numbers; row 2 has 'hot'"),
        ("timestamp,v\n2024-01-01T00:01:00Z,1\n2024-01-01T00:00:00Z,2\n", [], "must be sorted"),
        ("timestamp,v\n2024-01-01T00:00:00Z,1\n2024-01-01T00:00:00Z,2\n", [],
         "duplicate timestamp"),
        ("t,v\nyesterday,1\n", ["--time-column", "t"], "must hold timestamps"),
        ("timestamp,v\n2024-01-01T00:00:00Z,1\n", ["--time-column", "when"],
         "--time-column 'when' is not a column"),
        ("timestamp,v,y\n2024-01-01T00:00:00Z,1,maybe\n", ["--label-column", "y"],
         "Label column 'y' must hold 0/1"),
        ("timestamp,v\n2024-01-01T00:00:00Z,1\n", ["--detector", "magic"], "Unknown detector"),
        ("timestamp,v\n2024-01-01T00:00:00Z,1\n", ["--train-rows", "5"], "--train-rows must be"),
        ("timestamp,name\n2024-01-01T00:00:00Z,abc\n", [], "no numeric column"),
    ],
    ids=["empty", "header-only", "missing-column", "non-numeric", "unsorted", "duplicate",
         "bad-time", "missing-time-column", "bad-label", "unknown-detector", "train-rows",
         "no-numeric"],
)
def test_bad_input_gets_one_line_and_nonzero_exit(tmp_path, content, args, message):
    """Check that each bad input path exits non-zero with one clear line naming the problem."""
    f = tmp_path / "in.csv"
    f.write_text(content)
    p = run_cli(str(f), *args)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert message in lines[0]
    assert not (tmp_path / "in_scored.csv").exists()


def test_missing_file_is_one_line(tmp_path):
    """Check that a file that does not exist is reported by name."""
    p = run_process(str(tmp_path / "nope.csv"))
    assert p.returncode != 0 and "does not exist" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_a_file_still_being_written_is_scored_and_written_as_read_once(tmp_path, monkeypatch):
    """A logger appending rows while `detect` runs: OUT holds exactly the rows scored, each
    beside its own score (the file is read once, not again for the cells of OUT)."""
    from typer.testing import CliRunner

    import edgewise.bench.csv as csv_mod
    from edgewise.cli import app, load_commands

    load_commands()
    src = device_csv(tmp_path / "live.csv")
    scored = csv_mod.detect_table

    def scored_then_appended(*args, **kwargs):
        result = scored(*args, **kwargs)
        with src.open("a") as f:  # the logger writes two more rows meanwhile
            f.write("2024-01-02 00:00:00+00:00,1.0,2.0,0\n2024-01-02 00:01:00+00:00,1.0,2.0,0\n")
        return result

    monkeypatch.setattr(csv_mod, "detect_table", scored_then_appended)
    out = tmp_path / "out.csv"
    res = CliRunner(mix_stderr=False).invoke(app, ["detect", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.stderr
    written = pd.read_csv(out)
    assert len(written) == 1500
    assert written["flow"].iloc[:5].tolist() == pd.read_csv(src)["flow"].iloc[:5].tolist()


def test_a_ground_truth_is_anomaly_column_is_kept_not_overwritten(tmp_path):
    """Check an `is_anomaly` column with no `anomaly_score` beside it (Yahoo's layout) is
    kept as is_anomaly_label, and a rerun on OUT does not score it as a metric."""
    n = 400
    rng = np.random.default_rng(0)
    src = tmp_path / "yahoo.csv"
    pd.DataFrame({"timestamp": np.arange(n) * 3600 + 1_700_000_000,
                  "value": 20 + rng.standard_normal(n),
                  "is_anomaly": (np.arange(n) == 350).astype(int)}).to_csv(src, index=False)
    p = run_cli(str(src))
    assert p.returncode == 0, p.stderr
    assert "is_anomaly: ground truth" in p.stdout and "written by an earlier run" not in p.stdout
    out = pd.read_csv(tmp_path / "yahoo_scored.csv")
    assert out["is_anomaly_label"].tolist() == (np.arange(n) == 350).astype(int).tolist()
    again = run_cli(str(tmp_path / "yahoo_scored.csv"), "--out", str(tmp_path / "again.csv"))
    assert again.returncode == 0, again.stderr
    assert " on value," in again.stdout and "is_anomaly_label" not in again.stdout.split("->")[0]
