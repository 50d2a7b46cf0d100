"""Operating-condition normalisation for fleets that run in several regimes.

Sensor levels of a turbofan (or a pump, a compressor) depend more on *how* it is run
(altitude, speed, load) than on how worn it is. :class:`ConditionNormalizer` finds the
regimes by clustering the operating-setting columns, then z-scores each sensor within
its regime, so that what is left is wear and noise. The number of regimes is chosen
from the data (no per-fleet constant): the smallest ``k`` whose k-means clustering
explains at least ``1 - tol`` of the settings' variance, or a single regime when none
does. Sensors that carry no information (fewer than ``min_distinct`` distinct values
in every regime) are dropped. A row with a setting missing (NaN) has no known regime: it
is left out of the clustering and, when there are several regimes, of their statistics,
and :meth:`ConditionNormalizer.transform` gives it NaN, not a z-score against a regime
guessed for it (the settings' mean lies between regimes, in none of them).

>>> rng = np.random.default_rng(0)
>>> regime = rng.integers(0, 3, 600)
>>> settings = np.c_[regime * 10.0, regime * 0.3] + rng.normal(0, 0.01, (600, 2))
>>> sensors = np.c_[100 * regime + rng.normal(0, 1, 600), np.full(600, 5.0)]
>>> norm = ConditionNormalizer().fit(settings, sensors)
>>> norm.n_conditions_, norm.keep_.tolist()
(3, [True, False])
>>> z = norm.transform(settings, sensors)
>>> z.shape, bool(abs(z.mean()) < 0.1)
((600, 1), True)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.cluster import KMeans

from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.params import Interval, validate_params

__all__ = ["ConditionNormalizer"]

#: Above this magnitude a column's squares can overflow (about 1e154 and beyond): its mean
#: and spread are computed on the values scaled by a power of two (exact) and scaled back.
_BIG = 2.0**500


def _mean_sd(values: np.ndarray, nan: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation, NaN left out (NaN for a column with no
    value); finite for any finite values, up to the largest float. A column whose
    magnitude passes :data:`_BIG` is scaled by a power of two first, so its squares cannot
    overflow (a spread of ``inf`` made the sensor useless yet kept); other columns take
    exactly the plain ``nanmean``/``nanstd`` (``mean``/``std`` with ``nan=False``, for
    values with no NaN).

    >>> mean, sd = _mean_sd(np.array([[1.0, 1e300], [3.0, -1e300]]))
    >>> mean.tolist(), sd.tolist()
    ([2.0, 0.0], [1.0, 1e+300])
    """
    mean_of, sd_of = (np.nanmean, np.nanstd) if nan else (np.mean, np.std)
    mean = mean_of(values, axis=0)
    with np.errstate(over="ignore", invalid="ignore"):
        sd = sd_of(values, axis=0)
    finite = np.isfinite(values)
    big = np.max(np.where(finite, np.abs(values), 0.0), axis=0, initial=0.0)
    for j in np.flatnonzero(big > _BIG):
        e = int(np.frexp(big[j])[1])
        col = np.ldexp(values[:, j], -e)  # exact: a power of two
        mean[j] = np.ldexp(mean_of(col), e)
        sd[j] = np.ldexp(sd_of(col), e)
    return mean, sd


def _checked(values: Any, what: str, who: str) -> np.ndarray:
    """``values`` as a 2-D float array whose values are finite or NaN (missing); else an
    :class:`~edgewise.errors.InvalidParameterError` naming the column, the row and the
    value (an ``inf`` setting made every setting's mean and spread NaN, and the regimes
    collapsed into one without a word).

    >>> _checked([[1.0, np.inf]], "sensors", "fit")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: ConditionNormalizer.fit needs finite sensors (NaN where missing); sensors column 1 is inf at row 0.
    """  # noqa: E501
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2:
        raise InvalidParameterError(
            f"ConditionNormalizer.{who} needs {what} as a 2-D array (n_rows, n_columns). Got "
            f"a {arr.ndim}-D array of shape {arr.shape}.", field=what, value=arr.shape)
    bad = np.argwhere(np.isinf(arr))
    if len(bad):
        row, col = (int(i) for i in bad[0])
        raise InvalidParameterError(
            f"ConditionNormalizer.{who} needs finite {what} (NaN where missing); {what} "
            f"column {col} is {arr[row, col]} at row {row}.", field=what,
            value=float(arr[row, col]))
    return arr


