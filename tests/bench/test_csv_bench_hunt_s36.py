"""Hunt s36 on the CSV detector run (`edgewise detect`, `edgewise bench csv`): every column
past mahalanobis' default 256 scored, files read as `detect` reads them (any-case .gz,
nanosecond epoch times, a BOM before a CP1252 byte), rows flagged by the score written, and
a warm-up said where scoring really starts."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import edgewise.bench.csv as bench_csv
from edgewise.bench.csv import bench_folder, detect_table
from edgewise.tables import read_table, read_tables, read_text


def test_a_column_past_the_256th_is_scored_by_mahalanobis(monkeypatch):
    """Check the 260th column is tracked (mahalanobis tracked only its default 256 metrics:
    a spike in it changed no score). 80 rows are too few to score 260 columns (a
    covariance of 260 metrics needs 1.5 effective readings a metric: about 520 rows), so no
    row scores yet, and none is named."""
    made = []
    real = bench_csv.get_detector
    monkeypatch.setattr(bench_csv, "get_detector",
                        lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(80, 260)), columns=[f"c{j}" for j in range(260)])
    df.loc[75, "c259"] = 1e6
    res = detect_table(df)
    assert res.detector == "mahalanobis" and len(res.columns) == 260 and res.left_out == {}
    det = made[-1]  # the one that scored (a first is made to read its parameters)
    assert len(det.metrics_) == 260 and list(det.metrics_)[-1] == "c259"
    assert (res.frame["anomaly_score"] == 0.0).all()


def test_columns_past_what_mahalanobis_can_track_are_left_out_with_the_reason(monkeypatch):
    """Check columns beyond the most mahalanobis can track are listed as left out, not
    silently ignored (the bound made 3 here, as 4096 columns are too slow for a test)."""
    assert bench_csv._most_metrics("mahalanobis") == 4096
    monkeypatch.setattr(bench_csv, "_most_metrics", lambda detector: 3)
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(60, 5)), columns=list("abcde"))
    res = detect_table(df)
    assert res.columns == ["a", "b", "c"]
    assert res.left_out == dict.fromkeys("de", "(past the first 3 columns, the most mahalanobis "
                                                "tracks; --columns picks which it scores)")


def pump(path: Path, n: int = 500) -> Path:
    """Two correlated metrics with a label column: ``path`` as CSV (gzipped by its name)."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal(n)
    df = pd.DataFrame({"t": np.arange(n) + 1_700_000_000, "a": a,
                       "b": a + 0.3 * rng.standard_normal(n), "anomaly": 0})
    df.loc[450, "b"] += 6.0
    df.loc[450, "anomaly"] = 1
    text = df.to_csv(index=False).encode()
    path.write_bytes(gzip.compress(text) if path.name.lower().endswith(".gz") else text)
    return path


def test_bench_csv_reads_a_gz_suffix_in_any_case(tmp_path: Path):
    """Check PUMP.CSV.GZ, which bench csv collects (its suffix in any case), is gunzipped
    (it was refused as 'gzip data; name it *.gz'), as are read_table and read_text."""
    src = pump(tmp_path / "PUMP.CSV.GZ")
    res = bench_folder(tmp_path, "anomaly", train_rows=100)
    assert [f["file"] for f in res["files"]] == ["PUMP.CSV.GZ"] and res["files"][0]["tp"] == 1
    assert list(read_table(src).columns) == ["t", "a", "b", "anomaly"]
    assert read_text(src).startswith("t,a,b,anomaly")


def test_bench_csv_reads_nanosecond_epoch_times_as_detect_does(tmp_path: Path):
    """Check epoch seconds with nanosecond decimals (1700000000.000000100) are read exactly,
    as detect reads them, not as floats that collide (a 'duplicate timestamp' refusal)."""
    rng = np.random.default_rng(0)
    (tmp_path / "ns.csv").write_text("time,v,anomaly\n" + "".join(
        f"1700000000.{i * 100:09d},{20 + rng.normal():.4f},0\n" for i in range(400)))
    res = bench_folder(tmp_path, "anomaly")
    row = res["files"][0]
    assert row["rows"] == 400 and row["tn"] + row["fp"] == 400


