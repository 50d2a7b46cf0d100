"""``load_history_csv`` (``label suggest --csv``, ``train --with-labels --csv``) reads a
history by ``edgewise detect``'s rules: the time column by name, label columns never
metrics, a cell that is no number and a repeated time refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError, QualityError
from edgewise.label.workflow import load_history_csv

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def _readings(n: int = 60, label_at: int = 10) -> list[tuple[str, float, float, int]]:
    rng = np.random.default_rng(0)
    return [(f"2024-01-01T{i // 60:02d}:{i % 60:02d}:00Z", 20 + rng.normal(0, 0.2),
             5 + rng.normal(0, 0.1), int(label_at <= i < label_at + 5)) for i in range(n)]


@pytest.mark.parametrize("label", ["label", "anomaly", "Is_Anomaly", "changepoint"])
def test_a_label_column_is_no_metric(tmp_path: Path, label: str) -> None:
    """Check a label column is left out of the metrics: moving its 1s to other rows gives
    the same history (it was scored as a sensor, so a moved label made an ALARM window
    where no sensor changed)."""
    got = []
    for at in (10, 40):
        rows = [f"{t},{a:.3f},{b:.3f},{y}" for t, a, b, y in _readings(label_at=at)]
        got.append(load_history_csv(_write(tmp_path / f"h{at}.csv",
                                           f"timestamp,temp,pressure,{label}", rows)))
    assert got[0][2] == got[1][2] == ["temp", "pressure"]
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])


def test_detects_output_columns_are_no_metrics(tmp_path: Path) -> None:
    """Check a file ``edgewise detect`` scored reads as the readings it scored."""
    f = _write(tmp_path / "s.csv", "ts,a,anomaly_score,is_anomaly,top_column",
               ["1704067200,20.1,0.0,False,", "1704067260,20.4,0.9,True,a"])
    assert load_history_csv(f)[2] == ["a"]


def test_a_cell_that_is_no_number_is_named(tmp_path: Path) -> None:
    """Check a metric cell that is no number is refused naming the column, the row and the
    value (it became NaN silently), while an empty cell stays a missing reading."""
    f = _write(tmp_path / "h.csv", "timestamp,temp,pressure",
               ["0,20.0,5.0", "60,,5.1", "120,20.2,err", "180,20.3,5.3"])
    with pytest.raises(QualityError, match=r"^Column 'pressure' must hold numbers; row 3 has "
                                           r"'err'\.$"):
        load_history_csv(f)
    _write(f, "timestamp,temp,pressure", ["0,20.0,5.0", "60,,5.1"])
    assert np.isnan(load_history_csv(f)[1][1, 0])


def test_a_repeated_time_is_refused_naming_its_rows(tmp_path: Path) -> None:
    """Check two rows of one time are refused in one line naming the time and both rows of
    the file (the rows are sorted first: here they are not next to each other)."""
    f = _write(tmp_path / "h.csv", "timestamp,temp",
               ["2024-01-01T00:02:00Z,1", "2024-01-01T00:01:00Z,2", "2024-01-01T00:00:00Z,3",
                "2024-01-01T00:01:00Z,4"])
    with pytest.raises(QualityError) as err:
        load_history_csv(f)
    msg = str(err.value)
    assert ("Time column 'timestamp' has a duplicate timestamp '2024-01-01T00:01:00Z' "
            "(rows 2 and 4)") in msg and "\n" not in msg


def test_devices_are_read_one_at_a_time(tmp_path: Path) -> None:
    """Check a time repeated by two devices is no duplicate of either; the rows of one are
    read with ``device_id``, and a file of several is refused without it (they were mixed
    into one history)."""
    f = _write(tmp_path / "h.csv", "device_id,ts,temp",
               ["pump-1,0,1", "pump-2,0,2", "pump-1,60,3", "pump-2,60,4", "pump-2,60,5"])
    ts, X, metrics = load_history_csv(f, device_id="pump-1")
    assert ts.tolist() == [0, 60 * 10**9] and X[:, 0].tolist() == [1, 3] and metrics == ["temp"]
    with pytest.raises(QualityError, match=r"60 of device 'pump-2' \(rows 4 and 5\)"):
        load_history_csv(f, device_id="pump-2")
    with pytest.raises(InvalidParameterError, match="readings of 2 devices"):
        load_history_csv(f)
    with pytest.raises(InvalidParameterError, match="no rows of device 'pump-3'"):
        load_history_csv(f, device_id="pump-3")


@pytest.mark.parametrize("name", ["Time", "datetime", "date", "TS", "timestamp"])
def test_the_time_column_is_found_as_detect_finds_it(tmp_path: Path, name: str) -> None:
    """Check every time-column name ``edgewise detect`` knows is read (only ``timestamp``
    and ``ts`` were)."""
    f = _write(tmp_path / "h.csv", f"{name},temp", ["2024-01-01T00:01:00Z,2",
                                                     "2024-01-01T00:00:00Z,1"])
    ts, X, metrics = load_history_csv(f)
    assert metrics == ["temp"] and X[:, 0].tolist() == [1, 2]
    assert ts.tolist() == [1_704_067_200 * 10**9, 1_704_067_260 * 10**9]


def test_no_time_column_names_what_is_looked_for(tmp_path: Path) -> None:
    f = _write(tmp_path / "h.csv", "when,temp", ["0,1"])
    with pytest.raises(InvalidParameterError,
                       match=r"no time column: none is named 'timestamp', 'time', 'ts', "
                             r"'datetime' or 'date'"):
        load_history_csv(f)


def test_suggest_refuses_a_bad_cell_in_one_line(tmp_path: Path) -> None:
    """Check ``edgewise label suggest --csv`` names the bad cell in one line, exit 2."""
    rows = [f"{t},{a:.3f},{b:.3f},{y}" for t, a, b, y in _readings()]
    rows[7] = rows[7].replace(rows[7].split(",")[1], "sensor fault", 1)
    f = _write(tmp_path / "h.csv", "timestamp,temp,pressure,label", rows)
    done = subprocess.run(
        [sys.executable, "-m", "edgewise", "label", "suggest", "--device", "pump-1", "--csv",
         str(f), "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
        cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Column 'temp' must hold numbers; row 8 has 'sensor fault'." in done.stderr


def test_an_all_empty_column_is_left_out_and_named(tmp_path: Path) -> None:
    """Check a column whose every cell is empty (a sensor that never reported) is left out
    of the metrics, as ``edgewise detect`` leaves it out, and named in a warning: it was
    dropped without a word. A column empty in some rows only stays a metric with NaN."""
    f = _write(tmp_path / "h.csv", "timestamp,temp,vib,pressure",
               ["0,20.0,,", "60,20.5,,5.1", "120,20.4, ,"])
    with pytest.warns(UserWarning) as caught:
        _, X, metrics = load_history_csv(f)
    assert metrics == ["temp", "pressure"] and X.shape == (3, 2)
    assert [str(w.message) for w in caught] == [(
        f"History CSV {str(f)!r}: column 'vib' left out of the metrics (every cell is "
        "empty), as edgewise detect leaves it out.")]
    assert caught[0].filename == __file__  # names the caller's line, not the library's


def test_a_column_empty_for_one_device_is_named_with_it(tmp_path: Path) -> None:
    """Check a metric only another device of the file reports is left out of this device's
    history, the warning naming the device; the other device's history keeps it."""
    f = _write(tmp_path / "h.csv", "device_id,ts,temp,vib",
               ["pump-1,0,1,", "pump-2,0,2,0.5", "pump-1,60,3,", "pump-2,60,4,0.6"])
    with pytest.warns(UserWarning, match=r"column 'vib' left out of the metrics \(every cell "
                                         r"of device 'pump-1' is empty\)"):
        assert load_history_csv(f, device_id="pump-1")[2] == ["temp"]
    assert load_history_csv(f, device_id="pump-2")[2] == ["temp", "vib"]  # no warning


