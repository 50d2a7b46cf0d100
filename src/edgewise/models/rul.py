"""Remaining useful life from run-to-failure histories: boosted trees + a 1D-CNN, with intervals.

:class:`RULModel` takes one table of rows per unit (a unit column, a time column,
optional operating-setting columns, sensor columns). At fit time every unit's history is
assumed to end at failure, so each row's target is ``min(cap, last time - time)``, the
piecewise-linear RUL of the C-MAPSS literature. The pipeline:

1. :class:`~edgewise.models.conditions.ConditionNormalizer`: find operating regimes from
   the setting columns, z-score sensors per regime, drop sensors with no information;
2. :func:`~edgewise.models.windows.window_features` (level, trend, variability per
   sensor over a trailing window) into a LightGBM regressor, and
   :func:`~edgewise.models.windows.window_sequences` into a small
   :class:`~edgewise.models.cnn.CNNRegressor`; the prediction is their weighted mean,
   with non-negative weights fitted on the held-out calibration units (below);
3. :class:`~edgewise.models.conformal.ConformalBands` calibrated the way the model is used:
   the *training units* are split into ``calibration_folds`` groups; for each group the
   pipeline is fitted on the other units and scores the group's units at
   ``calibration_cuts`` random truncation points each (a prediction at row ``t`` sees only
   rows up to ``t``, so it is the prediction for the history cut at ``t``). Every unit
   then gives the same number of out-of-fold residuals (as a fleet of truncated test
   histories gives one per unit), long-lived units do not dominate, and all units, not a
   fifth, calibrate. The stacking weights use every out-of-fold row. Finally the
   pipeline is refitted on every unit (so intervals are slightly conservative).
   Lower bounds are calibrated on the cuts whose (capped) truth is below the cap only: a
   truth at the cap is never below a lower bound, and the many early-life cuts where
   truth and prediction both sit at the cap (36-39% of the cuts on C-MAPSS FD001) otherwise made
   the interval of a prediction at the cap ``[cap, cap]`` or nearly, which held the truth
   of such FD001 test units 11 times in 21 (seeds 0-4; 21 in 21 now).

Predictions are made at the last row of each unit ("its current state"). A value missing
in some rows is carried forward within its unit (never back: a device scoring rows as they
come cannot see a later value, and an exported model must see what Python computed); in the
rows before a sensor's first value in the unit its z-score is 0, its regime's mean; in
the rows before a setting's first value the unit's regime is not known, so every sensor's
z-score there is 0 (when the model found several regimes: a stand-in for the setting, such
as its training mean, lies between the regimes and would score the sensors against an
arbitrary one), and in training such rows take no part in finding the regimes or their
statistics. A unit in which a sensor the
model uses has no value at all, or a value that is not finite, is refused by name
(:meth:`RULModel.unscorable` lists such units with why), never filled with a made-up level.
Predictions and intervals are of the RUL capped at ``cap`` (:meth:`RULModel.open_above`
tells which reached it, "at least ``cap``").

Two more kinds of unit are refused by name (listed by :meth:`RULModel.unscorable`), as
their prediction would be a plausible number resting on nothing:

* **out of the training domain**: in any row of the unit's history (the whole-history
  slopes read every row) a used sensor's z-score (per operating regime, from the training
  data) is beyond :data:`Z_LIMIT` (20) and beyond twice the largest one in training, e.g.
  units of another fleet or operating condition (C-MAPSS FD002 scored by an FD001 model
  reach z in the thousands; FD001's own test units stay below 5), or one glitch reading.
  The reason names the sensor, the value, its row's time and the training range;
* **steps the model was not trained on**: the model counts rows for a unit's age and
  slopes but time-column units for its RUL, so when every training unit steps its time
  column by the same amount (``time_step_``, 1 for C-MAPSS cycles) a unit with another
  step (a gap, a repeated time) is refused, naming the step seen and the one expected.
  Training data with uneven steps records no step and checks none;
* **a history that starts late**: the unit's age and whole-history slopes come from the
  rows given (as on a device, which counts them), not from the time column, so when every
  training unit starts at the same time (within one step; ``start_range_``, cycle 1 for
  C-MAPSS) a unit whose first row comes more than one step later (the last 60 cycles of
  an export) would be scored as a younger unit, silently wrong: the 37 FD001 test units
  of 150+ cycles, each given only its last 60 rows renumbered from cycle 1 (so this check
  passes them), score RMSE 15.9 against 7.0 from their whole histories (the ``bench
  cmapss`` model, mean of seeds 0-4, against the true RUL capped at 125; 16.1 against 7.3
  uncapped). It is refused, naming its first time and the training start. A store's
  device history is numbered from its first stored row, so this check cannot see one
  trimmed by retention: the store records such cuts (``Store.trimmed_before``), and the
  RUL route and ``predict rul`` refuse those devices.
  Training units that start at different times (timestamps) record no start and check
  none.

Models saved before these checks were recorded load and score as before, unchecked.

>>> rng = np.random.default_rng(0)
>>> rows = []
>>> for unit in range(30):
...     life = int(rng.integers(80, 140))
...     for t in range(life):
...         wear = np.exp((t - life) / 25.0)
...         rows.append((unit, t, 1.0 + wear + rng.normal(0, 0.05), rng.normal()))
>>> df = pd.DataFrame(rows, columns=["unit", "cycle", "temp", "noise"])
>>> model = RULModel(models=("gbm",), n_estimators=60, cap=60.0).fit(df)
>>> point, low, high = model.predict_interval(df[df.cycle < 50])
>>> bool(np.all(low <= point) and np.all(point <= high)), len(point)
(True, 30)
"""

from __future__ import annotations

import hashlib
import math
import pickle
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from edgewise.errors import EdgewiseError, InvalidParameterError, NotFittedError
from edgewise.models._words import first_and_more
from edgewise.models.cnn import CNNRegressor
from edgewise.models.conditions import ConditionNormalizer
from edgewise.models.conformal import ConformalBands
from edgewise.models.model_file import read_model_file, read_model_header, write_model_file
from edgewise.models.windows import feature_names, window_features, window_sequences
from edgewise.params import Interval, OneOf, validate_params

__all__ = ["FORMAT_VERSION", "GLITCH_ROWS", "MIN_CAP_STEPS", "Z_LIMIT", "ModelFileError",
           "RULModel", "load_model", "rul_targets"]

#: Version of the file written by :meth:`RULModel.save`; bumped when the layout changes.
#: 2: intervals from neighbourhood conformal bands fitted out-of-fold (v1 files hold binned
#: bands this build cannot use; retrain them).
FORMAT_VERSION = 2
_MAGIC = b"EDGEWISE-RUL\n"
#: A unit whose used sensor, in any row of its history, is more than this many standard
#: deviations from its regime's training mean (and more than twice the largest |z| of
#: training) is out of the model's domain and refused (:meth:`RULModel.unscorable`).
Z_LIMIT = 20.0
#: A run of at most this many rows in which one used sensor is out of the model's domain, with
#: rows in the domain before and after it, is a glitch (:meth:`RULModel.pass_over_glitches`).
GLITCH_ROWS = 3
#: The fewest of the training data's time steps a ``cap`` may span (:meth:`RULModel.fit`):
#: the cap is in the time column's units, so 125 over epoch seconds a minute apart was
#: about 2 steps, and the model learned nothing before a unit's last 2 minutes.
MIN_CAP_STEPS = 10


