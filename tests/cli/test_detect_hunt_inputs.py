"""`edgewise detect` on files a hunter found it got wrong, through the real entry point in
the test's process (:func:`tests.in_process.edgewise_here`): a saved pandas
index scored as a metric, a named date column not joined to its time of day, infinite
readings taken for missing ones, a column named twice (in --columns or in the header), and
scores written as -0.0."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.csv import detect_table
from edgewise.detect import Mahalanobis
from edgewise.errors import InvalidParameterError, QualityError
from edgewise.label.workflow import load_history_csv
from edgewise.tables import not_a_metric, read_tables
from tests.cli.test_detect_cli_inputs import edgewise


def one_line_error(p: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr and "np." not in p.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def readings(n: int = 300, spike: int = 250) -> pd.DataFrame:
    """One metric around 20 with one spike, a minute apart."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "value": 20 + rng.standard_normal(n).round(3),
    })
    df.loc[spike, "value"] = 90.0
    return df


def test_a_saved_pandas_index_is_no_metric_and_its_empty_header_is_written_back(
        tmp_path: Path):
    """Check the index that ``to_csv()`` writes (an empty header cell, read as 'Unnamed: 0')
    is left out with a note, not scored as a metric beside the value (which made the run
    multivariate and hid the spike), and that OUT's header cell is empty again."""
    src = tmp_path / "saved.csv"
    readings(600, spike=500).to_csv(src)  # with the index
    p = edgewise("detect", str(src))
    assert p.returncode == 0, p.stderr
    head, notes = p.stdout.splitlines()[0], p.stdout.splitlines()[1:]
    assert "(the default for one column) on value," in head, head
    assert any(n.startswith("Unnamed: 0: left out (its header cell is empty") for n in notes)
    out = (tmp_path / "saved_scored.csv").read_text().splitlines()
    assert out[0] == ",timestamp,value,anomaly_score,is_anomaly,top_column"
    assert out[1].startswith("0,2024-01-01 00:00:00+00:00,")
    assert out[1 + 500].startswith("500,") and out[1 + 500].endswith(",True,value")
    # named, it is scored
    p = edgewise("detect", str(src), "--columns", "Unnamed: 0,value", "--out",
                 str(tmp_path / "named.csv"))
    assert p.returncode == 0 and "on Unnamed: 0, value" in p.stdout, p.stdout + p.stderr
    assert not_a_metric("Unnamed: 3") and not not_a_metric("Unnamed: x")


def test_a_header_that_says_unnamed_is_written_back_as_it_says(tmp_path: Path):
    """Check a header cell written 'Unnamed: 0' (a file read and saved again) stays so in
    OUT, while an empty one (a separator ending the header) stays empty."""
    src = tmp_path / "resaved.csv"
    src.write_text("Unnamed: 0,ts,v,\n" + "".join(f"{i},{i},{i % 5},\n" for i in range(60)))
    numbers, _ = read_tables(src)
    assert list(numbers.columns) == ["Unnamed: 0", "ts", "v", "Unnamed: 3"]
    res = detect_table(numbers, time_column="ts", detector="ewzscore")
    assert res.columns == ["v"] and set(res.left_out) == {"Unnamed: 0", "Unnamed: 3"}
    p = edgewise("detect", str(src), "--time-column", "ts")
    assert p.returncode == 0, p.stderr
    out = (tmp_path / "resaved_scored.csv").read_text().splitlines()
    assert out[0] == "Unnamed: 0,ts,v,,anomaly_score,is_anomaly,top_column", out[0]