def test_only_empty_columns_is_refused(tmp_path: Path) -> None:
    """Check a file whose only metric column is empty is still refused (after the
    warning)."""
    f = _write(tmp_path / "h.csv", "timestamp,vib", ["0,", "60,"])
    with pytest.warns(UserWarning, match="'vib' left out"), \
            pytest.raises(InvalidParameterError, match="has no metric column"):
        load_history_csv(f)


def test_the_cli_says_a_left_out_column_in_one_note_line(tmp_path: Path) -> None:
    """Check ``label suggest --csv`` names the empty column on one ``note:`` line, not as a
    Python warning with the source line that raised it."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    f = tmp_path / "h.csv"
    f.write_text("timestamp,temp,vib\n" + "".join(f"{60 * i},{20 + (i % 7) * 0.1},\n"
                                                   for i in range(200)))
    (tmp_path / "d").mkdir()  # a data dir that is not there would be noted too
    res = CliRunner(mix_stderr=False).invoke(app, [
        "label", "suggest", "--device", "p1", "--csv", str(f), "-k", "2",
        "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.stderr
    assert res.stderr == (f"note: History CSV {str(f)!r}: column 'vib' left out of the "
                          "metrics (every cell of device 'p1' is empty), as edgewise detect "
                          "leaves it out.\n")


def test_a_date_and_a_time_column_make_the_time_and_ids_are_read_as_written(
        tmp_path: Path) -> None:
    """Check a ``date,time`` history is read as one time (as ``edgewise detect`` and
    ``quality`` read it: before, every reading of a day had one time and was refused as a
    duplicate), the time-of-day column is no metric, and device ``007`` is not ``7``."""
    f = tmp_path / "dt.csv"
    f.write_text("date,time,device_id,temp\n2024-01-01,00:00:00,007,20.1\n"
                 "2024-01-01,00:01:00,007,20.2\n2024-01-01,00:02:00,7,30.1\n"
                 "2024-01-01,00:03:00,007,20.3\n")
    ts, X, metrics = load_history_csv(f, device_id="007")
    assert metrics == ["temp"] and X[:, 0].tolist() == [20.1, 20.2, 20.3]
    assert (np.diff(ts) // 10**9).tolist() == [60, 120]
    f.write_text("date,time,temp\n2024-01-01,00:00:00,1\n2024-01-01,00:00:00,2\n")
    with pytest.raises(ValueError, match="Time column 'date time' has a duplicate timestamp "
                                         "'2024-01-01 00:00:00' \\(rows 1 and 2\\)"):
        load_history_csv(f)


def test_the_cli_says_a_label_column_is_left_out(tmp_path: Path) -> None:
    """Check ``label suggest --csv`` names a label column it leaves out of the metrics, as
    the README says and ``quality`` does (it said nothing)."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    f = tmp_path / "h.csv"
    f.write_text("timestamp,temp,anomaly\n" + "".join(f"{60 * i},{20 + (i % 7) * 0.1},0\n"
                                                     for i in range(200)))
    (tmp_path / "d").mkdir()
    res = CliRunner(mix_stderr=False).invoke(app, [
        "label", "suggest", "--device", "p1", "--csv", str(f), "-k", "2",
        "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.stderr
    assert res.stderr == (f"note: History CSV {str(f)!r}: column 'anomaly' left out of the "
                          "metrics: it is named like a label (labels are not readings).\n")
