"""RUL model behaviour on small synthetic fleets with a known wear law."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.models.base import RULEstimator
from edgewise.models.conditions import ConditionNormalizer
from edgewise.models.conformal import ConformalBands
from edgewise.models.rul import (
    FORMAT_VERSION,
    ModelFileError,
    RULModel,
    load_model,
    read_header,
    rul_targets,
)


def fleet(n_units: int = 40, seed: int = 0, regimes: int = 1) -> pd.DataFrame:
    """Units whose 'temp' rises exponentially towards failure, under 1 or more regimes."""
    rng = np.random.default_rng(seed)
    rows = []
    for unit in range(n_units):
        life = int(rng.integers(90, 160))
        for t in range(life):
            regime = int(rng.integers(regimes))
            wear = np.exp((t - life) / 20.0)
            rows.append(
                (unit, t, 10.0 * regime, 100.0 * regime + wear + rng.normal(0, 0.03),
                 50.0 * regime + rng.normal(), 7.0)
            )
    return pd.DataFrame(rows, columns=["unit", "cycle", "load", "temp", "noise", "flat"])


def truncate(df: pd.DataFrame, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    parts, truth = [], []
    for _, g in df.groupby("unit"):
        k = int(rng.integers(30, len(g)))
        parts.append(g.iloc[:k])
        truth.append(min(60.0, len(g) - k))
    return pd.concat(parts), np.array(truth)


def test_predicts_known_wear_within_a_few_steps() -> None:
    """Check that RMSE on unseen units is far below the spread of the target."""
    model = RULModel(models=("gbm",), cap=60.0, n_estimators=150).fit(fleet())
    test, truth = truncate(fleet(seed=5))
    point = model.predict(test).to_numpy()
    rmse = float(np.sqrt(np.mean((point - truth) ** 2)))
    assert rmse < 0.4 * truth.std()
    assert isinstance(model, RULEstimator)


def test_intervals_cover_most_unseen_units() -> None:
    """Check that 90% conformal intervals hold the truth for most unseen units."""
    model = RULModel(models=("gbm",), cap=60.0, n_estimators=150).fit(fleet(60))
    test, truth = truncate(fleet(60, seed=7))
    point, low, high = model.predict_interval(test)
    assert np.all(low <= point) and np.all(point <= high)
    assert np.mean((truth >= low) & (truth <= high)) >= 0.75


def test_calibration_is_out_of_fold_on_every_unit_at_truncation_points() -> None:
    """Check that every training unit gives ``calibration_cuts`` residuals (all units, the
    same weight each), that the residuals are out-of-fold (larger than in-sample ones), and
    that one fold per unit is refused with a clear parameter error."""
    df = fleet(20)
    model = RULModel(models=("gbm",), cap=60.0, n_estimators=80, calibration_cuts=7).fit(df)
    assert model.n_calibration_ == 20 * 7
    units, times, settings, sensors = model._prepare(df)
    target = np.minimum(rul_targets(units, times, None), 60.0)
    members, cuts = model._out_of_fold(units, settings, sensors, target, np.unique(units), 0)
    assert np.bincount(pd.factorize(units[cuts])[0]).tolist() == [7] * 20
    # the first fold's units are scored by a pipeline fitted without them
    uniq = np.unique(units)
    held = np.isin(units, np.random.default_rng(0).permutation(uniq)[0::5])
    core = model._fit_core(units[~held], None, sensors[~held], target[~held], 1)
    expect = model._members(core, units[held], None, sensors[held], last_only=False)[0]
    np.testing.assert_allclose(members[0, held], expect)
    in_sample = model._members(model.core_, units, settings, sensors, last_only=False)[0]
    assert not np.allclose(members[0, held], in_sample[held])
    with pytest.raises(InvalidParameterError, match="calibration_folds"):
        RULModel(calibration_folds=1).fit(df)


def test_regimes_are_found_and_removed() -> None:
    """Check that three operating regimes are found and a flat sensor is dropped."""
    df = fleet(20, regimes=3)
    norm = ConditionNormalizer().fit(df[["load"]].to_numpy(), df[["temp", "noise", "flat"]])
    assert norm.n_conditions_ == 3
    assert norm.keep_.tolist() == [True, True, False]
    z = norm.transform(df[["load"]].to_numpy(), df[["temp", "noise", "flat"]])
    assert abs(z[:, 1].mean()) < 0.1 and abs(z[:, 1].std() - 1) < 0.1


def test_single_regime_fleet_gets_one_condition() -> None:
    """Check that settings that are only noise do not make regimes."""
    rng = np.random.default_rng(0)
    norm = ConditionNormalizer().fit(rng.normal(size=(500, 2)), rng.normal(size=(500, 1)))
    assert norm.n_conditions_ == 1


def _regimes(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Settings of 3 regimes and 2 sensors (one led by the regime, one noise)."""
    rng = np.random.default_rng(0)
    reg = rng.integers(0, 3, n)
    settings = np.c_[reg * 10.0, reg * 0.3] + rng.normal(0, 0.01, (n, 2))
    return settings, np.c_[100 * reg + rng.normal(0, 1, n), rng.normal(size=n)]


