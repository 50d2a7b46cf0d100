"""RULModel refuses, by name, a unit whose history starts after the training units' did (its
first rows missing: the model counts a unit's age and whole-history trends from the rows it
is given), and ``predict rul`` prints a CSV's unit ids as written."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.rul import RULModel, load_model
from tests.in_process import edgewise_here as edgewise
from tests.models.test_rul_domain_checks import _histories


@pytest.fixture(scope="module")
def model() -> RULModel:
    return RULModel(window=10, n_estimators=30, learning_rate=0.1, calibration_folds=2,
                    cap=60.0).fit(_histories(8))


def test_a_history_without_its_first_cycles_is_unscorable(model: RULModel) -> None:
    """Check that a unit given only its last 30 cycles (an export of recent rows, a store
    that keeps recent data) is listed with its first cycle and the training start, and that
    predict refuses it (it got a younger unit's RUL silently); whole histories, and ones
    starting one step late, are scored."""
    test = _histories(3, seed=1)
    assert model.unscorable(test) == {}
    # one step late is the same history counted from 0 or 1 (a store counts from 1)
    assert model.unscorable(test[test.cycle >= 2]) == {}
    cut = pd.concat([test[test.unit != 1], test[test.unit == 1].tail(30)])
    first = int(test[test.unit == 1].cycle.max()) - 29
    why = model.unscorable(cut)
    assert why == {1: f"its history starts at cycle {first}, but the training units' histories "
                      "all start at cycle 1: the model takes a unit's age and whole-history "
                      f"trends from the rows it is given, so a history without its first "
                      f"{first - 1} cycle(s) would be scored as a younger unit's; give the "
                      "unit's whole history, from cycle 1"}, why
    with pytest.raises(InvalidParameterError, match=rf"cannot score unit 1: its history "
                                                    rf"starts at cycle {first}"):
        model.predict(cut)
    assert model.predict(cut[cut.unit != 1]).index.tolist() == [0, 2]
    assert model.start_range_ == (1.0, 1.0)


def test_training_units_starting_at_different_times_check_no_start() -> None:
    """Check that training units whose time column starts anywhere (timestamps, not ages)
    record no start, so units starting later are not refused for it; a start range within
    one step is kept."""
    spread = pd.concat([_histories(3, seed=u, first=1 + 500 * u).assign(unit=u)
                        for u in range(6)], ignore_index=True)
    free = RULModel(window=10, n_estimators=5, calibration_folds=2).fit(spread)
    assert free.start_range_ is None
    late = _histories(2, seed=9, first=5000)
    assert free.unscorable(late) == {}
    near = pd.concat([_histories(3, seed=1), _histories(3, seed=2, first=2).assign(
        unit=lambda d: d.unit + 3)], ignore_index=True)
    assert RULModel(window=10, n_estimators=5, calibration_folds=2).fit(
        near).start_range_ == (1.0, 2.0)


def test_a_model_saved_before_the_start_was_recorded_scores_late_units(
        model: RULModel, tmp_path: Path) -> None:
    """Check that a model without ``start_range_`` (saved by an older build) loads and
    scores a late-starting unit as before, unchecked."""
    old = pickle.loads(pickle.dumps(model))
    del old.start_range_
    old.save(tmp_path / "old.rul")
    loaded = load_model(tmp_path / "old.rul")
    tail = _histories(2, seed=3).groupby("unit").tail(30)
    assert loaded.unscorable(tail) == {}
    assert len(loaded.predict(tail)) == 2


@pytest.fixture(scope="module")
def model_file(model: RULModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rul") / "m.rul"
    model.save(path)
    return path


def test_predict_rul_skips_a_late_unit_and_prints_ids_as_written(
        model_file: Path, tmp_path: Path) -> None:
    """Check that ``predict rul`` lists a unit given without its first cycles as skipped,
    with why, and prints unit ids as the CSV writes them: ``001`` and ``1e3`` printed as 1
    and 1000 (read as numbers)."""
    test = _histories(3, seed=4)
    test = test[(test.unit != 2) | (test.cycle > 20)]
    test["unit"] = test["unit"].map({0: "001", 1: "1e3", 2: "002"})
    test.to_csv(tmp_path / "now.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(model_file), "--data",
                    str(tmp_path / "now.csv"), "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert [p["unit"] for p in body["predictions"]] == ["001", "1e3"]
    assert [s["unit"] for s in body["skipped"]] == ["002"]
    assert "its history starts at cycle 21" in body["skipped"][0]["reason"]
    done = edgewise("predict", "rul", "--model", str(model_file), "--data",
                    str(tmp_path / "now.csv"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["001", "1e3"]
    assert lines[-1].startswith("skipped 1 unit(s): 002 (its history starts at cycle 21")


def test_predict_rul_reads_ids_of_a_folder_of_csvs_as_written(
        model_file: Path, tmp_path: Path) -> None:
    """Check that a folder whose files write ids ``7`` and ``007`` scores them as two units,
    each printed as written (both were unit 7, its cycles refused as given twice)."""
    (tmp_path / "d").mkdir()
    test = _histories(2, seed=5).assign(unit=lambda d: np.where(d.unit == 0, "7", "x"))
    test[test.unit == "7"].to_csv(tmp_path / "d" / "a.csv", index=False)
    test[test.unit == "x"].assign(unit="007").to_csv(tmp_path / "d" / "b.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(model_file), "--data",
                    str(tmp_path / "d"), "--json")
    assert done.returncode == 0, done.stderr
    assert [p["unit"] for p in json.loads(done.stdout)["predictions"]] == ["007", "7"]
