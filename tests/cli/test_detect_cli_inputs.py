"""`edgewise detect` and `edgewise bench csv` on inputs they once got wrong, as real processes:
epoch-second times, empty labels, bad thresholds, bad --out paths, a scored file rerun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": "/tmp/nbc"}


def edgewise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgewise", *args],
        capture_output=True, text=True, env=ENV, check=False, timeout=120,
    )


def one_line_error(p: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr and "np." not in p.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def sample(path: Path, epoch_seconds: bool = False) -> Path:
    n = 300
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "timestamp": 1704067200.0 + np.arange(n) / 10 if epoch_seconds else
        pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "temp": 20 + rng.standard_normal(n),
        "anomaly": 0.0,
    })
    df.loc[250, "temp"] = 90.0
    df.loc[250, "anomaly"] = 1.0
    df.loc[120, "anomaly"] = np.nan  # an empty label is normal
    df.to_csv(path, index=False)
    return path


def test_epoch_seconds_at_10_hz_and_an_empty_label_run(tmp_path: Path):
    """Check the epoch-second file is no 'duplicate timestamp' and the empty label is 0."""
    src = sample(tmp_path / "s.csv", epoch_seconds=True)
    p = edgewise("detect", str(src), "--label-column", "anomaly", "--detector", "ewzscore")
    assert p.returncode == 0, p.stderr
    assert "recall 1.000" in p.stdout and "(tp 1, " in p.stdout
    assert (tmp_path / "s_scored.csv").is_file()


@pytest.mark.parametrize("value", ["nan", "2"])
def test_a_threshold_outside_0_1_is_one_line(tmp_path: Path, value: str):
    """Check that --threshold nan, -1, 0 and 2 are refused before any output is written."""
    src = sample(tmp_path / "s.csv")
    one_line_error(edgewise("detect", str(src), "--threshold", value),
                   "--threshold must be a number in (0, 1]")
    assert not (tmp_path / "s_scored.csv").exists()


def test_bad_out_paths_are_one_line(tmp_path: Path):
    """Check a missing directory and an existing directory as --out are named, no traceback."""
    src = sample(tmp_path / "s.csv")
    missing = tmp_path / "nope" / "a.csv"
    one_line_error(edgewise("detect", str(src), "--out", str(missing)),
                   f"--out {str(missing)!r}", "does not exist")
    (tmp_path / "out").mkdir()
    one_line_error(edgewise("detect", str(src), "--out", str(tmp_path / "out")),
                   "is a directory")


def test_a_scored_file_run_again_keeps_its_metrics(tmp_path: Path):
    """Check that the old anomaly_score is no metric on a rerun, and the run says so."""
    src = sample(tmp_path / "s.csv")
    assert edgewise("detect", str(src)).returncode == 0
    p = edgewise("detect", str(tmp_path / "s_scored.csv"))
    assert p.returncode == 0, p.stderr
    assert " on temp, threshold" in p.stdout
    assert "anomaly_score, is_anomaly, top_column: written by an earlier run" in p.stdout
    again = pd.read_csv(tmp_path / "s_scored_scored.csv")
    assert list(again.columns) == ["timestamp", "temp", "anomaly", "anomaly_score",
                                   "is_anomaly", "top_column"]


def test_plain_values_in_column_errors(tmp_path: Path):
    """Check --time-column and --label-column on a reading column show its plain values."""
    src = sample(tmp_path / "s.csv")
    one_line_error(edgewise("detect", str(src), "--time-column", "temp"), "must be sorted")
    one_line_error(edgewise("detect", str(src), "--label-column", "temp"),
                   "Label column must hold 0/1")


def test_bench_csv_names_the_failing_file(tmp_path: Path):
    """Check that a duplicate timestamp in one file of a folder names that file."""
    for name in ("a", "b", "c"):
        sample(tmp_path / f"{name}.csv")
    bad = pd.read_csv(tmp_path / "b.csv")
    bad.loc[9, "timestamp"] = bad.loc[8, "timestamp"]
    bad.to_csv(tmp_path / "b.csv", index=False)
    one_line_error(edgewise("bench", "csv", str(tmp_path)),
                   "b.csv: Time column 'timestamp' has a duplicate timestamp")
