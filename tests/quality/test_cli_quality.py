"""``edgewise quality FILE.csv`` on CSVs with planted faults: through the real entry point in
the test's process (:func:`tests.in_process.edgewise_here`), and once as a real process
(a refusal's exit status and its one stderr line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import REPO
from tests.in_process import edgewise_here


def run_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m edgewise quality ARGS``, a real process."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "edgewise", "quality", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``edgewise quality ARGS`` in this process, answered as :func:`run_process` answers."""
    return edgewise_here("quality", *args)


def test_report_and_plots_for_a_faulty_csv(tmp_path: Path) -> None:
    """Check the JSON figures and that a PNG is drawn for the metric with issues."""
    rng = np.random.default_rng(0)
    ts = 1_700_000_000 + np.arange(400)
    temp = 20 + rng.normal(0, 0.2, 400)
    temp[123] = 80.0
    df = pd.DataFrame({"ts": ts, "temp": temp, "rpm": 1500 + rng.normal(0, 5, 400)})
    df = pd.concat([df, df.iloc[[7]]])
    df.to_csv(tmp_path / "r.csv", index=False)
    done = run(str(tmp_path / "r.csv"), "--device", "pump-1", "--plots", str(tmp_path / "png"),
               "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    temp_m = out["devices"]["pump-1"]["metrics"]["temp"]
    assert temp_m["spikes"] == 1 and temp_m["duplicates"] == 1
    assert out["devices"]["pump-1"]["metrics"]["rpm"]["spikes"] == 0
    assert [Path(p).name for p in out["plots"]] == ["pump-1__temp.png"]
    assert Path(out["plots"][0]).read_bytes()[:4] == b"\x89PNG"


def test_missing_time_column_is_one_line(tmp_path: Path) -> None:
    """Check that a CSV without the time column fails with a line naming it."""
    pd.DataFrame({"t": [1, 2], "v": [1.0, 2.0]}).to_csv(tmp_path / "r.csv", index=False)
    done = run_process(str(tmp_path / "r.csv"))
    assert done.returncode == 2
    assert "no time column 'ts'" in done.stderr


def test_a_european_spreadsheet_export_reads_as_the_same_report(tmp_path: Path) -> None:
    """Check a gzipped semicolon file with decimal commas and a byte-order mark gives the
    report the plain CSV gives (one reader for every command: ``edgewise.tables``)."""
    import gzip

    rng = np.random.default_rng(1)
    temp = 20 + rng.normal(0, 0.2, 300)
    temp[77] = 75.5
    df = pd.DataFrame({"ts": 1_700_000_000 + np.arange(300), "temp": temp.round(3)})
    df.to_csv(tmp_path / "r.csv", index=False)
    text = "\ufeff" + df.to_csv(index=False, sep=";").replace(".", ",")
    (tmp_path / "eu.csv.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    plain = run(str(tmp_path / "r.csv"), "--device", "p", "--json")
    eu = run(str(tmp_path / "eu.csv.gz"), "--device", "p", "--json")
    assert plain.returncode == 0 and eu.returncode == 0, eu.stderr
    assert json.loads(eu.stdout)["devices"] == json.loads(plain.stdout)["devices"]
    assert json.loads(eu.stdout)["devices"]["p"]["metrics"]["temp"]["spikes"] == 1


def test_epoch_times_in_any_unit_give_the_same_report(tmp_path: Path) -> None:
    """Check a ts column in s, ms, us or ns (a logger's choice), or as RFC 3339 text (which
    pandas may parse at microsecond resolution), gives the same figures."""
    rng = np.random.default_rng(2)
    temp = 20 + rng.normal(0, 0.2, 200)
    outs = []
    for per in (1, 10**3, 10**6, 10**9, "rfc3339"):
        ts = 1_700_000_000 + np.arange(200)
        if per == "rfc3339":
            ts = pd.to_datetime(ts, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            ts = ts * per
        pd.DataFrame({"ts": ts, "temp": temp}).to_csv(tmp_path / f"r{per}.csv", index=False)
        done = run(str(tmp_path / f"r{per}.csv"), "--device", "p", "--json")
        assert done.returncode == 0, done.stderr
        outs.append(json.loads(done.stdout)["devices"]["p"]["metrics"]["temp"])
    assert outs[0]["interval_s"] == 1.0 and outs[0]["completeness"] == 1.0
    assert all(o == outs[0] for o in outs[1:])


def test_a_meter_column_is_reported_as_a_counter(tmp_path: Path) -> None:
    """Check the table names a meter a counter with its backward step, and shows no drift
    for it while the level beside it keeps its drift."""
    rng = np.random.default_rng(2)
    ts = 1_700_000_000 + 60 * np.arange(1000)
    kwh = np.round(500 + np.cumsum(rng.uniform(0.0, 0.02, 1000)), 3)
    kwh[600:] -= 0.5
    pd.DataFrame({"ts": ts, "kwh": kwh, "temp": 20 + rng.normal(0, 0.2, 1000)}).to_csv(
        tmp_path / "m.csv", index=False)
    done = run(str(tmp_path / "m.csv"), "--device", "meter-1")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert "counter: 0 restarts, 1 backwards" in rows["kwh"] and rows["kwh"].split()[10] == "-"
    assert "counter" not in rows["temp"]


def test_a_metric_column_called_value_is_reported(tmp_path: Path) -> None:
    """Check a wide file whose metric column is named ``value`` (every NAB file) reports
    it instead of failing in the reshape."""
    ts = pd.date_range("2024-01-01", periods=200, freq="min").strftime("%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"timestamp": ts, "value": 20 + np.arange(200) % 3}).to_csv(
        tmp_path / "nab.csv", index=False)
    done = run(str(tmp_path / "nab.csv"), "--time-column", "timestamp", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["devices"]["device"]["metrics"]["value"]["readings"] == 200


def test_a_bad_cell_counts_as_invalid_and_keeps_its_column(tmp_path: Path) -> None:
    """Check one ``err`` among numbers is an invalid reading of a column still in the
    report, one empty cell among TRUE/FALSE no reading at all (a wide file's blank is a
    missing reading, not a bad one); a column of text is left out with a note."""
    n = 500
    temp = (20 + np.arange(n) % 5 / 10).astype(object)
    temp[100] = "err"
    on = np.where(np.arange(n) % 50 < 25, "TRUE", "FALSE").astype(object)
    on[7] = ""
    pd.DataFrame({"ts": 1_700_000_000 + 60 * np.arange(n), "temp": temp, "on": on,
                  "name": "pump"}).to_csv(tmp_path / "r.csv", index=False)
    done = run(str(tmp_path / "r.csv"), "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["devices"]["device"]["metrics"]
    assert sorted(metrics) == ["on", "temp"]
    assert metrics["temp"]["invalid"] == 1 and metrics["temp"]["readings"] == n
    assert metrics["on"]["invalid"] == 0 and metrics["on"]["readings"] == n - 1
    assert metrics["on"]["binary"]
    assert done.stderr.strip() == ("note: column 'name' left out of the report: it holds "
                                   "no numbers (row 1 has 'pump')")


def test_true_and_false_in_a_long_file_are_one_and_zero(tmp_path: Path) -> None:
    """Check ``true``/``False`` values of a long CSV, beside numbers of another metric in
    the same column, are valid two-state readings."""
    n = 200
    ts = 1_700_000_000 + np.arange(n)
    door = pd.DataFrame({"device_id": "d1", "metric": "door", "ts": ts,
                         "value": np.where(np.arange(n) % 40 < 10, "true", "False")})
    temp = pd.DataFrame({"device_id": "d1", "metric": "temp", "ts": ts,
                         "value": (20 + np.arange(n) % 3 / 10).astype(str)})
    pd.concat([door, temp]).to_csv(tmp_path / "l.csv", index=False)
    done = run(str(tmp_path / "l.csv"), "--json")
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["devices"]["d1"]["metrics"]
    assert metrics["door"]["validity"] == 1.0 and metrics["door"]["binary"]
    assert metrics["door"]["on_fraction"] == 0.25 and metrics["temp"]["validity"] == 1.0


def test_naive_and_offset_times_mixed_read_as_utc(tmp_path: Path) -> None:
    """Check alternate naive and ``Z`` times read as one UTC series, as ``detect`` reads
    them: one reading a minute, none missing."""
    iso = pd.date_range("2024-01-01", periods=100, freq="min").strftime("%Y-%m-%dT%H:%M:%S")
    ts = [t + ("Z" if i % 2 else "") for i, t in enumerate(iso)]
    pd.DataFrame({"timestamp": ts, "temp": 20.0 + np.arange(100) % 4}).to_csv(
        tmp_path / "m.csv", index=False)
    done = run(str(tmp_path / "m.csv"), "--time-column", "timestamp", "--json")
    assert done.returncode == 0, done.stderr
    temp = json.loads(done.stdout)["devices"]["device"]["metrics"]["temp"]
    assert temp["interval_s"] == 60.0 and temp["completeness"] == 1.0


def test_an_empty_time_cell_is_named_in_one_line(tmp_path: Path) -> None:
    """Check an empty time cell fails with one line naming the column and the row."""
    (tmp_path / "e.csv").write_text("ts,temp\n1700000000,1\n,2\n1700000002,3\n")
    done = run(str(tmp_path / "e.csv"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: Time column 'ts' has an empty cell in row 2;")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_plots_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    """Check ``--plots`` at a path under a file fails with one line, not a traceback."""
    (tmp_path / "r.csv").write_text("ts,temp\n1700000000,1\n1700000001,2\n")
    (tmp_path / "file").write_text("")
    done = run(str(tmp_path / "r.csv"), "--plots", str(tmp_path / "file" / "png"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: --plots {str(tmp_path / 'file' / 'png')!r} "
                                  "cannot be made a directory")
    assert len(done.stderr.strip().splitlines()) == 1


def test_blank_cells_of_a_wide_file_are_missing_readings(tmp_path: Path) -> None:
    """Check 200 blank rows of 600 in one column of a wide file read as the narrow file
    with those rows absent (n 400, completeness 0.667, one gap), not as 200 invalid
    readings (n 600, completeness 1.000, validity 0.667, no gap)."""
    ts = 1_700_000_000 + 10 * np.arange(600)
    b = (50 + np.arange(600) % 5).astype(object)
    b[200:400] = ""
    pd.DataFrame({"ts": ts, "a": 20, "b": b}).to_csv(tmp_path / "w.csv", index=False)
    keep = np.r_[0:200, 400:600]
    pd.DataFrame({"ts": ts[keep], "b": b[keep]}).to_csv(tmp_path / "n.csv", index=False)
    wide = run(str(tmp_path / "w.csv"), "--json")
    narrow = run(str(tmp_path / "n.csv"), "--json")
    assert wide.returncode == 0 and narrow.returncode == 0, wide.stderr
    got = json.loads(wide.stdout)["devices"]["device"]["metrics"]["b"]
    assert got == json.loads(narrow.stdout)["devices"]["device"]["metrics"]["b"]
    assert (got["readings"], got["completeness"], got["validity"], got["gaps"]) == (
        400, 0.6667, 1.0, 1)


def test_day_first_dates_give_one_reading_a_day(tmp_path: Path) -> None:
    """Check a daily dd/mm/yyyy file reports no gaps (01/03 .. 12/03 were read as January 3
    .. December 3, the rest day-first: gaps and out-of-order readings that were not there)."""
    days = pd.date_range("2024-03-01", periods=60, freq="D").strftime("%d/%m/%Y")
    pd.DataFrame({"date": days, "temp": 20.0 + np.arange(60) % 4}).to_csv(
        tmp_path / "d.csv", index=False)
    done = run(str(tmp_path / "d.csv"), "--time-column", "date", "--json")
    assert done.returncode == 0, done.stderr
    temp = json.loads(done.stdout)["devices"]["device"]["metrics"]["temp"]
    assert (temp["gaps"], temp["out_of_order"], temp["interval_s"]) == (0, 0, 86400.0)
