"""Tests of the library behind `edgewise detect` (edgewise.bench.csv)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.csv import alarm_metrics, detect_table, read_table
from edgewise.errors import QualityError


def frame(n: int = 800) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    df = pd.DataFrame({
        "time": pd.date_range("2024-03-01", periods=n, freq="5min", tz="UTC").astype(str),
        "a": 10 + rng.standard_normal(n),
        "b": 50 + rng.standard_normal(n),
    })
    df.loc[600, "b"] = 120.0
    df.loc[[100, 101], "a"] = np.nan  # gaps are fine
    df.loc[300, ["a", "b"]] = np.nan
    return df


def test_univariate_detector_on_several_columns_names_the_column():
    """Check one detector per column: max score, and top_column says which column."""
    res = detect_table(frame(), detector="ewzscore")
    assert res.columns == ["a", "b"]
    row = res.frame.loc[600]
    assert bool(row["is_anomaly"]) and row["top_column"] == "b"
    assert res.frame.loc[300, "top_column"] == "" and res.frame.loc[300, "anomaly_score"] == 0.0
    assert list(res.frame.columns[:3]) == ["time", "a", "b"]  # input columns kept, in order


def test_chunked_run_equals_one_pass():
    """Check that the chunked CLI path gives the detector's plain replay scores."""
    from edgewise.bench import csv as mod
    from edgewise.detect import ContextLikelihood

    n = mod._CHUNK + 5_000
    x = np.sin(np.arange(n) / 30) + np.random.default_rng(0).normal(0, 0.05, n)
    df = pd.DataFrame({"v": x})
    res = detect_table(df)
    np.testing.assert_allclose(
        res.frame["anomaly_score"], np.round(ContextLikelihood().score_many(x), 6)
    )


def test_train_rows_raise_threshold_only_when_training_scores_are_high():
    """Check that --train-rows keeps the default when training rows look normal."""
    res = detect_table(frame(), detector="ewzscore", train_rows=400)
    assert res.threshold == pytest.approx(0.9)
    assert not res.frame["is_anomaly"].iloc[:400].any()


@pytest.mark.parametrize("detector", ["drift-residual", "per-metric-residual"])
def test_train_rows_set_the_span_of_detectors_that_take_it(detector):
    """Check --train-rows reaches a detector whose class only changes defaults (**params):
    with 200 rows its scores start at row 200, not at its default span's end (400); row
    300, with no reading at all, scores 0."""
    res = detect_table(frame(), detector=detector, train_rows=200)
    scores = res.frame["anomaly_score"].to_numpy()
    assert not scores[:200].any()
    assert scores[300] == 0
    assert (np.delete(scores[200:400], 100) > 0).all()


def test_alarm_metrics_skip_training_rows_and_accept_text_labels():
    """Check the metric arithmetic and that labels may be 'true'/'false'."""
    m = alarm_metrics([1, 1, 0, 1, 0], ["true", "false", "false", "true", "true"], skip=1)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 1)
    assert m["recall"] == 0.5 and m["missed_alarm_rate"] == 0.5 and m["precision"] == 0.5
    assert m["false_alarm_rate"] == 0.5 and m["f1"] == 0.5


def test_semicolon_files_may_use_decimal_commas(tmp_path):
    """Check a European spreadsheet's export (semicolons, decimal commas, an empty cell)
    reads as numbers, dot decimals in another column still work, a time column with a
    comma stays text, and a column mixing in a word is left for the numeric check to
    name."""
    f = tmp_path / "eu.csv"
    f.write_text("zeit;druck;temp;notiz\n"
                 "2024-01-01 00:00:00,250;1,5;20.5;1,0\n"
                 "2024-01-01 00:00:01,250;;21.0;gut\n"
                 "2024-01-01 00:00:02,250;-0,25;1e3;2\n")
    df = read_table(f)
    assert df["druck"].tolist()[0::2] == [1.5, -0.25] and np.isnan(df["druck"][1])
    assert df["temp"].tolist() == [20.5, 21.0, 1000.0]
    assert df["zeit"].tolist()[0] == "2024-01-01 00:00:00,250"
    assert df["notiz"].tolist()[1] == "gut"
    result = detect_table(df, columns=["druck", "temp"], time_column="zeit")
    assert len(result.frame) == 3
    with pytest.raises(QualityError, match="'notiz' must hold numbers; row 2 has 'gut'"):
        detect_table(df, columns=["notiz"])
    f.write_text('t,v\n1,"2,5"\n2,3\n')  # a decimal comma in a comma file: named
    with pytest.raises(QualityError, match=r"row 1 has '2,5'\. Decimal commas are read in"):
        detect_table(read_table(f), columns=["v"])


