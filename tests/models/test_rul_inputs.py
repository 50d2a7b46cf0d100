"""RULModel on inputs it once took silently or crashed on: a sensor a unit never gives,
non-finite values, a time column that is text or missing, a column in two roles, a member
named twice, a negative seed, and a prediction at the cap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.rul import RULModel
from tests.in_process import edgewise_here as edgewise  # in this process
from tests.models.test_rul import fleet


@pytest.fixture(scope="module")
def model() -> RULModel:
    """A small model on 'temp' and 'noise' ('load' and 'flat' are constant: dropped)."""
    return RULModel(models=("gbm",), n_estimators=30, cap=60.0).fit(fleet(8))


def test_a_unit_whose_sensor_has_no_value_is_named_not_filled(model: RULModel) -> None:
    """Check that a unit whose used sensor is missing in every row is refused by name (it was
    filled with a raw 0, a z-score near -600, and its prediction moved without a word), that
    the other units still predict as before, and that a dropped sensor may be missing."""
    now = fleet(3, seed=4)
    gap = now.copy()
    gap.loc[gap.unit == 1, "temp"] = np.nan
    n_rows = int((now.unit == 1).sum())
    assert model.unscorable(gap) == {1: f"sensor 'temp' has no value in any of its {n_rows} "
                                        "row(s)"}
    with pytest.raises(InvalidParameterError, match=r"cannot score unit 1: sensor 'temp'"):
        model.predict(gap)
    with pytest.raises(InvalidParameterError, match=r"cannot score unit 1"):
        model.predict_interval(gap)
    rest = gap[gap.unit != 1]
    np.testing.assert_array_equal(model.predict(rest), model.predict(now[now.unit != 1]))
    flat_gap = now.copy()
    flat_gap.loc[flat_gap.unit == 1, "flat"] = np.nan  # not used by the model
    assert model.unscorable(flat_gap) == {}
    np.testing.assert_array_equal(model.predict(flat_gap), model.predict(now))


def test_training_refuses_a_unit_whose_sensor_has_no_value() -> None:
    """Check that fit names the unit and sensor instead of learning from a made-up level,
    while a column empty in every unit (a dead channel) is only dropped."""
    df = fleet(6)
    df.loc[df.unit == 2, "temp"] = np.nan
    with pytest.raises(InvalidParameterError, match=r"cannot learn from unit 2: sensor 'temp'"):
        RULModel(n_estimators=10, cap=60.0).fit(df)
    dead = fleet(6).assign(spare=np.nan)
    model = RULModel(n_estimators=10, cap=60.0).fit(dead)
    assert "spare_mean" not in model.feature_names_


def test_non_finite_values_are_refused_by_unit(model: RULModel) -> None:
    """Check that an infinite sensor value is named with its unit and time (it was taken,
    with RuntimeWarnings on stderr and a prediction built on inf)."""
    now = fleet(3, seed=4)
    now.loc[now.index[(now.unit == 2).to_numpy()][3], "noise"] = np.inf
    cycle = int(now.loc[now.unit == 2, "cycle"].iloc[3])
    assert model.unscorable(now) == {2: f"sensor 'noise' is inf at cycle {cycle}; give finite "
                                        "numbers (an empty cell for a missing one)"}
    with pytest.raises(InvalidParameterError, match="cannot score unit 2"):
        model.predict(now)
    train = fleet(6)
    train.loc[5, "temp"] = -np.inf
    with pytest.raises(InvalidParameterError, match=r"cannot learn from unit 0: sensor 'temp' "
                                                    r"is -inf at cycle 5"):
        RULModel(n_estimators=10, cap=60.0).fit(train)


@pytest.mark.parametrize("where", ["fit", "predict"])
def test_the_time_column_must_be_numbers(model: RULModel, where: str) -> None:
    """Check that a text time column is refused (it sorted '10c' before '2c': wrong answers
    at predict, a TypeError at fit) and so is a missing time (NaN sorted last, silently)."""
    def run(df: pd.DataFrame) -> None:
        if where == "fit":
            RULModel(n_estimators=10, cap=60.0).fit(df)
        else:
            model.predict(df)

    text = fleet(6 if where == "fit" else 2, seed=4)
    text["cycle"] = text["cycle"].astype(str) + "c"
    with pytest.raises(InvalidParameterError, match=r"time column 'cycle' must be numeric.*"
                                                    r"row 1 has '0c'"):
        run(text)
    gap = fleet(6 if where == "fit" else 2, seed=4)
    gap["cycle"] = gap["cycle"].astype(float)
    gap.loc[4, "cycle"] = np.nan
    with pytest.raises(InvalidParameterError, match=r"time column 'cycle' has no value in "
                                                    r"row 5"):
        run(gap)


def test_columns_members_and_seed_are_checked_before_fitting() -> None:
    """Check that a column in two roles, a member named twice and a negative seed are refused
    by name (they gave 'column label is not unique', a model file whose every prediction
    crashed, and a numpy traceback)."""
    df = fleet(5)
    with pytest.raises(InvalidParameterError, match=r"'unit' is given to RULModel as the unit "
                                                    r"column and as a sensor column"):
        RULModel(sensor_columns=["temp", "unit"]).fit(df)
    with pytest.raises(InvalidParameterError, match=r"'temp' is given to RULModel as a sensor "
                                                    r"column and as a sensor column"):
        RULModel(sensor_columns=["temp", "temp"]).fit(df)
    with pytest.raises(InvalidParameterError, match=r"'models' parameter.*each member once"):
        RULModel(models=("gbm", "gbm")).fit(df)
    with pytest.raises(InvalidParameterError,
                       match=r"'random_state' parameter of RULModel must be an int in the "
                             r"range \[0, 2147483647\]"):
        RULModel(random_state=-1).fit(df)


def test_interval_is_for_the_capped_rul_and_says_where_it_is_open(model: RULModel) -> None:
    """Check that no bound passes the cap and that a prediction or bound at the cap is
    flagged as open (a one-row unit printed '125.0 [120.0, 125.35]', though its true RUL
    may be anything above the cap)."""
    young = fleet(4, seed=9).groupby("unit").head(1)
    point, low, high = model.predict_interval(young)
    assert np.all(high <= model.cap) and np.all(low <= point) and np.all(point <= high)
    assert model.open_above(high).tolist() == (high == model.cap).tolist()
    assert model.open_above(high).any()
    assert model.open_above(np.array([0.0, 59.9, 60.0])).tolist() == [False, False, True]
    assert not RULModel(cap=None).open_above(np.array([1e9])).any()


def test_a_frame_with_no_rows_gives_empty_results(model: RULModel) -> None:
    """Check that a frame left empty once the unscorable units are dropped (as
    :meth:`RULModel.unscorable` suggests) gives empty results (it raised a bare IndexError)."""
    now = fleet(3, seed=4).assign(temp=np.nan)  # no unit can be scored
    ok = now[~now["unit"].isin(model.unscorable(now))]
    assert ok.empty
    point, low, high = model.predict_interval(ok)
    assert (len(point), len(low), len(high)) == (0, 0, 0)
    assert model.predict(ok).index.name == "unit" and model.predict(ok).empty
    feats = model.features(ok)
    assert feats.empty and list(feats.columns) == model.feature_names_


def _device_features(spec: dict, unit: pd.DataFrame) -> np.ndarray:
    """Window features of one unit's last row as a device computes them from
    ``rul_inputs``, row by row: values carried forward, never back; a setting before its
    first value its regime is unknown, and every sensor's z = 0 there; a sensor before its
    first value z = 0."""
    from edgewise.models.windows import window_features

    norm = spec["normalisation"]
    settings = unit[spec["condition_columns"]].ffill().to_numpy(dtype=float)
    unknown = np.zeros(len(unit), dtype=bool)
    if norm["regime_centers"] is not None:
        unknown = np.isnan(settings).any(axis=1)
        std = (settings - np.asarray(norm["settings_mean"])) / np.asarray(norm["settings_scale"])
        centres = np.asarray(norm["regime_centers"])
        dist = ((np.nan_to_num(std)[:, None, :] - centres[None]) ** 2).sum(axis=2)
        regime = dist.argmin(axis=1)
    else:
        regime = np.zeros(len(unit), dtype=int)
    raw = unit[spec["sensors"]].ffill().to_numpy(dtype=float)
    z = (raw - np.asarray(norm["mean"])[regime]) / np.asarray(norm["scale"])[regime]
    z[unknown] = np.nan
    z = np.where(np.isnan(z), 0.0, z)
    return window_features(z, spec["window"])[-1]


def test_python_features_are_what_the_device_computes_from_rul_inputs() -> None:
    """Check that the features RULModel predicts from equal those a device computes online
    from ``rul_inputs`` (the JSON given with an exported model) for units whose first rows
    lack a sensor or the setting: Python filled those rows backwards with the first later
    value, which a device scoring rows as they come cannot know ('carried forward within
    the unit', the JSON said), so its features, and the prediction, differed."""
    from edgewise.edge.export_rul import rul_inputs

    model = RULModel(condition_columns=["load"], n_estimators=30, cap=60.0, window=20).fit(
        fleet(8, regimes=2))
    spec = rul_inputs(model)
    assert spec["normalisation"]["regime_centers"] is not None  # regimes: settings matter
    now = fleet(3, seed=4, regimes=2)
    rows = now.index[(now.unit == 1).to_numpy()]
    now.loc[rows[:25], "temp"] = np.nan  # the sensor's first 25 rows (past the window)
    # a gap of 3 rows inside one regime: a value carried into another regime is hundreds of
    # z off, and the model refuses a unit with such a row (the whole-history slope reads it)
    load = now.loc[rows, "load"].to_numpy()
    gap = next(i for i in range(40, len(rows) - 3) if (load[i - 1:i + 3] == load[i]).all())
    now.loc[rows[gap:gap + 3], "temp"] = np.nan
    now.loc[rows[:4], "load"] = np.nan  # the setting's first rows
    got = model.features(now)
    for unit, part in now.groupby("unit"):
        np.testing.assert_allclose(got.loc[unit].to_numpy(),
                                   _device_features(spec, part.sort_values("cycle")),
                                   rtol=1e-6, atol=1e-9, err_msg=f"unit {unit}")
    assert "before the sensor's first value in the unit z is 0" in spec["normalisation"]["z"]


def test_too_few_residuals_leave_an_uncapped_interval_open(tmp_path: Path) -> None:
    """Check a model without a cap calibrated on fewer than 19 residuals (4 units of 4 rows)
    has no upper bound (inf, flagged by open_above) and a lower one of 0, not the largest
    and smallest residual; ``predict rul`` prints it open, and ``null`` in JSON."""
    df = pd.DataFrame({"unit": np.repeat(np.arange(4), 4), "cycle": np.tile(np.arange(4), 4),
                       "temp": np.tile([1.0, 2.0, 4.0, 8.0], 4)
                       + np.random.default_rng(0).normal(0, 0.1, 16)})
    model = RULModel(n_estimators=5, cap=None, window=3).fit(df)
    assert model.n_calibration_ == 16
    point, low, high = model.predict_interval(df)
    assert np.isposinf(high).all() and (low == 0).all() and np.isfinite(point).all()
    assert model.open_above(high).all() and not model.open_above(point).any()
    model.save(tmp_path / "m.rul")
    df.to_csv(tmp_path / "h.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(tmp_path / "m.rul"), "--data",
                    str(tmp_path / "h.csv"), "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["predictions"]
    assert [(r["low"], r["high"], r["high_open"]) for r in rows] == [(0.0, None, True)] * 4
    shown = edgewise("predict", "rul", "--model", str(tmp_path / "m.rul"), "--data",
                     str(tmp_path / "h.csv"))
    assert shown.returncode == 0 and "[0.0, open)" in shown.stdout, shown.stderr


def test_unit_ids_of_mixed_types_are_learned_as_predict_takes_them() -> None:
    """Check that fit takes unit ids of mixed types (5 and 'five', as a hand-made frame may
    hold) as predict does: np.unique raised a raw TypeError comparing str and int."""
    data = fleet(8)
    data["unit"] = data["unit"].astype(object)
    first = data["unit"].iloc[0]
    data.loc[data["unit"] == first, "unit"] = "first"
    m = RULModel(models=("gbm",), n_estimators=10, cap=60.0).fit(data)
    assert m.n_units_ == 8
    assert "first" in m.predict(data).index
