"""Inputs the library behind `edgewise detect` once got wrong: epoch-number times, empty
labels, thresholds outside the score range, a scored file run again, numpy reprs in
messages, and which file of a benchmark folder failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.csv import alarm_metrics, bench_folder, detect_table
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
