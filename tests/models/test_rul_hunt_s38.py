"""RUL on inputs a bug hunt (session 38) found mishandled: ``--condition-columns`` with a
store (the settings never reached the table), a setting blank in a unit's first rows
(scored against a regime guessed from the settings' mean), every sensor constant (a silent
age-only model) and a row with no unit id (a pandas TypeError)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.cmapss import SETTINGS, load_test, load_train
from edgewise.errors import InvalidParameterError
from edgewise.models.conditions import ConditionNormalizer
from edgewise.models.rul import RULModel, read_header
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.in_process import edgewise_here as edgewise  # in this process
from tests.models.test_rul import fleet

T0, STEP = 1_700_000_000 * 10**9, 10 * 10**9  # one C-MAPSS cycle every ten seconds
CONDITIONS = ["op_setting_1", "op_setting_2", "op_setting_3"]
SENSORS = ["sensor_2", "sensor_3", "sensor_4", "sensor_11"]


@pytest.fixture(scope="module")
def fd002(shared_data: Path) -> pd.DataFrame:
    """FD002 (six operating regimes) training engines 1-8."""
    train = load_train(shared_data / "cmapss", "FD002")
    return train[train.unit <= 8].reset_index(drop=True)


@pytest.fixture(scope="module")
def fd002_model(fd002: pd.DataFrame) -> RULModel:
    return RULModel(condition_columns=SETTINGS, sensor_columns=SENSORS, n_estimators=30,
                    calibration_folds=2, window=20).fit(fd002)


def _late(df: pd.DataFrame, columns: list[str], rows: int = 3) -> pd.DataFrame:
    """``df`` with ``columns`` blank in each unit's first ``rows`` rows (a metric that
    starts reporting after the others)."""
    late = df.copy()
    first = late.groupby("unit").cycle.transform("min")
    late.loc[late.cycle < first + rows, columns] = np.nan
    return late


def test_store_training_with_condition_columns(fd002: pd.DataFrame, tmp_path: Path) -> None:
    """Check that ``train rul --condition-columns`` reads the settings from a store (they
    are metrics too) and keeps them out of the sensors, with or without --sensor-columns
    (it always failed: without, the settings were taken as sensors as well, 'given as a
    condition column and as a sensor column'; with, the table lacked them), and that
    ``predict rul`` and the RUL route score the store's devices with that model, a device
    whose settings start reporting three readings late included."""
    from edgewise.server.routes.rul import _fit

    db = tmp_path / "edgewise.duckdb"
    store = open_store(f"duckdb:///{db}")
    short = fd002[fd002.unit <= 4].groupby("unit").tail(50)  # the last 50 cycles: fast
    try:
        for unit, g in short.groupby("unit"):
            store.append([Reading(f"engine-{unit}", m, T0 + int(c) * STEP, float(v))
                          for m in [*CONDITIONS, *SENSORS]
                          for c, v in zip(g.cycle, g[m], strict=True)
                          if not (unit == 2 and m in CONDITIONS and c <= 3)])
    finally:
        store.close()
    base = ("train", "rul", "--data", str(tmp_path), "--history-ends-at-failure",
            "--condition-columns", ",".join(CONDITIONS), "--window", "10")
    done = edgewise(*base, "--out", str(tmp_path / "a.rul"))
    assert done.returncode == 0, done.stderr
    head = read_header(tmp_path / "a.rul")
    assert head["condition_columns"] == CONDITIONS
    assert head["sensor_columns"] == sorted(SENSORS)
    done = edgewise(*base, "--sensor-columns", ",".join(SENSORS), "--out",
                    str(tmp_path / "b.rul"))
    assert done.returncode == 0, done.stderr
    assert read_header(tmp_path / "b.rul")["sensor_columns"] == SENSORS

    done = edgewise("predict", "rul", "--model", str(tmp_path / "a.rul"), "--data",
                    str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["skipped"] == []
    assert [p["unit"] for p in answer["predictions"]] == [f"engine-{u}" for u in range(1, 5)]

    from edgewise.models.rul import load_model

    model = load_model(tmp_path / "a.rul")
    assert model.required_columns()[2:5] == CONDITIONS  # the regimes need the settings
    store = open_store(f"duckdb:///{db}", create=False)
    try:
        ans = _fit(model, tmp_path / "a.rul", store.query("engine-2", None, None, None, None),
                   "engine-2")
    finally:
        store.close()
    assert ans["reason"] is None, ans
    assert ans["rul"] == next(p["rul"] for p in answer["predictions"]
                              if p["unit"] == "engine-2")


def test_a_setting_blank_in_the_first_rows_leaves_their_regime_unknown(
        fd002_model: RULModel, shared_data: Path) -> None:
    """Check that rows whose settings are blank (before their first value in the unit) are
    scored as rows before every sensor's first value (z = 0), not against the regime of the
    settings' training mean, which lies between the six regimes: units were refused as
    'another fleet' (|z| in the thousands) and predictions moved by up to 46 cycles."""
    test, _ = load_test(shared_data / "cmapss", "FD002")
    test = test[test.unit <= 40]
    late_settings = _late(test, SETTINGS)
    late_all = _late(test, [*SETTINGS, *SENSORS])  # the sensors not yet reported either
    assert fd002_model.unscorable(late_settings) == {}
    pd.testing.assert_series_equal(fd002_model.predict(late_settings),
                                   fd002_model.predict(late_all))
    pd.testing.assert_frame_equal(fd002_model.features(late_settings),
                                  fd002_model.features(late_all))


def test_training_rows_of_unknown_regime_are_left_out_of_the_regimes(
        fd002: pd.DataFrame) -> None:
    """Check that training rows whose settings are blank take no part in finding the regimes
    or their statistics (filled with the settings' mean, they formed a regime of their own
    or pulled a regime's mean and spread), and are z-scored 0."""
    late = _late(fd002, SETTINGS)
    known = late[SETTINGS].notna().all(axis=1).to_numpy()
    norm = ConditionNormalizer().fit(late[SETTINGS].to_numpy(), late[SENSORS].to_numpy())
    whole = ConditionNormalizer().fit(late[SETTINGS].to_numpy()[known],
                                      late[SENSORS].to_numpy()[known])
    assert norm.n_conditions_ == whole.n_conditions_ == 6
    np.testing.assert_array_equal(norm.mean_, whole.mean_)
    np.testing.assert_array_equal(norm.scale_, whole.scale_)
    z = norm.transform(late[SETTINGS].to_numpy(), late[SENSORS].to_numpy())
    assert np.isnan(z[~known]).all() and not np.isnan(z[known]).any()

    model = RULModel(condition_columns=SETTINGS, sensor_columns=SENSORS, n_estimators=10,
                     calibration_folds=2, window=20).fit(late)
    assert model.core_["norm"].n_conditions_ == 6
    np.testing.assert_allclose(model.core_["norm"].mean_, whole.mean_)


def test_every_sensor_constant_is_refused_and_a_constant_one_named() -> None:
    """Check that a fit whose every sensor is constant (a stuck or placeholder feed) is
    refused, naming the sensors and why (it saved a model predicting from the unit's age
    alone, needing no sensor to score), and that a constant sensor beside useful ones is
    named in ``left_out_``, which the CLI prints as a note."""
    df = fleet(6)
    with pytest.raises(InvalidParameterError,
                       match=r"no sensor to learn from: every sensor shows fewer than 5 distinct "
                             r"values in the training rows \(distinct values: 'load': 1, "
                             r"'flat': 1\)") as caught:
        RULModel(n_estimators=5, cap=60.0).fit(df[["unit", "cycle", "load", "flat"]])
    assert caught.value.field == "sensor_columns" and caught.value.value == ["load", "flat"]
    model = RULModel(n_estimators=5, cap=60.0).fit(df)
    why = ("only 1 distinct value(s) in the training rows (at least 5 needed): nothing to "
           "learn from")
    assert model.left_out_ == {"load": why, "flat": why}


def test_the_cli_names_constant_sensors(tmp_path: Path) -> None:
    """Check ``train rul`` says which sensors it left out as constant (it said nothing) and
    refuses, in one line, data whose every sensor is constant."""
    df = fleet(6)
    df.to_csv(tmp_path / "h.csv", index=False)
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--cap", "60",
                    "--window", "10", "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 0, done.stderr
    assert ("note: column 'flat' left out of the model: only 1 distinct value(s) in the "
            "training rows (at least 5 needed): nothing to learn from; predictions do not "
            "need it") in done.stderr.splitlines()
    df[["unit", "cycle", "flat"]].to_csv(tmp_path / "flat.csv", index=False)
    done = edgewise("train", "rul", "--data", str(tmp_path / "flat.csv"), "--window", "10",
                    "--out", str(tmp_path / "f.rul"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: RULModel has no sensor to learn from: every "
                                  "sensor shows fewer than 5 distinct values"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "f.rul").exists()


def test_a_row_without_a_unit_id_is_named() -> None:
    """Check that a row whose unit is empty (NaN) is refused by row number, in fit, predict,
    predict_interval and unscorable (each raised pandas' 'bad operand type for unary ~')."""
    df = fleet(5)
    model = RULModel(n_estimators=5, cap=60.0, window=10).fit(df)
    now = df[df.cycle < 30].reset_index(drop=True)
    now["unit"] = now["unit"].astype(float)
    now.loc[now.unit == 3.0, "unit"] = np.nan
    row = int(np.flatnonzero(now.unit.isna())[0]) + 1
    msg = rf"The unit column 'unit' has no value in row {row} \(30 such row\(s\)\)"
    for call in (model.predict, model.predict_interval, model.unscorable,
                 RULModel(n_estimators=5, cap=60.0, window=10).fit):
        with pytest.raises(InvalidParameterError, match=msg):
            call(now)


def test_the_regimes_kmeans_keeps_to_n_threads(fd002: pd.DataFrame,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ``n_threads`` holds the operating regimes' KMeans (OpenMP) too, as documented:
    it ran on every core whatever ``n_threads`` said (54 KMeans fits of C-MAPSS folds
    fought the other work on the machine: 27-38 s for a fit that takes 3-5 s alone)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from edgewise.models import conditions

    seen: list[int] = []

    class Recording(conditions.KMeans):  # type: ignore[misc]
        def fit(self, *args: object, **kwargs: object) -> Recording:
            seen.extend(p["num_threads"] for p in threadpool_info()
                        if p["user_api"] == "openmp")
            return super().fit(*args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(conditions, "KMeans", Recording)
    units = fd002[fd002.unit <= 4]
    with threadpool_limits(2, user_api="openmp"):  # as a machine with two cores or more
        RULModel(condition_columns=SETTINGS, sensor_columns=SENSORS, n_estimators=5,
                 calibration_folds=2, window=20, n_threads=1).fit(units)
    assert seen and set(seen) == {1}
