"""Tests of `edgewise bench csv DIR`: a folder of synthetic multivariate CSVs with faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.csv import bench_folder
from edgewise.errors import InvalidParameterError, QualityError
from tests.in_process import edgewise_here

REPO = Path(__file__).resolve().parents[2]
# numba compiles into the test process's own cache (its NUMBA_CACHE_DIR, if set): a cache of
# the processes' own (/tmp/nbc) compiled the detectors a second time after every change
# to them, 6 s a time (25-40 s in a loaded full run)
ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin",
       **{k: v for k, v in os.environ.items() if k == "NUMBA_CACHE_DIR"}}


def make_testbed_csv(path: Path, seed: int, n: int = 900) -> Path:
    """A SKAB-like file: semicolons, 1 Hz, a normal start, one injected sustained fault."""
    rng = np.random.default_rng(seed)
    flow = 32 + rng.standard_normal(n)
    df = pd.DataFrame({
        "datetime": pd.date_range("2020-03-09 10:00:00", periods=n, freq="s").astype(str),
        "Accelerometer1RMS": 0.2 + 0.01 * rng.standard_normal(n),
        "Current": 1.3 + 0.02 * rng.standard_normal(n),
        "Temperature": 70 + np.linspace(0, 2, n) + 0.05 * rng.standard_normal(n),
        "RateRMS": flow,
        "anomaly": 0.0,
        "changepoint": 0.0,
    })
    start = 500 + 20 * seed
    df.loc[start:start + 199, "RateRMS"] -= 8.0
    df.loc[start:start + 199, "Accelerometer1RMS"] += 0.05
    df.loc[start:start + 199, "anomaly"] = 1.0
    df.loc[start, "changepoint"] = 1.0
    df.loc[450, "Current"] = np.nan  # a gap is handled, not fatal
    df.to_csv(path, sep=";", index=False)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for seed in range(3):
        make_testbed_csv(tmp_path / f"{seed}.csv", seed)
    return tmp_path


def test_pooled_metrics_catch_injected_faults(folder):
    """Check the default multivariate detector finds the faults with few false alarms."""
    res = bench_folder(folder, "anomaly", "datetime", train_rows=400)
    t = res["total"]
    assert t["files"] == 3 and res["files"][0]["detector"] == "drift-residual"
    # False alarms are the smoothing's short tail after each fault, so FAR stays modest.
    assert t["f1"] > 0.8 and t["false_alarm_rate"] < 0.25 and t["missed_alarm_rate"] < 0.1
    assert t["tp"] + t["fn"] == 600  # pooled over files, training rows left out


def test_cli_prints_pooled_figures_and_json(folder):
    """Check the command's text and --json output (through the real entry point, in this
    process: what is checked is what the command prints, not the process)."""
    args = ["bench", "csv", str(folder), "--train-rows", "400", "--label-column", "anomaly",
            "--time-column", "datetime"]
    p = edgewise_here(*args)
    assert p.returncode == 0, p.stderr
    assert "3 files, detector drift-residual, pooled:" in p.stdout and "F1" in p.stdout
    p = edgewise_here(*args, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["total"]["f1"] > 0.8 and len(out["files"]) == 3


def test_detect_names_the_faulty_column_and_skips_label_like_columns(folder, tmp_path):
    """Check `edgewise detect` on one file: changepoint is not a metric, top column is flow."""
    out = tmp_path / "scored.csv"
    p = subprocess.run(
        [sys.executable, "-m", "edgewise", "detect", str(folder / "0.csv"), "--train-rows",
         "400", "--label-column", "anomaly", "--time-column", "datetime", "--out", str(out)],
        capture_output=True, text=True, env=ENV, timeout=120, check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "changepoint" not in p.stdout.splitlines()[0]
    assert "false-alarm rate" in p.stdout and "missed-alarm rate" in p.stdout
    df = pd.read_csv(out)
    assert df.loc[df["is_anomaly"], "top_column"].mode()[0] == "RateRMS"


def test_empty_folder_and_missing_label_are_named(tmp_path):
    """Check a folder without CSVs, and a file without the label column, are clear errors."""
    with pytest.raises(QualityError, match=r"no \*\.csv"):
        bench_folder(tmp_path, "anomaly")
    (tmp_path / "a.csv").write_text("t,v\n2024-01-01,1\n")
    with pytest.raises(InvalidParameterError, match="--label-column 'anomaly' is not a column"):
        bench_folder(tmp_path, "anomaly")


def test_upper_case_csv_files_are_benchmarked(tmp_path):
    """Check a file named PUMP1.CSV (as Windows tools name them) is scored, and
    PUMP1_SCORED.CSV left out: the folder was reported as holding no CSV file."""
    rows = "".join(f"{i},{20 + i % 3},{int(i == 400)}\n" for i in range(500))
    (tmp_path / "PUMP1.CSV").write_text("t,temp,anomaly\n" + rows)
    (tmp_path / "PUMP1_SCORED.CSV").write_text("t,temp,anomaly\n" + rows)
    out = bench_folder(tmp_path, "anomaly", detector="ewzscore")
    assert [f["file"] for f in out["files"]] == ["PUMP1.CSV"]
    assert out["skipped"] == ["PUMP1_SCORED.CSV"]
