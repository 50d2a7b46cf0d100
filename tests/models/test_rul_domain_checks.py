"""RULModel refuses, by name, units it has no business scoring: far outside the training
data (another fleet), or stepping its time column otherwise than the training data."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.rul import RULModel, load_model


def _histories(units: int, seed: int = 0, first: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for u in range(units):
        life = int(rng.integers(60, 90))
        wear = (np.arange(life) / life) ** 2
        frames.append(pd.DataFrame({
            "unit": u, "cycle": np.arange(first, first + life),
            "temp": 40 + 15 * wear + rng.normal(0, 0.3, life),
            "vib": 2 + 6 * wear + rng.normal(0, 0.1, life)}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def model() -> RULModel:
    return RULModel(window=10, n_estimators=30, learning_rate=0.1, calibration_folds=2,
                    cap=60.0).fit(_histories(8))


def test_a_unit_far_outside_the_training_data_is_unscorable(model: RULModel) -> None:
    """Check that a unit whose 'vib' reads in other units (x1000, as FD002 scored by an
    FD001 model is off by thousands of z) is listed with the sensor, value and range, and
    that predict refuses it; units of the same kind as training are scored (it got a
    plausible RUL silently)."""
    test = _histories(4, seed=1)
    test = test[test.cycle <= 40]
    assert model.unscorable(test) == {}
    shifted = test.assign(vib=np.where(test.unit == 2, test.vib * 1000, test.vib))
    why = model.unscorable(shifted)
    assert list(why) == [2], why
    assert "sensor 'vib' is " in why[2] and "at cycle" in why[2], why
    assert "training values" in why[2] and "beyond 20" in why[2], why
    with pytest.raises(InvalidParameterError, match=r"cannot score unit 2: sensor 'vib'"):
        model.predict(shifted)
    assert len(model.predict(shifted[shifted.unit != 2])) == 3


def test_a_glitch_early_in_a_history_is_unscorable_naming_sensor_and_cycle(
        model: RULModel) -> None:
    """Check that one far-out reading in the 3rd cycle of a 40-cycle unit (long before the
    last ``window`` rows, but read by the whole-history slope) makes the unit unscorable,
    naming the sensor, the value and the cycle; the other units score as before (before: the
    check read only the last window, and the glitch moved the RUL without a word: C-MAPSS
    FD001 test unit 20 from 13.3 to 24.3, RMSE 10.68 -> 13.09 with one in each unit)."""
    test = _histories(4, seed=1)
    test = test[test.cycle <= 40]
    clean = model.predict(test)
    glitch = test.copy()
    glitch.loc[(glitch.unit == 1) & (glitch.cycle == 3), "vib"] = 1e6
    why = model.unscorable(glitch)
    assert list(why) == [1], why
    assert why[1].startswith("sensor 'vib' is 1e+06 at cycle 3, "), why
    with pytest.raises(InvalidParameterError, match=r"cannot score unit 1: sensor 'vib'"):
        model.predict(glitch)
    rest = model.predict(glitch[glitch.unit != 1])
    assert rest.equals(clean.drop(1))


def test_a_unit_with_gaps_in_its_cycles_is_unscorable(model: RULModel) -> None:
    """Check that a unit keeping every other cycle (age and slopes count rows, the RUL counts
    cycles, so its RUL silently changed) is listed with the step seen and the expected one,
    and so is a repeated cycle; a unit with every cycle is scored."""
    test = _histories(3, seed=2)
    test = test[test.cycle <= 40]
    gapped = test[(test.unit != 1) | (test.cycle % 2 == 1)]
    why = model.unscorable(gapped)
    assert why == {1: "its 'cycle' steps by 2 (from 1 to 3); the model was trained on steps "
                      "of 1 (it counts rows for age and trends, cycle for the RUL): give every "
                      "step, or resample to steps of 1"}, why
    repeated = pd.concat([test, test[(test.unit == 0) & (test.cycle == 40)]])
    assert list(model.unscorable(repeated)) == [0]
    assert "steps by 0" in model.unscorable(repeated)[0]
    assert len(model.predict(gapped[gapped.unit != 1])) == 2
    assert model.time_step_ == 1.0


def test_uneven_training_steps_record_no_step(model: RULModel) -> None:
    """Check that training data whose cycles step unevenly records no step (and checks
    none), rather than refusing every unit."""
    data = _histories(6)
    data = data[(data.unit != 0) | (data.cycle != 5)]
    uneven = RULModel(window=10, n_estimators=5, calibration_folds=2).fit(data)
    assert uneven.time_step_ is None
    assert uneven.unscorable(data) == {}


def test_a_model_saved_before_the_checks_loads_and_scores_unchecked(
        model: RULModel, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Check that a model without the recorded step and ranges (saved by an older build)
    loads and scores as before, with no range or step check."""
    old = pickle.loads(pickle.dumps(model))
    for name in ("time_step_", "z_range_", "value_range_"):
        delattr(old, name)
    old.save(tmp_path / "rul-old.ewm")
    loaded = load_model(tmp_path / "rul-old.ewm")
    test = _histories(2, seed=3)
    far = test.assign(vib=test.vib * 1000)
    assert loaded.unscorable(far) == {}
    assert len(loaded.predict(far[far.cycle % 2 == 1])) == 2


def test_predict_rul_json_says_its_units_and_skips_a_gapped_unit(
        model: RULModel, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Check that ``predict rul --json`` names the RUL's unit (the time column's steps) and
    the training step, and lists a unit with gaps in its cycles as skipped, with why."""
    import json

    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    model.save(tmp_path / "rul.ewm")
    test = _histories(3, seed=4)
    test = test[(test.cycle <= 40) & ((test.unit != 2) | (test.cycle % 3 == 0))]
    test.to_csv(tmp_path / "now.csv", index=False)
    done = CliRunner(mix_stderr=False).invoke(app, [
        "predict", "rul", "--model", str(tmp_path / "rul.ewm"), "--data",
        str(tmp_path / "now.csv"), "--json"])
    assert done.exit_code == 0, done.stdout + done.stderr
    body = json.loads(done.stdout)
    assert (body["rul_unit"], body["time_column"], body["time_step"]) == ("cycle", "cycle", 1.0)
    assert [p["unit"] for p in body["predictions"]] == [0, 1]
    assert body["skipped"][0]["unit"] == 2 and "steps by 3" in body["skipped"][0]["reason"]
