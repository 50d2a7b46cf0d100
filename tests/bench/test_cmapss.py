"""Protocol checks of the C-MAPSS benchmark: test data never reaches training or tuning."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.cmapss import load_test, load_train, phm08_score, run_seed
from edgewise.errors import InvalidParameterError

SMALL = {"models": ("gbm",), "n_estimators": 10, "calibration_folds": 2}


def _copy(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir()
    for name in names:
        shutil.copy(src / name, dst / name)
    return dst


def test_training_reads_only_the_training_file(shared_data: Path, tmp_path: Path) -> None:
    """Check that loading and fitting work from a directory holding nothing but the train file."""
    only_train = _copy(shared_data / "cmapss", tmp_path / "d", ["train_FD001.txt.gz"])
    train = load_train(only_train, "FD001")
    assert len(train) == 20631
    with pytest.raises(InvalidParameterError, match=r"test_FD001\.txt"):
        load_test(only_train, "FD001")


def test_results_of_training_do_not_change_when_test_data_does(
    shared_data: Path, tmp_path: Path
) -> None:
    """Check that perturbing test files changes the test figures but not the fitted model.

    On the first 30 training and 40 test units of FD001 (the whole subset took 3x as long):
    what is checked, that nothing of the test files reaches the fit, does not need more."""
    names = ["train_FD001.txt.gz", "test_FD001.txt.gz", "RUL_FD001.txt.gz"]
    full, clean = shared_data / "cmapss", tmp_path / "clean"
    clean.mkdir()
    train = pd.read_csv(full / names[0], sep=r"\s+", header=None)
    test = pd.read_csv(full / names[1], sep=r"\s+", header=None)
    truth = pd.read_csv(full / names[2], sep=r"\s+", header=None)
    for name, table in zip(names, (train[train[0] <= 30], test[test[0] <= 40], truth[:40]),
                           strict=True):
        with gzip.open(clean / name, "wt") as fh:
            table.to_csv(fh, sep=" ", header=False, index=False)
    dirty = _copy(clean, tmp_path / "dirty", names)
    test = pd.read_csv(clean / "test_FD001.txt.gz", sep=r"\s+", header=None)
    rng = np.random.default_rng(0)
    sensors = test.columns[5:]
    # a tenth of each sensor's spread: inside the model's domain (5% of the value put
    # sensor_2 147 sd off its training mean, and RULModel refuses such units as another
    # fleet), enough to move the RMSE
    spread = test[sensors].astype(float).std().to_numpy()
    noise = 0.1 * spread * rng.standard_normal((len(test), len(sensors)))
    test[sensors] = test[sensors].astype(float) + noise
    with gzip.open(dirty / "test_FD001.txt.gz", "wt") as fh:
        test.to_csv(fh, sep=" ", header=False, index=False)

    model_a, figs_a = run_seed(clean, "FD001", seed=0, **SMALL)
    model_b, figs_b = run_seed(dirty, "FD001", seed=0, **SMALL)

    probe = load_train(clean, "FD001")
    np.testing.assert_array_equal(model_a.predict(probe), model_b.predict(probe))
    np.testing.assert_array_equal(model_a.bands_.low_, model_b.bands_.low_)
    np.testing.assert_array_equal(model_a.weights_, model_b.weights_)
    assert figs_a["rmse"] != figs_b["rmse"]


def test_phm08_score_penalises_late_predictions_more() -> None:
    """Check the PHM08 score against hand values: 10 late costs more than 10 early."""
    late = phm08_score(np.array([20.0]), np.array([10.0]))
    early = phm08_score(np.array([0.0]), np.array([10.0]))
    assert late == pytest.approx(np.e - 1)
    assert early == pytest.approx(np.exp(10 / 13) - 1)
    assert late > early


def test_missing_files_are_named(tmp_path: Path) -> None:
    """Check that a directory without the subset's files gives an error naming the file."""
    with pytest.raises(InvalidParameterError, match=r"train_FD003\.txt\[\.gz\] not found"):
        load_train(tmp_path, "FD003")


@pytest.mark.slow
def test_fd001_rmse_goal(shared_data: Path) -> None:
    """Check that one seed of the boosted member reaches RMSE 12.5 on FD001 (goal 12.0 on 5)."""
    _, figs = run_seed(shared_data / "cmapss", "FD001", seed=0, models=("gbm",))
    assert figs["rmse"] < 12.5
    assert figs["coverage"] > 0.7


def test_latency_is_timed_on_a_long_first_unit(shared_data: Path) -> None:
    """Check the latency probe predicts from the first test unit's whole history: its last
    window alone starts late, which the model refuses (``bench cmapss --subset FD002``
    ended with that error after its first seed: FD002's first test unit has 258 cycles)."""
    from edgewise.bench.cmapss import _latency_ms, make_model

    train = load_train(shared_data / "cmapss", "FD001")
    model = make_model(0, **SMALL).fit(train[train["unit"] <= 12])
    test = load_test(shared_data / "cmapss", "FD001")[0]
    sizes = test.groupby("unit").size()
    long_unit = sizes.idxmax()
    assert sizes[long_unit] > 3 * model.window
    first = pd.concat([test[test["unit"] == long_unit], test[test["unit"] != long_unit]])
    assert _latency_ms(model, first) > 0