def test_read_table_detects_semicolons(tmp_path):
    """Check that a semicolon file is split into columns."""
    f = tmp_path / "x.csv"
    f.write_text("t;v\n2024-01-01;1,5\n")
    assert list(read_table(f).columns) == ["t", "v"]
    f.write_text("   \n")
    with pytest.raises(QualityError, match="is empty"):
        read_table(f)


def _late_column(n: int = 1000) -> pd.DataFrame:
    """Columns a, b throughout; c only from row 500 on, with a fault of +50 on 850-949."""
    rng = np.random.default_rng(1)
    c = np.full(n, np.nan)
    c[500:] = 3 + rng.normal(0, 0.1, 500)
    c[850:950] += 50
    return pd.DataFrame({"ts": 1704067200 + 60 * np.arange(n),
                         "a": 20 + rng.normal(0, 0.5, n), "b": 5 + rng.normal(0, 0.1, n),
                         "c": c})


def test_a_column_without_training_readings_is_not_silently_ignored():
    """Check the default falls back from drift-residual (which ignores a metric first seen
    after its span) and says why, and the fault on that column is found; asked for by name,
    drift-residual names the column as left out."""
    res = detect_table(_late_column(), train_rows=400)
    assert res.detector == "mahalanobis"
    assert "'c' has no reading in the 400 training rows" in res.why
    fault = res.frame.loc[850:949]
    assert fault["is_anomaly"].any() and set(fault.loc[fault.is_anomaly, "top_column"]) == {"c"}
    named = detect_table(_late_column(), train_rows=400, detector="drift-residual")
    assert named.columns == ["a", "b"] and "c" in named.left_out
    with pytest.raises(QualityError, match="No column has 2 readings in the first 400 rows"):
        detect_table(_late_column()[["ts", "c"]], train_rows=400,
                     detector="drift-residual", columns=["c"])


def test_a_column_read_once_in_the_span_is_named_left_out_not_silently_ignored():
    """Check drift-residual, asked for by name, names a column with one reading in its
    training rows as left out (it learns no spread from one reading and ignores it), and a
    file whose every column has one reading there is refused, not scored all zero."""
    df = _late_column()
    df.loc[100, "c"] = 3.0  # one reading of c in the 400 training rows
    named = detect_table(df, train_rows=400, detector="drift-residual")
    assert named.columns == ["a", "b"]
    assert "fewer than 2 readings in the first 400 rows" in named.left_out["c"]
    with pytest.raises(QualityError, match="No column has 2 readings in the first 400 rows"):
        detect_table(df[["ts", "c"]], train_rows=400, detector="drift-residual",
                     columns=["c"])


def test_a_date_and_a_time_column_make_the_time_together():
    """Check `date,time,value` (a logger's export) is read as one time, not refused as
    'duplicate timestamp 2024-01-01' from its date alone; the time column is no metric."""
    df = pd.DataFrame({"date": ["2024-01-01"] * 3 + ["2024-01-02"],
                       "time": ["10:00:00", "10:01:00", "10:02:00", "00:00:00"],
                       "value": [1.0, 1.2, 0.9, 1.1]})
    res = detect_table(df)
    assert res.columns == ["value"] and "time" not in res.left_out
    with pytest.raises(QualityError, match="'date time' has a duplicate timestamp "
                                           "'2024-01-01 10:00:00'"):
        detect_table(df.assign(time=["10:00:00"] * 4, date="2024-01-01"))
