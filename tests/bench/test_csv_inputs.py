"""Inputs the library behind `edgewise detect` once got wrong: epoch-number times, empty
labels, thresholds outside the score range, a scored file run again, numpy reprs in
messages, and which file of a benchmark folder failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.csv import alarm_metrics, bench_folder, detect_table, read_table
from edgewise.errors import InvalidParameterError, QualityError


def frame(n: int = 300, time: object = None) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    df = pd.DataFrame({
        "timestamp": time if time is not None else
        pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC").astype(str),
        "temp": 20 + rng.standard_normal(n),
        "anomaly": 0.0,
    })
    df.loc[250, "temp"] = 90.0
    df.loc[250, "anomaly"] = 1.0
    return df


@pytest.mark.parametrize("scale, dtype", [(1, float), (1000, "int64"), (10**9, "int64")],
                         ids=["seconds", "milliseconds", "nanoseconds"])
def test_epoch_number_times_at_10_hz_are_read_by_their_size(scale, dtype):
    """Check that epoch s/ms/ns times 0.1 s apart are distinct and sorted, not ns duplicates."""
    t = pd.Series((1704067200.0 + np.arange(300) / 10) * scale).round(3).astype(dtype)
    res = detect_table(frame(time=t), time_column="timestamp", detector="ewzscore")
    assert bool(res.frame.loc[250, "is_anomaly"])


def test_epoch_number_duplicates_and_gaps_are_named_as_plain_values():
    """Check a real duplicate epoch second, and an empty time cell, are named plainly."""
    t = 1704067200.0 + np.arange(300) / 10
    t[5] = t[4]
    with pytest.raises(QualityError, match=r"duplicate timestamp 1704067200\.4 \(rows 5 and 6\)"):
        detect_table(frame(time=t))
    t = 1704067200.0 + np.arange(300) / 10
    t[3] = np.nan
    with pytest.raises(QualityError, match="row 4 has an empty cell"):
        detect_table(frame(time=t))


def test_an_empty_label_is_normal():
    """Check that an empty label cell counts as 0, as 'nan' and '' always meant to."""
    labels = pd.Series([1.0, np.nan, 0.0, 1.0])
    m = alarm_metrics(np.array([1, 0, 0, 1]), labels)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 0, 0, 2)
    m = alarm_metrics(np.array([0, 1]), pd.Series(["", None], dtype=object))
    assert (m["fp"], m["tn"]) == (1, 1)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -1.0, 0.0, 2.0])
def test_a_threshold_outside_the_score_range_is_refused(threshold):
    """Check that only a finite threshold in (0, 1] is taken; scores lie in [0, 1]."""
    with pytest.raises(InvalidParameterError, match=r"--threshold must be a number in \(0, 1\]"):
        detect_table(frame(), threshold=threshold)


def test_a_threshold_of_one_is_taken():
    """Check the top of the range is accepted as given."""
    assert detect_table(frame(), detector="ewzscore", threshold=1.0).threshold == 1.0


def test_a_scored_file_run_again_does_not_score_its_old_scores():
    """Check that anomaly_score (written by an earlier run) is no metric unless named."""
    first = detect_table(frame(), detector="ewzscore").frame
    again = detect_table(first, detector="ewzscore")
    assert again.columns == ["temp"]
    assert again.frame["anomaly_score"].tolist() == first["anomaly_score"].tolist()
    named = detect_table(first, columns=["temp", "anomaly_score"], detector="ewzscore")
    assert named.columns == ["temp", "anomaly_score"]


@pytest.mark.parametrize("kwargs, message", [
    ({"time_column": "temp"}, r"row \d+ \(\d+\.\d+\) comes before row \d+ \(\d+\.\d+\)"),
    ({"time_column": "count"}, r"row \d+ \(\d+\) comes before"),
])
def test_time_errors_show_plain_values(kwargs, message):
    """Check that messages show 19.87 or 1704067, never np.float64(...) / np.int64(...)."""
    df = frame().assign(count=[1704067 - i for i in range(300)])
    with pytest.raises(QualityError, match=message) as err:
        detect_table(df, **kwargs)
    assert "np." not in str(err.value)


def test_label_errors_show_plain_values():
    """Check a non-label value is shown as itself."""
    with pytest.raises(QualityError, match=r"row 1 has 20\.\d+\.$") as err:
        alarm_metrics(np.zeros(3, dtype=bool), pd.Series([20.5, 0.0, 1.0]).add(0.01))
    assert "np." not in str(err.value)


def test_bench_folder_errors_name_the_file(tmp_path: Path):
    """Check that an error in one of several files says which file."""
    for name in ("a.csv", "b.csv", "c.csv"):
        frame().to_csv(tmp_path / name, index=False)
    bad = frame()
    bad.loc[7, "timestamp"] = bad.loc[6, "timestamp"]
    bad.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(QualityError, match=r"^b\.csv: Time column 'timestamp' has a duplicate"):
        bench_folder(tmp_path, "anomaly")
    with pytest.raises(InvalidParameterError, match=r"^--threshold must be"):
        bench_folder(tmp_path, "anomaly", threshold=5.0)


def several(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Three noisy, normal columns, one a minute."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n)
    return pd.DataFrame({
        "ts": 1_700_000_000 + 60 * np.arange(n), "a": 20 + a,
        "b": 2 * a + 0.3 * rng.standard_normal(n), "c": 50 + rng.standard_normal(n),
    })


@pytest.mark.parametrize("columns, message", [
    (["temp", "anomaly"], "--columns names 'anomaly', the --label-column"),
    (["timestamp", "temp"], "--columns names 'timestamp', the time column (found by its name"),
    ([], "--columns names no column"),
])
def test_named_columns_may_not_be_the_labels_the_time_or_nothing(columns, message):
    """Check --columns naming the label column (the ground truth fed in: precision 1.000) or
    the time column (a detector run on timestamps) is refused, as is an empty list (a
    numpy error before)."""
    with pytest.raises(InvalidParameterError) as err:
        detect_table(frame(), columns=columns, label_column="anomaly", detector="ewzscore")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_short_or_flat_training_span_keeps_the_untrained_default():
    """Check several columns switch to drift-residual only with a training span it can learn
    an alarm level from (20 rows flagged ~95% of a normal file), in which every column
    varies (one constant there flagged nearly every later row); the result says why."""
    df = several()
    short = detect_table(df, train_rows=20)
    assert short.detector == "mahalanobis"
    assert "--train-rows 20 is under the 200 rows" in short.why
    assert short.frame["is_anomaly"].mean() < 0.02
    flat = df.assign(c=np.where(np.arange(len(df)) < 400, 50.0, 50.0 + df["c"] / 100))
    res = detect_table(flat, train_rows=400)
    assert res.detector == "mahalanobis" and "column 'c' does not vary" in res.why
    assert res.frame["is_anomaly"].mean() < 0.02
    full = detect_table(df, train_rows=400)
    assert full.detector == "drift-residual" and full.why.endswith("with --train-rows 400")
    assert detect_table(df, detector="ewzscore").why == "--detector"


def test_a_label_column_named_is_anomaly_is_kept_beside_the_flags():
    """Check a label column called like an output column (Yahoo S5's is_anomaly) is kept as
    is_anomaly_label, not overwritten by this run's flags."""
    df = frame().rename(columns={"anomaly": "is_anomaly"})
    res = detect_table(df, label_column="is_anomaly", detector="ewzscore")
    assert res.frame["is_anomaly_label"].tolist() == df["is_anomaly"].tolist()
    assert res.frame["is_anomaly"].dtype == bool and res.columns == ["temp"]
    assert list(res.frame.columns[-4:]) == ["is_anomaly_label", "anomaly_score", "is_anomaly",
                                            "top_column"]


def test_columns_with_no_number_are_named(tmp_path: Path):
    """Check a semicolon file's column with thousands separators (1.234,5), read as text, is
    named as left out instead of silently dropped, and named in the error when it was the
    only one."""
    f = tmp_path / "eu.csv"
    f.write_text("timestamp;leistung;temp\n" + "".join(
        f"2024-01-01T00:{i:02d}:00Z;{i},5 kW;{20 + i % 3}\n" for i in range(60)))
    res = detect_table(read_table(f), detector="ewzscore")
    assert res.columns == ["temp"]
    assert res.left_out == {"leistung": "(no value is a number: row 1 has '0,5 kW')"}
    with pytest.raises(QualityError, match=r"no numeric column to run a detector on \(left "
                                           r"out: 'leistung' \(no value is a number: row 1"):
        detect_table(read_table(f).drop(columns="temp"))


def test_bench_folder_reads_gzip_and_leaves_out_scored_outputs(tmp_path: Path):
    """Check *.csv.gz files are benchmarked and edgewise detect's *_scored.csv outputs are
    not (they were, and the gzipped files were skipped)."""
    frame().to_csv(tmp_path / "a.csv", index=False)
    frame().to_csv(tmp_path / "b.csv.gz", index=False)
    detect_table(frame(), detector="ewzscore").frame.to_csv(tmp_path / "a_scored.csv",
                                                            index=False)
    res = bench_folder(tmp_path, "anomaly", detector="ewzscore")
    assert [r["file"] for r in res["files"]] == ["a.csv", "b.csv.gz"]
    assert res["skipped"] == ["a_scored.csv"]


def test_training_rows_with_labels_are_said_to_be_left_out():
    """Check the notes for labelled anomalies inside the training rows, and for a run whose
    every row is a training row (its figures were all 0, unexplained)."""
    from edgewise.bench.csv import label_notes

    labels = frame()["anomaly"]
    assert label_notes(labels, 100) == []
    assert label_notes(labels, 260) == [(
        "1 labelled anomaly lies in the 260 training rows (--train-rows): learned as normal, "
        "never flagged, left out of the metrics")]
    assert label_notes(labels, 300)[0] == (
        "all 300 rows are training rows (--train-rows 300): no row is left to score against "
        "the labels")
