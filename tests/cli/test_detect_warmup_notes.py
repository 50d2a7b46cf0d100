"""`edgewise detect` says what it cannot see and names what it reads: a detector's warm-up
past --train-rows (scored 0, not flagged) and the labelled anomalies in it, columns with a
comma in their name, an empty column named in --columns, the label column of a bad label,
and no top column for a row that scores 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.csv import alarm_metrics, detect_table, label_notes
from edgewise.cli.detect import split_columns
from edgewise.detect import Mahalanobis
from edgewise.errors import InvalidParameterError, QualityError
from tests.cli.test_detect_cli_inputs import edgewise


def temps(n: int = 600, spike: int = 250) -> pd.DataFrame:
    """A temperature around 20 with one labelled spike, a minute apart."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "temp": 20 + rng.standard_normal(n).round(3),
        "label": 0,
    })
    df.loc[spike, ["temp", "label"]] = [90.0, 1]
    return df


def test_a_warm_up_past_train_rows_is_said_and_its_labels_counted(tmp_path: Path):
    """Check a labelled spike at row 251 with --train-rows 100, inside context-likelihood's
    warm-up of 280 readings, is said to be there (it scored 0, recall 0, and nothing said
    why), and that the run prints it."""
    df = temps()
    res = detect_table(df, label_column="label", train_rows=100)
    assert res.detector == "context-likelihood" and res.warmup == 280
    assert (res.frame["anomaly_score"][:280] == 0).all()
    assert res.notes == [("rows 1-280 are context-likelihood's warm-up: scored 0, not "
                          "flagged (--train-rows 100 covers rows 1-100)")]
    assert label_notes(df["label"], 100, res.warmup, res.detector) == [
        ("1 labelled anomaly lies in rows 101-280, context-likelihood's warm-up: scored 0, "
         "never flagged, counted as missed")]
    src = tmp_path / "warm.csv"
    df.to_csv(src, index=False)
    p = edgewise("detect", str(src), "--label-column", "label", "--train-rows", "100")
    assert p.returncode == 0, p.stderr
    notes = [line for line in p.stdout.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {n}" for n in res.notes + label_notes(
        df["label"], 100, res.warmup, res.detector)], p.stdout
    # a warm-up the training rows cover is not said
    assert detect_table(df, label_column="label", train_rows=300).notes == []


def test_every_detector_with_a_warm_up_says_it():
    """Check mahalanobis (50 readings: rows without any reading not counted), drift-residual
    without --train-rows (its 400 rows) and ewzscore per column say their warm-up."""
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.standard_normal((500, 3)), columns=["a", "b", "c"])
    X.iloc[:10] = np.nan
    res = detect_table(X)
    assert (res.detector, res.warmup) == ("mahalanobis", 60)
    assert res.notes == ["rows 1-60 are mahalanobis's warm-up: scored 0, not flagged"]
    assert detect_table(X, detector="drift-residual").notes == [
        "rows 1-410 are drift-residual's warm-up: scored 0, not flagged"]
    assert detect_table(X, detector="ewzscore").notes == [
        "rows 1-40 are ewzscore's warm-up on every column: scored 0, not flagged"]
    assert detect_table(X.iloc[:30], detector="ewzscore").notes == [
        "all 30 rows are ewzscore's warm-up on every column: scored 0, not flagged"]
    # the warm-up said never reaches past the first row scored above 0
    from edgewise.bench.csv import _warmup_rows

    read = np.ones(100, dtype=bool)
    assert _warmup_rows(Mahalanobis(warmup=50), read, np.r_[np.zeros(20), 0.5,
                                                             np.zeros(79)]) == 20


def test_top_column_names_no_empty_column_and_nothing_for_a_score_of_0():
    """Check a row whose first column is empty is never put down to it, and a row that
    scores 0 names no column (argmax over all-zero scores named the first, empty one)."""
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"a": 20 + rng.standard_normal(400), "b": 5 + rng.standard_normal(400)})
    df.loc[200:260, "a"] = np.nan
    df.loc[300, "b"] = 40.0
    frame = detect_table(df, detector="ewzscore").frame
    zero = frame["anomaly_score"] == 0
    assert zero.any() and (frame.loc[zero, "top_column"] == "").all()
    assert not (frame.loc[200:260, "top_column"] == "a").any()
    assert frame.loc[300, "top_column"] == "b" and frame.loc[300, "is_anomaly"]


def test_an_empty_column_named_in_columns_is_left_out_with_a_note():
    """Check --columns naming a column with every cell empty notes it left out, as the
    default choice does; naming only such columns is refused."""
    df = pd.DataFrame({"a": np.arange(60.0) % 7, "c": np.nan})
    res = detect_table(df, columns=["a", "c"], detector="ewzscore")
    assert res.columns == ["a"] and res.left_out == {"c": "(every cell is empty)"}
    with pytest.raises(QualityError, match=r"left out: 'c' \(every cell is empty\)"):
        detect_table(df, columns=["c"])


def test_a_bad_label_names_its_column():
    """Check a label that is no 0/1 names the label column, not only 'Label column'."""
    df = pd.DataFrame({"v": [1.0, 2.0], "label": ["0", "N"]})
    with pytest.raises(QualityError, match=r"Label column 'label' must hold 0/1 .* row 2 has "
                                           r"'N'"):
        alarm_metrics(np.zeros(2), df["label"])
    assert label_notes(pd.Series([0, 1], name="label"), 0) == []


def test_a_column_with_a_comma_in_its_name_can_be_named(tmp_path: Path):
    """Check --columns is read as one CSV line ('"Temp, °C",Druck' names two columns), and
    a column not in the file is listed with the file's columns each quoted."""
    assert split_columns('"Temp, °C", "Druck, bar"') == ["Temp, °C", "Druck, bar"]
    assert split_columns("a, b,") == ["a", "b"]
    with pytest.raises(InvalidParameterError, match=r"names 'a, b' twice; .* --columns \"a, b\""):
        split_columns('"a, b","a, b"')
    src = tmp_path / "euro.csv"
    rows = "".join(f"2024-01-01 00:{i // 60:02d}:{i % 60:02d};{20 + i % 3},5;0,9{i % 7}\n"
                   for i in range(120))
    src.write_text("Zeit;Temp, °C;Druck, bar\n" + rows, encoding="utf-8")
    p = edgewise("detect", str(src), "--columns", '"Temp, °C"', "--detector", "ewzscore",
                 "--time-column", "Zeit")
    assert p.returncode == 0, p.stderr
    assert "on Temp, °C, threshold" in p.stdout.splitlines()[0], p.stdout
    p = edgewise("detect", str(src), "--columns", "Temp")
    assert p.returncode != 0
    assert "Column 'Temp' is not in the file. Columns: 'Zeit', 'Temp, °C', 'Druck, bar'." in (
        p.stderr), p.stderr