class ModelFileError(EdgewiseError, ValueError):
    """A model file is not an Edgewise RUL model, or of a format version this build cannot read."""


def rul_targets(units: np.ndarray, times: np.ndarray, cap: float | None) -> np.ndarray:
    """Remaining steps to each unit's last row, capped at ``cap``.

    >>> rul_targets(np.array([1, 1, 1, 2, 2]), np.array([1, 2, 3, 5, 6]), cap=1.0).tolist()
    [1.0, 1.0, 0.0, 1.0, 0.0]
    """
    last = pd.Series(times).groupby(np.asarray(units)).transform("max").to_numpy()
    rul = (last - np.asarray(times)).astype(float)
    return np.minimum(rul, cap) if cap is not None else rul


def _refuse_gaps(gaps: dict[Any, str], verb: str, advice: str) -> None:
    """Raise naming the first unit of ``gaps`` (unit -> why) RULModel cannot ``verb``."""
    if gaps:
        unit, why = next(iter(gaps.items()))
        more = f" (and {len(gaps) - 1} more unit(s))" if len(gaps) > 1 else ""
        raise InvalidParameterError(f"RULModel cannot {verb} unit {unit!r}{more}: {why}. {advice}")


class RULModel:
    """Predict the remaining useful life of each unit, with a conformal interval.

    Parameters
    ----------
    unit_column, time_column
        Which columns name the unit and order its rows.
    condition_columns
        Operating-setting columns used to find regimes; ``None`` uses no regimes.
    sensor_columns
        Sensor columns; ``None`` means every numeric column that is none of the above.
    cap
        Targets are capped here (early life is "healthy", not "far from failure").
    window
        Rows per trailing window.
    models
        Which members to fit: ``"gbm"`` (LightGBM on window features) and/or ``"cnn"``.
    alpha
        Intervals aim to hold the truth ``1 - alpha`` of the time.
    calibration_folds
        Groups of training units for the out-of-fold calibration (cross-fitting); each
        costs one extra fit on the other groups.
    calibration_cuts
        Random truncation points scored per held-out unit (fewer when its history is short).
    n_estimators, learning_rate
        LightGBM boosting rounds and step.
    cnn_epochs
        Passes of the CNN over its training windows.
    cnn_max_rows
        The CNN trains on at most this many windows (a random subset; neighbouring
        windows overlap almost entirely, so little is lost and big fleets stay cheap).
    n_threads
        CPU threads for LightGBM, torch and the operating regimes' KMeans.
    random_state
        Seed of every random choice (split, trees, network).
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "unit_column": str,
        "time_column": str,
        "condition_columns": [list, tuple, None],
        "sensor_columns": [list, tuple, None],
        "cap": [Interval(float, 0.0, math.inf, closed="neither"), None],
        "window": Interval(int, 2, None),
        "models": [tuple, list],
        "alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "calibration_folds": Interval(int, 2, None),
        "calibration_cuts": Interval(int, 1, None),
        "n_estimators": Interval(int, 1, None),
        "learning_rate": Interval(float, 0.0, 1.0, closed="right"),
        "cnn_epochs": Interval(int, 1, None),
        "cnn_max_rows": Interval(int, 1, None),
        "n_threads": Interval(int, 1, None),
        # torch, numpy and k-means all take it; seed + 1 + fold stays below 2**32
        "random_state": [Interval(int, 0, 2**31 - 1), None],
    }

    def __init__(
        self,
        unit_column: str = "unit",
        time_column: str = "cycle",
        condition_columns: list[str] | tuple[str, ...] | None = None,
        sensor_columns: list[str] | tuple[str, ...] | None = None,
        cap: float | None = 125.0,
        window: int = 30,
        models: tuple[str, ...] = ("gbm",),
        alpha: float = 0.1,
        calibration_folds: int = 5,
        calibration_cuts: int = 10,
        n_estimators: int = 400,
        learning_rate: float = 0.03,
        cnn_epochs: int = 15,
        cnn_max_rows: int = 20_000,
        n_threads: int = 1,
        random_state: int | None = 0,
    ) -> None:
        self.unit_column = unit_column
        self.time_column = time_column
        self.condition_columns = condition_columns
        self.sensor_columns = sensor_columns
        self.cap = cap
        self.window = window
        self.models = models
        self.alpha = alpha
        self.calibration_folds = calibration_folds
        self.calibration_cuts = calibration_cuts
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.cnn_epochs = cnn_epochs
        self.cnn_max_rows = cnn_max_rows
        self.n_threads = n_threads
        self.random_state = random_state

    # -- input checks -------------------------------------------------------------------
    def _check_columns(self, X: pd.DataFrame, columns: list[str]) -> None:
        if not isinstance(X, pd.DataFrame):
            raise InvalidParameterError(
                f"RULModel needs a pandas DataFrame of histories. Got {type(X).__name__} instead."
            )
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise InvalidParameterError(
                f"The data lacks the column(s) {missing} that RULModel needs; "
                f"present: {sorted(map(str, X.columns))}."
            )
        twice = [c for c in dict.fromkeys(columns) if int((X.columns == c).sum()) > 1]
        if twice:
            raise InvalidParameterError(
                f"The data has the column(s) {twice} more than once; give each column once."
            )
        self._check_units(X[self.unit_column])
        self._check_times(X[self.time_column])
        bad = [c for c in columns[2:] if not pd.api.types.is_numeric_dtype(X[c])]
        if bad:
            raise InvalidParameterError(
                f"Column(s) {bad} must be numeric for RULModel: {_first_text(X[bad[0]])}. "
                "Give numbers (an empty cell for a missing one).", field=bad[0],
                value=str(X[bad[0]].dtype))

    def _check_units(self, units: pd.Series) -> None:
        """Every row names its unit: an empty id (NaN, None) is refused by row, as the
        row's history cannot be told (it failed as 'bad operand type for unary ~')."""
        empty = units.isna().to_numpy()
        if empty.any():
            at = int(np.flatnonzero(empty)[0])
            raise InvalidParameterError(
                f"The unit column {self.unit_column!r} has no value in row {at + 1} "
                f"({int(empty.sum())} such row(s)); every row needs the unit it belongs to.",
                field="X", value=at + 1)

    def _check_times(self, times: pd.Series) -> None:
        """The time column orders each unit's rows: numbers, every one of them finite."""
        name = self.time_column
        if not pd.api.types.is_numeric_dtype(times) or pd.api.types.is_bool_dtype(times):
            num = pd.to_numeric(times, errors="coerce")
            at = int(np.flatnonzero((num.isna() & times.notna()).to_numpy())[0]) if (
                num.isna() & times.notna()).any() else 0
            raise InvalidParameterError(
                f"The time column {name!r} must be numeric (it orders each unit's rows, and "
                f"text sorts '10' before '2'); row {at + 1} has {times.iloc[at]!r}."
            )
        values = times.to_numpy(dtype=float)
        if not np.isfinite(values).all():
            at = int(np.flatnonzero(~np.isfinite(values))[0])
            what = "no value" if np.isnan(values[at]) else f"{values[at]}"
            raise InvalidParameterError(
                f"The time column {name!r} has {what} in row {at + 1}; every row needs a "
                "finite time that orders it within its unit."
            )

    def _check_roles(self) -> None:
        """Each column plays one role: the unit, the time, a condition or a sensor."""
        roles = [("the unit column", self.unit_column), ("the time column", self.time_column),
                 *(("a condition column", c) for c in self.conditions_),
                 *(("a sensor column", c) for c in self.sensors_)]
        seen: dict[str, str] = {}
        for role, column in roles:
            if column in seen:
                raise InvalidParameterError(
                    f"Column {column!r} is given to RULModel as {seen[column]} and as {role}; "
                    "each column can be the unit, the time, a condition or a sensor, once."
                )
            seen[column] = role

    def _columns(self) -> list[str]:
        return [self.unit_column, self.time_column, *self.conditions_, *self.sensors_]

    def _frame(
        self, X: pd.DataFrame, needed: list[str] | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The model's columns sorted by unit and time, and the settings and sensors as floats.

        Only the ``needed`` columns (default: all of them) must be in ``X``; the others are
        left empty (NaN), whatever ``X`` holds under their names.
        """
        columns = self._columns()
        needed = columns if needed is None else needed
        self._check_columns(X, needed)
        df = X[needed].sort_values([self.unit_column, self.time_column], kind="stable")
        if len(needed) < len(columns):
            df = df.reindex(columns=columns)
        return df, df[[*self.conditions_, *self.sensors_]].astype(float)

    @staticmethod
    def _check_y(X: pd.DataFrame, y: Any) -> np.ndarray:
        """``y`` as floats, one finite number per row of ``X`` (in ``X``'s row order: its
        index is not used, so it may repeat)."""
        try:
            arr = np.asarray(y, dtype=float)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(
                f"RULModel.fit's y must be numbers, the remaining steps of each row of X. Got "
                f"{type(y).__name__}: {exc}.", field="y", value=type(y).__name__) from None
        if arr.ndim != 1 or len(arr) != len(X):
            raise InvalidParameterError(
                f"RULModel.fit's y must hold one remaining-steps value per row of X, in X's "
                f"row order: X has {len(X)} rows, y has shape {arr.shape}.", field="y",
                value=list(arr.shape))
        bad = np.flatnonzero(~np.isfinite(arr))
        if len(bad):
            raise InvalidParameterError(
                f"RULModel.fit's y must be finite: y[{int(bad[0])}] is {arr[bad[0]]} "
                f"({len(bad)} such value(s)). Give every row's remaining steps.", field="y",
                value=float(arr[bad[0]]))
        return arr

    def required_columns(self) -> list[str]:
        """The columns a fitted model needs in the data it scores: the unit and time columns
        and :meth:`used_columns`. A sensor it learned nothing from (constant, or empty in
        every training row) may be absent.

        >>> rng = np.random.default_rng(0)
        >>> df = pd.DataFrame({"unit": np.repeat(np.arange(6), 40), "cycle": np.tile(
        ...     np.arange(40), 6), "temp": rng.normal(size=240), "flat": 1.0})
        >>> RULModel(n_estimators=5).fit(df).required_columns()
        ['unit', 'cycle', 'temp']
        """
        self._fitted()
        return [self.unit_column, self.time_column, *self._used()]

    def _gaps(self, df: pd.DataFrame, vals: pd.DataFrame, used: list[str]) -> dict[Any, str]:
        """Units whose rows cannot be used, with why: one of the ``used`` columns is not
        finite in some row, or has no value in any of the unit's rows (there is nothing to
        carry forward, and any stand-in would be a guess the prediction silently rests on).
        """
        out: dict[Any, str] = {}
        if not used:
            return out
        units = df[self.unit_column].to_numpy()
        part = vals[used].to_numpy()
        role = {c: "setting" for c in self.conditions_} | {c: "sensor" for c in self.sensors_}
        rows, cols = np.nonzero(np.isinf(part))
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            unit = _plain(units[r])
            if unit not in out:
                out[unit] = (f"{role[used[c]]} {used[c]!r} is {part[r, c]} at "
                             f"{self.time_column} {_plain(df[self.time_column].iloc[r])}; give "
                             "finite numbers (an empty cell for a missing one)")
        groups = pd.DataFrame(np.isnan(part), columns=used).groupby(units, sort=False)
        empty, sizes = groups.all(), groups.size()
        for unit, flags, n in zip(empty.index, empty.to_numpy(), sizes.to_numpy(), strict=True):
            unit = _plain(unit)
            if unit not in out and flags.any():
                column = used[int(np.flatnonzero(flags)[0])]
                out[unit] = (f"{role[column]} {column!r} has no value in any of its {int(n)} "
                             "row(s)")
        return out

    def _arrays(
        self, df: pd.DataFrame, vals: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """Units, times, settings and sensors, NaNs carried forward within a unit (never
        back: a device scores rows as they come and cannot see a later value). What stays
        NaN (rows before a column's first value in the unit) is filled where the values
        are used: a sensor's z-score is 0 (:func:`_z`), and so is every sensor's in a row
        whose regime is unknown (a setting NaN). A column with no value in a unit is
        refused before this, where it matters; elsewhere it is 0."""
        by = df[self.unit_column].to_numpy()
        vals = vals.groupby(by).ffill()
        # a column with no value in the unit is not used (else refused): a plain 0
        vals = vals.mask(vals.isna().groupby(by).transform("all"), 0.0)
        settings = vals[self.conditions_].to_numpy() if self.conditions_ else None
        return by, df[self.time_column].to_numpy(), settings, vals[self.sensors_].to_numpy()

    def _prepare(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sorted units, times, settings and sensors of rows the fitted model can score
        (raises naming the first unit it cannot; see :meth:`unscorable`)."""
        df, vals = self._frame(X, self.required_columns())
        _refuse_gaps(self._gaps(df, vals, self._used()), "score",
                     "Leave such units out; RULModel.unscorable(X) lists them with why.")
        arrays = self._arrays(df, vals)
        _refuse_gaps(self._off_domain(*arrays), "score",
                     "Leave such units out; RULModel.unscorable(X) lists them with why.")
        return arrays

    def _off_domain(self, units: np.ndarray, times: np.ndarray, settings: np.ndarray | None,
                    sensors: np.ndarray) -> dict[Any, str]:
        """Units whose history starts after the training units' did, with a time step the
        model was not trained on, or whose used sensors lie far outside the training data
        in any row (see the module doc), with why. Models saved before
        ``start_range_``/``time_step_``/``z_range_`` were recorded are not checked for
        what they lack."""
        out: dict[Any, str] = {}
        step = getattr(self, "time_step_", None)
        z_range = getattr(self, "z_range_", None)
        start = getattr(self, "start_range_", None)
        if len(units) == 0 or (step is None and z_range is None and start is None):
            return out
        slices = self._unit_slices(units)
        name = self.time_column
        if step is not None:
            for sl in slices:
                t = times[sl].astype(float)
                bad = np.flatnonzero(~np.isclose(np.diff(t), step, rtol=1e-9, atol=0.0))
                if len(bad):
                    i = int(bad[0])
                    out[_plain(units[sl.start])] = (
                        f"its {name!r} steps by {t[i + 1] - t[i]:g} (from {_plain(times[sl][i])}"
                        f" to {_plain(times[sl][i + 1])}); the model was trained on steps of "
                        f"{step:g} (it counts rows for age and trends, {name} for the RUL): "
                        f"give every step, or resample to steps of {step:g}")
        if start is not None:
            late = self._late_starts(units, times, slices, start, step)
            out |= {u: why for u, why in late.items() if u not in out}
        if z_range is None:
            return out
        norm = self.core_["norm"]
        kept = np.flatnonzero(norm.keep_)
        names = [self.sensors_[k] for k in kept]
        z = _z(norm, settings, sensors)
        value_range = getattr(self, "value_range_", {})
        for sl in slices:
            unit = _plain(units[sl.start])
            if unit in out:
                continue
            # every row: the whole-history slope reads them all (one glitch in the first
            # rows of a unit moved its RUL 13 -> 24 when only the last window was checked)
            for j, sensor in enumerate(names):
                lo, hi = z_range[sensor]
                limit = self._z_limit(sensor)
                col = np.abs(z[sl, j])
                if col.max() > limit:
                    r = sl.start + int(np.argmax(col))
                    vlo, vhi = value_range.get(sensor, (math.nan, math.nan))
                    out[unit] = (
                        f"sensor {sensor!r} is {sensors[r, kept[j]]:g} at {name} "
                        f"{_plain(times[r])}, {z[r, j]:+.4g} standard deviations from its "
                        f"regime's training mean (training values {vlo:g} to {vhi:g}, "
                        f"z {lo:+.3g} to {hi:+.3g}; beyond {limit:g} is out of the model's "
                        "domain: another fleet, operating condition or unit of measure)")
                    break
        return out

    def pass_over_glitches(
        self, X: pd.DataFrame
    ) -> tuple[pd.DataFrame, dict[Any, list[dict[str, Any]]]]:
        """``X`` with each unit's lone glitch readings blanked, and the readings blanked.

        A glitch is a run of at most :data:`GLITCH_ROWS` rows in which a used sensor is out
        of the model's domain (what :meth:`unscorable` refuses: beyond :data:`Z_LIMIT` and
        twice the largest training z-score), with rows of it in the domain both before and
        after (a unit that starts or ends out of the domain, or stays there longer, is no
        glitch: it may be another fleet or a real excursion). Its readings are blanked, so the
        sensor's last value before the glitch is carried over it, as for any missing reading.
        A unit is passed over this way only when it holds at most one glitch reading per 100
        rows (at least one) and nothing else makes it unscorable; any other unit is left as
        it was, for :meth:`unscorable` to name. The second value maps each unit with blanked
        readings to them, as ``{"sensor", "row", time column, "value", "z"}`` (``row``: its
        position in ``X``).

        One wild reading anywhere in a long history refuses the unit (its whole-history
        trends read every row), and a store's history cannot be edited; the RUL route and
        ``edgewise predict rul`` call this first and report what it blanked.

        >>> rng = np.random.default_rng(1)
        >>> df = pd.DataFrame({"unit": np.repeat(np.arange(6), 60), "cycle": np.tile(
        ...     np.arange(60), 6), "temp": np.tile(np.linspace(0, 3, 60), 6)
        ...     + rng.normal(0, 0.1, 360)})
        >>> model = RULModel(n_estimators=5, calibration_folds=2, window=10).fit(df)
        >>> one = df[df.unit == 0].copy()
        >>> one.loc[one.cycle == 30, "temp"] = 1e6
        >>> list(model.unscorable(one))
        [0]
        >>> clean, passed = model.pass_over_glitches(one)
        >>> model.unscorable(clean), [(g["sensor"], g["cycle"], g["value"]) for g in passed[0]]
        ({}, [('temp', 30, 1000000.0)])
        """
        self._fitted()
        passed: dict[Any, list[dict[str, Any]]] = {}
        if getattr(self, "z_range_", None) is None or len(X) == 0:
            return X, passed
        plain = X.reset_index(drop=True)  # the sorted frame's index is then X's row position
        df, vals = self._frame(plain, self.required_columns())
        gaps = self._gaps(df, vals, self._used())
        units, times, settings, sensors = self._arrays(df, vals)
        norm = self.core_["norm"]
        kept = np.flatnonzero(norm.keep_)
        z = _z(norm, settings, sensors)
        raw = vals[self.sensors_].to_numpy()
        position = df.index.to_numpy()
        blank: dict[Any, list[tuple[int, int]]] = {}  # unit: (sorted row, sensor index)
        for sl in self._unit_slices(units):
            unit = _plain(units[sl.start])
            cells = None if unit in gaps else self._glitch_cells(z[sl], raw[sl], kept)
            if cells and len(cells) <= max(1, (sl.stop - sl.start) // 100):
                blank[unit] = [(sl.start + r, k) for r, k in cells]
        if not blank:
            return X, passed
        rows = np.array([r for cells in blank.values() for r, _ in cells])
        cols = np.array([k for cells in blank.values() for _, k in cells])
        cleaned = raw.copy()
        cleaned[rows, cols] = np.nan
        vals = vals.copy()
        vals[self.sensors_] = cleaned
        still = self._off_domain(*self._arrays(df, vals))
        out = X.copy()
        for unit, cells in blank.items():
            if unit in still:  # blanking does not make it scorable: unscorable names why
                continue
            for r, k in cells:
                sensor = self.sensors_[k]
                j = int(np.flatnonzero(kept == k)[0])
                if not pd.api.types.is_float_dtype(out[sensor].dtype):
                    out[sensor] = out[sensor].astype(float)
                out.iloc[int(position[r]), out.columns.get_loc(sensor)] = np.nan
                passed.setdefault(unit, []).append({
                    "sensor": sensor, "row": int(position[r]),
                    self.time_column: _plain(times[r]), "value": float(raw[r, k]),
                    "z": float(z[r, j])})
        return (out, passed) if passed else (X, passed)

    def _z_limit(self, sensor: str) -> float:
        """The |z| beyond which ``sensor`` is out of the model's domain: :data:`Z_LIMIT`, or
        twice the largest |z| of training where that is more."""
        lo, hi = self.z_range_[sensor]
        return max(Z_LIMIT, 2 * max(abs(lo), abs(hi)))

    def _glitch_cells(self, z: np.ndarray, raw: np.ndarray,
                      kept: np.ndarray) -> list[tuple[int, int]] | None:
        """One unit's glitch readings (row, sensor index) by :meth:`pass_over_glitches`'
        rule, or ``None`` when a used sensor leaves the domain otherwise (at either end,
        or for longer)."""
        cells: list[tuple[int, int]] = []
        n = len(z)
        for j, k in enumerate(kept):
            out = np.abs(z[:, j]) > self._z_limit(self.sensors_[k])
            if not out.any():
                continue
            idx = np.flatnonzero(out)
            for run in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1):
                if run[0] == 0 or run[-1] == n - 1 or len(run) > GLITCH_ROWS:
                    return None
                cells += [(int(r), int(k)) for r in run if not np.isnan(raw[r, k])]
        return cells

    def _late_starts(self, units: np.ndarray, times: np.ndarray, slices: list[slice],
                     start: tuple[float, float], step: float | None) -> dict[Any, str]:
        """Units whose history starts more than one ``step`` after every training unit's
        did (``start_range_``), with why: the model takes a unit's age and whole-history
        slopes from the rows it is given, so a history missing its first rows (an export
        of recent rows) is scored as a younger unit's, silently wrong (a store's history
        trimmed by retention is numbered from 1 again: the store's ``trimmed_before`` says
        so instead). One step is let pass: cycles counted from 0 or from 1 (a store
        counts readings from 1) are the same history."""
        lo, hi = start
        name = self.time_column
        since = f"{name} {_num(lo)}" if lo == hi else f"{name} {_num(lo)} to {_num(hi)}"
        out: dict[Any, str] = {}
        for sl in slices:
            first = float(times[sl.start])
            if first - hi <= (step or 0.0) + _tolerance(hi, step or 0.0):
                continue
            missing = (f"its first {_num(round((first - lo) / step))} {name}(s)"
                       if step else "its first rows")
            out[_plain(units[sl.start])] = (
                f"its history starts at {name} {_num(first)}, but the training units' "
                f"histories all start at {since}: the model takes a unit's age and "
                f"whole-history trends from the rows it is given, so a history without "
                f"{missing} would be scored as a younger unit's; give the unit's whole "
                f"history, from {name} {_num(lo)}")
        return out

    def _used(self) -> list[str]:
        """The columns a fitted model's prediction rests on: the kept sensors, and the
        settings when it found more than one regime."""
        norm = self.core_["norm"]
        settings = self.conditions_ if norm.kmeans_ is not None else []
        return [*settings, *(s for s, k in zip(self.sensors_, norm.keep_, strict=True) if k)]

    def unscorable(self, X: pd.DataFrame) -> dict[Any, str]:
        """Units of ``X`` that :meth:`predict` refuses, each with why.

        A unit cannot be scored when a sensor the model uses (or a setting, when it found
        regimes) has no value in any of the unit's rows, or a non-finite value: filling
        such a gap with a made-up level would move the prediction without a word; nor when
        its history starts after every training unit's did (its first rows missing), its
        time column steps otherwise than the training data's, or a used sensor is far
        outside the training data in any row of its history (|z| beyond :data:`Z_LIMIT`;
        see the module doc). Drop these units
        (``X[~X[unit_column].isin(model.unscorable(X))]``) and predict the rest.
        """
        df, vals = self._frame(X, self.required_columns())
        out = self._gaps(df, vals, self._used())
        rest = ~df[self.unit_column].isin(list(out)).to_numpy()
        return out | self._off_domain(*self._arrays(df[rest], vals[rest]))

    # -- the pipeline -------------------------------------------------------------------
    @staticmethod
    def _unit_slices(units: np.ndarray) -> list[slice]:
        starts = np.flatnonzero(np.r_[True, units[1:] != units[:-1]])
        ends = np.r_[starts[1:], len(units)]
        return [slice(s, e) for s, e in zip(starts, ends, strict=True)]

    def _views(self, norm: ConditionNormalizer, units, settings, sensors, need_seq: bool):
        z = _z(norm, settings, sensors)
        feats, seqs = [], []
        for sl in self._unit_slices(units):
            feats.append(window_features(z[sl], self.window))
            if need_seq:
                seqs.append(window_sequences(z[sl], self.window).astype(np.float32))
        f = np.vstack(feats)
        return f, (np.concatenate(seqs) if need_seq else None)

    def _fit_core(self, units, settings, sensors, y, seed: int) -> dict[str, Any]:
        import lightgbm as lgb

        # the regimes' KMeans runs on OpenMP, every core by default: held to n_threads too
        with warnings.catch_warnings(), threadpool_limits(self.n_threads, user_api="openmp"):
            # a regime whose rows all precede a sensor's first value: its mean is NaN, and
            # its z-scores 0 (see _z), as for any row before a first value
            warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
            warnings.filterwarnings("ignore", "Degrees of freedom", RuntimeWarning)
            # a row whose setting is NaN (before its first value) has no known regime: left
            # out of the clustering and of the regimes' statistics
            norm = ConditionNormalizer(random_state=seed).fit(settings, sensors)
        feats, seqs = self._views(norm, units, settings, sensors, "cnn" in self.models)
        core: dict[str, Any] = {"norm": norm}
        if "gbm" in self.models:
            core["gbm"] = lgb.LGBMRegressor(
                n_estimators=self.n_estimators,
                learning_rate=self.learning_rate,
                num_leaves=31,
                min_child_samples=40,
                subsample=0.8,
                subsample_freq=1,
                colsample_bytree=0.5,
                reg_lambda=1.0,
                n_jobs=self.n_threads,
                random_state=seed,
                verbose=-1,
            ).fit(feats, y)
        if "cnn" in self.models:
            scale = float(self.cap) if self.cap else float(np.max(y) or 1.0)
            pick = np.arange(len(y))
            if len(y) > self.cnn_max_rows:
                rng = np.random.default_rng(seed)
                pick = np.sort(rng.choice(len(y), self.cnn_max_rows, replace=False))
            core["cnn"] = CNNRegressor(
                epochs=self.cnn_epochs,
                target_scale=scale,
                n_threads=self.n_threads,
                random_state=seed,
            ).fit(seqs[pick], feats[pick], y[pick])
        return core

    def _members(self, core, units, settings, sensors, last_only: bool) -> np.ndarray:
        """Each member's prediction, shape ``(n_members, n)``, in ``self.models`` order."""
        feats, seqs = self._views(core["norm"], units, settings, sensors, "cnn" in core)
        if last_only:
            ends = np.array([sl.stop - 1 for sl in self._unit_slices(units)])
            feats = feats[ends]
            seqs = seqs[ends] if seqs is not None else None
        preds = []
        if "gbm" in core:
            preds.append(core["gbm"].predict(feats))
        if "cnn" in core:
            preds.append(core["cnn"].predict(seqs, feats))
        return np.asarray(preds)

    def _combine(self, members: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.clip(weights @ members, 0.0, self.cap if self.cap else None)

    # -- public API ---------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: np.ndarray | None = None) -> RULModel:
        """Learn from run-to-failure histories in ``X``.

        ``y``, when given, is the remaining steps of each row in ``X``'s row order;
        by default it is derived from each unit's last time (the unit failed there).
        """
        validate_params(self._parameter_constraints, vars(self), self)
        unknown = [m for m in self.models if m not in ("gbm", "cnn")]
        twice = sorted({m for m in self.models if list(self.models).count(m) > 1})
        if unknown or twice or not self.models:
            raise InvalidParameterError(
                f"The 'models' parameter of RULModel must be a non-empty subset of "
                f"{OneOf(('gbm', 'cnn'))}, each member once. Got {self.models!r} instead."
            )
        self.conditions_ = list(self.condition_columns or [])
        self.sensors_ = list(self.sensor_columns or [])
        self._check_roles()
        self._check_columns(X, [self.unit_column, self.time_column, *self.conditions_])
        taken = {self.unit_column, self.time_column, *self.conditions_}
        if self.sensor_columns is None:
            self._refuse_spoilt_sensors(X, taken)
        self.sensors_ = list(self.sensor_columns) if self.sensor_columns is not None else [
            str(c) for c in X.columns if c not in taken and pd.api.types.is_numeric_dtype(X[c])
        ]
        if not self.sensors_:
            raise InvalidParameterError("RULModel found no numeric sensor columns in the data.")
        # a sensor with no value in any row carries nothing; left out (and named in
        # left_out_), it is not needed to score either
        present = [c for c in self.sensors_ if c in X.columns]
        self.left_out_ = {c: "every cell is empty" for c in present
                          if int((X.columns == c).sum()) == 1 and bool(X[c].isna().all())}
        self.sensors_ = [c for c in self.sensors_ if c not in self.left_out_]
        if not self.sensors_:
            raise InvalidParameterError(
                f"RULModel has no sensor to learn from: every cell of {list(self.left_out_)} "
                "is empty. Give histories whose sensors hold values."
            )
        y_rows = None if y is None else self._check_y(X, y)
        df, vals = self._frame(X)
        # a column empty in every row carries nothing (the normaliser drops it); one empty
        # in some units only, or not finite, would be learned from a made-up level
        _refuse_gaps(self._gaps(df, vals, [c for c in vals.columns if vals[c].notna().any()]),
                     "learn from", "Fix the data, leave the unit out, or leave the column out "
                     "of sensor_columns.")
        units, times, settings, sensors = self._arrays(df, vals)
        # Intervals are calibrated on the capped target, the quantity the model predicts:
        # a prediction at the cap means "healthy, at least cap steps left".
        if y_rows is None:
            raw = rul_targets(units, times, None)
        else:  # by position, as _frame sorts the rows: X's index may repeat (concatenated units)
            keys = X[[self.unit_column, self.time_column]].reset_index(drop=True)
            raw = y_rows[keys.sort_values(list(keys.columns), kind="stable").index.to_numpy()]
        target = np.minimum(raw, self.cap) if self.cap else raw
        try:
            uniq = np.unique(units)
        except TypeError:  # ids of mixed types (5 and 'five'): in the order rows are sorted
            uniq = pd.unique(units)
        if len(uniq) < 4:
            raise InvalidParameterError(
                f"RULModel needs run-to-failure histories of at least 4 units. Got {len(uniq)}."
            )
        if len(uniq) == len(units) and y is None:
            raise InvalidParameterError(
                f"RULModel cannot learn degradation from one row per unit: each of the "
                f"{len(uniq)} units has a single row, its failure, so every target is 0 and the "
                "model would predict 0 (failing now) for every unit. Give each unit's history "
                "from healthy to failure, many rows per unit."
            )
        if np.ptp(target) == 0:
            raise InvalidParameterError(
                f"RULModel has nothing to learn: every row's remaining life is {target[0]:g}. "
                "Give histories whose rows run from healthy to failure."
            )
        if y is None:
            self._check_cap_steps(units, times)
        seed = 0 if self.random_state is None else int(self.random_state)
        members, cuts = self._out_of_fold(units, settings, sensors, target, uniq, seed)
        self.weights_ = _stack_weights(members, target)
        cal_pred = self._combine(members[:, cuts], self.weights_)
        # lower bounds from the cuts whose truth is below the cap only: a capped truth
        # never misses one, and early-life cuts (truth = prediction = cap) would pin the
        # lower bound of a prediction at the cap to the cap (ConformalBands.fit)
        self.bands_ = ConformalBands(alpha=self.alpha).fit(cal_pred, target[cuts],
                                                           cap=self.cap)
        self.n_calibration_ = len(cuts)
        self.core_ = self._fit_core(units, settings, sensors, target, seed)
        self._name_constant_sensors()
        self.n_features_in_ = len(self.sensors_) + len(self.conditions_)
        self.feature_names_ = feature_names(
            [s for s, k in zip(self.sensors_, self.core_["norm"].keep_, strict=True) if k]
        )
        self.training_hash_ = hashlib.sha256(
            pd.util.hash_pandas_object(X[self._columns()], index=False).to_numpy().tobytes()
        ).hexdigest()
        self.n_units_ = len(uniq)
        self._record_domain(units, times, settings, sensors)
        return self

    def _check_cap_steps(self, units: np.ndarray, times: np.ndarray) -> None:
        """Refuse a ``cap`` that spans fewer than :data:`MIN_CAP_STEPS` of the training
        data's time steps (the median step between a unit's rows). The cap is in the time
        column's units: the default 125 is 125 C-MAPSS cycles, but only 2 readings a minute
        apart of a time column in epoch seconds, so every row but a unit's last 3 had the
        target 125, and the model predicted ">=125" (at least 125 seconds) for every unit
        not within 2 minutes of failure, silently useless."""
        if not self.cap:
            return
        same = units[1:] == units[:-1]
        steps = np.diff(times.astype(float))[same]
        steps = steps[steps > 0]
        if not len(steps):
            return
        step = float(np.median(steps))
        if self.cap >= MIN_CAP_STEPS * step * (1 - 1e-9):
            return
        raise InvalidParameterError(
            f"RULModel's cap {self.cap:g} is in the units of the time column "
            f"{self.time_column!r}, whose rows are {_num(step)} apart (median step), so it "
            f"spans {self.cap / step:.3g} step(s): the model would learn the RUL only over "
            f"each unit's last {math.floor(self.cap / step) + 1} row(s) and predict 'at least "
            f"{self.cap:g}' for every other. Give a cap of at least {MIN_CAP_STEPS} steps, in "
            f"the time column's units: e.g. cap={_num(125 * step)} (125 steps; --cap "
            f"{_num(125 * step)} for 'edgewise train rul').",
            field="cap", value=self.cap)

    @staticmethod
    def _refuse_spoilt_sensors(X: pd.DataFrame, taken: set[str]) -> None:
        """Refuse a column that is numbers but for some cells (``ERR``, ``---``, ``OVL`` from
        a logger): read as text, it was no sensor by default, so the model was silently
        fitted without it (a fleet's only wear sensor with one ``ERR`` in 2,707 cells:
        trained on the unit's age and noise, no word said). A column most of whose filled
        cells are no numbers (a site name, a date) is still no sensor."""
        for c in X.columns:
            if c in taken or pd.api.types.is_numeric_dtype(X[c]) or (X.columns == c).sum() > 1:
                continue
            cells = X[c][X[c].notna()]
            cells = cells[cells.astype(str).str.strip() != ""]
            try:
                n_num = int(pd.to_numeric(cells, errors="coerce").notna().sum())
            except (TypeError, ValueError):  # cells of objects pandas cannot read as numbers
                continue
            if 0 < n_num < len(cells) and 2 * n_num >= len(cells):
                raise InvalidParameterError(
                    f"Column {str(c)!r} holds numbers, but not in every filled cell: "
                    f"{_first_text(X[c])} ({len(cells) - n_num:,} of {len(cells):,} are no "
                    "number), so RULModel would leave this sensor out unsaid. Blank or fix those "
                    "cells, or leave the column out by naming the sensors to use "
                    "(sensor_columns; --sensor-columns).",
                    field=str(c), value=len(cells) - n_num)

    def _name_constant_sensors(self) -> None:
        """Name in ``left_out_`` each sensor the normaliser dropped (fewer than
        ``min_distinct`` distinct values in every regime: constant, a stuck or placeholder
        feed), and refuse a fit that kept none: its model would predict from the unit's
        age alone, whatever the sensors said."""
        norm = self.core_["norm"]
        need = norm.min_distinct
        where = "in any operating regime" if norm.n_conditions_ > 1 else "in the training rows"
        dropped = {s: int(d) for s, d, k in zip(self.sensors_, norm.distinct_, norm.keep_,
                                                strict=True) if not k}
        self.left_out_ |= {s: f"only {d} distinct value(s) {where} (at least {need} "
                              "needed): nothing to learn from" for s, d in dropped.items()}
        if not norm.keep_.any():
            shown = first_and_more(list(dropped.items()), 10, each=lambda sd: f"{sd[0]!r}: {sd[1]}")
            raise InvalidParameterError(
                f"RULModel has no sensor to learn from: every sensor shows fewer than {need} "
                f"distinct values {where} (distinct values: {shown}), so it carries no "
                "sign of wear (a constant, stuck or placeholder feed) and the model would "
                "predict from the unit's age alone. Give sensors whose values vary.",
                field="sensor_columns", value=list(dropped))

    def _record_domain(self, units: np.ndarray, times: np.ndarray,
                       settings: np.ndarray | None, sensors: np.ndarray) -> None:
        """Remember what :meth:`_off_domain` checks: the training time step (when every
        unit steps by the same amount; else ``None``), the range of the units' first times
        (when they lie within one step; else ``None``) and each used sensor's value and
        z-score ranges."""
        same = units[1:] == units[:-1]
        steps = np.diff(times.astype(float))[same]
        self.time_step_ = (float(steps[0]) if len(steps) and steps[0] > 0
                           and np.allclose(steps, steps[0], rtol=1e-9, atol=0.0) else None)
        firsts = times[np.flatnonzero(np.r_[True, ~same])].astype(float)
        lo, hi = (float(firsts.min()), float(firsts.max())) if len(firsts) else (0.0, 0.0)
        # the time column says where a unit's life started only when every training unit
        # started at the same time (within one step): C-MAPSS cycles all start at 1
        self.start_range_ = ((lo, hi) if len(firsts) and hi - lo <= _tolerance(
            hi, self.time_step_ or 0.0) + (self.time_step_ or 0.0) else None)
        norm = self.core_["norm"]
        kept = np.flatnonzero(norm.keep_)
        z = _z(norm, settings, sensors)
        self.z_range_ = {self.sensors_[k]: (float(z[:, j].min()), float(z[:, j].max()))
                         for j, k in enumerate(kept)} if len(z) else {}
        self.value_range_ = {self.sensors_[k]: (float(np.nanmin(sensors[:, k])),
                                                float(np.nanmax(sensors[:, k])))
                             for k in kept}

    def _out_of_fold(self, units, settings, sensors, target, uniq, seed: int):
        """Cross-fitted member predictions for every row, and the calibration rows.

        Returns ``(members, cuts)``: ``members[:, i]`` comes from a pipeline that never saw
        row ``i``'s unit; ``cuts`` picks ``calibration_cuts`` random rows per unit.
        """
        rng = np.random.default_rng(seed)
        n_folds = min(self.calibration_folds, len(uniq))
        fold_of = dict(zip(rng.permutation(uniq).tolist(), np.arange(len(uniq)) % n_folds,
                           strict=True))
        fold = np.array([fold_of[u] for u in units.tolist()])
        members = np.zeros((len(self.models), len(units)))
        for k in range(n_folds):
            held = fold == k
            core = self._fit_core(units[~held], _rows(settings, ~held), sensors[~held],
                                  target[~held], seed + 1 + k)
            members[:, held] = self._members(
                core, units[held], _rows(settings, held), sensors[held], last_only=False
            )
        cuts = [
            rng.choice(np.arange(sl.start, sl.stop), size=min(self.calibration_cuts,
                       sl.stop - sl.start), replace=False)
            for sl in self._unit_slices(units)
        ]
        return members, np.sort(np.concatenate(cuts))

    def _fitted(self) -> None:
        if not hasattr(self, "core_"):
            raise NotFittedError("This RULModel is not fitted yet; call fit(histories) first.")

    def predict(self, X: pd.DataFrame) -> pd.Series:
        """Predicted remaining steps at the last row of each unit, indexed by unit (empty
        for a frame with no rows, e.g. once every unscorable unit is left out).

        >>> model = RULModel(n_estimators=5, calibration_folds=2, window=10).fit(
        ...     pd.DataFrame({"unit": np.repeat(np.arange(4), 30), "cycle": np.tile(
        ...         np.arange(30), 4), "temp": np.tile(np.arange(30.0), 4)}))
        >>> len(model.predict(pd.DataFrame(columns=["unit", "cycle", "temp"], dtype=float)))
        0
        """
        self._fitted()
        units, _, settings, sensors = self._prepare(X)
        if len(units) == 0:
            return pd.Series(np.zeros(0), index=pd.Index(units, name=self.unit_column))
        members = self._members(self.core_, units, settings, sensors, last_only=True)
        point = self._combine(members, self.weights_)
        return pd.Series(point, index=pd.Index(pd.unique(units), name=self.unit_column))

    def predict_interval(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(point, low, high)`` per unit (sorted unit order), ``1 - alpha`` intervals.

        Like the point, the interval is one for the RUL capped at ``cap`` (what the model
        learns): ``high`` never passes the cap, and a ``high`` at the cap means the true
        RUL has no upper bound (a point at the cap: at least ``cap`` steps left). See
        :meth:`open_above`. Calibrated on fewer residuals than a finite bound needs (a few
        short histories; :func:`~edgewise.models.conformal.min_residuals`), ``high`` is the
        cap (``inf`` without one) and ``low`` 0.
        """
        point = self.predict(X).to_numpy()
        low, high = self.bands_.interval(point)
        high = np.maximum(high, point)
        if self.cap:
            high = np.minimum(high, self.cap)
        return point, np.clip(low, 0.0, point), high

    def open_above(self, values: np.ndarray) -> np.ndarray:
        """Which predicted values (points or bounds) reached the cap, so stand for "at
        least ``cap``" rather than for the value itself (without a cap: which are ``inf``,
        an unbounded interval).

        >>> model = RULModel(cap=125.0)
        >>> model.open_above(np.array([3.4, 124.99, 125.0])).tolist()
        [False, False, True]
        """
        values = np.asarray(values, dtype=float)
        if not self.cap:
            return np.isposinf(values)  # an unbounded interval (too few residuals)
        return values >= self.cap * (1 - 1e-9)

    def features(self, X: pd.DataFrame) -> pd.DataFrame:
        """The window features the boosted model sees at the last row of each unit."""
        self._fitted()
        units, _, settings, sensors = self._prepare(X)
        if len(units) == 0:
            return pd.DataFrame(np.zeros((0, len(self.feature_names_))),
                                columns=self.feature_names_,
                                index=pd.Index(units, name=self.unit_column))
        feats, _ = self._views(self.core_["norm"], units, settings, sensors, need_seq=False)
        ends = [sl.stop - 1 for sl in self._unit_slices(units)]
        return pd.DataFrame(
            feats[ends],
            columns=self.feature_names_,
            index=pd.Index(pd.unique(units), name=self.unit_column),
        )

    # -- persistence --------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """What a saved file says about itself (readable without unpickling)."""
        self._fitted()
        return {
            "format_version": FORMAT_VERSION,
            "kind": "RULModel",
            "unit_column": self.unit_column,
            "time_column": self.time_column,
            "condition_columns": self.conditions_,
            "sensor_columns": self.sensors_,
            "features": self.feature_names_,
            "models": list(self.models),
            "cap": self.cap,
            "alpha": self.alpha,
            "n_units": self.n_units_,
            "training_data_sha256": self.training_hash_,
        }

    def save(self, path: str | Path) -> int:
        """Write a versioned model file: a JSON header line, then the pickled model.

        The file is written whole or not at all (:mod:`edgewise.models.model_file`): to a
        temporary file beside it (``.<name>.<pid>.<thread>.tmp``, which no ``rul*`` glob
        picks up), then renamed over ``path``, so a gateway reading the models folder never
        sees half a model, and a failed save leaves the old file as it was. Returns the
        number of bytes written. Load only files you trust (pickle).
        """
        body = pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        return write_model_file(path, _MAGIC, self.header(), body)


def _stack_weights(members: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that best combine held-out member predictions.

    >>> y = np.arange(10.0)
    >>> _stack_weights(np.vstack([y, y + 5]), y).round(2).tolist()
    [1.0, 0.0]
    """
    from scipy.optimize import nnls

    if len(members) == 1:
        return np.ones(1)
    w, _ = nnls(members.T, y)
    total = w.sum()
    return w / total if total > 0 else np.full(len(members), 1.0 / len(members))


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (so unit ids print and serialise as written)."""
    return value.item() if isinstance(value, np.generic) else value


def _z(norm: ConditionNormalizer, settings: np.ndarray | None, sensors: np.ndarray) -> np.ndarray:
    """The kept sensors' per-regime z-scores; 0 (the regime's mean) in rows before a sensor's
    first value in the unit, as a device that has not yet had a reading of it takes it, and
    0 for every sensor in a row whose regime is unknown (a setting before its first value,
    when the model found several regimes), which no regime's mean and spread describe."""
    z = norm.transform(settings, sensors)
    return np.where(np.isnan(z), 0.0, z)


def _first_text(column: pd.Series) -> str:
    """Where a column that should be numbers first holds something else, and what (a CSV
    cell such as ``ERR`` in 20,000 rows was not named at all).

    >>> _first_text(pd.Series(["1.5", None, "ERR"], name="temp"))
    "'temp' has 'ERR' in row 3"
    """
    num = pd.to_numeric(column, errors="coerce")
    odd = (num.isna() & column.notna()).to_numpy()
    if not odd.any():
        return f"{str(column.name)!r} is of type {column.dtype}, not numbers"
    at = int(np.flatnonzero(odd)[0])
    return f"{str(column.name)!r} has {column.iloc[at]!r} in row {at + 1}"


def _tolerance(value: float, step: float) -> float:
    """How far apart two times may be and still be the same time (float rounding).

    >>> _tolerance(1.0, 1.0) < 1e-6
    True
    """
    return 1e-9 * max(abs(value), abs(step), 1.0)


def _num(value: float) -> str:
    """A time as it reads: ``91`` for 91.0, else the float's shortest form.

    >>> _num(91.0), _num(0.25)
    ('91', '0.25')
    """
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _rows(settings: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
    return None if settings is None else settings[mask]


#: The install that brings a package a RUL model file needs to load (its boosted trees,
#: its CNN): pyproject.toml's extras.
_INSTALLS = {"lightgbm": "pip install 'edgewise[rul]'", "torch": "pip install 'edgewise[torch]'"}


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a saved model file, without loading the model."""
    return read_model_header(path, _MAGIC, ModelFileError, what="RUL model")


def load_model(path: str | Path, *, unchecked: bool = False) -> RULModel:
    """Load a model written by :meth:`RULModel.save` (trusted files only: pickle, so code in
    the file runs).

    The body is checked against the header's SHA-256 before it is unpickled; a file with
    no checksum (format 2 files saved before checksums were written), a damaged or cut
    file, or another format version raises :class:`ModelFileError` naming it and what to
    do. ``unchecked=True`` loads a file with no checksum unchecked, to re-save it with one
    (``load_model(path, unchecked=True).save(path)``): only for a file you trust to be
    whole, as a damaged body can abort the process while it is read.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "rul.ewm"
    >>> _ = path.write_bytes(_MAGIC + b'{"format_version": 2}\\n' + b"body")
    >>> load_model(path)
    Traceback (most recent call last):
    ...
    edgewise.models.rul.ModelFileError: RUL model file '...rul.ewm' has no checksum ...
    """
    remedy = "retrain with 'edgewise train rul'"
    _, body = read_model_file(
        path, _MAGIC, ModelFileError, what="RUL model", version=FORMAT_VERSION, remedy=remedy,
        unchecked_ok=unchecked, unchecked_remedy=(
            f"{remedy}, or, if you trust the file, re-save it with this Edgewise: "
            "edgewise.models.rul.load_model(path, unchecked=True).save(path)"))
    try:
        model = pickle.loads(body)
    except ModuleNotFoundError as exc:  # the checksum held: the file is whole
        root = (exc.name or "").partition(".")[0]
        install = _INSTALLS.get(root, f"pip install {root}" if root else "its package")
        raise ModelFileError(
            f"Model file {str(path)!r} is intact but needs the {root or exc.name!r} package "
            f"to load, which is not installed: {install}."
        ) from None
    except Exception as exc:  # a damaged body raises almost anything: MemoryError for a
        # huge length, SystemError, UnpicklingError, EOFError, AttributeError, ...
        raise ModelFileError(
            f"Model file {str(path)!r} is damaged or truncated ({type(exc).__name__}: "
            f"{str(exc)[:200] or 'no detail'}); copy it again or retrain with 'edgewise "
            "train rul'."
        ) from None
    if not isinstance(model, RULModel):
        raise ModelFileError(f"File {str(path)!r} does not hold a RULModel.")
    return model