class ConditionNormalizer:
    """Cluster operating settings into regimes; z-score each sensor within its regime.

    Parameters
    ----------
    max_conditions
        Largest number of regimes tried.
    tol
        A clustering into ``k`` regimes is accepted when its within-cluster sum of squares
        is at most ``tol`` times that of one regime (settings standardised first).
    min_distinct
        A sensor is kept when it shows at least this many distinct values in some regime.
    random_state
        Seed of k-means.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "max_conditions": Interval(int, 1, 64),
        "tol": Interval(float, 0.0, 1.0, closed="neither"),
        "min_distinct": Interval(int, 1, None),
        "random_state": [int, None],
    }

    def __init__(
        self,
        max_conditions: int = 10,
        tol: float = 1e-3,
        min_distinct: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.max_conditions = max_conditions
        self.tol = tol
        self.min_distinct = min_distinct
        self.random_state = random_state

    def fit(self, settings: np.ndarray | None, sensors: np.ndarray) -> ConditionNormalizer:
        """Find the regimes and each sensor's per-regime mean and spread.

        A row with a setting missing (NaN: its regime is unknown) takes no part in finding
        the regimes, nor, when there are several, in any regime's statistics; it is not
        scored against a regime (:meth:`transform` gives it NaN).
        """
        validate_params(self._parameter_constraints, vars(self), self)
        sensors = _checked(sensors, "sensors", "fit")
        n = len(sensors)
        self.n_conditions_ = 1
        self.kmeans_: KMeans | None = None
        self.settings_mean_ = self.settings_scale_ = None
        if settings is not None and np.asarray(settings).size and n > 1:
            s = _checked(settings, "settings", "fit")
            if len(s) != n:
                raise InvalidParameterError(
                    f"ConditionNormalizer.fit needs a settings row for every sensors row. Got "
                    f"{len(s)} settings rows and {n} sensors rows.", field="settings",
                    value=len(s))
            known = ~np.isnan(s).any(axis=1)
            if not known.all():
                s = s[known]
            if len(s) > 1:
                mean, sd = _mean_sd(s, nan=False)
                self.settings_mean_ = mean
                self.settings_scale_ = np.where(sd > 0, sd, 1.0)
                s = (s - self.settings_mean_) / self.settings_scale_
                total = float(((s - s.mean(axis=0)) ** 2).sum())
                if total > 0:
                    for k in range(2, min(self.max_conditions, len(s)) + 1):
                        km = KMeans(n_clusters=k, n_init=3, random_state=self.random_state).fit(s)
                        if km.inertia_ <= self.tol * total:
                            self.n_conditions_, self.kmeans_ = k, km
                            break
        labels = self._labels(settings, n)
        n_sensors = sensors.shape[1]
        self.mean_ = np.zeros((self.n_conditions_, n_sensors))
        self.scale_ = np.ones((self.n_conditions_, n_sensors))
        distinct = np.zeros(n_sensors, dtype=int)
        for c in range(self.n_conditions_):
            part = sensors[labels == c]
            if not len(part):
                continue
            self.mean_[c], sd = _mean_sd(part)
            self.scale_[c] = np.where(sd > 0, sd, 1.0)
            # NaN (missing) is no value: counted, 4 levels and a gap passed min_distinct 5
            distinct = np.maximum(distinct, [len(np.unique(col[~np.isnan(col)]))
                                             for col in part.T])
        #: the most distinct values each sensor shows in one regime (``keep_`` compares it)
        self.distinct_ = distinct
        self.keep_ = distinct >= self.min_distinct
        return self

    def _labels(self, settings: np.ndarray | None, n: int) -> np.ndarray:
        """Each row's regime; -1 where a setting is missing (NaN) and there are several."""
        if self.kmeans_ is None:
            return np.zeros(n, dtype=int)
        d = len(self.settings_mean_)
        if settings is None:
            raise InvalidParameterError(
                f"This ConditionNormalizer found {self.n_conditions_} operating regimes from "
                f"{d} setting column(s), so it needs those settings (shape (n_rows, {d})) to "
                "tell each row's regime. Got settings=None.", field="settings", value=None)
        s = _checked(settings, "settings", "transform")
        if s.shape != (n, d):
            raise InvalidParameterError(
                f"This ConditionNormalizer needs settings of shape ({n}, {d}): a row for "
                f"each sensors row, and the {d} setting column(s) it was fitted on. Got "
                f"{s.shape}.", field="settings", value=s.shape)
        s = (s - self.settings_mean_) / self.settings_scale_
        known = ~np.isnan(s).any(axis=1)
        if known.all():
            return self.kmeans_.predict(s)
        labels = np.full(n, -1, dtype=int)
        if known.any():
            labels[known] = self.kmeans_.predict(s[known])
        return labels

    def transform(self, settings: np.ndarray | None, sensors: np.ndarray) -> np.ndarray:
        """Per-regime z-scores of the kept sensors, shape ``(n_rows, n_kept)``; NaN in a
        row whose regime is unknown (a setting missing, when there are several regimes)."""
        if not hasattr(self, "keep_"):
            raise NotFittedError(
                "This ConditionNormalizer is not fitted yet; call fit(settings, sensors) first."
            )
        sensors = np.asarray(sensors, dtype=float)
        n_sensors = self.mean_.shape[1]
        if sensors.ndim != 2 or sensors.shape[1] != n_sensors:
            # a (n, 1) array broadcast against every fitted sensor's mean: z-scores of the
            # wrong sensor, returned without a word
            raise InvalidParameterError(
                f"ConditionNormalizer.transform needs sensors of shape (n_rows, {n_sensors}): "
                f"the {n_sensors} sensor column(s) it was fitted on, in that order. Got "
                f"shape {sensors.shape}.", field="sensors", value=sensors.shape)
        labels = self._labels(settings, len(sensors))
        z = (sensors - self.mean_[labels]) / self.scale_[labels]
        unknown = labels < 0
        if unknown.any():
            z[unknown] = np.nan
        return z[:, self.keep_]