def test_a_bom_before_a_cp1252_byte_is_no_part_of_the_first_name(tmp_path: Path):
    """Check a UTF-8-with-BOM file holding one non-UTF-8 byte, read as CP1252, keeps its
    first column's name ('time', not 'ï»¿time') in both views and in read_text."""
    data = "time,temp,note\n2024-01-01T00:00:00Z,20.5,ok\n".encode("utf-8-sig") + (
        b"2024-01-01T00:01:00Z,20.6,ok\xb0\n")
    src = tmp_path / "bom.csv"
    src.write_bytes(data)
    numbers, cells = read_tables(src)
    assert list(numbers.columns) == ["time", "temp", "note"] == list(cells.columns)
    assert cells["note"].tolist() == ["ok", "ok°"]
    assert read_text(src).startswith("time,temp")


def correlated(k: float = 3.2, n: int = 600) -> pd.DataFrame:
    """Two correlated metrics, the training rows (400) holding six breaks of size ``k``."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal(n)
    b = a + 0.3 * rng.standard_normal(n)
    b[100:400:50] += k
    return pd.DataFrame({"a": a, "b": b})


def test_a_row_whose_written_score_is_the_threshold_is_flagged():
    """Check every row whose written (6-decimal) score is at or above --threshold is
    flagged, for thresholds equal to written scores (flags came from unrounded scores)."""
    df = correlated(k=0.0)
    scores = detect_table(df, detector="mahalanobis", train_rows=400).frame["anomaly_score"]
    later = scores[400:]
    for t in later[later > 0.05].iloc[:20]:
        frame = detect_table(df, detector="mahalanobis", train_rows=400,
                             threshold=float(t)).frame
        due = frame["anomaly_score"] >= t
        due[:400] = False
        assert (due == frame["is_anomaly"]).all(), t


def test_a_threshold_raised_by_training_rows_is_one_a_written_score_can_meet():
    """Check a threshold raised from the training rows' scores is kept to the 6 decimals
    the scores are written in, and flags by them."""
    # breaks of 3.6 sd: their training scores pass 0.9 under the predictive T² tail
    res = detect_table(correlated(k=3.6), detector="mahalanobis", train_rows=400)
    assert 0.9 < res.threshold < 1.0 and round(res.threshold, 6) == res.threshold
    frame = res.frame
    due = (frame["anomaly_score"] >= res.threshold) & (frame.index >= 400)
    assert (due == frame["is_anomaly"]).all()


def test_mahalanobis_warm_up_counts_the_readings_of_each_metric():
    """Check metrics read on alternate rows make a warm-up of 100 rows (50 readings of
    each), where it was said to be rows 1-50 (rows with any reading) while rows up to 100
    scored 0; a labelled anomaly in rows 61-70 is said to lie in the warm-up."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=300), rng.normal(size=300)
    a[1::2] = np.nan
    b[0::2] = np.nan
    df = pd.DataFrame({"a": a, "b": b})
    res = detect_table(df, detector="mahalanobis")
    first = int(np.flatnonzero(res.frame["anomaly_score"].to_numpy() > 0)[0])
    assert res.warmup == first == 100
    assert res.notes == ["rows 1-100 are mahalanobis's warm-up: scored 0, not flagged"]
    y = np.zeros(300, dtype=int)
    y[60:70] = 1
    assert bench_csv.label_notes(y, 0, res.warmup, res.detector) == [
        ("10 labelled anomalies lie in rows 1-100, mahalanobis's warm-up: scored 0, never "
        "flagged, counted as missed")]


@pytest.mark.parametrize(("start", "note"), [
    (150, "mahalanobis scores a column after 50 readings of it: column 'b' from row 201 on"),
    (270, ("mahalanobis scores a column after 50 readings of it: column 'b' in no row (30 "
          "readings)")),
])
def test_a_metric_that_starts_late_is_said_to_be_scored_late(start: int, note: str):
    """Check a metric first read at row ``start + 1`` is said to be scored only from its
    51st reading on (or in no row), where the warm-up note spoke of rows 1-50 alone."""
    rng = np.random.default_rng(4)
    df = pd.DataFrame(rng.normal(size=(300, 2)), columns=["a", "b"])
    df.loc[: start - 1, "b"] = np.nan
    res = detect_table(df, detector="mahalanobis")
    assert res.warmup == 50
    assert res.notes == ["rows 1-50 are mahalanobis's warm-up: scored 0, not flagged", note]
