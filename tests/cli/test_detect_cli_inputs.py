"""`edgewise detect` and `edgewise bench csv` on inputs they once got wrong, through the real
entry point in the test's process (:func:`tests.in_process.edgewise_here`; a real
process in test_detect_cli.py): epoch-second times, empty labels, bad thresholds, bad --out
paths, a scored file rerun."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.in_process import edgewise_here


def edgewise(*args: str) -> subprocess.CompletedProcess[str]:
    """``edgewise ARGS`` through the real entry point, in this process."""
    return edgewise_here(*args)


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
                   "Label column 'temp' must hold 0/1")


def test_bench_csv_names_the_failing_file(tmp_path: Path):
    """Check that a duplicate timestamp in one file of a folder names that file."""
    for name in ("a", "b", "c"):
        sample(tmp_path / f"{name}.csv")
    bad = pd.read_csv(tmp_path / "b.csv")
    bad.loc[9, "timestamp"] = bad.loc[8, "timestamp"]
    bad.to_csv(tmp_path / "b.csv", index=False)
    one_line_error(edgewise("bench", "csv", str(tmp_path)),
                   "b.csv: Time column 'timestamp' has a duplicate timestamp")


def test_pass_through_columns_are_written_back_as_read(tmp_path: Path):
    """Check OUT holds every input column as written: 007, NA, None, TRUE and 1.50 were
    re-printed as 7, empty, empty, True and 1.5, and two 17-digit ids beside a blank became
    the same float 1.2345678901234568e+16."""
    n = 60
    rows = [f"{1704067200 + 60 * i},{20 + i % 3}.50,{12345678901234560 + i if i != 5 else ''},"
            f"{'TRUE' if i % 2 else 'FALSE'},{i:03d},{'NA' if i % 3 else 'None'}"
            for i in range(n)]
    src = tmp_path / "p.csv"
    src.write_text("timestamp,temp,id,flag,code,note\n" + "\n".join(rows) + "\n")
    p = edgewise("detect", str(src), "--columns", "temp", "--detector", "ewzscore")
    assert p.returncode == 0, p.stderr
    written = (tmp_path / "p_scored.csv").read_text().splitlines()
    assert written[0] == "timestamp,temp,id,flag,code,note,anomaly_score,is_anomaly,top_column"
    assert [line.split(",")[:6] for line in written[1:]] == [r.split(",") for r in rows]


def test_a_label_column_named_is_anomaly_is_kept_in_out(tmp_path: Path):
    """Check --label-column is_anomaly keeps the ground truth as is_anomaly_label, and says
    so (the flags overwrote it)."""
    df = pd.read_csv(sample(tmp_path / "s.csv")).rename(columns={"anomaly": "is_anomaly"})
    df.to_csv(tmp_path / "y.csv", index=False)
    p = edgewise("detect", str(tmp_path / "y.csv"), "--label-column", "is_anomaly",
                 "--detector", "ewzscore")
    assert p.returncode == 0, p.stderr
    assert "is_anomaly: the label column, kept as is_anomaly_label" in p.stdout
    assert "written by an earlier run" not in p.stdout
    out = pd.read_csv(tmp_path / "y_scored.csv")
    assert out["is_anomaly_label"].fillna(0).tolist() == df["is_anomaly"].fillna(0).tolist()
    assert out["is_anomaly"].dtype == bool


@pytest.mark.parametrize("args, message", [
    (["--columns", " , "], "--columns ' , ' names no column"),
    (["--columns", "temp,anomaly", "--label-column", "anomaly"],
     "--columns names 'anomaly', the --label-column"),
    (["--columns", "timestamp,temp"], "--columns names 'timestamp', the time column"),
])
def test_columns_that_name_nothing_labels_or_times_are_one_line(tmp_path: Path, args, message):
    """Check --columns ' , ' (a traceback), the label column (precision 1.000 from feeding
    the ground truth) and the time column are refused in one line, exit 2."""
    src = sample(tmp_path / "s.csv")
    p = edgewise("detect", str(src), *args)
    one_line_error(p, message)
    assert p.returncode == 2 and not (tmp_path / "s_scored.csv").exists()


def test_day_first_dates_in_order_are_run(tmp_path: Path):
    """Check a sorted file of dd/mm/yyyy dates runs (it was 'row 13 comes before row 12':
    the first twelve were read month-first)."""
    days = pd.date_range("2024-03-01", periods=40, freq="D").strftime("%d/%m/%Y")
    pd.DataFrame({"date": days, "v": 20.0 + np.arange(40) % 3}).to_csv(tmp_path / "d.csv",
                                                                       index=False)
    p = edgewise("detect", str(tmp_path / "d.csv"), "--detector", "ewzscore")
    assert p.returncode == 0, p.stderr


def test_a_gzipped_file_is_scored_beside_it_as_x_scored(tmp_path: Path):
    """Check x.csv.gz is written to x_scored.csv, not x.csv_scored.csv."""
    import gzip

    sample(tmp_path / "x.csv")
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress((tmp_path / "x.csv").read_bytes()))
    (tmp_path / "x.csv").unlink()
    p = edgewise("detect", str(tmp_path / "x.csv.gz"), "--detector", "ewzscore")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].endswith(f"-> {tmp_path / 'x_scored.csv'}")
    assert (tmp_path / "x_scored.csv").is_file()


def test_the_run_says_which_detector_why_and_what_it_left_out(tmp_path: Path):
    """Check the summary names the detector and why (several columns and a 20-row span keep
    mahalanobis: drift-residual flagged ~95% of rows), a column of thousands separators
    that reads as no number is named, and labels inside the training rows, or no row left
    to score, are said instead of silent zeros."""
    rng = np.random.default_rng(0)
    n = 300
    a = rng.standard_normal(n)
    lines = [f"{1704067200 + 60 * i};{20 + a[i]:.3f};{2 * a[i]:.3f};{i},5 kWh;"
             f"{int(i in (10, 250))}" for i in range(n)]
    src = tmp_path / "eu.csv"
    src.write_text("timestamp;flow;pressure;energy;anomaly\n" + "\n".join(lines) + "\n")
    p = edgewise("detect", str(src), "--train-rows", "20", "--label-column", "anomaly")
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert ("detector mahalanobis (the default for 2 columns; not drift-residual: "
            "--train-rows 20 is under the 200 rows it needs") in out[0]
    assert "energy: left out (no value is a number: row 1 has '0,5 kWh')" in out
    assert ("note: 1 labelled anomaly lies in the 20 training rows (--train-rows): learned "
            "as normal, never flagged, left out of the metrics") in out
    p = edgewise("detect", str(src), "--train-rows", str(n), "--label-column", "anomaly")
    assert p.returncode == 0, p.stderr
    assert "note: all 300 rows are training rows (--train-rows 300)" in p.stdout
    assert "precision" not in p.stdout