def test_huge_values_keep_a_finite_spread_and_their_regimes() -> None:
    """Check a sensor at 1e160 (its squares overflow) gets a finite per-regime spread, the
    one it has at 1 times 1e160, and still informs the RUL; settings at 1e200 still find the
    3 regimes; ordinary data keeps its exact statistics (before: spread ``inf``, the sensor
    useless though listed as kept, RUL error 1.3 -> 15.1; settings collapsed to 1 regime)."""
    settings, sensors = _regimes()
    plain = ConditionNormalizer().fit(settings, sensors)
    assert plain.scale_.tolist() == ConditionNormalizer().fit(settings, sensors).scale_.tolist()
    for c in range(3):
        part = sensors[plain.kmeans_.predict(
            (settings - plain.settings_mean_) / plain.settings_scale_) == c]
        assert plain.scale_[c].tolist() == np.nanstd(part, axis=0).tolist()  # bit for bit
    huge = ConditionNormalizer().fit(settings, sensors * 1e160)
    assert np.allclose(huge.scale_, plain.scale_ * 1e160, rtol=1e-12, atol=0)
    assert np.isfinite(huge.transform(settings, sensors * 1e160)).all()
    assert ConditionNormalizer().fit(settings * 1e200, sensors).n_conditions_ == 3
    df = fleet(12)
    big = RULModel(models=("gbm",), n_estimators=30, cap=60.0).fit(df.assign(temp=df.temp * 1e160))
    same = RULModel(models=("gbm",), n_estimators=30, cap=60.0).fit(df)
    test = df[df.cycle < 40]
    assert np.allclose(big.predict(test.assign(temp=test.temp * 1e160)), same.predict(test))


def test_non_finite_settings_and_missing_settings_are_named() -> None:
    """Check an ``inf`` setting is refused naming its column and row (before: the 3 regimes
    silently collapsed into 1), and transform(None, ...) on a model that found regimes says
    it needs the settings (before: a bare AxisError)."""
    settings, sensors = _regimes()
    bad = settings.copy()
    bad[5, 0] = np.inf
    with pytest.raises(InvalidParameterError, match="settings column 0 is inf at row 5"):
        ConditionNormalizer().fit(bad, sensors)
    norm = ConditionNormalizer().fit(settings, sensors)
    with pytest.raises(InvalidParameterError, match=r"found 3 operating regimes from 2 setting "
                       r"column\(s\), so it needs those settings .* Got settings=None"):
        norm.transform(None, sensors)
    with pytest.raises(InvalidParameterError, match=r"shape \(300, 2\).*Got \(300, 1\)"):
        norm.transform(settings[:, :1], sensors)


def test_cnn_member_and_stacking_weights() -> None:
    """Check that the two-member ensemble fits, and its weights are non-negative and sum to 1."""
    model = RULModel(
        models=("gbm", "cnn"), cap=60.0, n_estimators=50, cnn_epochs=3, window=10
    ).fit(fleet(20))
    assert model.weights_.shape == (2,)
    assert np.all(model.weights_ >= 0) and model.weights_.sum() == pytest.approx(1.0)
    assert len(model.predict(fleet(5, seed=3))) == 5


def test_missing_columns_are_named() -> None:
    """Check that a missing column is named in the error, at fit and at predict."""
    with pytest.raises(InvalidParameterError, match=r"lacks the column\(s\) \['hours'\]"):
        RULModel(time_column="hours").fit(fleet(5))
    model = RULModel(models=("gbm",), n_estimators=10, cap=60.0).fit(fleet(8))
    with pytest.raises(InvalidParameterError, match=r"\['temp'\]"):
        model.predict(fleet(3).drop(columns="temp"))


def test_bad_parameters_and_order() -> None:
    """Check parameter and call-order errors name the parameter and the call."""
    with pytest.raises(InvalidParameterError, match="'window' parameter of RULModel"):
        RULModel(window=1).fit(fleet(5))
    with pytest.raises(InvalidParameterError, match="'models' parameter"):
        RULModel(models=("svm",)).fit(fleet(5))
    with pytest.raises(NotFittedError, match="call fit"):
        RULModel().predict(fleet(2))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    """Check that a saved model loads with its header and predicts the same."""
    df = fleet(10)
    model = RULModel(models=("gbm",), n_estimators=20, cap=60.0).fit(df)
    path = tmp_path / "m.rul"
    size = model.save(path)
    assert size == path.stat().st_size
    head = read_header(path)
    assert head["format_version"] == FORMAT_VERSION
    assert head["features"][-1] == "age" and len(head["training_data_sha256"]) == 64
    again = load_model(path)
    np.testing.assert_array_equal(again.predict(df), model.predict(df))


def test_foreign_or_future_files_are_refused(tmp_path: Path) -> None:
    """Check that a non-model file and a newer format version are refused by name."""
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello")
    with pytest.raises(ModelFileError, match="not an Edgewise RUL model"):
        load_model(junk)
    future = tmp_path / "future.rul"
    future.write_bytes(b'EDGEWISE-RUL\n{"format_version": 99}\n')
    with pytest.raises(ModelFileError, match="format version 99"):
        load_model(future)


def test_conformal_bands_are_local_to_the_prediction() -> None:
    """Check that a minority region of wide residuals (mid-life) gets wide intervals that
    cover it, while a crowded region of exact predictions (the cap) stays narrow: fixed
    quantile bins that mix them under-cover the wide region."""
    rng = np.random.default_rng(0)
    pred = np.r_[np.full(1200, 60.0), rng.uniform(30, 50, 400), rng.uniform(0, 30, 400)]
    noise = np.r_[np.zeros(1200), rng.normal(0, 8, 400), rng.normal(0, 1, 400)]
    bands = ConformalBands(alpha=0.1).fit(pred, pred + noise)
    mid = rng.uniform(30, 50, 2000)
    y = mid + rng.normal(0, 8, 2000)
    low, high = bands.interval(mid)
    assert 0.85 <= np.mean((y >= low) & (y <= high)) <= 0.95
    cap_low, cap_high = bands.interval(np.array([60.0]))
    assert cap_high[0] - cap_low[0] < 1.0
    with pytest.raises(InvalidParameterError, match="as many truths"):
        ConformalBands().fit(np.arange(3.0), np.arange(2.0))
