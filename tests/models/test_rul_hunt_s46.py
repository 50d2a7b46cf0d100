"""Session 46 RUL hunt: what a maintenance engineer's data did to RULModel, its CLI and
the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.rul import MIN_CAP_STEPS, RULModel
from tests.in_process import edgewise_here as edgewise  # in this process
from tests.models.test_rul import fleet


def test_a_cap_of_two_readings_of_an_epoch_seconds_clock_is_refused(tmp_path: Path) -> None:
    """Check that histories timed in epoch seconds a minute apart with the default cap (125,
    in the time column's units: 2 readings) are refused in one line naming the cap, the
    step and a cap that would do; the model trained, and predicted '>=125.0' (at least 125
    seconds) for every unit not within 2 minutes of its failure."""
    df = fleet(8).rename(columns={"cycle": "time"})
    df["time"] = 1_700_000_000 + 60 * df["time"]
    df.to_csv(tmp_path / "h.csv", index=False)
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--time-column",
                    "time", "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith("error: RULModel's cap 125 is in the units of the time column "
                           "'time', whose rows are 60 apart"), line
    assert "2.08 step(s)" in line and "cap=7500" in line and "--cap 7500" in line, line
    assert "\n" not in line and not (tmp_path / "m.rul").exists()
    with pytest.raises(InvalidParameterError, match=r"spans 2\.08 step"):
        RULModel(time_column="time", n_estimators=5).fit(df)


def test_a_cap_of_enough_steps_trains_whatever_the_time_unit() -> None:
    """Check that the same histories train with a cap of 125 steps in seconds (7500), and
    a cap of exactly MIN_CAP_STEPS steps, and predict what the cycle-timed model predicts
    times the step (the refusal is of the cap's size, not of the time unit)."""
    df = fleet(8)
    secs = df.assign(cycle=60 * df["cycle"])
    cycles = RULModel(n_estimators=20, cap=60.0, calibration_folds=2).fit(df)
    seconds = RULModel(n_estimators=20, cap=3600.0, calibration_folds=2).fit(secs)
    cur = df[df["cycle"] < 80]
    np.testing.assert_allclose(seconds.predict(cur.assign(cycle=60 * cur["cycle"])),
                               60 * cycles.predict(cur), rtol=1e-6)
    RULModel(n_estimators=5, cap=float(MIN_CAP_STEPS * 60), calibration_folds=2).fit(secs)
    with pytest.raises(InvalidParameterError, match=r"spans 9\.98 step"):
        RULModel(n_estimators=5, cap=MIN_CAP_STEPS * 60 - 1.0).fit(secs)


def test_a_sensor_with_one_text_cell_is_refused_not_left_out_unsaid(tmp_path: Path) -> None:
    """Check that a CSV whose wear sensor holds one 'ERR' among its numbers is refused in one
    line naming the column, the cell's row and value; it was read as text, so no sensor,
    and the model trained on the other columns without a word (its predictions rested on
    noise and the unit's age). A text column of no numbers (a site name) is still no
    sensor, and trains."""
    df = fleet(8)
    df["temp"] = df["temp"].astype(str)
    df.loc[100, "temp"] = "ERR"
    df.to_csv(tmp_path / "h.csv", index=False)
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--out",
                    str(tmp_path / "m.rul"))
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith("error: Column 'temp' holds numbers, but not in every filled cell: "
                           "'temp' has 'ERR' in row 101 (1 of "), line
    assert "\n" not in line and not (tmp_path / "m.rul").exists()
    # named as a sensor, it is refused with the cell too (it said only "must be numeric")
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--sensor-columns",
                    "temp,noise", "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 2
    assert "'temp' has 'ERR' in row 101" in done.stderr, done.stderr
    ok = fleet(8).assign(site="A7")
    model = RULModel(n_estimators=5, calibration_folds=2).fit(ok)
    assert "site" not in model.sensors_ and "temp" in model.sensors_


def test_the_cap_note_of_an_epoch_seconds_model_says_its_units_not_steps(
        tmp_path: Path) -> None:
    """Check that predict rul's note on a model timed in epoch seconds a minute apart says
    the cap is in the time column's units, 125 steps of 60; it said "capped at 7500 steps"
    and ">=7500.0 means at least that many steps left", 60 times the truth."""
    df = fleet(8).rename(columns={"cycle": "time"})
    df["time"] = 1_700_000_000 + 60 * df["time"]
    df.to_csv(tmp_path / "h.csv", index=False)
    df[df["time"] < 1_700_000_000 + 60 * 20].to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--time-column", "time",
                    "--cap", "7500", "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 0, done.stderr
    done = edgewise("predict", "rul", "--model", str(tmp_path / "m.rul"), "--data",
                    str(tmp_path / "n.csv"))
    assert done.returncode == 0, done.stderr
    assert ("note: the model predicts the RUL capped at 7500 in 'time' units, 125 steps of 60: "
            ">=7500.0 means at least that much is left") in done.stdout, done.stdout