def test_a_named_date_column_is_joined_to_its_time_of_day(tmp_path: Path):
    """Check ``--time-column date`` on a date,time file reads the date and the time of day
    together, as the found date column is (it said 'duplicate timestamp' from the date
    alone), and ``--clock-column`` names a time of day of another name (Datum,Zeit)."""
    t = pd.date_range("2024-03-01", periods=200, freq="15min")
    value = (20 + np.random.default_rng(1).standard_normal(200)).round(2)
    en = tmp_path / "en.csv"
    pd.DataFrame({"date": t.strftime("%Y-%m-%d"), "time": t.strftime("%H:%M:%S"),
                  "value": value}).to_csv(en, index=False)
    p = edgewise("detect", str(en), "--time-column", "date")
    assert p.returncode == 0, p.stderr
    assert "on value," in p.stdout and "left out" not in p.stdout, p.stdout
    de = tmp_path / "de.csv"
    pd.DataFrame({"Datum": t.strftime("%Y-%m-%d"), "Zeit": t.strftime("%H:%M:%S"),
                  "Wert": value}).to_csv(de, index=False)
    one_line_error(edgewise("detect", str(de), "--time-column", "Datum"),
                   "Time column 'Datum' has a duplicate timestamp '2024-03-01'",
                   "name that column with --clock-column")
    p = edgewise("detect", str(de), "--time-column", "Datum", "--clock-column", "Zeit")
    assert p.returncode == 0, p.stderr
    assert "on Wert," in p.stdout and "left out" not in p.stdout, p.stdout
    written = pd.read_csv(tmp_path / "de_scored.csv", dtype=str)
    assert written["Zeit"].iloc[1] == "00:15:00"
    one_line_error(edgewise("detect", str(de), "--clock-column", "Zeit"),
                   "--clock-column 'Zeit'", "--time-column Datum")
    one_line_error(edgewise("detect", str(de), "--time-column", "Datum", "--clock-column",
                            "Zeit", "--columns", "Zeit,Wert"),
                   "--columns names 'Zeit', the time of day joined to the date column 'Datum'")
    p = edgewise("detect", "--help")
    assert "--clock-column" in p.stdout


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity"])
def test_an_infinite_reading_is_refused_in_one_line(tmp_path: Path, cell: str):
    """Check an infinite reading is refused naming the column, its row and the value: it
    was taken for a missing one (score 0.0, not flagged, yet top_column named it)."""
    src = tmp_path / "inf.csv"
    lines = readings().to_csv(index=False).splitlines()
    lines[101] = lines[101].rsplit(",", 1)[0] + "," + cell  # data row 101
    src.write_text("\n".join(lines) + "\n")
    shown = "inf" if cell == "Infinity" else cell  # as read: a float
    one_line_error(edgewise("detect", str(src)),
                   f"Column 'value' must hold finite numbers; row 101 has {shown}")
    assert not (tmp_path / "inf_scored.csv").exists()
    with pytest.raises(QualityError, match="row 101 has"):  # label suggest's history too
        load_history_csv(src)


def test_a_column_named_twice_in_columns_is_refused(tmp_path: Path):
    """Check ``--columns a,a`` is refused in one line: it was scored as '2 columns'
    (multivariate) on one metric."""
    src = tmp_path / "two.csv"
    df = readings().assign(other=1.0)
    df.to_csv(src, index=False)
    one_line_error(edgewise("detect", str(src), "--columns", "value, value"),
                   "--columns 'value, value' names 'value' twice", "--columns value.")
    with pytest.raises(InvalidParameterError, match="names 'value' twice"):
        detect_table(df, columns=["value", "other", "value"], detector="ewzscore")


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path):
    """Check ``ts,a,a,b`` is refused naming the column and its positions: pandas read the
    second as 'a.1', and OUT wrote it back renamed. A column the file names 'a.1' beside
    'a' is no such thing."""
    src = tmp_path / "dup.csv"
    src.write_text("ts,a,a,b\n" + "".join(f"{i},{i},{i + 1},{i % 3}\n" for i in range(60)))
    one_line_error(edgewise("detect", str(src)),
                   "has two columns named 'a' (columns 2 and 3 of the header)")
    with pytest.raises(QualityError, match="'a' \\(columns 2 and 4 of the header\\)"):
        read_tables(_write(tmp_path / "spaced.csv", "ts, a,b,a\n1,2,3,4\n"))
    fine = _write(tmp_path / "fine.csv",
                  "ts,a,a.1\n" + "".join(f"{i},{i % 4},{i % 7}\n" for i in range(60)))
    p = edgewise("detect", str(fine), "--detector", "ewzscore")
    assert p.returncode == 0, p.stderr
    assert "on a, a.1," in p.stdout
    out = (tmp_path / "fine_scored.csv").read_text().splitlines()[0]
    assert out == "ts,a,a.1,anomaly_score,is_anomaly,top_column"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_no_score_is_written_as_negative_zero(tmp_path: Path):
    """Check constant readings (and a row of empty cells) score 0.0, never -0.0: the
    Mahalanobis score of a reading at the mean was -log10(1) = -0.0."""
    det = Mahalanobis(warmup=5)
    for _ in range(10):
        det.learn_one({"a": 7.0, "b": 3.0})
    for x in ({"a": 7.0, "b": 3.0}, {"a": math.nan, "b": math.nan}):
        score = det.score_one(x)
        assert score == 0.0 and math.copysign(1.0, score) == 1.0, score
    src = tmp_path / "const.csv"
    df = pd.DataFrame({"timestamp": np.arange(200) + 1_704_067_200, "a": 7, "b": 3.0})
    df["b"] = df["b"].astype(object)
    df.loc[120, ["a", "b"]] = None
    df.to_csv(src, index=False)
    p = edgewise("detect", str(src))
    assert p.returncode == 0, p.stderr
    assert "detector mahalanobis" in p.stdout
    scores = pd.read_csv(tmp_path / "const_scored.csv", dtype=str)["anomaly_score"]
    assert not scores.str.startswith("-").any(), scores[scores.str.startswith("-")].head()
